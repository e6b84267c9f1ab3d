package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/tokenizer"
)

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert a checkpoint (llama2.c, GGUF, Hugging Face safetensors) or a synthetic model to ONNX",
		ArgsUsage: "CHECKPOINT",
		Description: `Writes OUTDIR/model.onnx — a causal-LM decoder with a KV cache in optimum's
I/O convention, standard ONNX ops (opset 17) — with config.json,
genai_config.json and the tokenizer files beside it. Weights above 1 GiB go to
OUTDIR/model.onnx.data. CHECKPOINT is a llama2.c .bin, a .gguf file or a
Hugging Face model directory (config.json + safetensors); the format is
recognised by content.

Examples:
  onnxprune convert stories15M.bin --tokenizer tokenizer.bin -o out/
  onnxprune convert ./TinyLlama-1.1B --dtype float16 -o tinyllama/
  onnxprune convert --synthetic --layers 24 --hidden 2048 --heads 16 --kv-heads 8 \
      --ffn 5632 --vocab 32000 --seed 1 -o synth1b/`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created if missing)"},
			&cli.StringFlag{Name: "dtype", Value: "float32", Usage: "stored weight type: float32 or float16 (computation is float32 either way)"},
			&cli.StringFlag{Name: "tokenizer", Usage: "tokenizer `PATH` (file, or directory of Hugging Face tokenizer files) to read and copy beside the model"},
			&cli.BoolFlag{Name: "force", Usage: "write into a non-empty output directory, replacing the model's files"},
			&cli.BoolFlag{Name: "json", Usage: "print a JSON summary (files, params, bytes, seconds)"},
			&cli.BoolFlag{Name: "synthetic", Usage: "build a model with random weights (no CHECKPOINT) of the shape below", Category: "synthetic model"},
			&cli.StringFlag{Name: "family", Value: "llama", Usage: "llama or gpt2", Category: "synthetic model"},
			&cli.IntFlag{Name: "layers", Usage: "decoder blocks", Category: "synthetic model"},
			&cli.IntFlag{Name: "hidden", Usage: "hidden size", Category: "synthetic model"},
			&cli.IntFlag{Name: "heads", Usage: "attention heads", Category: "synthetic model"},
			&cli.IntFlag{Name: "kv-heads", Usage: "key/value heads (default: --heads)", Category: "synthetic model"},
			&cli.IntFlag{Name: "ffn", Usage: "MLP intermediate size", Category: "synthetic model"},
			&cli.IntFlag{Name: "vocab", Usage: "vocabulary size", Category: "synthetic model"},
			&cli.IntFlag{Name: "max-positions", Value: 2048, Usage: "context length", Category: "synthetic model"},
			&cli.BoolFlag{Name: "untied", Usage: "give the model its own LM head instead of reusing the embedding", Category: "synthetic model"},
			&cli.Int64Flag{Name: "seed", Value: 1, Usage: "random seed", Category: "synthetic model"},
		},
		Action: runConvert,
	}
}

// syntheticFlags are only meaningful with --synthetic.
var syntheticFlags = []string{"family", "layers", "hidden", "heads", "kv-heads", "ffn", "vocab", "max-positions", "untied", "seed"}

// ConvertReport is the `convert --json` summary.
type ConvertReport struct {
	Checkpoint string        `json:"checkpoint"` // path, or "synthetic"
	OutputDir  string        `json:"output_dir"`
	Model      string        `json:"model"`
	Files      []ConvertFile `json:"files"`
	Family     string        `json:"family"`
	Layers     int           `json:"layers"`
	DType      string        `json:"dtype"`
	Params     int64         `json:"params"`
	Bytes      int64         `json:"bytes"` // all files written
	Seconds    float64       `json:"seconds"`
}

type ConvertFile struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

