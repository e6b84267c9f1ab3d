package rewrite

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// Roles of a LinearWeight.
const (
	RoleBlock     = "block"     // a matrix product inside a decoder block
	RoleEmbedding = "embedding" // a Gather table (token or position embedding)
	RoleHead      = "head"      // the LM head
)

// LinearWeight is a 2-D weight matrix seen the way a linear layer uses it:
// Out output units, each a weighted sum of In input features. Storage
// differs by exporter — MatMul's y = x·W keeps W as [in, out] (our builder,
// torch exports), Gemm with transB=1 and a tied head read through a
// Transpose keep [out, in] — and At hides the difference.
type LinearWeight struct {
	Name   string // the initializer
	Tensor *onnxpb.TensorProto
	In     int
	Out    int
	// OutMajor: stored [out, in]; otherwise [in, out].
	OutMajor bool
	Role     string
	Block    int // decoder block, -1 outside the blocks
	// Inputs are the activation tensors multiplied by this weight (the
	// data inputs of the nodes using it): where Wanda measures ‖X_j‖₂.
	// Embedding tables have none.
	Inputs []string
	Nodes  []string // labels of the nodes reading the weight
}

// At is the flat index of the weight connecting input feature i to output
// unit o.
func (w *LinearWeight) At(o, i int) int {
	if w.OutMajor {
		return o*w.In + i
	}
	return i*w.Out + o
}

// Layout describes the storage order for reports.
func (w *LinearWeight) Layout() string {
	if w.OutMajor {
		return "[out, in]"
	}
	return "[in, out]"
}

// weightScope looks tensors up in the graph holding the blocks and, for a
// branch of a merged decoder, in the main graph where the weights live.
type weightScope struct {
	ix    *graph.Index
	outer *graph.Index
}

func newWeightScope(m *graph.Model, d *graph.Decoder) *weightScope {
	g := d.Graph
	if g == nil {
		g = m.Proto.GetGraph()
	}
	s := &weightScope{ix: graph.NewIndex(g)}
	if g != m.Proto.GetGraph() {
		s.outer = graph.NewIndex(m.Proto.GetGraph())
	}
	return s
}

func (s *weightScope) initializer(name string) *onnxpb.TensorProto {
	if t := s.ix.Initializers[name]; t != nil {
		return t
	}
	if s.outer != nil {
		return s.outer.Initializers[name]
	}
	return nil
}

// resolve follows a node input back through weight-only ops to a 2-D
// floating-point initializer: Cast and Identity keep the layout (float16
// weights are read through a Cast), a Transpose with perm [1, 0] flips it
// (a tied LM head reads the embedding transposed). ok is false when the
// input is computed from activations.
func (s *weightScope) resolve(name string) (t *onnxpb.TensorProto, flipped, ok bool) {
	for range 16 {
		if t := s.initializer(name); t != nil {
			return t, flipped, len(t.GetDims()) == 2 && isFloatType(t.GetDataType())
		}
		p := s.ix.Producer[name]
		if p == nil || len(p.GetInput()) == 0 {
			return nil, false, false
		}
		switch p.GetOpType() {
		case "Cast", "Identity":
		case "Transpose":
			perm := intsAttr(p, "perm")
			if perm != nil && !slices.Equal(perm, []int64{1, 0}) {
				return nil, false, false
			}
			flipped = !flipped
		default:
			return nil, false, false
		}
		name = p.GetInput()[0]
	}
	return nil, false, false
}

func isFloatType(dt int32) bool {
	switch onnxpb.TensorProto_DataType(dt) {
	case onnxpb.TensorProto_FLOAT, onnxpb.TensorProto_FLOAT16, onnxpb.TensorProto_BFLOAT16, onnxpb.TensorProto_DOUBLE:
		return true
	}
	return false
}

func intsAttr(n *onnxpb.NodeProto, name string) []int64 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetInts()
		}
	}
	return nil
}

func intAttrOf(n *onnxpb.NodeProto, name string, def int64) int64 {
	for _, a := range n.GetAttribute() {
		if a.GetName() == name {
			return a.GetI()
		}
	}
	return def
}

