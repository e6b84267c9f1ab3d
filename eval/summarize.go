package eval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// Summarization (XSum): each document is put in a prompt, the model
// continues it greedily through the KV cache, and the first line of the
// continuation is scored against the reference summary with ROUGE-1/2/L
// (Porter-stemmed, as rouge-score).

// DefaultSummaryTemplate is the prompt: the document, then a cue for a
// one-sentence summary, in the "Article: … Summary:" form that HELM's and
// lm-evaluation-harness's summarization prompts also use. {document} is
// replaced by the (possibly truncated) document.
const DefaultSummaryTemplate = "Article: {document}\nOne-sentence summary:"

// Truncation modes: which part of a document too long for the context is
// kept. The template around it and BOS are always kept.
const (
	// TruncateMiddle keeps the document's start and end, halves of the
	// token budget each, joined by " ... ": the lead, which carries most
	// of a news story, and the close.
	TruncateMiddle = "middle"
	// TruncateLeft drops the start (keeps the end), as
	// lm-evaluation-harness truncates generation contexts.
	TruncateLeft = "left"
	// TruncateRight drops the end (keeps the lead).
	TruncateRight = "right"
)

// Stop reasons of a generated summary.
const (
	StopEOS       = "eos"        // the model produced EOS (or BOS, which ends llama2.c stories)
	StopNewline   = "newline"    // a token whose text contains "\n"
	StopMaxTokens = "max_tokens" // MaxNewTokens reached
)

// Article is one summarization example: XSum's JSONL fields.
type Article struct {
	ID       string `json:"id"`
	Document string `json:"document"`
	Summary  string `json:"summary"`
}

// LoadArticles reads JSONL records with "document" and "summary" (and
// optionally "id", string or number) fields: the first limit records, or
// all when limit ≤ 0. A record missing a field is an error naming its line.
func LoadArticles(path string, limit int) ([]Article, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	var out []Article
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() && (limit <= 0 || len(out) < limit) {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var rec struct {
			ID       json.RawMessage `json:"id"`
			Document *string         `json:"document"`
			Summary  *string         `json:"summary"`
		}
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("eval: %s: line %d: %v", path, line, err)
		}
		if rec.Document == nil || rec.Summary == nil {
			return nil, fmt.Errorf("eval: %s: line %d: want \"document\" and \"summary\" fields", path, line)
		}
		a := Article{Document: *rec.Document, Summary: *rec.Summary, ID: fmt.Sprint(line)}
		if len(rec.ID) > 0 {
			var s string
			if json.Unmarshal(rec.ID, &s) == nil {
				a.ID = s
			} else {
				a.ID = string(rec.ID) // a number, as XSum's ids are
			}
		}
		out = append(out, a)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eval: %s: no records", path)
	}
	return out, nil
}

// TextCodec is what summarization needs of a tokenizer
// (tokenizer.Tokenizer satisfies it).
type TextCodec interface {
	Encode(text string) []int
	Decode(ids []int) string
	BOS() int
	EOS() int
	VocabSize() int
}

// Generator continues a prompt (*runtime.Decoder satisfies it).
type Generator interface {
	Generate(ctx context.Context, prompt []int, opts ort.GenerateOptions) ([]int, error)
}

// SummarizeOptions control the task; zero values take the defaults.
type SummarizeOptions struct {
	// Template is the prompt with a {document} placeholder
	// (DefaultSummaryTemplate).
	Template string
	// SeqLen is the context the prompt and the summary share (512): the
	// prompt, BOS included, is cut to SeqLen − MaxNewTokens tokens.
	SeqLen int
	// MaxNewTokens ends a summary (64).
	MaxNewTokens int
	// Truncate is TruncateMiddle (default), TruncateLeft or TruncateRight.
	Truncate string
	// Progress, when set, is called after each document.
	Progress func(done, total int)
}

