package graph_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
)

// Per-block parameter counts from the architectures, not from the code:
// stories260K: dim 64, 8 heads, 4 KV heads (kv dim 32), FFN 172, two
// RMSNorm weights; GPT-2 fixture: 64 wide, 4×64 MLP, biases, two
// LayerNorms with bias.
const (
	storiesBlockParams = 64*64 + 2*(64*32) + 64*64 + 3*(64*172) + 2*64
	gpt2BlockParams    = 2*(2*64) + (64*192 + 192) + (64*64 + 64) + (64*256 + 256) + (256*64 + 64)
)

func fixture(t *testing.T, name string) string {
	t.Helper()
	p := filepath.Join("..", "testdata", "models", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fixture %s missing (regenerate with testdata/gen): %v", name, err)
	}
	return p
}

func TestFindBlocksFixtures(t *testing.T) {
	cases := []struct {
		file   string
		blocks int
		params int64
		kv     bool
	}{
		{"stories260k.onnx", 5, storiesBlockParams, false},
		{"stories260k_kv.onnx", 5, storiesBlockParams, true},
		{"gpt2_kv.onnx", 6, gpt2BlockParams, true},
		{"gpt2_kv_static.onnx", 6, gpt2BlockParams, true},
		// onnxruntime-optimized copies: fused MatMuls and GELUs, and in
		// the static one the last residual Add fused into the final norm.
		{"stories260k_kv_ortopt.onnx", 5, storiesBlockParams, true},
		{"gpt2_kv_ortopt.onnx", 6, gpt2BlockParams, true},
		{"gpt2_kv_static_ortopt.onnx", 6, gpt2BlockParams, true},
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			m, err := graph.Load(fixture(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			d, err := graph.FindBlocks(m)
			if err != nil {
				t.Fatal(err)
			}
			checkDecoder(t, d, c.blocks, c.params, c.kv)
			last := d.Blocks[len(d.Blocks)-1]
			fused := last.OutputSite.Node.GetOpType() == "SkipLayerNormalization"
			if fused != strings.HasSuffix(c.file, "static_ortopt.onnx") || fused != (last.Output == "") {
				t.Errorf("last block ends at a %s with output %q", last.OutputSite.Node.GetOpType(), last.Output)
			}
		})
	}
}

func checkDecoder(t *testing.T, d *graph.Decoder, blocks int, params int64, kv bool) {
	t.Helper()
	if len(d.Blocks) != blocks {
		t.Fatalf("found %d blocks, want %d", len(d.Blocks), blocks)
	}
	seen := map[*onnxpb.NodeProto]int{}
	for i, b := range d.Blocks {
		if b.Index != i {
			t.Errorf("block %d has index %d", i, b.Index)
		}
		if params > 0 && b.Params != params {
			t.Errorf("block %d: %d parameters, want %d", i, b.Params, params)
		}
		if i > 0 && b.Input != d.Blocks[i-1].Output {
			t.Errorf("block %d input %q is not block %d's output %q", i, b.Input, i-1, d.Blocks[i-1].Output)
		}
		var wantIn, wantOut []string
		if kv {
			wantIn = []string{fmt.Sprintf("past_key_values.%d.key", i), fmt.Sprintf("past_key_values.%d.value", i)}
			wantOut = []string{fmt.Sprintf("present.%d.key", i), fmt.Sprintf("present.%d.value", i)}
		}
		if !slices.Equal(b.KVInputs, wantIn) || !slices.Equal(b.KVOutputs, wantOut) {
			t.Errorf("block %d KV = %v → %v, want %v → %v", i, b.KVInputs, b.KVOutputs, wantIn, wantOut)
		}
		for _, n := range b.Nodes {
			if j, dup := seen[n]; dup {
				t.Errorf("node %s in blocks %d and %d", graph.NodeLabel(n), j, i)
			}
			seen[n] = i
		}
	}
	if d.Embedding.Params == 0 || d.LMHead.Params == 0 || len(d.FinalNorm.Nodes) == 0 {
		t.Errorf("embedding %d params, head %d params, final norm %d nodes: want all non-zero",
			d.Embedding.Params, d.LMHead.Params, len(d.FinalNorm.Nodes))
	}
}

