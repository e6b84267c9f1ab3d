package rewrite_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// narrowed is a checkpoint with FFN channels and attention heads deleted
// from its weights (Hugging Face layout: q/k/v/gate/up rows, o/down
// columns; GPT-2's Conv1D c_fc columns and c_proj rows) and its config
// narrowed to match: what the converter builds from it is a model that
// never had them, the independent reference for Shrink.
type narrowed struct {
	convert.Checkpoint
	heads, kvHeads, ffn int
	// Per layer, the kept query features (also o_proj's inputs), KV
	// features and FFN channels.
	keepQ, keepKV, keepFFN map[int][]int
}

var tensorLayer = regexp.MustCompile(`^(?:model\.layers|transformer\.h)\.(\d+)\.(.*)$`)

func (n narrowed) Config() convert.Config {
	c := n.Checkpoint.Config()
	c.Heads, c.KVHeads, c.FFN = n.heads, n.kvHeads, n.ffn
	return c
}

func (n narrowed) Tensors() []convert.Tensor {
	var out []convert.Tensor
	for _, t := range n.Checkpoint.Tensors() {
		m := tensorLayer.FindStringSubmatch(t.Name)
		if m == nil {
			out = append(out, t)
			continue
		}
		l, _ := strconv.Atoi(m[1])
		var rows, cols []int
		switch m[2] {
		case "self_attn.q_proj.weight", "self_attn.q_proj.bias":
			rows = n.keepQ[l]
		case "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias":
			rows = n.keepKV[l]
		case "self_attn.o_proj.weight":
			cols = n.keepQ[l]
		case "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.c_proj.weight":
			rows = n.keepFFN[l]
		case "mlp.down_proj.weight", "mlp.c_fc.weight", "mlp.c_fc.bias":
			cols = n.keepFFN[l]
		}
		if len(t.Shape) == 1 && rows == nil {
			rows, cols = cols, nil // a bias has one axis
		}
		if rows == nil && cols == nil {
			out = append(out, t)
			continue
		}
		shape := slices.Clone(t.Shape)
		if len(shape) == 1 {
			shape = []int64{shape[0], 1}
		}
		R, C := int(shape[0]), int(shape[1])
		rowIdx, colIdx := rows, cols
		if rowIdx == nil {
			rowIdx = seq(R)
		}
		if colIdx == nil {
			colIdx = seq(C)
		}
		read := t.Read
		t.Read = func() ([]float32, error) {
			v, err := read()
			if err != nil {
				return nil, err
			}
			var o []float32
			for _, r := range rowIdx {
				for _, c := range colIdx {
					o = append(o, v[r*C+c])
				}
			}
			return o, nil
		}
		if len(t.Shape) == 1 {
			t.Shape = []int64{int64(len(rowIdx))}
		} else {
			t.Shape = []int64{int64(len(rowIdx)), int64(len(colIdx))}
		}
		out = append(out, t)
	}
	return out
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// keptFeatures expands kept groups to features: group g covers
// [g·width, (g+1)·width).
func keptFeatures(groups []int, width int) []int {
	var f []int
	for _, g := range groups {
		for j := range width {
			f = append(f, g*width+j)
		}
	}
	return f
}

func without(n int, remove []int) []int {
	var keep []int
	for i := range n {
		if !slices.Contains(remove, i) {
			keep = append(keep, i)
		}
	}
	return keep
}

func shrunk(t *testing.T, path string, plan *rewrite.ShrinkPlan) *graph.Model {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewrite.Shrink(m, d, plan); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestShrinkEqualsConverterWithout: the shrunk model's logits (a prefill,
// then a step through the KV cache) equal those of the converter's build
// of the same checkpoint with those channels and heads deleted — a
// grouped-query Llama with q/k/v biases (different channels and groups
// per layer) and a GPT-2 MLP.
func TestShrinkEqualsConverterWithout(t *testing.T) {
	testenv.ORTLibrary(t)
	cases := []struct {
		name     string
		cfg      convert.Config
		channels [][]int // removed per layer
		groups   [][]int
		build    convert.BuildOptions
	}{
		{"llama GQA", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 64, Heads: 8, KVHeads: 4, FFN: 96, Vocab: 128, QKVBias: true, BOS: 1, EOS: 2},
			[][]int{{0, 5, 17, 40, 41, 95}, {1, 2, 3, 60, 70, 90}}, [][]int{{1}, {3}}, convert.BuildOptions{}},
		{"llama MHA two heads", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 32, Heads: 4, FFN: 48, Vocab: 128, BOS: 1, EOS: 2},
			[][]int{{7}, {0}}, [][]int{{0, 2}, {1, 3}}, convert.BuildOptions{}},
		{"gpt2 MLP", convert.Config{Family: convert.FamilyGPT2, Layers: 2, Hidden: 32, Heads: 4, FFN: 128, Vocab: 128, MaxPositions: 64, BOS: 1, EOS: 2},
			[][]int{{0, 1, 2, 3, 64, 127}, {10, 20, 30, 40, 50, 60}}, nil, convert.BuildOptions{}},
		{"gpt2 MLP float16", convert.Config{Family: convert.FamilyGPT2, Layers: 2, Hidden: 32, Heads: 4, FFN: 128, Vocab: 128, MaxPositions: 64, BOS: 1, EOS: 2},
			[][]int{{0, 1, 2, 3, 64, 127}, {10, 20, 30, 40, 50, 60}}, nil, convert.BuildOptions{DType: convert.Float16}},
		{"llama float16 biases", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 64, Heads: 8, KVHeads: 4, FFN: 96, Vocab: 128, QKVBias: true, BOS: 1, EOS: 2},
			[][]int{{0}, {95}}, [][]int{{3}, {0}}, convert.BuildOptions{DType: convert.Float16}},
		{"llama float16 external data", convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 64, Heads: 8, KVHeads: 2, FFN: 96, Vocab: 128, BOS: 1, EOS: 2},
			[][]int{{3, 4, 5}, {93, 94, 95}}, [][]int{{0}, {1}}, convert.BuildOptions{DType: convert.Float16, ExternalAbove: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ck := convert.Synthetic(c.cfg, 11)
			cfg := ck.Config()
			dir := t.TempDir()
			full := filepath.Join(dir, "full.onnx")
			if err := convert.Build(ck, full, c.build); err != nil {
				t.Fatal(err)
			}
			plan := &rewrite.ShrinkPlan{}
			ref := narrowed{Checkpoint: ck, heads: cfg.Heads, kvHeads: cfg.KVHeads, ffn: cfg.FFN - len(c.channels[0]),
				keepQ: map[int][]int{}, keepKV: map[int][]int{}, keepFFN: map[int][]int{}}
			rep := cfg.Heads / cfg.KVHeads
			for l := range cfg.Layers {
				ls := rewrite.LayerShrink{Block: l, RemoveChannels: c.channels[l]}
				ref.keepFFN[l] = without(cfg.FFN, c.channels[l])
				if c.groups != nil {
					ls.RemoveKVGroups = c.groups[l]
					keep := without(cfg.KVHeads, c.groups[l])
					ref.keepKV[l] = keptFeatures(keep, cfg.HeadDim)
					ref.keepQ[l] = keptFeatures(keep, rep*cfg.HeadDim)
					ref.kvHeads, ref.heads = len(keep), len(keep)*rep
				}
				plan.Layers = append(plan.Layers, ls)
			}
			m := shrunk(t, full, plan)
			refPath := filepath.Join(dir, "ref.onnx")
			if err := convert.Build(ref, refPath, c.build); err != nil {
				t.Fatal(err)
			}
			refSess, err := ort.NewSession(refPath, ort.Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer refSess.Close()
			if d := compareDecoders(t, session(t, m), refSess); d > 1e-4 {
				t.Errorf("max |logit diff| %.3g from the model built without those channels and heads", d)
			}
			refModel, err := graph.Load(refPath)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := graph.TotalParams(m), graph.TotalParams(refModel); got != want {
				t.Errorf("%d parameters, the narrower build has %d", got, want)
			}
			// Negative control: removing other channels is a different
			// model, and the comparison must see it.
			other := &rewrite.ShrinkPlan{}
			for _, ls := range plan.Layers {
				ls.RemoveChannels = slices.Clone(ls.RemoveChannels)
				ls.RemoveChannels[0] = without(cfg.FFN, ls.RemoveChannels)[0]
				slices.Sort(ls.RemoveChannels)
				other.Layers = append(other.Layers, ls)
			}
			if d := compareDecoders(t, session(t, shrunk(t, full, other)), refSess); d < 1e-4 {
				t.Fatalf("removing other channels agrees with the reference to %.3g: the comparison cannot fail", d)
			}
		})
	}
}

