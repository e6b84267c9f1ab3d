package eval_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// TestSlidingWindowsPlan checks the plan alone: every token but the
// first is scored exactly once, the first window scores everything, the
// later ones their last stride targets, and every target sees as much
// context as a window of that size allows.
func TestSlidingWindowsPlan(t *testing.T) {
	for _, c := range []struct{ n, context, stride int }{
		{30, 8, 3}, {30, 8, 8}, {30, 8, 1}, {9, 8, 3}, {2, 8, 3}, {100, 16, 7}, {5, 1, 1},
	} {
		t.Run(fmt.Sprintf("n%d_c%d_s%d", c.n, c.context, c.stride), func(t *testing.T) {
			ws, err := eval.SlidingWindows(c.n, c.context, c.stride)
			if err != nil {
				t.Fatal(err)
			}
			scored := make([]int, c.n)
			for i, w := range ws {
				if w.End-w.Start > c.context {
					t.Errorf("window %d %+v is longer than the context", i, w)
				}
				first, last := w.Targets()
				for j := first; j <= last; j++ {
					scored[j]++
					// Context of target j: tokens[w.Start:j].
					want := min(j, c.context)
					if i > 0 {
						want = min(j, c.context-(last-j))
					}
					if j-w.Start != want {
						t.Errorf("target %d sees %d tokens, want %d", j, j-w.Start, want)
					}
				}
				if i == 0 && first != 1 {
					t.Errorf("first window scores from %d, want 1", first)
				}
				if i > 0 && i < len(ws)-1 && w.Scored != c.stride {
					t.Errorf("window %d scores %d, want the stride %d", i, w.Scored, c.stride)
				}
			}
			for j := 1; j < c.n; j++ {
				if scored[j] != 1 {
					t.Errorf("token %d scored %d times", j, scored[j])
				}
			}
			if scored[0] != 0 {
				t.Error("token 0 has no context and must not be scored")
			}
		})
	}
	for _, c := range []struct{ n, context, stride int }{{30, 8, 9}, {30, 8, 0}, {30, 0, 0}, {1, 8, 3}, {0, 8, 3}} {
		if _, err := eval.SlidingWindows(c.n, c.context, c.stride); err == nil {
			t.Errorf("SlidingWindows%+v: no error", c)
		}
	}
}

// TestChunksPlan: a hand-made stream of 11 tokens in chunks of 4 gives
// llama2.c's x = chunk[:-1], y = chunk[1:] for chunks [0:5] and [4:9];
// tokens 9 and 10 are left unscored.
func TestChunksPlan(t *testing.T) {
	ws, err := eval.Chunks(11, 4)
	if err != nil {
		t.Fatal(err)
	}
	want := []eval.Window{{Start: 0, End: 4, Scored: 4}, {Start: 4, End: 8, Scored: 4}}
	if fmt.Sprint(ws) != fmt.Sprint(want) {
		t.Fatalf("chunks %v, want %v", ws, want)
	}
	if ws, _ := eval.Chunks(9, 4); len(ws) != 2 {
		t.Fatalf("9 tokens hold 2 complete chunks of 4+1, got %v", ws)
	}
	for _, n := range []int{0, 1, 4} {
		if _, err := eval.Chunks(n, 4); err == nil {
			t.Errorf("Chunks(%d, 4): no error for a stream without a complete chunk", n)
		}
	}
}

func TestStreamTokens(t *testing.T) {
	enc := fakeEncoder{bos: 1}
	if got := fmt.Sprint(eval.StreamTokens(enc, []string{"ab", "c"}, true, "")); got != "[1 97 98 1 99]" {
		t.Errorf("BOS each: %s", got)
	}
	if got := fmt.Sprint(eval.StreamTokens(enc, []string{"ab", "c"}, false, "\n")); got != "[1 97 98 10 99]" {
		t.Errorf("joined: %s", got)
	}
	if got := fmt.Sprint(eval.StreamTokens(fakeEncoder{bos: -1}, []string{"ab", "c"}, true, "")); got != "[97 98 99]" {
		t.Errorf("no BOS: %s", got)
	}
}

// fakeEncoder maps each byte to its value.
type fakeEncoder struct{ bos int }

func (f fakeEncoder) Encode(s string) []int {
	var ids []int
	for i := range len(s) {
		ids = append(ids, int(s[i]))
	}
	return ids
}
func (f fakeEncoder) BOS() int { return f.bos }