// TestFindBlocksWithoutNames strips every node name and renames the
// weights anonymously: the residual structure alone must still give the
// five blocks.
func TestFindBlocksWithoutNames(t *testing.T) {
	m, err := graph.Load(fixture(t, "stories260k.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	g := m.Proto.Graph
	for _, n := range g.Node {
		n.Name = nil
	}
	rename := map[string]string{}
	for i, w := range g.Initializer {
		if w.GetName() == "model.embed_tokens.weight" {
			continue
		}
		rename[w.GetName()] = fmt.Sprintf("w%d", i)
		w.Name = proto.String(rename[w.GetName()])
	}
	for _, n := range g.Node {
		for i, in := range n.Input {
			if r, ok := rename[in]; ok {
				n.Input[i] = r
			}
		}
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	checkDecoder(t, d, 5, storiesBlockParams, false)
}

func TestFindBlocksRefusesNonDecoders(t *testing.T) {
	emb := make([]float32, 16*4)
	cases := map[string]*graph.Model{
		"no embedding": linear(4),
		"one residual section": irtest.New("g").Input("ids").Init("E", emb, 16, 4).Init("W", make([]float32, 16), 4, 4).
			Node("Gather", "emb", []string{"E", "ids"}, []string{"h0"}).
			Node("MatMul", "mm", []string{"h0", "W"}, []string{"b"}).
			Node("Add", "res", []string{"h0", "b"}, []string{"h1"}).
			Output("h1", 4).Model(),
		"residual sections without matrix products": irtest.New("g").Input("ids").Init("E", emb, 16, 4).
			Node("Gather", "emb", []string{"E", "ids"}, []string{"h0"}).
			Node("Relu", "r0", []string{"h0"}, []string{"b0"}).Node("Add", "a0", []string{"h0", "b0"}, []string{"h1"}).
			Node("Relu", "r1", []string{"h1"}, []string{"b1"}).Node("Add", "a1", []string{"h1", "b1"}, []string{"h2"}).
			Node("Relu", "r2", []string{"h2"}, []string{"b2"}).Node("Add", "a2", []string{"h2", "b2"}, []string{"h3"}).
			Node("Relu", "r3", []string{"h3"}, []string{"b3"}).Node("Add", "a3", []string{"h3", "b3"}, []string{"h4"}).
			Output("h4", 4).Model(),
	}
	// The graph input "ids" is declared float by the builder; block
	// discovery only needs it to be a graph input.
	for name, m := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := graph.FindBlocks(m)
			if !errors.Is(err, graph.ErrNoBlocks) {
				t.Fatalf("FindBlocks = %v, want ErrNoBlocks", err)
			}
		})
	}
}

// TestFindBlocksBuilderModels: models from our builder read weights
// through weight-only ops (a tied head is Transpose(embedding); float16
// weights are Cast). The counts must still follow the architecture.
func TestFindBlocksBuilderModels(t *testing.T) {
	const L, H, KV, F, V = 3, 64, 4, 96, 100 // 8 heads of 8, 4 KV heads
	blockParams := int64(H*H + 2*(H*KV*8) + H*H + 3*H*F + 2*H)
	for _, dt := range []convert.DType{convert.Float32, convert.Float16} {
		for _, tied := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/tied=%v", dt, tied), func(t *testing.T) {
				cfg := convert.Config{Family: convert.FamilyLlama, Layers: L, Hidden: H, Heads: 8, KVHeads: KV,
					FFN: F, Vocab: V, TiedEmbeddings: tied, BOS: 1, EOS: 2}
				p := filepath.Join(t.TempDir(), "m.onnx")
				if err := convert.Build(convert.Synthetic(cfg, 3), p, convert.BuildOptions{DType: dt}); err != nil {
					t.Fatal(err)
				}
				m, err := graph.Load(p)
				if err != nil {
					t.Fatal(err)
				}
				d, err := graph.FindBlocks(m)
				if err != nil {
					t.Fatal(err)
				}
				checkDecoder(t, d, L, blockParams, true)
				if d.LMHead.Params != V*H || d.LMHead.Tied != tied || d.FinalNorm.Params != H || d.Embedding.Params != V*H {
					t.Errorf("head %d params (tied %v), final norm %d, embedding %d; want %d (tied %v), %d, %d",
						d.LMHead.Params, d.LMHead.Tied, d.FinalNorm.Params, d.Embedding.Params, V*H, tied, H, V*H)
				}
			})
		}
	}
}

// TestFindBlocksSingleNamedBlock: a model pruned down to one block is
// still a decoder when its names say so.
func TestFindBlocksSingleNamedBlock(t *testing.T) {
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 1, Hidden: 32, Heads: 4, KVHeads: 2, FFN: 48, Vocab: 50, BOS: 1, EOS: 2}
	p := filepath.Join(t.TempDir(), "m.onnx")
	if err := convert.Build(convert.Synthetic(cfg, 1), p, convert.BuildOptions{}); err != nil {
		t.Fatal(err)
	}
	m, err := graph.Load(p)
	if err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Blocks) != 1 || len(d.Blocks[0].KVInputs) != 2 {
		t.Fatalf("%d blocks, KV %v", len(d.Blocks), d.Blocks[0].KVInputs)
	}
}

func TestFormatBlocks(t *testing.T) {
	for _, c := range []struct {
		in   []int
		want string
	}{{nil, ""}, {[]int{3}, "3"}, {[]int{2, 3, 4}, "2-4"}, {[]int{1, 4}, "1,4"}, {[]int{0, 1, 5, 7, 8}, "0-1,5,7-8"}} {
		if got := graph.FormatBlocks(c.in); got != c.want {
			t.Errorf("FormatBlocks(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
