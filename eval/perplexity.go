package eval

import (
	"context"
	"fmt"
	"strings"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// Encoder is the part of a tokenizer evaluation needs.
type Encoder interface {
	// Encode returns the ids of text, without BOS.
	Encode(text string) []int
	// BOS returns the beginning-of-sequence id, or -1.
	BOS() int
}

// StreamTokens tokenizes texts into one token stream for the stream and
// chunks evaluations. With bosEach every text is encoded on its own with
// BOS first and the results are concatenated, as llama2.c's pretokenize
// does with each story (text stripped, encode(bos=True, eos=False)).
// Otherwise the texts are joined by sep and encoded once, after a single
// BOS. A tokenizer without BOS adds none.
func StreamTokens(enc Encoder, texts []string, bosEach bool, sep string) []int {
	var ids []int
	bos := enc.BOS()
	if !bosEach {
		if bos >= 0 {
			ids = append(ids, bos)
		}
		return append(ids, enc.Encode(strings.Join(texts, sep))...)
	}
	for _, t := range texts {
		if bos >= 0 {
			ids = append(ids, bos)
		}
		ids = append(ids, enc.Encode(t)...)
	}
	return ids
}

// Window is one forward pass of a long-text evaluation. It feeds
// tokens[Start:End]; its position t predicts token Start+t+1, so its
// targets are tokens[Start+1 : End+1], of which the last Scored are
// scored (the earlier ones are context already scored by another
// window).
type Window struct {
	Start, End, Scored int
}

// Targets returns the indices [first, last] of the tokens w scores.
func (w Window) Targets() (first, last int) { return w.End - w.Scored + 1, w.End }

// SlidingWindows plans the evaluation of a stream of n tokens in windows
// of at most context tokens that advance by stride, so that every token
// but the first is scored exactly once, with the longest context a window
// of that size gives it. The first window scores all its predictions
// (tokens 1…context, each seeing everything before it); each later
// window ends stride tokens further, starts context tokens before its
// end, and scores only its last stride targets, each of which sees at
// least context−stride+1 tokens. The last window scores what is left.
func SlidingWindows(n, context, stride int) ([]Window, error) {
	if context < 1 || stride < 1 || stride > context {
		return nil, fmt.Errorf("eval: context %d and stride %d: want 1 ≤ stride ≤ context", context, stride)
	}
	if n < 2 {
		return nil, fmt.Errorf("eval: %d tokens: nothing to predict", n)
	}
	end := min(context, n-1)
	ws := []Window{{Start: 0, End: end, Scored: end}}
	for end < n-1 {
		next := min(end+stride, n-1)
		start := max(0, next-context)
		ws = append(ws, Window{Start: start, End: next, Scored: next - end})
		end = next
	}
	return ws, nil
}

// Chunks plans llama2.c's training-script evaluation of a stream of n
// tokens: PretokDataset cuts the stream into chunks of context+1 tokens
// starting every context tokens (chunk k is tokens[k·context :
// (k+1)·context+1]), feeds chunk[:-1] and scores all context predictions
// of chunk[1:] with no regard to story boundaries. Every token from 1 to
// the end of the last complete chunk is scored once; the tokens after it
// are not scored (llama2.c also drops one more complete chunk, with
// num_batches = len//context − 1, and samples random chunks; we score
// every complete one).
func Chunks(n, context int) ([]Window, error) {
	if context < 1 {
		return nil, fmt.Errorf("eval: context %d: want at least 1", context)
	}
	k := (n - 1) / context
	if n < 1 || k == 0 {
		return nil, fmt.Errorf("eval: %d tokens: too few for one chunk of %d+1 tokens", n, context)
	}
	ws := make([]Window, k)
	for i := range ws {
		ws[i] = Window{Start: i * context, End: (i + 1) * context, Scored: context}
	}
	return ws, nil
}

// ScoreWindows runs windows over tokens, up to batch windows per forward
// pass (shorter windows are padded on the right and the padding never
// scored), and returns the float64 NLL of the scored targets. progress,
// when not nil, is called after each pass with windows done and total.
func ScoreWindows(ctx context.Context, dec *ort.Decoder, tokens []int, windows []Window, batch int, progress func(done, total int)) (NLL, error) {
	var n NLL
	if batch < 1 {
		return n, fmt.Errorf("eval: batch size %d", batch)
	}
	for _, w := range windows {
		if w.Start < 0 || w.End <= w.Start || w.End >= len(tokens) || w.Scored < 1 || w.Scored > w.End-w.Start {
			return n, fmt.Errorf("eval: window %+v does not fit %d tokens", w, len(tokens))
		}
	}
	for i := 0; i < len(windows); i += batch {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		ws := windows[i:min(i+batch, len(windows))]
		seq := 0
		for _, w := range ws {
			seq = max(seq, w.End-w.Start)
		}
		ids := make([]int64, len(ws)*seq)
		mask := make([]int64, len(ws)*seq)
		pos := make([]int64, len(ws)*seq)
		targets := make([]int64, len(ws)*seq)
		for r, w := range ws {
			L := w.End - w.Start
			for t := range seq {
				k := r*seq + t
				targets[k] = -1
				if t >= L {
					continue
				}
				ids[k], mask[k], pos[k] = int64(tokens[w.Start+t]), 1, int64(t)
				if t >= L-w.Scored {
					targets[k] = int64(tokens[w.Start+t+1])
				}
			}
		}
		logits, vocab, err := forwardLogits(dec, ids, mask, pos, len(ws), seq)
		if err != nil {
			return n, err
		}
		if err := n.addTargets(logits, targets, vocab); err != nil {
			return n, err
		}
		if progress != nil {
			progress(i+len(ws), len(windows))
		}
	}
	return n, nil
}

// forwardLogits runs one pass with an empty KV cache and returns the
// [batch, seq, vocab] logits and vocab.
func forwardLogits(dec *ort.Decoder, ids, mask, positions []int64, batch, seq int) ([]float32, int, error) {
	if dec.Logits == "" {
		return nil, 0, fmt.Errorf("eval: the model has no logits output")
	}
	in, err := dec.Inputs(ids, mask, positions, batch, seq, nil)
	if err != nil {
		return nil, 0, err
	}
	out, err := dec.Session.Run(in, []string{dec.Logits})
	if err != nil {
		return nil, 0, err
	}
	lt := out[dec.Logits]
	if len(lt.Shape) != 3 || lt.Shape[0] != int64(batch) || lt.Shape[1] != int64(seq) || lt.Shape[2] < 1 {
		return nil, 0, fmt.Errorf("eval: logits have shape %v, want [%d, %d, vocab]", lt.Shape, batch, seq)
	}
	logits, err := lt.Float32s()
	if err != nil {
		return nil, 0, err
	}
	return logits, int(lt.Shape[2]), nil
}

// addTargets adds -log p(targets[k]) at every position k whose target is
// not negative; logits are [len(targets), vocab] row-major.
func (n *NLL) addTargets(logits []float32, targets []int64, vocab int) error {
	if len(logits) != len(targets)*vocab {
		return fmt.Errorf("eval: %d logits for %d positions × vocab %d", len(logits), len(targets), vocab)
	}
	for k, tg := range targets {
		if tg < 0 {
			continue
		}
		if int(tg) >= vocab {
			return fmt.Errorf("eval: token id %d outside the model's vocabulary of %d", tg, vocab)
		}
		row := logits[k*vocab : (k+1)*vocab]
		n.Sum += logSumExp(row) - float64(row[tg])
		n.Tokens++
	}
	return nil
}
