package eval_test

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/eval"
)

// TestScoreChoicesMatchesDirect scores three examples with stories260K,
// one of them long enough to be truncated, in batches of 3 rows (so
// rows of different examples and lengths share a padded pass), and
// compares every log-likelihood with the sum of the continuation tokens'
// log-probabilities, each computed from its own prefix run alone.
func TestScoreChoicesMatchesDirect(t *testing.T) {
	dec, tok := stories(t)
	const seqLen = 28
	task := &eval.ChoiceTask{Name: "toy", Labels: []string{"sad", "happy"}, Continuations: []string{" sad", " happy"},
		Examples: []eval.ChoiceExample{
			{Context: "Lily got a new red ball and played all day. She was", Gold: 1},
			{Context: "Tom lost his toy car in the park and could not find it. He was", Gold: 0},
			{Context: "Once upon a time there was a little dog named Max. Max liked to run in the big green park every day with his friend Sue. One day it rained. Max felt", Gold: 0},
		}}
	res, err := eval.ScoreChoices(context.Background(), dec, tok, task, eval.ChoiceOptions{SeqLen: seqLen, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	bos := tok.BOS()
	for e, ex := range task.Examples {
		for c, cont := range task.Continuations {
			ctxIDs := tok.Encode(ex.Context)
			contIDs := tok.Encode(ex.Context + cont)[len(ctxIDs):]
			body := append(slices.Clone(ctxIDs), contIDs...)
			if len(body) > seqLen {
				body = body[len(body)-seqLen:]
			}
			full := append([]int{bos}, body...)
			var want float64
			for j := len(full) - len(contIDs); j < len(full); j++ {
				want -= directNLL(t, dec, full, 0, j)
			}
			if got := res.LogLik[e][c]; math.Abs(got-want) > 1e-4 {
				t.Errorf("example %d %q: log-likelihood %.6f, direct %.6f", e, cont, got, want)
			}
		}
	}
	if res.Truncated != 1 {
		t.Errorf("%d examples truncated, want 1 (the third)", res.Truncated)
	}
	if res.Examples != 3 || res.Gold[0] != 2 || res.Majority != "sad" || math.Abs(res.Baseline-2.0/3) > 1e-12 {
		t.Errorf("tally: %+v", res)
	}
	for e := range task.Examples {
		want := 0
		if res.LogLik[e][1] > res.LogLik[e][0] {
			want = 1
		}
		if res.Predictions[e] != want {
			t.Errorf("example %d: predicted %d, log-likelihoods %v", e, res.Predictions[e], res.LogLik[e])
		}
	}
}

// TestContinuationTokensTok512: with the real tokenizer the context's
// tokens are a prefix of the whole string's, so the continuation is
// exactly what " yes" adds after "Answer:".
func TestContinuationTokensTok512(t *testing.T) {
	_, tok := stories(t)
	for _, cont := range []string{" yes", " no", " positive", " negative"} {
		ctx := "The sky is blue.\nQuestion: is the sky blue?\nAnswer:"
		c, w := tok.Encode(ctx), tok.Encode(ctx+cont)
		if !slices.Equal(w[:len(c)], c) {
			t.Fatalf("%q: context tokens change when %q follows", ctx, cont)
		}
		if got := tok.Decode(append([]int{tok.Encode("x")[0]}, w[len(c):]...)); !strings.HasSuffix(got, cont) {
			t.Errorf("continuation tokens decode to %q, want %q", got, cont)
		}
	}
}

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadBoolQ(t *testing.T) {
	p := write(t, "b.jsonl", `{"question":"is it blue","answer":true,"passage":"It is blue."}

{"question":"is it red","label":0,"passage":"It is blue."}
`)
	task, err := eval.LoadBoolQ(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(task.Examples) != 2 || task.Examples[0].Gold != 1 || task.Examples[1].Gold != 0 ||
		task.Examples[0].Context != "It is blue.\nQuestion: is it blue?\nAnswer:" ||
		!slices.Equal(task.Continuations, []string{" no", " yes"}) {
		t.Fatalf("%+v", task)
	}
	for _, c := range []struct{ name, content, want string }{
		{"empty", "\n\n", "no examples"},
		{"no passage", `{"question":"q","answer":true,"text":"p"}`, `line 1: no field "passage" (record has "answer", "question", "text")`},
		{"no answer", `{"question":"q","passage":"p"}`, `no field "answer"`},
		{"bad answer", `{"question":"q","passage":"p","answer":"yes"}`, "answer must be true/false"},
		{"not json", `{"question":`, "line 1: not a JSON object"},
	} {
		_, err := eval.LoadBoolQ(write(t, "x.jsonl", c.content))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

func TestLoadIMDB(t *testing.T) {
	p := write(t, "i.csv", "text,label\n\"Great, fun.\",pos\nBoring.,neg\nFine.,1\n\"Bad\nfilm.\",0\n")
	task, err := eval.LoadIMDB(p)
	if err != nil {
		t.Fatal(err)
	}
	var golds []int
	for _, e := range task.Examples {
		golds = append(golds, e.Gold)
	}
	if !slices.Equal(golds, []int{1, 0, 1, 0}) || task.Examples[0].Context != "Great, fun.\nSentiment:" ||
		task.Examples[3].Context != "Bad\nfilm.\nSentiment:" || !slices.Equal(task.Continuations, []string{" negative", " positive"}) {
		t.Fatalf("%+v", task)
	}
	for _, c := range []struct{ name, content, want string }{
		{"empty", "", "no examples"},
		{"header only", "text,label\n", "no examples"},
		{"no label column", "review,sentiment\nx,pos\n", "lacks the columns text and label"},
		{"bad label", "text,label\nx,pos\ny,meh\n", `line 3: label "meh"`},
	} {
		_, err := eval.LoadIMDB(write(t, "x.csv", c.content))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}
