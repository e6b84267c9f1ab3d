package heal

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/rewrite"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// API agreed between the LoRA trainer and `onnxprune run`: these names
// and fields stay.

// DefaultLoRATargets matches the MLP projections (thesis setting).
const DefaultLoRATargets = rewrite.LoRAMLPTargets

// LoRA defaults (the thesis setting).
const (
	DefaultLoRARank        = 8
	DefaultLoRAAlpha       = 8.0
	DefaultLoRADropout     = 0.05
	DefaultLoRALR          = 3e-4
	DefaultLoRAWeightDecay = 0.01
	DefaultLoRASteps       = 200
	DefaultLoRABatchSize   = 8
	DefaultLoRASeqLen      = 256
	DefaultLoRAEvalEvery   = 50
	DefaultLoRAMaxGradNorm = 1.0
)

// LoRAOptions configures TrainLoRA. Zero values take the defaults noted.
type LoRAOptions struct {
	Targets       string  // regexp over MatMul/Gemm node and weight names (DefaultLoRATargets)
	Rank          int     // r (8)
	Alpha         float64 // α (8)
	Dropout       float64 // LoRA dropout on the adapter input (0.05)
	LR            float64 // peak learning rate (3e-4)
	WeightDecay   float64 // AdamW decoupled weight decay (0.01)
	WarmupSteps   int     // linear warm-up, then cosine to 0 (10% of Steps; negative: none)
	Steps         int     // optimizer steps (200)
	BatchSize     int     // packed rows per micro-batch (8)
	SeqLen        int     // tokens per packed row (256)
	Accumulate    int     // micro-batches per optimizer step (1)
	EvalEvery     int     // validation perplexity every K steps; the best is kept (50)
	Seed          uint64  // adapter init, dropout, data order
	CheckpointDir string  // adapter checkpoints; resumes from the newest one there ("" = none)
	Runtime       ort.Options
	Progress      func(TrainProgress) // called after every optimizer step

	// Added by the trainer.

	// NoDropout disables LoRA dropout (Dropout 0 means the default 0.05).
	NoDropout bool
	// NoWeightDecay disables weight decay (WeightDecay 0 means 0.01).
	NoWeightDecay bool
	// MaxGradNorm clips the global gradient norm (1.0, as the HF
	// Trainer); negative disables clipping.
	MaxGradNorm float64
	// CheckpointEvery saves a checkpoint every K steps (EvalEvery) and
	// after the last step.
	CheckpointEvery int
	// ValBatchSize is the rows per validation forward pass (8).
	ValBatchSize int
}

// withDefaults fills zero fields.
func (o LoRAOptions) withDefaults() LoRAOptions {
	if o.Targets == "" {
		o.Targets = DefaultLoRATargets
	}
	if o.Rank == 0 {
		o.Rank = DefaultLoRARank
	}
	if o.Alpha == 0 {
		o.Alpha = DefaultLoRAAlpha
	}
	if o.NoDropout {
		o.Dropout = 0
	} else if o.Dropout == 0 {
		o.Dropout = DefaultLoRADropout
	}
	if o.LR == 0 {
		o.LR = DefaultLoRALR
	}
	if o.NoWeightDecay {
		o.WeightDecay = 0
	} else if o.WeightDecay == 0 {
		o.WeightDecay = DefaultLoRAWeightDecay
	}
	if o.Steps == 0 {
		o.Steps = DefaultLoRASteps
	}
	if o.WarmupSteps == 0 {
		o.WarmupSteps = o.Steps / 10
	} else if o.WarmupSteps < 0 {
		o.WarmupSteps = 0
	}
	if o.BatchSize == 0 {
		o.BatchSize = DefaultLoRABatchSize
	}
	if o.SeqLen == 0 {
		o.SeqLen = DefaultLoRASeqLen
	}
	if o.Accumulate == 0 {
		o.Accumulate = 1
	}
	if o.EvalEvery == 0 {
		o.EvalEvery = DefaultLoRAEvalEvery
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = o.EvalEvery
	}
	if o.MaxGradNorm == 0 {
		o.MaxGradNorm = DefaultLoRAMaxGradNorm
	}
	if o.ValBatchSize == 0 {
		o.ValBatchSize = 8
	}
	return o
}

