package convert

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// weightLayout says how a checkpoint tensor is stored in the ONNX model.
type weightLayout int

const (
	// layoutKeep stores the tensor as the checkpoint holds it:
	// embeddings, norms, biases and GPT-2's Conv1D weights (already
	// [in, out]).
	layoutKeep weightLayout = iota
	// layoutTranspose stores an nn.Linear weight [out, in] transposed to
	// [in, out], so that x·W is a plain MatMul.
	layoutTranspose
)

// weightSpec is one tensor the builder expects from a checkpoint.
type weightSpec struct {
	name   string
	shape  []int64  // in the checkpoint (Hugging Face layout)
	dims   []string // what each dimension is, for error messages
	layout weightLayout
}

// storedShape is the shape of the ONNX initializer.
func (s weightSpec) storedShape() []int64 {
	if s.layout == layoutTranspose {
		return []int64{s.shape[1], s.shape[0]}
	}
	return slices.Clone(s.shape)
}

// dim is a named dimension of a Config, for error messages.
type dim struct {
	name string
	n    int64
}

// expectedWeights lists every tensor a checkpoint of cfg's family must
// have, in Hugging Face naming (see Tensor).
func expectedWeights(cfg Config) []weightSpec {
	var (
		hidden = dim{"hidden_size", int64(cfg.Hidden)}
		vocab  = dim{"vocab_size", int64(cfg.Vocab)}
		ffn    = dim{"intermediate_size", int64(cfg.FFN)}
		qDim   = dim{"heads·head_dim", int64(cfg.Heads * cfg.HeadDim)}
		kvDim  = dim{"kv_heads·head_dim", int64(cfg.KVHeads * cfg.HeadDim)}
		qkv    = dim{"3·hidden_size", int64(3 * cfg.Hidden)}
		maxPos = dim{"max_position_embeddings", int64(cfg.MaxPositions)}
	)
	var w []weightSpec
	add := func(name string, layout weightLayout, dims ...dim) {
		s := weightSpec{name: name, layout: layout}
		for _, d := range dims {
			s.shape = append(s.shape, d.n)
			s.dims = append(s.dims, d.name)
		}
		w = append(w, s)
	}
	switch cfg.Family {
	case FamilyGPT2:
		add("transformer.wte.weight", layoutKeep, vocab, hidden)
		add("transformer.wpe.weight", layoutKeep, maxPos, hidden)
		for l := 0; l < cfg.Layers; l++ {
			p := fmt.Sprintf("transformer.h.%d.", l)
			add(p+"ln_1.weight", layoutKeep, hidden)
			add(p+"ln_1.bias", layoutKeep, hidden)
			add(p+"attn.c_attn.weight", layoutKeep, hidden, qkv)
			add(p+"attn.c_attn.bias", layoutKeep, qkv)
			add(p+"attn.c_proj.weight", layoutKeep, hidden, hidden)
			add(p+"attn.c_proj.bias", layoutKeep, hidden)
			add(p+"ln_2.weight", layoutKeep, hidden)
			add(p+"ln_2.bias", layoutKeep, hidden)
			add(p+"mlp.c_fc.weight", layoutKeep, hidden, ffn)
			add(p+"mlp.c_fc.bias", layoutKeep, ffn)
			add(p+"mlp.c_proj.weight", layoutKeep, ffn, hidden)
			add(p+"mlp.c_proj.bias", layoutKeep, hidden)
		}
		add("transformer.ln_f.weight", layoutKeep, hidden)
		add("transformer.ln_f.bias", layoutKeep, hidden)
	default:
		add("model.embed_tokens.weight", layoutKeep, vocab, hidden)
		for l := 0; l < cfg.Layers; l++ {
			p := fmt.Sprintf("model.layers.%d.", l)
			add(p+"input_layernorm.weight", layoutKeep, hidden)
			add(p+"self_attn.q_proj.weight", layoutTranspose, qDim, hidden)
			add(p+"self_attn.k_proj.weight", layoutTranspose, kvDim, hidden)
			add(p+"self_attn.v_proj.weight", layoutTranspose, kvDim, hidden)
			if cfg.QKVBias {
				add(p+"self_attn.q_proj.bias", layoutKeep, qDim)
				add(p+"self_attn.k_proj.bias", layoutKeep, kvDim)
				add(p+"self_attn.v_proj.bias", layoutKeep, kvDim)
			}
			add(p+"self_attn.o_proj.weight", layoutTranspose, hidden, qDim)
			add(p+"post_attention_layernorm.weight", layoutKeep, hidden)
			add(p+"mlp.gate_proj.weight", layoutTranspose, ffn, hidden)
			add(p+"mlp.up_proj.weight", layoutTranspose, ffn, hidden)
			add(p+"mlp.down_proj.weight", layoutTranspose, hidden, ffn)
		}
		add("model.norm.weight", layoutKeep, hidden)
		if !cfg.TiedEmbeddings {
			add("lm_head.weight", layoutTranspose, vocab, hidden)
		}
	}
	return w
}

