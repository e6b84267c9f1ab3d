package runtime_test

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	ortgo "github.com/yalue/onnxruntime_go"
	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func mustTensor(t testing.TB) func(*ort.Tensor, error) *ort.Tensor {
	return func(x *ort.Tensor, err error) *ort.Tensor {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
}

func newSession(t testing.TB, model []byte, opts ort.Options) *ort.Session {
	t.Helper()
	s, err := ort.NewSessionFromBytes(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func run1(t testing.TB, s *ort.Session, inputs map[string]*ort.Tensor, output string) *ort.Tensor {
	t.Helper()
	out, err := s.Run(inputs, []string{output})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 1 || out[output] == nil {
		t.Fatalf("Run returned %v, want just %s", out, output)
	}
	return out[output]
}

// linearModel is y = x·W + b with x: [batch, 3], W: [3, 4], b: [4].
var (
	linW = []float32{0.5, -1, 2, 0, 1.5, 0.25, -0.75, 3, -2, 1, 0.125, -0.5}
	linB = []float32{0.1, -0.2, 0.3, -0.4}
)

func linearModel() *ort.ModelBuilder {
	return ort.NewModelBuilder(17).
		Input("x", ort.Float, "batch", 3).
		FloatInit("W", []int64{3, 4}, linW).
		FloatInit("b", []int64{4}, linB).
		Node("MatMul", []string{"x", "W"}, []string{"xw"}).
		Node("Add", []string{"xw", "b"}, []string{"y"}).
		Output("y", ort.Float, "batch", 4)
}

func linearRef(x []float32, batch int) []float32 {
	y := make([]float32, batch*4)
	for r := 0; r < batch; r++ {
		for c := 0; c < 4; c++ {
			acc := float64(linB[c])
			for k := 0; k < 3; k++ {
				acc += float64(x[r*3+k]) * float64(linW[k*4+c])
			}
			y[r*4+c] = float32(acc)
		}
	}
	return y
}

func TestMatMulAdd(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptBasic, ort.OptDefault, ort.OptAll} {
		t.Run(level.String(), func(t *testing.T) {
			s := newSession(t, linearModel().Bytes(t), ort.Options{OptLevel: level, Threads: 1})
			for _, batch := range []int{1, 5} {
				x := make([]float32, batch*3)
				for i := range x {
					x[i] = float32(i)*0.37 - 1
				}
				y := run1(t, s, map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{int64(batch), 3}, x))}, "y")
				want := must(ort.NewFloat32([]int64{int64(batch), 4}, linearRef(x, batch)))
				if d, err := ort.MaxAbsDiff(y, want); err != nil || d > 1e-5 {
					t.Fatalf("batch %d: max diff %v, err %v\n got %v\nwant %v", batch, d, err, y, want)
				}
			}
		})
	}
}

func TestInputsOutputsMatchOnnxruntime(t *testing.T) {
	testenv.ORTLibrary(t)
	models := map[string][]byte{
		"linear": linearModel().Bytes(t),
		"cast16": castToHalf(ort.Float16).Bytes(t),
		"gather": gatherModel().Bytes(t),
		"kv":     kvModel(ort.Float).Bytes(t),
		// An input with an initializer is optional: not one Run needs.
		"overridable": ort.NewModelBuilder(17).Input("x", ort.Float, 2).Input("w", ort.Float, 2).
			FloatInit("w", []int64{2}, []float32{1, 2}).
			Node("Mul", []string{"x", "w"}, []string{"y"}).Output("y", ort.Float, 2).Bytes(t),
	}
	fixtures, _ := filepath.Glob(testenv.Testdata(t, "models", "*.onnx"))
	for _, path := range fixtures {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		models[filepath.Base(path)] = data
	}
	for name, model := range models {
		t.Run(name, func(t *testing.T) {
			s := newSession(t, model, ort.Options{})
			ins, outs, err := ortgo.GetInputOutputInfoWithONNXData(model)
			if err != nil {
				t.Fatal(err)
			}
			compare := func(kind string, ours []ort.IOInfo, theirs []ortgo.InputOutputInfo) {
				if len(ours) != len(theirs) {
					t.Fatalf("%s: %v vs %v", kind, ours, theirs)
				}
				for i := range ours {
					if ours[i].Name != theirs[i].Name || int(ours[i].DType) != int(theirs[i].DataType) ||
						!slices.Equal(ours[i].Shape, []int64(theirs[i].Dimensions)) {
						t.Errorf("%s %d: ours %v, onnxruntime %v", kind, i, ours[i], theirs[i].String())
					}
				}
			}
			compare("input", s.Inputs(), ins)
			compare("output", s.Outputs(), outs)
		})
	}
}

