package eval

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// DecoderRunner times one decoder model. A run is a prefill of the prompt
// (one forward pass, batch 1, empty cache) followed by single-token decode
// steps that feed each step's present.N tensors back as past_key_values.N,
// as generation does. The token fed at each step is drawn from the seed,
// not from the logits: a dense model's time does not depend on which
// token it is, and every model compared sees the same ids.
type DecoderRunner struct {
	sess    *ort.Session
	dec     *ort.Decoder
	outputs []string // logits, then the presents in KV order
	prompt  []int64
	steps   []int64
	mask    []int64 // ones, for prompt+steps
	pos     []int64 // 0, 1, …
	meter   BenchMeter
	// LoadSeconds is how long creating the session took; RSSLoadBytes how
	// much the process's resident memory grew meanwhile.
	LoadSeconds  float64
	RSSLoadBytes int64
}

// NewDecoderRunner creates the session for path. The session fetches only
// logits and the present.N outputs, so other outputs a model may declare
// are not copied out at every step.
func NewDecoderRunner(path string, opts BenchOptions) (*DecoderRunner, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	freeMemory()
	before := currentRSS()
	start := time.Now()
	sess, dec, err := openDecoder(path, opts.Runtime)
	if err != nil {
		return nil, err
	}
	r := &DecoderRunner{sess: sess, dec: dec, meter: opts.Meter, LoadSeconds: time.Since(start).Seconds()}
	if after := currentRSS(); before > 0 && after > before {
		r.RSSLoadBytes = after - before
	}
	r.outputs = []string{dec.Logits}
	if len(dec.KV) > 0 {
		for _, kv := range dec.KV {
			r.outputs = append(r.outputs, kv.Present)
		}
	}
	vocab, err := r.vocab()
	if err != nil {
		sess.Close()
		return nil, err
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x62656e6368)) // "bench"
	r.prompt = make([]int64, opts.PromptLen)
	r.steps = make([]int64, opts.DecodeTokens)
	for i := range r.prompt {
		r.prompt[i] = rng.Int64N(vocab)
	}
	for i := range r.steps {
		r.steps[i] = rng.Int64N(vocab)
	}
	n := opts.PromptLen + opts.DecodeTokens
	r.mask, r.pos = make([]int64, n), make([]int64, n)
	for i := range n {
		r.mask[i], r.pos[i] = 1, int64(i)
	}
	return r, nil
}

// openDecoder opens a session fetching logits and presents only. The
// output names are known only once a session exists, so a model that
// declares other outputs is opened twice.
func openDecoder(path string, ro ort.Options) (*ort.Session, *ort.Decoder, error) {
	ro.Outputs = nil
	sess, err := ort.NewSession(path, ro)
	if err != nil {
		return nil, nil, err
	}
	var want []string
	extra := false
	for _, o := range sess.Outputs() {
		if o.Name == "logits" || strings.HasPrefix(o.Name, "present.") {
			want = append(want, o.Name)
		} else {
			extra = true
		}
	}
	if extra {
		sess.Close()
		ro.Outputs = want
		if sess, err = ort.NewSession(path, ro); err != nil {
			return nil, nil, err
		}
	}
	dec, err := ort.NewDecoder(sess)
	if err == nil && dec.Logits == "" {
		err = fmt.Errorf("eval: bench: %s has no logits output", path)
	}
	if err != nil {
		sess.Close()
		return nil, nil, err
	}
	return sess, dec, nil
}

// vocab is the logits' last dimension: declared, or seen in one step.
func (r *DecoderRunner) vocab() (int64, error) {
	for _, o := range r.sess.Outputs() {
		if o.Name == r.dec.Logits && len(o.Shape) > 0 && o.Shape[len(o.Shape)-1] > 0 {
			return o.Shape[len(o.Shape)-1], nil
		}
	}
	in, err := r.dec.Inputs([]int64{0}, []int64{1}, []int64{0}, 1, 1, nil)
	if err != nil {
		return 0, err
	}
	out, err := r.sess.Run(in, []string{r.dec.Logits})
	if err != nil {
		return 0, err
	}
	s := out[r.dec.Logits].Shape
	if len(s) == 0 || s[len(s)-1] <= 0 {
		return 0, fmt.Errorf("eval: bench: logits have shape %v", s)
	}
	return s[len(s)-1], nil
}

// KVCache reports whether decode steps go through a KV cache; without one
// every step recomputes the whole sequence.
func (r *DecoderRunner) KVCache() bool { return len(r.dec.KV) > 0 }

// Close releases the session.
func (r *DecoderRunner) Close() error { return r.sess.Close() }

// Run makes one run. Before it, garbage is collected and returned to the
// operating system and the resident-memory peak is reset, so that every
// run starts from the same state and PeakRSS is this run's.
func (r *DecoderRunner) Run(ctx context.Context) (RunTiming, error) {
	t := RunTiming{DecodeTokens: len(r.steps)}
	freeMemory()
	resetPeakRSS()
	P := len(r.prompt)
	in, err := r.dec.Inputs(r.prompt, r.mask[:P], r.pos[:P], 1, P, nil)
	if err != nil {
		return t, err
	}
	if err := r.startMeter(); err != nil {
		return t, err
	}
	start := time.Now()
	out, err := r.sess.Run(in, r.outputs)
	t.Prefill = time.Since(start)
	if err != nil {
		return t, err
	}
	if t.PrefillEnergy, err = r.stopMeter(); err != nil {
		return t, err
	}

	if err := r.startMeter(); err != nil {
		return t, err
	}
	seq := r.prompt // grows only without a KV cache
	start = time.Now()
	for i, id := range r.steps {
		if err := ctx.Err(); err != nil {
			return t, err
		}
		n := P + i // tokens before this one
		if r.KVCache() {
			past := make(map[string]*ort.Tensor, len(r.dec.KV))
			for _, kv := range r.dec.KV {
				past[kv.Name] = out[kv.Present]
			}
			in, err = r.dec.Inputs(r.steps[i:i+1], r.mask[:n+1], r.pos[n:n+1], 1, 1, past)
		} else {
			seq = append(seq[:n:n], id)
			in, err = r.dec.Inputs(seq, r.mask[:n+1], r.pos[:n+1], 1, n+1, nil)
		}
		if err != nil {
			return t, err
		}
		if out, err = r.sess.Run(in, r.outputs); err != nil {
			return t, err
		}
	}
	t.Decode = time.Since(start)
	if t.DecodeEnergy, err = r.stopMeter(); err != nil {
		return t, err
	}
	t.PeakRSS = peakRSS()
	return t, nil
}

func (r *DecoderRunner) startMeter() error {
	if r.meter == nil {
		return nil
	}
	if err := r.meter.Start(); err != nil {
		return fmt.Errorf("eval: bench: energy meter: %w", err)
	}
	return nil
}

func (r *DecoderRunner) stopMeter() (Reading, error) {
	if r.meter == nil {
		return Reading{}, nil
	}
	e, err := r.meter.Stop()
	if err != nil {
		return e, fmt.Errorf("eval: bench: energy meter: %w", err)
	}
	return e, nil
}
