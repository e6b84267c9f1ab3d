package runtime

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// GenerateOptions control decoding.
type GenerateOptions struct {
	MaxTokens int
	// Temperature 0 is greedy decoding (ties go to the lowest id). Above
	// 0, tokens are sampled from softmax(logits/T), restricted to the
	// smallest set whose probability reaches TopP (nucleus; 0 or 1 = all).
	Temperature, TopP float64
	Seed              uint64
	// Stop ends generation when one of these ids is produced (it is not
	// included in the result).
	Stop []int
	// NoCache recomputes the whole sequence at every step instead of
	// feeding the KV cache back: slower, and the reference the cached
	// path must equal.
	NoCache bool
	// OnToken, when set, sees each new token as it is produced.
	OnToken func(id int)
}

// Generate continues prompt (batch 1) and returns the new tokens.
func (d *Decoder) Generate(ctx context.Context, prompt []int, opts GenerateOptions) ([]int, error) {
	if len(prompt) == 0 {
		return nil, fmt.Errorf("runtime: generate: empty prompt (start with BOS)")
	}
	if d.Logits == "" {
		return nil, fmt.Errorf("runtime: %s: the model has no logits output", d.Session.source)
	}
	if !opts.NoCache && len(d.KV) == 0 {
		opts.NoCache = true // a model without cache inputs recomputes anyway
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x6f6e6e7870))
	seq := slices.Clone(prompt)
	var out []int
	var past map[string]*Tensor
	feed := prompt // tokens to feed this step
	for len(out) < opts.MaxTokens {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		start := len(seq) - len(feed) // position of feed[0]
		ids := make([]int64, len(feed))
		pos := make([]int64, len(feed))
		for i, id := range feed {
			ids[i], pos[i] = int64(id), int64(start+i)
		}
		mask := make([]int64, len(seq))
		for i := range mask {
			mask[i] = 1
		}
		in, err := d.Inputs(ids, mask, pos, 1, len(feed), past)
		if err != nil {
			return out, err
		}
		names := []string{d.Logits}
		if !opts.NoCache {
			for _, kv := range d.KV {
				names = append(names, kv.Present)
			}
		}
		res, err := d.Session.Run(in, names)
		if err != nil {
			return out, err
		}
		lt := res[d.Logits]
		logits, err := lt.Float32s()
		if err != nil {
			return out, err
		}
		V := int(lt.Shape[len(lt.Shape)-1])
		last := logits[len(logits)-V:]
		next := pick(last, opts, rng)
		if slices.Contains(opts.Stop, next) {
			break
		}
		out = append(out, next)
		seq = append(seq, next)
		if opts.OnToken != nil {
			opts.OnToken(next)
		}
		if opts.NoCache {
			feed = seq
			continue
		}
		past = map[string]*Tensor{}
		for _, kv := range d.KV {
			past[kv.Name] = res[kv.Present]
		}
		feed = []int{next}
	}
	return out, nil
}

// pick chooses the next token from one row of logits.
func pick(logits []float32, opts GenerateOptions, rng *rand.Rand) int {
	if opts.Temperature <= 0 {
		best := 0
		for i, v := range logits {
			if v > logits[best] {
				best = i
			}
		}
		return best
	}
	// Softmax in float64 with the maximum subtracted.
	m := math.Inf(-1)
	for _, v := range logits {
		m = max(m, float64(v))
	}
	type cand struct {
		id int
		p  float64
	}
	cs := make([]cand, len(logits))
	var sum float64
	for i, v := range logits {
		p := math.Exp((float64(v) - m) / opts.Temperature)
		cs[i] = cand{i, p}
		sum += p
	}
	sort.SliceStable(cs, func(a, b int) bool { return cs[a].p > cs[b].p })
	keep := len(cs)
	if opts.TopP > 0 && opts.TopP < 1 {
		var acc float64
		for i, c := range cs {
			acc += c.p / sum
			if acc >= opts.TopP {
				keep = i + 1
				break
			}
		}
	}
	var kept float64
	for _, c := range cs[:keep] {
		kept += c.p
	}
	r := rng.Float64() * kept
	for _, c := range cs[:keep] {
		if r < c.p {
			return c.id
		}
		r -= c.p
	}
	return cs[keep-1].id
}
