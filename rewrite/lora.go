package rewrite

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
)

// Default LoRA target patterns (regular expressions over a MatMul/Gemm
// node's name and its weight's name).
const (
	// LoRAMLPTargets matches MLP projections (the thesis setting):
	// Llama's mlp/{gate,up,down}_proj, GPT-2's mlp/c_fc and c_proj.
	LoRAMLPTargets = `mlp|feed_forward|ffn`
	// LoRAAttentionTargets matches attention projections (q/k/v/o_proj,
	// GPT-2's attn/c_attn and c_proj). Products of two activations
	// (attention scores) never match: they have no constant weight.
	LoRAAttentionTargets = `attn|attention`
)

// LoRAConfig configures InsertLoRA.
type LoRAConfig struct {
	// Targets selects the MatMul/Gemm nodes to adapt: a regular
	// expression matched against the node's name and its weight's name.
	// Empty means LoRAMLPTargets.
	Targets string
	Rank    int
	Alpha   float64
	// Dropout adds one float input "lora.<name>.mask" per adapter,
	// multiplied into the adapter's input: the caller feeds 0 or
	// 1/(1−p) per element (a training graph); without it the adapter
	// reads x unchanged (an inference or adapter-input model).
	Dropout bool
}

// LoRAAdapter is one adapted weight. The node computes y = x·W (W
// effective [In, Out]) and now also (α/r)·((x·Aᵀ)·Bᵀ), A [Rank, In] and B
// [Out, Rank] (PEFT's layout) fed as graph inputs A and B.
type LoRAAdapter struct {
	Name   string `json:"name"`   // module path (PEFT-style, e.g. model.layers.0.mlp.gate_proj) or weight name
	Node   string `json:"node"`   // the MatMul/Gemm node
	Weight string `json:"weight"` // the initializer holding W
	In     int    `json:"in"`
	Out    int    `json:"out"`
	// OutMajor: the initializer is stored [Out, In] (Gemm transB=1, or a
	// Transpose between it and the node); otherwise [In, Out].
	OutMajor bool `json:"out_major"`
	// GemmAlpha is the node's alpha (1 for MatMul): the effective weight
	// is GemmAlpha·W.
	GemmAlpha float64 `json:"gemm_alpha"`
	Op        string  `json:"op"`             // MatMul or Gemm
	A         string  `json:"a"`              // graph input [Rank, In]
	B         string  `json:"b"`              // graph input [Out, Rank]
	Mask      string  `json:"mask,omitempty"` // dropout mask input (LoRAConfig.Dropout)
}

// LoRAError is a LoRA configuration the model cannot take.
type LoRAError struct{ Msg string }

func (e *LoRAError) Error() string { return e.Msg }

// FindLoRATargets lists the MatMul/Gemm nodes of the main graph that
// targets matches (node or weight name) and whose weight is a constant 2-D
// floating-point initializer, reached directly or through Transpose,
// Cast and Identity.
func FindLoRATargets(m *graph.Model, targets string) ([]LoRAAdapter, error) {
	ads, _, err := findLoRATargets(m, targets)
	return ads, err
}

