package calib

import (
	"context"
	"fmt"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// Taps returns a copy of m that also outputs the residual stream at every
// block boundary, h_0 … h_L, and those tensor names in order. Only the
// graph's output list and any fused node whose residual sum (output 3)
// was unnamed are copied; weights are shared with m, which is unchanged.
func Taps(m *graph.Model, d *graph.Decoder) (*graph.Model, []string, error) {
	g := &onnxpb.GraphProto{}
	src := m.Proto.GetGraph()
	g.Name, g.DocString = src.Name, src.DocString
	g.Input, g.Initializer, g.SparseInitializer, g.ValueInfo = src.Input, src.Initializer, src.SparseInitializer, src.ValueInfo
	g.Output = slices.Clone(src.Output)
	g.Node = slices.Clone(src.Node)
	mp := &onnxpb.ModelProto{
		IrVersion: m.Proto.IrVersion, OpsetImport: m.Proto.OpsetImport,
		ProducerName: m.Proto.ProducerName, ProducerVersion: m.Proto.ProducerVersion,
		Domain: m.Proto.Domain, ModelVersion: m.Proto.ModelVersion,
		Functions: m.Proto.Functions, Graph: g,
	}
	tapped := &graph.Model{Proto: mp, Path: m.Path, Dir: m.Dir}

	taps := []string{d.Blocks[0].Input}
	for _, b := range d.Blocks {
		name := b.Output
		if name == "" {
			// The sum is fused into a skip-norm that leaves output 3
			// unnamed: name it on a copy of the node.
			site := b.OutputSite
			i := slices.Index(g.Node, site.Node)
			if i < 0 {
				return nil, nil, fmt.Errorf("calib: fused site of block %d not in the graph", b.Index)
			}
			n := proto.CloneOf(site.Node)
			for len(n.Output) <= site.Output {
				n.Output = append(n.Output, "")
			}
			name = fmt.Sprintf("/onnxprune/h_%d", b.Index+1)
			n.Output[site.Output] = name
			g.Node[i] = n
		}
		taps = append(taps, name)
	}
	if err := rewrite.ExposeTensors(tapped, taps...); err != nil {
		return nil, nil, err
	}
	return tapped, taps, nil
}

// Options configure a calibration run.
type Options struct {
	Runtime ort.Options
	// Progress, when set, is called after each batch.
	Progress func(done, total int)
}

// Calibrate runs the batches through m with taps at every block boundary
// and streams the states into statistics. Memory holds one batch's states
// at a time.
func Calibrate(ctx context.Context, m *graph.Model, d *graph.Decoder, batches []Batch, opts Options) (*Stats, error) {
	if len(batches) == 0 {
		return nil, fmt.Errorf("calib: no calibration batches")
	}
	tapped, taps, err := Taps(m, d)
	if err != nil {
		return nil, err
	}
	data, err := proto.Marshal(tapped.Proto)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	ro := opts.Runtime
	ro.ExternalDataDir = m.Dir
	ro.Outputs = taps
	sess, err := ort.NewSessionFromBytes(data, ro)
	if err != nil {
		return nil, err
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		return nil, err
	}
	var acc *Accumulator
	states := make([][]float32, len(taps))
	for i, b := range batches {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		in, err := dec.Inputs(b.IDs, b.Mask, b.Positions, b.Size, b.SeqLen, nil)
		if err != nil {
			return nil, err
		}
		out, err := sess.Run(in, taps)
		if err != nil {
			return nil, err
		}
		for l, name := range taps {
			t := out[name]
			if states[l], err = t.Float32s(); err != nil {
				return nil, fmt.Errorf("calib: tap %s: %w", name, err)
			}
			if len(t.Shape) != 3 {
				return nil, fmt.Errorf("calib: tap %s has shape %v, want [batch, seq, hidden]", name, t.Shape)
			}
		}
		if acc == nil {
			acc = NewAccumulator(len(d.Blocks), int(out[taps[0]].Shape[2]))
		}
		if err := acc.Add(states, b.Mask, b.Size, b.SeqLen); err != nil {
			return nil, err
		}
		if opts.Progress != nil {
			opts.Progress(i+1, len(batches))
		}
	}
	return acc.Stats()
}
