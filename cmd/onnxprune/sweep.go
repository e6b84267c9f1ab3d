package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
)

// Files a sweep writes into its output directory (besides k<k>/).
const (
	sweepReportJSON = "report.json"
	sweepReportMD   = "report.md"
	sweepQualityFig = "quality.svg"
	sweepSpeedFig   = "speed.svg"
)

func sweepCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` for the pruned models and the report"},
		&cli.IntFlag{Name: "max-remove", Usage: "K: prune 0, 1, …, K blocks"},
		&cli.StringFlag{Name: "strategy", Value: "angular", Usage: "angular, bi, last or sleb"},
		&cli.StringFlag{Name: "stats", Usage: "stats.json from calibrate (angular, bi; else --data calibrates now)"},
		&cli.BoolFlag{Name: "all-tokens", Usage: "angular: use d(l, n) over all real tokens, not the last"},
		&cli.BoolFlag{Name: "bench", Value: true, Usage: "measure speed and memory of every point (--bench=false: quality only)"},
		&cli.BoolFlag{Name: "force", Usage: "overwrite an earlier sweep in the output directory"},
		&cli.BoolFlag{Name: "json", Usage: "print report.json to stdout"},
	}
	flags = append(flags, dataFlags()...)
	flags = append(flags, pplTask().Flags...)
	flags = append(flags, benchFlags()...)
	flags = append(flags, runtimeFlags()...)
	return &cli.Command{
		Name:      "sweep",
		Usage:     "prune 0…K blocks, evaluate and benchmark each, write one report with plots",
		ArgsUsage: "MODEL.onnx",
		Description: `For k = 0, 1, …, K: chooses k blocks with --strategy, removes them from a fresh
copy of the model and writes it to OUTDIR/k<k>/ (as prune does: sidecars and
plan.json), measures perplexity on --data (the flags of "eval --task ppl") and,
unless --bench=false, prefill latency and decode tokens/s, each pruned model
interleaved run by run with the unpruned one (A B A B …) so that its speedup
holds on a noisy machine. Writes OUTDIR/report.json, report.md, quality.svg
(perplexity vs blocks removed) and speed.svg (decode tokens/s, prefill latency
and speedup vs blocks removed, with the ideal L/(L−k)).

angular and bi calibrate once (on --data, or read --stats) and choose for each
k independently: angular's run for k need not contain its run for k−1. sleb
removes one block at a time, so its choice for k extends its choice for k−1.