func findLoRATargets(m *graph.Model, targets string) ([]LoRAAdapter, []*onnxpb.NodeProto, error) {
	if targets == "" {
		targets = LoRAMLPTargets
	}
	re, err := regexp.Compile(targets)
	if err != nil {
		return nil, nil, &LoRAError{fmt.Sprintf("LoRA targets %q: %v", targets, err)}
	}
	g := m.Proto.GetGraph()
	s := &weightScope{ix: graph.NewIndex(g)}
	var out []LoRAAdapter
	var outNodes []*onnxpb.NodeProto
	var seen []string // weight names of every linear layer, for the error
	names := map[string]int{}
	for _, n := range g.GetNode() {
		w, ok := s.linearOf(n)
		if !ok {
			continue
		}
		seen = append(seen, w.Name)
		if !re.MatchString(n.GetName()) && !re.MatchString(w.Name) {
			continue
		}
		// Merging changes the initializer: it must belong to this node
		// alone (a tied head shares the embedding table).
		if users := weightUsers(s.ix, n.GetInput()[1]); users > 1 {
			return nil, nil, &LoRAError{fmt.Sprintf("LoRA target %s: its weight %q is also read by another node (tied weights cannot take a mergeable adapter); narrow --targets", graph.NodeLabel(n), w.Name)}
		}
		a := LoRAAdapter{Name: loraName(n, w.Name), Node: n.GetName(), Op: n.GetOpType(), Weight: w.Name,
			In: w.In, Out: w.Out, OutMajor: w.OutMajor, GemmAlpha: 1}
		if n.GetOpType() == "Gemm" {
			for _, at := range n.GetAttribute() {
				if at.GetName() == "alpha" {
					a.GemmAlpha = float64(at.GetF())
				}
			}
			if a.GemmAlpha == 0 {
				return nil, nil, &LoRAError{fmt.Sprintf("LoRA target %s: Gemm alpha is 0", graph.NodeLabel(n))}
			}
		}
		names[a.Name]++
		out = append(out, a)
		outNodes = append(outNodes, n)
	}
	for i := range out {
		if names[out[i].Name] > 1 {
			out[i].Name = out[i].Weight
		}
		out[i].A, out[i].B = "lora."+out[i].Name+".A", "lora."+out[i].Name+".B"
	}
	if len(out) == 0 {
		ex := seen
		if len(ex) > 4 {
			ex = append(slices.Clone(ex[:4]), "…")
		}
		if len(seen) == 0 {
			return nil, nil, &LoRAError{fmt.Sprintf("LoRA targets %q match no MatMul/Gemm weight (the model has no MatMul/Gemm with a constant weight)", targets)}
		}
		return nil, nil, &LoRAError{fmt.Sprintf("LoRA targets %q match no MatMul/Gemm weight (weights look like %s)", targets, strings.Join(ex, ", "))}
	}
	return out, outNodes, nil
}

// weightUsers counts the nodes reading the weight behind a MatMul/Gemm
// weight input, looking through the weight-only chain.
func weightUsers(ix *graph.Index, name string) int {
	for range 16 {
		if len(ix.Consumers[name]) > 1 || ix.Outputs[name] {
			return len(ix.Consumers[name]) + 1
		}
		p := ix.Producer[name]
		if p == nil || len(p.GetInput()) == 0 {
			return 1
		}
		name = p.GetInput()[0]
	}
	return 1
}

var modulePathRe = regexp.MustCompile(`^/(.+)/(MatMul|Gemm)(_\d+)?$`)

// loraName derives a PEFT-style module path from an exporter's node name
// (/model/layers.0/mlp/gate_proj/MatMul → model.layers.0.mlp.gate_proj),
// else the weight's name without ".weight".
func loraName(n *onnxpb.NodeProto, weight string) string {
	if m := modulePathRe.FindStringSubmatch(n.GetName()); m != nil {
		return strings.ReplaceAll(m[1], "/", ".")
	}
	return strings.TrimSuffix(weight, ".weight")
}

