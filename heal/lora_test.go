package heal

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

func TestCosineLR(t *testing.T) {
	cases := []struct {
		step, warmup, steps int
		want                float64
	}{
		{0, 10, 100, 0.1}, {9, 10, 100, 1}, {10, 10, 100, 1}, {55, 10, 100, 0.5}, {100, 10, 100, 0},
		{0, 0, 4, 1}, {2, 0, 4, 0.5},
	}
	for _, c := range cases {
		if got := CosineLR(1, c.step, c.warmup, c.steps); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("CosineLR(step %d, warmup %d, steps %d) = %g, want %g", c.step, c.warmup, c.steps, got, c.want)
		}
	}
}

// TestAdamW checks two steps against torch.optim.AdamW's update written
// out by hand.
func TestAdamW(t *testing.T) {
	p := [][]float64{{1, -2}}
	o := NewAdamW([]int{2}, 0.1)
	g := [][]float64{{0.5, -0.25}}
	o.Update(p, g, 0.01)
	// Step 1: decay then m̂ = g, v̂ = g²: p -= lr·sign(g) (up to ε).
	want := []float64{1*(1-0.001) - 0.01, -2*(1-0.001) + 0.01}
	for i := range want {
		if math.Abs(p[0][i]-want[i]) > 1e-9 {
			t.Fatalf("step 1: p = %v, want %v", p[0], want)
		}
	}
	o.Update(p, [][]float64{{0.5, -0.25}}, 0.01)
	if o.Step != 2 || math.Abs(p[0][0]-(want[0]*(1-0.001)-0.01)) > 1e-9 {
		t.Fatalf("step 2: p = %v", p[0])
	}
	gn := [][]float64{{3, 4}}
	if n := ClipGradNorm(gn, 1); n != 5 || math.Abs(math.Hypot(gn[0][0], gn[0][1])-1) > 1e-6 {
		t.Fatalf("clip: norm %g, clipped %v", n, gn[0])
	}
}

func TestPack(t *testing.T) {
	p := Pack([][]int{{1, 5, 6, 7}, {1, 8}, {1, 9, 10}}, 3)
	if p.Rows != 2 || len(p.Stream) != 9 {
		t.Fatalf("rows %d, stream %v", p.Rows, p.Stream)
	}
	ids, labels, w := make([]int64, 6), make([]int64, 6), make([]float32, 6)
	p.Batch([]int{1, 0}, ids, labels, w)
	if got := []int64{7, 1, 8, 1, 5, 6}; !slices.Equal(ids, got) || !slices.Equal(labels, []int64{1, 8, 1, 5, 6, 7}) {
		t.Fatalf("ids %v labels %v", ids, labels)
	}
	o := &rowOrder{seed: 3, rows: 5}
	seen := map[int]bool{}
	for _, r := range o.take(0, 5) {
		seen[r] = true
	}
	if len(seen) != 5 {
		t.Fatalf("an epoch does not visit every row once: %v", seen)
	}
}

