package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// BenchOptions say what one benchmark run of a decoder does and how
// often it is repeated.
type BenchOptions struct {
	// PromptLen tokens are run through the model at once (batch 1, empty
	// KV cache): the prefill.
	PromptLen int
	// DecodeTokens more tokens are then fed one at a time through the KV
	// cache (batch 1); only these steps are timed for decode tokens/s.
	DecodeTokens int
	// Warmup runs per model are made first and discarded; Runs are
	// measured. Both are interleaved across models (see Interleave).
	Warmup, Runs int
	// Seed draws the token ids (uniform over the vocabulary): timing does
	// not depend on which tokens they are, so no tokenizer is needed, and
	// every model sees the same ids.
	Seed uint64
	// Runtime configures the sessions (device, threads).
	Runtime ort.Options
	// Meter, when set, measures the energy of every prefill and of every
	// run's decode steps (a *Meter does).
	Meter BenchMeter
	// Progress, when set, is called after every run (warm-up included).
	Progress func(done, total int)
}

// BenchMeter measures the energy between Start and Stop; *Meter is one,
// tests use fakes.
type BenchMeter interface {
	Start() error
	Stop() (Reading, error)
}

func (o BenchOptions) check() error {
	switch {
	case o.PromptLen < 1:
		return fmt.Errorf("eval: bench: prompt length %d: need at least 1 token", o.PromptLen)
	case o.DecodeTokens < 1:
		return fmt.Errorf("eval: bench: %d decode tokens: need at least 1", o.DecodeTokens)
	case o.Runs < 1:
		return fmt.Errorf("eval: bench: %d runs: need at least 1", o.Runs)
	case o.Warmup < 0:
		return fmt.Errorf("eval: bench: %d warm-up runs", o.Warmup)
	}
	return nil
}

// Stat summarises repeated measurements of one quantity.
type Stat struct {
	Median float64 `json:"median"`
	Min    float64 `json:"min"`
	Max    float64 `json:"max"`
	// Runs are the measurements in the order they were taken.
	Runs []float64 `json:"runs"`
}

// NewStat summarises xs (median of an even count: the mean of the middle
// two). An empty xs gives NaNs.
func NewStat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{Median: math.NaN(), Min: math.NaN(), Max: math.NaN()}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], Runs: slices.Clone(xs)}
}

// RunTiming is one measured run of one model.
type RunTiming struct {
	Prefill      time.Duration // the forward pass over the prompt
	Decode       time.Duration // all decode steps together
	DecodeTokens int
	// PeakRSS is the process's resident-memory high-water mark at the end
	// of the run (bytes; 0 if unknown), reset just before the run where
	// the kernel allows it.
	PeakRSS int64
	// Prefill and Decode energy, when a meter was given (Source "" without).
	PrefillEnergy, DecodeEnergy Reading
}

// Runner is a model ready to be timed; one call is one run.
type Runner interface {
	Run(ctx context.Context) (RunTiming, error)
}

// Interleave makes warmup+runs rounds over the runners; in each round
// every runner runs once, in order — A B A B … for two — so that slow
// changes of the machine (clock boost, thermal throttling, other load)
// affect every model alike instead of whichever happened to run last.
// Warm-up rounds come first and are discarded. It returns the measured
// runs of each runner, in order.
func Interleave(ctx context.Context, runners []Runner, warmup, runs int, progress func(done, total int)) ([][]RunTiming, error) {
	out := make([][]RunTiming, len(runners))
	total, done := (warmup+runs)*len(runners), 0
	for round := range warmup + runs {
		for i, r := range runners {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			t, err := r.Run(ctx)
			if err != nil {
				return nil, err
			}
			if round >= warmup {
				out[i] = append(out[i], t)
			}
			done++
			if progress != nil {
				progress(done, total)
			}
		}
	}
	return out, nil
}

