package rewrite_test

import (
	"slices"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/rewrite"
)

func names(nodes []*onnxpb.NodeProto) []string {
	var s []string
	for _, n := range nodes {
		s = append(s, n.GetName())
	}
	return s
}

func initNames(g *onnxpb.GraphProto) []string {
	var s []string
	for _, t := range g.GetInitializer() {
		s = append(s, t.GetName())
	}
	return s
}

func TestDeadCode(t *testing.T) {
	cases := []struct {
		name      string
		build     func() *graph.Model
		wantNodes []string
		wantInits []string
		// in the If's then branch, when there is one
		wantBranch []string
	}{
		{
			name: "dead chain and its weight go, live path stays",
			build: func() *graph.Model {
				return irtest.New("g").Input("x", 1).
					Init("w", []float32{2}, 1).Init("dead_w", []float32{3}, 1).
					Node("Mul", "live", []string{"x", "w"}, []string{"y"}).
					Node("Mul", "dead1", []string{"x", "dead_w"}, []string{"d1"}).
					Node("Relu", "dead2", []string{"d1"}, []string{"d2"}).
					Output("y", 1).Model()
			},
			wantNodes: []string{"live"},
			wantInits: []string{"w"},
		},
		{
			name: "a node with one used output of two stays",
			build: func() *graph.Model {
				return irtest.New("g").Input("x", 2).
					Node("Split", "split", []string{"x"}, []string{"a", "b"}).
					Node("Relu", "r", []string{"a"}, []string{"y"}).
					Output("y", 1).Model()
			},
			wantNodes: []string{"split", "r"},
		},
		{
			name: "outer tensors read only by a dead subgraph node die too",
			build: func() *graph.Model {
				then := irtest.New("then").
					Node("Identity", "t_live", []string{"x"}, []string{"to"}).
					Node("Neg", "t_dead", []string{"outer_only"}, []string{"unused"}).
					Output("to", 1).Graph()
				els := irtest.New("else").Node("Identity", "e", []string{"x"}, []string{"eo"}).Output("eo", 1).Graph()
				return irtest.New("g").Input("x", 1).Input("cond").Init("k", []float32{1}, 1).
					Node("Add", "outer_producer", []string{"x", "k"}, []string{"outer_only"}).
					Node("If", "if", []string{"cond"}, []string{"y"}, irtest.GraphAttr("then_branch", then), irtest.GraphAttr("else_branch", els)).
					Output("y", 1).Model()
			},
			wantNodes:  []string{"if"},
			wantBranch: []string{"t_live"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := c.build()
			if err := rewrite.Run(m, rewrite.DeadCodePass); err != nil {
				t.Fatal(err)
			}
			g := m.Proto.GetGraph()
			if got := names(g.Node); !slices.Equal(got, c.wantNodes) {
				t.Errorf("nodes = %v, want %v", got, c.wantNodes)
			}
			if got := initNames(g); !slices.Equal(got, c.wantInits) {
				t.Errorf("initializers = %v, want %v", got, c.wantInits)
			}
			if c.wantBranch != nil {
				then := graph.Subgraphs(g.Node[0])[0]
				if got := names(then.Node); !slices.Equal(got, c.wantBranch) {
					t.Errorf("then branch = %v, want %v", got, c.wantBranch)
				}
			}
		})
	}
}

func TestExposeTensors(t *testing.T) {
	m := irtest.New("g").Input("x", 1).Init("w", []float32{2}, 1).
		Node("Mul", "m", []string{"x", "w"}, []string{"h"}).
		Node("Relu", "r", []string{"h"}, []string{"y"}).
		Output("y", 1).Model()
	if err := rewrite.ExposeTensors(m, "h", "y", "h"); err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, o := range m.Proto.Graph.Output {
		outs = append(outs, o.GetName())
	}
	if !slices.Equal(outs, []string{"y", "h"}) {
		t.Fatalf("outputs = %v, want [y h]", outs)
	}
	if err := rewrite.ExposeTensors(m, "nope"); err == nil {
		t.Fatal("exposing a missing tensor succeeded")
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
}
