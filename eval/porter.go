package eval

import "strings"

// PorterStem returns the Porter stem of a lower-case word exactly as
// NLTK's PorterStemmer does in its default NLTK_EXTENSIONS mode, which is
// the stemmer Google's rouge-score constructs (porter.PorterStemmer() in
// tokenizers.DefaultTokenizer; rouge-score itself only calls it for tokens
// longer than 3 characters, see RougeTokens).
//
// The NLTK extensions over Porter's 1980 paper are: a table of irregular
// forms (sky, skies, dying, lying, tying, news, innings, outings,
// cannings, howe, proceed, exceed, succeed); words of one or two letters
// are returned unchanged; "ies"/"ied" become "ie" in four-letter words
// ("dies" → "die") and "i" otherwise; step 1c turns a final y into i only
// after a consonant that is not the first letter ("happy" → "happi",
// "enjoy" → "enjoy", "fly" → "fli"); step 2 uses -bli (not -abli), runs
// -alli → -al first and repeats step 2 on the result, and adds -fulli →
// -ful and -logi → -log (with the l counted in the stem); the *o test also
// holds for a two-letter vowel-consonant stem. Characters other than
// a, e, i, o, u and y (digits included) are consonants, as in NLTK.
//
// Each step below follows NLTK's _apply_rule_list: the first rule whose
// suffix matches decides, and if its condition fails no later rule of the
// step is tried ("ement" failing does not fall through to "ment").
func PorterStem(word string) string {
	if s, ok := porterIrregular[word]; ok {
		return s
	}
	if len(word) <= 2 {
		return word
	}
	w := porterStep1a(word)
	w = porterStep1b(w)
	w = porterStep1c(w)
	w = porterStep2(w)
	w = porterStep3(w)
	w = porterStep4(w)
	w = porterStep5a(w)
	return porterStep5b(w)
}

// porterIrregular is NLTK's pool of irregular forms, bypassing the steps.
var porterIrregular = map[string]string{
	"sky": "sky", "skies": "sky",
	"dying": "die", "lying": "lie", "tying": "tie",
	"news":    "news",
	"innings": "inning", "inning": "inning",
	"outings": "outing", "outing": "outing",
	"cannings": "canning", "canning": "canning",
	"howe":    "howe",
	"proceed": "proceed", "exceed": "exceed", "succeed": "succeed",
}

// isConsonant: a letter other than a, e, i, o, u, and other than a y
// preceded by a consonant (a y at the start is a consonant).
func isConsonant(w string, i int) bool {
	switch w[i] {
	case 'a', 'e', 'i', 'o', 'u':
		return false
	case 'y':
		return i == 0 || !isConsonant(w, i-1)
	}
	return true
}

// measure is m in [C](VC)^m[V]: the number of vowel→consonant transitions.
func measure(stem string) int {
	m := 0
	for i := 1; i < len(stem); i++ {
		if !isConsonant(stem, i-1) && isConsonant(stem, i) {
			m++
		}
	}
	return m
}

func containsVowel(stem string) bool {
	for i := range len(stem) {
		if !isConsonant(stem, i) {
			return true
		}
	}
	return false
}

// endsDoubleConsonant is *d.
func endsDoubleConsonant(w string) bool {
	n := len(w)
	return n >= 2 && w[n-1] == w[n-2] && isConsonant(w, n-1)
}

// endsCVC is *o: consonant-vowel-consonant, the last not w, x or y; NLTK
// also accepts a whole two-letter stem vowel-consonant.
func endsCVC(w string) bool {
	n := len(w)
	if n >= 3 && isConsonant(w, n-3) && !isConsonant(w, n-2) && isConsonant(w, n-1) &&
		w[n-1] != 'w' && w[n-1] != 'x' && w[n-1] != 'y' {
		return true
	}
	return n == 2 && !isConsonant(w, 0) && isConsonant(w, 1)
}

// porterRule replaces suffix by repl when cond(stem) holds (cond nil:
// always).
type porterRule struct {
	suffix, repl string
	cond         func(stem string) bool
}

// applyRules applies the first rule whose suffix matches, or none.
func applyRules(w string, rules []porterRule) string {
	for _, r := range rules {
		if !strings.HasSuffix(w, r.suffix) {
			continue
		}
		stem := w[:len(w)-len(r.suffix)]
		if r.cond == nil || r.cond(stem) {
			return stem + r.repl
		}
		return w
	}
	return w
}

func positiveMeasure(stem string) bool { return measure(stem) > 0 }
func measureAbove1(stem string) bool   { return measure(stem) > 1 }

var step1aRules = []porterRule{
	{"sses", "ss", nil},
	{"ies", "i", nil},
	{"ss", "ss", nil},
	{"s", "", nil},
}

func porterStep1a(w string) string {
	if len(w) == 4 && strings.HasSuffix(w, "ies") {
		return w[:1] + "ie" // NLTK: "dies" → "die", not "di"
	}
	return applyRules(w, step1aRules)
}

