package heal

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// DefaultRidge is the relative ridge strength (see NormalEquations.Lambda):
// small enough not to bias a well-determined fit, large enough to keep
// XᵀX invertible when a direction of m never varies.
const DefaultRidge = 1e-4

// Cut is where a run of removed blocks i..j is bridged: the tensors the
// fit reads and the linear layer T is folded into.
type Cut struct {
	First, Last int // removed blocks i..j
	// Branch is m, block i−1's MLP branch entering the residual sum that
	// produces h_i; HIn and HOut are h_i and h_{j+1} as calib.Taps names
	// them. The residual r is HIn − Branch: defined that way it also
	// holds any bias a fused skip-norm adds, which T must not touch.
	Branch, HIn, HOut string
	// Weight is the down projection producing Branch, stored [in, hidden]
	// (MatMul, Gemm with transB=0) or [hidden, in] (Gemm with transB=1);
	// Bias its bias or nil.
	Weight, Bias *onnxpb.TensorProto
	Transposed   bool
}

// FindCuts locates, for each contiguous run of blocks in remove, the
// tensors and the down projection the bridge needs, failing with a
// reason when the model's structure does not allow it.
func FindCuts(m *graph.Model, d *graph.Decoder, remove []int) ([]*Cut, error) {
	if len(d.Branches) > 0 {
		return nil, fmt.Errorf("bridge: merged decoders (an If over two branches) are not supported; export without past-merging")
	}
	L := len(d.Blocks)
	set := map[int]bool{}
	for _, b := range remove {
		if b < 0 || b >= L {
			return nil, fmt.Errorf("bridge: block %d out of range: the model has blocks 0..%d", b, L-1)
		}
		set[b] = true
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("bridge: no blocks to remove")
	}
	if len(set) >= L {
		return nil, fmt.Errorf("bridge: removing %d of %d blocks would leave no decoder", len(set), L)
	}
	keys := make([]int, 0, len(set))
	for b := range set {
		keys = append(keys, b)
	}
	sort.Ints(keys)
	ix := graph.NewIndex(m.Proto.GetGraph())
	var cuts []*Cut
	for k := 0; k < len(keys); {
		i, j := keys[k], keys[k]
		for k++; k < len(keys) && keys[k] == j+1; k++ {
			j++
		}
		c, err := findCut(ix, d, i, j)
		if err != nil {
			return nil, err
		}
		cuts = append(cuts, c)
	}
	return cuts, nil
}

func findCut(ix *graph.Index, d *graph.Decoder, i, j int) (*Cut, error) {
	if i == 0 {
		return nil, fmt.Errorf("bridge: cannot bridge a run starting at block 0: there is no earlier MLP to fold the map into")
	}
	site := d.Blocks[i-1].OutputSite
	k := slices.IndexFunc(d.Sites, func(s graph.Site) bool { return s.Node == site.Node && s.Output == site.Output })
	if k < 1 {
		return nil, fmt.Errorf("bridge: block %d's output site is not in the residual chain after another site", i-1)
	}
	r := d.Sites[k-1].Tensor()
	n := site.Node
	if len(n.Input) < 2 || r == "" {
		return nil, fmt.Errorf("bridge: block %d's residual sum %q has no residual input to tell apart", i-1, graph.NodeLabel(n))
	}
	var branch string
	switch r {
	case n.Input[0]:
		branch = n.Input[1]
	case n.Input[1]:
		branch = n.Input[0]
	default:
		return nil, fmt.Errorf("bridge: block %d's residual sum %q does not read the previous site %q", i-1, graph.NodeLabel(n), r)
	}
	c := &Cut{First: i, Last: j, Branch: branch}
	if err := c.findLinear(ix, i-1); err != nil {
		return nil, err
	}
	return c, nil
}

