// Package reffile reads reference-output files (testdata/models/*.ref.json):
// inputs to feed a model and the outputs an independent implementation
// (PyTorch) computed for them, with the absolute tolerance a run through
// onnxruntime must meet.
//
//	{"model": "stories260k_kv.onnx", "atol": 1e-4,
//	 "cases": [{"name": "prefill",
//	   "inputs":  {"input_ids": {"dtype": "int64", "shape": [1, 8], "data": [...]}},
//	   "outputs": {"logits": {"dtype": "float32", "shape": [1, 8, 512], "data": [...]}}}]}
//
// "model" is relative to the reference file. "data" is the row-major
// flattening (nested lists are flattened too); Python's NaN, Infinity and
// -Infinity are accepted, and integers are parsed exactly.
package reffile

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"

	"github.com/onnxprune/onnxprune/runtime"
)

// File is one reference file.
type File struct {
	Model string  `json:"model"`
	Atol  float64 `json:"atol"`
	Cases []Case  `json:"cases"`
	// Path is the file this was loaded from.
	Path string `json:"-"`
}

// Case is one set of inputs and the expected outputs.
type Case struct {
	Name    string            `json:"name"`
	Inputs  map[string]Tensor `json:"inputs"`
	Outputs map[string]Tensor `json:"outputs"`
}

// Tensor is a tensor as written in a reference file.
type Tensor struct {
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	Data  Data    `json:"data"`
}

// Data holds the numbers of a "data" array as written, parsed once the
// dtype is known.
type Data []byte

// UnmarshalJSON keeps the raw text: encoding/json rejects NaN and Infinity,
// and would round int64s through float64.
func (d *Data) UnmarshalJSON(b []byte) error {
	*d = append((*d)[:0], b...)
	return nil
}

// Glob returns the *.ref.json files in dir, sorted.
func Glob(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.ref.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// Load reads and validates a reference file.
func Load(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reffile: %w", err)
	}
	// Python's json writes NaN/Infinity, which encoding/json refuses even
	// inside a value it hands over raw; quote them so the structure parses.
	// The numbers are parsed by Data with strconv, which accepts the names.
	var f File
	if err := json.Unmarshal(quoteNonFinite(b), &f); err != nil {
		return nil, fmt.Errorf("reffile: %s: %w", path, err)
	}
	f.Path = path
	if f.Model == "" {
		return nil, fmt.Errorf("reffile: %s: no \"model\"", path)
	}
	if !(f.Atol >= 0) {
		return nil, fmt.Errorf("reffile: %s: invalid atol %v", path, f.Atol)
	}
	if len(f.Cases) == 0 {
		return nil, fmt.Errorf("reffile: %s: no cases", path)
	}
	for _, c := range f.Cases {
		if len(c.Outputs) == 0 {
			return nil, fmt.Errorf("reffile: %s: case %q has no outputs", path, c.Name)
		}
	}
	return &f, nil
}

// ModelPath is the model the file refers to.
func (f *File) ModelPath() string {
	if filepath.IsAbs(f.Model) {
		return f.Model
	}
	return filepath.Join(filepath.Dir(f.Path), f.Model)
}

// RuntimeInputs converts the case's inputs.
func (c Case) RuntimeInputs() (map[string]*runtime.Tensor, error) {
	out := make(map[string]*runtime.Tensor, len(c.Inputs))
	for name, t := range c.Inputs {
		rt, err := t.Runtime()
		if err != nil {
			return nil, fmt.Errorf("reffile: case %q input %s: %w", c.Name, name, err)
		}
		out[name] = rt
	}
	return out, nil
}

