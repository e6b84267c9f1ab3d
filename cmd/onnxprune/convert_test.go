package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

var smallSynthetic = []string{"convert", "--synthetic", "--layers", "2", "--hidden", "32", "--heads", "4", "--kv-heads", "2",
	"--ffn", "48", "--vocab", "64"}

func TestConvertSyntheticJSON(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out") // created by convert
	code, stdout, stderr := runCLI(t, append(smallSynthetic, "--json", "-o", out)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stderr != "" {
		t.Errorf("stderr not empty without a terminal: %q", stderr)
	}
	var rep ConvertReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, stdout)
	}
	var names []string
	var sum int64
	for _, f := range rep.Files {
		names = append(names, f.Name)
		sum += f.Bytes
	}
	if want := []string{"config.json", "genai_config.json", "model.onnx"}; !slices.Equal(names, want) {
		t.Errorf("files %v, want %v", names, want)
	}
	// embed 64·32, per layer 2 norms + q 32·32 + k,v 2·16·32 + o 32·32 + 3 MLP 48·32, final norm.
	wantParams := int64(64*32 + 2*(2*32+32*32+2*16*32+32*32+3*48*32) + 32)
	if rep.Params != wantParams || rep.Bytes != sum || rep.Layers != 2 || rep.DType != "float32" || rep.Seconds <= 0 {
		t.Errorf("report %+v (want %d params)", rep, wantParams)
	}

	code, stdout, stderr = runCLI(t, "inspect", "--json", filepath.Join(out, "model.onnx"))
	if code != 0 {
		t.Fatalf("inspect: exit %d: %s", code, stderr)
	}
	var ins struct {
		Blocks      []json.RawMessage `json:"blocks"`
		ParamsTotal int64             `json:"params_total"`
	}
	if err := json.Unmarshal([]byte(stdout), &ins); err != nil {
		t.Fatal(err)
	}
	if len(ins.Blocks) != 2 || ins.ParamsTotal != wantParams {
		t.Errorf("inspect: %d blocks, %d params; want 2, %d", len(ins.Blocks), ins.ParamsTotal, wantParams)
	}
}

