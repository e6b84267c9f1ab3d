package convert

import (
	"fmt"
	"io"
)

// Family is the graph family the builder emits.
type Family string

const (
	// FamilyLlama covers Llama, Mistral and Qwen2: RMSNorm, rotary
	// embeddings (rotate-half layout), SwiGLU MLP, grouped-query
	// attention, optional q/k/v biases (Qwen2).
	FamilyLlama Family = "llama"
	// FamilyGPT2 is GPT-2: learned positions, LayerNorm with bias, fused
	// qkv Conv1D, GELU (tanh) MLP.
	FamilyGPT2 Family = "gpt2"
)

// Config is the architecture of a checkpoint, in Hugging Face terms.
type Config struct {
	Family Family
	// HFArchitecture is the Hugging Face class name written to the
	// output's config.json (e.g. "LlamaForCausalLM").
	HFArchitecture string
	Layers         int
	Hidden         int
	Heads          int
	KVHeads        int
	HeadDim        int // Hidden/Heads unless the checkpoint says otherwise
	FFN            int // MLP intermediate size
	Vocab          int
	MaxPositions   int
	NormEps        float64
	RopeTheta      float64
	TiedEmbeddings bool // LM head reuses the token embedding
	QKVBias        bool // Qwen2
	BOS, EOS       int  // token ids; -1 when unknown
}

// Validate reports inconsistent dimensions with a message naming them.
func (c Config) Validate() error {
	switch {
	case c.Family != FamilyLlama && c.Family != FamilyGPT2:
		return fmt.Errorf("unsupported family %q", c.Family)
	case c.Layers <= 0 || c.Hidden <= 0 || c.Heads <= 0 || c.KVHeads <= 0 || c.FFN <= 0 || c.Vocab <= 0:
		return fmt.Errorf("non-positive dimension in %+v", c)
	case c.Heads%c.KVHeads != 0:
		return fmt.Errorf("%d attention heads are not a multiple of %d KV heads", c.Heads, c.KVHeads)
	case c.HeadDim <= 0:
		return fmt.Errorf("head dimension %d", c.HeadDim)
	case c.Family == FamilyLlama && c.HeadDim%2 != 0:
		return fmt.Errorf("odd head dimension %d cannot carry rotary embeddings", c.HeadDim)
	}
	return nil
}

// Tensor is one weight of a checkpoint, named and laid out as the Hugging
// Face model of its family stores it:
//
//   - Llama family: "model.embed_tokens.weight" [vocab, hidden],
//     "model.layers.N.self_attn.{q,k,v,o}_proj.weight" [out, in] (q/k in
//     HF's rotate-half order), "…{q,k,v}_proj.bias" (Qwen2),
//     "model.layers.N.{input,post_attention}_layernorm.weight",
//     "model.layers.N.mlp.{gate,up,down}_proj.weight" [out, in],
//     "model.norm.weight", "lm_head.weight" (absent when tied).
//   - GPT-2: "transformer.{wte,wpe}.weight", "transformer.h.N.ln_{1,2}.{weight,bias}",
//     "transformer.h.N.attn.c_attn.{weight,bias}" (Conv1D, [in, out]),
//     "transformer.h.N.attn.c_proj.*", "transformer.h.N.mlp.{c_fc,c_proj}.*",
//     "transformer.ln_f.{weight,bias}"; the head is tied to wte.
//
// Readers convert whatever their format stores (llama2.c and GGUF rotate
// interleaved pairs, so their q/k rows are permuted; Q8_0 is dequantized)
// so that the builder sees one layout.
type Tensor struct {
	Name  string
	Shape []int64
	// Read returns the tensor's values as float32 in row-major order.
	// It is called at most once per tensor while building, so at most
	// one tensor's data needs to be in memory at a time. (Build reads
	// tensors of this package's readers that a file holds as they are
	// without it, unless Read was replaced.)
	Read func() ([]float32, error)
	// stored is set by this package's readers when the values lie in a
	// file as they are (say, float32 safetensors): Build then copies,
	// maps or reads them into a reused buffer itself, as long as Read is
	// still the reader's (see storedOf).
	stored *storedTensor
}

// Checkpoint is a model read from some format.
type Checkpoint interface {
	Config() Config
	// Tensors lists the weights, with data read lazily.
	Tensors() []Tensor
	io.Closer
}