// OutputNames lists the case's outputs, sorted.
func (c Case) OutputNames() []string {
	names := make([]string, 0, len(c.Outputs))
	for name := range c.Outputs {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Runtime converts t to a runtime.Tensor (floating-point values are rounded
// to the dtype, ties to even).
func (t Tensor) Runtime() (*runtime.Tensor, error) {
	dt, err := runtime.ParseDType(t.DType)
	if err != nil {
		return nil, err
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
		n *= d
	}
	switch dt {
	case runtime.Float, runtime.Double, runtime.Float16, runtime.BFloat16:
		v, err := t.Float64s()
		if err != nil {
			return nil, err
		}
		if int64(len(v)) != n {
			return nil, fmt.Errorf("shape %v needs %d values, data has %d", t.Shape, n, len(v))
		}
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		switch dt {
		case runtime.Float:
			return runtime.NewFloat32(t.Shape, f)
		case runtime.Double:
			return runtime.NewFloat64(t.Shape, v)
		case runtime.Float16:
			return runtime.NewFloat16From(t.Shape, f)
		default:
			return runtime.NewBFloat16From(t.Shape, f)
		}
	case runtime.Bool:
		v, err := t.Bools()
		if err != nil {
			return nil, err
		}
		return runtime.NewBool(t.Shape, v)
	case runtime.Int64, runtime.Int32:
		v, err := t.Int64s()
		if err != nil {
			return nil, err
		}
		if dt == runtime.Int64 {
			return runtime.NewInt64(t.Shape, v)
		}
		v32 := make([]int32, len(v))
		for i, x := range v {
			if x != int64(int32(x)) {
				return nil, fmt.Errorf("value %d overflows int32", x)
			}
			v32[i] = int32(x)
		}
		return runtime.NewInt32(t.Shape, v32)
	}
	return nil, fmt.Errorf("dtype %s is not supported in reference files", t.DType)
}

// Float64s parses the data as numbers.
func (t Tensor) Float64s() ([]float64, error) {
	toks := tokens(t.Data)
	out := make([]float64, len(toks))
	for i, tok := range toks {
		switch string(tok) {
		case "true":
			out[i] = 1
			continue
		case "false":
			out[i] = 0
			continue
		}
		v, err := strconv.ParseFloat(string(tok), 64)
		if err != nil {
			return nil, fmt.Errorf("data[%d]: %w", i, err)
		}
		out[i] = v
	}
	return out, nil
}

// Int64s parses the data as integers, exactly.
func (t Tensor) Int64s() ([]int64, error) {
	toks := tokens(t.Data)
	out := make([]int64, len(toks))
	for i, tok := range toks {
		v, err := strconv.ParseInt(string(tok), 10, 64)
		if err != nil {
			// Some writers emit integral floats ("3.0").
			f, ferr := strconv.ParseFloat(string(tok), 64)
			if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
				return nil, fmt.Errorf("data[%d]: %q is not an integer", i, tok)
			}
			v = int64(f)
		}
		out[i] = v
	}
	return out, nil
}

// Bools parses the data as booleans (true/false or 0/1).
func (t Tensor) Bools() ([]bool, error) {
	toks := tokens(t.Data)
	out := make([]bool, len(toks))
	for i, tok := range toks {
		switch string(tok) {
		case "true", "1":
			out[i] = true
		case "false", "0":
		default:
			return nil, fmt.Errorf("data[%d]: %q is not a boolean", i, tok)
		}
	}
	return out, nil
}

// tokens splits a (possibly nested) JSON array of scalars into its scalar
// tokens, unquoting the non-finite names quoteNonFinite protected.
func tokens(data []byte) [][]byte {
	var out [][]byte
	start := -1
	flush := func(end int) {
		if start >= 0 {
			tok := bytes.Trim(bytes.TrimSpace(data[start:end]), `"`)
			if len(tok) > 0 {
				out = append(out, tok)
			}
			start = -1
		}
	}
	for i, c := range data {
		switch c {
		case '[', ']', ',', ' ', '\n', '\r', '\t':
			flush(i)
		default:
			if start < 0 {
				start = i
			}
		}
	}
	flush(len(data))
	return out
}

// quoteNonFinite turns bare NaN, Infinity and -Infinity tokens (outside
// strings) into JSON strings.
func quoteNonFinite(b []byte) []byte {
	if !bytes.Contains(b, []byte("NaN")) && !bytes.Contains(b, []byte("Infinity")) {
		return b
	}
	var out bytes.Buffer
	inString := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		if inString {
			out.WriteByte(c)
			switch c {
			case '\\':
				if i+1 < len(b) {
					i++
					out.WriteByte(b[i])
				}
			case '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			out.WriteByte(c)
			continue
		}
		matched := false
		for _, word := range []string{"-Infinity", "Infinity", "NaN"} {
			if bytes.HasPrefix(b[i:], []byte(word)) {
				out.WriteString(`"` + word + `"`)
				i += len(word) - 1
				matched = true
				break
			}
		}
		if !matched {
			out.WriteByte(c)
		}
	}
	return out.Bytes()
}

// Compare checks got against want: equal shapes and max |got - want| <=
// atol (NaN must match NaN). It returns the max abs difference.
func Compare(got *runtime.Tensor, want Tensor, atol float64) (float64, error) {
	if got == nil {
		return 0, fmt.Errorf("missing output")
	}
	if !equalShapes(got.Shape, want.Shape) {
		return 0, fmt.Errorf("shape %v, want %v", got.Shape, want.Shape)
	}
	var g []float64
	var err error
	switch got.DType {
	case runtime.Int64, runtime.Int32:
		iv, e := got.Int64s()
		err = e
		g = make([]float64, len(iv))
		for i, x := range iv {
			g[i] = float64(x)
		}
	case runtime.Bool:
		bv, e := got.Bools()
		err = e
		g = make([]float64, len(bv))
		for i, x := range bv {
			if x {
				g[i] = 1
			}
		}
	default:
		g, err = got.Float64s()
	}
	if err != nil {
		return 0, err
	}
	w, err := want.Float64s()
	if err != nil {
		return 0, err
	}
	if len(g) != len(w) {
		return 0, fmt.Errorf("%d values, reference has %d", len(g), len(w))
	}
	worst, at := 0.0, -1
	for i := range g {
		gn, wn := math.IsNaN(g[i]), math.IsNaN(w[i])
		if gn || wn {
			if gn != wn {
				return math.NaN(), fmt.Errorf("element %d: got %v, want %v", i, g[i], w[i])
			}
			continue
		}
		if g[i] == w[i] {
			continue
		}
		if d := math.Abs(g[i] - w[i]); d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	if worst > atol || math.IsNaN(worst) {
		return worst, fmt.Errorf("max abs diff %.3g at element %d (got %v, want %v) exceeds atol %g", worst, at, g[at], w[at], atol)
	}
	return worst, nil
}

func equalShapes(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
