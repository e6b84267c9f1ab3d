package graph

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// DTypeSize is the size in bytes of one element of an ONNX tensor data
// type, or 0 for types without a fixed byte size (strings, sub-byte types).
func DTypeSize(dt int32) int {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_INT32, onnxpb.TensorProto_UINT32:
		return 4
	case onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_INT64, onnxpb.TensorProto_UINT64, onnxpb.TensorProto_COMPLEX64:
		return 8
	case onnxpb.TensorProto_COMPLEX128:
		return 16
	case onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_INT16, onnxpb.TensorProto_UINT16:
		return 2
	case onnxpb.TensorProto_UINT8, onnxpb.TensorProto_INT8, onnxpb.TensorProto_BOOL,
		onnxpb.TensorProto_FLOAT8E4M3FN, onnxpb.TensorProto_FLOAT8E4M3FNUZ,
		onnxpb.TensorProto_FLOAT8E5M2, onnxpb.TensorProto_FLOAT8E5M2FNUZ, onnxpb.TensorProto_FLOAT8E8M0:
		return 1
	}
	return 0
}

// DTypeName is the ONNX name of a tensor data type ("float", "int64", ...).
func DTypeName(dt int32) string {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT:
		return "float32"
	case onnxpb.TensorProto_DOUBLE:
		return "float64"
	case onnxpb.TensorProto_FLOAT16:
		return "float16"
	case onnxpb.TensorProto_BFLOAT16:
		return "bfloat16"
	}
	if name, ok := onnxpb.TensorProto_DataType_name[dt]; ok {
		return lower(name)
	}
	return fmt.Sprintf("dtype(%d)", dt)
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// NumElements is the product of a tensor's dims (1 for a scalar).
func NumElements(dims []int64) int64 {
	n := int64(1)
	for _, d := range dims {
		n *= d
	}
	return n
}

// ByteSize is the size of a tensor's data in bytes, computed from its type
// and shape, or -1 when the type has no fixed element size.
func ByteSize(t *onnxpb.TensorProto) int64 {
	sz := DTypeSize(t.GetDataType())
	if sz == 0 {
		return -1
	}
	return NumElements(t.GetDims()) * int64(sz)
}

// IsExternal reports whether the tensor's data lives in an external file.
func IsExternal(t *onnxpb.TensorProto) bool {
	return t.GetDataLocation() == onnxpb.TensorProto_EXTERNAL
}

// typedBytes encodes a tensor's typed data fields (float_data, int64_data,
// ...) as the little-endian raw bytes raw_data would hold. It returns nil,
// false when the tensor uses none of them.
func typedBytes(t *onnxpb.TensorProto) ([]byte, bool) {
	le := binary.LittleEndian
	switch {
	case len(t.FloatData) > 0:
		b := make([]byte, 4*len(t.FloatData))
		for i, v := range t.FloatData {
			le.PutUint32(b[4*i:], math.Float32bits(v))
		}
		return b, true
	case len(t.DoubleData) > 0:
		b := make([]byte, 8*len(t.DoubleData))
		for i, v := range t.DoubleData {
			le.PutUint64(b[8*i:], math.Float64bits(v))
		}
		return b, true
	case len(t.Int64Data) > 0:
		b := make([]byte, 8*len(t.Int64Data))
		for i, v := range t.Int64Data {
			le.PutUint64(b[8*i:], uint64(v))
		}
		return b, true
	case len(t.Uint64Data) > 0:
		b := make([]byte, 8*len(t.Uint64Data))
		for i, v := range t.Uint64Data {
			le.PutUint64(b[8*i:], v)
		}
		return b, true
	case len(t.Int32Data) > 0:
		// int32_data also carries the narrower integer types, bool,
		// float16 and bfloat16, one element per int32.
		sz := DTypeSize(t.GetDataType())
		if sz == 0 || sz > 4 {
			return nil, false
		}
		b := make([]byte, sz*len(t.Int32Data))
		for i, v := range t.Int32Data {
			switch sz {
			case 1:
				b[i] = byte(v)
			case 2:
				le.PutUint16(b[2*i:], uint16(v))
			case 4:
				le.PutUint32(b[4*i:], uint32(v))
			}
		}
		return b, true
	}
	return nil, false
}