// zeroed returns the model at path with the given FFN channels and KV
// groups silenced instead of removed: the down projection's input rows
// of the channels and o_proj's input rows of the groups' query heads set
// to zero. Removing them must give the same logits.
func zeroed(t *testing.T, path string, plan *rewrite.ShrinkPlan) *graph.Model {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	widths := rewrite.FindWidths(m, d)
	zero := func(w *rewrite.LinearWeight, inputs []int) {
		if w.Tensor.GetDataType() != 1 || w.Tensor.RawData == nil {
			t.Fatalf("%s: want raw float32", w.Name)
		}
		raw := slices.Clone(w.Tensor.RawData)
		for _, i := range inputs {
			for o := range w.Out {
				binary.LittleEndian.PutUint32(raw[4*w.At(o, i):], math.Float32bits(0))
			}
		}
		w.Tensor.RawData = raw
	}
	for _, ls := range plan.Layers {
		bw := widths[ls.Block]
		if len(ls.RemoveChannels) > 0 {
			zero(bw.MLP.Down, ls.RemoveChannels)
		}
		if len(ls.RemoveKVGroups) > 0 {
			a := bw.Attn
			zero(a.O, keptFeatures(ls.RemoveKVGroups, a.Heads/a.KVHeads*a.HeadDim))
		}
	}
	return m
}

