package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/eval"
)

// benchFlags are shared by bench and sweep; they include the energy
// meter's.
func benchFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.IntFlag{Name: "prompt-len", Value: 128, Usage: "prefill: tokens run through the model at once (batch 1)"},
		&cli.IntFlag{Name: "decode-tokens", Value: 64, Usage: "decode: tokens generated one at a time through the KV cache after the prefill (batch 1)"},
		&cli.IntFlag{Name: "runs", Value: 5, Usage: "measured runs per model"},
		&cli.IntFlag{Name: "warmup", Value: 1, Usage: "warm-up runs per model (not measured)"},
		&cli.IntFlag{Name: "seed", Value: 1, Usage: "seed of the random token ids (timing does not depend on them; no tokenizer needed)"},
	}, energyFlags()...)
}

// benchOptions reads the bench flags.
func benchOptions(cmd *cli.Command) (eval.BenchOptions, error) {
	o := eval.BenchOptions{PromptLen: int(cmd.Int("prompt-len")), DecodeTokens: int(cmd.Int("decode-tokens")),
		Runs: int(cmd.Int("runs")), Warmup: int(cmd.Int("warmup")), Seed: uint64(cmd.Int("seed"))}
	switch {
	case o.PromptLen < 1 || o.DecodeTokens < 1:
		return o, usagef("--prompt-len and --decode-tokens must be at least 1")
	case o.Runs < 1 || o.Warmup < 0:
		return o, usagef("--runs must be at least 1 and --warmup at least 0")
	}
	meter, err := newEnergyMeter(cmd)
	if err != nil {
		return o, err
	}
	o.Meter = meter
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return o, err
	}
	o.Runtime = ro
	return o, nil
}

// BenchSummary is what `bench --json` prints.
type BenchSummary struct {
	Results []*eval.BenchResult `json:"results"`
	// Comparison is B against A when there are exactly two models;
	// Comparisons holds every model against the first (B, C, … vs A).
	Comparison  *eval.Comparison   `json:"comparison,omitempty"`
	Comparisons []*eval.Comparison `json:"comparisons,omitempty"`
	Environment eval.Environment   `json:"environment"`
}

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure speed and memory: prefill latency, decode tokens/s; compare models run by run",
		ArgsUsage: "A.onnx [B.onnx …]",
		Description: `Times a prefill of --prompt-len random tokens (one forward pass, batch 1) and
then --decode-tokens single-token steps through the KV cache (only these are
timed for decode tokens/s), after --warmup runs, --runs times; prints the median
and min–max, the file size (model + external data), parameters and peak RSS.

With two models the runs are interleaved (A B A B …), so that a machine getting
faster or slower affects both alike, and B is reported against A as ratios of
medians — and against the ideal L_A/L_B when both are decoders with blocks (the
speedup removing blocks would give if all time were spent in them).

Peak RSS is the whole process's (both models are loaded), reset before each run
where Linux allows it; the memory each session added when it was loaded is
reported separately. Energy is measured over each prefill and each run's decode
steps: RAPL when readable (the whole CPU package, every process), else estimated
from CPU time × --watts-per-core and labelled "estimated".

Examples:
  onnxprune bench model.onnx
  onnxprune bench original/model.onnx pruned/model.onnx --runs 10 --threads 4`,
		Flags: append(append(benchFlags(), runtimeFlags()...),
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() < 1 {
				return usagef("bench: want at least one MODEL argument")
			}
			opts, err := benchOptions(cmd)
			if err != nil {
				return err
			}
			paths := cmd.Args().Slice()
			pr := newProgress(cmd, "bench")
			opts.Progress = pr.update
			logf(cmd, "bench: %d model(s), %d warm-up + %d runs each%s", len(paths), opts.Warmup, opts.Runs,
				map[bool]string{true: ", interleaved A B … A B …", false: ""}[len(paths) >= 2])
			res, err := eval.Bench(ctx, paths, opts)
			if err != nil {
				return err
			}
			sum := BenchSummary{Results: res, Environment: eval.CurrentEnvironment()}
			for _, r := range res[1:] {
				sum.Comparisons = append(sum.Comparisons, eval.Compare(res[0], r))
			}
			if len(res) == 2 {
				sum.Comparison = sum.Comparisons[0]
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				b, _ := json.MarshalIndent(sum, "", "  ")
				_, err := fmt.Fprintf(w, "%s\n", b)
				return err
			}
			printBench(w, &sum)
			return nil
		},
	}
}

