package convert

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

// writeHFDir writes config.json and the entries as model.safetensors
// (shards 0) or as that many shards with model.safetensors.index.json.
func writeHFDir(t *testing.T, dir string, config map[string]any, entries []stEntry, shards int) {
	t.Helper()
	cj, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		t.Fatal(err)
	}
	if shards == 0 {
		writeSafetensors(t, filepath.Join(dir, "model.safetensors"), entries)
		return
	}
	weightMap := map[string]string{}
	per := (len(entries) + shards - 1) / shards
	for s := range shards {
		name := fmt.Sprintf("model-%05d-of-%05d.safetensors", s+1, shards)
		part := entries[min(s*per, len(entries)):min((s+1)*per, len(entries))]
		for _, e := range part {
			weightMap[e.name] = name
		}
		writeSafetensors(t, filepath.Join(dir, name), part)
	}
	idx, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644); err != nil {
		t.Fatal(err)
	}
}

func storiesHFConfig() map[string]any {
	return map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
		"num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512,
		"max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2,
		"hidden_act": "silu", "torch_dtype": "float32", "rope_scaling": nil,
	}
}

func TestHFLlamaFromStories260K(t *testing.T) {
	bin, err := OpenLlama2C(sharedModel(t, "stories260K", "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()
	ref := readAll(t, bin)
	sh := shapes(bin)
	names := slices.Sorted(maps.Keys(ref))

	for _, c := range []struct {
		dtype  string
		shards int
		round  func(float32) float32
	}{
		{"F32", 0, func(x float32) float32 { return x }},
		{"F32", 3, func(x float32) float32 { return x }},
		{"F16", 0, roundF16},
		{"BF16", 2, roundBF16},
	} {
		t.Run(fmt.Sprintf("%s_shards%d", c.dtype, c.shards), func(t *testing.T) {
			var entries []stEntry
			for _, n := range names {
				entries = append(entries, stEntry{name: n, dtype: c.dtype, shape: sh[n], data: ref[n]})
			}
			// Old checkpoints saved the rotary inverse frequencies; a
			// tied head may be saved too. Both are skipped.
			entries = append(entries,
				stEntry{name: "model.layers.0.self_attn.rotary_emb.inv_freq", dtype: "F32", shape: []int64{4}, data: make([]float32, 4)},
				stEntry{name: "lm_head.weight", dtype: c.dtype, shape: sh["model.embed_tokens.weight"], data: ref["model.embed_tokens.weight"]})
			dir := t.TempDir()
			writeHFDir(t, dir, storiesHFConfig(), entries, c.shards)
			ck, err := Open(dir, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			hf := ck.(*HF)
			if c.shards > 0 && len(hf.Files) != c.shards || c.shards == 0 && !slices.Equal(hf.Files, []string{"model.safetensors"}) {
				t.Errorf("files %v", hf.Files)
			}
			if cfg := ck.Config(); cfg != stories260KConfig {
				t.Errorf("config\n got %+v\nwant %+v", cfg, stories260KConfig)
			}
			got := readAll(t, ck)
			if len(got) != len(ref) {
				t.Errorf("%d tensors, want %d", len(got), len(ref))
			}
			rounded := 0
			for _, n := range names {
				want := make([]float32, len(ref[n]))
				for i, x := range ref[n] {
					want[i] = c.round(x)
					if want[i] != x {
						rounded++
					}
				}
				if !slices.Equal(got[n], want) {
					t.Errorf("%s: max |diff| %g from the expected %s values", n, maxAbsDiff(got[n], want), c.dtype)
				}
			}
			if c.dtype != "F32" && rounded == 0 {
				t.Errorf("no value changed by %s rounding: the test checks nothing", c.dtype)
			}
		})
	}
}

func TestHFFromFS(t *testing.T) {
	// Any fs.FS whose files support ReadAt: an in-memory one here.
	cj, _ := json.Marshal(map[string]any{
		"architectures": []string{"Qwen2ForCausalLM"}, "hidden_size": 8, "intermediate_size": 16,
		"num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10,
		"max_position_embeddings": 32, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
		"tie_word_embeddings": true, "bos_token_id": nil, "eos_token_id": []int{7, 9},
		"sliding_window": 32, "use_sliding_window": false,
	})
	want := Config{
		Family: FamilyLlama, HFArchitecture: "Qwen2ForCausalLM", Layers: 1, Hidden: 8, Heads: 2, KVHeads: 1,
		HeadDim: 4, FFN: 16, Vocab: 10, MaxPositions: 32, NormEps: 1e-6, RopeTheta: 1e6,
		TiedEmbeddings: true, QKVBias: true, BOS: -1, EOS: 7,
	}
	var entries []stEntry
	vals := map[string][]float32{}
	for i, s := range hfLayout(want) {
		d := make([]float32, elemCount(s.shape))
		for j := range d {
			d[j] = float32(i*1000 + j)
		}
		vals[s.name] = d
		entries = append(entries, stEntry{name: s.name, dtype: "F32", shape: s.shape, data: d})
	}
	if _, ok := vals["model.layers.0.self_attn.k_proj.bias"]; !ok {
		t.Fatal("Qwen2 layout has no k_proj bias")
	}
	fsys := fstest.MapFS{
		"config.json":       {Data: cj},
		"model.safetensors": {Data: encodeSafetensors(t, entries)},
	}
	ck, err := OpenHF(fsys, "mem")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if got := ck.Config(); got != want {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	got := readAll(t, ck)
	for n, v := range vals {
		if !slices.Equal(got[n], v) {
			t.Errorf("%s differs", n)
		}
	}
	if len(got) != len(vals) {
		t.Errorf("%d tensors, want %d", len(got), len(vals))
	}

	// Without the biases the directory is not a Qwen2 model.
	fsys["model.safetensors"] = &fstest.MapFile{Data: encodeSafetensors(t, slices.DeleteFunc(entries, func(e stEntry) bool {
		return strings.HasSuffix(e.name, ".bias")
	}))}
	if _, err := OpenHF(fsys, "mem"); err == nil || err.Error() != "convert: mem: missing tensor model.layers.0.self_attn.q_proj.bias" {
		t.Errorf("no biases: err = %v", err)
	}
}

// gpt2FixtureWeights returns the initializers of testdata/models/gpt2_kv.onnx,
// which keep GPT2LMHeadModel's names and Conv1D [in, out] layout.
func gpt2FixtureWeights(t *testing.T) map[string]*onnxTensor {
	t.Helper()
	m, err := graph.Load(testenv.Testdata(t, "models", "gpt2_kv.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*onnxTensor{}
	for _, init := range m.Proto.GetGraph().GetInitializer() {
		if !strings.HasPrefix(init.GetName(), "transformer.") {
			continue
		}
		b, err := m.TensorBytes(init)
		if err != nil {
			t.Fatal(err)
		}
		out[init.GetName()] = &onnxTensor{shape: init.GetDims(), data: float32sLE(b)}
	}
	return out
}

type onnxTensor struct {
	shape []int64
	data  []float32
}

func TestHFGPT2FromTorchFixture(t *testing.T) {
	ref := gpt2FixtureWeights(t)
	if len(ref) != 2+6*12+2 {
		t.Fatalf("fixture has %d transformer.* initializers", len(ref))
	}
	config := map[string]any{
		"architectures": []string{"GPT2LMHeadModel"}, "model_type": "gpt2",
		"n_embd": 64, "n_layer": 6, "n_head": 4, "n_inner": nil, "n_positions": 256, "n_ctx": 256,
		"vocab_size": 512, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new",
		"bos_token_id": 50256, "eos_token_id": 50256,
	}
	want := Config{
		Family: FamilyGPT2, HFArchitecture: "GPT2LMHeadModel", Layers: 6, Hidden: 64, Heads: 4, KVHeads: 4,
		HeadDim: 16, FFN: 256, Vocab: 512, MaxPositions: 256, NormEps: 1e-5, TiedEmbeddings: true, BOS: 50256, EOS: 50256,
	}
	for _, prefixed := range []bool{true, false} {
		t.Run(fmt.Sprint("prefixed=", prefixed), func(t *testing.T) {
			var entries []stEntry
			for _, n := range slices.Sorted(maps.Keys(ref)) {
				name := n
				if !prefixed {
					name = strings.TrimPrefix(n, "transformer.")
				}
				entries = append(entries, stEntry{name: name, dtype: "F32", shape: ref[n].shape, data: ref[n].data})
			}
			// Buffers HF saves with GPT-2 and a tied head: skipped.
			p := "transformer."
			if !prefixed {
				p = ""
			}
			entries = append(entries,
				stEntry{name: p + "h.0.attn.bias", dtype: "F32", shape: []int64{1, 1, 4, 4}, data: make([]float32, 16)},
				stEntry{name: p + "h.3.attn.masked_bias", dtype: "F32", shape: []int64{}, data: []float32{-1e4}},
				stEntry{name: "lm_head.weight", dtype: "F32", shape: ref["transformer.wte.weight"].shape, data: ref["transformer.wte.weight"].data})
			dir := t.TempDir()
			writeHFDir(t, dir, config, entries, 0)
			ck, err := Open(dir, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			if got := ck.Config(); got != want {
				t.Errorf("config\n got %+v\nwant %+v", got, want)
			}
			got := readAll(t, ck)
			gotShapes := shapes(ck)
			if len(got) != len(ref) {
				t.Errorf("%d tensors, want %d", len(got), len(ref))
			}
			for n, r := range ref {
				if !slices.Equal(got[n], r.data) || !slices.Equal(gotShapes[n], r.shape) {
					t.Errorf("%s: shape %v (want %v), max |diff| %g", n, gotShapes[n], r.shape, maxAbsDiff(got[n], r.data))
				}
			}
			if !slices.Equal(gotShapes["transformer.h.2.attn.c_attn.weight"], []int64{64, 192}) {
				t.Errorf("c_attn shape %v, want Conv1D [in, out]", gotShapes["transformer.h.2.attn.c_attn.weight"])
			}
		})
	}
}

func TestParseHFConfig(t *testing.T) {
	llama := func(extra map[string]any) map[string]any {
		c := map[string]any{
			"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 64, "intermediate_size": 128,
			"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 256,
		}
		maps.Copy(c, extra)
		return c
	}
	base := Config{
		Family: FamilyLlama, HFArchitecture: "LlamaForCausalLM", Layers: 2, Hidden: 64, Heads: 4, KVHeads: 4,
		HeadDim: 16, FFN: 128, Vocab: 100, MaxPositions: 256, NormEps: 1e-6, RopeTheta: 10000, BOS: -1, EOS: -1,
	}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	for _, c := range []struct {
		name    string
		config  map[string]any
		want    Config
		wantErr string
	}{
		{"defaults", llama(nil), base, ""},
		{"model_type only", map[string]any{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
			"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100, "max_position_embeddings": 256}, base, ""},
		{"head_dim", llama(map[string]any{"head_dim": 32, "num_key_value_heads": 2}),
			with(func(c *Config) { c.HeadDim, c.KVHeads = 32, 2 }), ""},
		{"null head_dim", llama(map[string]any{"head_dim": nil}), base, ""},
		{"rope and eps", llama(map[string]any{"rope_theta": 500000.0, "rms_norm_eps": 1e-5, "rope_scaling": nil}),
			with(func(c *Config) { c.RopeTheta, c.NormEps = 500000, 1e-5 }), ""},
		{"rope_parameters", llama(map[string]any{"rope_parameters": map[string]any{"rope_type": "default", "rope_theta": 1e6}}),
			with(func(c *Config) { c.RopeTheta = 1e6 }), ""},
		{"token id lists", llama(map[string]any{"bos_token_id": 128000, "eos_token_id": []int{128001, 128009}}),
			with(func(c *Config) { c.BOS, c.EOS = 128000, 128001 }), ""},
		{"tied", llama(map[string]any{"tie_word_embeddings": true}), with(func(c *Config) { c.TiedEmbeddings = true }), ""},
		{"mistral window", llama(map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": 128}),
			with(func(c *Config) { c.HFArchitecture, c.MaxPositions = "MistralForCausalLM", 128 }), ""},
		{"mistral no window", llama(map[string]any{"architectures": []string{"MistralForCausalLM"}, "sliding_window": nil}),
			with(func(c *Config) { c.HFArchitecture = "MistralForCausalLM" }), ""},
		{"gpt2 defaults", map[string]any{"architectures": []string{"GPT2LMHeadModel"}, "n_embd": 48, "n_layer": 3,
			"n_head": 3, "n_positions": 64, "vocab_size": 90},
			Config{Family: FamilyGPT2, HFArchitecture: "GPT2LMHeadModel", Layers: 3, Hidden: 48, Heads: 3, KVHeads: 3,
				HeadDim: 16, FFN: 192, Vocab: 90, MaxPositions: 64, NormEps: 1e-5, TiedEmbeddings: true, BOS: -1, EOS: -1}, ""},
		{"gpt2 n_inner", map[string]any{"architectures": []string{"GPT2LMHeadModel"}, "n_embd": 48, "n_layer": 3,
			"n_head": 3, "n_positions": 64, "vocab_size": 90, "n_inner": 100, "layer_norm_epsilon": 1e-6},
			Config{Family: FamilyGPT2, HFArchitecture: "GPT2LMHeadModel", Layers: 3, Hidden: 48, Heads: 3, KVHeads: 3,
				HeadDim: 16, FFN: 100, Vocab: 90, MaxPositions: 64, NormEps: 1e-6, TiedEmbeddings: true, BOS: -1, EOS: -1}, ""},

		{"unknown architecture", llama(map[string]any{"architectures": []string{"BertForMaskedLM"}}), Config{},
			`unknown architecture "BertForMaskedLM" (supported: GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)`},
		{"no architecture", map[string]any{"model_type": "t5"}, Config{}, `no architectures and no known model_type ("t5"`},
		{"missing keys", map[string]any{"architectures": []string{"LlamaForCausalLM"}, "hidden_size": 64}, Config{},
			"missing vocab_size, intermediate_size, num_hidden_layers, num_attention_heads, max_position_embeddings for LlamaForCausalLM"},
		{"llama3 rope", llama(map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}), Config{},
			`rope scaling "llama3" not supported`},
		{"gqa mismatch", llama(map[string]any{"num_key_value_heads": 3}), Config{}, "4 attention heads are not a multiple of 3 KV heads"},
		{"act", llama(map[string]any{"hidden_act": "gelu"}), Config{}, `hidden_act "gelu" not supported`},
		{"attention bias", llama(map[string]any{"attention_bias": true}), Config{}, "attention_bias"},
		{"qwen2 window", llama(map[string]any{"architectures": []string{"Qwen2ForCausalLM"}, "use_sliding_window": true}), Config{}, "use_sliding_window"},
		{"gpt2 untied", map[string]any{"architectures": []string{"GPT2LMHeadModel"}, "n_embd": 48, "n_layer": 3,
			"n_head": 3, "n_positions": 64, "vocab_size": 90, "tie_word_embeddings": false}, Config{}, "untied"},
		{"bad token id", llama(map[string]any{"eos_token_id": "x"}), Config{}, "eos_token_id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			data, _ := json.Marshal(c.config)
			got, err := parseHFConfig(data)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Errorf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("\n got %+v\nwant %+v", got, c.want)
			}
		})
	}
}
