package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/heal"
	"github.com/onnxprune/onnxprune/rewrite"
)

// The embedded default: with no MODEL inside the repository, run prunes
// the stories260K fixture on the TinyStories slice (see their SOURCES.md).
const (
	defaultRunModel = "testdata/models/stories260k_kv.onnx"
	defaultRunText  = "testdata/text/tinystories_train300.txt" // calibration and training
	defaultRunEval  = "testdata/text/tinystories_valid200.txt" // evaluation: never the calibration text
	runModule       = "module github.com/onnxprune/onnxprune"
)

// Files run writes into its output directory.
const (
	runReportJSON = "report.json"
	runReportMD   = "report.md"
	runQualityFig = "quality.svg"
	runPrunedDir  = "pruned"
	runHealedDir  = "healed"
	runShrunkDir  = "shrunk" // width pruning (--ffn-ratio, --remove-kv-groups)
	runSparseDir  = "sparse" // sparsity (--sparsity, --sparsity-pattern)
	runModelDir   = "model"  // the conversion of a checkpoint
	runWorkDir    = ".work"  // steps write here, then rename into place
)

func runCommand() *cli.Command {
	flags := []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "onnxprune-run", Usage: "report `DIR` (created; a rerun into it reuses the steps whose inputs did not change)"},
		&cli.StringFlag{Name: "config", Usage: "JSON `FILE` of options (keys: the flag names, and \"model\"); flags given here win"},
		&cli.BoolFlag{Name: "force", Usage: "redo every step, and write into a non-empty directory that holds no earlier run"},
		&cli.BoolFlag{Name: "json", Usage: "print report.json to stdout"},
		&cli.IntFlag{Name: "remove", Value: 1, Usage: "number of blocks to remove, chosen by --strategy", Category: "pruning"},
		&cli.StringFlag{Name: "layers", Usage: "remove exactly these blocks instead, e.g. 2,3 or 4-6", Category: "pruning"},
		&cli.StringFlag{Name: "strategy", Value: "angular", Usage: "angular, bi, last or sleb (as prune)", Category: "pruning"},
		&cli.BoolFlag{Name: "all-tokens", Usage: "angular: use d(l, n) over all real tokens, not the last", Category: "pruning"},
		&cli.FloatFlag{Name: "ffn-ratio", Usage: "shrink the original first: remove this fraction of FFN channels, in [0, 1) (shrink's --ffn-ratio; default: no width pruning)", HideDefault: true, Category: "width"},
		&cli.IntFlag{Name: "remove-kv-groups", Usage: "shrink the original first: remove N KV groups per block (shrink's --remove-kv-groups)", HideDefault: true, Category: "width"},
		&cli.BoolFlag{Name: "ffn-global", Usage: "rank FFN channels over all blocks (shrink's --ffn-global)", Category: "width"},
		&cli.StringFlag{Name: "width-criterion", Value: rewrite.CriterionMagnitude, Usage: "magnitude or activation (shrink's --criterion; activation measures on --data)", Category: "width"},
		&cli.FloatFlag{Name: "sparsity", Usage: "zero this fraction of the result's linear weights after healing, in [0, 1) (sparsify's --ratio; default: none)", HideDefault: true, Category: "sparsity"},
		&cli.StringFlag{Name: "sparsity-pattern", Usage: "N:M semi-structured sparsity after healing, e.g. 2:4 (sparsify's --pattern; instead of --sparsity)", Category: "sparsity"},
		&cli.StringFlag{Name: "sparsity-method", Value: rewrite.MethodMagnitude, Usage: "magnitude or wanda (sparsify's --method; wanda measures on --data)", Category: "sparsity"},
		&cli.StringFlag{Name: "heal", Value: "bridge", Usage: "healing after pruning: none, bridge (training-free linear map) or lora", Category: "healing"},
		&cli.FloatFlag{Name: "ridge", Value: heal.DefaultRidge, Usage: "bridge: ridge strength towards T = I (as heal)", Category: "healing"},
		&cli.StringFlag{Name: "train-data", Usage: "lora: training text (default: --data)", Category: "healing"},
		&cli.IntFlag{Name: "lora-steps", Usage: "lora: optimizer steps (heal's --steps; default: heal's)", HideDefault: true, Category: "healing"},
		&cli.FloatFlag{Name: "lora-lr", Usage: "lora: peak learning rate (heal's --lr; default: heal's, 3e-4)", HideDefault: true, Category: "healing"},
		&cli.IntFlag{Name: "lora-rank", Usage: "lora: rank r (heal's --rank; default: heal's, 8)", HideDefault: true, Category: "healing"},
		&cli.IntFlag{Name: "lora-seed", Usage: "lora: seed of the adapter initialisation, dropout and data order (heal's --seed; default: heal's, 1)", HideDefault: true, Category: "healing"},
		&cli.FloatFlag{Name: "lora-alpha", Usage: "lora: α (heal's --alpha; default: heal's, 8)", HideDefault: true, Category: "healing"},
		&cli.StringFlag{Name: "eval-data", Usage: "text perplexity is measured on (default: --data)", Category: "evaluation"},
		&cli.IntFlag{Name: "eval-samples", Usage: "samples of --eval-data to score (default: --samples, as eval)", HideDefault: true, Category: "evaluation"},
		&cli.BoolFlag{Name: "bench", Value: true, Usage: "also time the original and the result (--bench=false: quality only)", Category: "evaluation"},
		&cli.StringFlag{Name: "dtype", Value: "float32", Usage: "checkpoints: stored weight type of the conversion (as convert)", Category: "runtime"},
	}
	for _, f := range pplTask().Flags {
		setCategory(f, "evaluation")
		flags = append(flags, f)
	}
	for _, f := range benchFlags() {
		setCategory(f, "benchmark")
		flags = append(flags, f)
	}
	for _, f := range dataFlags() {
		setCategory(f, "text (calibration, bridge, evaluation)")
		flags = append(flags, f)
	}
	for _, f := range runtimeFlags() {
		setCategory(f, "runtime")
		flags = append(flags, f)
	}
	return &cli.Command{
		Name:      "run",
		Usage:     "the whole pipeline in one command: calibrate, prune, heal, evaluate, report",
		ArgsUsage: "[MODEL]",
		Description: `MODEL is an ONNX decoder (a file, or a directory holding model.onnx) or any
checkpoint "convert" reads (llama2.c .bin, .gguf, Hugging Face directory), which
is converted first. Then, with exactly the code and defaults of the commands
named:
  1. eval       perplexity of the original on --eval-data (default --data)
  2. shrink     only with --ffn-ratio or --remove-kv-groups: width pruning of
                the original (shrunk/); steps 3 to 7 then work on the shrunk
                model, so healing covers both cuts
  3. calibrate  d(l, n) and Block Influence on --data (stats.json, stats.svg)
  4. prune      --remove N blocks chosen by --strategy, or --layers (pruned/, plan.json)
  5. eval       perplexity of the pruned model
  6. heal       --heal bridge (as "heal --method bridge"), lora (LoRA on
                --train-data, merged into the weights) or none (healed/)
  7. eval       perplexity of the healed model
  8. sparsify   only with --sparsity or --sparsity-pattern: zero weights of the
                healed (or pruned) model, after healing, since merging LoRA or
                folding the bridge densifies them (sparse/: now the result)
  9. eval       perplexity of the sparse model
 10. bench      the original against the result, interleaved (--bench=false skips)
and writes OUTDIR/report.json, report.md, quality.svg and config.json (the
options given, from flags or --config; "--config OUTDIR/config.json" repeats
the run). Options given neither way keep the defaults of those commands.

--config FILE is a JSON object whose keys are the flag names without dashes,
plus "model": {"model": "m.onnx", "data": "valid.txt", "remove": 2}. Flags win
over the file; relative paths in it are relative to its directory.

Each step records a hash of its inputs (file contents, options, the steps it
depends on) in OUTDIR/.steps/; rerunning reuses every step whose inputs did
not change and redoes the others and all after them, so an interrupted run
resumes. Models are written to a temporary directory and renamed into place:
an interruption never leaves a partial model.

Without MODEL, inside the onnxprune repository, run uses the stories260K
fixture (` + defaultRunModel + `), TinyStories train text
(` + defaultRunText + `) to calibrate and heal, and
TinyStories validation text (` + defaultRunEval + `) to evaluate.

Examples:
  onnxprune run -o demo/
  onnxprune run stories/model.onnx --data valid.txt --remove 2 --heal bridge -o report/
  onnxprune run stories260K.bin --tokenizer tok512.bin --data valid.txt --heal lora --lora-steps 100 -o report/
  onnxprune run model.onnx --data valid.txt --ffn-ratio 0.25 --remove 1 --heal lora --sparsity 0.5 -o report/
  onnxprune run --config run.json --device cuda --json`,
		Flags: flags,
		Action: func(ctx context.Context, cmd *cli.Command) error {
			rep, err := runPipeline(ctx, cmd)
			if err != nil {
				return err
			}
			w := cmd.Root().Writer
			if cmd.Bool("json") {
				b, _ := json.MarshalIndent(rep, "", "  ")
				_, err := fmt.Fprintf(w, "%s\n", b)
				return err
			}
			printRun(w, rep)
			return nil
		},
	}
}

