package convert

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

func sharedModel(t *testing.T, rel ...string) string {
	t.Helper()
	return filepath.Join(append([]string{testenv.SharedDir(t), "models"}, rel...)...)
}

// readAll reads every tensor of ck into memory (tests only; the builder
// reads one at a time).
func readAll(t testing.TB, ck Checkpoint) map[string][]float32 {
	t.Helper()
	out := map[string][]float32{}
	for _, ts := range ck.Tensors() {
		d, err := ts.Read()
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(d)) != elemCount(ts.Shape) {
			t.Fatalf("%s: %d values for shape %v", ts.Name, len(d), ts.Shape)
		}
		out[ts.Name] = d
	}
	return out
}

func shapes(ck Checkpoint) map[string][]int64 {
	out := map[string][]int64{}
	for _, ts := range ck.Tensors() {
		out[ts.Name] = ts.Shape
	}
	return out
}

// maxAbsDiff compares two tensors; a length mismatch is +Inf.
func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

func float32sLE(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// transpose turns a row-major [rows, cols] matrix into [cols, rows].
func transpose(w []float32, rows, cols int) []float32 {
	out := make([]float32, len(w))
	for r := range rows {
		for c := range cols {
			out[c*rows+r] = w[r*cols+c]
		}
	}
	return out
}

// torchFixtureWeights returns the weights of testdata/models/stories260k.onnx,
// which PyTorch exported from the stories260K checkpoint with HF names and
// q/k rows permuted by export_torch.py (not by this package). Norms and
// the embedding keep their names; the Linear weights were constant-folded
// into anonymous [in, out] initializers, found here through the MatMul
// nodes that read them and transposed back to [out, in].
func torchFixtureWeights(t *testing.T) map[string][]float32 {
	t.Helper()
	m, err := graph.Load(testenv.Testdata(t, "models", "stories260k.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	ix := graph.NewIndex(m.Proto.GetGraph())
	out := map[string][]float32{}
	for name, init := range ix.Initializers {
		if strings.HasPrefix(name, "onnx::") {
			continue
		}
		b, err := m.TensorBytes(init)
		if err != nil {
			t.Fatal(err)
		}
		out[name] = float32sLE(b)
	}
	re := regexp.MustCompile(`^/model/layers\.(\d+)/(self_attn|mlp)/(\w+_proj)/MatMul$`)
	for _, n := range m.Proto.GetGraph().GetNode() {
		if n.GetOpType() != "MatMul" {
			continue
		}
		var name string
		if sm := re.FindStringSubmatch(n.GetName()); sm != nil {
			name = fmt.Sprintf("model.layers.%s.%s.%s.weight", sm[1], sm[2], sm[3])
		} else if n.GetName() == "/lm_head/MatMul" {
			name = "lm_head.weight"
		} else {
			continue
		}
		init := ix.Initializers[n.GetInput()[1]]
		if init == nil {
			t.Fatalf("%s: input %s is not an initializer", n.GetName(), n.GetInput()[1])
		}
		b, err := m.TensorBytes(init)
		if err != nil {
			t.Fatal(err)
		}
		dims := init.GetDims()
		out[name] = transpose(float32sLE(b), int(dims[0]), int(dims[1]))
	}
	return out
}

var stories260KConfig = Config{
	Family: FamilyLlama, HFArchitecture: "LlamaForCausalLM",
	Layers: 5, Hidden: 64, Heads: 8, KVHeads: 4, HeadDim: 8, FFN: 172, Vocab: 512,
	MaxPositions: 512, NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2,
}

func TestLlama2CStories260KMatchesTorchFixture(t *testing.T) {
	ck, err := Open(sharedModel(t, "stories260K", "stories260K.bin"), OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if l, ok := ck.(*Llama2C); !ok || l.Version != 0 {
		t.Fatalf("Open returned %T, want a version 0 *Llama2C", ck)
	}
	if got := ck.Config(); got != stories260KConfig {
		t.Errorf("config\n got %+v\nwant %+v", got, stories260KConfig)
	}
	got := readAll(t, ck)
	want := torchFixtureWeights(t)
	// The fixture's head is the tied embedding, exported as its own
	// transposed copy: it checks the tie.
	if d := maxAbsDiff(want["lm_head.weight"], got["model.embed_tokens.weight"]); d != 0 {
		t.Errorf("fixture lm_head vs embed_tokens: max |diff| %g", d)
	}
	delete(want, "lm_head.weight")
	if len(got) != len(want) || len(got) != 2+9*5 {
		t.Errorf("%d tensors read, fixture has %d", len(got), len(want))
	}
	for name, w := range want {
		// Both sides are the same float32 values reordered: exact.
		if d := maxAbsDiff(got[name], w); d != 0 {
			t.Errorf("%s: max |diff| %g against the torch fixture", name, d)
		}
	}
	// The permutation must matter, or the comparison proves nothing.
	q := got["model.layers.0.self_attn.q_proj.weight"]
	if d := maxAbsDiff(refPermute(q, 8, 64), q); d == 0 {
		t.Error("q_proj is invariant under the RoPE permutation")
	}
}

func TestLlama2CBabyLlama(t *testing.T) {
	ck, err := OpenLlama2C(sharedModel(t, "babyllama-tok105", "model5000.bin"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	want := Config{
		Family: FamilyLlama, HFArchitecture: "LlamaForCausalLM",
		Layers: 5, Hidden: 128, Heads: 8, KVHeads: 4, HeadDim: 16, FFN: 352, Vocab: 105,
		MaxPositions: 256, NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2,
	}
	if got := ck.Config(); got != want {
		t.Errorf("config\n got %+v\nwant %+v", got, want)
	}
	sh := shapes(ck)
	for name, shape := range map[string][]int64{
		"model.embed_tokens.weight":                      {105, 128},
		"model.layers.4.self_attn.k_proj.weight":         {64, 128},
		"model.layers.0.mlp.down_proj.weight":            {128, 352},
		"model.layers.2.post_attention_layernorm.weight": {128},
	} {
		if !slices.Equal(sh[name], shape) {
			t.Errorf("%s: shape %v, want %v", name, sh[name], shape)
		}
	}
	if _, ok := sh["lm_head.weight"]; ok {
		t.Error("tied checkpoint has lm_head.weight")
	}
	// A trained model's norms are not all ones and its weights are finite.
	all := readAll(t, ck)
	for name, d := range all {
		for _, v := range d {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%s: non-finite value", name)
			}
		}
	}
}

// refPermute is transformers' permute for HF conversion written as the
// index map of w.view(heads, hd/2, 2, cols).transpose(1, 2): element
// (h, a, b, c) of the view lands at (h, b, a, c).
func refPermute(w []float32, heads, cols int) []float32 {
	hd := len(w) / cols / heads
	out := make([]float32, len(w))
	for h := range heads {
		for a := range hd / 2 {
			for b := range 2 {
				for c := range cols {
					out[((h*2+b)*(hd/2)+a)*cols+c] = w[((h*(hd/2)+a)*2+b)*cols+c]
				}
			}
		}
	}
	return out
}

func TestInterleavedToHalves(t *testing.T) {
	// One row per value: rows r0..r7 of two heads of size 4 become
	// r0 r2 r1 r3 | r4 r6 r5 r7 (even then odd members of each pair).
	w := []float32{0, 1, 2, 3, 4, 5, 6, 7}
	got := interleavedToHalves(w, 2, 1)
	if want := []float32{0, 2, 1, 3, 4, 6, 5, 7}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Against the literal view/transpose on a wider, non-square matrix.
	w = make([]float32, 4*8*3)
	for i := range w {
		w[i] = float32(i)
	}
	if got, want := interleavedToHalves(w, 4, 3), refPermute(w, 4, 3); !slices.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
}

// legacyWeights is a llama2.c checkpoint parsed independently of the
// reader, like export_torch.py's load_llama2c: the header and the raw
// float32 groups in file order.
type legacyWeights struct {
	hdr    [7]int32
	groups map[string][]float32 // "tok", "rms_att", "wq", … each covering all layers
}

var legacyOrder = []string{"tok", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "freq_real", "freq_imag", "cls"}

func parseLegacy(t *testing.T, path string) legacyWeights {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lw legacyWeights
	if err := binary.Read(bytes.NewReader(data), binary.LittleEndian, &lw.hdr); err != nil {
		t.Fatal(err)
	}
	dim, hidden, L, heads, kv, vocab, seq := int(lw.hdr[0]), int(lw.hdr[1]), int(lw.hdr[2]), int(lw.hdr[3]), int(lw.hdr[4]), int(lw.hdr[5]), int(lw.hdr[6])
	shared := vocab > 0
	vocab = max(vocab, -vocab)
	hs := dim / heads
	sizes := map[string]int{
		"tok": vocab * dim, "rms_att": L * dim, "wq": L * dim * dim, "wk": L * kv * hs * dim,
		"wv": L * kv * hs * dim, "wo": L * dim * dim, "rms_ffn": L * dim, "w1": L * hidden * dim,
		"w2": L * dim * hidden, "w3": L * hidden * dim, "rms_final": dim,
		"freq_real": seq * hs / 2, "freq_imag": seq * hs / 2, "cls": 0,
	}
	if !shared {
		sizes["cls"] = vocab * dim
	}
	flat := float32sLE(data[28:])
	lw.groups = map[string][]float32{}
	pos := 0
	for _, g := range legacyOrder {
		lw.groups[g] = flat[pos : pos+sizes[g]]
		pos += sizes[g]
	}
	if pos != len(flat) {
		t.Fatalf("%s: %d trailing floats", path, len(flat)-pos)
	}
	return lw
}

// writeV1V2 writes lw as export.py's version1_export or version2_export
// (group size gs) would.
func writeV1V2(t *testing.T, path string, lw legacyWeights, version, gs int) {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	binary.Write(&b, le, uint32(0x616b3432))
	binary.Write(&b, le, int32(version))
	hdr := lw.hdr
	shared := hdr[5] > 0
	hdr[5] = max(hdr[5], -hdr[5])
	binary.Write(&b, le, hdr)
	if shared {
		b.WriteByte(1)
	} else {
		b.WriteByte(0)
	}
	if version == 2 {
		binary.Write(&b, le, int32(gs))
	}
	b.Write(make([]byte, 256-b.Len()))
	norms := []string{"rms_att", "rms_ffn", "rms_final"}
	mats := []string{"tok", "wq", "wk", "wv", "wo", "w1", "w2", "w3"}
	if !shared {
		mats = append(mats, "cls")
	}
	L := int(hdr[2])
	for _, g := range norms {
		binary.Write(&b, le, lw.groups[g])
	}
	for _, g := range mats {
		if version == 1 {
			binary.Write(&b, le, lw.groups[g])
			continue
		}
		// One tensor at a time: per-layer groups are separate tensors.
		n := 1
		if g != "tok" && g != "cls" {
			n = L
		}
		all := lw.groups[g]
		per := len(all) / n
		for i := range n {
			q, s := quantizeQ80(all[i*per:(i+1)*per], gs)
			binary.Write(&b, le, q)
			binary.Write(&b, le, s)
		}
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// quantizeQ80 is export.py's quantize_q80: per group, scale = max|w|/127,
// q = round(w/scale) (ties to even, as torch.round).
func quantizeQ80(w []float32, gs int) ([]int8, []float32) {
	q := make([]int8, len(w))
	s := make([]float32, len(w)/gs)
	for g := range s {
		grp := w[g*gs : (g+1)*gs]
		var m float32
		for _, v := range grp {
			m = max(m, float32(math.Abs(float64(v))))
		}
		s[g] = m / 127
		for i, v := range grp {
			q[g*gs+i] = int8(math.RoundToEven(float64(v / s[g])))
		}
	}
	return q, s
}

func TestLlama2CVersions(t *testing.T) {
	src := sharedModel(t, "stories260K", "stories260K.bin")
	lw := parseLegacy(t, src)
	legacy, err := OpenLlama2C(src)
	if err != nil {
		t.Fatal(err)
	}
	defer legacy.Close()
	want := readAll(t, legacy)
	dir := t.TempDir()

	v1 := filepath.Join(dir, "v1.bin")
	writeV1V2(t, v1, lw, 1, 0)
	ck, err := Open(v1, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l, ok := ck.(*Llama2C); !ok || l.Version != 1 {
		t.Fatalf("v1: Open returned %T", ck)
	}
	if cfg := ck.Config(); cfg != stories260KConfig {
		t.Errorf("v1 config %+v", cfg)
	}
	for name, got := range readAll(t, ck) {
		if d := maxAbsDiff(got, want[name]); d != 0 {
			t.Errorf("v1 %s: max |diff| %g", name, d)
		}
	}
	ck.Close()

	// Version 2: the expected values are the test's own quantization,
	// dequantized and permuted independently of the reader.
	const gs = 64
	v2 := filepath.Join(dir, "v2.bin")
	writeV1V2(t, v2, lw, 2, gs)
	ck, err = Open(v2, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if l, ok := ck.(*Llama2C); !ok || l.Version != 2 {
		t.Fatalf("v2: Open returned %T", ck)
	}
	got := readAll(t, ck)
	dequant := func(w []float32) []float32 {
		q, s := quantizeQ80(w, gs)
		out := make([]float32, len(w))
		for i := range q {
			out[i] = float32(q[i]) * s[i/gs]
		}
		return out
	}
	hd := 8
	for i := range 5 {
		layer := func(g string, rows int) []float32 {
			per := rows * 64
			if g == "w1" || g == "w3" || g == "w2" {
				per = 172 * 64
			}
			return lw.groups[g][i*per : (i+1)*per]
		}
		p := fmt.Sprintf("model.layers.%d.", i)
		exp := map[string][]float32{
			p + "self_attn.q_proj.weight": refPermute(dequant(layer("wq", 64)), 8, 64),
			p + "self_attn.k_proj.weight": refPermute(dequant(layer("wk", 4*hd)), 4, 64),
			p + "self_attn.v_proj.weight": dequant(layer("wv", 4*hd)),
			p + "self_attn.o_proj.weight": dequant(layer("wo", 64)),
			p + "mlp.gate_proj.weight":    dequant(layer("w1", 0)),
			p + "mlp.down_proj.weight":    dequant(layer("w2", 0)),
			p + "mlp.up_proj.weight":      dequant(layer("w3", 0)),
			p + "input_layernorm.weight":  lw.groups["rms_att"][i*64 : (i+1)*64],
		}
		for name, e := range exp {
			if d := maxAbsDiff(got[name], e); d != 0 {
				t.Errorf("v2 %s: max |diff| %g against the test's dequantization", name, d)
			}
			// And within half a quantization step of the fp32 weights.
			if d := maxAbsDiff(got[name], want[name]); d > 0.5*0.05 {
				t.Errorf("v2 %s: max |diff| %g against fp32", name, d)
			}
		}
	}
	if d := maxAbsDiff(got["model.embed_tokens.weight"], dequant(lw.groups["tok"])); d != 0 {
		t.Errorf("v2 embed_tokens: max |diff| %g", d)
	}
}

func TestLlama2CUntiedClassifier(t *testing.T) {
	// A legacy file with a negative vocab_size carries its own
	// classifier after the freq_cis tables.
	lw := parseLegacy(t, sharedModel(t, "stories260K", "stories260K.bin"))
	cls := make([]float32, len(lw.groups["tok"]))
	for i := range cls {
		cls[i] = float32(i%97) / 97
	}
	var b bytes.Buffer
	hdr := lw.hdr
	hdr[5] = -hdr[5]
	binary.Write(&b, binary.LittleEndian, hdr)
	for _, g := range legacyOrder[:len(legacyOrder)-1] {
		binary.Write(&b, binary.LittleEndian, lw.groups[g])
	}
	binary.Write(&b, binary.LittleEndian, cls)
	path := filepath.Join(t.TempDir(), "untied.bin")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	ck, err := Open(path, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Config().TiedEmbeddings || ck.Config().Vocab != 512 {
		t.Errorf("config %+v", ck.Config())
	}
	got := readAll(t, ck)
	if !slices.Equal(got["lm_head.weight"], cls) {
		t.Error("lm_head.weight differs from the classifier written")
	}
	if !slices.Equal(got["model.embed_tokens.weight"], lw.groups["tok"]) {
		t.Error("embed_tokens differs")
	}
}

var updateGolden = flag.Bool("update-readers", false, "rewrite convert/testdata/*.golden.json from the readers")

// goldenTensor is one line of a reader golden file: what the builder
// will see, in order, with a hash of the float32 values.
type goldenTensor struct {
	Name   string  `json:"name"`
	Shape  []int64 `json:"shape"`
	SHA256 string  `json:"sha256"` // of the little-endian float32 values
}

type golden struct {
	Config  Config         `json:"config"`
	Tensors []goldenTensor `json:"tensors"`
}

func checkGolden(t *testing.T, ck Checkpoint, file string) {
	t.Helper()
	g := golden{Config: ck.Config()}
	for _, ts := range ck.Tensors() {
		d, err := ts.Read()
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		binary.Write(h, binary.LittleEndian, d)
		g.Tensors = append(g.Tensors, goldenTensor{ts.Name, ts.Shape, hex.EncodeToString(h.Sum(nil))})
	}
	// One tensor a line, so that diffs read well.
	var b bytes.Buffer
	cfg, err := json.Marshal(g.Config)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(&b, "{\"config\": %s,\n\"tensors\": [\n", cfg)
	for i, gt := range g.Tensors {
		line, _ := json.Marshal(gt)
		sep := ","
		if i == len(g.Tensors)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "  %s%s\n", line, sep)
	}
	b.WriteString("]}\n")
	got := b.Bytes()
	path := filepath.Join("testdata", file)
	if *updateGolden {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./convert -run Golden -update-readers)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the reader's output (rerun with -update-readers if the change is intended):\n%s", path, got)
	}
}

func TestReadersGolden(t *testing.T) {
	for _, c := range []struct{ model, golden string }{
		{"stories260K.bin", "stories260K.bin.golden.json"},
		{"stories260K.gguf", "stories260K.gguf.golden.json"},
	} {
		ck, err := Open(sharedModel(t, "stories260K", c.model), OpenOptions{})
		if err != nil {
			t.Fatal(err)
		}
		checkGolden(t, ck, c.golden)
		ck.Close()
	}
}
