package runtime_test

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func TestScanModel(t *testing.T) {
	b := ort.NewModelBuilder(17).
		Input("ids", ort.Int64, "batch", "seq").
		Input("w", ort.Float, 2, 2). // has an initializer: not a required input
		Input("past", ort.Float16, 1, 4, "past_len", 8).
		Input("anon", ort.Float, ""). // dimension with neither value nor param
		Node("Identity", []string{"ids"}, []string{"out"}).
		Output("out", ort.Int64, "batch", "seq").
		Output("loss", ort.Float).               // scalar
		Output("any", ort.BFloat16, ort.NoShape) // undeclared rank
	b.FloatInit("w", []int64{2, 2}, []float32{1, 2, 3, 4})
	// A big weight ahead of the outputs: the scanner must hop over it.
	b.M.Graph.Initializer = append(b.M.Graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String("big"), Dims: []int64{1 << 18}, DataType: proto.Int32(int32(ort.Float)),
		RawData: make([]byte, 4<<18),
	})
	inputs, outputs, external, err := ort.ScanModelBytes(b.Bytes(t))
	if err != nil {
		t.Fatal(err)
	}
	wantIn := []ort.IOInfo{
		{Name: "ids", DType: ort.Int64, Shape: []int64{-1, -1}},
		{Name: "past", DType: ort.Float16, Shape: []int64{1, 4, -1, 8}},
		{Name: "anon", DType: ort.Float, Shape: []int64{-1}},
	}
	wantOut := []ort.IOInfo{
		{Name: "out", DType: ort.Int64, Shape: []int64{-1, -1}},
		{Name: "loss", DType: ort.Float, Shape: []int64{}},
		{Name: "any", DType: ort.BFloat16, Shape: nil},
	}
	if !reflect.DeepEqual(inputs, wantIn) {
		t.Errorf("inputs\n got %v\nwant %v", inputs, wantIn)
	}
	if !reflect.DeepEqual(outputs, wantOut) {
		t.Errorf("outputs\n got %v\nwant %v", outputs, wantOut)
	}
	if external {
		t.Error("external data reported for an inline model")
	}
	if !outputs[1].Static() || outputs[2].Static() || inputs[1].Static() {
		t.Error("Static() wrong")
	}
}

func TestScanModelExternalData(t *testing.T) {
	b := ort.NewModelBuilder(17).Input("x", ort.Float, 2).Output("x", ort.Float, 2)
	b.M.Graph.Initializer = append(b.M.Graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String("w"), Dims: []int64{2}, DataType: proto.Int32(int32(ort.Float)),
		DataLocation: onnxpb.TensorProto_EXTERNAL.Enum(),
		ExternalData: []*onnxpb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String("w.bin")}},
	})
	_, _, external, err := ort.ScanModelBytes(b.Bytes(t))
	if err != nil || !external {
		t.Fatalf("external = %v, err = %v", external, err)
	}
}

func TestScanModelRejectsGarbage(t *testing.T) {
	good := ort.NewModelBuilder(17).Input("x", ort.Float, 2).Output("x", ort.Float, 2).Bytes(t)
	cases := map[string][]byte{
		"empty":     nil,
		"text":      []byte("this is not a model\n"),
		"truncated": good[:len(good)-3],
		"no graph":  mustMarshal(t, &onnxpb.ModelProto{IrVersion: proto.Int64(9)}),
	}
	for name, data := range cases {
		if _, _, _, err := ort.ScanModelBytes(data); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
