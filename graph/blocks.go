package graph

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Decoder is the structure of a decoder-only language model:
// embed → block_0 … block_{L-1} → final norm → LM head.
type Decoder struct {
	Embedding Component
	Blocks    []*Block
	FinalNorm Component
	LMHead    Component
	// Logits is the graph output holding the logits.
	Logits string
	// Sites lists every residual-stream site in order (two per block in
	// a standard decoder: after attention, after the MLP).
	Sites []Site
	// Graph is the graph holding the blocks: the model's, or a branch of
	// a merged decoder.
	Graph *onnxpb.GraphProto
	// Branch names the If branch ("then_branch", "else_branch") for a
	// branch of a merged decoder; Branches lists both on the decoder
	// FindBlocks returns for a merged model.
	Branch   string
	Branches []*Decoder
}

// Component is a part of the model outside the blocks.
type Component struct {
	Nodes   []*onnxpb.NodeProto
	Weights []string // initializer names
	Params  int64
	// Tied is set on the LM head when it reuses the embedding's weight.
	Tied bool
}

// Block is one decoder block.
type Block struct {
	Index int
	Nodes []*onnxpb.NodeProto
	// Weights are the initializers only this block reads.
	Weights []string
	Params  int64
	// Input is the residual-stream tensor entering the block (h_i) and
	// Output the one leaving it (h_{i+1}). With onnxruntime's fused
	// SkipLayerNormalization the output is the fused node's output 3,
	// which may be unnamed when nothing reads it (the last block before
	// a fused final norm): Output is then "" and OutputSite says where
	// it would be.
	Input, Output string
	OutputSite    Site
	// KV-cache graph inputs and outputs of this block (key then value).
	KVInputs, KVOutputs []string
}

// Site is a place where the residual stream is updated: an Add (output 0)
// or a fused skip-norm (output 3, input+skip).
type Site struct {
	Node   *onnxpb.NodeProto
	Output int
	Layer  int // layer index evidenced by names, -1 if none
}

// Tensor is the site's residual tensor name ("" when not materialized).
func (s Site) Tensor() string {
	if s.Output < len(s.Node.GetOutput()) {
		return s.Node.GetOutput()[s.Output]
	}
	return ""
}

// ErrNoBlocks is wrapped by FindBlocks when a graph has no repeated
// decoder-block structure.
var ErrNoBlocks = errors.New("no decoder blocks found")

var (
	layerNameRe = regexp.MustCompile(`(?:^|[/.])(?:layers|h|blocks|layer|block)\.(\d+)[/.]`)
	kvInputRe   = regexp.MustCompile(`^past_key_values\.(\d+)\.(key|value)$`)
	kvOutputRe  = regexp.MustCompile(`^present\.(\d+)\.(key|value)$`)
)