// setCategory files a shared flag under a help heading.
func setCategory(f cli.Flag, c string) {
	switch x := f.(type) {
	case *cli.StringFlag:
		x.Category = c
	case *cli.IntFlag:
		x.Category = c
	case *cli.FloatFlag:
		x.Category = c
	case *cli.BoolFlag:
		x.Category = c
	}
}

// RunReport is report.json.
type RunReport struct {
	Schema  string `json:"schema"`
	Created string `json:"created"`
	// Model is the ONNX model that was pruned; Source the checkpoint it
	// was converted from, if any.
	Model  string `json:"model"`
	Source string `json:"source,omitempty"`
	Output string `json:"output"`

	Strategy      string      `json:"strategy"`
	Plan          *calib.Plan `json:"plan"`
	BlocksBefore  int         `json:"blocks_before"`
	BlocksAfter   int         `json:"blocks_after"`
	RemovedBlocks []int       `json:"removed_blocks"`
	ParamsBefore  int64       `json:"params_before"`
	ParamsAfter   int64       `json:"params_after"`
	// ParamsShrunk counts the parameters after width pruning (before
	// depth pruning); ParamsAfter those after both.
	ParamsShrunk int64 `json:"params_shrunk,omitempty"`
	// ParamsRemoved is the share of parameters removed, 0…1.
	ParamsRemoved   float64 `json:"params_removed"`
	FileBytesBefore int64   `json:"file_bytes_before"`
	FileBytesAfter  int64   `json:"file_bytes_after"`

	// Shrink is what "shrink --json" printed (width pruning of the
	// original, before calibration), if asked for.
	Shrink *ShrinkSummary `json:"shrink,omitempty"`
	Heal   RunHeal        `json:"heal"`
	// Sparsity is what "sparsify --json" printed (sparsity.json), if
	// asked for: the result was sparsified after healing.
	Sparsity *SparsifyFile `json:"sparsity,omitempty"`
	// Perplexity holds the headline numbers; Evals the full results
	// ("original", "pruned", "healed", "sparse"), as "eval --json" prints them.
	Perplexity RunPerplexity                `json:"perplexity"`
	Evals      map[string]*PerplexityResult `json:"evals"`
	Bench      *BenchSummary                `json:"bench,omitempty"`

	Steps       []RunStep        `json:"steps"`
	Seconds     float64          `json:"seconds"` // this invocation, reused steps included
	Files       RunFiles         `json:"files"`
	Environment eval.Environment `json:"environment"`
}

// RunHeal says how the pruned model was healed.
type RunHeal struct {
	Method string `json:"method"` // none, bridge, lora
	// TrainData is what LoRA trained on.
	TrainData string       `json:"train_data,omitempty"`
	Bridge    *heal.Report `json:"bridge,omitempty"`
	// LoRA is what "heal --method lora --json" printed (lora.json).
	LoRA json.RawMessage `json:"lora,omitempty"`
}

// RunPerplexity: the original, the pruned (shrunk too, with width
// pruning; before healing), the healed model (0 with --heal none) and
// the sparse one (0 without --sparsity) on the same text and settings.
type RunPerplexity struct {
	Data     string  `json:"data"`
	Method   string  `json:"method"`
	Original float64 `json:"original"`
	Pruned   float64 `json:"pruned"`
	Healed   float64 `json:"healed,omitempty"`
	Sparse   float64 `json:"sparse,omitempty"`
}

// RunStep is one step of this invocation.
type RunStep struct {
	Name    string  `json:"name"`
	Reused  bool    `json:"reused"`
	Seconds float64 `json:"seconds"` // of the run that did the work
	Key     string  `json:"key"`
}

// RunFiles are the report directory's files, relative to it.
type RunFiles struct {
	Model    string `json:"model"` // the result: sparse, healed or pruned
	Shrunk   string `json:"shrunk,omitempty"`
	Pruned   string `json:"pruned"`
	Sparse   string `json:"sparse,omitempty"`
	Plan     string `json:"plan"`
	Stats    string `json:"stats"`
	Heatmap  string `json:"heatmap"`
	Plot     string `json:"plot"`
	Config   string `json:"config"`
	ReportMD string `json:"report_md"`
}

// runner executes the steps of one run.
type runner struct {
	cmd   *cli.Command
	out   string
	force bool
	steps []RunStep
	total int
	// tool identifies this build of onnxprune (the executable's SHA-256):
	// a different build redoes every step.
	tool string
}

