package rewrite

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"google.golang.org/protobuf/proto"
)

func fixtureDecoder(t *testing.T, name string) (*graph.Model, *graph.Decoder) {
	t.Helper()
	return loadDecoder(t, filepath.Join("..", "testdata", "models", name))
}

func loadDecoder(t *testing.T, path string) (*graph.Model, *graph.Decoder) {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, d
}

// buildSynthetic converts a random-weight checkpoint of cfg's shape
// (Llama family unless cfg says otherwise) and returns the model's path.
func buildSynthetic(t *testing.T, cfg convert.Config) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "model.onnx")
	if err := convert.Build(convert.Synthetic(cfg, 7), path, convert.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWandaHandExample: a 4-input, 2-output MatMul weight stored [in, out]
// (and the same weight stored [out, in]), feature norms [1, 10, 0.1, 2],
// half of each output's weights pruned. The expected sets are worked out
// by hand from |W_ij|·‖X_j‖.
func TestWandaHandExample(t *testing.T) {
	// Rows are inputs i, columns outputs o (y = x·W).
	W := [][]float64{
		{1, -4},
		{2, 1},
		{-3, 0.5},
		{4, -2},
	}
	norms := []float64{1, 10, 0.1, 2}
	// Output 0: scores 1, 20, 0.3, 8 → prune inputs 2 and 0.
	// Output 1: scores 4, 10, 0.05, 4 → prune input 2, then the tie
	// between inputs 0 and 3 (both 4) goes to the lower index: 0.
	wantPruned := map[[2]int]bool{{0, 2}: true, {0, 0}: true, {1, 2}: true, {1, 0}: true}
	// Magnitude alone would prune inputs 0, 1 of output 0: Wanda differs.
	wantMagnitude := map[[2]int]bool{{0, 0}: true, {0, 1}: true, {1, 2}: true, {1, 1}: true}

	for _, outMajor := range []bool{false, true} {
		w := &LinearWeight{In: 4, Out: 2, OutMajor: outMajor}
		vals := make([]float64, 8)
		for i := range 4 {
			for o := range 2 {
				vals[w.At(o, i)] = W[i][o]
			}
		}
		if !outMajor && vals[1] != -4 || outMajor && vals[1] != 2 {
			t.Fatalf("At: layout [in, out] puts W[0][1] at flat 1, [out, in] puts W[1][0] there; got %v", vals)
		}
		for _, c := range []struct {
			name  string
			norms []float64
			want  map[[2]int]bool
		}{{"wanda", norms, wantPruned}, {"magnitude", []float64{1, 1, 1, 1}, wantMagnitude}} {
			mask := make([]bool, 8)
			prunePerRow(w, func(o, i int) float64 { return math.Abs(vals[w.At(o, i)]) * c.norms[i] }, 0.5, mask)
			for o := range 2 {
				for i := range 4 {
					if mask[w.At(o, i)] != c.want[[2]int{o, i}] {
						t.Errorf("outMajor=%v %s: output %d input %d pruned=%v, want %v", outMajor, c.name, o, i, mask[w.At(o, i)], c.want[[2]int{o, i}])
					}
				}
			}
		}
	}
}

// snapshot copies the values of every linear weight of m.
func snapshot(t *testing.T, m *graph.Model, d *graph.Decoder) map[string][]float64 {
	t.Helper()
	out := map[string][]float64{}
	for _, w := range LinearWeights(m, d, true, true) {
		v, err := floatValues(m, w.Tensor)
		if err != nil {
			t.Fatal(err)
		}
		out[w.Name] = v
	}
	return out
}

// TestSparsifyZerosWhereReported runs every method on the stories260K
// fixture and checks the result against the report and against the
// method's definition, computed here from the original weights: the
// zeros counted per tensor are the report's, every entry is either
// unchanged or zero, the pruned entries are the lowest-scoring of their
// ranking (matrix, all matrices, output unit) and every N:M group holds
// at most N nonzeros.
func TestSparsifyZerosWhereReported(t *testing.T) {
	cases := []struct {
		name    string
		opts    SparsifyOptions
		fixture string // default stories260k_kv.onnx: 7 matrices × 5 blocks
		tensors int
	}{
		{"gpt2 Gemm 2:4", SparsifyOptions{Method: MethodMagnitude, N: 2, M: 4}, "gpt2_kv.onnx", 4 * 6},
		{"gpt2 wanda 0.5", SparsifyOptions{Method: MethodWanda, Ratio: 0.5}, "gpt2_kv.onnx", 4 * 6},
		{"magnitude 0.3", SparsifyOptions{Method: MethodMagnitude, Ratio: 0.3}, "", 0},
		{"magnitude 0.5 global", SparsifyOptions{Method: MethodMagnitude, Ratio: 0.5, Global: true}, "", 0},
		{"magnitude 2:4", SparsifyOptions{Method: MethodMagnitude, N: 2, M: 4}, "", 0},
		{"magnitude 4:8 (172 inputs: a short last group)", SparsifyOptions{Method: MethodMagnitude, N: 4, M: 8}, "", 0},
		{"wanda 0.5", SparsifyOptions{Method: MethodWanda, Ratio: 0.5}, "", 0},
		{"wanda 2:4", SparsifyOptions{Method: MethodWanda, N: 2, M: 4}, "", 0},
		{"magnitude 0.5 with head and embeddings", SparsifyOptions{Ratio: 0.5, IncludeEmbeddings: true, IncludeHead: true}, "", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.fixture == "" {
				c.fixture, c.tensors = "stories260k_kv.onnx", 35
			}
			m, d := fixtureDecoder(t, c.fixture)
			before := snapshot(t, m, d)
			targets, err := SparsifyTargets(m, d, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if c.opts.Method == MethodWanda {
				// Deterministic, uneven feature norms stand in for
				// calibration: what matters is that they are used.
				c.opts.Norms = map[string][]float64{}
				for _, w := range targets {
					for k, in := range w.Inputs {
						n := make([]float64, w.In)
						for j := range n {
							n[j] = 0.1 + float64((j*7+k*3)%11)
						}
						c.opts.Norms[in] = n
					}
				}
			}
			rep, err := Sparsify(m, d, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(m); err != nil {
				t.Fatal(err)
			}
			wantTensors := c.tensors
			if c.opts.IncludeHead {
				wantTensors += 2
			}
			if len(rep.Tensors) != wantTensors || len(targets) != wantTensors {
				t.Fatalf("%d tensors reported, %d targets, want %d", len(rep.Tensors), len(targets), wantTensors)
			}
			var zeros, params int64
			type entry struct {
				score  float64
				pruned bool
			}
			var global []entry
			for ti, ts := range rep.Tensors {
				w := targets[ti]
				orig := before[ts.Name]
				after, err := floatValues(m, w.Tensor)
				if err != nil {
					t.Fatal(err)
				}
				var nz int64
				pruned := make([]bool, len(after))
				for j := range after {
					switch {
					case after[j] == 0:
						nz++
						pruned[j] = orig[j] != 0
					case math.Float64bits(after[j]) != math.Float64bits(orig[j]):
						t.Fatalf("%s[%d]: kept weight changed from %v to %v", ts.Name, j, orig[j], after[j])
					}
				}
				if nz != ts.Zeros || ts.Params != int64(len(after)) {
					t.Fatalf("%s: %d zeros of %d in the model, report says %d of %d", ts.Name, nz, len(after), ts.Zeros, ts.Params)
				}
				if ts.ZerosBefore != 0 || ts.Pruned != nz {
					t.Fatalf("%s: report says %d pruned, %d zero before; the tensor has %d zeros", ts.Name, ts.Pruned, ts.ZerosBefore, nz)
				}
				zeros += nz
				params += ts.Params
				norm := func(i int) float64 { return 1 }
				if c.opts.Method == MethodWanda && len(w.Inputs) > 0 {
					norm = func(i int) float64 { return c.opts.Norms[w.Inputs[0]][i] }
				}
				score := func(o, i int) float64 { return math.Abs(orig[w.At(o, i)]) * norm(i) }
				switch {
				case c.opts.M > 0:
					checkNM(t, ts.Name, w, score, pruned, c.opts.N, c.opts.M)
				case c.opts.Method == MethodWanda:
					for o := range w.Out {
						var kept, cut []float64
						for i := range w.In {
							if pruned[w.At(o, i)] {
								cut = append(cut, score(o, i))
							} else {
								kept = append(kept, score(o, i))
							}
						}
						if len(cut) != int(math.Round(c.opts.Ratio*float64(w.In))) || slices.Max(cut) > slices.Min(kept) {
							t.Fatalf("%s output %d: %d pruned (want %v), max pruned score %v, min kept %v", ts.Name, o, len(cut),
								math.Round(c.opts.Ratio*float64(w.In)), slices.Max(cut), slices.Min(kept))
						}
					}
				case c.opts.Global:
					for j := range orig {
						global = append(global, entry{math.Abs(orig[j]), pruned[j]})
					}
				default:
					var kept, cut []float64
					for j := range orig {
						if pruned[j] {
							cut = append(cut, math.Abs(orig[j]))
						} else {
							kept = append(kept, math.Abs(orig[j]))
						}
					}
					if int64(len(cut)) != int64(math.Round(c.opts.Ratio*float64(len(orig)))) || slices.Max(cut) > slices.Min(kept) {
						t.Fatalf("%s: %d of %d pruned; max pruned |w| %v > min kept %v", ts.Name, len(cut), len(orig), slices.Max(cut), slices.Min(kept))
					}
				}
			}
			if c.opts.Global {
				maxCut, minKept, n := 0.0, math.Inf(1), 0
				for _, e := range global {
					if e.pruned {
						maxCut = max(maxCut, e.score)
						n++
					} else {
						minKept = min(minKept, e.score)
					}
				}
				if n != int(math.Round(0.5*float64(len(global)))) || maxCut > minKept {
					t.Fatalf("global: %d of %d pruned, max pruned %v, min kept %v", n, len(global), maxCut, minKept)
				}
			}
			if zeros != rep.Zeros || params != rep.Params || rep.Sparsity != float64(zeros)/float64(params) {
				t.Fatalf("totals: report %d/%d (%v), tensors add to %d/%d", rep.Zeros, rep.Params, rep.Sparsity, zeros, params)
			}
		})
	}
}

// checkNM verifies every group of m consecutive inputs of every output:
// at most n nonzeros, exactly min(n, group length) kept, and no pruned
// weight scoring above a kept one of the same group.
func checkNM(t *testing.T, name string, w *LinearWeight, score func(o, i int) float64, pruned []bool, n, m int) {
	t.Helper()
	groups := 0
	for o := range w.Out {
		for g := 0; g < w.In; g += m {
			kept, maxCut, minKept := 0, -1.0, math.Inf(1)
			for i := g; i < min(g+m, w.In); i++ {
				if pruned[w.At(o, i)] {
					maxCut = max(maxCut, score(o, i))
				} else {
					kept++
					minKept = min(minKept, score(o, i))
				}
			}
			if kept != min(n, min(g+m, w.In)-g) || maxCut > minKept {
				t.Fatalf("%s output %d group at input %d: %d kept of %d (want %d), max pruned %v > min kept %v",
					name, o, g, kept, min(g+m, w.In)-g, n, maxCut, minKept)
			}
			groups++
		}
	}
	if groups != w.Out*((w.In+m-1)/m) {
		t.Fatalf("%s: checked %d groups", name, groups)
	}
}

// TestSparsifyRatioZero: nothing pruned leaves every weight as it was, and
// the saved model is byte-identical to the input.
func TestSparsifyRatioZero(t *testing.T) {
	for _, method := range []string{MethodMagnitude, MethodWanda} {
		m, d := fixtureDecoder(t, "stories260k_kv.onnx")
		opts := SparsifyOptions{Method: method, Ratio: 0}
		if method == MethodWanda {
			opts.Norms = map[string][]float64{}
			targets, _ := SparsifyTargets(m, d, opts)
			for _, w := range targets {
				for _, in := range w.Inputs {
					opts.Norms[in] = slices.Repeat([]float64{1}, w.In)
				}
			}
		}
		rep, err := Sparsify(m, d, opts)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Zeros != 0 {
			t.Fatalf("%s ratio 0: %d zeros", method, rep.Zeros)
		}
		out := filepath.Join(t.TempDir(), "m.onnx")
		if err := graph.Save(m, out, graph.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(m.Path)
		b, _ := os.ReadFile(out)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s ratio 0: saved model differs from the input (%d vs %d bytes)", method, len(b), len(a))
		}
	}
}

func TestSparsifyBadInput(t *testing.T) {
	cases := []struct {
		name    string
		fixture string
		opts    SparsifyOptions
		want    string
	}{
		{"ratio 1", "stories260k_kv.onnx", SparsifyOptions{Ratio: 1}, "ratio 1 outside [0, 1)"},
		{"negative ratio", "stories260k_kv.onnx", SparsifyOptions{Ratio: -0.1}, "outside [0, 1)"},
		{"NaN ratio", "stories260k_kv.onnx", SparsifyOptions{Ratio: math.NaN()}, "outside [0, 1)"},
		{"N = M", "stories260k_kv.onnx", SparsifyOptions{N: 4, M: 4}, "want N:M with 0 < N < M"},
		{"N > M", "stories260k_kv.onnx", SparsifyOptions{N: 5, M: 4}, "want N:M with 0 < N < M"},
		{"N = 0", "stories260k_kv.onnx", SparsifyOptions{N: 0, M: 4}, "want N:M with 0 < N < M"},
		{"pattern and ratio", "stories260k_kv.onnx", SparsifyOptions{N: 2, M: 4, Ratio: 0.5}, "not both"},
		{"global wanda", "stories260k_kv.onnx", SparsifyOptions{Method: MethodWanda, Ratio: 0.5, Global: true}, "magnitude only"},
		{"unknown method", "stories260k_kv.onnx", SparsifyOptions{Method: "random", Ratio: 0.5}, `method "random"`},
		{"no such tensor", "stories260k_kv.onnx", SparsifyOptions{Ratio: 0.5, Tensors: []string{"model.layers.0.mlp.up_proj.weight"}}, `no tensor "model.layers.0.mlp.up_proj.weight" in the model`},
		{"not a linear weight", "stories260k_kv.onnx", SparsifyOptions{Ratio: 0.5, Tensors: []string{"model.norm.weight"}}, "is not a linear-layer weight"},
		{"pattern matches nothing", "stories260k_kv.onnx", SparsifyOptions{Ratio: 0.5, Tensors: []string{"model.layers.*.mlp.*"}}, "no linear-layer weight matches"},
		{"wanda without norms", "stories260k_kv.onnx", SparsifyOptions{Method: MethodWanda, Ratio: 0.5}, "no calibration norms"},
		{"tied head without embedding", "tied", SparsifyOptions{Ratio: 0.5, IncludeHead: true}, "tied to the embedding"},
		{"tied embedding without head", "tied", SparsifyOptions{Ratio: 0.5, IncludeEmbeddings: true}, "tied to the embedding"},
	}
	tied := buildSynthetic(t, convert.Config{Layers: 2, Hidden: 32, Heads: 4, KVHeads: 2, FFN: 48, Vocab: 64, TiedEmbeddings: true})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var m *graph.Model
			var d *graph.Decoder
			if c.fixture == "tied" {
				m, d = loadDecoder(t, tied)
			} else {
				m, d = fixtureDecoder(t, c.fixture)
			}
			before := snapshot(t, m, d)
			_, err := Sparsify(m, d, c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line containing %q", err, c.want)
			}
			after := snapshot(t, m, d)
			for name, v := range before {
				if !slices.Equal(v, after[name]) {
					t.Fatalf("%s changed despite the error", name)
				}
			}
		})
	}
}