// validate rejects options no run can use.
func (o LoRAOptions) validate() error {
	switch {
	case o.Rank <= 0:
		return fmt.Errorf("lora: rank %d: must be positive", o.Rank)
	case o.Alpha <= 0 || math.IsNaN(o.Alpha):
		return fmt.Errorf("lora: alpha %g: must be positive", o.Alpha)
	case o.Dropout < 0 || o.Dropout >= 1:
		return fmt.Errorf("lora: dropout %g: want 0 ≤ p < 1", o.Dropout)
	case o.LR <= 0:
		return fmt.Errorf("lora: learning rate %g: must be positive", o.LR)
	case o.WeightDecay < 0:
		return fmt.Errorf("lora: weight decay %g: must be ≥ 0", o.WeightDecay)
	case o.Steps <= 0:
		return fmt.Errorf("lora: steps %d: must be positive", o.Steps)
	case o.WarmupSteps > o.Steps:
		return fmt.Errorf("lora: warm-up %d steps: want 0..steps (%d)", o.WarmupSteps, o.Steps)
	case o.BatchSize <= 0 || o.Accumulate <= 0 || o.EvalEvery <= 0 || o.CheckpointEvery <= 0 || o.ValBatchSize <= 0:
		return fmt.Errorf("lora: batch size, accumulation, eval and checkpoint intervals must be positive")
	case o.SeqLen < 2:
		return fmt.Errorf("lora: sequence length %d: want at least 2", o.SeqLen)
	}
	return nil
}

// TrainProgress is one optimizer step's log line.
type TrainProgress struct {
	Step         int           `json:"step"`
	Steps        int           `json:"steps"`
	Loss         float64       `json:"loss"` // mean token NLL of the step's batch
	LR           float64       `json:"lr"`
	StepsPerSec  float64       `json:"steps_per_sec"`
	TokensPerSec float64       `json:"tokens_per_sec"`
	Remaining    time.Duration `json:"remaining_ns"`
	ValPPL       float64       `json:"val_ppl,omitempty"` // 0 unless evaluated at this step
}

// LoRAResult is what TrainLoRA returns: the best adapters by validation
// perplexity and the training log.
type LoRAResult struct {
	Adapters      *Adapters       `json:"-"`
	History       []TrainProgress `json:"history"`
	InitialValPPL float64         `json:"initial_val_ppl"` // before training (B = 0: the pruned model)
	BestValPPL    float64         `json:"best_val_ppl"`
	BestStep      int             `json:"best_step"`
	StepsPerSec   float64         `json:"steps_per_sec"`
	TokensPerSec  float64         `json:"tokens_per_sec"`

	// Added by the trainer.

	FinalValPPL float64 `json:"final_val_ppl"`
	ValTokens   int64   `json:"val_tokens"`  // tokens scored per validation
	ValSamples  int     `json:"val_samples"` // sequences, one per sample
	TrainTokens int     `json:"train_tokens"`
	TrainRows   int     `json:"train_rows"` // packed rows of SeqLen
	// StepSeconds is the median time of one micro-batch's training run
	// (dropout masks, forward, loss and gradients, accumulation);
	// ForwardSeconds the median of forward passes of the adapter model
	// over one training batch, timed at the start and at each evaluation.
	StepSeconds     float64 `json:"step_seconds"`
	ForwardSeconds  float64 `json:"forward_seconds"`
	StepForward     float64 `json:"step_forward_ratio"`
	ResumedFrom     int     `json:"resumed_from,omitempty"` // checkpoint step resumed from
	Seconds         float64 `json:"seconds"`
	Adapted         int     `json:"adapted_weights"`
	TrainableParams int     `json:"trainable_params"`
}

// Adapters holds trained LoRA weights for the target weights of one model.
type Adapters struct {
	Rank    int
	Alpha   float64
	Dropout float64 // the training dropout (informational)
	Targets string
	Layers  []rewrite.LoRAAdapter
	// A[k] is [Rank, In] and B[k] [Out, Rank] of Layers[k], row-major.
	A, B [][]float64
}

// Scale is α/r.
func (a *Adapters) Scale() float64 { return a.Alpha / float64(a.Rank) }

