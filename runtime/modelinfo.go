package runtime

import (
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// IOInfo describes a model input or output.
type IOInfo struct {
	Name  string
	DType DType // Undefined for non-tensor values (sequences, maps, ...)
	// Shape has -1 for a dynamic (symbolic or unknown) dimension. It is nil
	// when the model does not declare the rank, and empty for a scalar.
	Shape []int64
}

// Static reports whether every dimension is known (a scalar is static; an
// undeclared rank is not).
func (io IOInfo) Static() bool {
	if io.Shape == nil {
		return false
	}
	for _, d := range io.Shape {
		if d < 0 {
			return false
		}
	}
	return true
}

func (io IOInfo) String() string {
	if io.Shape == nil {
		return fmt.Sprintf("%s %s[?]", io.Name, io.DType)
	}
	return fmt.Sprintf("%s %s%s", io.Name, io.DType, shapeString(io.Shape))
}

// modelInfo is what a Session needs to know about a model before handing it
// to onnxruntime.
type modelInfo struct {
	inputs       []IOInfo // graph inputs without an initializer, in model order
	outputs      []IOInfo
	externalData bool // some initializer has data_location EXTERNAL
}

// onnxruntime_go can only report a model's inputs and outputs by creating a
// throwaway session, which loads and optimises the whole model a second time.
// Reading the few fields we need from the protobuf directly is far cheaper:
// the walker below jumps over node lists and weight blobs by their length
// prefixes, touching a few kilobytes even of a multi-gigabyte model.
//
// Field numbers from onnx.proto.
const (
	fieldModelGraph             = 7
	fieldGraphInitializer       = 5
	fieldGraphInput             = 11
	fieldGraphOutput            = 12
	fieldGraphSparseInitializer = 15
	fieldTensorName             = 8
	fieldTensorDataLocation     = 14
	fieldSparseTensorValues     = 1
	tensorDataLocationExternal  = 1
)

const (
	wireWindow         = 64 << 10 // bytes read at once
	maxValueInfoBytes  = 16 << 20 // sanity bound on one ValueInfoProto
	maxVarintLen       = 10
	maxTagAndLengthLen = 2 * maxVarintLen
	errNotModelFmt     = "not an ONNX model (%v)"
)

func scanModelFile(path string) (*modelInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return scanModel(f, fi.Size())
}

func scanModel(r io.ReaderAt, size int64) (*modelInfo, error) {
	w := &wireReader{r: r, size: size}
	info := &modelInfo{}
	var inputs []IOInfo
	initialized := map[string]bool{}
	sawGraph := false

	tensorName := func(start, end int64) (string, error) {
		var name string
		err := w.walk(start, end, func(num protowire.Number, typ protowire.Type, s, e int64, v uint64) error {
			switch {
			case num == fieldTensorName && typ == protowire.BytesType:
				b, err := w.at(s, e-s)
				if err != nil {
					return err
				}
				name = string(b)
			case num == fieldTensorDataLocation && typ == protowire.VarintType && v == tensorDataLocationExternal:
				info.externalData = true
			}
			return nil
		})
		return name, err
	}

	err := w.walk(0, size, func(num protowire.Number, typ protowire.Type, start, end int64, _ uint64) error {
		if num != fieldModelGraph || typ != protowire.BytesType {
			return nil
		}
		sawGraph = true
		return w.walk(start, end, func(num protowire.Number, typ protowire.Type, start, end int64, _ uint64) error {
			if typ != protowire.BytesType {
				return nil
			}
			switch num {
			case fieldGraphInput, fieldGraphOutput:
				vi, err := w.valueInfo(start, end)
				if err != nil {
					return err
				}
				if num == fieldGraphInput {
					inputs = append(inputs, vi)
				} else {
					info.outputs = append(info.outputs, vi)
				}
			case fieldGraphInitializer:
				name, err := tensorName(start, end)
				if err != nil {
					return err
				}
				initialized[name] = true
			case fieldGraphSparseInitializer:
				return w.walk(start, end, func(num protowire.Number, typ protowire.Type, start, end int64, _ uint64) error {
					if num == fieldSparseTensorValues && typ == protowire.BytesType {
						name, err := tensorName(start, end)
						if err != nil {
							return err
						}
						initialized[name] = true
					}
					return nil
				})
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if !sawGraph {
		return nil, fmt.Errorf(errNotModelFmt, "no graph")
	}
	// Like onnxruntime (IR >= 4), an input with an initializer of the same
	// name is an overridable constant, not something Run must be given.
	for _, in := range inputs {
		if !initialized[in.Name] {
			info.inputs = append(info.inputs, in)
		}
	}
	return info, nil
}

func (w *wireReader) valueInfo(start, end int64) (IOInfo, error) {
	if end-start > maxValueInfoBytes {
		return IOInfo{}, fmt.Errorf(errNotModelFmt, "oversized ValueInfoProto")
	}
	b, err := w.at(start, end-start)
	if err != nil {
		return IOInfo{}, err
	}
	var vi onnxpb.ValueInfoProto
	if err := proto.Unmarshal(b, &vi); err != nil {
		return IOInfo{}, fmt.Errorf(errNotModelFmt, err)
	}
	info := IOInfo{Name: vi.GetName()}
	tt := vi.GetType().GetTensorType()
	if tt == nil {
		return info, nil // sequence, map, optional, ...: no tensor metadata
	}
	info.DType = DType(tt.GetElemType())
	if tt.Shape != nil {
		info.Shape = make([]int64, len(tt.Shape.Dim))
		for i, d := range tt.Shape.Dim {
			if _, ok := d.Value.(*onnxpb.TensorShapeProto_Dimension_DimValue); ok && d.GetDimValue() >= 0 {
				info.Shape[i] = d.GetDimValue()
			} else {
				info.Shape[i] = -1
			}
		}
	}
	return info, nil
}

// wireReader reads protobuf wire format from an io.ReaderAt through a small
// window, so that skipping a field costs nothing and reading a tag costs at
// most one ReadAt.
type wireReader struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // offset of buf[0]
}

// at returns n bytes at off. The result may alias the window: copy it before
// the next call if it must live longer.
func (w *wireReader) at(off, n int64) ([]byte, error) {
	if off < 0 || n < 0 || off+n > w.size {
		return nil, fmt.Errorf(errNotModelFmt, "truncated")
	}
	if off >= w.off && off+n <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off : off-w.off+n], nil
	}
	if n > wireWindow {
		b := make([]byte, n)
		if _, err := w.r.ReadAt(b, off); err != nil && !(errors.Is(err, io.EOF) && int64(len(b)) == n) {
			return nil, err
		}
		return b, nil
	}
	m := min(int64(wireWindow), w.size-off)
	if cap(w.buf) < wireWindow {
		w.buf = make([]byte, wireWindow)
	}
	w.buf = w.buf[:m]
	got, err := w.r.ReadAt(w.buf, off)
	if int64(got) < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = fmt.Errorf(errNotModelFmt, "truncated")
		}
		w.buf = w.buf[:0]
		return nil, err
	}
	w.buf = w.buf[:got]
	w.off = off
	return w.buf[:n], nil
}

// walk calls fn for each field of the message occupying [start, end). For
// length-delimited fields start/end bound the payload; for varints v holds
// the value.
func (w *wireReader) walk(start, end int64, fn func(num protowire.Number, typ protowire.Type, start, end int64, v uint64) error) error {
	off := start
	for off < end {
		hdr, err := w.at(off, min(maxTagAndLengthLen, end-off))
		if err != nil {
			return err
		}
		num, typ, n := protowire.ConsumeTag(hdr)
		if n < 0 {
			return fmt.Errorf(errNotModelFmt, protowire.ParseError(n))
		}
		off += int64(n)
		hdr = hdr[n:]
		var v uint64
		valStart, valEnd := off, off
		switch typ {
		case protowire.VarintType:
			var m int
			v, m = protowire.ConsumeVarint(hdr)
			if m < 0 {
				// The tag may have left fewer than 10 bytes in hdr.
				b, err := w.at(off, min(maxVarintLen, end-off))
				if err != nil {
					return err
				}
				if v, m = protowire.ConsumeVarint(b); m < 0 {
					return fmt.Errorf(errNotModelFmt, protowire.ParseError(m))
				}
			}
			valEnd = off + int64(m)
		case protowire.Fixed32Type:
			valEnd = off + 4
		case protowire.Fixed64Type:
			valEnd = off + 8
		case protowire.BytesType:
			b, err := w.at(off, min(maxVarintLen, end-off))
			if err != nil {
				return err
			}
			length, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf(errNotModelFmt, protowire.ParseError(m))
			}
			valStart = off + int64(m)
			if length > uint64(end-valStart) {
				return fmt.Errorf(errNotModelFmt, "field overruns its message")
			}
			valEnd = valStart + int64(length)
		default:
			return fmt.Errorf(errNotModelFmt, fmt.Sprintf("unexpected wire type %d", typ))
		}
		if valEnd > end {
			return fmt.Errorf(errNotModelFmt, "field overruns its message")
		}
		if err := fn(num, typ, valStart, valEnd, v); err != nil {
			return err
		}
		off = valEnd
	}
	return nil
}
