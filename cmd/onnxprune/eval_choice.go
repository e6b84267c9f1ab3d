package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/eval"
)

// boolqTask and imdbTask are zero-shot choice tasks scored by the
// log-likelihood of each answer's continuation, as lm-evaluation-harness
// does. They share --limit and --seed, which only boolq declares because
// all tasks' flags land on the one eval command and names must not clash
// (xsum reads --limit too, with its own meaning and default).
func boolqTask() evalTask {
	return choiceEvalTask("boolq", `BoolQ zero-shot: "{passage}\nQuestion: {question}?\nAnswer:" → " yes"/" no" (JSONL {passage, question, answer}); --seq-len defaults to config.json's max_position_embeddings, else 512`,
		`"{passage}\nQuestion: {question}?\nAnswer:"`, eval.LoadBoolQ, []cli.Flag{
			&cli.IntFlag{Name: "limit", Usage: "boolq, imdb: evaluate N examples drawn at random with --seed (0: all); other tasks say what it means for them"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "boolq/imdb: seed of the --limit draw"},
		})
}

func imdbTask() evalTask {
	return choiceEvalTask("imdb", `IMDB zero-shot sentiment: "{review}\nSentiment:" → " positive"/" negative" (CSV text,label); --seq-len as boolq`,
		`"{review}\nSentiment:"`, eval.LoadIMDB, nil)
}

// ChoiceEvalResult is what `eval --task boolq|imdb --json` prints.
type ChoiceEvalResult struct {
	Model  string `json:"model"`
	Data   string `json:"data"`
	Subset string `json:"subset"`
	// Indices are the evaluated examples' positions in the file
	// (0-based), in the order of predictions and loglikelihoods.
	Indices []int   `json:"indices"`
	Prompt  string  `json:"prompt"`
	SeqLen  int     `json:"seq_len"`
	SeqFrom string  `json:"seq_len_from"`
	BOS     string  `json:"bos"`
	Seconds float64 `json:"seconds"`
	*eval.ChoiceResult
}

func choiceEvalTask(name, usage, prompt string, load func(string) (*eval.ChoiceTask, error), flags []cli.Flag) evalTask {
	return evalTask{
		Name:  name,
		Usage: usage,
		Flags: flags,
		Run: func(ctx context.Context, cmd *cli.Command, model string) (any, string, error) {
			res, err := evalChoice(ctx, cmd, model, prompt, load)
			if err != nil {
				return nil, "", err
			}
			return res, choiceText(res), nil
		},
	}
}

func evalChoice(ctx context.Context, cmd *cli.Command, path, prompt string, load func(string) (*eval.ChoiceTask, error)) (*ChoiceEvalResult, error) {
	dataPath := cmd.String("data")
	if dataPath == "" {
		return nil, usagef("--data FILE is required (e.g. ../shared/data/boolq/boolq.jsonl, ../shared/data/imdb/test.csv)")
	}
	if cmd.Int("limit") < 0 || cmd.Int("batch-size") <= 0 {
		return nil, usagef("--limit must not be negative and --batch-size must be positive")
	}
	seqLen, from, err := choiceSeqLen(cmd, path)
	if err != nil {
		return nil, err
	}
	task, err := load(dataPath)
	if err != nil {
		return nil, err
	}
	task, subset := task.Subset(int(cmd.Int("limit")), cmd.Uint64("seed"))
	sc, err := openLMScorer(cmd, path)
	if err != nil {
		return nil, err
	}
	defer sc.close()
	start := time.Now()
	pr := newProgress(cmd, "eval "+task.Name)
	r, err := eval.ScoreChoices(ctx, sc.dec, sc.tok, task, eval.ChoiceOptions{
		SeqLen: seqLen, BatchSize: int(cmd.Int("batch-size")), Progress: pr.update})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	res := &ChoiceEvalResult{Model: path, Data: dataPath, Subset: subset, Prompt: prompt, SeqLen: seqLen, SeqFrom: from,
		Seconds: time.Since(start).Seconds(), ChoiceResult: r, BOS: "BOS first"}
	if sc.tok.BOS() < 0 {
		res.BOS = "no BOS (the tokenizer has none)"
	}
	for _, ex := range task.Examples {
		res.Indices = append(res.Indices, ex.Index)
	}
	return res, nil
}

// choiceSeqLen is --seq-len when given, else the model's
// max_position_embeddings from config.json beside it, else 512.
func choiceSeqLen(cmd *cli.Command, model string) (int, string, error) {
	if cmd.IsSet("seq-len") {
		if cmd.Int("seq-len") < 2 {
			return 0, "", usagef("--seq-len %d: want at least 2", cmd.Int("seq-len"))
		}
		return int(cmd.Int("seq-len")), "--seq-len", nil
	}
	p := filepath.Join(filepath.Dir(model), "config.json")
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return 512, "default (no config.json)", nil
	}
	if err != nil {
		return 0, "", err
	}
	var cfg struct {
		MaxPos int `json:"max_position_embeddings"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		return 0, "", fmt.Errorf("%s: %w", p, err)
	}
	if cfg.MaxPos < 2 {
		return 512, "default (config.json has no max_position_embeddings)", nil
	}
	return cfg.MaxPos, "config.json max_position_embeddings", nil
}

func choiceText(r *ChoiceEvalResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: accuracy %.4f ± %.4f (%d/%d); majority-class baseline %.4f (always %q)\n",
		r.Task, r.Accuracy, r.StdErr, r.Correct, r.Examples, r.Baseline, r.Majority)
	conts := make([]string, len(r.Labels))
	for i, l := range r.Labels {
		conts[i] = fmt.Sprintf("%q", " "+l)
	}
	fmt.Fprintf(&b, "%s of %s; summed log-likelihood of %s after %s, %s, at most %d tokens (%s)",
		r.Subset, r.Data, strings.Join(conts, " vs "), r.Prompt, r.BOS, r.SeqLen, r.SeqFrom)
	if r.Truncated > 0 {
		fmt.Fprintf(&b, "; %d of %d contexts cut from the left", r.Truncated, r.Examples)
	}
	fmt.Fprintf(&b, " (%.1fs)\n", r.Seconds)
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "gold \\ predicted\t")
	for _, l := range r.Labels {
		fmt.Fprintf(tw, "%s\t", l)
	}
	fmt.Fprint(tw, "total\t\n")
	for g, l := range r.Labels {
		fmt.Fprintf(tw, "%s\t", l)
		for p := range r.Labels {
			fmt.Fprintf(tw, "%d\t", r.Confusion[g][p])
		}
		fmt.Fprintf(tw, "%d\t\n", r.Gold[g])
	}
	fmt.Fprint(tw, "total\t")
	for p := range r.Labels {
		fmt.Fprintf(tw, "%d\t", r.Predicted[p])
	}
	fmt.Fprintf(tw, "%d\t\n", r.Examples)
	tw.Flush()
	return b.String()
}
