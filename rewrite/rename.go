package rewrite

import (
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// renameTensors renames tensors everywhere in g and its subgraphs: node
// inputs and outputs, graph inputs, outputs, value_info and initializers.
// Names must be unique model-wide (they are for the KV-cache and weight
// names this is used on), so scoping is not a concern.
func renameTensors(g *onnxpb.GraphProto, rename map[string]string) {
	if len(rename) == 0 || g == nil {
		return
	}
	r := func(s *string) {
		if n, ok := rename[*s]; ok {
			*s = n
		}
	}
	rp := func(s **string) {
		if *s != nil {
			v := **s
			r(&v)
			*s = &v
		}
	}
	for _, vi := range g.Input {
		rp(&vi.Name)
	}
	for _, vi := range g.Output {
		rp(&vi.Name)
	}
	for _, vi := range g.ValueInfo {
		rp(&vi.Name)
	}
	for _, t := range g.Initializer {
		rp(&t.Name)
	}
	for _, n := range g.Node {
		for i := range n.Input {
			r(&n.Input[i])
		}
		for i := range n.Output {
			r(&n.Output[i])
		}
		for _, a := range n.Attribute {
			renameTensors(a.G, rename)
			for _, sg := range a.Graphs {
				renameTensors(sg, rename)
			}
		}
	}
}
