package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// OpenOptions tune Open.
type OpenOptions struct {
	// Tokenizer is the path of a tokenizer for formats that carry none
	// (llama2.c). Open does not read it; it only checks that it exists, so
	// that a mistyped path fails before a long conversion does.
	Tokenizer string
}

// Open reads the checkpoint at path, choosing the reader by content, not
// by file name: a directory is a Hugging Face model (config.json and
// safetensors); a file starting with "GGUF" is GGUF; one starting with
// llama2.c's "ak42" magic is a version 1 or 2 llama2.c export; any other
// file is a legacy llama2.c checkpoint if its header's implied size is
// exactly the file's size.
//
// Errors are one line naming the file and the problem.
func Open(path string, opts OpenOptions) (Checkpoint, error) {
	if opts.Tokenizer != "" {
		if _, err := os.Stat(opts.Tokenizer); err != nil {
			return nil, fmt.Errorf("convert: tokenizer: %w", err)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	if fi.IsDir() {
		return checkpoint(OpenHFDir(path))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	head := make([]byte, 9)
	n, err := io.ReadFull(f, head)
	f.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("convert: %w", err)
	}
	head = head[:n]
	switch {
	case bytes.HasPrefix(head, []byte(ggufMagic)):
		return checkpoint(OpenGGUF(path))
	case len(head) >= 4 && binary.LittleEndian.Uint32(head) == llama2cMagic:
		return checkpoint(OpenLlama2C(path))
	case len(head) == 9 && head[8] == '{' && binary.LittleEndian.Uint64(head) < maxSafetensorsHeader:
		// A safetensors file needs the config.json beside it: read
		// the directory it is in.
		return checkpoint(OpenHFDir(filepath.Dir(path)))
	}
	// No magic: a legacy llama2.c checkpoint, which only its size
	// identifies. A plausible header with too few bytes is a truncated
	// checkpoint; anything else is not a format we know.
	unknown := fmt.Errorf("convert: %s: unrecognised checkpoint format (not a model directory, GGUF or llama2.c file; %d bytes starting %q)", path, fi.Size(), printable(head))
	if fi.Size() < legacyHeaderSize {
		return nil, unknown
	}
	f, err = os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	h, err := readLlama2CHeader(f)
	f.Close()
	if err != nil || !h.plausible() {
		return nil, unknown
	}
	if implied := h.impliedSize(); implied != fi.Size() {
		if implied > fi.Size() {
			return nil, fmt.Errorf("convert: %s: truncated llama2.c checkpoint: %d bytes, header implies %d", path, fi.Size(), implied)
		}
		return nil, unknown
	}
	return checkpoint(OpenLlama2C(path))
}

// checkpoint converts a reader's result to the interface, so that a
// failed open returns a nil Checkpoint rather than a typed nil pointer.
func checkpoint[C Checkpoint](c C, err error) (Checkpoint, error) {
	if err != nil {
		return nil, err
	}
	return c, nil
}

// printable renders the first bytes of a file for an error message.
func printable(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('.')
		}
	}
	return sb.String()
}

// ckpt is the Checkpoint every reader returns: a config, lazily read
// tensors, and the files they read from.
type ckpt struct {
	cfg     Config
	tensors []Tensor
	closers []io.Closer
}

func (c *ckpt) Config() Config { return c.cfg }

// Tensors returns a copy of the tensor list: the builder may reorder it.
func (c *ckpt) Tensors() []Tensor { return slices.Clone(c.tensors) }

func (c *ckpt) Close() error {
	var errs []error
	for _, cl := range c.closers {
		errs = append(errs, cl.Close())
	}
	c.closers = nil
	return errors.Join(errs...)
}

// tensorSource is where a reader finds one HF-named tensor: its shape as
// stored (after mapping to HF layout) and how to read it.
type tensorSource struct {
	shape []int64
	read  func() ([]float32, error)
	// stored, when set, is where read finds the values (read is
	// stored.read).
	stored *storedTensor
}

// storedSource is the source of a tensor stored as it is.
func storedSource(shape []int64, s *storedTensor) tensorSource {
	return tensorSource{shape: shape, read: s.read, stored: s}
}

// assemble checks the sources a reader found against the layout cfg
// requires and returns the tensors in layout order. Every expected tensor
// must be present with its expected shape; a tensor the layout does not
// know is an error too, since dropping weights silently would give a
// different model.
func assemble(cfg Config, srcs map[string]tensorSource, origin func(hf string) string) ([]Tensor, error) {
	specs := hfLayout(cfg)
	want := make(map[string]bool, len(specs))
	out := make([]Tensor, 0, len(specs))
	for _, s := range specs {
		want[s.name] = true
		src, ok := srcs[s.name]
		if !ok {
			return nil, fmt.Errorf("missing tensor %s", origin(s.name))
		}
		if !slices.Equal(src.shape, s.shape) {
			return nil, fmt.Errorf("tensor %s: shape %v, want %v", origin(s.name), src.shape, s.shape)
		}
		out = append(out, Tensor{Name: s.name, Shape: slices.Clone(s.shape), Read: src.read, stored: src.stored})
	}
	var extra []string
	for name := range srcs {
		if !want[name] {
			extra = append(extra, origin(name))
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return nil, fmt.Errorf("unexpected tensor %s (not part of a %s model with this config)", strings.Join(extra, ", "), cfg.HFArchitecture)
	}
	return out, nil
}

func elemCount(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}
