package convert

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Hugging Face model directories: config.json and the weights in
// model.safetensors or shards listed by model.safetensors.index.json
// ({"weight_map": {tensor: file}}).

// hfArch is one supported Hugging Face architecture.
type hfArch struct {
	family  Family
	qkvBias bool
	// defaultTied is tie_word_embeddings when config.json omits it: the
	// model's config class default (transformers' PretrainedConfig says
	// true; LlamaConfig, MistralConfig and Qwen2Config say false).
	defaultTied bool
}

var hfArchs = map[string]hfArch{
	"LlamaForCausalLM":   {family: FamilyLlama},
	"MistralForCausalLM": {family: FamilyLlama},
	"Qwen2ForCausalLM":   {family: FamilyLlama, qkvBias: true},
	"GPT2LMHeadModel":    {family: FamilyGPT2, defaultTied: true},
}

// hfModelTypes maps config.json's model_type to the architecture, for
// configs without an "architectures" list.
var hfModelTypes = map[string]string{
	"llama":   "LlamaForCausalLM",
	"mistral": "MistralForCausalLM",
	"qwen2":   "Qwen2ForCausalLM",
	"gpt2":    "GPT2LMHeadModel",
}

func supportedHF() string {
	names := make([]string, 0, len(hfArchs))
	for k := range hfArchs {
		names = append(names, k)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// hfConfig is the part of config.json the readers use. Pointers tell an
// absent (or null) key from a zero.
type hfConfig struct {
	Architectures []string `json:"architectures"`
	ModelType     string   `json:"model_type"`

	// Llama, Mistral, Qwen2
	HiddenSize            *int            `json:"hidden_size"`
	IntermediateSize      *int            `json:"intermediate_size"`
	NumHiddenLayers       *int            `json:"num_hidden_layers"`
	NumAttentionHeads     *int            `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads"`
	HeadDim               *int            `json:"head_dim"`
	MaxPositionEmbeddings *int            `json:"max_position_embeddings"`
	RMSNormEps            *float64        `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta"`
	RopeScaling           json.RawMessage `json:"rope_scaling"`
	RopeParameters        json.RawMessage `json:"rope_parameters"` // transformers ≥ 4.56
	HiddenAct             *string         `json:"hidden_act"`
	AttentionBias         *bool           `json:"attention_bias"`
	MLPBias               *bool           `json:"mlp_bias"`
	SlidingWindow         *int            `json:"sliding_window"`
	UseSlidingWindow      *bool           `json:"use_sliding_window"` // Qwen2

	// GPT-2
	NEmbd                      *int     `json:"n_embd"`
	NLayer                     *int     `json:"n_layer"`
	NHead                      *int     `json:"n_head"`
	NInner                     *int     `json:"n_inner"`
	NPositions                 *int     `json:"n_positions"`
	LayerNormEpsilon           *float64 `json:"layer_norm_epsilon"`
	ActivationFunction         *string  `json:"activation_function"`
	ScaleAttnWeights           *bool    `json:"scale_attn_weights"`
	ScaleAttnByInverseLayerIdx *bool    `json:"scale_attn_by_inverse_layer_idx"`

	VocabSize         *int            `json:"vocab_size"`
	TieWordEmbeddings *bool           `json:"tie_word_embeddings"`
	BOSTokenID        json.RawMessage `json:"bos_token_id"` // int, list of ints or null
	EOSTokenID        json.RawMessage `json:"eos_token_id"`
}

// hfTokenID reads an id that may be an int, a list of ints (the first is
// taken) or null (-1).
func hfTokenID(raw json.RawMessage) (int, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return -1, nil
	}
	var id int
	if err := json.Unmarshal(raw, &id); err == nil {
		return id, nil
	}
	var ids []int
	if err := json.Unmarshal(raw, &ids); err != nil {
		return 0, fmt.Errorf("token id %s is not an integer or a list of integers", raw)
	}
	if len(ids) == 0 {
		return -1, nil
	}
	return ids[0], nil
}

// ropeSettings reads rope_theta from rope_parameters (newer
// transformers) and refuses rope scaling, which changes the rotary
// frequencies at every position and which Config cannot express.
func (h *hfConfig) ropeSettings() (theta float64, err error) {
	theta = 10000
	if h.RopeTheta != nil {
		theta = *h.RopeTheta
	}
	for _, raw := range []json.RawMessage{h.RopeScaling, h.RopeParameters} {
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var rp struct {
			RopeType  string   `json:"rope_type"`
			Type      string   `json:"type"`
			RopeTheta *float64 `json:"rope_theta"`
		}
		if err := json.Unmarshal(raw, &rp); err != nil {
			return 0, fmt.Errorf("rope settings %s: %v", raw, err)
		}
		if rp.RopeTheta != nil {
			theta = *rp.RopeTheta
		}
		kind := cmpOr(rp.RopeType, rp.Type)
		if kind != "" && kind != "default" {
			return 0, fmt.Errorf("rope scaling %q not supported", kind)
		}
	}
	return theta, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// parseHFConfig turns config.json into a Config.
func parseHFConfig(data []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(data, &h); err != nil {
		return Config{}, fmt.Errorf("%v", err)
	}
	var arch string
	switch {
	case len(h.Architectures) > 0:
		arch = h.Architectures[0]
	case hfModelTypes[h.ModelType] != "":
		arch = hfModelTypes[h.ModelType]
	default:
		return Config{}, fmt.Errorf("no architectures and no known model_type (%q; supported: %s)", h.ModelType, supportedHF())
	}
	a, ok := hfArchs[arch]
	if !ok {
		return Config{}, fmt.Errorf("unknown architecture %q (supported: %s)", arch, supportedHF())
	}
	cfg := Config{Family: a.family, HFArchitecture: arch, QKVBias: a.qkvBias, TiedEmbeddings: a.defaultTied}
	if h.TieWordEmbeddings != nil {
		cfg.TiedEmbeddings = *h.TieWordEmbeddings
	}
	var err error
	if cfg.BOS, err = hfTokenID(h.BOSTokenID); err != nil {
		return Config{}, fmt.Errorf("bos_token_id: %v", err)
	}
	if cfg.EOS, err = hfTokenID(h.EOSTokenID); err != nil {
		return Config{}, fmt.Errorf("eos_token_id: %v", err)
	}
	var missing []string
	need := func(key string, p *int) int {
		if p == nil {
			missing = append(missing, key)
			return 0
		}
		return *p
	}
	cfg.Vocab = need("vocab_size", h.VocabSize)
	switch a.family {
	case FamilyLlama:
		cfg.Hidden = need("hidden_size", h.HiddenSize)
		cfg.FFN = need("intermediate_size", h.IntermediateSize)
		cfg.Layers = need("num_hidden_layers", h.NumHiddenLayers)
		cfg.Heads = need("num_attention_heads", h.NumAttentionHeads)
		cfg.MaxPositions = need("max_position_embeddings", h.MaxPositionEmbeddings)
		cfg.KVHeads = cfg.Heads
		if h.NumKeyValueHeads != nil {
			cfg.KVHeads = *h.NumKeyValueHeads
		}
		if cfg.Heads > 0 {
			cfg.HeadDim = cfg.Hidden / cfg.Heads
		}
		if h.HeadDim != nil {
			cfg.HeadDim = *h.HeadDim
		}
		cfg.NormEps = 1e-6 // LlamaConfig's default
		if h.RMSNormEps != nil {
			cfg.NormEps = *h.RMSNormEps
		}
		if cfg.RopeTheta, err = h.ropeSettings(); err != nil {
			return Config{}, fmt.Errorf("%v", err)
		}
		if act := deref(h.HiddenAct, "silu"); act != "silu" {
			return Config{}, fmt.Errorf("hidden_act %q not supported (want silu)", act)
		}
		if deref(h.AttentionBias, false) {
			return Config{}, errors.New("attention_bias (biases on q/k/v/o) not supported")
		}
		if deref(h.MLPBias, false) {
			return Config{}, errors.New("mlp_bias not supported")
		}
		if arch == "Qwen2ForCausalLM" && deref(h.UseSlidingWindow, false) {
			return Config{}, errors.New("use_sliding_window (Qwen2 sliding-window attention) not supported")
		}
		// Mistral's sliding window only matters for sequences longer
		// than the window: limit the positions to it so that the
		// model is exact wherever it is used.
		if arch == "MistralForCausalLM" && h.SlidingWindow != nil && *h.SlidingWindow > 0 && *h.SlidingWindow < cfg.MaxPositions {
			cfg.MaxPositions = *h.SlidingWindow
		}
	case FamilyGPT2:
		cfg.Hidden = need("n_embd", h.NEmbd)
		cfg.Layers = need("n_layer", h.NLayer)
		cfg.Heads = need("n_head", h.NHead)
		cfg.MaxPositions = need("n_positions", h.NPositions)
		cfg.KVHeads = cfg.Heads
		if cfg.Heads > 0 {
			cfg.HeadDim = cfg.Hidden / cfg.Heads
		}
		cfg.FFN = 4 * cfg.Hidden
		if h.NInner != nil {
			cfg.FFN = *h.NInner
		}
		cfg.NormEps = deref(h.LayerNormEpsilon, 1e-5)
		if act := deref(h.ActivationFunction, "gelu_new"); act != "gelu_new" && act != "gelu_pytorch_tanh" {
			return Config{}, fmt.Errorf("activation_function %q not supported (want gelu_new)", act)
		}
		if !deref(h.ScaleAttnWeights, true) || deref(h.ScaleAttnByInverseLayerIdx, false) {
			return Config{}, errors.New("non-standard GPT-2 attention scaling not supported")
		}
		if !cfg.TiedEmbeddings {
			return Config{}, errors.New("GPT-2 with an untied LM head (tie_word_embeddings false) not supported")
		}
	}
	if len(missing) > 0 {
		return Config{}, fmt.Errorf("missing %s for %s", strings.Join(missing, ", "), arch)
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("%v", err)
	}
	if cfg.Family == FamilyGPT2 && cfg.Heads*cfg.HeadDim != cfg.Hidden {
		return Config{}, fmt.Errorf("n_embd %d is not a multiple of n_head %d", cfg.Hidden, cfg.Heads)
	}
	return cfg, nil
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// tensorSpec is one tensor a Checkpoint of some Config must have.
type tensorSpec struct {
	name  string
	shape []int64
}

// hfLayout lists the tensors of cfg, with HF names and shapes, in the
// order of the HF state dict.
func hfLayout(cfg Config) []tensorSpec {
	H, F, V := int64(cfg.Hidden), int64(cfg.FFN), int64(cfg.Vocab)
	var specs []tensorSpec
	add := func(shape []int64, name string) {
		specs = append(specs, tensorSpec{name, shape})
	}
	switch cfg.Family {
	case FamilyGPT2:
		add([]int64{V, H}, "transformer.wte.weight")
		add([]int64{int64(cfg.MaxPositions), H}, "transformer.wpe.weight")
		for i := range cfg.Layers {
			p := fmt.Sprintf("transformer.h.%d.", i)
			add([]int64{H}, p+"ln_1.weight")
			add([]int64{H}, p+"ln_1.bias")
			add([]int64{H, 3 * H}, p+"attn.c_attn.weight")
			add([]int64{3 * H}, p+"attn.c_attn.bias")
			add([]int64{H, H}, p+"attn.c_proj.weight")
			add([]int64{H}, p+"attn.c_proj.bias")
			add([]int64{H}, p+"ln_2.weight")
			add([]int64{H}, p+"ln_2.bias")
			add([]int64{H, F}, p+"mlp.c_fc.weight")
			add([]int64{F}, p+"mlp.c_fc.bias")
			add([]int64{F, H}, p+"mlp.c_proj.weight")
			add([]int64{H}, p+"mlp.c_proj.bias")
		}
		add([]int64{H}, "transformer.ln_f.weight")
		add([]int64{H}, "transformer.ln_f.bias")
	default:
		Q := int64(cfg.Heads * cfg.HeadDim)
		KV := int64(cfg.KVHeads * cfg.HeadDim)
		add([]int64{V, H}, "model.embed_tokens.weight")
		for i := range cfg.Layers {
			p := fmt.Sprintf("model.layers.%d.", i)
			add([]int64{H}, p+"input_layernorm.weight")
			add([]int64{Q, H}, p+"self_attn.q_proj.weight")
			if cfg.QKVBias {
				add([]int64{Q}, p+"self_attn.q_proj.bias")
			}
			add([]int64{KV, H}, p+"self_attn.k_proj.weight")
			if cfg.QKVBias {
				add([]int64{KV}, p+"self_attn.k_proj.bias")
			}
			add([]int64{KV, H}, p+"self_attn.v_proj.weight")
			if cfg.QKVBias {
				add([]int64{KV}, p+"self_attn.v_proj.bias")
			}
			add([]int64{H, Q}, p+"self_attn.o_proj.weight")
			add([]int64{H}, p+"post_attention_layernorm.weight")
			add([]int64{F, H}, p+"mlp.gate_proj.weight")
			add([]int64{F, H}, p+"mlp.up_proj.weight")
			add([]int64{H, F}, p+"mlp.down_proj.weight")
		}
		add([]int64{H}, "model.norm.weight")
		if !cfg.TiedEmbeddings {
			add([]int64{V, H}, "lm_head.weight")
		}
	}
	return specs
}

// HF is a Hugging Face model directory.
type HF struct {
	ckpt
	// Files lists the safetensors files read, relative to the directory.
	Files []string
}

const (
	hfConfigFile  = "config.json"
	hfSingleFile  = "model.safetensors"
	hfIndexFile   = "model.safetensors.index.json"
	maxConfigSize = 64 << 20
)

// OpenHFDir reads the Hugging Face model directory dir.
func OpenHFDir(dir string) (*HF, error) {
	return OpenHF(os.DirFS(dir), dir)
}

// OpenHF reads a Hugging Face model held in fsys (config.json and
// safetensors weights at its root); name names it in errors. Files must
// support ReadAt.
func OpenHF(fsys fs.FS, name string) (*HF, error) {
	c, err := newHF(fsys, name)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	return c, nil
}

func newHF(fsys fs.FS, dir string) (_ *HF, err error) {
	at := func(file string) string { return filepath.Join(dir, file) }
	data, err := readSmall(fsys, hfConfigFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: no %s: not a Hugging Face model directory", dir, hfConfigFile)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(hfConfigFile), unwrapPath(err))
	}
	cfg, err := parseHFConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", at(hfConfigFile), err)
	}

	// Which file holds which tensor.
	var files []string
	where := map[string]string{} // stored tensor name → file
	if idx, err := readSmall(fsys, hfIndexFile); err == nil {
		var ix struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(idx, &ix); err != nil || ix.WeightMap == nil {
			return nil, fmt.Errorf("%s: no weight_map (%v)", at(hfIndexFile), err)
		}
		for t, f := range ix.WeightMap {
			if !fs.ValidPath(f) || path.Dir(f) != "." {
				return nil, fmt.Errorf("%s: tensor %s in file %q outside the directory", at(hfIndexFile), t, f)
			}
			where[t] = f
			if !slices.Contains(files, f) {
				files = append(files, f)
			}
		}
		slices.Sort(files)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", at(hfIndexFile), unwrapPath(err))
	} else if _, err := fs.Stat(fsys, hfSingleFile); err == nil {
		files = []string{hfSingleFile}
	} else {
		return nil, fmt.Errorf("%s: no %s or %s (only safetensors weights are read)", dir, hfSingleFile, hfIndexFile)
	}

	c := &HF{Files: files}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	srcs := map[string]tensorSource{}
	origin := map[string]string{} // HF name → "stored name in file"
	for _, file := range files {
		st, closer, err := openSafetensors(fsys, file)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", at(file), unwrapPath(err))
		}
		c.closers = append(c.closers, closer)
		for stored := range where {
			if where[stored] == file && st.tensors[stored].DType == "" {
				return nil, fmt.Errorf("%s: missing tensor %s (listed in %s)", at(file), stored, hfIndexFile)
			}
		}
		for stored, t := range st.tensors {
			if len(where) > 0 && where[stored] != file {
				continue // not this shard's copy per the index
			}
			name, skip := hfTensorName(cfg, stored)
			if skip {
				continue
			}
			if _, dup := srcs[name]; dup {
				return nil, fmt.Errorf("%s: tensor %s stored twice (also as %s)", at(file), stored, origin[name])
			}
			s, err := st.tensor(at(file), stored)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", at(file), err)
			}
			srcs[name] = storedSource(t.Shape, s)
			origin[name] = stored + " in " + file
		}
	}
	ts, err := assemble(cfg, srcs, func(name string) string {
		if o, ok := origin[name]; ok {
			return o
		}
		return name
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	c.cfg, c.tensors = cfg, ts
	return c, nil
}

// hfTensorName maps a stored tensor name to the canonical HF name, or
// says to skip it: buffers that are not weights (GPT-2's attention
// masks, old checkpoints' rotary inv_freq) and a tied LM head.
func hfTensorName(cfg Config, stored string) (name string, skip bool) {
	switch {
	case strings.HasSuffix(stored, ".rotary_emb.inv_freq"):
		return "", true
	case stored == "lm_head.weight" && cfg.TiedEmbeddings:
		return "", true
	}
	if cfg.Family == FamilyGPT2 {
		if strings.HasSuffix(stored, ".attn.bias") || strings.HasSuffix(stored, ".attn.masked_bias") {
			return "", true
		}
		// GPT2Model checkpoints (and some GPT2LMHeadModel ones) omit
		// the "transformer." prefix.
		if !strings.HasPrefix(stored, "transformer.") && stored != "lm_head.weight" {
			return "transformer." + stored, false
		}
	}
	return stored, false
}

// readSmall reads a small file (a config or an index) whole.
func readSmall(fsys fs.FS, name string) ([]byte, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("larger than %d bytes", maxConfigSize)
	}
	return bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")), nil
}

// unwrapPath drops the *fs.PathError wrapper, whose path the caller
// already names.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
