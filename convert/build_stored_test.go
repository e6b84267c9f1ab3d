package convert

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
)

// TestWriteTransposedMatchesNaive checks the banded, pipelined transpose
// against the definition for shapes around the kernel's 8-row groups and
// 128-row blocks, and for chunks of one band, of several, and of output
// rows too long for 8 to fit the staging size.
func TestWriteTransposedMatchesNaive(t *testing.T) {
	for _, dt := range []DType{Float32, Float16} {
		for _, sh := range [][2]int{{1, 1}, {1, 9}, {3, 5}, {8, 8}, {9, 17}, {129, 31}, {300, 1000}, {5, 300000}, {300000, 9}} {
			rows, cols := sh[0], sh[1]
			t.Run(fmt.Sprintf("%s_%dx%d", dt, rows, cols), func(t *testing.T) {
				src := make([]float32, rows*cols)
				for i := range src {
					src[i] = float32(i%1000) - 0.5
				}
				want := make([]float32, rows*cols)
				for i := range cols {
					for j := range rows {
						want[i*rows+j] = src[j*cols+i]
					}
				}
				e := newTensorEncoder(dt)
				var got, ref bytes.Buffer
				spec := weightSpec{shape: []int64{int64(rows), int64(cols)}, layout: layoutTranspose}
				if err := e.write(&got, src, spec); err != nil {
					t.Fatal(err)
				}
				if err := newTensorEncoder(dt).writeRows(&ref, want); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got.Bytes(), ref.Bytes()) {
					t.Errorf("transposed bytes differ from the naive transpose")
				}
			})
		}
	}
}

// failingWriter fails once more than n bytes were written.
type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n -= len(p); w.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

// TestPipelineWriteError checks that a failing write stops a pipelined
// tensor with that error and leaves no writer goroutine behind.
func TestPipelineWriteError(t *testing.T) {
	src := make([]float32, 2048*2048)
	spec := weightSpec{shape: []int64{2048, 2048}, layout: layoutTranspose}
	before := runtime.NumGoroutine()
	for _, dt := range []DType{Float32, Float16} {
		err := newTensorEncoder(dt).write(&failingWriter{n: 5 << 20}, src, spec)
		if err == nil || err.Error() != "disk full" {
			t.Errorf("%s: error %v, want disk full", dt, err)
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("%d goroutines before, %d after", before, after)
	}
}

// TestStoredOf checks when Build may bypass Read: for tensors as a reader
// made them, renamed or not, but not once Read was replaced.
func TestStoredOf(t *testing.T) {
	ck := hfCase(goldenLlama, "F32")(t, t.TempDir())
	defer ck.Close()
	ts := ck.Tensors()
	if storedOf(ts[0]) == nil || storedOf(ts[1]) == nil {
		t.Fatal("float32 safetensors tensors are not read in place")
	}
	renamed := ts[0]
	renamed.Name = "x"
	if storedOf(renamed) != ts[0].stored {
		t.Error("a renamed copy of a tensor lost where its values are")
	}
	replaced := ts[0]
	replaced.Read = func() ([]float32, error) { return nil, nil }
	swapped := ts[0]
	swapped.Read = ts[1].Read
	if storedOf(replaced) != nil || storedOf(swapped) != nil {
		t.Error("Build would bypass a replaced Read")
	}
}

// TestBuildHonoursReplacedRead replaces Read on a tensor of an opened
// checkpoint: Build must call it rather than read the file.
func TestBuildHonoursReplacedRead(t *testing.T) {
	ck := hfCase(goldenWide, "F32")(t, t.TempDir())
	defer ck.Close()
	for _, name := range []string{"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"} {
		ts := ck.Tensors()
		for i := range ts {
			if ts[i].Name == name {
				ts[i].Read = func() ([]float32, error) { return nil, errors.New("replaced") }
			}
		}
		err := Build(withTensors{ck, ts}, filepath.Join(t.TempDir(), "model.onnx"), BuildOptions{ExternalAbove: 1})
		if err == nil || !strings.Contains(err.Error(), "replaced") {
			t.Errorf("%s: Build error %v, want the replaced Read's", name, err)
		}
	}
}

type withTensors struct {
	Checkpoint
	ts []Tensor
}

func (w withTensors) Tensors() []Tensor { return slices.Clone(w.ts) }

// TestBuildFromTruncatedFile shrinks the checkpoint after Open: whichever
// way Build reaches the tensors past the new end — copied in the kernel,
// mapped and transposed, mapped and encoded, read and decoded — it must
// report a truncated file naming the tensor and leave nothing behind.
func TestBuildFromTruncatedFile(t *testing.T) {
	ext := func(dt DType) BuildOptions { return BuildOptions{DType: dt, ExternalAbove: 1} }
	for _, c := range []struct {
		name   string
		dtype  string
		keep   float64 // the share of the file kept
		opts   BuildOptions
		tensor string
	}{
		{"copied", "F32", 0.05, ext(Float32), "model.embed_tokens.weight"},
		{"mapped and transposed", "F32", 0.6, ext(Float32), "mlp."},
		{"mapped and encoded", "F32", 0.6, ext(Float16), "mlp."},
		{"read and decoded", "BF16", 0.6, ext(Float32), "mlp."},
		{"inline", "F32", 0.6, BuildOptions{}, "mlp."},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := t.TempDir()
			ck := hfCase(goldenWide, c.dtype)(t, src)
			defer ck.Close()
			st := filepath.Join(src, "model.safetensors")
			fi, err := os.Stat(st)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(st, int64(float64(fi.Size())*c.keep)); err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			err = Build(ck, filepath.Join(out, "model.onnx"), c.opts)
			if err == nil || !strings.Contains(err.Error(), "truncated file") || !strings.Contains(err.Error(), c.tensor) {
				t.Fatalf("Build error %v, want a truncated file at %s", err, c.tensor)
			}
			if left, _ := os.ReadDir(out); len(left) > 0 {
				t.Errorf("files left behind: %v", left)
			}
			t.Log(err)
		})
	}
}

