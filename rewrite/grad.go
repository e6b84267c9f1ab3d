package rewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// GradientOptions configures Gradient.
type GradientOptions struct {
	// Loss is the scalar float/double tensor to differentiate.
	Loss string
	// WithRespectTo lists graph inputs to differentiate with respect to.
	WithRespectTo []string
	// Ranks gives the rank of tensors on the differentiated path (see
	// heal.ProbeRanks). It is optional: declared shapes and a small rank
	// inference are used where it has no entry, and a rule that needs a
	// rank nobody knows fails with an error naming the tensor.
	Ranks map[string]int
}

// UnsupportedOpError lists the ops on the differentiated path that have
// no gradient rule, as "Op (node \"name\")".
type UnsupportedOpError struct{ Ops []string }

func (e *UnsupportedOpError) Error() string {
	return "autodiff: no gradient rule for " + strings.Join(e.Ops, ", ")
}

// gradMinOpset is the oldest ai.onnx opset Gradient emits nodes for:
// ReduceSum, Unsqueeze, Squeeze and Split take their axes as inputs from
// 13 on, which dynamic shapes need. ScatterElements/ScatterND learn
// reduction="add" (needed to accumulate gathered rows) in 16; the Gather
// rules raise an older import to 16 when that is safe (see needOpset).
const (
	gradMinOpset     = 13
	gradScatterOpset = 16
)

// Gradient appends reverse-mode gradient nodes to m's main graph and adds
// one graph output "grad." + name per WithRespectTo entry (same shape and
// element type as the input).
//
// Only nodes on a path from a WithRespectTo input to Loss are
// differentiated; everything else (weights, masks, rotary caches, shape
// arithmetic) is read as a constant, so frozen weights never get
// gradients. Contributions of a tensor's several consumers are summed.
// The emitted nodes derive every shape from Shape(x) at run time, so the
// training graph accepts any batch and sequence length; ranks are used
// only for static attributes (Transpose perms). Forward activations are
// reused, not recomputed, except the statistics of normalizations, which
// cost two reductions.
//
// An op on the path without a gradient rule yields *UnsupportedOpError
// naming every such op and node; m is then unchanged. On any error m is
// left unchanged.
func Gradient(m *graph.Model, opts GradientOptions) error {
	g := m.Proto.GetGraph()
	if g == nil {
		return errors.New("autodiff: model has no graph")
	}
	b, err := newGradBuilder(m, opts)
	if err != nil {
		return err
	}
	if err := b.analyse(); err != nil {
		return err
	}
	if err := b.backward(); err != nil {
		return err
	}
	b.commit()
	return nil
}

// gradBuilder holds the state of one Gradient call. Nothing it creates
// touches the model until commit, so a failed call leaves it unchanged.
type gradBuilder struct {
	m     *graph.Model
	g     *onnxpb.GraphProto
	ix    *graph.Index
	opts  GradientOptions
	opset int64

	carry   map[string]bool // depends on a WithRespectTo input differentiably
	need    map[string]bool // the loss depends on it
	path    []*onnxpb.NodeProto
	grads   map[string][]string // tensor → gradient contributions
	dtype   map[string]int32    // element type of forward tensors (memo)
	rankMem map[string]int

	seq      int
	nodes    []*onnxpb.NodeProto
	inits    []*onnxpb.TensorProto
	outputs  []*onnxpb.ValueInfoProto
	mutate   []func() // changes to existing nodes, applied by commit
	shapes   map[string]string
	consts   map[string]string
	existing map[string]bool // names already used in the graph
}

