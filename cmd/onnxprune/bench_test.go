package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
)

// TestBenchCLI benchmarks the stories260K fixture against itself with
// block 3 removed (--runs 2): the table, the comparison with its ideal
// 5/4, and the JSON.
func TestBenchCLI(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	dir := t.TempDir()
	if code, _, errs := runCLI(t, "prune", model, "--layers", "3", "-o", dir); code != 0 {
		t.Fatalf("prune: exit %d: %s", code, errs)
	}
	pruned := filepath.Join(dir, "stories260k_kv.onnx")
	fast := []string{"--runs", "2", "--warmup", "1", "--prompt-len", "16", "--decode-tokens", "8", "--threads", "1"}

	code, out, errs := runCLI(t, append([]string{"bench", model, pruned}, fast...)...)
	if code != 0 {
		t.Fatalf("bench: exit %d: %s", code, errs)
	}
	for _, want := range []string{"prefill 16 random tokens, then 8 decode steps through the KV cache", "2 runs after 1 warm-up",
		"decode tok/s", "B vs A (interleaved run by run", "ideal 5/4 blocks = 1.250×", "of ideal", "latency ratio B/A", "peak RSS", "energy"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	code, out, errs = runCLI(t, append([]string{"bench", model, pruned, "--json"}, fast...)...)
	if code != 0 {
		t.Fatalf("bench --json: exit %d: %s", code, errs)
	}
	var sum BenchSummary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	c := sum.Comparison
	switch {
	case len(sum.Results) != 2 || sum.Results[0].Blocks != 5 || sum.Results[1].Blocks != 4:
		t.Errorf("results %+v", sum.Results)
	case c == nil || c.IdealSpeedup != 1.25 || c.DecodeSpeedup <= 0 || c.ParamsRatio >= 1:
		t.Errorf("comparison %+v", c)
	case len(sum.Results[1].DecodeTokensPerS.Runs) != 2 || sum.Results[0].Energy == nil:
		t.Errorf("runs %v, energy %v", sum.Results[1].DecodeTokensPerS.Runs, sum.Results[0].Energy)
	case sum.Environment.ONNXRuntime == "":
		t.Error("no environment")
	}

	// One model: no comparison.
	code, out, _ = runCLI(t, append([]string{"bench", model}, fast...)...)
	if code != 0 || strings.Contains(out, "B vs A") || !strings.Contains(out, "decode tok/s") {
		t.Fatalf("single model: exit %d:\n%s", code, out)
	}
}

func TestBenchUsage(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"bench"}, 2, "want at least one MODEL argument"},
		{[]string{"bench", "a", "--runs", "0"}, 2, "--runs must be at least 1"},
		{[]string{"bench", "a", "--prompt-len", "0"}, 2, "--prompt-len and --decode-tokens"},
		{[]string{"bench", "a", "--watts-per-core", "-1"}, 2, "--watts-per-core"},
	}
	for _, c := range cases {
		code, _, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want exit %d with %q", c.args, code, errs, c.code, c.want)
		}
	}
}
