package eval_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// noCache recomputes every step: the reference the cached decoding
// Summarize uses must equal.
type noCache struct{ d *ort.Decoder }

func (n noCache) Generate(ctx context.Context, prompt []int, o ort.GenerateOptions) ([]int, error) {
	o.NoCache = true
	return n.d.Generate(ctx, prompt, o)
}

// TestSummarizeStories260K summarizes two XSum articles with the
// stories260K fixture (a 512-token context: the documents are cut) and
// checks the KV-cache summaries equal full recomputation, token for token.
func TestSummarizeStories260K(t *testing.T) {
	testenv.ORTLibrary(t)
	arts, err := eval.LoadArticles(filepath.Join(testenv.SharedDir(t), "data", "xsum", "test.jsonl"), 2)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(testenv.Testdata(t, "models", "tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ort.NewSession(testenv.Testdata(t, "models", "stories260k_kv.onnx"), ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		t.Fatal(err)
	}
	opts := eval.SummarizeOptions{SeqLen: 512, MaxNewTokens: 24}
	cached, err := eval.Summarize(context.Background(), dec, tok, arts, opts)
	if err != nil {
		t.Fatal(err)
	}
	full, err := eval.Summarize(context.Background(), noCache{dec}, tok, arts, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range cached.Articles {
		b := full.Articles[i]
		if a.Summary != b.Summary || a.GeneratedTokens != b.GeneratedTokens || a.Stop != b.Stop {
			t.Errorf("article %s: cached %q (%d tokens, %s), recomputed %q (%d, %s)", a.ID, a.Summary, a.GeneratedTokens, a.Stop, b.Summary, b.GeneratedTokens, b.Stop)
		}
		if a.PromptTokens > 512-24 || !a.Truncated {
			t.Errorf("article %s: %d prompt tokens (truncated %v), want a cut to at most 488", a.ID, a.PromptTokens, a.Truncated)
		}
		if a.GeneratedTokens < 1 || a.GeneratedTokens > 24 {
			t.Errorf("article %s: %d tokens generated", a.ID, a.GeneratedTokens)
		}
	}
	if r := cached.Rouge.Rouge1.F1; r < 0 || r > 1 || cached.Documents != 2 {
		t.Errorf("ROUGE-1 %g over %d documents", r, cached.Documents)
	}
	t.Logf("%+v", cached.Articles)
}
