package rewrite_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// opIn is a float graph input of a gradient-check case, drawn uniformly
// from [lo, hi] (default [-1, 1]); away from 0 when lo < 0 < hi and away
// is set (Relu's kink).
type opIn struct {
	name   string
	dims   []int64
	lo, hi float64
	away   float64
	f32    bool
}

type opCase struct {
	name   string
	opset  int64
	ins    []opIn
	consts []*onnxpb.TensorProto
	nodes  []*onnxpb.NodeProto
	outs   []string
	wrt    []string // nil: every input
	h      float64  // finite-difference step (1e-5)
	tol    float64  // relative error bound (1e-4)
}

func nd(op string, ins, outs []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String("/test/" + op + "_" + outs[0]), Input: ins, Output: outs, Attribute: attrs}
}

func ai(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func ais(name string, vs ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: vs}
}

func af(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func as(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

func i64c(name string, dims []int64, vs ...int64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: dims, Int64Data: vs}
}

func f64c(name string, dims []int64, vs ...float64) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_DOUBLE)), Dims: dims, DoubleData: vs}
}

func boolc(name string, dims []int64, vs ...int32) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_BOOL)), Dims: dims, Int32Data: vs}
}

func in(name string, dims ...int64) opIn { return opIn{name: name, dims: dims} }

func pos(name string, dims ...int64) opIn { return opIn{name: name, dims: dims, lo: 0.5, hi: 1.5} }

// dynVI declares a tensor with symbolic dims only, so the gradient graph
// cannot lean on static sizes.
func dynVI(name string, dt onnxpb.TensorProto_DataType, rank int) *onnxpb.ValueInfoProto {
	s := &onnxpb.TensorShapeProto{}
	for i := range rank {
		s.Dim = append(s.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: fmt.Sprintf("%s_%d", name, i)}})
	}
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(dt)), Shape: s}}}}
}

