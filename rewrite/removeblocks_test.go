package rewrite_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
)

func loadFixture(t *testing.T, name string) *graph.Model {
	t.Helper()
	m, err := graph.Load(filepath.Join("..", "testdata", "models", name))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// removals lists every single block and every contiguous pair.
func removals(L int) [][]int {
	var rs [][]int
	for k := 0; k < L; k++ {
		rs = append(rs, []int{k})
	}
	for k := 0; k+1 < L; k++ {
		rs = append(rs, []int{k, k + 1})
	}
	return append(rs, []int{0, L - 1}) // two separate runs
}

// TestRemoveBlocksStructure checks the rewritten graph: valid, L−n blocks
// found again, KV pairs renumbered 0…L−n−1, and the surviving blocks keep
// exactly the weights they had.
func TestRemoveBlocksStructure(t *testing.T) {
	for _, file := range []string{"stories260k.onnx", "stories260k_kv.onnx", "gpt2_kv.onnx",
		"stories260k_kv_ortopt.onnx", "gpt2_kv_static_ortopt.onnx"} {
		orig := loadFixture(t, file)
		d0, err := graph.FindBlocks(orig)
		if err != nil {
			t.Fatal(err)
		}
		L := len(d0.Blocks)
		for _, rm := range removals(L) {
			t.Run(fmt.Sprintf("%s/remove%v", file, rm), func(t *testing.T) {
				m := loadFixture(t, file)
				d, _ := graph.FindBlocks(m)
				if err := rewrite.RemoveBlocks(m, d, rm); err != nil {
					t.Fatal(err)
				}
				if err := graph.Check(m); err != nil {
					t.Fatal(err)
				}
				d2, err := graph.FindBlocks(m)
				if err != nil {
					t.Fatal(err)
				}
				if len(d2.Blocks) != L-len(rm) {
					t.Fatalf("%d blocks after removing %v of %d", len(d2.Blocks), rm, L)
				}
				var kept []int
				for b := 0; b < L; b++ {
					if !slices.Contains(rm, b) {
						kept = append(kept, b)
					}
				}
				for nb, b := range d2.Blocks {
					ob := d0.Blocks[kept[nb]]
					if b.Params != ob.Params {
						t.Errorf("block %d (was %d): %d params, was %d", nb, kept[nb], b.Params, ob.Params)
					}
					if len(ob.KVInputs) > 0 {
						want := []string{fmt.Sprintf("past_key_values.%d.key", nb), fmt.Sprintf("past_key_values.%d.value", nb)}
						if !slices.Equal(b.KVInputs, want) {
							t.Errorf("block %d KV inputs %v, want %v", nb, b.KVInputs, want)
						}
					}
					// Same weight bytes, in order, as the original block.
					if len(b.Weights) != len(ob.Weights) {
						t.Fatalf("block %d: %d weights, was %d", nb, len(b.Weights), len(ob.Weights))
					}
					for w := range b.Weights {
						got, _ := m.TensorBytes(m.Initializer(b.Weights[w]))
						want, _ := orig.TensorBytes(orig.Initializer(ob.Weights[w]))
						if string(got) != string(want) {
							t.Errorf("block %d weight %s differs from original %s", nb, b.Weights[w], ob.Weights[w])
						}
					}
				}
				if got, want := len(m.Proto.Graph.Input), len(orig.Proto.Graph.Input)-2*len(rm)*boolInt(len(d0.Blocks[0].KVInputs) > 0); got != want {
					t.Errorf("%d graph inputs, want %d", got, want)
				}
				for _, n := range m.Proto.Graph.Node {
					if l := layerNumber(n.GetName()); l >= L-len(rm) {
						t.Errorf("node %s still names layer %d", n.GetName(), l)
					}
				}
			})
		}
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func layerNumber(name string) int {
	for _, p := range []string{"layers.", "h."} {
		if i := strings.Index(name, "/"+p); i >= 0 {
			var n int
			if _, err := fmt.Sscanf(name[i+1+len(p):], "%d", &n); err == nil {
				return n
			}
		}
	}
	return -1
}

func TestRemoveBlocksErrors(t *testing.T) {
	cases := []struct {
		remove []int
		want   string
	}{
		{[]int{5}, "out of range"},
		{[]int{-1}, "out of range"},
		{[]int{0, 1, 2, 3, 4}, "would leave no decoder"},
		{[]int{1, 1}, "listed twice"},
		{nil, "no blocks to remove"},
	}
	for _, c := range cases {
		m := loadFixture(t, "stories260k.onnx")
		before := len(m.Proto.Graph.Node)
		d, _ := graph.FindBlocks(m)
		err := rewrite.RemoveBlocks(m, d, c.remove)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("RemoveBlocks(%v) = %v, want %q", c.remove, err, c.want)
		}
		if len(m.Proto.Graph.Node) != before {
			t.Errorf("RemoveBlocks(%v) failed but changed the graph", c.remove)
		}
	}
}