func TestAdaptersSaveLoad(t *testing.T) {
	m := loadLoRAFixture(t)
	a, err := NewAdapters(m, "", 4, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	a.B[2][3] = 0.25
	dir := t.TempDir()
	if err := a.Save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := LoadAdapters(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b.Rank != 4 || b.Alpha != 8 || len(b.Layers) != len(a.Layers) || b.B[2][3] != 0.25 || float32(b.A[0][1]) != float32(a.A[0][1]) {
		t.Fatalf("round trip: %+v", b.Layers[0])
	}
	if _, err := NewAdapters(m, "", 0, 8, 1); err == nil || !strings.Contains(err.Error(), "rank 0") {
		t.Fatalf("rank 0: %v", err)
	}
}

func loadLoRAFixture(t *testing.T) *graph.Model {
	t.Helper()
	m, err := graph.Load(filepath.Join("..", "testdata", "models", "stories260k.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// loraData tokenizes the repository's TinyStories sample.
func loraData(t *testing.T) (train, val [][]int) {
	t.Helper()
	tok, err := tokenizer.Load(filepath.Join("..", "testdata", "models", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := calib.LoadSamples(filepath.Join("..", "testdata", "text", "tinystories_valid200.txt"), calib.TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return calib.Tokenize(tok, s[20:], math.MaxInt32, true), calib.Tokenize(tok, s[:10], 128, true)
}

// TestTrainLoRA trains a few steps on stories260K without block 0 and
// checks: the loss falls and validation perplexity improves; the merged
// model's logits equal the adapter model's with the trained adapters
// (1e-4); an interrupted run resumed from its checkpoint ends where an
// uninterrupted one does.
func TestTrainLoRA(t *testing.T) {
	testenv.ORTLibrary(t)
	m := loadLoRAFixture(t)
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewrite.RemoveBlocks(m, d, []int{0}); err != nil {
		t.Fatal(err)
	}
	train, val := loraData(t)
	opts := LoRAOptions{Steps: 6, EvalEvery: 3, LR: 3e-3, BatchSize: 4, SeqLen: 64, Seed: 5, Runtime: ort.Options{Threads: 1}}
	res, err := TrainLoRA(context.Background(), m, train, val, opts)
	if err != nil {
		t.Fatal(err)
	}
	h := res.History
	if len(h) != 6 || !(res.BestValPPL < res.InitialValPPL) || res.StepsPerSec <= 0 {
		t.Fatalf("history %+v, val ppl %g → %g", h, res.InitialValPPL, res.BestValPPL)
	}
	t.Logf("loss %.4f → %.4f, val ppl %.3f → %.3f (step %d), %.1f steps/s, step/forward %.2f",
		h[0].Loss, h[5].Loss, res.InitialValPPL, res.BestValPPL, res.BestStep, res.StepsPerSec, res.StepForward)

	// Merged == adapter model, with the trained (nonzero) B.
	ad := res.Adapters
	nonzero := false
	for _, b := range ad.B {
		for _, x := range b {
			nonzero = nonzero || x != 0
		}
	}
	if !nonzero {
		t.Fatal("trained B is zero")
	}
	am, err := ad.AdapterModel(m)
	if err != nil {
		t.Fatal(err)
	}
	mm := cloneModel(m)
	if err := ad.Merge(mm); err != nil {
		t.Fatal(err)
	}
	if len(mm.Proto.Graph.Node) != len(m.Proto.Graph.Node) {
		t.Fatal("merge added nodes")
	}
	feeds := func(extra map[string]*ort.Tensor) map[string]*ort.Tensor {
		f := map[string]*ort.Tensor{}
		ids, mask, pos := make([]int64, 2*20), make([]int64, 2*20), make([]int64, 2*20)
		for i := range ids {
			ids[i], mask[i], pos[i] = int64(val[i/20][min(i%20, len(val[i/20])-1)]), 1, int64(i%20)
		}
		f["input_ids"], _ = ort.NewInt64([]int64{2, 20}, ids)
		f["attention_mask"], _ = ort.NewInt64([]int64{2, 20}, mask)
		f["position_ids"], _ = ort.NewInt64([]int64{2, 20}, pos)
		for k, v := range extra {
			f[k] = v
		}
		return f
	}
	abf, err := ad.Feeds()
	if err != nil {
		t.Fatal(err)
	}
	la := runLogits(t, am, feeds(abf))
	lm := runLogits(t, mm, feeds(nil))
	lp := runLogits(t, m, feeds(nil))
	var dMerge, dPruned float64
	for i := range la {
		dMerge = max(dMerge, math.Abs(float64(la[i]-lm[i])))
		dPruned = max(dPruned, math.Abs(float64(la[i]-lp[i])))
	}
	if dMerge > 1e-4 || dPruned < 1e-3 {
		t.Fatalf("merged vs adapter model: %g (want ≤ 1e-4); adapter vs pruned %g", dMerge, dPruned)
	}
	t.Logf("merged vs adapter model logits: max |Δ| %.2g (adapters change them by %.2g)", dMerge, dPruned)

	// Resume: 3 steps with checkpoints, then the rest from the checkpoint.
	dir := t.TempDir()
	o3 := opts
	o3.CheckpointDir, o3.Steps = dir, 6
	ctx, cancel := context.WithCancel(context.Background())
	o3.Progress = func(p TrainProgress) {
		if p.Step == 3 {
			cancel()
		}
	}
	if _, err := TrainLoRA(ctx, m, train, val, o3); err == nil {
		t.Fatal("a cancelled run returned no error")
	}
	o3.Progress = nil
	r2, err := TrainLoRA(context.Background(), m, train, val, o3)
	if err != nil {
		t.Fatal(err)
	}
	if r2.ResumedFrom != 3 || len(r2.History) != 6 {
		t.Fatalf("resumed from %d, history %d", r2.ResumedFrom, len(r2.History))
	}
	if a, b := r2.History[5].Loss, h[5].Loss; math.Abs(a-b) > 1e-6*math.Abs(b) {
		t.Fatalf("resumed run's last loss %g, uninterrupted %g", a, b)
	}
	if math.Abs(r2.BestValPPL-res.BestValPPL) > 1e-9*res.BestValPPL {
		t.Fatalf("resumed best ppl %g, uninterrupted %g", r2.BestValPPL, res.BestValPPL)
	}
}

func runLogits(t *testing.T, m *graph.Model, f map[string]*ort.Tensor) []float32 {
	t.Helper()
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSessionFromBytes(data, ort.Options{Threads: 1, Outputs: []string{"logits"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	out, err := s.Run(f, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := out["logits"].Float32s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestTrainLoRABadInput(t *testing.T) {
	m := loadLoRAFixture(t)
	cases := []struct {
		opts  LoRAOptions
		train [][]int
		want  string
	}{
		{LoRAOptions{Rank: -1}, [][]int{{1, 2, 3}}, "rank -1"},
		{LoRAOptions{Targets: "nope"}, [][]int{{1, 2, 3}}, `LoRA targets "nope" match no MatMul/Gemm weight`},
		{LoRAOptions{BatchSize: 2, SeqLen: 8}, [][]int{{1, 2, 3, 4, 5, 6, 7, 8, 9}}, "one batch needs 17"},
	}
	for _, c := range cases {
		_, err := TrainLoRA(context.Background(), m, c.train, nil, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.opts, err, c.want)
		}
	}
}

func TestDropoutMask(t *testing.T) {
	v := make([]float32, 100003)
	dropoutMask(v, 0.05, rand.New(rand.NewPCG(1, 2)))
	zeros := 0
	for _, x := range v {
		switch x {
		case 0:
			zeros++
		case float32(1 / 0.95):
		default:
			t.Fatalf("mask value %g", x)
		}
	}
	if f := float64(zeros) / float64(len(v)); math.Abs(f-0.05) > 0.005 {
		t.Fatalf("dropped fraction %.4f, want 0.05", f)
	}
}

// TestTrainLoRAUnsupportedOp: an op without a gradient rule on the path
// from the adapters to the loss is an error naming it.
func TestTrainLoRAUnsupportedOp(t *testing.T) {
	testenv.ORTLibrary(t)
	const H, V = 4, 6
	w := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(i%5)/5 - 0.4
		}
		return v
	}
	b := irtest.New("lm").
		Init("embed.weight", w(V*H), V, H).Init("mlp.up.weight", w(H*H), H, H).Init("lm_head.weight", w(H*V), H, V).
		Node("Gather", "/embed/Gather", []string{"embed.weight", "input_ids"}, []string{"h"}).
		Node("MatMul", "/mlp/up/MatMul", []string{"h", "mlp.up.weight"}, []string{"u"}).
		Node("Abs", "/mlp/act/Abs", []string{"u"}, []string{"a"}).
		Node("MatMul", "/lm_head/MatMul", []string{"a", "lm_head.weight"}, []string{"logits"}).
		Output("logits", -1, -1, V)
	g := b.Graph()
	g.Input = append(g.Input, irtest.ValueInfo("input_ids", onnxpb.TensorProto_INT64, -1, -1))
	m := b.Model()
	train := [][]int{{1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5}}
	_, err := TrainLoRA(context.Background(), m, train, nil, LoRAOptions{BatchSize: 2, SeqLen: 4, Steps: 1, Runtime: ort.Options{Threads: 1}})
	var ue *rewrite.UnsupportedOpError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "Abs") {
		t.Fatalf("err %v, want an UnsupportedOpError naming Abs", err)
	}
}

// TestMergeRefusesAnotherModel: adapters trained on a pruned model name
// its (renumbered) weights; merging them into the unpruned model must
// fail rather than change the wrong layers.
func TestMergeRefusesAnotherModel(t *testing.T) {
	m := loadLoRAFixture(t)
	pm := cloneModel(m)
	d, err := graph.FindBlocks(pm)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewrite.RemoveBlocks(pm, d, []int{1}); err != nil {
		t.Fatal(err)
	}
	a, err := NewAdapters(pm, "", 4, 8, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Merge(m); err == nil || !strings.Contains(err.Error(), "LoRA targets") {
		t.Fatalf("merge into the unpruned model: %v", err)
	}
	if err := a.Merge(pm); err != nil {
		t.Fatalf("merge into the model trained on: %v", err)
	}
}
