package convert

import "encoding/json"

// genaiDefaultContext is the context length written when the checkpoint
// does not say (onnxruntime-genai requires one).
const genaiDefaultContext = 2048

// genaiConfig is onnxruntime-genai's genai_config.json for a decoder-only
// model in optimum's I/O convention. The KV cache is grown by Concat in
// the graph, so past and present cannot share one buffer
// (past_present_share_buffer is false).
type genaiConfig struct {
	Model  genaiModel  `json:"model"`
	Search genaiSearch `json:"search"`
}

type genaiModel struct {
	BOSTokenID    *int         `json:"bos_token_id,omitempty"`
	ContextLength int          `json:"context_length"`
	Decoder       genaiDecoder `json:"decoder"`
	EOSTokenID    *int         `json:"eos_token_id,omitempty"`
	PadTokenID    *int         `json:"pad_token_id,omitempty"`
	Type          string       `json:"type"`
	VocabSize     int          `json:"vocab_size"`
}

type genaiDecoder struct {
	SessionOptions    genaiSessionOptions `json:"session_options"`
	Filename          string              `json:"filename"`
	HeadSize          int                 `json:"head_size"`
	HiddenSize        int                 `json:"hidden_size"`
	Inputs            genaiInputs         `json:"inputs"`
	Outputs           genaiOutputs        `json:"outputs"`
	NumAttentionHeads int                 `json:"num_attention_heads"`
	NumHiddenLayers   int                 `json:"num_hidden_layers"`
	NumKeyValueHeads  int                 `json:"num_key_value_heads"`
}

type genaiSessionOptions struct {
	LogID           string `json:"log_id"`
	ProviderOptions []any  `json:"provider_options"`
}

type genaiInputs struct {
	InputIDs       string `json:"input_ids"`
	AttentionMask  string `json:"attention_mask"`
	PositionIDs    string `json:"position_ids"`
	PastKeyNames   string `json:"past_key_names"`
	PastValueNames string `json:"past_value_names"`
}

type genaiOutputs struct {
	Logits            string `json:"logits"`
	PresentKeyNames   string `json:"present_key_names"`
	PresentValueNames string `json:"present_value_names"`
}

// genaiSearch is greedy decoding up to the context length.
type genaiSearch struct {
	DiversityPenalty       float64 `json:"diversity_penalty"`
	DoSample               bool    `json:"do_sample"`
	EarlyStopping          bool    `json:"early_stopping"`
	LengthPenalty          float64 `json:"length_penalty"`
	MaxLength              int     `json:"max_length"`
	MinLength              int     `json:"min_length"`
	NoRepeatNgramSize      int     `json:"no_repeat_ngram_size"`
	NumBeams               int     `json:"num_beams"`
	NumReturnSequences     int     `json:"num_return_sequences"`
	PastPresentShareBuffer bool    `json:"past_present_share_buffer"`
	RepetitionPenalty      float64 `json:"repetition_penalty"`
	Temperature            float64 `json:"temperature"`
	TopK                   int     `json:"top_k"`
	TopP                   float64 `json:"top_p"`
}

// genaiConfigJSON renders genai_config.json for a model file named
// filename (relative to the config's directory).
func genaiConfigJSON(cfg Config, filename string) ([]byte, error) {
	ctx := cfg.MaxPositions
	if ctx <= 0 {
		ctx = genaiDefaultContext
	}
	c := genaiConfig{
		Model: genaiModel{
			BOSTokenID:    tokenID(cfg.BOS),
			ContextLength: ctx,
			Decoder: genaiDecoder{
				SessionOptions: genaiSessionOptions{LogID: "onnxruntime-genai", ProviderOptions: []any{}},
				Filename:       filename,
				HeadSize:       cfg.HeadDim,
				HiddenSize:     cfg.Hidden,
				Inputs: genaiInputs{
					InputIDs: "input_ids", AttentionMask: "attention_mask", PositionIDs: "position_ids",
					PastKeyNames: pastKeyTemplate, PastValueNames: pastValueTemplate,
				},
				Outputs: genaiOutputs{
					Logits: "logits", PresentKeyNames: presentKeyTemplate, PresentValueNames: presentValueTemplate,
				},
				NumAttentionHeads: cfg.Heads,
				NumHiddenLayers:   cfg.Layers,
				NumKeyValueHeads:  cfg.KVHeads,
			},
			EOSTokenID: tokenID(cfg.EOS),
			// Padding only ever sits under attention_mask 0; EOS is what
			// Hugging Face pads with when a model defines no pad token.
			PadTokenID: tokenID(cfg.EOS),
			Type:       modelType(cfg),
			VocabSize:  cfg.Vocab,
		},
		Search: genaiSearch{
			EarlyStopping: true, LengthPenalty: 1, MaxLength: ctx, NumBeams: 1, NumReturnSequences: 1,
			RepetitionPenalty: 1, Temperature: 1, TopK: 1, TopP: 1,
		},
	}
	b, err := json.MarshalIndent(c, "", "  ")
	return append(b, '\n'), err
}
