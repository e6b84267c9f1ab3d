package convert_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// smallConfigs cover the builder's variants on models small enough to
// check against a plain Go forward pass.
var smallConfigs = []struct {
	name string
	cfg  convert.Config
	opts convert.BuildOptions
}{
	{"llama-gqa-tied", convert.Config{Family: convert.FamilyLlama, Layers: 3, Hidden: 32, Heads: 4, KVHeads: 2, FFN: 48, Vocab: 64,
		TiedEmbeddings: true, BOS: 1, EOS: 2}, convert.BuildOptions{}},
	{"llama-mha-untied", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 32, Heads: 4, KVHeads: 4, FFN: 40, Vocab: 50,
		BOS: 1, EOS: 2}, convert.BuildOptions{}},
	{"qwen2-bias-mqa-headdim", convert.Config{Family: convert.FamilyLlama, HFArchitecture: "Qwen2ForCausalLM", Layers: 2, Hidden: 32,
		Heads: 4, KVHeads: 1, HeadDim: 16, FFN: 40, Vocab: 64, QKVBias: true, RopeTheta: 1e6, NormEps: 1e-6, BOS: -1, EOS: 3},
		convert.BuildOptions{}},
	{"llama-external", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 128,
		TiedEmbeddings: true, BOS: 1, EOS: 2}, convert.BuildOptions{ExternalAbove: 1}},
	{"gpt2", convert.Config{Family: convert.FamilyGPT2, Layers: 2, Hidden: 32, Heads: 4, FFN: 128, Vocab: 64, MaxPositions: 32,
		BOS: 0, EOS: 0}, convert.BuildOptions{}},
	{"llama-float16", convert.Config{Family: convert.FamilyLlama, HFArchitecture: "Qwen2ForCausalLM", Layers: 2, Hidden: 32, Heads: 4,
		KVHeads: 2, FFN: 48, Vocab: 64, QKVBias: true, BOS: 1, EOS: 2}, convert.BuildOptions{DType: convert.Float16}},
	{"gpt2-float16-external", convert.Config{Family: convert.FamilyGPT2, Layers: 2, Hidden: 32, Heads: 4, FFN: 128, Vocab: 64,
		MaxPositions: 32, BOS: 0, EOS: 0}, convert.BuildOptions{DType: convert.Float16, ExternalAbove: 1}},
}

// TestSyntheticModels builds small synthetic models and checks the graph
// (graph.Check; graph.FindBlocks finds exactly L blocks with KV pair N in
// block N), the files beside it, and the model in onnxruntime: a full
// forward agrees with a plain Go forward pass (Llama family) and with
// decoding one token at a time through the KV cache.
func TestSyntheticModels(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, tc := range smallConfigs {
		t.Run(tc.name, func(t *testing.T) {
			ck := scaled{convert.Synthetic(tc.cfg, 7), 10}
			cfg := ck.Config()
			dir := t.TempDir()
			path := filepath.Join(dir, "model.onnx")
			if err := convert.Build(ck, path, tc.opts); err != nil {
				t.Fatal(err)
			}
			checkStructure(t, path, cfg, tc.opts.ExternalAbove > 0)

			ids := []int64{1, 5, 9, 3, 30, 2, 17}
			full := runFull(t, path, cfg, ids)
			if cfg.Family == convert.FamilyLlama {
				// With float16 weights the model computes in float32
				// with the rounded weights: so does the reference.
				var ref convert.Checkpoint = ck
				if tc.opts.DType == convert.Float16 {
					ref = halved{ck}
				}
				want := referenceLlama(t, ref, ids)
				d := maxDiff(full.logits, want)
				t.Logf("logits vs Go reference: max |diff| %.3g (logits up to %.3g)", d, maxAbs(want))
				if d > 1e-4 {
					t.Errorf("logits differ from the Go reference by %.3g", d)
				}
			}
			d := decodeStepByStep(t, path, cfg, ids, full)
			t.Logf("one token at a time through the KV cache vs full forward: max |diff| %.3g", d)
			if d > 1e-4 {
				t.Errorf("cached decoding differs from the full forward by %.3g", d)
			}
		})
	}
}

// scaled multiplies every weight except norm gains by f: std 0.2 instead
// of 0.02 makes attention and MLP move the residual stream enough that a
// wrong rotation, mask or head mapping shows well above the tolerance.
type scaled struct {
	convert.Checkpoint
	f float32
}

func (s scaled) Tensors() []convert.Tensor {
	ts := s.Checkpoint.Tensors()
	for i := range ts {
		if strings.HasSuffix(ts[i].Name, "norm.weight") || strings.Contains(ts[i].Name, ".ln_") {
			continue
		}
		read := ts[i].Read
		ts[i].Read = func() ([]float32, error) {
			v, err := read()
			for j := range v {
				v[j] *= s.f
			}
			return v, err
		}
	}
	return ts
}