Examples:
  onnxprune sweep model.onnx --max-remove 4 --data valid.txt --samples 50 -o sweep/
  onnxprune sweep model.onnx --max-remove 8 --strategy bi --stats stats.json --data valid.txt -o sweep-bi/`,
		Flags: flags,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("sweep: want one MODEL argument, got %d", cmd.NArg())
			}
			if cmd.String("output") == "" {
				return usagef("sweep: -o OUTDIR is required")
			}
			if cmd.Int("max-remove") < 1 {
				return usagef("sweep: --max-remove K is required (at least 1)")
			}
			if cmd.String("data") == "" {
				return usagef("sweep: --data FILE is required (the text perplexity is measured on)")
			}
			r, err := runSweep(ctx, cmd, cmd.Args().First(), cmd.String("output"), int(cmd.Int("max-remove")))
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				return r.WriteJSON(w)
			}
			printSweep(w, r)
			return nil
		},
	}
}

// runSweep does the work and returns the report it wrote.
func runSweep(ctx context.Context, cmd *cli.Command, path, outDir string, K int) (*eval.Report, error) {
	m0, err := graph.Load(path)
	if err != nil {
		return nil, err
	}
	d0, err := graph.FindBlocks(m0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	L := len(d0.Blocks)
	if K >= L {
		return nil, usagef("sweep: --max-remove %d: the model has %d blocks, at least one must stay", K, L)
	}
	if _, err := os.Stat(filepath.Join(outDir, sweepReportJSON)); err == nil && !cmd.Bool("force") {
		return nil, fmt.Errorf("%s exists (use --force to overwrite)", filepath.Join(outDir, sweepReportJSON))
	}
	var bopts eval.BenchOptions
	if cmd.Bool("bench") {
		if bopts, err = benchOptions(cmd); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	plans, selection, err := sweepPlans(ctx, cmd, m0, L, K, path, outDir)
	if err != nil {
		return nil, err
	}
	size, err := eval.ModelFileBytes(m0)
	if err != nil {
		return nil, err
	}
	r := &eval.Report{Schema: eval.ReportSchema, Tool: "onnxprune sweep", Created: time.Now().UTC().Format(time.RFC3339),
		Model: path, Blocks: L, Params: graph.TotalParams(m0), FileBytes: size,
		Strategy: cmd.String("strategy"), Selection: selection, Environment: eval.CurrentEnvironment()}
	m0, d0 = nil, nil // each point prunes a fresh load; let this one go

	var base *eval.BenchModel
	if cmd.Bool("bench") {
		t := bopts.Runtime.Threads
		r.Bench = &eval.BenchSetup{PromptLen: bopts.PromptLen, DecodeTokens: bopts.DecodeTokens, Runs: bopts.Runs,
			Warmup: bopts.Warmup, Seed: bopts.Seed, Device: bopts.Runtime.Device, Threads: t,
			Interleaving: "each pruned model interleaved run by run with the unpruned one (A B A B …)"}
		if base, err = eval.OpenBenchModel(path, bopts); err != nil {
			return nil, err
		}
		defer base.Close()
	}

	for k := 0; k <= K; k++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		p := eval.SweepPoint{Removed: k, Blocks: L - k, RemovedBlocks: []int{}, Model: path, Params: r.Params, FileBytes: r.FileBytes}
		if k > 0 {
			plan := plans[k-1]
			plan.Model = path
			dir := filepath.Join(outDir, fmt.Sprintf("k%d", k))
			logf(cmd, "sweep k=%d: removing %s", k, plan.Reason)
			m, err := graph.Load(path)
			if err != nil {
				return nil, err
			}
			d, err := graph.FindBlocks(m)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			sum, err := writePruned(m, d, plan, dir, cmd.Bool("force"))
			if err != nil {
				return nil, err
			}
			pm, err := graph.Load(sum.Output)
			if err != nil {
				return nil, err
			}
			if p.FileBytes, err = eval.ModelFileBytes(pm); err != nil {
				return nil, err
			}
			p.Model, p.Params, p.RemovedBlocks = sum.Output, sum.ParamsAfter, plan.Remove
			rel, _ := filepath.Rel(outDir, filepath.Join(dir, "plan.json"))
			p.Plan = &eval.PointPlan{Strategy: plan.Strategy, Score: plan.Score, Reason: plan.Reason, File: filepath.ToSlash(rel)}
		} else {
			logf(cmd, "sweep k=0: the unpruned model")
		}

		ppl, err := evalPerplexity(ctx, cmd, p.Model)
		if err != nil {
			return nil, err
		}
		p.Perplexity, p.MeanNLL, p.TokensScored, p.EvalSeconds = ppl.Perplexity, ppl.MeanNLL, ppl.Tokens, ppl.Seconds
		if k == 0 {
			r.Quality = eval.QualitySetup{Metric: "perplexity", Data: ppl.Data, Samples: ppl.Samples,
				SeqLen: int(cmd.Int("seq-len")), Method: ppl.Method}
		}

		if base != nil {
			if err := benchPoint(ctx, cmd, bopts, base, &p); err != nil {
				return nil, err
			}
		}
		r.Points = append(r.Points, p)
		// The report is rewritten after every point, so an interrupted
		// sweep leaves what it measured.
		if err := writeSweepReport(r, outDir); err != nil {
			return nil, err
		}
		msg := fmt.Sprintf("sweep k=%d: perplexity %.4f", k, p.Perplexity)
		if p.Bench != nil {
			msg += fmt.Sprintf(", decode %s tok/s", sig4(p.Bench.DecodeTokensPerS.Median))
		}
		if p.VsBase != nil {
			msg += fmt.Sprintf(" (%.3f× the unpruned, ideal %.3f×)", p.VsBase.DecodeSpeedup, p.VsBase.IdealSpeedup)
		}
		logf(cmd, "%s", msg)
	}
	logf(cmd, "wrote %s", strings.Join(sweepFiles(r, outDir), ", "))
	return r, nil
}

// benchPoint measures point p: the unpruned model alone for k = 0, else the
// pruned model interleaved with it.
func benchPoint(ctx context.Context, cmd *cli.Command, bopts eval.BenchOptions, base *eval.BenchModel, p *eval.SweepPoint) error {
	pr := newProgress(cmd, fmt.Sprintf("bench k=%d", p.Removed))
	bopts.Progress = pr.update
	if p.Removed == 0 {
		res, err := eval.BenchModels(ctx, []*eval.BenchModel{base}, bopts)
		if err != nil {
			return err
		}
		p.Bench = res[0]
		return nil
	}
	pm, err := eval.OpenBenchModel(p.Model, bopts)
	if err != nil {
		return err
	}
	defer pm.Close()
	res, err := eval.BenchModels(ctx, []*eval.BenchModel{base, pm}, bopts)
	if err != nil {
		return err
	}
	// The sweep knows how many blocks it left, also where FindBlocks sees
	// no repeated structure in what remains (a single block).
	res[1].Blocks, res[1].BlocksError = p.Blocks, ""
	p.Bench, p.VsBase = res[1], eval.Compare(res[0], res[1])
	return nil
}

// sweepPlans chooses the blocks for k = 1…K and says how.
func sweepPlans(ctx context.Context, cmd *cli.Command, m *graph.Model, L, K int, path, outDir string) ([]*calib.Plan, string, error) {
	var plans []*calib.Plan
	switch s := cmd.String("strategy"); s {
	case "last":
		for k := 1; k <= K; k++ {
			p, err := calib.SelectLast(L, k)
			if err != nil {
				return nil, "", err
			}
			plans = append(plans, p)
		}
		return plans, "the k blocks before the last", nil
	case "angular", "bi":
		st, from, err := sweepStats(ctx, cmd, path, outDir)
		if err != nil {
			return nil, "", err
		}
		if st.Layers != L {
			return nil, "", fmt.Errorf("%s: statistics are for %d blocks, the model has %d", from, st.Layers, L)
		}
		for k := 1; k <= K; k++ {
			var p *calib.Plan
			if s == "bi" {
				p, err = calib.SelectBI(st, k)
			} else {
				p, err = calib.SelectAngular(st, k, cmd.Bool("all-tokens"))
			}
			if err != nil {
				return nil, "", err
			}
			plans = append(plans, p)
		}
		where := "last real token"
		if cmd.Bool("all-tokens") {
			where = "all real tokens"
		}
		if s == "bi" {
			return plans, fmt.Sprintf("the k lowest Block Influence 1 − E[cos(h_i, h_i+1)] over %d tokens of %d samples (%s)", st.Tokens, st.Samples, from), nil
		}
		return plans, fmt.Sprintf("the contiguous run minimising the angular distance d(l, k) over %d samples, %s (%s)", st.Samples, where, from), nil
	case "sleb":
		ro, err := runtimeOptions(cmd)
		if err != nil {
			return nil, "", err
		}
		batches, _, err := calibrationBatches(cmd, path)
		if err != nil {
			return nil, "", err
		}
		logf(cmd, "sweep: SLEB, removing %d blocks one at a time", K)
		pr := newProgress(cmd, "sleb")
		p, err := calib.SelectSLEB(ctx, m, L, K, batches, ro, pr.update)
		if err != nil {
			return nil, "", err
		}
		if plans, err = slebPrefixes(p, L, K); err != nil {
			return nil, "", err
		}
		return plans, fmt.Sprintf("SLEB: one block at a time, the removal raising perplexity on %s (%d samples) least", cmd.String("data"), cmd.Int("samples")), nil
	default:
		return nil, "", usagef("--strategy %q: want one of angular, bi, last, sleb", s)
	}
}

// sweepStats reads --stats, or calibrates on --data and keeps the result
// as OUTDIR/stats.json (with its heatmap) for later prune runs.
func sweepStats(ctx context.Context, cmd *cli.Command, path, outDir string) (*calib.Stats, string, error) {
	if p := cmd.String("stats"); p != "" {
		st, err := statsFor(ctx, cmd, path)
		return st, p, err
	}
	sf, err := runCalibration(ctx, cmd, path)
	if err != nil {
		return nil, "", err
	}
	out := filepath.Join(outDir, "stats.json")
	b, _ := json.MarshalIndent(sf, "", "  ")
	if err := writeFileAtomic(out, append(b, '\n')); err != nil {
		return nil, "", err
	}
	var sb strings.Builder
	calib.WriteHeatmapSVG(&sb, sf.Stats, cmd.Bool("all-tokens"), "onnxprune calibrate: "+path)
	if err := writeFileAtomic(filepath.Join(outDir, "stats.svg"), []byte(sb.String())); err != nil {
		return nil, "", err
	}
	return sf.Stats, "calibrated on " + cmd.String("data") + ", stats.json", nil
}

// slebPrefixes turns one SLEB plan for K blocks into the plans for 1…K.
// SLEB is greedy, so its choice for k is the first k steps of its choice
// for K; the steps are recovered from the candidates it records (step s
// tries the L−s remaining blocks, in order, and keeps the first lowest).
func slebPrefixes(p *calib.Plan, L, K int) ([]*calib.Plan, error) {
	var plans []*calib.Plan
	off := 0
	for s := range K {
		n := L - s
		if off+n > len(p.Candidates) {
			return nil, fmt.Errorf("sleb: plan has %d candidates, want %d steps over %d blocks", len(p.Candidates), K, L)
		}
		step := p.Candidates[off : off+n]
		best := 0
		for i, c := range step {
			if c.Score < step[best].Score {
				best = i
			}
		}
		off += n
		if s == K-1 {
			plans = append(plans, p)
			break
		}
		c := step[best]
		plans = append(plans, &calib.Plan{Blocks: L, Strategy: "sleb", Remove: c.Remove, Score: c.Score,
			Reason: fmt.Sprintf("blocks %s: removed one at a time, each the block whose removal raised calibration perplexity least (final %.4f)",
				graph.FormatBlocks(c.Remove), c.Score),
			Candidates: p.Candidates[:off]})
	}
	return plans, nil
}

// writeSweepReport writes report.json, report.md and the plots.
func writeSweepReport(r *eval.Report, outDir string) error {
	var js strings.Builder
	if err := r.WriteJSON(&js); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(outDir, sweepReportJSON), []byte(js.String())); err != nil {
		return err
	}
	figs := []string{sweepQualityFig}
	var q strings.Builder
	if err := eval.WriteSVG(&q, "onnxprune sweep: "+filepath.Base(r.Model)+", strategy "+r.Strategy, 640, 420, r.QualityPlot()); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(outDir, sweepQualityFig), []byte(q.String())); err != nil {
		return err
	}
	if panels := r.SpeedPlots(); panels != nil {
		var s strings.Builder
		if err := eval.WriteSVG(&s, "onnxprune sweep: "+filepath.Base(r.Model)+", speed vs blocks removed ("+r.Bench.Device+")", 420, 400, panels...); err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(outDir, sweepSpeedFig), []byte(s.String())); err != nil {
			return err
		}
		figs = append(figs, sweepSpeedFig)
	}
	var md strings.Builder
	if err := r.WriteMarkdown(&md, figs...); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(outDir, sweepReportMD), []byte(md.String()))
}

// sweepFiles lists what the sweep wrote.
func sweepFiles(r *eval.Report, outDir string) []string {
	fs := []string{filepath.Join(outDir, sweepReportJSON), filepath.Join(outDir, sweepReportMD), filepath.Join(outDir, sweepQualityFig)}
	if r.Bench != nil {
		fs = append(fs, filepath.Join(outDir, sweepSpeedFig))
	}
	return fs
}

// printSweep prints one line per point.
func printSweep(w io.Writer, r *eval.Report) {
	fmt.Fprintf(w, "%s: %d blocks, strategy %s; %s on %s\n", r.Model, r.Blocks, r.Strategy, r.Quality.Metric, r.Quality.Data)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "k\tremoved\tparams\tperplexity\t"
	if r.Bench != nil {
		head += "decode tok/s\tspeedup\tideal\tof ideal\tprefill ms\t"
	}
	fmt.Fprintln(tw, head)
	for _, p := range r.Points {
		removed := graph.FormatBlocks(p.RemovedBlocks)
		if removed == "" {
			removed = "–"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.4f\t", p.Removed, removed, thousands(p.Params), p.Perplexity)
		if b := p.Bench; b != nil {
			sp, ideal, of := "1.000×", "1.000×", "–"
			if c := p.VsBase; c != nil {
				sp = fmt.Sprintf("%.3f×", c.DecodeSpeedup)
				if c.IdealSpeedup > 0 {
					ideal, of = fmt.Sprintf("%.3f×", c.IdealSpeedup), fmt.Sprintf("%.1f%%", 100*c.DecodeOfIdeal)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t", statText(b.DecodeTokensPerS), sp, ideal, of, statText(b.PrefillMS))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}