// BenchResult is the efficiency of one model. Its JSON field names are
// stable (fields are added, never renamed or removed); see the README.
type BenchResult struct {
	Model string `json:"model"`
	// FileBytes is the model file plus the external data files it
	// references.
	FileBytes int64 `json:"file_bytes"`
	// Params counts floating-point weights (graph.TotalParams).
	Params int64 `json:"params"`
	// Blocks is the number of decoder blocks graph.FindBlocks finds (0
	// with BlocksError set when it finds none).
	Blocks      int    `json:"blocks"`
	BlocksError string `json:"blocks_error,omitempty"`
	// KVCache is false for a model without past_key_values inputs, whose
	// decode steps recompute the whole sequence.
	KVCache bool   `json:"kv_cache"`
	Device  string `json:"device"`
	// Threads is onnxruntime's intra-op thread count; 0 is its default
	// (one per physical core).
	Threads      int `json:"threads"`
	PromptLen    int `json:"prompt_len"`
	DecodeTokens int `json:"decode_tokens"`
	Warmup       int `json:"warmup"`
	Runs         int `json:"runs"`
	// LoadSeconds is the session creation (reading the model, onnxruntime's
	// graph optimisations).
	LoadSeconds float64 `json:"load_seconds"`
	// PrefillMS is the latency of one forward pass over the prompt, in
	// milliseconds; PrefillTokensPerS is PromptLen over it.
	PrefillMS         Stat `json:"prefill_ms"`
	PrefillTokensPerS Stat `json:"prefill_tokens_per_s"`
	// DecodeTokensPerS is DecodeTokens over the time of the decode steps
	// (batch 1, through the KV cache, after the prefill); DecodeMSPerToken
	// is its inverse.
	DecodeTokensPerS Stat `json:"decode_tokens_per_s"`
	DecodeMSPerToken Stat `json:"decode_ms_per_token"`
	// RSSLoadBytes is how much the process's resident memory grew when the
	// session was created: the model's weights and onnxruntime's buffers.
	RSSLoadBytes int64 `json:"rss_load_bytes"`
	// PeakRSSBytes is the process's resident-memory peak during this
	// model's runs (the largest over its runs); PeakRSSScope says what it
	// covers. It is the whole process: every model loaded at the time, the
	// Go heap and onnxruntime.
	PeakRSSBytes int64  `json:"peak_rss_bytes"`
	PeakRSSScope string `json:"peak_rss_scope"`
	// GPUMemoryBytes is the process's GPU memory after this model's runs
	// (CUDA only), as GPUMemorySource reports it.
	GPUMemoryBytes  int64  `json:"gpu_memory_bytes,omitempty"`
	GPUMemorySource string `json:"gpu_memory_source,omitempty"`
	// Energy is present when a meter was given.
	Energy *BenchEnergy `json:"energy,omitempty"`
}

// BenchEnergy is the energy of the timed phases. Source and Method come
// from the meter's last reading (see Reading): "estimated" is a model of
// CPU time, not a measurement, and RAPL counts the whole CPU package
// (every process), so on a busy machine it includes others' work.
type BenchEnergy struct {
	Source               string `json:"source"`
	Estimated            bool   `json:"estimated"`
	Method               string `json:"method"`
	PrefillJoules        Stat   `json:"prefill_joules"`
	DecodeJoulesPerToken Stat   `json:"decode_joules_per_token"`
}

// Comparison sets model B against model A, both measured in the same
// interleaved benchmark. Speedups above 1 mean B is faster.
type Comparison struct {
	A string `json:"a"`
	B string `json:"b"`
	// DecodeSpeedup is the ratio of the medians of decode tokens/s, B/A.
	// DecodeSpeedupPairs summarises the ratios of the runs taken side by
	// side (run i of B over run i of A).
	DecodeSpeedup      float64 `json:"decode_speedup"`
	DecodeSpeedupPairs Stat    `json:"decode_speedup_pairs"`
	// PrefillSpeedup is the ratio of the medians of prefill latency, A/B;
	// PrefillLatencyRatio is its inverse (B/A).
	PrefillSpeedup      float64 `json:"prefill_speedup"`
	PrefillSpeedupPairs Stat    `json:"prefill_speedup_pairs"`
	PrefillLatencyRatio float64 `json:"prefill_latency_ratio"`
	// IdealSpeedup is L_A/L_B when both are decoders with blocks: what
	// removing blocks would give if all time were spent in them.
	// DecodeOfIdeal and PrefillOfIdeal are the measured speedups over it.
	BlocksA        int     `json:"blocks_a"`
	BlocksB        int     `json:"blocks_b"`
	IdealSpeedup   float64 `json:"ideal_speedup,omitempty"`
	DecodeOfIdeal  float64 `json:"decode_of_ideal,omitempty"`
	PrefillOfIdeal float64 `json:"prefill_of_ideal,omitempty"`
	// ParamsRatio and FileRatio are B/A.
	ParamsRatio float64 `json:"params_ratio"`
	FileRatio   float64 `json:"file_ratio"`
}