// layerOf returns the layer index in a node or weight name, or -1.
func layerOf(name string) int {
	m := layerNameRe.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

func isSkipNorm(n *onnxpb.NodeProto) bool {
	switch n.GetOpType() {
	case "SkipLayerNormalization", "SkipSimplifiedLayerNormalization":
		return true
	}
	return false
}

// finder holds what block discovery needs of one graph.
type finder struct {
	m   *Model
	g   *onnxpb.GraphProto
	ix  *Index
	pos map[*onnxpb.NodeProto]int // topological position
	// outer indexes the enclosing graphs, innermost first, when g is a
	// branch of a merged decoder: its weights and inputs live there.
	outer []*Index
}

// initializer looks name up in g and then in the enclosing graphs.
func (f *finder) initializer(name string) *onnxpb.TensorProto {
	if t := f.ix.Initializers[name]; t != nil {
		return t
	}
	for _, o := range f.outer {
		if t := o.Initializers[name]; t != nil {
			return t
		}
	}
	return nil
}

// isInput says whether name is an input of g or of an enclosing graph
// (a branch of a merged decoder reads input_ids from outside).
func (f *finder) isInput(name string) bool {
	if _, ok := f.ix.Inputs[name]; ok {
		return true
	}
	for _, o := range f.outer {
		if _, ok := o.Inputs[name]; ok {
			return true
		}
	}
	return false
}

// FindBlocks discovers the decoder blocks of a causal language model. It
// combines structure (the chain of residual Adds or fused skip-norms from
// the embedding to the final norm) with names (module paths, weight names
// and KV-cache I/O) to number the blocks, and fails with an error wrapping
// ErrNoBlocks rather than guess when the graph shows no repeated block
// structure.
//
// An optimum merged decoder — a single If on use_cache_branch whose two
// branches each hold the whole decoder — gives the with-past branch's
// blocks, and Branches holds both branches' decoders (then, else).
func FindBlocks(m *Model) (*Decoder, error) {
	g := m.Proto.GetGraph()
	if ifNode := mergedIf(g); ifNode != nil {
		outer := NewIndex(g)
		var ds []*Decoder
		for _, a := range ifNode.Attribute {
			if a.GetName() != "then_branch" && a.GetName() != "else_branch" {
				continue
			}
			d, err := findBlocks(m, a.G, []*Index{outer})
			if err != nil {
				return nil, fmt.Errorf("merged decoder, %s: %w", a.GetName(), err)
			}
			d.Branch = a.GetName()
			ds = append(ds, d)
		}
		if len(ds) != 2 || len(ds[0].Blocks) != len(ds[1].Blocks) {
			return nil, fmt.Errorf("%w: the merged decoder's branches disagree on the number of blocks", ErrNoBlocks)
		}
		d := *ds[0]
		d.Branches = ds
		return &d, nil
	}
	return findBlocks(m, g, nil)
}

// mergedIf returns the If node of an optimum merged decoder: the graph's
// only compute node, producing all of its outputs.
func mergedIf(g *onnxpb.GraphProto) *onnxpb.NodeProto {
	var ifNode *onnxpb.NodeProto
	for _, n := range g.GetNode() {
		switch n.GetOpType() {
		case "If":
			if ifNode != nil {
				return nil
			}
			ifNode = n
		case "Constant", "Identity", "Cast", "Unsqueeze", "Reshape":
		default:
			return nil
		}
	}
	if ifNode == nil || len(ifNode.Output) != len(g.GetOutput()) {
		return nil
	}
	return ifNode
}

func findBlocks(m *Model, g *onnxpb.GraphProto, outer []*Index) (*Decoder, error) {
	f := &finder{m: m, g: g, ix: NewIndex(g), pos: map[*onnxpb.NodeProto]int{}, outer: outer}
	order, err := f.ix.Topo()
	if err != nil {
		return nil, err
	}
	for i, n := range order {
		f.pos[n] = i
	}
	d := &Decoder{Graph: g}
	emb, h0, err := f.embedding()
	if err != nil {
		return nil, err
	}
	d.Embedding = emb
	d.Sites = f.residualChain(h0)
	if len(d.Sites) < 2 {
		return nil, fmt.Errorf("%w: no residual chain after the embedding (%d residual additions)", ErrNoBlocks, len(d.Sites))
	}
	for i := range d.Sites {
		d.Sites[i].Layer = f.siteLayer(d.Sites, i, h0)
	}
	groups, err := groupSites(d.Sites)
	if err != nil {
		return nil, err
	}
	f.buildBlocks(d, h0, groups)
	named := true
	for _, s := range d.Sites {
		named = named && s.Layer >= 0
	}
	if err := f.checkRepeated(d, named); err != nil {
		return nil, err
	}
	f.tail(d)
	return d, nil
}

// embedding finds the token-embedding Gather (an initializer indexed by an
// integer graph input) and follows the stream past position embeddings
// and scaling to h_0, the first tensor that feeds a residual site.
func (f *finder) embedding() (Component, Site, error) {
	var gather *onnxpb.NodeProto
	for _, n := range f.g.GetNode() {
		if n.GetOpType() != "Gather" || len(n.Input) < 2 {
			continue
		}
		w := f.initializer(n.Input[0])
		isInput := f.isInput(n.Input[1])
		if w != nil && len(w.GetDims()) == 2 && isInput {
			if gather == nil || n.Input[1] == "input_ids" {
				gather = n
			}
		}
	}
	if gather == nil {
		return Component{}, Site{}, fmt.Errorf("%w: no token embedding (Gather of a 2-D initializer by a graph input)", ErrNoBlocks)
	}
	comp := Component{Nodes: []*onnxpb.NodeProto{gather}}
	cur := gather
	// Follow single-consumer elementwise steps whose other operand does
	// not come from the embedding: + position embedding, × scale, Cast.
	for {
		uses := f.ix.Consumers[cur.Output[0]]
		if len(uses) != 1 {
			break
		}
		next := uses[0].Node
		switch next.GetOpType() {
		case "Add", "Mul", "Cast":
		default:
			goto done
		}
		if next.GetOpType() != "Cast" {
			other := next.Input[1-uses[0].Input]
			if f.dependsOn(other, cur) {
				goto done
			}
			if p := f.ix.Producer[other]; p != nil && p.GetOpType() == "Gather" {
				comp.Nodes = append(comp.Nodes, p)
			}
		}
		comp.Nodes = append(comp.Nodes, next)
		cur = next
	}
done:
	comp.Weights, comp.Params = f.weightsOf(comp.Nodes, nil, nil)
	return comp, Site{Node: cur, Output: 0, Layer: -1}, nil
}

// dependsOn reports whether tensor t is computed (transitively) from any
// output of node n.
func (f *finder) dependsOn(t string, n *onnxpb.NodeProto) bool {
	limit := f.pos[n]
	seen := map[*onnxpb.NodeProto]bool{}
	stack := []string{t}
	for len(stack) > 0 {
		name := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		p := f.ix.Producer[name]
		if p == nil || seen[p] || f.pos[p] < limit {
			continue
		}
		if p == n {
			return true
		}
		seen[p] = true
		stack = append(stack, f.ix.Deps(p)...)
	}
	return false
}

// residualChain follows the residual stream from h0: the next site is a
// consumer of the current residual tensor that adds to it a branch
// computed from the current site's node.
func (f *finder) residualChain(h0 Site) []Site {
	var sites []Site
	cur := h0
	for {
		r := cur.Tensor()
		if r == "" {
			break
		}
		var next *Site
		for _, u := range f.ix.Consumers[r] {
			n := u.Node
			var other string
			switch {
			case n.GetOpType() == "Add" && u.Input <= 1 && len(n.Input) == 2:
				other = n.Input[1-u.Input]
			case isSkipNorm(n) && u.Input <= 1:
				other = n.Input[1-u.Input]
			default:
				continue
			}
			if !f.dependsOn(other, cur.Node) {
				continue
			}
			s := Site{Node: n, Output: 0}
			if isSkipNorm(n) {
				s.Output = 3
			}
			if next == nil || f.pos[n] < f.pos[next.Node] {
				next = &s
			}
		}
		if next == nil {
			break
		}
		sites = append(sites, *next)
		cur = *next
	}
	return sites
}

// siteLayer finds the layer a residual site belongs to: from the site's
// own name, else from the names of the nodes and weights computing the
// branch it adds (between the previous site and this one), else from the
// KV-cache inputs that branch reads. -1 when nothing says.
func (f *finder) siteLayer(sites []Site, i int, h0 Site) int {
	s := sites[i]
	if !isSkipNorm(s.Node) {
		if l := layerOf(s.Node.GetName()); l >= 0 {
			return l
		}
	}
	prev := h0.Node
	if i > 0 {
		prev = sites[i-1].Node
	}
	votes := map[int]int{}
	for n := range f.between(prev, []*onnxpb.NodeProto{s.Node}) {
		if n == s.Node {
			continue
		}
		if l := layerOf(n.GetName()); l >= 0 {
			votes[l]++
		}
		for _, in := range n.Input {
			if f.initializer(in) != nil {
				if l := layerOf(in); l >= 0 {
					votes[l]++
				}
			}
			if m := kvInputRe.FindStringSubmatch(in); m != nil {
				l, _ := strconv.Atoi(m[1])
				votes[l] += 100 // the strongest evidence
			}
		}
	}
	best, bestVotes := -1, 0
	for l, v := range votes {
		if v > bestVotes || (v == bestVotes && l < best) {
			best, bestVotes = l, v
		}
	}
	return best
}

// between returns the nodes that descend from src (excluding src) and are
// ancestors of, or equal to, one of sinks.
func (f *finder) between(src *onnxpb.NodeProto, sinks []*onnxpb.NodeProto) map[*onnxpb.NodeProto]bool {
	limit := f.pos[src]
	anc := map[*onnxpb.NodeProto]bool{}
	stack := append([]*onnxpb.NodeProto(nil), sinks...)
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if anc[n] || f.pos[n] <= limit {
			continue
		}
		anc[n] = true
		for _, d := range f.ix.Deps(n) {
			if p := f.ix.Producer[d]; p != nil {
				stack = append(stack, p)
			}
		}
	}
	// Keep only descendants of src.
	desc := map[*onnxpb.NodeProto]bool{src: true}
	in := map[*onnxpb.NodeProto]bool{}
	nodes := make([]*onnxpb.NodeProto, 0, len(anc))
	for n := range anc {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(a, b int) bool { return f.pos[nodes[a]] < f.pos[nodes[b]] })
	for _, n := range nodes {
		for _, d := range f.ix.Deps(n) {
			if p := f.ix.Producer[d]; p != nil && desc[p] {
				desc[n] = true
				in[n] = true
				break
			}
		}
	}
	return in
}

