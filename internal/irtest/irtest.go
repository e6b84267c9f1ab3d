// Package irtest builds small ONNX graphs for tests, in the spirit of the
// ssa package's test DSL: a few lines describe a graph.
package irtest

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Builder accumulates one graph.
type Builder struct {
	g *onnxpb.GraphProto
}

// New starts a graph named name.
func New(name string) *Builder {
	return &Builder{g: &onnxpb.GraphProto{Name: proto.String(name)}}
}

// ValueInfo describes a float32 (or other dtype) tensor of the given shape;
// a negative dim becomes a symbolic dimension.
func ValueInfo(name string, dt onnxpb.TensorProto_DataType, dims ...int64) *onnxpb.ValueInfoProto {
	shape := &onnxpb.TensorShapeProto{}
	for i, d := range dims {
		dim := &onnxpb.TensorShapeProto_Dimension{}
		if d < 0 {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: "d" + string(rune('0'+i))}
		} else {
			dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: d}
		}
		shape.Dim = append(shape.Dim, dim)
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: &onnxpb.TypeProto_Tensor{
			ElemType: proto.Int32(int32(dt)),
			Shape:    shape,
		}}},
	}
}

// Input adds a float32 graph input.
func (b *Builder) Input(name string, dims ...int64) *Builder {
	b.g.Input = append(b.g.Input, ValueInfo(name, onnxpb.TensorProto_FLOAT, dims...))
	return b
}

// Output adds a float32 graph output.
func (b *Builder) Output(name string, dims ...int64) *Builder {
	b.g.Output = append(b.g.Output, ValueInfo(name, onnxpb.TensorProto_FLOAT, dims...))
	return b
}

// Init adds a float32 initializer stored as raw_data.
func (b *Builder) Init(name string, data []float32, dims ...int64) *Builder {
	b.g.Initializer = append(b.g.Initializer, Float32Tensor(name, data, dims...))
	return b
}

// Node adds a node; ins and outs are tensor names.
func (b *Builder) Node(op, name string, ins, outs []string, attrs ...*onnxpb.AttributeProto) *Builder {
	b.g.Node = append(b.g.Node, &onnxpb.NodeProto{
		OpType:    proto.String(op),
		Name:      proto.String(name),
		Input:     ins,
		Output:    outs,
		Attribute: attrs,
	})
	return b
}

// Graph returns the graph built so far.
func (b *Builder) Graph() *onnxpb.GraphProto { return b.g }

// Model wraps the graph in a model (IR 10, opset 17).
func (b *Builder) Model() *graph.Model {
	return &graph.Model{Proto: &onnxpb.ModelProto{
		IrVersion:    proto.Int64(10),
		ProducerName: proto.String("irtest"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(17)}},
		Graph:        b.g,
	}}
}

// Float32Tensor makes a float32 tensor with raw_data.
func Float32Tensor(name string, data []float32, dims ...int64) *onnxpb.TensorProto {
	raw := make([]byte, 4*len(data))
	for i, v := range data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	return &onnxpb.TensorProto{
		Name:     proto.String(name),
		DataType: proto.Int32(int32(onnxpb.TensorProto_FLOAT)),
		Dims:     dims,
		RawData:  raw,
	}
}

// GraphAttr is a graph-valued attribute (If branches, Loop bodies).
func GraphAttr(name string, g *onnxpb.GraphProto) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{
		Name: proto.String(name),
		Type: onnxpb.AttributeProto_GRAPH.Enum(),
		G:    g,
	}
}