// runPipeline resolves the inputs and runs every step.
func runPipeline(ctx context.Context, cmd *cli.Command) (*RunReport, error) {
	start := time.Now()
	cfgModel, err := applyRunConfig(cmd)
	if err != nil {
		return nil, err
	}
	if cmd.NArg() > 1 {
		return nil, usagef("run: want at most one MODEL argument, got %d", cmd.NArg())
	}
	model := cmd.Args().First()
	if model == "" {
		model = cfgModel
	}
	if model == "" {
		root, err := findRepoRoot()
		if err != nil {
			return nil, usagef("run: no MODEL given and %v", err)
		}
		model = filepath.Join(root, defaultRunModel)
		if !cmd.IsSet("data") {
			if err := cmd.Set("data", filepath.Join(root, defaultRunText)); err != nil {
				return nil, err
			}
			if !cmd.IsSet("eval-data") {
				if err := cmd.Set("eval-data", filepath.Join(root, defaultRunEval)); err != nil {
					return nil, err
				}
			}
		}
	}
	if cmd.String("data") == "" {
		return nil, usagef("run: --data FILE is required (calibration text; also the evaluation text unless --eval-data)")
	}
	switch h := cmd.String("heal"); h {
	case "none", "bridge", "lora":
	default:
		return nil, usagef("run: --heal %q: want none, bridge or lora", h)
	}
	if s := cmd.String("strategy"); !slices.Contains([]string{"angular", "bi", "last", "sleb"}, s) {
		return nil, usagef("run: --strategy %q: want one of angular, bi, last, sleb", s)
	}
	if cmd.String("layers") == "" && cmd.Int("remove") < 1 {
		return nil, usagef("run: --remove N must be at least 1 (or give --layers)")
	}
	width, sparse, err := runExtras(cmd)
	if err != nil {
		return nil, err
	}
	outDir := cmd.String("output")
	if err := prepareRunDir(outDir, cmd.Bool("force")); err != nil {
		return nil, err
	}
	r := &runner{cmd: cmd, out: outDir, force: cmd.Bool("force"), total: 7}
	if cmd.String("heal") == "none" {
		r.total -= 2
	}
	if width {
		r.total++
	}
	if sparse {
		r.total += 2
	}
	if !cmd.Bool("bench") {
		r.total--
	}
	if exe, err := os.Executable(); err == nil {
		if fp, err := fingerprint(exe); err == nil {
			r.tool = fp.SHA256
		}
	}
	rep := &RunReport{Schema: "onnxprune-run/1", Output: outDir, Evals: map[string]*PerplexityResult{},
		Heal: RunHeal{Method: cmd.String("heal")}, Environment: eval.CurrentEnvironment()}

	// 0. The model: ONNX as it is, or converted.
	modelPath, source, err := resolveRunModel(model)
	if err != nil {
		return nil, err
	}
	var modelKey any
	if source != "" {
		r.total++
		rep.Source = source
		var conv ConvertReport
		args := append([]string{"--json", "-o", filepath.Join(outDir, runWorkDir, "convert")}, r.pass("tokenizer", "dtype")...)
		args = append(args, source)
		fps, err := fingerprintInputs(source, cmd.String("tokenizer"))
		if err != nil {
			return nil, err
		}
		key, err := r.step(ctx, "convert", map[string]any{"argv": r.hashArgs(args), "files": fps},
			[]string{filepath.Join(runModelDir, "model.onnx")}, &conv, func(ctx context.Context) error {
				tmp := filepath.Join(outDir, runWorkDir, "convert")
				if err := r.invokeJSON(ctx, convertCommand(), args, &conv); err != nil {
					return err
				}
				return installDir(tmp, filepath.Join(outDir, runModelDir))
			})
		if err != nil {
			return nil, err
		}
		modelPath, modelKey = filepath.Join(outDir, runModelDir, "model.onnx"), key
	} else {
		fps, err := fingerprintInputs(modelPath, cmd.String("tokenizer"))
		if err != nil {
			return nil, err
		}
		modelKey = fps
	}
	rep.Model = modelPath
	m0, err := graph.Load(modelPath)
	if err != nil {
		return nil, err
	}
	d0, err := graph.FindBlocks(m0)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	rep.BlocksBefore, rep.ParamsBefore = len(d0.Blocks), graph.TotalParams(m0)
	if rep.FileBytesBefore, err = eval.ModelFileBytes(m0); err != nil {
		return nil, err
	}
	m0, d0 = nil, nil

	// 1. The original's perplexity.
	evalOrig, _, err := r.evalStep(ctx, "eval-original", modelPath, modelKey)
	if err != nil {
		return nil, err
	}
	rep.Evals["original"] = evalOrig
	dataFPs, err := fingerprintInputs(cmd.String("data"), cmd.String("tokenizer"))
	if err != nil {
		return nil, err
	}

	// 1b. Width pruning (--ffn-ratio, --remove-kv-groups): from here on,
	// calibration, pruning and healing work on the shrunk model; the
	// original's evaluation and the benchmark keep the true original.
	origPath, origKey := modelPath, modelKey
	shrunkDir := filepath.Join(outDir, runShrunkDir)
	if width {
		key, sum, err := r.shrink(ctx, modelPath, modelKey, dataFPs)
		if err != nil {
			return nil, err
		}
		rep.Shrink, rep.ParamsShrunk = sum, sum.ParamsAfter
		modelPath, modelKey = filepath.Join(shrunkDir, filepath.Base(modelPath)), key
	} else if err := r.dropStep("shrink", shrunkDir); err != nil { // a stale one from an earlier run
		return nil, err
	}

	// 2. Calibration.
	statsPath := filepath.Join(outDir, "stats.json")
	calArgs := append([]string{"--json", "-o", statsPath},
		r.pass("data", "field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size", "all-tokens", "device", "threads")...)
	calArgs = append(calArgs, modelPath)
	calKey, err := r.step(ctx, "calibrate", map[string]any{"argv": r.hashArgs(calArgs), "model": modelKey, "data": dataFPs},
		[]string{"stats.json", "stats.svg"}, nil, func(ctx context.Context) error {
			_, err := r.invoke(ctx, calibrateCommand(), calArgs)
			return err
		})
	if err != nil {
		return nil, err
	}

	// 3. Pruning.
	prTmp := filepath.Join(outDir, runWorkDir, "prune")
	prArgs := []string{"--json", "-o", prTmp}
	prInputs := map[string]any{"model": modelKey}
	if cmd.String("layers") != "" {
		prArgs = append(prArgs, r.pass("layers")...)
	} else {
		prArgs = append(prArgs, "--remove", fmt.Sprint(cmd.Int("remove")), "--strategy", cmd.String("strategy"))
		switch cmd.String("strategy") {
		case "angular", "bi":
			prArgs = append(prArgs, append([]string{"--stats", statsPath}, r.pass("all-tokens")...)...)
			prInputs["calibrate"] = calKey
		case "sleb":
			prArgs = append(prArgs, r.pass("data", "field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size")...)
			prInputs["data"] = dataFPs
		}
	}
	prArgs = append(append(prArgs, r.pass("device", "threads")...), modelPath)
	prInputs["argv"] = r.hashArgs(prArgs)
	base := filepath.Base(modelPath)
	var prune PruneSummary
	prKey, err := r.step(ctx, "prune", prInputs, []string{filepath.Join(runPrunedDir, base), "plan.json"}, &prune,
		func(ctx context.Context) error {
			if err := r.invokeJSON(ctx, pruneCommand(), prArgs, &prune); err != nil {
				return err
			}
			prune.Output = filepath.Join(outDir, runPrunedDir, base)
			plan, err := os.ReadFile(filepath.Join(prTmp, "plan.json"))
			if err != nil {
				return err
			}
			if err := installDir(prTmp, filepath.Join(outDir, runPrunedDir)); err != nil {
				return err
			}
			return writeFileAtomic(filepath.Join(outDir, "plan.json"), plan)
		})
	if err != nil {
		return nil, err
	}
	prunedPath := filepath.Join(outDir, runPrunedDir, base)
	rep.Plan, rep.Strategy = prune.Plan, prune.Plan.Strategy
	rep.BlocksAfter, rep.RemovedBlocks, rep.ParamsAfter = prune.BlocksAfter, prune.Plan.Remove, prune.ParamsAfter
	rep.ParamsRemoved = float64(rep.ParamsBefore-rep.ParamsAfter) / float64(max(rep.ParamsBefore, 1))

	// 4. The pruned model's perplexity.
	evalPruned, _, err := r.evalStep(ctx, "eval-pruned", prunedPath, prKey)
	if err != nil {
		return nil, err
	}
	rep.Evals["pruned"] = evalPruned

	// 5, 6. Healing and the healed model's perplexity.
	resultPath, resultKey := prunedPath, prKey
	healedDir := filepath.Join(outDir, runHealedDir)
	switch cmd.String("heal") {
	case "none":
		if err := os.RemoveAll(healedDir); err != nil { // a stale one from an earlier run
			return nil, err
		}
		os.Remove(stepRecordPath(outDir, "heal"))
	case "bridge":
		key, br, err := r.healBridge(ctx, modelPath, modelKey, prKey, dataFPs)
		if err != nil {
			return nil, err
		}
		rep.Heal.Bridge, resultKey = br, key
	case "lora":
		key, lr, err := r.healLoRA(ctx, modelPath, modelKey, prKey)
		if err != nil {
			return nil, err
		}
		rep.Heal.LoRA, resultKey = lr, key
		rep.Heal.TrainData = cmd.String("train-data")
		if rep.Heal.TrainData == "" {
			rep.Heal.TrainData = cmd.String("data")
		}
	}
	if cmd.String("heal") != "none" {
		resultPath = filepath.Join(healedDir, base)
		evalHealed, _, err := r.evalStep(ctx, "eval-healed", resultPath, resultKey)
		if err != nil {
			return nil, err
		}
		rep.Evals["healed"] = evalHealed
	}

	// 8, 9. Sparsity (--sparsity, --sparsity-pattern): after healing,
	// since merging LoRA or folding the bridge densifies the weights.
	sparseDir := filepath.Join(outDir, runSparseDir)
	if sparse {
		key, sf, err := r.sparsify(ctx, resultPath, resultKey, dataFPs)
		if err != nil {
			return nil, err
		}
		rep.Sparsity = sf
		resultPath, resultKey = filepath.Join(sparseDir, base), key
		evalSparse, _, err := r.evalStep(ctx, "eval-sparse", resultPath, resultKey)
		if err != nil {
			return nil, err
		}
		rep.Evals["sparse"] = evalSparse
	} else {
		if err := r.dropStep("sparsify", sparseDir); err != nil {
			return nil, err
		}
		os.Remove(stepRecordPath(outDir, "eval-sparse"))
	}
	mr, err := graph.Load(resultPath)
	if err != nil {
		return nil, err
	}
	if rep.FileBytesAfter, err = eval.ModelFileBytes(mr); err != nil {
		return nil, err
	}
	mr = nil

	// 7. Speed.
	if cmd.Bool("bench") {
		args := append([]string{"--json"}, r.pass("prompt-len", "decode-tokens", "runs", "warmup", "seed",
			"watts-per-core", "grid-intensity", "powercap", "device", "threads")...)
		args = append(args, origPath, resultPath)
		var bs BenchSummary
		_, err := r.step(ctx, "bench", map[string]any{"argv": r.hashArgs(args), "original": origKey, "result": resultKey},
			nil, &bs, func(ctx context.Context) error {
				return r.invokeJSON(ctx, benchCommand(), args, &bs)
			})
		if err != nil {
			return nil, err
		}
		rep.Bench = &bs
	}

	rep.Perplexity = RunPerplexity{Data: evalOrig.Data, Method: evalOrig.Method, Original: evalOrig.Perplexity, Pruned: evalPruned.Perplexity}
	if e := rep.Evals["healed"]; e != nil {
		rep.Perplexity.Healed = e.Perplexity
	}
	if e := rep.Evals["sparse"]; e != nil {
		rep.Perplexity.Sparse = e.Perplexity
	}
	rel := func(p string) string {
		s, err := filepath.Rel(outDir, p)
		if err != nil {
			return p
		}
		return filepath.ToSlash(s)
	}
	rep.Files = RunFiles{Model: rel(resultPath), Pruned: rel(prunedPath), Plan: "plan.json", Stats: "stats.json",
		Heatmap: "stats.svg", Plot: runQualityFig, Config: runConfigFile, ReportMD: runReportMD}
	if width {
		rep.Files.Shrunk = rel(modelPath)
	}
	if sparse {
		rep.Files.Sparse = rel(resultPath)
	}
	rep.Steps = r.steps
	rep.Created = time.Now().UTC().Format(time.RFC3339)
	rep.Seconds = time.Since(start).Seconds()
	if err := writeRunReport(cmd, rep, model); err != nil {
		return nil, err
	}
	os.RemoveAll(filepath.Join(outDir, runWorkDir))
	logf(cmd, "run: report in %s (model %s)", filepath.Join(outDir, runReportMD), filepath.Join(outDir, rep.Files.Model))
	return rep, nil
}

