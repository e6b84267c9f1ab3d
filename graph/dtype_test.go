package graph_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
)

func TestElemType(t *testing.T) {
	to := &onnxpb.AttributeProto{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT16))}
	m := irtest.New("g").Input("x", 2).Init("E", make([]float32, 8), 4, 2).
		Node("Gather", "g", []string{"E", "ids"}, []string{"e"}).
		Node("Add", "a", []string{"e", "x"}, []string{"s"}).
		Node("Cast", "c", []string{"s"}, []string{"h"}, to).
		Node("Shape", "sh", []string{"h"}, []string{"shape"}).
		Node("Equal", "eq", []string{"shape", "shape"}, []string{"b"}).
		Node("Custom", "cu", []string{"s"}, []string{"u"}).
		Output("h", 2).Model()
	ix := graph.NewIndex(m.Proto.Graph)
	for name, want := range map[string]onnxpb.TensorProto_DataType{
		"e": onnxpb.TensorProto_FLOAT, "s": onnxpb.TensorProto_FLOAT, "h": onnxpb.TensorProto_FLOAT,
		"shape": onnxpb.TensorProto_INT64, "b": onnxpb.TensorProto_BOOL, "u": onnxpb.TensorProto_UNDEFINED,
	} {
		// "h" is a declared float output, which wins over the Cast.
		if got := ix.ElemType(name); got != int32(want) {
			t.Errorf("ElemType(%s) = %d, want %d", name, got, want)
		}
	}
	m.Proto.Graph.Output = nil
	if got := graph.NewIndex(m.Proto.Graph).ElemType("h"); got != int32(onnxpb.TensorProto_FLOAT16) {
		t.Errorf("undeclared Cast output: %d, want FLOAT16", got)
	}
}

// Multi-output nodes: Dropout's mask is BOOL; a normalization's saved
// statistics have its stash_type (FLOAT by default) even in a float16 graph,
// while a skip norm's output 3 (the residual sum) keeps the input's type.
func TestElemTypeSecondaryOutputs(t *testing.T) {
	to := &onnxpb.AttributeProto{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT16))}
	m := irtest.New("g").Input("x", 2).
		Node("Cast", "c", []string{"x"}, []string{"h"}, to).
		Node("Dropout", "d", []string{"h"}, []string{"y", "mask"}).
		Node("LayerNormalization", "ln", []string{"y", "g", "b"}, []string{"n", "mean", "istd"}).
		Node("SkipLayerNormalization", "sln", []string{"y", "n", "g"}, []string{"o", "m2", "i2", "sum"}).
		Model()
	ix := graph.NewIndex(m.Proto.Graph)
	for name, want := range map[string]onnxpb.TensorProto_DataType{
		"y": onnxpb.TensorProto_FLOAT16, "mask": onnxpb.TensorProto_BOOL,
		"n": onnxpb.TensorProto_FLOAT16, "mean": onnxpb.TensorProto_FLOAT, "istd": onnxpb.TensorProto_FLOAT,
		"o": onnxpb.TensorProto_FLOAT16, "m2": onnxpb.TensorProto_FLOAT, "sum": onnxpb.TensorProto_FLOAT16,
	} {
		if got := ix.ElemType(name); got != int32(want) {
			t.Errorf("ElemType(%s) = %s, want %s", name, onnxpb.TensorProto_DataType(got), want)
		}
	}
}