// linearOf describes the weight of a MatMul or Gemm node: input 1 resolved
// to a 2-D initializer. ok is false for products of two activations
// (attention scores) and for Gemm with transA.
func (s *weightScope) linearOf(n *onnxpb.NodeProto) (w *LinearWeight, ok bool) {
	op := n.GetOpType()
	if (op != "MatMul" && op != "Gemm") || len(n.GetInput()) < 2 {
		return nil, false
	}
	t, flipped, ok := s.resolve(n.GetInput()[1])
	if !ok {
		return nil, false
	}
	if op == "Gemm" {
		if intAttrOf(n, "transA", 0) != 0 {
			return nil, false
		}
		if intAttrOf(n, "transB", 0) != 0 {
			flipped = !flipped
		}
	}
	dims := t.GetDims()
	w = &LinearWeight{Name: t.GetName(), Tensor: t, OutMajor: flipped, Block: -1,
		Inputs: []string{n.GetInput()[0]}, Nodes: []string{graph.NodeLabel(n)}}
	if flipped {
		w.Out, w.In = int(dims[0]), int(dims[1])
	} else {
		w.In, w.Out = int(dims[0]), int(dims[1])
	}
	return w, true
}

// LinearWeights lists the linear-layer weights of the decoder: every
// MatMul/Gemm inside a block whose second input is a 2-D initializer, in
// block order, then (when asked) the embedding tables and the LM head. A
// weight read by several nodes (a tied head and embedding) is listed once,
// with all its nodes and inputs.
func LinearWeights(m *graph.Model, d *graph.Decoder, embeddings, head bool) []*LinearWeight {
	s := newWeightScope(m, d)
	var out []*LinearWeight
	byName := map[string]*LinearWeight{}
	add := func(w *LinearWeight) {
		if prev := byName[w.Name]; prev != nil {
			for _, in := range w.Inputs {
				if !slices.Contains(prev.Inputs, in) {
					prev.Inputs = append(prev.Inputs, in)
				}
			}
			prev.Nodes = append(prev.Nodes, w.Nodes...)
			return
		}
		byName[w.Name] = w
		out = append(out, w)
	}
	for _, b := range d.Blocks {
		for _, n := range b.Nodes {
			if w, ok := s.linearOf(n); ok {
				w.Role, w.Block = RoleBlock, b.Index
				add(w)
			}
		}
	}
	if embeddings {
		for _, n := range d.Embedding.Nodes {
			if n.GetOpType() != "Gather" || len(n.GetInput()) < 2 {
				continue
			}
			t := s.initializer(n.GetInput()[0])
			if t == nil || len(t.GetDims()) != 2 || !isFloatType(t.GetDataType()) {
				continue
			}
			// A table row is one token's vector: treat tokens as the
			// output units, so N:M groups run along the hidden axis.
			add(&LinearWeight{Name: t.GetName(), Tensor: t, Out: int(t.GetDims()[0]), In: int(t.GetDims()[1]),
				OutMajor: true, Role: RoleEmbedding, Block: -1, Nodes: []string{graph.NodeLabel(n)}})
		}
	}
	if head {
		for _, n := range d.LMHead.Nodes {
			if w, ok := s.linearOf(n); ok {
				w.Role = RoleHead
				add(w)
			}
		}
	}
	return out
}

