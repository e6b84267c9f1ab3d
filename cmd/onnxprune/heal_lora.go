package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v3"
	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/heal"
	"github.com/onnxprune/onnxprune/rewrite"
)

// loraFlags are heal's --method lora settings.
func loraFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "val", Usage: "lora: validation text (perplexity every --eval-every steps; the best adapters are kept)"},
		&cli.IntFlag{Name: "val-samples", Value: 50, Usage: "lora: validation samples (the first N), each scored alone, BOS first"},
		&cli.IntFlag{Name: "rank", Value: heal.DefaultLoRARank, Usage: "lora: adapter rank r"},
		&cli.FloatFlag{Name: "alpha", Value: heal.DefaultLoRAAlpha, Usage: "lora: α (the update is scaled by α/r)"},
		&cli.FloatFlag{Name: "dropout", Value: heal.DefaultLoRADropout, Usage: "lora: dropout on the adapters' input (0: none)"},
		&cli.FloatFlag{Name: "lr", Value: heal.DefaultLoRALR, Usage: "lora: peak learning rate"},
		&cli.FloatFlag{Name: "weight-decay", Value: heal.DefaultLoRAWeightDecay, Usage: "lora: AdamW decoupled weight decay"},
		&cli.FloatFlag{Name: "max-grad-norm", Value: heal.DefaultLoRAMaxGradNorm, Usage: "lora: clip the global gradient norm (0: no clipping)"},
		&cli.IntFlag{Name: "steps", Value: heal.DefaultLoRASteps, Usage: "lora: optimizer steps"},
		&cli.IntFlag{Name: "warmup", Value: -1, Usage: "lora: linear warm-up steps, then cosine decay to 0 (-1: 10% of --steps)"},
		&cli.IntFlag{Name: "accumulate", Value: 1, Usage: "lora: micro-batches (of --batch-size rows) per optimizer step"},
		&cli.IntFlag{Name: "eval-every", Value: heal.DefaultLoRAEvalEvery, Usage: "lora: validation and checkpoint interval in steps"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "lora: seed of adapter init, dropout and data order"},
		&cli.StringFlag{Name: "targets", Usage: "lora: regexp over MatMul/Gemm node and weight names (default: MLP projections, " + heal.DefaultLoRATargets + ")"},
		&cli.BoolFlag{Name: "attention", Usage: "lora: also adapt the attention projections (" + rewrite.LoRAAttentionTargets + ")"},
		&cli.StringFlag{Name: "checkpoint-dir", Usage: "lora: checkpoint directory (default OUT/checkpoints)"},
		&cli.BoolFlag{Name: "resume", Usage: "lora: continue from the newest checkpoint in --checkpoint-dir"},
		&cli.BoolFlag{Name: "keep-adapter", Usage: "lora: do not merge: write the pruned model, the adapter-input model and the adapter file"},
	}
}

// LoRAReport is lora.json.
type LoRAReport struct {
	Method   string            `json:"method"`
	Model    string            `json:"model"`
	Removed  []int             `json:"removed"`
	Data     string            `json:"data"`
	Val      string            `json:"val,omitempty"`
	Options  loraReportOptions `json:"options"`
	Adapters []string          `json:"adapters"`
	Merged   bool              `json:"merged"`
	Files    []string          `json:"files"`
	*heal.LoRAResult
}

type loraReportOptions struct {
	Targets     string  `json:"targets"`
	Rank        int     `json:"rank"`
	Alpha       float64 `json:"alpha"`
	Dropout     float64 `json:"dropout"`
	LR          float64 `json:"lr"`
	WeightDecay float64 `json:"weight_decay"`
	MaxGradNorm float64 `json:"max_grad_norm"`
	Steps       int     `json:"steps"`
	Warmup      int     `json:"warmup"`
	BatchSize   int     `json:"batch_size"`
	SeqLen      int     `json:"seq_len"`
	Accumulate  int     `json:"accumulate"`
	EvalEvery   int     `json:"eval_every"`
	ValSamples  int     `json:"val_samples"`
	Seed        uint64  `json:"seed"`
}

