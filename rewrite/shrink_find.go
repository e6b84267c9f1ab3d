package rewrite

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"slices"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ErrUnsupportedWidth is wrapped by the errors of FindWidths: the block's
// MLP or attention is not one of the patterns shrink can rewrite.
var ErrUnsupportedWidth = errors.New("unsupported pattern for width pruning")

// BlockWidth is what width pruning needs to know of one decoder block.
// MLP and Attn are nil when the pattern is not supported; MLPErr and
// AttnErr then say why (they matter only when that part is shrunk).
type BlockWidth struct {
	Block   int
	MLP     *MLPWidth
	Attn    *AttnWidth
	MLPErr  error
	AttnErr error
}

// MLPWidth is a feed-forward network whose FFN intermediate channels can
// be removed together: output units of the up-type projections (SwiGLU's
// gate and up, GPT-2's c_fc) and input features of the down projection,
// joined by elementwise ops only.
type MLPWidth struct {
	FFN  int
	Up   []*LinearWeight
	Down *LinearWeight
	// Act is the tensor entering the down projection, the intermediate
	// activation whose mean |a_j| ranks channels by activation.
	Act string
	// Biases are 1-D initializers of FFN values inside the region (c_fc's
	// bias, a Gemm's C): sliced with the channels.
	Biases []string
	// Reshapes hard-code FFN as the last entry of their target shape
	// (torch wraps Gemm in Reshape [b·s, ·] → [b, s, FFN]).
	Reshapes []*onnxpb.NodeProto
}

// AttnWidth is a multi-head (or grouped-query) attention with separate
// q/k/v/o projections whose heads can be removed a KV group at a time:
// KV head g and the Heads/KVHeads query heads that read it.
type AttnWidth struct {
	Heads, KVHeads, HeadDim int
	Q, K, V, O              *LinearWeight
	// QBias, KBias, VBias name the projections' bias initializers ("" if none).
	QBias, KBias, VBias string
	// Ctx is o_proj's input, the heads' concatenated outputs
	// [batch, seq, heads·head_dim], which ranks heads by activation.
	Ctx string
	// The Reshapes whose target shapes hold head counts.
	split  [3]*onnxpb.NodeProto // q, k, v: [b, s, n·d] → [b, s, n, d]
	merge  *onnxpb.NodeProto    // [b, s, heads, d] → [b, s, heads·d]
	repeat []*onnxpb.NodeProto  // repeat_kv: [b, kv, rep, t, d] → [b, heads, t, d]
	kvIO   []string             // the block's KV-cache graph inputs and outputs
}

// FindWidths analyses every block of d for width pruning. It never fails
// as a whole: each block's MLPErr/AttnErr records what is unsupported.
//
// Supported patterns:
//   - MLP: the residual branch of the block's last site is a down
//     projection (MatMul, or Gemm in Reshapes, optionally + bias) whose
//     input is computed from up-type projections of the same FFN width by
//     elementwise ops (Mul, Add, Sigmoid, Tanh, Pow, Erf, Gelu, QuickGelu,
//     ...) whose other operands are scalars or FFN-long bias vectors, and
//     Reshapes. SwiGLU (Llama, Mistral, Qwen2) and GELU MLPs (GPT-2), as
//     torch, optimum, onnxruntime's optimizer and our converter export
//     them.
//   - Attention: separate projections named q_proj, k_proj, v_proj (node
//     or weight names), each a MatMul (optionally + bias) followed by a
//     Reshape to [b, s, n, d]; o_proj reading a Reshape of a
//     Transpose(0, 2, 1, 3) of the heads; grouped-query heads repeated by
//     Unsqueeze/Expand/Reshape (Hugging Face's repeat_kv). Fused qkv
//     projections (GPT-2's c_attn) and onnxruntime's attention contrib ops
//     (Attention, GroupQueryAttention, MultiHeadAttention) are not
//     supported.
func FindWidths(m *graph.Model, d *graph.Decoder) []*BlockWidth {
	s := newWeightScope(m, d)
	var out []*BlockWidth
	first := 0
	for _, b := range d.Blocks {
		last := slices.IndexFunc(d.Sites, func(st graph.Site) bool { return st.Node == b.OutputSite.Node })
		sites := d.Sites[first : last+1]
		first = last + 1
		bw := &BlockWidth{Block: b.Index}
		if len(sites) != 2 {
			err := fmt.Errorf("%w: block %d has %d residual additions, not attention then MLP", ErrUnsupportedWidth, b.Index, len(sites))
			bw.MLPErr, bw.AttnErr = err, err
			out = append(out, bw)
			continue
		}
		attnBranch, err1 := branchOf(sites[0], b.Input)
		mlpBranch, err2 := branchOf(sites[1], sites[0].Tensor())
		if err := errors.Join(err1, err2); err != nil {
			bw.MLPErr, bw.AttnErr = err, err
			out = append(out, bw)
			continue
		}
		bw.MLP, bw.MLPErr = s.findMLP(b, mlpBranch)
		bw.Attn, bw.AttnErr = s.findAttn(b, attnBranch)
		out = append(out, bw)
	}
	return out
}