// gradOpCases covers every op with a gradient rule, with broadcasting,
// attributes and negative axes.
func gradOpCases() []opCase {
	unary := func(name string, x opIn, attrs ...*onnxpb.AttributeProto) opCase {
		x.name = "x"
		op, _, _ := strings.Cut(name, "/")
		return opCase{name: name, ins: []opIn{x}, nodes: []*onnxpb.NodeProto{nd(op, []string{"x"}, []string{"y"}, attrs...)}, outs: []string{"y"}}
	}
	bin := func(name, op string, a, b opIn) opCase {
		a.name, b.name = "a", "b"
		return opCase{name: name, ins: []opIn{a, b}, nodes: []*onnxpb.NodeProto{nd(op, []string{"a", "b"}, []string{"y"})}, outs: []string{"y"}}
	}
	one := func(name string, ins []opIn, consts []*onnxpb.TensorProto, n *onnxpb.NodeProto) opCase {
		return opCase{name: name, ins: ins, consts: consts, nodes: []*onnxpb.NodeProto{n}, outs: n.Output[:1]}
	}
	cases := []opCase{
		bin("Add/[2,3,4]+[4]", "Add", in("", 2, 3, 4), in("", 4)),
		bin("Add/[3,1]+[2,1,4]", "Add", in("", 3, 1), in("", 2, 1, 4)),
		bin("Mul/[2,1,4]*[3,1]", "Mul", in("", 2, 1, 4), in("", 3, 1)),
		bin("Mul/scalar", "Mul", in("", 2, 3), in("")),
		bin("Sub/[3,4]-[2,3,1]", "Sub", in("", 3, 4), in("", 2, 3, 1)),
		bin("Div/[2,3]/[3]", "Div", in("", 2, 3), pos("", 3)),
		bin("Div/[1]/[2,2]", "Div", in("", 1), pos("", 2, 2)),
		bin("Pow/[2,3]^[3]", "Pow", pos("", 2, 3), in("", 3)),
		{name: "Sum/3 inputs", ins: []opIn{in("a", 2, 3), in("b", 3), in("c", 2, 1)}, nodes: []*onnxpb.NodeProto{nd("Sum", []string{"a", "b", "c"}, []string{"y"})}, outs: []string{"y"}},
		one("Pow/const 2", []opIn{in("x", 2, 3)}, []*onnxpb.TensorProto{f64c("e", nil, 2)}, nd("Pow", []string{"x", "e"}, []string{"y"})),
		one("Pow/const 0.5", []opIn{pos("x", 2, 3)}, []*onnxpb.TensorProto{f64c("e", nil, 0.5)}, nd("Pow", []string{"x", "e"}, []string{"y"})),
		one("Pow/const 3", []opIn{in("x", 2, 3)}, []*onnxpb.TensorProto{f64c("e", nil, 3)}, nd("Pow", []string{"x", "e"}, []string{"y"})),
		unary("Neg", in("", 2, 3)),
		unary("Sqrt", pos("", 2, 3)),
		unary("Reciprocal", pos("", 2, 3)),
		unary("Exp", in("", 2, 3)),
		unary("Log", pos("", 2, 3)),
		unary("Sigmoid", in("", 2, 3)),
		unary("Tanh", in("", 2, 3)),
		// onnxruntime has no float64 Erf (nor Gelu, whose function body
		// uses Erf): float32 op, float64 loss, inputs on a 2⁻¹² grid so
		// that x ± 2⁻⁸ is exact; the op's float32 rounding (6e-8) over
		// the step bounds the finite-difference error near 1e-5.
		f32Case("Erf", "Erf"),
		f32Case("Gelu", "Gelu"),
		f32Case("Gelu/tanh", "Gelu", as("approximate", "tanh")),
		unary("Relu", opIn{dims: []int64{3, 4}, away: 0.1}),
		unary("Identity", in("", 2, 3)),
		unary("Softmax/axis=1", in("", 2, 3, 4), ai("axis", 1)),
		unary("Softmax", in("", 2, 5)),
		unary("LogSoftmax/axis=0", in("", 3, 4), ai("axis", 0)),
		unary("LogSoftmax", in("", 2, 3, 4)),
		unary("Transpose/perm", in("", 2, 3, 4), ais("perm", 2, 0, 1)),
		unary("Transpose/default", in("", 2, 3, 4)),
		unary("Flatten", in("", 2, 3, 4), ai("axis", 2)),
		{name: "Gelu/tanh,float64", opset: 20, ins: []opIn{in("x", 3, 4)}, nodes: []*onnxpb.NodeProto{nd("Gelu", []string{"x"}, []string{"y"}, as("approximate", "tanh"))}, outs: []string{"y"}},
		// Linear algebra.
		bin("MatMul/[2,3,4]@[4,5]", "MatMul", in("", 2, 3, 4), in("", 4, 5)),
		bin("MatMul/[3,4]@[4,5]", "MatMul", in("", 3, 4), in("", 4, 5)),
		bin("MatMul/[3,4]@[2,4,5]", "MatMul", in("", 3, 4), in("", 2, 4, 5)),
		bin("MatMul/[2,3,4]@[2,4,5]", "MatMul", in("", 2, 3, 4), in("", 2, 4, 5)),
		bin("MatMul/[2,1,3,4]@[3,4,2]", "MatMul", in("", 2, 1, 3, 4), in("", 3, 4, 2)),
		bin("MatMul/[4]@[2,4,5]", "MatMul", in("", 4), in("", 2, 4, 5)),
		bin("MatMul/[2,3,4]@[4]", "MatMul", in("", 2, 3, 4), in("", 4)),
		// (the rank-0 result is unsqueezed: the runtime cannot fetch a
		// rank-0 output of undeclared shape)
		{name: "MatMul/[4]@[4]", ins: []opIn{in("a", 4), in("b", 4)}, consts: []*onnxpb.TensorProto{i64c("ax", []int64{1}, 0)},
			nodes: []*onnxpb.NodeProto{nd("MatMul", []string{"a", "b"}, []string{"d"}), nd("Unsqueeze", []string{"d", "ax"}, []string{"y"})}, outs: []string{"y"}},
		// Reductions.
		one("ReduceSum/axes=[1],keep", []opIn{in("x", 2, 3, 4)}, []*onnxpb.TensorProto{i64c("ax", []int64{1}, 1)}, nd("ReduceSum", []string{"x", "ax"}, []string{"y"})),
		one("ReduceSum/axes=[-1,0],nokeep", []opIn{in("x", 2, 3, 4)}, []*onnxpb.TensorProto{i64c("ax", []int64{2}, -1, 0)}, nd("ReduceSum", []string{"x", "ax"}, []string{"y"}, ai("keepdims", 0))),
		{name: "ReduceSum/all", ins: []opIn{in("x", 2, 3)}, consts: []*onnxpb.TensorProto{i64c("ax", []int64{1}, 0)},
			nodes: []*onnxpb.NodeProto{nd("ReduceSum", []string{"x"}, []string{"s"}, ai("keepdims", 0)), nd("Unsqueeze", []string{"s", "ax"}, []string{"y"})}, outs: []string{"y"}},
		one("ReduceSum/noop", []opIn{in("x", 2, 3)}, nil, nd("ReduceSum", []string{"x"}, []string{"y"}, ai("noop_with_empty_axes", 1))),
		one("ReduceMean/attr axes=[-1]", []opIn{in("x", 2, 3, 4)}, nil, nd("ReduceMean", []string{"x"}, []string{"y"}, ais("axes", -1))),
		one("ReduceMean/attr axes=[0,2],nokeep", []opIn{in("x", 2, 3, 4)}, nil, nd("ReduceMean", []string{"x"}, []string{"y"}, ais("axes", 0, 2), ai("keepdims", 0))),
		{name: "ReduceMean/input axes (opset 18)", opset: 18, ins: []opIn{in("x", 2, 3, 4)}, consts: []*onnxpb.TensorProto{i64c("ax", []int64{1}, 1)},
			nodes: []*onnxpb.NodeProto{nd("ReduceMean", []string{"x", "ax"}, []string{"y"}, ai("keepdims", 0))}, outs: []string{"y"}},
		// Normalizations.
		one("LayerNormalization/axis=-1", []opIn{in("x", 2, 3, 4), pos("s", 4), in("b", 4)}, nil,
			nd("LayerNormalization", []string{"x", "s", "b"}, []string{"y"}, af("epsilon", 1e-5))),
		one("LayerNormalization/axis=1", []opIn{in("x", 2, 3, 4), pos("s", 3, 4), in("b", 3, 4)}, nil,
			nd("LayerNormalization", []string{"x", "s", "b"}, []string{"y"}, ai("axis", 1))),
		one("SimplifiedLayerNormalization", []opIn{in("x", 2, 3, 4), pos("s", 4)}, nil,
			nd("SimplifiedLayerNormalization", []string{"x", "s"}, []string{"y"}, af("epsilon", 1e-6), ai("axis", -1))),
		// Shape ops.
		one("Reshape", []opIn{in("x", 2, 3, 4)}, []*onnxpb.TensorProto{i64c("shp", []int64{2}, 4, -1)}, nd("Reshape", []string{"x", "shp"}, []string{"y"})),
		one("Unsqueeze/[0,-1]", []opIn{in("x", 2, 3)}, []*onnxpb.TensorProto{i64c("ax", []int64{2}, 0, -1)}, nd("Unsqueeze", []string{"x", "ax"}, []string{"y"})),
		one("Squeeze/[1]", []opIn{in("x", 2, 1, 3)}, []*onnxpb.TensorProto{i64c("ax", []int64{1}, 1)}, nd("Squeeze", []string{"x", "ax"}, []string{"y"})),
		one("Expand/[3,1]→[2,3,4]", []opIn{in("x", 3, 1)}, []*onnxpb.TensorProto{i64c("shp", []int64{3}, 2, 3, 4)}, nd("Expand", []string{"x", "shp"}, []string{"y"})),
		one("Concat/axis=1", []opIn{in("a", 2, 1, 3), in("b", 2, 2, 3), in("c", 2, 3, 3)}, nil, nd("Concat", []string{"a", "b", "c"}, []string{"y"}, ai("axis", 1))),
		one("Concat/axis=-1", []opIn{in("a", 2, 2), in("b", 2, 3)}, nil, nd("Concat", []string{"a", "b"}, []string{"y"}, ai("axis", -1))),
		{name: "Split/axis=1,both", ins: []opIn{in("x", 2, 5)}, consts: []*onnxpb.TensorProto{i64c("sp", []int64{2}, 2, 3)},
			nodes: []*onnxpb.NodeProto{nd("Split", []string{"x", "sp"}, []string{"y0", "y1"}, ai("axis", 1))}, outs: []string{"y0", "y1"}},
		{name: "Split/axis=-1,one used", ins: []opIn{in("x", 2, 3, 4)}, consts: []*onnxpb.TensorProto{i64c("sp", []int64{2}, 1, 3)},
			nodes: []*onnxpb.NodeProto{nd("Split", []string{"x", "sp"}, []string{"y0", "y1"}, ai("axis", -1))}, outs: []string{"y1"}},
		one("Slice/axes", []opIn{in("x", 3, 4, 5)}, []*onnxpb.TensorProto{i64c("st", []int64{2}, 1, -4), i64c("en", []int64{2}, 1000, -1), i64c("ax", []int64{2}, 0, -1), i64c("sp", []int64{2}, 1, 1)},
			nd("Slice", []string{"x", "st", "en", "ax", "sp"}, []string{"y"})),
		one("Slice/no axes", []opIn{in("x", 3, 4)}, []*onnxpb.TensorProto{i64c("st", []int64{2}, 0, 2), i64c("en", []int64{2}, 2, 4)},
			nd("Slice", []string{"x", "st", "en"}, []string{"y"})),
		one("Gather/axis=0,dup,neg", []opIn{in("x", 4, 3)}, []*onnxpb.TensorProto{i64c("ix", []int64{2, 2}, 1, 3, -1, 1)}, nd("Gather", []string{"x", "ix"}, []string{"y"})),
		one("Gather/axis=1", []opIn{in("x", 3, 4, 2)}, []*onnxpb.TensorProto{i64c("ix", []int64{3}, 2, 0, 2)}, nd("Gather", []string{"x", "ix"}, []string{"y"}, ai("axis", 1))),
		one("Gather/axis=-1,scalar", []opIn{in("x", 3, 4)}, []*onnxpb.TensorProto{i64c("ix", nil, 2)}, nd("Gather", []string{"x", "ix"}, []string{"y"}, ai("axis", -1))),
		one("GatherElements/axis=-1", []opIn{in("x", 2, 4)}, []*onnxpb.TensorProto{i64c("ix", []int64{2, 3}, 0, 0, 3, 1, 2, 1)}, nd("GatherElements", []string{"x", "ix"}, []string{"y"}, ai("axis", -1))),
		{name: "GatherElements/opset 14 (raised to 16)", opset: 14, ins: []opIn{in("x", 3, 2)}, consts: []*onnxpb.TensorProto{i64c("ix", []int64{2, 2}, 0, 2, 2, 2)},
			nodes: []*onnxpb.NodeProto{nd("GatherElements", []string{"x", "ix"}, []string{"y"})}, outs: []string{"y"}},
		one("Where", []opIn{in("a", 2, 3), in("b", 3)}, []*onnxpb.TensorProto{boolc("c", []int64{2, 3}, 1, 0, 1, 0, 0, 1)}, nd("Where", []string{"c", "a", "b"}, []string{"y"})),
		one("Dropout/inference", []opIn{in("x", 2, 3)}, nil, nd("Dropout", []string{"x"}, []string{"y"})),
		// Cast: a float32 input feeding a float64 graph (x has few mantissa
		// bits, so x ± h is exact in float32).
		{name: "Cast/float32→float64", ins: []opIn{{name: "x", dims: []int64{2, 3}, f32: true}}, h: 1.0 / 1024, tol: 1e-4,
			nodes: []*onnxpb.NodeProto{nd("Cast", []string{"x"}, []string{"xd"}, ai("to", int64(onnxpb.TensorProto_DOUBLE))), nd("Tanh", []string{"xd"}, []string{"y"})}, outs: []string{"y"}},
		// A tensor read three times: the contributions are summed.
		{name: "fan-out", ins: []opIn{in("x", 2, 3)}, nodes: []*onnxpb.NodeProto{
			nd("Mul", []string{"x", "x"}, []string{"sq"}), nd("Sigmoid", []string{"x"}, []string{"s"}), nd("Add", []string{"sq", "s"}, []string{"y"})}, outs: []string{"y"}},
	}
	// Gemm: every transA/transB combination, alpha, beta, a broadcast C.
	for _, ta := range []int64{0, 1} {
		for _, tb := range []int64{0, 1} {
			a, b := []int64{3, 4}, []int64{4, 5}
			if ta == 1 {
				a = []int64{4, 3}
			}
			if tb == 1 {
				b = []int64{5, 4}
			}
			cases = append(cases, one(fmt.Sprintf("Gemm/transA=%d,transB=%d", ta, tb),
				[]opIn{in("a", a...), in("b", b...), in("c", 5)}, nil,
				nd("Gemm", []string{"a", "b", "c"}, []string{"y"}, ai("transA", ta), ai("transB", tb), af("alpha", 0.7), af("beta", 1.3))))
		}
	}
	// onnxruntime contrib ops (float32 kernels only): float32 inputs on a
	// 2⁻¹² grid, float64 loss, as f32Case.
	ms := func(name string, ins []opIn, n *onnxpb.NodeProto) opCase {
		n.Domain = proto.String("com.microsoft")
		var nodes []*onnxpb.NodeProto
		nodes = append(nodes, n, nd("Cast", []string{n.Output[0]}, []string{"y"}, ai("to", int64(onnxpb.TensorProto_DOUBLE))))
		for i := range ins {
			ins[i].f32, ins[i].lo, ins[i].hi = true, -2, 2
		}
		return opCase{name: name + "/float32", ins: ins, nodes: nodes, outs: []string{"y"}, h: 1.0 / 256, tol: 1e-3}
	}
	cases = append(cases,
		ms("QuickGelu", []opIn{in("x", 3, 4)}, nd("QuickGelu", []string{"x"}, []string{"y32"}, af("alpha", 1.5))),
		ms("FastGelu/bias", []opIn{in("x", 2, 3, 4), in("b", 4)}, nd("FastGelu", []string{"x", "b"}, []string{"y32"})),
		ms("FusedMatMul/transB,alpha", []opIn{in("a", 2, 3, 4), in("b", 2, 5, 4)}, nd("FusedMatMul", []string{"a", "b"}, []string{"y32"}, ai("transB", 1), af("alpha", 0.5))),
		ms("FusedMatMul/transA,[4,5]", []opIn{in("a", 2, 4, 3), in("b", 4, 5)}, nd("FusedMatMul", []string{"a", "b"}, []string{"y32"}, ai("transA", 1))),
	)
	cases = append(cases, one("Gemm/C [3,5]", []opIn{in("a", 3, 4), in("b", 4, 5), in("c", 3, 5)}, nil, nd("Gemm", []string{"a", "b", "c"}, []string{"y"})))
	return cases
}

