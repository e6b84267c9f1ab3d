package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/heal"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

func TestHealBridge(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	out := filepath.Join(dir, "healed")
	code, _, errs := runCLI(t, "heal", model, "--method", "bridge", "--remove", "2,3", "--data", storiesText(t), "-o", out, "--threads", "1")
	if code != 0 {
		t.Fatalf("heal: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(filepath.Join(out, "bridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep heal.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || len(rep.Runs[0].Blocks) != 2 || !(rep.Runs[0].SSEBridged < rep.Runs[0].SSEPruned) {
		t.Fatalf("bridge.json: %s", b)
	}
	m, err := graph.Load(filepath.Join(out, "stories260k_kv.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil || len(d.Blocks) != 3 {
		t.Fatalf("healed model: %v blocks, err %v", d, err)
	}
	if _, err := os.Stat(filepath.Join(out, "plan.json")); err != nil {
		t.Fatal("no plan.json")
	}
}

func TestHealBadInput(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	empty := filepath.Join(t.TempDir(), "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"block 0", []string{"--remove", "0", "--data", storiesText(t)}, exitFailure, "no earlier MLP"},
		{"out of range", []string{"--remove", "9", "--data", storiesText(t)}, exitFailure, "out of range"},
		{"empty data", []string{"--remove", "2", "--data", empty}, exitFailure, "no samples"},
		{"no data", []string{"--remove", "2"}, exitUsage, "--data"},
		{"no blocks", []string{"--data", storiesText(t)}, exitUsage, "exactly one of"},
		{"bad method", []string{"--method", "prune", "--remove", "2"}, exitUsage, "want bridge or lora"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"heal", model, "-o", filepath.Join(t.TempDir(), "o"), "--threads", "1"}, tc.args...)
			code, _, errs := runCLI(t, args...)
			if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Fatalf("exit %d (want %d), stderr %q (want one line with %q)", code, tc.code, errs, tc.want)
			}
		})
	}
}

// healLoRAArgs is a short LoRA heal of stories260K without block 0.
func healLoRAArgs(t *testing.T, model, out string, extra ...string) []string {
	text := filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt")
	return append([]string{"heal", model, "--method", "lora", "--remove", "0", "--data", text, "--val", text, "--val-samples", "6",
		"--steps", "4", "--eval-every", "2", "--batch-size", "2", "--seq-len", "64", "--lr", "3e-3", "-o", out, "--threads", "1"}, extra...)
}

// TestHealLoRA: a short LoRA heal end to end; the merged model loads, has
// the pruned model's blocks, and its validation perplexity measured by
// `eval` is what lora.json reports for the kept adapters. --keep-adapter
// writes the adapter file and the adapter-input model instead. Two
// models: the torch export, whose weights are anonymous, and the
// conversion, whose weights are named model.layers.N.* and renumbered by
// pruning (adapters merged into the wrong layer would show here).
func TestHealLoRA(t *testing.T) {
	testenv.ORTLibrary(t)
	t.Run("torch export", func(t *testing.T) { testHealLoRA(t, fixture("stories260k_kv.onnx")) })
	t.Run("conversion", func(t *testing.T) {
		shared := testenv.SharedDir(t)
		dir := filepath.Join(t.TempDir(), "stories")
		if code, _, errs := runCLI(t, "convert", filepath.Join(shared, "models", "stories260K", "stories260K.bin"),
			"--tokenizer", filepath.Join(shared, "models", "stories260K", "tok512.bin"), "-o", dir); code != 0 {
			t.Fatalf("convert: exit %d: %s", code, errs)
		}
		testHealLoRA(t, filepath.Join(dir, "model.onnx"))
	})
}

func testHealLoRA(t *testing.T, model string) {
	base := strings.TrimSuffix(filepath.Base(model), ".onnx")
	out := filepath.Join(t.TempDir(), "healed")
	code, stdout, errs := runCLI(t, healLoRAArgs(t, model, out)...)
	if code != 0 {
		t.Fatalf("heal: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(filepath.Join(out, "lora.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Merged        bool    `json:"merged"`
		InitialValPPL float64 `json:"initial_val_ppl"`
		BestValPPL    float64 `json:"best_val_ppl"`
		BestStep      int     `json:"best_step"`
		StepsPerSec   float64 `json:"steps_per_sec"`
		History       []heal.TrainProgress
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if !rep.Merged || len(rep.History) != 4 || !(rep.BestValPPL < rep.InitialValPPL) || rep.StepsPerSec <= 0 {
		t.Fatalf("lora.json: %s", b)
	}
	healed := filepath.Join(out, base+".onnx")
	m, err := graph.Load(healed)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := graph.FindBlocks(m); err != nil || len(d.Blocks) != 4 {
		t.Fatalf("healed model: %v blocks, err %v", d, err)
	}
	text := filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt")
	code, evalOut, errs := runCLI(t, "eval", healed, "--data", text, "--samples", "6", "--seq-len", "64", "--json", "--threads", "1")
	if code != 0 {
		t.Fatalf("eval: exit %d: %s", code, errs)
	}
	var ev struct{ Perplexity float64 }
	if err := json.Unmarshal([]byte(evalOut), &ev); err != nil {
		t.Fatalf("%v: %s", err, evalOut)
	}
	if math.Abs(ev.Perplexity-rep.BestValPPL) > 1e-4*rep.BestValPPL {
		t.Fatalf("eval of the merged model: ppl %.6f, lora.json best %.6f", ev.Perplexity, rep.BestValPPL)
	}
	for _, f := range []string{"plan.json", "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "checkpoints"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("no %s", f)
		}
	}
	if !strings.Contains(stdout, "validation perplexity") {
		t.Errorf("stdout: %s", stdout)
	}
	// A second run into the same directory needs --resume or --force.
	code, _, errs = runCLI(t, healLoRAArgs(t, model, out, "--force", "--resume", "--keep-adapter")...)
	if code != 0 {
		t.Fatalf("resume: exit %d: %s", code, errs)
	}
	for _, f := range []string{base + "_lora.onnx", "adapter/adapter_config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("--keep-adapter: no %s", f)
		}
	}
	if _, err := heal.LoadAdapters(filepath.Join(out, "adapter")); err != nil {
		t.Fatal(err)
	}
}

func TestHealLoRABadInput(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"rank 0", []string{"--rank", "0"}, exitFailure, "rank 0"},
		{"negative rank", []string{"--rank", "-3"}, exitFailure, "rank -3"},
		{"targets", []string{"--targets", "no_such_weight"}, exitFailure, `LoRA targets "no_such_weight" match no MatMul/Gemm weight (weights look like`},
		{"small data", []string{"--seq-len", "4096", "--batch-size", "64"}, exitFailure, "one batch needs"},
		{"block out of range", []string{"--remove", "7"}, exitFailure, "out of range"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "o")
			args := healLoRAArgs(t, model, out)
			args = append(args[:len(args):len(args)], tc.args...)
			code, _, errs := runCLI(t, args...)
			if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Fatalf("exit %d (want %d), stderr %q (want one line with %q)", code, tc.code, errs, tc.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("bad input wrote %s", out)
			}
		})
	}
}