// runExtras checks the width and sparsity options and says whether
// either step is asked for.
func runExtras(cmd *cli.Command) (width, sparse bool, err error) {
	so := rewrite.ShrinkOptions{FFNRatio: cmd.Float("ffn-ratio"), RemoveKVGroups: int(cmd.Int("remove-kv-groups")),
		Criterion: cmd.String("width-criterion")}
	if err := so.Validate(); err != nil {
		return false, false, usagef("run: %s", strings.TrimPrefix(err.Error(), "shrink: "))
	}
	width = so.FFNRatio > 0 || so.RemoveKVGroups > 0
	if !width && (cmd.IsSet("ffn-global") || cmd.IsSet("width-criterion")) {
		return false, false, usagef("run: --ffn-global and --width-criterion say how to prune width: give --ffn-ratio F or --remove-kv-groups N")
	}
	sp := rewrite.SparsifyOptions{Method: cmd.String("sparsity-method"), Ratio: cmd.Float("sparsity")}
	if p := cmd.String("sparsity-pattern"); p != "" {
		if sp.N, sp.M, err = parsePattern(p); err != nil {
			return false, false, usagef("run: --sparsity-pattern %v", err)
		}
	}
	if err := sp.Validate(); err != nil {
		return false, false, usagef("run: %s", strings.TrimPrefix(err.Error(), "sparsify: "))
	}
	sparse = sp.Ratio > 0 || sp.M > 0
	if !sparse && cmd.IsSet("sparsity-method") {
		return false, false, usagef("run: --sparsity-method needs --sparsity R or --sparsity-pattern N:M")
	}
	return width, sparse, nil
}

