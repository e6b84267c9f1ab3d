package eval

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// ROUGE as Google's rouge-score package computes it with
// RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True): the
// scores of the summarization literature since 2020 (PEGASUS, T5,
// lm-evaluation-harness, HELM, Hugging Face evaluate).

// RougeTokens tokenizes text as rouge-score's tokenize.tokenize does:
// lower-case (Python's str.lower), every run of characters other than
// a–z and 0–9 becomes a separator, and, when stem is set, tokens longer
// than 3 characters are replaced by their Porter stem. Non-ASCII letters
// are therefore separators, as in rouge-score ("café" → "caf").
func RougeTokens(text string, stem bool) []string {
	var toks []string
	var b strings.Builder
	flush := func() {
		if b.Len() == 0 {
			return
		}
		t := b.String()
		b.Reset()
		if stem && len(t) > 3 {
			t = PorterStem(t)
		}
		toks = append(toks, t)
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		i += size
		switch {
		case r == 'İ':
			// Python lower-cases U+0130 to "i" + U+0307 (a combining dot,
			// hence a separator); Go's simple mapping gives "i" alone.
			b.WriteByte('i')
			flush()
			continue
		case r >= utf8.RuneSelf:
			r = unicode.ToLower(r) // the Kelvin sign K becomes k, as in Python
		case 'A' <= r && r <= 'Z':
			r += 'a' - 'A'
		}
		if ('a' <= r && r <= 'z') || ('0' <= r && r <= '9') {
			b.WriteRune(r)
		} else {
			flush()
		}
	}
	flush()
	return toks
}

// Score is precision, recall and F1 of a candidate against a reference.
type Score struct {
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
}

// fmeasure is rouge-score's scoring.fmeasure: the harmonic mean, 0 when
// both are 0.
func fmeasure(p, r float64) float64 {
	if p+r > 0 {
		return 2 * p * r / (p + r)
	}
	return 0
}

// RougeN scores n-gram overlap: each n-gram of the candidate matches at
// most as many times as it occurs in the reference (counts clipped),
// precision = matches / candidate n-grams, recall = matches / reference
// n-grams (a side with no n-grams divides by 1, so scores 0).
func RougeN(reference, candidate []string, n int) Score {
	ref := ngramCounts(reference, n)
	cand := ngramCounts(candidate, n)
	var match, nRef, nCand int
	for g, c := range ref {
		match += min(c, cand[g])
		nRef += c
	}
	for _, c := range cand {
		nCand += c
	}
	p := float64(match) / float64(max(nCand, 1))
	r := float64(match) / float64(max(nRef, 1))
	return Score{p, r, fmeasure(p, r)}
}

// ngramCounts counts the n-grams of toks, keyed by the tokens joined with
// a space (tokens never contain one).
func ngramCounts(toks []string, n int) map[string]int {
	c := map[string]int{}
	for i := 0; i+n <= len(toks); i++ {
		c[strings.Join(toks[i:i+n], " ")]++
	}
	return c
}

// RougeL scores the longest common subsequence (sentence-level ROUGE-L,
// rouge-score's "rougeL", not the newline-split "rougeLsum"): precision =
// LCS / candidate length, recall = LCS / reference length; all 0 when
// either side is empty.
func RougeL(reference, candidate []string) Score {
	if len(reference) == 0 || len(candidate) == 0 {
		return Score{}
	}
	l := lcsLength(reference, candidate)
	p := float64(l) / float64(len(candidate))
	r := float64(l) / float64(len(reference))
	return Score{p, r, fmeasure(p, r)}
}

// lcsLength is the classic dynamic programme, one row at a time.
func lcsLength(a, b []string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for i := range a {
		for j := range b {
			if a[i] == b[j] {
				cur[j+1] = prev[j] + 1
			} else {
				cur[j+1] = max(prev[j+1], cur[j])
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// RougeScores are ROUGE-1, ROUGE-2 and ROUGE-L of one pair.
type RougeScores struct {
	Rouge1 Score `json:"rouge1"`
	Rouge2 Score `json:"rouge2"`
	RougeL Score `json:"rougeL"`
}

// Rouge scores candidate against reference with Porter stemming, as
// rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"],
// use_stemmer=True).score(reference, candidate).
func Rouge(reference, candidate string) RougeScores {
	ref := RougeTokens(reference, true)
	cand := RougeTokens(candidate, true)
	return RougeScores{
		Rouge1: RougeN(ref, cand, 1),
		Rouge2: RougeN(ref, cand, 2),
		RougeL: RougeL(ref, cand),
	}
}

// RougeMean averages precision, recall and F1 over pairs: each pair is
// scored on its own and the scores are averaged (macro average), which is
// what lm-evaluation-harness reports and the centre of rouge-score's
// BootstrapAggregator (whose "mid" is the median of bootstrap resampled
// means, within sampling noise of this mean). An empty list gives zeros.
func RougeMean(scores []RougeScores) RougeScores {
	var m RougeScores
	if len(scores) == 0 {
		return m
	}
	add := func(dst *Score, s Score) {
		dst.Precision += s.Precision
		dst.Recall += s.Recall
		dst.F1 += s.F1
	}
	for _, s := range scores {
		add(&m.Rouge1, s.Rouge1)
		add(&m.Rouge2, s.Rouge2)
		add(&m.RougeL, s.RougeL)
	}
	n := float64(len(scores))
	for _, s := range []*Score{&m.Rouge1, &m.Rouge2, &m.RougeL} {
		s.Precision /= n
		s.Recall /= n
		s.F1 /= n
	}
	return m
}
