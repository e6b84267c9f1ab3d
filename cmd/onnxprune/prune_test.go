package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

// storiesText writes a few TinyStories-like samples (the tokenizer is
// tok512.bin beside the fixture).
func storiesText(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "text.txt")
	os.WriteFile(p, []byte("Once upon a time, there was a little girl named Lily.\n\nShe loved to play outside in the park.\n\nOne day, she saw a big, red ball. She wanted to play with it.\n"), 0o644)
	return p
}

func TestCalibrateAndPrune(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	stats := filepath.Join(dir, "stats.json")
	code, out, errs := runCLI(t, "calibrate", model, "--data", storiesText(t), "--batch-size", "2", "-o", stats, "--threads", "1")
	if code != 0 {
		t.Fatalf("calibrate: exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "angular distance d(l, n) over 3 samples") || !strings.Contains(out, "BI") {
		t.Fatalf("calibrate output:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "stats.svg")); err != nil {
		t.Fatal("no heatmap written")
	}

	for _, strategy := range []string{"angular", "bi", "last", "sleb"} {
		outDir := filepath.Join(dir, strategy)
		args := []string{"prune", model, "--remove", "1", "--strategy", strategy, "-o", outDir, "--json", "--threads", "1"}
		if strategy == "sleb" {
			args = append(args, "--data", storiesText(t))
		} else {
			args = append(args, "--stats", stats)
		}
		code, out, errs := runCLI(t, args...)
		if code != 0 {
			t.Fatalf("prune %s: exit %d: %s", strategy, code, errs)
		}
		var sum PruneSummary
		if err := json.Unmarshal([]byte(out), &sum); err != nil {
			t.Fatal(err)
		}
		if sum.BlocksAfter != 4 || len(sum.Plan.Remove) != 1 || sum.ParamsAfter >= sum.ParamsBefore {
			t.Fatalf("prune %s: %+v", strategy, sum)
		}
		code, out, _ = runCLI(t, "inspect", "--json", filepath.Join(outDir, "stories260k_kv.onnx"))
		if code != 0 || strings.Count(out, `"kv_inputs"`) != 4 {
			t.Fatalf("pruned model inspects as: %s", out)
		}
		for _, f := range []string{"plan.json", "tok512.bin"} {
			if _, err := os.Stat(filepath.Join(outDir, f)); err != nil {
				t.Errorf("prune %s: %s not written", strategy, f)
			}
		}
	}
}

// TestPruneBadInput: clear one-line errors, exit 1 (2 for usage), and no
// model written.
func TestPruneBadInput(t *testing.T) {
	dir := t.TempDir()
	noBlocks := filepath.Join(dir, "linear.onnx")
	m := irtest.New("g").Input("x", 1, 4).Init("w", make([]float32, 16), 4, 4).
		Node("MatMul", "mm", []string{"x", "w"}, []string{"y"}).Output("y", 1, 4).Model()
	b, _ := proto.Marshal(m.Proto)
	os.WriteFile(noBlocks, b, 0o644)
	model := fixture("stories260k.onnx")
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"remove every block", []string{"prune", model, "--layers", "0-4"}, 1, "at least one must stay"},
		{"n ≥ L", []string{"prune", model, "--remove", "5", "--strategy", "last"}, 1, "at least one must stay"},
		{"index out of range", []string{"prune", model, "--layers", "7"}, 1, "block 7 out of range: the model has blocks 0..4"},
		{"no blocks", []string{"prune", noBlocks, "--layers", "0"}, 1, "no decoder blocks found"},
		{"two selections", []string{"prune", model, "--layers", "1", "--remove", "1"}, 2, "exactly one of"},
		{"unknown strategy", []string{"prune", model, "--remove", "1", "--strategy", "random"}, 2, "want one of angular"},
		{"angular without data", []string{"prune", model, "--remove", "1"}, 2, "needs --stats FILE or --data FILE"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			code, _, errs := runCLI(t, append(c.args, "-o", out)...)
			if code != c.code || !strings.Contains(errs, c.want) || strings.Count(errs, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want exit %d and one line with %q", code, errs, c.code, c.want)
			}
			if matches, _ := filepath.Glob(filepath.Join(out, "*.onnx")); len(matches) > 0 {
				t.Fatalf("wrote %v despite the error", matches)
			}
		})
	}
}