// floatValues decodes a float tensor's data (float32, float16, bfloat16,
// float64) to float64.
func floatValues(m *graph.Model, t *onnxpb.TensorProto) ([]float64, error) {
	if t.GetDataType() == int32(onnxpb.TensorProto_FLOAT) && len(t.FloatData) > 0 && t.RawData == nil && !graph.IsExternal(t) {
		v := make([]float64, len(t.FloatData))
		for i, x := range t.FloatData {
			v[i] = float64(x)
		}
		return v, nil
	}
	b, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	n := graph.NumElements(t.GetDims())
	size := graph.DTypeSize(t.GetDataType())
	if int64(len(b)) != n*int64(size) {
		return nil, fmt.Errorf("tensor %q: %d bytes of data for %s%v", t.GetName(), len(b), graph.DTypeName(t.GetDataType()), t.GetDims())
	}
	v := make([]float64, n)
	le := binary.LittleEndian
	switch onnxpb.TensorProto_DataType(t.GetDataType()) {
	case onnxpb.TensorProto_FLOAT:
		for i := range v {
			v[i] = float64(math.Float32frombits(le.Uint32(b[4*i:])))
		}
	case onnxpb.TensorProto_DOUBLE:
		for i := range v {
			v[i] = math.Float64frombits(le.Uint64(b[8*i:]))
		}
	case onnxpb.TensorProto_FLOAT16:
		for i := range v {
			v[i] = float64(halfToFloat32(le.Uint16(b[2*i:])))
		}
	case onnxpb.TensorProto_BFLOAT16:
		for i := range v {
			v[i] = float64(math.Float32frombits(uint32(le.Uint16(b[2*i:])) << 16))
		}
	default:
		return nil, fmt.Errorf("tensor %q: %s is not a floating-point type", t.GetName(), graph.DTypeName(t.GetDataType()))
	}
	return v, nil
}

// encodeFloats stores v little-endian in the floating-point type et,
// rounding to nearest even: the inverse of floatValues.
func encodeFloats(v []float64, et int32) ([]byte, error) {
	le := binary.LittleEndian
	var b []byte
	switch onnxpb.TensorProto_DataType(et) {
	case onnxpb.TensorProto_FLOAT:
		b = make([]byte, 4*len(v))
		for i, x := range v {
			le.PutUint32(b[4*i:], math.Float32bits(float32(x)))
		}
	case onnxpb.TensorProto_DOUBLE:
		b = make([]byte, 8*len(v))
		for i, x := range v {
			le.PutUint64(b[8*i:], math.Float64bits(x))
		}
	case onnxpb.TensorProto_FLOAT16:
		b = make([]byte, 2*len(v))
		for i, x := range v {
			le.PutUint16(b[2*i:], uint16(ort.ToFloat16(float32(x))))
		}
	case onnxpb.TensorProto_BFLOAT16:
		b = make([]byte, 2*len(v))
		for i, x := range v {
			le.PutUint16(b[2*i:], uint16(ort.ToBFloat16(float32(x))))
		}
	default:
		return nil, fmt.Errorf("%s is not a floating-point type", graph.DTypeName(et))
	}
	return b, nil
}

// scalarTensor is a rank-0 tensor holding v in the floating-point type et
// (FLOAT for any other type).
func scalarTensor(name string, et int32, v float64) *onnxpb.TensorProto {
	raw, err := encodeFloats([]float64{v}, et)
	if err != nil {
		et = int32(onnxpb.TensorProto_FLOAT)
		raw, _ = encodeFloats([]float64{v}, et)
	}
	t := &onnxpb.TensorProto{DataType: proto.Int32(et), RawData: raw}
	if name != "" {
		t.Name = proto.String(name)
	}
	return t
}

// halfToFloat32 converts IEEE binary16 bits to float32 (exact).
func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0:
		f := float32(mant) * 0x1p-24
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// tensorRaw returns a copy of t's data as little-endian bytes, in raw_data
// layout, whatever field or file holds it.
func tensorRaw(m *graph.Model, t *onnxpb.TensorProto) ([]byte, error) {
	b, err := m.TensorBytes(t)
	if err != nil {
		return nil, err
	}
	want := graph.ByteSize(t)
	if want < 0 || int64(len(b)) != want {
		return nil, fmt.Errorf("tensor %q: %d bytes of data for %s%v", t.GetName(), len(b), graph.DTypeName(t.GetDataType()), t.GetDims())
	}
	return slices.Clone(b), nil
}

// setRaw replaces t's data with raw (inline; graph.Save moves large
// tensors back to external data when the model has any) and its shape with
// dims.
func setRaw(t *onnxpb.TensorProto, raw []byte, dims []int64) {
	t.RawData = raw
	t.Dims = dims
	t.DataLocation = nil
	t.ExternalData = nil
	t.FloatData, t.DoubleData, t.Int32Data, t.Int64Data, t.Uint64Data = nil, nil, nil, nil, nil
}
