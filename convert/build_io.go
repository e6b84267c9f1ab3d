package convert

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// The graph's I/O follows optimum's convention for decoders with a KV
// cache; onnxruntime-genai's config refers to the cache by these
// templates.
const (
	pastKeyTemplate      = "past_key_values.%d.key"
	pastValueTemplate    = "past_key_values.%d.value"
	presentKeyTemplate   = "present.%d.key"
	presentValueTemplate = "present.%d.value"
)

func pastKeyName(i int) string      { return fmt.Sprintf(pastKeyTemplate, i) }
func pastValueName(i int) string    { return fmt.Sprintf(pastValueTemplate, i) }
func presentKeyName(i int) string   { return fmt.Sprintf(presentKeyTemplate, i) }
func presentValueName(i int) string { return fmt.Sprintf(presentValueTemplate, i) }

// Symbolic dimensions, as optimum names them.
const (
	dimBatch = "batch_size"
	dimSeq   = "sequence_length"
	dimPast  = "past_sequence_length"
	dimTotal = "total_sequence_length"
)

// decoderIO declares the graph inputs and outputs:
//
//	input_ids, position_ids        int64 [batch_size, sequence_length]
//	attention_mask                 int64 [batch_size, total_sequence_length] (past + current; 0 = padding)
//	past_key_values.N.key/.value   float32 [batch_size, kv_heads, past_sequence_length, head_dim]
//	logits                         float32 [batch_size, sequence_length, vocab]
//	present.N.key/.value           float32 [batch_size, kv_heads, total_sequence_length, head_dim]
//
// Logits and the cache are float32 even when the weights are float16, so
// callers never fetch float16 outputs (onnxruntime_go mishandles them).
func decoderIO(cfg Config) (inputs, outputs []*onnxpb.ValueInfoProto) {
	i64, f32 := onnxpb.TensorProto_INT64, onnxpb.TensorProto_FLOAT
	kv, hd := int64(cfg.KVHeads), int64(cfg.HeadDim)
	inputs = []*onnxpb.ValueInfoProto{
		valueInfo("input_ids", i64, dimBatch, dimSeq),
		valueInfo("attention_mask", i64, dimBatch, dimTotal),
		valueInfo("position_ids", i64, dimBatch, dimSeq),
	}
	outputs = []*onnxpb.ValueInfoProto{valueInfo("logits", f32, dimBatch, dimSeq, int64(cfg.Vocab))}
	for l := 0; l < cfg.Layers; l++ {
		inputs = append(inputs,
			valueInfo(pastKeyName(l), f32, dimBatch, kv, dimPast, hd),
			valueInfo(pastValueName(l), f32, dimBatch, kv, dimPast, hd))
		outputs = append(outputs,
			valueInfo(presentKeyName(l), f32, dimBatch, kv, dimTotal, hd),
			valueInfo(presentValueName(l), f32, dimBatch, kv, dimTotal, hd))
	}
	return inputs, outputs
}

// valueInfo declares a tensor; dims are int64 sizes or string parameters.
func valueInfo(name string, dt onnxpb.TensorProto_DataType, dims ...any) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for _, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		switch d := d.(type) {
		case string:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
		case int64:
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(dt)),
			Shape:    shape,
		}}},
	}
}
