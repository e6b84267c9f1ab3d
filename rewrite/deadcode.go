package rewrite

import (
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// DeadCodeStats counts what DeadCode removed.
type DeadCodeStats struct {
	Nodes, Initializers int
}

// DeadCode removes nodes that no graph output depends on and initializers
// nothing reads, in the main graph and in every subgraph of the nodes it
// keeps. Graph inputs are kept: removing one changes the model's
// interface, which is the caller's decision (see RemoveBlocks).
func DeadCode(m *graph.Model) DeadCodeStats {
	var st DeadCodeStats
	deadCodeGraph(m.Proto.GetGraph(), &st)
	return st
}

// DeadCodePass is DeadCode as a Pass.
var DeadCodePass = Pass{Name: "deadcode", Run: func(m *graph.Model) error { DeadCode(m); return nil }}

func deadCodeGraph(g *onnxpb.GraphProto, st *DeadCodeStats) {
	ix := graph.NewIndex(g)
	live := map[*onnxpb.NodeProto]bool{}
	used := map[string]bool{}
	var work []string
	use := func(names ...string) {
		for _, n := range names {
			if n != "" && !used[n] {
				used[n] = true
				work = append(work, n)
			}
		}
	}
	for _, vi := range g.GetOutput() {
		use(vi.GetName())
	}
	for len(work) > 0 {
		name := work[len(work)-1]
		work = work[:len(work)-1]
		p := ix.Producer[name]
		if p == nil || live[p] {
			continue
		}
		live[p] = true
		// Clean the subgraphs first: what they no longer read from the
		// outer scope need not stay alive here.
		for _, sg := range graph.Subgraphs(p) {
			deadCodeGraph(sg, st)
		}
		use(p.GetInput()...)
		use(graph.NodeOuterRefs(p)...)
	}

	kept := g.Node[:0]
	for _, n := range g.Node {
		if live[n] {
			kept = append(kept, n)
		} else {
			st.Nodes++
		}
	}
	clear(g.Node[len(kept):])
	g.Node = kept

	inits := g.Initializer[:0]
	for _, t := range g.Initializer {
		if used[t.GetName()] {
			inits = append(inits, t)
		} else {
			st.Initializers++
		}
	}
	clear(g.Initializer[len(inits):])
	g.Initializer = inits

	sparse := g.SparseInitializer[:0]
	for _, s := range g.SparseInitializer {
		if used[s.GetValues().GetName()] {
			sparse = append(sparse, s)
		} else {
			st.Initializers++
		}
	}
	g.SparseInitializer = sparse

	// value_info annotates tensors; drop those of tensors that are gone.
	vis := g.ValueInfo[:0]
	for _, vi := range g.ValueInfo {
		if used[vi.GetName()] {
			vis = append(vis, vi)
		}
	}
	g.ValueInfo = vis
}
