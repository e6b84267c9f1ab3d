package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/irtest"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), append([]string{"onnxprune"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func fixture(name string) string { return filepath.Join("..", "..", "testdata", "models", name) }

func TestInspectJSON(t *testing.T) {
	cases := []struct {
		file   string
		blocks int
		kv     bool
	}{
		{"stories260k.onnx", 5, false},
		{"stories260k_kv.onnx", 5, true},
		{"gpt2_kv.onnx", 6, true},
		{"gpt2_kv_static_ortopt.onnx", 6, true},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			code, out, errs := runCLI(t, "inspect", "--json", fixture(c.file))
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			// Decode into a generic map: the contract is the field names.
			var rep struct {
				Blocks []struct {
					Index     int      `json:"index"`
					Nodes     int      `json:"nodes"`
					Params    int64    `json:"params"`
					Input     string   `json:"input"`
					Output    string   `json:"output"`
					KVInputs  []string `json:"kv_inputs"`
					KVOutputs []string `json:"kv_outputs"`
				} `json:"blocks"`
				ParamsTotal int64             `json:"params_total"`
				Inputs      []json.RawMessage `json:"inputs"`
				Outputs     []json.RawMessage `json:"outputs"`
				KVPairs     []json.RawMessage `json:"kv_pairs"`
			}
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			if len(rep.Blocks) != c.blocks {
				t.Fatalf("%d blocks, want %d", len(rep.Blocks), c.blocks)
			}
			var sum int64
			for i, b := range rep.Blocks {
				sum += b.Params
				fusedLast := i == len(rep.Blocks)-1 && strings.Contains(c.file, "ortopt")
				if b.Index != i || b.Nodes == 0 || b.Params == 0 || b.Input == "" || (b.Output == "") != fusedLast {
					t.Errorf("block %d incomplete: %+v", i, b)
				}
				if c.kv {
					want := []string{fmt.Sprintf("past_key_values.%d.key", i), fmt.Sprintf("past_key_values.%d.value", i)}
					if strings.Join(b.KVInputs, ",") != strings.Join(want, ",") {
						t.Errorf("block %d kv_inputs %v, want %v", i, b.KVInputs, want)
					}
				}
			}
			if sum >= rep.ParamsTotal {
				t.Errorf("blocks hold %d params of %d total: the embedding and head are missing", sum, rep.ParamsTotal)
			}
			wantIn := 3
			if c.kv {
				wantIn += 2 * c.blocks
			}
			if len(rep.Inputs) != wantIn || (c.kv && len(rep.KVPairs) != c.blocks) {
				t.Errorf("%d inputs, %d kv pairs", len(rep.Inputs), len(rep.KVPairs))
			}
		})
	}
}

func TestInspectText(t *testing.T) {
	code, out, errs := runCLI(t, "inspect", fixture("gpt2_kv.onnx"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"decoder: 6 blocks", "KV cache: 6 pairs", "layer 5: past_key_values.5.key"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestInspectBadInput: each broken model gives exit code 1 and one line
// on stderr naming the file and the problem.
func TestInspectBadInput(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(fixture("stories260k.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	saveModel := func(name string, m *graph.Model, opts graph.SaveOptions) string {
		p := filepath.Join(dir, name)
		if err := graph.Save(m, p, opts); err != nil {
			t.Fatal(err)
		}
		return p
	}
	big := make([]float32, 4096)
	extModel := func(name string) string {
		m := irtest.New("g").Input("x", 1, 64).Init("w", big, 64, 64).
			Node("MatMul", "mm", []string{"x", "w"}, []string{"y"}).Output("y", 1, 64).Model()
		return saveModel(name, m, graph.SaveOptions{Placement: graph.PlaceExternal})
	}
	cases := []struct {
		name, want string
		path       func() string
	}{
		{"truncated", "truncated or corrupt", func() string { return write("trunc.onnx", good[:len(good)/2]) }},
		{"not onnx", "not an ONNX model", func() string { return write("notes.onnx", []byte("# just some notes\n")) }},
		{"missing external data", "not found", func() string {
			p := extModel("noext.onnx")
			os.Remove(p + ".data")
			return p
		}},
		{"external range past end", "past end", func() string {
			p := extModel("short.onnx")
			os.Truncate(p+".data", 100)
			return p
		}},
		{"cyclic graph", "cycle", func() string {
			m := irtest.New("g").Input("x", 1).
				Node("Add", "a", []string{"x", "c"}, []string{"b"}).
				Node("Relu", "r", []string{"b"}, []string{"c"}).Output("c", 1).Model()
			b, _ := proto.Marshal(m.Proto)
			return write("cycle.onnx", b)
		}},
		{"undefined tensor", "undefined tensor", func() string {
			m := irtest.New("g").Input("x", 1).
				Node("Add", "a", []string{"x", "ghost"}, []string{"y"}).Output("y", 1).Model()
			m.Proto.Graph.Node[0].Input[1] = "ghost"
			b, _ := proto.Marshal(m.Proto)
			return write("undef.onnx", b)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := c.path()
			code, out, errs := runCLI(t, "inspect", p)
			if code != 1 {
				t.Fatalf("exit %d, want 1 (stdout %q)", code, out)
			}
			lines := strings.Split(strings.TrimRight(errs, "\n"), "\n")
			if len(lines) != 1 || !strings.Contains(errs, p) || !strings.Contains(errs, c.want) {
				t.Fatalf("stderr %q: want one line naming %s and saying %q", errs, p, c.want)
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{"inspect"}, {"inspect", "a", "b"}, {"inspect", "--nope", "x"}} {
		code, _, errs := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errs)
		}
	}
}