func (o *SummarizeOptions) defaults() error {
	if o.Template == "" {
		o.Template = DefaultSummaryTemplate
	}
	if o.SeqLen == 0 {
		o.SeqLen = 512
	}
	if o.MaxNewTokens == 0 {
		o.MaxNewTokens = 64
	}
	if o.Truncate == "" {
		o.Truncate = TruncateMiddle
	}
	switch {
	case strings.Count(o.Template, "{document}") != 1:
		return fmt.Errorf("eval: summary template %q: want exactly one {document}", o.Template)
	case o.MaxNewTokens < 0 || o.SeqLen < 2 || o.MaxNewTokens >= o.SeqLen-1:
		return fmt.Errorf("eval: max new tokens %d must be positive and leave room for a prompt in %d tokens", o.MaxNewTokens, o.SeqLen)
	case o.Truncate != TruncateMiddle && o.Truncate != TruncateLeft && o.Truncate != TruncateRight:
		return fmt.Errorf("eval: truncate %q: want middle, left or right", o.Truncate)
	}
	return nil
}

// SummaryPrompt builds the token ids of the prompt for document: BOS, then
// the template with the document in place, at most budget tokens. When the
// whole does not fit, the document alone is shortened (mode says which
// part is kept) and the prompt re-encoded, so that the ids are always the
// tokenizer's own encoding of the prompt text. It reports whether the
// document was truncated.
func SummaryPrompt(tok TextCodec, template, document string, budget int, mode string) ([]int, bool, error) {
	i := strings.Index(template, "{document}")
	if i < 0 {
		return nil, false, fmt.Errorf("eval: summary template %q has no {document}", template)
	}
	prefix, suffix := template[:i], template[i+len("{document}"):]
	encode := func(doc string) []int {
		ids := []int{}
		if tok.BOS() >= 0 {
			ids = append(ids, tok.BOS())
		}
		return append(ids, tok.Encode(prefix+doc+suffix)...)
	}
	ids := encode(document)
	if len(ids) <= budget {
		return ids, false, nil
	}
	doc := tok.Encode(document)
	keep := len(doc) - (len(ids) - budget)
	for keep > 0 {
		ids = encode(cutTokens(tok, doc, keep, mode))
		if len(ids) <= budget {
			return ids, true, nil
		}
		keep -= len(ids) - budget // re-encoding across the cut can add a token or two
	}
	return nil, false, fmt.Errorf("eval: the prompt template alone needs more than %d tokens (raise the sequence length or lower max new tokens)", budget)
}

// cutTokens keeps keep of the document's tokens and decodes them.
func cutTokens(tok TextCodec, doc []int, keep int, mode string) string {
	switch mode {
	case TruncateLeft:
		return tok.Decode(doc[len(doc)-keep:])
	case TruncateRight:
		return tok.Decode(doc[:keep])
	}
	head := (keep + 1) / 2
	return tok.Decode(doc[:head]) + " ... " + tok.Decode(doc[len(doc)-(keep-head):])
}

// newlineTokens lists the ids whose text contains a newline.
func newlineTokens(tok TextCodec) map[int]bool {
	nl := map[int]bool{}
	for id := range tok.VocabSize() {
		if strings.Contains(tok.Decode([]int{id}), "\n") {
			nl[id] = true
		}
	}
	return nl
}

// ArticleSummary is the outcome for one document.
type ArticleSummary struct {
	ID        string      `json:"id"`
	Reference string      `json:"reference"`
	Summary   string      `json:"summary"`
	Scores    RougeScores `json:"rouge"`
	// PromptTokens includes BOS; Truncated says the document was cut.
	PromptTokens int  `json:"prompt_tokens"`
	Truncated    bool `json:"truncated"`
	// GeneratedTokens counts the tokens the model produced, each one
	// forward pass, including the EOS or newline token that ended the
	// summary (whose text is not part of Summary).
	GeneratedTokens int    `json:"generated_tokens"`
	Stop            string `json:"stop"`
	// FirstTokenSeconds is the prefill latency (prompt to first token);
	// Seconds the whole generation.
	FirstTokenSeconds float64 `json:"first_token_seconds"`
	Seconds           float64 `json:"seconds"`
}

// SummarizeResult aggregates a run.
type SummarizeResult struct {
	Documents int `json:"documents"`
	// Rouge holds the mean over documents of each document's precision,
	// recall and F1 (RougeMean).
	Rouge           RougeScores    `json:"rouge"`
	GeneratedTokens int            `json:"generated_tokens"`
	PromptTokens    int            `json:"prompt_tokens"`
	Truncated       int            `json:"truncated"`
	Stops           map[string]int `json:"stops"`
	Seconds         float64        `json:"seconds"`
	// MeanFirstTokenSeconds is the mean prefill latency; DecodeTokensPerSecond
	// the rate of the tokens after the first (cached decoding steps).
	MeanFirstTokenSeconds float64          `json:"mean_first_token_seconds"`
	DecodeTokensPerSecond float64          `json:"decode_tokens_per_second"`
	Method                string           `json:"method"`
	Articles              []ArticleSummary `json:"articles"`
}