// branchOf returns the operand a residual site adds to the stream.
func branchOf(site graph.Site, residual string) (string, error) {
	in := site.Node.GetInput()
	switch {
	case len(in) >= 2 && in[0] == residual:
		return in[1], nil
	case len(in) >= 2 && in[1] == residual:
		return in[0], nil
	}
	return "", fmt.Errorf("%w: residual site %s does not add to %q", ErrUnsupportedWidth, graph.NodeLabel(site.Node), residual)
}

// projectionBefore walks back from a branch output through a trailing
// Reshape and bias Add to the linear layer producing it.
func (s *weightScope) projectionBefore(t string) (*onnxpb.NodeProto, *LinearWeight, error) {
	for range 4 {
		p := s.ix.Producer[t]
		if p == nil {
			break
		}
		if w, ok := s.linearOf(p); ok {
			return p, w, nil
		}
		switch p.GetOpType() {
		case "Reshape":
			t = p.GetInput()[0]
		case "Add":
			if b := s.vectorInit(p.GetInput()[1]); b != nil {
				t = p.GetInput()[0]
			} else if b := s.vectorInit(p.GetInput()[0]); b != nil {
				t = p.GetInput()[1]
			} else {
				return nil, nil, fmt.Errorf("%w: %s adds two activations where a projection was expected", ErrUnsupportedWidth, graph.NodeLabel(p))
			}
		default:
			return nil, nil, fmt.Errorf("%w: %s (%s) where a projection was expected", ErrUnsupportedWidth, graph.NodeLabel(p), p.GetOpType())
		}
	}
	return nil, nil, fmt.Errorf("%w: no projection produces %q", ErrUnsupportedWidth, t)
}

// vectorInit returns the 1-D initializer a tensor is, or is a Cast of
// (float16 builds read every bias through a Cast).
func (s *weightScope) vectorInit(name string) *onnxpb.TensorProto {
	t := s.initializer(s.castSource(name))
	if t == nil || len(t.GetDims()) != 1 {
		return nil
	}
	return t
}

// castSource follows Cast and Identity nodes back from name to the
// tensor they convert.
func (s *weightScope) castSource(name string) string {
	for range 8 {
		p := s.ix.Producer[name]
		if p == nil || (p.GetOpType() != "Cast" && p.GetOpType() != "Identity") || len(p.GetInput()) == 0 {
			break
		}
		name = p.GetInput()[0]
	}
	return name
}

