package rewrite_test

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func TestFindLoRATargets(t *testing.T) {
	m := loadFixture(t, "stories260k.onnx")
	tests := []struct {
		targets string
		n       int
		first   string
		in, out int
	}{
		{"", 15, "model.layers.0.mlp.gate_proj", 64, 172},
		{rewrite.LoRAAttentionTargets, 20, "model.layers.0.self_attn.q_proj", 64, 64},
		{`down_proj`, 5, "model.layers.0.mlp.down_proj", 172, 64},
		{rewrite.LoRAMLPTargets + "|" + rewrite.LoRAAttentionTargets, 35, "model.layers.0.self_attn.q_proj", 64, 64},
	}
	for _, tc := range tests {
		ads, err := rewrite.FindLoRATargets(m, tc.targets)
		if err != nil {
			t.Fatalf("%q: %v", tc.targets, err)
		}
		if len(ads) != tc.n || ads[0].Name != tc.first || ads[0].In != tc.in || ads[0].Out != tc.out {
			t.Fatalf("%q: %d adapters, first %+v", tc.targets, len(ads), ads[0])
		}
		if ads[0].A != "lora."+tc.first+".A" || ads[0].B != "lora."+tc.first+".B" || ads[0].OutMajor {
			t.Fatalf("%q: %+v", tc.targets, ads[0])
		}
	}
}