// findLinear walks from the branch tensor back to the linear layer that
// produced it: MatMul(x, W), Add(MatMul(x, W), b) or Gemm(x, W, b).
func (c *Cut) findLinear(ix *graph.Index, block int) error {
	p := ix.Producer[c.Branch]
	if p == nil {
		return fmt.Errorf("bridge: block %d's MLP branch %q is not produced by a node", block, c.Branch)
	}
	initOnly := func(name string, n *onnxpb.NodeProto) (*onnxpb.TensorProto, error) {
		t := ix.Initializers[name]
		if t == nil {
			return nil, nil
		}
		if t.GetDataType() != int32(onnxpb.TensorProto_FLOAT) {
			return nil, fmt.Errorf("bridge: block %d's down projection %q is %s; only float32 weights are supported", block, name, graph.DTypeName(t.GetDataType()))
		}
		// T is folded into the weight itself: a weight shared with
		// another node would change that node too.
		if len(ix.Consumers[name]) != 1 || ix.Outputs[name] {
			return nil, fmt.Errorf("bridge: block %d's weight %q is also read elsewhere; cannot fold the bridge into it", block, name)
		}
		return t, nil
	}
	var err error
	if p.GetOpType() == "Add" && len(p.Input) == 2 {
		for bi := range 2 {
			b, err := initOnly(p.Input[bi], p)
			if err != nil {
				return err
			}
			if b != nil && len(b.Dims) == 1 {
				c.Bias = b
				if p = ix.Producer[p.Input[1-bi]]; p == nil {
					return fmt.Errorf("bridge: block %d's MLP branch: the biased tensor has no producer", block)
				}
				break
			}
		}
		if c.Bias == nil {
			return fmt.Errorf("bridge: block %d's MLP branch comes from an Add %q without a bias initializer", block, graph.NodeLabel(p))
		}
	}
	switch p.GetOpType() {
	case "MatMul":
		if c.Weight, err = initOnly(p.Input[1], p); err != nil {
			return err
		}
	case "Gemm":
		if c.Bias != nil {
			break // Gemm followed by a bias Add: not a layout the exporters use
		}
		if c.Weight, err = initOnly(p.Input[1], p); err != nil {
			return err
		}
		for _, a := range p.Attribute {
			switch {
			case a.GetName() == "transB" && a.GetI() != 0:
				c.Transposed = true
			case a.GetName() == "transA" && a.GetI() != 0:
				return fmt.Errorf("bridge: block %d's down projection %q has transA set", block, graph.NodeLabel(p))
			}
		}
		if len(p.Input) > 2 && p.Input[2] != "" {
			if c.Bias, err = initOnly(p.Input[2], p); err != nil {
				return err
			}
			if c.Bias == nil || len(c.Bias.Dims) != 1 {
				return fmt.Errorf("bridge: block %d's down projection %q has a bias that is not a 1-D initializer", block, graph.NodeLabel(p))
			}
		}
	}
	if c.Weight == nil || len(c.Weight.Dims) != 2 {
		return fmt.Errorf("bridge: block %d's MLP branch %q is not the output of a MatMul/Gemm with a 2-D weight initializer (produced by %s)", block, c.Branch, graph.NodeLabel(p))
	}
	return nil
}

// Options configure a bridge fit.
type Options struct {
	// Ridge is the relative ridge strength towards T = I; 0 fits plain
	// least squares.
	Ridge   float64
	Runtime ort.Options
	// Progress, when set, is called after each batch.
	Progress func(done, total int)
}

// RunReport is the fit of one bridged run, on the calibration tokens.
// SSE values are Σ‖r + m·T − h_{j+1}‖²: Pruned for T = I (plain
// pruning), Bridged for the fitted T. Rel values are √(SSE / Σ‖h_{j+1}‖²).
type RunReport struct {
	Blocks      []int   `json:"blocks"`
	Weight      string  `json:"weight"`
	Bias        string  `json:"bias,omitempty"`
	Hidden      int     `json:"hidden"`
	Tokens      int     `json:"tokens"`
	Lambda      float64 `json:"lambda"`
	SSEPruned   float64 `json:"sse_pruned"`
	SSEBridged  float64 `json:"sse_bridged"`
	RelPruned   float64 `json:"rel_error_pruned"`
	RelBridged  float64 `json:"rel_error_bridged"`
	TargetNorm2 float64 `json:"target_norm2"`
}

// Report is what Bridge did; bridge.json holds it.
type Report struct {
	Method string      `json:"method"`
	Ridge  float64     `json:"ridge"`
	Runs   []RunReport `json:"runs"`
}