// gatherModel is an embedding lookup: y = table[ids], table [5, 2].
var gatherTable = []float32{0, 1, 10, 11, 20, 21, 30, 31, 40, 41}

func gatherModel() *ort.ModelBuilder {
	return ort.NewModelBuilder(17).
		Input("ids", ort.Int64, "batch", "seq").
		FloatInit("table", []int64{5, 2}, gatherTable).
		Node("Gather", []string{"table", "ids"}, []string{"emb"}, ort.AttrInt("axis", 0)).
		Output("emb", ort.Float, "batch", "seq", 2)
}

func TestInt64Gather(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	s := newSession(t, gatherModel().Bytes(t), ort.Options{})
	ids := []int64{4, 0, 2, 2, 1, 3}
	emb := run1(t, s, map[string]*ort.Tensor{"ids": must(ort.NewInt64([]int64{2, 3}, ids))}, "emb")
	var want []float32
	for _, id := range ids {
		want = append(want, gatherTable[2*id], gatherTable[2*id+1])
	}
	got, err := emb.Float32s()
	if err != nil || !slices.Equal(got, want) || !slices.Equal(emb.Shape, []int64{2, 3, 2}) {
		t.Fatalf("got %v %v, want %v", emb, got, want)
	}
	// onnxruntime's own bounds check comes back as an error, not a crash.
	_, err = s.Run(map[string]*ort.Tensor{"ids": must(ort.NewInt64([]int64{1, 1}, []int64{99}))}, nil)
	if err == nil {
		t.Fatal("out-of-range index accepted")
	}
}

// halfInputs exercises rounding corners: ties, overflow, subnormals, NaN.
var halfInputs = []float32{1, 0.1, -2.5, 65504, 65520, -1e9, 1 + 0x1p-11, 1 + 3*0x1p-11,
	0x1p-25, 3 * 0x1p-25, 0x1p-24, 1e-8, float32(math.Inf(-1)), float32(math.NaN()), 1 + 0x1p-8, 3.3e38}

func TestHalfOutputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	n := int64(len(halfInputs))
	for _, dt := range []ort.DType{ort.Float16, ort.BFloat16} {
		want := make([]uint16, n)
		for i, f := range halfInputs {
			if dt == ort.Float16 {
				want[i] = uint16(ort.ToFloat16(f))
			} else {
				want[i] = uint16(ort.ToBFloat16(f))
			}
		}
		models := map[string]*ort.ModelBuilder{
			// Dynamic shape: served by a Cast to FLOAT appended to the graph.
			"dynamic": castToHalf(dt),
			// Static shape: served by a preallocated output buffer.
			"static": ort.NewModelBuilder(17).Input("x", ort.Float, int(n)).
				Node("Cast", []string{"x"}, []string{"y"}, ort.AttrInt("to", int64(dt))).
				Output("y", dt, int(n)),
		}
		for name, b := range models {
			t.Run(dt.String()+"/"+name, func(t *testing.T) {
				s := newSession(t, b.Bytes(t), ort.Options{})
				y := run1(t, s, map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{n}, halfInputs))}, "y")
				if y.DType != dt || !slices.Equal(y.Shape, []int64{n}) {
					t.Fatalf("got %v, want %s[%d]", y, dt, n)
				}
				got := make([]uint16, n)
				for i := range got {
					got[i] = binary.LittleEndian.Uint16(y.Bytes()[2*i:])
				}
				for i := range got {
					// onnxruntime may produce a different NaN payload.
					if got[i] != want[i] && !(isHalfNaN(dt, got[i]) && isHalfNaN(dt, want[i])) {
						t.Errorf("Cast(%g) = %#04x, want %#04x", halfInputs[i], got[i], want[i])
					}
				}
			})
		}
	}
}

