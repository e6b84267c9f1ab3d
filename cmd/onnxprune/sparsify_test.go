package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// heldOut returns batches of TinyStories validation samples 100–139,
// disjoint from the calibration samples the commands take (the first
// --samples of the same file).
func heldOut(t *testing.T) []calib.Batch {
	t.Helper()
	samples, err := calib.LoadSamples(filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt"), calib.TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(fixture("tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return calib.Batches(calib.Tokenize(tok, samples[100:140], 128, true), 8)
}

func perplexityOf(t *testing.T, path string, batches []calib.Batch) float64 {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	ppl, err := calib.Perplexity(context.Background(), m, nil, batches, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	return ppl
}

// TestSparsifyWandaBeatsMagnitude: on stories260K at 50% unstructured
// sparsity, Wanda's held-out perplexity is below magnitude's (the order
// the Wanda paper reports for LLaMA), both above the dense model's; the
// report on disk matches the printed one.
func TestSparsifyWandaBeatsMagnitude(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	text := filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt")
	batches := heldOut(t)
	dense := perplexityOf(t, model, batches)
	ppl := map[string]float64{}
	for _, c := range []struct {
		name string
		args []string
	}{
		{"magnitude", []string{"--ratio", "0.5"}},
		{"wanda", []string{"--method", "wanda", "--ratio", "0.5", "--data", text, "--samples", "32", "--seq-len", "128"}},
		{"wanda24", []string{"--method", "wanda", "--pattern", "2:4", "--data", text, "--samples", "32", "--seq-len", "128"}},
	} {
		out := filepath.Join(dir, c.name)
		code, stdout, stderr := runCLI(t, append([]string{"sparsify", model, "-o", out, "--json", "--threads", "1"}, c.args...)...)
		if code != 0 {
			t.Fatalf("%s: exit %d: %s", c.name, code, stderr)
		}
		var printed, saved SparsifyFile
		if err := json.Unmarshal([]byte(stdout), &printed); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(out, "sparsity.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &saved); err != nil {
			t.Fatal(err)
		}
		if printed.Zeros != saved.Zeros || printed.Sparsity < 0.4999 || printed.Sparsity > 0.5001 || len(printed.Tensors) != 35 {
			t.Fatalf("%s: report %+v", c.name, printed.SparsityReport)
		}
		if _, err := os.Stat(filepath.Join(out, "tok512.bin")); err != nil {
			t.Fatalf("%s: tokenizer not copied", c.name)
		}
		ppl[c.name] = perplexityOf(t, filepath.Join(out, "stories260k_kv.onnx"), batches)
	}
	t.Logf("held-out perplexity: dense %.3f, magnitude 50%% %.3f, wanda 50%% %.3f, wanda 2:4 %.3f", dense, ppl["magnitude"], ppl["wanda"], ppl["wanda24"])
	if !(dense < ppl["wanda"] && ppl["wanda"] < ppl["magnitude"]) {
		t.Fatalf("want dense < wanda < magnitude, got %.3f, %.3f, %.3f", dense, ppl["wanda"], ppl["magnitude"])
	}
}

// TestSparsifyBadInput: one-line errors, exit 2 for bad flag values and 1
// for what the model refutes, and no model written.
func TestSparsifyBadInput(t *testing.T) {
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"ratio 1", []string{"--ratio", "1"}, 2, "ratio 1 outside [0, 1)"},
		{"negative ratio", []string{"--ratio", "-0.5"}, 2, "outside [0, 1)"},
		{"N ≥ M", []string{"--pattern", "4:4"}, 2, "want N:M with 0 < N < M"},
		{"N > M", []string{"--pattern", "8:4"}, 2, "want N:M with 0 < N < M"},
		{"bad pattern", []string{"--pattern", "2-4"}, 2, "want N:M, e.g. 2:4"},
		{"pattern and ratio", []string{"--pattern", "2:4", "--ratio", "0.5"}, 2, "not both"},
		{"wanda without data", []string{"--method", "wanda", "--ratio", "0.5"}, 2, "needs calibration text"},
		{"unknown method", []string{"--method", "sparsegpt", "--ratio", "0.5"}, 2, `method "sparsegpt"`},
		{"no such tensor", []string{"--ratio", "0.5", "--tensors", "onnx::MatMul_1408,model.layers.9.mlp.up_proj.weight"}, 1, `no tensor "model.layers.9.mlp.up_proj.weight" in the model`},
		{"not a linear weight", []string{"--ratio", "0.5", "--tensors", "model.norm.weight"}, 1, "not a linear-layer weight"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			code, _, errs := runCLI(t, append([]string{"sparsify", model, "-o", out}, c.args...)...)
			if code != c.code || !strings.Contains(errs, c.want) || strings.Count(errs, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line with %q", code, errs, c.code, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("created %s despite the error", out)
			}
		})
	}
}
