package eval_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// countingMeter is a fake energy meter: 1 J per Start–Stop.
type countingMeter struct{ starts, stops int }

func (m *countingMeter) Start() error { m.starts++; return nil }
func (m *countingMeter) Stop() (eval.Reading, error) {
	m.stops++
	return eval.Reading{Joules: 1, Source: "fake", Estimated: true}, nil
}

// TestBenchFixture runs the benchmark on the stories260K fixtures, with and
// without a KV cache, and checks what it reports about them.
func TestBenchFixture(t *testing.T) {
	testenv.ORTLibrary(t)
	kv := testenv.Testdata(t, "models", "stories260k_kv.onnx")
	nokv := testenv.Testdata(t, "models", "stories260k.onnx")
	meter := &countingMeter{}
	opts := eval.BenchOptions{PromptLen: 12, DecodeTokens: 5, Runs: 2, Warmup: 1, Seed: 3,
		Runtime: ort.Options{Threads: 1}, Meter: meter}
	res, err := eval.Bench(context.Background(), []string{kv, nokv}, opts)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(kv)
	r := res[0]
	switch {
	case r.Blocks != 5 || r.Params != 292804 || r.FileBytes != fi.Size():
		t.Errorf("described as %d blocks, %d params, %d bytes; want 5, 292,804, %d", r.Blocks, r.Params, r.FileBytes, fi.Size())
	case !r.KVCache || res[1].KVCache:
		t.Errorf("KV cache: %v, %v; want true, false", r.KVCache, res[1].KVCache)
	case len(r.DecodeTokensPerS.Runs) != 2 || len(r.PrefillMS.Runs) != 2:
		t.Errorf("%d/%d measured runs, want 2", len(r.DecodeTokensPerS.Runs), len(r.PrefillMS.Runs))
	case !(r.DecodeTokensPerS.Min > 0 && r.DecodeTokensPerS.Min <= r.DecodeTokensPerS.Median && r.DecodeTokensPerS.Median <= r.DecodeTokensPerS.Max):
		t.Errorf("decode tokens/s %+v", r.DecodeTokensPerS)
	case r.PrefillMS.Median <= 0 || r.PromptLen != 12 || r.DecodeTokens != 5 || r.Device != "cpu" || r.Threads != 1:
		t.Errorf("prefill %+v, settings %+v", r.PrefillMS, r)
	case r.PeakRSSBytes <= 0 || r.PeakRSSScope == "":
		t.Errorf("peak RSS %d (%q)", r.PeakRSSBytes, r.PeakRSSScope)
	}
	// Two phases per run, warm-up included, for each model.
	if meter.starts != 2*2*3 || meter.stops != meter.starts {
		t.Errorf("meter started %d, stopped %d times; want 12", meter.starts, meter.stops)
	}
	if e := r.Energy; e == nil || e.Source != "fake" || !e.Estimated || e.PrefillJoules.Median != 1 || e.DecodeJoulesPerToken.Median != 0.2 {
		t.Errorf("energy %+v", r.Energy)
	}
	c := eval.Compare(res[0], res[1])
	if c.IdealSpeedup != 1 || c.DecodeSpeedup <= 0 {
		t.Errorf("same blocks: %+v", c)
	}
}

// TestBenchErrors: bad settings and a model that is not a decoder fail
// with a message.
func TestBenchErrors(t *testing.T) {
	ok := eval.BenchOptions{PromptLen: 4, DecodeTokens: 2, Runs: 1}
	for _, o := range []eval.BenchOptions{{DecodeTokens: 2, Runs: 1}, {PromptLen: 4, Runs: 1}, {PromptLen: 4, DecodeTokens: 2}} {
		if _, err := eval.Bench(context.Background(), []string{"x.onnx"}, o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if _, err := eval.Bench(context.Background(), nil, ok); err == nil {
		t.Error("no models accepted")
	}
	if _, err := eval.Bench(context.Background(), []string{filepath.Join(t.TempDir(), "missing.onnx")}, ok); err == nil {
		t.Error("missing model accepted")
	}
}

// BenchmarkDecodeSpeedupSynthetic24 measures what removing 6 of 24 blocks
// buys at batch 1: a synthetic Llama (hidden 512, 8 heads, 4 KV heads,
// FFN 1376, vocabulary 4096; 72M parameters, 3.0M per block and 2.1M in
// the LM head, so that decoding is dominated by the blocks as in a real
// LLM) against itself with blocks 9–14 removed, interleaved. It reports
// the decode and prefill speedups and their share of the ideal 24/18;
// the target on CPU is decode-of-ideal ≥ 0.9.
//
//	go test ./eval -run '^$' -bench DecodeSpeedupSynthetic24 -benchtime 1x
func BenchmarkDecodeSpeedupSynthetic24(b *testing.B) {
	testenv.ORTLibrary(b)
	dir := b.TempDir()
	full, pruned := filepath.Join(dir, "full", "model.onnx"), filepath.Join(dir, "pruned", "model.onnx")
	os.MkdirAll(filepath.Dir(full), 0o755)
	os.MkdirAll(filepath.Dir(pruned), 0o755)
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 24, Hidden: 512, Heads: 8, KVHeads: 4, FFN: 1376, Vocab: 4096, BOS: 1, EOS: 2}
	if err := convert.Build(convert.Synthetic(cfg, 1), full, convert.BuildOptions{}); err != nil {
		b.Fatal(err)
	}
	m, err := graph.Load(full)
	if err != nil {
		b.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		b.Fatal(err)
	}
	if err := rewrite.RemoveBlocks(m, d, []int{9, 10, 11, 12, 13, 14}); err != nil {
		b.Fatal(err)
	}
	if err := graph.Save(m, pruned, graph.SaveOptions{}); err != nil {
		b.Fatal(err)
	}
	m = nil
	opts := eval.BenchOptions{PromptLen: 128, DecodeTokens: 64, Runs: 5, Warmup: 1, Seed: 1}
	var c *eval.Comparison
	b.ResetTimer()
	for b.Loop() {
		res, err := eval.Bench(context.Background(), []string{full, pruned}, opts)
		if err != nil {
			b.Fatal(err)
		}
		c = eval.Compare(res[0], res[1])
		b.ReportMetric(res[0].DecodeTokensPerS.Median, "A-decode-tok/s")
		b.ReportMetric(res[1].DecodeTokensPerS.Median, "B-decode-tok/s")
	}
	b.ReportMetric(c.DecodeSpeedup, "decode-speedup")
	b.ReportMetric(c.DecodeOfIdeal, "decode-of-ideal")
	b.ReportMetric(c.PrefillSpeedup, "prefill-speedup")
	b.ReportMetric(c.PrefillOfIdeal, "prefill-of-ideal")
	if c.DecodeOfIdeal < 0.9 {
		b.Logf("decode speedup %.3f× is %.1f%% of the ideal %.3f× (target ≥ 90%%; a busy machine lowers it)", c.DecodeSpeedup, 100*c.DecodeOfIdeal, c.IdealSpeedup)
	}
}