func isHalfNaN(dt ort.DType, h uint16) bool {
	if dt == ort.Float16 {
		return math.IsNaN(float64(ort.Float16Bits(h).Float32()))
	}
	return math.IsNaN(float64(ort.BFloat16Bits(h).Float32()))
}

func TestHalfInputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	for _, dt := range []ort.DType{ort.Float16, ort.BFloat16} {
		t.Run(dt.String(), func(t *testing.T) {
			// z = Cast(a, FLOAT), y = Cast(z + z, dt): the CPU provider has
			// no BFLOAT16 arithmetic kernels.
			b := ort.NewModelBuilder(17).
				Input("a", dt, "n").
				Node("Cast", []string{"a"}, []string{"z"}, ort.AttrInt("to", int64(ort.Float))).
				Node("Add", []string{"z", "z"}, []string{"z2"}).
				Node("Cast", []string{"z2"}, []string{"y"}, ort.AttrInt("to", int64(dt))).
				Output("y", dt, "n").
				Output("z", ort.Float, "n")
			s := newSession(t, b.Bytes(t), ort.Options{})
			vals := []float32{1.5, -0.25, 1000, 3.0e-5}
			var a *ort.Tensor
			if dt == ort.Float16 {
				a = must(ort.NewFloat16From([]int64{4}, vals))
			} else {
				a = must(ort.NewBFloat16From([]int64{4}, vals))
			}
			out, err := s.Run(map[string]*ort.Tensor{"a": a}, nil)
			if err != nil {
				t.Fatal(err)
			}
			af, _ := a.Float32s()
			z, _ := out["z"].Float32s()
			if !slices.Equal(z, af) {
				t.Errorf("z = %v, want %v", z, af)
			}
			if out["y"].DType != dt {
				t.Fatalf("y is %v", out["y"])
			}
			y, _ := out["y"].Float32s()
			for i := range y {
				if y[i] != 2*af[i] { // doubling is exact in binary formats
					t.Errorf("y[%d] = %v, want %v", i, y[i], 2*af[i])
				}
			}
		})
	}
}

func TestScalarOutputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	b := ort.NewModelBuilder(17).
		Input("x", ort.Float, "n").
		Node("ReduceSum", []string{"x"}, []string{"sum"}, ort.AttrInt("keepdims", 0)).
		Node("Cast", []string{"sum"}, []string{"sum16"}, ort.AttrInt("to", int64(ort.Float16))).
		Node("ArgMax", []string{"x"}, []string{"argmax"}, ort.AttrInt("keepdims", 0)).
		Output("sum", ort.Float).
		Output("sum16", ort.Float16).
		Output("argmax", ort.Int64)
	s := newSession(t, b.Bytes(t), ort.Options{})
	out, err := s.Run(map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{4}, []float32{1, 7, 2.5, -3}))}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := out["sum"].Float32s()
	sum16, _ := out["sum16"].Float16s()
	argmax, _ := out["argmax"].Int64s()
	if len(out["sum"].Shape) != 0 || sum[0] != 7.5 || sum16[0] != ort.ToFloat16(7.5) || argmax[0] != 1 {
		t.Fatalf("got %v=%v %v=%v %v=%v", out["sum"], sum, out["sum16"], sum16, out["argmax"], argmax)
	}
}

func TestScalarAndBoolInputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	b := ort.NewModelBuilder(17).
		Input("x", ort.Float, "n").
		Input("k", ort.Float). // scalar
		Input("mask", ort.Bool, "n").
		Node("Mul", []string{"x", "k"}, []string{"xk"}).
		Node("Greater", []string{"xk", "x"}, []string{"gt"}).
		Node("And", []string{"gt", "mask"}, []string{"y"}).
		Output("y", ort.Bool, "n")
	s := newSession(t, b.Bytes(t), ort.Options{})
	x := []float32{1, -1, 2, 0.5}
	mask := []bool{true, true, false, true}
	y := run1(t, s, map[string]*ort.Tensor{
		"x":    must(ort.NewFloat32([]int64{4}, x)),
		"k":    must(ort.NewFloat32(nil, []float32{3})),
		"mask": must(ort.NewBool([]int64{4}, mask)),
	}, "y")
	got, _ := y.Bools()
	for i := range x {
		if want := x[i]*3 > x[i] && mask[i]; got[i] != want {
			t.Errorf("y[%d] = %v, want %v", i, got[i], want)
		}
	}
}

// kvModel concatenates a (possibly empty) past along axis 2, like a KV
// cache: present = Concat(past, cur).
func kvModel(dt ort.DType) *ort.ModelBuilder {
	return ort.NewModelBuilder(17).
		Input("past", dt, 1, 2, "past_len", 3).
		Input("cur", dt, 1, 2, "seq", 3).
		Node("Concat", []string{"past", "cur"}, []string{"present"}, ort.AttrInt("axis", 2)).
		Output("present", dt, 1, 2, "total", 3)
}

func TestEmptyInputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	cur := make([]float32, 1*2*2*3)
	for i := range cur {
		cur[i] = float32(i) - 5.5
	}
	for _, dt := range []ort.DType{ort.Float, ort.Float16} {
		t.Run(dt.String(), func(t *testing.T) {
			s := newSession(t, kvModel(dt).Bytes(t), ort.Options{})
			var past, c *ort.Tensor
			if dt == ort.Float {
				past, c = must(ort.NewFloat32([]int64{1, 2, 0, 3}, nil)), must(ort.NewFloat32([]int64{1, 2, 2, 3}, cur))
			} else {
				past, c = must(ort.NewFloat16From([]int64{1, 2, 0, 3}, nil)), must(ort.NewFloat16From([]int64{1, 2, 2, 3}, cur))
			}
			present := run1(t, s, map[string]*ort.Tensor{"past": past, "cur": c}, "present")
			got, _ := present.Float32s()
			if present.DType != dt || !slices.Equal(present.Shape, []int64{1, 2, 2, 3}) || !slices.Equal(got, cur) {
				t.Fatalf("present = %v %v, want %v", present, got, cur)
			}
			// Second step: past is the previous present.
			present2 := run1(t, s, map[string]*ort.Tensor{"past": present, "cur": c}, "present")
			if !slices.Equal(present2.Shape, []int64{1, 2, 4, 3}) {
				t.Fatalf("second step shape %v", present2.Shape)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	s := newSession(t, linearModel().Bytes(t), ort.Options{})
	x := must(ort.NewFloat32([]int64{1, 3}, []float32{1, 2, 3}))
	cases := []struct {
		name    string
		inputs  map[string]*ort.Tensor
		outputs []string
		want    []string
	}{
		{"unknown input", map[string]*ort.Tensor{"x": x, "bogus": x}, nil, []string{`unknown input(s) "bogus"`, "inputs are: x FLOAT[?,3]"}},
		{"missing input", map[string]*ort.Tensor{}, nil, []string{`missing input(s) "x"`}},
		{"nil input", map[string]*ort.Tensor{"x": nil}, nil, []string{"input x is nil"}},
		{"unknown output", map[string]*ort.Tensor{"x": x}, []string{"y", "logits"}, []string{`unknown output(s) "logits"`, "outputs are: y FLOAT[?,4]"}},
		{"wrong dtype", map[string]*ort.Tensor{"x": must(ort.NewFloat64([]int64{1, 3}, []float64{1, 2, 3}))}, nil, []string{"got DOUBLE[1 3], model wants x FLOAT[?,3]"}},
		{"wrong shape", map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{3}, []float32{1, 2, 3}))}, nil, []string{"got shape [3], model wants [?,3]"}},
		{"corrupt tensor", map[string]*ort.Tensor{"x": {DType: ort.Float, Shape: []int64{2, 3}}}, nil, []string{"needs 24 bytes"}},
	}
	for _, c := range cases {
		_, err := s.Run(c.inputs, c.outputs)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
		if !strings.HasPrefix(err.Error(), "runtime: <memory>: ") {
			t.Errorf("%s: error lacks context: %q", c.name, err)
		}
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Run(map[string]*ort.Tensor{"x": x}, nil); !errors.Is(err, ort.ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
}

func TestSelectedOutputs(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	b := ort.NewModelBuilder(17).
		Input("x", ort.Float, "n").
		Node("Neg", []string{"x"}, []string{"neg"}).
		Node("Abs", []string{"x"}, []string{"abs"}).
		Node("Cast", []string{"x"}, []string{"half"}, ort.AttrInt("to", int64(ort.Float16))).
		Output("neg", ort.Float, "n").
		Output("abs", ort.Float, "n").
		Output("half", ort.Float16, "n")
	x := map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{2}, []float32{-1, 2}))}

	s := newSession(t, b.Bytes(t), ort.Options{})
	all, err := s.Run(x, nil)
	if err != nil || len(all) != 3 {
		t.Fatalf("all outputs: %v, %v", all, err)
	}
	some, err := s.Run(x, []string{"half", "abs", "half"})
	if err != nil || len(some) != 2 || some["abs"] == nil || some["half"] == nil {
		t.Fatalf("subset: %v, %v", some, err)
	}

	limited := newSession(t, b.Bytes(t), ort.Options{Outputs: []string{"abs"}})
	got, err := limited.Run(x, nil)
	if err != nil || len(got) != 1 {
		t.Fatalf("limited session: %v, %v", got, err)
	}
	if v, _ := got["abs"].Float32s(); !slices.Equal(v, []float32{1, 2}) {
		t.Fatalf("abs = %v", v)
	}
	if _, err := limited.Run(x, []string{"neg"}); err == nil || !strings.Contains(err.Error(), "not fetched by this session") {
		t.Fatalf("unfetched output: %v", err)
	}
	if _, err := ort.NewSessionFromBytes(b.Bytes(t), ort.Options{Outputs: []string{"nope"}}); err == nil || !strings.Contains(err.Error(), `unknown output "nope"`) {
		t.Fatalf("bad Options.Outputs: %v", err)
	}
}