func runConvert(_ context.Context, cmd *cli.Command) (err error) {
	synthetic := cmd.Bool("synthetic")
	switch {
	case synthetic && cmd.NArg() != 0:
		return usagef("convert: --synthetic takes no CHECKPOINT argument (got %q)", cmd.Args().First())
	case !synthetic && cmd.NArg() != 1:
		return usagef("convert: want exactly one CHECKPOINT argument, got %d (see onnxprune convert --help)", cmd.NArg())
	case cmd.String("output") == "":
		return usagef("convert: missing -o OUTDIR")
	}
	if !synthetic {
		for _, f := range syntheticFlags {
			if cmd.IsSet(f) {
				return usagef("convert: --%s needs --synthetic", f)
			}
		}
	}
	dt, err := convert.ParseDType(cmd.String("dtype"))
	if err != nil {
		return usagef("convert: --dtype: %v", err)
	}

	var (
		ck       convert.Checkpoint
		source   = "synthetic"
		tokFiles []string
	)
	if synthetic {
		cfg, err := syntheticConfig(cmd)
		if err != nil {
			return err
		}
		ck = convert.Synthetic(cfg, cmd.Int64("seed"))
	} else {
		source = cmd.Args().First()
		ck, err = convert.Open(source, convert.OpenOptions{Tokenizer: cmd.String("tokenizer")})
		if err != nil {
			return err
		}
		defer ck.Close()
	}
	if tokFiles, err = tokenizerFiles(cmd.String("tokenizer"), source, synthetic); err != nil {
		return err
	}
	if g, ok := ck.(*convert.GGUF); ok && len(tokFiles) == 0 {
		// The vocabulary is inside the checkpoint: keep it beside the
		// model so generate/eval/calibrate find it there.
		tmp, err := os.MkdirTemp("", "onnxprune-vocab")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		p := filepath.Join(tmp, tokenizer.GGUFVocabFile)
		if err := tokenizer.WriteGGUFVocab(p, g.Vocab()); err != nil {
			return err
		}
		tokFiles = []string{p}
	}

	outDir := cmd.String("output")
	created, err := prepareOutputDir(outDir, cmd.Bool("force"))
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			os.Remove(outDir) // only if still empty: Build leaves nothing on failure
		}
	}()

	modelPath := filepath.Join(outDir, "model.onnx")
	opts := convert.BuildOptions{DType: dt, TokenizerFiles: tokFiles}
	bar := newProgress(cmd, "converting (MiB)")
	opts.Progress = func(done, total int64) { bar.update(int(done>>20), int(total>>20)) }
	start := time.Now()
	if err := convert.Build(ck, modelPath, opts); err != nil {
		if bar.on {
			fmt.Fprintln(cmd.Root().ErrWriter)
		}
		return fmt.Errorf("%s: %w", source, err)
	}
	elapsed := time.Since(start)
	if err := removeStaleData(modelPath); err != nil {
		return err
	}

	rep, err := convertReport(ck, source, outDir, modelPath, dt, elapsed)
	if err != nil {
		return err
	}
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	printConvert(w, rep)
	return nil
}

func syntheticConfig(cmd *cli.Command) (convert.Config, error) {
	cfg := convert.Config{
		Family:         convert.Family(cmd.String("family")),
		Layers:         cmd.Int("layers"),
		Hidden:         cmd.Int("hidden"),
		Heads:          cmd.Int("heads"),
		KVHeads:        cmd.Int("kv-heads"),
		FFN:            cmd.Int("ffn"),
		Vocab:          cmd.Int("vocab"),
		MaxPositions:   cmd.Int("max-positions"),
		TiedEmbeddings: !cmd.Bool("untied"),
		BOS:            1,
		EOS:            2,
	}
	if cfg.Family != convert.FamilyLlama && cfg.Family != convert.FamilyGPT2 {
		return cfg, usagef("convert: --family %q: want llama or gpt2", cfg.Family)
	}
	for _, f := range []string{"layers", "hidden", "heads", "ffn", "vocab"} {
		if cmd.Int(f) <= 0 {
			return cfg, usagef("convert: --synthetic needs --%s (a positive number)", f)
		}
	}
	if cfg.KVHeads == 0 {
		cfg.KVHeads = cfg.Heads
	}
	if cfg.Hidden%cfg.Heads != 0 {
		return cfg, usagef("convert: --hidden %d is not a multiple of --heads %d", cfg.Hidden, cfg.Heads)
	}
	if cfg.Family == convert.FamilyGPT2 && !cfg.TiedEmbeddings {
		return cfg, usagef("convert: GPT-2 always ties its LM head (drop --untied)")
	}
	return cfg, nil
}

