package rewrite

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ExposeTensors makes intermediate tensors of the main graph fetchable by
// adding them to the graph's outputs: onnxruntime returns graph outputs
// only. The type is taken from value_info (or the initializer) when the
// model has it; onnxruntime infers it otherwise. Tensors already exposed
// are left alone.
//
// Exposing a tensor gives it a second consumer, which can stop
// onnxruntime from fusing the node that produces it (SkipLayerNorm fusion
// needs a single-consumer Add): time models without taps.
func ExposeTensors(m *graph.Model, names ...string) error {
	g := m.Proto.GetGraph()
	ix := graph.NewIndex(g)
	types := map[string]*onnxpb.TypeProto{}
	for _, vi := range g.GetValueInfo() {
		types[vi.GetName()] = vi.GetType()
	}
	for _, vi := range g.GetInput() {
		types[vi.GetName()] = vi.GetType()
	}
	for _, name := range names {
		if ix.Outputs[name] {
			continue
		}
		typ := types[name]
		if typ == nil {
			if t := ix.Initializers[name]; t != nil {
				typ = &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(t.GetDataType())}}}
			} else if ix.Producer[name] == nil && ix.Inputs[name] == nil {
				return fmt.Errorf("expose: no tensor %q in the graph", name)
			}
		}
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(name), Type: typ})
		ix.Outputs[name] = true
	}
	return nil
}
