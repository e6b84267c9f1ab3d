package convert

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// safetensors (github.com/huggingface/safetensors): a uint64
// little-endian header length N, N bytes of JSON
//
//	{"NAME": {"dtype": "F32", "shape": [d0, d1], "data_offsets": [begin, end]}, …,
//	 "__metadata__": {"k": "v"}}
//
// and the data, offsets relative to byte 8+N. Tensors are row-major and
// little-endian.

// maxSafetensorsHeader bounds the JSON header; safetensors itself refuses
// headers over 100 MB.
const maxSafetensorsHeader = 100 << 20

var safetensorsDTypes = map[string]storedType{"F32": dtF32, "F16": dtF16, "BF16": dtBF16, "F64": dtF64}

// stTensor is one entry of a safetensors header.
type stTensor struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// stFile is an open safetensors file.
type stFile struct {
	r         *sourceFile
	dataStart int64
	tensors   map[string]stTensor
}

// openSafetensors opens name in fsys and parses its header. The file
// must support ReadAt (os.DirFS and fstest.MapFS files do), so tensors
// can be read independently of each other.
func openSafetensors(fsys fs.FS, name string) (*stFile, io.Closer, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, nil, err
	}
	ra, ok := f.(io.ReaderAt)
	if !ok {
		f.Close()
		return nil, nil, errors.New("file system does not support random access (io.ReaderAt)")
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	st, err := parseSafetensors(ra, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return st, f, nil
}

// parseSafetensors reads and checks the header of a safetensors file of
// the given size.
func parseSafetensors(r io.ReaderAt, size int64) (*stFile, error) {
	var lenBuf [8]byte
	if err := readAt(r, lenBuf[:], 0); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > uint64(size-8) {
		if n > maxSafetensorsHeader {
			return nil, fmt.Errorf("not a safetensors file (header length %d)", n)
		}
		return nil, fmt.Errorf("truncated file: header of %d bytes in a %d-byte file", n, size)
	}
	if n > maxSafetensorsHeader {
		return nil, fmt.Errorf("safetensors header of %d bytes exceeds %d", n, maxSafetensorsHeader)
	}
	hdr := make([]byte, n)
	if err := readAt(r, hdr, 8); err != nil {
		return nil, err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("not a safetensors file (header: %v)", err)
	}
	st := &stFile{r: &sourceFile{ReaderAt: r}, dataStart: 8 + int64(n), tensors: map[string]stTensor{}}
	dataLen := size - st.dataStart
	for name, msg := range raw {
		if name == "__metadata__" {
			continue
		}
		var t stTensor
		if err := json.Unmarshal(msg, &t); err != nil {
			return nil, fmt.Errorf("tensor %s: bad header entry: %v", name, err)
		}
		if len(t.DataOffsets) != 2 || t.DataOffsets[0] < 0 || t.DataOffsets[1] < t.DataOffsets[0] {
			return nil, fmt.Errorf("tensor %s: bad data_offsets %v", name, t.DataOffsets)
		}
		for _, d := range t.Shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %s: bad shape %v", name, t.Shape)
			}
		}
		if t.DataOffsets[1] > dataLen {
			return nil, fmt.Errorf("truncated file: tensor %s ends at byte %d of %d", name, st.dataStart+t.DataOffsets[1], size)
		}
		if dt, ok := safetensorsDTypes[t.DType]; ok {
			if want := elemCount(t.Shape) * dt.size(); want != t.DataOffsets[1]-t.DataOffsets[0] {
				return nil, fmt.Errorf("tensor %s: %d bytes for %s %v, want %d", name, t.DataOffsets[1]-t.DataOffsets[0], t.DType, t.Shape, want)
			}
		}
		st.tensors[name] = t
	}
	return st, nil
}

// tensor returns where tensor name's values are; errors name file.
func (st *stFile) tensor(file, name string) (*storedTensor, error) {
	t := st.tensors[name]
	dt, ok := safetensorsDTypes[t.DType]
	if !ok {
		return nil, fmt.Errorf("tensor %s: unsupported dtype %s (supported: F32, F16, BF16, F64)", name, t.DType)
	}
	return newStoredTensor(st.r, st.dataStart+t.DataOffsets[0], elemCount(t.Shape), dt, file, name), nil
}
