package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
)

func sparsifyCommand() *cli.Command {
	return &cli.Command{
		Name:      "sparsify",
		Usage:     "zero weights of the linear layers: magnitude or Wanda, unstructured or N:M",
		ArgsUsage: "MODEL.onnx",
		Description: `Zeros a fraction of the weights of every linear layer in the decoder blocks
(MatMul/Gemm matrices; embeddings and the LM head only with --include-embeddings,
--include-head, or when named in --tensors) and writes the model, its sidecar files
and sparsity.json (achieved sparsity per tensor and overall) into the output
directory. Shapes do not change: dense kernels still multiply the zeros, so the
model is no faster on onnxruntime's CPU/CUDA kernels — use shrink or prune for speed.

Scores:
  magnitude   |W_ij|, ranked per matrix (or over all selected matrices with --global)
  wanda       |W_ij|·‖X_j‖₂ with input-feature norms from calibration text (--data),
              ranked within each output unit (Sun et al. 2023)

Sparsity:
  --ratio R       zero the fraction R of each ranking, 0 ≤ R < 1
  --pattern N:M   keep the N best of every M consecutive weights along the input
                  dimension (2:4, 4:8)

Examples:
  onnxprune sparsify model.onnx --ratio 0.5 -o sparse/
  onnxprune sparsify model.onnx --method wanda --ratio 0.5 --data valid.txt --samples 64 -o wanda/
  onnxprune sparsify model.onnx --method wanda --pattern 2:4 --data valid.txt -o wanda24/`,
		Flags: append(append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `DIR` (created; must not be the model's own)"},
			&cli.StringFlag{Name: "method", Value: rewrite.MethodMagnitude, Usage: "magnitude or wanda"},
			&cli.FloatFlag{Name: "ratio", Usage: "fraction of weights to zero, in [0, 1)"},
			&cli.StringFlag{Name: "pattern", Usage: "N:M semi-structured sparsity, e.g. 2:4 (instead of --ratio)"},
			&cli.BoolFlag{Name: "global", Usage: "magnitude: one ranking over all selected matrices instead of one per matrix"},
			&cli.BoolFlag{Name: "include-embeddings", Usage: "also sparsify the embedding tables"},
			&cli.BoolFlag{Name: "include-head", Usage: "also sparsify the LM head"},
			&cli.StringFlag{Name: "tensors", Usage: "only these weights: comma-separated initializer names or patterns (model.layers.*.mlp.*)"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite an existing model in the output directory"},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
		}, dataFlags()...), runtimeFlags()...),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			model, outDir, err := modelAndOutput(cmd)
			if err != nil {
				return err
			}
			opts, err := sparsifyOptions(cmd)
			if err != nil {
				return err
			}
			return runSparsify(ctx, cmd, model, outDir, opts)
		},
	}
}

// sparsifyOptions turns the flags into options, refusing bad values as
// usage errors before any file is read.
func sparsifyOptions(cmd *cli.Command) (rewrite.SparsifyOptions, error) {
	o := rewrite.SparsifyOptions{
		Method: cmd.String("method"), Ratio: cmd.Float("ratio"), Global: cmd.Bool("global"),
		IncludeEmbeddings: cmd.Bool("include-embeddings"), IncludeHead: cmd.Bool("include-head"),
	}
	if p := cmd.String("pattern"); p != "" {
		var err error
		if o.N, o.M, err = parsePattern(p); err != nil {
			return o, usagef("--pattern %v", err)
		}
	}
	if s := cmd.String("tensors"); s != "" {
		for _, t := range strings.Split(s, ",") {
			if t = strings.TrimSpace(t); t != "" {
				o.Tensors = append(o.Tensors, t)
			}
		}
	}
	if err := o.Validate(); err != nil {
		return o, usageError{strings.TrimPrefix(err.Error(), "sparsify: ")}
	}
	if o.Method == rewrite.MethodWanda && cmd.String("data") == "" {
		return o, usagef("--method wanda needs calibration text: --data FILE")
	}
	return o, nil
}

// parsePattern reads an N:M sparsity pattern.
func parsePattern(p string) (n, m int, err error) {
	ns, ms, ok := strings.Cut(p, ":")
	var err1, err2 error
	n, err1 = strconv.Atoi(strings.TrimSpace(ns))
	m, err2 = strconv.Atoi(strings.TrimSpace(ms))
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("%q: want N:M, e.g. 2:4", p)
	}
	return n, m, nil
}