func newGradBuilder(m *graph.Model, opts GradientOptions) (*gradBuilder, error) {
	g := m.Proto.GetGraph()
	b := &gradBuilder{
		m: m, g: g, ix: graph.NewIndex(g), opts: opts,
		carry: map[string]bool{}, need: map[string]bool{},
		grads: map[string][]string{}, dtype: map[string]int32{}, rankMem: map[string]int{},
		shapes: map[string]string{}, consts: map[string]string{}, existing: map[string]bool{},
	}
	for _, os := range m.Proto.GetOpsetImport() {
		if d := os.GetDomain(); d == "" || d == "ai.onnx" {
			b.opset = os.GetVersion()
		}
	}
	if b.opset < gradMinOpset {
		return nil, fmt.Errorf("autodiff: model imports ai.onnx opset %d; gradients need opset ≥ %d", b.opset, gradMinOpset)
	}
	for n := range b.ix.Producer {
		b.existing[n] = true
	}
	for n := range b.ix.Inputs {
		b.existing[n] = true
	}
	for n := range b.ix.Initializers {
		b.existing[n] = true
	}
	if opts.Loss == "" {
		return nil, errors.New("autodiff: no loss tensor given")
	}
	if !b.existing[opts.Loss] {
		return nil, fmt.Errorf("autodiff: loss %q is not a tensor of the graph", opts.Loss)
	}
	if !gradIsFloat(b.elemType(opts.Loss)) {
		return nil, fmt.Errorf("autodiff: loss %q has element type %s, not a float type", opts.Loss, graph.DTypeName(b.elemType(opts.Loss)))
	}
	if len(opts.WithRespectTo) == 0 {
		return nil, errors.New("autodiff: nothing to differentiate with respect to")
	}
	seen := map[string]bool{}
	for _, w := range opts.WithRespectTo {
		vi := b.ix.Inputs[w]
		switch {
		case seen[w]:
			return nil, fmt.Errorf("autodiff: %q listed twice", w)
		case vi == nil:
			return nil, fmt.Errorf("autodiff: %q is not a graph input (make a weight an input before differentiating with respect to it)", w)
		case !gradIsFloat(vi.GetType().GetTensorType().GetElemType()):
			return nil, fmt.Errorf("autodiff: input %q has element type %s, not a float type", w, graph.DTypeName(vi.GetType().GetTensorType().GetElemType()))
		case b.existing["grad."+w]:
			return nil, fmt.Errorf("autodiff: the graph already has a tensor %q", "grad."+w)
		}
		seen[w] = true
	}
	return b, nil
}

// gradNonDiff are ops whose outputs carry no gradient even when an input
// does: comparisons, shape queries, index computations and piecewise
// constant functions.
var gradNonDiff = map[string]bool{
	"Shape": true, "Size": true, "ArgMax": true, "ArgMin": true, "NonZero": true,
	"Equal": true, "Less": true, "Greater": true, "LessOrEqual": true, "GreaterOrEqual": true,
	"Not": true, "And": true, "Or": true, "Xor": true, "IsNaN": true, "IsInf": true,
	"Floor": true, "Ceil": true, "Round": true, "Sign": true, "ConstantOfShape": true,
	"EyeLike": true, "RandomNormalLike": true, "RandomUniformLike": true, "Bernoulli": true,
}

func gradIsFloat(dt int32) bool {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_DOUBLE, onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16:
		return true
	}
	return false
}

// outputCarries reports whether output j of n, which has an input on the
// path, can carry a gradient.
func (b *gradBuilder) outputCarries(n *onnxpb.NodeProto, j int) bool {
	o := n.GetOutput()[j]
	if o == "" || gradNonDiff[n.GetOpType()] {
		return false
	}
	if n.GetOpType() == "Dropout" && j > 0 { // the mask
		return false
	}
	dt := b.elemType(o)
	return dt == 0 || gradIsFloat(dt)
}

