package runtime

import (
	"fmt"
	"math"
	"strings"
	"unsafe"
)

// Tensor is a dense, row-major tensor held in Go memory: the element type,
// the shape (empty for a scalar) and the little-endian element bytes.
//
// Typed constructors (NewFloat32, NewInt64, ...) share the caller's slice
// instead of copying it, and so do the accessors of the matching type
// (Float32s on a FLOAT tensor, ...): large inputs and outputs are never
// copied twice. Accessors that convert (Float32s on a FLOAT16 tensor, ...)
// return fresh slices.
type Tensor struct {
	DType DType
	Shape []int64
	data  []byte
}

// NumElements is the product of the shape's dimensions (1 for a scalar).
func (t *Tensor) NumElements() int64 { return numElements(t.Shape) }

// Bytes returns the raw little-endian element bytes (shared, not copied).
func (t *Tensor) Bytes() []byte { return t.data }

// String summarises the tensor, e.g. "FLOAT[1 8 512]".
func (t *Tensor) String() string {
	if t == nil {
		return "<nil tensor>"
	}
	return fmt.Sprintf("%s%v", t.DType, t.Shape)
}

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	data := alignedBytes(len(t.data))
	copy(data, t.data)
	return &Tensor{DType: t.DType, Shape: append([]int64{}, t.Shape...), data: data}
}

// NewTensor wraps raw little-endian element bytes. It shares raw unless raw
// is not aligned for the element type, in which case it copies.
func NewTensor(dtype DType, shape []int64, raw []byte) (*Tensor, error) {
	size := dtype.Size()
	if size == 0 {
		return nil, fmt.Errorf("runtime: tensor of type %s is not supported", dtype)
	}
	n, err := checkShape(shape)
	if err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if int64(len(raw)) != n*int64(size) {
		return nil, fmt.Errorf("runtime: %s%v needs %d bytes, got %d", dtype, shape, n*int64(size), len(raw))
	}
	if len(raw) > 0 && uintptr(unsafe.Pointer(&raw[0]))%uintptr(size) != 0 {
		aligned := alignedBytes(len(raw))
		copy(aligned, raw)
		raw = aligned
	}
	return &Tensor{DType: dtype, Shape: append([]int64{}, shape...), data: raw}, nil
}

// Zeros returns a zero-filled tensor.
func Zeros(dtype DType, shape []int64) (*Tensor, error) {
	size := dtype.Size()
	if size == 0 {
		return nil, fmt.Errorf("runtime: tensor of type %s is not supported", dtype)
	}
	n, err := checkShape(shape)
	if err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	return &Tensor{DType: dtype, Shape: append([]int64{}, shape...), data: alignedBytes(int(n) * size)}, nil
}

// NewFloat32 makes a FLOAT tensor sharing v.
func NewFloat32(shape []int64, v []float32) (*Tensor, error) { return newTyped(Float, shape, v) }

// NewFloat64 makes a DOUBLE tensor sharing v.
func NewFloat64(shape []int64, v []float64) (*Tensor, error) { return newTyped(Double, shape, v) }

// NewInt64 makes an INT64 tensor sharing v.
func NewInt64(shape []int64, v []int64) (*Tensor, error) { return newTyped(Int64, shape, v) }

// NewInt32 makes an INT32 tensor sharing v.
func NewInt32(shape []int64, v []int32) (*Tensor, error) { return newTyped(Int32, shape, v) }

// NewBool makes a BOOL tensor sharing v.
func NewBool(shape []int64, v []bool) (*Tensor, error) { return newTyped(Bool, shape, v) }

// NewFloat16 makes a FLOAT16 tensor sharing v (bit patterns).
func NewFloat16(shape []int64, v []Float16Bits) (*Tensor, error) {
	return newTyped(Float16, shape, v)
}

// NewBFloat16 makes a BFLOAT16 tensor sharing v (bit patterns).
func NewBFloat16(shape []int64, v []BFloat16Bits) (*Tensor, error) {
	return newTyped(BFloat16, shape, v)
}

// NewFloat16From makes a FLOAT16 tensor by rounding v (ties to even).
func NewFloat16From(shape []int64, v []float32) (*Tensor, error) {
	h := make([]Float16Bits, len(v))
	for i, f := range v {
		h[i] = ToFloat16(f)
	}
	return NewFloat16(shape, h)
}

// NewBFloat16From makes a BFLOAT16 tensor by rounding v (ties to even).
func NewBFloat16From(shape []int64, v []float32) (*Tensor, error) {
	h := make([]BFloat16Bits, len(v))
	for i, f := range v {
		h[i] = ToBFloat16(f)
	}
	return NewBFloat16(shape, h)
}

// Float32s returns the elements as float32: shared for FLOAT, converted
// exactly from FLOAT16 and BFLOAT16, rounded from DOUBLE.
func (t *Tensor) Float32s() ([]float32, error) {
	switch t.DType {
	case Float:
		return view[float32](t.data), nil
	case Float16:
		h := view[Float16Bits](t.data)
		out := make([]float32, len(h))
		for i, x := range h {
			out[i] = x.Float32()
		}
		return out, nil
	case BFloat16:
		h := view[BFloat16Bits](t.data)
		out := make([]float32, len(h))
		for i, x := range h {
			out[i] = x.Float32()
		}
		return out, nil
	case Double:
		d := view[float64](t.data)
		out := make([]float32, len(d))
		for i, x := range d {
			out[i] = float32(x)
		}
		return out, nil
	}
	return nil, t.typeError("Float32s")
}