// elementwise ops are those whose output has its first input's shape
// (with broadcast operands), so they carry FFN channels through.
var elementwise = map[string]bool{
	"Sigmoid": true, "Tanh": true, "Relu": true, "Erf": true, "Gelu": true, "FastGelu": true, "QuickGelu": true,
	"BiasGelu": true, "Softplus": true, "Softsign": true, "Neg": true, "Exp": true, "Abs": true, "Sqrt": true,
	"Identity": true, "Cast": true, "Elu": true, "LeakyRelu": true, "Selu": true, "Celu": true, "HardSigmoid": true,
	"HardSwish": true, "Mish": true, "Mul": true, "Add": true, "Sub": true, "Div": true, "Pow": true, "Max": true,
	"Min": true, "Where": true,
}

func (s *weightScope) findMLP(b *graph.Block, branch string) (*MLPWidth, error) {
	downNode, down, err := s.projectionBefore(branch)
	if err != nil {
		return nil, fmt.Errorf("block %d MLP: %w", b.Index, err)
	}
	mw := &MLPWidth{FFN: down.In, Down: down, Act: downNode.GetInput()[0]}
	region := map[*onnxpb.NodeProto]bool{downNode: true}
	tensors := map[string]bool{}
	queue := []string{mw.Act}
	fail := func(format string, args ...any) (*MLPWidth, error) {
		return nil, fmt.Errorf("block %d MLP: %w: "+format, append([]any{b.Index, ErrUnsupportedWidth}, args...)...)
	}
	for len(queue) > 0 {
		t := queue[0]
		queue = queue[1:]
		if tensors[t] {
			continue
		}
		tensors[t] = true
		p := s.ix.Producer[t]
		if p == nil {
			return fail("%q, an FFN-wide tensor, is not computed in the block", t)
		}
		if region[p] {
			continue
		}
		region[p] = true
		if w, ok := s.linearOf(p); ok {
			if w.Out != mw.FFN {
				return fail("%s has %d outputs, the down projection %d inputs", graph.NodeLabel(p), w.Out, mw.FFN)
			}
			mw.Up = append(mw.Up, w)
			if p.GetOpType() == "Gemm" && len(p.GetInput()) > 2 && p.GetInput()[2] != "" {
				if err := s.mlpOperand(p.GetInput()[2], mw); err != nil {
					return fail("%s: %v", graph.NodeLabel(p), err)
				}
			}
			continue
		}
		op := p.GetOpType()
		switch {
		case op == "Reshape":
			queue = append(queue, p.GetInput()[0])
			vals, known, ok := s.shapeVec(p.GetInput()[1])
			if ok && len(vals) > 0 && known[len(vals)-1] && vals[len(vals)-1] == int64(mw.FFN) {
				mw.Reshapes = append(mw.Reshapes, p)
			} else if ok && len(vals) > 0 && known[len(vals)-1] && vals[len(vals)-1] > 0 {
				return fail("%s reshapes the FFN channels to %v", graph.NodeLabel(p), vals)
			}
		case elementwise[op]:
			for i, in := range p.GetInput() {
				if in == "" || (op == "Where" && i == 0) {
					continue
				}
				if s.isConstant(s.castSource(in)) {
					if err := s.mlpOperand(in, mw); err != nil {
						return fail("%s: %v", graph.NodeLabel(p), err)
					}
					continue
				}
				queue = append(queue, in)
			}
		default:
			return fail("%s (%s) between the up and down projections", graph.NodeLabel(p), op)
		}
	}
	if len(mw.Up) == 0 {
		return fail("no up projection feeds %s", graph.NodeLabel(downNode))
	}
	// Nothing outside may read a channel tensor (it would see the wrong
	// width), except Shape, which reads the width at run time.
	for t := range tensors {
		if s.ix.Outputs[t] {
			return fail("%q is a graph output", t)
		}
		for _, u := range s.ix.Consumers[t] {
			if !region[u.Node] && u.Node.GetOpType() != "Shape" {
				return fail("%q is also read by %s", t, graph.NodeLabel(u.Node))
			}
		}
	}
	for _, w := range append(slices.Clone(mw.Up), mw.Down) {
		if len(w.Nodes) != 1 {
			return fail("weight %s is shared by %d nodes", w.Name, len(w.Nodes))
		}
	}
	return mw, nil
}