// analyse finds the path: tensors that depend on a WithRespectTo input
// (carry) and that the loss depends on (need), and the nodes producing
// tensors in both sets. It fails, before anything is emitted, when an op
// there has no rule.
func (b *gradBuilder) analyse() error {
	topo, err := b.ix.Topo()
	if err != nil {
		return fmt.Errorf("autodiff: %w", err)
	}
	for _, w := range b.opts.WithRespectTo {
		b.carry[w] = true
	}
	for _, n := range topo {
		if !slices.ContainsFunc(b.ix.Deps(n), func(s string) bool { return b.carry[s] }) {
			continue
		}
		for j := range n.GetOutput() {
			if b.outputCarries(n, j) {
				b.carry[n.GetOutput()[j]] = true
			}
		}
	}
	b.need[b.opts.Loss] = true
	for _, n := range slices.Backward(topo) {
		if !slices.ContainsFunc(n.GetOutput(), func(s string) bool { return b.need[s] && b.carry[s] }) {
			continue
		}
		b.path = append(b.path, n) // reverse topological order
		for _, in := range b.ix.Deps(n) {
			if b.carry[in] {
				b.need[in] = true
			}
		}
	}
	var missing []string
	for _, n := range slices.Backward(b.path) {
		if _, ok := gradRules[gradRuleKey(n)]; !ok || len(graph.Subgraphs(n)) > 0 {
			missing = append(missing, fmt.Sprintf("%s (node %q)", gradOpName(n), graph.NodeLabel(n)))
		}
	}
	if len(missing) > 0 {
		return &UnsupportedOpError{Ops: missing}
	}
	return nil
}