// f32Case is a float32 op between a float32 input and a float64 loss.
func f32Case(name, op string, attrs ...*onnxpb.AttributeProto) opCase {
	return opCase{name: name + "/float32", opset: 20, ins: []opIn{{name: "x", dims: []int64{3, 4}, lo: -2, hi: 2, f32: true}}, h: 1.0 / 256, tol: 1e-3,
		nodes: []*onnxpb.NodeProto{nd(op, []string{"x"}, []string{"y32"}, attrs...), nd("Cast", []string{"y32"}, []string{"y"}, ai("to", int64(onnxpb.TensorProto_DOUBLE)))},
		outs:  []string{"y"}}
}

// buildOpCase returns the forward model (with the loss) and its feeds.
func buildOpCase(t testing.TB, c opCase, rng *rand.Rand) (*graph.Model, map[string]*ort.Tensor, string) {
	t.Helper()
	opset := c.opset
	if opset == 0 {
		opset = 17
	}
	g := &onnxpb.GraphProto{Name: proto.String("case"), Node: c.nodes, Initializer: c.consts}
	feeds := map[string]*ort.Tensor{}
	for _, x := range c.ins {
		dt := onnxpb.TensorProto_DOUBLE
		if x.f32 {
			dt = onnxpb.TensorProto_FLOAT
		}
		g.Input = append(g.Input, dynVI(x.name, dt, len(x.dims)))
		lo, hi := x.lo, x.hi
		if lo == 0 && hi == 0 {
			lo, hi = -1, 1
		}
		v := make([]float64, graph.NumElements(x.dims))
		for i := range v {
			v[i] = lo + (hi-lo)*rng.Float64()
			if x.away > 0 && math.Abs(v[i]) < x.away {
				v[i] = math.Copysign(x.away+rng.Float64()*0.5, v[i])
			}
			if x.f32 {
				v[i] = math.Round(v[i]*4096) / 4096
			}
		}
		var err error
		if x.f32 {
			v32 := make([]float32, len(v))
			for i := range v {
				v32[i] = float32(v[i])
			}
			feeds[x.name], err = ort.NewFloat32(x.dims, v32)
		} else {
			feeds[x.name], err = ort.NewFloat64(x.dims, v)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	m := &graph.Model{Proto: &onnxpb.ModelProto{
		IrVersion:   proto.Int64(10),
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}, {Domain: proto.String("com.microsoft"), Version: proto.Int64(1)}},
		Graph:       g,
	}}
	loss := gradAddLoss(t, m, c.outs, feeds, rng)
	return m, feeds, loss
}

