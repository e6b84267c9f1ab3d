package runtime

import (
	"fmt"

	ort "github.com/yalue/onnxruntime_go"
)

// toOrtValue wraps t for onnxruntime without copying its data (except for
// scalars, which onnxruntime_go always copies). The caller must keep t alive
// until the run is over and Destroy the result.
func toOrtValue(t *Tensor) (ort.Value, error) {
	size := t.DType.Size()
	if size == 0 {
		return nil, fmt.Errorf("element type %s is not supported", t.DType)
	}
	n, err := checkShape(t.Shape)
	if err != nil {
		return nil, err
	}
	if int64(len(t.data)) != n*int64(size) {
		return nil, fmt.Errorf("shape %v needs %d bytes of %s, tensor holds %d", t.Shape, n*int64(size), t.DType, len(t.data))
	}
	if len(t.Shape) == 0 {
		return scalarValue(t)
	}
	if n == 0 {
		// onnxruntime_go rejects an empty CustomDataTensor buffer, but
		// onnxruntime itself only needs a buffer at least as large as the
		// tensor (0 bytes), so any non-empty dummy will do.
		return ort.NewCustomDataTensor(ort.NewShape(t.Shape...), make([]byte, 8), ort.TensorElementDataType(t.DType))
	}
	// CustomDataTensor takes any element type as raw bytes, so one path
	// serves FLOAT16/BFLOAT16 and the typed kinds alike.
	return ort.NewCustomDataTensor(ort.NewShape(t.Shape...), t.data, ort.TensorElementDataType(t.DType))
}

// scalarValue handles rank-0 tensors: onnxruntime_go's tensors reject an
// empty shape, only its typed Scalar can express one.
func scalarValue(t *Tensor) (ort.Value, error) {
	switch t.DType {
	case Float:
		return ort.NewScalar(view[float32](t.data)[0])
	case Double:
		return ort.NewScalar(view[float64](t.data)[0])
	case Int8:
		return ort.NewScalar(view[int8](t.data)[0])
	case Uint8:
		return ort.NewScalar(view[uint8](t.data)[0])
	case Int16:
		return ort.NewScalar(view[int16](t.data)[0])
	case Uint16:
		return ort.NewScalar(view[uint16](t.data)[0])
	case Int32:
		return ort.NewScalar(view[int32](t.data)[0])
	case Uint32:
		return ort.NewScalar(view[uint32](t.data)[0])
	case Int64:
		return ort.NewScalar(view[int64](t.data)[0])
	case Uint64:
		return ort.NewScalar(view[uint64](t.data)[0])
	case Bool:
		return ort.NewScalar(view[bool](t.data)[0])
	}
	return nil, fmt.Errorf("rank-0 %s tensors cannot be passed through onnxruntime_go; reshape to [1]", t.DType)
}

// emptyScalar preallocates a rank-0 output (onnxruntime_go cannot
// auto-allocate one: it builds outputs with NewTensor, which rejects an empty
// shape).
func emptyScalar(d DType) (ort.Value, error) {
	switch d {
	case Float:
		return ort.NewEmptyScalar[float32]()
	case Double:
		return ort.NewEmptyScalar[float64]()
	case Int8:
		return ort.NewEmptyScalar[int8]()
	case Uint8:
		return ort.NewEmptyScalar[uint8]()
	case Int16:
		return ort.NewEmptyScalar[int16]()
	case Uint16:
		return ort.NewEmptyScalar[uint16]()
	case Int32:
		return ort.NewEmptyScalar[int32]()
	case Uint32:
		return ort.NewEmptyScalar[uint32]()
	case Int64:
		return ort.NewEmptyScalar[int64]()
	case Uint64:
		return ort.NewEmptyScalar[uint64]()
	case Bool:
		return ort.NewEmptyScalar[bool]()
	}
	return nil, fmt.Errorf("rank-0 %s outputs are not supported", d)
}

