package rewrite

import (
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Rank and static-shape knowledge for Gradient. Ranks fix static
// attributes (Transpose perms, Flatten axes); they never fix dimensions.
// GradientOptions.Ranks (a probe) wins, then declarations, then a small
// inference over the ops exporters put between weights and logits.

// rank returns the rank of tensor name, if known.
func (b *gradBuilder) rank(name string) (int, bool) {
	if r, ok := b.opts.Ranks[name]; ok {
		return r, true
	}
	if r, ok := b.rankMem[name]; ok {
		return r, r >= 0
	}
	b.rankMem[name] = -1 // cycle guard
	r := b.inferRank(name)
	b.rankMem[name] = r
	return r, r >= 0
}

func (b *gradBuilder) declaredShape(name string) *onnxpb.TensorShapeProto {
	if vi := b.ix.Inputs[name]; vi != nil {
		return vi.GetType().GetTensorType().GetShape()
	}
	for _, vi := range b.g.GetValueInfo() {
		if vi.GetName() == name {
			return vi.GetType().GetTensorType().GetShape()
		}
	}
	for _, vi := range b.g.GetOutput() {
		if vi.GetName() == name {
			return vi.GetType().GetTensorType().GetShape()
		}
	}
	return nil
}

// staticShape returns the dims of a tensor whose shape is fully static:
// constants and declarations with only numeric dims.
func (b *gradBuilder) staticShape(name string) ([]int64, bool) {
	if t := b.constTensor(name); t != nil {
		return t.GetDims(), true
	}
	s := b.declaredShape(name)
	if s == nil {
		return nil, false
	}
	dims := make([]int64, len(s.GetDim()))
	for i, d := range s.GetDim() {
		if _, ok := d.GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); !ok {
			return nil, false
		}
		dims[i] = d.GetDimValue()
	}
	return dims, true
}

func (b *gradBuilder) inferRank(name string) int {
	if t := b.constTensor(name); t != nil {
		return len(t.GetDims())
	}
	if s := b.declaredShape(name); s != nil {
		return len(s.GetDim())
	}
	p := b.ix.Producer[name]
	if p == nil {
		return -1
	}
	in := p.GetInput()
	r := func(i int) int {
		if i >= len(in) || in[i] == "" {
			return -1
		}
		v, ok := b.rank(in[i])
		if !ok {
			return -1
		}
		return v
	}
	maxRank := func() int {
		m := -1
		for i := range in {
			v := r(i)
			if v < 0 {
				return -1
			}
			m = max(m, v)
		}
		return m
	}
	switch p.GetOpType() {
	case "Add", "Sub", "Mul", "Div", "Pow", "Where", "Sum", "Max", "Min", "Equal", "Less", "Greater",
		"LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "PRelu", "Mod", "BitShift":
		return maxRank()
	case "Relu", "Sigmoid", "Tanh", "Erf", "Gelu", "FastGelu", "QuickGelu", "Neg", "Sqrt", "Reciprocal", "Exp",
		"Log", "Abs", "Sin", "Cos", "Cast", "CastLike", "Identity", "Softmax", "LogSoftmax", "LayerNormalization",
		"SimplifiedLayerNormalization", "RMSNormalization", "SkipLayerNormalization", "SkipSimplifiedLayerNormalization",
		"Dropout", "Not", "Transpose", "Concat", "Split", "Slice", "Trilu", "Pad", "Tile", "ScatterND", "ScatterElements",
		"GatherElements", "IsNaN", "IsInf", "Softplus", "Floor", "Ceil", "Round", "Sign", "CumSum", "Clip", "LeakyRelu":
		return r(0)
	case "MatMul", "FusedMatMul":
		ra, rb := r(0), r(1)
		switch {
		case ra < 0 || rb < 0:
			return -1
		case ra == 1 && rb == 1:
			return 0
		case ra == 1:
			return rb - 1
		case rb == 1:
			return ra - 1
		}
		return max(ra, rb)
	case "Gemm":
		return 2
	case "Shape", "NonZero":
		if p.GetOpType() == "NonZero" {
			return 2
		}
		return 1
	case "Size":
		return 0
	case "Range":
		return 1
	case "Gather":
		if r(0) < 0 || r(1) < 0 {
			return -1
		}
		return r(0) + r(1) - 1
	case "Flatten":
		return 2
	case "Reshape":
		if l := b.vectorLen(gradInput(p, 1)); l >= 0 {
			return l
		}
	case "Expand":
		l := b.vectorLen(gradInput(p, 1))
		if l < 0 || r(0) < 0 {
			return -1
		}
		return max(l, r(0))
	case "ConstantOfShape":
		return b.vectorLen(gradInput(p, 0))
	case "Unsqueeze", "Squeeze":
		n := -1
		if a := gradAttr(p, "axes"); a != nil {
			n = len(a.GetInts())
		} else if l := b.vectorLen(gradInput(p, 1)); l >= 0 {
			n = l
		}
		if r(0) < 0 {
			return -1
		}
		if p.GetOpType() == "Unsqueeze" {
			if n < 0 {
				return -1
			}
			return r(0) + n
		}
		if n < 0 {
			return -1 // squeezing all unit dims: depends on the data
		}
		return r(0) - n
	case "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare":
		if r(0) < 0 {
			return -1
		}
		if gradAttrInt(p, "keepdims", 1) == 1 {
			return r(0)
		}
		n := -1
		if a := gradAttr(p, "axes"); a != nil {
			n = len(a.GetInts())
		} else if len(in) > 1 && in[1] != "" {
			n = b.vectorLen(in[1])
		} else if gradAttrInt(p, "noop_with_empty_axes", 0) == 0 {
			return 0
		}
		if n < 0 {
			return -1
		}
		return r(0) - n
	}
	return -1
}

