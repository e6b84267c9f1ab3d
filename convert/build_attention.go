package convert

import "math"

// attnShape is the head layout of one attention module.
type attnShape struct {
	heads, kvHeads, headDim int
}

// kvNames are a layer's KV-cache graph input and output names.
type kvNames struct {
	pastKey, pastValue, presentKey, presentValue string
}

func layerKV(i int) kvNames {
	return kvNames{
		pastKey:      pastKeyName(i),
		pastValue:    pastValueName(i),
		presentKey:   presentKeyName(i),
		presentValue: presentValueName(i),
	}
}

// attention is eager scaled-dot-product attention with a KV cache, in the
// shape Hugging Face's eager attention takes: q, k, v are the projections
// [batch, seq, n·headDim]; the result is [batch, seq, heads·headDim],
// before the output projection.
//
// Keys are cached after rotary embedding (rope may be nil: GPT-2). With
// grouped-query attention the cached keys and values keep kvHeads heads
// and are repeated to the query heads afterwards (HF's repeat_kv:
// Unsqueeze, Expand, Reshape). Scores, mask and Softmax are float32.
func (b *graphBuilder) attention(scope string, a attnShape, q, k, v string, rope *rotary, kv kvNames, bias string) string {
	q = b.splitHeads(scope, q, a.heads, a.headDim)
	k = b.splitHeads(scope, k, a.kvHeads, a.headDim)
	v = b.splitHeads(scope, v, a.kvHeads, a.headDim)
	if rope != nil {
		q = rope.apply(b, scope, q)
		k = rope.apply(b, scope, k)
	}
	seqAxis := attrs(attrInt("axis", 2))
	k = b.opTo(scope, "Concat", kv.presentKey, seqAxis, kv.pastKey, k)
	v = b.opTo(scope, "Concat", kv.presentValue, seqAxis, kv.pastValue, v)
	if rep := a.heads / a.kvHeads; rep > 1 {
		k = b.repeatKV(scope, k, a.heads, rep, a.headDim)
		v = b.repeatKV(scope, v, a.heads, rep, a.headDim)
	}
	kt := b.opA(scope, "Transpose", attrs(attrInts("perm", 0, 1, 3, 2)), k)
	scores := b.op(scope, "MatMul", q, kt)
	scores = b.op(scope, "Div", scores, b.scalarF32(scope, float32(math.Sqrt(float64(a.headDim)))))
	scores = b.op(scope, "Add", scores, bias)
	probs := b.opA(scope, "Softmax", attrs(attrInt("axis", -1)), scores)
	ctx := b.op(scope, "MatMul", probs, v)                                    // [batch, heads, seq, headDim]
	ctx = b.opA(scope, "Transpose", attrs(attrInts("perm", 0, 2, 1, 3)), ctx) // [batch, seq, heads, headDim]
	return b.op(scope, "Reshape", ctx, b.vecI64(scope, 0, 0, int64(a.heads*a.headDim)))
}

// splitHeads turns [batch, seq, n·d] into [batch, n, seq, d].
func (b *graphBuilder) splitHeads(scope, x string, n, d int) string {
	x = b.op(scope, "Reshape", x, b.vecI64(scope, 0, 0, int64(n), int64(d)))
	return b.opA(scope, "Transpose", attrs(attrInts("perm", 0, 2, 1, 3)), x)
}

// repeatKV turns [batch, kvHeads, total, d] into [batch, kvHeads·rep,
// total, d], each KV head repeated rep times in a row (query head h reads
// KV head h / rep).
func (b *graphBuilder) repeatKV(scope, x string, heads, rep, d int) string {
	x = b.op(scope, "Unsqueeze", x, b.vecI64(scope, 2))                   // [batch, kv, 1, total, d]
	x = b.op(scope, "Expand", x, b.vecI64(scope, 1, 1, int64(rep), 1, 1)) // [batch, kv, rep, total, d]
	return b.op(scope, "Reshape", x, b.vecI64(scope, 0, int64(heads), -1, int64(d)))
}
