package eval

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// ChoiceTask is a zero-shot multiple-choice task scored as
// lm-evaluation-harness scores "multiple_choice" tasks: every example is
// a context and one continuation per class, and the prediction is the
// continuation with the highest summed log-likelihood given the context.
type ChoiceTask struct {
	Name string
	// Labels names the classes; Continuations[i] is the text appended to
	// the context for class i (lm-eval's target delimiter " " included).
	Labels, Continuations []string
	Examples              []ChoiceExample
}

// ChoiceExample is one example: the context and the index of the gold
// class. Index is the example's position in its file (0-based).
type ChoiceExample struct {
	Context string
	Gold    int
	Index   int
}

// LoadBoolQ reads BoolQ as JSONL records {passage, question, answer}
// (answer a boolean; SuperGLUE's 0/1 "label" is accepted instead) into
// lm-eval's boolq task: context "{passage}\nQuestion: {question}?\nAnswer:",
// continuations " no" and " yes".
func LoadBoolQ(path string) (*ChoiceTask, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	t := &ChoiceTask{Name: "boolq", Labels: []string{"no", "yes"}, Continuations: []string{" no", " yes"}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for line := 1; sc.Scan(); line++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("eval: %s: line %d: not a JSON object: %v", path, line, err)
		}
		field := func(name string) (string, error) {
			v, ok := rec[name]
			if !ok {
				return "", fmt.Errorf("eval: %s: line %d: no field %q (record has %s); want BoolQ's {passage, question, answer}", path, line, name, keys(rec))
			}
			s, ok := v.(string)
			if !ok {
				return "", fmt.Errorf("eval: %s: line %d: field %q is %T, want a string", path, line, name, v)
			}
			return s, nil
		}
		passage, err := field("passage")
		if err != nil {
			return nil, err
		}
		question, err := field("question")
		if err != nil {
			return nil, err
		}
		gold := -1
		switch v := rec["answer"].(type) {
		case bool:
			gold = b2i(v)
		case nil:
			if l, ok := rec["label"].(float64); ok && (l == 0 || l == 1) {
				gold = int(l)
			}
		}
		if gold < 0 {
			if _, ok := rec["answer"]; !ok {
				if _, ok := rec["label"]; !ok {
					return nil, fmt.Errorf("eval: %s: line %d: no field \"answer\" (record has %s)", path, line, keys(rec))
				}
			}
			return nil, fmt.Errorf("eval: %s: line %d: answer must be true/false (or label 0/1)", path, line)
		}
		t.Examples = append(t.Examples, ChoiceExample{
			Context: passage + "\nQuestion: " + question + "?\nAnswer:", Gold: gold, Index: len(t.Examples)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	if len(t.Examples) == 0 {
		return nil, fmt.Errorf("eval: %s: no examples (empty file)", path)
	}
	return t, nil
}

// LoadIMDB reads IMDB reviews from a CSV file with a header naming the
// columns text and label (pos/neg, positive/negative or 1/0) into the
// task: context "{review}\nSentiment:", continuations " negative" and
// " positive". Reviews are used as they are (HTML <br /> included).
func LoadIMDB(path string) (*ChoiceTask, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	defer f.Close()
	t := &ChoiceTask{Name: "imdb", Labels: []string{"negative", "positive"}, Continuations: []string{" negative", " positive"}}
	r := csv.NewReader(f)
	header, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("eval: %s: no examples (empty file)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("eval: %s: %w", path, err)
	}
	text, label := slices.Index(header, "text"), slices.Index(header, "label")
	if text < 0 || label < 0 {
		return nil, fmt.Errorf("eval: %s: header %q lacks the columns text and label", path, strings.Join(header, ","))
	}
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("eval: %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		var gold int
		switch strings.ToLower(strings.TrimSpace(rec[label])) {
		case "pos", "positive", "1":
			gold = 1
		case "neg", "negative", "0":
			gold = 0
		default:
			return nil, fmt.Errorf("eval: %s: line %d: label %q is not pos/neg, positive/negative or 1/0", path, line, rec[label])
		}
		t.Examples = append(t.Examples, ChoiceExample{
			Context: strings.TrimSpace(rec[text]) + "\nSentiment:", Gold: gold, Index: len(t.Examples)})
	}
	if len(t.Examples) == 0 {
		return nil, fmt.Errorf("eval: %s: no examples (only a header)", path)
	}
	return t, nil
}

// Subset returns limit examples drawn at random with seed (in file
// order), or all of them when limit ≤ 0 or ≥ their number, and says
// which subset it is.
func (t *ChoiceTask) Subset(limit int, seed uint64) (*ChoiceTask, string) {
	n := len(t.Examples)
	if limit <= 0 || limit >= n {
		return t, fmt.Sprintf("all %d examples", n)
	}
	idx := rand.New(rand.NewPCG(seed, 0)).Perm(n)[:limit]
	sort.Ints(idx)
	s := *t
	s.Examples = make([]ChoiceExample, limit)
	for i, j := range idx {
		s.Examples[i] = t.Examples[j]
	}
	return &s, fmt.Sprintf("%d of %d examples drawn at random with seed %d", limit, n, seed)
}

// ChoiceOptions control ScoreChoices.
type ChoiceOptions struct {
	// SeqLen is the most tokens one forward pass feeds; longer inputs
	// lose context tokens from the left, after BOS.
	SeqLen int
	// BatchSize is the number of (example, continuation) rows per pass.
	BatchSize int
	// Progress, when set, is called after each pass with rows done and
	// total.
	Progress func(done, total int)
}

// ChoiceResult is what a choice task measured.
type ChoiceResult struct {
	Task   string   `json:"task"`
	Labels []string `json:"labels"`
	// Examples evaluated and correctly predicted; Accuracy and its
	// standard error sqrt(acc(1−acc)/(n−1)) as lm-eval reports it.
	Examples int     `json:"examples"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	StdErr   float64 `json:"accuracy_stderr"`
	// Confusion[g][p] counts examples of gold class g predicted as p.
	Confusion [][]int `json:"confusion"`
	Gold      []int   `json:"gold_counts"`
	Predicted []int   `json:"predicted_counts"`
	// Majority is the most frequent gold class of the evaluated examples
	// and Baseline its share: the accuracy of always answering it.
	Majority string  `json:"majority_class"`
	Baseline float64 `json:"majority_baseline"`
	// Truncated counts examples whose context lost tokens on the left to
	// fit SeqLen; BoundaryMerges counts rows where tokenizing context +
	// continuation changed the context's own tokens (lm-eval takes the
	// continuation as the tokens past the context's length regardless).
	Truncated      int `json:"truncated"`
	BoundaryMerges int `json:"boundary_merges"`
	// Predictions[i] is the predicted class of example i, LogLik[i] the
	// summed log-likelihood of each continuation.
	Predictions []int       `json:"predictions"`
	LogLik      [][]float64 `json:"loglikelihoods"`
}

// choiceRow is one (example, continuation) forward pass: ids are fed,
// and positions from first on predict the continuation's tokens.
type choiceRow struct {
	example, class int
	ids            []int
	targets        []int // continuation tokens, predicted at positions first…
	first          int
	truncated      bool
	merged         bool
}

// makeChoiceRow tokenizes context and continuation as lm-eval's
// _encode_pair does: whitespace at the end of the context moves to the
// continuation, the continuation's tokens are those of the whole string
// past the length of the context's own encoding. BOS comes first; when
// BOS + context + continuation is more than seqLen+1 tokens, context
// tokens are dropped from the left so that BOS, the end of the context
// and the whole continuation remain (the last continuation token is a
// target only, never fed).
func makeChoiceRow(enc Encoder, ctxText, cont string, seqLen int) (choiceRow, error) {
	trimmed := strings.TrimRightFunc(ctxText, unicode.IsSpace)
	cont = ctxText[len(trimmed):] + cont
	ctxIDs := enc.Encode(trimmed)
	whole := enc.Encode(trimmed + cont)
	if len(whole) <= len(ctxIDs) {
		return choiceRow{}, fmt.Errorf("eval: continuation %q adds no tokens to its context", cont)
	}
	row := choiceRow{targets: whole[len(ctxIDs):], merged: !slices.Equal(whole[:len(ctxIDs)], ctxIDs)}
	// lm-eval feeds the context's own encoding followed by the
	// continuation tokens.
	body := append(slices.Clip(ctxIDs), row.targets...)
	var prefix []int
	if bos := enc.BOS(); bos >= 0 {
		prefix = []int{bos}
	}
	if keep := seqLen + 1 - len(prefix); len(body) > keep {
		body = body[len(body)-keep:]
		row.truncated = true
	}
	full := append(prefix, body...)
	row.first = len(full) - len(row.targets) - 1
	if row.first < 0 {
		return choiceRow{}, fmt.Errorf("eval: continuation %q (%d tokens) does not fit %d tokens after its context", cont, len(row.targets), seqLen)
	}
	row.ids = full[:len(full)-1]
	return row, nil
}

// ScoreChoices scores every example of t against every continuation and
// tallies the predictions.
func ScoreChoices(ctx context.Context, dec *ort.Decoder, enc Encoder, t *ChoiceTask, opts ChoiceOptions) (*ChoiceResult, error) {
	if len(t.Examples) == 0 {
		return nil, fmt.Errorf("eval: %s: no examples", t.Name)
	}
	if opts.SeqLen < 2 || opts.BatchSize < 1 {
		return nil, fmt.Errorf("eval: sequence length %d and batch size %d: want at least 2 and 1", opts.SeqLen, opts.BatchSize)
	}
	K := len(t.Continuations)
	var rows []choiceRow
	for e, ex := range t.Examples {
		for c, cont := range t.Continuations {
			r, err := makeChoiceRow(enc, ex.Context, cont, opts.SeqLen)
			if err != nil {
				return nil, fmt.Errorf("%s example %d: %w", t.Name, ex.Index, err)
			}
			r.example, r.class = e, c
			rows = append(rows, r)
		}
	}
	// Longest first, as lm-eval orders requests: rows of similar length
	// share a batch, so little of it is padding.
	order := make([]int, len(rows))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return len(rows[order[a]].ids) > len(rows[order[b]].ids) })

	loglik := make([][]float64, len(t.Examples))
	for i := range loglik {
		loglik[i] = make([]float64, K)
	}
	for i := 0; i < len(order); i += opts.BatchSize {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		batch := order[i:min(i+opts.BatchSize, len(order))]
		seq := len(rows[batch[0]].ids)
		ids := make([]int64, len(batch)*seq)
		mask := make([]int64, len(batch)*seq)
		pos := make([]int64, len(batch)*seq)
		for b, ri := range batch {
			for t, id := range rows[ri].ids {
				ids[b*seq+t], mask[b*seq+t], pos[b*seq+t] = int64(id), 1, int64(t)
			}
		}
		logits, vocab, err := forwardLogits(dec, ids, mask, pos, len(batch), seq)
		if err != nil {
			return nil, err
		}
		for b, ri := range batch {
			r := rows[ri]
			var ll float64
			for k, tg := range r.targets {
				if tg < 0 || tg >= vocab {
					return nil, fmt.Errorf("eval: token id %d outside the model's vocabulary of %d", tg, vocab)
				}
				row := logits[(b*seq+r.first+k)*vocab : (b*seq+r.first+k+1)*vocab]
				ll += float64(row[tg]) - logSumExp(row)
			}
			loglik[r.example][r.class] = ll
		}
		if opts.Progress != nil {
			opts.Progress(i+len(batch), len(order))
		}
	}

	golds := make([]int, len(t.Examples))
	preds := make([]int, len(t.Examples))
	for e, ex := range t.Examples {
		golds[e] = ex.Gold
		for c := 1; c < K; c++ {
			if loglik[e][c] > loglik[e][preds[e]] {
				preds[e] = c
			}
		}
	}
	res := Tally(t.Labels, golds, preds)
	res.Task, res.LogLik = t.Name, loglik
	truncated := make([]bool, len(t.Examples))
	for _, r := range rows {
		truncated[r.example] = truncated[r.example] || r.truncated
		if r.merged {
			res.BoundaryMerges++
		}
	}
	for _, tr := range truncated {
		if tr {
			res.Truncated++
		}
	}
	return res, nil
}

// Tally computes accuracy, the confusion matrix and the majority-class
// baseline of predictions against gold classes (indices into labels).
// Ties for the majority go to the first label.
func Tally(labels []string, golds, preds []int) *ChoiceResult {
	K := len(labels)
	res := &ChoiceResult{Labels: labels, Examples: len(golds), Confusion: make([][]int, K),
		Gold: make([]int, K), Predicted: make([]int, K), Predictions: preds}
	for i := range res.Confusion {
		res.Confusion[i] = make([]int, K)
	}
	for i, g := range golds {
		res.Confusion[g][preds[i]]++
		res.Gold[g]++
		res.Predicted[preds[i]]++
		if g == preds[i] {
			res.Correct++
		}
	}
	n := float64(len(golds))
	res.Accuracy = float64(res.Correct) / n
	if len(golds) > 1 {
		res.StdErr = math.Sqrt(res.Accuracy * (1 - res.Accuracy) / (n - 1))
	}
	maj := 0
	for c := range K {
		if res.Gold[c] > res.Gold[maj] {
			maj = c
		}
	}
	res.Majority, res.Baseline = labels[maj], float64(res.Gold[maj])/n
	return res
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// keys lists a record's field names, sorted, for error messages.
func keys(rec map[string]any) string {
	var ks []string
	for k := range rec {
		ks = append(ks, strconv.Quote(k))
	}
	sort.Strings(ks)
	if len(ks) == 0 {
		return "no fields"
	}
	return strings.Join(ks, ", ")
}
