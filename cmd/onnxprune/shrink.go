package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
)

func shrinkCommand() *cli.Command {
	return &cli.Command{
		Name:      "shrink",
		Usage:     "structured width pruning: remove FFN channels and attention heads (KV groups)",
		ArgsUsage: "MODEL.onnx",
		Description: `Removes FFN intermediate channels (the up projections' output columns with the
down projection's input rows; SwiGLU and GELU MLPs) and whole KV groups of
attention (a KV head with the query heads that read it: q/k/v output slices,
o_proj input rows). Weights are sliced and every shape stating a width —
Reshape targets, the KV-cache inputs/outputs, config.json/genai_config.json —
is rewritten, so the model is smaller and faster on any kernel. Writes the
model, sidecar files and shrink.json (the plan: which channels and groups went).

Choosing:
  --ffn-ratio R            remove the fraction R of each block's FFN channels
  --ffn-global             … of all blocks' channels together (widths then differ)
  --remove-kv-groups N     remove N KV groups from each block
  --criterion magnitude    rank by the norms of the weights reading and writing a unit
  --criterion activation   rank by mean |activation| × output weight norm (needs --data)
  --layers 0,2-4           only these blocks
  --remove-blocks 3,4      also remove these blocks (depth pruning, as prune --layers)
  --plan shrink.json       exactly what an earlier plan says, or a recipe:
                           {"remove_blocks": [3, 4], "ffn_ratio": 0.25,
                            "remove_kv_groups": 1, "criterion": "magnitude"}

Supported graphs: Llama-family attention with separate q/k/v/o projections
(Hugging Face exports, our converter); GPT-2's fused c_attn supports FFN
shrinking only. Anything else is refused with the node that does not fit.

Examples:
  onnxprune shrink model.onnx --ffn-ratio 0.25 -o narrow/
  onnxprune shrink model.onnx --remove-kv-groups 1 --criterion activation --data valid.txt -o fewer-heads/`,
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created; must not be the model's own)"},
			&cli.FloatFlag{Name: "ffn-ratio", Usage: "fraction of FFN channels to remove, in [0, 1)"},
			&cli.BoolFlag{Name: "ffn-global", Usage: "rank FFN channels over all blocks (a global budget) instead of per block"},
			&cli.IntFlag{Name: "remove-kv-groups", Usage: "KV groups (KV head + its query heads) to remove per block"},
			&cli.StringFlag{Name: "criterion", Value: rewrite.CriterionMagnitude, Usage: "magnitude or activation"},
			&cli.StringFlag{Name: "layers", Usage: "blocks to shrink, e.g. 0,2-4 (default: all)"},
			&cli.StringFlag{Name: "remove-blocks", Usage: "blocks to remove as well, e.g. 3,4 (depth pruning)"},
			&cli.StringFlag{Name: "plan", Usage: "shrink.json to apply"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing model in the output directory"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary"},
		}, dataFlags()...), runtimeFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			model, outDir, err := modelAndOutput(cmd)
			if err != nil {
				return err
			}
			opts, err := shrinkOptions(cmd)
			if err != nil {
				return err
			}
			return runShrink(ctx, cmd, model, outDir, opts)
		},
	}
}

func shrinkOptions(cmd *cli.Command) (rewrite.ShrinkOptions, error) {
	o := rewrite.ShrinkOptions{FFNRatio: cmd.Float("ffn-ratio"), FFNGlobal: cmd.Bool("ffn-global"),
		RemoveKVGroups: int(cmd.Int("remove-kv-groups")), Criterion: cmd.String("criterion")}
	if cmd.String("plan") != "" && (cmd.IsSet("ffn-ratio") || cmd.IsSet("remove-kv-groups") || cmd.IsSet("layers") ||
		cmd.IsSet("remove-blocks") || cmd.IsSet("ffn-global")) {
		return o, usagef("shrink: --plan says what to remove; it excludes --ffn-ratio, --ffn-global, --remove-kv-groups, --layers and --remove-blocks")
	}
	for flag, dst := range map[string]*[]int{"layers": &o.Blocks, "remove-blocks": &o.RemoveBlocks} {
		if s := cmd.String(flag); s != "" {
			layers, err := calib.ParseLayers(s)
			if err != nil {
				return o, usagef("--%s: %v", flag, err)
			}
			*dst = layers
		}
	}
	if err := o.Validate(); err != nil {
		return o, usageError{err.Error()[len("shrink: "):]}
	}
	if o.Criterion == rewrite.CriterionActivation && cmd.String("plan") == "" && cmd.String("data") == "" {
		return o, usagef("--criterion activation needs calibration text: --data FILE")
	}
	return o, nil
}

// ShrinkSummary is what `shrink --json` prints; shrink.json holds it too.
type ShrinkSummary struct {
	Model        string              `json:"model"`
	Output       string              `json:"output"`
	Data         string              `json:"data,omitempty"`
	ParamsBefore int64               `json:"params_before"`
	ParamsAfter  int64               `json:"params_after"`
	Plan         *rewrite.ShrinkPlan `json:"plan"`
	Files        []string            `json:"files"`
}

