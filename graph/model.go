package graph

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// MaxProtoBytes is the largest serialized message protobuf accepts (2 GiB).
const MaxProtoBytes = 1<<31 - 1

// Model is an ONNX model together with the directory its external data
// references are relative to.
type Model struct {
	Proto *onnxpb.ModelProto
	// Path is the file the model was loaded from ("" for models built in
	// memory). Dir is the directory external data locations resolve
	// against.
	Path string
	Dir  string
}

// ExternalRef is a parsed external-data reference of one tensor.
type ExternalRef struct {
	Location string // relative to the model's directory
	Offset   int64
	Length   int64
	Checksum string // optional SHA-1 from the exporter; kept as is
}

// Load reads an ONNX model from path. External weights are not read: their
// references are parsed and checked against the data files' sizes (stat
// only), so loading a model with many GiB of external data is cheap.
func Load(path string) (*Model, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("graph: %w", err)
	}
	m, err := Parse(data, filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("graph: %s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// Parse decodes a serialized model whose external data lives in dir. Its
// errors do not name a file; Load adds the path.
func Parse(data []byte, dir string) (*Model, error) {
	if len(data) == 0 {
		return nil, errors.New("empty file, not an ONNX model")
	}
	mp := new(onnxpb.ModelProto)
	if err := proto.Unmarshal(data, mp); err != nil {
		return nil, fmt.Errorf("not an ONNX model (truncated or corrupt protobuf: %v)", err)
	}
	if mp.GetIrVersion() <= 0 || mp.Graph == nil {
		return nil, errors.New("not an ONNX model (no ir_version or no graph)")
	}
	m := &Model{Proto: mp, Dir: dir}
	if err := m.checkExternalData(); err != nil {
		return nil, err
	}
	return m, nil
}

// checkExternalData verifies that every external reference is well formed,
// stays inside the model's directory and lies within its file.
func (m *Model) checkExternalData() error {
	sizes := map[string]int64{}
	var err error
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		if !IsExternal(t) {
			return true
		}
		var ref ExternalRef
		ref, err = ParseExternalRef(t)
		if err != nil {
			return false
		}
		size, ok := sizes[ref.Location]
		if !ok {
			fi, statErr := os.Stat(filepath.Join(m.Dir, ref.Location))
			if statErr != nil {
				if errors.Is(statErr, os.ErrNotExist) {
					err = fmt.Errorf("tensor %q: external data file %q not found", t.GetName(), ref.Location)
				} else {
					err = fmt.Errorf("tensor %q: external data: %v", t.GetName(), statErr)
				}
				return false
			}
			size = fi.Size()
			sizes[ref.Location] = size
		}
		if ref.Length < 0 {
			ref.Length = size - ref.Offset
		}
		if want := ByteSize(t); want >= 0 && ref.Length != want {
			err = fmt.Errorf("tensor %q: external data length %d, but %s%v needs %d bytes",
				t.GetName(), ref.Length, DTypeName(t.GetDataType()), t.GetDims(), want)
			return false
		}
		if ref.Offset+ref.Length > size {
			err = fmt.Errorf("tensor %q: external data range [%d, %d) past end of %q (%d bytes)",
				t.GetName(), ref.Offset, ref.Offset+ref.Length, ref.Location, size)
			return false
		}
		return true
	})
	return err
}

// ParseExternalRef reads the external_data entries of t. A missing length
// is returned as -1 (the data runs to the end of the file).
func ParseExternalRef(t *onnxpb.TensorProto) (ExternalRef, error) {
	ref := ExternalRef{Length: -1}
	for _, kv := range t.GetExternalData() {
		var err error
		switch kv.GetKey() {
		case "location":
			ref.Location = kv.GetValue()
		case "offset":
			ref.Offset, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "length":
			ref.Length, err = strconv.ParseInt(kv.GetValue(), 10, 64)
		case "checksum":
			ref.Checksum = kv.GetValue()
		}
		if err != nil {
			return ref, fmt.Errorf("tensor %q: external data %s %q is not an integer", t.GetName(), kv.GetKey(), kv.GetValue())
		}
	}
	switch {
	case ref.Location == "":
		return ref, fmt.Errorf("tensor %q: external data without a location", t.GetName())
	case filepath.IsAbs(ref.Location) || escapes(ref.Location):
		// onnx's checker refuses these too: a model must not make us read
		// files outside its own directory.
		return ref, fmt.Errorf("tensor %q: external data location %q is outside the model's directory", t.GetName(), ref.Location)
	case ref.Offset < 0:
		return ref, fmt.Errorf("tensor %q: negative external data offset %d", t.GetName(), ref.Offset)
	case ref.Length < -1:
		return ref, fmt.Errorf("tensor %q: negative external data length %d", t.GetName(), ref.Length)
	}
	return ref, nil
}