// Compare sets b against a. Their runs must come from one Interleave
// call (same count, run i of each taken side by side).
func Compare(a, b *BenchResult) *Comparison {
	c := &Comparison{A: a.Model, B: b.Model, BlocksA: a.Blocks, BlocksB: b.Blocks,
		DecodeSpeedup:       b.DecodeTokensPerS.Median / a.DecodeTokensPerS.Median,
		PrefillSpeedup:      a.PrefillMS.Median / b.PrefillMS.Median,
		PrefillLatencyRatio: b.PrefillMS.Median / a.PrefillMS.Median,
		ParamsRatio:         float64(b.Params) / float64(a.Params),
		FileRatio:           float64(b.FileBytes) / float64(a.FileBytes),
	}
	var dec, pre []float64
	for i := range min(len(a.DecodeTokensPerS.Runs), len(b.DecodeTokensPerS.Runs)) {
		dec = append(dec, b.DecodeTokensPerS.Runs[i]/a.DecodeTokensPerS.Runs[i])
		pre = append(pre, a.PrefillMS.Runs[i]/b.PrefillMS.Runs[i])
	}
	c.DecodeSpeedupPairs, c.PrefillSpeedupPairs = NewStat(dec), NewStat(pre)
	if a.Blocks > 0 && b.Blocks > 0 {
		c.IdealSpeedup = float64(a.Blocks) / float64(b.Blocks)
		c.DecodeOfIdeal = c.DecodeSpeedup / c.IdealSpeedup
		c.PrefillOfIdeal = c.PrefillSpeedup / c.IdealSpeedup
	}
	return c
}

// Bench loads every model and measures them interleaved run by run (see
// Interleave): A B A B … Results are in the order of paths.
func Bench(ctx context.Context, paths []string, opts BenchOptions) ([]*BenchResult, error) {
	if len(paths) == 0 {
		return nil, errors.New("eval: bench: no models")
	}
	var models []*BenchModel
	defer func() {
		for _, m := range models {
			m.Close()
		}
	}()
	for _, p := range paths {
		m, err := OpenBenchModel(p, opts)
		if err != nil {
			return nil, err
		}
		models = append(models, m)
	}
	return BenchModels(ctx, models, opts)
}

// BenchModel is a model opened for benchmarking: what its graph says and
// a session ready to run. Keeping one open lets it be measured against
// several others (as sweep does with the unpruned model) without
// reloading it.
type BenchModel struct {
	desc   BenchResult // everything but the measurements
	runner *DecoderRunner
}

// OpenBenchModel describes the model at path (size, parameters, blocks)
// and creates its session.
func OpenBenchModel(path string, opts BenchOptions) (*BenchModel, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	res, err := describeModel(path)
	if err != nil {
		return nil, err
	}
	r, err := NewDecoderRunner(path, opts)
	if err != nil {
		return nil, err
	}
	res.KVCache, res.LoadSeconds, res.RSSLoadBytes = r.KVCache(), r.LoadSeconds, r.RSSLoadBytes
	return &BenchModel{desc: *res, runner: r}, nil
}

// Close releases the session.
func (m *BenchModel) Close() error { return m.runner.Close() }

