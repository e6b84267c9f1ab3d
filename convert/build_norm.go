package convert

// rmsNorm is Hugging Face's LlamaRMSNorm, x / sqrt(mean(x², -1) + eps) ·
// weight, decomposed into Pow, ReduceMean, Add, Sqrt, Div and Mul: the
// pattern torch exports and onnxruntime's SimplifiedLayerNormalization
// fusion recognises. It runs in float32 whatever the weights' storage
// type (b.weight casts float16 weights).
func (b *graphBuilder) rmsNorm(scope, x, weight string, eps float64) string {
	sq := b.op(scope, "Pow", x, b.scalarF32(scope, 2))
	mean := b.opA(scope, "ReduceMean", attrs(attrInts("axes", -1), attrInt("keepdims", 1)), sq)
	variance := b.op(scope, "Add", mean, b.scalarF32(scope, float32(eps)))
	rms := b.op(scope, "Sqrt", variance)
	normed := b.op(scope, "Div", x, rms)
	return b.op(scope, "Mul", b.weight(scope, weight), normed)
}

// layerNorm is nn.LayerNorm over the last axis: one LayerNormalization
// op (opset 17), as torch exports it.
func (b *graphBuilder) layerNorm(scope, x, weight, bias string, eps float64) string {
	return b.opA(scope, "LayerNormalization", attrs(attrInt("axis", -1), attrFloat("epsilon", float32(eps))),
		x, b.weight(scope, weight), b.weight(scope, bias))
}