func runHealLoRA(ctx context.Context, cmd *cli.Command, path, outDir string) error {
	o := heal.LoRAOptions{
		Targets: cmd.String("targets"), Rank: int(cmd.Int("rank")), Alpha: cmd.Float("alpha"),
		Dropout: cmd.Float("dropout"), NoDropout: cmd.Float("dropout") == 0,
		LR: cmd.Float("lr"), WeightDecay: cmd.Float("weight-decay"), NoWeightDecay: cmd.Float("weight-decay") == 0,
		MaxGradNorm: cmd.Float("max-grad-norm"), Steps: int(cmd.Int("steps")), WarmupSteps: int(cmd.Int("warmup")),
		BatchSize: int(cmd.Int("batch-size")), SeqLen: int(cmd.Int("seq-len")), Accumulate: int(cmd.Int("accumulate")),
		EvalEvery: int(cmd.Int("eval-every")), Seed: cmd.Uint64("seed"),
	}
	if o.MaxGradNorm == 0 {
		o.MaxGradNorm = -1
	}
	if o.Targets == "" {
		o.Targets = heal.DefaultLoRATargets
	}
	if cmd.Bool("attention") {
		o.Targets += "|" + rewrite.LoRAAttentionTargets
	}
	switch {
	case o.Rank <= 0:
		return fmt.Errorf("heal: --rank %d: the LoRA rank must be positive", o.Rank)
	case o.Alpha <= 0:
		return fmt.Errorf("heal: --alpha %g: must be positive", o.Alpha)
	case o.Dropout < 0 || o.Dropout >= 1:
		return fmt.Errorf("heal: --dropout %g: want 0 ≤ p < 1", o.Dropout)
	case o.LR <= 0 || o.Steps <= 0 || o.Accumulate <= 0 || o.EvalEvery <= 0 || o.BatchSize <= 0:
		return fmt.Errorf("heal: --lr, --steps, --accumulate, --eval-every and --batch-size must be positive")
	case o.SeqLen < 2:
		return fmt.Errorf("heal: --seq-len %d: want at least 2", o.SeqLen)
	case o.WarmupSteps > o.Steps:
		return fmt.Errorf("heal: --warmup %d exceeds --steps %d", o.WarmupSteps, o.Steps)
	case cmd.Int("val-samples") <= 0:
		return fmt.Errorf("heal: --val-samples must be positive")
	}
	switch {
	case o.WarmupSteps < 0:
		o.WarmupSteps = o.Steps / 10
	case o.WarmupSteps == 0:
		o.WarmupSteps = -1 // none (0 means the default in LoRAOptions)
	}
	if cmd.String("data") == "" {
		return usagef("heal: --data TRAIN.txt is required for --method lora")
	}
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
	// The pruned model the adapters are trained on.
	pm := &graph.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto), Path: m.Path, Dir: m.Dir}
	pd, err := graph.FindBlocks(pm)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := rewrite.RemoveBlocks(pm, pd, plan.Remove); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	// Check the targets before the (slower) data loading.
	if _, err := rewrite.FindLoRATargets(pm, o.Targets); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	outModel := filepath.Join(outDir, filepath.Base(path))
	if _, err := os.Stat(outModel); err == nil && !cmd.Bool("force") {
		return fmt.Errorf("%s exists (use --force to overwrite)", outModel)
	}
	o.CheckpointDir = cmd.String("checkpoint-dir")
	if o.CheckpointDir == "" {
		o.CheckpointDir = filepath.Join(outDir, "checkpoints")
	}
	if !cmd.Bool("resume") {
		if es, err := os.ReadDir(o.CheckpointDir); err == nil && len(es) > 0 {
			if !cmd.Bool("force") {
				return fmt.Errorf("%s holds checkpoints: pass --resume to continue from them or --force to start over", o.CheckpointDir)
			}
			if err := os.RemoveAll(o.CheckpointDir); err != nil {
				return err
			}
		}
	}
	ro, err := runtimeOptions(cmd)
	if err != nil {
		return err
	}
	o.Runtime = ro
	tok, err := loadTokenizer(cmd, path)
	if err != nil {
		return err
	}
	textOpts := calib.TextOptions{Separator: cmd.String("separator"), Field: cmd.String("field"), Template: cmd.String("template")}
	trainPath := cmd.String("data")
	samples, err := calib.LoadSamples(trainPath, textOpts)
	if err != nil {
		return err
	}
	if n := int(cmd.Int("samples")); cmd.IsSet("samples") && len(samples) > n {
		samples = samples[:n]
	}
	train := calib.Tokenize(tok, samples, math.MaxInt32, true)
	var val [][]int
	if vp := cmd.String("val"); vp != "" {
		vs, err := calib.LoadSamples(vp, textOpts)
		if err != nil {
			return err
		}
		if n := int(cmd.Int("val-samples")); len(vs) > n {
			vs = vs[:n]
		}
		if val = calib.Tokenize(tok, vs, o.SeqLen, true); len(val) == 0 {
			return fmt.Errorf("%s: no validation sample tokenizes to more than BOS", vp)
		}
	}
	pr := newProgress(cmd, "lora")
	start := time.Now()
	o.Progress = func(p heal.TrainProgress) {
		if !pr.on {
			return
		}
		line := fmt.Sprintf("\rlora step %d/%d  loss %.4f  lr %.2e  %.2f steps/s  %.0f tok/s  %s left", p.Step, p.Steps, p.Loss, p.LR,
			p.StepsPerSec, p.TokensPerSec, p.Remaining.Round(time.Second))
		if p.ValPPL > 0 {
			line += fmt.Sprintf("  val ppl %.4f", p.ValPPL)
		}
		fmt.Fprint(pr.w, line+"   ")
		if p.Step == p.Steps {
			fmt.Fprintln(pr.w)
		}
	}
	res, err := heal.TrainLoRA(ctx, pm, train, val, o)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	ad := res.Adapters
	// The adapters name the pruned model's weights: RemoveBlocks renumbers
	// layers (model.layers.1.* of the pruned model is the original's
	// layer 2 when block 1 goes), so they are merged into pm, never m.
	merged := !cmd.Bool("keep-adapter")
	if merged {
		if err := ad.Merge(pm); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	sum, err := savePruned(pm, L, graph.TotalParams(m), plan, outDir)
	if err != nil {
		return err
	}
	files := append([]string{}, sum.Files...)
	if err := ad.Save(filepath.Join(outDir, "adapter")); err != nil {
		return err
	}
	files = append(files, "adapter/"+heal.AdapterWeightsFile, "adapter/"+heal.AdapterConfigFile)
	if !merged {
		am, err := ad.AdapterModel(pm)
		if err != nil {
			return err
		}
		name := strings.TrimSuffix(filepath.Base(path), ".onnx") + "_lora.onnx"
		if err := graph.Save(am, filepath.Join(outDir, name), graph.SaveOptions{}); err != nil {
			return err
		}
		files = append(files, name)
	}
	files = append(files, "lora.json")
	rep := LoRAReport{Method: "lora", Model: path, Removed: plan.Remove, Data: trainPath, Val: cmd.String("val"), Merged: merged, Files: files, LoRAResult: res,
		Options: loraReportOptions{Targets: o.Targets, Rank: o.Rank, Alpha: o.Alpha, Dropout: o.Dropout, LR: o.LR, WeightDecay: o.WeightDecay,
			MaxGradNorm: max(o.MaxGradNorm, 0), Steps: o.Steps, Warmup: max(o.WarmupSteps, 0), BatchSize: o.BatchSize, SeqLen: o.SeqLen,
			Accumulate: o.Accumulate, EvalEvery: o.EvalEvery, ValSamples: len(val), Seed: o.Seed}}
	for _, l := range ad.Layers {
		rep.Adapters = append(rep.Adapters, l.Name)
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(outDir, "lora.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	fmt.Fprintf(w, "LoRA: %d adapters (r %d, α %g, %d parameters), %d steps of %d×%d×%d tokens in %s: %.2f steps/s, %.0f tokens/s (a step costs %.1f× a forward pass)\n",
		len(ad.Layers), o.Rank, o.Alpha, res.TrainableParams, o.Steps, o.Accumulate, o.BatchSize, o.SeqLen, time.Since(start).Round(time.Second),
		res.StepsPerSec, res.TokensPerSec, res.StepForward)
	if len(val) > 0 {
		fmt.Fprintf(w, "validation perplexity (%d samples): %.4f pruned → %.4f healed (best, step %d)\n", len(val), res.InitialValPPL, res.BestValPPL, res.BestStep)
	}
	how := "merged"
	if !merged {
		how = "kept as an adapter"
	}
	fmt.Fprintf(w, "blocks %d → %d; adapters %s; wrote %s (%v)\n", L, sum.BlocksAfter, how, sum.Output, files[1:])
	return nil
}
