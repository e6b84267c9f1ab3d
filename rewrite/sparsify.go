package rewrite

import (
	"cmp"
	"fmt"
	"math"
	"path"
	"slices"
	"strings"

	"github.com/onnxprune/onnxprune/graph"
)

// Sparsification methods (DESIGN.md §5).
const (
	// MethodMagnitude scores a weight by |W_ij|.
	MethodMagnitude = "magnitude"
	// MethodWanda scores a weight by |W_ij|·‖X_j‖₂, the magnitude times
	// the norm of the input feature it multiplies over calibration tokens
	// (Sun et al. 2023), and ranks within each output unit.
	MethodWanda = "wanda"
)

// SparsifyOptions say which weights to zero.
type SparsifyOptions struct {
	Method string // MethodMagnitude (default) or MethodWanda
	// Ratio is the fraction of each ranking's weights to zero, in [0, 1):
	// per matrix for magnitude (or over all selected matrices with
	// Global), per output unit for Wanda. Unused with a pattern.
	Ratio  float64
	Global bool
	// N:M (M > 0): in every M consecutive weights along the input
	// dimension of an output unit, keep the N best-scoring.
	N, M int
	// Which matrices: by default the linear layers inside the decoder
	// blocks; embeddings and the LM head on request. Tensors, when set,
	// selects exactly the named weights (path.Match patterns allowed),
	// embeddings and head included if named.
	IncludeEmbeddings, IncludeHead bool
	Tensors                        []string
	// Norms holds, for Wanda, ‖X_j‖₂ over the calibration tokens of each
	// activation tensor multiplying a selected weight (LinearWeight.Inputs),
	// one value per input feature.
	Norms map[string][]float64
}

// Pattern renders the N:M pattern ("" when none).
func (o SparsifyOptions) Pattern() string {
	if o.M == 0 {
		return ""
	}
	return fmt.Sprintf("%d:%d", o.N, o.M)
}

// Validate checks the options alone, before any model is read.
func (o SparsifyOptions) Validate() error {
	switch o.Method {
	case "", MethodMagnitude, MethodWanda:
	default:
		return fmt.Errorf("sparsify: method %q: want %s or %s", o.Method, MethodMagnitude, MethodWanda)
	}
	if o.M != 0 || o.N != 0 {
		if o.M <= 0 || o.N <= 0 || o.N >= o.M {
			return fmt.Errorf("sparsify: pattern %d:%d: want N:M with 0 < N < M (2:4 keeps 2 of every 4)", o.N, o.M)
		}
		if o.Ratio != 0 {
			return fmt.Errorf("sparsify: pattern %d:%d fixes the sparsity at %.3g; give a ratio or a pattern, not both", o.N, o.M, 1-float64(o.N)/float64(o.M))
		}
		if o.Global {
			return fmt.Errorf("sparsify: an N:M pattern is per group of weights; it cannot be ranked globally")
		}
	}
	if math.IsNaN(o.Ratio) || o.Ratio < 0 || o.Ratio >= 1 {
		return fmt.Errorf("sparsify: ratio %g outside [0, 1)", o.Ratio)
	}
	if o.Global && o.Method == MethodWanda {
		return fmt.Errorf("sparsify: Wanda ranks the weights of each output unit; a global ranking applies to magnitude only")
	}
	return nil
}

// SparsityReport says what Sparsify zeroed.
type SparsityReport struct {
	Method  string           `json:"method"`
	Ratio   float64          `json:"ratio"`
	Pattern string           `json:"pattern,omitempty"`
	Global  bool             `json:"global"`
	Tensors []TensorSparsity `json:"tensors"`
	// Over the selected tensors.
	Params   int64   `json:"params"`
	Zeros    int64   `json:"zeros"`
	Sparsity float64 `json:"sparsity"`
	// Over every parameter of the model (graph.TotalParams).
	ModelParams   int64   `json:"model_params"`
	ModelSparsity float64 `json:"model_sparsity"`
}

