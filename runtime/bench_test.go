package runtime_test

import (
	"testing"

	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// BenchmarkRunFixture measures Run on the stories260K KV fixture's prefill
// case: mostly onnxruntime's own time plus this package's per-Run overhead
// (wrapping inputs, copying 11 outputs).
func BenchmarkRunFixture(b *testing.B) {
	testenv.ORTLibrary(b)
	ref, err := reffile.Load(testenv.Testdata(b, "models", "stories260k_kv.ref.json"))
	if err != nil {
		b.Skip(err)
	}
	s, err := ort.NewSession(ref.ModelPath(), ort.Options{Threads: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	inputs, err := ref.Cases[0].RuntimeInputs()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Run(inputs, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkToFloat16(b *testing.B) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i)*0.37 - 700
	}
	b.SetBytes(int64(4 * len(x)))
	for b.Loop() {
		for _, f := range x {
			_ = ort.ToFloat16(f)
		}
	}
}
