package calib

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// FeatureStats are per-feature sums of one activation tensor's last axis
// over the real (unpadded) tokens of the calibration batches, in float64.
// Wanda needs the input-feature norms ‖X_j‖₂ = √SumSq_j of each linear
// layer; width pruning ranks channels by mean |activation|.
type FeatureStats struct {
	Tensor string    `json:"tensor"`
	Tokens int64     `json:"tokens"`
	SumSq  []float64 `json:"sum_sq"`
	SumAbs []float64 `json:"sum_abs"`
}

// Norms returns ‖X_j‖₂ over all tokens, per feature.
func (s *FeatureStats) Norms() []float64 {
	n := make([]float64, len(s.SumSq))
	for j, v := range s.SumSq {
		n[j] = math.Sqrt(v)
	}
	return n
}

// MeanAbs returns the mean |x_j| per token, per feature.
func (s *FeatureStats) MeanAbs() []float64 {
	n := make([]float64, len(s.SumAbs))
	for j, v := range s.SumAbs {
		n[j] = v / float64(max(s.Tokens, 1))
	}
	return n
}

// add folds one batch's values of the tensor ([..., features], the
// leading axes flattening to batch × seq rows, as MatMul inputs
// [batch, seq, in] and Gemm inputs [batch·seq, in] do) into the sums,
// skipping rows the mask marks as padding.
func (s *FeatureStats) add(x []float32, shape []int64, mask []int64) error {
	if len(shape) < 2 {
		return fmt.Errorf("calib: tap %s has shape %v, want [..., features]", s.Tensor, shape)
	}
	f := int(shape[len(shape)-1])
	if f != len(s.SumSq) {
		return fmt.Errorf("calib: tap %s has %d features, expected %d", s.Tensor, f, len(s.SumSq))
	}
	rows := len(x) / max(f, 1)
	if rows != len(mask) {
		return fmt.Errorf("calib: tap %s has shape %v: %d rows for %d batch tokens", s.Tensor, shape, rows, len(mask))
	}
	for r := range rows {
		if mask[r] == 0 {
			continue
		}
		s.Tokens++
		row := x[r*f : (r+1)*f]
		for j, v := range row {
			fv := float64(v)
			s.SumSq[j] += fv * fv
			s.SumAbs[j] += math.Abs(fv)
		}
	}
	return nil
}

// MaxTapBytes bounds the activations one forward pass exposes: the taps
// are split into groups, each run over all batches, so that a batch's
// tapped tensors stay under it.
var MaxTapBytes int64 = 1 << 30

// FeatureStatistics runs the batches through m with the named activation
// tensors exposed as outputs and returns their per-feature statistics.
// taps maps each tensor to its number of features (its last axis), which
// sizes the runs (see MaxTapBytes) and is checked against what the model
// computes. m is not changed.
func FeatureStatistics(ctx context.Context, m *graph.Model, taps map[string]int, batches []Batch, opts Options) (map[string]*FeatureStats, error) {
	if len(batches) == 0 {
		return nil, fmt.Errorf("calib: no calibration batches")
	}
	if len(taps) == 0 {
		return nil, fmt.Errorf("calib: no tensors to measure")
	}
	tokens := 0
	for _, b := range batches {
		tokens = max(tokens, b.Size*b.SeqLen)
	}
	names := make([]string, 0, len(taps))
	for n := range taps {
		names = append(names, n)
	}
	sort.Strings(names)
	var groups [][]string
	var bytes int64
	for _, n := range names {
		sz := int64(tokens) * int64(taps[n]) * 4
		if len(groups) == 0 || (bytes+sz > MaxTapBytes && len(groups[len(groups)-1]) > 0) {
			groups = append(groups, nil)
			bytes = 0
		}
		groups[len(groups)-1] = append(groups[len(groups)-1], n)
		bytes += sz
	}
	stats := map[string]*FeatureStats{}
	for _, n := range names {
		stats[n] = &FeatureStats{Tensor: n, SumSq: make([]float64, taps[n]), SumAbs: make([]float64, taps[n])}
	}
	done, total := 0, len(groups)*len(batches)
	for _, group := range groups {
		if err := featureRun(ctx, m, group, batches, opts, stats, func() {
			done++
			if opts.Progress != nil {
				opts.Progress(done, total)
			}
		}); err != nil {
			return nil, err
		}
	}
	return stats, nil
}

// featureRun measures one group of taps over every batch.
func featureRun(ctx context.Context, m *graph.Model, taps []string, batches []Batch, opts Options, stats map[string]*FeatureStats, step func()) error {
	tapped, err := exposed(m, taps)
	if err != nil {
		return err
	}
	data, err := proto.Marshal(tapped.Proto)
	if err != nil {
		return fmt.Errorf("calib: %w", err)
	}
	ro := opts.Runtime
	ro.ExternalDataDir = m.Dir
	ro.Outputs = taps
	sess, err := ort.NewSessionFromBytes(data, ro)
	if err != nil {
		return err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return err
	}
	for _, b := range batches {
		if err := ctx.Err(); err != nil {
			return err
		}
		in, err := dec.Inputs(b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, nil)
		if err != nil {
			return err
		}
		out, err := sess.Run(in, taps)
		if err != nil {
			return err
		}
		// Taps are independent: fold them in parallel.
		var wg sync.WaitGroup
		errs := make([]error, len(taps))
		for i, name := range taps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t := out[name]
				x, err := t.Float32s()
				if err != nil {
					errs[i] = fmt.Errorf("calib: tap %s: %w", name, err)
					return
				}
				errs[i] = stats[name].add(x, t.Shape, b.Mask)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return err
			}
		}
		step()
	}
	return nil
}

// exposed returns a copy of m whose graph also outputs the named tensors;
// nodes, weights and the rest are shared with m, which is unchanged.
func exposed(m *graph.Model, names []string) (*graph.Model, error) {
	src := m.Proto.GetGraph()
	g := proto.CloneOf(&onnxpb.GraphProto{Name: src.Name, DocString: src.DocString})
	g.Input, g.Initializer, g.SparseInitializer, g.ValueInfo = src.Input, src.Initializer, src.SparseInitializer, src.ValueInfo
	g.Node = src.Node
	g.Output = slices.Clone(src.Output)
	mp := &onnxpb.ModelProto{
		IrVersion: m.Proto.IrVersion, OpsetImport: m.Proto.OpsetImport,
		ProducerName: m.Proto.ProducerName, ProducerVersion: m.Proto.ProducerVersion,
		Domain: m.Proto.Domain, ModelVersion: m.Proto.ModelVersion,
		Functions: m.Proto.Functions, Graph: g,
	}
	tapped := &graph.Model{Proto: mp, Path: m.Path, Dir: m.Dir}
	if err := rewrite.ExposeTensors(tapped, names...); err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	return tapped, nil
}