func TestConcurrentRuns(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	s := newSession(t, linearModel().Bytes(t), ort.Options{})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				x := []float32{float32(g), float32(i), 1}
				out, err := s.Run(map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{1, 3}, x))}, nil)
				if err != nil {
					errs <- err
					return
				}
				want := must(ort.NewFloat32([]int64{1, 4}, linearRef(x, 1)))
				if d, _ := ort.MaxAbsDiff(out["y"], want); d > 1e-5 {
					errs <- errors.New("wrong result under concurrency")
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestNewSessionFromFileAndOptimizedModel(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	dir := t.TempDir()
	path := linearModel().Write(t, dir, "linear.onnx")
	opt := filepath.Join(dir, "linear_opt.onnx")
	s, err := ort.NewSession(path, ort.Options{OptLevel: ort.OptExtended, OptimizedModelPath: opt})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := os.Stat(opt); err != nil {
		t.Fatalf("optimized model not written: %v", err)
	}
	// The optimized model computes the same thing.
	s2, err := ort.NewSession(opt, ort.Options{OptLevel: ort.OptDisabled})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	x := map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{1, 3}, []float32{0.5, -1, 2}))}
	a, b := run1(t, s, x, "y"), run1(t, s2, x, "y")
	if d, _ := ort.MaxAbsDiff(a, b); d > 1e-6 {
		t.Fatalf("optimized model differs by %v", d)
	}

	// With a FLOAT16 dynamic output the session runs a modified graph; the
	// optimized model written must still be the unmodified one.
	halfPath := castToHalf(ort.Float16).Write(t, dir, "half.onnx")
	halfOpt := filepath.Join(dir, "half_opt.onnx")
	hs, err := ort.NewSession(halfPath, ort.Options{OptimizedModelPath: halfOpt})
	if err != nil {
		t.Fatal(err)
	}
	hs.Close()
	var m onnxpb.ModelProto
	data, err := os.ReadFile(halfOpt)
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	if n := len(m.GetGraph().GetOutput()); n != 1 || strings.Contains(string(data), "__onnxprune") {
		t.Fatalf("optimized model contains our casts (%d outputs)", n)
	}

	if _, err := ort.NewSession(filepath.Join(dir, "missing.onnx"), ort.Options{}); err == nil || !strings.Contains(err.Error(), "missing.onnx") {
		t.Fatalf("missing model: %v", err)
	}
}