// TestGradientOps checks every rule against central finite differences
// in float64: relative error ≤ 1e-4 per input.
func TestGradientOps(t *testing.T) {
	testenv.ORTLibrary(t)
	var worst64, worst32 float64
	for i, c := range gradOpCases() {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, uint64(i)))
			fwd, feeds, loss := buildOpCase(t, c, rng)
			bwd := &graph.Model{Proto: proto.Clone(fwd.Proto).(*onnxpb.ModelProto)}
			wrt := c.wrt
			if wrt == nil {
				for _, x := range c.ins {
					wrt = append(wrt, x.name)
				}
			}
			if err := rewrite.Gradient(bwd, rewrite.GradientOptions{Loss: loss, WithRespectTo: wrt}); err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(bwd); err != nil {
				t.Fatal(err)
			}
			h, tol := c.h, c.tol
			if h == 0 {
				h = 1e-5
			}
			if tol == 0 {
				tol = 1e-4
			}
			for w, e := range gradCompare(t, fwd, bwd, loss, wrt, feeds, gradFD{h: h}, rng) {
				if strings.HasSuffix(c.name, "/float32") {
					worst32 = math.Max(worst32, e)
				} else {
					worst64 = math.Max(worst64, e)
				}
				if e > tol || math.IsNaN(e) {
					t.Errorf("d loss/d %s: relative error %.3g > %g", w, e, tol)
				}
			}
		})
	}
	t.Logf("worst relative error: float64 cases %.3g, float32 cases (Erf, Gelu, contrib ops) %.3g", worst64, worst32)
}

