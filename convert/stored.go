package convert

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"unsafe"
)

// storedType is a stored element type that reads into float32.
type storedType int

const (
	dtF32 storedType = iota
	dtF16
	dtBF16
	dtF64
)

func (d storedType) size() int64 {
	switch d {
	case dtF16, dtBF16:
		return 2
	case dtF64:
		return 8
	}
	return 4
}

// chunkBytes bounds the scratch buffer of one read, so that reading a
// tensor costs its float32 result and little more.
const chunkBytes = 1 << 20

// littleEndian says float32 values in memory are laid out as files
// (safetensors, GGUF, llama2.c, ONNX) store them, so they can be read and
// written without decoding.
var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// float32Bytes is the memory of vals as bytes.
func float32Bytes(vals []float32) []byte {
	if len(vals) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&vals[0])), 4*len(vals))
}

// readFloats reads len(out) little-endian values of type dt at off into
// out, converting to float32.
func readFloats(r io.ReaderAt, off int64, out []float32, dt storedType) error {
	if dt == dtF32 && littleEndian {
		// The stored bytes are the values' memory: read them in place,
		// in one call, rather than decoding a chunk at a time.
		return readAt(r, float32Bytes(out), off)
	}
	es := dt.size()
	n := int64(len(out))
	buf := make([]byte, min(n*es, chunkBytes/es*es))
	for done := int64(0); done < n; {
		b := buf[:min(int64(len(buf)), (n-done)*es)]
		if err := readAt(r, b, off+done*es); err != nil {
			return err
		}
		o := out[done : done+int64(len(b))/es]
		decodeFloats(o, b, dt)
		done += int64(len(o))
	}
	return nil
}

// decodeFloats converts the little-endian values of type dt in b to out
// (len(b) = len(out)·size).
func decodeFloats(out []float32, b []byte, dt storedType) {
	le := binary.LittleEndian
	switch dt {
	case dtF32:
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(b[4*i:]))
		}
	case dtF16:
		b = b[:2*len(out)]
		for i := range out {
			out[i] = float16to32(uint16(b[2*i]) | uint16(b[2*i+1])<<8)
		}
	case dtBF16:
		b = b[:2*len(out)]
		for i := range out {
			out[i] = math.Float32frombits(uint32(b[2*i])<<16 | uint32(b[2*i+1])<<24)
		}
	case dtF64:
		for i := range out {
			out[i] = float32(math.Float64frombits(le.Uint64(b[8*i:])))
		}
	}
}

// float16to32 converts an IEEE 754 half-precision value exactly.
func float16to32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp != 0: // normal
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	case mant == 0: // ±0
		return math.Float32frombits(sign)
	}
	// Subnormal: mant·2⁻²⁴, exact in float32.
	f := float32(mant) * (1.0 / (1 << 24))
	if sign != 0 {
		f = -f
	}
	return f
}

// readAt fills b from off, calling a short read a truncated file. (A
// ReaderAt may return io.EOF along with a full buffer at the end.)
func readAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF || err == nil {
		return errTruncatedRead
	}
	return err
}

var errTruncatedRead = errors.New("truncated file")

// sourceFile is an open checkpoint file. Tensors are read with ReadAt,
// which goroutines may call at once; storedTensor.copyTo reads from the
// file offset instead (that is what copy_file_range takes), so copies
// hold mu.
type sourceFile struct {
	io.ReaderAt
	mu sync.Mutex
}

// storedTensor is a tensor whose values a reader found in a file as they
// are, needing no rearranging: n elements of type dt at off, little-endian
// and row-major in the Tensor's shape. Instead of calling Read (which
// allocates the tensor anew each time) Build copies float32 values into
// the output without decoding them (copyTo), maps float32 values it
// transposes or converts (mapFloats), and reads others into a buffer it
// reuses from tensor to tensor (readInto).
type storedTensor struct {
	src        *sourceFile
	off, n     int64
	dt         storedType
	file, name string // for errors
	// read is the Tensor.Read this storedTensor stands for (see
	// Tensor.stored).
	read func() ([]float32, error)
}

// newStoredTensor describes n values of type dt at off in src and makes
// its Read function.
func newStoredTensor(src *sourceFile, off, n int64, dt storedType, file, name string) *storedTensor {
	s := &storedTensor{src: src, off: off, n: n, dt: dt, file: file, name: name}
	s.read = func() ([]float32, error) {
		out := make([]float32, s.n)
		if err := s.readInto(out); err != nil {
			return nil, err
		}
		return out, nil
	}
	return s
}

// readInto reads the values into out (len(out) = n).
func (s *storedTensor) readInto(out []float32) error {
	return s.wrap(readFloats(s.src, s.off, out, s.dt))
}

// copyTo writes the stored bytes to w unchanged. From a file into a file
// on Linux the kernel copies them (copy_file_range, as cp does), without
// bringing them into this process.
func (s *storedTensor) copyTo(w io.Writer) error {
	n := s.n * s.dt.size()
	var r io.Reader = io.NewSectionReader(s.src, s.off, n)
	if f, ok := s.src.ReaderAt.(*os.File); ok {
		// os.File.ReadFrom copies in the kernel only from a file's
		// offset, so seek to the tensor and read through a limit.
		s.src.mu.Lock()
		defer s.src.mu.Unlock()
		if _, err := f.Seek(s.off, io.SeekStart); err != nil {
			return s.wrap(err)
		}
		r = &io.LimitedReader{R: f, N: n}
	}
	copied, err := io.Copy(w, r)
	if err == nil && copied < n {
		err = errTruncatedRead
	}
	return s.wrap(err)
}

// wrap names the file and tensor in an error, as Read does.
func (s *storedTensor) wrap(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("convert: %s: tensor %s: %w", s.file, s.name, err)
}

// storedOf returns where t's values are stored, or nil when Build must
// call t.Read: when no reader said, or when Read is no longer the reader's
// own (a caller replaced it, to change the values or to fail).
func storedOf(t Tensor) *storedTensor {
	if t.stored == nil || !sameFunc(t.Read, t.stored.read) {
		return nil
	}
	return t.stored
}

// sameFunc reports whether f and g are the same func value. Go has no
// equality on funcs, but a func value is a pointer to its closure, and
// every evaluation of a func literal that captures variables (as
// newStoredTensor's does) makes a closure of its own.
func sameFunc(f, g func() ([]float32, error)) bool {
	return *(*unsafe.Pointer)(unsafe.Pointer(&f)) == *(*unsafe.Pointer)(unsafe.Pointer(&g))
}
