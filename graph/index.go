package graph

import (
	"fmt"
	"sort"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Use is one consumer of a tensor: node's input number Input, or, when
// Input is -1, a subgraph of node that reads the tensor from the outer
// scope.
type Use struct {
	Node  *onnxpb.NodeProto
	Input int
}

// Index answers the structural questions passes ask of one graph: who
// produces a tensor, who consumes it, in what order the nodes can run.
// It is a snapshot: rebuild it after changing the graph.
type Index struct {
	Graph        *onnxpb.GraphProto
	Producer     map[string]*onnxpb.NodeProto // tensor → producing node
	Consumers    map[string][]Use             // tensor → uses, in node order
	Inputs       map[string]*onnxpb.ValueInfoProto
	Initializers map[string]*onnxpb.TensorProto
	Outputs      map[string]bool // graph outputs
	// OuterRefs lists, per node with subgraphs, the names its subgraphs
	// (at any depth) read from this graph's scope or beyond.
	OuterRefs map[*onnxpb.NodeProto][]string
	position  map[*onnxpb.NodeProto]int
}

// NewIndex indexes g.
func NewIndex(g *onnxpb.GraphProto) *Index {
	ix := &Index{
		Graph:        g,
		Producer:     map[string]*onnxpb.NodeProto{},
		Consumers:    map[string][]Use{},
		Inputs:       map[string]*onnxpb.ValueInfoProto{},
		Initializers: map[string]*onnxpb.TensorProto{},
		Outputs:      map[string]bool{},
		OuterRefs:    map[*onnxpb.NodeProto][]string{},
		position:     map[*onnxpb.NodeProto]int{},
	}
	for _, vi := range g.GetInput() {
		ix.Inputs[vi.GetName()] = vi
	}
	for _, t := range g.GetInitializer() {
		ix.Initializers[t.GetName()] = t
	}
	for _, vi := range g.GetOutput() {
		ix.Outputs[vi.GetName()] = true
	}
	for i, n := range g.GetNode() {
		ix.position[n] = i
		for _, o := range n.GetOutput() {
			if o != "" {
				ix.Producer[o] = n
			}
		}
		for j, in := range n.GetInput() {
			if in != "" {
				ix.Consumers[in] = append(ix.Consumers[in], Use{n, j})
			}
		}
		if refs := NodeOuterRefs(n); len(refs) > 0 {
			ix.OuterRefs[n] = refs
			for _, r := range refs {
				ix.Consumers[r] = append(ix.Consumers[r], Use{n, -1})
			}
		}
	}
	return ix
}

// Subgraphs returns the graphs held in n's attributes (If branches, Loop
// and Scan bodies).
func Subgraphs(n *onnxpb.NodeProto) []*onnxpb.GraphProto {
	var gs []*onnxpb.GraphProto
	for _, a := range n.GetAttribute() {
		if a.G != nil {
			gs = append(gs, a.G)
		}
		gs = append(gs, a.GetGraphs()...)
	}
	return gs
}

// NodeOuterRefs returns, sorted, the names n's subgraphs read but do not
// define themselves: the node's implicit inputs.
func NodeOuterRefs(n *onnxpb.NodeProto) []string {
	set := map[string]bool{}
	for _, g := range Subgraphs(n) {
		for _, r := range graphOuterRefs(g) {
			set[r] = true
		}
	}
	refs := make([]string, 0, len(set))
	for r := range set {
		refs = append(refs, r)
	}
	sort.Strings(refs)
	return refs
}

// graphOuterRefs returns the names g uses but does not define.
func graphOuterRefs(g *onnxpb.GraphProto) []string {
	defined := map[string]bool{"": true}
	for _, vi := range g.GetInput() {
		defined[vi.GetName()] = true
	}
	for _, t := range g.GetInitializer() {
		defined[t.GetName()] = true
	}
	for _, st := range g.GetSparseInitializer() {
		defined[st.GetValues().GetName()] = true
	}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			defined[o] = true
		}
	}
	var refs []string
	seen := map[string]bool{}
	use := func(name string) {
		if !defined[name] && !seen[name] {
			seen[name] = true
			refs = append(refs, name)
		}
	}
	for _, n := range g.GetNode() {
		for _, in := range n.GetInput() {
			use(in)
		}
		for _, r := range NodeOuterRefs(n) {
			use(r)
		}
	}
	for _, vi := range g.GetOutput() {
		use(vi.GetName())
	}
	return refs
}

// Deps returns the tensors n depends on: its inputs and its subgraphs'
// outer references.
func (ix *Index) Deps(n *onnxpb.NodeProto) []string {
	deps := append([]string(nil), n.GetInput()...)
	return append(deps, ix.OuterRefs[n]...)
}

// CycleError reports a cycle through the named node.
type CycleError struct{ Node string }

func (e *CycleError) Error() string { return fmt.Sprintf("cycle through node %q", e.Node) }

// Topo returns the nodes in a topological order that keeps the graph's
// own order wherever it is already valid. It fails on a cycle.
func (ix *Index) Topo() ([]*onnxpb.NodeProto, error) {
	const (
		unseen = iota
		active
		done
	)
	state := make(map[*onnxpb.NodeProto]int, len(ix.position))
	order := make([]*onnxpb.NodeProto, 0, len(ix.position))
	// Iterative DFS: decoder graphs are deep chains, recursion would be
	// thousands of frames deep on a 100-layer model.
	type frame struct {
		n    *onnxpb.NodeProto
		deps []string
		next int
	}
	for _, root := range ix.Graph.GetNode() {
		if state[root] != unseen {
			continue
		}
		stack := []frame{{root, ix.Deps(root), 0}}
		state[root] = active
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			if top.next == len(top.deps) {
				state[top.n] = done
				order = append(order, top.n)
				stack = stack[:len(stack)-1]
				continue
			}
			p := ix.Producer[top.deps[top.next]]
			top.next++
			if p == nil {
				continue
			}
			switch state[p] {
			case active:
				return nil, &CycleError{Node: NodeLabel(p)}
			case unseen:
				state[p] = active
				stack = append(stack, frame{p, ix.Deps(p), 0})
			}
		}
	}
	return order, nil
}

// NodeLabel names a node for messages: its name, or its op type and first
// output when it has no name.
func NodeLabel(n *onnxpb.NodeProto) string {
	if n.GetName() != "" {
		return n.GetName()
	}
	if len(n.GetOutput()) > 0 {
		return n.GetOpType() + "→" + n.GetOutput()[0]
	}
	return n.GetOpType()
}