// groupSites splits the sites into blocks: by layer evidence when every
// site has it, else in pairs (attention, MLP) — checkRepeated then
// demands that the pairs really repeat.
func groupSites(sites []Site) ([][]int, error) {
	named := true
	for _, s := range sites {
		named = named && s.Layer >= 0
	}
	var groups [][]int
	if named {
		for i, s := range sites {
			if i > 0 && s.Layer == sites[i-1].Layer {
				groups[len(groups)-1] = append(groups[len(groups)-1], i)
				continue
			}
			// Layer numbers must increase; gaps are allowed (a model pruned
			// by a tool that did not renumber its module paths).
			if i > 0 && s.Layer < sites[i-1].Layer {
				return nil, fmt.Errorf("%w: residual sites name layers out of order (layer %d after %d)", ErrNoBlocks, s.Layer, sites[i-1].Layer)
			}
			groups = append(groups, []int{i})
		}
		return groups, nil
	}
	if len(sites)%2 != 0 {
		return nil, fmt.Errorf("%w: %d residual additions without layer names do not pair into blocks", ErrNoBlocks, len(sites))
	}
	for i := 0; i < len(sites); i += 2 {
		groups = append(groups, []int{i, i + 1})
	}
	return groups, nil
}

// buildBlocks fills in each block's nodes, weights and KV I/O.
func (f *finder) buildBlocks(d *Decoder, h0 Site, groups [][]int) {
	start := h0
	owner := map[*onnxpb.NodeProto]*Block{}
	// The embedding is nobody's block, though only block 0 reads it.
	outside := &Block{Index: -1}
	for _, n := range d.Embedding.Nodes {
		owner[n] = outside
	}
	for bi, grp := range groups {
		end := d.Sites[grp[len(grp)-1]]
		b := &Block{Index: bi, Input: start.Tensor(), Output: end.Tensor(), OutputSite: end}
		var sinks []*onnxpb.NodeProto
		for _, si := range grp {
			sinks = append(sinks, d.Sites[si].Node)
		}
		set := f.between(start.Node, sinks)
		// The KV-cache outputs computed from this block's stream.
		for _, out := range f.g.GetOutput() {
			if m := kvOutputRe.FindStringSubmatch(out.GetName()); m != nil {
				if l, _ := strconv.Atoi(m[1]); l == bi {
					if p := f.ix.Producer[out.GetName()]; p != nil {
						for n := range f.between(start.Node, []*onnxpb.NodeProto{p}) {
							set[n] = true
						}
					}
				}
			}
		}
		for n := range set {
			owner[n] = b
		}
		b.Nodes = f.sorted(set)
		d.Blocks = append(d.Blocks, b)
		start = end
	}
	// Nodes without inputs from the stream (constants, shape arithmetic)
	// belong to a block when all their consumers do.
	for changed := true; changed; {
		changed = false
		for _, n := range f.g.GetNode() {
			if owner[n] != nil || len(n.Output) == 0 {
				continue
			}
			var b *Block
			ok := true
			for _, o := range n.Output {
				if f.ix.Outputs[o] {
					ok = false
				}
				for _, u := range f.ix.Consumers[o] {
					ub := owner[u.Node]
					if ub == nil || (b != nil && ub != b) {
						ok = false
					}
					b = ub
				}
			}
			if ok && b != nil && b != outside {
				owner[n] = b
				b.Nodes = append(b.Nodes, n)
				changed = true
			}
		}
	}
	// A fused skip-norm ending block i also normalizes the input of
	// block i+1 (or is the final norm): its gamma and beta belong there.
	var carried []string
	for _, b := range d.Blocks {
		sort.Slice(b.Nodes, func(i, j int) bool { return f.pos[b.Nodes[i]] < f.pos[b.Nodes[j]] })
		next := normParamsOf(b.OutputSite.Node)
		b.Weights, b.Params = f.weightsOf(b.Nodes, next, carried)
		carried = next
		b.KVInputs, b.KVOutputs = f.kvOf(b, owner)
	}
}

