package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/eval"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// xsumDefaultLimit and xsumDefaultSeqLen apply when --limit and --seq-len
// (flags shared with other tasks, whose defaults differ) are not given.
const (
	xsumDefaultLimit  = 20
	xsumDefaultSeqLen = 512
)

func xsumTask() evalTask {
	return evalTask{
		Name: "xsum",
		Usage: `summarization: greedy summaries of XSum articles (JSONL {document, summary, id}) with the KV cache, ` +
			`ROUGE-1/2/L F1 with Porter stemming as rouge-score; energy per article and per generated token ` +
			`(here --limit means the first N articles, default 20, and --seq-len defaults to 512)`,
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "max-new-tokens", Value: 64, Usage: "xsum: tokens a summary may have at most (it also ends at EOS or a newline)"},
			&cli.StringFlag{Name: "truncate", Value: eval.TruncateMiddle,
				Usage: "xsum: which part of a document too long for --seq-len − --max-new-tokens to keep: middle (its start and end), left (its end), right (its start)"},
			&cli.IntFlag{Name: "show-examples", Value: 3, Usage: "xsum: generated summaries to print"},
		}, energyFlags()...),
		Run: func(ctx context.Context, cmd *cli.Command, model string) (any, string, error) {
			res, err := evalXSum(ctx, cmd, model)
			if err != nil {
				return nil, "", err
			}
			return res, res.text(int(cmd.Int("show-examples"))), nil
		},
	}
}

// XSumResult is what `eval --task xsum --json` prints.
type XSumResult struct {
	Model  string `json:"model"`
	Data   string `json:"data"`
	SeqLen int    `json:"seq_len"`
	*eval.SummarizeResult
	Energy eval.EnergyReport `json:"energy"`
}

func evalXSum(ctx context.Context, cmd *cli.Command, path string) (*XSumResult, error) {
	data := cmd.String("data")
	if data == "" {
		return nil, usagef("eval --task xsum: --data FILE is required (e.g. ../shared/data/xsum/test.jsonl)")
	}
	limit, seqLen := xsumDefaultLimit, xsumDefaultSeqLen
	if cmd.IsSet("limit") {
		limit = int(cmd.Int("limit")) // 0: all
	}
	if cmd.IsSet("seq-len") {
		seqLen = int(cmd.Int("seq-len"))
	}
	maxNew := int(cmd.Int("max-new-tokens"))
	if limit < 0 || maxNew <= 0 || seqLen <= maxNew+1 {
		return nil, usagef("eval --task xsum: --limit must not be negative, --max-new-tokens positive and below --seq-len − 1")
	}
	opts := eval.SummarizeOptions{SeqLen: seqLen, MaxNewTokens: maxNew, Truncate: cmd.String("truncate")}
	if t := cmd.String("template"); t != "" {
		if strings.Count(t, "{document}") != 1 {
			return nil, usagef("eval --task xsum: --template %q must contain {document} once", t)
		}
		opts.Template = t
	}
	switch opts.Truncate {
	case eval.TruncateMiddle, eval.TruncateLeft, eval.TruncateRight:
	default:
		return nil, usagef("eval --task xsum: --truncate %q: want middle, left or right", opts.Truncate)
	}
	meter, err := newEnergyMeter(cmd)
	if err != nil {
		return nil, err
	}
	articles, err := eval.LoadArticles(data, limit)
	if err != nil {
		return nil, err
	}
	tok, err := loadTokenizer(cmd, path)
	if err != nil {
		return nil, err
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return nil, err
	}
	sess, err := ort.NewSession(path, ro)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return nil, err
	}
	// One short warm-up generation, so that the first article's latency
	// and energy do not include onnxruntime's first-run set-up.
	warm := tok.Encode("Article:")
	if tok.BOS() >= 0 {
		warm = append([]int{tok.BOS()}, warm...)
	}
	if _, err := dec.Generate(ctx, warm, ort.GenerateOptions{MaxTokens: 2}); err != nil {
		return nil, fmt.Errorf("%s: warm-up: %w", path, err)
	}
	pr := newProgress(cmd, "xsum")
	opts.Progress = pr.update
	if err := meter.Start(); err != nil {
		return nil, err
	}
	sum, err := eval.Summarize(ctx, dec, tok, articles, opts)
	if err != nil {
		meter.Stop()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	reading, err := meter.Stop()
	if err != nil {
		return nil, err
	}
	return &XSumResult{Model: path, Data: data, SeqLen: seqLen, SummarizeResult: sum,
		Energy: energyReport(cmd, reading, sum.Documents, sum.GeneratedTokens)}, nil
}

// text renders the result: ROUGE, generation, energy (always with its
// source), then a few summaries.
func (r *XSumResult) text(examples int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "xsum: %d articles of %s; %s\n", r.Documents, r.Data, r.Method)
	fmt.Fprintf(&b, "ROUGE F1 (mean over articles): ROUGE-1 %.4f  ROUGE-2 %.4f  ROUGE-L %.4f\n",
		r.Rouge.Rouge1.F1, r.Rouge.Rouge2.F1, r.Rouge.RougeL.F1)
	var stops []string
	for k, v := range r.Stops {
		stops = append(stops, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(stops)
	fmt.Fprintf(&b, "generated %d tokens (ended by: %s); %d prompt tokens, %d articles truncated; prefill %.1f ms mean, decode %.1f tokens/s; %.2f s\n",
		r.GeneratedTokens, strings.Join(stops, ", "), r.PromptTokens, r.Truncated, 1e3*r.MeanFirstTokenSeconds, r.DecodeTokensPerSecond, r.SummarizeResult.Seconds)
	fmt.Fprintln(&b, r.Energy.String())
	for i, a := range r.Articles {
		if i >= examples {
			break
		}
		fmt.Fprintf(&b, "\n[%s] ROUGE-1 %.3f ROUGE-2 %.3f ROUGE-L %.3f; %d tokens, ended by %s\n  reference: %s\n  generated: %s\n",
			a.ID, a.Scores.Rouge1.F1, a.Scores.Rouge2.F1, a.Scores.RougeL.F1, a.GeneratedTokens, a.Stop, a.Reference, a.Summary)
	}
	return b.String()
}
