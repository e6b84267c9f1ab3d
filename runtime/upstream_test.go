package runtime_test

import (
	"strings"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"

	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// These tests pin down the onnxruntime_go v1.27.0 defects this package works
// around. If one starts failing after an upgrade, the defect is fixed and
// the matching workaround (see doc.go) may be removed.

// castToHalf is Y = Cast(X, to) with a dynamic length.
func castToHalf(to ort.DType) *ort.ModelBuilder {
	return ort.NewModelBuilder(17).
		Input("x", ort.Float, "n").
		Node("Cast", []string{"x"}, []string{"y"}, ort.AttrInt("to", int64(to))).
		Output("y", to, "n")
}

func TestUpstreamHalfOutputAutoAllocationFails(t *testing.T) {
	testenv.ORTLibrary(t)
	for _, dt := range []ort.DType{ort.Float16, ort.BFloat16} {
		t.Run(dt.String(), func(t *testing.T) {
			model := castToHalf(dt).Bytes(t)
			s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, []string{"x"}, []string{"y"}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Destroy()
			x, err := ortgo.NewTensor(ortgo.NewShape(4), []float32{1, 2, 3, 4})
			if err != nil {
				t.Fatal(err)
			}
			defer x.Destroy()
			out := []ortgo.Value{nil} // nil: let onnxruntime_go allocate
			err = s.Run([]ortgo.Value{x}, out)
			if err == nil {
				out[0].Destroy()
				t.Fatal("auto-allocated FLOAT16/BFLOAT16 output worked: onnxruntime_go is fixed, the Cast workaround can go")
			}
			// It copies FlattenedSize() bytes (4) for 4 two-byte elements.
			if !strings.Contains(err.Error(), "not enough space") {
				t.Fatalf("unexpected error (the defect may have changed): %v", err)
			}
			t.Logf("reproduced: %v", err)
		})
	}
}

func TestUpstreamScalarOutputAutoAllocationFails(t *testing.T) {
	testenv.ORTLibrary(t)
	model := ort.NewModelBuilder(17).
		Input("x", ort.Float, "n").
		Node("ReduceSum", []string{"x"}, []string{"y"}, ort.AttrInt("keepdims", 0)).
		Output("y", ort.Float).
		Bytes(t)
	s, err := ortgo.NewDynamicAdvancedSessionWithONNXData(model, []string{"x"}, []string{"y"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destroy()
	x, err := ortgo.NewTensor(ortgo.NewShape(3), []float32{1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Destroy()
	out := []ortgo.Value{nil}
	err = s.Run([]ortgo.Value{x}, out)
	if err == nil {
		out[0].Destroy()
		t.Fatal("auto-allocated rank-0 output worked: onnxruntime_go is fixed, the Scalar preallocation can go")
	}
	t.Logf("reproduced: %v", err)
}
