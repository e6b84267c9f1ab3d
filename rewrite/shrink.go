package rewrite

import (
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ShrinkPlan says which FFN channels and KV groups to remove in which
// blocks. PlanShrink writes one from importance scores; a plan can also
// be written by hand or read back from shrink.json.
type ShrinkPlan struct {
	Criterion      string        `json:"criterion,omitempty"`
	FFNRatio       float64       `json:"ffn_ratio,omitempty"`
	FFNGlobal      bool          `json:"ffn_global,omitempty"`
	RemoveKVGroups int           `json:"remove_kv_groups,omitempty"`
	Blocks         int           `json:"blocks,omitempty"` // the model's block count, when known
	Layers         []LayerShrink `json:"layers"`
	// RemoveBlocks composes width with depth pruning: these blocks (old
	// numbering) are removed after shrinking, by RemoveBlocks. Shrink
	// itself does not act on it.
	RemoveBlocks []int `json:"remove_blocks,omitempty"`
}

// Kept lists the blocks of an L-block model that the plan keeps.
func (p *ShrinkPlan) Kept(L int) []int {
	var kept []int
	for b := range L {
		if !slices.Contains(p.RemoveBlocks, b) {
			kept = append(kept, b)
		}
	}
	return kept
}

// LayerShrink is one block's part of a plan. The sizes before and after
// are informative (Shrink checks the "before" ones against the model when
// they are set); the Remove lists are what Shrink acts on.
type LayerShrink struct {
	Block          int   `json:"block"`
	FFN            int   `json:"ffn,omitempty"`
	FFNAfter       int   `json:"ffn_after,omitempty"`
	RemoveChannels []int `json:"remove_channels,omitempty"`
	Heads          int   `json:"heads,omitempty"`
	KVHeads        int   `json:"kv_heads,omitempty"`
	HeadDim        int   `json:"head_dim,omitempty"`
	HeadsAfter     int   `json:"heads_after,omitempty"`
	KVHeadsAfter   int   `json:"kv_heads_after,omitempty"`
	// RemoveKVGroups lists KV heads g to remove, each with query heads
	// g·r … g·r+r−1 (r = Heads/KVHeads).
	RemoveKVGroups []int `json:"remove_kv_groups,omitempty"`
}

// Shrink removes FFN channels and attention heads as the plan says,
// really shrinking the model: up projections lose output columns, the
// down projection input rows, q/k/v lose the output slices of the removed
// heads and o_proj their input rows, biases are sliced, and every shape
// that states a width — Reshape targets with the FFN size or head counts,
// the KV-cache inputs' and outputs' head dimension — is rewritten. The
// result equals the original model with those channels' and heads'
// contributions zeroed, at the smaller size. Nothing is changed when the
// plan does not fit the model (see FindWidths for the patterns supported).
func Shrink(m *graph.Model, d *graph.Decoder, plan *ShrinkPlan) error {
	if len(d.Branches) > 0 {
		return fmt.Errorf("shrink: merged decoders (an If with two copies of the blocks) are not supported")
	}
	if plan.Blocks != 0 && plan.Blocks != len(d.Blocks) {
		return fmt.Errorf("shrink: the plan is for %d blocks, the model has %d", plan.Blocks, len(d.Blocks))
	}
	widths := FindWidths(m, d)
	if err := checkPlan(widths, plan); err != nil {
		return err
	}
	s := newWeightScope(m, d)
	touched := map[string]bool{}
	for _, ls := range plan.Layers {
		bw := widths[ls.Block]
		if len(ls.RemoveChannels) > 0 {
			if err := s.shrinkMLP(m, bw.MLP, complement(bw.MLP.FFN, ls.RemoveChannels)); err != nil {
				return fmt.Errorf("shrink: block %d MLP: %w", ls.Block, err)
			}
		}
		if len(ls.RemoveKVGroups) > 0 {
			if err := s.shrinkAttn(m, bw.Attn, complement(bw.Attn.KVHeads, ls.RemoveKVGroups)); err != nil {
				return fmt.Errorf("shrink: block %d attention: %w", ls.Block, err)
			}
		}
		if len(ls.RemoveChannels)+len(ls.RemoveKVGroups) > 0 {
			for _, n := range d.Blocks[ls.Block].Nodes {
				for _, o := range n.GetOutput() {
					touched[o] = true
				}
			}
		}
	}
	// Declared shapes of the rewritten tensors are stale; onnxruntime
	// infers them again.
	g := s.ix.Graph
	g.ValueInfo = slices.DeleteFunc(g.ValueInfo, func(vi *onnxpb.ValueInfoProto) bool { return touched[vi.GetName()] })
	DeadCode(m)
	return nil
}

// checkPlan validates the whole plan before anything changes.
func checkPlan(widths []*BlockWidth, plan *ShrinkPlan) error {
	seen := map[int]bool{}
	for _, ls := range plan.Layers {
		if ls.Block < 0 || ls.Block >= len(widths) {
			return fmt.Errorf("shrink: block %d out of range: the model has blocks 0..%d", ls.Block, len(widths)-1)
		}
		if seen[ls.Block] {
			return fmt.Errorf("shrink: block %d listed twice", ls.Block)
		}
		seen[ls.Block] = true
		bw := widths[ls.Block]
		if len(ls.RemoveChannels) > 0 || ls.FFN != 0 {
			if bw.MLP == nil {
				return fmt.Errorf("shrink: %w", bw.MLPErr)
			}
			if ls.FFN != 0 && ls.FFN != bw.MLP.FFN {
				return fmt.Errorf("shrink: the plan says block %d has %d FFN channels, the model has %d", ls.Block, ls.FFN, bw.MLP.FFN)
			}
			if err := checkIndices(ls.RemoveChannels, bw.MLP.FFN, "FFN channel"); err != nil {
				return fmt.Errorf("shrink: block %d: %w", ls.Block, err)
			}
			if len(ls.RemoveChannels) >= bw.MLP.FFN {
				return fmt.Errorf("shrink: block %d: removing all %d FFN channels would leave no MLP", ls.Block, bw.MLP.FFN)
			}
		}
		if len(ls.RemoveKVGroups) > 0 || ls.KVHeads != 0 {
			if bw.Attn == nil {
				return fmt.Errorf("shrink: %w", bw.AttnErr)
			}
			a := bw.Attn
			if (ls.KVHeads != 0 && ls.KVHeads != a.KVHeads) || (ls.Heads != 0 && ls.Heads != a.Heads) {
				return fmt.Errorf("shrink: the plan says block %d has %d heads over %d KV heads, the model has %d over %d", ls.Block, ls.Heads, ls.KVHeads, a.Heads, a.KVHeads)
			}
			if err := checkIndices(ls.RemoveKVGroups, a.KVHeads, "KV group"); err != nil {
				return fmt.Errorf("shrink: block %d: %w", ls.Block, err)
			}
			if len(ls.RemoveKVGroups) >= a.KVHeads {
				return fmt.Errorf("shrink: block %d: removing %d of %d KV groups would leave no attention heads", ls.Block, len(ls.RemoveKVGroups), a.KVHeads)
			}
		}
	}
	return nil
}

func checkIndices(idx []int, n int, what string) error {
	seen := map[int]bool{}
	for _, i := range idx {
		if i < 0 || i >= n {
			return fmt.Errorf("%s %d out of range 0..%d", what, i, n-1)
		}
		if seen[i] {
			return fmt.Errorf("%s %d listed twice", what, i)
		}
		seen[i] = true
	}
	return nil
}

// complement returns 0..n-1 without remove, ascending.
func complement(n int, remove []int) []int {
	var keep []int
	for i := range n {
		if !slices.Contains(remove, i) {
			keep = append(keep, i)
		}
	}
	return keep
}

func (s *weightScope) shrinkMLP(m *graph.Model, mw *MLPWidth, keep []int) error {
	for _, up := range mw.Up {
		if err := sliceLinear(m, up, keep, nil); err != nil {
			return err
		}
	}
	if err := sliceLinear(m, mw.Down, nil, keep); err != nil {
		return err
	}
	for _, b := range mw.Biases {
		if err := sliceVector(m, s.initializer(b), keep); err != nil {
			return err
		}
	}
	for _, r := range mw.Reshapes {
		if err := s.setShapeLast(r, int64(len(keep))); err != nil {
			return err
		}
	}
	mw.FFN = len(keep)
	return nil
}

func (s *weightScope) shrinkAttn(m *graph.Model, a *AttnWidth, keepGroups []int) error {
	rep, hd := a.Heads/a.KVHeads, a.HeadDim
	var qf, kvf []int // kept features of q (and o's input) and of k, v
	for _, g := range keepGroups {
		for h := g * rep; h < (g+1)*rep; h++ {
			for j := range hd {
				qf = append(qf, h*hd+j)
			}
		}
		for j := range hd {
			kvf = append(kvf, g*hd+j)
		}
	}
	for _, c := range []struct {
		w    *LinearWeight
		bias string
		keep []int
	}{{a.Q, a.QBias, qf}, {a.K, a.KBias, kvf}, {a.V, a.VBias, kvf}} {
		if err := sliceLinear(m, c.w, c.keep, nil); err != nil {
			return err
		}
		if c.bias != "" {
			if err := sliceVector(m, s.initializer(c.bias), c.keep); err != nil {
				return err
			}
		}
	}
	if err := sliceLinear(m, a.O, nil, qf); err != nil {
		return err
	}
	heads, kv := int64(len(keepGroups)*rep), int64(len(keepGroups))
	// The inputs of these Reshapes are [b, s, n·d] (split), [b, s, heads,
	// d] (merge) and [b, kv, rep, t, d] (repeat_kv): 0 copies the batch
	// and sequence dims, so constant targets replace torch's computed ones.
	s.setShape(a.split[0], []int64{0, 0, heads, int64(hd)})
	s.setShape(a.split[1], []int64{0, 0, kv, int64(hd)})
	s.setShape(a.split[2], []int64{0, 0, kv, int64(hd)})
	s.setShape(a.merge, []int64{0, 0, heads * int64(hd)})
	for _, r := range a.repeat {
		s.setShape(r, []int64{0, heads, -1, int64(hd)})
	}
	g := s.ix.Graph
	for _, vi := range append(slices.Clone(g.GetInput()), g.GetOutput()...) {
		if !slices.Contains(a.kvIO, vi.GetName()) {
			continue
		}
		dims := vi.GetType().GetTensorType().GetShape().GetDim()
		if len(dims) == 4 && dims[1].GetDimValue() == int64(a.KVHeads) {
			dims[1].Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: kv}
		}
	}
	a.Heads, a.KVHeads = int(heads), int(kv)
	return nil
}