// TensorSparsity is one matrix's line of the report. Zeros counts every
// zero after pruning: the Pruned entries the method selected plus weights
// that were zero already and were kept.
type TensorSparsity struct {
	Name        string  `json:"name"`
	Role        string  `json:"role"`
	Block       int     `json:"block"`
	Shape       []int64 `json:"shape"`
	Layout      string  `json:"layout"`
	Params      int64   `json:"params"`
	ZerosBefore int64   `json:"zeros_before"`
	Pruned      int64   `json:"pruned"`
	Zeros       int64   `json:"zeros"`
	Sparsity    float64 `json:"sparsity"`
}

// SparsifyTargets resolves the options' selection to the weights
// Sparsify will prune. Wanda needs norms for their Inputs.
func SparsifyTargets(m *graph.Model, d *graph.Decoder, o SparsifyOptions) ([]*LinearWeight, error) {
	all := LinearWeights(m, d, true, true)
	tied := map[string]bool{}
	for _, w := range all {
		if w.Role == RoleEmbedding && slices.ContainsFunc(d.LMHead.Weights, func(s string) bool { return s == w.Name }) {
			tied[w.Name] = true
		}
	}
	if len(o.Tensors) > 0 {
		picked := map[string]bool{}
		for _, sel := range o.Tensors {
			n := 0
			for _, w := range all {
				ok := w.Name == sel
				if strings.ContainsAny(sel, "*?[") {
					ok, _ = path.Match(sel, w.Name)
				}
				if ok {
					picked[w.Name] = true
					n++
				}
			}
			if n > 0 {
				continue
			}
			if strings.ContainsAny(sel, "*?[") {
				return nil, fmt.Errorf("sparsify: no linear-layer weight matches %q", sel)
			}
			if m.Initializer(sel) != nil || newWeightScope(m, d).initializer(sel) != nil {
				return nil, fmt.Errorf("sparsify: tensor %q is not a linear-layer weight (a 2-D MatMul/Gemm matrix or embedding table)", sel)
			}
			return nil, fmt.Errorf("sparsify: no tensor %q in the model", sel)
		}
		var out []*LinearWeight
		for _, w := range all {
			if picked[w.Name] {
				out = append(out, w)
			}
		}
		return out, nil
	}
	var out []*LinearWeight
	for _, w := range all {
		switch {
		case tied[w.Name]:
			if o.IncludeEmbeddings != o.IncludeHead {
				return nil, fmt.Errorf("sparsify: the LM head is tied to the embedding %q (one tensor): include both or neither", w.Name)
			}
			if o.IncludeEmbeddings {
				out = append(out, w)
			}
		case w.Role == RoleBlock,
			w.Role == RoleEmbedding && o.IncludeEmbeddings,
			w.Role == RoleHead && o.IncludeHead:
			out = append(out, w)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("sparsify: no linear-layer weights selected")
	}
	return out, nil
}

// Sparsify zeros weights of the decoder's linear layers in place and
// reports the sparsity achieved. A matrix with nothing to prune is left
// untouched, byte for byte; in the others only the pruned entries change
// (to +0), so the rewrite is lossless for the weights kept, float16 and
// bfloat16 included. Shapes and the graph do not change: dense kernels
// still multiply the zeros, so this makes a model smaller only once
// compressed, and faster only on kernels that exploit the pattern.
func Sparsify(m *graph.Model, d *graph.Decoder, o SparsifyOptions) (*SparsityReport, error) {
	if o.Method == "" {
		o.Method = MethodMagnitude
	}
	if err := o.Validate(); err != nil {
		return nil, err
	}
	targets, err := SparsifyTargets(m, d, o)
	if err != nil {
		return nil, err
	}
	vals := make([][]float64, len(targets))
	masks := make([][]bool, len(targets))
	for i, w := range targets {
		if vals[i], err = floatValues(m, w.Tensor); err != nil {
			return nil, fmt.Errorf("sparsify: %w", err)
		}
		masks[i] = make([]bool, len(vals[i]))
	}

	switch {
	case o.M > 0 || o.Method == MethodWanda:
		for i, w := range targets {
			norms, err := wandaNorms(w, o)
			if err != nil {
				return nil, err
			}
			score := func(out, in int) float64 { return math.Abs(vals[i][w.At(out, in)]) * norms[in] }
			if norms == nil {
				score = func(out, in int) float64 { return math.Abs(vals[i][w.At(out, in)]) }
			}
			if o.M > 0 {
				pruneNM(w, score, o.N, o.M, masks[i])
			} else {
				prunePerRow(w, score, o.Ratio, masks[i])
			}
		}
	case o.Global:
		var total int64
		keys := make([][]uint32, len(targets))
		for i := range targets {
			keys[i] = magnitudeKeys(vals[i])
			total += int64(len(keys[i]))
		}
		markSmallest(keys, int64(math.Round(o.Ratio*float64(total))), masks)
	default:
		for i := range targets {
			keys := [][]uint32{magnitudeKeys(vals[i])}
			markSmallest(keys, int64(math.Round(o.Ratio*float64(len(vals[i])))), masks[i:i+1])
		}
	}

	rep := &SparsityReport{Method: o.Method, Ratio: o.Ratio, Pattern: o.Pattern(), Global: o.Global}
	if o.M > 0 {
		rep.Ratio = 1 - float64(o.N)/float64(o.M)
	}
	for i, w := range targets {
		ts := TensorSparsity{Name: w.Name, Role: w.Role, Block: w.Block, Shape: slices.Clone(w.Tensor.GetDims()),
			Layout: w.Layout(), Params: int64(len(vals[i]))}
		for j, v := range vals[i] {
			if v == 0 {
				ts.ZerosBefore++
			}
			if masks[i][j] {
				ts.Pruned++
			}
			if v == 0 || masks[i][j] {
				ts.Zeros++
			}
		}
		ts.Sparsity = float64(ts.Zeros) / float64(max(ts.Params, 1))
		if ts.Pruned > 0 {
			if err := zeroEntries(m, w, masks[i]); err != nil {
				return nil, fmt.Errorf("sparsify: %w", err)
			}
		}
		rep.Tensors = append(rep.Tensors, ts)
		rep.Params += ts.Params
		rep.Zeros += ts.Zeros
	}
	rep.Sparsity = float64(rep.Zeros) / float64(max(rep.Params, 1))
	rep.ModelParams = graph.TotalParams(m)
	rep.ModelSparsity = float64(rep.Zeros) / float64(max(rep.ModelParams, 1))
	return rep, nil
}

// wandaNorms combines the input-feature norms of every activation that
// multiplies w (a weight shared by two products sees both: ‖X_j‖² adds).
// nil means plain magnitude: the method is magnitude, or w is an
// embedding table, which multiplies no activation.
func wandaNorms(w *LinearWeight, o SparsifyOptions) ([]float64, error) {
	if o.Method != MethodWanda || len(w.Inputs) == 0 {
		return nil, nil
	}
	sq := make([]float64, w.In)
	for _, in := range w.Inputs {
		n, ok := o.Norms[in]
		if !ok {
			return nil, fmt.Errorf("sparsify: wanda: no calibration norms for %q, the input of %s", in, w.Name)
		}
		if len(n) != w.In {
			return nil, fmt.Errorf("sparsify: wanda: %d norms for %q, but %s has %d input features", len(n), in, w.Name, w.In)
		}
		for j, x := range n {
			sq[j] += x * x
		}
	}
	for j := range sq {
		sq[j] = math.Sqrt(sq[j])
	}
	return sq, nil
}

// prunePerRow marks, in every output unit, the round(ratio·In) input
// weights with the lowest scores (ties: the lower input index goes
// first, so results do not depend on the sort).
func prunePerRow(w *LinearWeight, score func(o, i int) float64, ratio float64, mask []bool) {
	k := int(math.Round(ratio * float64(w.In)))
	if k == 0 {
		return
	}
	idx := make([]int, w.In)
	s := make([]float64, w.In)
	for o := range w.Out {
		for i := range idx {
			idx[i], s[i] = i, score(o, i)
		}
		slices.SortFunc(idx, func(a, b int) int {
			return cmp.Or(cmp.Compare(s[a], s[b]), cmp.Compare(a, b))
		})
		for _, i := range idx[:k] {
			mask[w.At(o, i)] = true
		}
	}
}

// pruneNM keeps, in every group of m consecutive input features of every
// output unit, the n best-scoring weights. A last group shorter than m
// keeps min(n, its length), so "at most n nonzeros in any m-group" holds
// for every group, the short one included.
func pruneNM(w *LinearWeight, score func(o, i int) float64, n, m int, mask []bool) {
	idx := make([]int, 0, m)
	s := make([]float64, m)
	for o := range w.Out {
		for g := 0; g < w.In; g += m {
			idx = idx[:0]
			for i := g; i < min(g+m, w.In); i++ {
				idx = append(idx, i)
				s[i-g] = score(o, i)
			}
			slices.SortFunc(idx, func(a, b int) int {
				return cmp.Or(cmp.Compare(s[b-g], s[a-g]), cmp.Compare(a, b))
			})
			for _, i := range idx[min(n, len(idx)):] {
				mask[w.At(o, i)] = true
			}
		}
	}
}

// magnitudeKeys maps |v| to the bits of its float32 value: for
// non-negative floats the bit patterns order as the values do, so
// markSmallest can select by radix.
func magnitudeKeys(v []float64) []uint32 {
	k := make([]uint32, len(v))
	for i, x := range v {
		k[i] = math.Float32bits(float32(math.Abs(x)))
	}
	return k
}

// markSmallest marks the k smallest keys across all slices, breaking ties
// by position (earlier slice, then earlier index, first). It selects by a
// two-level radix histogram (16 bits each), O(n) with no copy or sort of
// the values, which matters for a global ranking over a whole model.
func markSmallest(keys [][]uint32, k int64, mask [][]bool) {
	var total int64
	for _, ks := range keys {
		total += int64(len(ks))
	}
	if k <= 0 {
		return
	}
	if k >= total {
		for i := range mask {
			for j := range mask[i] {
				mask[i][j] = true
			}
		}
		return
	}
	hist := make([]int64, 1<<16)
	for _, ks := range keys {
		for _, x := range ks {
			hist[x>>16]++
		}
	}
	var below int64 // keys in buckets before the threshold's
	hi := 0
	for ; below+hist[hi] < k; hi++ {
		below += hist[hi]
	}
	clear(hist)
	for _, ks := range keys {
		for _, x := range ks {
			if int(x>>16) == hi {
				hist[x&0xffff]++
			}
		}
	}
	lo := 0
	for ; below+hist[lo] < k; lo++ {
		below += hist[lo]
	}
	thr := uint32(hi)<<16 | uint32(lo)
	equal := k - below // how many keys equal to thr are pruned
	for i, ks := range keys {
		for j, x := range ks {
			switch {
			case x < thr:
				mask[i][j] = true
			case x == thr && equal > 0:
				mask[i][j] = true
				equal--
			}
		}
	}
}

// zeroEntries clears the masked elements of w's tensor, leaving every
// other byte as it was.
func zeroEntries(m *graph.Model, w *LinearWeight, mask []bool) error {
	raw, err := tensorRaw(m, w.Tensor)
	if err != nil {
		return err
	}
	size := graph.DTypeSize(w.Tensor.GetDataType())
	for j, p := range mask {
		if p {
			clear(raw[j*size : (j+1)*size])
		}
	}
	setRaw(w.Tensor, raw, w.Tensor.GetDims())
	return nil
}