func TestConvertRefusesNonEmptyDir(t *testing.T) {
	out := t.TempDir()
	if err := os.WriteFile(filepath.Join(out, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := runCLI(t, append(smallSynthetic, "-o", out)...)
	if code != exitFailure || !strings.Contains(stderr, "--force") || strings.Count(stderr, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want 1 and one line mentioning --force", code, stderr)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 1 {
		t.Errorf("%d files in the refused directory", len(entries))
	}
	code, _, stderr = runCLI(t, append(smallSynthetic, "-o", out, "--force", "--dtype", "float16")...)
	if code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	// An earlier, larger model's external data must not outlive it.
	stale := filepath.Join(out, "model.onnx.data")
	if err := os.WriteFile(stale, []byte("old weights"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCLI(t, append(smallSynthetic, "-o", out, "--force")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(stale); err == nil {
		t.Error("stale model.onnx.data left beside an inline model")
	}
	if _, err := os.Stat(filepath.Join(out, "notes.txt")); err != nil {
		t.Error("--force removed an unrelated file")
	}
}

func TestConvertUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		code int
		has  string
	}{
		{"no output", smallSynthetic, exitUsage, "-o"},
		{"no checkpoint", []string{"convert", "-o", dir}, exitUsage, "CHECKPOINT"},
		{"synthetic with checkpoint", append(slices.Clone(smallSynthetic), "-o", dir, "model.bin"), exitUsage, "no CHECKPOINT"},
		{"shape flag without synthetic", []string{"convert", "--layers", "2", "-o", dir, "model.bin"}, exitUsage, "--layers needs --synthetic"},
		{"synthetic missing a size", []string{"convert", "--synthetic", "--layers", "2", "-o", dir}, exitUsage, "--hidden"},
		{"bad dtype", append(slices.Clone(smallSynthetic), "-o", dir, "--dtype", "int4"), exitUsage, "int4"},
		{"bad family", append(slices.Clone(smallSynthetic), "-o", dir, "--family", "t5"), exitUsage, "t5"},
		{"missing checkpoint", []string{"convert", "-o", filepath.Join(dir, "new"), filepath.Join(dir, "nope.bin")}, exitFailure, "nope.bin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.has) || !strings.HasPrefix(stderr, "onnxprune: ") {
				t.Errorf("exit %d, stderr %q; want exit %d mentioning %q", code, stderr, tc.code, tc.has)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "new")); err == nil {
		t.Error("a failed conversion left the output directory it created")
	}
}

// TestConvertStories260K converts the real stories260K checkpoint
// (llama2.c and GGUF, from ../shared) through the CLI and runs the torch
// reference cases of stories260k_kv.ref.json on the result: reader,
// builder and CLI end to end against an independent implementation.
func TestConvertStories260K(t *testing.T) {
	shared := testenv.SharedDir(t)
	testenv.ORTLibrary(t)
	ref, err := reffile.Load(fixture("stories260k_kv.ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, src := range []string{"stories260K.bin", "stories260K.gguf"} {
		t.Run(src, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			args := []string{"convert", filepath.Join(shared, "models", "stories260K", src), "-o", out}
			if strings.HasSuffix(src, ".bin") {
				args = append(args, "--tokenizer", fixture("tok512.bin"))
			}
			code, _, stderr := runCLI(t, args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if strings.HasSuffix(src, ".bin") {
				if _, err := os.Stat(filepath.Join(out, "tok512.bin")); err != nil {
					t.Errorf("tokenizer not copied: %v", err)
				}
			}
			worst := runRefCases(t, filepath.Join(out, "model.onnx"), ref)
			t.Logf("max |diff| vs torch: %.3g", worst)
			// Greedy decoding from BOS prints the published sample, with
			// the tokenizer the conversion left beside the model.
			checkPublishedGeneration(t, filepath.Join(out, "model.onnx"), out)
		})
	}
}

// TestConvertBabyLlama converts the second real llama2.c model with its
// SentencePiece tokenizer; greedy decoding must tell a TinyStories story.
func TestConvertBabyLlama(t *testing.T) {
	shared := testenv.SharedDir(t)
	testenv.ORTLibrary(t)
	dir := filepath.Join(shared, "models", "babyllama-tok105")
	out := filepath.Join(t.TempDir(), "out")
	if code, _, errs := runCLI(t, "convert", filepath.Join(dir, "model5000.bin"), "--tokenizer", filepath.Join(dir, "tok105.model"), "-o", out); code != 0 {
		t.Fatalf("convert: exit %d: %s", code, errs)
	}
	code, stdout, errs := runCLI(t, "generate", filepath.Join(out, "model.onnx"), "--max-tokens", "120", "--json")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, errs)
	}
	var res struct {
		Text string `json:"text"`
	}
	json.Unmarshal([]byte(stdout), &res)
	words := strings.Fields(res.Text)
	if !strings.HasPrefix(res.Text, "Once upon a time") || len(words) < 15 {
		t.Fatalf("generated %q", res.Text)
	}
	t.Logf("%s", res.Text)
}

// runRefCases runs every case of ref and compares the outputs within the
// file's atol; logits at left-padding positions are not compared.
func runRefCases(t *testing.T, model string, ref *reffile.File) float64 {
	t.Helper()
	sess, err := ort.NewSession(model, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	worst := 0.0
	for _, c := range ref.Cases {
		in, err := c.RuntimeInputs()
		if err != nil {
			t.Fatal(err)
		}
		got, err := sess.Run(in, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		mask, _ := c.Inputs["attention_mask"].Int64s()
		padded := slices.Contains(mask, 0)
		for _, name := range c.OutputNames() {
			want := c.Outputs[name]
			if name == "logits" && padded {
				worst = max(worst, realPositionsDiff(t, got[name], want, c.Inputs["attention_mask"].Shape, mask, ref.Atol))
				continue
			}
			d, err := reffile.Compare(got[name], want, ref.Atol)
			if err != nil {
				t.Errorf("%s %s: %v", c.Name, name, err)
			}
			worst = max(worst, d)
		}
	}
	return worst
}

func realPositionsDiff(t *testing.T, got *ort.Tensor, want reffile.Tensor, maskShape, mask []int64, atol float64) float64 {
	t.Helper()
	g, err := got.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Float64s()
	if err != nil || len(g) != len(w) {
		t.Fatalf("logits %v vs reference %v (%v)", got.Shape, want.Shape, err)
	}
	seq, vocab, total := int(want.Shape[1]), int(want.Shape[2]), int(maskShape[1])
	worst := 0.0
	for i := range g {
		b, s := i/(seq*vocab), i/vocab%seq
		if mask[b*total+total-seq+s] == 1 {
			worst = max(worst, math.Abs(float64(g[i])-w[i]))
		}
	}
	if worst > atol {
		t.Errorf("batch2 logits: max |diff| %.3g at real positions exceeds %g", worst, atol)
	}
	return worst
}
