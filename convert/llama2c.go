package convert

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// llama2.c checkpoints (github.com/karpathy/llama2.c, export.py).
//
// Version 0 ("legacy") is a bare header of 7 int32 — dim, hidden_dim,
// n_layers, n_heads, n_kv_heads, vocab_size, seq_len — followed by fp32
// weights: token_embedding, rms_att[L], wq[L], wk[L], wv[L], wo[L],
// rms_ffn[L], w1[L], w2[L], w3[L], rms_final, freq_cis_real,
// freq_cis_imag and, if vocab_size is negative, the classifier. Only the
// file size tells it apart from garbage.
//
// Versions 1 and 2 start with a 256-byte header: uint32 magic "ak42",
// int32 version, the same 7 int32 (vocab_size positive), a byte saying
// whether the classifier is shared, and in version 2 an int32 group size.
// Version 1 then holds fp32 weights in the order rms_att[L], rms_ffn[L],
// rms_final, token_embedding, wq[L], wk[L], wv[L], wo[L], w1[L], w2[L],
// w3[L], [wcls]. Version 2 keeps the three norm groups in fp32 and stores
// every matrix of that order (token_embedding … [wcls]) as int8 values
// followed by that tensor's fp32 scales, one per group of group-size
// consecutive values (export.py's version2_export, read by runq.c; an
// early export.py wrote all scales after all int8 data, which runq.c
// never read).

const (
	llama2cMagic      = 0x616b3432 // "ak42" little-endian
	llama2cHeaderSize = 256
	legacyHeaderSize  = 7 * 4
)

// llama2cHeader holds the model dimensions every version stores.
type llama2cHeader struct {
	Dim, Hidden, Layers, Heads, KVHeads, Vocab, SeqLen int
	Shared                                             bool // classifier tied to the token embedding
	Version                                            int  // 0 legacy, 1 fp32, 2 Q8_0
	GroupSize                                          int  // version 2
}

func (h llama2cHeader) headDim() int { return h.Dim / h.Heads }

// plausible reports whether the header could describe a real model, so
// that a random file is called unrecognised rather than truncated.
func (h llama2cHeader) plausible() bool {
	const big = 1 << 20
	ok := func(v, max int) bool { return v > 0 && v <= max }
	return ok(h.Dim, big) && ok(h.Hidden, 4*big) && ok(h.Layers, 4096) && ok(h.Heads, h.Dim) &&
		ok(h.KVHeads, h.Heads) && h.Heads%h.KVHeads == 0 && h.Dim%h.Heads == 0 &&
		ok(h.Vocab, 1<<24) && ok(h.SeqLen, 1<<24)
}

func (h llama2cHeader) config() Config {
	return Config{
		Family:         FamilyLlama,
		HFArchitecture: "LlamaForCausalLM",
		Layers:         h.Layers,
		Hidden:         h.Dim,
		Heads:          h.Heads,
		KVHeads:        h.KVHeads,
		HeadDim:        h.headDim(),
		FFN:            h.Hidden,
		Vocab:          h.Vocab,
		MaxPositions:   h.SeqLen,
		NormEps:        1e-5,
		RopeTheta:      10000,
		TiedEmbeddings: h.Shared,
		BOS:            1,
		EOS:            2,
	}
}

// l2cTensor is one llama2.c tensor: its HF name and shape, and whether
// its rows must be permuted from interleaved to rotate-half RoPE order
// (permHeads > 0: the number of heads).
type l2cTensor struct {
	name      string
	shape     []int64
	permHeads int
	quant     bool // version 2: int8 + scales
}

