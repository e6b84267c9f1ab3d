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
	// progress is called after each tensor with the bytes written so far.
	progress func(done int64)
	done     int64
}

// read returns a planned weight's values, checked against its shape.
func (s *weightSource) read(p plannedWeight) ([]float32, error) {
	vals, err := p.tensor.Read()
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", p.tensor.Name, err)
	}
	if want := graph.NumElements(p.spec.shape); int64(len(vals)) != want {
		return nil, fmt.Errorf("tensor %q: read %d values, shape %v has %d", p.tensor.Name, len(vals), p.spec.shape, want)
	}
	return vals, nil
}

// writeTo encodes one planned weight to w in its stored layout.
func (s *weightSource) writeTo(w io.Writer, p plannedWeight) error {
	vals, err := s.read(p)
	if err != nil {
		return err
	}
	return s.enc.write(w, vals, p.spec)
}

// releaseAbove is the size of a tensor's values beyond which the builder
// hands their memory back to the OS as soon as the tensor is written.
// Otherwise the collector lets garbage grow to the size of the live heap,
// and peak RSS would be twice the largest tensor.
const releaseAbove = 32 << 20

// advance records that a tensor of n stored bytes was written (its values
// are garbage by now) and reports progress.
func (s *weightSource) advance(p plannedWeight, n int64) {
	if 4*graph.NumElements(p.spec.shape) > releaseAbove {
		debug.FreeOSMemory()
	}
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
