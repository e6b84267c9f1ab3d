package convert_test

import (
	"encoding/binary"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// fixtureCheckpoint is a Checkpoint whose tensors are read out of one of
// the torch-exported fixtures (testdata/models): building from it and
// comparing with the fixture's torch reference outputs checks the whole
// builder against an independent implementation.
type fixtureCheckpoint struct {
	cfg     convert.Config
	tensors []convert.Tensor
}

func (c *fixtureCheckpoint) Config() convert.Config    { return c.cfg }
func (c *fixtureCheckpoint) Tensors() []convert.Tensor { return c.tensors }
func (c *fixtureCheckpoint) Close() error              { return nil }

// fixtureReader reads float32 initializers of a loaded fixture.
type fixtureReader struct {
	t     testing.TB
	m     *graph.Model
	nodes map[string][]string // node name → inputs
}

func newFixtureReader(t testing.TB, path string) *fixtureReader {
	t.Helper()
	m, err := graph.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &fixtureReader{t: t, m: m, nodes: map[string][]string{}}
	for _, n := range m.Proto.GetGraph().GetNode() {
		r.nodes[n.GetName()] = n.GetInput()
	}
	return r
}

// values returns an initializer's dims and float32 data.
func (r *fixtureReader) values(name string) ([]int64, []float32) {
	r.t.Helper()
	init := r.m.Initializer(name)
	if init == nil {
		r.t.Fatalf("fixture has no initializer %q", name)
	}
	raw, err := r.m.TensorBytes(init)
	if err != nil {
		r.t.Fatal(err)
	}
	vals := make([]float32, len(raw)/4)
	for i := range vals {
		vals[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	return init.GetDims(), vals
}

// named is a tensor the fixture keeps under its Hugging Face name.
func (r *fixtureReader) named(name string) convert.Tensor {
	dims, vals := r.values(name)
	return convert.Tensor{Name: name, Shape: dims, Read: func() ([]float32, error) { return append([]float32(nil), vals...), nil }}
}

// linear recovers an nn.Linear weight [out, in] from the anonymous
// transposed initializer [in, out] that the MatMul node reads.
func (r *fixtureReader) linear(hfName, node string) convert.Tensor {
	r.t.Helper()
	ins, ok := r.nodes[node]
	if !ok || len(ins) != 2 {
		r.t.Fatalf("fixture has no MatMul node %q", node)
	}
	dims, vals := r.values(ins[1])
	in, out := int(dims[0]), int(dims[1])
	w := make([]float32, len(vals))
	for i := 0; i < in; i++ {
		for o := 0; o < out; o++ {
			w[o*in+i] = vals[i*out+o]
		}
	}
	return convert.Tensor{Name: hfName, Shape: []int64{int64(out), int64(in)}, Read: func() ([]float32, error) { return append([]float32(nil), w...), nil }}
}

// storiesCheckpoint reads stories260k_kv.onnx: Llama, dim 64, 5 layers,
// 8 heads, 4 KV heads, FFN 172, vocab 512, tied head (testdata/gen).
func storiesCheckpoint(t testing.TB) *fixtureCheckpoint {
	r := newFixtureReader(t, testenv.Testdata(t, "models", "stories260k_kv.onnx"))
	ck := &fixtureCheckpoint{cfg: convert.Config{
		Family: convert.FamilyLlama, HFArchitecture: "LlamaForCausalLM",
		Layers: 5, Hidden: 64, Heads: 8, KVHeads: 4, HeadDim: 8, FFN: 172, Vocab: 512,
		MaxPositions: 512, NormEps: 1e-5, RopeTheta: 10000, TiedEmbeddings: true, BOS: 1, EOS: 2,
	}}
	ck.tensors = append(ck.tensors, r.named("model.embed_tokens.weight"))
	for l := 0; l < 5; l++ {
		p, n := fmt.Sprintf("model.layers.%d.", l), fmt.Sprintf("/model/layers.%d/", l)
		ck.tensors = append(ck.tensors, r.named(p+"input_layernorm.weight"), r.named(p+"post_attention_layernorm.weight"))
		for _, proj := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
			ck.tensors = append(ck.tensors, r.linear(p+proj+".weight", n+strings.ReplaceAll(proj, ".", "/")+"/MatMul"))
		}
	}
	ck.tensors = append(ck.tensors, r.named("model.norm.weight"))
	return ck
}

// gpt2Checkpoint reads gpt2_kv.onnx, whose initializers keep GPT-2's
// names and Conv1D layout: 6 blocks, n_embd 64, 4 heads, vocab 512,
// n_positions 256.
func gpt2Checkpoint(t testing.TB) *fixtureCheckpoint {
	r := newFixtureReader(t, testenv.Testdata(t, "models", "gpt2_kv.onnx"))
	ck := &fixtureCheckpoint{cfg: convert.Config{
		Family: convert.FamilyGPT2, HFArchitecture: "GPT2LMHeadModel",
		Layers: 6, Hidden: 64, Heads: 4, KVHeads: 4, HeadDim: 16, FFN: 256, Vocab: 512,
		MaxPositions: 256, NormEps: 1e-5, TiedEmbeddings: true, BOS: -1, EOS: -1,
	}}
	for _, init := range r.m.Proto.GetGraph().GetInitializer() {
		if strings.HasPrefix(init.GetName(), "transformer.") {
			ck.tensors = append(ck.tensors, r.named(init.GetName()))
		}
	}
	return ck
}

// TestBuildMatchesTorch builds the torch fixtures' weights and compares
// logits and presents with torch's outputs (prefill with an empty past,
// a left-padded batch, and a decode step on a 5-token cache).
func TestBuildMatchesTorch(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, tc := range []struct {
		name string
		ck   func(testing.TB) *fixtureCheckpoint
		ref  string
	}{
		{"stories260k", storiesCheckpoint, "stories260k_kv.ref.json"},
		{"gpt2", gpt2Checkpoint, "gpt2_kv.ref.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.onnx")
			if err := convert.Build(tc.ck(t), path, convert.BuildOptions{}); err != nil {
				t.Fatal(err)
			}
			ref, err := reffile.Load(testenv.Testdata(t, "models", tc.ref))
			if err != nil {
				t.Fatal(err)
			}
			worst := compareWithRef(t, path, ref, ref.Atol)
			t.Logf("max |diff| vs torch: %.3g (atol %g)", worst, ref.Atol)
		})
	}
}