// normParamsOf lists a skip-norm's gamma and beta (not its bias, which
// belongs to the branch it adds).
func normParamsOf(n *onnxpb.NodeProto) []string {
	if !isSkipNorm(n) {
		return nil
	}
	var p []string
	for i, in := range n.Input {
		if in != "" && i >= 2 && i < biasInput(n) {
			p = append(p, in)
		}
	}
	return p
}

// biasInput is the index of a skip-norm's optional bias input.
func biasInput(n *onnxpb.NodeProto) int {
	if n.GetOpType() == "SkipLayerNormalization" {
		return 4 // input, skip, gamma, beta, bias
	}
	return 3 // input, skip, gamma, bias
}

// kvOf lists the KV-cache graph inputs read by the block's nodes and the
// KV-cache graph outputs they produce, ordered key before value.
func (f *finder) kvOf(b *Block, owner map[*onnxpb.NodeProto]*Block) (ins, outs []string) {
	inSet, outSet := map[string]bool{}, map[string]bool{}
	for _, n := range b.Nodes {
		for _, in := range n.Input {
			if f.isInput(in) && kvInputRe.MatchString(in) {
				inSet[in] = true
			}
		}
		for _, o := range n.Output {
			if f.ix.Outputs[o] && kvOutputRe.MatchString(o) {
				outSet[o] = true
			}
		}
	}
	return sortedKV(inSet), sortedKV(outSet)
}