// TestShrinkEqualsZeroedTorch: on PyTorch's exports (and onnxruntime's
// optimized graph of one), shrinking 25% of the FFN channels and one KV
// group per block gives the logits of the original with those channels
// and heads zeroed, through the KV cache too, and the parameter count
// the architecture predicts.
func TestShrinkEqualsZeroedTorch(t *testing.T) {
	testenv.ORTLibrary(t)
	cases := []struct {
		fixture string
		groups  int
	}{
		{"stories260k_kv.onnx", 1},
		{"stories260k_kv_ortopt.onnx", 1}, // QuickGelu, FusedMatMul, shared shape constants
		{"stories260k.onnx", 1},           // no KV cache
		{"gpt2_kv.onnx", 0},               // GELU written out, Gemm in Reshapes with FFN in the shape
		{"gpt2_kv_ortopt.onnx", 0},        // FastGelu with its bias
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			path := filepath.Join("..", "testdata", "models", c.fixture)
			m, err := graph.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			d, err := graph.FindBlocks(m)
			if err != nil {
				t.Fatal(err)
			}
			before := graph.TotalParams(m)
			widths := rewrite.FindWidths(m, d)
			plan, err := rewrite.PlanShrink(m, widths, rewrite.ShrinkOptions{FFNRatio: 0.25, RemoveKVGroups: c.groups})
			if err != nil {
				t.Fatal(err)
			}
			got := shrunk(t, path, plan)
			ref := zeroed(t, path, plan)
			if diff := compareDecodersAny(t, session(t, got), session(t, ref)); diff > 1e-4 {
				t.Errorf("max |logit diff| %.3g from the model with those channels and heads zeroed", diff)
			}
			// Parameters: each block loses 3 weights' worth of channels
			// (gate, up, down; or c_fc with its bias and c_proj) and per
			// removed group, q/k/v columns and o rows.
			var want int64 = before
			for _, ls := range plan.Layers {
				bw := widths[ls.Block]
				removed := int64(len(ls.RemoveChannels))
				for _, up := range bw.MLP.Up {
					want -= removed * int64(up.In)
				}
				want -= removed * int64(bw.MLP.Down.Out)
				want -= removed * int64(len(bw.MLP.Biases))
				if g := len(ls.RemoveKVGroups); g > 0 {
					a := bw.Attn
					q := int64(g * a.Heads / a.KVHeads * a.HeadDim)
					kv := int64(g * a.HeadDim)
					want -= q*int64(a.Q.In) + 2*kv*int64(a.K.In) + q*int64(a.O.Out)
				}
			}
			if p := graph.TotalParams(got); p != want || p >= before {
				t.Errorf("%d parameters after shrinking (%d before), expected %d", p, before, want)
			}
			t.Logf("%s: %d → %d parameters", c.fixture, before, graph.TotalParams(got))
		})
	}
}

