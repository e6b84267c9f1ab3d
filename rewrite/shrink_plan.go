package rewrite

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/onnxprune/onnxprune/graph"
)

// Importance criteria for width pruning.
const (
	// CriterionMagnitude ranks a unit by the weights that read and write
	// it: an FFN channel by ‖down row j‖₂ times ‖col j‖₂ of every up
	// projection; a KV group by Σ over its query features of ‖q col‖₂·
	// ‖o row‖₂ plus Σ over its KV features of ‖k col‖₂·‖v col‖₂.
	CriterionMagnitude = "magnitude"
	// CriterionActivation ranks by what the unit contributes on
	// calibration text: mean |a_j| of the FFN intermediate times ‖down row
	// j‖₂ for a channel, Σ over a group's query features of mean |ctx_f|
	// (o_proj's input) times ‖o row f‖₂ for a KV group.
	CriterionActivation = "activation"
)

// ShrinkOptions say how much width to remove and how to choose it.
type ShrinkOptions struct {
	// FFNRatio is the fraction of FFN channels to remove, in [0, 1): from
	// every block, or with FFNGlobal from all blocks together (blocks
	// then lose different numbers, each keeping at least one).
	FFNRatio  float64
	FFNGlobal bool
	// RemoveKVGroups is the number of KV groups (a KV head and its query
	// heads) to remove from every block.
	RemoveKVGroups int
	Criterion      string // CriterionMagnitude (default) or CriterionActivation
	// Blocks restricts shrinking to these blocks (nil: all that stay).
	Blocks []int
	// RemoveBlocks are removed as well (depth pruning, after shrinking);
	// they are not shrunk.
	RemoveBlocks []int
	// Activations holds, for CriterionActivation, the mean |x| per
	// feature of each tensor ShrinkTaps names.
	Activations map[string][]float64
}

// Validate checks the options alone.
func (o ShrinkOptions) Validate() error {
	switch {
	case math.IsNaN(o.FFNRatio) || o.FFNRatio < 0 || o.FFNRatio >= 1:
		return fmt.Errorf("shrink: FFN ratio %g outside [0, 1)", o.FFNRatio)
	case o.RemoveKVGroups < 0:
		return fmt.Errorf("shrink: cannot remove %d KV groups", o.RemoveKVGroups)
	}
	switch o.Criterion {
	case "", CriterionMagnitude, CriterionActivation:
	default:
		return fmt.Errorf("shrink: criterion %q: want %s or %s", o.Criterion, CriterionMagnitude, CriterionActivation)
	}
	return nil
}

// selected returns the widths of the blocks to shrink, checking that
// their patterns support what is asked.
func (o ShrinkOptions) selected(widths []*BlockWidth) ([]*BlockWidth, error) {
	seen := map[int]bool{}
	for _, b := range o.RemoveBlocks {
		switch {
		case b < 0 || b >= len(widths):
			return nil, fmt.Errorf("shrink: block %d out of range: the model has blocks 0..%d", b, len(widths)-1)
		case seen[b]:
			return nil, fmt.Errorf("shrink: block %d listed twice for removal", b)
		case slices.Contains(o.Blocks, b):
			return nil, fmt.Errorf("shrink: block %d is both removed and shrunk", b)
		}
		seen[b] = true
	}
	if len(seen) >= len(widths) {
		return nil, fmt.Errorf("shrink: removing all %d blocks would leave no decoder", len(widths))
	}
	var out []*BlockWidth
	for _, bw := range widths {
		if o.Blocks != nil && !slices.Contains(o.Blocks, bw.Block) || seen[bw.Block] {
			continue
		}
		if o.FFNRatio > 0 && bw.MLP == nil {
			return nil, fmt.Errorf("shrink: %w", bw.MLPErr)
		}
		if o.RemoveKVGroups > 0 {
			if bw.Attn == nil {
				return nil, fmt.Errorf("shrink: %w", bw.AttnErr)
			}
			if o.RemoveKVGroups >= bw.Attn.KVHeads {
				return nil, fmt.Errorf("shrink: block %d has %d KV groups (%d heads): removing %d would leave no attention heads",
					bw.Block, bw.Attn.KVHeads, bw.Attn.Heads, o.RemoveKVGroups)
			}
		}
		out = append(out, bw)
	}
	for _, b := range o.Blocks {
		if b < 0 || b >= len(widths) {
			return nil, fmt.Errorf("shrink: block %d out of range: the model has blocks 0..%d", b, len(widths)-1)
		}
	}
	return out, nil
}