// hfTokenizerFiles are the files of a Hugging Face tokenizer that are
// copied beside the model.
var hfTokenizerFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"vocab.json", "merges.txt", "added_tokens.json",
}

// tokenizerFiles lists what to copy beside the model: --tokenizer (a file,
// or a directory's Hugging Face tokenizer files), else the tokenizer
// files of a Hugging Face checkpoint directory.
func tokenizerFiles(flag, checkpoint string, synthetic bool) ([]string, error) {
	dir := ""
	switch {
	case flag != "":
		fi, err := os.Stat(flag)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
		if !fi.IsDir() {
			return []string{flag}, nil
		}
		dir = flag
	case !synthetic:
		if fi, err := os.Stat(checkpoint); err == nil && fi.IsDir() {
			dir = checkpoint
		}
	}
	if dir == "" {
		return nil, nil
	}
	var files []string
	for _, name := range hfTokenizerFiles {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			files = append(files, p)
		}
	}
	if flag != "" && len(files) == 0 {
		return nil, fmt.Errorf("tokenizer: %s has none of %s", dir, strings.Join(hfTokenizerFiles, ", "))
	}
	return files, nil
}

// prepareOutputDir creates dir if missing (reporting whether it did) and
// refuses a non-empty one without force.
func prepareOutputDir(dir string, force bool) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, err
		}
		return true, nil
	case err != nil:
		return false, err
	case len(entries) > 0 && !force:
		return false, fmt.Errorf("%s: output directory is not empty (use --force to write into it)", dir)
	}
	return false, nil
}

// removeStaleData deletes an external data file left by an earlier
// conversion into the same directory when the new model does not use it.
func removeStaleData(modelPath string) error {
	data := modelPath + ".data"
	if _, err := os.Stat(data); err != nil {
		return nil
	}
	m, err := graph.Load(modelPath)
	if err != nil {
		return err
	}
	used := false
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		if ref, err := graph.ParseExternalRef(t); err == nil && graph.IsExternal(t) && ref.Location == filepath.Base(data) {
			used = true
			return false
		}
		return true
	})
	if !used {
		return os.Remove(data)
	}
	return nil
}

func convertReport(ck convert.Checkpoint, source, outDir, modelPath string, dt convert.DType, elapsed time.Duration) (*ConvertReport, error) {
	cfg := ck.Config()
	rep := &ConvertReport{
		Checkpoint: source, OutputDir: outDir, Model: modelPath,
		Family: string(cfg.Family), Layers: cfg.Layers, DType: string(dt),
		Seconds: elapsed.Seconds(), Files: []ConvertFile{},
	}
	for _, t := range ck.Tensors() {
		rep.Params += graph.NumElements(t.Shape)
	}
	entries, err := os.ReadDir(outDir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		rep.Files = append(rep.Files, ConvertFile{Name: e.Name(), Bytes: fi.Size()})
		rep.Bytes += fi.Size()
	}
	sort.Slice(rep.Files, func(i, j int) bool { return rep.Files[i].Name < rep.Files[j].Name })
	return rep, nil
}

func printConvert(w io.Writer, r *ConvertReport) {
	fmt.Fprintf(w, "%s → %s: %s %d-layer model, %s params, %s weights, %.1f s\n",
		r.Checkpoint, r.Model, r.Family, r.Layers, thousands(r.Params), r.DType, r.Seconds)
	for _, f := range r.Files {
		fmt.Fprintf(w, "  %-24s %s\n", f.Name, humanBytes(f.Bytes))
	}
}
