package convert

import "fmt"

// llamaDecoder adds the Llama-family graph (Llama, Mistral, Qwen2):
// token embedding, rotary tables and attention mask shared by all layers,
// L pre-norm blocks (RMSNorm, attention with rotary embeddings and
// grouped-query heads, RMSNorm, SwiGLU) joined by the residual Adds
// /model/layers.N/Add and /model/layers.N/Add_1, the final RMSNorm and
// the LM head.
func (b *graphBuilder) llamaDecoder(cfg Config) {
	h := b.embed("/model/embed_tokens", "model.embed_tokens.weight", "input_ids")
	rope := b.rotaryTables("/model/rotary_emb", "position_ids", cfg.HeadDim, cfg.RopeTheta)
	bias := b.attentionBias("/model/attn_mask", "input_ids", "attention_mask")
	shape := attnShape{heads: cfg.Heads, kvHeads: cfg.KVHeads, headDim: cfg.HeadDim}
	for l := 0; l < cfg.Layers; l++ {
		scope, w := fmt.Sprintf("/model/layers.%d", l), fmt.Sprintf("model.layers.%d.", l)
		x := b.rmsNorm(scope+"/input_layernorm", h, w+"input_layernorm.weight", cfg.NormEps)

		attn, wa := scope+"/self_attn", w+"self_attn."
		var bq, bk, bv string
		if cfg.QKVBias {
			bq, bk, bv = wa+"q_proj.bias", wa+"k_proj.bias", wa+"v_proj.bias"
		}
		q := b.linear(attn+"/q_proj", x, wa+"q_proj.weight", bq)
		k := b.linear(attn+"/k_proj", x, wa+"k_proj.weight", bk)
		v := b.linear(attn+"/v_proj", x, wa+"v_proj.weight", bv)
		ctx := b.attention(attn, shape, q, k, v, rope, layerKV(l), bias)
		h = b.op(scope, "Add", h, b.linear(attn+"/o_proj", ctx, wa+"o_proj.weight", ""))

		x = b.rmsNorm(scope+"/post_attention_layernorm", h, w+"post_attention_layernorm.weight", cfg.NormEps)
		m := b.swiGLU(scope+"/mlp", x, w+"mlp.gate_proj.weight", w+"mlp.up_proj.weight", w+"mlp.down_proj.weight")
		h = b.op(scope, "Add", h, m)
	}
	h = b.rmsNorm("/model/norm", h, "model.norm.weight", cfg.NormEps)
	if cfg.TiedEmbeddings {
		b.tiedHead(h, "model.embed_tokens.weight")
	} else {
		b.untiedHead(h, "lm_head.weight")
	}
}
