// Package runtime runs ONNX models through onnxruntime, for calibration,
// evaluation, benchmarking and for checking that a rewritten graph still
// computes what the original did. Callers import it as
//
//	ort "github.com/onnxprune/onnxprune/runtime"
//
// It wraps github.com/yalue/onnxruntime_go v1.27.0, which is compiled
// against the C API of onnxruntime 1.24.1 and loads the shared library at run
// time (dlopen; cgo is required, LD_LIBRARY_PATH is not).
//
// # Library
//
// FindLibrary looks for libonnxruntime in an explicit path (the CLI's
// --ort-lib), then $ONNXRUNTIME_LIB, then the cache where
// scripts/setup-onnxruntime.sh (`make setup`) installs the pinned,
// checksummed build from the npm package onnxruntime-node@1.24.1. Init loads
// it once per process; onnxruntime_go keeps a single global environment, so
// a process cannot switch libraries afterwards.
//
// # Tensors
//
// Tensor holds an element type (DType, numerically equal to ONNX's
// TensorProto.DataType), a shape and little-endian bytes in Go memory. The
// typed constructors and matching accessors share memory with the caller's
// slice, and Run hands input bytes to onnxruntime by pointer, so large
// inputs are not copied. FLOAT16 and BFLOAT16 values are bit patterns
// (Float16Bits, BFloat16Bits); ToFloat16 and ToBFloat16 round to nearest,
// ties to even, as onnxruntime's Cast does (the tests check this against
// onnxruntime itself).
//
// # Sessions
//
// A Session is one onnxruntime session, created once: creating a session
// loads the weights and runs the graph optimiser, so doing that per Run, or
// per set of requested outputs, would multiply both time and memory (every
// onnxruntime session holds its own copy of the weights). onnxruntime_go
// fixes the input and output names of a session when it is created, so the
// Session fetches all of its outputs on every Run and returns those asked
// for; onnxruntime computes the whole graph regardless, and the only waste is
// copying the unrequested outputs into Go memory. Options.Outputs removes
// that copy when a caller knows it needs only some outputs (e.g. taps of
// hidden states, not logits).
//
// Inputs and Outputs are read from the model's protobuf (graph inputs
// without an initializer, like onnxruntime reports them), skipping node
// lists and weights by their length prefixes, instead of through a second,
// throwaway onnxruntime session as onnxruntime_go would.
//
// # onnxruntime_go defects worked around
//
// When onnxruntime_go v1.27.0 allocates an output itself (the only option
// when its shape is not known before the run), it copies FlattenedSize()
// bytes, not elements, for types it has no Go type for, so every FLOAT16 and
// BFLOAT16 output fails with "not enough space"; it also rejects every rank-0
// output ("The shape has no dimensions"). This package therefore:
//
//   - preallocates FLOAT16/BFLOAT16 outputs whose declared shape is fully
//     static;
//   - for FLOAT16/BFLOAT16 outputs with dynamic or unknown shape, appends
//     Cast(to=FLOAT) nodes and matching graph outputs to the model handed to
//     onnxruntime (by appending a second ModelProto.graph field, which
//     protobuf merges into the first, so the weights are never decoded),
//     fetches the FLOAT copies and converts them back. The conversion is
//     exact, so callers see the model's FLOAT16/BFLOAT16 values bit for bit.
//     Such a model is loaded from bytes (with its directory as the
//     external-data directory) instead of from its path. When
//     OptimizedModelPath is also set, the optimized model is written from a
//     separate session on the unmodified model, so it never contains the
//     Casts;
//   - preallocates rank-0 outputs as typed scalars (rank-0 FLOAT16/BFLOAT16
//     outputs go through the Cast as well);
//   - passes empty (zero-element) inputs with a dummy buffer, which
//     onnxruntime accepts but onnxruntime_go's constructor refuses.
//
// Remaining limits: STRING and sub-byte element types are not supported;
// rank-0 FLOAT16/BFLOAT16 inputs cannot be expressed in onnxruntime_go; an
// output without a declared rank that turns out rank 0 fails; models with no
// inputs are rejected.
//
// # Devices
//
// Options.Device "cuda" appends onnxruntime's CUDA execution provider. The
// npm package has no CUDA provider libraries, so by default that fails with
// an error wrapping ErrCUDAUnavailable that says what to install. There is
// deliberately no fallback to CPU: a measurement silently taken on the wrong
// device is worse than an error.
//
// Run may be called concurrently on one Session; Close must not overlap
// with Run. Errors name the model and the offending input or output, and list
// the valid names.
package runtime
