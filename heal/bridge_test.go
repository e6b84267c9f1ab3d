package heal

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// tapStates runs m with calib.Taps and returns tap number k for each
// batch: the residual stream entering block k. It shares no code with
// the fit, so the end-to-end tests measure the bridge independently.
func tapStates(t *testing.T, m *graph.Model, k int, batches []calib.Batch) [][]float32 {
	t.Helper()
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	tapped, taps, err := calib.Taps(m, d)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := proto.Marshal(tapped.Proto)
	sess, err := ort.NewSessionFromBytes(data, ort.Options{Threads: 1, ExternalDataDir: m.Dir, Outputs: []string{taps[k]}})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]float32
	for _, b := range batches {
		in, err := dec.Inputs(b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, nil)
		if err != nil {
			t.Fatal(err)
		}
		res, err := sess.Run(in, []string{taps[k]})
		if err != nil {
			t.Fatal(err)
		}
		v, err := res[taps[k]].Float32s()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// cutError is Σ‖a − b‖² over real tokens.
func cutError(a, b [][]float32, batches []calib.Batch) float64 {
	s := 0.0
	for i, bt := range batches {
		H := len(a[i]) / (bt.Size * bt.SeqLen)
		for tok := range bt.Size * bt.SeqLen {
			if bt.Mask[tok] == 0 {
				continue
			}
			for h := range H {
				d := float64(a[i][tok*H+h]) - float64(b[i][tok*H+h])
				s += d * d
			}
		}
	}
	return s
}

func randomBatches(vocab, n, seqLen int) []calib.Batch {
	rng := rand.New(rand.NewPCG(5, 5))
	var seqs [][]int
	for range n {
		s := make([]int, 2+rng.IntN(seqLen-1))
		for i := range s {
			s[i] = 3 + rng.IntN(vocab-3)
		}
		seqs = append(seqs, s)
	}
	return calib.Batches(seqs, 4)
}

func storiesBatches(t *testing.T, n int) []calib.Batch {
	tok, err := tokenizer.Load(testenv.Testdata(t, "models", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	samples, err := calib.LoadSamples(testenv.Testdata(t, "text", "tinystories_valid200.txt"), calib.TextOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return calib.Batches(calib.Tokenize(tok, samples[:n], 128, true), 8)
}

func TestBridgeEndToEnd(t *testing.T) {
	testenv.ORTLibrary(t)
	synth := filepath.Join(t.TempDir(), "synth.onnx")
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 4, Hidden: 32, Heads: 4, KVHeads: 2, FFN: 64, Vocab: 64, BOS: 1, EOS: 2}
	if err := convert.Build(convert.Synthetic(cfg, 11), synth, convert.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	stories := testenv.Testdata(t, "models", "stories260k_kv.onnx")
	tests := []struct {
		name    string
		path    string
		remove  []int
		batches func(*testing.T) []calib.Batch
	}{
		{"synthetic 2", synth, []int{2}, func(*testing.T) []calib.Batch { return randomBatches(64, 24, 24) }},
		{"synthetic 1-2", synth, []int{1, 2}, func(*testing.T) []calib.Batch { return randomBatches(64, 24, 24) }},
		{"stories260k 1", stories, []int{1}, func(t *testing.T) []calib.Batch { return storiesBatches(t, 32) }},
		{"stories260k 3", stories, []int{3}, func(t *testing.T) []calib.Batch { return storiesBatches(t, 32) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			batches := tc.batches(t)
			load := func() (*graph.Model, *graph.Decoder) {
				m, err := graph.Load(tc.path)
				if err != nil {
					t.Fatal(err)
				}
				d, err := graph.FindBlocks(m)
				if err != nil {
					t.Fatal(err)
				}
				return m, d
			}
			i, j := tc.remove[0], tc.remove[len(tc.remove)-1]
			full, _ := load()
			target := tapStates(t, full, j+1, batches) // h_{j+1} of the full model

			pruned, pd := load()
			if err := rewrite.RemoveBlocks(pruned, pd, tc.remove); err != nil {
				t.Fatal(err)
			}
			bridged, bd := load()
			rep, err := Bridge(context.Background(), bridged, bd, tc.remove, batches, Options{Ridge: DefaultRidge, Runtime: ort.Options{Threads: 1}})
			if err != nil {
				t.Fatal(err)
			}
			if err := rewrite.RemoveBlocks(bridged, bd, tc.remove); err != nil {
				t.Fatal(err)
			}
			if err := graph.Check(bridged); err != nil {
				t.Fatalf("bridged graph invalid: %v", err)
			}
			if a, b := len(bridged.Proto.Graph.Node), len(pruned.Proto.Graph.Node); a != b {
				t.Fatalf("bridged graph has %d nodes, plain pruning %d", a, b)
			}
			// Round-trip through disk, as the CLI does.
			out := filepath.Join(t.TempDir(), "bridged.onnx")
			if err := graph.Save(bridged, out, graph.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			if bridged, err = graph.Load(out); err != nil {
				t.Fatal(err)
			}
			// In the pruned models block i's input is what now replaces h_{j+1}.
			ePruned := cutError(tapStates(t, pruned, i, batches), target, batches)
			eBridged := cutError(tapStates(t, bridged, i, batches), target, batches)
			t.Logf("cut error Σ‖h'−h_{j+1}‖²: pruned %.4g, bridged %.4g (fit said %.4g → %.4g)",
				ePruned, eBridged, rep.Runs[0].SSEPruned, rep.Runs[0].SSEBridged)
			if !(eBridged < ePruned) {
				t.Fatalf("bridge did not lower the cut error: pruned %g, bridged %g", ePruned, eBridged)
			}
			// The fit's own accounting agrees with the measured errors
			// (float32 inference: loose tolerance).
			for _, p := range [][2]float64{{ePruned, rep.Runs[0].SSEPruned}, {eBridged, rep.Runs[0].SSEBridged}} {
				if d := p[0] - p[1]; d*d > 1e-4*p[0]*p[0] {
					t.Fatalf("measured %g, fit reported %g", p[0], p[1])
				}
			}
		})
	}
}

func TestBridgeBadInput(t *testing.T) {
	testenv.ORTLibrary(t)
	stories := testenv.Testdata(t, "models", "stories260k_kv.onnx")
	tests := []struct {
		name    string
		remove  []int
		batches []calib.Batch
		want    string
	}{
		{"block 0", []int{0}, nil, "no earlier MLP"},
		{"run from 0", []int{0, 1}, nil, "no earlier MLP"},
		{"out of range", []int{7}, nil, "out of range"},
		{"all", []int{0, 1, 2, 3, 4}, nil, "no decoder"},
		{"no batches", []int{2}, nil, "no calibration batches"},
		{"only padding", []int{2}, []calib.Batch{{Size: 1, SeqLen: 2, IDs: make([]int64, 2), Mask: make([]int64, 2), Positions: make([]int64, 2)}}, "no real tokens"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := graph.Load(stories)
			if err != nil {
				t.Fatal(err)
			}
			d, err := graph.FindBlocks(m)
			if err != nil {
				t.Fatal(err)
			}
			before, _ := proto.Marshal(m.Proto)
			_, err = Bridge(context.Background(), m, d, tc.remove, tc.batches, Options{Runtime: ort.Options{Threads: 1}})
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("err = %v, want one line containing %q", err, tc.want)
			}
			after, _ := proto.Marshal(m.Proto)
			if string(before) != string(after) {
				t.Fatal("a failed bridge modified the model")
			}
		})
	}
}
