package graph

import (
	"fmt"
	"strings"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// CheckError lists the invariants a graph violates.
type CheckError struct {
	Problems []string
}

func (e *CheckError) Error() string {
	msg := e.Problems[0]
	if n := len(e.Problems) - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more problems)", n)
	}
	return msg
}

// Check verifies the invariants every rewrite must preserve, in the main
// graph and, recursively, in every subgraph:
//   - every tensor is defined once (graph input, initializer or node
//     output; an initializer may share a graph input's name, as ONNX allows
//     for defaults);
//   - every node input is defined in its graph or an enclosing scope;
//   - every graph output is produced;
//   - the nodes have no cycle.
//
// It returns a *CheckError.
func Check(m *Model) error {
	var c checker
	c.graph(m.Proto.GetGraph(), nil, "graph")
	if len(c.problems) > 0 {
		return &CheckError{Problems: c.problems}
	}
	return nil
}

type checker struct{ problems []string }

func (c *checker) addf(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// scope is a chain of name sets: a subgraph sees its own names and those
// of every enclosing graph.
type scope struct {
	names map[string]bool
	outer *scope
}

func (s *scope) has(name string) bool {
	for ; s != nil; s = s.outer {
		if s.names[name] {
			return true
		}
	}
	return false
}

func (c *checker) graph(g *onnxpb.GraphProto, outer *scope, where string) {
	if g == nil {
		c.addf("%s: missing", where)
		return
	}
	s := &scope{names: map[string]bool{}, outer: outer}
	define := func(name, what string) {
		if name == "" {
			return
		}
		if s.names[name] {
			c.addf("%s: tensor %q defined more than once (again as %s)", where, name, what)
		}
		s.names[name] = true
	}
	inputs := map[string]bool{}
	for _, vi := range g.GetInput() {
		define(vi.GetName(), "graph input")
		inputs[vi.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		if inputs[t.GetName()] {
			continue // an input with a default value
		}
		define(t.GetName(), "initializer")
	}
	for _, st := range g.GetSparseInitializer() {
		define(st.GetValues().GetName(), "sparse initializer")
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			define(o, fmt.Sprintf("output of node %q", NodeLabel(n)))
		}
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			if in != "" && !s.has(in) {
				c.addf("%s: node %q (%s) reads undefined tensor %q", where, NodeLabel(n), n.GetOpType(), in)
			}
		}
		for _, a := range n.GetAttribute() {
			sub := where + "/" + NodeLabel(n) + "." + a.GetName()
			if a.G != nil {
				c.graph(a.G, s, sub)
			}
			for i, sg := range a.GetGraphs() {
				c.graph(sg, s, fmt.Sprintf("%s[%d]", sub, i))
			}
		}
	}
	for _, vi := range g.GetOutput() {
		if !s.has(vi.GetName()) {
			c.addf("%s: output %q is not produced", where, vi.GetName())
		}
	}
	if _, err := NewIndex(g).Topo(); err != nil {
		c.addf("%s: %v", where, err)
	}
}

// String formats the error's problems one per line, for logs.
func (e *CheckError) String() string { return strings.Join(e.Problems, "\n") }