// NewAdapters initialises adapters for m's targets as PEFT does: A
// Kaiming-uniform (bound 1/√in), B zero, so the adapted model starts as m.
func NewAdapters(m *graph.Model, targets string, rank int, alpha float64, seed uint64) (*Adapters, error) {
	if rank <= 0 {
		return nil, &rewrite.LoRAError{Msg: fmt.Sprintf("LoRA rank %d: must be positive", rank)}
	}
	layers, err := rewrite.FindLoRATargets(m, targets)
	if err != nil {
		return nil, err
	}
	if targets == "" {
		targets = DefaultLoRATargets
	}
	a := &Adapters{Rank: rank, Alpha: alpha, Targets: targets, Layers: layers}
	rng := rand.New(rand.NewPCG(seed, 0x4c6f5241)) // "LoRA"
	for _, l := range layers {
		A := make([]float64, rank*l.In)
		bound := 1 / math.Sqrt(float64(l.In))
		for i := range A {
			A[i] = (2*rng.Float64() - 1) * bound
		}
		a.A = append(a.A, A)
		a.B = append(a.B, make([]float64, l.Out*rank))
	}
	return a, nil
}

// Clone deep-copies a.
func (a *Adapters) Clone() *Adapters {
	c := *a
	c.Layers = slices.Clone(a.Layers)
	c.A, c.B = make([][]float64, len(a.A)), make([][]float64, len(a.B))
	for k := range a.A {
		c.A[k], c.B[k] = slices.Clone(a.A[k]), slices.Clone(a.B[k])
	}
	return &c
}

// Params is the number of trainable values.
func (a *Adapters) Params() int {
	n := 0
	for k := range a.A {
		n += len(a.A[k]) + len(a.B[k])
	}
	return n
}

// Merge folds W' = W + (α/r)·B·A into m's weights in place: no node is added.
// m must be the model the adapters were trained on: they find their
// weights by name, and pruning renumbers layer names (the pruned model's
// model.layers.1.* is the original's layer 2 when block 1 is removed).
func (a *Adapters) Merge(m *graph.Model) error {
	layers, err := rewrite.FindLoRATargets(m, a.Targets)
	if err != nil {
		return fmt.Errorf("heal: %w", err)
	}
	if err := a.sameLayers(layers); err != nil {
		return err
	}
	for k, l := range a.Layers {
		if err := rewrite.MergeLoRA(m, l, a.Rank, a.Scale(), a.A[k], a.B[k]); err != nil {
			return fmt.Errorf("heal: %w", err)
		}
	}
	return nil
}

// AdapterModel returns a copy of m with the LoRA branches inserted, A and
// B as graph inputs and no dropout: "adapter file + adapter-input model".
// Feed it Feeds() besides the usual inputs.
func (a *Adapters) AdapterModel(m *graph.Model) (*graph.Model, error) {
	c := cloneModel(m)
	layers, err := rewrite.InsertLoRA(c, rewrite.LoRAConfig{Targets: a.Targets, Rank: a.Rank, Alpha: a.Alpha})
	if err != nil {
		return nil, err
	}
	if err := a.sameLayers(layers); err != nil {
		return nil, err
	}
	return c, nil
}

func (a *Adapters) sameLayers(layers []rewrite.LoRAAdapter) error {
	if len(layers) != len(a.Layers) {
		return fmt.Errorf("heal: the model has %d LoRA targets for %q, the adapters %d", len(layers), a.Targets, len(a.Layers))
	}
	for k, l := range layers {
		w := a.Layers[k]
		if l.A != w.A || l.In != w.In || l.Out != w.Out {
			return fmt.Errorf("heal: LoRA target %d is %s [%d→%d] in the model, %s [%d→%d] in the adapters", k, l.Name, l.In, l.Out, w.Name, w.In, w.Out)
		}
	}
	return nil
}

// Feeds returns A and B of every layer as float32 tensors keyed by the
// adapter model's input names.
func (a *Adapters) Feeds() (map[string]*ort.Tensor, error) {
	f := map[string]*ort.Tensor{}
	for k, l := range a.Layers {
		var err error
		if f[l.A], err = ort.NewFloat32([]int64{int64(a.Rank), int64(l.In)}, toF32(a.A[k])); err != nil {
			return nil, err
		}
		if f[l.B], err = ort.NewFloat32([]int64{int64(l.Out), int64(a.Rank)}, toF32(a.B[k])); err != nil {
			return nil, err
		}
	}
	return f, nil
}

func toF32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func cloneModel(m *graph.Model) *graph.Model {
	return &graph.Model{Proto: proto.Clone(m.Proto).(*onnxpb.ModelProto), Path: m.Path, Dir: m.Dir}
}
