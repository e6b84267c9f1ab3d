package graph_test

import (
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
)

func TestCheck(t *testing.T) {
	body := func(ref string) *onnxpb.GraphProto {
		return irtest.New("body").Node("Identity", "bi", []string{ref}, []string{"bo"}).Output("bo", 1).Graph()
	}
	cases := []struct {
		name  string
		build func() *graph.Model
		want  string // "" = valid
	}{
		{"valid", func() *graph.Model { return linear(4) }, ""},
		{"initializer shadows input (a default)", func() *graph.Model {
			return irtest.New("g").Input("x", 1).Init("x", []float32{1}, 1).
				Node("Relu", "r", []string{"x"}, []string{"y"}).Output("y", 1).Model()
		}, ""},
		{"optional input left empty", func() *graph.Model {
			return irtest.New("g").Input("x", 1).
				Node("Clip", "c", []string{"x", "", ""}, []string{"y"}).Output("y", 1).Model()
		}, ""},
		{"undefined tensor", func() *graph.Model {
			return irtest.New("g").Input("x", 1).
				Node("Add", "a", []string{"x", "ghost"}, []string{"y"}).Output("y", 1).Model()
		}, `node "a" (Add) reads undefined tensor "ghost"`},
		{"defined twice", func() *graph.Model {
			return irtest.New("g").Input("x", 1).
				Node("Relu", "r1", []string{"x"}, []string{"y"}).
				Node("Relu", "r2", []string{"x"}, []string{"y"}).Output("y", 1).Model()
		}, `tensor "y" defined more than once`},
		{"output not produced", func() *graph.Model {
			return irtest.New("g").Input("x", 1).
				Node("Relu", "r", []string{"x"}, []string{"y"}).Output("z", 1).Model()
		}, `output "z" is not produced`},
		{"cycle", func() *graph.Model {
			return irtest.New("g").Input("x", 1).
				Node("Add", "a", []string{"x", "c"}, []string{"b"}).
				Node("Relu", "r", []string{"b"}, []string{"c"}).
				Output("c", 1).Model()
		}, "cycle through node"},
		{"subgraph reads outer scope", func() *graph.Model {
			return irtest.New("g").Input("x", 1).Input("cond").
				Node("If", "if", []string{"cond"}, []string{"y"}, irtest.GraphAttr("then_branch", body("x")), irtest.GraphAttr("else_branch", body("x"))).
				Output("y", 1).Model()
		}, ""},
		{"subgraph reads undefined", func() *graph.Model {
			return irtest.New("g").Input("x", 1).Input("cond").
				Node("If", "if", []string{"cond"}, []string{"y"}, irtest.GraphAttr("then_branch", body("x")), irtest.GraphAttr("else_branch", body("nowhere"))).
				Output("y", 1).Model()
		}, `reads undefined tensor "nowhere"`},
		{"cycle through a subgraph's outer reference", func() *graph.Model {
			return irtest.New("g").Input("cond").
				Node("If", "if", []string{"cond"}, []string{"y"}, irtest.GraphAttr("then_branch", body("z")), irtest.GraphAttr("else_branch", body("z"))).
				Node("Relu", "r", []string{"y"}, []string{"z"}).
				Output("z", 1).Model()
		}, "cycle"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := graph.Check(c.build())
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("Check: %v", err)
			case c.want != "" && err == nil:
				t.Fatalf("Check passed, want %q", c.want)
			case c.want != "" && (!strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n")):
				t.Fatalf("Check: %q, want one line containing %q", err, c.want)
			}
		})
	}
}

func TestIndexAndTopo(t *testing.T) {
	// Nodes deliberately out of order: c needs b needs a.
	m := irtest.New("g").Input("x", 1).
		Node("Relu", "c", []string{"b"}, []string{"y"}).
		Node("Neg", "b", []string{"a"}, []string{"b"}).
		Node("Abs", "a", []string{"x"}, []string{"a"}).
		Node("Add", "d", []string{"x", "a"}, []string{"z"}).
		Output("y", 1).Output("z", 1).Model()
	ix := graph.NewIndex(m.Proto.Graph)
	if p := ix.Producer["b"]; p == nil || p.GetName() != "b" {
		t.Fatalf("producer of b = %v", p)
	}
	var users []string
	for _, u := range ix.Consumers["a"] {
		users = append(users, u.Node.GetName())
	}
	if strings.Join(users, ",") != "b,d" {
		t.Fatalf("consumers of a = %v, want b,d", users)
	}
	order, err := ix.Topo()
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, n := range order {
		pos[n.GetName()] = i
	}
	for _, e := range [][2]string{{"a", "b"}, {"b", "c"}, {"a", "d"}} {
		if pos[e[0]] >= pos[e[1]] {
			t.Errorf("%s after %s in %v", e[0], e[1], pos)
		}
	}
	if len(order) != 4 {
		t.Fatalf("topo order has %d nodes, want 4", len(order))
	}
}