// layout lists the tensors in file order, with fp32 padding entries
// (name "") for the freq_cis tables that legacy files carry.
func (h llama2cHeader) layout() []l2cTensor {
	D, F, V := int64(h.Dim), int64(h.Hidden), int64(h.Vocab)
	hd := int64(h.headDim())
	Q, KV := int64(h.Heads)*hd, int64(h.KVHeads)*hd
	L := h.Layers
	perLayer := func(format string, shape []int64, perm int, quant bool) []l2cTensor {
		ts := make([]l2cTensor, L)
		for i := range ts {
			ts[i] = l2cTensor{fmt.Sprintf(format, i), shape, perm, quant}
		}
		return ts
	}
	var (
		emb    = []l2cTensor{{"model.embed_tokens.weight", []int64{V, D}, 0, true}}
		rmsAtt = perLayer("model.layers.%d.input_layernorm.weight", []int64{D}, 0, false)
		rmsFFN = perLayer("model.layers.%d.post_attention_layernorm.weight", []int64{D}, 0, false)
		final  = []l2cTensor{{"model.norm.weight", []int64{D}, 0, false}}
		wq     = perLayer("model.layers.%d.self_attn.q_proj.weight", []int64{Q, D}, h.Heads, true)
		wk     = perLayer("model.layers.%d.self_attn.k_proj.weight", []int64{KV, D}, h.KVHeads, true)
		wv     = perLayer("model.layers.%d.self_attn.v_proj.weight", []int64{KV, D}, 0, true)
		wo     = perLayer("model.layers.%d.self_attn.o_proj.weight", []int64{D, Q}, 0, true)
		w1     = perLayer("model.layers.%d.mlp.gate_proj.weight", []int64{F, D}, 0, true)
		w2     = perLayer("model.layers.%d.mlp.down_proj.weight", []int64{D, F}, 0, true)
		w3     = perLayer("model.layers.%d.mlp.up_proj.weight", []int64{F, D}, 0, true)
		cls    []l2cTensor
	)
	if !h.Shared {
		cls = []l2cTensor{{"lm_head.weight", []int64{V, D}, 0, true}}
	}
	cat := func(groups ...[]l2cTensor) []l2cTensor {
		var out []l2cTensor
		for _, g := range groups {
			out = append(out, g...)
		}
		return out
	}
	if h.Version == 0 {
		freq := []l2cTensor{{"", []int64{2, int64(h.SeqLen), hd / 2}, 0, false}}
		return cat(emb, rmsAtt, wq, wk, wv, wo, rmsFFN, w1, w2, w3, final, freq, cls)
	}
	return cat(rmsAtt, rmsFFN, final, emb, wq, wk, wv, wo, w1, w2, w3, cls)
}

// storedBytes is the size of t in the file.
func (h llama2cHeader) storedBytes(t l2cTensor) int64 {
	n := elemCount(t.shape)
	if h.Version == 2 && t.quant {
		return n + 4*(n/int64(h.GroupSize))
	}
	return 4 * n
}

// impliedSize is the file size the header implies.
func (h llama2cHeader) impliedSize() int64 {
	size := int64(legacyHeaderSize)
	if h.Version > 0 {
		size = llama2cHeaderSize
	}
	for _, t := range h.layout() {
		size += h.storedBytes(t)
	}
	return size
}

// readLlama2CHeader parses the header at the start of r. It does not
// check the dimensions.
func readLlama2CHeader(r io.ReaderAt) (llama2cHeader, error) {
	var buf [llama2cHeaderSize]byte
	if err := readAt(r, buf[:8], 0); err != nil {
		return llama2cHeader{}, err
	}
	le := binary.LittleEndian
	var h llama2cHeader
	var p []byte
	if le.Uint32(buf[:]) == llama2cMagic {
		if err := readAt(r, buf[:], 0); err != nil {
			return h, err
		}
		h.Version = int(int32(le.Uint32(buf[4:])))
		if h.Version != 1 && h.Version != 2 {
			return h, fmt.Errorf("llama2.c checkpoint version %d not supported (want 0, 1 or 2)", h.Version)
		}
		p = buf[8:]
	} else {
		if err := readAt(r, buf[:legacyHeaderSize], 0); err != nil {
			return h, err
		}
		p = buf[:]
	}
	v := func(i int) int { return int(int32(le.Uint32(p[4*i:]))) }
	h.Dim, h.Hidden, h.Layers, h.Heads, h.KVHeads, h.Vocab, h.SeqLen = v(0), v(1), v(2), v(3), v(4), v(5), v(6)
	switch h.Version {
	case 0:
		// The sign of vocab_size is the shared-classifier flag.
		h.Shared = h.Vocab > 0
		if h.Vocab < 0 {
			h.Vocab = -h.Vocab
		}
	default:
		h.Shared = p[28] != 0
		if h.Version == 2 {
			h.GroupSize = int(int32(le.Uint32(p[29:])))
		}
	}
	return h, nil
}

// Llama2C is a llama2.c checkpoint.
type Llama2C struct {
	ckpt
	// Version is the file's format version: 0 (legacy), 1 (fp32) or 2
	// (int8 Q8_0 groups).
	Version int
}

// OpenLlama2C reads the llama2.c checkpoint at path (any version).
func OpenLlama2C(path string) (*Llama2C, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	c, err := newLlama2C(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %s: %w", path, err)
	}
	return c, nil
}

