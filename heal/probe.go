package heal

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// ProbeRanks runs m once on feeds and returns the ranks of the named
// tensors of its main graph (names == nil: every tensor its nodes
// produce, float or not). rewrite.Gradient uses ranks for static
// attributes only (Transpose perms, Flatten axes), so one probe at any
// batch and sequence length serves every later batch.
//
// m is not changed: a copy computes, per tensor, Reshape(Size(Shape(x)),
// [1]) as an extra output. Fetching one int64 per tensor instead of the
// tensors themselves keeps the probe as cheap as a forward pass, and
// works for tensors whose element type the graph does not declare.
func ProbeRanks(m *graph.Model, names []string, feeds map[string]*ort.Tensor, opts ort.Options) (map[string]int, error) {
	c := &graph.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto), Path: m.Path, Dir: m.Dir}
	g := c.Proto.GetGraph()
	ix := graph.NewIndex(g)
	if names == nil {
		for _, n := range g.GetNode() {
			for _, o := range n.GetOutput() {
				if o != "" {
					names = append(names, o)
				}
			}
		}
	}
	used := map[string]bool{}
	for n := range ix.Producer {
		used[n] = true
	}
	for n := range ix.Inputs {
		used[n] = true
	}
	for n := range ix.Initializers {
		used[n] = true
	}
	fresh := func(base string) string {
		name := base
		for i := 1; used[name]; i++ {
			name = fmt.Sprintf("%s_%d", base, i)
		}
		used[name] = true
		return name
	}
	one := fresh("probe/one")
	g.Initializer = append(g.Initializer, &onnxpb.TensorProto{Name: proto.String(one),
		DataType: proto.Int32(int32(onnxpb.TensorProto_INT64)), Dims: []int64{1}, Int64Data: []int64{1}})
	outName := map[string]string{}
	var fetch []string
	for _, name := range names {
		if _, dup := outName[name]; dup {
			continue
		}
		if ix.Producer[name] == nil && ix.Inputs[name] == nil && ix.Initializers[name] == nil {
			return nil, fmt.Errorf("probe: no tensor %q in the graph", name)
		}
		sh, sz, out := fresh("probe/shape/"+name), fresh("probe/size/"+name), fresh("probe/rank/"+name)
		g.Node = append(g.Node,
			&onnxpb.NodeProto{OpType: proto.String("Shape"), Name: proto.String(sh), Input: []string{name}, Output: []string{sh}},
			&onnxpb.NodeProto{OpType: proto.String("Size"), Name: proto.String(sz), Input: []string{sh}, Output: []string{sz}},
			&onnxpb.NodeProto{OpType: proto.String("Reshape"), Name: proto.String(out), Input: []string{sz, one}, Output: []string{out}})
		g.Output = append(g.Output, &onnxpb.ValueInfoProto{Name: proto.String(out), Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{
			TensorType: &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(onnxpb.TensorProto_INT64)),
				Shape: &onnxpb.TensorShapeProto{Dim: []*onnxpb.TensorShapeProto_Dimension{{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: 1}}}}},
		}}})
		outName[name] = out
		fetch = append(fetch, out)
	}
	ranks := map[string]int{}
	if len(fetch) == 0 {
		return ranks, nil
	}
	data, err := proto.Marshal(c.Proto)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	if opts.ExternalDataDir == "" {
		opts.ExternalDataDir = m.Dir
	}
	opts.Outputs = fetch
	s, err := ort.NewSessionFromBytes(data, opts)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	defer s.Close()
	res, err := s.Run(feeds, fetch)
	if err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	for name, out := range outName {
		v, err := res[out].Int64s()
		if err != nil || len(v) != 1 {
			return nil, fmt.Errorf("probe: rank of %q: %v", name, err)
		}
		ranks[name] = int(v[0])
	}
	return ranks, nil
}