// sliceLinear keeps the given output units and input features of w (nil:
// all) and stores the smaller matrix in w's layout.
func sliceLinear(m *graph.Model, w *LinearWeight, keepOut, keepIn []int) error {
	raw, err := tensorRaw(m, w.Tensor)
	if err != nil {
		return err
	}
	if keepOut == nil {
		keepOut = complement(w.Out, nil)
	}
	if keepIn == nil {
		keepIn = complement(w.In, nil)
	}
	size := graph.DTypeSize(w.Tensor.GetDataType())
	nw := LinearWeight{In: len(keepIn), Out: len(keepOut), OutMajor: w.OutMajor}
	out := make([]byte, nw.In*nw.Out*size)
	for oi, o := range keepOut {
		for ii, i := range keepIn {
			copy(out[nw.At(oi, ii)*size:(nw.At(oi, ii)+1)*size], raw[w.At(o, i)*size:])
		}
	}
	dims := []int64{int64(nw.In), int64(nw.Out)}
	if w.OutMajor {
		dims = []int64{int64(nw.Out), int64(nw.In)}
	}
	setRaw(w.Tensor, out, dims)
	w.In, w.Out = nw.In, nw.Out
	return nil
}

// sliceVector keeps the given entries along t's last axis (a bias [n] or
// [1, n]).
func sliceVector(m *graph.Model, t *onnxpb.TensorProto, keep []int) error {
	raw, err := tensorRaw(m, t)
	if err != nil {
		return err
	}
	size := graph.DTypeSize(t.GetDataType())
	out := make([]byte, 0, len(keep)*size)
	for _, i := range keep {
		out = append(out, raw[i*size:(i+1)*size]...)
	}
	dims := slices.Clone(t.GetDims())
	dims[len(dims)-1] = int64(len(keep))
	setRaw(t, out, dims)
	return nil
}

