package graph

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Placement says where Save puts tensor data.
type Placement int

const (
	// PlaceAuto keeps inline models inline and externalizes tensors at or
	// above the threshold when the model already has external data or its
	// tensors add up to more than AutoExternalBytes.
	PlaceAuto Placement = iota
	// PlaceInline writes every tensor into the protobuf (fails past 2 GiB).
	PlaceInline
	// PlaceExternal writes every tensor at or above the threshold into
	// one external data file.
	PlaceExternal
)

// AutoExternalBytes is the total tensor size above which PlaceAuto moves
// weights out of the protobuf, well below protobuf's 2 GiB limit.
const AutoExternalBytes = 1 << 30

// SaveOptions control Save. The zero value is PlaceAuto with ONNX's usual
// defaults.
type SaveOptions struct {
	Placement Placement
	// Location is the external data file's name, relative to the output's
	// directory; default: the output's base name + ".data".
	Location string
	// Threshold is the smallest tensor, in bytes, that goes external;
	// default 1024 (onnx.save_model's default).
	Threshold int64
	// Align pads each external tensor's offset to a multiple of Align
	// (default 4096) so onnxruntime can memory-map the weights.
	Align int64
}

// Save writes m to path. External tensors are streamed from their source
// files into the new data file; nothing is read into memory that is not
// already there. Both files are written to temporary names in the
// destination directory and renamed into place, so a failed Save leaves no
// partial output. Save refuses to overwrite the files m was loaded from.
// m itself is not changed.
func Save(m *Model, path string, opts SaveOptions) (err error) {
	if opts.Threshold <= 0 {
		opts.Threshold = 1024
	}
	if opts.Align <= 0 {
		opts.Align = 4096
	}
	if opts.Location == "" {
		opts.Location = filepath.Base(path) + ".data"
	}
	if filepath.IsAbs(opts.Location) || escapes(opts.Location) {
		return fmt.Errorf("graph: save %s: external data location %q must be inside the output's directory", path, opts.Location)
	}
	dir := filepath.Dir(path)
	dataPath := filepath.Join(dir, opts.Location)
	if err := m.refuseOverwrite(path, dataPath); err != nil {
		return err
	}

	toExternal, toInline, err := m.placement(opts)
	if err != nil {
		return fmt.Errorf("graph: save %s: %w", path, err)
	}

	var tmpData string
	defer func() {
		if err != nil && tmpData != "" {
			os.Remove(tmpData)
		}
	}()
	var refs []ExternalRef
	if len(toExternal) > 0 {
		tmpData, refs, err = m.writeExternalData(dir, opts, toExternal)
		if err != nil {
			return fmt.Errorf("graph: save %s: %w", path, err)
		}
	}
	inline := make([][]byte, len(toInline))
	for i, t := range toInline {
		if inline[i], err = m.TensorBytes(t); err != nil {
			return fmt.Errorf("graph: save %s: %w", path, err)
		}
	}

	// Point the tensors at their new places only for the duration of
	// Marshal, so that m keeps describing the files it came from.
	restore := retarget(toExternal, refs, toInline, inline)
	data, err := proto.MarshalOptions{}.Marshal(m.Proto)
	restore()
	if err != nil {
		return fmt.Errorf("graph: save %s: %w", path, err)
	}
	if len(data) > MaxProtoBytes {
		return fmt.Errorf("graph: save %s: protobuf would be %d bytes, over the 2 GiB limit; save with external data", path, len(data))
	}
	tmpModel, err := writeTemp(dir, filepath.Base(path), data)
	if err != nil {
		return fmt.Errorf("graph: save %s: %w", path, err)
	}
	if tmpData != "" {
		if err := os.Rename(tmpData, dataPath); err != nil {
			os.Remove(tmpModel)
			return fmt.Errorf("graph: save %s: %w", path, err)
		}
		tmpData = ""
	}
	if err := os.Rename(tmpModel, path); err != nil {
		os.Remove(tmpModel)
		return fmt.Errorf("graph: save %s: %w", path, err)
	}
	return nil
}

// refuseOverwrite keeps Save from replacing the model's own inputs: the
// tool never modifies its inputs, and streaming from a file while
// replacing it would corrupt it.
func (m *Model) refuseOverwrite(paths ...string) error {
	sources := map[string]bool{}
	if m.Path != "" {
		sources[m.Path] = true
	}
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		if ref, err := ParseExternalRef(t); err == nil && IsExternal(t) {
			sources[filepath.Join(m.Dir, ref.Location)] = true
		}
		return true
	})
	for _, p := range paths {
		pi, err := os.Stat(p)
		if err != nil {
			continue
		}
		for s := range sources {
			if si, err := os.Stat(s); err == nil && os.SameFile(pi, si) {
				return fmt.Errorf("graph: save %s: refusing to overwrite input file %s", paths[0], s)
			}
		}
	}
	return nil
}

// placement decides which tensors Save writes to the external data file
// (in walk order, which becomes file order) and which external tensors it
// brings back into the protobuf.
func (m *Model) placement(opts SaveOptions) (toExternal, toInline []*onnxpb.TensorProto, err error) {
	external := opts.Placement == PlaceExternal
	if opts.Placement == PlaceAuto {
		var total int64
		m.WalkTensors(func(t *onnxpb.TensorProto) bool {
			external = external || IsExternal(t)
			if n := ByteSize(t); n > 0 {
				total += n
			}
			return true
		})
		external = external || total > AutoExternalBytes
	}
	var inlined int64
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		n := tensorDataSize(t)
		switch {
		case external && n >= opts.Threshold && (IsExternal(t) || t.RawData != nil):
			toExternal = append(toExternal, t)
		case IsExternal(t):
			toInline = append(toInline, t)
			inlined += n
		}
		return true
	})
	if inlined > MaxProtoBytes {
		return nil, nil, fmt.Errorf("%d bytes of external data do not fit inline (2 GiB protobuf limit)", inlined)
	}
	return toExternal, toInline, nil
}

