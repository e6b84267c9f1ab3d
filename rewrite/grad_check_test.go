package rewrite_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// Helpers shared by the gradient tests: a float64 loss on top of any
// graph, sessions, feeds and central finite differences.

// gradFD describes one finite-difference comparison.
type gradFD struct {
	h       float64 // step
	maxElem int     // elements checked per input (random subset beyond)
}

// gradSession opens an in-memory session for m.
func gradSession(t testing.TB, m *graph.Model, outputs ...string) *ort.Session {
	t.Helper()
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	// Graph optimisations off: onnxruntime fuses Transpose+MatMul into
	// com.microsoft.FusedMatMul even for float64, which has only a float32
	// kernel, and the checks are about the graph we emit anyway.
	s, err := ort.NewSessionFromBytes(data, ort.Options{Threads: 1, ExternalDataDir: m.Dir, Outputs: outputs, OptLevel: ort.OptDisabled})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// gradScalar reads a rank-0 (or one-element) float tensor.
func gradScalar(t testing.TB, x *ort.Tensor) float64 {
	t.Helper()
	v := gradFloats(t, x)
	if len(v) != 1 {
		t.Fatalf("loss has %d elements", len(v))
	}
	return v[0]
}

func gradFloats(t testing.TB, x *ort.Tensor) []float64 {
	t.Helper()
	if x.DType == ort.Double {
		v, err := x.Float64s()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	v32, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float64, len(v32))
	for i, f := range v32 {
		v[i] = float64(f)
	}
	return v
}

// gradSetFloats builds a tensor of x's dtype and shape holding v.
func gradSetFloats(t testing.TB, like *ort.Tensor, v []float64) *ort.Tensor {
	t.Helper()
	var out *ort.Tensor
	var err error
	if like.DType == ort.Double {
		out, err = ort.NewFloat64(like.Shape, v)
	} else {
		v32 := make([]float32, len(v))
		for i, f := range v {
			v32[i] = float32(f)
		}
		out, err = ort.NewFloat32(like.Shape, v32)
	}
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// gradCompare runs the gradient graph once and the forward graph twice
// per checked element, and returns, per wrt input, the relative error
// ‖g − g_fd‖ / max(‖g‖, ‖g_fd‖, 1e-30) over the checked elements.
func gradCompare(t testing.TB, fwd, bwd *graph.Model, loss string, wrt []string, feeds map[string]*ort.Tensor, fd gradFD, rng *rand.Rand) map[string]float64 {
	t.Helper()
	outs := []string{loss}
	for _, w := range wrt {
		outs = append(outs, "grad."+w)
	}
	sb := gradSession(t, bwd, outs...)
	res, err := sb.Run(feeds, outs)
	if err != nil {
		t.Fatal(err)
	}
	sf := gradSession(t, fwd, loss)
	base, err := sf.Run(feeds, []string{loss})
	if err != nil {
		t.Fatal(err)
	}
	if l0, l1 := gradScalar(t, base[loss]), gradScalar(t, res[loss]); math.Abs(l0-l1) > 1e-9*math.Max(1, math.Abs(l0)) {
		t.Errorf("loss differs between forward (%v) and gradient graph (%v)", l0, l1)
	}
	errs := map[string]float64{}
	for _, w := range wrt {
		g := gradFloats(t, res["grad."+w])
		x0 := gradFloats(t, feeds[w])
		if len(g) != len(x0) {
			t.Fatalf("grad.%s has %d elements, input %d", w, len(g), len(x0))
		}
		if !slices.Equal(res["grad."+w].Shape, feeds[w].Shape) {
			t.Fatalf("grad.%s shape %v, input %v", w, res["grad."+w].Shape, feeds[w].Shape)
		}
		idx := make([]int, len(x0))
		for i := range idx {
			idx[i] = i
		}
		if fd.maxElem > 0 && len(idx) > fd.maxElem {
			rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
			idx = idx[:fd.maxElem]
		}
		var num, ng, nf float64
		for _, i := range idx {
			f := func(d float64) float64 {
				x := append([]float64(nil), x0...)
				x[i] += d
				in := map[string]*ort.Tensor{}
				for k, v := range feeds {
					in[k] = v
				}
				in[w] = gradSetFloats(t, feeds[w], x)
				out, err := sf.Run(in, []string{loss})
				if err != nil {
					t.Fatal(err)
				}
				return gradScalar(t, out[loss])
			}
			gfd := (f(fd.h) - f(-fd.h)) / (2 * fd.h)
			num += (g[i] - gfd) * (g[i] - gfd)
			ng += g[i] * g[i]
			nf += gfd * gfd
		}
		errs[w] = math.Sqrt(num) / math.Max(math.Max(math.Sqrt(ng), math.Sqrt(nf)), 1e-30)
	}
	return errs
}

// gradAddLoss appends loss = Σ_k ReduceSum(out_k · R_k) with fixed random
// R_k of each output's shape (found by running the graph once) and
// returns the loss name.
func gradAddLoss(t testing.TB, m *graph.Model, outs []string, feeds map[string]*ort.Tensor, rng *rand.Rand) string {
	t.Helper()
	g := m.Proto.Graph
	probe := &graph.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto), Dir: m.Dir}
	for _, o := range outs { // the gradient checks' outputs are float64
		probe.Proto.Graph.Output = append(probe.Proto.Graph.Output, &onnxpb.ValueInfoProto{Name: proto.String(o), Type: &onnxpb.TypeProto{
			Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_DOUBLE))}}}})
	}
	res, err := gradSession(t, probe).Run(feeds, outs)
	if err != nil {
		t.Fatal(err)
	}
	var terms []string
	for k, o := range outs {
		y := res[o]
		dt := int32(y.DType)
		r := &onnxpb.TensorProto{Name: proto.String(fmt.Sprintf("R%d", k)), DataType: proto.Int32(dt), Dims: y.Shape}
		for range y.NumElements() {
			v := rng.Float64()*2 - 1
			if dt == int32(onnxpb.TensorProto_DOUBLE) {
				r.DoubleData = append(r.DoubleData, v)
			} else {
				r.FloatData = append(r.FloatData, float32(v))
			}
		}
		g.Initializer = append(g.Initializer, r)
		p, s := fmt.Sprintf("lossprod%d", k), fmt.Sprintf("lossterm%d", k)
		g.Node = append(g.Node,
			&onnxpb.NodeProto{OpType: proto.String("Mul"), Input: []string{o, r.GetName()}, Output: []string{p}},
			&onnxpb.NodeProto{OpType: proto.String("ReduceSum"), Input: []string{p}, Output: []string{s},
				Attribute: []*onnxpb.AttributeProto{{Name: proto.String("keepdims"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(0)}}})
		terms = append(terms, s)
	}
	loss := terms[0]
	if len(terms) > 1 {
		loss = "loss"
		g.Node = append(g.Node, &onnxpb.NodeProto{OpType: proto.String("Sum"), Input: terms, Output: []string{loss}})
	}
	dt := int32(res[outs[0]].DType)
	g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(loss), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(dt), Shape: &onnxpb.TensorShapeProto{}}}}})
	return loss
}
