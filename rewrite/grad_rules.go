package rewrite

import (
	"fmt"
	"math"
	"slices"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// gradRule emits the backward of one node. dy[j] is the gradient of
// output j ("" when nothing downstream needs it); the rule returns one
// gradient per input ("" where none is wanted: check b.active before
// computing, to keep the backward lean).
type gradRule func(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error)

// gradRules maps op types to their backward. Keep it sorted by kind.
var gradRules map[string]gradRule

func init() {
	gradRules = map[string]gradRule{
		// Elementwise arithmetic, with broadcasting.
		"Add": gradAdd, "Sum": gradAdd, "Sub": gradSub, "Mul": gradMul, "Div": gradDiv, "Pow": gradPow,
		// Elementwise functions.
		"Neg": gradNeg, "Sqrt": gradSqrt, "Reciprocal": gradReciprocal, "Exp": gradExp, "Log": gradLog,
		"Sigmoid": gradSigmoid, "Tanh": gradTanh, "Erf": gradErf, "Relu": gradRelu, "Gelu": gradGelu,
		"Identity": gradIdentity, "Cast": gradCast, "Dropout": gradDropout, "Where": gradWhere,
		// Linear algebra and reductions.
		"MatMul": gradMatMul, "Gemm": gradGemm, "ReduceSum": gradReduce, "ReduceMean": gradReduce,
		"Softmax": gradSoftmax, "LogSoftmax": gradLogSoftmax,
		"LayerNormalization": gradLayerNorm, "SimplifiedLayerNormalization": gradRMSNorm, "RMSNormalization": gradRMSNorm,
		// Data movement.
		"Reshape": gradReshapeLike, "Unsqueeze": gradReshapeLike, "Squeeze": gradReshapeLike, "Flatten": gradReshapeLike,
		"Transpose": gradTranspose, "Concat": gradConcat, "Split": gradSplit, "Slice": gradSlice,
		"Gather": gradGather, "GatherElements": gradGatherElements, "Expand": gradExpand,
		// onnxruntime contrib ops (com.microsoft) its optimizer writes into
		// saved models.
		"QuickGelu": gradQuickGelu, "FastGelu": gradFastGelu, "FusedMatMul": gradFusedMatMul,
	}
}

func (b *gradBuilder) typeOf(x string) int32 { return b.elemType(x) }

// ---- elementwise arithmetic ----

func gradAdd(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	dx := make([]string, len(n.GetInput()))
	for i, x := range n.GetInput() {
		if b.active(x) {
			dx[i] = b.unbroadcast(dy[0], x, y)
		}
	}
	return dx, nil
}

func gradSub(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	dx := make([]string, 2)
	if b.active(a) {
		dx[0] = b.unbroadcast(dy[0], a, y)
	}
	if b.active(c) {
		dx[1] = b.unbroadcast(b.neg(dy[0]), c, y)
	}
	return dx, nil
}

func gradMul(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	dx := make([]string, 2)
	if b.active(a) {
		dx[0] = b.unbroadcast(b.mul(dy[0], c), a, y)
	}
	if b.active(c) {
		dx[1] = b.unbroadcast(b.mul(dy[0], a), c, y)
	}
	return dx, nil
}

func gradDiv(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	dx := make([]string, 2)
	if b.active(a) {
		dx[0] = b.unbroadcast(b.div(dy[0], c), a, y)
	}
	if b.active(c) { // d(a/c)/dc = −y/c
		dx[1] = b.unbroadcast(b.neg(b.div(b.mul(dy[0], y), c)), c, y)
	}
	return dx, nil
}

// gradPow: d(aᵇ)/da = b·aᵇ⁻¹ (2a and ½/y for the exponents exporters
// use), d(aᵇ)/db = y·ln a.
func gradPow(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, e, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	dx := make([]string, 2)
	if b.active(a) {
		var d string
		vals, ok := b.staticFloats(e)
		switch {
		case ok && len(vals) == 1 && vals[0] == 2:
			d = b.mul(b.mul(dy[0], a), b.scalarLike(2, a))
		case ok && len(vals) == 1 && vals[0] == 1:
			d = dy[0]
		case ok && len(vals) == 1 && vals[0] == 0.5:
			d = b.div(b.mul(dy[0], b.scalarLike(0.5, a)), y)
		default:
			ef := e
			if b.typeOf(e) != b.typeOf(a) {
				ef = b.op("Cast", "cast", []string{e}, gradIntAttr("to", int64(b.typeOf(a))))
			}
			em1 := b.sub(ef, b.scalarLike(1, a))
			d = b.mul(dy[0], b.mul(ef, b.op("Pow", "pow", []string{a, em1})))
		}
		dx[0] = b.unbroadcast(d, a, y)
	}
	if b.active(e) {
		dx[1] = b.unbroadcast(b.mul(dy[0], b.mul(y, b.op("Log", "log", []string{a}))), e, y)
	}
	return dx, nil
}

// staticFloats reads a constant tensor's values as float64.
func (b *gradBuilder) staticFloats(name string) ([]float64, bool) {
	t := b.constTensor(name)
	if t == nil {
		return nil, false
	}
	switch onnxpb.TensorProto_DataType(t.GetDataType()) {
	case onnxpb.TensorProto_INT64, onnxpb.TensorProto_INT32:
		ints, ok := b.staticInts(name)
		out := make([]float64, len(ints))
		for i, v := range ints {
			out[i] = float64(v)
		}
		return out, ok
	}
	v, err := floatValues(b.m, t)
	return v, err == nil
}

// ---- elementwise functions ----

func gradNeg(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	return []string{b.neg(dy[0])}, nil
}

func gradIdentity(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	return []string{dy[0]}, nil
}

// gradSqrt: d√x = dy/(2y).
func gradSqrt(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	return []string{b.div(b.mul(dy[0], b.scalarLike(0.5, y)), y)}, nil
}

// gradReciprocal: d(1/x) = −dy·y².
func gradReciprocal(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	return []string{b.neg(b.mul(dy[0], b.mul(y, y)))}, nil
}

func gradExp(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	return []string{b.mul(dy[0], n.GetOutput()[0])}, nil
}

func gradLog(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	return []string{b.div(dy[0], n.GetInput()[0])}, nil
}

// gradSigmoid: dy·y·(1−y).
func gradSigmoid(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	return []string{b.mul(dy[0], b.mul(y, b.sub(b.scalarLike(1, y), y)))}, nil
}

// gradTanh: dy·(1−y²).
func gradTanh(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	return []string{b.mul(dy[0], b.sub(b.scalarLike(1, y), b.mul(y, y)))}, nil
}

// gradErf: dy·(2/√π)·exp(−x²).
func gradErf(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	e := b.op("Exp", "exp", []string{b.neg(b.mul(x, x))})
	return []string{b.mul(dy[0], b.mul(e, b.scalarLike(2/math.Sqrt(math.Pi), x)))}, nil
}

func gradRelu(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	pos := b.op("Greater", "pos", []string{x, b.scalarLike(0, x)})
	return []string{b.op("Where", "where", []string{pos, dy[0], b.scalarLike(0, x)})}, nil
}

// gradGelu differentiates both forms of Gelu-20: exact,
// Φ(x) + x·φ(x), and approximate="tanh", with u = √(2/π)(x + 0.044715x³),
// ½(1+tanh u) + ½x(1−tanh²u)·√(2/π)(1 + 3·0.044715x²).
func gradGelu(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	c := func(v float64) string { return b.scalarLike(v, x) }
	var d string
	switch approx := string(gradAttrBytes(n, "approximate")); approx {
	case "", "none":
		cdf := b.mul(c(0.5), b.add(c(1), b.op("Erf", "erf", []string{b.mul(x, c(1/math.Sqrt2))})))
		pdf := b.mul(c(1/math.Sqrt(2*math.Pi)), b.op("Exp", "exp", []string{b.mul(b.mul(x, x), c(-0.5))}))
		d = b.add(cdf, b.mul(x, pdf))
	case "tanh":
		d = b.geluTanhDeriv(x)
	default:
		return nil, fmt.Errorf("unknown approximate=%q", approx)
	}
	return []string{b.mul(dy[0], d)}, nil
}

// geluTanhDeriv is the derivative of the tanh approximation of Gelu at x:
// ½(1+tanh u) + ½x(1−tanh²u)·√(2/π)(1 + 3·0.044715x²),
// u = √(2/π)(x + 0.044715x³).
func (b *gradBuilder) geluTanhDeriv(x string) string {
	c := func(v float64) string { return b.scalarLike(v, x) }
	k := math.Sqrt(2 / math.Pi)
	x2 := b.mul(x, x)
	u := b.mul(b.mul(x, b.add(c(1), b.mul(x2, c(0.044715)))), c(k))
	t := b.op("Tanh", "tanh", []string{u})
	du := b.mul(c(k), b.add(c(1), b.mul(x2, c(3*0.044715))))
	return b.add(b.mul(c(0.5), b.add(c(1), t)), b.mul(b.mul(c(0.5), x), b.mul(b.sub(c(1), b.mul(t, t)), du)))
}

// gradQuickGelu: y = x·σ(αx), dy/dx = s + αx·s(1−s) with s = σ(αx).
func gradQuickGelu(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	alpha := b.scalarLike(float64(gradAttrFloat(n, "alpha", 1.702)), x)
	ax := b.mul(x, alpha)
	s := b.op("Sigmoid", "sigmoid", []string{ax})
	d := b.add(s, b.mul(ax, b.mul(s, b.sub(b.scalarLike(1, x), s))))
	return []string{b.mul(dy[0], d)}, nil
}

// gradFastGelu: the tanh Gelu of x + bias (bias optional).
func gradFastGelu(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x, bias, y := n.GetInput()[0], gradInput(n, 1), n.GetOutput()[0]
	xb := x
	if bias != "" {
		xb = b.add(x, bias)
	}
	g := b.mul(dy[0], b.geluTanhDeriv(xb))
	dx := make([]string, len(n.GetInput()))
	if b.active(x) {
		dx[0] = b.unbroadcast(g, x, y)
	}
	if b.active(bias) {
		dx[1] = b.unbroadcast(g, bias, y)
	}
	return dx, nil
}

func gradAttrBytes(n *onnxpb.NodeProto, name string) []byte {
	if a := gradAttr(n, name); a != nil {
		return a.GetS()
	}
	return nil
}

// gradCast casts the gradient back to the input's float type.
func gradCast(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	if b.typeOf(x) == b.typeOf(n.GetOutput()[0]) {
		return []string{dy[0]}, nil
	}
	if b.typeOf(x) == 0 {
		return nil, fmt.Errorf("cannot tell the element type of %q", x)
	}
	return []string{b.op("Cast", "cast", []string{dy[0]}, gradIntAttr("to", int64(b.typeOf(x))))}, nil
}

// gradDropout: in training mode the forward kept the mask; the backward
// is dy·mask/(1−ratio). The node gets its optional mask output if it had
// none. Without training_mode (or with it false) Dropout is the identity.
func gradDropout(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	training := gradInput(n, 2)
	if training == "" {
		return []string{dy[0]}, nil
	}
	if v, ok := b.staticInts(training); ok && len(v) == 1 && v[0] == 0 {
		return []string{dy[0]}, nil
	}
	mask := ""
	if len(n.GetOutput()) > 1 {
		mask = n.GetOutput()[1]
	}
	if mask == "" {
		mask = b.fresh("dropout_mask")
		b.mutate = append(b.mutate, func() {
			if len(n.Output) < 2 {
				n.Output = append(n.Output, mask)
			} else {
				n.Output[1] = mask
			}
		})
	}
	// The effective ratio is 0 when training_mode is false at run time.
	ratio := b.scalarLike(0.5, x)
	if r := gradInput(n, 1); r != "" {
		ratio = r
		if b.typeOf(r) != b.typeOf(x) {
			ratio = b.op("Cast", "cast", []string{r}, gradIntAttr("to", int64(b.typeOf(x))))
		}
	}
	tm := b.op("Cast", "cast", []string{training}, gradIntAttr("to", int64(onnxpb.TensorProto_BOOL)))
	eff := b.op("Where", "where", []string{tm, ratio, b.scalarLike(0, x)})
	scale := b.div(b.scalarLike(1, x), b.sub(b.scalarLike(1, x), eff))
	return []string{b.op("Where", "where", []string{mask, b.mul(dy[0], scale), b.scalarLike(0, x)})}, nil
}

// gradWhere routes the gradient to the branch each element came from.
func gradWhere(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	cond, a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetInput()[2], n.GetOutput()[0]
	dx := make([]string, 3)
	zero := b.scalarLike(0, y)
	if b.active(a) {
		dx[1] = b.unbroadcast(b.op("Where", "where", []string{cond, dy[0], zero}), a, y)
	}
	if b.active(c) {
		dx[2] = b.unbroadcast(b.op("Where", "where", []string{cond, zero, dy[0]}), c, y)
	}
	return dx, nil
}

// ---- linear algebra ----

// gradIota is 0, 1, …, n−1.
func gradIota(n int) []int64 {
	p := make([]int64, n)
	for i := range p {
		p[i] = int64(i)
	}
	return p
}

// swapLast is the perm exchanging the last two of r axes.
func swapLast(r int) []int64 {
	p := make([]int64, r)
	for i := range p {
		p[i] = int64(i)
	}
	p[r-1], p[r-2] = p[r-2], p[r-1]
	return p
}

func (b *gradBuilder) transposeLast(x string, r int) string {
	return b.op("Transpose", "t", []string{x}, gradIntsAttr("perm", swapLast(r)...))
}

// needRank returns x's rank or an error pointing at heal.ProbeRanks.
func (b *gradBuilder) needRank(x string) (int, error) {
	r, ok := b.rank(x)
	if !ok {
		return 0, fmt.Errorf("rank of %q unknown: pass it in GradientOptions.Ranks (heal.ProbeRanks)", x)
	}
	return r, nil
}

// gradMatMul: dA = dY·Bᵀ, dB = Aᵀ·dY, summed over broadcast batch axes.
// A weight of rank 2 gets its gradient from one GEMM over all rows
// (Flatten, then Gemm with transA) instead of a batched product and a
// reduction.
func gradMatMul(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	ra, err := b.needRank(a)
	if err != nil {
		return nil, err
	}
	rc, err := b.needRank(c)
	if err != nil {
		return nil, err
	}
	return b.matmulGrad(a, c, y, dy[0], ra, rc, b.active(a), b.active(c)), nil
}

// gradFusedMatMul: Y = α·A'·B' (com.microsoft), A' = Aᵀ (last two axes)
// when transA, likewise B'. The MatMul rule runs on A', B' and the
// gradients are transposed back. transBatchA/B are not supported.
func gradFusedMatMul(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	if gradAttrInt(n, "transBatchA", 0) != 0 || gradAttrInt(n, "transBatchB", 0) != 0 {
		return nil, fmt.Errorf("transBatchA/transBatchB are not supported")
	}
	a, c, y := n.GetInput()[0], n.GetInput()[1], n.GetOutput()[0]
	ra, err := b.needRank(a)
	if err != nil {
		return nil, err
	}
	rc, err := b.needRank(c)
	if err != nil {
		return nil, err
	}
	ta, tc := gradAttrInt(n, "transA", 0) != 0, gradAttrInt(n, "transB", 0) != 0
	if (ta && ra < 2) || (tc && rc < 2) {
		return nil, fmt.Errorf("transA/transB on a rank-1 operand")
	}
	g := dy[0]
	if alpha := gradAttrFloat(n, "alpha", 1); alpha != 1 {
		g = b.mul(g, b.scalarLike(float64(alpha), y))
	}
	a1, c1 := a, c
	if ta {
		a1 = b.transposeLast(a, ra)
		b.rankMem[a1] = ra
	}
	if tc {
		c1 = b.transposeLast(c, rc)
		b.rankMem[c1] = rc
	}
	da, dc := "", ""
	if b.active(a) || b.active(c) {
		dx := b.matmulGrad(a1, c1, y, g, ra, rc, b.active(a), b.active(c))
		da, dc = dx[0], dx[1]
	}
	if ta && da != "" {
		da = b.transposeLast(da, ra)
	}
	if tc && dc != "" {
		dc = b.transposeLast(dc, rc)
	}
	return []string{da, dc}, nil
}

// matmulGrad differentiates y = a·c (numpy matmul semantics) given dy = g.
func (b *gradBuilder) matmulGrad(a, c, y, g string, ra, rc int, needA, needC bool) []string {
	dx := make([]string, 2)
	switch {
	case ra == 1 && rc == 1: // dot product
		if needA {
			dx[0] = b.mul(g, c)
		}
		if needC {
			dx[1] = b.mul(g, a)
		}
	case rc == 1: // [..,k]·[k] → [..]
		gu := b.op("Unsqueeze", "unsq", []string{g, b.ints(false, -1)})
		if needA {
			dx[0] = b.mul(gu, c)
		}
		if needC {
			dx[1] = b.mul(gu, a)
			if ra > 1 {
				dx[1] = b.reduceSum(dx[1], b.ints(false, gradIota(ra-1)...), false, false)
			}
		}
	case ra == 1: // [k]·[..,k,n] → [..,n]
		gu := b.op("Unsqueeze", "unsq", []string{g, b.ints(false, -2)})
		if needA { // [..,1,n]·[..,n,k] → [..,1,k], summed to [k]
			d := b.op("MatMul", "mm", []string{gu, b.transposeLast(c, rc)})
			dx[0] = b.reduceSum(d, b.ints(false, gradIota(rc-1)...), false, false)
		}
		if needC {
			au := b.op("Unsqueeze", "unsq", []string{a, b.ints(false, -1)})
			dx[1] = b.unbroadcast(b.op("MatMul", "mm", []string{au, gu}), c, y)
		}
	default:
		if needA {
			d := b.op("MatMul", "mm", []string{g, b.transposeLast(c, rc)})
			if rc != 2 {
				d = b.unbroadcast(d, a, y)
			}
			dx[0] = d
		}
		if needC {
			switch {
			case rc == 2 && ra > 2:
				a2 := b.op("Flatten", "flat", []string{a}, gradIntAttr("axis", int64(ra-1)))
				g2 := b.op("Flatten", "flat", []string{g}, gradIntAttr("axis", int64(ra-1)))
				dx[1] = b.op("Gemm", "gemm", []string{a2, g2}, gradIntAttr("transA", 1))
			case rc == 2:
				dx[1] = b.op("Gemm", "gemm", []string{a, g}, gradIntAttr("transA", 1))
			default:
				d := b.op("MatMul", "mm", []string{b.transposeLast(a, ra), g})
				if ra != 2 {
					d = b.unbroadcast(d, c, y)
				}
				dx[1] = d
			}
		}
	}
	return dx
}

// gradGemm: Y = α·A'·B' + β·C with A' = A or Aᵀ (transA), B' likewise.
func gradGemm(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	a, c := n.GetInput()[0], n.GetInput()[1]
	alpha, beta := gradAttrFloat(n, "alpha", 1), gradAttrFloat(n, "beta", 1)
	ta, tb := gradAttrInt(n, "transA", 0) != 0, gradAttrInt(n, "transB", 0) != 0
	g := dy[0]
	gemm := func(x, y string, tx, ty bool) string {
		return b.op("Gemm", "gemm", []string{x, y}, gradIntAttr("transA", gradBool(tx)), gradIntAttr("transB", gradBool(ty)), gradFloatAttr("alpha", alpha))
	}
	dx := make([]string, len(n.GetInput()))
	if b.active(a) {
		switch {
		case !ta && !tb:
			dx[0] = gemm(g, c, false, true)
		case !ta && tb:
			dx[0] = gemm(g, c, false, false)
		case ta && !tb:
			dx[0] = gemm(c, g, false, true)
		default:
			dx[0] = gemm(c, g, true, true)
		}
	}
	if b.active(c) {
		switch {
		case !ta && !tb:
			dx[1] = gemm(a, g, true, false)
		case !ta && tb:
			dx[1] = gemm(g, a, true, false)
		case ta && !tb:
			dx[1] = gemm(a, g, false, false)
		default:
			dx[1] = gemm(g, a, true, true)
		}
	}
	if cc := gradInput(n, 2); b.active(cc) {
		d := g
		if beta != 1 {
			d = b.mul(g, b.scalarLike(float64(beta), cc))
		}
		dx[2] = b.unbroadcast(d, cc, n.GetOutput()[0])
	}
	return dx, nil
}

// gradReduce: ReduceSum/ReduceMean spread dy back over the reduced axes
// (Unsqueeze when keepdims=0, then Expand); ReduceMean also divides by
// the number of elements averaged, Size(x)/Size(y), from run-time sizes.
func gradReduce(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x, y := n.GetInput()[0], n.GetOutput()[0]
	keep := gradAttrInt(n, "keepdims", 1) != 0
	noop := gradAttrInt(n, "noop_with_empty_axes", 0) != 0
	axes := gradInput(n, 1)
	if a := gradAttr(n, "axes"); a != nil {
		axes = b.ints(false, a.GetInts()...)
	}
	if axes == "" && noop {
		return []string{dy[0]}, nil
	}
	if vals, ok := b.staticInts(axes); axes != "" && ok && len(vals) == 0 {
		if noop {
			return []string{dy[0]}, nil
		}
		axes = ""
	}
	g := dy[0]
	if !keep && axes != "" {
		g = b.op("Unsqueeze", "unsq", []string{g, axes})
	}
	if n.GetOpType() == "ReduceMean" {
		dt := int64(b.typeOf(x))
		sy := b.op("Cast", "cast", []string{b.op("Size", "size", []string{y})}, gradIntAttr("to", dt))
		sx := b.op("Cast", "cast", []string{b.op("Size", "size", []string{x})}, gradIntAttr("to", dt))
		g = b.mul(g, b.div(sy, sx))
	}
	return []string{b.op("Expand", "expand", []string{g, b.shape(x)})}, nil
}

// gradSoftmax: y·(dy − Σ dy·y) over the softmax axis (opset ≥ 13 form).
func gradSoftmax(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	axis, err := b.softmaxAxis(n)
	if err != nil {
		return nil, err
	}
	s := b.reduceSum(b.mul(dy[0], y), b.ints(false, axis), true, false)
	return []string{b.mul(y, b.sub(dy[0], s))}, nil
}

// gradLogSoftmax: dy − exp(y)·Σ dy over the axis.
func gradLogSoftmax(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	y := n.GetOutput()[0]
	axis, err := b.softmaxAxis(n)
	if err != nil {
		return nil, err
	}
	s := b.reduceSum(dy[0], b.ints(false, axis), true, false)
	return []string{b.sub(dy[0], b.mul(b.op("Exp", "exp", []string{y}), s))}, nil
}

func (b *gradBuilder) softmaxAxis(n *onnxpb.NodeProto) (int64, error) {
	if b.opset < 13 {
		return 0, fmt.Errorf("%s before opset 13 (2-D coercion) is not supported", n.GetOpType())
	}
	return gradAttrInt(n, "axis", -1), nil
}

// normAxes returns the normalized axes [axis, rank) as negative numbers,
// so that no rank is needed when axis is negative.
func (b *gradBuilder) normAxes(n *onnxpb.NodeProto) ([]int64, error) {
	axis := gradAttrInt(n, "axis", -1)
	x := n.GetInput()[0]
	if axis >= 0 {
		r, err := b.needRank(x)
		if err != nil {
			return nil, err
		}
		axis -= int64(r)
	}
	var axes []int64
	for a := axis; a < 0; a++ {
		axes = append(axes, a)
	}
	return axes, nil
}

// gradLayerNorm recomputes the statistics (two reductions; cheaper than
// keeping the optional Mean/InvStdDev outputs, whose type depends on
// stash_type) and applies dx = r·(g − mean(g) − x̂·mean(g·x̂)) with
// g = dy·scale, x̂ = (x−μ)·r.
func gradLayerNorm(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	if dy[0] == "" {
		return nil, fmt.Errorf("gradient through Mean/InvStdDev outputs is not supported")
	}
	x, scale, bias := n.GetInput()[0], gradInput(n, 1), gradInput(n, 2)
	axes, err := b.normAxes(n)
	if err != nil {
		return nil, err
	}
	eps := b.scalarLike(float64(gradAttrFloat(n, "epsilon", 1e-5)), x)
	xc := b.sub(x, b.reduceMean(x, axes))
	r := b.op("Reciprocal", "rstd", []string{b.op("Sqrt", "sqrt", []string{b.add(b.reduceMean(b.mul(xc, xc), axes), eps)})})
	xhat := b.mul(xc, r)
	g := dy[0]
	dx := make([]string, len(n.GetInput()))
	if b.active(x) {
		gs := g
		if scale != "" {
			gs = b.mul(g, scale)
		}
		inner := b.sub(b.sub(gs, b.reduceMean(gs, axes)), b.mul(xhat, b.reduceMean(b.mul(gs, xhat), axes)))
		dx[0] = b.mul(r, inner)
	}
	y := n.GetOutput()[0]
	if b.active(scale) {
		dx[1] = b.unbroadcast(b.mul(g, xhat), scale, y)
	}
	if b.active(bias) {
		dx[2] = b.unbroadcast(g, bias, y)
	}
	return dx, nil
}

// gradRMSNorm: y = x·r·scale, r = 1/√(mean(x²)+ε):
// dx = r·(g − x̂·mean(g·x̂)), g = dy·scale, x̂ = x·r.
func gradRMSNorm(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	if dy[0] == "" {
		return nil, fmt.Errorf("gradient through the InvStdDev output is not supported")
	}
	x, scale := n.GetInput()[0], gradInput(n, 1)
	axes, err := b.normAxes(n)
	if err != nil {
		return nil, err
	}
	eps := b.scalarLike(float64(gradAttrFloat(n, "epsilon", 1e-5)), x)
	r := b.op("Reciprocal", "rstd", []string{b.op("Sqrt", "sqrt", []string{b.add(b.reduceMean(b.mul(x, x), axes), eps)})})
	xhat := b.mul(x, r)
	g := dy[0]
	dx := make([]string, len(n.GetInput()))
	if b.active(x) {
		gs := g
		if scale != "" {
			gs = b.mul(g, scale)
		}
		dx[0] = b.mul(r, b.sub(gs, b.mul(xhat, b.reduceMean(b.mul(gs, xhat), axes))))
	}
	if b.active(scale) {
		dx[1] = b.unbroadcast(b.mul(g, xhat), scale, n.GetOutput()[0])
	}
	return dx, nil
}

// ---- data movement ----

// gradReshapeLike: ops that only change the shape get dy reshaped back.
func gradReshapeLike(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	return []string{b.op("Reshape", "reshape", []string{dy[0], b.shape(x)})}, nil
}

func gradExpand(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	return []string{b.unbroadcast(dy[0], x, n.GetOutput()[0])}, nil
}

func gradTranspose(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	var perm []int64
	if a := gradAttr(n, "perm"); a != nil {
		perm = a.GetInts()
	} else {
		r, err := b.needRank(n.GetInput()[0])
		if err != nil {
			return nil, err
		}
		for i := r - 1; i >= 0; i-- {
			perm = append(perm, int64(i))
		}
	}
	inv := make([]int64, len(perm))
	for i, p := range perm {
		if p < 0 || int(p) >= len(perm) {
			return nil, fmt.Errorf("bad perm %v", perm)
		}
		inv[p] = int64(i)
	}
	return []string{b.op("Transpose", "t", []string{dy[0]}, gradIntsAttr("perm", inv...))}, nil
}

// gradConcat splits dy at the run-time sizes of the inputs along the axis.
func gradConcat(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	axis := gradAttrInt(n, "axis", 0)
	ins := n.GetInput()
	sizes := make([]string, len(ins))
	for i, x := range ins {
		sizes[i] = b.op("Gather", "dim", []string{b.shape(x), b.ints(false, axis)})
	}
	split := sizes[0]
	if len(sizes) > 1 {
		split = b.op("Concat", "sizes", sizes, gradIntAttr("axis", 0))
	}
	parts := b.opN("Split", "split", []string{dy[0], split}, len(ins), gradIntAttr("axis", axis))
	dx := make([]string, len(ins))
	for i, x := range ins {
		if b.active(x) {
			dx[i] = parts[i]
		}
	}
	return dx, nil
}

// gradSplit concatenates the outputs' gradients, zeros for unused ones.
func gradSplit(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	parts := make([]string, len(n.GetOutput()))
	for j, o := range n.GetOutput() {
		if o == "" {
			return nil, fmt.Errorf("output %d is unnamed", j)
		}
		parts[j] = dy[j]
		if parts[j] == "" {
			parts[j] = b.zerosLike(o)
		}
	}
	return []string{b.op("Concat", "concat", parts, gradIntAttr("axis", gradAttrInt(n, "axis", 0)))}, nil
}

// gradSlice pads dy with zeros back to x's shape. The pads are computed
// at run time from the clamped starts/ends, scattered into a vector of
// x's rank, so neither the rank nor the dims need to be known.
func gradSlice(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	x := n.GetInput()[0]
	if st := gradInput(n, 4); st != "" {
		v, ok := b.staticInts(st)
		if !ok || slices.ContainsFunc(v, func(s int64) bool { return s != 1 }) {
			return nil, fmt.Errorf("only steps of 1 are supported")
		}
	}
	i64 := gradIntAttr("to", int64(onnxpb.TensorProto_INT64))
	cast := func(s string) string {
		if b.typeOf(s) == int32(onnxpb.TensorProto_INT64) {
			return s
		}
		return b.op("Cast", "cast", []string{s}, i64)
	}
	starts, ends := cast(n.GetInput()[1]), cast(n.GetInput()[2])
	sx := b.shape(x)
	rank := b.op("Size", "rank", []string{sx})
	zero := b.ints(true, 0)
	var axes string
	if a := gradInput(n, 3); a != "" {
		axes = cast(a)
		neg := b.op("Less", "neg", []string{axes, zero})
		axes = b.op("Where", "where", []string{neg, b.add(axes, rank), axes})
	} else {
		axes = b.op("Range", "axes", []string{zero, b.op("Size", "size", []string{starts}), b.ints(true, 1)})
	}
	d := b.op("Gather", "dims", []string{sx, axes})
	clamp := func(v string) string {
		neg := b.op("Less", "neg", []string{v, zero})
		v = b.op("Where", "where", []string{neg, b.add(v, d), v})
		return b.op("Max", "max", []string{b.op("Min", "min", []string{v, d}), zero})
	}
	s := clamp(starts)
	e := b.op("Max", "max", []string{clamp(ends), s})
	zr := b.op("ConstantOfShape", "zeros", []string{b.shape(sx)}, gradTensorAttr("value", &onnxpb.TensorProto{DataType: int32p(onnxpb.TensorProto_INT64), Dims: []int64{1}, Int64Data: []int64{0}}))
	begin := b.op("ScatterElements", "pads", []string{zr, axes, s})
	end := b.op("ScatterElements", "pads", []string{zr, axes, b.sub(d, e)})
	pads := b.op("Concat", "pads", []string{begin, end}, gradIntAttr("axis", 0))
	return []string{b.op("Pad", "pad", []string{dy[0], pads})}, nil
}

func int32p(dt onnxpb.TensorProto_DataType) *int32 { v := int32(dt); return &v }

// gradGather scatters dy into zeros of the data's shape, adding rows
// gathered more than once (ScatterND, reduction add). For an axis other
// than 0 the axis is moved to the front and back.
func gradGather(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	data, idx := n.GetInput()[0], n.GetInput()[1]
	if err := b.needOpset(gradScatterOpset, "ScatterND with reduction=add"); err != nil {
		return nil, err
	}
	axis := gradAttrInt(n, "axis", 0)
	rd, okd := b.rank(data)
	if axis < 0 {
		if !okd {
			return nil, fmt.Errorf("rank of %q unknown: pass it in GradientOptions.Ranks (heal.ProbeRanks)", data)
		}
		axis += int64(rd)
	}
	i := idx
	if b.typeOf(idx) != int32(onnxpb.TensorProto_INT64) {
		i = b.op("Cast", "cast", []string{idx}, gradIntAttr("to", int64(onnxpb.TensorProto_INT64)))
	}
	dim := b.op("Gather", "dim", []string{b.shape(data), b.ints(true, axis)})
	neg := b.op("Less", "neg", []string{i, b.ints(true, 0)})
	i = b.op("Where", "where", []string{neg, b.add(i, dim), i})
	iu := b.op("Unsqueeze", "unsq", []string{i, b.ints(false, -1)})
	zeroVal := gradFillValue(b.typeOf(data), 0)
	if axis == 0 {
		z := b.op("ConstantOfShape", "zeros", []string{b.shape(data)}, zeroVal)
		return []string{b.op("ScatterND", "scatter", []string{z, iu, dy[0]}, gradStringAttr("reduction", "add"))}, nil
	}
	if !okd {
		return nil, fmt.Errorf("rank of %q unknown: pass it in GradientOptions.Ranks (heal.ProbeRanks)", data)
	}
	ri, err := b.needRank(idx)
	if err != nil {
		return nil, err
	}
	// data axes (a, 0..a-1, a+1..): the gathered axis first.
	pd := []int64{axis}
	for k := int64(0); k < int64(rd); k++ {
		if k != axis {
			pd = append(pd, k)
		}
	}
	// dy axes: d[:a] + q + d[a+1:] → q + d[:a] + d[a+1:].
	var py []int64
	for k := axis; k < axis+int64(ri); k++ {
		py = append(py, k)
	}
	for k := int64(0); k < axis; k++ {
		py = append(py, k)
	}
	for k := axis + int64(ri); k < int64(rd+ri-1); k++ {
		py = append(py, k)
	}
	shapeT := b.op("Gather", "tshape", []string{b.shape(data), b.ints(false, pd...)})
	z := b.op("ConstantOfShape", "zeros", []string{shapeT}, zeroVal)
	dyT := b.op("Transpose", "t", []string{dy[0]}, gradIntsAttr("perm", py...))
	dxT := b.op("ScatterND", "scatter", []string{z, iu, dyT}, gradStringAttr("reduction", "add"))
	inv := make([]int64, len(pd))
	for k, p := range pd {
		inv[p] = int64(k)
	}
	return []string{b.op("Transpose", "t", []string{dxT}, gradIntsAttr("perm", inv...))}, nil
}

// gradGatherElements: ScatterElements (reduction add) into zeros.
func gradGatherElements(b *gradBuilder, n *onnxpb.NodeProto, dy []string) ([]string, error) {
	data, idx := n.GetInput()[0], n.GetInput()[1]
	if err := b.needOpset(gradScatterOpset, "ScatterElements with reduction=add"); err != nil {
		return nil, err
	}
	z := b.zerosLike(data)
	return []string{b.op("ScatterElements", "scatter", []string{z, idx, dy[0]},
		gradIntAttr("axis", gradAttrInt(n, "axis", 0)), gradStringAttr("reduction", "add"))}, nil
}
