package rewrite_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// skipFile holds logits PyTorch computed with blocks skipped
// (testdata/gen/skip_refs.py): the independent reference for pruning.
type skipFile struct {
	Model    string  `json:"model"`
	Atol     float64 `json:"atol"`
	Removals []struct {
		Remove []int          `json:"remove"`
		Cases  []reffile.Case `json:"cases"`
	} `json:"removals"`
}

func pruned(t *testing.T, file string, remove []int) *graph.Model {
	t.Helper()
	m := loadFixture(t, file)
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := rewrite.RemoveBlocks(m, d, remove); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func session(t *testing.T, m *graph.Model) *ort.Session {
	t.Helper()
	data, err := proto.Marshal(m.Proto)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ort.NewSessionFromBytes(data, ort.Options{Threads: 1, ExternalDataDir: m.Dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestRemoveBlocksEqualsSkippedTorch: the pruned ONNX model's logits
// equal PyTorch's with the same blocks skipped, for every single block,
// every contiguous pair and the first+last pair.
func TestRemoveBlocksEqualsSkippedTorch(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, name := range []string{"stories260k", "stories260k_kv", "gpt2_kv"} {
		path := filepath.Join("..", "testdata", "models", name+".skip.json")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate with testdata/gen/skip_refs.py)", err)
		}
		var sf skipFile
		if err := json.Unmarshal(b, &sf); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if len(sf.Removals) == 0 {
			t.Fatalf("%s: no removals", path)
		}
		for _, r := range sf.Removals {
			t.Run(fmt.Sprintf("%s/remove%v", name, r.Remove), func(t *testing.T) {
				sess := session(t, pruned(t, sf.Model, r.Remove))
				for _, c := range r.Cases {
					in, err := c.RuntimeInputs()
					if err != nil {
						t.Fatal(err)
					}
					got, err := sess.Run(in, c.OutputNames())
					if err != nil {
						t.Fatal(err)
					}
					for out, want := range c.Outputs {
						if d, err := reffile.Compare(got[out], want, sf.Atol); err != nil {
							t.Errorf("%s/%s: %v (max diff %.3g)", c.Name, out, err, d)
						}
					}
				}
			})
		}
	}
}

// TestRemoveBlocksKeepsKVCacheConsistent: on every pruned KV model,
// greedy decoding of 64 tokens through the cache equals recomputing the
// whole sequence at each step — what the Python pipeline got wrong.
func TestRemoveBlocksKeepsKVCacheConsistent(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, file := range []string{"stories260k_kv.onnx", "gpt2_kv.onnx"} {
		d0, _ := graph.FindBlocks(loadFixture(t, file))
		for _, rm := range removals(len(d0.Blocks)) {
			t.Run(fmt.Sprintf("%s/remove%v", file, rm), func(t *testing.T) {
				dec, err := ort.NewDecoder(session(t, pruned(t, file, rm)))
				if err != nil {
					t.Fatal(err)
				}
				if len(dec.KV) != 2*(len(d0.Blocks)-len(rm)) {
					t.Fatalf("%d KV inputs, want %d", len(dec.KV), 2*(len(d0.Blocks)-len(rm)))
				}
				prompt := []int{1, 403, 407}
				cached, err := dec.Generate(context.Background(), prompt, ort.GenerateOptions{MaxTokens: 64})
				if err != nil {
					t.Fatal(err)
				}
				full, err := dec.Generate(context.Background(), prompt, ort.GenerateOptions{MaxTokens: 64, NoCache: true})
				if err != nil {
					t.Fatal(err)
				}
				if len(cached) != 64 || !slices.Equal(cached, full) {
					t.Fatalf("cached %v\nrecomputed %v", cached, full)
				}
			})
		}
	}
}
