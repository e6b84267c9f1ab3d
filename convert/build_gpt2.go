package convert

import "fmt"

// gpt2Decoder adds the GPT-2 graph: token plus learned position
// embeddings, L pre-norm blocks (LayerNorm, attention from the fused
// c_attn projection split into q, k, v; LayerNorm, GELU MLP) joined by
// the residual Adds /transformer/h.N/Add and /transformer/h.N/Add_1, the
// final LayerNorm and the LM head tied to wte.
func (b *graphBuilder) gpt2Decoder(cfg Config) {
	tok := b.embed("/transformer/wte", "transformer.wte.weight", "input_ids")
	pos := b.embed("/transformer/wpe", "transformer.wpe.weight", "position_ids")
	h := b.op("/transformer", "Add", tok, pos)
	bias := b.attentionBias("/transformer/attn_mask", "input_ids", "attention_mask")
	shape := attnShape{heads: cfg.Heads, kvHeads: cfg.Heads, headDim: cfg.HeadDim}
	hidden := int64(cfg.Hidden)
	for l := 0; l < cfg.Layers; l++ {
		scope, w := fmt.Sprintf("/transformer/h.%d", l), fmt.Sprintf("transformer.h.%d.", l)
		x := b.layerNorm(scope+"/ln_1", h, w+"ln_1.weight", w+"ln_1.bias", cfg.NormEps)

		attn := scope + "/attn"
		qkv := b.linear(attn+"/c_attn", x, w+"attn.c_attn.weight", w+"attn.c_attn.bias")
		parts := b.opN(attn, "Split", 3, attrs(attrInt("axis", -1)), qkv, b.vecI64(attn, hidden, hidden, hidden))
		ctx := b.attention(attn, shape, parts[0], parts[1], parts[2], nil, layerKV(l), bias)
		h = b.op(scope, "Add", h, b.linear(attn+"/c_proj", ctx, w+"attn.c_proj.weight", w+"attn.c_proj.bias"))

		x = b.layerNorm(scope+"/ln_2", h, w+"ln_2.weight", w+"ln_2.bias", cfg.NormEps)
		m := b.geluMLP(scope+"/mlp", x, w+"mlp.c_fc.weight", w+"mlp.c_fc.bias", w+"mlp.c_proj.weight", w+"mlp.c_proj.bias")
		h = b.op(scope, "Add", h, m)
	}
	h = b.layerNorm("/transformer/ln_f", h, "transformer.ln_f.weight", "transformer.ln_f.bias", cfg.NormEps)
	b.tiedHead(h, "transformer.wte.weight")
}