// Bridge fits one linear map per contiguous run of blocks in remove on the
// calibration batches and folds each into the down projection before the
// run, modifying m's weights. It does not remove the blocks: run
// rewrite.RemoveBlocks on m afterwards (the fit needs the blocks, and
// folding first keeps the weights' identity independent of renumbering).
func Bridge(ctx context.Context, m *graph.Model, d *graph.Decoder, remove []int, batches []calib.Batch, opts Options) (*Report, error) {
	cuts, err := FindCuts(m, d, remove)
	if err != nil {
		return nil, err
	}
	eqs, norms, err := Capture(ctx, m, d, cuts, batches, opts)
	if err != nil {
		return nil, err
	}
	rep := &Report{Method: "bridge", Ridge: opts.Ridge}
	Ts := make([][]float64, len(cuts))
	for k, c := range cuts {
		e := eqs[k]
		T, err := e.Solve(opts.Ridge)
		if err != nil {
			return nil, fmt.Errorf("blocks %d..%d: %w", c.First, c.Last, err)
		}
		Ts[k] = T
		rr := RunReport{Weight: c.Weight.GetName(), Hidden: e.N, Tokens: e.Tokens, Lambda: e.Lambda(opts.Ridge),
			SSEPruned: e.Ident, SSEBridged: e.Residual(T), TargetNorm2: norms[k]}
		for b := c.First; b <= c.Last; b++ {
			rr.Blocks = append(rr.Blocks, b)
		}
		if c.Bias != nil {
			rr.Bias = c.Bias.GetName()
		}
		if norms[k] > 0 {
			rr.RelPruned, rr.RelBridged = math.Sqrt(rr.SSEPruned/norms[k]), math.Sqrt(rr.SSEBridged/norms[k])
		}
		rep.Runs = append(rep.Runs, rr)
	}
	// Fold only once every fit succeeded, so an error leaves m unchanged.
	for k, c := range cuts {
		if err := Fold(m, c, Ts[k], eqs[k].N); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// Capture runs the batches through m with taps at each cut and returns,
// per cut, the normal equations of m·T ≈ h_{j+1} − r over real tokens and
// Σ‖h_{j+1}‖². Memory holds one batch's tapped tensors at a time.
func Capture(ctx context.Context, m *graph.Model, d *graph.Decoder, cuts []*Cut, batches []calib.Batch, opts Options) ([]*NormalEquations, []float64, error) {
	if len(batches) == 0 {
		return nil, nil, fmt.Errorf("bridge: no calibration batches")
	}
	tapped, taps, err := calib.Taps(m, d)
	if err != nil {
		return nil, nil, err
	}
	var want []string
	for _, c := range cuts {
		c.HIn, c.HOut = taps[c.First], taps[c.Last+1]
		want = append(want, c.Branch, c.HIn, c.HOut)
	}
	if err := rewrite.ExposeTensors(tapped, want...); err != nil {
		return nil, nil, fmt.Errorf("bridge: %w", err)
	}
	slices.Sort(want)
	want = slices.Compact(want)
	data, err := proto.Marshal(tapped.Proto)
	if err != nil {
		return nil, nil, fmt.Errorf("bridge: %w", err)
	}
	ro := opts.Runtime
	ro.ExternalDataDir = m.Dir
	ro.Outputs = want
	sess, err := ort.NewSessionFromBytes(data, ro)
	if err != nil {
		return nil, nil, err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return nil, nil, err
	}
	eqs := make([]*NormalEquations, len(cuts))
	norms := make([]float64, len(cuts))
	for bi, b := range batches {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		in, err := dec.Inputs(b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, nil)
		if err != nil {
			return nil, nil, err
		}
		out, err := sess.Run(in, want)
		if err != nil {
			return nil, nil, err
		}
		get := func(name string) ([]float32, int, error) {
			t := out[name]
			if t == nil {
				return nil, 0, fmt.Errorf("bridge: onnxruntime returned no %q", name)
			}
			v, err := t.Float32s()
			if err != nil {
				return nil, 0, fmt.Errorf("bridge: tap %s: %w", name, err)
			}
			if len(t.Shape) != 3 || t.Shape[0] != int64(b.Size) || t.Shape[1] != int64(b.SeqLen) {
				return nil, 0, fmt.Errorf("bridge: tap %s has shape %v, want [%d, %d, hidden]", name, t.Shape, b.Size, b.SeqLen)
			}
			return v, int(t.Shape[2]), nil
		}
		for k, c := range cuts {
			mv, H, err := get(c.Branch)
			if err != nil {
				return nil, nil, err
			}
			hin, H2, err := get(c.HIn)
			if err != nil {
				return nil, nil, err
			}
			hout, H3, err := get(c.HOut)
			if err != nil {
				return nil, nil, err
			}
			if H != H2 || H != H3 {
				return nil, nil, fmt.Errorf("bridge: blocks %d..%d: branch %q has width %d, the residual stream %d", c.First, c.Last, c.Branch, H, H2)
			}
			if eqs[k] == nil {
				eqs[k] = NewNormalEquations(H)
			}
			x, y := make([]float64, H), make([]float64, H)
			for t := range b.Size * b.SeqLen {
				if b.Mask[t] == 0 {
					continue // padding: never part of a statistic
				}
				o := t * H
				for a := range H {
					// y = h_{j+1} − r with r = h_i − m.
					x[a] = float64(mv[o+a])
					y[a] = float64(hout[o+a]) - float64(hin[o+a]) + x[a]
					norms[k] += float64(hout[o+a]) * float64(hout[o+a])
				}
				eqs[k].AddRow(x, y)
			}
		}
		if opts.Progress != nil {
			opts.Progress(bi+1, len(batches))
		}
	}
	for k, c := range cuts {
		if eqs[k] == nil || eqs[k].Tokens == 0 {
			return nil, nil, fmt.Errorf("bridge: blocks %d..%d: the calibration batches hold no real tokens", c.First, c.Last)
		}
	}
	return eqs, norms, nil
}

// Fold replaces the cut's down projection W by W·T (or Tᵀ·W when stored
// transposed) and its bias b by b·T, so the branch it produces becomes
// m·T with no node added. T is [hidden, hidden] row-major.
func Fold(m *graph.Model, c *Cut, T []float64, hidden int) error {
	W, err := readFloats(m, c.Weight)
	if err != nil {
		return err
	}
	rows, cols := int(c.Weight.Dims[0]), int(c.Weight.Dims[1])
	if c.Transposed {
		// Stored [hidden, in]: (x·Wsᵀ)·T = x·(Tᵀ·Ws)ᵀ.
		if rows != hidden {
			return fmt.Errorf("bridge: weight %q is %v, want [%d, in]", c.Weight.GetName(), c.Weight.Dims, hidden)
		}
		out := make([]float64, rows*cols)
		for a := range hidden {
			for b := range hidden {
				t := T[b*hidden+a] // Tᵀ[a][b]
				if t == 0 {
					continue
				}
				for p := range cols {
					out[a*cols+p] += t * float64(W[b*cols+p])
				}
			}
		}
		writeFloats(c.Weight, out)
	} else {
		if cols != hidden {
			return fmt.Errorf("bridge: weight %q is %v, want [in, %d]", c.Weight.GetName(), c.Weight.Dims, hidden)
		}
		writeFloats(c.Weight, mulT(W, rows, T, hidden))
	}
	if c.Bias != nil {
		b, err := readFloats(m, c.Bias)
		if err != nil {
			return err
		}
		if len(b) != hidden {
			return fmt.Errorf("bridge: bias %q has %d elements, want %d", c.Bias.GetName(), len(b), hidden)
		}
		writeFloats(c.Bias, mulT(b, 1, T, hidden))
	}
	return nil
}

// mulT returns W·T for W [rows, n] float32 and T [n, n], in float64.
func mulT(W []float32, rows int, T []float64, n int) []float64 {
	out := make([]float64, rows*n)
	for r := range rows {
		o := out[r*n : (r+1)*n]
		for a := range n {
			w := float64(W[r*n+a])
			if w == 0 {
				continue
			}
			ta := T[a*n : (a+1)*n]
			for c := range n {
				o[c] += w * ta[c]
			}
		}
	}
	return out
}

func readFloats(m *graph.Model, t *onnxpb.TensorProto) ([]float32, error) {
	raw, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	n := int(graph.NumElements(t.Dims))
	if len(raw) != 4*n {
		return nil, fmt.Errorf("bridge: tensor %q holds %d bytes, want %d", t.GetName(), len(raw), 4*n)
	}
	v := make([]float32, n)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return v, nil
}

// writeFloats stores v as t's raw data, inline: Save decides again where
// large tensors go.
func writeFloats(t *onnxpb.TensorProto, v []float64) {
	raw := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(float32(x)))
	}
	t.RawData = raw
	t.FloatData = nil
	t.DataLocation = nil
	t.ExternalData = nil
}