// TestGradientDropoutTraining: a training-mode Dropout's random mask makes
// finite differences meaningless, so the gradient is checked against its
// definition with the mask the same run drew: dx = R·mask/(1−ratio).
func TestGradientDropoutTraining(t *testing.T) {
	testenv.ORTLibrary(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, keepMask := range []bool{true, false} {
		t.Run(fmt.Sprintf("mask output=%v", keepMask), func(t *testing.T) {
			outs := []string{"y"}
			if keepMask {
				outs = append(outs, "mask")
			}
			c := opCase{ins: []opIn{in("x", 4, 8)}, consts: []*onnxpb.TensorProto{f64c("ratio", nil, 0.25), boolc("train", nil, 1)},
				nodes: []*onnxpb.NodeProto{nd("Dropout", []string{"x", "ratio", "train"}, outs, ai("seed", 3))}, outs: []string{"y"}}
			m, feeds, loss := buildOpCase(t, c, rng)
			if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: loss, WithRespectTo: []string{"x"}}); err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(m); err != nil {
				t.Fatal(err)
			}
			mask := m.Proto.Graph.Node[0].Output[1]
			// (graph.Index.ElemType would call the mask float64)
			m.Proto.Graph.Output = append(m.Proto.Graph.Output, dynVI(mask, onnxpb.TensorProto_BOOL, 2))
			if err := rewrite.ExposeTensors(m, "y", mask); err != nil {
				t.Fatal(err)
			}
			res, err := gradSession(t, m).Run(feeds, []string{"y", mask, "grad.x"})
			if err != nil {
				t.Fatal(err)
			}
			bs, _ := res[mask].Bools()
			gx := gradFloats(t, res["grad.x"])
			var r []float64
			for _, ti := range m.Proto.Graph.Initializer {
				if ti.GetName() == "R0" {
					r = ti.DoubleData
				}
			}
			kept := 0
			for i, k := range bs {
				want := 0.0
				if k {
					want = r[i] / 0.75
					kept++
				}
				if math.Abs(gx[i]-want) > 1e-12 {
					t.Fatalf("grad.x[%d] = %v, want %v (mask %v)", i, gx[i], want, k)
				}
			}
			if kept == 0 || kept == len(bs) {
				t.Errorf("mask keeps %d of %d: not a training-mode dropout", kept, len(bs))
			}
		})
	}
}

