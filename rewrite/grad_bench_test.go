package rewrite_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// BenchmarkGradientStep times one training step (loss and the gradients
// of every MLP weight, made inputs) against one forward pass (logits) of
// stories260K over the same batch of 8 × 256 tokens, alternating the two
// in each iteration, and reports their ratio (target ≤ 4):
//
//	go test ./rewrite -run '^$' -bench GradientStep -benchtime 20x
func BenchmarkGradientStep(b *testing.B) {
	testenv.ORTLibrary(b)
	const B, S = 8, 256
	load := func() *graph.Model {
		m, err := graph.Load(testenv.Testdata(b, "models", "stories260k.onnx"))
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	opts := ort.Options{OptLevel: ort.OptExtended}
	fwdModel := load()
	m := load()
	wrt := gradMLPWeights(m)
	wf := gradPromote(b, m, wrt...)
	if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
		b.Fatal(err)
	}
	if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss_sum", WithRespectTo: wrt}); err != nil {
		b.Fatal(err)
	}
	outs := []string{"loss_sum"}
	for _, w := range wrt {
		outs = append(outs, "grad."+w)
	}
	feeds := gradDecoderFeeds(b, m, B, S, 512, rand.New(rand.NewPCG(1, 1)))
	for k, v := range wf {
		feeds[k] = v
	}
	fwdFeeds := map[string]*ort.Tensor{}
	for _, vi := range fwdModel.Proto.Graph.Input {
		fwdFeeds[vi.GetName()] = feeds[vi.GetName()]
	}
	step := gradSessionOpt(b, m, opts, outs...)
	fwd := gradSessionOpt(b, fwdModel, opts, "logits")
	run := func(s *ort.Session, in map[string]*ort.Tensor, names []string) time.Duration {
		t0 := time.Now()
		if _, err := s.Run(in, names); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	for range 2 { // warm-up
		run(fwd, fwdFeeds, []string{"logits"})
		run(step, feeds, outs)
	}
	var tf, ts time.Duration
	n := 0
	for b.Loop() {
		tf += run(fwd, fwdFeeds, []string{"logits"})
		ts += run(step, feeds, outs)
		n++
	}
	b.ReportMetric(float64(tf.Microseconds())/float64(n)/1000, "ms/forward")
	b.ReportMetric(float64(ts.Microseconds())/float64(n)/1000, "ms/step")
	b.ReportMetric(float64(ts)/float64(tf), "step/forward")
	b.Logf("%d MLP weights; forward %.1f ms, step %.1f ms, ratio %.2f", len(wrt), float64(tf.Microseconds())/float64(n)/1000,
		float64(ts.Microseconds())/float64(n)/1000, float64(ts)/float64(tf))
}
