package rewrite

import (
	"encoding/binary"
	"fmt"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ToDouble converts a model's float32 computation to float64:
// initializers, Constant and ConstantOfShape values, Cast targets, graph
// inputs/outputs and value_info, in the main graph and every subgraph.
// Gradient checks need it: central finite differences in float32 lose
// most digits to rounding, in float64 they agree with an exact gradient
// to ~1e-9. float16 weights stay float16 (their Casts now go to float64).
// External float32 initializers are read and stored inline as float64.
//
// onnxruntime's CPU provider has no float64 kernel for Cos, Sin and Erf
// (nor for exact Gelu, whose function body uses Erf): those nodes keep
// computing in float32 between two Casts, which is exact enough for
// rotary caches (off the differentiated path) but makes a gradient check
// through Erf a float32 one.
func ToDouble(m *graph.Model) error {
	return toDoubleGraph(m, m.Proto.GetGraph())
}

// toDoubleFloat32Only are the ops onnxruntime runs in float32 only.
var toDoubleFloat32Only = map[string]bool{"Cos": true, "Sin": true, "Erf": true}

// toDoubleWrap puts Cast(to float32) before and Cast(to float64) after
// every float32-only node whose input is now float64.
func toDoubleWrap(g *onnxpb.GraphProto) {
	ix := graph.NewIndex(g)
	used := map[string]bool{}
	for _, n := range g.GetNode() {
		for _, o := range n.GetOutput() {
			used[o] = true
		}
	}
	fresh := func(base string) string {
		name := base
		for i := 1; used[name] || ix.Inputs[name] != nil || ix.Initializers[name] != nil; i++ {
			name = fmt.Sprintf("%s_%d", base, i)
		}
		used[name] = true
		return name
	}
	cast := func(in, out string, to int32) *onnxpb.NodeProto {
		return &onnxpb.NodeProto{OpType: proto.String("Cast"), Name: proto.String(out), Input: []string{in}, Output: []string{out},
			Attribute: []*onnxpb.AttributeProto{{Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(to))}}}
	}
	var nodes []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		d := n.GetDomain()
		if !toDoubleFloat32Only[n.GetOpType()] || (d != "" && d != "ai.onnx") || len(n.GetInput()) != 1 || len(n.GetOutput()) != 1 {
			nodes = append(nodes, n)
			continue
		}
		if dt := ix.ElemType(n.Input[0]); dt != 0 && dt != tdDouble {
			nodes = append(nodes, n)
			continue
		}
		in32, out32 := fresh(n.Input[0]+"/todouble_f32"), fresh(n.Output[0]+"/todouble_f32")
		nodes = append(nodes, cast(n.Input[0], in32, tdFloat))
		out := n.Output[0]
		n.Input[0], n.Output[0] = in32, out32
		nodes = append(nodes, n, cast(out32, out, tdDouble))
	}
	g.Node = nodes
}

const (
	tdFloat  = int32(onnxpb.TensorProto_FLOAT)
	tdDouble = int32(onnxpb.TensorProto_DOUBLE)
)

func toDoubleGraph(m *graph.Model, g *onnxpb.GraphProto) error {
	if g == nil {
		return nil
	}
	for _, t := range g.GetInitializer() {
		if err := toDoubleTensor(m, t); err != nil {
			return err
		}
	}
	for _, st := range g.GetSparseInitializer() {
		if err := toDoubleTensor(m, st.GetValues()); err != nil {
			return err
		}
	}
	for _, vis := range [][]*onnxpb.ValueInfoProto{g.GetInput(), g.GetOutput(), g.GetValueInfo()} {
		for _, vi := range vis {
			toDoubleType(vi.GetType())
		}
	}
	defer toDoubleWrap(g)
	for _, n := range g.GetNode() {
		for _, a := range n.GetAttribute() {
			switch {
			case n.GetOpType() == "Cast" && a.GetName() == "to" && int32(a.GetI()) == tdFloat:
				a.I = proto.Int64(int64(tdDouble))
			case n.GetOpType() == "Constant" && a.GetName() == "value_float":
				v := float64(a.GetF())
				*a = onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
					T: &onnxpb.TensorProto{DataType: proto.Int32(tdDouble), DoubleData: []float64{v}}}
			case n.GetOpType() == "Constant" && a.GetName() == "value_floats":
				vs := make([]float64, len(a.GetFloats()))
				for i, f := range a.GetFloats() {
					vs[i] = float64(f)
				}
				*a = onnxpb.AttributeProto{Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
					T: &onnxpb.TensorProto{DataType: proto.Int32(tdDouble), Dims: []int64{int64(len(vs))}, DoubleData: vs}}
			case (a.GetName() == "dtype" || a.GetName() == "to") && int32(a.GetI()) == tdFloat &&
				(n.GetOpType() == "EyeLike" || n.GetOpType() == "RandomNormal" || n.GetOpType() == "RandomUniform" ||
					n.GetOpType() == "RandomNormalLike" || n.GetOpType() == "RandomUniformLike" || n.GetOpType() == "Multinomial"):
				a.I = proto.Int64(int64(tdDouble))
			}
			if a.T != nil {
				if err := toDoubleTensor(m, a.T); err != nil {
					return err
				}
			}
			for _, t := range a.GetTensors() {
				if err := toDoubleTensor(m, t); err != nil {
					return err
				}
			}
			if err := toDoubleGraph(m, a.G); err != nil {
				return err
			}
			for _, sg := range a.GetGraphs() {
				if err := toDoubleGraph(m, sg); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func toDoubleType(t *onnxpb.TypeProto) {
	if t == nil {
		return
	}
	if tt := t.GetTensorType(); tt != nil && tt.GetElemType() == tdFloat {
		tt.ElemType = proto.Int32(tdDouble)
	}
	if s := t.GetSequenceType(); s != nil {
		toDoubleType(s.GetElemType())
	}
	if o := t.GetOptionalType(); o != nil {
		toDoubleType(o.GetElemType())
	}
}

// toDoubleTensor rewrites a float32 tensor's data as float64 raw bytes.
func toDoubleTensor(m *graph.Model, t *onnxpb.TensorProto) error {
	if t == nil || t.GetDataType() != tdFloat {
		return nil
	}
	raw, err := m.TensorBytes(t)
	if err != nil {
		return fmt.Errorf("todouble: %w", err)
	}
	if len(raw)%4 != 0 {
		return fmt.Errorf("todouble: tensor %q: %d bytes is not a whole number of float32s", t.GetName(), len(raw))
	}
	out := make([]byte, 2*len(raw))
	for i := 0; i < len(raw)/4; i++ {
		f := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		binary.LittleEndian.PutUint64(out[8*i:], math.Float64bits(float64(f)))
	}
	t.DataType = proto.Int32(tdDouble)
	t.FloatData = nil
	t.RawData = out
	t.DataLocation = nil
	t.ExternalData = nil
	return nil
}