func escapes(loc string) bool {
	c := filepath.Clean(filepath.FromSlash(loc))
	return c == ".." || strings.HasPrefix(c, ".."+string(filepath.Separator))
}

// WalkTensors calls fn for every tensor stored in the model: initializers
// and sparse initializers of the main graph and of every subgraph, tensors
// in node attributes, and those in model-local functions. It stops when fn
// returns false.
func (m *Model) WalkTensors(fn func(*onnxpb.TensorProto) bool) {
	ok := walkGraphTensors(m.Proto.GetGraph(), fn)
	for _, f := range m.Proto.GetFunctions() {
		if !ok {
			return
		}
		ok = walkNodeTensors(f.GetNode(), fn)
	}
}

func walkGraphTensors(g *onnxpb.GraphProto, fn func(*onnxpb.TensorProto) bool) bool {
	if g == nil {
		return true
	}
	for _, t := range g.GetInitializer() {
		if !fn(t) {
			return false
		}
	}
	for _, st := range g.GetSparseInitializer() {
		for _, t := range []*onnxpb.TensorProto{st.GetValues(), st.GetIndices()} {
			if t != nil && !fn(t) {
				return false
			}
		}
	}
	return walkNodeTensors(g.GetNode(), fn)
}

func walkNodeTensors(nodes []*onnxpb.NodeProto, fn func(*onnxpb.TensorProto) bool) bool {
	for _, n := range nodes {
		for _, a := range n.GetAttribute() {
			if a.T != nil && !fn(a.T) {
				return false
			}
			for _, t := range a.GetTensors() {
				if !fn(t) {
					return false
				}
			}
			if !walkGraphTensors(a.G, fn) {
				return false
			}
			for _, sg := range a.GetGraphs() {
				if !walkGraphTensors(sg, fn) {
					return false
				}
			}
		}
	}
	return true
}

// TensorBytes returns the little-endian bytes of t's data, reading them
// from the external file when the tensor is external. It allocates; passes
// that only move data should stream with OpenTensor instead.
func (m *Model) TensorBytes(t *onnxpb.TensorProto) ([]byte, error) {
	if !IsExternal(t) {
		if t.RawData != nil {
			return t.RawData, nil
		}
		if b, ok := typedBytes(t); ok {
			return b, nil
		}
		return []byte{}, nil
	}
	r, closeFn, err := m.OpenTensor(t)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	b := make([]byte, r.Size())
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("graph: tensor %q: %w", t.GetName(), err)
	}
	return b, nil
}

// OpenTensor returns a reader over an external tensor's bytes and a
// function that closes its file.
func (m *Model) OpenTensor(t *onnxpb.TensorProto) (*io.SectionReader, func() error, error) {
	ref, err := ParseExternalRef(t)
	if err != nil {
		return nil, nil, fmt.Errorf("graph: %w", err)
	}
	f, err := os.Open(filepath.Join(m.Dir, ref.Location))
	if err != nil {
		return nil, nil, fmt.Errorf("graph: tensor %q: %w", t.GetName(), err)
	}
	if ref.Length < 0 {
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("graph: tensor %q: %w", t.GetName(), err)
		}
		ref.Length = fi.Size() - ref.Offset
	}
	return io.NewSectionReader(f, ref.Offset, ref.Length), f.Close, nil
}

// Initializer returns the main graph's initializer with the given name.
func (m *Model) Initializer(name string) *onnxpb.TensorProto {
	for _, t := range m.Proto.GetGraph().GetInitializer() {
		if t.GetName() == name {
			return t
		}
	}
	return nil
}