func porterStep1b(w string) string {
	if strings.HasSuffix(w, "ied") { // NLTK: "died" → "die", "spied" → "spi"
		if len(w) == 4 {
			return w[:1] + "ie"
		}
		return w[:len(w)-3] + "i"
	}
	if strings.HasSuffix(w, "eed") {
		if stem := w[:len(w)-3]; measure(stem) > 0 {
			return stem + "ee"
		}
		return w
	}
	var stem string
	ok := false
	for _, suf := range []string{"ed", "ing"} {
		if strings.HasSuffix(w, suf) && containsVowel(w[:len(w)-len(suf)]) {
			stem, ok = w[:len(w)-len(suf)], true
			break
		}
	}
	if !ok {
		return w
	}
	// After -ed/-ing: restore an e (conflat-ed → conflate, fil-ing →
	// file) or undouble a final consonant (hopp-ing → hop) except l, s, z.
	for _, suf := range []string{"at", "bl", "iz"} {
		if strings.HasSuffix(stem, suf) {
			return stem + "e"
		}
	}
	if endsDoubleConsonant(stem) {
		switch stem[len(stem)-1] {
		case 'l', 's', 'z':
			return stem
		}
		return stem[:len(stem)-1]
	}
	if measure(stem) == 1 && endsCVC(stem) {
		return stem + "e"
	}
	return stem
}

func porterStep1c(w string) string {
	if !strings.HasSuffix(w, "y") {
		return w
	}
	if stem := w[:len(w)-1]; len(stem) > 1 && isConsonant(stem, len(stem)-1) {
		return stem + "i"
	}
	return w
}

var step2Rules = []porterRule{
	{"ational", "ate", positiveMeasure},
	{"tional", "tion", positiveMeasure},
	{"enci", "ence", positiveMeasure},
	{"anci", "ance", positiveMeasure},
	{"izer", "ize", positiveMeasure},
	{"bli", "ble", positiveMeasure},
	{"alli", "al", positiveMeasure},
	{"entli", "ent", positiveMeasure},
	{"eli", "e", positiveMeasure},
	{"ousli", "ous", positiveMeasure},
	{"ization", "ize", positiveMeasure},
	{"ation", "ate", positiveMeasure},
	{"ator", "ate", positiveMeasure},
	{"alism", "al", positiveMeasure},
	{"iveness", "ive", positiveMeasure},
	{"fulness", "ful", positiveMeasure},
	{"ousness", "ous", positiveMeasure},
	{"aliti", "al", positiveMeasure},
	{"iviti", "ive", positiveMeasure},
	{"biliti", "ble", positiveMeasure},
	{"fulli", "ful", positiveMeasure},
	// logi → log with the l counted in the stem (stem+"l"), so that
	// geology → geolog like archaeology → archaeolog.
	{"logi", "log", func(stem string) bool { return positiveMeasure(stem + "l") }},
}

func porterStep2(w string) string {
	if strings.HasSuffix(w, "alli") && positiveMeasure(w[:len(w)-4]) {
		return porterStep2(w[:len(w)-4] + "al")
	}
	return applyRules(w, step2Rules)
}

var step3Rules = []porterRule{
	{"icate", "ic", positiveMeasure},
	{"ative", "", positiveMeasure},
	{"alize", "al", positiveMeasure},
	{"iciti", "ic", positiveMeasure},
	{"ical", "ic", positiveMeasure},
	{"ful", "", positiveMeasure},
	{"ness", "", positiveMeasure},
}

func porterStep3(w string) string { return applyRules(w, step3Rules) }

var step4Rules = []porterRule{
	{"al", "", measureAbove1},
	{"ance", "", measureAbove1},
	{"ence", "", measureAbove1},
	{"er", "", measureAbove1},
	{"ic", "", measureAbove1},
	{"able", "", measureAbove1},
	{"ible", "", measureAbove1},
	{"ant", "", measureAbove1},
	{"ement", "", measureAbove1},
	{"ment", "", measureAbove1},
	{"ent", "", measureAbove1},
	{"ion", "", func(stem string) bool {
		return measure(stem) > 1 && (stem[len(stem)-1] == 's' || stem[len(stem)-1] == 't')
	}},
	{"ou", "", measureAbove1},
	{"ism", "", measureAbove1},
	{"ate", "", measureAbove1},
	{"iti", "", measureAbove1},
	{"ous", "", measureAbove1},
	{"ive", "", measureAbove1},
	{"ize", "", measureAbove1},
}

func porterStep4(w string) string { return applyRules(w, step4Rules) }

// porterStep5a tries both e rules (m>1, then m=1 and not *o), unlike the
// other steps: NLTK does the same.
func porterStep5a(w string) string {
	if !strings.HasSuffix(w, "e") {
		return w
	}
	stem := w[:len(w)-1]
	if m := measure(stem); m > 1 || (m == 1 && !endsCVC(stem)) {
		return stem
	}
	return w
}

// porterStep5b: (m>1 and *d and *L) → single letter, with m measured on
// the word less its last l, as NLTK does.
func porterStep5b(w string) string {
	if strings.HasSuffix(w, "ll") && measure(w[:len(w)-1]) > 1 {
		return w[:len(w)-1]
	}
	return w
}