// compareDecodersAny is compareDecoders for models with or without a KV
// cache (without one, only the prefill is compared).
func compareDecodersAny(t *testing.T, a, b *ort.Session) float64 {
	t.Helper()
	da, err := ort.NewDecoder(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(da.KV) > 0 {
		return compareDecoders(t, a, b)
	}
	db, err := ort.NewDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int64{1, 17, 42, 9, 77, 3, 55, 21}
	mask := slices.Repeat([]int64{1}, len(ids))
	pos := []int64{0, 1, 2, 3, 4, 5, 6, 7}
	var logits [2][]float32
	for i, d := range []*ort.Decoder{da, db} {
		in, err := d.Inputs(ids, mask, pos, 1, len(ids), nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := d.Session.Run(in, []string{"logits"})
		if err != nil {
			t.Fatal(err)
		}
		logits[i], _ = out["logits"].Float32s()
	}
	worst := 0.0
	for i := range logits[0] {
		worst = max(worst, math.Abs(float64(logits[0][i]-logits[1][i])))
	}
	return worst
}

// TestShrinkRatioZero: a plan that removes nothing leaves the model as it
// was: the saved file is byte-identical and the logits equal.
func TestShrinkRatioZero(t *testing.T) {
	for _, fixture := range []string{"stories260k_kv.onnx", "gpt2_kv.onnx"} {
		path := filepath.Join("..", "testdata", "models", fixture)
		m, err := graph.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		d, err := graph.FindBlocks(m)
		if err != nil {
			t.Fatal(err)
		}
		plan, err := rewrite.PlanShrink(m, rewrite.FindWidths(m, d), rewrite.ShrinkOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := rewrite.Shrink(m, d, plan); err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "m.onnx")
		if err := graph.Save(m, out, graph.SaveOptions{}); err != nil {
			t.Fatal(err)
		}
		a, _ := os.ReadFile(path)
		b, _ := os.ReadFile(out)
		if !bytes.Equal(a, b) {
			t.Fatalf("%s: ratio 0 changed the model", fixture)
		}
	}
	testenv.ORTLibrary(t)
	path := filepath.Join("..", "testdata", "models", "stories260k_kv.onnx")
	orig, _ := graph.Load(path)
	if d := compareDecoders(t, session(t, shrunk(t, path, &rewrite.ShrinkPlan{Layers: []rewrite.LayerShrink{{Block: 0}}})), session(t, orig)); d != 0 {
		t.Fatalf("logits differ by %g after an empty shrink", d)
	}
}

func TestFindWidths(t *testing.T) {
	cases := []struct {
		fixture string
		mlp     string // "FFN" or an error substring
		attn    string // "heads/kv/d" or an error substring
	}{
		{"stories260k_kv.onnx", "172", "8/4/8"},
		{"stories260k.onnx", "172", "8/4/8"},
		{"stories260k_kv_ortopt.onnx", "172", "8/4/8"},
		{"gpt2_kv.onnx", "256", "not named q_proj"},
		{"gpt2_kv_ortopt.onnx", "256", "not named q_proj"},
	}
	for _, c := range cases {
		t.Run(c.fixture, func(t *testing.T) {
			m := loadFixture(t, c.fixture)
			d, err := graph.FindBlocks(m)
			if err != nil {
				t.Fatal(err)
			}
			for _, bw := range rewrite.FindWidths(m, d) {
				mlp, attn := "", ""
				if bw.MLP != nil {
					mlp = fmt.Sprint(bw.MLP.FFN)
				} else {
					mlp = bw.MLPErr.Error()
					if !errors.Is(bw.MLPErr, rewrite.ErrUnsupportedWidth) {
						t.Errorf("MLP error %v does not wrap ErrUnsupportedWidth", bw.MLPErr)
					}
				}
				if bw.Attn != nil {
					attn = fmt.Sprintf("%d/%d/%d", bw.Attn.Heads, bw.Attn.KVHeads, bw.Attn.HeadDim)
				} else {
					attn = bw.AttnErr.Error()
				}
				if !strings.Contains(mlp, c.mlp) || !strings.Contains(attn, c.attn) {
					t.Fatalf("block %d: MLP %q, attention %q; want %q, %q", bw.Block, mlp, attn, c.mlp, c.attn)
				}
			}
		})
	}
}

func TestShrinkBadInput(t *testing.T) {
	cases := []struct {
		name    string
		fixture string
		opts    *rewrite.ShrinkOptions
		plan    *rewrite.ShrinkPlan
		want    string
	}{
		{"ratio 1", "stories260k_kv.onnx", &rewrite.ShrinkOptions{FFNRatio: 1}, nil, "FFN ratio 1 outside [0, 1)"},
		{"negative ratio", "stories260k_kv.onnx", &rewrite.ShrinkOptions{FFNRatio: -0.25}, nil, "outside [0, 1)"},
		{"heads to zero", "stories260k_kv.onnx", &rewrite.ShrinkOptions{RemoveKVGroups: 4}, nil, "removing 4 would leave no attention heads"},
		{"block out of range", "stories260k_kv.onnx", &rewrite.ShrinkOptions{FFNRatio: 0.25, Blocks: []int{7}}, nil, "block 7 out of range"},
		{"unknown criterion", "stories260k_kv.onnx", &rewrite.ShrinkOptions{FFNRatio: 0.25, Criterion: "random"}, nil, `criterion "random"`},
		{"activation without statistics", "stories260k_kv.onnx", &rewrite.ShrinkOptions{FFNRatio: 0.25, Criterion: rewrite.CriterionActivation}, nil, "no calibration activations"},
		{"fused qkv heads", "gpt2_kv.onnx", &rewrite.ShrinkOptions{RemoveKVGroups: 1}, nil, "not named q_proj"},
		{"plan: every group", "stories260k_kv.onnx", nil, &rewrite.ShrinkPlan{Layers: []rewrite.LayerShrink{{Block: 1, RemoveKVGroups: []int{0, 1, 2, 3}}}}, "would leave no attention heads"},
		{"plan: every channel", "stories260k_kv.onnx", nil, &rewrite.ShrinkPlan{Layers: []rewrite.LayerShrink{{Block: 1, RemoveChannels: seq(172)}}}, "removing all 172 FFN channels"},
		{"plan: channel out of range", "stories260k_kv.onnx", nil, &rewrite.ShrinkPlan{Layers: []rewrite.LayerShrink{{Block: 1, RemoveChannels: []int{172}}}}, "FFN channel 172 out of range 0..171"},
		{"plan: other model", "stories260k_kv.onnx", nil, &rewrite.ShrinkPlan{Layers: []rewrite.LayerShrink{{Block: 0, FFN: 256, RemoveChannels: []int{1}}}}, "the model has 172"},
		{"plan: block count", "stories260k_kv.onnx", nil, &rewrite.ShrinkPlan{Blocks: 6}, "the plan is for 6 blocks"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := loadFixture(t, c.fixture)
			d, err := graph.FindBlocks(m)
			if err != nil {
				t.Fatal(err)
			}
			widths := rewrite.FindWidths(m, d)
			if c.opts != nil {
				_, err = rewrite.PlanShrink(m, widths, *c.opts)
			} else {
				err = rewrite.Shrink(m, d, c.plan)
			}
			if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %v, want one line containing %q", err, c.want)
			}
			if p, orig := graph.TotalParams(m), graph.TotalParams(loadFixture(t, c.fixture)); p != orig {
				t.Fatalf("the model changed despite the error")
			}
		})
	}
}
