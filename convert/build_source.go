package convert

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/onnxprune/onnxprune/graph"
)

// weightSource yields the values of one planned weight; Build reads the
// checkpoint through it so that one tensor's values are alive at a time.
type weightSource struct {
	plan []plannedWeight
	enc  *tensorEncoder
	// vals holds the values of every tensor read in place (see
	// readInPlace), reused from one to the next: after the first, no
	// tensor costs fresh memory, page faults or garbage. valsLen is the
	// most any of them needs.
	vals    []float32
	valsLen int64
	// progress is called after each tensor with the bytes written so far.
	progress func(done int64)
	done     int64
}

func newWeightSource(plan []plannedWeight, enc *tensorEncoder) *weightSource {
	s := &weightSource{plan: plan, enc: enc}
	for _, p := range plan {
		if st := storedOf(p.tensor); st != nil && !s.copies(p, st) {
			s.valsLen = max(s.valsLen, st.n)
		}
	}
	return s
}

// copies says that p's stored bytes are the model's, so writeTo copies
// them rather than reading the values.
func (s *weightSource) copies(p plannedWeight, st *storedTensor) bool {
	return p.spec.layout == layoutKeep && st.dt == dtF32 && s.enc.dt == Float32
}

// writeTo encodes one planned weight to w in its stored layout. Tensors
// whose values lie in a file as they are take the fast paths: float32
// kept as it is is copied by the kernel, float32 to transpose or convert
// is mapped into memory, and anything else is read into one reused
// buffer; other tensors are read through their Read function.
func (s *weightSource) writeTo(w io.Writer, p plannedWeight) error {
	st := storedOf(p.tensor)
	if st == nil {
		return s.readAndWrite(w, p)
	}
	if want := graph.NumElements(p.spec.shape); st.n != want {
		return fmt.Errorf("tensor %q: stored with %d values, shape %v has %d", p.tensor.Name, st.n, p.spec.shape, want)
	}
	if s.copies(p, st) {
		if err := st.copyTo(w); err != nil {
			return fmt.Errorf("tensor %q: %w", p.tensor.Name, err)
		}
		return nil
	}
	if vals, unmap, ok := st.mapFloats(); ok {
		defer unmap()
		err := catchFault(func() error { return s.enc.write(w, vals, p.spec) })
		if err == errTruncatedRead {
			return fmt.Errorf("tensor %q: %w", p.tensor.Name, st.wrap(err))
		}
		return err
	}
	return s.readInPlace(w, p, st)
}

// readInPlace reads a stored tensor into the reused buffer and encodes
// it to w.
func (s *weightSource) readInPlace(w io.Writer, p plannedWeight, st *storedTensor) error {
	if s.vals == nil {
		s.vals = make([]float32, s.valsLen)
	}
	vals := s.vals[:st.n]
	if err := st.readInto(vals); err != nil {
		return fmt.Errorf("tensor %q: %w", p.tensor.Name, err)
	}
	return s.enc.write(w, vals, p.spec)
}

// catchFault runs f, which reads a file mapped into memory, and turns a
// memory fault — the file was truncated under the mapping — into
// errTruncatedRead instead of a crash.
func catchFault(f func() error) (err error) {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			if _, fault := r.(interface{ Addr() uintptr }); !fault {
				panic(r)
			}
			err = errTruncatedRead
		}
	}()
	return f()
}

// readAndWrite gets p's values from its Read function and encodes them
// to w.
func (s *weightSource) readAndWrite(w io.Writer, p plannedWeight) error {
	vals, err := p.tensor.Read()
	if err != nil {
		return fmt.Errorf("tensor %q: %w", p.tensor.Name, err)
	}
	if want := graph.NumElements(p.spec.shape); int64(len(vals)) != want {
		return fmt.Errorf("tensor %q: read %d values, shape %v has %d", p.tensor.Name, len(vals), p.spec.shape, want)
	}
	if err := s.enc.write(w, vals, p.spec); err != nil {
		return err
	}
	if 4*len(vals) > releaseAbove {
		debug.FreeOSMemory() // vals is garbage now
	}
	return nil
}

// releaseAbove is the size of a tensor's values beyond which the builder
// hands their memory back to the OS as soon as the tensor is written.
// Otherwise the collector lets garbage grow to the size of the live heap,
// and peak RSS would be twice the largest tensor.
const releaseAbove = 32 << 20

// advance records that a tensor of n stored bytes was written and
// reports progress.
func (s *weightSource) advance(n int64) {
	s.done += n
	if s.progress != nil {
		s.progress(s.done)
	}
}

type sliceWriter struct{ b []byte }

func (s *sliceWriter) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ReadFrom lets io.Copy into a countingWriter use the underlying
// writer's ReadFrom (for files: copy_file_range).
func (c *countingWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(c.w, r)
	c.n += n
	return n, err
}