// halved rounds every weight to float16 and back.
type halved struct{ convert.Checkpoint }

func (h halved) Tensors() []convert.Tensor {
	ts := h.Checkpoint.Tensors()
	for i := range ts {
		read := ts[i].Read
		ts[i].Read = func() ([]float32, error) {
			v, err := read()
			for j := range v {
				v[j] = ort.ToFloat16(v[j]).Float32()
			}
			return v, err
		}
	}
	return ts
}

func checkStructure(t *testing.T, path string, cfg convert.Config, external bool) {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatalf("graph.Check: %v", err)
	}
	for _, n := range m.Proto.GetGraph().GetNode() {
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			t.Errorf("node %s uses domain %q; want standard ONNX ops only", n.GetName(), d)
		}
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatalf("FindBlocks: %v", err)
	}
	if len(d.Blocks) != cfg.Layers {
		t.Fatalf("FindBlocks found %d blocks, want %d", len(d.Blocks), cfg.Layers)
	}
	for i, b := range d.Blocks {
		wantIn := []string{fmt.Sprintf("past_key_values.%d.key", i), fmt.Sprintf("past_key_values.%d.value", i)}
		wantOut := []string{fmt.Sprintf("present.%d.key", i), fmt.Sprintf("present.%d.value", i)}
		if !slices.Equal(b.KVInputs, wantIn) || !slices.Equal(b.KVOutputs, wantOut) {
			t.Errorf("block %d: KV %v → %v, want %v → %v", i, b.KVInputs, b.KVOutputs, wantIn, wantOut)
		}
	}
	if d.Logits != "logits" {
		t.Errorf("logits output %q", d.Logits)
	}
	prefix, q := "/model/layers.%d", "model.layers.0.self_attn.q_proj.weight"
	if cfg.Family == convert.FamilyGPT2 {
		prefix, q = "/transformer/h.%d", "transformer.h.0.attn.c_attn.weight"
	}
	if len(d.Sites) != 2*cfg.Layers {
		t.Fatalf("%d residual sites, want %d", len(d.Sites), 2*cfg.Layers)
	}
	for i, s := range d.Sites {
		want := fmt.Sprintf(prefix, i/2) + []string{"/Add", "/Add_1"}[i%2]
		if s.Node.GetName() != want || s.Node.GetOpType() != "Add" {
			t.Errorf("residual site %d is %s %s, want Add %s", i, s.Node.GetOpType(), s.Node.GetName(), want)
		}
	}
	// Linear weights keep their HF names and are stored [in, out].
	wq := m.Initializer(q)
	wantDims := []int64{int64(cfg.Hidden), int64(cfg.Heads * cfg.HeadDim)}
	if cfg.Family == convert.FamilyGPT2 {
		wantDims[1] *= 3
	}
	if wq == nil || !slices.Equal(wq.GetDims(), wantDims) {
		t.Errorf("initializer %s: %v, want dims %v", q, wq.GetDims(), wantDims)
	}

	dir := filepath.Dir(path)
	data := path + ".data"
	_, err = os.Stat(data)
	if external != (err == nil) {
		t.Errorf("external data file %s: exists=%v, want %v", data, err == nil, external)
	}
	if external {
		m.WalkTensors(func(tp *onnxpb.TensorProto) bool {
			if graph.IsExternal(tp) {
				ref, err := graph.ParseExternalRef(tp)
				if err != nil || ref.Offset%4096 != 0 || ref.Location != "model.onnx.data" {
					t.Errorf("tensor %s: external ref %+v (%v), want 4096-aligned in model.onnx.data", tp.GetName(), ref, err)
				}
			}
			return true
		})
	}
	for _, f := range []string{"config.json", "genai_config.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
}

// forward is one run's logits [seq][vocab] (batch 1) and presents.
type forward struct {
	logits   [][]float64
	presents map[string]*ort.Tensor
}

func emptyPast(t testing.TB, cfg convert.Config, in map[string]*ort.Tensor) {
	t.Helper()
	for l := 0; l < cfg.Layers; l++ {
		for _, kv := range []string{"key", "value"} {
			z, err := ort.Zeros(ort.Float, []int64{1, int64(cfg.KVHeads), 0, int64(cfg.HeadDim)})
			if err != nil {
				t.Fatal(err)
			}
			in[fmt.Sprintf("past_key_values.%d.%s", l, kv)] = z
		}
	}
}

