package convert

import (
	"math"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// rotary holds the cos and sin tables [batch, 1, seq, headDim] that every
// layer's attention shares.
type rotary struct {
	cos, sin string
	headDim  int
}

// rotaryTables computes cos and sin from position_ids once for the whole
// model, as Hugging Face's LlamaRotaryEmbedding does: angles
// position · inv_freq with inv_freq_i = theta^(-2i/d), in float32, and the
// frequencies repeated for both halves of the head (rotate-half layout).
// Computing them from position_ids rather than from a table indexed by
// position keeps left-padded batches and any context length correct.
func (b *graphBuilder) rotaryTables(scope, positionIDs string, headDim int, theta float64) *rotary {
	inv := make([]float32, headDim/2)
	for i := range inv {
		// float32 steps, like torch's 1.0 / (theta ** (arange(0, d, 2).float() / d)).
		e := float32(2*i) / float32(headDim)
		inv[i] = 1 / float32(math.Pow(theta, float64(e)))
	}
	pos := b.opA(scope, "Cast", attrs(attrInt("to", int64(onnxpb.TensorProto_FLOAT))), positionIDs)
	pos = b.op(scope, "Unsqueeze", pos, b.vecI64(scope, 2))            // [batch, seq, 1]
	freqs := b.op(scope, "Mul", pos, b.vecF32(scope, "inv_freq", inv)) // [batch, seq, d/2]
	emb := b.opA(scope, "Concat", attrs(attrInt("axis", -1)), freqs, freqs)
	heads := b.vecI64(scope, 1)
	return &rotary{
		cos:     b.op(scope, "Unsqueeze", b.op(scope, "Cos", emb), heads),
		sin:     b.op(scope, "Unsqueeze", b.op(scope, "Sin", emb), heads),
		headDim: headDim,
	}
}

// apply rotates x [batch, heads, seq, headDim]: x·cos + rotate_half(x)·sin
// with rotate_half(x) = concat(-x₂, x₁) over the two halves of the head.
func (r *rotary) apply(b *graphBuilder, scope, x string) string {
	half := int64(r.headDim / 2)
	parts := b.opN(scope, "Split", 2, attrs(attrInt("axis", -1)), x, b.vecI64(scope, half, half))
	rot := b.opA(scope, "Concat", attrs(attrInt("axis", -1)), b.op(scope, "Neg", parts[1]), parts[0])
	return b.op(scope, "Add", b.op(scope, "Mul", x, r.cos), b.op(scope, "Mul", rot, r.sin))
}
