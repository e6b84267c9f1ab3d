package convert

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"unsafe"

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

// encodeBufBytes bounds the staging buffer between a tensor's float32
// values and the output file.
const encodeBufBytes = 8 << 20

// littleEndian says float32 values in memory are laid out as ONNX stores
// them, so they can be written without encoding.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// tensorEncoder writes tensors in their stored layout and element type
// through reusable staging buffers, so encoding a tensor costs its
// float32 values plus a few MiB, never a second full copy.
type tensorEncoder struct {
	dt  DType
	buf []byte    // encoded bytes on their way to the writer
	tr  []float32 // a band of transposed rows
}

func newTensorEncoder(dt DType) *tensorEncoder { return &tensorEncoder{dt: dt} }

// write encodes vals (row-major in the checkpoint's shape) to w as spec
// stores them: as they are, or transposed from [out, in] to [in, out].
func (e *tensorEncoder) write(w io.Writer, vals []float32, spec weightSpec) error {
	if spec.layout == layoutTranspose {
		return e.writeTransposed(w, vals, int(spec.shape[0]), int(spec.shape[1]))
	}
	return e.writeRows(w, vals)
}

// writeRows encodes vals in order, a buffer at a time.
func (e *tensorEncoder) writeRows(w io.Writer, vals []float32) error {
	if e.dt == Float32 && littleEndian && len(vals) > 0 {
		// The values' memory already is the little-endian encoding.
		_, err := w.Write(unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), 4*len(vals)))
		return err
	}
	if e.buf == nil {
		e.buf = make([]byte, encodeBufBytes)
	}
	es := int(e.dt.size())
	per := len(e.buf) / es
	for len(vals) > 0 {
		n := min(per, len(vals))
		e.put(e.buf, vals[:n])
		if _, err := w.Write(e.buf[:n*es]); err != nil {
			return err
		}
		vals = vals[n:]
	}
	return nil
}

// writeTransposed writes the [cols, rows] transpose of src [rows, cols]
// a band of output rows at a time.
func (e *tensorEncoder) writeTransposed(w io.Writer, src []float32, rows, cols int) error {
	band := max(1, min(cols, encodeBufBytes/int(e.dt.size())/rows))
	if need := band * rows; len(e.tr) < need {
		e.tr = make([]float32, need)
	}
	for i0 := 0; i0 < cols; i0 += band {
		i1 := min(i0+band, cols)
		t := e.tr[:(i1-i0)*rows]
		transposeBand(t, src, rows, cols, i0, i1)
		if err := e.writeRows(w, t); err != nil {
			return err
		}
	}
	return nil
}

// transposeBand sets dst[(i-i0)·rows + j] = src[j·cols + i] for output
// rows i0 ≤ i < i1, in 16×16 tiles: a tile's source lines stay in the
// L1 cache while its output rows are written contiguously (about 4× faster
// than walking whole rows or columns of a power-of-two-wide matrix).
func transposeBand(dst, src []float32, rows, cols, i0, i1 int) {
	const tile = 16
	for j0 := 0; j0 < rows; j0 += tile {
		j1 := min(j0+tile, rows)
		for ib := i0; ib < i1; ib += tile {
			for i := ib; i < min(ib+tile, i1); i++ {
				d := dst[(i-i0)*rows+j0 : (i-i0)*rows+j1]
				s := src[j0*cols+i:]
				for k := range d {
					d[k] = s[k*cols]
				}
			}
		}
	}
}

// put encodes vals into dst (len(dst) ≥ len(vals)·size).
func (e *tensorEncoder) put(dst []byte, vals []float32) {
	if e.dt == Float16 {
		for i, v := range vals {
			binary.LittleEndian.PutUint16(dst[2*i:], float32ToHalf(v))
		}
		return
	}
	for i, v := range vals {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
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
