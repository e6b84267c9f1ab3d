// Command ortopt writes onnxruntime-optimized copies of test fixtures: it
// loads each model through onnxruntime at the "extended" optimisation level
// (the fusions a deployed model gets, e.g. SkipLayerNormalization, without
// "all"'s hardware-specific layouts) and saves the graph onnxruntime runs.
// Those graphs are what pruning must also handle: fused nodes lose their
// module-path names and the residual Add moves inside the norm.
//
// For each MODEL.onnx it writes MODEL_ortopt.onnx (weights inline) and, if
// MODEL.ref.json exists, MODEL_ortopt.ref.json with the same cases (the
// runtime package's reference test then checks the optimized copy too). It
// prints an op histogram of every optimized model and, for fused skip norms,
// their input and output tensors and which of the outputs the graph uses.
//
// Usage, from the module root:
//
//	go run ./testdata/gen/ortopt [-ort-lib PATH] [MODEL.onnx ...]
//
// Without arguments it processes
// testdata/models/{gpt2_kv,stories260k_kv,gpt2_kv_static}.onnx.
// The output is deterministic for a given onnxruntime build.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// gpt2_kv_static is the one onnxruntime fuses a SkipLayerNormalization in:
// the fusion needs static sequence and hidden dims on the residual Add (see
// testdata/gen/README.md), which the dynamic-axes exports do not have.
var defaultModels = []string{
	"testdata/models/gpt2_kv.onnx",
	"testdata/models/stories260k_kv.onnx",
	"testdata/models/gpt2_kv_static.onnx",
}

func main() {
	lib := flag.String("ort-lib", "", "onnxruntime shared library (default: $ONNXRUNTIME_LIB, then the `make setup` cache)")
	suffix := flag.String("suffix", "_ortopt", "appended to the model's base name")
	flag.Parse()
	models := flag.Args()
	if len(models) == 0 {
		models = defaultModels
	}
	if err := ort.Init(*lib); err != nil {
		fail(err)
	}
	for _, in := range models {
		out, err := optimize(in, *suffix)
		if err != nil {
			fail(err)
		}
		if err := report(os.Stdout, out); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ortopt:", err)
	os.Exit(1)
}

// optimize writes the optimized model and its reference file; it returns
// the model's path.
func optimize(in, suffix string) (string, error) {
	base := strings.TrimSuffix(in, ".onnx")
	if base == in {
		return "", fmt.Errorf("%s: not a .onnx file", in)
	}
	out := base + suffix + ".onnx"
	// Write to a temporary name first so that a failed run leaves no
	// half-written fixture behind.
	tmp := out + ".tmp"
	s, err := ort.NewSession(in, ort.Options{OptLevel: ort.OptExtended, OptimizedModelPath: tmp})
	if err != nil {
		return "", err
	}
	if err := s.Close(); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}

	ref, err := os.ReadFile(base + ".ref.json")
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return "", err
	}
	copied, err := retarget(ref, filepath.Base(out))
	if err != nil {
		return "", fmt.Errorf("%s.ref.json: %w", base, err)
	}
	if err := os.WriteFile(base+suffix+".ref.json", copied, 0o644); err != nil {
		return "", err
	}
	return out, nil
}

// retarget returns a reference file naming another model, keeping the other
// keys' values as written ("model", "atol", "cases" first, then the rest).
func retarget(ref []byte, model string) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(ref, &fields); err != nil {
		return nil, err
	}
	name, err := json.Marshal(model)
	if err != nil {
		return nil, err
	}
	fields["model"] = name
	keys := []string{"model", "atol", "cases"}
	var rest []string
	for k := range fields {
		if k != "model" && k != "atol" && k != "cases" {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	var b bytes.Buffer
	b.WriteString("{")
	for i, k := range append(keys, rest...) {
		v, ok := fields[k]
		if !ok {
			continue
		}
		if i > 0 {
			b.WriteString(",\n ")
		}
		fmt.Fprintf(&b, "%q: %s", k, bytes.TrimSpace(v))
	}
	b.WriteString("}\n")
	return b.Bytes(), nil
}

// report prints the op histogram and how fused skip norms are wired.
func report(w *os.File, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var m onnxpb.ModelProto
	if err := proto.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	g := m.GetGraph()
	hist := map[string]int{}
	used := map[string]bool{} // tensors consumed by a node or the graph
	for _, n := range g.GetNode() {
		hist[opName(n)]++
		for _, in := range n.GetInput() {
			used[in] = true
		}
	}
	for _, o := range g.GetOutput() {
		used[o.GetName()] = true
	}
	ops := make([]string, 0, len(hist))
	for op := range hist {
		ops = append(ops, op)
	}
	sort.Slice(ops, func(i, j int) bool {
		if hist[ops[i]] != hist[ops[j]] {
			return hist[ops[i]] > hist[ops[j]]
		}
		return ops[i] < ops[j]
	})
	fmt.Fprintf(w, "%s: %d nodes, %d initializers, %d bytes\n", path, len(g.GetNode()), len(g.GetInitializer()), len(data))
	for _, op := range ops {
		fmt.Fprintf(w, "  %5d  %s\n", hist[op], op)
	}
	for _, n := range g.GetNode() {
		if !strings.HasPrefix(n.GetOpType(), "Skip") {
			continue
		}
		var outs []string
		for i, o := range n.GetOutput() {
			state := "unused"
			switch {
			case o == "":
				state = "absent"
			case used[o]:
				state = "used"
			}
			outs = append(outs, fmt.Sprintf("%d:%s", i, state))
		}
		fmt.Fprintf(w, "  %s %q inputs %d, outputs [%s]\n", n.GetOpType(), n.GetName(), len(n.GetInput()), strings.Join(outs, " "))
		fmt.Fprintf(w, "    inputs  %q\n    outputs %q\n", n.GetInput(), n.GetOutput())
	}
	return nil
}

func opName(n *onnxpb.NodeProto) string {
	if d := n.GetDomain(); d != "" && d != "ai.onnx" {
		return d + "." + n.GetOpType()
	}
	return n.GetOpType()
}