func gradOpName(n *onnxpb.NodeProto) string {
	if d := n.GetDomain(); d != "" && d != "ai.onnx" {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}

// gradRuleKey maps a node to its rule: ai.onnx ops by name, contrib ops
// that onnxruntime also registers in the default domain under the same
// name.
func gradRuleKey(n *onnxpb.NodeProto) string {
	switch n.GetDomain() {
	case "", "ai.onnx", "com.microsoft":
		return n.GetOpType()
	}
	return n.GetDomain() + "." + n.GetOpType()
}

// active reports whether a gradient is wanted for tensor name.
func (b *gradBuilder) active(name string) bool { return name != "" && b.carry[name] && b.need[name] }

// backward walks the path in reverse topological order, applying each
// node's rule to the summed gradients of its outputs.
func (b *gradBuilder) backward() error {
	seed := b.op("ConstantOfShape", "seed", []string{b.shape(b.opts.Loss)}, gradFillValue(b.elemType(b.opts.Loss), 1))
	b.grads[b.opts.Loss] = []string{seed}
	for _, n := range b.path {
		dy := make([]string, len(n.GetOutput()))
		has := false
		for j, o := range n.GetOutput() {
			if b.active(o) && len(b.grads[o]) > 0 {
				dy[j] = b.sum(b.grads[o])
				has = true
			}
		}
		if !has {
			continue
		}
		dx, err := gradRules[gradRuleKey(n)](b, n, dy)
		if err != nil {
			return fmt.Errorf("autodiff: %s node %q: %w", n.GetOpType(), graph.NodeLabel(n), err)
		}
		for i, in := range n.GetInput() {
			if i < len(dx) && dx[i] != "" && b.active(in) {
				b.grads[in] = append(b.grads[in], dx[i])
			}
		}
	}
	for _, w := range b.opts.WithRespectTo {
		var src string
		if gs := b.grads[w]; len(gs) > 0 {
			src = b.sum(gs)
		} else { // the loss does not depend on w
			src = b.zerosLike(w)
		}
		out := "grad." + w
		b.nodes = append(b.nodes, &onnxpb.NodeProto{
			OpType: proto.String("Identity"), Name: proto.String("/grad/" + out),
			Input: []string{src}, Output: []string{out},
		})
		vi := proto.Clone(b.ix.Inputs[w]).(*onnxpb.ValueInfoProto)
		vi.Name = proto.String(out)
		b.outputs = append(b.outputs, vi)
	}
	return nil
}

// needOpset makes sure the model imports at least ai.onnx opset v,
// raising the import when the graph has no op whose meaning changed
// between the two versions. From 13 to 16 only RoiAlign's default
// coordinate mode did (BatchNormalization's outputs changed in training
// mode only, which inference graphs do not use); other ops gained types
// or optional attributes with the old behaviour as default.
func (b *gradBuilder) needOpset(v int64, why string) error {
	if b.opset >= v {
		return nil
	}
	if v > gradScatterOpset {
		return fmt.Errorf("%s needs ai.onnx opset %d, model imports %d", why, v, b.opset)
	}
	var unsafe string
	var walk func(g *onnxpb.GraphProto)
	walk = func(g *onnxpb.GraphProto) {
		for _, n := range g.GetNode() {
			if d := n.GetDomain(); (d == "" || d == "ai.onnx") && n.GetOpType() == "RoiAlign" {
				unsafe = n.GetOpType()
			}
			for _, sg := range graph.Subgraphs(n) {
				walk(sg)
			}
		}
	}
	walk(b.g)
	if unsafe != "" {
		return fmt.Errorf("%s needs ai.onnx opset %d; the model imports %d and has %s, whose meaning changed since", why, v, b.opset, unsafe)
	}
	b.opset = v
	b.mutate = append(b.mutate, func() {
		for _, os := range b.m.Proto.GetOpsetImport() {
			if d := os.GetDomain(); d == "" || d == "ai.onnx" {
				os.Version = proto.Int64(v)
			}
		}
	})
	return nil
}

func (b *gradBuilder) commit() {
	for _, f := range b.mutate {
		f()
	}
	b.g.Node = append(b.g.Node, b.nodes...)
	b.g.Initializer = append(b.g.Initializer, b.inits...)
	b.g.Output = append(b.g.Output, b.outputs...)
}

// sum adds gradient contributions (a tensor used several times).
func (b *gradBuilder) sum(gs []string) string {
	if len(gs) == 1 {
		return gs[0]
	}
	return b.op("Sum", "sum", gs)
}

// ---- emitting nodes ----

// fresh returns a tensor name no other tensor has.
func (b *gradBuilder) fresh(hint string) string {
	for {
		b.seq++
		name := fmt.Sprintf("grad/%s_%d", hint, b.seq)
		if !b.existing[name] {
			b.existing[name] = true
			return name
		}
	}
}

// opN emits a node with nout outputs.
func (b *gradBuilder) opN(op, hint string, ins []string, nout int, attrs ...*onnxpb.AttributeProto) []string {
	outs := make([]string, nout)
	for i := range outs {
		outs[i] = b.fresh(hint)
	}
	b.nodes = append(b.nodes, &onnxpb.NodeProto{
		OpType: proto.String(op), Name: proto.String("/" + outs[0]),
		Input: ins, Output: outs, Attribute: attrs,
	})
	return outs
}

func (b *gradBuilder) op(op, hint string, ins []string, attrs ...*onnxpb.AttributeProto) string {
	return b.opN(op, hint, ins, 1, attrs...)[0]
}

// Shorthands for the ops rules use most.
func (b *gradBuilder) mul(x, y string) string { return b.op("Mul", "mul", []string{x, y}) }
func (b *gradBuilder) add(x, y string) string { return b.op("Add", "add", []string{x, y}) }
func (b *gradBuilder) sub(x, y string) string { return b.op("Sub", "sub", []string{x, y}) }
func (b *gradBuilder) div(x, y string) string { return b.op("Div", "div", []string{x, y}) }
func (b *gradBuilder) neg(x string) string    { return b.op("Neg", "neg", []string{x}) }

// shape returns Shape(x), emitted once per tensor.
func (b *gradBuilder) shape(x string) string {
	if s, ok := b.shapes[x]; ok {
		return s
	}
	s := b.op("Shape", "shape", []string{x})
	b.shapes[x] = s
	return s
}

// zerosLike is a zero tensor of x's shape and type.
func (b *gradBuilder) zerosLike(x string) string {
	return b.op("ConstantOfShape", "zeros", []string{b.shape(x)}, gradFillValue(b.elemType(x), 0))
}

// gradFillValue is ConstantOfShape's value attribute: a one-element 1-D
// tensor.
func gradFillValue(dt int32, v float64) *onnxpb.AttributeProto {
	t := scalarTensor("", dt, v)
	t.Dims = []int64{1}
	return gradTensorAttr("value", t)
}

// scalar is a rank-0 constant of element type dt, shared between uses.
func (b *gradBuilder) scalar(v float64, dt int32) string {
	key := fmt.Sprintf("s%d:%v", dt, v)
	if c, ok := b.consts[key]; ok {
		return c
	}
	name := b.fresh("c")
	b.inits = append(b.inits, scalarTensor(name, dt, v))
	b.consts[key] = name
	return name
}

// ints is a constant int64 tensor: 1-D, or a scalar when scalar is set.
func (b *gradBuilder) ints(scalar bool, vs ...int64) string {
	key := fmt.Sprintf("i%v:%v", scalar, vs)
	if c, ok := b.consts[key]; ok {
		return c
	}
	name := b.fresh("i")
	t := &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: slices.Clone(vs)}
	if !scalar {
		t.Dims = []int64{int64(len(vs))}
	}
	b.inits = append(b.inits, t)
	b.consts[key] = name
	return name
}

