package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

var updateBuildGolden = flag.Bool("update-build", false, "rewrite convert/testdata/build.golden.json from Build's output")

// buildGoldenCase is one model whose built files are pinned by hash.
type buildGoldenCase struct {
	name string
	ck   func(t *testing.T, dir string) Checkpoint
	opts BuildOptions
}

// goldenLlama has every Llama-family tensor kind (GQA, q/k/v biases, an
// untied head) and no dimension a multiple of the transpose tile.
var goldenLlama = Config{Family: FamilyLlama, Layers: 2, Hidden: 40, Heads: 4, KVHeads: 2, FFN: 70, Vocab: 50,
	QKVBias: true, BOS: 1, EOS: 2}

// goldenWide has matrices of several MiB, transposed in several bands of
// the encoder's staging buffer.
var goldenWide = Config{Family: FamilyLlama, Layers: 1, Hidden: 768, Heads: 12, KVHeads: 4, FFN: 3001, Vocab: 1000,
	TiedEmbeddings: true, BOS: 1, EOS: 2}

func synthCase(cfg Config) func(*testing.T, string) Checkpoint {
	return func(*testing.T, string) Checkpoint { return Synthetic(cfg, 7) }
}

// hfCase writes cfg's synthetic weights as a Hugging Face directory with
// tensors of the given safetensors dtype, and a few special values (±0,
// ±Inf, NaN with a payload, subnormals) in the first transposed matrix,
// then opens it.
func hfCase(cfg Config, dtype string) func(*testing.T, string) Checkpoint {
	return func(t *testing.T, dir string) Checkpoint {
		syn := Synthetic(cfg, 7)
		var entries []stEntry
		special := false
		for _, ts := range syn.Tensors() {
			v, err := ts.Read()
			if err != nil {
				t.Fatal(err)
			}
			if !special && len(ts.Shape) == 2 && ts.Name != "model.embed_tokens.weight" {
				special = true
				copy(v, []float32{float32(math.Copysign(0, -1)), 0, float32(math.Inf(1)), float32(math.Inf(-1)),
					math.Float32frombits(0x7fc01234), math.Float32frombits(0xffa00001), math.Float32frombits(1),
					-math.Float32frombits(0x7fffff), 1e-8, 65520, -70000, 3.4e38})
			}
			entries = append(entries, stEntry{name: ts.Name, dtype: dtype, shape: ts.Shape, data: v})
		}
		c := syn.Config()
		arch, typ := "LlamaForCausalLM", "llama"
		if c.QKVBias {
			arch, typ = "Qwen2ForCausalLM", "qwen2"
		}
		writeHFDir(t, dir, map[string]any{
			"architectures": []string{arch}, "model_type": typ,
			"hidden_size": c.Hidden, "intermediate_size": c.FFN, "num_hidden_layers": c.Layers,
			"num_attention_heads": c.Heads, "num_key_value_heads": c.KVHeads, "vocab_size": c.Vocab,
			"max_position_embeddings": c.MaxPositions, "rms_norm_eps": c.NormEps, "rope_theta": c.RopeTheta,
			"tie_word_embeddings": c.TiedEmbeddings, "bos_token_id": c.BOS, "eos_token_id": c.EOS,
		}, entries, 0)
		ck, err := Open(dir, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
}

func sharedCase(file string) func(*testing.T, string) Checkpoint {
	return func(t *testing.T, _ string) Checkpoint {
		ck, err := Open(sharedModel(t, "stories260K", file), OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
}

func buildGoldenCases() []buildGoldenCase {
	ext := func(dt DType) BuildOptions { return BuildOptions{DType: dt, ExternalAbove: 1} }
	gpt2 := Config{Family: FamilyGPT2, Layers: 2, Hidden: 48, Heads: 4, FFN: 100, Vocab: 60, MaxPositions: 33}
	return []buildGoldenCase{
		{"llama_inline_f32", synthCase(goldenLlama), BuildOptions{}},
		{"llama_inline_f16", synthCase(goldenLlama), BuildOptions{DType: Float16}},
		{"llama_external_f32", synthCase(goldenLlama), ext(Float32)},
		{"llama_external_f16", synthCase(goldenLlama), ext(Float16)},
		{"gpt2_external_f32", synthCase(gpt2), ext(Float32)},
		{"wide_inline_f32", synthCase(goldenWide), BuildOptions{}},
		{"wide_external_f32", synthCase(goldenWide), ext(Float32)},
		{"wide_external_f16", synthCase(goldenWide), ext(Float16)},
		{"hf_F32_external_f32", hfCase(goldenWide, "F32"), ext(Float32)},
		{"hf_F32_external_f16", hfCase(goldenWide, "F32"), ext(Float16)},
		{"hf_F32_inline_f32", hfCase(goldenLlama, "F32"), BuildOptions{}},
		{"hf_F16_external_f32", hfCase(goldenWide, "F16"), ext(Float32)},
		{"hf_BF16_external_f32", hfCase(goldenWide, "BF16"), ext(Float32)},
		{"hf_BF16_inline_f16", hfCase(goldenLlama, "BF16"), BuildOptions{DType: Float16}},
		{"hf_F16_inline_f32", hfCase(goldenLlama, "F16"), BuildOptions{}},
		{"stories260K_bin_f32", sharedCase("stories260K.bin"), BuildOptions{}},
		{"stories260K_bin_external_f16", sharedCase("stories260K.bin"), ext(Float16)},
		{"stories260K_gguf_f32", sharedCase("stories260K.gguf"), BuildOptions{}},
		{"stories260K_gguf_external_f32", sharedCase("stories260K.gguf"), ext(Float32)},
		{"stories260K_gguf_external_f16", sharedCase("stories260K.gguf"), ext(Float16)},
	}
}

// TestBuildGolden pins the bytes of every file Build writes for a set of
// models covering the formats, dtypes, layouts and both writers, so that
// work on the converter's speed cannot change its output.
func TestBuildGolden(t *testing.T) {
	got := map[string]map[string]string{}
	for _, c := range buildGoldenCases() {
		t.Run(c.name, func(t *testing.T) {
			src, out := filepath.Join(t.TempDir(), "src"), t.TempDir()
			if err := os.Mkdir(src, 0o755); err != nil {
				t.Fatal(err)
			}
			ck := c.ck(t, src)
			defer ck.Close()
			if err := Build(ck, filepath.Join(out, "model.onnx"), c.opts); err != nil {
				t.Fatal(err)
			}
			got[c.name] = hashDir(t, out)
		})
	}
	path := filepath.Join("testdata", "build.golden.json")
	var want map[string]map[string]string
	if *updateBuildGolden {
		if testing.Short() || len(got) != len(buildGoldenCases()) {
			t.Fatal("-update-build needs every case to run")
		}
		b, _ := json.MarshalIndent(got, "", "  ")
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./convert -run BuildGolden -update-build)", err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if w, g := fmt.Sprint(want[name]), fmt.Sprint(got[name]); w != g {
			t.Errorf("%s: built files differ from %s:\n got %s\nwant %s", name, path, g, w)
		}
	}
}

// hashDir returns the SHA-256 of every file in dir by name.
func hashDir(t *testing.T, dir string) map[string]string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := map[string]string{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		h[e.Name()] = hex.EncodeToString(s[:])
	}
	return h
}
