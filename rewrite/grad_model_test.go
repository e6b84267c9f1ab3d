package rewrite_test

import (
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// gradPromote turns initializers into graph inputs (as the LoRA trainer
// does with adapters) and returns feeds holding their values.
func gradPromote(t testing.TB, m *graph.Model, names ...string) map[string]*ort.Tensor {
	t.Helper()
	g := m.Proto.Graph
	feeds := map[string]*ort.Tensor{}
	for _, name := range names {
		i := -1
		for k, init := range g.Initializer {
			if init.GetName() == name {
				i = k
			}
		}
		if i < 0 {
			t.Fatalf("no initializer %q", name)
		}
		init := g.Initializer[i]
		raw, err := m.TensorBytes(init)
		if err != nil {
			t.Fatal(err)
		}
		feeds[name], err = ort.NewTensor(ort.DType(init.GetDataType()), init.GetDims(), append([]byte(nil), raw...))
		if err != nil {
			t.Fatal(err)
		}
		g.Initializer = append(g.Initializer[:i], g.Initializer[i+1:]...)
		vi := &onnxpb.ValueInfoProto{Name: proto.String(name), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(init.GetDataType()), Shape: &onnxpb.TensorShapeProto{}}}}}
		for _, d := range init.GetDims() {
			s := vi.Type.GetTensorType().Shape
			s.Dim = append(s.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}})
		}
		g.Input = append(g.Input, vi)
	}
	return feeds
}

// gradDecoderFeeds feeds a causal LM's inputs for a batch of B rows of S
// tokens (empty KV cache), plus labels and label weights (one weight 0).
func gradDecoderFeeds(t testing.TB, m *graph.Model, B, S int64, vocab int, rng *rand.Rand) map[string]*ort.Tensor {
	t.Helper()
	feeds := map[string]*ort.Tensor{}
	must := func(x *ort.Tensor, err error) *ort.Tensor {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	ids := func(f func(b, s int64) int64) []int64 {
		v := make([]int64, B*S)
		for b := range B {
			for s := range S {
				v[b*S+s] = f(b, s)
			}
		}
		return v
	}
	for _, vi := range m.Proto.Graph.Input {
		name := vi.GetName()
		tt := vi.GetType().GetTensorType()
		switch {
		case name == "input_ids" || name == "labels":
			feeds[name] = must(ort.NewInt64([]int64{B, S}, ids(func(int64, int64) int64 { return int64(rng.IntN(vocab)) })))
		case name == "attention_mask":
			feeds[name] = must(ort.NewInt64([]int64{B, S}, ids(func(int64, int64) int64 { return 1 })))
		case name == "position_ids":
			feeds[name] = must(ort.NewInt64([]int64{B, S}, ids(func(_, s int64) int64 { return s })))
		case strings.HasPrefix(name, "past_key_values"):
			var shape []int64
			for _, d := range tt.GetShape().GetDim() {
				switch p := d.GetDimParam(); {
				case p == "":
					shape = append(shape, d.GetDimValue())
				case strings.Contains(p, "batch"):
					shape = append(shape, B)
				default:
					shape = append(shape, 0)
				}
			}
			feeds[name] = must(ort.NewTensor(ort.DType(tt.GetElemType()), shape, nil))
		case name == "label_weights":
			dt := tt.GetElemType()
			w := make([]float64, B*S)
			for i := range w {
				w[i] = 0.5 + rng.Float64()
			}
			w[0] = 0
			if dt == int32(onnxpb.TensorProto_DOUBLE) {
				feeds[name] = must(ort.NewFloat64([]int64{B, S}, w))
			} else {
				w32 := make([]float32, len(w))
				for i, v := range w {
					w32[i] = float32(v)
				}
				feeds[name] = must(ort.NewFloat32([]int64{B, S}, w32))
			}
		}
	}
	return feeds
}

func gradBuildSynthetic(t testing.TB, cfg convert.Config) *graph.Model {
	t.Helper()
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := convert.Build(convert.Synthetic(cfg, 5), p, convert.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := graph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// gradCheckModel makes wrt inputs, appends the loss and the gradient, and
// compares with finite differences on up to maxElem elements per input.
func gradCheckModel(t *testing.T, m *graph.Model, wrt []string, vocab int, maxElem int) map[string]float64 {
	t.Helper()
	rng := rand.New(rand.NewPCG(11, 12))
	if err := rewrite.ToDouble(m); err != nil {
		t.Fatal(err)
	}
	wfeeds := gradPromote(t, m, wrt...)
	if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
		t.Fatal(err)
	}
	fwd := &graph.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto), Dir: m.Dir}
	if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss_sum", WithRespectTo: wrt}); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	// One gradient graph serves every batch shape, including dynamic
	// dims that happen to be 1.
	worst := map[string]float64{}
	for _, bs := range [][2]int64{{2, 5}, {1, 1}, {1, 4}} {
		feeds := gradDecoderFeeds(t, m, bs[0], bs[1], vocab, rng)
		for k, v := range wfeeds {
			feeds[k] = v
		}
		for w, e := range gradCompare(t, fwd, m, "loss_sum", wrt, feeds, gradFD{h: 1e-5, maxElem: maxElem}, rng) {
			worst[w] = math.Max(worst[w], e)
			if e > 1e-4 || math.IsNaN(e) {
				t.Errorf("batch %v: d loss/d %s: relative error %.3g > 1e-4", bs, w, e)
			}
		}
	}
	all := 0.0
	for w, e := range worst {
		t.Logf("d loss/d %s: relative error ≤ %.3g", w, e)
		all = math.Max(all, e)
	}
	t.Logf("worst relative error: %.3g", all)
	return worst
}