// stories opens the stories260K fixture (torch export of the real
// weights) with its tokenizer.
func stories(t *testing.T) (*ort.Decoder, tokenizer.Tokenizer) {
	t.Helper()
	testenv.ORTLibrary(t)
	sess, err := ort.NewSession(testenv.Testdata(t, "models", "stories260k_kv.onnx"), ort.Options{Threads: 1, Outputs: []string{"logits"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(testenv.Testdata(t, "models", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	return dec, tok
}

// directNLL is -log p(tokens[j] | tokens[from:j]), from a forward pass of
// that context alone (batch 1, no padding, no other window).
func directNLL(t *testing.T, dec *ort.Decoder, tokens []int, from, j int) float64 {
	t.Helper()
	L := j - from
	ids := make([]int64, L)
	mask := make([]int64, L)
	pos := make([]int64, L)
	for i := range L {
		ids[i], mask[i], pos[i] = int64(tokens[from+i]), 1, int64(i)
	}
	in, err := dec.Inputs(ids, mask, pos, 1, L, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := dec.Session.Run(in, []string{"logits"})
	if err != nil {
		t.Fatal(err)
	}
	lg, _ := out["logits"].Float32s()
	V := int(out["logits"].Shape[2])
	row := lg[(L-1)*V:]
	m := math.Inf(-1)
	for _, v := range row {
		m = max(m, float64(v))
	}
	var z float64
	for _, v := range row {
		z += math.Exp(float64(v) - m)
	}
	return m + math.Log(z) - float64(row[tokens[j]])
}

// shortText is 30 tokens (BOS included) of TinyStories-like text.
func shortText(t *testing.T, tok tokenizer.Tokenizer) []int {
	t.Helper()
	ids := eval.StreamTokens(tok, []string{"Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends."}, false, "")
	if len(ids) < 30 {
		t.Fatalf("text gives only %d tokens", len(ids))
	}
	return ids[:30]
}

// TestSlidingWindowMatchesDirect scores 30 tokens with context 8 and
// stride 3, four windows to a padded batch, and compares with the sum of
// every token's NLL computed from its own context run alone. The
// expected contexts come from the definition, not from the plan: token j
// ≤ 8 sees tokens[0:j]; a later token sees the 8 tokens before the end
// of its window, and windows end at 8+3k (or at the last token).
func TestSlidingWindowMatchesDirect(t *testing.T) {
	dec, tok := stories(t)
	tokens := shortText(t, tok)
	const C, S = 8, 3
	n := len(tokens)
	var want float64
	for j := 1; j < n; j++ {
		from := 0
		if j > C {
			end := min(C+S*((j-C+S-1)/S), n-1)
			from = end - C
		}
		want += directNLL(t, dec, tokens, from, j)
	}
	ws, err := eval.SlidingWindows(n, C, S)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eval.ScoreWindows(context.Background(), dec, tokens, ws, 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens != int64(n-1) || math.Abs(got.Sum-want)/float64(n-1) > 1e-5 {
		t.Fatalf("sliding window: NLL %.6f over %d tokens, direct computation %.6f over %d", got.Sum, got.Tokens, want, n-1)
	}
}

// TestChunksMatchesDirect: chunks of 8 over the same 30 tokens score
// tokens 1…24, token j in chunk k seeing tokens[8k:j]; 25…29 are left.
func TestChunksMatchesDirect(t *testing.T) {
	dec, tok := stories(t)
	tokens := shortText(t, tok)
	const C = 8
	var want float64
	for j := 1; j <= 24; j++ {
		want += directNLL(t, dec, tokens, C*((j-1)/C), j)
	}
	ws, err := eval.Chunks(len(tokens), C)
	if err != nil {
		t.Fatal(err)
	}
	got, err := eval.ScoreWindows(context.Background(), dec, tokens, ws, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Tokens != 24 || math.Abs(got.Sum-want)/24 > 1e-5 {
		t.Fatalf("chunks: NLL %.6f over %d tokens, direct computation %.6f over 24", got.Sum, got.Tokens, want)
	}
}

// TestStreamDeterministic: two runs over the fixture text, with
// different batch sizes, agree to 4 decimals of perplexity.
func TestStreamDeterministic(t *testing.T) {
	dec, tok := stories(t)
	b, err := os.ReadFile(testenv.Testdata(t, "text", "tinystories_valid200.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tokens := eval.StreamTokens(tok, []string{string(b)}, false, "")
	ws, err := eval.SlidingWindows(min(len(tokens), 3000), 128, 64)
	if err != nil {
		t.Fatal(err)
	}
	var ppl [2]float64
	for i, batch := range []int{8, 3} {
		n, err := eval.ScoreWindows(context.Background(), dec, tokens, ws, batch, nil)
		if err != nil {
			t.Fatal(err)
		}
		ppl[i] = n.Perplexity()
	}
	if fmt.Sprintf("%.4f", ppl[0]) != fmt.Sprintf("%.4f", ppl[1]) {
		t.Fatalf("two runs: perplexity %.6f and %.6f", ppl[0], ppl[1])
	}
}

func TestScoreWindowsRejectsBadWindows(t *testing.T) {
	dec, _ := stories(t)
	for _, w := range []eval.Window{{0, 5, 1}, {2, 2, 1}, {0, 3, 0}, {0, 3, 4}, {-1, 3, 1}} {
		if _, err := eval.ScoreWindows(context.Background(), dec, []int{1, 2, 3, 4, 5}, []eval.Window{w}, 1, nil); err == nil {
			t.Errorf("window %+v over 5 tokens accepted", w)
		}
	}
}
