package heal_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/heal"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func probeFeeds(t *testing.T, B, S int64) map[string]*ort.Tensor {
	t.Helper()
	ids := make([]int64, B*S)
	ones := make([]int64, B*S)
	pos := make([]int64, B*S)
	for i := range ids {
		ids[i] = int64(i*7) % 512
		ones[i] = 1
		pos[i] = int64(i) % S
	}
	feeds := map[string]*ort.Tensor{}
	for name, v := range map[string][]int64{"input_ids": ids, "attention_mask": ones, "position_ids": pos} {
		x, err := ort.NewInt64([]int64{B, S}, v)
		if err != nil {
			t.Fatal(err)
		}
		feeds[name] = x
	}
	return feeds
}

// TestProbeRanks: ranks of every node output of stories260K, the model
// unchanged, and the ranks good enough for Gradient.
func TestProbeRanks(t *testing.T) {
	testenv.ORTLibrary(t)
	m, err := graph.Load(testenv.Testdata(t, "models", "stories260k.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	before := proto.Clone(m.Proto)
	ranks, err := heal.ProbeRanks(m, nil, probeFeeds(t, 2, 5), ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, m.Proto) {
		t.Error("ProbeRanks changed the model")
	}
	if ranks["logits"] != 3 {
		t.Errorf("rank of logits = %d, want 3", ranks["logits"])
	}
	nodes := 0
	for _, n := range m.Proto.Graph.Node {
		for _, o := range n.GetOutput() {
			if o == "" {
				continue
			}
			nodes++
			if _, ok := ranks[o]; !ok {
				t.Fatalf("no rank for %q", o)
			}
		}
		if n.GetOpType() == "Shape" && ranks[n.Output[0]] != 1 {
			t.Errorf("Shape output %q has rank %d", n.Output[0], ranks[n.Output[0]])
		}
	}
	t.Logf("%d ranks", nodes)

	// Subset, and an unknown name.
	sub, err := heal.ProbeRanks(m, []string{"logits"}, probeFeeds(t, 1, 1), ort.Options{Threads: 1})
	if err != nil || len(sub) != 1 || sub["logits"] != 3 {
		t.Errorf("subset probe: %v, %v", sub, err)
	}
	if _, err := heal.ProbeRanks(m, []string{"nope"}, probeFeeds(t, 1, 1), ort.Options{}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("unknown name: err = %v", err)
	}

	// Gradient with the probed ranks (and nothing else to go on).
	var w string
	for _, n := range m.Proto.Graph.Node {
		if n.GetOpType() == "MatMul" && strings.Contains(n.GetName(), "/self_attn/q_proj/") {
			w = n.Input[1]
			break
		}
	}
	if w == "" {
		t.Fatal("no q_proj MatMul")
	}
	g := m.Proto.Graph
	for i, init := range g.Initializer {
		if init.GetName() == w {
			g.Initializer = append(g.Initializer[:i], g.Initializer[i+1:]...)
			vi := &onnxpb.ValueInfoProto{Name: proto.String(w), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
				TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(1)}}}}
			g.Input = append(g.Input, vi)
			ranks[w] = len(init.GetDims())
			break
		}
	}
	if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
		t.Fatal(err)
	}
	if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss_sum", WithRespectTo: []string{w}, Ranks: ranks}); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
}
