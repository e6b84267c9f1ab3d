package rewrite

import (
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// RemoveBlocks deletes decoder blocks from m (see DESIGN.md §4). For each
// contiguous run of removed blocks i..j it rewires the residual stream so
// that what read h_{j+1} reads h_i — including where onnxruntime fused the
// residual Add into a SkipLayerNormalization, whose inputs are then taken
// from the site that produced h_i (or which becomes a plain normalization
// of the embedding when i = 0). It then deletes the blocks' KV-cache
// inputs and outputs, removes the dead nodes and weights, and renumbers
// what remains — KV names past_key_values.N/present.N, module paths
// /model/layers.N/ in node names and weight names model.layers.N. — so
// the result is indistinguishable from a model built with fewer layers.
//
// The result is the original model with those blocks skipped: the
// residual stream passes through them unchanged.
func RemoveBlocks(m *graph.Model, d *graph.Decoder, remove []int) error {
	L := len(d.Blocks)
	set := map[int]bool{}
	for _, b := range remove {
		if b < 0 || b >= L {
			return fmt.Errorf("remove blocks: block %d out of range: the model has blocks 0..%d", b, L-1)
		}
		if set[b] {
			return fmt.Errorf("remove blocks: block %d listed twice", b)
		}
		set[b] = true
	}
	switch {
	case len(set) == 0:
		return fmt.Errorf("remove blocks: no blocks to remove")
	case len(set) >= L:
		return fmt.Errorf("remove blocks: removing %d of %d blocks would leave no decoder", len(set), L)
	}
	g := m.Proto.GetGraph()
	branches := d.Branches // an optimum merged decoder: both If branches
	if len(branches) == 0 {
		branches = []*graph.Decoder{d}
	}
	for _, bd := range branches {
		if len(bd.Blocks) != L {
			return fmt.Errorf("remove blocks: the merged decoder's branches have %d and %d blocks", L, len(bd.Blocks))
		}
	}

	// Rewire each run i..j, from the last run backwards so the sites a
	// later run reads are not yet rewired.
	runs := contiguousRuns(set)
	for _, bd := range branches {
		bg := bd.Graph
		if bg == nil {
			bg = g
		}
		for k := len(runs) - 1; k >= 0; k-- {
			if err := bypass(bg, bd, runs[k][0], runs[k][1]); err != nil {
				return err
			}
		}
	}

	// Drop the removed blocks' KV outputs (they keep the blocks alive),
	// clean up, then drop their now-unread KV inputs.
	removedKV := map[string]bool{}
	for b := range set {
		for _, n := range d.Blocks[b].KVOutputs {
			removedKV[n] = true
		}
		for _, n := range d.Blocks[b].KVInputs {
			removedKV[n] = true
		}
	}
	if len(d.Branches) > 0 {
		dropMergedOutputs(g, removedKV)
	}
	g.Output = slices.DeleteFunc(g.Output, func(vi *onnxpb.ValueInfoProto) bool { return removedKV[vi.GetName()] })
	DeadCode(m)
	ix := graph.NewIndex(g)
	for name := range removedKV {
		if len(ix.Consumers[name]) > 0 {
			return fmt.Errorf("remove blocks: KV input %q is still read after removing its block (node %q)", name, graph.NodeLabel(ix.Consumers[name][0].Node))
		}
	}
	g.Input = slices.DeleteFunc(g.Input, func(vi *onnxpb.ValueInfoProto) bool { return removedKV[vi.GetName()] })

	renumber(g, newIndex(L, set))
	return nil
}

// dropMergedOutputs removes the named outputs from a merged decoder's
// If node and, at the same positions, from both of its branches.
func dropMergedOutputs(g *onnxpb.GraphProto, names map[string]bool) {
	for _, n := range g.Node {
		if n.GetOpType() != "If" {
			continue
		}
		var drop []int
		for i, o := range n.Output {
			if names[o] {
				drop = append(drop, i)
			}
		}
		keep := func(i int) bool { return !slices.Contains(drop, i) }
		n.Output = filterIndex(n.Output, keep)
		for _, sg := range graph.Subgraphs(n) {
			sg.Output = filterIndex(sg.Output, keep)
		}
	}
}

func filterIndex[T any](s []T, keep func(int) bool) []T {
	var out []T
	for i, v := range s {
		if keep(i) {
			out = append(out, v)
		}
	}
	return out
}

// contiguousRuns turns a set of block indices into sorted [first, last]
// runs.
func contiguousRuns(set map[int]bool) [][2]int {
	idx := make([]int, 0, len(set))
	for b := range set {
		idx = append(idx, b)
	}
	sort.Ints(idx)
	var runs [][2]int
	for _, b := range idx {
		if n := len(runs); n > 0 && runs[n-1][1] == b-1 {
			runs[n-1][1] = b
		} else {
			runs = append(runs, [2]int{b, b})
		}
	}
	return runs
}

// bypass makes the residual stream skip blocks i..j.
func bypass(g *onnxpb.GraphProto, d *graph.Decoder, i, j int) error {
	end := d.Blocks[j].OutputSite // produces h_{j+1}
	hIn := d.Blocks[i].Input      // h_i
	if end.Node.GetOpType() == "Add" {
		replaceUses(g, end.Tensor(), hIn)
		return nil
	}
	// A fused skip-norm: it computes h_{j+1} = input + skip (+ bias) and
	// the next block's (or the final) norm of it. Feed it what produced
	// h_i instead, so it computes h_i and that norm.
	var start *onnxpb.NodeProto // the site that produced h_i, if fused
	if i > 0 {
		start = d.Blocks[i-1].OutputSite.Node
	}
	switch {
	case start != nil && start.GetOpType() == end.Node.GetOpType():
		// Same fused op: take its input, skip and bias; keep our gamma
		// (and beta): they are the next norm's parameters.
		end.Node.Input[0], end.Node.Input[1] = start.Input[0], start.Input[1]
		if bias := biasIndex(end.Node); bias > 0 {
			var sb string
			if bi := biasIndex(start); bi > 0 && bi < len(start.Input) {
				sb = start.Input[bi]
			}
			if bias < len(end.Node.Input) {
				end.Node.Input[bias] = sb
			} else if sb != "" {
				end.Node.Input = append(end.Node.Input, sb)
			}
		}
	default:
		// h_i is a plain tensor (the embedding, or an unfused Add):
		// the skip-norm becomes a plain norm of h_i.
		if err := unfuseSkipNorm(g, end.Node, hIn); err != nil {
			return err
		}
	}
	return nil
}

// biasIndex is the position of a skip-norm's optional bias input.
func biasIndex(n *onnxpb.NodeProto) int {
	switch n.GetOpType() {
	case "SkipLayerNormalization":
		return 4 // input, skip, gamma, beta, bias
	case "SkipSimplifiedLayerNormalization":
		return 3 // input, skip, gamma, bias
	}
	return -1
}

// unfuseSkipNorm turns a skip-norm into the plain norm of x: output 0
// stays the normalized tensor, and uses of output 3 (the sum) read x.
func unfuseSkipNorm(g *onnxpb.GraphProto, n *onnxpb.NodeProto, x string) error {
	var sum string
	if len(n.Output) > 3 {
		sum = n.Output[3]
	}
	eps := float32(1e-12)
	for _, a := range n.Attribute {
		if a.GetName() == "epsilon" {
			eps = a.GetF()
		}
	}
	switch n.GetOpType() {
	case "SkipLayerNormalization":
		ins := []string{x, n.Input[2]}
		if len(n.Input) > 3 && n.Input[3] != "" {
			ins = append(ins, n.Input[3])
		}
		n.OpType, n.Domain = proto.String("LayerNormalization"), nil
		n.Input = ins
		n.Attribute = []*onnxpb.AttributeProto{floatAttr("epsilon", eps), intAttr("axis", -1)}
	case "SkipSimplifiedLayerNormalization":
		// onnxruntime registers SimplifiedLayerNormalization in the
		// default domain.
		n.OpType, n.Domain = proto.String("SimplifiedLayerNormalization"), nil
		n.Input = []string{x, n.Input[2]}
		n.Attribute = []*onnxpb.AttributeProto{floatAttr("epsilon", eps), intAttr("axis", -1)}
	default:
		return fmt.Errorf("remove blocks: cannot unfuse %s node %q", n.GetOpType(), graph.NodeLabel(n))
	}
	n.Output = n.Output[:1]
	if sum != "" {
		replaceUses(g, sum, x)
	}
	return nil
}

func floatAttr(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func intAttr(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// replaceUses makes every reader of old read new instead. A graph output
// named old keeps its name and is fed by an Identity of new, so the
// model's interface does not change.
func replaceUses(g *onnxpb.GraphProto, old, new string) {
	for _, n := range g.Node {
		for k, in := range n.Input {
			if in == old {
				n.Input[k] = new
			}
		}
		for _, sg := range graph.Subgraphs(n) {
			replaceOuterUses(sg, old, new)
		}
	}
	for _, o := range g.Output {
		if o.GetName() == old {
			g.Node = append(g.Node, &onnxpb.NodeProto{
				OpType: proto.String("Identity"),
				Name:   proto.String("/onnxprune/bypass/" + old),
				Input:  []string{new},
				Output: []string{old},
			})
			// The producer of old is now dead unless something else
			// reads it; rename its output so the name is defined once.
			for _, n := range g.Node[:len(g.Node)-1] {
				for k, out := range n.Output {
					if out == old {
						n.Output[k] = old + "/bypassed"
					}
				}
			}
		}
	}
}

// replaceOuterUses rewrites references to an outer-scope tensor inside a
// subgraph, unless the subgraph defines the name itself.
func replaceOuterUses(g *onnxpb.GraphProto, old, new string) {
	for _, n := range g.Node {
		if slices.Contains(n.Output, old) {
			return
		}
	}
	for _, n := range g.Node {
		for k, in := range n.Input {
			if in == old {
				n.Input[k] = new
			}
		}
		for _, sg := range graph.Subgraphs(n) {
			replaceOuterUses(sg, old, new)
		}
	}
}

// newIndex maps each kept block's old index to its new one.
func newIndex(L int, removed map[int]bool) map[int]int {
	m := map[int]int{}
	next := 0
	for b := 0; b < L; b++ {
		if !removed[b] {
			m[b] = next
			next++
		}
	}
	return m
}

var (
	kvNameRe    = regexp.MustCompile(`^(past_key_values|present)\.(\d+)\.(key|value)$`)
	layerPathRe = regexp.MustCompile(`((?:^|[/.])(?:layers|h)\.)(\d+)([/.])`)
)

// renumber renames KV-cache I/O, node names, weights and tensors whose
// names carry a kept block's old layer number. Names are rewritten in one
// pass from old to new numbers, so no name is taken twice.
func renumber(g *onnxpb.GraphProto, newIdx map[int]int) {
	renameLayer := func(s string) string {
		if m := kvNameRe.FindStringSubmatch(s); m != nil {
			old, _ := strconv.Atoi(m[2])
			if n, ok := newIdx[old]; ok {
				return fmt.Sprintf("%s.%d.%s", m[1], n, m[3])
			}
			return s
		}
		return layerPathRe.ReplaceAllStringFunc(s, func(match string) string {
			sm := layerPathRe.FindStringSubmatch(match)
			old, _ := strconv.Atoi(sm[2])
			if n, ok := newIdx[old]; ok {
				return sm[1] + strconv.Itoa(n) + sm[3]
			}
			// A survivor named after a removed layer is a node shared by
			// all layers; move it out of the way of the renumbered ones.
			return sm[1][:len(sm[1])-len(strings.TrimLeft(sm[1], "/."))] + "pruned_" + strings.TrimLeft(sm[1], "/.") + sm[2] + sm[3]
		})
	}
	var tensors, nodes []string
	walkGraphs(g, func(g *onnxpb.GraphProto) {
		for _, vi := range g.Input {
			tensors = append(tensors, vi.GetName())
		}
		for _, t := range g.Initializer {
			tensors = append(tensors, t.GetName())
		}
		for _, n := range g.Node {
			tensors = append(tensors, n.Output...)
			nodes = append(nodes, n.GetName())
		}
	})
	renameTensors(g, safeRenames(tensors, renameLayer))
	nodeRename := safeRenames(nodes, renameLayer)
	walkGraphs(g, func(g *onnxpb.GraphProto) {
		for _, n := range g.Node {
			if nn, ok := nodeRename[n.GetName()]; ok {
				n.Name = proto.String(nn)
			}
		}
	})
}

// walkGraphs calls fn for g and every subgraph in it.
func walkGraphs(g *onnxpb.GraphProto, fn func(*onnxpb.GraphProto)) {
	fn(g)
	for _, n := range g.Node {
		for _, sg := range graph.Subgraphs(n) {
			walkGraphs(sg, fn)
		}
	}
}

// safeRenames maps names to f(name), dropping any rename whose target is
// a name that stays: exporters share nodes across layers under the first
// layer's path (torch names a constant used by every layer
// /model/layers.0/…), and such a survivor keeps its name.
func safeRenames(names []string, f func(string) string) map[string]string {
	rename := map[string]string{}
	for _, s := range names {
		if n := f(s); n != s {
			rename[s] = n
		}
	}
	for changed := true; changed; {
		changed = false
		staying := map[string]bool{}
		for _, s := range names {
			if _, moves := rename[s]; !moves {
				staying[s] = true
			}
		}
		for old, n := range rename {
			if staying[n] {
				delete(rename, old)
				changed = true
			}
		}
	}
	return rename
}