// compareWithRef runs every case of ref through the model at path and
// checks all outputs within atol, returning the largest difference. In
// the left-padded batch only real positions are compared: the logits of a
// padding query are defined by no convention (torch's GPT-2 masks
// causality and padding with two sums, the Llama fixture with one).
func compareWithRef(t *testing.T, path string, ref *reffile.File, atol float64) float64 {
	t.Helper()
	sess, err := ort.NewSession(path, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	worst := 0.0
	for _, c := range ref.Cases {
		in, err := c.RuntimeInputs()
		if err != nil {
			t.Fatal(err)
		}
		got, err := sess.Run(in, nil)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		mask, err := c.Inputs["attention_mask"].Int64s()
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range c.OutputNames() {
			want := c.Outputs[name]
			var d float64
			if name == "logits" && hasPadding(mask) {
				d, err = compareRealPositions(got[name], want, c.Inputs["attention_mask"].Shape, mask, atol)
			} else {
				d, err = reffile.Compare(got[name], want, atol)
			}
			if err != nil {
				t.Errorf("%s %s: %v", c.Name, name, err)
			}
			worst = max(worst, d)
		}
	}
	return worst
}

func hasPadding(mask []int64) bool {
	for _, m := range mask {
		if m == 0 {
			return true
		}
	}
	return false
}

// compareRealPositions compares logits [batch, seq, vocab] at the
// positions whose attention_mask entry is 1 (the mask covers past+seq;
// its last seq columns are the queries), and checks the rest are finite.
func compareRealPositions(got *ort.Tensor, want reffile.Tensor, maskShape []int64, mask []int64, atol float64) (float64, error) {
	g, err := got.Float32s()
	if err != nil {
		return 0, err
	}
	w, err := want.Float64s()
	if err != nil {
		return 0, err
	}
	if len(g) != len(w) || len(want.Shape) != 3 {
		return 0, fmt.Errorf("shape %v, want %v", got.Shape, want.Shape)
	}
	batch, seq, vocab := int(want.Shape[0]), int(want.Shape[1]), int(want.Shape[2])
	total := int(maskShape[1])
	worst := 0.0
	for b := 0; b < batch; b++ {
		for s := 0; s < seq; s++ {
			real := mask[b*total+total-seq+s] == 1
			for v := 0; v < vocab; v++ {
				i := (b*seq+s)*vocab + v
				x := float64(g[i])
				if math.IsNaN(x) || math.IsInf(x, 0) {
					return math.Inf(1), fmt.Errorf("non-finite logit %v at batch %d position %d", x, b, s)
				}
				if real {
					worst = max(worst, math.Abs(x-w[i]))
				}
			}
		}
	}
	if worst > atol {
		return worst, fmt.Errorf("max abs diff %.3g at real positions exceeds atol %g", worst, atol)
	}
	return worst, nil
}