var gradTinyLlama = convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 16, Heads: 4, KVHeads: 2, FFN: 24, Vocab: 40, BOS: 1, EOS: 2}

// TestGradientLlamaBlock: block 0's MLP and q projection of a synthetic
// Llama (float64), through attention, RoPE, RMSNorm and both blocks.
func TestGradientLlamaBlock(t *testing.T) {
	testenv.ORTLibrary(t)
	m := gradBuildSynthetic(t, gradTinyLlama)
	gradCheckModel(t, m, []string{
		"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.down_proj.weight",
		"model.layers.0.self_attn.q_proj.weight",
	}, gradTinyLlama.Vocab, 48)
}

// TestGradientWholeModels: every weight of one-block synthetic Llama and
// GPT-2 models (embeddings through Gather, tied heads, norms, biases).
func TestGradientWholeModels(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, cfg := range []convert.Config{
		{Family: convert.FamilyLlama, Layers: 1, Hidden: 16, Heads: 4, KVHeads: 2, FFN: 24, Vocab: 40, BOS: 1, EOS: 2},
		{Family: convert.FamilyLlama, Layers: 1, Hidden: 16, Heads: 4, KVHeads: 4, FFN: 24, Vocab: 40, BOS: 1, EOS: 2, TiedEmbeddings: true},
		{Family: convert.FamilyGPT2, Layers: 1, Hidden: 16, Heads: 4, KVHeads: 4, FFN: 32, Vocab: 40, BOS: 1, EOS: 2},
	} {
		name := string(cfg.Family)
		if cfg.TiedEmbeddings {
			name += "/tied"
		}
		t.Run(name, func(t *testing.T) {
			m := gradBuildSynthetic(t, cfg)
			var wrt []string
			for _, init := range m.Proto.Graph.Initializer {
				if init.GetDataType() == int32(onnxpb.TensorProto_FLOAT) && len(init.GetDims()) > 0 {
					wrt = append(wrt, init.GetName())
				}
			}
			gradCheckModel(t, m, wrt, cfg.Vocab, 10)
		})
	}
}

// gradMLPWeights finds the weights read by MatMul/Gemm nodes whose names
// say MLP (the torch fixtures' weights are often anonymous).
func gradMLPWeights(m *graph.Model) []string {
	re := regexp.MustCompile(`mlp|feed_forward|ffn`)
	ix := graph.NewIndex(m.Proto.Graph)
	var ws []string
	seen := map[string]bool{}
	for _, n := range m.Proto.Graph.Node {
		if (n.GetOpType() == "MatMul" || n.GetOpType() == "Gemm") && re.MatchString(n.GetName()) {
			for _, in := range n.GetInput()[:2] {
				if t := ix.Initializers[in]; t != nil && len(t.GetDims()) == 2 && !seen[in] {
					seen[in] = true
					ws = append(ws, in)
				}
			}
		}
	}
	return ws
}

