package convert

import (
	"encoding/json"
	"strings"
)

// architecture is the Hugging Face class name written to config.json.
func architecture(cfg Config) string {
	if cfg.HFArchitecture != "" {
		return cfg.HFArchitecture
	}
	if cfg.Family == FamilyGPT2 {
		return "GPT2LMHeadModel"
	}
	return "LlamaForCausalLM"
}

// modelType is Hugging Face's model_type for the architecture
// ("LlamaForCausalLM" → "llama", "Qwen2ForCausalLM" → "qwen2"), which is
// also onnxruntime-genai's model type.
func modelType(cfg Config) string {
	a := architecture(cfg)
	for _, suffix := range []string{"ForCausalLM", "LMHeadModel"} {
		a = strings.TrimSuffix(a, suffix)
	}
	return strings.ToLower(a)
}

// tokenID is a token id for JSON: null when unknown (-1).
func tokenID(id int) *int {
	if id < 0 {
		return nil
	}
	return &id
}

// llamaHFConfig is config.json of a Llama-family model, with the keys
// transformers' LlamaConfig / MistralConfig / Qwen2Config read.
type llamaHFConfig struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	HeadDim               int      `json:"head_dim"`
	VocabSize             int      `json:"vocab_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings,omitempty"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	HiddenAct             string   `json:"hidden_act"`
	AttentionBias         *bool    `json:"attention_bias,omitempty"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	BOSTokenID            *int     `json:"bos_token_id"`
	EOSTokenID            *int     `json:"eos_token_id"`
	TorchDtype            string   `json:"torch_dtype"`
}

// gpt2HFConfig is config.json of a GPT-2 model (GPT2Config's names).
type gpt2HFConfig struct {
	Architectures      []string `json:"architectures"`
	ModelType          string   `json:"model_type"`
	NEmbd              int      `json:"n_embd"`
	NLayer             int      `json:"n_layer"`
	NHead              int      `json:"n_head"`
	NInner             int      `json:"n_inner"`
	NPositions         int      `json:"n_positions"`
	NCtx               int      `json:"n_ctx"`
	VocabSize          int      `json:"vocab_size"`
	LayerNormEpsilon   float64  `json:"layer_norm_epsilon"`
	ActivationFunction string   `json:"activation_function"`
	TieWordEmbeddings  bool     `json:"tie_word_embeddings"`
	BOSTokenID         *int     `json:"bos_token_id"`
	EOSTokenID         *int     `json:"eos_token_id"`
	TorchDtype         string   `json:"torch_dtype"`
}

// attentionBias is Llama's and Mistral's attention_bias key (biases on
// q, k, v and o: never built here); Qwen2's biases on q, k, v are implied
// by its architecture, whose config has no such key.
func attentionBias(cfg Config) *bool {
	if cfg.QKVBias {
		return nil
	}
	no := false
	return &no
}

// hfConfigJSON renders config.json for the built model.
func hfConfigJSON(cfg Config, dt DType) ([]byte, error) {
	var v any
	if cfg.Family == FamilyGPT2 {
		v = gpt2HFConfig{
			Architectures: []string{architecture(cfg)}, ModelType: modelType(cfg),
			NEmbd: cfg.Hidden, NLayer: cfg.Layers, NHead: cfg.Heads, NInner: cfg.FFN,
			NPositions: cfg.MaxPositions, NCtx: cfg.MaxPositions, VocabSize: cfg.Vocab,
			LayerNormEpsilon: cfg.NormEps, ActivationFunction: "gelu_new", TieWordEmbeddings: true,
			BOSTokenID: tokenID(cfg.BOS), EOSTokenID: tokenID(cfg.EOS), TorchDtype: string(dt),
		}
	} else {
		v = llamaHFConfig{
			Architectures: []string{architecture(cfg)}, ModelType: modelType(cfg),
			HiddenSize: cfg.Hidden, IntermediateSize: cfg.FFN, NumHiddenLayers: cfg.Layers,
			NumAttentionHeads: cfg.Heads, NumKeyValueHeads: cfg.KVHeads, HeadDim: cfg.HeadDim,
			VocabSize: cfg.Vocab, MaxPositionEmbeddings: cfg.MaxPositions,
			RMSNormEps: cfg.NormEps, RopeTheta: cfg.RopeTheta, HiddenAct: "silu",
			AttentionBias: attentionBias(cfg), TieWordEmbeddings: cfg.TiedEmbeddings,
			BOSTokenID: tokenID(cfg.BOS), EOSTokenID: tokenID(cfg.EOS), TorchDtype: string(dt),
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
