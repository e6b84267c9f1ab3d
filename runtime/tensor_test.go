package runtime_test

import (
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func TestDTypeMatchesONNX(t *testing.T) {
	cases := []struct {
		d    ort.DType
		onnx onnxpb.TensorProto_DataType
		size int
	}{
		{ort.Float, onnxpb.TensorProto_FLOAT, 4},
		{ort.Double, onnxpb.TensorProto_DOUBLE, 8},
		{ort.Float16, onnxpb.TensorProto_FLOAT16, 2},
		{ort.BFloat16, onnxpb.TensorProto_BFLOAT16, 2},
		{ort.Int64, onnxpb.TensorProto_INT64, 8},
		{ort.Int32, onnxpb.TensorProto_INT32, 4},
		{ort.Bool, onnxpb.TensorProto_BOOL, 1},
		{ort.Uint8, onnxpb.TensorProto_UINT8, 1},
		{ort.String, onnxpb.TensorProto_STRING, 0},
	}
	for _, c := range cases {
		if int32(c.d) != int32(c.onnx) || c.d.String() != c.onnx.String() || c.d.Size() != c.size {
			t.Errorf("%v: value %d name %s size %d; want %d %s %d", c.d, int32(c.d), c.d, c.d.Size(), int32(c.onnx), c.onnx, c.size)
		}
	}
}

func TestParseDType(t *testing.T) {
	cases := map[string]ort.DType{
		"float32": ort.Float, "FLOAT": ort.Float, "torch.float16": ort.Float16, "float16": ort.Float16,
		"bfloat16": ort.BFloat16, "BFLOAT16": ort.BFloat16, "int64": ort.Int64, "bool": ort.Bool,
		"float64": ort.Double, "int32": ort.Int32,
	}
	for s, want := range cases {
		if got, err := ort.ParseDType(s); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, s := range []string{"", "UNDEFINED", "float128"} {
		if _, err := ort.ParseDType(s); err == nil {
			t.Errorf("ParseDType(%q) succeeded", s)
		}
	}
}

func TestTensorConstructorsShareMemory(t *testing.T) {
	v := []float32{1, 2, 3, 4, 5, 6}
	x, err := ort.NewFloat32([]int64{2, 3}, v)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := x.Float32s()
	v[0] = 42
	if got[0] != 42 || x.NumElements() != 6 || x.String() != "FLOAT[2 3]" {
		t.Fatalf("tensor does not share the slice or reports wrong metadata: %v %v", got, x)
	}
	c := x.Clone()
	v[1] = 7
	if cv, _ := c.Float32s(); cv[1] != 2 {
		t.Fatal("Clone shares memory")
	}
}

func TestTensorAccessors(t *testing.T) {
	h, err := ort.NewFloat16From([]int64{3}, []float32{1, 0.1, -65520})
	if err != nil {
		t.Fatal(err)
	}
	bits, _ := h.Float16s()
	if !slices.Equal(bits, []ort.Float16Bits{0x3c00, 0x2e66, 0xfc00}) {
		t.Errorf("float16 bits %#x", bits)
	}
	f, err := h.Float32s()
	if err != nil || f[0] != 1 || f[1] != ort.Float16Bits(0x2e66).Float32() || !math.IsInf(float64(f[2]), -1) {
		t.Errorf("Float32s of FLOAT16 = %v, %v", f, err)
	}
	b, _ := ort.NewBFloat16From([]int64{2}, []float32{1, 0.1})
	if f, _ := b.Float64s(); f[0] != 1 || f[1] != float64(ort.BFloat16Bits(0x3dcd).Float32()) {
		t.Errorf("Float64s of BFLOAT16 = %v", f)
	}
	i32, _ := ort.NewInt32([]int64{2}, []int32{-1, 7})
	if v, err := i32.Int64s(); err != nil || !slices.Equal(v, []int64{-1, 7}) {
		t.Errorf("Int64s of INT32 = %v, %v", v, err)
	}
	bo, _ := ort.NewBool([]int64{2}, []bool{true, false})
	if v, err := bo.Bools(); err != nil || !slices.Equal(v, []bool{true, false}) {
		t.Errorf("Bools = %v, %v", v, err)
	}
	d, _ := ort.NewFloat64(nil, []float64{2.5}) // scalar
	if d.NumElements() != 1 || len(d.Shape) != 0 {
		t.Errorf("scalar: %v", d)
	}
	if f, _ := d.Float32s(); f[0] != 2.5 {
		t.Errorf("Float32s of DOUBLE = %v", f)
	}

	// Wrong-type accessors are errors, not panics or garbage.
	wrong := []func() error{
		func() error { _, err := i32.Float32s(); return err },
		func() error { _, err := h.Int64s(); return err },
		func() error { _, err := h.Bools(); return err },
		func() error { _, err := b.Float16s(); return err },
		func() error { _, err := h.BFloat16s(); return err },
		func() error { _, err := bo.Int32s(); return err },
	}
	for i, f := range wrong {
		if err := f(); err == nil || !strings.Contains(err.Error(), "called on a") {
			t.Errorf("case %d: got %v", i, err)
		}
	}
}

func TestTensorConstructorErrors(t *testing.T) {
	if _, err := ort.NewFloat32([]int64{2, 2}, []float32{1, 2, 3}); err == nil {
		t.Error("length mismatch accepted")
	}
	if _, err := ort.NewInt64([]int64{-1}, nil); err == nil {
		t.Error("negative dimension accepted")
	}
	if _, err := ort.NewTensor(ort.String, []int64{1}, []byte{0}); err == nil {
		t.Error("STRING accepted")
	}
	if _, err := ort.NewTensor(ort.Float, []int64{2}, make([]byte, 7)); err == nil {
		t.Error("short raw data accepted")
	}
	if _, err := ort.Zeros(ort.Float, []int64{1 << 40, 1 << 40}); err == nil {
		t.Error("overflowing shape accepted")
	}
	e, err := ort.NewFloat32([]int64{1, 4, 0, 8}, nil)
	if err != nil || e.NumElements() != 0 {
		t.Errorf("empty tensor: %v, %v", e, err)
	}
}

func TestNewTensorRealignsRawBytes(t *testing.T) {
	buf := make([]byte, 17)
	want := []float32{1.5, -2, 3.25, 1e-3}
	for i, f := range want {
		u := math.Float32bits(f)
		for k := 0; k < 4; k++ {
			buf[1+4*i+k] = byte(u >> (8 * k))
		}
	}
	x, err := ort.NewTensor(ort.Float, []int64{4}, buf[1:]) // misaligned on purpose
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := x.Float32s(); !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestMaxAbsDiff(t *testing.T) {
	a, _ := ort.NewFloat32([]int64{3}, []float32{1, 2, float32(math.Inf(1))})
	b, _ := ort.NewFloat64([]int64{3}, []float64{1.5, 2, math.Inf(1)})
	if d, err := ort.MaxAbsDiff(a, b); err != nil || d != 0.5 {
		t.Errorf("MaxAbsDiff = %v, %v", d, err)
	}
	c, _ := ort.NewFloat32([]int64{3}, []float32{1, float32(math.NaN()), 0})
	if d, _ := ort.MaxAbsDiff(a, c); !math.IsNaN(d) {
		t.Errorf("NaN not reported: %v", d)
	}
	r, _ := ort.NewFloat32([]int64{1, 3}, []float32{1, 2, 3})
	if _, err := ort.MaxAbsDiff(a, r); err == nil {
		t.Error("shape mismatch accepted")
	}
}
