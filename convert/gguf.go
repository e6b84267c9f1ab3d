package convert

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/onnxprune/onnxprune/tokenizer"
)

// GGUF (llama.cpp, docs/gguf.md in ggml): little-endian
//
//	magic "GGUF", uint32 version (2 or 3), uint64 tensor count, uint64 KV count,
//	KV:     string key, uint32 value type, value
//	tensor: string name, uint32 n_dims, uint64 ne[n_dims], uint32 ggml type, uint64 offset
//	padding to general.alignment (default 32), then the tensor data.
//
// Strings are a uint64 length and bytes; arrays a uint32 element type, a
// uint64 count and the elements. ne[0] is the fastest-varying dimension,
// so a row-major [out, in] matrix is stored with ne = [in, out].

const (
	ggufMagic            = "GGUF"
	ggufDefaultAlignment = 32
)

// GGUF metadata value types.
const (
	ggufUint8 = iota
	ggufInt8
	ggufUint16
	ggufInt16
	ggufUint32
	ggufInt32
	ggufFloat32
	ggufBool
	ggufString
	ggufArray
	ggufUint64
	ggufInt64
	ggufFloat64
)

// ggml tensor types this reader dequantizes.
const (
	ggmlF32  = 0
	ggmlF16  = 1
	ggmlQ8_0 = 8
	ggmlBF16 = 30
)

// ggmlTypeNames names ggml's tensor types for error messages.
var ggmlTypeNames = map[uint32]string{
	0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
	10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
	16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
	22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
	29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

func ggmlTypeName(t uint32) string {
	if s, ok := ggmlTypeNames[t]; ok {
		return s
	}
	return "type " + strconv.Itoa(int(t))
}

// Q8_0: blocks of 32 values, each an fp16 scale d followed by 32 int8 q;
// value = d·q.
const (
	q8BlockValues = 32
	q8BlockBytes  = 2 + q8BlockValues
)

// GGUFTensorInfo describes one tensor as the file stores it.
type GGUFTensorInfo struct {
	Name   string
	Dims   []uint64 // ggml order: Dims[0] is the fastest-varying
	Type   uint32   // ggml type
	Offset uint64   // from the start of the data section
}

// bytes is the stored size of the tensor, or -1 for a type this reader
// cannot read.
func (ti GGUFTensorInfo) bytes() int64 {
	n := int64(1)
	for _, d := range ti.Dims {
		n *= int64(d)
	}
	switch ti.Type {
	case ggmlF32:
		return 4 * n
	case ggmlF16, ggmlBF16:
		return 2 * n
	case ggmlQ8_0:
		return n / q8BlockValues * q8BlockBytes
	}
	return -1
}

// shape is the row-major shape: ggml's dims reversed.
func (ti GGUFTensorInfo) shape() []int64 {
	s := make([]int64, len(ti.Dims))
	for i, d := range ti.Dims {
		s[len(s)-1-i] = int64(d)
	}
	return s
}

// GGUF is a GGUF checkpoint.
type GGUF struct {
	ckpt
	// Version is the file's GGUF version.
	Version uint32
	// Metadata holds every key-value pair. Values are uint8, int8,
	// uint16, int16, uint32, int32, float32, bool, string, uint64, int64,
	// float64, or []any of them for arrays (typed slices []string,
	// []float32, []int32 and []uint32 for arrays of those, the common
	// large ones).
	Metadata map[string]any
	// Infos lists the tensors as stored, in file order.
	Infos []GGUFTensorInfo
}

// Vocab returns the embedded tokenizer vocabulary, as
// tokenizer.FromGGUFVocab takes it.
func (g *GGUF) Vocab() tokenizer.GGUFVocab {
	v := tokenizer.GGUFVocab{BOS: -1, EOS: -1}
	v.Pre, _ = g.Metadata["tokenizer.ggml.pre"].(string)
	if b, ok := g.Metadata["tokenizer.ggml.add_space_prefix"].(bool); ok {
		v.NoSpacePrefix = !b
	}
	v.RemoveExtraWhitespaces, _ = g.Metadata["tokenizer.ggml.remove_extra_whitespaces"].(bool)
	v.Model, _ = g.Metadata["tokenizer.ggml.model"].(string)
	v.Tokens, _ = g.Metadata["tokenizer.ggml.tokens"].([]string)
	v.Scores, _ = g.Metadata["tokenizer.ggml.scores"].([]float32)
	switch t := g.Metadata["tokenizer.ggml.token_type"].(type) {
	case []int32:
		v.Types = t
	case []uint32:
		v.Types = make([]int32, len(t))
		for i, x := range t {
			v.Types[i] = int32(x)
		}
	}
	v.Merges, _ = g.Metadata["tokenizer.ggml.merges"].([]string)
	if id, ok := metaInt(g.Metadata, "tokenizer.ggml.bos_token_id"); ok {
		v.BOS = id
	}
	if id, ok := metaInt(g.Metadata, "tokenizer.ggml.eos_token_id"); ok {
		v.EOS = id
	}
	return v
}

// OpenGGUF reads the GGUF file at path.
func OpenGGUF(path string) (*GGUF, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	g, err := newGGUF(f, path)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("convert: %s: %w", path, err)
	}
	return g, nil
}

