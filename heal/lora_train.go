package heal

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// Names the loss rewrite gives its inputs and output.
const (
	lossOutput   = "loss_sum"
	labelsInput  = "labels"
	weightsInput = "label_weights"
	gradPrefix   = "grad."
)

// TrainLoRA trains LoRA adapters on m (frozen) with next-token loss over
// the packed train sequences, evaluating perplexity on val (one sequence
// per sample, BOS first).
//
// The training graph is m with the LoRA branches (A, B and dropout masks
// as inputs), the summed weighted next-token NLL and its gradients with
// respect to every A and B, run as an ordinary onnxruntime session. Each
// optimizer step sums loss and gradients over Accumulate micro-batches of
// BatchSize packed rows and divides by the targets they hold (a
// token-weighted mean), clips the global norm, and applies AdamW at the
// cosine-with-warm-up learning rate.
func TrainLoRA(ctx context.Context, m *graph.Model, train, val [][]int, opts LoRAOptions) (*LoRAResult, error) {
	o := opts.withDefaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	ad, err := NewAdapters(m, o.Targets, o.Rank, o.Alpha, o.Seed)
	if err != nil {
		return nil, err
	}
	ad.Dropout = o.Dropout
	packed := Pack(train, o.SeqLen)
	if packed.Rows < o.BatchSize {
		return nil, errSmallData(len(packed.Stream), o.BatchSize, o.SeqLen)
	}
	t, err := newLoRATrainer(m, ad, o)
	if err != nil {
		return nil, err
	}
	defer t.close()
	res := &LoRAResult{TrainTokens: len(packed.Stream), TrainRows: packed.Rows, Adapted: len(ad.Layers), TrainableParams: ad.Params()}
	valBatches := calib.Batches(val, o.ValBatchSize)
	res.ValSamples = len(val)

	params := ad.params()
	sizes := make([]int, len(params))
	for k, p := range params {
		sizes[k] = len(p)
	}
	opt := NewAdamW(sizes, o.WeightDecay)
	order := &rowOrder{seed: o.Seed, rows: packed.Rows}
	var pos int64
	step0 := 0
	best, bestPPL, bestStep := ad.Clone(), 0.0, 0
	ck, err := loadCheckpoint(o.CheckpointDir, ad, opt, o)
	if err != nil {
		return nil, err
	}
	if ck != nil {
		step0, pos = ck.Step, ck.Position
		res.ResumedFrom = ck.Step
		res.History, res.InitialValPPL, res.ValTokens = ck.History, ck.InitialValPPL, ck.ValTokens
		best, bestPPL, bestStep = ck.best, ck.BestValPPL, ck.BestStep
	} else if len(valBatches) > 0 {
		ppl, n, err := t.perplexity(ctx, ad, valBatches)
		if err != nil {
			return nil, err
		}
		res.InitialValPPL, res.ValTokens, bestPPL = ppl, n, ppl
	}

	// One forward pass of the adapter model over a training batch: the
	// yardstick for a training step's cost.
	fwRows := order.take(0, o.BatchSize)
	fw, err := t.forwardSeconds(ad, packed, fwRows)
	if err != nil {
		return nil, err
	}

	grads := make([][]float64, len(params))
	for k := range grads {
		grads[k] = make([]float64, sizes[k])
	}
	tokensPerStep := o.Accumulate * o.BatchSize * o.SeqLen
	var trainTime time.Duration
	var mbTimes []float64
	for step := step0; step < o.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		st := time.Now()
		lr := CosineLR(o.LR, step, o.WarmupSteps, o.Steps)
		for _, g := range grads {
			clear(g)
		}
		var lossSum, wsum float64
		for mb := range o.Accumulate {
			ms := time.Now()
			rows := order.take(pos, o.BatchSize)
			pos += int64(o.BatchSize)
			rng := rand.New(rand.NewPCG(o.Seed^0x64726f70, uint64(step*o.Accumulate+mb))) // "drop"
			l, w, err := t.microBatch(ad, packed, rows, rng, grads)
			if err != nil {
				return nil, err
			}
			lossSum += l
			wsum += w
			if step > step0 || mb > 0 { // the first run pays one-time costs
				mbTimes = append(mbTimes, time.Since(ms).Seconds())
			}
		}
		if wsum == 0 {
			return nil, fmt.Errorf("lora: step %d has no target tokens", step+1)
		}
		for _, g := range grads {
			for i := range g {
				g[i] /= wsum
			}
		}
		loss := lossSum / wsum
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nil, fmt.Errorf("lora: the loss diverged (%g) at step %d; lower --lr", loss, step+1)
		}
		ClipGradNorm(grads, o.MaxGradNorm)
		opt.Update(params, grads, lr)
		trainTime += time.Since(st)
		done := step + 1
		sps := float64(done-step0) / trainTime.Seconds()
		p := TrainProgress{Step: done, Steps: o.Steps, Loss: loss, LR: lr, StepsPerSec: sps, TokensPerSec: sps * float64(tokensPerStep),
			Remaining: time.Duration(float64(o.Steps-done) / sps * float64(time.Second))}
		if len(valBatches) > 0 && (done%o.EvalEvery == 0 || done == o.Steps) {
			ppl, n, err := t.perplexity(ctx, ad, valBatches)
			if err != nil {
				return nil, err
			}
			p.ValPPL, res.ValTokens = ppl, n
			// Time forward passes again now and then: on a shared
			// machine a single early measurement is noisy.
			more, err := t.forwardSeconds(ad, packed, fwRows)
			if err != nil {
				return nil, err
			}
			fw = append(fw, more...)
			if ppl < bestPPL {
				best, bestPPL, bestStep = ad.Clone(), ppl, done
			}
		}
		res.History = append(res.History, p)
		if o.Progress != nil {
			o.Progress(p)
		}
		if o.CheckpointDir != "" && (done%o.CheckpointEvery == 0 || done == o.Steps) {
			c := &checkpoint{Step: done, Position: pos, InitialValPPL: res.InitialValPPL, BestValPPL: bestPPL, BestStep: bestStep,
				ValTokens: res.ValTokens, History: res.History, best: best}
			if err := saveCheckpoint(o.CheckpointDir, c, ad, opt, o); err != nil {
				return nil, err
			}
		}
	}
	if len(valBatches) == 0 {
		best, bestStep = ad.Clone(), o.Steps
	}
	res.Adapters, res.BestValPPL, res.BestStep = best, bestPPL, bestStep
	if n := len(res.History); n > 0 {
		last := res.History[n-1]
		res.StepsPerSec, res.TokensPerSec, res.FinalValPPL = last.StepsPerSec, last.TokensPerSec, last.ValPPL
	}
	slices.Sort(fw)
	res.ForwardSeconds = fw[len(fw)/2]
	if len(mbTimes) > 0 {
		slices.Sort(mbTimes)
		res.StepSeconds = mbTimes[len(mbTimes)/2]
		if res.ForwardSeconds > 0 {
			res.StepForward = res.StepSeconds / res.ForwardSeconds
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

// params lists A0, B0, A1, B1, … (shared slices: updates change a).
func (a *Adapters) params() [][]float64 {
	var p [][]float64
	for k := range a.A {
		p = append(p, a.A[k], a.B[k])
	}
	return p
}

// loraTrainer holds the two sessions: the training graph (loss and
// gradients) and the adapter model (logits, for validation).
type loraTrainer struct {
	o          LoRAOptions
	layers     []rewrite.LoRAAdapter
	train, inf *ort.Session
	trainIn    []ort.IOInfo
	infIn      []ort.IOInfo
	fetch      []string // loss_sum, then grad.A0, grad.B0, …
	logits     string
}

func newLoRATrainer(m *graph.Model, ad *Adapters, o LoRAOptions) (*loraTrainer, error) {
	logits := logitsName(m)
	if logits == "" {
		return nil, fmt.Errorf("lora: the model has no logits output")
	}
	tm := cloneModel(m)
	layers, err := rewrite.InsertLoRA(tm, rewrite.LoRAConfig{Targets: o.Targets, Rank: o.Rank, Alpha: o.Alpha, Dropout: o.Dropout > 0})
	if err != nil {
		return nil, err
	}
	if err := ad.sameLayers(layers); err != nil {
		return nil, err
	}
	// Only the loss is needed from the training graph.
	keepOutputs(tm, logits)
	if err := rewrite.AppendNextTokenLoss(tm, logits); err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	t := &loraTrainer{o: o, layers: layers, logits: logits}
	var wrt []string
	for _, l := range layers {
		wrt = append(wrt, l.A, l.B)
	}
	// Ranks of every tensor from one small run (the gradient rules need
	// them where shapes are symbolic).
	probe, err := t.probeFeeds(tm, ad, min(o.SeqLen, 8))
	if err != nil {
		return nil, err
	}
	ro := o.Runtime
	ro.ExternalDataDir = m.Dir
	ranks, err := ProbeRanks(tm, nil, probe, ro)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	if err := rewrite.Gradient(tm, rewrite.GradientOptions{Loss: lossOutput, WithRespectTo: wrt, Ranks: ranks}); err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	t.fetch = []string{lossOutput}
	for _, n := range wrt {
		t.fetch = append(t.fetch, gradPrefix+n)
	}
	keepOutputs(tm, t.fetch...)
	data, err := proto.Marshal(tm.Proto)
	if err != nil {
		return nil, err
	}
	tro := ro
	tro.Outputs = t.fetch
	if t.train, err = ort.NewSessionFromBytes(data, tro); err != nil {
		return nil, fmt.Errorf("lora: training graph: %w", err)
	}
	im, err := ad.AdapterModel(m)
	if err != nil {
		t.close()
		return nil, err
	}
	keepOutputs(im, logits)
	if data, err = proto.Marshal(im.Proto); err != nil {
		t.close()
		return nil, err
	}
	iro := ro
	iro.Outputs = []string{logits}
	if t.inf, err = ort.NewSessionFromBytes(data, iro); err != nil {
		t.close()
		return nil, fmt.Errorf("lora: adapter model: %w", err)
	}
	t.trainIn, t.infIn = t.train.Inputs(), t.inf.Inputs()
	return t, nil
}

func (t *loraTrainer) close() {
	if t.train != nil {
		t.train.Close()
	}
	if t.inf != nil {
		t.inf.Close()
	}
}

// logitsName is the model's logits output ("logits", else the first).
func logitsName(m *graph.Model) string {
	outs := m.Proto.GetGraph().GetOutput()
	for _, o := range outs {
		if o.GetName() == "logits" {
			return "logits"
		}
	}
	if len(outs) > 0 {
		return outs[0].GetName()
	}
	return ""
}

// keepOutputs drops every graph output but names (present.* KV outputs
// would only cost time).
func keepOutputs(m *graph.Model, names ...string) {
	g := m.Proto.GetGraph()
	var outs = g.Output[:0]
	for _, o := range g.Output {
		for _, n := range names {
			if o.GetName() == n {
				outs = append(outs, o)
				break
			}
		}
	}
	g.Output = outs
}

// probeFeeds is a one-row batch of seq tokens for every input of the
// training graph (declared in m's proto; no session yet).
func (t *loraTrainer) probeFeeds(m *graph.Model, ad *Adapters, seq int) (map[string]*ort.Tensor, error) {
	var infos []ort.IOInfo
	for _, vi := range m.Proto.GetGraph().GetInput() {
		info := ort.IOInfo{Name: vi.GetName()}
		tt := vi.GetType().GetTensorType()
		info.DType = ort.DType(tt.GetElemType())
		if sh := tt.GetShape(); sh != nil {
			info.Shape = []int64{}
			for _, d := range sh.GetDim() {
				if d.GetDimParam() != "" || d.Value == nil {
					info.Shape = append(info.Shape, -1)
				} else {
					info.Shape = append(info.Shape, d.GetDimValue())
				}
			}
		}
		infos = append(infos, info)
	}
	ids := make([]int64, seq)
	labels := make([]int64, seq)
	w := make([]float32, seq)
	for i := range w {
		ids[i], labels[i], w[i] = int64(1+i%2), int64(1+(i+1)%2), 1
	}
	mask := make([]int64, seq)
	for i := range mask {
		mask[i] = 1
	}
	f, err := t.feeds(infos, ad, ids, mask, 1, seq, labels, w, nil)
	return f, err
}

// feeds builds a run's inputs: the decoder's (ids, mask, positions along
// real tokens, an empty KV cache), the adapters, and — for the training
// graph — labels, weights and dropout masks (drawn from rng; nil: none).
func (t *loraTrainer) feeds(infos []ort.IOInfo, ad *Adapters, ids, mask []int64, batch, seq int, labels []int64, w []float32, rng *rand.Rand) (map[string]*ort.Tensor, error) {
	f, err := ad.Feeds()
	if err != nil {
		return nil, err
	}
	masks := map[string]int{}
	for k, l := range t.layers {
		if l.Mask != "" {
			masks[l.Mask] = k
		}
	}
	shape := []int64{int64(batch), int64(seq)}
	p := t.o.Dropout
	for _, in := range infos {
		if _, ok := f[in.Name]; ok {
			continue
		}
		switch {
		case in.Name == "input_ids":
			f[in.Name], err = ort.NewInt64(shape, ids)
		case in.Name == "attention_mask":
			f[in.Name], err = ort.NewInt64(shape, mask)
		case in.Name == "position_ids":
			pos := make([]int64, len(ids))
			for b := range batch {
				n := int64(0)
				for s := range seq {
					pos[b*seq+s] = n
					if mask[b*seq+s] != 0 {
						n++
					}
				}
			}
			f[in.Name], err = ort.NewInt64(shape, pos)
		case strings.HasPrefix(in.Name, "past_key_values."):
			if len(in.Shape) != 4 {
				return nil, fmt.Errorf("lora: KV input %s has shape %v, want [batch, heads, past, head_dim]", in.Name, in.Shape)
			}
			f[in.Name], err = ort.Zeros(in.DType, []int64{int64(batch), in.Shape[1], 0, in.Shape[3]})
		case in.Name == labelsInput && labels != nil:
			f[in.Name], err = ort.NewInt64(shape, labels)
		case in.Name == weightsInput && w != nil:
			f[in.Name], err = ort.NewFloat32(shape, w)
		default:
			k, ok := masks[in.Name]
			if !ok {
				return nil, fmt.Errorf("lora: unsupported model input %q (expected input_ids, attention_mask, position_ids, past_key_values.N.key/value)", in.Name)
			}
			l := t.layers[k]
			ms := []int64{int64(batch), int64(seq), int64(l.In)}
			if l.Op == "Gemm" {
				ms = []int64{int64(batch * seq), int64(l.In)}
			}
			v := make([]float32, batch*seq*l.In)
			dropoutMask(v, p, rng)
			f[in.Name], err = ort.NewFloat32(ms, v)
		}
		if err != nil {
			return nil, err
		}
	}
	return f, nil
}

// packedBatch gathers packed rows into ids, shifted labels, their loss
// weights and an all-ones attention mask (packed rows hold no padding).
func packedBatch(p *Packed, rows []int) (ids, labels []int64, w []float32, mask []int64) {
	n := len(rows) * p.SeqLen
	ids, labels, w, mask = make([]int64, n), make([]int64, n), make([]float32, n), make([]int64, n)
	p.Batch(rows, ids, labels, w)
	for i := range mask {
		mask[i] = 1
	}
	return ids, labels, w, mask
}

// microBatch runs the training graph on rows, adds the gradients to
// grads and returns the summed loss and target weight.
func (t *loraTrainer) microBatch(ad *Adapters, p *Packed, rows []int, rng *rand.Rand, grads [][]float64) (loss, weight float64, err error) {
	B, S := len(rows), p.SeqLen
	ids, labels, w, mask := packedBatch(p, rows)
	f, err := t.feeds(t.trainIn, ad, ids, mask, B, S, labels, w, rng)
	if err != nil {
		return 0, 0, err
	}
	out, err := t.train.Run(f, t.fetch)
	if err != nil {
		return 0, 0, fmt.Errorf("lora: training step: %w", err)
	}
	lv, err := floats(out[lossOutput], lossOutput)
	if err != nil || len(lv) != 1 {
		return 0, 0, fmt.Errorf("lora: %s: %v (%d values)", lossOutput, err, len(lv))
	}
	for k, name := range t.fetch[1:] {
		g, err := floats(out[name], name)
		if err != nil {
			return 0, 0, err
		}
		if len(g) != len(grads[k]) {
			return 0, 0, fmt.Errorf("lora: %s has %d values, want %d", name, len(g), len(grads[k]))
		}
		for i, x := range g {
			grads[k][i] += x
		}
	}
	for _, x := range w {
		weight += float64(x)
	}
	return lv[0], weight, nil
}

func floats(t *ort.Tensor, name string) ([]float64, error) {
	if t == nil {
		return nil, fmt.Errorf("lora: onnxruntime returned no %q", name)
	}
	if v, err := t.Float64s(); err == nil {
		return v, nil
	}
	v32, err := t.Float32s()
	if err != nil {
		return nil, fmt.Errorf("lora: %s: %w", name, err)
	}
	v := make([]float64, len(v32))
	for i, x := range v32 {
		v[i] = float64(x)
	}
	return v, nil
}

// perplexity scores the validation batches with the adapter model:
// token-weighted exp(mean NLL) in float64, as `onnxprune eval`.
func (t *loraTrainer) perplexity(ctx context.Context, ad *Adapters, batches []calib.Batch) (float64, int64, error) {
	var n eval.NLL
	for _, b := range batches {
		if err := ctx.Err(); err != nil {
			return 0, 0, err
		}
		f, err := t.feeds(t.infIn, ad, b.IDs, b.Mask, b.Size, b.SeqLen, nil, nil, nil)
		if err != nil {
			return 0, 0, err
		}
		out, err := t.inf.Run(f, []string{t.logits})
		if err != nil {
			return 0, 0, fmt.Errorf("lora: validation: %w", err)
		}
		lt := out[t.logits]
		if lt == nil {
			return 0, 0, fmt.Errorf("lora: validation: no %q output", t.logits)
		}
		logits, err := lt.Float32s()
		if err != nil {
			return 0, 0, fmt.Errorf("lora: validation logits: %w", err)
		}
		if len(lt.Shape) != 3 {
			return 0, 0, fmt.Errorf("lora: logits have shape %v, want [batch, seq, vocab]", lt.Shape)
		}
		if err := n.Add(logits, b.IDs, b.Mask, b.Size, b.SeqLen, int(lt.Shape[2]), 0); err != nil {
			return 0, 0, err
		}
	}
	if n.Tokens == 0 {
		return 0, 0, fmt.Errorf("lora: the validation samples hold no token to score")
	}
	return n.Perplexity(), n.Tokens, nil
}

// forwardSeconds times the adapter model's forward pass over one
// training batch: three runs after a warm-up.
func (t *loraTrainer) forwardSeconds(ad *Adapters, p *Packed, rows []int) ([]float64, error) {
	B, S := len(rows), p.SeqLen
	ids, _, _, mask := packedBatch(p, rows)
	f, err := t.feeds(t.infIn, ad, ids, mask, B, S, nil, nil, nil)
	if err != nil {
		return nil, err
	}
	var out []float64
	for i := range 4 {
		st := time.Now()
		if _, err := t.inf.Run(f, []string{t.logits}); err != nil {
			return nil, fmt.Errorf("lora: forward pass: %w", err)
		}
		if i > 0 {
			out = append(out, time.Since(st).Seconds())
		}
	}
	return out, nil
}

// dropoutMask fills v with 0 (probability p) or 1/(1−p), 16 random bits
// per element (p is resolved to 1/65536); all ones without rng.
func dropoutMask(v []float32, p float64, rng *rand.Rand) {
	if rng == nil || p == 0 {
		for i := range v {
			v[i] = 1
		}
		return
	}
	keep := float32(1 / (1 - p))
	thr := uint64(math.Round(p * 65536))
	for i := 0; i < len(v); i += 4 {
		r := rng.Uint64()
		for j := i; j < min(i+4, len(v)); j++ {
			if r&0xffff >= thr {
				v[j] = keep
			} else {
				v[j] = 0
			}
			r >>= 16
		}
	}
}
