package rewrite_test

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

var pastName = regexp.MustCompile(`^past_key_values\.(\d+)\.(key|value)$`)

// TestRemoveBlocksFusedEqualsUnfused prunes onnxruntime's optimized copy
// of the static GPT-2 export (its last residual Add is fused into the
// final norm, a SkipLayerNormalization) and the export itself, whose
// pruning the torch references check, and compares their outputs on the
// reference inputs. Removing the last block takes the unfusing path.
func TestRemoveBlocksFusedEqualsUnfused(t *testing.T) {
	testenv.ORTLibrary(t)
	ref, err := reffile.Load(filepath.Join("..", "testdata", "models", "gpt2_kv_static.ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	fused := loadFixture(t, "gpt2_kv_static_ortopt.onnx")
	d, err := graph.FindBlocks(fused)
	if err != nil {
		t.Fatal(err)
	}
	if d.Blocks[5].OutputSite.Node.GetOpType() != "SkipLayerNormalization" {
		t.Fatal("the fixture's last block does not end in a fused SkipLayerNormalization")
	}
	for _, rm := range removals(6) {
		t.Run(fmt.Sprintf("remove%v", rm), func(t *testing.T) {
			a := session(t, pruned(t, "gpt2_kv_static.onnx", rm))
			b := session(t, pruned(t, "gpt2_kv_static_ortopt.onnx", rm))
			var kept []int
			for l := range 6 {
				if !slices.Contains(rm, l) {
					kept = append(kept, l)
				}
			}
			for _, c := range ref.Cases {
				full, err := c.RuntimeInputs()
				if err != nil {
					t.Fatal(err)
				}
				// The kept layers' past, renumbered as the pruned models
				// expect it.
				in := map[string]*ort.Tensor{}
				for name, v := range full {
					m := pastName.FindStringSubmatch(name)
					if m == nil {
						in[name] = v
						continue
					}
					old, _ := strconv.Atoi(m[1])
					if i := slices.Index(kept, old); i >= 0 {
						in[fmt.Sprintf("past_key_values.%d.%s", i, m[2])] = v
					}
				}
				ga, err := a.Run(in, []string{"logits"})
				if err != nil {
					t.Fatal(err)
				}
				gb, err := b.Run(in, []string{"logits"})
				if err != nil {
					t.Fatal(err)
				}
				if d, err := ort.MaxAbsDiff(ga["logits"], gb["logits"]); err != nil || d > 1e-4 {
					t.Errorf("%s: fused and unfused pruned models differ by %.3g (%v)", c.Name, d, err)
				}
			}
		})
	}
}
