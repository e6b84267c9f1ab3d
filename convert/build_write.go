package convert

import (
	"fmt"
	"io"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Field numbers of onnx.proto used by the streaming writer.
const (
	fieldModelGraph        protowire.Number = 7
	fieldGraphInitializer  protowire.Number = 5
	fieldTensorRawData     protowire.Number = 9
	externalThresholdBytes                  = 1024 // smaller tensors stay in the protobuf, as onnx.save_model does
	externalAlign                           = 4096 // onnxruntime memory-maps aligned external tensors
)

// initializer is the TensorProto of a planned weight, without data.
func initializer(p plannedWeight, dt DType) *onnxpb.TensorProto {
	return &onnxpb.TensorProto{
		Dims:     p.spec.storedShape(),
		DataType: proto.Int32(int32(dt.onnx())),
		Name:     proto.String(p.spec.name),
	}
}

// storedBytes is the size of a planned weight in the model.
func storedBytes(p plannedWeight, dt DType) int64 {
	return graph.NumElements(p.spec.shape) * dt.size()
}

// writeInline streams a model whose weights live inside the protobuf.
// The protobuf is written by hand around the weights' raw bytes, which
// are encoded straight from each tensor's values: the model is never
// marshalled as a whole, so memory stays at one tensor however large the
// file. Fields come in field-number order, as proto.Marshal writes them,
// so the file is what marshalling the complete model would give.
func writeInline(w io.Writer, model *onnxpb.ModelProto, src *weightSource, dt DType) error {
	g := model.GetGraph()
	// Split the graph into the fields before initializer (5) — node (1),
	// name (2), the builder's small initializers — and those after it.
	head, err := proto.Marshal(&onnxpb.GraphProto{Node: g.Node, Name: g.Name, Initializer: g.Initializer})
	if err != nil {
		return err
	}
	tail, err := proto.Marshal(&onnxpb.GraphProto{DocString: g.DocString, Input: g.Input, Output: g.Output, ValueInfo: g.ValueInfo})
	if err != nil {
		return err
	}
	type framed struct {
		header   []byte // the TensorProto's fields before raw_data
		data     int64
		msgBytes int64 // the TensorProto's encoded size
	}
	frames := make([]framed, len(src.plan))
	graphLen := int64(len(head) + len(tail))
	for i, p := range src.plan {
		h, err := proto.Marshal(initializer(p, dt))
		if err != nil {
			return err
		}
		n := storedBytes(p, dt)
		msg := int64(len(h)) + int64(protowire.SizeTag(fieldTensorRawData)) + int64(protowire.SizeBytes(int(n)))
		frames[i] = framed{header: h, data: n, msgBytes: msg}
		graphLen += int64(protowire.SizeTag(fieldGraphInitializer)) + int64(protowire.SizeVarint(uint64(msg))) + msg
	}
	before, err := proto.Marshal(&onnxpb.ModelProto{
		IrVersion: model.IrVersion, ProducerName: model.ProducerName, ProducerVersion: model.ProducerVersion,
		Domain: model.Domain, ModelVersion: model.ModelVersion, DocString: model.DocString,
	})
	if err != nil {
		return err
	}
	after, err := proto.Marshal(&onnxpb.ModelProto{OpsetImport: model.OpsetImport, MetadataProps: model.MetadataProps})
	if err != nil {
		return err
	}
	total := int64(len(before)+len(after)) + int64(protowire.SizeTag(fieldModelGraph)) + int64(protowire.SizeVarint(uint64(graphLen))) + graphLen
	if total > graph.MaxProtoBytes {
		return fmt.Errorf("model would be %d bytes, over protobuf's 2 GiB limit; use external data", total)
	}

	buf := protowire.AppendTag(before, fieldModelGraph, protowire.BytesType)
	buf = protowire.AppendVarint(buf, uint64(graphLen))
	if _, err := w.Write(append(buf, head...)); err != nil {
		return err
	}
	for i, p := range src.plan {
		f := frames[i]
		hdr := protowire.AppendTag(nil, fieldGraphInitializer, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(f.msgBytes))
		hdr = append(hdr, f.header...)
		hdr = protowire.AppendTag(hdr, fieldTensorRawData, protowire.BytesType)
		hdr = protowire.AppendVarint(hdr, uint64(f.data))
		if _, err := w.Write(hdr); err != nil {
			return err
		}
		cw := &countingWriter{w: w}
		if err := src.writeTo(cw, p); err != nil {
			return err
		}
		if cw.n != f.data {
			return fmt.Errorf("tensor %q: wrote %d bytes, expected %d", p.spec.name, cw.n, f.data) // would corrupt the framing
		}
		src.advance(f.data)
	}
	if _, err := w.Write(append(tail, after...)); err != nil {
		return err
	}
	return nil
}

// writeExternal streams the weights into data (the external data file
// named location), each at a 4096-aligned offset, and returns the
// initializers referring to them; tensors under 1 KiB are kept inline.
func writeExternal(data io.Writer, location string, src *weightSource, dt DType) ([]*onnxpb.TensorProto, error) {
	inits := make([]*onnxpb.TensorProto, 0, len(src.plan))
	var off int64
	pad := make([]byte, externalAlign)
	for _, p := range src.plan {
		t := initializer(p, dt)
		n := storedBytes(p, dt)
		if n < externalThresholdBytes {
			var sb sliceWriter
			if err := src.writeTo(&sb, p); err != nil {
				return nil, err
			}
			t.RawData = sb.b
		} else {
			if r := off % externalAlign; r != 0 {
				if _, err := data.Write(pad[:externalAlign-r]); err != nil {
					return nil, err
				}
				off += externalAlign - r
			}
			if err := src.writeTo(data, p); err != nil {
				return nil, err
			}
			t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
			t.ExternalData = []*onnxpb.StringStringEntryProto{
				{Key: proto.String("location"), Value: proto.String(location)},
				{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(off, 10))},
				{Key: proto.String("length"), Value: proto.String(strconv.FormatInt(n, 10))},
			}
			off += n
		}
		inits = append(inits, t)
		src.advance(n)
	}
	return inits, nil
}