// BenchModels measures open models interleaved run by run and returns a
// fresh result for each, in order.
func BenchModels(ctx context.Context, models []*BenchModel, opts BenchOptions) ([]*BenchResult, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	runners := make([]Runner, len(models))
	for i, m := range models {
		runners[i] = m.runner
	}
	timings, err := Interleave(ctx, runners, opts.Warmup, opts.Runs, opts.Progress)
	if err != nil {
		return nil, err
	}
	results := make([]*BenchResult, len(models))
	for i, m := range models {
		res := m.desc
		res.Device = opts.Runtime.Device
		if res.Device == "" {
			res.Device = "cpu"
		}
		// The token counts are the runner's, fixed when it was opened.
		res.Threads, res.PromptLen, res.DecodeTokens = opts.Runtime.Threads, len(m.runner.prompt), len(m.runner.steps)
		res.Warmup, res.Runs = opts.Warmup, opts.Runs
		res.summarise(timings[i], opts.Meter != nil)
		if res.Device == "cuda" {
			res.GPUMemoryBytes, res.GPUMemorySource = gpuMemory(os.Getpid())
		}
		results[i] = &res
	}
	return results, nil
}

// summarise fills the statistics from the measured runs.
func (res *BenchResult) summarise(runs []RunTiming, metered bool) {
	var pre, preTPS, tps, msTok, preJ, decJ []float64
	for _, t := range runs {
		ms := float64(t.Prefill) / float64(time.Millisecond)
		pre = append(pre, ms)
		preTPS = append(preTPS, float64(res.PromptLen)/t.Prefill.Seconds())
		tps = append(tps, float64(t.DecodeTokens)/t.Decode.Seconds())
		msTok = append(msTok, float64(t.Decode)/float64(time.Millisecond)/float64(t.DecodeTokens))
		preJ = append(preJ, t.PrefillEnergy.Joules)
		decJ = append(decJ, t.DecodeEnergy.PerUnit(t.DecodeTokens))
		res.PeakRSSBytes = max(res.PeakRSSBytes, t.PeakRSS)
	}
	res.PrefillMS, res.PrefillTokensPerS = NewStat(pre), NewStat(preTPS)
	res.DecodeTokensPerS, res.DecodeMSPerToken = NewStat(tps), NewStat(msTok)
	res.PeakRSSScope = peakRSSScope()
	if metered && len(runs) > 0 {
		last := runs[len(runs)-1].DecodeEnergy
		res.Energy = &BenchEnergy{Source: last.Source, Estimated: last.Estimated, Method: last.Method,
			PrefillJoules: NewStat(preJ), DecodeJoulesPerToken: NewStat(decJ)}
	}
}

// describeModel reads what the graph says: size, parameters, blocks. The
// graph is dropped before the session is created so its memory does not
// count as the session's.
func describeModel(path string) (*BenchResult, error) {
	m, err := graph.Load(path)
	if err != nil {
		return nil, err
	}
	size, err := ModelFileBytes(m)
	if err != nil {
		return nil, err
	}
	res := &BenchResult{Model: path, FileBytes: size, Params: graph.TotalParams(m)}
	if d, err := graph.FindBlocks(m); err != nil {
		res.BlocksError = err.Error()
	} else {
		res.Blocks = len(d.Blocks)
	}
	return res, nil
}

// ModelFileBytes is the size of a loaded model's file plus every external
// data file it references (each counted once).
func ModelFileBytes(m *graph.Model) (int64, error) {
	fi, err := os.Stat(m.Path)
	if err != nil {
		return 0, fmt.Errorf("eval: %w", err)
	}
	total := fi.Size()
	seen := map[string]bool{}
	var werr error
	m.WalkTensors(func(t *onnxpb.TensorProto) bool {
		if !graph.IsExternal(t) {
			return true
		}
		ref, err := graph.ParseExternalRef(t)
		if err != nil {
			werr = err
			return false
		}
		if seen[ref.Location] {
			return true
		}
		seen[ref.Location] = true
		fi, err := os.Stat(filepath.Join(m.Dir, filepath.FromSlash(ref.Location)))
		if err != nil {
			werr = err
			return false
		}
		total += fi.Size()
		return true
	})
	if werr != nil {
		return 0, fmt.Errorf("eval: %s: %w", m.Path, werr)
	}
	return total, nil
}