func runShrink(ctx context.Context, cmd *cli.Command, path, outDir string, opts rewrite.ShrinkOptions) error {
	m, err := graph.Load(path)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	outModel, err := checkOutput(cmd, path, outDir)
	if err != nil {
		return err
	}
	widths := rewrite.FindWidths(m, d)
	var plan *rewrite.ShrinkPlan
	if p := cmd.String("plan"); p != "" {
		if plan, err = readShrinkPlan(p); err != nil {
			return err
		}
		if plan.Layers == nil {
			// A recipe: how much to remove, not which units.
			opts = rewrite.ShrinkOptions{FFNRatio: plan.FFNRatio, FFNGlobal: plan.FFNGlobal, RemoveKVGroups: plan.RemoveKVGroups,
				Criterion: plan.Criterion, RemoveBlocks: plan.RemoveBlocks}
			plan = nil
			if opts.Criterion == rewrite.CriterionActivation && cmd.String("data") == "" {
				return usagef("%s asks for the activation criterion: give --data FILE", p)
			}
		}
	}
	if plan == nil {
		if opts.Criterion == rewrite.CriterionActivation {
			if opts.Activations, err = shrinkActivations(ctx, cmd, m, path, widths, opts); err != nil {
				return err
			}
		}
		if plan, err = rewrite.PlanShrink(m, widths, opts); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	before := graph.TotalParams(m)
	if err := rewrite.Shrink(m, d, plan); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	L := len(d.Blocks)
	if len(plan.RemoveBlocks) > 0 {
		// Blocks are found again: shrinking rewired nodes inside them.
		d2, err := graph.FindBlocks(m)
		if err != nil {
			return fmt.Errorf("%s: after shrinking: %w", path, err)
		}
		if err := rewrite.RemoveBlocks(m, d2, plan.RemoveBlocks); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	if err := graph.Check(m); err != nil {
		return fmt.Errorf("%s: shrunk graph invalid: %w", path, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := graph.Save(m, outModel, graph.SaveOptions{}); err != nil {
		return err
	}
	files := []string{filepath.Base(outModel)}
	side, err := rewrite.WriteShrinkSidecars(filepath.Dir(path), outDir, L, plan)
	if err != nil {
		return err
	}
	files = append(files, append(side, "shrink.json")...)
	sum := ShrinkSummary{Model: path, Output: outModel, Data: cmd.String("data"), ParamsBefore: before,
		ParamsAfter: graph.TotalParams(m), Plan: plan, Files: files}
	b, _ := json.MarshalIndent(sum, "", "  ")
	if err := writeFileAtomic(filepath.Join(outDir, "shrink.json"), append(b, '\n')); err != nil {
		return err
	}
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	printShrink(w, &sum)
	logf(cmd, "wrote %s (%v)", outModel, files[1:])
	return nil
}

// readShrinkPlan reads shrink.json as written by shrink (the summary with
// its plan) or a bare plan.
func readShrinkPlan(path string) (*rewrite.ShrinkPlan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var sum ShrinkSummary
	if err := json.Unmarshal(b, &sum); err == nil && sum.Plan != nil {
		return sum.Plan, nil
	}
	var plan rewrite.ShrinkPlan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&plan); err != nil {
		return nil, fmt.Errorf("%s: not a shrink plan or recipe: %v", path, err)
	}
	if plan.Layers == nil && plan.FFNRatio == 0 && plan.RemoveKVGroups == 0 && len(plan.RemoveBlocks) == 0 {
		return nil, fmt.Errorf("%s: the plan removes nothing", path)
	}
	return &plan, nil
}

// shrinkActivations measures mean |activation| of the tensors the
// activation criterion ranks by.
func shrinkActivations(ctx context.Context, cmd *cli.Command, m *graph.Model, path string, widths []*rewrite.BlockWidth, opts rewrite.ShrinkOptions) (map[string][]float64, error) {
	taps, err := rewrite.ShrinkTaps(widths, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(taps) == 0 {
		return nil, nil
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return nil, err
	}
	batches, tokens, err := calibrationBatches(cmd, path)
	if err != nil {
		return nil, err
	}
	logf(cmd, "shrink: measuring %d activations on %d batches (%d tokens)", len(taps), len(batches), tokens)
	pr := newProgress(cmd, "calibrate")
	st, err := calib.FeatureStatistics(ctx, m, taps, batches, calib.Options{Runtime: ro, Progress: pr.update})
	if err != nil {
		return nil, err
	}
	act := map[string][]float64{}
	for name, s := range st {
		act[name] = s.MeanAbs()
	}
	return act, nil
}

func printShrink(w io.Writer, s *ShrinkSummary) {
	p := s.Plan
	fmt.Fprintf(w, "shrink (criterion %s)\n", p.Criterion)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "block\tFFN\theads\tKV heads\t")
	for _, ls := range p.Layers {
		fmt.Fprintf(tw, "%d\t%d → %d\t%d → %d\t%d → %d\t\n", ls.Block, ls.FFN, ls.FFNAfter, ls.Heads, ls.HeadsAfter, ls.KVHeads, ls.KVHeadsAfter)
	}
	tw.Flush()
	if len(p.RemoveBlocks) > 0 {
		fmt.Fprintf(w, "removed blocks %v\n", p.RemoveBlocks)
	}
	fmt.Fprintf(w, "parameters %s → %s (−%.1f%%)\n", thousands(s.ParamsBefore), thousands(s.ParamsAfter),
		100*float64(s.ParamsBefore-s.ParamsAfter)/float64(max(s.ParamsBefore, 1)))
}
