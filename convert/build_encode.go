package convert

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"sync/atomic"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// DType is the element type of the stored weights.
type DType string

const (
	Float32 DType = "float32"
	Float16 DType = "float16"
)

func (d DType) onnx() onnxpb.TensorProto_DataType {
	if d == Float16 {
		return onnxpb.TensorProto_FLOAT16
	}
	return onnxpb.TensorProto_FLOAT
}

func (d DType) size() int64 {
	if d == Float16 {
		return 2
	}
	return 4
}

// ParseDType accepts "float32" (also "fp32", "f32") and "float16" ("fp16", "f16").
func ParseDType(s string) (DType, error) {
	switch s {
	case "float32", "fp32", "f32", "":
		return Float32, nil
	case "float16", "fp16", "f16":
		return Float16, nil
	}
	return "", fmt.Errorf("unknown dtype %q (want float32 or float16)", s)
}

// encodeChunkBytes is the size of the staging buffers between a
// tensor's values and the output file: small enough that a chunk just
// transposed or encoded is still in the cache when the kernel copies it
// into the page cache, large enough that write calls cost nothing.
const encodeChunkBytes = 2 << 20

// encodeChunks is the number of staging buffers: one being filled, one
// being written, one spare so neither side waits on the other's jitter.
const encodeChunks = 3

// tensorEncoder writes tensors in their stored layout and element type
// through reusable staging buffers, so encoding a tensor costs its
// float32 values plus a few MiB, never a second full copy.
type tensorEncoder struct {
	dt     DType
	chunks [][]float32 // staging buffers, as values or encoded bytes
	tr     []float32   // a band of transposed values before encoding
}

func newTensorEncoder(dt DType) *tensorEncoder { return &tensorEncoder{dt: dt} }

// native says that values in memory are already their encoding.
func (e *tensorEncoder) native() bool { return e.dt == Float32 && littleEndian }

// write encodes vals (row-major in the checkpoint's shape) to w as spec
// stores them: as they are, or transposed from [out, in] to [in, out].
func (e *tensorEncoder) write(w io.Writer, vals []float32, spec weightSpec) error {
	if spec.layout == layoutTranspose {
		return e.writeTransposed(w, vals, int(spec.shape[0]), int(spec.shape[1]))
	}
	return e.writeRows(w, vals)
}

// writeRows encodes vals in order, a chunk at a time.
func (e *tensorEncoder) writeRows(w io.Writer, vals []float32) error {
	if e.native() {
		_, err := w.Write(float32Bytes(vals))
		return err
	}
	per := encodeChunkBytes / 4
	n := (len(vals) + per - 1) / per
	return e.pipeline(w, n, per, func(k int, chunk []float32) []byte {
		return e.put(float32Bytes(chunk), vals[k*per:min((k+1)*per, len(vals))])
	})
}

// writeTransposed writes the [cols, rows] transpose of src [rows, cols]
// a band of output rows at a time.
func (e *tensorEncoder) writeTransposed(w io.Writer, src []float32, rows, cols int) error {
	band := bandRows(rows, cols)
	n := (cols + band - 1) / band
	return e.pipeline(w, n, band*rows, func(k int, chunk []float32) []byte {
		i0, i1 := k*band, min((k+1)*band, cols)
		if e.native() {
			t := chunk[:(i1-i0)*rows]
			transposeBand(t, src, rows, cols, i0, i1)
			return float32Bytes(t)
		}
		if len(e.tr) < band*rows {
			e.tr = make([]float32, band*rows)
		}
		t := e.tr[:(i1-i0)*rows]
		transposeBand(t, src, rows, cols, i0, i1)
		return e.put(float32Bytes(chunk), t)
	})
}

// bandRows is how many output rows (of rows values) to transpose into
// one chunk: a multiple of transposeBand's 8 where a chunk holds that
// many, and at least 8, so its fast path always applies.
func bandRows(rows, cols int) int {
	band := encodeChunkBytes / 4 / rows
	if band >= 8 {
		band -= band % 8
	}
	return min(cols, max(8, band))
}