// mlpOperand accepts a constant operand inside the FFN region: a scalar
// (or all-ones-shaped broadcast) is fine, an FFN-long initializer is
// sliced with the channels.
func (s *weightScope) mlpOperand(name string, mw *MLPWidth) error {
	if src := s.castSource(name); src != name && len(s.ix.Consumers[name]) == 1 {
		name = src
	}
	var dims []int64
	if t := s.initializer(name); t != nil {
		dims = t.GetDims()
	} else if t := s.constantTensor(name); t != nil {
		dims = t.GetDims()
	} else {
		return fmt.Errorf("operand %q is computed from constants; only initializers and Constant nodes are understood", name)
	}
	n := graph.NumElements(dims)
	switch {
	case n == 1:
		return nil
	case n == int64(mw.FFN) && dims[len(dims)-1] == int64(mw.FFN) && s.initializer(name) != nil:
		if !slices.Contains(mw.Biases, name) {
			if len(s.ix.Consumers[name]) != 1 {
				return fmt.Errorf("bias %q is shared", name)
			}
			mw.Biases = append(mw.Biases, name)
		}
		return nil
	}
	return fmt.Errorf("constant operand %q of shape %v", name, dims)
}

// isConstant says whether a tensor is an initializer or a Constant's output.
func (s *weightScope) isConstant(name string) bool {
	return s.initializer(name) != nil || s.constantTensor(name) != nil
}

func (s *weightScope) constantTensor(name string) *onnxpb.TensorProto {
	p := s.ix.Producer[name]
	if p == nil || p.GetOpType() != "Constant" {
		return nil
	}
	for _, a := range p.GetAttribute() {
		if a.GetName() == "value" && a.T != nil {
			return a.T
		}
	}
	return nil
}

// shapeVec partially evaluates an int64 shape vector: constants,
// Concat(axis 0) of parts, and Unsqueeze of a scalar (one entry, known
// when the scalar is constant). ok is false when even its length is
// unknown.
func (s *weightScope) shapeVec(name string) (vals []int64, known []bool, ok bool) {
	if t := s.initializer(name); t != nil {
		return s.constInts(t)
	}
	if t := s.constantTensor(name); t != nil {
		return s.constInts(t)
	}
	p := s.ix.Producer[name]
	if p == nil {
		return nil, nil, false
	}
	switch p.GetOpType() {
	case "Concat":
		for _, in := range p.GetInput() {
			v, k, ok := s.shapeVec(in)
			if !ok {
				return nil, nil, false
			}
			vals, known = append(vals, v...), append(known, k...)
		}
		return vals, known, true
	case "Unsqueeze":
		// A scalar made a 1-vector (torch builds shapes from Gather'd dims).
		if v, k, ok := s.shapeVec(p.GetInput()[0]); ok && len(v) == 1 {
			return v, k, true
		}
		return []int64{0}, []bool{false}, true
	}
	return nil, nil, false
}

func (s *weightScope) constInts(t *onnxpb.TensorProto) ([]int64, []bool, bool) {
	if t.GetDataType() != int32(onnxpb.TensorProto_INT64) || len(t.GetDims()) > 1 {
		return nil, nil, false
	}
	var v []int64
	switch {
	case len(t.Int64Data) > 0:
		v = slices.Clone(t.Int64Data)
	case t.RawData != nil:
		for i := 0; i+8 <= len(t.RawData); i += 8 {
			v = append(v, int64(binary.LittleEndian.Uint64(t.RawData[i:])))
		}
	}
	if int64(len(v)) != graph.NumElements(t.GetDims()) {
		return nil, nil, false
	}
	k := make([]bool, len(v))
	for i := range k {
		k[i] = true
	}
	return v, k, true
}