// tensorDataSize is the number of bytes a tensor's data occupies where it
// is stored now.
func tensorDataSize(t *onnxpb.TensorProto) int64 {
	if IsExternal(t) {
		if ref, err := ParseExternalRef(t); err == nil && ref.Length >= 0 {
			return ref.Length
		}
		return ByteSize(t)
	}
	if t.RawData != nil {
		return int64(len(t.RawData))
	}
	return ByteSize(t)
}

// writeExternalData writes the tensors to a temporary data file in dir,
// each at an aligned offset, and returns the file's name and each
// tensor's new reference.
func (m *Model) writeExternalData(dir string, opts SaveOptions, tensors []*onnxpb.TensorProto) (tmp string, refs []ExternalRef, err error) {
	f, err := createOutput(dir, opts.Location)
	if err != nil {
		return "", nil, err
	}
	tmp = f.Name()
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			os.Remove(tmp)
			tmp = ""
		}
	}()
	src := map[string]*os.File{}
	defer func() {
		for _, sf := range src {
			sf.Close()
		}
	}()
	var off int64
	pad := make([]byte, opts.Align)
	for _, t := range tensors {
		if p := off % opts.Align; p != 0 {
			if _, err := f.Write(pad[:opts.Align-p]); err != nil {
				return tmp, nil, err
			}
			off += opts.Align - p
		}
		var n int64
		if IsExternal(t) {
			n, err = copyExternal(f, m.Dir, src, t)
		} else {
			var w int
			w, err = f.Write(t.RawData)
			n = int64(w)
		}
		if err != nil {
			return tmp, nil, fmt.Errorf("tensor %q: %w", t.GetName(), err)
		}
		refs = append(refs, ExternalRef{Location: opts.Location, Offset: off, Length: n})
		off += n
	}
	return tmp, refs, nil
}

// copyExternal streams t's bytes from its source file to w. With both
// sides plain files, io.CopyN lets the kernel copy (copy_file_range).
func copyExternal(w *os.File, dir string, src map[string]*os.File, t *onnxpb.TensorProto) (int64, error) {
	ref, err := ParseExternalRef(t)
	if err != nil {
		return 0, err
	}
	sf, ok := src[ref.Location]
	if !ok {
		sf, err = os.Open(filepath.Join(dir, ref.Location))
		if err != nil {
			return 0, err
		}
		src[ref.Location] = sf
	}
	if ref.Length < 0 {
		fi, err := sf.Stat()
		if err != nil {
			return 0, err
		}
		ref.Length = fi.Size() - ref.Offset
	}
	if _, err := sf.Seek(ref.Offset, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := io.CopyN(w, sf, ref.Length)
	if errors.Is(err, io.EOF) {
		err = fmt.Errorf("external data %q ends before offset %d", ref.Location, ref.Offset+ref.Length)
	}
	return n, err
}

// retarget points each tensor in toExternal at its new reference and puts
// the bytes of each tensor in toInline into raw_data; it returns a
// function restoring the original fields.
func retarget(toExternal []*onnxpb.TensorProto, refs []ExternalRef, toInline []*onnxpb.TensorProto, inline [][]byte) func() {
	type saved struct {
		raw []byte
		loc *onnxpb.TensorProto_DataLocation
		ext []*onnxpb.StringStringEntryProto
	}
	all := append(append([]*onnxpb.TensorProto(nil), toExternal...), toInline...)
	old := make([]saved, len(all))
	for i, t := range all {
		old[i] = saved{t.RawData, t.DataLocation, t.ExternalData}
	}
	for i, t := range toExternal {
		r := refs[i]
		ext := []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String(r.Location)},
			{Key: proto.String("offset"), Value: proto.String(strconv.FormatInt(r.Offset, 10))},
			{Key: proto.String("length"), Value: proto.String(strconv.FormatInt(r.Length, 10))},
		}
		if src, err := ParseExternalRef(t); err == nil && IsExternal(t) && src.Checksum != "" {
			// Same bytes, so an exporter's checksum still holds.
			ext = append(ext, &onnxpb.StringStringEntryProto{Key: proto.String("checksum"), Value: proto.String(src.Checksum)})
		}
		t.RawData = nil
		t.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
		t.ExternalData = ext
	}
	for i, t := range toInline {
		t.RawData = inline[i]
		t.DataLocation = nil
		t.ExternalData = nil
	}
	return func() {
		for i, t := range all {
			t.RawData, t.DataLocation, t.ExternalData = old[i].raw, old[i].loc, old[i].ext
		}
	}
}

// writeTemp writes data to a new temporary file in dir.
func writeTemp(dir, base string, data []byte) (string, error) {
	f, err := createOutput(dir, base)
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// createOutput opens a temporary file in dir for an output named base.
// CreateTemp makes files private (0600); models are ordinary files.
func createOutput(dir, base string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "."+filepath.Base(base)+".tmp*")
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	return f, nil
}
