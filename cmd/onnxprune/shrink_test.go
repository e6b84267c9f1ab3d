package main

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// storiesParams is the parameter count of a stories260K-shaped Llama
// (vocabulary 512, hidden 64, head dimension 8, untied head, as the
// PyTorch fixture stores it, whose rotary inv_freq adds 4) with the given
// layer count, FFN width and head counts.
func storiesParams(layers, ffn, heads, kv int) int64 {
	const vocab, hidden, hd = 512, 64, 8
	perLayer := 2*hidden + // norms
		hidden*heads*hd + 2*hidden*kv*hd + heads*hd*hidden + // q, k, v, o
		3*hidden*ffn // gate, up, down
	return int64(2*vocab*hidden + hidden + layers*perLayer + hd/2)
}

// TestShrinkCLI shrinks stories260K by 25% of its FFN channels and one
// KV group per block: the parameter count (printed and what inspect
// reads from the written model) is the architecture's, the model runs in
// onnxruntime with a held-out perplexity above the dense one, and the
// written plan reproduces the model byte for byte.
func TestShrinkCLI(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	if got, want := storiesParams(5, 172, 8, 4), int64(292804); got != want {
		t.Fatalf("formula gives %d for the dense model, inspect says %d", got, want)
	}
	out := filepath.Join(dir, "shrunk")
	code, stdout, stderr := runCLI(t, "shrink", model, "--ffn-ratio", "0.25", "--remove-kv-groups", "1", "-o", out, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var sum ShrinkSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	want := storiesParams(5, 129, 6, 3)
	if sum.ParamsBefore != 292804 || sum.ParamsAfter != want {
		t.Fatalf("parameters %d → %d, want 292804 → %d", sum.ParamsBefore, sum.ParamsAfter, want)
	}
	for _, ls := range sum.Plan.Layers {
		if ls.FFNAfter != 129 || len(ls.RemoveChannels) != 43 || ls.HeadsAfter != 6 || ls.KVHeadsAfter != 3 || len(ls.RemoveKVGroups) != 1 {
			t.Fatalf("block %d: %+v", ls.Block, ls)
		}
	}
	shrunkModel := filepath.Join(out, "stories260k_kv.onnx")
	code, stdout, _ = runCLI(t, "inspect", "--json", shrunkModel)
	var info struct {
		Params int64 `json:"params_total"`
		Inputs []struct {
			Name  string `json:"name"`
			Shape []any  `json:"shape"`
		} `json:"inputs"`
	}
	if code != 0 || json.Unmarshal([]byte(stdout), &info) != nil || info.Params != want {
		t.Fatalf("inspect: exit %d, params %d, want %d", code, info.Params, want)
	}
	for _, in := range info.Inputs {
		if strings.HasPrefix(in.Name, "past_key_values.") && in.Shape[1] != float64(3) {
			t.Fatalf("%s has shape %v, want 3 KV heads", in.Name, in.Shape)
		}
	}
	batches := heldOut(t)
	dense, ppl := perplexityOf(t, model, batches), perplexityOf(t, shrunkModel, batches)
	t.Logf("held-out perplexity: dense %.3f, 25%% FFN + 1 KV group %.3f", dense, ppl)
	if math.IsNaN(ppl) || ppl <= dense {
		t.Fatalf("perplexity %.3f after shrinking, %.3f dense", ppl, dense)
	}

	// The plan reproduces the model.
	again := filepath.Join(dir, "again")
	if code, _, stderr := runCLI(t, "shrink", model, "--plan", filepath.Join(out, "shrink.json"), "-o", again, "-q"); code != 0 {
		t.Fatalf("--plan: exit %d: %s", code, stderr)
	}
	a, _ := os.ReadFile(shrunkModel)
	b, _ := os.ReadFile(filepath.Join(again, "stories260k_kv.onnx"))
	if !bytes.Equal(a, b) {
		t.Fatal("applying shrink.json gave a different model")
	}

	// Ratio 0: the very same model.
	zero := filepath.Join(dir, "zero")
	if code, _, stderr := runCLI(t, "shrink", model, "--ffn-ratio", "0", "-o", zero, "-q"); code != 0 {
		t.Fatalf("ratio 0: exit %d: %s", code, stderr)
	}
	a, _ = os.ReadFile(model)
	b, _ = os.ReadFile(filepath.Join(zero, "stories260k_kv.onnx"))
	if !bytes.Equal(a, b) {
		t.Fatal("ratio 0 changed the model")
	}
}

// TestShrinkCLIConfigs: a converted model's config.json and
// genai_config.json carry the new widths and layer count (a block removed
// too); activation ranking runs, and the model generates.
func TestShrinkCLIConfigs(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "model.onnx")
	os.MkdirAll(filepath.Dir(src), 0o755)
	ck := convert.Synthetic(convert.Config{Layers: 3, Hidden: 32, Heads: 4, KVHeads: 2, FFN: 64, Vocab: 512, BOS: 1, EOS: 2}, 3)
	if err := convert.Build(ck, src, convert.BuildOptions{TokenizerFiles: []string{fixture("tok512.bin")}}); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt")
	out := filepath.Join(dir, "out")
	code, _, stderr := runCLI(t, "shrink", src, "--ffn-ratio", "0.25", "--remove-kv-groups", "1", "--criterion", "activation", "--remove-blocks", "1",
		"--data", text, "--samples", "8", "--seq-len", "64", "-o", out, "-q", "--threads", "1")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var cfg, genai map[string]any
	for name, v := range map[string]*map[string]any{"config.json": &cfg, "genai_config.json": &genai} {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	dec := genai["model"].(map[string]any)["decoder"].(map[string]any)
	if cfg["num_hidden_layers"] != float64(2) || dec["num_hidden_layers"] != float64(2) || cfg["intermediate_size"] != float64(48) || cfg["num_attention_heads"] != float64(2) || cfg["num_key_value_heads"] != float64(1) ||
		cfg["head_dim"] != float64(8) || cfg["intermediate_size_per_layer"] != nil ||
		dec["num_attention_heads"] != float64(2) || dec["num_key_value_heads"] != float64(1) || dec["head_size"] != float64(8) {
		t.Fatalf("config.json %v\ngenai decoder %v", cfg, dec)
	}
	if code, _, stderr := runCLI(t, "generate", filepath.Join(out, "model.onnx"), "--max-tokens", "5", "-q"); code != 0 {
		t.Fatalf("the shrunk model does not generate: %s", stderr)
	}
}

// TestShrinkBadInput: one-line errors, exit 2 for bad flag values and 1
// for what the model refutes, and no output written.
func TestShrinkBadInput(t *testing.T) {
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	cases := []struct {
		name  string
		model string
		args  []string
		code  int
		want  string
	}{
		{"ratio 1", model, []string{"--ffn-ratio", "1"}, 2, "FFN ratio 1 outside [0, 1)"},
		{"negative ratio", model, []string{"--ffn-ratio", "-0.25"}, 2, "outside [0, 1)"},
		{"negative groups", model, []string{"--remove-kv-groups", "-1"}, 2, "cannot remove -1 KV groups"},
		{"heads to zero", model, []string{"--remove-kv-groups", "4"}, 1, "has 4 KV groups (8 heads): removing 4 would leave no attention heads"},
		{"block out of range", model, []string{"--ffn-ratio", "0.25", "--layers", "9"}, 1, "block 9 out of range"},
		{"unknown criterion", model, []string{"--ffn-ratio", "0.25", "--criterion", "random"}, 2, `criterion "random"`},
		{"activation without data", model, []string{"--ffn-ratio", "0.25", "--criterion", "activation"}, 2, "needs calibration text"},
		{"plan and ratio", model, []string{"--plan", "x.json", "--ffn-ratio", "0.25"}, 2, "--plan says what to remove"},
		{"remove every block", model, []string{"--remove-blocks", "0-4"}, 1, "removing all 5 blocks"},
		{"removed and shrunk", model, []string{"--ffn-ratio", "0.25", "--layers", "1", "--remove-blocks", "1"}, 1, "block 1 is both removed and shrunk"},
		{"missing plan", model, []string{"--plan", filepath.Join(dir, "none.json")}, 1, "no such file"},
		{"fused qkv heads", fixture("gpt2_kv.onnx"), []string{"--remove-kv-groups", "1"}, 1, "not named q_proj, k_proj or v_proj"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			code, _, errs := runCLI(t, append([]string{"shrink", c.model, "-o", out}, c.args...)...)
			if code != c.code || !strings.Contains(errs, c.want) || strings.Count(errs, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line with %q", code, errs, c.code, c.want)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("created %s despite the error", out)
			}
		})
	}
}

