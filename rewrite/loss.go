package rewrite

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// AppendNextTokenLoss adds graph inputs "labels" (INT64 [batch, seq]) and
// "label_weights" (same float type as logits, [batch, seq]) and the graph
// output "loss_sum": a scalar Σ_{b,t} w[b,t]·(−log softmax(logits[b,t,:])[labels[b,t]]).
// Labels are already shifted by the caller: labels[b,t] is the token to
// predict at position t. Every label must be a valid token id (give
// padding any id and weight 0).
//
// The loss is a sum, not a mean, so that micro-batches accumulate by
// adding and the caller divides by the token count it chooses. It is
// LogSoftmax → GatherElements → weighted ReduceSum, ops whose gradients
// (see Gradient) touch the [batch, seq, vocab] tensor only a few times.
func AppendNextTokenLoss(m *graph.Model, logits string) error {
	g := m.Proto.GetGraph()
	ix := graph.NewIndex(g)
	if ix.Producer[logits] == nil && ix.Inputs[logits] == nil {
		return fmt.Errorf("loss: no tensor %q in the graph", logits)
	}
	dt := ix.ElemType(logits)
	if !gradIsFloat(dt) {
		return fmt.Errorf("loss: logits %q have element type %s, want a float type", logits, graph.DTypeName(dt))
	}
	const prefix = "/loss/"
	for _, name := range []string{"labels", "label_weights", "loss_sum", prefix + "logprobs", prefix + "picked", prefix + "weights", prefix + "weighted", prefix + "labels", prefix + "sum", prefix + "axes"} {
		if ix.Producer[name] != nil || ix.Inputs[name] != nil || ix.Initializers[name] != nil {
			return fmt.Errorf("loss: the graph already has a tensor %q", name)
		}
	}
	vi := func(name string, dt int32) *onnxpb.ValueInfoProto {
		dim := func(p string) *onnxpb.TensorShapeProto_Dimension {
			return &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: p}}
		}
		return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(dt), Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{dim("batch"), dim("sequence")}}},
		}}}
	}
	g.Input = append(g.Input, vi("labels", int32(onnxpb.TensorProto_INT64)), vi("label_weights", dt))
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{
		Name: proto.String(prefix + "axes"), DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{1}, Int64Data: []int64{-1},
	})
	node := func(op, out string, ins []string, attrs ...*onnxpb.AttributeProto) {
		g.Node = append(g.Node, &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(out), Input: ins, Output: []string{out}, Attribute: attrs})
	}
	node("LogSoftmax", prefix+"logprobs", []string{logits}, gradIntAttr("axis", -1))
	node("Unsqueeze", prefix+"labels", []string{"labels", prefix + "axes"})
	node("GatherElements", prefix+"picked", []string{prefix + "logprobs", prefix + "labels"}, gradIntAttr("axis", -1))
	node("Unsqueeze", prefix+"weights", []string{"label_weights", prefix + "axes"})
	node("Mul", prefix+"weighted", []string{prefix + "picked", prefix + "weights"})
	node("ReduceSum", prefix+"sum", []string{prefix + "weighted"}, gradIntAttr("keepdims", 0))
	node("Neg", "loss_sum", []string{prefix + "sum"})
	g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String("loss_sum"), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
		TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(dt), Shape: &onnxpb.TensorShapeProto{}},
	}}})
	return nil
}