// ShrinkTaps names the activations CriterionActivation needs, with their
// feature counts: each shrunk MLP's intermediate and each shrunk
// attention's o_proj input.
func ShrinkTaps(widths []*BlockWidth, o ShrinkOptions) (map[string]int, error) {
	sel, err := o.selected(widths)
	if err != nil {
		return nil, err
	}
	taps := map[string]int{}
	for _, bw := range sel {
		if o.FFNRatio > 0 {
			taps[bw.MLP.Act] = bw.MLP.FFN
		}
		if o.RemoveKVGroups > 0 {
			taps[bw.Attn.Ctx] = bw.Attn.Heads * bw.Attn.HeadDim
		}
	}
	return taps, nil
}

// PlanShrink scores the FFN channels and KV groups of the selected blocks
// and plans the removal of the lowest-scoring ones.
func PlanShrink(m *graph.Model, widths []*BlockWidth, o ShrinkOptions) (*ShrinkPlan, error) {
	if o.Criterion == "" {
		o.Criterion = CriterionMagnitude
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	sel, err := o.selected(widths)
	if err != nil {
		return nil, err
	}
	plan := &ShrinkPlan{Criterion: o.Criterion, FFNRatio: o.FFNRatio, FFNGlobal: o.FFNGlobal, RemoveKVGroups: o.RemoveKVGroups,
		Blocks: len(widths), RemoveBlocks: slices.Sorted(slices.Values(o.RemoveBlocks))}
	ffnScores := map[int][]float64{}
	for _, bw := range sel {
		ls := LayerShrink{Block: bw.Block}
		if bw.MLP != nil {
			ls.FFN, ls.FFNAfter = bw.MLP.FFN, bw.MLP.FFN
		}
		if bw.Attn != nil {
			ls.Heads, ls.KVHeads, ls.HeadDim = bw.Attn.Heads, bw.Attn.KVHeads, bw.Attn.HeadDim
			ls.HeadsAfter, ls.KVHeadsAfter = bw.Attn.Heads, bw.Attn.KVHeads
		}
		if o.FFNRatio > 0 {
			sc, err := channelScores(m, bw.MLP, o)
			if err != nil {
				return nil, fmt.Errorf("shrink: block %d: %w", bw.Block, err)
			}
			ffnScores[bw.Block] = sc
			if !o.FFNGlobal {
				n := min(int(math.Round(o.FFNRatio*float64(bw.MLP.FFN))), bw.MLP.FFN-1)
				ls.RemoveChannels = lowest(sc, n)
			}
		}
		if o.RemoveKVGroups > 0 {
			sc, err := groupScores(m, bw.Attn, o)
			if err != nil {
				return nil, fmt.Errorf("shrink: block %d: %w", bw.Block, err)
			}
			ls.RemoveKVGroups = lowest(sc, o.RemoveKVGroups)
			ls.KVHeadsAfter = ls.KVHeads - o.RemoveKVGroups
			ls.HeadsAfter = ls.KVHeadsAfter * (ls.Heads / ls.KVHeads)
		}
		plan.Layers = append(plan.Layers, ls)
	}
	if o.FFNRatio > 0 && o.FFNGlobal {
		globalFFN(plan, ffnScores, o.FFNRatio)
	}
	for i := range plan.Layers {
		plan.Layers[i].FFNAfter = plan.Layers[i].FFN - len(plan.Layers[i].RemoveChannels)
	}
	return plan, nil
}

// globalFFN removes the fraction ratio of all selected channels, ranked
// together by their score relative to their block's mean (raw scores of
// different blocks live on different scales), keeping at least one
// channel per block.
func globalFFN(plan *ShrinkPlan, scores map[int][]float64, ratio float64) {
	type unit struct {
		layer, ch int
		score     float64
	}
	var all []unit
	total := 0
	for li, ls := range plan.Layers {
		sc := scores[ls.Block]
		mean := 0.0
		for _, v := range sc {
			mean += v
		}
		mean /= float64(len(sc))
		for j, v := range sc {
			all = append(all, unit{li, j, v / max(mean, 1e-300)})
		}
		total += len(sc)
	}
	slices.SortFunc(all, func(a, b unit) int {
		return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.layer, b.layer), cmp.Compare(a.ch, b.ch))
	})
	n := int(math.Round(ratio * float64(total)))
	for _, u := range all {
		if n == 0 {
			break
		}
		ls := &plan.Layers[u.layer]
		if len(ls.RemoveChannels) >= ls.FFN-1 {
			continue
		}
		ls.RemoveChannels = append(ls.RemoveChannels, u.ch)
		n--
	}
	for i := range plan.Layers {
		slices.Sort(plan.Layers[i].RemoveChannels)
	}
}