// Float64s returns the elements as float64: shared for DOUBLE, converted
// exactly from FLOAT, FLOAT16 and BFLOAT16.
func (t *Tensor) Float64s() ([]float64, error) {
	if t.DType == Double {
		return view[float64](t.data), nil
	}
	f, err := t.Float32s()
	if err != nil {
		return nil, t.typeError("Float64s")
	}
	out := make([]float64, len(f))
	for i, x := range f {
		out[i] = float64(x)
	}
	return out, nil
}

// Int64s returns the elements as int64: shared for INT64, widened from
// INT32.
func (t *Tensor) Int64s() ([]int64, error) {
	switch t.DType {
	case Int64:
		return view[int64](t.data), nil
	case Int32:
		v := view[int32](t.data)
		out := make([]int64, len(v))
		for i, x := range v {
			out[i] = int64(x)
		}
		return out, nil
	}
	return nil, t.typeError("Int64s")
}

// Int32s returns the elements of an INT32 tensor (shared).
func (t *Tensor) Int32s() ([]int32, error) {
	if t.DType != Int32 {
		return nil, t.typeError("Int32s")
	}
	return view[int32](t.data), nil
}

// Bools returns the elements of a BOOL tensor (shared).
func (t *Tensor) Bools() ([]bool, error) {
	if t.DType != Bool {
		return nil, t.typeError("Bools")
	}
	return view[bool](t.data), nil
}

// Float16s returns the bit patterns of a FLOAT16 tensor (shared).
func (t *Tensor) Float16s() ([]Float16Bits, error) {
	if t.DType != Float16 {
		return nil, t.typeError("Float16s")
	}
	return view[Float16Bits](t.data), nil
}

// BFloat16s returns the bit patterns of a BFLOAT16 tensor (shared).
func (t *Tensor) BFloat16s() ([]BFloat16Bits, error) {
	if t.DType != BFloat16 {
		return nil, t.typeError("BFloat16s")
	}
	return view[BFloat16Bits](t.data), nil
}

func (t *Tensor) typeError(method string) error {
	return fmt.Errorf("runtime: %s called on a %s tensor", method, t.DType)
}

// MaxAbsDiff returns max |a_i - b_i| over two floating-point tensors of the
// same shape (types may differ; values compare as float64). NaN in either
// tensor gives NaN unless both are NaN at the same place.
func MaxAbsDiff(a, b *Tensor) (float64, error) {
	if !sameShape(a.Shape, b.Shape) {
		return 0, fmt.Errorf("runtime: shape mismatch: %v vs %v", a.Shape, b.Shape)
	}
	x, err := a.Float64s()
	if err != nil {
		return 0, err
	}
	y, err := b.Float64s()
	if err != nil {
		return 0, err
	}
	worst := 0.0
	for i := range x {
		if math.IsNaN(x[i]) || math.IsNaN(y[i]) {
			if math.IsNaN(x[i]) && math.IsNaN(y[i]) {
				continue
			}
			return math.NaN(), nil
		}
		if x[i] == y[i] { // also equal infinities, whose difference is NaN
			continue
		}
		if d := math.Abs(x[i] - y[i]); d > worst {
			worst = d
		}
	}
	return worst, nil
}

// element is the set of Go types whose memory layout equals an ONNX element
// type, so a []T and its bytes can be reinterpreted in place.
type element interface {
	~float32 | ~float64 | ~int8 | ~uint8 | ~int16 | ~uint16 | ~int32 | ~uint32 |
		~int64 | ~uint64 | ~bool
}

func newTyped[T element](dtype DType, shape []int64, v []T) (*Tensor, error) {
	n, err := checkShape(shape)
	if err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	if int64(len(v)) != n {
		return nil, fmt.Errorf("runtime: %s%v has %d elements, got %d values", dtype, shape, n, len(v))
	}
	return &Tensor{DType: dtype, Shape: append([]int64{}, shape...), data: asBytes(v)}, nil
}

// asBytes reinterprets v's memory as bytes (no copy).
func asBytes[T element](v []T) []byte {
	if len(v) == 0 {
		return nil
	}
	var zero T
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(v))), len(v)*int(unsafe.Sizeof(zero)))
}

// view reinterprets b as a []T (no copy). b is aligned for T: every Tensor's
// data either comes from a []T, from alignedBytes, or was copied into
// alignedBytes by NewTensor.
func view[T element](b []byte) []T {
	var zero T
	size := int(unsafe.Sizeof(zero))
	if len(b) < size {
		return []T{}
	}
	return unsafe.Slice((*T)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/size)
}

// alignedBytes allocates n zero bytes aligned to 8, enough for every element
// type.
func alignedBytes(n int) []byte {
	if n == 0 {
		return nil
	}
	words := make([]uint64, (n+7)/8)
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), n)
}

func checkShape(shape []int64) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("invalid shape %v: negative dimension", shape)
		}
		// Keep the byte count (at most 8 per element) far from overflowing.
		if d != 0 && n > (1<<56)/d {
			return 0, fmt.Errorf("invalid shape %v: too many elements", shape)
		}
		n *= d
	}
	return n, nil
}

func numElements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		if d < 0 {
			parts[i] = "?"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ",") + "]"
}