// TestSparsifyTensorsSelection: --tensors picks exactly the named weights
// (patterns too), the embedding included when named.
func TestSparsifyTensorsSelection(t *testing.T) {
	m, d := fixtureDecoder(t, "stories260k_kv.onnx")
	rep, err := Sparsify(m, d, SparsifyOptions{Ratio: 0.5, Tensors: []string{"onnx::MatMul_1408", "model.embed_*"}})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ts := range rep.Tensors {
		names = append(names, ts.Name+"/"+ts.Role)
	}
	if want := []string{"onnx::MatMul_1408/block", "model.embed_tokens.weight/embedding"}; !slices.Equal(names, want) {
		t.Fatalf("selected %v, want %v", names, want)
	}
}

// TestLinearWeightLayouts: the weight of each kind of linear layer is
// found with its storage order — MatMul [in, out], Gemm transB [out, in],
// a Transpose'd table (tied head) [out, in], a float16 weight through Cast.
func TestLinearWeightLayouts(t *testing.T) {
	m := irtest.New("g").Input("x", 1, 4).
		Init("w", make([]float32, 8), 4, 2).
		Init("wt", make([]float32, 8), 2, 4).
		Init("e", make([]float32, 8), 2, 4).
		Node("MatMul", "mm", []string{"x", "w"}, []string{"a"}).
		Node("Gemm", "gemm", []string{"x", "wt"}, []string{"b"}, &onnxpb.AttributeProto{Name: proto.String("transB"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)}).
		Node("Transpose", "tr", []string{"e"}, []string{"et"}, &onnxpb.AttributeProto{Name: proto.String("perm"), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: []int64{1, 0}}).
		Node("MatMul", "head", []string{"x", "et"}, []string{"c"}).
		Node("Cast", "cast", []string{"w"}, []string{"w32"}).
		Node("MatMul", "mm16", []string{"x", "w32"}, []string{"d"}).
		Node("MatMul", "scores", []string{"a", "b"}, []string{"s"}).
		Output("c", 1, 2).Model()
	s := newWeightScope(m, &graph.Decoder{Graph: m.Proto.GetGraph()})
	want := map[string]string{"mm": "w 4→2 [in, out]", "gemm": "wt 4→2 [out, in]", "head": "e 4→2 [out, in]", "mm16": "w 4→2 [in, out]"}
	for _, n := range m.Proto.GetGraph().GetNode() {
		w, ok := s.linearOf(n)
		got := ""
		if ok {
			got = fmt.Sprintf("%s %d→%d %s", w.Name, w.In, w.Out, w.Layout())
		}
		if got != want[n.GetName()] {
			t.Errorf("%s: %q, want %q", n.GetName(), got, want[n.GetName()])
		}
	}
}

