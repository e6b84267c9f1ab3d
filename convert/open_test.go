package convert

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// copyFile copies src to dir/name, keeping at most n bytes (n < 0: all).
func copyFile(t *testing.T, src, dir, name string, n int) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if n >= 0 {
		data = data[:n]
	}
	dst := filepath.Join(dir, name)
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// checkError checks the errors' contract: one line, naming the file,
// saying the problem.
func checkError(t *testing.T, err error, path, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %q", want)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error spans lines: %q", msg)
	}
	if !strings.HasPrefix(msg, "convert: ") || !strings.Contains(msg, path) || !strings.Contains(msg, want) {
		t.Errorf("error %q\nwant the prefix \"convert: \", the path %s and %q", msg, path, want)
	}
}

func TestOpenDetectsFormat(t *testing.T) {
	dir := t.TempDir()
	bin := sharedModel(t, "stories260K", "stories260K.bin")
	gguf := sharedModel(t, "stories260K", "stories260K.gguf")
	lw := parseLegacy(t, bin)
	v1 := filepath.Join(dir, "model.v1") // names say nothing: content decides
	writeV1V2(t, v1, lw, 1, 0)
	v2 := filepath.Join(dir, "model.v2")
	writeV1V2(t, v2, lw, 2, 32)
	hfDir := t.TempDir()
	writeHFDir(t, hfDir, map[string]any{
		"architectures": []string{"GPT2LMHeadModel"}, "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 4, "vocab_size": 3,
	}, layoutEntries(t, Config{Family: FamilyGPT2, Layers: 1, Hidden: 8, Heads: 2, KVHeads: 2, HeadDim: 4, FFN: 32, Vocab: 3, MaxPositions: 4}), 0)
	ggufCopy := copyFile(t, gguf, dir, "weights.bin", -1)
	for _, c := range []struct {
		path string
		want string
	}{
		{bin, "*convert.Llama2C v0"},
		{v1, "*convert.Llama2C v1"},
		{v2, "*convert.Llama2C v2"},
		{gguf, "*convert.GGUF"},
		{ggufCopy, "*convert.GGUF"},
		{hfDir, "*convert.HF"},
	} {
		ck, err := Open(c.path, OpenOptions{})
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		got := ""
		switch ck := ck.(type) {
		case *Llama2C:
			got = "*convert.Llama2C v" + string(rune('0'+ck.Version))
		case *GGUF:
			got = "*convert.GGUF"
		case *HF:
			got = "*convert.HF"
		}
		if got != c.want {
			t.Errorf("%s: opened as %s, want %s", c.path, got, c.want)
		}
		if err := ck.Close(); err != nil {
			t.Errorf("%s: Close: %v", c.path, err)
		}
	}
}

// layoutEntries makes safetensors entries with every tensor of cfg.
func layoutEntries(t *testing.T, cfg Config) []stEntry {
	t.Helper()
	var out []stEntry
	for _, s := range hfLayout(cfg) {
		out = append(out, stEntry{name: s.name, dtype: "F32", shape: s.shape, data: make([]float32, elemCount(s.shape))})
	}
	return out
}

