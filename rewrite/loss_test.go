package rewrite_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func lossModel(dt onnxpb.TensorProto_DataType) *graph.Model {
	g := &onnxpb.GraphProto{Name: proto.String("g"),
		Input:  []*onnxpb.ValueInfoProto{dynVI("x", dt, 3)},
		Node:   []*onnxpb.NodeProto{nd("Identity", []string{"x"}, []string{"logits"})},
		Output: []*onnxpb.ValueInfoProto{dynVI("logits", dt, 3)}}
	return &graph.Model{Proto: &onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: g,
		OpsetImport: []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}}}}
}

// TestAppendNextTokenLoss compares loss_sum with the weighted NLL
// computed in Go, for float32 and float64 logits.
func TestAppendNextTokenLoss(t *testing.T) {
	testenv.ORTLibrary(t)
	const B, S, V = 2, 3, 5
	rng := rand.New(rand.NewPCG(5, 6))
	x := make([]float64, B*S*V)
	for i := range x {
		x[i] = rng.NormFloat64() * 3
	}
	labels := make([]int64, B*S)
	w := make([]float64, B*S)
	for i := range labels {
		labels[i] = int64(rng.IntN(V))
		w[i] = float64(i % 3) // includes zero weights
	}
	var want float64
	for r := range B * S {
		row := x[r*V : (r+1)*V]
		mx := math.Inf(-1)
		for _, v := range row {
			mx = math.Max(mx, v)
		}
		var z float64
		for _, v := range row {
			z += math.Exp(v - mx)
		}
		want += w[r] * -(row[labels[r]] - mx - math.Log(z))
	}
	for _, dt := range []onnxpb.TensorProto_DataType{onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_DOUBLE} {
		t.Run(dt.String(), func(t *testing.T) {
			m := lossModel(dt)
			if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(m); err != nil {
				t.Fatal(err)
			}
			lt, _ := ort.NewInt64([]int64{B, S}, labels)
			feeds := map[string]*ort.Tensor{"labels": lt}
			if dt == onnxpb.TensorProto_DOUBLE {
				feeds["x"], _ = ort.NewFloat64([]int64{B, S, V}, x)
				feeds["label_weights"], _ = ort.NewFloat64([]int64{B, S}, w)
			} else {
				x32, w32 := make([]float32, len(x)), make([]float32, len(w))
				for i := range x {
					x32[i] = float32(x[i])
				}
				for i := range w {
					w32[i] = float32(w[i])
				}
				feeds["x"], _ = ort.NewFloat32([]int64{B, S, V}, x32)
				feeds["label_weights"], _ = ort.NewFloat32([]int64{B, S}, w32)
			}
			res, err := gradSession(t, m, "loss_sum").Run(feeds, []string{"loss_sum"})
			if err != nil {
				t.Fatal(err)
			}
			if len(res["loss_sum"].Shape) != 0 {
				t.Errorf("loss_sum shape %v, want scalar", res["loss_sum"].Shape)
			}
			got := gradScalar(t, res["loss_sum"])
			tol := 1e-12
			if dt == onnxpb.TensorProto_FLOAT {
				tol = 1e-5
			}
			if math.Abs(got-want) > tol*math.Abs(want) {
				t.Errorf("loss_sum = %.12g, want %.12g", got, want)
			}
		})
	}
}

func TestAppendNextTokenLossErrors(t *testing.T) {
	m := lossModel(onnxpb.TensorProto_FLOAT)
	if err := rewrite.AppendNextTokenLoss(m, "nope"); err == nil || !strings.Contains(err.Error(), `no tensor "nope"`) {
		t.Errorf("missing logits: err = %v", err)
	}
	if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
		t.Fatal(err)
	}
	if err := rewrite.AppendNextTokenLoss(m, "logits"); err == nil || !strings.Contains(err.Error(), "already has") {
		t.Errorf("second loss: err = %v", err)
	}
	mi := lossModel(onnxpb.TensorProto_INT64)
	if err := rewrite.AppendNextTokenLoss(mi, "logits"); err == nil || !strings.Contains(err.Error(), "float type") {
		t.Errorf("int logits: err = %v", err)
	}
}