// scalarLike is a constant of x's element type.
func (b *gradBuilder) scalarLike(v float64, x string) string { return b.scalar(v, b.elemType(x)) }

func (b *gradBuilder) elemType(name string) int32 {
	if dt, ok := b.dtype[name]; ok {
		return dt
	}
	dt := b.ix.ElemType(name)
	if dt == 0 {
		// Ops Index.ElemType does not know keep their first float input's type.
		if p := b.ix.Producer[name]; p != nil {
			switch p.GetOpType() {
			case "LogSoftmax", "Reciprocal", "Log", "GatherElements", "Sum", "Pad", "Sin", "Cos", "Trilu", "Max", "Min", "Abs", "Softplus", "HardSigmoid", "LeakyRelu", "Elu", "Selu", "Celu", "Mish", "Einsum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "CumSum", "RMSNormalization":
				if len(p.GetInput()) > 0 {
					dt = b.elemType(p.GetInput()[0])
				}
			}
		}
	}
	b.dtype[name] = dt
	return dt
}

// reduceSum sums x over axes (an int64 tensor name; "" for all axes).
func (b *gradBuilder) reduceSum(x, axes string, keepdims, noop bool) string {
	ins := []string{x}
	if axes != "" {
		ins = append(ins, axes)
	}
	return b.op("ReduceSum", "rsum", ins, gradIntAttr("keepdims", gradBool(keepdims)), gradIntAttr("noop_with_empty_axes", gradBool(noop)))
}

// reduceMean averages x over static axes, keeping them, in the form the
// model's opset wants (axes as input from opset 18).
func (b *gradBuilder) reduceMean(x string, axes []int64) string {
	if b.opset >= 18 {
		return b.op("ReduceMean", "rmean", []string{x, b.ints(false, axes...)}, gradIntAttr("keepdims", 1))
	}
	return b.op("ReduceMean", "rmean", []string{x}, gradIntsAttr("axes", axes...), gradIntAttr("keepdims", 1))
}

// unbroadcast sums a gradient g of a broadcast result down to the shape of
// operand x: over leading axes x lacks, then, keeping dims, over the axes
// where x has size 1. Both sets are computed from the run-time shapes, so
// it is right when a dynamic dimension happens to be 1. Where ranks and
// shapes tell statically that nothing was broadcast, g is returned as is.
func (b *gradBuilder) unbroadcast(g, x, y string) string {
	if b.sameShape(x, y) {
		return g
	}
	rx, okx := b.rank(x)
	ry, oky := b.rank(y)
	switch {
	case okx && oky && rx == ry:
	case okx && oky && rx < ry:
		axes := make([]int64, ry-rx)
		for i := range axes {
			axes[i] = int64(i)
		}
		g = b.reduceSum(g, b.ints(false, axes...), false, true)
	default:
		lead := b.op("Sub", "lead", []string{b.op("Size", "rank", []string{b.shape(y)}), b.op("Size", "rank", []string{b.shape(x)})})
		axes := b.op("Range", "axes", []string{b.ints(true, 0), lead, b.ints(true, 1)})
		g = b.reduceSum(g, axes, false, true)
	}
	if rx == 0 && okx {
		return g
	}
	if b.noUnitDims(x) {
		return g
	}
	ones := b.op("Equal", "isone", []string{b.shape(x), b.ints(false, 1)})
	axes := b.op("Reshape", "axes", []string{b.op("NonZero", "nz", []string{ones}), b.ints(false, -1)})
	return b.reduceSum(g, axes, true, true)
}