func TestInsertLoRABadInput(t *testing.T) {
	m := loadFixture(t, "stories260k.onnx")
	before, _ := proto.Marshal(m.Proto)
	cases := []struct {
		cfg  rewrite.LoRAConfig
		want string
	}{
		{rewrite.LoRAConfig{Rank: 0}, "rank 0"},
		{rewrite.LoRAConfig{Rank: -2}, "rank -2"},
		{rewrite.LoRAConfig{Rank: 8, Targets: "nothing_like_this"}, `LoRA targets "nothing_like_this" match no MatMul/Gemm weight (weights look like onnx::MatMul_`},
		{rewrite.LoRAConfig{Rank: 8, Targets: "("}, "LoRA targets"},
	}
	for _, tc := range cases {
		_, err := rewrite.InsertLoRA(m, tc.cfg)
		var le *rewrite.LoRAError
		if err == nil || !errors.As(err, &le) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
	after, _ := proto.Marshal(m.Proto)
	if string(before) != string(after) {
		t.Fatal("a failed InsertLoRA changed the model")
	}
}

// loraFixture is a graph with the three weight layouts: MatMul on [in,
// out], Gemm with transB=1 and alpha 0.5 on [out, in], MatMul reading a
// weight through Transpose (stored [out, in]).
func loraFixture() *graph.Model {
	rng := rand.New(rand.NewPCG(1, 2))
	w := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	b := irtest.New("lora").Input("x", -1, 6).
		Init("mlp.up.weight", w(6*5), 6, 5).
		Init("mlp.down.weight", w(4*5), 4, 5).
		Init("mlp.out.weight", w(3*4), 3, 4).
		Node("MatMul", "/mlp/up/MatMul", []string{"x", "mlp.up.weight"}, []string{"h1"}).
		Node("Gemm", "/mlp/down/Gemm", []string{"h1", "mlp.down.weight"}, []string{"h2"},
			&onnxpb.AttributeProto{Name: proto.String("transB"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(1)},
			&onnxpb.AttributeProto{Name: proto.String("alpha"), Type: onnxpb.AttributeProto_FLOAT.Enum(), F: proto.Float32(0.5)}).
		Node("Transpose", "/mlp/out/T", []string{"mlp.out.weight"}, []string{"wt"},
			&onnxpb.AttributeProto{Name: proto.String("perm"), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: []int64{1, 0}}).
		Node("MatMul", "/mlp/out/MatMul", []string{"h2", "wt"}, []string{"y"}).
		Output("y", -1, 3)
	return b.Model()
}

func randomAB(ads []rewrite.LoRAAdapter, rank int, seed uint64) (A, B [][]float64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	for _, a := range ads {
		av, bv := make([]float64, rank*a.In), make([]float64, a.Out*rank)
		for i := range av {
			av[i] = rng.NormFloat64() * 0.3
		}
		for i := range bv {
			bv[i] = rng.NormFloat64() * 0.05
		}
		A, B = append(A, av), append(B, bv)
	}
	return A, B
}

func runLoRA(t *testing.T, m *graph.Model, feeds map[string]*ort.Tensor, out string) []float32 {
	t.Helper()
	s := session(t, m)
	res, err := s.Run(feeds, []string{out})
	if err != nil {
		t.Fatal(err)
	}
	v, err := res[out].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func abFeeds(t *testing.T, ads []rewrite.LoRAAdapter, rank int, A, B [][]float64, feeds map[string]*ort.Tensor) {
	t.Helper()
	f32 := func(v []float64) []float32 {
		o := make([]float32, len(v))
		for i, x := range v {
			o[i] = float32(x)
		}
		return o
	}
	for k, a := range ads {
		var err error
		if feeds[a.A], err = ort.NewFloat32([]int64{int64(rank), int64(a.In)}, f32(A[k])); err != nil {
			t.Fatal(err)
		}
		if feeds[a.B], err = ort.NewFloat32([]int64{int64(a.Out), int64(rank)}, f32(B[k])); err != nil {
			t.Fatal(err)
		}
	}
}

func maxDiff(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = max(d, float64(a[i]-b[i]), float64(b[i]-a[i]))
	}
	return d
}

// TestMergeLoRAEqualsAdapterModel: the merged model (no extra node)
// computes what the adapter model computes with the same nonzero A, B,
// for every weight layout and on stories260K; with B = 0 the adapter
// model computes what the base model does.
func TestMergeLoRAEqualsAdapterModel(t *testing.T) {
	testenv.ORTLibrary(t)
	type fixture struct {
		name  string
		m     *graph.Model
		feeds func() map[string]*ort.Tensor
		out   string
		n     int
	}
	xs := make([]float32, 7*6)
	for i := range xs {
		xs[i] = float32(i%5) - 2
	}
	ids := make([]int64, 2*9)
	mask, pos := make([]int64, len(ids)), make([]int64, len(ids))
	for i := range ids {
		ids[i], mask[i], pos[i] = int64(1+(i*37)%500), 1, int64(i%9)
	}
	fixtures := []fixture{
		{"layouts", loraFixture(), func() map[string]*ort.Tensor {
			x, _ := ort.NewFloat32([]int64{7, 6}, xs)
			return map[string]*ort.Tensor{"x": x}
		}, "y", 3},
		{"stories260k", loadFixture(t, "stories260k.onnx"), func() map[string]*ort.Tensor {
			f := map[string]*ort.Tensor{}
			f["input_ids"], _ = ort.NewInt64([]int64{2, 9}, ids)
			f["attention_mask"], _ = ort.NewInt64([]int64{2, 9}, mask)
			f["position_ids"], _ = ort.NewInt64([]int64{2, 9}, pos)
			return f
		}, "logits", 35},
	}
	const rank = 4
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			targets := rewrite.LoRAMLPTargets + "|" + rewrite.LoRAAttentionTargets
			base := runLoRA(t, fx.m, fx.feeds(), fx.out)
			am := &graph.Model{Proto: proto.Clone(fx.m.Proto).(*onnxpb.ModelProto)}
			ads, err := rewrite.InsertLoRA(am, rewrite.LoRAConfig{Targets: targets, Rank: rank, Alpha: 8})
			if err != nil {
				t.Fatal(err)
			}
			if len(ads) != fx.n {
				t.Fatalf("%d adapters, want %d", len(ads), fx.n)
			}
			if err := graph.Check(am); err != nil {
				t.Fatal(err)
			}
			A, B := randomAB(ads, rank, 3)
			zero := make([][]float64, len(B))
			for k := range B {
				zero[k] = make([]float64, len(B[k]))
			}
			f := fx.feeds()
			abFeeds(t, ads, rank, A, zero, f)
			if d := maxDiff(runLoRA(t, am, f, fx.out), base); d > 1e-5 {
				t.Fatalf("B = 0: adapter model differs from the base model by %g", d)
			}
			f = fx.feeds()
			abFeeds(t, ads, rank, A, B, f)
			adapted := runLoRA(t, am, f, fx.out)
			if d := maxDiff(adapted, base); d < 1e-3 {
				t.Fatalf("nonzero B changes the output by only %g", d)
			}
			mm := &graph.Model{Proto: proto.Clone(fx.m.Proto).(*onnxpb.ModelProto)}
			for k, a := range ads {
				if err := rewrite.MergeLoRA(mm, a, rank, 8.0/rank, A[k], B[k]); err != nil {
					t.Fatal(err)
				}
			}
			if len(mm.Proto.Graph.Node) != len(fx.m.Proto.Graph.Node) {
				t.Fatal("merge added nodes")
			}
			merged := runLoRA(t, mm, fx.feeds(), fx.out)
			if d := maxDiff(merged, adapted); d > 1e-4 {
				t.Fatalf("merged model differs from the adapter model by %g (> 1e-4)", d)
			} else {
				t.Logf("merged vs adapter model: max |Δ| %.2g over %d outputs", d, len(merged))
			}
		})
	}
}

func TestInsertLoRADropoutMask(t *testing.T) {
	testenv.ORTLibrary(t)
	m := loraFixture()
	ads, err := rewrite.InsertLoRA(m, rewrite.LoRAConfig{Rank: 2, Alpha: 2, Dropout: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range ads {
		if a.Mask != "lora."+a.Name+".mask" {
			t.Fatalf("mask input %q", a.Mask)
		}
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
}