func newLlama2C(f *os.File, path string) (*Llama2C, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	h, err := readLlama2CHeader(f)
	if err != nil {
		return nil, err
	}
	if !h.plausible() {
		return nil, fmt.Errorf("not a llama2.c checkpoint (implausible header: dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq_len %d)",
			h.Dim, h.Hidden, h.Layers, h.Heads, h.KVHeads, h.Vocab, h.SeqLen)
	}
	if h.Version == 2 {
		if h.GroupSize <= 0 {
			return nil, fmt.Errorf("llama2.c Q8_0 group size %d", h.GroupSize)
		}
		for _, t := range h.layout() {
			if t.quant && elemCount(t.shape)%int64(h.GroupSize) != 0 {
				return nil, fmt.Errorf("tensor %s: %d values are not a multiple of the group size %d", t.name, elemCount(t.shape), h.GroupSize)
			}
		}
	}
	if want := h.impliedSize(); fi.Size() != want {
		if fi.Size() < want {
			return nil, fmt.Errorf("truncated llama2.c checkpoint: %d bytes, header implies %d", fi.Size(), want)
		}
		return nil, fmt.Errorf("llama2.c checkpoint has %d trailing bytes after the %d the header implies", fi.Size()-want, want)
	}
	cfg := h.config()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srcs := map[string]tensorSource{}
	off := int64(legacyHeaderSize)
	if h.Version > 0 {
		off = llama2cHeaderSize
	}
	src := &sourceFile{ReaderAt: f}
	for _, t := range h.layout() {
		if t.name != "" {
			srcs[t.name] = h.source(src, path, t, off)
		}
		off += h.storedBytes(t)
	}
	ts, err := assemble(cfg, srcs, func(s string) string { return s })
	if err != nil {
		return nil, err
	}
	return &Llama2C{ckpt: ckpt{cfg: cfg, tensors: ts, closers: []io.Closer{f}}, Version: h.Version}, nil
}

// source says how to read t, stored at off: in place when it is float32
// in the order the builder wants.
func (h llama2cHeader) source(src *sourceFile, path string, t l2cTensor, off int64) tensorSource {
	if t.permHeads == 0 && !(h.Version == 2 && t.quant) {
		return storedSource(t.shape, newStoredTensor(src, off, elemCount(t.shape), dtF32, path, t.name))
	}
	return tensorSource{shape: t.shape, read: h.reader(src, path, t, off)}
}

// reader returns the Read function of t stored at off.
func (h llama2cHeader) reader(r io.ReaderAt, path string, t l2cTensor, off int64) func() ([]float32, error) {
	return func() ([]float32, error) {
		n := elemCount(t.shape)
		out := make([]float32, n)
		var err error
		if h.Version == 2 && t.quant {
			err = readInt8Groups(r, off, out, h.GroupSize)
		} else {
			err = readFloats(r, off, out, dtF32)
		}
		if err != nil {
			return nil, fmt.Errorf("convert: %s: tensor %s: %w", path, t.name, err)
		}
		if t.permHeads > 0 {
			out = interleavedToHalves(out, t.permHeads, int(t.shape[1]))
		}
		return out, nil
	}
}

// readInt8Groups dequantizes len(out) int8 values at off, followed by
// their fp32 scales (one per group of gs values): out[i] = q[i]·s[i/gs].
func readInt8Groups(r io.ReaderAt, off int64, out []float32, gs int) error {
	n := int64(len(out))
	scales := make([]float32, n/int64(gs))
	if err := readFloats(r, off+n, scales, dtF32); err != nil {
		return err
	}
	buf := make([]byte, min(n, chunkBytes/int64(gs)*int64(gs)))
	for done := int64(0); done < n; {
		b := buf[:min(int64(len(buf)), n-done)]
		if err := readAt(r, b, off+done); err != nil {
			return err
		}
		for i, q := range b {
			j := done + int64(i)
			out[j] = float32(int8(q)) * scales[j/int64(gs)]
		}
		done += int64(len(b))
	}
	return nil
}

// interleavedToHalves permutes the rows of w ([heads·headDim, cols]) from
// the RoPE layout of Meta's and llama2.c's code, which rotates adjacent
// pairs (x[2i], x[2i+1]), to the layout of Hugging Face's Llama, which
// rotates (x[i], x[i+headDim/2]). It is transformers'
// convert_llama_weights_to_hf.py permute:
//
//	w.view(heads, headDim/2, 2, cols).transpose(1, 2).reshape(heads·headDim, cols)
//
// so row h·headDim + j·headDim/2 + i of the result is row h·headDim + 2i + j
// of w.
func interleavedToHalves(w []float32, heads, cols int) []float32 {
	rows := len(w) / cols
	hd := rows / heads
	half := hd / 2
	out := make([]float32, len(w))
	for h := 0; h < heads; h++ {
		for j := 0; j < 2; j++ {
			for i := 0; i < half; i++ {
				dst := (h*hd + j*half + i) * cols
				src := (h*hd + 2*i + j) * cols
				copy(out[dst:dst+cols], w[src:src+cols])
			}
		}
	}
	return out
}