// checkBuildConfig adds to Config.Validate what the graphs need.
func checkBuildConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	switch cfg.Family {
	case FamilyGPT2:
		switch {
		case cfg.KVHeads != cfg.Heads:
			return fmt.Errorf("GPT-2 has no grouped-query attention: %d KV heads for %d heads", cfg.KVHeads, cfg.Heads)
		case cfg.Heads*cfg.HeadDim != cfg.Hidden:
			return fmt.Errorf("GPT-2 needs heads·head_dim = hidden_size: %d·%d ≠ %d", cfg.Heads, cfg.HeadDim, cfg.Hidden)
		case cfg.MaxPositions <= 0:
			return fmt.Errorf("GPT-2 needs max_position_embeddings (the size of wpe), got %d", cfg.MaxPositions)
		case !cfg.TiedEmbeddings:
			return fmt.Errorf("GPT-2's LM head is tied to wte; an untied GPT-2 is not supported")
		}
	default:
		if !(cfg.RopeTheta > 0) {
			return fmt.Errorf("rope_theta %v: must be positive", cfg.RopeTheta)
		}
	}
	if !(cfg.NormEps > 0) {
		return fmt.Errorf("norm epsilon %v: must be positive", cfg.NormEps)
	}
	return nil
}

// plannedWeight pairs a checkpoint tensor with what the builder expects
// of it.
type plannedWeight struct {
	spec   weightSpec
	tensor Tensor
}

// planWeights matches the checkpoint's tensors to the family's expected
// weights. Every expected tensor must be present exactly once with the
// expected shape, and no other tensor may be present: dropping a weight
// silently would build a different model. The plan keeps the
// checkpoint's order, which is usually its file order, so the source is
// read sequentially.
func planWeights(cfg Config, tensors []Tensor) ([]plannedWeight, error) {
	specs := expectedWeights(cfg)
	byName := make(map[string]weightSpec, len(specs))
	for _, s := range specs {
		byName[s.name] = s
	}
	seen := make(map[string]bool, len(tensors))
	plan := make([]plannedWeight, 0, len(tensors))
	for _, t := range tensors {
		s, ok := byName[t.Name]
		if !ok {
			return nil, unknownTensorError(cfg, t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		if !slices.Equal(t.Shape, s.shape) {
			return nil, fmt.Errorf("tensor %q: shape %v, but the config wants %s", t.Name, t.Shape, describeShape(s))
		}
		if t.Read == nil {
			return nil, fmt.Errorf("tensor %q: no data (nil Read)", t.Name)
		}
		plan = append(plan, plannedWeight{spec: s, tensor: t})
	}
	var missing []string
	for _, s := range specs {
		if !seen[s.name] {
			missing = append(missing, strconv.Quote(s.name))
		}
	}
	if len(missing) > 0 {
		more := ""
		if len(missing) > 3 {
			more = fmt.Sprintf(" and %d more", len(missing)-3)
			missing = missing[:3]
		}
		return nil, fmt.Errorf("missing tensor %s%s (a %s-family checkpoint with %d layers needs %d tensors)",
			strings.Join(missing, ", "), more, cfg.Family, cfg.Layers, len(specs))
	}
	return plan, nil
}

func describeShape(s weightSpec) string {
	parts := make([]string, len(s.dims))
	for i, d := range s.dims {
		parts[i] = fmt.Sprintf("%s=%d", d, s.shape[i])
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

var layerIndexRe = regexp.MustCompile(`^(model\.layers|transformer\.h)\.(\d+)\.`)

// unknownTensorError explains a tensor name the family does not have,
// telling apart a layer beyond the config's count from a name that no
// layer has.
func unknownTensorError(cfg Config, name string) error {
	if m := layerIndexRe.FindStringSubmatch(name); m != nil {
		l, _ := strconv.Atoi(m[2])
		if l >= cfg.Layers {
			return fmt.Errorf("unknown tensor %q: layer %d, but the config has %d layers", name, l, cfg.Layers)
		}
	}
	switch {
	case cfg.Family == FamilyLlama && !cfg.QKVBias && strings.HasSuffix(name, "_proj.bias") && strings.Contains(name, ".self_attn."):
		return fmt.Errorf("unknown tensor %q: the config says the attention projections have no bias", name)
	case cfg.Family == FamilyLlama && cfg.TiedEmbeddings && name == "lm_head.weight":
		return fmt.Errorf("unknown tensor %q: the config ties the LM head to the embedding", name)
	}
	return fmt.Errorf("unknown tensor %q for a %s-family checkpoint", name, cfg.Family)
}