// vectorLen returns the static length of a 1-D int64 tensor that holds a
// shape (the second input of Reshape/Expand), following the Concat /
// Unsqueeze / Shape chains exporters build: -1 when unknown.
func (b *gradBuilder) vectorLen(name string) int {
	if name == "" {
		return -1
	}
	if t := b.constTensor(name); t != nil {
		if len(t.GetDims()) != 1 {
			return -1
		}
		return int(t.GetDims()[0])
	}
	if s := b.declaredShape(name); s != nil && len(s.GetDim()) == 1 {
		if d, ok := s.GetDim()[0].GetValue().(*onnxpb.TensorShapeProto_Dimension_DimValue); ok {
			return int(d.DimValue)
		}
	}
	p := b.ix.Producer[name]
	if p == nil {
		return -1
	}
	in := p.GetInput()
	switch p.GetOpType() {
	case "Concat":
		n := 0
		for _, x := range in {
			l := b.vectorLen(x)
			if l < 0 {
				return -1
			}
			n += l
		}
		return n
	case "Unsqueeze":
		if r, ok := b.rank(in[0]); ok && r == 0 {
			return 1
		}
	case "Cast", "Identity", "Abs", "Neg":
		return b.vectorLen(in[0])
	case "Add", "Sub", "Mul", "Div", "Where", "Max", "Min":
		n := -1
		for _, x := range in {
			if rx, ok := b.rank(x); ok && rx == 0 {
				continue
			}
			l := b.vectorLen(x)
			if l < 0 {
				return -1
			}
			n = max(n, l)
		}
		return n
	case "Shape":
		r, ok := b.rank(in[0])
		if !ok {
			return -1
		}
		start, end := gradAttrInt(p, "start", 0), gradAttrInt(p, "end", int64(r))
		if start < 0 {
			start += int64(r)
		}
		if end < 0 {
			end += int64(r)
		}
		start, end = min(max(start, 0), int64(r)), min(max(end, 0), int64(r))
		return int(max(end-start, 0))
	case "Gather":
		if ri, ok := b.rank(in[1]); ok && ri == 0 {
			return -1
		}
		if dims, ok := b.staticShape(in[1]); ok && len(dims) == 1 {
			return int(dims[0])
		}
	case "Slice":
		starts, ok1 := b.staticInts(in[1])
		ends, ok2 := b.staticInts(in[2])
		l := b.vectorLen(in[0])
		if !ok1 || !ok2 || len(starts) != 1 || len(ends) != 1 || l < 0 {
			return -1
		}
		if s := gradInput(p, 4); s != "" {
			if st, ok := b.staticInts(s); !ok || len(st) != 1 || st[0] != 1 {
				return -1
			}
		}
		s, e := starts[0], ends[0]
		if s < 0 {
			s += int64(l)
		}
		if e < 0 {
			e += int64(l)
		}
		s, e = min(max(s, 0), int64(l)), min(max(e, 0), int64(l))
		return int(max(e-s, 0))
	}
	return -1
}
