package calib

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func floats(t *testing.T, m *graph.Model, name string) []float32 {
	t.Helper()
	init := m.Initializer(name)
	if init == nil {
		t.Fatalf("no initializer %s", name)
	}
	b, err := m.TensorBytes(init)
	if err != nil {
		t.Fatal(err)
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

// TestTapsAreTheResidualStream checks the first and last taps against
// the model's own weights: h_0 is the embedding of the ids, and the
// logits are the LM head applied to RMSNorm(h_L).
func TestTapsAreTheResidualStream(t *testing.T) {
	testenv.ORTLibrary(t)
	m, err := graph.Load(filepath.Join("..", "testdata", "models", "stories260k_kv.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	tapped, taps, err := Taps(m, d)
	if err != nil {
		t.Fatal(err)
	}
	if len(taps) != 6 || len(m.Proto.Graph.Output) != 11 {
		t.Fatalf("%d taps (want 6); original outputs now %d (want 11, unchanged)", len(taps), len(m.Proto.Graph.Output))
	}
	data, _ := proto.Marshal(tapped.Proto)
	sess, err := ort.NewSessionFromBytes(data, ort.Options{Threads: 1, ExternalDataDir: m.Dir})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		t.Fatal(err)
	}
	// PyTorch's residual states for these ids (testdata/gen/skip_refs.py).
	var ref struct {
		Hidden struct {
			InputIDs []int64     `json:"input_ids"`
			States   [][]float64 `json:"states"`
		} `json:"hidden"`
	}
	b, err := os.ReadFile(filepath.Join("..", "testdata", "models", "stories260k_kv.skip.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		t.Fatal(err)
	}
	ids := ref.Hidden.InputIDs
	mask := []int64{1, 1, 1, 1, 1, 1, 1, 1}
	pos := []int64{0, 1, 2, 3, 4, 5, 6, 7}
	in, err := dec.Inputs(ids, mask, pos, 1, 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := sess.Run(in, append([]string{"logits"}, taps...))
	if err != nil {
		t.Fatal(err)
	}
	const H, V = 64, 512
	emb := floats(t, m, "model.embed_tokens.weight")
	h0, _ := out[taps[0]].Float32s()
	for tk, id := range ids {
		for k := range H {
			if h0[tk*H+k] != emb[int(id)*H+k] {
				t.Fatalf("h_0[%d][%d] = %g, embedding row %d has %g", tk, k, h0[tk*H+k], id, emb[int(id)*H+k])
			}
		}
	}
	for l, name := range taps {
		got, _ := out[name].Float32s()
		want := ref.Hidden.States[l]
		var worst float64
		for i := range want {
			worst = max(worst, math.Abs(float64(got[i])-want[i]))
		}
		if len(got) != len(want) || worst > 1e-4 {
			t.Errorf("tap h_%d (%s): %d values, max diff %.3g from PyTorch", l, name, len(got), worst)
		}
	}
	norm := floats(t, m, "model.norm.weight")
	head := floats(t, m, d.LMHead.Weights[0]) // [H, V], transposed by the exporter
	hL, _ := out[taps[len(taps)-1]].Float32s()
	logits, _ := out["logits"].Float32s()
	var worst float64
	for tk := range ids {
		x := hL[tk*H : (tk+1)*H]
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		inv := 1 / math.Sqrt(ss/H+1e-5)
		for v := range V {
			var s float64
			for k := range H {
				s += float64(x[k]) * inv * float64(norm[k]) * float64(head[k*V+v])
			}
			worst = max(worst, math.Abs(s-float64(logits[tk*V+v])))
		}
	}
	if worst > 1e-4 {
		t.Fatalf("LM head(RMSNorm(h_L)) differs from the logits by %g", worst)
	}

	// Calibration over the same tokens, twice in one batch, once padded:
	// pads must not count.
	batches := Batches([][]int{{1, 403, 407, 261, 378, 270, 261, 268}, {1, 403, 407}}, 2)
	st, err := Calibrate(context.Background(), m, d, batches, Options{Runtime: ort.Options{Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Samples != 2 || st.Tokens != 11 || len(st.Angular) != 5 || len(st.Angular[0]) != 5 {
		t.Fatalf("stats: %d samples, %d tokens, %d rows", st.Samples, st.Tokens, len(st.Angular))
	}
	for l, row := range st.Angular {
		for n, v := range row {
			if !(v >= 0 && v <= 1) {
				t.Errorf("d(%d, %d) = %g outside [0, 1]", l, n+1, v)
			}
		}
	}
}