func newGGUF(f *os.File, path string) (*GGUF, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	g, dataStart, err := parseGGUF(f, fi.Size())
	if err != nil {
		return nil, err
	}
	cfg, arch, err := g.config()
	if err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	srcs := map[string]tensorSource{}
	src := &sourceFile{ReaderAt: f}
	hfToGGUF := map[string]string{}
	for _, ti := range g.Infos {
		hf, perm, ok := ggufToHF(ti.Name, arch, cfg)
		if ti.Name == "rope_freqs.weight" {
			// Llama 3.1+ stores its rope scaling as frequency factors.
			return nil, fmt.Errorf("tensor %s: rope frequency factors (rope scaling) not supported", ti.Name)
		}
		if !ok {
			return nil, fmt.Errorf("unexpected tensor %s (not part of a %s model)", ti.Name, cfg.HFArchitecture)
		}
		if ti.bytes() < 0 {
			return nil, fmt.Errorf("tensor %s: unsupported GGUF tensor type %s (supported: F32, F16, BF16, Q8_0)", ti.Name, ggmlTypeName(ti.Type))
		}
		if ti.Type == ggmlQ8_0 && (len(ti.Dims) == 0 || ti.Dims[0]%q8BlockValues != 0) {
			return nil, fmt.Errorf("tensor %s: Q8_0 rows of %v values are not whole blocks of %d", ti.Name, ti.Dims, q8BlockValues)
		}
		end := dataStart + int64(ti.Offset) + ti.bytes()
		if end > fi.Size() || end < dataStart {
			return nil, fmt.Errorf("truncated file: tensor %s ends at byte %d of %d", ti.Name, end, fi.Size())
		}
		shape := ti.shape()
		hfToGGUF[hf] = ti.Name
		srcs[hf] = ggufSource(src, path, ti, dataStart+int64(ti.Offset), shape, perm)
	}
	name := func(hf string) string {
		if n, ok := hfToGGUF[hf]; ok {
			return n
		}
		if n, ok := hfToGGUFName(hf); ok {
			return n
		}
		return hf
	}
	ts, err := assemble(cfg, srcs, name)
	if err != nil {
		return nil, err
	}
	g.ckpt = ckpt{cfg: cfg, tensors: ts, closers: []io.Closer{f}}
	return g, nil
}

// ggufArch describes a GGUF architecture this reader maps to HF.
type ggufArch struct {
	hf string
	// permuteQK: llama.cpp's converter reorders q/k rows to the
	// interleaved RoPE layout for this architecture (its LlamaModel does,
	// Qwen2Model does not), so they must be reordered back.
	permuteQK bool
	qkvBias   bool
}

var ggufArchs = map[string]ggufArch{
	"llama": {hf: "LlamaForCausalLM", permuteQK: true},
	"qwen2": {hf: "Qwen2ForCausalLM", qkvBias: true},
}