// setShape points a Reshape at a new int64 initializer holding shape.
func (s *weightScope) setShape(n *onnxpb.NodeProto, shape []int64) {
	n.Input[1] = s.newInts(graph.NodeLabel(n)+"/onnxprune_shape", shape)
}

// newInts adds a 1-D int64 initializer under a name not yet in the graph.
func (s *weightScope) newInts(base string, v []int64) string {
	g := s.ix.Graph
	name := base
	for k := 1; s.ix.Producer[name] != nil || s.initializer(name) != nil || s.ix.Inputs[name] != nil; k++ {
		name = fmt.Sprintf("%s_%d", base, k)
	}
	t := &onnxpb.TensorProto{Name: proto.String(name), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)),
		Dims: []int64{int64(len(v))}, Int64Data: slices.Clone(v)}
	g.Initializer = append(g.Initializer, t)
	s.ix.Initializers[name] = t
	return name
}

// setShapeLast changes the last entry of a Reshape's target shape: a
// constant target is replaced; a Concat of parts (torch's computed
// shapes) gets a new constant last part — on a copy of the Concat when
// something else reads it.
func (s *weightScope) setShapeLast(n *onnxpb.NodeProto, v int64) error {
	vals, known, ok := s.shapeVec(n.GetInput()[1])
	if ok && !slices.Contains(known, false) {
		vals[len(vals)-1] = v
		s.setShape(n, vals)
		return nil
	}
	cat := s.ix.Producer[n.GetInput()[1]]
	if cat == nil || cat.GetOpType() != "Concat" || len(cat.GetInput()) == 0 {
		return fmt.Errorf("%s: cannot rewrite its target shape", graph.NodeLabel(n))
	}
	last := cat.GetInput()[len(cat.GetInput())-1]
	pv, pk, ok := s.shapeVec(last)
	if !ok || slices.Contains(pk, false) {
		return fmt.Errorf("%s: the last part of its target shape is computed", graph.NodeLabel(n))
	}
	if len(s.ix.Consumers[cat.GetOutput()[0]]) > 1 {
		c := proto.CloneOf(cat)
		c.Name = proto.String(graph.NodeLabel(cat) + "/onnxprune")
		c.Output = []string{cat.GetOutput()[0] + "/onnxprune"}
		g := s.ix.Graph
		i := slices.Index(g.Node, cat)
		g.Node = slices.Insert(g.Node, i+1, c)
		n.Input[1] = c.Output[0]
		cat = c
	}
	pv[len(pv)-1] = v
	cat.Input[len(cat.Input)-1] = s.newInts(graph.NodeLabel(cat)+"/onnxprune_part", pv)
	return nil
}
