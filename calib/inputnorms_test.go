package calib

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func TestFeatureStatsAdd(t *testing.T) {
	s := &FeatureStats{Tensor: "x", SumSq: make([]float64, 2), SumAbs: make([]float64, 2)}
	// [batch 2, seq 2, features 2]; the second row's last token is padding.
	x := []float32{1, -2, 3, 4, -5, 6, 100, 100}
	if err := s.add(x, []int64{2, 2, 2}, []int64{1, 1, 1, 0}); err != nil {
		t.Fatal(err)
	}
	if s.Tokens != 3 || s.SumSq[0] != 1+9+25 || s.SumSq[1] != 4+16+36 || s.SumAbs[0] != 9 || s.SumAbs[1] != 12 {
		t.Fatalf("%+v", s)
	}
	if n := s.Norms(); n[0] != math.Sqrt(35) || s.MeanAbs()[1] != 4 {
		t.Fatalf("norms %v, mean |x| %v", n, s.MeanAbs())
	}
	// A Gemm input [batch·seq, features] maps rows to mask entries too.
	if err := s.add(x, []int64{4, 2}, []int64{1, 1, 1, 0}); err != nil || s.Tokens != 6 {
		t.Fatalf("2-D tap: %v, %d tokens", err, s.Tokens)
	}
	if err := s.add(x, []int64{2, 4}, []int64{1, 1, 1, 0}); err == nil {
		t.Fatal("a tap with 4 features accepted for 2")
	}
}

// TestFeatureStatisticsEmbedding measures the token embeddings h_0 =
// E[id], whose statistics follow from the embedding table and the token
// ids alone, and a linear layer's input, with the taps in one run and
// split across runs (the same numbers).
func TestFeatureStatisticsEmbedding(t *testing.T) {
	testenv.ORTLibrary(t)
	m, err := graph.Load(filepath.Join("..", "testdata", "models", "stories260k_kv.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	seqs := [][]int{{1, 17, 42, 9, 77}, {1, 300, 5}, {1, 8, 8, 8, 8, 8, 2}}
	batches := Batches(seqs, 2)
	taps := map[string]int{
		"/model/embed_tokens/Gather_output_0":                     64,
		"/model/layers.2/post_attention_layernorm/Mul_1_output_0": 64,
		"/model/layers.2/mlp/Mul_1_output_0":                      172,
	}
	opts := Options{Runtime: ort.Options{Threads: 1}}
	one, err := FeatureStatistics(context.Background(), m, taps, batches, opts)
	if err != nil {
		t.Fatal(err)
	}
	emb, err := floatTable(m, "model.embed_tokens.weight")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]float64, 64)
	tokens := 0
	for _, s := range seqs {
		for _, id := range s {
			tokens++
			for j := range want {
				v := float64(emb[id*64+j])
				want[j] += v * v
			}
		}
	}
	got := one["/model/embed_tokens/Gather_output_0"]
	if got.Tokens != int64(tokens) {
		t.Fatalf("%d tokens measured, %d real", got.Tokens, tokens)
	}
	for j := range want {
		if math.Abs(got.SumSq[j]-want[j]) > 1e-9*max(1, want[j]) {
			t.Fatalf("feature %d: Σx² %v, from the table %v", j, got.SumSq[j], want[j])
		}
	}

	saved := MaxTapBytes
	MaxTapBytes = 1 // one tap per run
	defer func() { MaxTapBytes = saved }()
	split, err := FeatureStatistics(context.Background(), m, taps, batches, opts)
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range one {
		for j := range s.SumSq {
			if split[name].SumSq[j] != s.SumSq[j] || split[name].SumAbs[j] != s.SumAbs[j] {
				t.Fatalf("%s feature %d differs between one run and split runs", name, j)
			}
		}
	}

	if _, err := FeatureStatistics(context.Background(), m, map[string]int{"no/such/tensor": 4}, batches, opts); err == nil {
		t.Fatal("an unknown tensor was accepted")
	}
}

func floatTable(m *graph.Model, name string) ([]float32, error) {
	b, err := m.TensorBytes(m.Initializer(name))
	if err != nil {
		return nil, err
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(uint32(b[4*i]) | uint32(b[4*i+1])<<8 | uint32(b[4*i+2])<<16 | uint32(b[4*i+3])<<24)
	}
	return v, nil
}