func TestExternalData(t *testing.T) {
	testenv.ORTLibrary(t)
	must := mustTensor(t)
	dir := t.TempDir()
	// linearModel with W stored in weights.bin.
	raw := make([]byte, 4*len(linW))
	for i, w := range linW {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(w))
	}
	if err := os.WriteFile(filepath.Join(dir, "weights.bin"), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	b := linearModel()
	b.M.Graph.Initializer[0] = &onnxpb.TensorProto{
		Name: proto.String("W"), Dims: []int64{3, 4}, DataType: proto.Int32(int32(ort.Float)),
		DataLocation: onnxpb.TensorProto_EXTERNAL.Enum(),
		ExternalData: []*onnxpb.StringStringEntryProto{
			{Key: proto.String("location"), Value: proto.String("weights.bin")},
			{Key: proto.String("offset"), Value: proto.String("0")},
			{Key: proto.String("length"), Value: proto.String("48")},
		},
	}
	model := b.Bytes(t)
	x := []float32{1, 2, 3}
	inputs := map[string]*ort.Tensor{"x": must(ort.NewFloat32([]int64{1, 3}, x))}
	want := must(ort.NewFloat32([]int64{1, 4}, linearRef(x, 1)))

	if _, err := ort.NewSessionFromBytes(model, ort.Options{}); err == nil || !strings.Contains(err.Error(), "ExternalDataDir") {
		t.Fatalf("external data without ExternalDataDir: %v", err)
	}
	fromBytes := newSession(t, model, ort.Options{ExternalDataDir: dir})
	path := b.Write(t, dir, "ext.onnx")
	fromFile, err := ort.NewSession(path, ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fromFile.Close()
	for name, s := range map[string]*ort.Session{"bytes": fromBytes, "file": fromFile} {
		if d, err := ort.MaxAbsDiff(run1(t, s, inputs, "y"), want); err != nil || d > 1e-5 {
			t.Errorf("%s: diff %v, %v", name, d, err)
		}
	}

	// A FLOAT16 output of dynamic shape makes the session load the file as
	// bytes (with Casts appended): external data must still resolve.
	b.Node("Cast", []string{"y"}, []string{"y16"}, ort.AttrInt("to", int64(ort.Float16))).
		Output("y16", ort.Float16, "batch", 4)
	half, err := ort.NewSession(b.Write(t, dir, "ext16.onnx"), ort.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer half.Close()
	y16 := run1(t, half, inputs, "y16")
	wf, _ := want.Float32s()
	want16 := must(ort.NewFloat16From([]int64{1, 4}, wf))
	if !slices.Equal(y16.Bytes(), want16.Bytes()) {
		t.Errorf("y16 = %v, want %v", y16.Bytes(), want16.Bytes())
	}
}

func TestCUDAUnavailableIsAnError(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := filepath.Dir(ort.LibraryPath())
	if _, err := os.Stat(filepath.Join(dir, "libonnxruntime_providers_cuda.so")); err == nil {
		t.Skip("CUDA provider libraries are installed next to the library")
	}
	s, err := ort.NewSessionFromBytes(linearModel().Bytes(t), ort.Options{Device: "cuda"})
	if err == nil {
		s.Close()
		t.Fatal("CUDA session created without the CUDA provider: it would silently run on CPU")
	}
	if !errors.Is(err, ort.ErrCUDAUnavailable) {
		t.Fatalf("error does not wrap ErrCUDAUnavailable: %v", err)
	}
	for _, w := range []string{"libonnxruntime_providers_cuda.so", "onnxruntime-gpu 1.24.1", "--device cpu"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	t.Logf("%v", err)
}

func TestOptionsValidation(t *testing.T) {
	testenv.ORTLibrary(t)
	model := linearModel().Bytes(t)
	for _, o := range []ort.Options{{Device: "tpu"}, {Threads: -1}, {OptLevel: 99}, {DeviceID: -1, Device: "cuda"}} {
		if s, err := ort.NewSessionFromBytes(model, o); err == nil {
			s.Close()
			t.Errorf("%+v accepted", o)
		}
	}
	for _, c := range []struct {
		in   string
		want ort.OptLevel
	}{{"", ort.OptDefault}, {"disabled", ort.OptDisabled}, {"Basic", ort.OptBasic}, {"extended", ort.OptExtended}, {"all", ort.OptAll}} {
		if got, err := ort.ParseOptLevel(c.in); err != nil || got != c.want {
			t.Errorf("ParseOptLevel(%q) = %v, %v", c.in, got, err)
		}
	}
	if _, err := ort.ParseOptLevel("max"); err == nil {
		t.Error("ParseOptLevel(max) accepted")
	}
	if ort.OptDefault.String() != "extended" {
		t.Errorf("default level is %s", ort.OptDefault)
	}
}

func TestInitAndFindLibrary(t *testing.T) {
	lib := testenv.ORTLibrary(t)
	if err := ort.Init(lib); err != nil {
		t.Fatalf("second Init with the same library: %v", err)
	}
	if v := ort.Version(); v != ort.ORTVersion {
		t.Errorf("Version() = %q, want %q", v, ort.ORTVersion)
	}
	other := filepath.Join(t.TempDir(), "libother.so")
	if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ort.Init(other); err == nil || !strings.Contains(err.Error(), "already initialised") {
		t.Fatalf("Init with another library: %v", err)
	}

	if got, err := ort.FindLibrary(other); err != nil || got != other {
		t.Errorf("FindLibrary(explicit) = %q, %v", got, err)
	}
	t.Setenv(ort.LibraryEnv, other)
	if got, err := ort.FindLibrary(""); err != nil || got != other {
		t.Errorf("FindLibrary with $%s = %q, %v", ort.LibraryEnv, got, err)
	}
	t.Setenv(ort.LibraryEnv, "")
	t.Setenv("ONNXPRUNE_CACHE", t.TempDir())
	_, err := ort.FindLibrary("")
	if !errors.Is(err, ort.ErrLibraryNotFound) || !strings.Contains(err.Error(), `run "make setup"`) ||
		!strings.Contains(err.Error(), ort.LibraryEnv) || !strings.Contains(err.Error(), "onnxruntime-1.24.1/libonnxruntime.so.1") {
		t.Errorf("not-found error: %v", err)
	}
	if _, err := ort.FindLibrary(filepath.Join(t.TempDir(), "nope.so")); !errors.Is(err, ort.ErrLibraryNotFound) {
		t.Errorf("missing explicit library: %v", err)
	}
}

func TestAppendCastsKeepsOriginalGraph(t *testing.T) {
	model := castToHalf(ort.Float16).Bytes(t)
	out, err := ort.AppendCasts(model, []ort.IOInfo{{Name: "y", DType: ort.Float16, Shape: []int64{-1}}})
	if err != nil {
		t.Fatal(err)
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	g := m.GetGraph()
	var outs, ops []string
	for _, o := range g.GetOutput() {
		outs = append(outs, o.GetName())
	}
	for _, n := range g.GetNode() {
		ops = append(ops, n.GetOpType())
	}
	if !reflect.DeepEqual(outs, []string{"y", "y__onnxprune_float32"}) || !reflect.DeepEqual(ops, []string{"Cast", "Cast"}) ||
		len(g.GetInput()) != 1 || g.GetName() != "test" {
		t.Fatalf("merged graph: outputs %v ops %v", outs, ops)
	}
}
