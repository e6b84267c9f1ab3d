package convert

import (
	"fmt"
	"math"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// graphBuilder accumulates the nodes of one ONNX graph. Names follow what
// torch.onnx.export writes for Hugging Face modules, because tools (and
// graph.FindBlocks) read layer structure from them: a node is named
// "<module scope>/<OpType>", with "_1", "_2", … for repeats in the same
// scope, and its outputs "<node name>_output_<i>".
type graphBuilder struct {
	nodes  []*onnxpb.NodeProto
	used   map[string]int    // node name → times used, for the "_k" suffix
	consts map[string]string // scope + constant key → the Constant's output
	// half says the weights are stored as float16: every use goes through
	// a Cast to float32 so that all arithmetic stays in float32.
	half bool
}

func newGraphBuilder(half bool) *graphBuilder {
	return &graphBuilder{used: map[string]int{}, consts: map[string]string{}, half: half}
}

// nodeName returns scope/op, made unique with torch's "_k" suffix.
func (b *graphBuilder) nodeName(scope, op string) string {
	base := scope + "/" + op
	k := b.used[base]
	b.used[base] = k + 1
	if k == 0 {
		return base
	}
	return fmt.Sprintf("%s_%d", base, k)
}

// opN adds a node with nOut outputs and returns their names.
func (b *graphBuilder) opN(scope, op string, nOut int, attrs []*onnxpb.AttributeProto, inputs ...string) []string {
	name := b.nodeName(scope, op)
	outs := make([]string, nOut)
	for i := range outs {
		outs[i] = fmt.Sprintf("%s_output_%d", name, i)
	}
	b.nodes = append(b.nodes, &onnxpb.NodeProto{
		Name: proto.String(name), OpType: proto.String(op),
		Input: inputs, Output: outs, Attribute: attrs,
	})
	return outs
}

// op adds a single-output node without attributes.
func (b *graphBuilder) op(scope, op string, inputs ...string) string {
	return b.opN(scope, op, 1, nil, inputs...)[0]
}

// opA adds a single-output node with attributes.
func (b *graphBuilder) opA(scope, op string, attrs []*onnxpb.AttributeProto, inputs ...string) string {
	return b.opN(scope, op, 1, attrs, inputs...)[0]
}

// opTo adds a single-output node whose output has a fixed name (a graph
// output such as "logits" or "present.0.key").
func (b *graphBuilder) opTo(scope, op, output string, attrs []*onnxpb.AttributeProto, inputs ...string) string {
	b.opN(scope, op, 1, attrs, inputs...)
	b.nodes[len(b.nodes)-1].Output[0] = output
	return output
}

// weight returns a float32 view of the initializer name, casting it when
// the weights are stored as float16. The Cast lives in the scope of the
// module using the weight so that block discovery assigns it there;
// onnxruntime folds it at load time.
func (b *graphBuilder) weight(scope, name string) string {
	if !b.half {
		return name
	}
	return b.opA(scope, "Cast", []*onnxpb.AttributeProto{attrInt("to", int64(onnxpb.TensorProto_FLOAT))}, name)
}

// constant adds (once per scope and value) a Constant node holding t.
func (b *graphBuilder) constant(scope, key string, t *onnxpb.TensorProto) string {
	k := scope + "\x00" + key
	if name, ok := b.consts[k]; ok {
		return name
	}
	attr := &onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(), T: t}
	name := b.opA(scope, "Constant", []*onnxpb.AttributeProto{attr})
	b.consts[k] = name
	return name
}

// scalarF32 is a float32 scalar constant.
func (b *graphBuilder) scalarF32(scope string, v float32) string {
	t := &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), FloatData: []float32{v}}
	return b.constant(scope, fmt.Sprintf("f32:%08x", math.Float32bits(v)), t)
}

// vecF32 is a 1-D float32 constant.
func (b *graphBuilder) vecF32(scope, key string, v []float32) string {
	t := &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)), Dims: []int64{int64(len(v))}, FloatData: v}
	return b.constant(scope, "f32v:"+key, t)
}

// scalarI64 is an int64 scalar constant.
func (b *graphBuilder) scalarI64(scope string, v int64) string {
	t := &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Int64Data: []int64{v}}
	return b.constant(scope, fmt.Sprint("i64:", v), t)
}

// vecI64 is a 1-D int64 constant (shapes, axes, split sizes).
func (b *graphBuilder) vecI64(scope string, v ...int64) string {
	t := &onnxpb.TensorProto{DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{int64(len(v))}, Int64Data: v}
	parts := make([]string, len(v))
	for i, x := range v {
		parts[i] = fmt.Sprint(x)
	}
	return b.constant(scope, "i64v:"+strings.Join(parts, ","), t)
}

func attrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

func attrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

func attrFloat(name string, v float32) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(v)}
}

func attrs(a ...*onnxpb.AttributeProto) []*onnxpb.AttributeProto { return a }