// errNewline cancels generation at a newline token.
var errNewline = errors.New("newline")

// Summarize generates a summary of every article greedily with the KV
// cache and scores it. BOS and EOS end a summary (llama2.c models end a
// story with BOS), and so does any token whose text contains a newline:
// the summary is the text before it.
func Summarize(ctx context.Context, gen Generator, tok TextCodec, articles []Article, opts SummarizeOptions) (*SummarizeResult, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	nl := newlineTokens(tok)
	var stop []int
	for _, id := range []int{tok.EOS(), tok.BOS()} {
		if id >= 0 && !nl[id] {
			stop = append(stop, id)
		}
	}
	budget := opts.SeqLen - opts.MaxNewTokens
	res := &SummarizeResult{Stops: map[string]int{}}
	var scores []RougeScores
	var firstSum, decodeSeconds float64
	decodeTokens := 0
	for i, a := range articles {
		prompt, truncated, err := SummaryPrompt(tok, opts.Template, a.Document, budget, opts.Truncate)
		if err != nil {
			return nil, fmt.Errorf("article %s: %w", a.ID, err)
		}
		gctx, cancel := context.WithCancelCause(ctx)
		start := time.Now()
		var first time.Duration
		ids, err := gen.Generate(gctx, prompt, ort.GenerateOptions{MaxTokens: opts.MaxNewTokens, Stop: stop,
			OnToken: func(id int) {
				if first == 0 {
					first = time.Since(start)
				}
				if nl[id] {
					cancel(errNewline) // Generate checks the context before its next step
				}
			}})
		el := time.Since(start)
		newline := errors.Is(context.Cause(gctx), errNewline)
		cancel(nil)
		if err != nil && !newline {
			return nil, fmt.Errorf("article %s: %w", a.ID, err)
		}
		if first == 0 {
			first = el // the first token ended it (EOS) or none came
		}
		s := ArticleSummary{ID: a.ID, Reference: a.Summary, PromptTokens: len(prompt), Truncated: truncated,
			GeneratedTokens: len(ids), FirstTokenSeconds: first.Seconds(), Seconds: el.Seconds()}
		text := tok.Decode(ids)
		switch {
		case newline:
			s.Stop = StopNewline
			text, _, _ = strings.Cut(text, "\n")
		case len(ids) >= opts.MaxNewTokens:
			s.Stop = StopMaxTokens
		default:
			s.Stop = StopEOS
			s.GeneratedTokens++ // the EOS was generated, though Generate drops it
		}
		s.Summary = strings.TrimSpace(text)
		s.Scores = Rouge(a.Summary, s.Summary)
		scores = append(scores, s.Scores)
		res.Articles = append(res.Articles, s)
		res.Documents++
		res.GeneratedTokens += s.GeneratedTokens
		res.PromptTokens += s.PromptTokens
		if truncated {
			res.Truncated++
		}
		res.Stops[s.Stop]++
		res.Seconds += s.Seconds
		firstSum += s.FirstTokenSeconds
		decodeTokens += s.GeneratedTokens - 1
		decodeSeconds += s.Seconds - s.FirstTokenSeconds
		if opts.Progress != nil {
			opts.Progress(i+1, len(articles))
		}
	}
	res.Rouge = RougeMean(scores)
	if res.Documents > 0 {
		res.MeanFirstTokenSeconds = firstSum / float64(res.Documents)
	}
	if decodeSeconds > 0 {
		res.DecodeTokensPerSecond = float64(decodeTokens) / decodeSeconds
	}
	dropped := map[string]string{TruncateMiddle: "middle", TruncateLeft: "start", TruncateRight: "end"}[opts.Truncate]
	res.Method = fmt.Sprintf("prompt %q after BOS, at most %d tokens (a longer document loses its %s); greedy decoding with the KV cache, "+
		"ended by EOS/BOS, a newline token or %d new tokens; ROUGE-1/2/L F1 with Porter stemming as rouge-score, mean over articles",
		opts.Template, budget, dropped, opts.MaxNewTokens)
	return res, nil
}