// config derives the Config from the metadata.
func (g *GGUF) config() (Config, ggufArch, error) {
	arch, _ := g.Metadata["general.architecture"].(string)
	a, ok := ggufArchs[arch]
	if !ok {
		var names []string
		for k := range ggufArchs {
			names = append(names, k)
		}
		slices.Sort(names)
		return Config{}, ggufArch{}, fmt.Errorf("unknown architecture %q (supported GGUF architectures: %s)", arch, strings.Join(names, ", "))
	}
	req := func(key string) (int, error) {
		v, ok := metaInt(g.Metadata, arch+"."+key)
		if !ok {
			return 0, fmt.Errorf("missing metadata %s.%s", arch, key)
		}
		return v, nil
	}
	cfg := Config{Family: FamilyLlama, HFArchitecture: a.hf, QKVBias: a.qkvBias, BOS: -1, EOS: -1, RopeTheta: 10000}
	var err error
	for _, kv := range []struct {
		key string
		dst *int
	}{
		{"block_count", &cfg.Layers},
		{"embedding_length", &cfg.Hidden},
		{"feed_forward_length", &cfg.FFN},
		{"attention.head_count", &cfg.Heads},
		{"context_length", &cfg.MaxPositions},
	} {
		if *kv.dst, err = req(kv.key); err != nil {
			return Config{}, ggufArch{}, err
		}
	}
	cfg.KVHeads = cfg.Heads
	if v, ok := metaInt(g.Metadata, arch+".attention.head_count_kv"); ok {
		cfg.KVHeads = v
	}
	if cfg.Heads > 0 {
		cfg.HeadDim = cfg.Hidden / cfg.Heads
	}
	if v, ok := metaInt(g.Metadata, arch+".attention.key_length"); ok {
		cfg.HeadDim = v
	}
	if v, ok := metaInt(g.Metadata, arch+".attention.value_length"); ok && v != cfg.HeadDim {
		return Config{}, ggufArch{}, fmt.Errorf("value head size %d differs from key head size %d", v, cfg.HeadDim)
	}
	if v, ok := metaInt(g.Metadata, arch+".rope.dimension_count"); ok && v != cfg.HeadDim {
		return Config{}, ggufArch{}, fmt.Errorf("partial rotary embedding (%d of %d head dimensions) not supported", v, cfg.HeadDim)
	}
	if s, ok := g.Metadata[arch+".rope.scaling.type"].(string); ok && s != "none" {
		return Config{}, ggufArch{}, fmt.Errorf("rope scaling %q not supported", s)
	}
	eps, ok := metaFloat(g.Metadata, arch+".attention.layer_norm_rms_epsilon")
	if !ok {
		return Config{}, ggufArch{}, fmt.Errorf("missing metadata %s.attention.layer_norm_rms_epsilon", arch)
	}
	cfg.NormEps = eps
	if v, ok := metaFloat(g.Metadata, arch+".rope.freq_base"); ok {
		cfg.RopeTheta = v
	}
	// The vocabulary size: the tokenizer's, else the metadata's, else the
	// embedding's rows (assemble checks that all agree).
	if toks, ok := g.Metadata["tokenizer.ggml.tokens"].([]string); ok {
		cfg.Vocab = len(toks)
	} else if v, ok := metaInt(g.Metadata, arch+".vocab_size"); ok {
		cfg.Vocab = v
	} else {
		for _, ti := range g.Infos {
			if ti.Name == "token_embd.weight" && len(ti.Dims) == 2 {
				cfg.Vocab = int(ti.Dims[1])
			}
		}
	}
	cfg.TiedEmbeddings = true
	for _, ti := range g.Infos {
		if ti.Name == "output.weight" {
			cfg.TiedEmbeddings = false
		}
	}
	v := g.Vocab()
	cfg.BOS, cfg.EOS = v.BOS, v.EOS
	return cfg, a, nil
}

// ggufTensorNames maps llama.cpp's per-layer tensor names to HF's.
var ggufTensorNames = map[string]string{
	"attn_norm.weight":   "input_layernorm.weight",
	"attn_q.weight":      "self_attn.q_proj.weight",
	"attn_k.weight":      "self_attn.k_proj.weight",
	"attn_v.weight":      "self_attn.v_proj.weight",
	"attn_q.bias":        "self_attn.q_proj.bias",
	"attn_k.bias":        "self_attn.k_proj.bias",
	"attn_v.bias":        "self_attn.v_proj.bias",
	"attn_output.weight": "self_attn.o_proj.weight",
	"ffn_norm.weight":    "post_attention_layernorm.weight",
	"ffn_gate.weight":    "mlp.gate_proj.weight",
	"ffn_up.weight":      "mlp.up_proj.weight",
	"ffn_down.weight":    "mlp.down_proj.weight",
}

