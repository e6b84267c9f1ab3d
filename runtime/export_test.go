package runtime

// This file is compiled only into this package's tests. Its exported names
// are visible to the external runtime_test package, which cannot live inside
// package runtime because it imports internal/testenv (which imports us).

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// ModelBuilder assembles small ONNX models for tests.
type ModelBuilder struct {
	M *onnxpb.ModelProto
}

// NewModelBuilder starts a model importing the default domain at opset.
func NewModelBuilder(opset int64) *ModelBuilder {
	return &ModelBuilder{M: &onnxpb.ModelProto{
		IrVersion:    proto.Int64(9),
		ProducerName: proto.String("onnxprune-test"),
		OpsetImport:  []*onnxpb.OperatorSetIdProto{{Domain: proto.String(""), Version: proto.Int64(opset)}},
		Graph:        &onnxpb.GraphProto{Name: proto.String("test")},
	}}
}

// ValueInfo builds a tensor ValueInfoProto. dims holds int (fixed) or string
// (symbolic) entries; pass NoShape for an undeclared rank.
func ValueInfo(name string, dt DType, dims ...any) *onnxpb.ValueInfoProto {
	tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(int32(dt))}
	if !(len(dims) == 1 && dims[0] == NoShape) {
		tt.Shape = &onnxpb.TensorShapeProto{}
		for _, d := range dims {
			dim := &onnxpb.TensorShapeProto_Dimension{}
			switch d := d.(type) {
			case int:
				dim.Value = &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: int64(d)}
			case string:
				if d != "" {
					dim.Value = &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: d}
				}
			}
			tt.Shape.Dim = append(tt.Shape.Dim, dim)
		}
	}
	return &onnxpb.ValueInfoProto{
		Name: proto.String(name),
		Type: &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}},
	}
}

type noShape struct{}

// NoShape as the only dim makes ValueInfo declare no shape at all.
var NoShape = noShape{}

// Input declares a graph input.
func (b *ModelBuilder) Input(name string, dt DType, dims ...any) *ModelBuilder {
	b.M.Graph.Input = append(b.M.Graph.Input, ValueInfo(name, dt, dims...))
	return b
}

// Output declares a graph output.
func (b *ModelBuilder) Output(name string, dt DType, dims ...any) *ModelBuilder {
	b.M.Graph.Output = append(b.M.Graph.Output, ValueInfo(name, dt, dims...))
	return b
}

// Node appends a node; attrs come from AttrInt and friends.
func (b *ModelBuilder) Node(op string, inputs, outputs []string, attrs ...*onnxpb.AttributeProto) *ModelBuilder {
	b.M.Graph.Node = append(b.M.Graph.Node, &onnxpb.NodeProto{
		Name:      proto.String(op + "_" + outputs[0]),
		OpType:    proto.String(op),
		Input:     inputs,
		Output:    outputs,
		Attribute: attrs,
	})
	return b
}

// FloatInit adds a FLOAT initializer.
func (b *ModelBuilder) FloatInit(name string, dims []int64, v []float32) *ModelBuilder {
	b.M.Graph.Initializer = append(b.M.Graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(Float)), FloatData: v,
	})
	return b
}

// Int64Init adds an INT64 initializer.
func (b *ModelBuilder) Int64Init(name string, dims []int64, v []int64) *ModelBuilder {
	b.M.Graph.Initializer = append(b.M.Graph.Initializer, &onnxpb.TensorProto{
		Name: proto.String(name), Dims: dims, DataType: proto.Int32(int32(Int64)), Int64Data: v,
	})
	return b
}

// AttrInt builds an INT attribute.
func AttrInt(name string, v int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(v)}
}

// AttrInts builds an INTS attribute.
func AttrInts(name string, v ...int64) *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String(name), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: v}
}

// Bytes serializes the model.
func (b *ModelBuilder) Bytes(t testing.TB) []byte {
	t.Helper()
	data, err := proto.Marshal(b.M)
	if err != nil {
		t.Fatalf("marshal model: %v", err)
	}
	return data
}

// Write saves the model as dir/name and returns its path.
func (b *ModelBuilder) Write(t testing.TB, dir, name string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b.Bytes(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// ScanModelBytes exposes the protobuf I/O scanner.
func ScanModelBytes(data []byte) (inputs, outputs []IOInfo, externalData bool, err error) {
	info, err := scanModel(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, nil, false, err
	}
	return info.inputs, info.outputs, info.externalData, nil
}

// AppendCasts exposes the output-cast rewrite.
var AppendCasts = appendCasts
