package runtime_test

import (
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// A rank-0 output whose shape the model does not declare: onnxruntime_go
// v1.27 fails to wrap it and leaves a typed nil behind. Run must return an
// error saying what to declare, not crash releasing it; declared, it works.
func TestUndeclaredScalarOutput(t *testing.T) {
	testenv.ORTLibrary(t)
	x := mustTensor(t)(ort.NewFloat64([]int64{2, 3}, []float64{1, 2, 3, 4, 5, 6.5}))
	model := func(dims ...any) []byte {
		return ort.NewModelBuilder(17).
			Input("x", ort.Double, 2, 3).
			Output("s", ort.Double, dims...).
			Node("ReduceSum", []string{"x"}, []string{"s"}, ort.AttrInt("keepdims", 0)).Bytes(t)
	}
	s := newSession(t, model(ort.NoShape), ort.Options{})
	_, err := s.Run(map[string]*ort.Tensor{"x": x}, nil)
	if err == nil || !strings.Contains(err.Error(), "output s:") || !strings.Contains(err.Error(), "declare the output's shape as []") {
		t.Fatalf("undeclared scalar: err = %v, want the declare-its-shape error", err)
	}
	got := run1(t, newSession(t, model(), ort.Options{}), map[string]*ort.Tensor{"x": x}, "s")
	if v, err := got.Float64s(); err != nil || len(got.Shape) != 0 || len(v) != 1 || v[0] != 21.5 {
		t.Fatalf("declared scalar: got %v shape %v (%v), want 21.5", v, got.Shape, err)
	}
}