// TestGradientUnsupportedOp: an op without a rule on the path is named
// with its node, and the model is left unchanged.
func TestGradientUnsupportedOp(t *testing.T) {
	g := &onnxpb.GraphProto{
		Name:  proto.String("g"),
		Input: []*onnxpb.ValueInfoProto{dynVI("x", onnxpb.TensorProto_FLOAT, 2), dynVI("w", onnxpb.TensorProto_FLOAT, 2)},
		Node: []*onnxpb.NodeProto{
			{OpType: proto.String("Hardmax"), Name: proto.String("/x/Hardmax"), Input: []string{"x"}, Output: []string{"h"}},
			{OpType: proto.String("Mul"), Name: proto.String("/x/Mul"), Input: []string{"h", "w"}, Output: []string{"m"}},
			{OpType: proto.String("Abs"), Name: proto.String("/x/Abs"), Input: []string{"m"}, Output: []string{"a"}},
			// Off the path: Floor of the loss input's unrelated branch.
			{OpType: proto.String("Floor"), Name: proto.String("/x/Floor"), Input: []string{"w"}, Output: []string{"f"}},
			{OpType: proto.String("ReduceSum"), Name: proto.String("/x/ReduceSum"), Input: []string{"a"}, Output: []string{"loss"}},
		},
		Output: []*onnxpb.ValueInfoProto{dynVI("loss", onnxpb.TensorProto_FLOAT, 0), dynVI("f", onnxpb.TensorProto_FLOAT, 2)},
	}
	m := &graph.Model{Proto: &onnxpb.ModelProto{IrVersion: proto.Int64(10), Graph: g,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}}}}
	before := proto.Clone(m.Proto)
	err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"w"}})
	var ue *rewrite.UnsupportedOpError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want *UnsupportedOpError", err)
	}
	if len(ue.Ops) != 1 || !strings.Contains(err.Error(), `Abs (node "/x/Abs")`) {
		t.Errorf("error %q: want only Abs named (Hardmax is not on the path from w)", err)
	}
	if !proto.Equal(before, m.Proto) {
		t.Error("model changed by a failed Gradient")
	}
	err = rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"x", "w"}})
	if !errors.As(err, &ue) || len(ue.Ops) != 2 || !strings.Contains(err.Error(), `Hardmax (node "/x/Hardmax"), Abs (node "/x/Abs")`) {
		t.Errorf("err = %v, want Hardmax and Abs named", err)
	}
}

