package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
)

func pruneCommand() *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "remove decoder blocks (with their KV-cache inputs and outputs)",
		ArgsUsage: "MODEL.onnx",
		Description: `Chooses blocks to remove, rewrites the graph so the residual stream skips them,
deletes their nodes, weights and KV-cache I/O, renumbers what remains, and
writes the pruned model, its config.json/genai_config.json (layer counts
updated), tokenizer files and plan.json into the output directory.

Choosing:
  --layers 2,3          exactly these blocks
  --plan plan.json      a plan written by an earlier prune or run
  --remove N            N blocks by --strategy:
      angular  contiguous run minimising d(l, N) (needs --stats or --data)
      bi       lowest Block Influence, any positions (needs --stats or --data)
      last     the N blocks before the last
      sleb     one at a time, least calibration-perplexity increase (needs --data)

Examples:
  onnxprune prune model.onnx --layers 3 -o pruned/
  onnxprune prune model.onnx --remove 2 --stats stats.json -o pruned/
  onnxprune prune model.onnx --remove 1 --strategy sleb --data valid.txt --samples 16 -o pruned/`,
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created; must not be the model's own)"},
			&cli.StringFlag{Name: "layers", Usage: "blocks to remove, e.g. 2,3 or 4-6"},
			&cli.StringFlag{Name: "plan", Usage: "plan.json to apply"},
			&cli.IntFlag{Name: "remove", Usage: "number of blocks to remove (with --strategy)"},
			&cli.StringFlag{Name: "strategy", Value: "angular", Usage: "angular, bi, last or sleb"},
			&cli.StringFlag{Name: "stats", Usage: "stats.json from calibrate (else --data calibrates now)"},
			&cli.BoolFlag{Name: "all-tokens", Usage: "angular: use d(l, n) over all real tokens, not the last"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing model in the output directory"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary"},
		}, dataFlags()...), runtimeFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			model, outDir, err := modelAndOutput(cmd)
			if err != nil {
				return err
			}
			return runPrune(ctx, cmd, model, outDir)
		},
	}
}

// PruneSummary is what `prune --json` prints.
type PruneSummary struct {
	Model        string      `json:"model"`
	Output       string      `json:"output"`
	Plan         *calib.Plan `json:"plan"`
	BlocksBefore int         `json:"blocks_before"`
	BlocksAfter  int         `json:"blocks_after"`
	ParamsBefore int64       `json:"params_before"`
	ParamsAfter  int64       `json:"params_after"`
	Files        []string    `json:"files"`
}

func runPrune(ctx context.Context, cmd *cli.Command, path, outDir string) error {
	m, err := graph.Load(path)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	L := len(d.Blocks)
	plan, err := choosePlan(ctx, cmd, m, d, path)
	if err != nil {
		return err
	}
	if plan.Blocks != 0 && plan.Blocks != L {
		return fmt.Errorf("%s: the plan is for a model with %d blocks, this one has %d", cmd.String("plan"), plan.Blocks, L)
	}
	plan.Model = path
	sum, err := writePruned(m, d, plan, outDir, cmd.Bool("force"))
	if err != nil {
		return err
	}
	before, kept, outModel, files := sum.ParamsBefore, sum.BlocksAfter, sum.Output, sum.Files
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		b, _ := json.MarshalIndent(sum, "", "  ")
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	fmt.Fprintf(w, "removed %s (strategy %s)\n", plan.Reason, plan.Strategy)
	fmt.Fprintf(w, "blocks %d → %d, parameters %s → %s (−%.1f%%)\n", L, kept, thousands(before), thousands(sum.ParamsAfter),
		100*float64(before-sum.ParamsAfter)/float64(max(before, 1)))
	fmt.Fprintf(w, "wrote %s (%v)\n", outModel, files[1:])
	return nil
}

// writePruned removes plan.Remove from m (loaded from m.Path, with blocks
// d) and writes the pruned model under its own file name into outDir with
// its sidecars (config.json, genai_config.json, tokenizer files) and
// plan.json. It modifies m. prune and sweep share it.
func writePruned(m *graph.Model, d *graph.Decoder, plan *calib.Plan, outDir string, force bool) (*PruneSummary, error) {
	path := m.Path
	before := graph.TotalParams(m)
	outModel := filepath.Join(outDir, filepath.Base(path))
	if _, err := os.Stat(outModel); err == nil && !force {
		return nil, fmt.Errorf("%s exists (use --force to overwrite)", outModel)
	}
	if err := rewrite.RemoveBlocks(m, d, plan.Remove); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return savePruned(m, len(d.Blocks), before, plan, outDir)
}

