package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
)

// TestEvalPPLModes runs the three perplexity modes on the fixture and
// checks each says how it measured, that chunks score whole windows, and
// that two runs agree to 4 decimals.
func TestEvalPPLModes(t *testing.T) {
	testenv.ORTLibrary(t)
	model, text := fixture("stories260k_kv.onnx"), testenv.Testdata(t, "text", "tinystories_valid200.txt")
	ppl := func(args ...string) PerplexityResult {
		t.Helper()
		code, out, errs := runCLI(t, append([]string{"eval", model, "--data", text, "--threads", "1", "--json"}, args...)...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errs)
		}
		var r PerplexityResult
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatal(err)
		}
		if r.Perplexity < 1 || r.Perplexity > 50 {
			t.Fatalf("%v: implausible perplexity %g", args, r.Perplexity)
		}
		return r
	}

	s := ppl("--samples", "20", "--seq-len", "128")
	if s.Mode != "sample" || s.Samples != 20 || !strings.Contains(s.BOS, "BOS first") {
		t.Errorf("sample mode: %+v", s)
	}

	st := ppl("--mode", "stream", "--context", "64", "--stride", "16")
	if st.Context != 64 || st.Stride != 16 || st.BOS != "one BOS before the whole text" ||
		st.Tokens != int64(st.StreamTokens-1) || !strings.Contains(st.Method, "context 64, stride 16") {
		t.Errorf("stream mode: %+v", st)
	}

	var chunks [2]PerplexityResult
	for i := range chunks {
		chunks[i] = ppl("--mode", "chunks", "--context", "64", "--bos-each", "--batch-size", []string{"8", "5"}[i])
	}
	c := chunks[0]
	if c.Tokens != int64(64*c.Windows) || c.Windows != (c.StreamTokens-1)/64 || !strings.Contains(c.BOS, "every sample") ||
		!strings.Contains(c.Method, "llama2.c") {
		t.Errorf("chunks mode: %+v", c)
	}
	if a, b := chunks[0].Perplexity, chunks[1].Perplexity; fmt.Sprintf("%.4f", a) != fmt.Sprintf("%.4f", b) {
		t.Errorf("two runs: %.6f and %.6f", a, b)
	}

	// A file of <|endoftext|>-separated samples is joined again, never
	// tokenized with its separators.
	sep := writeTemp(t, "sep.txt", "Lily saw a cat.<|endoftext|>Tom ran home.")
	code, out, errs := runCLI(t, "eval", model, "--data", sep, "--mode", "stream", "--context", "8", "--json")
	var r PerplexityResult
	if json.Unmarshal([]byte(out), &r); code != 0 || !strings.Contains(r.Method, "2 samples joined by blank lines") || r.StreamTokens > 20 {
		t.Errorf("separated samples: exit %d %s: %+v", code, errs, r)
	}

	// The text output states mode, context, stride and BOS policy.
	code, out, errs = runCLI(t, "eval", model, "--data", text, "--threads", "1", "--mode", "stream", "--context", "64")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"perplexity ", "tokens scored", "mode stream: context 64, stride 32", "one BOS before the whole text"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestEvalPPLUsage(t *testing.T) {
	text := testenv.Testdata(t, "text", "tinystories_valid200.txt")
	model := fixture("stories260k_kv.onnx")
	for _, args := range [][]string{
		{"--mode", "rolling"},
		{"--context", "64"},                   // sample mode takes no window
		{"--mode", "chunks", "--stride", "8"}, // chunks do not overlap
		{"--mode", "stream", "--context", "8", "--stride", "9"},
	} {
		code, _, errs := runCLI(t, append([]string{"eval", model, "--data", text}, args...)...)
		if code != 2 || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want usage error 2", args, code, errs)
		}
	}
}