func TestOpenBadInput(t *testing.T) {
	// Cases built from the shared models skip (locally) without them;
	// the others always run.
	bin := func(t *testing.T) string { return sharedModel(t, "stories260K", "stories260K.bin") }
	gguf := func(t *testing.T) string { return sharedModel(t, "stories260K", "stories260K.gguf") }
	tiny := newTinyGGUF(2)
	storiesCfg := stories260KConfig
	storiesEntries := layoutEntries(t, storiesCfg)

	type setup func(t *testing.T, dir string) string // returns the path to open
	hfWith := func(config map[string]any, edit func([]stEntry) []stEntry) setup {
		return func(t *testing.T, dir string) string {
			writeHFDir(t, dir, config, edit(slices.Clone(storiesEntries)), 0)
			return dir
		}
	}
	ggufWith := func(edit func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor)) setup {
		return func(t *testing.T, dir string) string {
			kvs, ts := edit(slices.Clone(tiny.kvs), slices.Clone(tiny.tensors))
			p := filepath.Join(dir, "bad.gguf")
			if err := os.WriteFile(p, encodeGGUF(kvs, ts, 32), 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	file := func(name string, data []byte) setup {
		return func(t *testing.T, dir string) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
	}
	same := func(e []stEntry) []stEntry { return e }
	withConfig := func(k string, v any) map[string]any {
		c := storiesHFConfig()
		c[k] = v
		return c
	}

	for _, c := range []struct {
		name  string
		setup setup
		want  string
	}{
		{"hf unknown architecture", hfWith(withConfig("architectures", []string{"BertForMaskedLM"}), same),
			`config.json: unknown architecture "BertForMaskedLM" (supported: GPT2LMHeadModel, LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)`},
		{"gguf unknown architecture", ggufWith(func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor) {
			kvs[0] = ggufKV{"general.architecture", "falcon"}
			return kvs, ts
		}), `unknown architecture "falcon" (supported GGUF architectures: llama, qwen2)`},
		{"hf missing tensor", hfWith(storiesHFConfig(), func(e []stEntry) []stEntry {
			return slices.DeleteFunc(e, func(e stEntry) bool { return e.name == "model.layers.3.mlp.up_proj.weight" })
		}), ": missing tensor model.layers.3.mlp.up_proj.weight"},
		{"hf untied without head", hfWith(withConfig("tie_word_embeddings", false), same), "missing tensor lm_head.weight"},
		{"gguf missing tensor", ggufWith(func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor) {
			return kvs, slices.DeleteFunc(ts, func(t ggufTensor) bool { return t.name == "blk.1.ffn_up.weight" })
		}), ": missing tensor blk.1.ffn_up.weight"},
		{"hf shape mismatch", hfWith(storiesHFConfig(), func(e []stEntry) []stEntry {
			for i := range e {
				if e[i].name == "model.layers.0.self_attn.q_proj.weight" {
					e[i].shape = []int64{32, 128}
				}
			}
			return e
		}), "tensor model.layers.0.self_attn.q_proj.weight in model.safetensors: shape [32 128], want [64 64]"},
		{"gguf shape mismatch", ggufWith(func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor) {
			for i := range ts {
				if ts[i].name == "blk.0.ffn_gate.weight" {
					ts[i].dims = []uint64{64, 32}
				}
			}
			return kvs, ts
		}), "tensor blk.0.ffn_gate.weight: shape [32 64], want [64 32]"},
		{"hf unexpected tensor", hfWith(storiesHFConfig(), func(e []stEntry) []stEntry {
			return append(e, stEntry{name: "model.layers.0.self_attn.o_proj.bias", dtype: "F32", shape: []int64{64}, data: make([]float32, 64)})
		}), "unexpected tensor model.layers.0.self_attn.o_proj.bias in model.safetensors"},
		{"hf no weights", func(t *testing.T, dir string) string {
			cj, _ := json.Marshal(storiesHFConfig())
			os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644)
			os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("x"), 0o644)
			return dir
		}, "no model.safetensors or model.safetensors.index.json"},
		{"hf no config", func(t *testing.T, dir string) string { return dir }, "no config.json: not a Hugging Face model directory"},
		{"hf bad config", func(t *testing.T, dir string) string {
			os.WriteFile(filepath.Join(dir, "config.json"), []byte("{"), 0o644)
			return dir
		}, "config.json: unexpected end of JSON input"},
		{"hf shard missing tensor", func(t *testing.T, dir string) string {
			writeHFDir(t, dir, storiesHFConfig(), storiesEntries, 2)
			idx, _ := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
			idx = []byte(strings.Replace(string(idx), `"weight_map":{`, `"weight_map":{"model.extra.weight":"model-00001-of-00002.safetensors",`, 1))
			os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
			return dir
		}, "model-00001-of-00002.safetensors: missing tensor model.extra.weight (listed in model.safetensors.index.json)"},
		{"hf shard escapes", func(t *testing.T, dir string) string {
			writeHFDir(t, dir, storiesHFConfig(), storiesEntries, 2)
			idx, _ := json.Marshal(map[string]any{"weight_map": map[string]string{"model.norm.weight": "../x.safetensors"}})
			os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), idx, 0o644)
			return dir
		}, `outside the directory`},

		{"llama2c truncated", func(t *testing.T, dir string) string { return copyFile(t, bin(t), dir, "s.bin", 1_000_000) },
			"truncated llama2.c checkpoint: 1000000 bytes, header implies 1056540"},
		{"llama2c v1 truncated", func(t *testing.T, dir string) string {
			p := filepath.Join(dir, "v1.bin")
			writeV1V2(t, p, parseLegacy(t, bin(t)), 1, 0)
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-1], 0o644)
			return p
		}, "truncated llama2.c checkpoint"},
		{"llama2c v1 header only", file("h.bin", []byte{0x32, 0x34, 0x6b, 0x61, 1, 0, 0, 0}), "truncated file"},
		{"llama2c version 3", file("v3.bin", append([]byte{0x32, 0x34, 0x6b, 0x61, 3, 0, 0, 0}, make([]byte, 300)...)),
			"llama2.c checkpoint version 3 not supported"},
		{"llama2c trailing bytes", func(t *testing.T, dir string) string {
			p := copyFile(t, bin(t), dir, "s.bin", -1)
			f, _ := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			f.Write([]byte{0, 0, 0, 0})
			f.Close()
			return p
		}, "unrecognised checkpoint format"},
		{"gguf truncated data", func(t *testing.T, dir string) string { return copyFile(t, gguf(t), dir, "s.gguf", 1_100_000) },
			"truncated file: tensor blk.4.ffn_down.weight ends at byte 1141088 of 1100000"},
		{"gguf truncated header", func(t *testing.T, dir string) string { return copyFile(t, gguf(t), dir, "s.gguf", 5000) },
			`metadata "tokenizer.ggml.tokens": truncated file`},
		{"gguf unsupported type", ggufWith(func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor) {
			for i := range ts {
				if ts[i].name == "blk.0.attn_q.weight" {
					ts[i].typ = 12
				}
			}
			return kvs, ts
		}), "tensor blk.0.attn_q.weight: unsupported GGUF tensor type Q4_K (supported: F32, F16, BF16, Q8_0)"},
		{"gguf version 1", file("v1.gguf", []byte("GGUF\x01\x00\x00\x00")), "GGUF version 1 not supported"},
		{"gguf big-endian", file("be.gguf", []byte("GGUF\x00\x00\x00\x03")), "big-endian GGUF not supported"},
		{"gguf missing metadata", ggufWith(func(kvs []ggufKV, ts []ggufTensor) ([]ggufKV, []ggufTensor) {
			return slices.DeleteFunc(kvs, func(kv ggufKV) bool { return kv.key == "llama.feed_forward_length" }), ts
		}), "missing metadata llama.feed_forward_length"},
		{"safetensors truncated", func(t *testing.T, dir string) string {
			writeHFDir(t, dir, storiesHFConfig(), storiesEntries, 0)
			p := filepath.Join(dir, "model.safetensors")
			data, _ := os.ReadFile(p)
			os.WriteFile(p, data[:len(data)-10], 0o644)
			return p // Open reads the directory the file is in
		}, "model.safetensors: truncated file: tensor"},
		{"wrong magic", file("notes.txt", []byte("Once upon a time, there was a checkpoint that was not.\n")),
			`unrecognised checkpoint format (not a model directory, GGUF or llama2.c file; 55 bytes starting "Once upon")`},
		{"empty file", file("empty.bin", nil), "unrecognised checkpoint format"},
		{"no such file", func(t *testing.T, dir string) string { return filepath.Join(dir, "missing.gguf") }, "no such file or directory"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := c.setup(t, t.TempDir())
			ck, err := Open(path, OpenOptions{})
			if err == nil {
				ck.Close()
			}
			t.Log(err)
			checkError(t, err, path, c.want)
		})
	}

	_, err := Open(t.TempDir(), OpenOptions{Tokenizer: filepath.Join(t.TempDir(), "tok.bin")})
	checkError(t, err, "tok.bin", "no such file")
}

