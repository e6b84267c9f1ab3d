package convert

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestGGUFStories260KMatchesLlama2C(t *testing.T) {
	g, err := OpenGGUF(sharedModel(t, "stories260K", "stories260K.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	bin, err := OpenLlama2C(sharedModel(t, "stories260K", "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer bin.Close()

	// Same model; the GGUF stores its head separately (untied) and says
	// context_length 2048 where the .bin says seq_len 512.
	want := stories260KConfig
	want.TiedEmbeddings, want.MaxPositions = false, 2048
	if got := g.Config(); got != want {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	if g.Version != 3 || len(g.Infos) != 48 {
		t.Errorf("version %d, %d tensors", g.Version, len(g.Infos))
	}
	// GGUF lists dims fastest first: attn_k is ne [64, 32] for a
	// row-major [32, 64] matrix.
	for _, ti := range g.Infos {
		if ti.Name == "blk.0.attn_k.weight" && !slices.Equal(ti.Dims, []uint64{64, 32}) {
			t.Errorf("%s: dims %v", ti.Name, ti.Dims)
		}
	}
	fromGGUF := readAll(t, g)
	fromBin := readAll(t, bin)
	if len(fromGGUF) != len(fromBin)+1 {
		t.Errorf("%d GGUF tensors, %d llama2.c tensors", len(fromGGUF), len(fromBin))
	}
	worst := 0.0
	for name, w := range fromGGUF {
		ref := name
		if name == "lm_head.weight" {
			ref = "model.embed_tokens.weight"
		}
		d := maxAbsDiff(w, fromBin[ref])
		if d > 1e-6 {
			t.Errorf("%s: max |diff| %g between GGUF and llama2.c", name, d)
		}
		worst = max(worst, d)
	}
	t.Logf("GGUF vs llama2.c: max |diff| over all tensors %g", worst)

	v := g.Vocab()
	if v.Model != "llama" || len(v.Tokens) != 512 || len(v.Scores) != 512 || len(v.Types) != 512 || v.BOS != 1 || v.EOS != 2 || v.Merges != nil {
		t.Fatalf("vocab: model %q, %d tokens, %d scores, %d types, %d merges, bos %d eos %d",
			v.Model, len(v.Tokens), len(v.Scores), len(v.Types), len(v.Merges), v.BOS, v.EOS)
	}
	if v.Tokens[0] != "<unk>" || v.Tokens[1] != "<s>" || v.Tokens[3] != "<0x00>" || v.Types[1] != 3 || v.Types[3] != 6 {
		t.Errorf("vocab starts %q types %v", v.Tokens[:4], v.Types[:4])
	}
	// The vocabulary against the llama2.c tokenizer of the same model.
	pieces, scores := readLlama2CTokenizer(t, sharedModel(t, "stories260K", "tok512.bin"))
	var differ []int
	for i := range pieces {
		if strings.ReplaceAll(pieces[i], " ", "▁") != v.Tokens[i] || scores[i] != v.Scores[i] {
			differ = append(differ, i)
			t.Logf("token %d: tok512 %q %g, GGUF %q %g", i, pieces[i], scores[i], v.Tokens[i], v.Scores[i])
		}
	}
	// llama2.c's tokenizer spells BOS and EOS "\n<s>\n" and "\n</s>\n".
	if len(pieces) != 512 || !slices.Equal(differ, []int{1, 2}) {
		t.Errorf("%d tokens in tok512.bin; tokens %v differ from the GGUF vocabulary, want [1 2]", len(pieces), differ)
	}
}

// readLlama2CTokenizer reads a llama2.c tokenizer.bin: int32 max length,
// then per token float32 score, int32 length, bytes.
func readLlama2CTokenizer(t *testing.T, path string) ([]string, []float32) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var pieces []string
	var scores []float32
	for off := 4; off < len(data); {
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		n := int(binary.LittleEndian.Uint32(data[off+4:]))
		pieces = append(pieces, string(data[off+8:off+8+n]))
		scores = append(scores, score)
		off += 8 + n
	}
	return pieces, scores
}

func TestDequantizeQ8_0(t *testing.T) {
	// Three hand-written blocks: scale 0.5 (fp16 0x3800), scale −2
	// (0xc000) and the smallest subnormal scale 2⁻²⁴ (0x0001).
	var b []byte
	block := func(scale uint16, qs ...int8) {
		b = binary.LittleEndian.AppendUint16(b, scale)
		q := make([]byte, 32)
		for i, v := range qs {
			q[i] = byte(v)
		}
		b = append(b, q...)
	}
	block(0x3800, -128, -1, 0, 1, 127, 64)
	block(0xc000, 3, -3, 100)
	block(0x0001, -128, 1)
	want := make([]float32, 96)
	copy(want[0:], []float32{-64, -0.5, 0, 0.5, 63.5, 32})
	copy(want[32:], []float32{-6, 6, -200})
	copy(want[64:], []float32{-0x1p-17, 0x1p-24})

	got := make([]float32, 96)
	if err := readQ8_0(bytes.NewReader(b), 0, got); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	// At an offset, and a short file.
	if err := readQ8_0(bytes.NewReader(append([]byte{9, 9, 9}, b...)), 3, got); err != nil || !slices.Equal(got, want) {
		t.Errorf("at offset 3: %v", err)
	}
	if err := readQ8_0(bytes.NewReader(b[:100]), 0, got); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Errorf("short read: %v", err)
	}
}

// ggufKV is one metadata pair for writeGGUF. The value's Go type picks
// the GGUF type: string, uint32, int32, float32, bool, uint64, []string,
// []float32, []int32, or [][]uint8 / []uint8 for nested and byte arrays.
type ggufKV struct {
	key string
	val any
}

// ggufTensor is one tensor for writeGGUF, data already encoded.
type ggufTensor struct {
	name string
	dims []uint64 // ggml order
	typ  uint32
	data []byte
}

// encodeGGUF writes a GGUF v3 file following ggml's docs/gguf.md, with
// the tensor data aligned to align.
func encodeGGUF(kvs []ggufKV, tensors []ggufTensor, align int) []byte {
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { binary.Write(&b, le, v) }
	str := func(s string) { w(uint64(len(s))); b.WriteString(s) }
	var value func(v any, withType bool)
	value = func(v any, withType bool) {
		typ := func(t uint32) {
			if withType {
				w(t)
			}
		}
		switch v := v.(type) {
		case uint8:
			typ(0)
			w(v)
		case uint32:
			typ(4)
			w(v)
		case int32:
			typ(5)
			w(v)
		case float32:
			typ(6)
			w(v)
		case bool:
			typ(7)
			w(v)
		case string:
			typ(8)
			str(v)
		case uint64:
			typ(10)
			w(v)
		case []string:
			typ(9)
			w(uint32(8))
			w(uint64(len(v)))
			for _, s := range v {
				str(s)
			}
		case []float32:
			typ(9)
			w(uint32(6))
			w(uint64(len(v)))
			w(v)
		case []int32:
			typ(9)
			w(uint32(5))
			w(uint64(len(v)))
			w(v)
		case []uint8:
			typ(9)
			w(uint32(0))
			w(uint64(len(v)))
			w(v)
		case [][]uint8:
			typ(9)
			w(uint32(9))
			w(uint64(len(v)))
			for _, e := range v {
				value(e, false)
			}
		default:
			panic(fmt.Sprintf("encodeGGUF: %T", v))
		}
	}
	b.WriteString("GGUF")
	w(uint32(3))
	w(uint64(len(tensors)))
	w(uint64(len(kvs)))
	for _, kv := range kvs {
		str(kv.key)
		value(kv.val, true)
	}
	var off uint64
	offsets := make([]uint64, len(tensors))
	for i, t := range tensors {
		offsets[i] = off
		off += uint64(len(t.data))
		off = (off + uint64(align) - 1) / uint64(align) * uint64(align)
	}
	for i, t := range tensors {
		str(t.name)
		w(uint32(len(t.dims)))
		w(t.dims)
		w(t.typ)
		w(offsets[i])
	}
	pad := func() {
		for b.Len()%align != 0 {
			b.WriteByte(0)
		}
	}
	pad()
	for _, t := range tensors {
		b.Write(t.data)
		pad()
	}
	return b.Bytes()
}

// tinyGGUF is a small llama model in GGUF with every tensor type the
// reader supports, and the HF tensors the reader must return for it,
// computed by the test: 2 layers, hidden 32, 4 heads of 8, 2 KV heads,
// FFN 64, vocab 6.
type tinyGGUF struct {
	kvs     []ggufKV
	tensors []ggufTensor
	want    map[string][]float32
}

func newTinyGGUF(seed uint64) *tinyGGUF { return newTinyGGUFArch(seed, "llama") }

// newTinyGGUFArch makes the tiny model as llama.cpp would write it for
// arch: "llama" (q/k rows interleaved, so the reader permutes them) or
// "qwen2" (q/k/v biases, rows left in HF order).
func newTinyGGUFArch(seed uint64, arch string) *tinyGGUF {
	r := rand.New(rand.NewPCG(seed, 1))
	tg := &tinyGGUF{want: map[string][]float32{}}
	tg.kvs = []ggufKV{
		{"general.architecture", arch},
		{"general.name", "tiny"},
		{"general.flags", [][]uint8{{1, 2}, {3}}}, // nested array: parsed, unused
		{"general.bytes", []uint8{7, 8, 9}},
		{"general.file_type", uint32(7)},
		{"llama.block_count", uint32(2)},
		{"llama.embedding_length", uint32(32)},
		{"llama.feed_forward_length", uint32(64)},
		{"llama.attention.head_count", uint32(4)},
		{"llama.attention.head_count_kv", uint32(2)},
		{"llama.attention.layer_norm_rms_epsilon", float32(1e-6)},
		{"llama.rope.freq_base", float32(500000)},
		{"llama.rope.dimension_count", uint32(8)},
		{"llama.context_length", uint32(128)},
		{"llama.use_parallel_residual", true},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.tokens", []string{"a", "b", "ab", "Ġc", "<|end|>", "<|begin|>"}},
		{"tokenizer.ggml.token_type", []int32{1, 1, 1, 1, 3, 3}},
		{"tokenizer.ggml.merges", []string{"a b", "Ġ c"}},
		{"tokenizer.ggml.bos_token_id", uint32(5)},
		{"tokenizer.ggml.eos_token_id", uint32(4)},
		{"tokenizer.ggml.padding_token_id", uint64(4)},
	}
	for i, kv := range tg.kvs {
		tg.kvs[i].key = strings.Replace(kv.key, "llama.", arch+".", 1)
	}
	qh, kh := 4, 2 // heads whose rows the reader must permute
	if arch != "llama" {
		qh, kh = 0, 0
	}
	le := binary.LittleEndian
	// F32: arbitrary values.
	f32 := func(name, hf string, n int) {
		vals := make([]float32, n)
		var data []byte
		for i := range vals {
			vals[i] = r.Float32()*2 - 1
			data = le.AppendUint32(data, math.Float32bits(vals[i]))
		}
		tg.tensors = append(tg.tensors, ggufTensor{name, []uint64{uint64(n)}, 0, data})
		tg.want[hf] = vals
	}
	// F16 and BF16: values k/64, exact in both.
	half := func(name, hf string, typ uint32, rows, cols, perm int) {
		vals := make([]float32, rows*cols)
		var data []byte
		for i := range vals {
			vals[i] = float32(r.IntN(257)-128) / 64
			bits := encodeF16(vals[i])
			if typ == 30 {
				bits = uint16(math.Float32bits(vals[i]) >> 16)
			}
			data = le.AppendUint16(data, bits)
		}
		tg.tensors = append(tg.tensors, ggufTensor{name, []uint64{uint64(cols), uint64(rows)}, typ, data})
		if perm > 0 {
			vals = refPermute(vals, perm, cols)
		}
		tg.want[hf] = vals
	}
	// Q8_0: per block a scale k/1024 (exact in fp16) and random int8s;
	// value = scale·q, exact in float32.
	q8 := func(name, hf string, rows, cols, perm int) {
		vals := make([]float32, rows*cols)
		var data []byte
		for blk := 0; blk < len(vals)/32; blk++ {
			scale := float32(r.IntN(1000)+1) / 1024
			data = le.AppendUint16(data, encodeF16(scale))
			for i := range 32 {
				q := int8(r.IntN(256) - 128)
				data = append(data, byte(q))
				vals[blk*32+i] = scale * float32(q)
			}
		}
		tg.tensors = append(tg.tensors, ggufTensor{name, []uint64{uint64(cols), uint64(rows)}, 8, data})
		if perm > 0 {
			vals = refPermute(vals, perm, cols)
		}
		tg.want[hf] = vals
	}
	half("token_embd.weight", "model.embed_tokens.weight", 1, 6, 32, 0)
	for i := range 2 {
		p, h := fmt.Sprintf("blk.%d.", i), fmt.Sprintf("model.layers.%d.", i)
		f32(p+"attn_norm.weight", h+"input_layernorm.weight", 32)
		q8(p+"attn_q.weight", h+"self_attn.q_proj.weight", 32, 32, qh)
		q8(p+"attn_k.weight", h+"self_attn.k_proj.weight", 16, 32, kh)
		if arch == "qwen2" {
			f32(p+"attn_q.bias", h+"self_attn.q_proj.bias", 32)
			f32(p+"attn_k.bias", h+"self_attn.k_proj.bias", 16)
			f32(p+"attn_v.bias", h+"self_attn.v_proj.bias", 16)
		}
		half(p+"attn_v.weight", h+"self_attn.v_proj.weight", 30, 16, 32, 0)
		half(p+"attn_output.weight", h+"self_attn.o_proj.weight", 1, 32, 32, 0)
		f32(p+"ffn_norm.weight", h+"post_attention_layernorm.weight", 32)
		q8(p+"ffn_gate.weight", h+"mlp.gate_proj.weight", 64, 32, 0)
		half(p+"ffn_up.weight", h+"mlp.up_proj.weight", 30, 64, 32, 0)
		q8(p+"ffn_down.weight", h+"mlp.down_proj.weight", 32, 64, 0)
	}
	f32("output_norm.weight", "model.norm.weight", 32)
	return tg
}

func (tg *tinyGGUF) write(t *testing.T, align int) string {
	t.Helper()
	kvs := tg.kvs
	if align != 32 {
		kvs = append(slices.Clone(kvs), ggufKV{"general.alignment", uint32(align)})
	}
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := os.WriteFile(path, encodeGGUF(kvs, tg.tensors, align), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestGGUFWriteRead(t *testing.T) {
	tg := newTinyGGUF(1)
	for _, align := range []int{32, 64} {
		t.Run(fmt.Sprint("align", align), func(t *testing.T) {
			ck, err := Open(tg.write(t, align), OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer ck.Close()
			g := ck.(*GGUF)
			want := Config{
				Family: FamilyLlama, HFArchitecture: "LlamaForCausalLM",
				Layers: 2, Hidden: 32, Heads: 4, KVHeads: 2, HeadDim: 8, FFN: 64, Vocab: 6,
				MaxPositions: 128, NormEps: 1e-6, RopeTheta: 500000, TiedEmbeddings: true, BOS: 5, EOS: 4,
			}
			if got := g.Config(); got != want {
				t.Errorf("config\n got %+v\nwant %+v", got, want)
			}
			got := readAll(t, g)
			if len(got) != len(tg.want) {
				t.Errorf("%d tensors, want %d", len(got), len(tg.want))
			}
			for name, w := range tg.want {
				if !slices.Equal(got[name], w) {
					t.Errorf("%s: max |diff| %g", name, maxAbsDiff(got[name], w))
				}
			}
			v := g.Vocab()
			if v.Model != "gpt2" || !slices.Equal(v.Merges, []string{"a b", "Ġ c"}) || v.Tokens[3] != "Ġc" ||
				v.Scores != nil || !slices.Equal(v.Types, []int32{1, 1, 1, 1, 3, 3}) || v.BOS != 5 || v.EOS != 4 {
				t.Errorf("vocab %+v", v)
			}
			if fmt.Sprint(g.Metadata["general.flags"]) != "[[1 2] [3]]" || g.Metadata["llama.use_parallel_residual"] != true {
				t.Errorf("metadata: flags %v", g.Metadata["general.flags"])
			}
		})
	}
}

func TestGGUFQwen2(t *testing.T) {
	tg := newTinyGGUFArch(3, "qwen2")
	ck, err := OpenGGUF(tg.write(t, 32))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	cfg := ck.Config()
	if cfg.HFArchitecture != "Qwen2ForCausalLM" || !cfg.QKVBias || cfg.RopeTheta != 500000 || cfg.Layers != 2 {
		t.Errorf("config %+v", cfg)
	}
	got := readAll(t, ck)
	if len(got) != len(tg.want) || len(got) != 1+2*12+1 {
		t.Errorf("%d tensors, want %d", len(got), len(tg.want))
	}
	for name, w := range tg.want {
		if !slices.Equal(got[name], w) {
			t.Errorf("%s: max |diff| %g", name, maxAbsDiff(got[name], w))
		}
	}
}