// TestGradientErrors: bad options are errors with context, not panics.
func TestGradientErrors(t *testing.T) {
	mk := func(opset int64) *graph.Model {
		g := &onnxpb.GraphProto{Name: proto.String("g"),
			Input:       []*onnxpb.ValueInfoProto{dynVI("x", onnxpb.TensorProto_FLOAT, 1), dynVI("ids", onnxpb.TensorProto_INT64, 1)},
			Initializer: []*onnxpb.TensorProto{{Name: proto.String("w"), DataType: proto.Int32(1), Dims: []int64{1}, FloatData: []float32{2}}},
			Node:        []*onnxpb.NodeProto{nd("Mul", []string{"x", "w"}, []string{"y"}), nd("ReduceSum", []string{"y"}, []string{"loss"}, ai("keepdims", 0))},
			Output:      []*onnxpb.ValueInfoProto{dynVI("loss", onnxpb.TensorProto_FLOAT, 0)}}
		return &graph.Model{Proto: &onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: g,
			OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}}}}
	}
	for _, c := range []struct {
		opset int64
		opts  rewrite.GradientOptions
		want  string
	}{
		{17, rewrite.GradientOptions{Loss: "nope", WithRespectTo: []string{"x"}}, `loss "nope" is not a tensor`},
		{17, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"w"}}, `"w" is not a graph input`},
		{17, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"ids"}}, `not a float type`},
		{17, rewrite.GradientOptions{Loss: "loss"}, `nothing to differentiate`},
		{17, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"x", "x"}}, `listed twice`},
		{12, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"x"}}, `opset 12`},
	} {
		err := rewrite.Gradient(mk(c.opset), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err = %v, want it to mention %s", c.opts, err, c.want)
		}
	}
	// A WithRespectTo input the loss ignores gets a zero gradient.
	m := mk(17)
	m.Proto.Graph.Input = append(m.Proto.Graph.Input, dynVI("z", onnxpb.TensorProto_FLOAT, 1))
	if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss", WithRespectTo: []string{"x", "z"}}); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
}