// TestReadErrors checks that Read reports a file that shrank after Open.
func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	bin := copyFile(t, sharedModel(t, "stories260K", "stories260K.bin"), dir, "s.bin", -1)
	gguf := copyFile(t, sharedModel(t, "stories260K", "stories260K.gguf"), dir, "s.gguf", -1)
	hfDir := filepath.Join(dir, "hf")
	os.Mkdir(hfDir, 0o755)
	writeHFDir(t, hfDir, storiesHFConfig(), layoutEntries(t, stories260KConfig), 0)
	for _, c := range []struct{ open, file string }{
		{bin, bin},
		{gguf, gguf},
		{hfDir, filepath.Join(hfDir, "model.safetensors")},
	} {
		ck, err := Open(c.open, OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(c.file, 1000); err != nil {
			t.Fatal(err)
		}
		ts := ck.Tensors()
		_, err = ts[len(ts)-1].Read()
		t.Log(err)
		checkError(t, err, c.file, ": tensor ")
		checkError(t, err, c.file, ": truncated file")
		ck.Close()
	}
}

func TestOpenFailureIsNil(t *testing.T) {
	// A typed nil pointer in the interface would be non-nil.
	for _, p := range []string{t.TempDir(), filepath.Join(t.TempDir(), "missing")} {
		if ck, err := Open(p, OpenOptions{}); err == nil || ck != nil {
			t.Errorf("Open(%s) = %#v, %v; want nil and an error", p, ck, err)
		}
	}
}