// printBench prints the table and the comparison.
func printBench(w io.Writer, s *BenchSummary) {
	r0 := s.Results[0]
	threads := fmt.Sprint(r0.Threads)
	if r0.Threads == 0 {
		threads = "default"
	}
	kv := "through the KV cache"
	if !r0.KVCache {
		kv = "recomputing the sequence (no KV cache)"
	}
	fmt.Fprintf(w, "prefill %d random tokens, then %d decode steps %s; batch 1, %d runs after %d warm-up; %s, threads %s\n",
		r0.PromptLen, r0.DecodeTokens, kv, r0.Runs, r0.Warmup, r0.Device, threads)
	fmt.Fprintf(w, "median [min–max]; %s, %d CPUs, onnxruntime %s\n\n", orDash(s.Environment.CPU), s.Environment.CPUs, s.Environment.ONNXRuntime)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tmodel\tblocks\tparams\tfile\tload\tprefill ms\tprefill tok/s\tdecode tok/s\tpeak RSS\t")
	for i, r := range s.Results {
		blocks := fmt.Sprint(r.Blocks)
		if r.Blocks == 0 {
			blocks = "–"
		}
		fmt.Fprintf(tw, "%c\t%s\t%s\t%s\t%s\t%.2fs\t%s\t%s\t%s\t%s\t\n", 'A'+i, r.Model, blocks, thousands(r.Params),
			humanBytes(r.FileBytes), r.LoadSeconds, statText(r.PrefillMS), sig4(r.PrefillTokensPerS.Median), statText(r.DecodeTokensPerS), humanBytes(r.PeakRSSBytes))
	}
	tw.Flush()
	for i, r := range s.Results {
		if r.GPUMemoryBytes > 0 {
			fmt.Fprintf(w, "%c: GPU memory %s (%s)\n", 'A'+i, humanBytes(r.GPUMemoryBytes), r.GPUMemorySource)
		}
		if e := r.Energy; e != nil {
			note := e.Source
			if e.Estimated {
				note = "estimated from CPU time × --watts-per-core, not measured"
			} else if strings.Contains(e.Source, "rapl") {
				note += ": the whole CPU package, every process"
			}
			fmt.Fprintf(w, "%c: energy: prefill %s J, decode %s J/token (%s)\n", 'A'+i, statText(e.PrefillJoules), statText(e.DecodeJoulesPerToken), note)
		}
	}
	for i, c := range s.Comparisons {
		name := 'B' + rune(i)
		fmt.Fprintf(w, "\n%c vs A (interleaved run by run; ratios of medians, [min–max] over run pairs):\n", name)
		fmt.Fprintf(w, "  decode   %.3f× faster [%.3f–%.3f]", c.DecodeSpeedup, c.DecodeSpeedupPairs.Min, c.DecodeSpeedupPairs.Max)
		blockCut := c.IdealSpeedup > 0 && c.BlocksA != c.BlocksB // the ideal says nothing of width cuts
		if blockCut {
			fmt.Fprintf(w, "; ideal %d/%d blocks = %.3f×: %.1f%% of ideal", c.BlocksA, c.BlocksB, c.IdealSpeedup, 100*c.DecodeOfIdeal)
		}
		fmt.Fprintf(w, "\n  prefill  %.3f× faster [%.3f–%.3f] (latency ratio %c/A %.3f)", c.PrefillSpeedup, c.PrefillSpeedupPairs.Min, c.PrefillSpeedupPairs.Max, name, c.PrefillLatencyRatio)
		if blockCut {
			fmt.Fprintf(w, "; %.1f%% of ideal", 100*c.PrefillOfIdeal)
		}
		fmt.Fprintf(w, "\n  size     parameters %.3f×, file %.3f×\n", c.ParamsRatio, c.FileRatio)
	}
	fmt.Fprintf(w, "\npeak RSS: %s\n", r0.PeakRSSScope)
	for i, r := range s.Results {
		fmt.Fprintf(w, "%c: session load added %s resident\n", 'A'+i, humanBytes(r.RSSLoadBytes))
	}
}

// statText is "median [min–max]" with 4 significant digits.
func statText(s eval.Stat) string {
	return fmt.Sprintf("%s [%s–%s]", sig4(s.Median), sig4(s.Min), sig4(s.Max))
}

// sig4 prints 4 significant digits, but whole numbers from 10,000 up
// without an exponent (80901, not 8.09e+04).
func sig4(v float64) string {
	if math.Abs(v) >= 1e4 && math.Abs(v) < 1e12 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "–"
	}
	return s
}
