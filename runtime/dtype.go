package runtime

import (
	"fmt"
	"strings"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// DType is a tensor element type. Its values are ONNX's
// TensorProto.DataType numbers (which onnxruntime's
// ONNXTensorElementDataType also uses), so DType(tp.GetDataType()) converts
// from a graph's TensorProto and onnxpb.TensorProto_DataType(d) converts back.
type DType int32

// Element types, named after the ONNX TensorProto.DataType they equal.
const (
	Undefined    = DType(onnxpb.TensorProto_UNDEFINED)
	Float        = DType(onnxpb.TensorProto_FLOAT)
	Uint8        = DType(onnxpb.TensorProto_UINT8)
	Int8         = DType(onnxpb.TensorProto_INT8)
	Uint16       = DType(onnxpb.TensorProto_UINT16)
	Int16        = DType(onnxpb.TensorProto_INT16)
	Int32        = DType(onnxpb.TensorProto_INT32)
	Int64        = DType(onnxpb.TensorProto_INT64)
	String       = DType(onnxpb.TensorProto_STRING)
	Bool         = DType(onnxpb.TensorProto_BOOL)
	Float16      = DType(onnxpb.TensorProto_FLOAT16)
	Double       = DType(onnxpb.TensorProto_DOUBLE)
	Uint32       = DType(onnxpb.TensorProto_UINT32)
	Uint64       = DType(onnxpb.TensorProto_UINT64)
	BFloat16     = DType(onnxpb.TensorProto_BFLOAT16)
	Float8E4M3FN = DType(onnxpb.TensorProto_FLOAT8E4M3FN)
	Float8E5M2   = DType(onnxpb.TensorProto_FLOAT8E5M2)
)

// String returns the ONNX name of the type ("FLOAT", "FLOAT16", ...).
func (d DType) String() string {
	if name, ok := onnxpb.TensorProto_DataType_name[int32(d)]; ok {
		return name
	}
	return fmt.Sprintf("DType(%d)", int32(d))
}

// Size is the number of bytes one element takes, or 0 for types this package
// cannot hold in a flat byte buffer (STRING, packed 4-bit and 2-bit types,
// complex types and unknown values).
func (d DType) Size() int {
	switch d {
	case Uint8, Int8, Bool, Float8E4M3FN, Float8E5M2,
		DType(onnxpb.TensorProto_FLOAT8E4M3FNUZ), DType(onnxpb.TensorProto_FLOAT8E5M2FNUZ),
		DType(onnxpb.TensorProto_FLOAT8E8M0):
		return 1
	case Uint16, Int16, Float16, BFloat16:
		return 2
	case Float, Int32, Uint32:
		return 4
	case Int64, Uint64, Double:
		return 8
	}
	return 0
}

// numpyNames maps the dtype spellings used by numpy and PyTorch (and by the
// reference files under testdata/) to DTypes.
var numpyNames = map[string]DType{
	"float32":  Float,
	"float":    Float,
	"float16":  Float16,
	"half":     Float16,
	"bfloat16": BFloat16,
	"float64":  Double,
	"double":   Double,
	"int8":     Int8,
	"uint8":    Uint8,
	"int16":    Int16,
	"uint16":   Uint16,
	"int32":    Int32,
	"uint32":   Uint32,
	"int64":    Int64,
	"uint64":   Uint64,
	"bool":     Bool,
}

// ParseDType accepts an ONNX name ("FLOAT16", case-insensitive) or a
// numpy/PyTorch name ("float16", "torch.float16").
func ParseDType(s string) (DType, error) {
	name := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "torch."), "np.")
	if d, ok := numpyNames[strings.ToLower(name)]; ok {
		return d, nil
	}
	if v, ok := onnxpb.TensorProto_DataType_value[strings.ToUpper(name)]; ok && v != 0 {
		return DType(v), nil
	}
	return Undefined, fmt.Errorf("runtime: unknown dtype %q", s)
}
