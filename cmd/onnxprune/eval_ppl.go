package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

func pplTask() evalTask {
	return evalTask{
		Name:  "ppl",
		Usage: "perplexity (token-weighted float64 NLL): per sample, sliding window over the whole text, or llama2.c's chunks (--mode)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mode", Value: "sample", Usage: "ppl: sample (each sample alone, BOS first, at most --seq-len tokens), " +
				"stream (the whole text in windows of --context tokens advancing by --stride; every token scored once, with the longest context), " +
				"chunks (llama2.c's training script: the stream cut into windows of --context tokens, every position predicts the next)"},
			&cli.IntFlag{Name: "context", Value: 512, Usage: "ppl stream/chunks: tokens per window"},
			&cli.IntFlag{Name: "stride", Usage: "ppl stream: tokens each window advances and scores (0: context/2)"},
			&cli.BoolFlag{Name: "bos-each", Usage: "ppl stream/chunks: each sample tokenized with BOS, then concatenated (llama2.c's pretokenize); default: one BOS before the whole text"},
		},
		Run: func(ctx context.Context, cmd *cli.Command, model string) (any, string, error) {
			res, err := evalPerplexity(ctx, cmd, model)
			if err != nil {
				return nil, "", err
			}
			return res, fmt.Sprintf("perplexity %.4f (NLL %.4f/token) over %d tokens scored (%.1fs)\n%s",
				res.Perplexity, res.MeanNLL, res.Tokens, res.Seconds, res.Method), nil
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
	// Mode is sample, stream or chunks; Context and Stride are the window
	// (0 in sample mode; Stride equals Context in chunks mode); BOS says
	// where BOS tokens were put; StreamTokens is the length of the
	// stream, BOS included, and Windows the forward passes over it.
	Mode         string `json:"mode"`
	Context      int    `json:"context,omitempty"`
	Stride       int    `json:"stride,omitempty"`
	BOS          string `json:"bos"`
	StreamTokens int    `json:"stream_tokens,omitempty"`
	Windows      int    `json:"windows,omitempty"`
}

