// Package graph is onnxprune's ONNX intermediate representation.
//
// The IR is the ONNX protobuf schema itself (package onnxpb, generated from
// ONNX's proto2 onnx.proto), wrapped with what a graph rewriter needs:
//
//   - Load and Save, which never read external weights into memory: Load
//     validates external-data references with stat calls only, and Save
//     streams byte ranges from the source files into the output (with
//     copy_file_range where the kernel has it). An unmodified model saved
//     with the same placement round-trips byte-identically.
//   - Index: producer and consumers of every tensor, topological order, and
//     the subgraphs of If/Loop/Scan with their outer-scope references.
//   - Check: the structural invariants every pass must preserve. Tests run
//     it after every rewrite, like the SSA checker runs between passes.
//   - Decoder-block discovery (FindBlocks): the residual stream of a causal
//     language model and the nodes, weights and KV-cache I/O of each block.
package graph
