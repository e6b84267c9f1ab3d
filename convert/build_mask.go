package convert

import (
	"math"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// attentionBias builds the additive attention mask that all layers share,
// [batch, 1, seq, total]: 0 where query i — at absolute position
// past + i, past = total − seq — may attend to key j (j ≤ past + i and
// attention_mask[b, j] = 1), and float32's lowest value elsewhere.
//
// Causality and padding are combined with And before one Where, rather
// than adding two biases, so a masked score is score + lowest, which is
// finite: a row whose keys are all masked (a left-padding query) softmaxes
// to a uniform distribution instead of NaN, as in Hugging Face models.
func (b *graphBuilder) attentionBias(scope, inputIDs, attentionMask string) string {
	second := b.scalarI64(scope, 1)
	gather0 := attrs(attrInt("axis", 0))
	total := b.opA(scope, "Gather", gather0, b.op(scope, "Shape", attentionMask), second)
	seq := b.opA(scope, "Gather", gather0, b.op(scope, "Shape", inputIDs), second)
	past := b.op(scope, "Sub", total, seq)
	one, zero := b.scalarI64(scope, 1), b.scalarI64(scope, 0)
	qpos := b.op(scope, "Range", past, total, one) // [seq]
	kpos := b.op(scope, "Range", zero, total, one) // [total]
	causal := b.op(scope, "LessOrEqual",
		b.op(scope, "Unsqueeze", kpos, b.vecI64(scope, 0)), // [1, total]
		b.op(scope, "Unsqueeze", qpos, b.vecI64(scope, 1))) // [seq, 1] → [seq, total]
	keep := b.opA(scope, "Cast", attrs(attrInt("to", int64(onnxpb.TensorProto_BOOL))), attentionMask)
	keep = b.op(scope, "Unsqueeze", keep, b.vecI64(scope, 1, 2)) // [batch, 1, 1, total]
	allowed := b.op(scope, "And", causal, keep)                  // [batch, 1, seq, total]
	return b.op(scope, "Where", allowed, b.scalarF32(scope, 0), b.scalarF32(scope, -math.MaxFloat32))
}
