package runtime

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
)

// Decoder describes a causal-LM session's interface in optimum's
// convention: input_ids, attention_mask, optional position_ids, and per
// layer past_key_values.N.key/.value → logits, present.N.key/.value.
type Decoder struct {
	Session *Session
	// KV lists the cache inputs in layer order (key, value per layer).
	KV []KVInput
	// HasPositions says whether the model takes position_ids.
	HasPositions bool
	// Logits is the logits output's name ("" when the session does not
	// fetch it).
	Logits string
}

// KVInput is one past_key_values input: [batch, heads, past, headDim].
type KVInput struct {
	Layer   int
	Name    string // past_key_values.N.key
	Present string // present.N.key
	DType   DType
	Heads   int64
	HeadDim int64
}

var pastRe = regexp.MustCompile(`^past_key_values\.(\d+)\.(key|value)$`)

// NewDecoder checks that s looks like a decoder and records its cache
// layout. Unknown required inputs are an error naming them.
func NewDecoder(s *Session) (*Decoder, error) {
	d := &Decoder{Session: s}
	seen := map[string]bool{}
	for _, in := range s.Inputs() {
		seen[in.Name] = true
		switch {
		case in.Name == "input_ids" || in.Name == "attention_mask":
		case in.Name == "position_ids":
			d.HasPositions = true
		case pastRe.MatchString(in.Name):
			m := pastRe.FindStringSubmatch(in.Name)
			layer, _ := strconv.Atoi(m[1])
			if len(in.Shape) != 4 || in.Shape[1] <= 0 || in.Shape[3] <= 0 {
				return nil, fmt.Errorf("runtime: %s: KV input %s has shape %v, want [batch, heads, past, head_dim] with static heads and head_dim", s.source, in.Name, in.Shape)
			}
			d.KV = append(d.KV, KVInput{Layer: layer, Name: in.Name, Present: "present." + m[1] + "." + m[2],
				DType: in.DType, Heads: in.Shape[1], HeadDim: in.Shape[3]})
		default:
			return nil, fmt.Errorf("runtime: %s: unsupported decoder input %q (expected input_ids, attention_mask, position_ids, past_key_values.N.key/value)", s.source, in.Name)
		}
	}
	if !seen["input_ids"] {
		return nil, fmt.Errorf("runtime: %s: no input_ids input: not a causal language model", s.source)
	}
	sort.Slice(d.KV, func(i, j int) bool {
		if d.KV[i].Layer != d.KV[j].Layer {
			return d.KV[i].Layer < d.KV[j].Layer
		}
		return d.KV[i].Name < d.KV[j].Name
	})
	for _, out := range s.fetch {
		if out.out.Name == "logits" {
			d.Logits = "logits"
		}
	}
	return d, nil
}

// Inputs builds the feed for one forward pass over [batch, seq] tokens.
// mask covers past and current tokens ([batch, past+seq]); past holds the
// previous step's present tensors by past_key_values name, or nil for an
// empty cache.
func (d *Decoder) Inputs(ids, mask, positions []int64, batch, seq int, past map[string]*Tensor) (map[string]*Tensor, error) {
	if len(ids) != batch*seq {
		return nil, fmt.Errorf("runtime: %d token ids for batch %d × %d", len(ids), batch, seq)
	}
	total := len(mask) / max(batch, 1)
	in := map[string]*Tensor{}
	var err error
	if in["input_ids"], err = NewInt64([]int64{int64(batch), int64(seq)}, ids); err != nil {
		return nil, err
	}
	if in["attention_mask"], err = NewInt64([]int64{int64(batch), int64(total)}, mask); err != nil {
		return nil, err
	}
	if d.HasPositions {
		if in["position_ids"], err = NewInt64([]int64{int64(batch), int64(seq)}, positions); err != nil {
			return nil, err
		}
	}
	for _, kv := range d.KV {
		if t, ok := past[kv.Name]; ok {
			in[kv.Name] = t
			continue
		}
		if in[kv.Name], err = Zeros(kv.DType, []int64{int64(batch), kv.Heads, 0, kv.HeadDim}); err != nil {
			return nil, err
		}
	}
	return in, nil
}