// InsertLoRA adds a LoRA branch beside every target weight: the node's
// output y becomes y + (α/r)·((x·Aᵀ)·Bᵀ) with A, B new float32 graph
// inputs (cast to x's type when that is not float32). No weight changes;
// with B = 0 the model computes what it did before.
func InsertLoRA(m *graph.Model, cfg LoRAConfig) ([]LoRAAdapter, error) {
	if cfg.Rank <= 0 {
		return nil, &LoRAError{fmt.Sprintf("LoRA rank %d: must be positive", cfg.Rank)}
	}
	ads, tnodes, err := findLoRATargets(m, cfg.Targets)
	if err != nil {
		return nil, err
	}
	g := m.Proto.GetGraph()
	ix := graph.NewIndex(g)
	for _, a := range ads {
		if ix.Inputs[a.A] != nil || ix.Producer[a.A] != nil || ix.Initializers[a.A] != nil {
			return nil, &LoRAError{fmt.Sprintf("LoRA: the model already has a tensor %q (adapters inserted twice?)", a.A)}
		}
	}
	scale := cfg.Alpha / float64(cfg.Rank)
	byNode := map[*onnxpb.NodeProto]int{}
	for i, n := range tnodes {
		byNode[n] = i
	}
	var nodes []*onnxpb.NodeProto
	for _, n := range g.GetNode() {
		nodes = append(nodes, n)
		k, ok := byNode[n]
		if !ok {
			continue
		}
		a := &ads[k]
		x, y := n.GetInput()[0], n.GetOutput()[0]
		xt := ix.ElemType(x)
		if xt == 0 {
			xt = int32(onnxpb.TensorProto_FLOAT)
		}
		p := "/lora/" + a.Name + "/"
		base := p + "base"
		n.Output[0] = base
		r := int64(cfg.Rank)
		g.Input = append(g.Input, loraFloatInput(a.A, []any{r, int64(a.In)}), loraFloatInput(a.B, []any{int64(a.Out), r}))
		A, B := a.A, a.B
		if xt != int32(onnxpb.TensorProto_FLOAT) {
			nodes = append(nodes, loraCast(p+"CastA", A, p+"A", xt), loraCast(p+"CastB", B, p+"B", xt))
			A, B = p+"A", p+"B"
		}
		in := x
		if cfg.Dropout {
			a.Mask = "lora." + a.Name + ".mask"
			g.Input = append(g.Input, &onnxpb.ValueInfoProto{Name: proto.String(a.Mask), Type: loraTensorType(int32(onnxpb.TensorProto_FLOAT), nil)})
			mask := a.Mask
			if xt != int32(onnxpb.TensorProto_FLOAT) {
				nodes = append(nodes, loraCast(p+"CastMask", mask, p+"mask", xt))
				mask = p + "mask"
			}
			nodes = append(nodes, loraNode("Mul", p+"Dropout", []string{x, mask}, []string{p + "dropped"}))
			in = p + "dropped"
		}
		sc := p + "scaling"
		g.Initializer = append(g.Initializer, scalarTensor(sc, xt, scale))
		nodes = append(nodes,
			loraNode("Transpose", p+"TransposeA", []string{A}, []string{p + "At"}, loraPerm()),
			loraNode("MatMul", p+"MatMulA", []string{in, p + "At"}, []string{p + "xa"}),
			loraNode("Transpose", p+"TransposeB", []string{B}, []string{p + "Bt"}, loraPerm()),
			loraNode("MatMul", p+"MatMulB", []string{p + "xa", p + "Bt"}, []string{p + "xab"}),
			loraNode("Mul", p+"Scale", []string{p + "xab", sc}, []string{p + "delta"}),
			loraNode("Add", p+"Add", []string{base, p + "delta"}, []string{y}),
		)
	}
	g.Node = nodes
	return ads, nil
}

func loraNode(op, name string, in, out []string, attrs ...*onnxpb.AttributeProto) *onnxpb.NodeProto {
	return &onnxpb.NodeProto{OpType: proto.String(op), Name: proto.String(name), Input: in, Output: out, Attribute: attrs}
}

func loraCast(name, in, out string, to int32) *onnxpb.NodeProto {
	return loraNode("Cast", name, []string{in}, []string{out}, &onnxpb.AttributeProto{
		Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(to))})
}

func loraPerm() *onnxpb.AttributeProto {
	return &onnxpb.AttributeProto{Name: proto.String("perm"), Type: onnxpb.AttributeProto_INTS.Enum(), Ints: []int64{1, 0}}
}

// tensorType builds a tensor type; dims holds int64 sizes and string
// parameters; nil dims leaves the shape (and rank) unspecified.
func loraTensorType(et int32, dims []any) *onnxpb.TypeProto {
	tt := &onnxpb.TypeProto_Tensor{ElemType: proto.Int32(et)}
	if dims != nil {
		sh := &onnxpb.TensorShapeProto{}
		for _, d := range dims {
			switch v := d.(type) {
			case int64:
				sh.Dim = append(sh.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimValue{DimValue: v}})
			case string:
				sh.Dim = append(sh.Dim, &onnxpb.TensorShapeProto_Dimension{Value: &onnxpb.TensorShapeProto_Dimension_DimParam{DimParam: v}})
			}
		}
		tt.Shape = sh
	}
	return &onnxpb.TypeProto{Value: &onnxpb.TypeProto_TensorType{TensorType: tt}}
}

func loraFloatInput(name string, dims []any) *onnxpb.ValueInfoProto {
	return &onnxpb.ValueInfoProto{Name: proto.String(name), Type: loraTensorType(int32(onnxpb.TensorProto_FLOAT), dims)}
}