// savePruned writes m, already pruned by plan from a model of L blocks
// and paramsBefore parameters at m.Path, into outDir with the original's
// sidecars (updated for the blocks kept) and plan.json.
func savePruned(m *graph.Model, L int, paramsBefore int64, plan *calib.Plan, outDir string) (*PruneSummary, error) {
	path := m.Path
	if err := graph.Check(m); err != nil {
		return nil, fmt.Errorf("%s: pruned graph invalid: %w", path, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	outModel := filepath.Join(outDir, filepath.Base(path))
	if err := graph.Save(m, outModel, graph.SaveOptions{}); err != nil {
		return nil, err
	}
	var kept []int
	for b := range L {
		if !slices.Contains(plan.Remove, b) {
			kept = append(kept, b)
		}
	}
	files := []string{filepath.Base(outModel)}
	side, err := rewrite.WriteSidecars(filepath.Dir(path), outDir, L, kept)
	if err != nil {
		return nil, err
	}
	files = append(files, side...)
	if err := calib.WritePlan(plan, filepath.Join(outDir, "plan.json")); err != nil {
		return nil, err
	}
	files = append(files, "plan.json")
	return &PruneSummary{Model: path, Output: outModel, Plan: plan, BlocksBefore: L, BlocksAfter: len(kept),
		ParamsBefore: paramsBefore, ParamsAfter: graph.TotalParams(m), Files: files}, nil
}

// choosePlan turns the selection flags into a plan.
func choosePlan(ctx context.Context, cmd *cli.Command, m *graph.Model, d *graph.Decoder, path string) (*calib.Plan, error) {
	L := len(d.Blocks)
	set := 0
	for _, f := range []string{"layers", "plan"} {
		if cmd.String(f) != "" {
			set++
		}
	}
	if cmd.Int("remove") != 0 {
		set++
	}
	if set != 1 {
		return nil, usagef("prune: give exactly one of --layers, --plan, --remove N")
	}
	switch {
	case cmd.String("layers") != "":
		layers, err := calib.ParseLayers(cmd.String("layers"))
		if err != nil {
			return nil, usagef("%v", err)
		}
		return calib.SelectLayers(L, layers)
	case cmd.String("plan") != "":
		return calib.ReadPlan(cmd.String("plan"))
	}
	n := int(cmd.Int("remove"))
	switch s := cmd.String("strategy"); s {
	case "last":
		return calib.SelectLast(L, n)
	case "angular", "bi":
		st, err := statsFor(ctx, cmd, path)
		if err != nil {
			return nil, err
		}
		if st.Layers != L {
			return nil, fmt.Errorf("%s: statistics are for %d blocks, the model has %d", cmd.String("stats"), st.Layers, L)
		}
		if s == "bi" {
			return calib.SelectBI(st, n)
		}
		return calib.SelectAngular(st, n, cmd.Bool("all-tokens"))
	case "sleb":
		ro, err := runtimeOptions(cmd)
		if err != nil {
			return nil, err
		}
		batches, _, err := calibrationBatches(cmd, path)
		if err != nil {
			return nil, err
		}
		pr := newProgress(cmd, "sleb")
		return calib.SelectSLEB(ctx, m, L, n, batches, ro, pr.update)
	default:
		return nil, usagef("--strategy %q: want one of angular, bi, last, sleb", s)
	}
}

// statsFor reads --stats, or calibrates on --data.
func statsFor(ctx context.Context, cmd *cli.Command, path string) (*calib.Stats, error) {
	if p := cmd.String("stats"); p != "" {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var sf StatsFile
		if err := json.Unmarshal(b, &sf); err != nil || sf.Stats == nil || len(sf.Angular) == 0 {
			return nil, fmt.Errorf("%s: not a stats.json written by onnxprune calibrate", p)
		}
		return sf.Stats, nil
	}
	if cmd.String("data") == "" {
		return nil, usagef("--strategy %s needs --stats FILE or --data FILE", cmd.String("strategy"))
	}
	sf, err := runCalibration(ctx, cmd, path)
	if err != nil {
		return nil, err
	}
	return sf.Stats, nil
}