func sortedKV(set map[string]bool) []string {
	var s []string
	for k := range set {
		s = append(s, k)
	}
	sort.Strings(s) // "…key" < "…value"
	return s
}

// weightsOf lists the initializers read by nodes, less exclude, plus
// include, and counts their parameters (see isParam), plus floating-point
// matrices held in Constant nodes.
func (f *finder) weightsOf(nodes []*onnxpb.NodeProto, exclude, include []string) ([]string, int64) {
	seen := map[string]bool{}
	for _, e := range exclude {
		seen[e] = true
	}
	var names []string
	var params int64
	add := func(in string) {
		t := f.initializer(in)
		if t == nil || seen[in] {
			return
		}
		seen[in] = true
		names = append(names, in)
		if isParam(t) {
			params += NumElements(t.GetDims())
		}
	}
	for _, in := range include {
		add(in)
	}
	for _, n := range nodes {
		for _, in := range n.Input {
			for _, w := range f.weightSources(in) {
				add(w)
			}
		}
		if n.GetOpType() == "Constant" {
			for _, a := range n.Attribute {
				if a.T != nil && isFloat(a.T.GetDataType()) && len(a.T.GetDims()) >= 2 {
					params += NumElements(a.T.GetDims())
				}
			}
		}
	}
	return names, params
}

