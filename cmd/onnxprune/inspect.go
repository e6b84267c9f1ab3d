package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "describe a model: I/O, parameters, ops, external data, decoder blocks, KV cache",
		ArgsUsage: "MODEL.onnx",
		Description: `Loads the model without reading external weights, checks the graph, finds the
decoder blocks and prints what it found.

Examples:
  onnxprune inspect model.onnx
  onnxprune inspect --json model.onnx | jq '.blocks[] | {index, params}'

The --json form is a stable contract (see README "inspect --json").`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print a JSON report"},
		},
		Action: func(ctx context.Context, cmd *cli.Command) error {
			if cmd.NArg() != 1 {
				return usagef("inspect: want exactly one MODEL argument, got %d (see onnxprune inspect --help)", cmd.NArg())
			}
			path := cmd.Args().First()
			rep, err := inspectModel(path)
			if err != nil {
				return err
			}
			if cmd.Bool("json") {
				enc := json.NewEncoder(cmd.Root().Writer)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			printInspect(cmd.Root().Writer, rep)
			return nil
		},
	}
}

// InspectReport is the `inspect --json` contract. Fields are only ever
// added, never renamed or removed.
type InspectReport struct {
	Path          string            `json:"path"`
	FileBytes     int64             `json:"file_bytes"`
	IRVersion     int64             `json:"ir_version"`
	Opsets        []Opset           `json:"opsets"`
	Producer      string            `json:"producer"`
	Inputs        []IOInfo          `json:"inputs"`
	Outputs       []IOInfo          `json:"outputs"`
	ParamsTotal   int64             `json:"params_total"`
	ParamsByDType map[string]int64  `json:"params_by_dtype"`
	BytesByDType  map[string]int64  `json:"bytes_by_dtype"`
	Ops           map[string]int    `json:"ops"`
	Nodes         int               `json:"nodes"`
	ExternalData  []ExternalFile    `json:"external_data"`
	Blocks        []BlockInfo       `json:"blocks"`
	BlocksError   string            `json:"blocks_error,omitempty"`
	KVPairs       []KVPair          `json:"kv_pairs"`
	Embedding     *ComponentInfo    `json:"embedding,omitempty"`
	FinalNorm     *ComponentInfo    `json:"final_norm,omitempty"`
	LMHead        *ComponentInfo    `json:"lm_head,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
}

type Opset struct {
	Domain  string `json:"domain"`
	Version int64  `json:"version"`
}

// IOInfo describes a graph input or output; symbolic dims are strings.
type IOInfo struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []any  `json:"shape"`
}

type ExternalFile struct {
	File    string `json:"file"`
	Tensors int    `json:"tensors"`
	Bytes   int64  `json:"bytes"`
}

type BlockInfo struct {
	Index     int      `json:"index"`
	Nodes     int      `json:"nodes"`
	Params    int64    `json:"params"`
	Share     float64  `json:"share"` // of params_total
	Input     string   `json:"input"`
	Output    string   `json:"output"` // "" when fused and not materialized
	KVInputs  []string `json:"kv_inputs"`
	KVOutputs []string `json:"kv_outputs"`
}

type KVPair struct {
	Layer   int      `json:"layer"`
	Inputs  []string `json:"inputs"`
	Outputs []string `json:"outputs"`
}

type ComponentInfo struct {
	Nodes   int      `json:"nodes"`
	Params  int64    `json:"params"`
	Weights []string `json:"weights"`
	// Tied: the LM head reuses the embedding's weight (its params are
	// the embedding's, counted once in params_total).
	Tied bool `json:"tied,omitempty"`
}

func inspectModel(path string) (*InspectReport, error) {
	m, err := graph.Load(path)
	if err != nil {
		return nil, err
	}
	if err := graph.Check(m); err != nil {
		return nil, fmt.Errorf("%s: invalid graph: %w", path, err)
	}
	p := m.Proto
	rep := &InspectReport{
		Path:          path,
		IRVersion:     p.GetIrVersion(),
		Producer:      strings.TrimSpace(p.GetProducerName() + " " + p.GetProducerVersion()),
		ParamsByDType: map[string]int64{},
		BytesByDType:  map[string]int64{},
		Ops:           map[string]int{},
		Blocks:        []BlockInfo{},
		KVPairs:       []KVPair{},
		ExternalData:  []ExternalFile{},
	}
	if fi, err := os.Stat(path); err == nil {
		rep.FileBytes = fi.Size()
	}
	for _, o := range p.GetOpsetImport() {
		d := o.GetDomain()
		if d == "" {
			d = "ai.onnx"
		}
		rep.Opsets = append(rep.Opsets, Opset{d, o.GetVersion()})
	}
	g := p.GetGraph()
	for _, vi := range g.GetInput() {
		rep.Inputs = append(rep.Inputs, ioInfo(vi))
	}
	for _, vi := range g.GetOutput() {
		rep.Outputs = append(rep.Outputs, ioInfo(vi))
	}
	ext := map[string]*ExternalFile{}
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		dt := graph.DTypeName(t.GetDataType())
		rep.ParamsByDType[dt] += graph.NumElements(t.GetDims())
		if n := graph.ByteSize(t); n > 0 {
			rep.BytesByDType[dt] += n
		}
		if graph.IsExternal(t) {
			ref, _ := graph.ParseExternalRef(t)
			e := ext[ref.Location]
			if e == nil {
				e = &ExternalFile{File: ref.Location}
				ext[ref.Location] = e
			}
			e.Tensors++
			e.Bytes += max(ref.Length, graph.ByteSize(t))
		}
		return true
	})
	for _, e := range ext {
		rep.ExternalData = append(rep.ExternalData, *e)
	}
	sort.Slice(rep.ExternalData, func(i, j int) bool { return rep.ExternalData[i].File < rep.ExternalData[j].File })
	for _, n := range g.GetNode() {
		op := n.GetOpType()
		if d := n.GetDomain(); d != "" && d != "ai.onnx" {
			op = d + "." + op
		}
		rep.Ops[op]++
	}
	rep.Nodes = len(g.GetNode())
	rep.ParamsTotal = graph.TotalParams(m)
	for _, kv := range p.GetMetadataProps() {
		if rep.Metadata == nil {
			rep.Metadata = map[string]string{}
		}
		rep.Metadata[kv.GetKey()] = kv.GetValue()
	}

	d, err := graph.FindBlocks(m)
	if err != nil {
		rep.BlocksError = err.Error()
		return rep, nil
	}
	for _, b := range d.Blocks {
		rep.Blocks = append(rep.Blocks, BlockInfo{
			Index: b.Index, Nodes: len(b.Nodes), Params: b.Params,
			Share: float64(b.Params) / float64(max(rep.ParamsTotal, 1)),
			Input: b.Input, Output: b.Output,
			KVInputs: orEmpty(b.KVInputs), KVOutputs: orEmpty(b.KVOutputs),
		})
		if len(b.KVInputs) > 0 || len(b.KVOutputs) > 0 {
			rep.KVPairs = append(rep.KVPairs, KVPair{Layer: b.Index, Inputs: orEmpty(b.KVInputs), Outputs: orEmpty(b.KVOutputs)})
		}
	}
	comp := func(c graph.Component) *ComponentInfo {
		return &ComponentInfo{Nodes: len(c.Nodes), Params: c.Params, Weights: orEmpty(c.Weights), Tied: c.Tied}
	}
	rep.Embedding, rep.FinalNorm, rep.LMHead = comp(d.Embedding), comp(d.FinalNorm), comp(d.LMHead)
	return rep, nil
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func ioInfo(vi *onnxpb.ValueInfoProto) IOInfo {
	info := IOInfo{Name: vi.GetName(), Shape: []any{}}
	tt := vi.GetType().GetTensorType()
	if tt == nil {
		info.DType = "?"
		return info
	}
	info.DType = graph.DTypeName(tt.GetElemType())
	for _, d := range tt.GetShape().GetDim() {
		switch {
		case d.GetDimParam() != "":
			info.Shape = append(info.Shape, d.GetDimParam())
		case d.Value != nil:
			info.Shape = append(info.Shape, d.GetDimValue())
		default:
			info.Shape = append(info.Shape, "?")
		}
	}
	return info
}

func printInspect(w io.Writer, r *InspectReport) {
	fmt.Fprintf(w, "%s (%s)\n", r.Path, humanBytes(r.FileBytes))
	var ops []string
	for _, o := range r.Opsets {
		ops = append(ops, fmt.Sprintf("%s %d", o.Domain, o.Version))
	}
	fmt.Fprintf(w, "  IR %d, opsets %s, producer %q, %d nodes\n", r.IRVersion, strings.Join(ops, ", "), r.Producer, r.Nodes)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\ninputs\tdtype\tshape")
	for _, io := range r.Inputs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", io.Name, io.DType, shapeString(io.Shape))
	}
	fmt.Fprintln(tw, "outputs\t\t")
	for _, io := range r.Outputs {
		fmt.Fprintf(tw, "  %s\t%s\t%s\n", io.Name, io.DType, shapeString(io.Shape))
	}
	tw.Flush()

	fmt.Fprintf(w, "\nparameters: %s (floating-point weights)\nstored tensors by dtype:\n", thousands(r.ParamsTotal))
	for _, dt := range sortedKeys(r.BytesByDType) {
		fmt.Fprintf(w, "  %-9s %s elements, %s\n", dt, thousands(r.ParamsByDType[dt]), humanBytes(r.BytesByDType[dt]))
	}
	if len(r.ExternalData) == 0 {
		fmt.Fprintln(w, "external data: none (weights inline)")
	}
	for _, e := range r.ExternalData {
		fmt.Fprintf(w, "external data: %s: %d tensors, %s\n", e.File, e.Tensors, humanBytes(e.Bytes))
	}

	type opCount struct {
		op string
		n  int
	}
	var oc []opCount
	for op, n := range r.Ops {
		oc = append(oc, opCount{op, n})
	}
	sort.Slice(oc, func(i, j int) bool { return oc[i].n > oc[j].n || oc[i].n == oc[j].n && oc[i].op < oc[j].op })
	var parts []string
	for _, c := range oc {
		parts = append(parts, fmt.Sprintf("%s %d", c.op, c.n))
	}
	fmt.Fprintf(w, "ops: %s\n", strings.Join(parts, ", "))

	if r.BlocksError != "" {
		fmt.Fprintf(w, "\ndecoder blocks: none: %s\n", r.BlocksError)
		return
	}
	head := thousands(r.LMHead.Params)
	if r.LMHead.Tied {
		head += " (tied to the embedding)"
	}
	fmt.Fprintf(w, "\ndecoder: %d blocks; embedding %s params, final norm %s, LM head %s\n",
		len(r.Blocks), thousands(r.Embedding.Params), thousands(r.FinalNorm.Params), head)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "block\tnodes\tparams\tshare\t")
	for _, b := range r.Blocks {
		fmt.Fprintf(tw, "%d\t%d\t%s\t%.1f%%\t\n", b.Index, b.Nodes, thousands(b.Params), 100*b.Share)
	}
	tw.Flush()
	for _, b := range r.Blocks {
		out := b.Output
		if out == "" {
			out = "(fused into the final norm)"
		}
		fmt.Fprintf(w, "  block %d: %s → %s\n", b.Index, b.Input, out)
	}
	if len(r.KVPairs) == 0 {
		fmt.Fprintln(w, "KV cache: none")
		return
	}
	fmt.Fprintf(w, "KV cache: %d pairs\n", len(r.KVPairs))
	for _, kv := range r.KVPairs {
		fmt.Fprintf(w, "  layer %d: %s → %s\n", kv.Layer, strings.Join(kv.Inputs, ", "), strings.Join(kv.Outputs, ", "))
	}
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	sort.Strings(k)
	return k
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func shapeString(dims []any) string {
	parts := make([]string, len(dims))
	for i, d := range dims {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
