package rewrite_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// withoutLayers is a checkpoint with some layers dropped and the rest
// renumbered: what the converter builds is a model that never had them,
// an independent reference for RemoveBlocks.
type withoutLayers struct {
	convert.Checkpoint
	drop []int
}

var layerName = regexp.MustCompile(`^model\.layers\.(\d+)\.`)

func (w withoutLayers) Config() convert.Config {
	c := w.Checkpoint.Config()
	c.Layers -= len(w.drop)
	return c
}

func (w withoutLayers) Tensors() []convert.Tensor {
	var out []convert.Tensor
	for _, t := range w.Checkpoint.Tensors() {
		m := layerName.FindStringSubmatch(t.Name)
		if m == nil {
			out = append(out, t)
			continue
		}
		l, _ := strconv.Atoi(m[1])
		if slices.Contains(w.drop, l) {
			continue
		}
		shift := 0
		for _, d := range w.drop {
			if d < l {
				shift++
			}
		}
		t.Name = fmt.Sprintf("model.layers.%d.%s", l-shift, t.Name[len(m[0]):])
		out = append(out, t)
	}
	return out
}

// TestRemoveBlocksEqualsConverterWithoutLayers prunes converted models
// (stories260K from llama2.c when ../shared is there, and a synthetic
// GQA model always) and compares logits, through the KV cache too, with
// the converter's build of the same checkpoint without those layers.
func TestRemoveBlocksEqualsConverterWithoutLayers(t *testing.T) {
	testenv.ORTLibrary(t)
	sources := map[string]func(t *testing.T) convert.Checkpoint{
		"synthetic": func(t *testing.T) convert.Checkpoint {
			return convert.Synthetic(convert.Config{Family: convert.FamilyLlama, Layers: 4, Hidden: 64, Heads: 8, KVHeads: 2,
				FFN: 96, Vocab: 128, BOS: 1, EOS: 2}, 5)
		},
		"stories260K.bin": func(t *testing.T) convert.Checkpoint {
			ck, err := convert.Open(filepath.Join(testenv.SharedDir(t), "models", "stories260K", "stories260K.bin"), convert.OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ck.Close() })
			return ck
		},
	}
	for name, open := range sources {
		t.Run(name, func(t *testing.T) {
			ck := open(t)
			dir := t.TempDir()
			full := filepath.Join(dir, "full.onnx")
			if err := convert.Build(ck, full, convert.BuildOptions{}); err != nil {
				t.Fatal(err)
			}
			L := ck.Config().Layers
			for _, rm := range removals(L) {
				m, err := graph.Load(full)
				if err != nil {
					t.Fatal(err)
				}
				d, err := graph.FindBlocks(m)
				if err != nil {
					t.Fatal(err)
				}
				if err := rewrite.RemoveBlocks(m, d, rm); err != nil {
					t.Fatal(err)
				}
				refPath := filepath.Join(dir, fmt.Sprintf("ref%v.onnx", rm))
				if err := convert.Build(withoutLayers{ck, rm}, refPath, convert.BuildOptions{}); err != nil {
					t.Fatal(err)
				}
				ref, err := ort.NewSession(refPath, ort.Options{Threads: 1})
				if err != nil {
					t.Fatal(err)
				}
				got := session(t, m)
				// A prefill of 5 tokens, then 3 more through the cache.
				if d := compareDecoders(t, got, ref); d > 1e-4 {
					t.Errorf("remove %v: max |diff| %.3g from the model built without those layers", rm, d)
				}
				ref.Close()
			}
			// Negative control: block 1 removed is not the model built
			// without layer 2, and the comparison must say so.
			m, _ := graph.Load(full)
			d, _ := graph.FindBlocks(m)
			if err := rewrite.RemoveBlocks(m, d, []int{1}); err != nil {
				t.Fatal(err)
			}
			other, err := ort.NewSession(filepath.Join(dir, "ref[2].onnx"), ort.Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if d := compareDecoders(t, session(t, m), other); d < 1e-3 {
				t.Fatalf("removing block 1 agrees with dropping layer 2 to %.3g: the comparison cannot fail", d)
			}
		})
	}
}

// compareDecoders runs a prefill and a cached step through both models
// and returns the largest logits difference.
func compareDecoders(t *testing.T, a, b *ort.Session) float64 {
	t.Helper()
	da, err := ort.NewDecoder(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := ort.NewDecoder(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(da.KV) != len(db.KV) {
		t.Fatalf("%d vs %d KV inputs", len(da.KV), len(db.KV))
	}
	ids := []int64{1, 17, 42, 9, 77, 3, 55, 21}
	worst := 0.0
	var pastA, pastB map[string]*ort.Tensor
	for _, step := range [][2]int{{0, 5}, {5, 8}} {
		seq := ids[step[0]:step[1]]
		pos := make([]int64, len(seq))
		for i := range pos {
			pos[i] = int64(step[0] + i)
		}
		mask := make([]int64, step[1])
		for i := range mask {
			mask[i] = 1
		}
		run := func(d *ort.Decoder, past map[string]*ort.Tensor) ([]float32, map[string]*ort.Tensor) {
			in, err := d.Inputs(seq, mask, pos, 1, len(seq), past)
			if err != nil {
				t.Fatal(err)
			}
			out, err := d.Session.Run(in, nil)
			if err != nil {
				t.Fatal(err)
			}
			next := map[string]*ort.Tensor{}
			for _, kv := range d.KV {
				next[kv.Name] = out[kv.Present]
			}
			l, _ := out["logits"].Float32s()
			return l, next
		}
		var la, lb []float32
		la, pastA = run(da, pastA)
		lb, pastB = run(db, pastB)
		for i := range la {
			worst = max(worst, float64(la[i]-lb[i]), float64(lb[i]-la[i]))
		}
	}
	return worst
}