// weightSources resolves a tensor to the initializers it is computed
// from when only weight-only ops lie between (a tied LM head reads
// Transpose(embedding); float16 weights are read through Cast), else
// returns the name itself.
func (f *finder) weightSources(name string) []string {
	if f.initializer(name) != nil {
		return []string{name}
	}
	p := f.ix.Producer[name]
	if p == nil {
		return []string{name}
	}
	switch p.GetOpType() {
	case "Transpose", "Cast", "Reshape", "Identity", "Unsqueeze", "Squeeze", "Flatten", "DequantizeLinear":
	default:
		return []string{name}
	}
	var out []string
	for i, in := range p.Input {
		if in == "" {
			continue
		}
		src := f.weightSources(in)
		if len(src) == 1 && src[0] == in && f.initializer(in) == nil {
			if i == 0 {
				return []string{name} // the data input is computed: not a weight
			}
			continue // a computed shape or axes input
		}
		if i == 0 || f.initializer(in) != nil {
			out = append(out, src...)
		}
	}
	return out
}

// isParam says whether an initializer counts as parameters: floating
// point with more than one element (optimizers turn scalar constants such
// as 1/√d into initializers; those are not weights).
func isParam(t *onnxpb.TensorProto) bool {
	return isFloat(t.GetDataType()) && NumElements(t.GetDims()) > 1
}

func isFloat(dt int32) bool {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_DOUBLE:
		return true
	}
	return false
}

func (f *finder) sorted(set map[*onnxpb.NodeProto]bool) []*onnxpb.NodeProto {
	nodes := make([]*onnxpb.NodeProto, 0, len(set))
	for n := range set {
		nodes = append(nodes, n)
	}
	sort.Slice(nodes, func(i, j int) bool { return f.pos[nodes[i]] < f.pos[nodes[j]] })
	return nodes
}

// checkRepeated refuses structures that are not a stack of like blocks:
// each with the same number of matrix products and attention softmaxes,
// and at least two of them unless layer names vouch for a single one (a
// model pruned down to one block).
func (f *finder) checkRepeated(d *Decoder, named bool) error {
	if len(d.Blocks) < 2 && !named {
		return fmt.Errorf("%w: only %d block-like section after the embedding", ErrNoBlocks, len(d.Blocks))
	}
	sig := func(b *Block) string {
		c := map[string]int{}
		for _, n := range b.Nodes {
			switch op := n.GetOpType(); op {
			case "MatMul", "Gemm", "MatMulNBits", "FusedMatMul":
				c["matmul"]++
			case "Softmax", "Attention", "MultiHeadAttention", "GroupQueryAttention":
				c["attention"]++
			}
		}
		return fmt.Sprintf("%d matmuls, %d attention", c["matmul"], c["attention"])
	}
	first := sig(d.Blocks[0])
	if strings.HasPrefix(first, "0 matmuls") {
		return fmt.Errorf("%w: the residual sections contain no matrix products", ErrNoBlocks)
	}
	for _, b := range d.Blocks[1:] {
		if s := sig(b); s != first {
			return fmt.Errorf("%w: sections are not repeated blocks (block 0 has %s, block %d has %s)", ErrNoBlocks, first, b.Index, s)
		}
	}
	return nil
}

