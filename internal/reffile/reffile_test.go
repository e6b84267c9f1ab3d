package reffile

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/runtime"
)

const sample = `{"model": "m.onnx", "atol": 1e-3,
 "cases": [{"name": "c1",
   "inputs": {
     "ids":  {"dtype": "int64", "shape": [1, 3], "data": [9007199254740993, -1, 0]},
     "past": {"dtype": "float32", "shape": [1, 2, 0, 4], "data": []},
     "mask": {"dtype": "bool", "shape": [2], "data": [true, false]},
     "h":    {"dtype": "float16", "shape": [2, 2], "data": [[1.0, 0.1], [-65520, 1e-8]]}},
   "outputs": {
     "logits": {"dtype": "float32", "shape": [2, 2], "data": [1.5, NaN, -Infinity, 2.5e-1]}}}]}`

func writeSample(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.ref.json")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadAndConvert(t *testing.T) {
	path := writeSample(t, sample)
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Atol != 1e-3 || f.ModelPath() != filepath.Join(filepath.Dir(path), "m.onnx") || len(f.Cases) != 1 {
		t.Fatalf("loaded %+v", f)
	}
	in, err := f.Cases[0].RuntimeInputs()
	if err != nil {
		t.Fatal(err)
	}
	// 2^53+1 is not a float64: integers must not go through float64.
	if ids, _ := in["ids"].Int64s(); !slices.Equal(ids, []int64{9007199254740993, -1, 0}) {
		t.Errorf("ids = %v", ids)
	}
	if in["past"].NumElements() != 0 || !slices.Equal(in["past"].Shape, []int64{1, 2, 0, 4}) {
		t.Errorf("past = %v", in["past"])
	}
	if m, _ := in["mask"].Bools(); !slices.Equal(m, []bool{true, false}) {
		t.Errorf("mask = %v", m)
	}
	h, _ := in["h"].Float16s()
	want := []runtime.Float16Bits{0x3c00, 0x2e66, 0xfc00, 0x0000} // nested lists flattened
	if !slices.Equal(h, want) {
		t.Errorf("float16 bits %#x, want %#x", h, want)
	}
	out := f.Cases[0].Outputs["logits"]
	v, err := out.Float64s()
	if err != nil || v[0] != 1.5 || !math.IsNaN(v[1]) || !math.IsInf(v[2], -1) || v[3] != 0.25 {
		t.Errorf("output values %v, %v", v, err)
	}
	if names := f.Cases[0].OutputNames(); !slices.Equal(names, []string{"logits"}) {
		t.Errorf("OutputNames = %v", names)
	}
}

func TestCompare(t *testing.T) {
	want := Tensor{DType: "float32", Shape: []int64{2, 2}, Data: Data("[1.5, NaN, -Infinity, 0.25]")}
	cases := []struct {
		name string
		got  []float32
		ok   bool
	}{
		{"exact", []float32{1.5, float32(math.NaN()), float32(math.Inf(-1)), 0.25}, true},
		{"within atol", []float32{1.5009, float32(math.NaN()), float32(math.Inf(-1)), 0.2491}, true},
		{"beyond atol", []float32{1.502, float32(math.NaN()), float32(math.Inf(-1)), 0.25}, false},
		{"NaN vs number", []float32{1.5, 0, float32(math.Inf(-1)), 0.25}, false},
		{"inf vs finite", []float32{1.5, float32(math.NaN()), -1e30, 0.25}, false},
	}
	for _, c := range cases {
		got, err := runtime.NewFloat32([]int64{2, 2}, c.got)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Compare(got, want, 1e-3)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
	got, _ := runtime.NewFloat32([]int64{4}, []float32{1.5, 0, 0, 0.25})
	if _, err := Compare(got, want, 1); err == nil || !strings.Contains(err.Error(), "shape") {
		t.Errorf("shape mismatch: %v", err)
	}
	ints, _ := runtime.NewInt64([]int64{2}, []int64{3, 4})
	if _, err := Compare(ints, Tensor{DType: "int64", Shape: []int64{2}, Data: Data("[3, 5]")}, 0); err == nil {
		t.Error("integer mismatch accepted")
	}
}

func TestLoadRejectsBadFiles(t *testing.T) {
	cases := map[string]string{
		"not json":     "{",
		"no model":     `{"atol": 1, "cases": [{"name": "a", "outputs": {"y": {"dtype": "float32", "shape": [1], "data": [1]}}}]}`,
		"no cases":     `{"model": "m.onnx", "atol": 1, "cases": []}`,
		"no outputs":   `{"model": "m.onnx", "atol": 1, "cases": [{"name": "a", "outputs": {}}]}`,
		"negative tol": `{"model": "m.onnx", "atol": -1, "cases": [{"name": "a", "outputs": {"y": {"dtype": "float32", "shape": [1], "data": [1]}}}]}`,
	}
	for name, text := range cases {
		if _, err := Load(writeSample(t, text)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad := []Tensor{
		{DType: "float32", Shape: []int64{3}, Data: Data("[1, 2]")},
		{DType: "int64", Shape: []int64{1}, Data: Data("[1.5]")},
		{DType: "bool", Shape: []int64{1}, Data: Data("[2]")},
		{DType: "complex64", Shape: []int64{1}, Data: Data("[1]")},
		{DType: "int32", Shape: []int64{1}, Data: Data("[4294967296]")},
	}
	for i, tt := range bad {
		if _, err := tt.Runtime(); err == nil {
			t.Errorf("bad tensor %d accepted", i)
		}
	}
}

func TestQuoteNonFiniteLeavesStringsAlone(t *testing.T) {
	in := `{"name": "NaN \"Infinity\"", "data": [NaN, -Infinity]}`
	want := `{"name": "NaN \"Infinity\"", "data": ["NaN", "-Infinity"]}`
	if got := string(quoteNonFinite([]byte(in))); got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}