// lowest returns the indices of the n smallest scores, ascending by index
// (ties: the lower index is removed first).
func lowest(scores []float64, n int) []int {
	idx := complement(len(scores), nil)
	slices.SortFunc(idx, func(a, b int) int { return cmp.Or(cmp.Compare(scores[a], scores[b]), cmp.Compare(a, b)) })
	out := slices.Clone(idx[:n])
	slices.Sort(out)
	return out
}

func channelScores(m *graph.Model, mw *MLPWidth, o ShrinkOptions) ([]float64, error) {
	down, err := inputNorms(m, mw.Down)
	if err != nil {
		return nil, err
	}
	sc := slices.Clone(down)
	if o.Criterion == CriterionActivation {
		act, err := activations(o, mw.Act, mw.FFN)
		if err != nil {
			return nil, err
		}
		for j := range sc {
			sc[j] *= act[j]
		}
		return sc, nil
	}
	for _, up := range mw.Up {
		n, err := outputNorms(m, up)
		if err != nil {
			return nil, err
		}
		for j := range sc {
			sc[j] *= n[j]
		}
	}
	return sc, nil
}

func groupScores(m *graph.Model, a *AttnWidth, o ShrinkOptions) ([]float64, error) {
	on, err := inputNorms(m, a.O)
	if err != nil {
		return nil, err
	}
	qf := make([]float64, a.Heads*a.HeadDim) // per query feature
	kvf := make([]float64, a.KVHeads*a.HeadDim)
	if o.Criterion == CriterionActivation {
		act, err := activations(o, a.Ctx, len(qf))
		if err != nil {
			return nil, err
		}
		for f := range qf {
			qf[f] = act[f] * on[f]
		}
	} else {
		qn, err := outputNorms(m, a.Q)
		if err != nil {
			return nil, err
		}
		kn, err := outputNorms(m, a.K)
		if err != nil {
			return nil, err
		}
		vn, err := outputNorms(m, a.V)
		if err != nil {
			return nil, err
		}
		for f := range qf {
			qf[f] = qn[f] * on[f]
		}
		for f := range kvf {
			kvf[f] = kn[f] * vn[f]
		}
	}
	rep := a.Heads / a.KVHeads
	sc := make([]float64, a.KVHeads)
	for g := range sc {
		for f := g * rep * a.HeadDim; f < (g+1)*rep*a.HeadDim; f++ {
			sc[g] += qf[f]
		}
		for f := g * a.HeadDim; f < (g+1)*a.HeadDim; f++ {
			sc[g] += kvf[f]
		}
	}
	return sc, nil
}

func activations(o ShrinkOptions, name string, n int) ([]float64, error) {
	act, ok := o.Activations[name]
	if !ok {
		return nil, fmt.Errorf("no calibration activations for %q", name)
	}
	if len(act) != n {
		return nil, fmt.Errorf("%d activation statistics for %q, want %d", len(act), name, n)
	}
	return act, nil
}

// outputNorms returns ‖W[:, o]‖₂ for every output unit o.
func outputNorms(m *graph.Model, w *LinearWeight) ([]float64, error) {
	v, err := floatValues(m, w.Tensor)
	if err != nil {
		return nil, err
	}
	n := make([]float64, w.Out)
	for o := range w.Out {
		for i := range w.In {
			x := v[w.At(o, i)]
			n[o] += x * x
		}
		n[o] = math.Sqrt(n[o])
	}
	return n, nil
}

// inputNorms returns ‖W[i, :]‖₂ for every input feature i.
func inputNorms(m *graph.Model, w *LinearWeight) ([]float64, error) {
	v, err := floatValues(m, w.Tensor)
	if err != nil {
		return nil, err
	}
	n := make([]float64, w.In)
	for o := range w.Out {
		for i := range w.In {
			x := v[w.At(o, i)]
			n[i] += x * x
		}
	}
	for i := range n {
		n[i] = math.Sqrt(n[i])
	}
	return n, nil
}
