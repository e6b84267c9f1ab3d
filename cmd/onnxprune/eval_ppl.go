package main

import (
	"context"
	"fmt"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func pplTask() evalTask {
	return evalTask{
		Name:  "ppl",
		Usage: "perplexity per sample (BOS first, at most --seq-len tokens; token-weighted float64 NLL)",
		Run: func(ctx context.Context, cmd *cli.Command, model string) (any, string, error) {
			res, err := evalPerplexity(ctx, cmd, model)
			if err != nil {
				return nil, "", err
			}
			return res, fmt.Sprintf("perplexity %.4f (NLL %.4f/token) over %d tokens scored in %d samples; %s (%.1fs)",
				res.Perplexity, res.MeanNLL, res.Tokens, res.Samples, res.Method, res.Seconds), nil
		},
	}
}

// PerplexityResult is what `eval --task ppl --json` prints.
type PerplexityResult struct {
	Model      string  `json:"model"`
	Data       string  `json:"data"`
	Perplexity float64 `json:"perplexity"`
	MeanNLL    float64 `json:"mean_nll"`
	Tokens     int64   `json:"tokens_scored"`
	Samples    int     `json:"samples"`
	Method     string  `json:"method"`
	Seconds    float64 `json:"seconds"`
}

func evalPerplexity(ctx context.Context, cmd *cli.Command, path string) (*PerplexityResult, error) {
	if _, err := graph.Load(path); err != nil {
		return nil, err
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return nil, err
	}
	batches, _, err := calibrationBatches(cmd, path)
	if err != nil {
		return nil, err
	}
	ro.Outputs = []string{"logits"}
	sess, err := ort.NewSession(path, ro)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	pr := newProgress(cmd, "eval")
	var n eval.NLL
	samples := 0
	for i, b := range batches {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := eval.ScoreBatch(dec, b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, 0, &n); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		samples += b.Size
		pr.update(i+1, len(batches))
	}
	return &PerplexityResult{Model: path, Data: cmd.String("data"), Perplexity: n.Perplexity(),
		MeanNLL: n.Sum / float64(n.Tokens), Tokens: n.Tokens, Samples: samples,
		Method:  fmt.Sprintf("per sample, BOS first, at most %d tokens", cmd.Int("seq-len")),
		Seconds: time.Since(start).Seconds()}, nil
}