// TestShrinkComposesWithPrune: a recipe that removes blocks 3–4 and 25%
// of the FFN channels gives the model that prune --layers 3,4 followed by
// shrink --ffn-ratio 0.25 gives (magnitude scores are per block, so the
// order does not matter): the same parameters and logits.
func TestShrinkComposesWithPrune(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	recipe := filepath.Join(dir, "recipe.json")
	os.WriteFile(recipe, []byte(`{"remove_blocks": [3, 4], "ffn_ratio": 0.25}`), 0o644)
	code, stdout, stderr := runCLI(t, "shrink", model, "--plan", recipe, "-o", filepath.Join(dir, "both"), "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var sum ShrinkSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatal(err)
	}
	if len(sum.Plan.Layers) != 3 || !slices.Equal(sum.Plan.RemoveBlocks, []int{3, 4}) {
		t.Fatalf("plan %+v", sum.Plan)
	}
	if code, _, stderr := runCLI(t, "prune", model, "--layers", "3,4", "-o", filepath.Join(dir, "pruned"), "-q"); code != 0 {
		t.Fatalf("prune: %s", stderr)
	}
	code, stdout, stderr = runCLI(t, "shrink", filepath.Join(dir, "pruned", "stories260k_kv.onnx"), "--ffn-ratio", "0.25", "-o", filepath.Join(dir, "seq"), "--json")
	if code != 0 {
		t.Fatalf("shrink after prune: %s", stderr)
	}
	var seqSum ShrinkSummary
	if err := json.Unmarshal([]byte(stdout), &seqSum); err != nil {
		t.Fatal(err)
	}
	if want := storiesParams(3, 129, 8, 4); sum.ParamsAfter != seqSum.ParamsAfter || sum.ParamsAfter != want {
		t.Fatalf("composed %d parameters, sequential %d, expected %d", sum.ParamsAfter, seqSum.ParamsAfter, want)
	}
	a := logitsOf(t, filepath.Join(dir, "both", "stories260k_kv.onnx"))
	b := logitsOf(t, filepath.Join(dir, "seq", "stories260k_kv.onnx"))
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-5 {
			t.Fatalf("logit %d: %v composed, %v sequential", i, a[i], b[i])
		}
	}
}

func logitsOf(t *testing.T, path string) []float32 {
	t.Helper()
	s, err := ort.NewSession(path, ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d, err := ort.NewDecoder(s)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int64{1, 403, 407, 261, 378, 395, 302}
	in, err := d.Inputs(ids, slices.Repeat([]int64{1}, len(ids)), []int64{0, 1, 2, 3, 4, 5, 6}, 1, len(ids), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := s.Run(in, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := out["logits"].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return l
}
