package convert

import (
	"encoding/json"
	"testing"
)

// TestConfigFilesRoundTrip checks that the config.json written beside a
// model reads back, through the Hugging Face reader, as the Config it was
// written from (so tools that edit it, e.g. after pruning, and a later
// conversion agree), and that genai_config.json names the model's I/O.
func TestConfigFilesRoundTrip(t *testing.T) {
	for _, cfg := range []Config{
		{Family: FamilyLlama, HFArchitecture: "LlamaForCausalLM", Layers: 3, Hidden: 32, Heads: 4, KVHeads: 2, HeadDim: 8,
			FFN: 48, Vocab: 64, MaxPositions: 128, NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2},
		{Family: FamilyLlama, HFArchitecture: "Qwen2ForCausalLM", Layers: 2, Hidden: 32, Heads: 4, KVHeads: 1, HeadDim: 16,
			FFN: 40, Vocab: 64, MaxPositions: 4096, NormEps: 1e-6, RopeTheta: 1e6, QKVBias: true, BOS: -1, EOS: 3},
		{Family: FamilyGPT2, HFArchitecture: "GPT2LMHeadModel", Layers: 2, Hidden: 32, Heads: 4, KVHeads: 4, HeadDim: 8,
			FFN: 128, Vocab: 64, MaxPositions: 32, NormEps: 1e-5, TiedEmbeddings: true, BOS: 0, EOS: 0},
	} {
		t.Run(cfg.HFArchitecture, func(t *testing.T) {
			data, err := hfConfigJSON(cfg, Float16)
			if err != nil {
				t.Fatal(err)
			}
			back, err := parseHFConfig(data)
			if err != nil {
				t.Fatalf("the HF reader refuses our config.json: %v\n%s", err, data)
			}
			if back != cfg {
				t.Errorf("config.json reads back as\n%+v, want\n%+v", back, cfg)
			}

			data, err = genaiConfigJSON(cfg, "model.onnx")
			if err != nil {
				t.Fatal(err)
			}
			var g struct {
				Model struct {
					Type          string `json:"type"`
					ContextLength int    `json:"context_length"`
					VocabSize     int    `json:"vocab_size"`
					EOS           *int   `json:"eos_token_id"`
					Decoder       struct {
						Filename        string
						HeadSize        int `json:"head_size"`
						HiddenSize      int `json:"hidden_size"`
						Heads           int `json:"num_attention_heads"`
						KVHeads         int `json:"num_key_value_heads"`
						Layers          int `json:"num_hidden_layers"`
						Inputs, Outputs map[string]string
					} `json:"decoder"`
				} `json:"model"`
				Search struct {
					Share *bool `json:"past_present_share_buffer"`
				} `json:"search"`
			}
			if err := json.Unmarshal(data, &g); err != nil {
				t.Fatal(err)
			}
			d := g.Model.Decoder
			if g.Model.Type != modelType(cfg) || g.Model.ContextLength != cfg.MaxPositions || g.Model.VocabSize != cfg.Vocab ||
				d.Filename != "model.onnx" || d.HeadSize != cfg.HeadDim || d.HiddenSize != cfg.Hidden ||
				d.Heads != cfg.Heads || d.KVHeads != cfg.KVHeads || d.Layers != cfg.Layers ||
				g.Model.EOS == nil || *g.Model.EOS != cfg.EOS {
				t.Errorf("genai_config.json disagrees with the config:\n%s", data)
			}
			want := map[string]string{"input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
				"past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"}
			for k, v := range want {
				if d.Inputs[k] != v {
					t.Errorf("decoder.inputs.%s = %q, want %q", k, d.Inputs[k], v)
				}
			}
			if d.Outputs["logits"] != "logits" || d.Outputs["present_key_names"] != "present.%d.key" || d.Outputs["present_value_names"] != "present.%d.value" {
				t.Errorf("decoder.outputs %v", d.Outputs)
			}
			if g.Search.Share == nil || *g.Search.Share {
				t.Errorf("past_present_share_buffer must be false: the cache grows by Concat")
			}
		})
	}
}