// TestMappedTensorTruncatedUnderneath truncates a file while its tensor
// is mapped: reading the mapping faults, which must become an error, not
// a crash, also from within the writing pipeline.
func TestMappedTensorTruncatedUnderneath(t *testing.T) {
	const rows, cols = 1024, 1024
	path := filepath.Join(t.TempDir(), "f")
	vals := make([]float32, rows*cols)
	for i := range vals {
		vals[i] = float32(i)
	}
	if err := os.WriteFile(path, float32Bytes(vals), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := newStoredTensor(&sourceFile{ReaderAt: f}, 0, rows*cols, dtF32, path, "w")
	mapped, unmap, ok := st.mapFloats()
	if !ok {
		t.Skip("no memory mapping on this system")
	}
	defer unmap()
	if !slices.Equal(mapped, vals) {
		t.Fatal("mapped values differ from the file")
	}
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	spec := weightSpec{shape: []int64{rows, cols}, layout: layoutTranspose}
	var sink bytes.Buffer
	err = catchFault(func() error { return newTensorEncoder(Float32).write(&sink, mapped, spec) })
	if err != errTruncatedRead {
		t.Errorf("transposing a truncated mapping: error %v, want %v", err, errTruncatedRead)
	}
	var sum float32
	err = catchFault(func() error {
		for _, v := range mapped {
			sum += v
		}
		return nil
	})
	if err != errTruncatedRead {
		t.Errorf("reading a truncated mapping: error %v, want %v", err, errTruncatedRead)
	}
}

// TestBuildPathsAgree builds one float32 Hugging Face checkpoint through
// every way Build can take its tensors — copied and mapped from a file,
// copied and read from a file whose data is not 4-byte aligned, read
// from an fs.FS that is not a file system — and through Read alone: the
// built files must be identical. (TestBuildGolden pins the first.)
func TestBuildPathsAgree(t *testing.T) {
	dir := t.TempDir()
	ck := hfCase(goldenWide, "F32")(t, dir)
	ck.Close()
	cj, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	// Two more spaces after the header's JSON shift every tensor by 2
	// bytes.
	n := binary.LittleEndian.Uint64(st)
	unaligned := binary.LittleEndian.AppendUint64(nil, n+2)
	unaligned = append(append(append(unaligned, st[8:8+n]...), "  "...), st[8+n:]...)
	udir := t.TempDir()
	os.WriteFile(filepath.Join(udir, "config.json"), cj, 0o644)
	os.WriteFile(filepath.Join(udir, "model.safetensors"), unaligned, 0o644)
	mem := fstest.MapFS{"config.json": {Data: cj}, "model.safetensors": {Data: st}}

	for _, dt := range []DType{Float32, Float16} {
		opts := BuildOptions{DType: dt, ExternalAbove: 1}
		var want map[string]string
		for _, src := range []struct {
			name string
			open func() (Checkpoint, error)
		}{
			{"file", func() (Checkpoint, error) { return OpenHFDir(dir) }},
			{"unaligned file", func() (Checkpoint, error) { return OpenHFDir(udir) }},
			{"fs.FS", func() (Checkpoint, error) { return OpenHF(mem, "mem") }},
			{"Read only", func() (Checkpoint, error) {
				ck, err := OpenHFDir(dir)
				if err != nil {
					return nil, err
				}
				ts := ck.Tensors()
				for i := range ts {
					ts[i].stored = nil
				}
				return withTensors{ck, ts}, nil
			}},
		} {
			ck, err := src.open()
			if err != nil {
				t.Fatal(err)
			}
			out := t.TempDir()
			err = Build(ck, filepath.Join(out, "model.onnx"), opts)
			ck.Close()
			if err != nil {
				t.Fatalf("%s, %s: %v", dt, src.name, err)
			}
			got := hashDir(t, out)
			if want == nil {
				want = got
			} else if !maps.Equal(got, want) {
				t.Errorf("%s: built from %s, the files differ from the first build", dt, src.name)
			}
		}
	}
}