func int64Tensor(t testing.TB, shape []int64, v []int64) *ort.Tensor {
	t.Helper()
	x, err := ort.NewInt64(shape, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func runFull(t testing.TB, path string, cfg convert.Config, ids []int64) forward {
	t.Helper()
	sess, err := ort.NewSession(path, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	n := int64(len(ids))
	mask, pos := make([]int64, n), make([]int64, n)
	for i := range mask {
		mask[i], pos[i] = 1, int64(i)
	}
	in := map[string]*ort.Tensor{
		"input_ids":      int64Tensor(t, []int64{1, n}, ids),
		"attention_mask": int64Tensor(t, []int64{1, n}, mask),
		"position_ids":   int64Tensor(t, []int64{1, n}, pos),
	}
	emptyPast(t, cfg, in)
	out, err := sess.Run(in, nil)
	if err != nil {
		t.Fatal(err)
	}
	return forward{logits: rows(t, out["logits"], cfg.Vocab), presents: out}
}

// decodeStepByStep feeds ids one at a time, each step with the previous
// step's presents as past, and returns the largest difference from the
// full forward's logits and presents.
func decodeStepByStep(t testing.TB, path string, cfg convert.Config, ids []int64, full forward) float64 {
	t.Helper()
	sess, err := ort.NewSession(path, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	in := map[string]*ort.Tensor{}
	emptyPast(t, cfg, in)
	worst := 0.0
	var out map[string]*ort.Tensor
	for i, id := range ids {
		mask := make([]int64, i+1)
		for j := range mask {
			mask[j] = 1
		}
		in["input_ids"] = int64Tensor(t, []int64{1, 1}, []int64{id})
		in["attention_mask"] = int64Tensor(t, []int64{1, int64(i + 1)}, mask)
		in["position_ids"] = int64Tensor(t, []int64{1, 1}, []int64{int64(i)})
		out, err = sess.Run(in, nil)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		worst = max(worst, maxDiff(rows(t, out["logits"], cfg.Vocab), full.logits[i:i+1]))
		for l := 0; l < cfg.Layers; l++ {
			for _, kv := range []string{"key", "value"} {
				in[fmt.Sprintf("past_key_values.%d.%s", l, kv)] = out[fmt.Sprintf("present.%d.%s", l, kv)]
			}
		}
	}
	for name, p := range out {
		if strings.HasPrefix(name, "present.") {
			d, err := ort.MaxAbsDiff(p, full.presents[name])
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			worst = max(worst, d)
		}
	}
	return worst
}

func rows(t testing.TB, x *ort.Tensor, vocab int) [][]float64 {
	t.Helper()
	v, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	var out [][]float64
	for i := 0; i+vocab <= len(v); i += vocab {
		r := make([]float64, vocab)
		for j := range r {
			r[j] = float64(v[i+j])
		}
		out = append(out, r)
	}
	return out
}

func maxDiff(a, b [][]float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	worst := 0.0
	for i := range a {
		if len(a[i]) != len(b[i]) {
			return math.Inf(1)
		}
		for j := range a[i] {
			d := math.Abs(a[i][j] - b[i][j])
			if math.IsNaN(d) {
				return math.Inf(1)
			}
			worst = max(worst, d)
		}
	}
	return worst
}

func maxAbs(a [][]float64) float64 {
	m := 0.0
	for _, r := range a {
		for _, x := range r {
			m = max(m, math.Abs(x))
		}
	}
	return m
}

// TestSyntheticDeterministic checks that Synthetic's weights depend only
// on (config, seed, tensor) — not on read order or parallelism — and have
// the documented statistics.
func TestSyntheticDeterministic(t *testing.T) {
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 512, Heads: 8, FFN: 2200, Vocab: 1000}
	read := func(ck convert.Checkpoint, i int) []float32 {
		v, err := ck.Tensors()[i].Read()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	a, b := convert.Synthetic(cfg, 1), convert.Synthetic(cfg, 1)
	n := len(a.Tensors())
	last := read(b, n-2) // read out of order first
	prev := runtime.GOMAXPROCS(1)
	serial := read(b, 3) // gate/up: several 1 Mi-value chunks
	runtime.GOMAXPROCS(prev)
	if !slices.Equal(read(a, n-2), last) || !slices.Equal(read(a, 3), serial) || !slices.Equal(read(a, 3), read(a, 3)) {
		t.Error("same config and seed give different weights")
	}
	if slices.Equal(read(convert.Synthetic(cfg, 2), 3), serial) {
		t.Error("seeds 1 and 2 give the same weights")
	}
	if slices.Equal(read(a, 2), read(a, 3)[:len(read(a, 2))]) {
		t.Error("two tensors share their values")
	}
	for i, ten := range a.Tensors() {
		v := read(a, i)
		var sum, sq float64
		for _, x := range v {
			sum += float64(x)
			sq += float64(x) * float64(x)
		}
		mean := sum / float64(len(v))
		std := math.Sqrt(sq/float64(len(v)) - mean*mean)
		wantMean := 0.0
		if strings.HasSuffix(ten.Name, "norm.weight") {
			wantMean = 1
		}
		if math.Abs(mean-wantMean) > 0.01 || math.Abs(std-0.02) > 0.004 {
			t.Errorf("%s: mean %.4f std %.4f, want %.0f and 0.02", ten.Name, mean, std, wantMean)
		}
	}
}
