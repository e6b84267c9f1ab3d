package calib

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// Perplexity of m (optionally with blocks removed) on the batches.
func Perplexity(ctx context.Context, m *graph.Model, remove []int, batches []Batch, ro ort.Options) (float64, error) {
	mp := m
	if len(remove) > 0 {
		mp = &graph.Model{Proto: proto.CloneOf(m.Proto), Path: m.Path, Dir: m.Dir}
		d, err := graph.FindBlocks(mp)
		if err != nil {
			return 0, err
		}
		if err := rewrite.RemoveBlocks(mp, d, remove); err != nil {
			return 0, err
		}
	}
	data, err := proto.Marshal(mp.Proto)
	if err != nil {
		return 0, err
	}
	ro.ExternalDataDir = m.Dir
	ro.Outputs = []string{"logits"}
	sess, err := ort.NewSessionFromBytes(data, ro)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return 0, err
	}
	var n eval.NLL
	for _, b := range batches {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := eval.ScoreBatch(dec, b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, 0, &n); err != nil {
			return 0, err
		}
	}
	return n.Perplexity(), nil
}

// SelectSLEB removes blocks one at a time (SLEB, Song et al. 2024): at
// each step it tries every remaining block, keeps the removal that raises
// calibration perplexity least, and re-scores from there. It costs
// n·L forward passes over the batches.
func SelectSLEB(ctx context.Context, m *graph.Model, L, n int, batches []Batch, ro ort.Options, progress func(done, total int)) (*Plan, error) {
	if err := checkN(n, L); err != nil {
		return nil, err
	}
	p := &Plan{Blocks: L, Strategy: "sleb"}
	total, done := 0, 0
	for s := range n {
		total += L - s
	}
	var removed []int
	for range n {
		best, bestPPL := -1, 0.0
		for b := range L {
			if slices.Contains(removed, b) {
				continue
			}
			try := append(slices.Clone(removed), b)
			ppl, err := Perplexity(ctx, m, try, batches, ro)
			if err != nil {
				return nil, fmt.Errorf("sleb: removing %v: %w", try, err)
			}
			slices.Sort(try)
			p.Candidates = append(p.Candidates, Candidate{Remove: try, Score: ppl})
			if best < 0 || ppl < bestPPL {
				best, bestPPL = b, ppl
			}
			done++
			if progress != nil {
				progress(done, total)
			}
		}
		removed = append(removed, best)
		p.Score = bestPPL
	}
	slices.Sort(removed)
	p.Remove = removed
	p.Reason = fmt.Sprintf("%s: removed one at a time, each the block whose removal raised calibration perplexity least (final %.4f)",
		blocksString(removed), p.Score)
	return p, nil
}