var ggufGlobalNames = map[string]string{
	"token_embd.weight":  "model.embed_tokens.weight",
	"output_norm.weight": "model.norm.weight",
	"output.weight":      "lm_head.weight",
}

// ggufToHF maps a GGUF tensor name to its HF name and the number of heads
// whose rows must be reordered (0: none).
func ggufToHF(name string, arch ggufArch, cfg Config) (hf string, permHeads int, ok bool) {
	if hf, ok := ggufGlobalNames[name]; ok {
		return hf, 0, true
	}
	rest, ok := strings.CutPrefix(name, "blk.")
	if !ok {
		return "", 0, false
	}
	num, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return "", 0, false
	}
	layer, err := strconv.Atoi(num)
	if err != nil || layer < 0 || strconv.Itoa(layer) != num {
		return "", 0, false
	}
	hfSuffix, ok := ggufTensorNames[suffix]
	if !ok {
		return "", 0, false
	}
	if arch.permuteQK {
		switch suffix {
		case "attn_q.weight":
			permHeads = cfg.Heads
		case "attn_k.weight":
			permHeads = cfg.KVHeads
		}
	}
	return fmt.Sprintf("model.layers.%d.%s", layer, hfSuffix), permHeads, true
}

// hfToGGUFName is the inverse of ggufToHF's naming, for naming a missing
// tensor as the GGUF file would.
func hfToGGUFName(hf string) (string, bool) {
	for g, h := range ggufGlobalNames {
		if h == hf {
			return g, true
		}
	}
	rest, ok := strings.CutPrefix(hf, "model.layers.")
	if !ok {
		return "", false
	}
	num, suffix, _ := strings.Cut(rest, ".")
	for g, h := range ggufTensorNames {
		if h == suffix {
			return "blk." + num + "." + g, true
		}
	}
	return "", false
}

// ggufSource says how to read tensor ti, stored at off: in place when it
// is a float type in the order the builder wants.
func ggufSource(src *sourceFile, path string, ti GGUFTensorInfo, off int64, shape []int64, permHeads int) tensorSource {
	if dt, ok := ggufFloatTypes[ti.Type]; ok && permHeads == 0 {
		return storedSource(shape, newStoredTensor(src, off, elemCount(shape), dt, path, ti.Name))
	}
	return tensorSource{shape: shape, read: ggufReader(src, path, ti, off, shape, permHeads)}
}

var ggufFloatTypes = map[uint32]storedType{ggmlF32: dtF32, ggmlF16: dtF16, ggmlBF16: dtBF16}

// ggufReader returns the Read function of one tensor.
func ggufReader(r io.ReaderAt, path string, ti GGUFTensorInfo, off int64, shape []int64, permHeads int) func() ([]float32, error) {
	return func() ([]float32, error) {
		out := make([]float32, elemCount(shape))
		var err error
		switch ti.Type {
		case ggmlF32:
			err = readFloats(r, off, out, dtF32)
		case ggmlF16:
			err = readFloats(r, off, out, dtF16)
		case ggmlBF16:
			err = readFloats(r, off, out, dtBF16)
		case ggmlQ8_0:
			err = readQ8_0(r, off, out)
		default:
			err = fmt.Errorf("unsupported GGUF tensor type %s", ggmlTypeName(ti.Type))
		}
		if err != nil {
			return nil, fmt.Errorf("convert: %s: tensor %s: %w", path, ti.Name, err)
		}
		if permHeads > 0 {
			out = interleavedToHalves(out, permHeads, int(shape[len(shape)-1]))
		}
		return out, nil
	}
}

// readQ8_0 dequantizes len(out) Q8_0 values (len(out)/32 blocks) at off.
func readQ8_0(r io.ReaderAt, off int64, out []float32) error {
	blocks := int64(len(out)) / q8BlockValues
	per := int64(chunkBytes / q8BlockBytes)
	buf := make([]byte, min(blocks, per)*q8BlockBytes)
	for done := int64(0); done < blocks; {
		nb := min(per, blocks-done)
		b := buf[:nb*q8BlockBytes]
		if err := readAt(r, b, off+done*q8BlockBytes); err != nil {
			return err
		}
		dequantizeQ8_0(out[done*q8BlockValues:(done+nb)*q8BlockValues], b)
		done += nb
	}
	return nil
}

