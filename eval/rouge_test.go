package eval

import (
	"math"
	"slices"
	"testing"
)

func TestRougeTokens(t *testing.T) {
	for _, c := range []struct {
		text string
		stem bool
		want []string
	}{
		{"Hello, WORLD! It's 2017—café", false, []string{"hello", "world", "it", "s", "2017", "caf"}},
		{"  \n\t ", false, nil},
		{"", true, nil},
		// Stemming only touches tokens longer than 3 characters: "was"
		// stays (the stemmer would give "wa"), "runs" becomes "run".
		{"was runs running", true, []string{"was", "run", "run"}},
		{"The runners were running quickly.", true, []string{"the", "runner", "were", "run", "quickli"}},
		// Python's str.lower turns İ into i + a combining dot (a
		// separator); the Kelvin sign lower-cases to k.
		{"İstanbul \u212Aelvin", false, []string{"i", "stanbul", "kelvin"}},
	} {
		if got := RougeTokens(c.text, c.stem); !slices.Equal(got, c.want) {
			t.Errorf("RougeTokens(%q, %v) = %q, want %q", c.text, c.stem, got, c.want)
		}
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-12 }

func checkScore(t *testing.T, what string, got Score, p, r, f float64) {
	t.Helper()
	if !near(got.Precision, p) || !near(got.Recall, r) || !near(got.F1, f) {
		t.Errorf("%s = %+v, want P %.6g R %.6g F %.6g", what, got, p, r, f)
	}
}

// TestRougeByHand: scores worked out by hand; F = 2PR/(P+R).
func TestRougeByHand(t *testing.T) {
	// ref  = the cat sat on the mat (6 tokens), cand = the cat on the mat (5).
	// ROUGE-1: clipped matches the 2, cat 1, on 1, mat 1 = 5; P = 5/5,
	//   R = 5/6, F = (10/6)/(11/6) = 10/11.
	// ROUGE-2: ref bigrams the·cat cat·sat sat·on on·the the·mat (5), cand
	//   the·cat cat·on on·the the·mat (4), matches 3; P = 3/4, R = 3/5,
	//   F = (2·9/20)/(27/20) = 2/3.
	// ROUGE-L: LCS the cat on the mat = 5; as ROUGE-1.
	s := Rouge("The cat sat on the mat.", "the cat on the mat")
	checkScore(t, "cat rouge1", s.Rouge1, 1, 5.0/6, 10.0/11)
	checkScore(t, "cat rouge2", s.Rouge2, 3.0/4, 3.0/5, 2.0/3)
	checkScore(t, "cat rougeL", s.RougeL, 1, 5.0/6, 10.0/11)

	// Repeated tokens are clipped: ref a a b, cand a a a a.
	// ROUGE-1: min(2, 4) = 2 matches; P = 2/4, R = 2/3, F = (2/3)/(7/6) = 4/7.
	// ROUGE-2: ref a·a a·b, cand a·a ×3: min(1, 3) = 1; P = 1/3, R = 1/2,
	//   F = (1/3)/(5/6) = 2/5.
	// ROUGE-L: LCS a a = 2; P = 2/4, R = 2/3, F = 4/7.
	s = Rouge("a a b", "a a a a")
	checkScore(t, "repeat rouge1", s.Rouge1, 0.5, 2.0/3, 4.0/7)
	checkScore(t, "repeat rouge2", s.Rouge2, 1.0/3, 0.5, 0.4)
	checkScore(t, "repeat rougeL", s.RougeL, 0.5, 2.0/3, 4.0/7)

	// Order matters only to ROUGE-2 and ROUGE-L: ref a b c d, cand d c b a.
	// ROUGE-1: 4/4; ROUGE-2: no shared bigram; ROUGE-L: LCS 1 → 1/4.
	s = Rouge("a b c d", "d c b a")
	checkScore(t, "reversed rouge1", s.Rouge1, 1, 1, 1)
	checkScore(t, "reversed rouge2", s.Rouge2, 0, 0, 0)
	checkScore(t, "reversed rougeL", s.RougeL, 0.25, 0.25, 0.25)

	// Stemming: ref → the runner were run quickli (5), cand "A runner runs
	// quick" → a runner run quick (4). Matches runner, run: P = 2/4,
	// R = 2/5, F = 0.4/0.9 = 4/9; no bigram survives; LCS runner run = 2.
	// Unstemmed, nothing would match (runners ≠ runner, running ≠ runs).
	s = Rouge("The runners were running quickly.", "A runner runs quick")
	checkScore(t, "stem rouge1", s.Rouge1, 0.5, 0.4, 4.0/9)
	checkScore(t, "stem rouge2", s.Rouge2, 0, 0, 0)
	checkScore(t, "stem rougeL", s.RougeL, 0.5, 0.4, 4.0/9)
	if u := RougeN(RougeTokens("The runners were running quickly.", false), RougeTokens("A runner runs quick", false), 1); u.F1 != 0 {
		t.Errorf("unstemmed rouge1 = %+v, want 0", u)
	}

	// Empty sides score 0 everywhere (rouge-score divides n-gram counts
	// by max(count, 1) and returns 0 for an empty LCS side); a candidate
	// of punctuation only is empty after tokenization.
	for _, c := range [][2]string{{"hello world", ""}, {"", "hello world"}, {"", ""}, {"hello world", "?!"}} {
		s := Rouge(c[0], c[1])
		for _, sc := range []Score{s.Rouge1, s.Rouge2, s.RougeL} {
			checkScore(t, "empty "+c[0]+"|"+c[1], sc, 0, 0, 0)
		}
	}
	// One token: no bigrams on either side → ROUGE-2 is 0, not NaN.
	s = Rouge("hello", "hello")
	checkScore(t, "one-token rouge1", s.Rouge1, 1, 1, 1)
	checkScore(t, "one-token rouge2", s.Rouge2, 0, 0, 0)
}

// TestRougeMean: per-pair scores averaged. Pair 1 is the cat example
// (ROUGE-1 F 10/11), pair 2 identical (F 1): mean F = (10/11 + 1)/2 = 21/22.
func TestRougeMean(t *testing.T) {
	m := RougeMean([]RougeScores{
		Rouge("The cat sat on the mat.", "the cat on the mat"),
		Rouge("same words", "Same words!"),
	})
	checkScore(t, "mean rouge1", m.Rouge1, 1, (5.0/6+1)/2, 21.0/22)
	checkScore(t, "mean rouge2", m.Rouge2, (0.75+1)/2, (0.6+1)/2, (2.0/3+1)/2)
	if z := RougeMean(nil); z != (RougeScores{}) {
		t.Errorf("mean of nothing = %+v", z)
	}
}