// TestSparsifyFloat16External: float16 weights in an external data file
// (read through Cast nodes) are pruned in place — kept values bit for bit,
// zeros as reported — and the saved model keeps its weights external.
func TestSparsifyFloat16External(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src", "model.onnx")
	os.MkdirAll(filepath.Dir(src), 0o755)
	ck := convert.Synthetic(convert.Config{Layers: 2, Hidden: 64, Heads: 4, KVHeads: 2, FFN: 96, Vocab: 128}, 1)
	if err := convert.Build(ck, src, convert.BuildOptions{DType: convert.Float16, ExternalAbove: 1}); err != nil {
		t.Fatal(err)
	}
	m, d := loadDecoder(t, src)
	before := snapshot(t, m, d)
	rep, err := Sparsify(m, d, SparsifyOptions{Ratio: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out", "model.onnx")
	os.MkdirAll(filepath.Dir(out), 0o755)
	if err := graph.Save(m, out, graph.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	m2, d2 := loadDecoder(t, out)
	after := snapshot(t, m2, d2)
	if len(rep.Tensors) != 14 {
		t.Fatalf("%d tensors", len(rep.Tensors))
	}
	for _, ts := range rep.Tensors {
		if got := m2.Initializer(ts.Name); got.GetDataType() != 10 || !graph.IsExternal(got) {
			t.Fatalf("%s: saved as dtype %d, external %v", ts.Name, got.GetDataType(), graph.IsExternal(got))
		}
		var zeros int64
		for j, v := range after[ts.Name] {
			switch {
			case v == 0:
				zeros++
			case v != before[ts.Name][j]:
				t.Fatalf("%s[%d]: %v became %v", ts.Name, j, before[ts.Name][j], v)
			}
		}
		if zeros != ts.Zeros || ts.Sparsity != 0.5 {
			t.Fatalf("%s: %d zeros saved, report %d (%.3f)", ts.Name, zeros, ts.Zeros, ts.Sparsity)
		}
	}
}
