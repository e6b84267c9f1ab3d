package graph_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// TestFixturesRoundTripByteIdentical: every committed fixture — written
// by PyTorch's or onnxruntime's C++ protobuf serializer, not by us —
// comes out of Load→Save byte for byte.
func TestFixturesRoundTripByteIdentical(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("..", "testdata", "models", "*.onnx"))
	if len(paths) == 0 {
		t.Fatal("no fixtures in testdata/models")
	}
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			m, err := graph.Load(p)
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "m.onnx")
			if err := graph.Save(m, out, graph.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(p)
			b, _ := os.ReadFile(out)
			if !bytes.Equal(a, b) {
				t.Fatalf("Load→Save changed the file (%d → %d bytes)", len(a), len(b))
			}
		})
	}
}

// TestExternalDataCopiesRun saves every fixture with its weights in an
// external data file and runs the copy through onnxruntime against the
// reference outputs PyTorch computed for the original.
func TestExternalDataCopiesRun(t *testing.T) {
	testenv.ORTLibrary(t)
	refs, err := reffile.Glob(filepath.Join("..", "testdata", "models"))
	if err != nil || len(refs) == 0 {
		t.Fatalf("no reference files: %v", err)
	}
	for _, rp := range refs {
		ref, err := reffile.Load(rp)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(ref.Model, func(t *testing.T) {
			m, err := graph.Load(ref.ModelPath())
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			out := filepath.Join(dir, "copy.onnx")
			if err := graph.Save(m, out, graph.SaveOptions{Placement: graph.PlaceExternal}); err != nil {
				t.Fatal(err)
			}
			if fi, err := os.Stat(out + ".data"); err != nil || fi.Size() == 0 {
				t.Fatalf("no external data written: %v", err)
			}
			cp, err := graph.Load(out)
			if err != nil {
				t.Fatal(err)
			}
			var inline int
			cp.WalkTensors(func(tp *onnxpb.TensorProto) bool {
				if !graph.IsExternal(tp) && len(tp.RawData) >= 1024 {
					inline++
				}
				return true
			})
			if inline > 0 {
				t.Fatalf("%d tensors of 1 KiB or more are still inline", inline)
			}
			sess, err := ort.NewSession(out, ort.Options{Threads: 1})
			if err != nil {
				t.Fatal(err)
			}
			defer sess.Close()
			for _, c := range ref.Cases {
				in, err := c.RuntimeInputs()
				if err != nil {
					t.Fatal(err)
				}
				got, err := sess.Run(in, c.OutputNames())
				if err != nil {
					t.Fatal(err)
				}
				for name, want := range c.Outputs {
					d, err := reffile.Compare(got[name], want, ref.Atol)
					if err != nil {
						t.Errorf("%s/%s: %v", c.Name, name, err)
					} else if strings.Contains(name, "logits") {
						t.Logf("%s/%s: max abs diff %.2g", c.Name, name, d)
					}
				}
			}
		})
	}
}
