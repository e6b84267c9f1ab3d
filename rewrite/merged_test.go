package rewrite_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// mergedFixture wraps stories260k_kv.onnx the way optimum's
// merge_decoders does: one If on use_cache_branch, each branch a whole
// copy of the decoder without inputs, weights shared in the outer graph.
func mergedFixture(t *testing.T) *graph.Model {
	t.Helper()
	m := loadFixture(t, "stories260k_kv.onnx")
	g := m.Proto.Graph
	branch := func(name string) *onnxpb.GraphProto {
		b := &onnxpb.GraphProto{Name: proto.String(name)}
		for _, n := range g.Node {
			b.Node = append(b.Node, proto.CloneOf(n))
		}
		for _, o := range g.Output {
			b.Output = append(b.Output, proto.CloneOf(o))
		}
		return b
	}
	var outs []string
	for _, o := range g.Output {
		outs = append(outs, o.GetName())
	}
	useCache := irtest.ValueInfo("use_cache_branch", onnxpb.TensorProto_BOOL, 1)
	merged := &onnxpb.GraphProto{
		Name:        proto.String("merged"),
		Input:       append(append([]*onnxpb.ValueInfoProto(nil), g.Input...), useCache),
		Initializer: g.Initializer,
		Output:      g.Output,
		Node: []*onnxpb.NodeProto{{
			OpType: proto.String("If"), Name: proto.String("optimum::if"),
			Input: []string{"use_cache_branch"}, Output: outs,
			Attribute: []*onnxpb.AttributeProto{
				irtest.GraphAttr("then_branch", branch("with_past")),
				irtest.GraphAttr("else_branch", branch("no_past")),
			},
		}},
	}
	m.Proto.Graph = merged
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRemoveBlocksMergedDecoder(t *testing.T) {
	m := mergedFixture(t)
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Blocks) != 5 || len(d.Branches) != 2 || len(d.Blocks[4].KVInputs) != 2 {
		t.Fatalf("merged decoder: %d blocks, %d branches", len(d.Blocks), len(d.Branches))
	}
	if err := rewrite.RemoveBlocks(m, d, []int{2}); err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	d2, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(d2.Blocks) != 4 || len(d2.Branches[1].Blocks) != 4 {
		t.Fatalf("after removal: %d blocks", len(d2.Blocks))
	}
	if n := len(m.Proto.Graph.Output); n != 9 {
		t.Fatalf("%d outputs, want logits + 4 KV pairs", n)
	}

	testenv.ORTLibrary(t)
	var sf skipFile
	b, err := os.ReadFile(filepath.Join("..", "testdata", "models", "stories260k_kv.skip.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &sf); err != nil {
		t.Fatal(err)
	}
	sess := session(t, m)
	for _, r := range sf.Removals {
		if len(r.Remove) != 1 || r.Remove[0] != 2 {
			continue
		}
		for _, c := range r.Cases {
			for _, cache := range []bool{true, false} {
				in, err := c.RuntimeInputs()
				if err != nil {
					t.Fatal(err)
				}
				in["use_cache_branch"], _ = ort.NewBool([]int64{1}, []bool{cache})
				got, err := sess.Run(in, []string{"logits"})
				if err != nil {
					t.Fatal(err)
				}
				if d, err := reffile.Compare(got["logits"], c.Outputs["logits"], sf.Atol); err != nil {
					t.Errorf("%s, use_cache_branch=%v: %v (max diff %.3g)", c.Name, cache, err, d)
				}
			}
		}
		return
	}
	t.Fatal("no reference for removing block 2")
}