// dequantizeQ8_0 decodes whole Q8_0 blocks from b into out.
func dequantizeQ8_0(out []float32, b []byte) {
	for blk := 0; blk*q8BlockBytes < len(b); blk++ {
		p := b[blk*q8BlockBytes : (blk+1)*q8BlockBytes]
		d := float16to32(binary.LittleEndian.Uint16(p))
		o := out[blk*q8BlockValues : (blk+1)*q8BlockValues]
		for i, q := range p[2:] {
			o[i] = d * float32(int8(q))
		}
	}
}

// metaInt returns an integer metadata value of any integer type.
func metaInt(m map[string]any, key string) (int, bool) {
	switch v := m[key].(type) {
	case uint8:
		return int(v), true
	case int8:
		return int(v), true
	case uint16:
		return int(v), true
	case int16:
		return int(v), true
	case uint32:
		return int(v), true
	case int32:
		return int(v), true
	case uint64:
		if v > math.MaxInt32 {
			return 0, false
		}
		return int(v), true
	case int64:
		if v > math.MaxInt32 || v < math.MinInt32 {
			return 0, false
		}
		return int(v), true
	}
	return 0, false
}

// metaFloat returns a float metadata value.
func metaFloat(m map[string]any, key string) (float64, bool) {
	switch v := m[key].(type) {
	case float32:
		// The shortest decimal that rounds to v, so that 1e-5 stored
		// as float32 reads as 1e-5, not 9.99999974738e-06.
		f, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
		return f, true
	case float64:
		return v, true
	}
	if i, ok := metaInt(m, key); ok {
		return float64(i), true
	}
	return 0, false
}

// ggufParser reads the header sequentially, tracking the offset and
// refusing lengths that exceed what is left of the file (so a corrupt
// count cannot allocate gigabytes).
type ggufParser struct {
	r    *bufio.Reader
	pos  int64
	size int64
	err  error
}