// tail finds the logits output, the LM head producing it and the final
// norm between the last block and the head.
func (f *finder) tail(d *Decoder) {
	for _, o := range f.g.GetOutput() {
		if o.GetName() == "logits" {
			d.Logits = "logits"
		}
	}
	if d.Logits == "" && len(f.g.GetOutput()) > 0 {
		d.Logits = f.g.GetOutput()[0].GetName()
	}
	p := f.ix.Producer[d.Logits]
	if p == nil {
		return
	}
	last := d.Sites[len(d.Sites)-1].Node
	set := f.between(last, []*onnxpb.NodeProto{p})
	var head, norm []*onnxpb.NodeProto
	// The head is the last matrix product before the logits; the rest
	// after the last site is the final norm (and reshapes).
	var headNode *onnxpb.NodeProto
	for n := range set {
		if (n.GetOpType() == "MatMul" || n.GetOpType() == "Gemm") && (headNode == nil || f.pos[n] > f.pos[headNode]) {
			headNode = n
		}
	}
	for n := range set {
		if headNode != nil && f.pos[n] >= f.pos[headNode] {
			head = append(head, n)
		} else {
			norm = append(norm, n)
		}
	}
	var normExtra []string
	if isSkipNorm(last) {
		// The fused final norm is also the last site; only its gamma
		// and beta are the final norm's (the block counted the rest).
		normExtra = normParamsOf(last)
	}
	sortBy := func(ns []*onnxpb.NodeProto) {
		sort.Slice(ns, func(i, j int) bool { return f.pos[ns[i]] < f.pos[ns[j]] })
	}
	sortBy(head)
	sortBy(norm)
	d.LMHead.Nodes, d.FinalNorm.Nodes = head, norm
	d.LMHead.Weights, d.LMHead.Params = f.weightsOf(head, nil, nil)
	for _, w := range d.LMHead.Weights {
		d.LMHead.Tied = d.LMHead.Tied || slices.Contains(d.Embedding.Weights, w)
	}
	d.FinalNorm.Weights, d.FinalNorm.Params = f.weightsOf(norm, nil, normExtra)
	if isSkipNorm(last) {
		d.FinalNorm.Nodes = append([]*onnxpb.NodeProto{last}, d.FinalNorm.Nodes...)
	}
}

// TotalParams counts the elements of every floating-point initializer and
// Constant matrix in the main graph.
// In a merged decoder whose branches hold their own weights (older
// optimum versions), the with-past branch's are counted too, once.
func TotalParams(m *Model) int64 {
	var total int64
	g := m.Proto.GetGraph()
	inits := g.GetInitializer()
	if ifNode := mergedIf(g); ifNode != nil {
		for _, a := range ifNode.Attribute {
			if a.GetName() == "then_branch" {
				inits = append(slices.Clip(inits), a.G.GetInitializer()...)
			}
		}
	}
	for _, t := range inits {
		if isParam(t) {
			total += NumElements(t.GetDims())
		}
	}
	for _, n := range g.GetNode() {
		if n.GetOpType() == "Constant" {
			for _, a := range n.Attribute {
				if a.T != nil && isFloat(a.T.GetDataType()) && len(a.T.GetDims()) >= 2 {
					total += NumElements(a.T.GetDims())
				}
			}
		}
	}
	return total
}

// FormatBlocks prints block indices compactly: [3 4 5] as "3-5", [1 4]
// as "1,4" (sorted input); "" for none.
func FormatBlocks(b []int) string {
	var parts []string
	for i := 0; i < len(b); {
		j := i
		for j+1 < len(b) && b[j+1] == b[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", b[i], b[j]))
		} else {
			parts = append(parts, strconv.Itoa(b[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
