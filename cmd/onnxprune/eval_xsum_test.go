package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
)

// xsumJSON is the part of `eval --task xsum --json` the tests read.
type xsumJSON struct {
	Documents       int `json:"documents"`
	SeqLen          int `json:"seq_len"`
	GeneratedTokens int `json:"generated_tokens"`
	Rouge           map[string]struct {
		F1 float64 `json:"f1"`
	} `json:"rouge"`
	Articles []struct {
		ID              string `json:"id"`
		PromptTokens    int    `json:"prompt_tokens"`
		GeneratedTokens int    `json:"generated_tokens"`
		Stop            string `json:"stop"`
	} `json:"articles"`
	Energy struct {
		Joules         float64 `json:"joules"`
		Source         string  `json:"source"`
		Estimated      bool    `json:"estimated"`
		Samples        int     `json:"samples"`
		Tokens         int     `json:"tokens"`
		JoulesPerToken float64 `json:"joules_per_token"`
		CO2eGrams      float64 `json:"co2e_grams"`
	} `json:"energy"`
}

// TestEvalXSumCLI: the acceptance run (20 articles of the shared XSum
// test file, the task's defaults) on stories260K, with RAPL pointed at an
// empty directory so the energy is the labelled estimate everywhere.
func TestEvalXSumCLI(t *testing.T) {
	testenv.ORTLibrary(t)
	data := filepath.Join(testenv.SharedDir(t), "data", "xsum", "test.jsonl")
	noRAPL := t.TempDir()
	code, out, errs := runCLI(t, "eval", fixture("stories260k_kv.onnx"), "--task", "xsum", "--data", data,
		"--tokenizer", fixture("tok512.bin"), "--threads", "1", "--powercap", noRAPL, "--grid-intensity", "100", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r xsumJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Documents != 20 || len(r.Articles) != 20 || r.SeqLen != 512 || r.Articles[0].ID != "34268361" {
		t.Fatalf("%d articles, seq_len %d", r.Documents, r.SeqLen)
	}
	tokens := 0
	for _, a := range r.Articles {
		if a.PromptTokens > 512-64 || a.GeneratedTokens < 1 || a.GeneratedTokens > 64 {
			t.Errorf("article %s: %d prompt tokens, %d generated", a.ID, a.PromptTokens, a.GeneratedTokens)
		}
		tokens += a.GeneratedTokens
	}
	for _, k := range []string{"rouge1", "rouge2", "rougeL"} {
		if f := r.Rouge[k].F1; f < 0 || f > 1 {
			t.Errorf("%s F1 %g", k, f)
		}
	}
	e := r.Energy
	if e.Source != "estimated" || !e.Estimated || e.Joules <= 0 || e.Samples != 20 || e.Tokens != tokens || tokens != r.GeneratedTokens ||
		math.Abs(e.JoulesPerToken-e.Joules/float64(tokens)) > 1e-12 || math.Abs(e.CO2eGrams-e.Joules/3.6e6*100) > 1e-12 {
		t.Errorf("energy %+v over %d tokens", e, tokens)
	}

	// The text output labels the estimate and shows examples.
	code, out, errs = runCLI(t, "eval", fixture("stories260k_kv.onnx"), "--task", "xsum", "--data", data,
		"--tokenizer", fixture("tok512.bin"), "--threads", "1", "--powercap", noRAPL, "--max-new-tokens", "8", "--show-examples", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"ROUGE-1 ", "energy [estimated]", "J per generated token", "reference: Proposals for an indoor water park"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestEvalXSumRAPLFlag: --powercap reaches the meter (a still counter
// reads 0 J from RAPL); a short article file and --seq-len are honoured.
func TestEvalXSumRAPLFlag(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	zone := filepath.Join(dir, "rapl", "intel-rapl:0")
	os.MkdirAll(zone, 0o755)
	for f, v := range map[string]string{"name": "package-0", "energy_uj": "1000", "max_energy_range_uj": "262143328850"} {
		os.WriteFile(filepath.Join(zone, f), []byte(v), 0o644)
	}
	data := filepath.Join(dir, "a.jsonl")
	os.WriteFile(data, []byte(`{"id": 7, "document": "Tom had a red ball. He played with it in the park.", "summary": "Tom played with his ball."}`+"\n"), 0o644)
	code, out, errs := runCLI(t, "eval", fixture("stories260k_kv.onnx"), "--task", "xsum", "--data", data, "--tokenizer", fixture("tok512.bin"),
		"--threads", "1", "--powercap", filepath.Join(dir, "rapl"), "--seq-len", "64", "--max-new-tokens", "16", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r xsumJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if r.Documents != 1 || r.SeqLen != 64 || r.Articles[0].ID != "7" || r.Energy.Source != "rapl" || r.Energy.Estimated || r.Energy.Joules != 0 {
		t.Errorf("%+v", r)
	}
}

func TestEvalXSumUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--task", "xsum"}, // no --data
		{"--task", "xsum", "--data", "x.jsonl", "--truncate", "sideways"},
		{"--task", "xsum", "--data", "x.jsonl", "--watts-per-core", "0"},
		{"--task", "xsum", "--data", "x.jsonl", "--max-new-tokens", "600"},
		{"--task", "xsum", "--data", "x.jsonl", "--template", "no placeholder"},
	} {
		if code, _, errs := runCLI(t, append([]string{"eval", fixture("stories260k_kv.onnx")}, args...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}
