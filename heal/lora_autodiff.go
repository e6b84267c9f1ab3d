package heal

import (
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// The autodiff entry points the trainer uses (rewrite/grad*.go,
// rewrite/loss.go, probe.go).

func appendLoss(m *graph.Model, logits string) error { return rewrite.AppendNextTokenLoss(m, logits) }

func appendGradient(m *graph.Model, wrt []string, ranks map[string]int) error {
	return rewrite.Gradient(m, rewrite.GradientOptions{Loss: lossOutput, WithRespectTo: wrt, Ranks: ranks})
}

// probeRanks runs the loss graph once on a small batch: the gradient
// rules need the rank of tensors whose shape the model does not declare.
func probeRanks(m *graph.Model, feeds map[string]*ort.Tensor, opts ort.Options) (map[string]int, error) {
	opts.Outputs = nil
	return ProbeRanks(m, nil, feeds, opts)
}
