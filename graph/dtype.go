package graph

import "github.com/onnxprune/onnxprune/graph/onnxpb"

// ElemType infers the element type of a tensor in the indexed graph from
// declarations (inputs, initializers, value_info, outputs) or by walking
// back through ops whose output type is their first input's (arithmetic,
// normalizations, shape ops, Gather's data) or an attribute's (Cast). It
// returns 0 (UNDEFINED) when it cannot tell.
func (ix *Index) ElemType(name string) int32 {
	for range 10000 { // bounded: a chain of type-preserving ops
		if t := ix.declaredType(name); t != 0 {
			return t
		}
		p := ix.Producer[name]
		if p == nil {
			return 0
		}
		switch p.GetOpType() {
		case "Cast", "CastLike":
			for _, a := range p.Attribute {
				if a.GetName() == "to" {
					return int32(a.GetI())
				}
			}
			if len(p.Input) > 1 { // CastLike takes the type of input 1
				name = p.Input[1]
				continue
			}
			return 0
		case "Shape", "Size", "ArgMax", "ArgMin", "NonZero":
			return int32(onnxpb.TensorProto_INT64)
		case "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf":
			return int32(onnxpb.TensorProto_BOOL)
		case "Where":
			name = p.Input[1]
		case "Dropout":
			if len(p.Output) > 1 && name == p.Output[1] { // the mask
				return int32(onnxpb.TensorProto_BOOL)
			}
			name = p.Input[0]
		case "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization",
			"SkipLayerNormalization", "SkipSimplifiedLayerNormalization":
			// Outputs 1 and 2 (mean, inverse std) have type stash_type,
			// FLOAT unless set; a skip norm's output 3 (the sum) is the
			// input's type.
			if name != p.Output[0] && (len(p.Output) < 4 || name != p.Output[3]) {
				for _, a := range p.Attribute {
					if a.GetName() == "stash_type" {
						return int32(a.GetI())
					}
				}
				return int32(onnxpb.TensorProto_FLOAT)
			}
			name = p.Input[0]
		case "Add", "Sub", "Mul", "Div", "MatMul", "Gemm", "Relu", "Sigmoid", "Tanh", "Neg", "Sqrt", "Pow", "Exp",
			"Softmax", "LogSoftmax", "Reshape", "Transpose", "Identity", "Squeeze",
			"Unsqueeze", "Concat", "Slice", "Split", "Expand", "Gather", "ReduceMean", "ReduceSum", "Erf", "Gelu",
			"FastGelu", "QuickGelu", "FusedMatMul", "Tile", "Flatten", "Reciprocal", "Log", "Abs", "Cos", "Sin",
			"Min", "Max", "Sum", "Mean", "Clip", "Pad", "ReduceMax", "ReduceMin", "GatherElements", "GatherND",
			"ScatterElements", "ScatterND", "Trilu", "Softplus", "Floor", "Ceil", "Round":
			name = p.Input[0]
		default:
			return 0
		}
	}
	return 0
}

func (ix *Index) declaredType(name string) int32 {
	if vi := ix.Inputs[name]; vi != nil {
		return vi.GetType().GetTensorType().GetElemType()
	}
	if t := ix.Initializers[name]; t != nil {
		return t.GetDataType()
	}
	for _, vi := range ix.Graph.GetValueInfo() {
		if vi.GetName() == name {
			return vi.GetType().GetTensorType().GetElemType()
		}
	}
	for _, vi := range ix.Graph.GetOutput() {
		if vi.GetName() == name {
			return vi.GetType().GetTensorType().GetElemType()
		}
	}
	return 0
}