var projNameRe = regexp.MustCompile(`(?:^|[/.])([qkv])_proj(?:[/.]|$)`)

// headAttrs are attributes that fix head counts inside fused attention ops.
var headAttrs = []string{"num_heads", "kv_num_heads", "q_num_heads", "num_kv_heads"}

func (s *weightScope) findAttn(b *graph.Block, branch string) (*AttnWidth, error) {
	fail := func(format string, args ...any) (*AttnWidth, error) {
		return nil, fmt.Errorf("block %d attention: %w: "+format, append([]any{b.Index, ErrUnsupportedWidth}, args...)...)
	}
	// The attention half of the block: ancestors of its residual branch.
	part := map[*onnxpb.NodeProto]bool{}
	inBlock := map[*onnxpb.NodeProto]bool{}
	for _, n := range b.Nodes {
		inBlock[n] = true
	}
	stack := []string{branch}
	for len(stack) > 0 {
		t := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := s.ix.Producer[t]
		if p == nil || !inBlock[p] || part[p] {
			continue
		}
		part[p] = true
		stack = append(stack, p.GetInput()...)
	}
	// In graph order, so that what is found and rewritten (and the names
	// of new shape constants) does not depend on map iteration.
	var partNodes []*onnxpb.NodeProto
	for _, n := range b.Nodes {
		if part[n] {
			partNodes = append(partNodes, n)
		}
	}
	for _, n := range partNodes {
		for _, a := range n.GetAttribute() {
			if slices.Contains(headAttrs, a.GetName()) {
				return fail("%s (%s) has a %s attribute; fused attention ops are not supported", graph.NodeLabel(n), n.GetOpType(), a.GetName())
			}
		}
	}
	aw := &AttnWidth{}
	oNode, o, err := s.projectionBefore(branch)
	if err != nil {
		return fail("%v", err)
	}
	aw.O, aw.Ctx = o, oNode.GetInput()[0]

	// q/k/v by module name.
	var proj [3]*onnxpb.NodeProto
	var lw [3]*LinearWeight
	for _, n := range partNodes {
		w, ok := s.linearOf(n)
		if !ok || n == oNode {
			continue
		}
		m := projNameRe.FindStringSubmatch(n.GetName())
		if m == nil {
			m = projNameRe.FindStringSubmatch(w.Name)
		}
		if m == nil {
			return fail("projection %s is not named q_proj, k_proj or v_proj (fused qkv projections are not supported)", graph.NodeLabel(n))
		}
		i := slices.Index([]string{"q", "k", "v"}, m[1])
		if proj[i] != nil {
			return fail("two %s_proj projections (%s, %s)", m[1], graph.NodeLabel(proj[i]), graph.NodeLabel(n))
		}
		if n.GetOpType() != "MatMul" {
			return fail("%s is a %s, not a MatMul", graph.NodeLabel(n), n.GetOpType())
		}
		proj[i], lw[i] = n, w
	}
	for i, p := range proj {
		if p == nil {
			return fail("no %s_proj projection", []string{"q", "k", "v"}[i])
		}
	}
	if oNode.GetOpType() != "MatMul" {
		return fail("the output projection %s is a %s, not a MatMul", graph.NodeLabel(oNode), oNode.GetOpType())
	}
	merge := s.ix.Producer[aw.Ctx]
	if merge == nil || merge.GetOpType() != "Reshape" {
		return fail("o_proj input %q is not a Reshape of the heads", aw.Ctx)
	}
	if tr := s.ix.Producer[merge.GetInput()[0]]; tr == nil || tr.GetOpType() != "Transpose" || !slices.Equal(intsAttr(tr, "perm"), []int64{0, 2, 1, 3}) {
		return fail("%s does not merge heads transposed with perm [0, 2, 1, 3]", graph.NodeLabel(merge))
	}
	aw.merge = merge
	aw.Q, aw.K, aw.V = lw[0], lw[1], lw[2]
	biases := [3]*string{&aw.QBias, &aw.KBias, &aw.VBias}
	for i, p := range proj {
		t := p.GetOutput()[0]
		uses := s.ix.Consumers[t]
		if len(uses) == 1 && uses[0].Node.GetOpType() == "Add" {
			add := uses[0].Node
			other := add.GetInput()[1-uses[0].Input]
			if bt := s.vectorInit(other); bt == nil || len(s.ix.Consumers[other]) != 1 || len(s.ix.Consumers[bt.GetName()]) != 1 {
				return fail("%s adds %q, not a bias of its own", graph.NodeLabel(add), other)
			}
			*biases[i] = s.castSource(other)
			t = add.GetOutput()[0]
			uses = s.ix.Consumers[t]
		}
		if len(uses) != 1 || uses[0].Node.GetOpType() != "Reshape" || uses[0].Input != 0 {
			return fail("%s is not followed by a Reshape into heads", graph.NodeLabel(p))
		}
		aw.split[i] = uses[0].Node
	}
	vals, known, ok := s.shapeVec(aw.split[0].GetInput()[1])
	if !ok || len(vals) != 4 || !known[3] || vals[3] <= 0 {
		return fail("cannot read the head dimension from %s's target shape", graph.NodeLabel(aw.split[0]))
	}
	aw.HeadDim = int(vals[3])
	hd := aw.HeadDim
	if aw.Q.Out%hd != 0 || aw.K.Out%hd != 0 || aw.V.Out != aw.K.Out || aw.O.In != aw.Q.Out {
		return fail("projection widths q %d, k %d, v %d, o %d do not fit head dimension %d", aw.Q.Out, aw.K.Out, aw.V.Out, aw.O.In, hd)
	}
	aw.Heads, aw.KVHeads = aw.Q.Out/hd, aw.K.Out/hd
	if aw.Heads%aw.KVHeads != 0 {
		return fail("%d query heads do not group evenly over %d KV heads", aw.Heads, aw.KVHeads)
	}
	for i, r := range aw.split {
		v, k, ok := s.shapeVec(r.GetInput()[1])
		n := []int{aw.Heads, aw.KVHeads, aw.KVHeads}[i]
		if !ok || len(v) != 4 || (k[3] && v[3] != int64(hd)) || (k[2] && v[2] != int64(n) && v[2] != -1) {
			return fail("%s's target shape is not [batch, seq, %d, %d]", graph.NodeLabel(r), n, hd)
		}
	}
	// Every float Reshape in the attention is one we rewrite: anything
	// else might hold a head count we do not know how to change.
	for _, n := range partNodes {
		if n.GetOpType() != "Reshape" || n == aw.merge || slices.Contains(aw.split[:], n) {
			continue
		}
		if !isFloatType(s.ix.ElemType(n.GetInput()[0])) {
			continue // shape arithmetic
		}
		if e := s.ix.Producer[n.GetInput()[0]]; e != nil && e.GetOpType() == "Expand" {
			aw.repeat = append(aw.repeat, n)
			continue
		}
		return fail("%s reshapes activations in a way shrink does not know", graph.NodeLabel(n))
	}
	// Hugging Face's repeat_kv is skipped when every head has its own KV
	// head; with groups it reshapes the keys and the values.
	if (aw.Heads != aw.KVHeads && len(aw.repeat) != 2) || (len(aw.repeat) != 0 && len(aw.repeat) != 2) {
		return fail("%d repeat_kv reshapes for %d heads over %d KV heads", len(aw.repeat), aw.Heads, aw.KVHeads)
	}
	aw.kvIO = append(slices.Clone(b.KVInputs), b.KVOutputs...)
	for _, w := range []*LinearWeight{aw.Q, aw.K, aw.V, aw.O} {
		if len(w.Nodes) != 1 {
			return fail("weight %s is shared by %d nodes", w.Name, len(w.Nodes))
		}
	}
	return aw, nil
}
