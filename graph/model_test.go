package graph_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
)

// linear builds y = x·w + b with weights big enough to go external.
func linear(n int) *graph.Model {
	w := make([]float32, n*n)
	for i := range w {
		w[i] = float32(i%97) / 97
	}
	b := make([]float32, n)
	for i := range b {
		b[i] = float32(i)
	}
	return irtest.New("linear").
		Input("x", 1, int64(n)).
		Init("w", w, int64(n), int64(n)).
		Init("b", b, int64(n)).
		Node("MatMul", "mm", []string{"x", "w"}, []string{"xw"}).
		Node("Add", "add", []string{"xw", "b"}, []string{"y"}).
		Output("y", 1, int64(n)).
		Model()
}

func TestSaveLoadRoundTrip(t *testing.T) {
	dir := t.TempDir()
	m := linear(64)
	inline := filepath.Join(dir, "inline.onnx")
	if err := graph.Save(m, inline, graph.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(inline); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("saved model mode %v (%v), want 0644", fi.Mode(), err)
	}
	want, _ := proto.Marshal(m.Proto)
	got, _ := os.ReadFile(inline)
	if !bytes.Equal(got, want) {
		t.Fatalf("inline save differs from the protobuf encoding (%d vs %d bytes)", len(got), len(want))
	}

	// External: the 16 KiB weight goes out, the 256-byte bias stays in.
	ext := filepath.Join(dir, "ext.onnx")
	if err := graph.Save(m, ext, graph.SaveOptions{Placement: graph.PlaceExternal}); err != nil {
		t.Fatal(err)
	}
	if m.Initializer("w").GetDataLocation() == onnxpb.TensorProto_EXTERNAL {
		t.Fatal("Save changed the model it saved")
	}
	me, err := graph.Load(ext)
	if err != nil {
		t.Fatal(err)
	}
	if !graph.IsExternal(me.Initializer("w")) || graph.IsExternal(me.Initializer("b")) {
		t.Fatalf("placement: w external=%v b external=%v, want true false",
			graph.IsExternal(me.Initializer("w")), graph.IsExternal(me.Initializer("b")))
	}
	for _, name := range []string{"w", "b"} {
		a, err := me.TensorBytes(me.Initializer(name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, m.Initializer(name).RawData) {
			t.Errorf("%s: bytes differ after external round trip", name)
		}
	}

	// Loading and saving an external model again, under the same data
	// file name, reproduces both files byte for byte.
	dir2 := t.TempDir()
	ext2 := filepath.Join(dir2, "ext.onnx")
	if err := graph.Save(me, ext2, graph.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"ext.onnx", "ext.onnx.data"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		if !bytes.Equal(a, b) || len(a) == 0 {
			t.Errorf("%s: not byte-identical after Load→Save (%d vs %d bytes)", f, len(a), len(b))
		}
	}

	// And back inline: the external tensor is read back into raw_data.
	back := filepath.Join(dir2, "back.onnx")
	if err := graph.Save(me, back, graph.SaveOptions{Placement: graph.PlaceInline}); err != nil {
		t.Fatal(err)
	}
	got, _ = os.ReadFile(back)
	if !bytes.Equal(got, want) {
		t.Fatal("external→inline does not reproduce the original inline model")
	}
}

func TestSaveRefusesToOverwriteInput(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.onnx")
	if err := graph.Save(linear(64), p, graph.SaveOptions{Placement: graph.PlaceExternal}); err != nil {
		t.Fatal(err)
	}
	m, err := graph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p + ".data")
	for _, c := range []struct{ path, loc string }{
		{p, ""}, // the model itself
		{filepath.Join(dir, "o.onnx"), "m.onnx.data"}, // its data file
	} {
		err := graph.Save(m, c.path, graph.SaveOptions{Location: c.loc})
		if err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
			t.Errorf("Save(%s, location %q) = %v, want a refusal", c.path, c.loc, err)
		}
	}
	after, _ := os.ReadFile(p + ".data")
	if !bytes.Equal(before, after) {
		t.Fatal("input data file changed")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
		t.Fatalf("temporary files left behind: %v", left)
	}
}

// TestLoadBadInput checks that each kind of broken file gives a one-line
// error naming the file and the problem.
func TestLoadBadInput(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.onnx")
	if err := graph.Save(linear(64), good, graph.SaveOptions{Placement: graph.PlaceExternal}); err != nil {
		t.Fatal(err)
	}
	modelBytes, _ := os.ReadFile(good)
	dataBytes, _ := os.ReadFile(good + ".data")
	inline, _ := proto.Marshal(linear(64).Proto)

	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name  string
		setup func() string
		want  string
	}{
		{"empty", func() string { return write("empty.onnx", nil) }, "empty file"},
		{"truncated", func() string { return write("trunc.onnx", inline[:len(inline)/2]) }, "truncated or corrupt"},
		{"text", func() string { return write("text.onnx", []byte("name,value\nhello,1\n")) }, "not an ONNX model"},
		{"missing file", func() string { return filepath.Join(dir, "nope.onnx") }, "no such file"},
		{"missing external data", func() string {
			sub := filepath.Join(dir, "noext")
			os.Mkdir(sub, 0o755)
			p := filepath.Join(sub, "good.onnx")
			os.WriteFile(p, modelBytes, 0o644)
			return p
		}, `external data file "good.onnx.data" not found`},
		{"external range past end", func() string {
			sub := filepath.Join(dir, "short")
			os.Mkdir(sub, 0o755)
			p := filepath.Join(sub, "good.onnx")
			os.WriteFile(p, modelBytes, 0o644)
			os.WriteFile(p+".data", dataBytes[:len(dataBytes)-10], 0o644)
			return p
		}, "past end"},
		{"external location escapes", func() string {
			m := linear(64)
			w := m.Initializer("w")
			w.RawData = nil
			w.DataLocation = onnxpb.TensorProto_EXTERNAL.Enum()
			w.ExternalData = []*onnxpb.StringStringEntryProto{{Key: proto.String("location"), Value: proto.String("../../etc/passwd")}}
			b, _ := proto.Marshal(m.Proto)
			return write("escape.onnx", b)
		}, "outside the model's directory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.setup()
			_, err := graph.Load(p)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, p) || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming %s and containing %q", msg, p, c.want)
			}
		})
	}
}

func TestWalkTensorsFindsSubgraphAndAttributeTensors(t *testing.T) {
	then := irtest.New("then").Init("tw", []float32{1}, 1).
		Node("Identity", "ti", []string{"tw"}, []string{"to"}).Output("to", 1).Graph()
	els := irtest.New("else").
		Node("Constant", "ec", nil, []string{"eo"}, &onnxpb.AttributeProto{
			Name: proto.String("value"), Type: onnxpb.AttributeProto_TENSOR.Enum(),
			T: irtest.Float32Tensor("", []float32{2}, 1),
		}).Output("eo", 1).Graph()
	m := irtest.New("main").Init("top", []float32{0}, 1).
		Node("If", "if", []string{"cond"}, []string{"y"}, irtest.GraphAttr("then_branch", then), irtest.GraphAttr("else_branch", els)).
		Output("y", 1).Model()
	var n int
	m.WalkTensors(func(*onnxpb.TensorProto) bool { n++; return true })
	if n != 3 {
		t.Fatalf("WalkTensors visited %d tensors, want 3 (top, then-branch initializer, Constant value)", n)
	}
}
