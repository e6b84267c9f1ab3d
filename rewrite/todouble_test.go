package rewrite_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
)

// TestToDoubleTypes: every float32 declaration, value and Cast target
// becomes float64; other types are left alone.
func TestToDoubleTypes(t *testing.T) {
	g := &onnxpb.GraphProto{Name: proto.String("g"),
		Input:       []*onnxpb.ValueInfoProto{dynVI("x", onnxpb.TensorProto_FLOAT, 2), dynVI("ids", onnxpb.TensorProto_INT64, 1)},
		Initializer: []*onnxpb.TensorProto{{Name: proto.String("w"), DataType: proto.Int32(1), Dims: []int64{2}, FloatData: []float32{1.5, -2}}, i64c("k", []int64{1}, 3)},
		Node: []*onnxpb.NodeProto{
			nd("Constant", nil, []string{"c"}, &onnxpb.AttributeProto{Name: proto.String("value_float"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(0.25)}),
			nd("Cast", []string{"ids"}, []string{"idsf"}, ai("to", 1)),
			nd("ConstantOfShape", []string{"k"}, []string{"z"}, &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
				T: &onnxpb.TensorProto{DataType: proto.Int32(1), Dims: []int64{1}, FloatData: []float32{0}}}),
			nd("Cos", []string{"x"}, []string{"y"}),
		},
		Output:    []*onnxpb.ValueInfoProto{dynVI("y", onnxpb.TensorProto_FLOAT, 2)},
		ValueInfo: []*onnxpb.ValueInfoProto{dynVI("idsf", onnxpb.TensorProto_FLOAT, 1)},
	}
	m := &graph.Model{Proto: &onnxpb.ModelProto{IrVersion: proto.Int64(8), Graph: g}}
	if err := rewrite.ToDouble(m); err != nil {
		t.Fatal(err)
	}
	const d = int32(onnxpb.TensorProto_DOUBLE)
	w := g.Initializer[0]
	if w.GetDataType() != d || len(w.RawData) != 16 || math.Float64frombits(leU64(w.RawData[8:])) != -2 {
		t.Errorf("initializer w: %v", w)
	}
	if g.Initializer[1].GetDataType() != int32(onnxpb.TensorProto_INT64) {
		t.Error("int64 initializer changed")
	}
	if g.Input[0].GetType().GetTensorType().GetElemType() != d || g.Input[1].GetType().GetTensorType().GetElemType() != int32(onnxpb.TensorProto_INT64) ||
		g.Output[0].GetType().GetTensorType().GetElemType() != d || g.ValueInfo[0].GetType().GetTensorType().GetElemType() != d {
		t.Error("declarations not converted")
	}
	byOut := map[string]*onnxpb.NodeProto{}
	for _, n := range g.Node {
		byOut[n.Output[0]] = n
	}
	if a := byOut["c"].Attribute[0]; a.GetName() != "value" || a.GetT().GetDataType() != d || a.GetT().GetDoubleData()[0] != 0.25 {
		t.Errorf("Constant: %v", a)
	}
	if byOut["idsf"].Attribute[0].GetI() != int64(d) {
		t.Error("Cast target not converted")
	}
	if byOut["z"].Attribute[0].GetT().GetDataType() != d {
		t.Error("ConstantOfShape value not converted")
	}
	// Cos has no float64 kernel: it runs in float32 between Casts.
	if p := byOut["y"]; p.GetOpType() != "Cast" || p.Attribute[0].GetI() != int64(d) {
		t.Errorf("Cos not wrapped: y produced by %v", p)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
}

func leU64(b []byte) uint64 {
	var v uint64
	for i := 7; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v
}

// TestToDoubleSyntheticLlama: the converted model runs and its logits
// equal the float32 model's to float32 precision.
func TestToDoubleSyntheticLlama(t *testing.T) {
	testenv.ORTLibrary(t)
	m32 := gradBuildSynthetic(t, gradTinyLlama)
	m64 := &graph.Model{Proto: proto.Clone(m32.Proto).(*onnxpb.ModelProto), Dir: m32.Dir}
	if err := rewrite.ToDouble(m64); err != nil {
		t.Fatal(err)
	}
	feeds := gradDecoderFeeds(t, m32, 2, 6, gradTinyLlama.Vocab, rand.New(rand.NewPCG(1, 2)))
	r32, err := gradSession(t, m32, "logits").Run(feeds, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	feeds64 := gradDecoderFeeds(t, m64, 2, 6, gradTinyLlama.Vocab, rand.New(rand.NewPCG(1, 2)))
	r64, err := gradSession(t, m64, "logits").Run(feeds64, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	if r64["logits"].DType.String() != "DOUBLE" {
		t.Fatalf("logits are %s", r64["logits"].DType)
	}
	a, b := gradFloats(t, r32["logits"]), gradFloats(t, r64["logits"])
	var worst float64
	for i := range a {
		worst = math.Max(worst, math.Abs(a[i]-b[i]))
	}
	if worst > 1e-5 {
		t.Errorf("float64 logits differ from float32 by %g", worst)
	}
}