// sameShape reports whether x (an operand) provably has the shape of y (the
// result): when every other operand of y's elementwise producer is a
// static tensor of ones (a scalar, a [1,1] constant) of no larger rank.
func (b *gradBuilder) sameShape(x, y string) bool {
	p := b.ix.Producer[y]
	if p == nil {
		return false
	}
	rx, ok := b.rank(x)
	if !ok {
		return false
	}
	for _, in := range p.GetInput() {
		if in == x || in == "" {
			continue
		}
		dims, ok := b.staticShape(in)
		if !ok || len(dims) > rx {
			return false
		}
		for _, d := range dims {
			if d != 1 {
				return false
			}
		}
	}
	return true
}

// noUnitDims reports whether x's declared shape has no dimension that is
// or may be 1, so no keepdims reduction is needed.
func (b *gradBuilder) noUnitDims(x string) bool {
	dims, ok := b.staticShape(x)
	if !ok {
		return false
	}
	for _, d := range dims {
		if d <= 1 {
			return false
		}
	}
	return true
}

// ---- attributes and constants ----

func gradBool(v bool) int64 {
	if v {
		return 1
	}
	return 0
}

func gradIntAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func gradIntsAttr(name string, vs ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: slices.Clone(vs)}
}

func gradFloatAttr(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func gradStringAttr(name, v string) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_STRING.Enum(), S: []byte(v)}
}

func gradTensorAttr(name string, t *onnxpb.TensorProto) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
}

// staticInts returns the values of a constant int tensor (initializer or
// Constant node output).
func (b *gradBuilder) staticInts(name string) ([]int64, bool) {
	t := b.constTensor(name)
	if t == nil {
		return nil, false
	}
	raw, err := b.m.TensorBytes(t)
	if err != nil {
		return nil, false
	}
	switch onnxpb.TensorProto_DataType(t.GetDataType()) {
	case onnxpb.TensorProto_INT64:
		out := make([]int64, len(raw)/8)
		for i := range out {
			out[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
		return out, true
	case onnxpb.TensorProto_INT32:
		out := make([]int64, len(raw)/4)
		for i := range out {
			out[i] = int64(int32(binary.LittleEndian.Uint32(raw[4*i:])))
		}
		return out, true
	}
	return nil, false
}

// constTensor finds the tensor behind an initializer or Constant output.
func (b *gradBuilder) constTensor(name string) *onnxpb.TensorProto {
	if t := b.ix.Initializers[name]; t != nil && b.ix.Inputs[name] == nil {
		return t
	}
	p := b.ix.Producer[name]
	if p == nil || p.GetOpType() != "Constant" {
		return nil
	}
	for _, a := range p.GetAttribute() {
		switch a.GetName() {
		case "value":
			return a.GetT()
		case "value_int":
			return &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: []int64{a.GetI()}}
		case "value_ints":
			return &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(a.GetInts()))}, Int64Data: a.GetInts()}
		}
	}
	return nil
}

// nodeAttr returns n's attribute name, or nil.
func gradAttr(n *onnxpb.NodeProto, name string) *onnxpb.AttributeProto {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a
		}
	}
	return nil
}

func gradAttrInt(n *onnxpb.NodeProto, name string, def int64) int64 {
	if a := gradAttr(n, name); a != nil {
		return a.GetI()
	}
	return def
}

func gradAttrFloat(n *onnxpb.NodeProto, name string, def float32) float32 {
	if a := gradAttr(n, name); a != nil {
		return a.GetF()
	}
	return def
}

// gradInput returns input i of n, or "" when absent.
func gradInput(n *onnxpb.NodeProto, i int) string {
	if i < len(n.GetInput()) {
		return n.GetInput()[i]
	}
	return ""
}