func evalPerplexity(ctx context.Context, cmd *cli.Command, path string) (*PerplexityResult, error) {
	mode := cmd.String("mode")
	if mode != "sample" && mode != "stream" && mode != "chunks" {
		return nil, usagef("--mode %q: want sample, stream or chunks", mode)
	}
	if mode == "sample" && (cmd.IsSet("context") || cmd.IsSet("stride") || cmd.IsSet("bos-each")) {
		return nil, usagef("--context, --stride and --bos-each apply to --mode stream or chunks")
	}
	if mode == "chunks" && cmd.IsSet("stride") {
		return nil, usagef("--stride applies to --mode stream (chunks do not overlap)")
	}
	C, S := int(cmd.Int("context")), int(cmd.Int("stride"))
	if S == 0 {
		S = max(C/2, 1)
	}
	if mode != "sample" && (C < 1 || S < 1 || S > C) {
		return nil, usagef("--context %d --stride %d: want 1 ≤ stride ≤ context", C, S)
	}
	dataPath := cmd.String("data")
	if dataPath == "" {
		return nil, usagef("--data FILE is required (e.g. ../shared/data/tinystories/validation.txt)")
	}
	if cmd.Int("samples") <= 0 || cmd.Int("seq-len") < 2 || cmd.Int("batch-size") <= 0 {
		return nil, usagef("--samples and --batch-size must be positive and --seq-len at least 2")
	}
	textOpts := calib.TextOptions{Separator: cmd.String("separator"), Field: cmd.String("field"), Template: cmd.String("template")}
	samples, err := calib.LoadSamples(dataPath, textOpts)
	if err != nil {
		return nil, err
	}
	// Per-sample scoring defaults to the first --samples samples; the
	// stream modes read everything unless --samples is given.
	if n := int(cmd.Int("samples")); len(samples) > n && (mode == "sample" || cmd.IsSet("samples")) {
		samples = samples[:n]
	}
	sc, err := openLMScorer(cmd, path)
	if err != nil {
		return nil, err
	}
	defer sc.close()
	tok := sc.tok
	batch := int(cmd.Int("batch-size"))
	res := &PerplexityResult{Model: path, Data: dataPath, Samples: len(samples), Mode: mode}
	start := time.Now()
	pr := newProgress(cmd, "eval")
	var n eval.NLL

	if mode == "sample" {
		seqLen := int(cmd.Int("seq-len"))
		seqs := calib.Tokenize(tok, samples, seqLen, true)
		if len(seqs) == 0 {
			return nil, fmt.Errorf("%s: no sample tokenizes to more than BOS", dataPath)
		}
		batches := calib.Batches(seqs, batch)
		for i, b := range batches {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if err := eval.ScoreBatch(sc.dec, b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, 0, &n); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			pr.update(i+1, len(batches))
		}
		res.Samples = len(seqs)
		res.BOS = "BOS first in every sample"
		if tok.BOS() < 0 {
			res.BOS = "no BOS (the tokenizer has none)"
		}
		res.Method = fmt.Sprintf("mode sample: %s, each scored alone from its start, %s, at most %d tokens (longer samples cut)",
			pplPlural(len(seqs), "sample"), res.BOS, seqLen)
	} else {
		var tokens []int
		var source string
		// A plain text file without sample separators is read as it is:
		// splitting it at blank lines and joining the pieces again would
		// lose its exact whitespace (WikiText's " \n" lines).
		var raw string
		if !cmd.Bool("bos-each") && !cmd.IsSet("samples") && textOpts == (calib.TextOptions{}) && !strings.HasSuffix(dataPath, ".jsonl") {
			b, err := os.ReadFile(dataPath)
			if err != nil {
				return nil, err
			}
			if raw = string(b); strings.Contains(raw, "<|endoftext|>") {
				raw = ""
			}
		}
		switch {
		case cmd.Bool("bos-each"):
			tokens = eval.StreamTokens(tok, samples, true, "")
			source = fmt.Sprintf("%s, each tokenized alone and concatenated", pplPlural(len(samples), "sample"))
			res.BOS = "BOS before every sample (llama2.c's pretokenize)"
		case raw != "":
			tokens = eval.StreamTokens(tok, []string{strings.ReplaceAll(raw, "\r\n", "\n")}, false, "")
			source, res.Samples = "the whole file tokenized at once (CRLF → LF)", 0
			res.BOS = "one BOS before the whole text"
		default:
			tokens = eval.StreamTokens(tok, samples, false, "\n\n")
			source = fmt.Sprintf("%s joined by blank lines and tokenized at once", pplPlural(len(samples), "sample"))
			res.BOS = "one BOS before the whole text"
		}
		if tok.BOS() < 0 {
			res.BOS = "no BOS (the tokenizer has none)"
		}
		var ws []eval.Window
		if mode == "stream" {
			ws, err = eval.SlidingWindows(len(tokens), C, S)
		} else {
			ws, err = eval.Chunks(len(tokens), C)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dataPath, err)
		}
		if n, err = eval.ScoreWindows(ctx, sc.dec, tokens, ws, batch, pr.update); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		res.Context, res.Stride, res.StreamTokens, res.Windows = C, S, len(tokens), len(ws)
		if mode == "stream" {
			res.Method = fmt.Sprintf("mode stream: context %d, stride %d (every token after the first scored once; the first window's from the start, later ones with %d–%d tokens of context)",
				C, S, C-S+1, C)
		} else {
			res.Stride = C
			res.Method = fmt.Sprintf("mode chunks: non-overlapping windows of %d tokens, every position predicts the next, across sample boundaries (llama2.c's train.py); %d tokens after the last complete window not scored",
				C, len(tokens)-1-int(n.Tokens))
		}
		res.Method += fmt.Sprintf("; %s over a stream of %d tokens from %s; %s", pplPlural(len(ws), "window"), len(tokens), source, res.BOS)
	}
	res.Perplexity, res.MeanNLL, res.Tokens = n.Perplexity(), n.Sum/float64(n.Tokens), n.Tokens
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// lmScorer is a model opened for scoring text: a decoder session that
// fetches only the logits, and a tokenizer checked against it.
type lmScorer struct {
	dec   *ort.Decoder
	tok   tokenizer.Tokenizer
	close func()
}

// openLMScorer loads the model and its tokenizer and checks, before any
// forward pass, that the model has a logits output and that the
// tokenizer's ids fit its vocabulary.
func openLMScorer(cmd *cli.Command, path string) (*lmScorer, error) {
	m, err := graph.Load(path)
	if err != nil {
		return nil, err
	}
	vocab := int64(-1)
	var outs []string
	found := false
	for _, o := range m.Proto.GetGraph().GetOutput() {
		outs = append(outs, o.GetName())
		if o.GetName() != "logits" {
			continue
		}
		found = true
		if dims := o.GetType().GetTensorType().GetShape().GetDim(); len(dims) > 0 {
			if v := dims[len(dims)-1].GetDimValue(); v > 0 {
				vocab = v
			}
		}
	}
	if !found {
		return nil, fmt.Errorf("%s: no logits output (outputs: %s): eval needs a causal LM's next-token logits", path, strings.Join(outs, ", "))
	}
	tok, err := loadTokenizer(cmd, path)
	if err != nil {
		return nil, err
	}
	if vocab > 0 && int64(tok.VocabSize()) > vocab {
		src, hint := cmd.String("tokenizer"), ""
		if src == "" {
			src, hint = filepath.Dir(path), " (pass --tokenizer)"
		}
		return nil, fmt.Errorf("%s: the tokenizer (%s) has %d tokens but the logits only %d: not this model's tokenizer%s",
			path, src, tok.VocabSize(), vocab, hint)
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return nil, err
	}
	ro.Outputs = []string{"logits"}
	sess, err := ort.NewSession(path, ro)
	if err != nil {
		return nil, err
	}
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		sess.Close()
		return nil, err
	}
	return &lmScorer{dec: dec, tok: tok, close: func() { sess.Close() }}, nil
}

// pplPlural says "1 sample", "3 samples".
func pplPlural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