// SparsifyFile is sparsity.json.
type SparsifyFile struct {
	Model  string `json:"model"`
	Output string `json:"output"`
	Data   string `json:"data,omitempty"`
	*rewrite.SparsityReport
}

func runSparsify(ctx context.Context, cmd *cli.Command, path, outDir string, opts rewrite.SparsifyOptions) error {
	m, err := graph.Load(path)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	targets, err := rewrite.SparsifyTargets(m, d, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	outModel, err := checkOutput(cmd, path, outDir)
	if err != nil {
		return err
	}
	if opts.Method == rewrite.MethodWanda {
		if opts.Norms, err = wandaNorms(ctx, cmd, m, path, targets); err != nil {
			return err
		}
	}
	rep, err := rewrite.Sparsify(m, d, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := graph.Check(m); err != nil {
		return fmt.Errorf("%s: sparsified graph invalid: %w", path, err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return err
	}
	if err := graph.Save(m, outModel, graph.SaveOptions{}); err != nil {
		return err
	}
	L := len(d.Blocks)
	all := make([]int, L)
	for i := range all {
		all[i] = i
	}
	if _, err := rewrite.WriteSidecars(filepath.Dir(path), outDir, L, all); err != nil {
		return err
	}
	file := SparsifyFile{Model: path, Output: outModel, Data: cmd.String("data"), SparsityReport: rep}
	b, _ := json.MarshalIndent(file, "", "  ")
	if err := writeFileAtomic(filepath.Join(outDir, "sparsity.json"), append(b, '\n')); err != nil {
		return err
	}
	w := cmd.Root().Writer
	if cmd.Bool("json") {
		_, err := fmt.Fprintf(w, "%s\n", b)
		return err
	}
	printSparsity(w, rep)
	logf(cmd, "wrote %s and %s", outModel, filepath.Join(outDir, "sparsity.json"))
	return nil
}

// checkOutput says where the model goes and refuses to overwrite one
// without --force; it creates nothing.
func checkOutput(cmd *cli.Command, path, outDir string) (string, error) {
	outModel := filepath.Join(outDir, filepath.Base(path))
	if _, err := os.Stat(outModel); err == nil && !cmd.Bool("force") {
		return "", fmt.Errorf("%s exists (use --force to overwrite)", outModel)
	}
	if same, _ := sameFile(filepath.Dir(path), outDir); same {
		return "", usagef("-o %s is the model's own directory", outDir)
	}
	return outModel, nil
}

func sameFile(a, b string) (bool, error) {
	ai, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	bi, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(ai, bi), nil
}

// wandaNorms measures ‖X_j‖₂ of every activation feeding a target.
func wandaNorms(ctx context.Context, cmd *cli.Command, m *graph.Model, path string, targets []*rewrite.LinearWeight) (map[string][]float64, error) {
	taps := map[string]int{}
	for _, w := range targets {
		for _, in := range w.Inputs {
			taps[in] = w.In
		}
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
	logf(cmd, "wanda: measuring %d input activations on %d batches (%d tokens)", len(taps), len(batches), tokens)
	pr := newProgress(cmd, "calibrate")
	st, err := calib.FeatureStatistics(ctx, m, taps, batches, calib.Options{Runtime: ro, Progress: pr.update})
	if err != nil {
		return nil, err
	}
	norms := map[string][]float64{}
	for name, s := range st {
		norms[name] = s.Norms()
	}
	return norms, nil
}

// printSparsity prints the per-tensor table and the totals.
func printSparsity(w io.Writer, r *rewrite.SparsityReport) {
	how := r.Method
	if r.Pattern != "" {
		how += ", pattern " + r.Pattern
	} else {
		how += fmt.Sprintf(", ratio %g", r.Ratio)
		if r.Global {
			how += ", global ranking"
		}
	}
	fmt.Fprintf(w, "sparsify (%s)\n", how)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "tensor\tblock\tshape\tlayout\tparams\tzeros\tsparsity\t")
	for _, t := range r.Tensors {
		blk := fmt.Sprint(t.Block)
		if t.Role != rewrite.RoleBlock {
			blk = t.Role
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\t%.2f%%\t\n", t.Name, blk, t.Shape, t.Layout,
			thousands(t.Params), thousands(t.Zeros), 100*t.Sparsity)
	}
	tw.Flush()
	fmt.Fprintf(w, "selected %d tensors: %s of %s weights zero (%.2f%%); %.2f%% of all %s model parameters\n",
		len(r.Tensors), thousands(r.Zeros), thousands(r.Params), 100*r.Sparsity, 100*r.ModelSparsity, thousands(r.ModelParams))
}