// scalarKind reports whether emptyScalar supports d.
func scalarKind(d DType) bool {
	switch d {
	case Float, Double, Int8, Uint8, Int16, Uint16, Int32, Uint32, Int64, Uint64, Bool:
		return true
	}
	return false
}

// fromOrtValue turns an output into a Tensor that shares the value's
// Go-allocated data (onnxruntime_go has already copied auto-allocated
// outputs out of onnxruntime's memory). The caller still Destroys v, which
// releases only the OrtValue wrapper.
func fromOrtValue(v ort.Value) (*Tensor, error) {
	switch v := v.(type) {
	case *ort.Tensor[float32]:
		return typedTensor(Float, v.GetShape(), v.GetData())
	case *ort.Tensor[float64]:
		return typedTensor(Double, v.GetShape(), v.GetData())
	case *ort.Tensor[int8]:
		return typedTensor(Int8, v.GetShape(), v.GetData())
	case *ort.Tensor[uint8]:
		return typedTensor(Uint8, v.GetShape(), v.GetData())
	case *ort.Tensor[int16]:
		return typedTensor(Int16, v.GetShape(), v.GetData())
	case *ort.Tensor[uint16]:
		return typedTensor(Uint16, v.GetShape(), v.GetData())
	case *ort.Tensor[int32]:
		return typedTensor(Int32, v.GetShape(), v.GetData())
	case *ort.Tensor[uint32]:
		return typedTensor(Uint32, v.GetShape(), v.GetData())
	case *ort.Tensor[int64]:
		return typedTensor(Int64, v.GetShape(), v.GetData())
	case *ort.Tensor[uint64]:
		return typedTensor(Uint64, v.GetShape(), v.GetData())
	case *ort.Tensor[bool]:
		return typedTensor(Bool, v.GetShape(), v.GetData())
	case *ort.CustomDataTensor:
		return NewTensor(DType(v.DataType()), v.GetShape(), v.GetData())
	case *ort.Scalar[float32]:
		return typedTensor(Float, nil, []float32{v.GetData()})
	case *ort.Scalar[float64]:
		return typedTensor(Double, nil, []float64{v.GetData()})
	case *ort.Scalar[int8]:
		return typedTensor(Int8, nil, []int8{v.GetData()})
	case *ort.Scalar[uint8]:
		return typedTensor(Uint8, nil, []uint8{v.GetData()})
	case *ort.Scalar[int16]:
		return typedTensor(Int16, nil, []int16{v.GetData()})
	case *ort.Scalar[uint16]:
		return typedTensor(Uint16, nil, []uint16{v.GetData()})
	case *ort.Scalar[int32]:
		return typedTensor(Int32, nil, []int32{v.GetData()})
	case *ort.Scalar[uint32]:
		return typedTensor(Uint32, nil, []uint32{v.GetData()})
	case *ort.Scalar[int64]:
		return typedTensor(Int64, nil, []int64{v.GetData()})
	case *ort.Scalar[uint64]:
		return typedTensor(Uint64, nil, []uint64{v.GetData()})
	case *ort.Scalar[bool]:
		return typedTensor(Bool, nil, []bool{v.GetData()})
	}
	return nil, fmt.Errorf("unsupported output value %T", v)
}

func typedTensor[T element](d DType, shape ort.Shape, data []T) (*Tensor, error) {
	s := []int64(shape)
	if s == nil {
		s = []int64{}
	}
	return newTyped(d, s, data)
}

// narrowFloat converts a FLOAT tensor produced by a Cast we appended back to
// the FLOAT16/BFLOAT16 the model declares. The float32 values came from
// exactly such values, so rounding is exact and the result bit-identical to
// what the model computed.
func narrowFloat(t *Tensor, to DType) (*Tensor, error) {
	f, err := t.Float32s()
	if err != nil {
		return nil, err
	}
	switch to {
	case Float16:
		return NewFloat16From(t.Shape, f)
	case BFloat16:
		return NewBFloat16From(t.Shape, f)
	}
	return nil, fmt.Errorf("cannot narrow to %s", to)
}
