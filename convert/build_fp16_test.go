package convert_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// fp16Atol is the tolerance of float16 weights against torch's float32
// outputs. Rounding a weight to float16 changes it by up to 2^-11
// relative; through 5 layers the stories260K logits (magnitude up to ~20)
// move by ~1e-2 (seen: see the test log), presents by less.
const fp16Atol = 0.05

// TestBuildFloat16 builds the stories260K fixture with float16 weights:
// the weights must be stored as float16, the outputs stay float32, and
// they agree with torch's float32 outputs within fp16Atol.
func TestBuildFloat16(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, tc := range []struct {
		name string
		ck   func(testing.TB) *fixtureCheckpoint
		ref  string
	}{
		{"stories260k", storiesCheckpoint, "stories260k_kv.ref.json"},
		{"gpt2", gpt2Checkpoint, "gpt2_kv.ref.json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "model.onnx")
			if err := convert.Build(tc.ck(t), path, convert.BuildOptions{DType: convert.Float16}); err != nil {
				t.Fatal(err)
			}
			m, err := graph.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, init := range m.Proto.GetGraph().GetInitializer() {
				if dt := init.GetDataType(); dt != int32(onnxpb.TensorProto_FLOAT16) {
					t.Errorf("initializer %s is %s, want float16", init.GetName(), graph.DTypeName(dt))
				}
			}
			for _, out := range m.Proto.GetGraph().GetOutput() {
				if dt := out.GetType().GetTensorType().GetElemType(); dt != int32(onnxpb.TensorProto_FLOAT) {
					t.Errorf("output %s is %s, want float32", out.GetName(), graph.DTypeName(dt))
				}
			}
			ref, err := reffile.Load(testenv.Testdata(t, "models", tc.ref))
			if err != nil {
				t.Fatal(err)
			}
			worst := compareWithRef(t, path, ref, fp16Atol)
			t.Logf("float16 weights: max |diff| vs torch float32: %.3g (atol %g)", worst, fp16Atol)
			if worst == 0 || math.IsNaN(worst) {
				t.Errorf("max diff %v: float16 rounding should show", worst)
			}
		})
	}
}

// TestFloat16Conversion checks the builder's float32→float16 rounding
// against the runtime package's, on every float16 value, the midpoints
// between neighbours (ties to even) and values just off them.
func TestFloat16Conversion(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := ort.Float16Bits(h).Float32()
		if math.IsNaN(float64(f)) {
			continue
		}
		xs := []float32{f}
		if next := ort.Float16Bits(h + 1).Float32(); !math.IsNaN(float64(next)) && !math.IsInf(float64(next), 0) && h&0x7fff != 0x7c00 {
			mid := float32((float64(f) + float64(next)) / 2) // exact: float16 midpoints fit float32
			xs = append(xs, mid, math.Nextafter32(mid, next), math.Nextafter32(mid, f))
		}
		for _, x := range xs {
			if got, want := convert.Float32ToHalfForTest(x), uint16(ort.ToFloat16(x)); got != want {
				t.Fatalf("float32ToHalf(%g) = %#04x, runtime.ToFloat16 gives %#04x", x, got, want)
			}
		}
	}
	for _, x := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), 1e6, -1e-9, 65520, 65519.99} {
		if got, want := convert.Float32ToHalfForTest(x), uint16(ort.ToFloat16(x)); got != want {
			t.Errorf("float32ToHalf(%g) = %#04x, want %#04x", x, got, want)
		}
	}
}