func (p *ggufParser) read(n int64) []byte {
	if p.err != nil {
		return nil
	}
	if n > p.size-p.pos {
		p.err = errTruncatedRead
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(p.r, b); err != nil {
		p.err = errTruncatedRead
		return nil
	}
	p.pos += n
	return b
}

func (p *ggufParser) u8() uint8 {
	if b := p.read(1); b != nil {
		return b[0]
	}
	return 0
}

func (p *ggufParser) u16() uint16 {
	if b := p.read(2); b != nil {
		return binary.LittleEndian.Uint16(b)
	}
	return 0
}

func (p *ggufParser) u32() uint32 {
	if b := p.read(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (p *ggufParser) u64() uint64 {
	if b := p.read(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// count reads a uint64 element count and checks that count elements of
// at least minBytes each fit in the rest of the file.
func (p *ggufParser) count(minBytes int64) int64 {
	n := p.u64()
	if p.err == nil && (n > uint64(p.size) || int64(n)*minBytes > p.size-p.pos) {
		p.err = errTruncatedRead
	}
	if p.err != nil {
		return 0
	}
	return int64(n)
}

func (p *ggufParser) str() string {
	n := p.count(1)
	return string(p.read(n))
}

// value reads one metadata value of type t.
func (p *ggufParser) value(t uint32, depth int) any {
	switch t {
	case ggufUint8:
		return p.u8()
	case ggufInt8:
		return int8(p.u8())
	case ggufUint16:
		return p.u16()
	case ggufInt16:
		return int16(p.u16())
	case ggufUint32:
		return p.u32()
	case ggufInt32:
		return int32(p.u32())
	case ggufFloat32:
		return math.Float32frombits(p.u32())
	case ggufBool:
		return p.u8() != 0
	case ggufString:
		return p.str()
	case ggufUint64:
		return p.u64()
	case ggufInt64:
		return int64(p.u64())
	case ggufFloat64:
		return math.Float64frombits(p.u64())
	case ggufArray:
		if depth > 8 {
			p.fail(errors.New("metadata arrays nested too deeply"))
			return nil
		}
		et := p.u32()
		n := p.count(1)
		switch et {
		case ggufString:
			a := make([]string, 0, min(n, 1<<20))
			for i := int64(0); i < n && p.err == nil; i++ {
				a = append(a, p.str())
			}
			return a
		case ggufFloat32:
			a := make([]float32, 0, min(n, 1<<20))
			for i := int64(0); i < n && p.err == nil; i++ {
				a = append(a, math.Float32frombits(p.u32()))
			}
			return a
		case ggufInt32:
			a := make([]int32, 0, min(n, 1<<20))
			for i := int64(0); i < n && p.err == nil; i++ {
				a = append(a, int32(p.u32()))
			}
			return a
		case ggufUint32:
			a := make([]uint32, 0, min(n, 1<<20))
			for i := int64(0); i < n && p.err == nil; i++ {
				a = append(a, p.u32())
			}
			return a
		}
		a := make([]any, 0, min(n, 1<<20))
		for i := int64(0); i < n && p.err == nil; i++ {
			a = append(a, p.value(et, depth+1))
		}
		return a
	}
	p.fail(fmt.Errorf("unknown metadata value type %d", t))
	return nil
}

func (p *ggufParser) fail(err error) {
	if p.err == nil {
		p.err = err
	}
}

// parseGGUF reads the header, metadata and tensor infos of a GGUF file of
// the given size and returns the offset of the data section.
func parseGGUF(r io.ReaderAt, size int64) (*GGUF, int64, error) {
	p := &ggufParser{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	magic := p.read(4)
	if p.err != nil {
		return nil, 0, p.err
	}
	if string(magic) != ggufMagic {
		return nil, 0, fmt.Errorf("not a GGUF file (magic %q)", printable(magic))
	}
	g := &GGUF{Version: p.u32(), Metadata: map[string]any{}}
	switch {
	case p.err != nil:
		return nil, 0, p.err
	case g.Version == 1:
		return nil, 0, errors.New("GGUF version 1 not supported (want 2 or 3)")
	case g.Version > 0xffff:
		return nil, 0, fmt.Errorf("big-endian GGUF not supported (version field %#x)", g.Version)
	case g.Version > 3:
		return nil, 0, fmt.Errorf("GGUF version %d not supported (want 2 or 3)", g.Version)
	}
	nTensors := p.count(8 + 4 + 8 + 4 + 8)
	nKV := p.count(8 + 4)
	for i := int64(0); i < nKV && p.err == nil; i++ {
		key := p.str()
		t := p.u32()
		v := p.value(t, 0)
		if p.err != nil {
			p.err = fmt.Errorf("metadata %q: %w", key, p.err)
			break
		}
		g.Metadata[key] = v
	}
	seen := map[string]bool{}
	for i := int64(0); i < nTensors && p.err == nil; i++ {
		var ti GGUFTensorInfo
		ti.Name = p.str()
		nd := p.u32()
		if p.err == nil && nd > 8 {
			p.fail(fmt.Errorf("tensor %s: %d dimensions", ti.Name, nd))
		}
		for j := uint32(0); j < nd && p.err == nil; j++ {
			d := p.u64()
			if d > math.MaxInt32*8 {
				p.fail(fmt.Errorf("tensor %s: dimension %d", ti.Name, d))
			}
			ti.Dims = append(ti.Dims, d)
		}
		ti.Type = p.u32()
		ti.Offset = p.u64()
		if p.err != nil {
			p.err = fmt.Errorf("tensor info %d (%q): %w", i, ti.Name, p.err)
			break
		}
		if seen[ti.Name] {
			p.fail(fmt.Errorf("tensor %s listed twice", ti.Name))
		}
		seen[ti.Name] = true
		g.Infos = append(g.Infos, ti)
	}
	if p.err != nil {
		return nil, 0, p.err
	}
	align := int64(ggufDefaultAlignment)
	if v, ok := g.Metadata["general.alignment"]; ok {
		a, ok := metaInt(g.Metadata, "general.alignment")
		if !ok || a <= 0 || a&(a-1) != 0 {
			return nil, 0, fmt.Errorf("general.alignment %v is not a power of two", v)
		}
		align = int64(a)
	}
	for _, ti := range g.Infos {
		if ti.Offset%uint64(align) != 0 {
			return nil, 0, fmt.Errorf("tensor %s: offset %d is not %d-aligned", ti.Name, ti.Offset, align)
		}
	}
	dataStart := (p.pos + align - 1) / align * align
	return g, dataStart, nil
}
