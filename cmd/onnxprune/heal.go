package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/heal"
)

func healCommand() *cli.Command {
	return &cli.Command{
		Name:      "heal",
		Usage:     "remove decoder blocks and heal the cut (linear bridge, or LoRA trained through onnxruntime)",
		ArgsUsage: "MODEL.onnx",
		Description: `--method bridge (ReplaceMe): for each contiguous run i..j of removed blocks, fits
a linear map T on calibration states so that the residual stream skipping the
run approximates what the run produced (r + m·T ≈ h_{j+1}, m = block i−1's MLP
branch), by ridge least squares towards T = I in float64, and folds T into block
i−1's down projection (W' = W·T, b' = b·T): the result has exactly the nodes of
the plainly pruned model. Writes the model, its sidecars, plan.json and
bridge.json (the fit's error before and after on the calibration tokens).
Runs starting at block 0 cannot be bridged (no earlier MLP).

--method lora: removes the blocks, then trains LoRA adapters (r --rank, α --alpha)
on the MLP projections (--attention adds q/k/v/o; --targets is a regexp over
MatMul/Gemm node and weight names) with next-token loss on --data (every sample
unless --samples is given), packed into
rows of --seq-len tokens (each sample BOS first, no padding), through a training
graph onnxprune builds (forward, loss, gradients w.r.t. the adapters only) run as
an onnxruntime session. AdamW (decoupled weight decay, gradient-norm clip
--max-grad-norm), linear warm-up then cosine decay, --accumulate micro-batches
per step, LoRA dropout. Every --eval-every steps the perplexity of the first
--val-samples samples of --val (each alone, BOS first, at most --seq-len tokens:
the convention of "onnxprune eval --samples N --seq-len L") is measured and the
best adapters are kept. Checkpoints (adapters, optimizer state, data position)
go to --checkpoint-dir every --eval-every steps; --resume continues from the
newest. The best adapters are merged, W' = W + (α/r)·B·A, so the healed model
has exactly the pruned model's nodes; --keep-adapter writes the pruned model
unmerged plus the adapter-input model (*_lora.onnx, A and B as inputs). The
adapters are always saved in PEFT's layout under OUT/adapter/. Writes lora.json
(settings, log, initial/best validation perplexity, steps/s, tokens/s).
Defaults are the thesis setting (r 8, α 8, dropout 0.05, lr 3e-4); tiny models
such as stories260K heal much faster with --lr 2e-3.

Examples:
  onnxprune heal model.onnx --method bridge --remove 2,3 --data train.txt -o healed/
  onnxprune heal model.onnx --plan pruned/plan.json --data train.txt -o healed/
  onnxprune heal stories260k.onnx --method lora --remove 0 --data train_sample.txt \
      --val validation.txt --steps 200 --lr 2e-3 -o healed/
  onnxprune heal model.onnx --method lora --plan pruned/plan.json --data c4.txt --val val.txt \
      --attention --rank 16 --alpha 32 --accumulate 4 --keep-adapter -o healed/
  onnxprune heal model.onnx --method lora --remove 3 --data train.txt --val val.txt -o healed/ --resume`,
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output directory (created; must not be the model's own)"},
			&cli.StringFlag{Name: "method", Value: "bridge", Usage: "healing method: bridge or lora"},
			&cli.StringFlag{Name: "remove", Usage: "blocks to remove, e.g. 2,3 or 4-6"},
			&cli.StringFlag{Name: "plan", Usage: "plan.json to apply (from prune)"},
			&cli.FloatFlag{Name: "ridge", Value: heal.DefaultRidge, Usage: "ridge strength towards T = I, relative to the mean diagonal of MᵀM (0: plain least squares)"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing model in the output directory"},
			&cli.BoolFlag{Name: "json", Usage: "print bridge.json's (lora.json's) content"},
		}, append(loraFlags(), dataFlags()...)...), runtimeFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("heal: want one MODEL argument, got %d", cmd.NArg())
			}
			if cmd.String("output") == "" {
				return usagef("heal: -o OUTDIR is required")
			}
			if m := cmd.String("method"); m != "bridge" && m != "lora" {
				return usagef("heal: --method %q: want bridge or lora", m)
			}
			if (cmd.String("remove") == "") == (cmd.String("plan") == "") {
				return usagef("heal: give exactly one of --remove BLOCKS, --plan FILE")
			}
			if r := cmd.Float("ridge"); r < 0 {
				return usagef("heal: --ridge %g must be ≥ 0", r)
			}
			if cmd.String("method") == "lora" {
				return runHealLoRA(ctx, cmd, cmd.Args().First(), cmd.String("output"))
			}
			return runHeal(ctx, cmd, cmd.Args().First(), cmd.String("output"))
		},
	}
}

func runHeal(ctx context.Context, cmd *cli.Command, path, outDir string) error {
	m, err := graph.Load(path)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	L := len(d.Blocks)
	plan, err := healPlan(cmd, L)
	if err != nil {
		return err
	}
	plan.Model = path
	// Check the cut before the (slower) calibration pass.
	if _, err := heal.FindCuts(m, d, plan.Remove); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return err
	}
	batches, _, err := calibrationBatches(cmd, path)
	if err != nil {
		return err
	}
	pr := newProgress(cmd, "bridge")
	rep, err := heal.Bridge(ctx, m, d, plan.Remove, batches, heal.Options{Ridge: cmd.Float("ridge"), Runtime: ro, Progress: pr.update})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	sum, err := writePruned(m, d, plan, outDir, cmd.Bool("force"))
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(outDir, "bridge.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	for _, r := range rep.Runs {
		fmt.Fprintf(w, "blocks %s: bridge folded into %s over %d tokens; relative error at the cut %.4f → %.4f\n",
			graph.FormatBlocks(r.Blocks), r.Weight, r.Tokens, r.RelPruned, r.RelBridged)
	}
	fmt.Fprintf(w, "blocks %d → %d; wrote %s (%v, bridge.json)\n", L, sum.BlocksAfter, sum.Output, sum.Files[1:])
	return nil
}

// healPlan reads --plan or --remove.
func healPlan(cmd *cli.Command, L int) (*calib.Plan, error) {
	if p := cmd.String("plan"); p != "" {
		plan, err := calib.ReadPlan(p)
		if err != nil {
			return nil, err
		}
		if plan.Blocks != 0 && plan.Blocks != L {
			return nil, fmt.Errorf("%s: the plan is for a model with %d blocks, this one has %d", p, plan.Blocks, L)
		}
		return plan, nil
	}
	layers, err := calib.ParseLayers(cmd.String("remove"))
	if err != nil {
		return nil, usagef("--remove: %v", err)
	}
	return calib.SelectLayers(L, layers)
}