// TestGradientFixtures: the torch-exported fixtures' ops are covered; the
// float32 gradient agrees with a float64 run of the same graph.
func TestGradientFixtures(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, name := range []string{"stories260k.onnx", "stories260k_kv.onnx", "gpt2_kv.onnx"} {
		t.Run(name, func(t *testing.T) {
			var grads [2][]float64
			var wrt string
			for k, double := range []bool{false, true} {
				m, err := graph.Load(testenv.Testdata(t, "models", name))
				if err != nil {
					t.Fatal(err)
				}
				ws := gradMLPWeights(m)
				if len(ws) == 0 {
					t.Fatal("no MLP weight found")
				}
				wrt = ws[len(ws)/2]
				if double {
					if err := rewrite.ToDouble(m); err != nil {
						t.Fatal(err)
					}
				}
				wf := gradPromote(t, m, wrt)
				if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
					t.Fatal(err)
				}
				if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss_sum", WithRespectTo: []string{wrt}}); err != nil {
					t.Fatal(err)
				}
				if err := graph.Check(m); err != nil {
					t.Fatal(err)
				}
				feeds := gradDecoderFeeds(t, m, 2, 7, 512, rand.New(rand.NewPCG(3, 4)))
				feeds[wrt] = wf[wrt]
				s := gradSessionOpt(t, m, ort.Options{Threads: 1, OptLevel: ort.OptDisabled}, "loss_sum", "grad."+wrt)
				res, err := s.Run(feeds, []string{"loss_sum", "grad." + wrt})
				if err != nil {
					t.Fatal(err)
				}
				grads[k] = gradFloats(t, res["grad."+wrt])
			}
			var num, den float64
			for i := range grads[0] {
				num += (grads[0][i] - grads[1][i]) * (grads[0][i] - grads[1][i])
				den += grads[1][i] * grads[1][i]
			}
			e := math.Sqrt(num / den)
			t.Logf("d loss/d %s: float32 vs float64 relative error %.3g (‖g‖ %.3g)", wrt, e, math.Sqrt(den))
			if e > 1e-3 || den == 0 {
				t.Errorf("float32 gradient off by %.3g relative (‖g64‖ = %g)", e, math.Sqrt(den))
			}
		})
	}
}

func gradSessionOpt(t testing.TB, m *graph.Model, opts ort.Options, outputs ...string) *ort.Session {
	t.Helper()
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	opts.ExternalDataDir = m.Dir
	opts.Outputs = outputs
	s, err := ort.NewSessionFromBytes(data, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestGradientORTOptimizedFixtures: models saved after onnxruntime's
// fusions (FusedMatMul, FastGelu, QuickGelu; float32 kernels only) get
// gradients that run and are finite and non-zero. The contrib rules are
// checked against finite differences in TestGradientOps.
func TestGradientORTOptimizedFixtures(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, name := range []string{"stories260k_kv_ortopt.onnx", "gpt2_kv_ortopt.onnx"} {
		t.Run(name, func(t *testing.T) {
			m, err := graph.Load(testenv.Testdata(t, "models", name))
			if err != nil {
				t.Fatal(err)
			}
			ws := gradMLPWeights(m)
			if len(ws) == 0 {
				t.Fatal("no MLP weight found")
			}
			wf := gradPromote(t, m, ws...)
			if err := rewrite.AppendNextTokenLoss(m, "logits"); err != nil {
				t.Fatal(err)
			}
			if err := rewrite.Gradient(m, rewrite.GradientOptions{Loss: "loss_sum", WithRespectTo: ws}); err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(m); err != nil {
				t.Fatal(err)
			}
			feeds := gradDecoderFeeds(t, m, 2, 7, 512, rand.New(rand.NewPCG(3, 4)))
			outs := []string{"loss_sum"}
			for _, w := range ws {
				feeds[w] = wf[w]
				outs = append(outs, "grad."+w)
			}
			res, err := gradSessionOpt(t, m, ort.Options{Threads: 1}, outs...).Run(feeds, outs)
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range ws {
				var n2 float64
				for _, v := range gradFloats(t, res["grad."+w]) {
					n2 += v * v
				}
				if n2 == 0 || math.IsNaN(n2) || math.IsInf(n2, 0) {
					t.Errorf("grad.%s: squared norm %g", w, n2)
				}
			}
		})
	}
}