// pipeline writes n chunks to w. fill(k, chunk) prepares the k-th in a
// staging buffer of chunkLen values and returns its bytes; it runs on
// the calling goroutine while another goroutine writes the chunk before.
// Transposing or encoding then overlaps the write calls, whose copy into
// the page cache is the larger half of the work, and on two cores costs
// no wall time. (Measured on the 1 GiB benchmark: three 2 MiB chunks are
// best; with 4 or 8 MiB the kernel's copy out of them is 2.5× slower,
// and a deeper queue or transposing on two goroutines gains nothing.)
func (e *tensorEncoder) pipeline(w io.Writer, n, chunkLen int, fill func(k int, chunk []float32) []byte) (err error) {
	if len(e.chunks) == 0 || len(e.chunks[0]) < chunkLen {
		e.chunks = make([][]float32, encodeChunks)
		for i := range e.chunks {
			e.chunks[i] = make([]float32, chunkLen)
		}
	}
	if n == 1 { // nothing to overlap
		_, err = w.Write(fill(0, e.chunks[0]))
		return err
	}
	type filled struct {
		chunk []float32
		out   []byte
	}
	free := make(chan []float32, len(e.chunks))
	for _, c := range e.chunks {
		free <- c
	}
	full := make(chan filled, len(e.chunks))
	var failed atomic.Bool
	written := make(chan error, 1)
	go func() {
		var err error
		for f := range full {
			if err == nil {
				if _, err = w.Write(f.out); err != nil {
					failed.Store(true) // stop filling
				}
			}
			free <- f.chunk
		}
		written <- err
	}()
	// Wait for the writer however this returns, a panic in fill included
	// (see catchFault), so that it never writes to w after this returns.
	defer func() {
		close(full)
		if werr := <-written; err == nil {
			err = werr
		}
	}()
	for k := 0; k < n && !failed.Load(); k++ {
		c := <-free
		full <- filled{c, fill(k, c)}
	}
	return nil
}

// transposeBand sets dst[(i-i0)·rows + j] = src[j·cols + i] for output
// rows i0 ≤ i < i1. It takes 128 source rows at a time, whose lines and
// pages stay in the L1 cache and the TLB, and moves each row's 8 adjacent
// values to 8 output rows at once: 8 sequential write streams. (16
// streams would be slower: output rows of a power-of-two length all map
// to the same L1 sets, which hold 12 lines.)
func transposeBand(dst, src []float32, rows, cols, i0, i1 int) {
	const block = 128
	for j0 := 0; j0 < rows; j0 += block {
		j1 := min(j0+block, rows)
		i := i0
		for ; i+8 <= i1; i += 8 {
			d := dst[(i-i0)*rows : (i-i0+8)*rows]
			r0, r1, r2, r3 := d[:rows], d[rows:2*rows], d[2*rows:3*rows], d[3*rows:4*rows]
			r4, r5, r6, r7 := d[4*rows:5*rows], d[5*rows:6*rows], d[6*rows:7*rows], d[7*rows:]
			for j := j0; j < j1; j++ {
				s := (*[8]float32)(src[j*cols+i:])
				r0[j], r1[j], r2[j], r3[j] = s[0], s[1], s[2], s[3]
				r4[j], r5[j], r6[j], r7[j] = s[4], s[5], s[6], s[7]
			}
		}
		for ; i < i1; i++ { // fewer than 8 left
			d := dst[(i-i0)*rows+j0 : (i-i0)*rows+j1]
			s := src[j0*cols+i:]
			for k := range d {
				d[k] = s[k*cols]
			}
		}
	}
}

// put encodes vals into dst (len(dst) ≥ len(vals)·size) and returns the
// encoded bytes.
func (e *tensorEncoder) put(dst []byte, vals []float32) []byte {
	if e.dt == Float16 {
		dst = dst[:2*len(vals)]
		for i, v := range vals {
			binary.LittleEndian.PutUint16(dst[2*i:], float32ToHalf(v))
		}
		return dst
	}
	dst = dst[:4*len(vals)]
	for i, v := range vals {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
	return dst
}

// float32ToHalf converts to IEEE 754 binary16, rounding to nearest even;
// values beyond the half range become ±Inf, NaN stays NaN.
func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 127+15: // overflow
		return sign | 0x7c00
	case exp >= 127-14: // normal half
		h := uint32(exp-127+15)<<10 | mant>>13
		rest := mant & 0x1fff
		if rest > 0x1000 || rest == 0x1000 && h&1 == 1 {
			h++ // may carry into the exponent, up to Inf: correct
		}
		return sign | uint16(h)
	case exp >= 127-25: // subnormal half (or rounds up to the smallest normal)
		m := mant | 0x800000
		shift := uint32(127 - 14 - exp + 13)
		h := m >> shift
		rest := m & (1<<shift - 1)
		halfway := uint32(1) << (shift - 1)
		if rest > halfway || rest == halfway && h&1 == 1 {
			h++
		}
		return sign | uint16(h)
	}
	return sign // underflow to ±0
}
