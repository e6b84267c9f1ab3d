package eval

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// byteCodec is a tokenizer with one token per byte (id = byte + 3),
// BOS 1 and EOS 2, so prompt lengths can be counted by hand.
type byteCodec struct{}

func (byteCodec) Encode(s string) []int {
	ids := make([]int, len(s))
	for i := range len(s) {
		ids[i] = int(s[i]) + 3
	}
	return ids
}

func (byteCodec) Decode(ids []int) string {
	var b []byte
	for _, id := range ids {
		if id >= 3 {
			b = append(b, byte(id-3))
		}
	}
	return string(b)
}

func (byteCodec) BOS() int       { return 1 }
func (byteCodec) EOS() int       { return 2 }
func (byteCodec) VocabSize() int { return 259 }

// scriptGen "generates" the given texts, one per call, then EOS, the way
// runtime.Decoder.Generate does: the context is checked before each step,
// stop ids end it without being returned.
type scriptGen struct {
	texts []string
	calls []ort.GenerateOptions
	last  []int // the last prompt
}

func (g *scriptGen) Generate(ctx context.Context, prompt []int, opts ort.GenerateOptions) ([]int, error) {
	script := append(byteCodec{}.Encode(g.texts[len(g.calls)]), 2)
	g.calls = append(g.calls, opts)
	g.last = prompt
	var out []int
	for len(out) < opts.MaxTokens {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		next := script[min(len(out), len(script)-1)]
		if slices.Contains(opts.Stop, next) {
			break
		}
		out = append(out, next)
		opts.OnToken(next)
	}
	return out, nil
}

func TestSummaryPrompt(t *testing.T) {
	var c byteCodec
	const tmpl = "A: {document}\nS:" // 6 bytes around the document
	ids, cut, err := SummaryPrompt(c, tmpl, "hello", 100, TruncateMiddle)
	if err != nil || cut || !slices.Equal(ids, append([]int{1}, c.Encode("A: hello\nS:")...)) {
		t.Fatalf("fitting prompt: %v %v %v", ids, cut, err)
	}
	doc := "abcdefghijklmnopqrstuvwxyz"
	// Budget 17 = BOS + 6 + 10 document bytes. Middle: keep 10 → "abcde
	// ... vwxyz" is 15 bytes with the marker, 5 too many; keep 5 → "abc
	// ... yz", 10 bytes: fits exactly.
	for _, c := range []struct{ mode, want string }{
		{TruncateMiddle, "A: abc ... yz\nS:"},
		{TruncateLeft, "A: qrstuvwxyz\nS:"},
		{TruncateRight, "A: abcdefghij\nS:"},
	} {
		ids, cut, err := SummaryPrompt(byteCodec{}, tmpl, doc, 17, c.mode)
		if err != nil || !cut || len(ids) != 17 || ids[0] != 1 || byteCodec.Decode(byteCodec{}, ids) != c.want {
			t.Errorf("%s: %q (%d ids, cut %v, %v), want %q", c.mode, byteCodec.Decode(byteCodec{}, ids), len(ids), cut, err, c.want)
		}
	}
	if _, _, err := SummaryPrompt(c, tmpl, doc, 7, TruncateMiddle); err == nil {
		t.Error("a budget the template alone fills was accepted")
	}
}

// TestSummarize: three articles ending at a newline, at EOS and at the
// token limit.
func TestSummarize(t *testing.T) {
	g := &scriptGen{texts: []string{" the cat sat\nnext line", " the dog", "aaaaaaaa"}}
	arts := []Article{
		{ID: "1", Document: "doc one", Summary: "The cat sat."},
		{ID: "2", Document: "doc two", Summary: "the dog"},
		{ID: "3", Document: "doc three", Summary: "b"},
	}
	res, err := Summarize(context.Background(), g, byteCodec{}, arts, SummarizeOptions{MaxNewTokens: 20, SeqLen: 100})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		summary, stop string
		tokens        int
	}{
		{"the cat sat", StopNewline, 13}, // 12 bytes " the cat sat" + the newline token
		{"the dog", StopEOS, 9},          // 8 bytes + EOS
		{"aaaaaaaa", StopEOS, 9},         // 8 bytes + EOS, within the 20-token limit
	}
	for i, w := range want {
		a := res.Articles[i]
		if a.Summary != w.summary || a.Stop != w.stop || a.GeneratedTokens != w.tokens {
			t.Errorf("article %d: %q stop %s after %d tokens, want %q %s %d", i, a.Summary, a.Stop, a.GeneratedTokens, w.summary, w.stop, w.tokens)
		}
	}
	// Scores: the first two summaries equal their references after
	// tokenization (F 1 everywhere), the third shares nothing: means 2/3.
	for _, s := range []Score{res.Rouge.Rouge1, res.Rouge.Rouge2, res.Rouge.RougeL} {
		if !near(s.F1, 2.0/3) {
			t.Errorf("mean F1 %g, want 2/3", s.F1)
		}
	}
	if res.GeneratedTokens != 13+9+9 || res.Stops[StopNewline] != 1 || res.Stops[StopEOS] != 2 || res.Documents != 3 {
		t.Errorf("result %+v", res)
	}
	// The generator saw BOS first, the default template, the stop ids and
	// the token limit.
	if g.last[0] != 1 || byteCodec.Decode(byteCodec{}, g.last) != "Article: doc three\nOne-sentence summary:" {
		t.Errorf("prompt %q", byteCodec.Decode(byteCodec{}, g.last))
	}
	if o := g.calls[0]; o.MaxTokens != 20 || !slices.Equal(o.Stop, []int{2, 1}) || o.Temperature != 0 || o.NoCache {
		t.Errorf("generate options %+v", o)
	}

	// Max tokens: 5 new tokens of "aaaaaaaa".
	g = &scriptGen{texts: []string{"aaaaaaaa"}}
	res, err = Summarize(context.Background(), g, byteCodec{}, arts[2:], SummarizeOptions{MaxNewTokens: 5, SeqLen: 100})
	if err != nil || res.Articles[0].Summary != "aaaaa" || res.Articles[0].Stop != StopMaxTokens || res.GeneratedTokens != 5 {
		t.Errorf("max tokens: %+v, %v", res, err)
	}
	// A cancelled caller's context is an error, not a newline stop.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Summarize(ctx, &scriptGen{texts: []string{"x"}}, byteCodec{}, arts[:1], SummarizeOptions{}); err == nil {
		t.Error("cancelled context: no error")
	}
	if _, err := Summarize(context.Background(), g, byteCodec{}, arts, SummarizeOptions{MaxNewTokens: 600}); err == nil {
		t.Error("max new tokens beyond the sequence length accepted")
	}
}

func TestLoadArticles(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.jsonl")
	lines := `{"document":"d1","summary":"s1","id":34268361}
{"document":"d2","summary":"s2","id":"abc"}

{"document":"d3","summary":"s3"}
{"document":"d4"}
`
	if err := os.WriteFile(p, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	as, err := LoadArticles(p, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(as) != 3 || as[0] != (Article{"34268361", "d1", "s1"}) || as[1].ID != "abc" || as[2].ID != "4" {
		t.Errorf("%+v", as)
	}
	if _, err := LoadArticles(p, 0); err == nil || !strings.Contains(err.Error(), "line 5") {
		t.Errorf("missing summary: %v", err)
	}
}