// shrink runs "shrink" on the original (width pruning) into
// OUTDIR/shrunk/.
func (r *runner) shrink(ctx context.Context, modelPath string, modelKey any, dataFPs []fileFingerprint) (string, *ShrinkSummary, error) {
	tmp := filepath.Join(r.out, runWorkDir, "shrink")
	args := append([]string{"--json", "-o", tmp}, r.passAs([2]string{"ffn-ratio", "ffn-ratio"},
		[2]string{"remove-kv-groups", "remove-kv-groups"}, [2]string{"ffn-global", "ffn-global"}, [2]string{"width-criterion", "criterion"})...)
	inputs := map[string]any{"model": modelKey}
	if r.cmd.String("width-criterion") == rewrite.CriterionActivation {
		args = append(args, r.pass("data", "field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size", "device", "threads")...)
		inputs["data"] = dataFPs
	}
	args = append(args, modelPath)
	inputs["argv"] = r.hashArgs(args)
	final := filepath.Join(r.out, runShrunkDir)
	var sum ShrinkSummary
	key, err := r.step(ctx, "shrink", inputs, []string{filepath.Join(runShrunkDir, filepath.Base(modelPath))}, &sum,
		func(ctx context.Context) error {
			if err := r.invokeJSON(ctx, shrinkCommand(), args, &sum); err != nil {
				return err
			}
			// shrink.json says where the model is once installed.
			sum.Output = filepath.Join(final, filepath.Base(modelPath))
			b, _ := json.MarshalIndent(&sum, "", "  ")
			if err := writeFileAtomic(filepath.Join(tmp, "shrink.json"), append(b, '\n')); err != nil {
				return err
			}
			return installDir(tmp, final)
		})
	return key, &sum, err
}

// sparsify runs "sparsify" on the result (healed, or pruned with --heal
// none) into OUTDIR/sparse/.
func (r *runner) sparsify(ctx context.Context, resultPath string, resultKey any, dataFPs []fileFingerprint) (string, *SparsifyFile, error) {
	tmp := filepath.Join(r.out, runWorkDir, "sparsify")
	args := append([]string{"--json", "-o", tmp}, r.passAs([2]string{"sparsity", "ratio"},
		[2]string{"sparsity-pattern", "pattern"}, [2]string{"sparsity-method", "method"})...)
	inputs := map[string]any{"model": resultKey}
	if r.cmd.String("sparsity-method") == rewrite.MethodWanda {
		args = append(args, r.pass("data", "field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size", "device", "threads")...)
		inputs["data"] = dataFPs
	}
	args = append(args, resultPath)
	inputs["argv"] = r.hashArgs(args)
	final := filepath.Join(r.out, runSparseDir)
	var sf SparsifyFile
	key, err := r.step(ctx, "sparsify", inputs, []string{filepath.Join(runSparseDir, filepath.Base(resultPath))}, &sf,
		func(ctx context.Context) error {
			if err := r.invokeJSON(ctx, sparsifyCommand(), args, &sf); err != nil {
				return err
			}
			sf.Output = filepath.Join(final, filepath.Base(resultPath))
			b, _ := json.MarshalIndent(&sf, "", "  ")
			if err := writeFileAtomic(filepath.Join(tmp, "sparsity.json"), append(b, '\n')); err != nil {
				return err
			}
			return installDir(tmp, final)
		})
	if err == nil && sf.SparsityReport == nil {
		err = fmt.Errorf("sparsify: printed no report")
	}
	return key, &sf, err
}

