package convert_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
)

// TestInlineStreamIsCanonical checks the hand-framed protobuf that Build
// streams: it must parse, and re-marshalling the parsed model must give
// the same bytes (fields in proto.Marshal's order), so that the model
// round-trips through graph.Load and graph.Save unchanged.
func TestInlineStreamIsCanonical(t *testing.T) {
	for _, dt := range []convert.DType{convert.Float32, convert.Float16} {
		t.Run(string(dt), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "model.onnx")
			if err := convert.Build(tinyLlama(), path, convert.BuildOptions{DType: dt}); err != nil {
				t.Fatal(err)
			}
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			m, err := graph.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			again, err := proto.MarshalOptions{}.Marshal(m.Proto)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(file, again) {
				t.Fatalf("streamed model (%d bytes) differs from its re-marshalled form (%d bytes)", len(file), len(again))
			}
			saved := filepath.Join(dir, "saved.onnx")
			if err := graph.Save(m, saved, graph.SaveOptions{}); err != nil {
				t.Fatal(err)
			}
			if b, _ := os.ReadFile(saved); !bytes.Equal(b, file) {
				t.Errorf("graph.Save changes the streamed model")
			}
		})
	}
}

// TestExternalAndInlineAgree builds the same checkpoint both ways: the
// initializers must hold the same bytes.
func TestExternalAndInlineAgree(t *testing.T) {
	dir := t.TempDir()
	in, ex := filepath.Join(dir, "in", "model.onnx"), filepath.Join(dir, "ex", "model.onnx")
	os.Mkdir(filepath.Dir(in), 0o755)
	os.Mkdir(filepath.Dir(ex), 0o755)
	if err := convert.Build(tinyLlama(), in, convert.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := convert.Build(tinyLlama(), ex, convert.BuildOptions{ExternalAbove: 1}); err != nil {
		t.Fatal(err)
	}
	mi, err := graph.Load(in)
	if err != nil {
		t.Fatal(err)
	}
	me, err := graph.Load(ex)
	if err != nil {
		t.Fatal(err)
	}
	ie, ii := me.Proto.GetGraph().GetInitializer(), mi.Proto.GetGraph().GetInitializer()
	if len(ie) != len(ii) {
		t.Fatalf("%d initializers external, %d inline", len(ie), len(ii))
	}
	external := 0
	for i := range ii {
		a, err := mi.TensorBytes(ii[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := me.TensorBytes(ie[i])
		if err != nil {
			t.Fatal(err)
		}
		if ii[i].GetName() != ie[i].GetName() || !bytes.Equal(a, b) {
			t.Errorf("initializer %d: %s differs from %s", i, ii[i].GetName(), ie[i].GetName())
		}
		if graph.IsExternal(ie[i]) {
			external++
		} else if len(b) >= 1024 {
			t.Errorf("%s (%d bytes) kept inline", ie[i].GetName(), len(b))
		}
	}
	if external == 0 {
		t.Error("no tensor went to the external data file")
	}
}
