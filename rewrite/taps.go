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
// model has it, else inferred from the producer (see Index.ElemType). Tensors already exposed
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
		if ix.Producer[name] == nil && ix.Inputs[name] == nil && ix.Initializers[name] == nil {
			return fmt.Errorf("expose: no tensor %q in the graph", name)
		}
		typ := types[name]
		if typ == nil {
			// Declare at least the element type: onnxruntime would infer
			// it, but callers size their buffers from the declaration.
			et := ix.ElemType(name)
			if et == 0 {
				return fmt.Errorf("expose: cannot tell the element type of %q (produced by %s)", name, graph.NodeLabel(ix.Producer[name]))
			}
			typ = &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(et)}}}
		}
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(name), Type: typ})
		ix.Outputs[name] = true
	}
	return nil
}