// dropStep removes what an earlier run's step wrote when this run does
// not ask for it.
func (r *runner) dropStep(name, dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.Remove(stepRecordPath(r.out, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// healBridge runs "heal --method bridge" with the plan prune chose.
func (r *runner) healBridge(ctx context.Context, modelPath string, modelKey, prKey any, dataFPs []fileFingerprint) (string, *heal.Report, error) {
	tmp := filepath.Join(r.out, runWorkDir, "heal")
	args := append([]string{"--json", "--method", "bridge", "--plan", filepath.Join(r.out, "plan.json"), "-o", tmp},
		r.pass("ridge", "data", "field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size", "device", "threads")...)
	args = append(args, modelPath)
	var br heal.Report
	key, err := r.step(ctx, "heal", map[string]any{"method": "bridge", "argv": r.hashArgs(args), "model": modelKey, "prune": prKey, "data": dataFPs},
		[]string{filepath.Join(runHealedDir, filepath.Base(modelPath))}, &br, func(ctx context.Context) error {
			if err := r.invokeJSON(ctx, healCommand(), args, &br); err != nil {
				return err
			}
			return installDir(tmp, filepath.Join(r.out, runHealedDir))
		})
	return key, &br, err
}

// healLoRA runs "heal --method lora" with the plan prune chose: the
// blocks are removed, LoRA adapters trained on --train-data (default
// --data), validated on the evaluation text and merged. Its checkpoints
// live in OUTDIR/.lora-checkpoints, kept for resuming while the step's
// inputs stay the same.
func (r *runner) healLoRA(ctx context.Context, modelPath string, modelKey, prKey any) (string, json.RawMessage, error) {
	cmd := r.cmd
	tmp := filepath.Join(r.out, runWorkDir, "heal")
	trainData := cmd.String("train-data")
	if trainData == "" {
		trainData = cmd.String("data")
	}
	args := []string{"--json", "--method", "lora", "--plan", filepath.Join(r.out, "plan.json"), "-o", tmp,
		"--data", trainData, "--val", r.evalData()}
	// Validate on exactly what the eval steps score, so the adapters kept
	// are the best by the report's own measure.
	args = append(args, "--val-samples", fmt.Sprint(r.evalSamples()))
	args = append(args, r.passAs([2]string{"lora-steps", "steps"}, [2]string{"lora-lr", "lr"}, [2]string{"lora-rank", "rank"},
		[2]string{"lora-alpha", "alpha"}, [2]string{"lora-seed", "seed"})...)
	args = append(args, r.pass("field", "template", "separator", "tokenizer", "samples", "seq-len", "batch-size", "device", "threads")...)
	fps, err := fingerprintInputs(trainData, r.evalData(), cmd.String("tokenizer"))
	if err != nil {
		return "", nil, err
	}
	inputs := map[string]any{"method": "lora", "argv": r.hashArgs(append(slices.Clone(args), modelPath)), "model": modelKey, "prune": prKey, "data": fps}
	ckpt := filepath.Join(r.out, ".lora-checkpoints")
	// Checkpoints of a run with other inputs must not be resumed.
	ckKey := stepKey(map[string]any{"step": "heal", "inputs": inputs})
	keyFile := ckpt + ".key"
	if b, err := os.ReadFile(keyFile); err != nil || strings.TrimSpace(string(b)) != ckKey {
		if err := os.RemoveAll(ckpt); err != nil {
			return "", nil, err
		}
	}
	var res json.RawMessage
	key, err := r.step(ctx, "heal", inputs, []string{filepath.Join(runHealedDir, filepath.Base(modelPath))}, &res,
		func(ctx context.Context) error {
			entries, _ := os.ReadDir(ckpt)
			if err := writeFileAtomic(keyFile, []byte(ckKey+"\n")); err != nil {
				return err
			}
			a := append(slices.Clone(args), "--checkpoint-dir", ckpt)
			if len(entries) > 0 {
				a = append(a, "--resume")
			}
			if err := r.invokeJSON(ctx, healCommand(), append(a, modelPath), &res); err != nil {
				return err
			}
			if err := installDir(tmp, filepath.Join(r.out, runHealedDir)); err != nil {
				return err
			}
			os.Remove(keyFile)
			return os.RemoveAll(ckpt)
		})
	return key, res, err
}

func (r *runner) evalData() string {
	if p := r.cmd.String("eval-data"); p != "" {
		return p
	}
	return r.cmd.String("data")
}

func (r *runner) evalSamples() int {
	if r.cmd.IsSet("eval-samples") {
		return int(r.cmd.Int("eval-samples"))
	}
	return int(r.cmd.Int("samples"))
}

// evalStep runs "eval --task ppl" on model with run's evaluation options.
func (r *runner) evalStep(ctx context.Context, name, model string, modelKey any) (*PerplexityResult, string, error) {
	args := []string{"--json", "--task", "ppl", "--data", r.evalData()}
	if r.cmd.IsSet("eval-samples") {
		args = append(args, "--samples", fmt.Sprint(r.cmd.Int("eval-samples")))
	} else {
		args = append(args, r.pass("samples")...)
	}
	args = append(args, r.pass("field", "template", "separator", "tokenizer", "seq-len", "batch-size",
		"mode", "context", "stride", "bos-each", "device", "threads")...)
	args = append(args, model)
	fps, err := fingerprintInputs(r.evalData(), r.cmd.String("tokenizer"))
	if err != nil {
		return nil, "", err
	}
	var res PerplexityResult
	key, err := r.step(ctx, name, map[string]any{"argv": r.hashArgs(args), "model": modelKey, "data": fps}, nil, &res,
		func(ctx context.Context) error {
			return r.invokeJSON(ctx, evalCommand(), args, &res)
		})
	return &res, key, err
}

// step runs do unless the record of an earlier run has the same key and
// its outputs exist; result (a pointer, or nil) is saved in the record
// and restored from it.
func (r *runner) step(ctx context.Context, name string, inputs map[string]any, outputs []string, result any, do func(context.Context) error) (string, error) {
	inputs["step"] = name
	inputs["onnxprune"] = r.tool
	key := stepKey(inputs)
	n := len(r.steps) + 1
	if !r.force {
		if rec := readStep(r.out, name, key); rec != nil {
			if result == nil || json.Unmarshal(rec.Result, result) == nil {
				logf(r.cmd, "run: [%d/%d] %s: reused (inputs unchanged since %s, key %s)", n, r.total, name, rec.Finished, key[:12])
				r.steps = append(r.steps, RunStep{Name: name, Reused: true, Seconds: rec.Seconds, Key: key})
				return key, nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("run: interrupted before %s; rerun the same command to resume", name)
	}
	// The record goes first: outputs replaced by this run must not be
	// reused under the old key if it stops half-way.
	if err := os.Remove(stepRecordPath(r.out, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	logf(r.cmd, "run: [%d/%d] %s", n, r.total, name)
	work := filepath.Join(r.out, runWorkDir)
	if err := os.MkdirAll(work, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	err := do(ctx)
	os.RemoveAll(filepath.Join(work, name)) // what a failed step left
	if err != nil {
		os.Remove(work) // if empty
		if ctx.Err() != nil {
			return "", fmt.Errorf("run: interrupted during %s (no partial output kept); rerun the same command to resume", name)
		}
		return "", err
	}
	rec := &stepRecord{Step: name, Key: key, Inputs: inputs, Outputs: outputs, Seconds: time.Since(start).Seconds(),
		Finished: time.Now().UTC().Format(time.RFC3339)}
	if outputs == nil {
		rec.Outputs = []string{}
	}
	if result != nil {
		b, err := json.Marshal(result)
		if err != nil {
			return "", err
		}
		rec.Result = b
	}
	if err := writeStep(r.out, rec); err != nil {
		return "", err
	}
	r.steps = append(r.steps, RunStep{Name: name, Seconds: rec.Seconds, Key: key})
	return key, nil
}

// pass turns run's flags that were set (on the command line or by
// --config) into arguments for a step, so every step otherwise keeps the
// defaults of its own command.
func (r *runner) pass(names ...string) []string {
	var args []string
	for _, n := range names {
		if r.cmd.IsSet(n) {
			args = append(args, fmt.Sprintf("--%s=%v", n, r.cmd.Value(n)))
		}
	}
	return args
}

// passAs is pass for flags the step names differently: {run's, the step's}.
func (r *runner) passAs(names ...[2]string) []string {
	var args []string
	for _, n := range names {
		if r.cmd.IsSet(n[0]) {
			args = append(args, fmt.Sprintf("--%s=%v", n[1], r.cmd.Value(n[0])))
		}
	}
	return args
}

// hashArgs is args with the output directory written as $OUT, so that
// keys do not depend on where the report directory is.
func (r *runner) hashArgs(args []string) []string {
	out := make([]string, len(args))
	prefix := filepath.Clean(r.out) + string(filepath.Separator)
	for i, a := range args {
		flag, val, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(flag, "--") {
			flag, val = "", a
		} else {
			flag += "="
		}
		if rest, ok := strings.CutPrefix(val, prefix); ok {
			val = "$OUT/" + filepath.ToSlash(rest)
		} else if _, err := os.Stat(val); err == nil {
			// A file named relatively here and absolutely in config.json
			// is the same input (its contents are fingerprinted apart).
			if abs, err := filepath.Abs(val); err == nil {
				val = abs
			}
		}
		out[i] = flag + val
	}
	return out
}

// invoke runs one of onnxprune's commands in-process with args (after
// the command's name) and returns what it printed on stdout. Its status
// lines and progress go to run's stderr.
func (r *runner) invoke(ctx context.Context, c *cli.Command, args []string) ([]byte, error) {
	var out bytes.Buffer
	root := r.cmd.Root()
	c.Writer, c.ErrWriter = &out, root.ErrWriter
	c.Flags = append(c.Flags, globalFlags()...)
	c.ExitErrHandler = func(context.Context, *cli.Command, error) {}
	c.OnUsageError = func(_ context.Context, _ *cli.Command, err error, _ bool) error { return usageError{err.Error()} }
	argv := []string{c.Name}
	for _, g := range []string{"quiet", "verbose"} {
		if root.Bool(g) {
			argv = append(argv, "--"+g)
		}
	}
	if lib := root.String("ort-lib"); lib != "" {
		argv = append(argv, "--ort-lib", lib)
	}
	// A fresh context that carries only the cancellation: urfave/cli
	// makes a command run under another's context its subcommand.
	sctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	err := c.Run(sctx, append(argv, args...))
	return out.Bytes(), err
}

// invokeJSON runs c like invoke and decodes the JSON it printed (every
// step runs its command with --json) into result.
func (r *runner) invokeJSON(ctx context.Context, c *cli.Command, args []string, result any) error {
	out, err := r.invoke(ctx, c, args)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(out, result); err != nil {
		return fmt.Errorf("%s printed no JSON result: %v", c.Name, err)
	}
	return nil
}

// installDir moves a step's finished temporary directory into place.
func installDir(tmp, final string) error {
	if err := os.RemoveAll(final); err != nil {
		return err
	}
	return os.Rename(tmp, final)
}

// prepareRunDir creates outDir, refusing a non-empty directory that holds
// no earlier run unless force; it clears what an interrupted step left.
func prepareRunDir(outDir string, force bool) error {
	entries, err := os.ReadDir(outDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return os.MkdirAll(outDir, 0o755)
	case err != nil:
		return err
	}
	if len(entries) > 0 && !force {
		if _, err := os.Stat(filepath.Join(outDir, ".steps")); err != nil {
			return fmt.Errorf("%s: output directory is not empty and holds no earlier run (use --force to write into it)", outDir)
		}
	}
	return os.RemoveAll(filepath.Join(outDir, runWorkDir))
}

// resolveRunModel returns the ONNX model to prune, or the checkpoint to
// convert first.
func resolveRunModel(p string) (onnx, checkpoint string, err error) {
	fi, err := os.Stat(p)
	if err != nil {
		return "", "", err
	}
	if !fi.IsDir() {
		if strings.HasSuffix(p, ".onnx") {
			return p, "", nil
		}
		return "", p, nil
	}
	if _, err := os.Stat(filepath.Join(p, "model.onnx")); err == nil {
		return filepath.Join(p, "model.onnx"), "", nil
	}
	if ms, _ := filepath.Glob(filepath.Join(globEscape(p), "*.onnx")); len(ms) == 1 {
		return ms[0], "", nil
	} else if len(ms) > 1 {
		return "", "", fmt.Errorf("%s: %d ONNX models in the directory; name one", p, len(ms))
	}
	return "", p, nil // a Hugging Face checkpoint directory
}

// findRepoRoot walks up from the working directory to the onnxprune
// module holding the embedded default model.
func findRepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), runModule+"\n") {
			if _, err := os.Stat(filepath.Join(dir, defaultRunModel)); err == nil {
				return dir, nil
			}
		}
		if filepath.Dir(dir) == dir {
			return "", fmt.Errorf("%s is not inside the onnxprune repository (its %s is the default model): pass MODEL", wd, defaultRunModel)
		}
	}
}

// writeRunReport writes config.json, quality.svg, report.json and
// report.md (last: its presence means the run finished).
func writeRunReport(cmd *cli.Command, rep *RunReport, model string) error {
	out := rep.Output
	cfg, _ := json.MarshalIndent(effectiveRunConfig(cmd, model, out), "", "  ")
	if err := writeFileAtomic(filepath.Join(out, runConfigFile), append(cfg, '\n')); err != nil {
		return err
	}
	k := float64(len(rep.RemovedBlocks))
	plot := &eval.Plot{Title: "perplexity on " + filepath.Base(rep.Perplexity.Data), XLabel: "blocks removed", YLabel: "perplexity",
		IntegerX: true, YFromZero: true, Series: []eval.Series{
			{Name: "pruned", X: []float64{0, k}, Y: []float64{rep.Perplexity.Original, rep.Perplexity.Pruned},
				Labels: []string{fmt.Sprintf("%.2f", rep.Perplexity.Original), fmt.Sprintf("%.2f", rep.Perplexity.Pruned)}}}}
	if rep.Perplexity.Healed > 0 {
		plot.Series = append(plot.Series, eval.Series{Name: "healed (" + rep.Heal.Method + ")", X: []float64{0, k},
			Y: []float64{rep.Perplexity.Original, rep.Perplexity.Healed}, Labels: []string{"", fmt.Sprintf("%.2f", rep.Perplexity.Healed)}})
	}
	if rep.Perplexity.Sparse > 0 && rep.Sparsity != nil {
		plot.Series = append(plot.Series, eval.Series{Name: "+ " + sparsityHow(rep.Sparsity), X: []float64{0, k},
			Y: []float64{rep.Perplexity.Original, rep.Perplexity.Sparse}, Labels: []string{"", fmt.Sprintf("%.2f", rep.Perplexity.Sparse)}})
	}
	var svg strings.Builder
	if err := eval.WriteSVG(&svg, "onnxprune run: "+filepath.Base(rep.Model), 560, 400, plot); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(out, runQualityFig), []byte(svg.String())); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(rep, "", "  ")
	if err := writeFileAtomic(filepath.Join(out, runReportJSON), append(b, '\n')); err != nil {
		return err
	}
	var md strings.Builder
	writeRunMarkdown(&md, rep)
	return writeFileAtomic(filepath.Join(out, runReportMD), []byte(md.String()))
}

func writeRunMarkdown(w io.Writer, r *RunReport) {
	fmt.Fprintf(w, "# onnxprune run: %s\n\n", filepath.Base(r.Model))
	if r.Source != "" {
		fmt.Fprintf(w, "Converted from `%s`; ", r.Source)
	}
	fmt.Fprintf(w, "model `%s`, %d blocks, %s parameters. Result: `%s`.\n\n", r.Model, r.BlocksBefore, thousands(r.ParamsBefore), r.Files.Model)
	if s := r.Shrink; s != nil {
		fmt.Fprintf(w, "**Width pruning** first (as \"onnxprune shrink\", criterion %s): %s; parameters %s → %s (−%.1f%%). "+
			"Calibration, pruning and healing worked on the shrunk model `%s`, so the pruned column below is shrunk and depth-pruned.\n\n",
			s.Plan.Criterion, shrinkHow(s.Plan), thousands(s.ParamsBefore), thousands(s.ParamsAfter),
			100*float64(s.ParamsBefore-s.ParamsAfter)/float64(max(s.ParamsBefore, 1)), r.Files.Shrunk)
	}
	fmt.Fprintf(w, "**Removed blocks** %s (%s): %s.\n\n", graph.FormatBlocks(r.RemovedBlocks), r.Strategy, r.Plan.Reason)
	if r.Shrink != nil {
		fmt.Fprintln(w, "| | original | shrunk + pruned | result |")
	} else {
		fmt.Fprintln(w, "| | original | pruned | result |")
	}
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	fmt.Fprintf(w, "| blocks | %d | %d | %d |\n", r.BlocksBefore, r.BlocksAfter, r.BlocksAfter)
	fmt.Fprintf(w, "| parameters | %s | %s (−%.1f%%) | %s |\n", thousands(r.ParamsBefore), thousands(r.ParamsAfter), 100*r.ParamsRemoved, thousands(r.ParamsAfter))
	fmt.Fprintf(w, "| file | %s | | %s |\n", humanBytes(r.FileBytesBefore), humanBytes(r.FileBytesAfter))
	if sp := r.Sparsity; sp != nil {
		fmt.Fprintf(w, "| zero weights | | | %s (%.1f%%) |\n", thousands(sp.Zeros), 100*sp.ModelSparsity)
	}
	healed := "–"
	if r.Perplexity.Sparse > 0 {
		healed = fmt.Sprintf("%.4f", r.Perplexity.Sparse)
	} else if r.Perplexity.Healed > 0 {
		healed = fmt.Sprintf("%.4f", r.Perplexity.Healed)
	}
	fmt.Fprintf(w, "| perplexity | %.4f | %.4f | %s |\n", r.Perplexity.Original, r.Perplexity.Pruned, healed)
	if b := r.Bench; b != nil && len(b.Results) == 2 {
		fmt.Fprintf(w, "| decode tok/s (median) | %s | | %s |\n", sig4(b.Results[0].DecodeTokensPerS.Median), sig4(b.Results[1].DecodeTokensPerS.Median))
		fmt.Fprintf(w, "| prefill ms (median) | %s | | %s |\n", sig4(b.Results[0].PrefillMS.Median), sig4(b.Results[1].PrefillMS.Median))
	}
	fmt.Fprintf(w, "\nPerplexity: %s on `%s`.\n\n", r.Perplexity.Method, r.Perplexity.Data)
	switch {
	case r.Heal.Bridge != nil:
		fmt.Fprintf(w, "Healing: linear bridge (ReplaceMe), ridge %g.\n", r.Heal.Bridge.Ridge)
		for _, run := range r.Heal.Bridge.Runs {
			fmt.Fprintf(w, "- blocks %s: folded into `%s` over %d tokens; relative error at the cut %.4f → %.4f\n",
				graph.FormatBlocks(run.Blocks), run.Weight, run.Tokens, run.RelPruned, run.RelBridged)
		}
		fmt.Fprintln(w)
	case r.Heal.LoRA != nil:
		fmt.Fprintf(w, "Healing: LoRA adapters trained on `%s` and merged into the weights (as \"onnxprune heal --method lora\"); the training log is `%s/lora.json`.\n",
			r.Heal.TrainData, path.Dir(r.Files.Model))
		var l struct {
			Options struct {
				Rank  int     `json:"rank"`
				Alpha float64 `json:"alpha"`
				LR    float64 `json:"lr"`
				Steps int     `json:"steps"`
			} `json:"options"`
			Initial      float64 `json:"initial_val_ppl"`
			Best         float64 `json:"best_val_ppl"`
			BestStep     int     `json:"best_step"`
			StepsPerSec  float64 `json:"steps_per_sec"`
			TokensPerSec float64 `json:"tokens_per_sec"`
			Ratio        float64 `json:"step_forward_ratio"`
		}
		if json.Unmarshal(r.Heal.LoRA, &l) == nil && l.Options.Steps > 0 {
			fmt.Fprintf(w, "- r %d, α %g, lr %g, %d steps at %.2f steps/s (%.0f tokens/s; a step costs %.1f× a forward pass); validation perplexity %.4f → %.4f (best at step %d)\n",
				l.Options.Rank, l.Options.Alpha, l.Options.LR, l.Options.Steps, l.StepsPerSec, l.TokensPerSec, l.Ratio, l.Initial, l.Best, l.BestStep)
		}
		fmt.Fprintln(w)
	default:
		fmt.Fprint(w, "Healing: none.\n\n")
	}
	if sp := r.Sparsity; sp != nil {
		before, what := r.Perplexity.Pruned, "pruned"
		if r.Perplexity.Healed > 0 {
			before, what = r.Perplexity.Healed, "healed"
		}
		fmt.Fprintf(w, "Sparsity (as \"onnxprune sparsify\", %s), after healing, which would densify the weights: %s of the %s weights of %d linear layers zero (%.2f%%), %.2f%% of all parameters; "+
			"perplexity %s %.4f → %.4f. Shapes are unchanged: dense kernels are no faster. Per tensor: `%s/sparsity.json`.\n\n",
			sparsityHow(sp), thousands(sp.Zeros), thousands(sp.Params), len(sp.Tensors), 100*sp.Sparsity, 100*sp.ModelSparsity,
			what, before, r.Perplexity.Sparse, path.Dir(r.Files.Model))
	}
	if b := r.Bench; b != nil && b.Comparison != nil {
		c := b.Comparison
		fmt.Fprintf(w, "Speed (%s, interleaved runs, ratios of medians): decode %.3f× (ideal %.3f×), prefill %.3f×.\n\n",
			b.Results[0].Device, c.DecodeSpeedup, c.IdealSpeedup, c.PrefillSpeedup)
	}
	fmt.Fprintf(w, "![perplexity](%s)\n\n![d(l, n)](%s)\n\n", r.Files.Plot, r.Files.Heatmap)
	fmt.Fprintln(w, "| step | time | |")
	fmt.Fprintln(w, "|---|---:|---|")
	for _, s := range r.Steps {
		note := ""
		if s.Reused {
			note = "reused"
		}
		fmt.Fprintf(w, "| %s | %.1fs | %s |\n", s.Name, s.Seconds, note)
	}
	fmt.Fprintf(w, "\nThis invocation: %.1fs. Files: `%s`, `%s`, `%s`, `%s`, `%s`; options: `%s` (`onnxprune run --config %s` repeats the run).\n",
		r.Seconds, r.Files.Model, r.Files.Plan, r.Files.Stats, r.Files.Heatmap, r.Files.Plot, r.Files.Config, filepath.Join(r.Output, r.Files.Config))
}

// shrinkHow says what width pruning removed, e.g. "25% of FFN channels per block".
func shrinkHow(p *rewrite.ShrinkPlan) string {
	var parts []string
	if p.FFNRatio > 0 {
		scope := "per block"
		if p.FFNGlobal {
			scope = "over all blocks"
		}
		parts = append(parts, fmt.Sprintf("%g%% of FFN channels %s", 100*p.FFNRatio, scope))
	}
	if p.RemoveKVGroups > 0 {
		parts = append(parts, fmt.Sprintf("%d KV group(s) per block", p.RemoveKVGroups))
	}
	return strings.Join(parts, ", ")
}

// sparsityHow names the sparsity, e.g. "magnitude 50%" or "wanda 2:4".
func sparsityHow(s *SparsifyFile) string {
	if s.Pattern != "" {
		return s.Method + " " + s.Pattern
	}
	return fmt.Sprintf("%s %g%%", s.Method, 100*s.Ratio)
}

// printRun prints the headline numbers.
func printRun(w io.Writer, r *RunReport) {
	reused := 0
	for _, s := range r.Steps {
		if s.Reused {
			reused++
		}
	}
	if s := r.Shrink; s != nil {
		fmt.Fprintf(w, "shrunk %s (%s); parameters %s → %s (−%.1f%%)\n", shrinkHow(s.Plan), s.Plan.Criterion,
			thousands(s.ParamsBefore), thousands(s.ParamsAfter), 100*float64(s.ParamsBefore-s.ParamsAfter)/float64(max(s.ParamsBefore, 1)))
	}
	fmt.Fprintf(w, "removed blocks %s (of %d, %s); parameters %s → %s (−%.1f%%)\n", graph.FormatBlocks(r.RemovedBlocks), r.BlocksBefore,
		r.Strategy, thousands(r.ParamsBefore), thousands(r.ParamsAfter), 100*r.ParamsRemoved)
	fmt.Fprintf(w, "perplexity: original %.4f, pruned %.4f", r.Perplexity.Original, r.Perplexity.Pruned)
	if r.Perplexity.Healed > 0 {
		fmt.Fprintf(w, ", healed (%s) %.4f", r.Heal.Method, r.Perplexity.Healed)
	}
	if sp := r.Sparsity; sp != nil {
		fmt.Fprintf(w, ", sparse (%s) %.4f", sparsityHow(sp), r.Perplexity.Sparse)
	}
	fmt.Fprintln(w)
	if sp := r.Sparsity; sp != nil {
		fmt.Fprintf(w, "sparsity: %.2f%% of the selected weights zero (%.2f%% of all parameters)\n", 100*sp.Sparsity, 100*sp.ModelSparsity)
	}
	if b := r.Bench; b != nil && b.Comparison != nil {
		fmt.Fprintf(w, "decode %s → %s tok/s (%.3f×, ideal %.3f×)\n", sig4(b.Results[0].DecodeTokensPerS.Median),
			sig4(b.Results[1].DecodeTokensPerS.Median), b.Comparison.DecodeSpeedup, b.Comparison.IdealSpeedup)
	}
	fmt.Fprintf(w, "%d steps, %d reused, %.1fs\n", len(r.Steps), reused, r.Seconds)
	fmt.Fprintf(w, "report: %s\n", filepath.Join(r.Output, runReportMD))
}
