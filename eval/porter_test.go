package eval

import (
	"strings"
	"testing"
)

// TestPorterStemByHand: stems worked out from the rules in porter.go
// (NLTK_EXTENSIONS mode). m is the measure [C](VC)^m[V] of the stem.
func TestPorterStemByHand(t *testing.T) {
	for _, c := range []struct{ word, want, why string }{
		{"caresses", "caress", "1a: sses → ss"},
		{"ponies", "poni", "1a: ies → i"},
		{"ties", "tie", "1a (NLTK): four-letter ies → ie"},
		{"cats", "cat", "1a: s →"},
		{"feed", "feed", "1b: eed needs m(f) > 0; m = 0, and no fall-through to ed"},
		{"agreed", "agre", "1b: m(agr) = 1 → agree; 5a: m(agre) = 1, agre is not *o → drop e"},
		{"plastered", "plaster", "1b: ed after a vowel; 4: er needs m(plast) > 1, m = 1"},
		{"motoring", "motor", "1b: ing; 4: er? no, or → nothing"},
		{"hopping", "hop", "1b: ing, then *d (pp) → single p"},
		{"falling", "fall", "1b: ing, *d but l is kept"},
		{"hissing", "hiss", "1b: ing, *d but s is kept"},
		{"sized", "size", "1b: ed, iz → ize; 5a: m(siz) = 1 and *o → keep e"},
		{"filing", "file", "1b: ing, m(fil) = 1 and *o → file; 5a keeps the e (*o)"},
		{"happy", "happi", "1c: y after a consonant → i"},
		{"enjoy", "enjoy", "1c: y after a vowel stays"},
		{"fly", "fli", "1c (NLTK): stem fl has no vowel, y still → i (the paper keeps fly)"},
		{"spied", "spi", "1b (NLTK): ied → i"},
		{"died", "die", "1b (NLTK): four-letter ied → ie"},
		{"relational", "relat", "2: ational → ate (m(rel) = 1); 5a: m(relat) = 2 → drop e"},
		{"conditional", "condit", "2: tional → tion; 4: ion after t with m(condit) = 2"},
		{"rational", "ration", "2: tional matches but m(ra) = 0, stop; 4: al with m(ration) = 2"},
		{"generalization", "gener", "2: ization → ize; 3: alize → al; 4: al with m(gener) = 2"},
		{"geology", "geolog", "1c: geologi; 2 (NLTK): logi → log, measured on geol (m = 1)"},
		{"hopefulness", "hope", "2: fulness → ful; 3: ful →; 5a: m(hop) = 1 and *o → keep e"},
		{"faithfully", "faith", "1c: faithfulli; 2 (NLTK): fulli → ful; 3: ful → (Porter's own: faithfulli)"},
		{"controlling", "control", "1b: ing, *d with l kept; 5b: ll → l since m(control) = 2"},
		{"oed", "o", "1b: ed after a vowel; nothing restores (NLTK issue 1581)"},
		{"dying", "die", "NLTK irregular form"},
		{"news", "news", "NLTK irregular form (not new)"},
		{"sky", "sky", "NLTK irregular form"},
		{"spy", "spi", "1c (NLTK)"},
		{"1990s", "1990", "digits are consonants: 1a s →"},
		{"2017", "2017", "nothing applies"},
		{"is", "is", "two letters: unchanged (NLTK)"},
	} {
		if got := PorterStem(c.word); got != c.want {
			t.Errorf("PorterStem(%q) = %q, want %q (%s)", c.word, got, c.want, c.why)
		}
	}
}

// TestPorterStemVocabulary: a contiguous slice (fa … falsing) of Martin
// Porter's test vocabulary voc.txt and its output.txt
// (https://tartarus.org/martin/PorterStemmer/, as mirrored in
// github.com/msbmsb/porter-stem.vim data/). Porter's output is his
// extended ("Martin") version; the one word of the slice where NLTK's
// extensions differ, faithfully, is checked in TestPorterStemByHand.
func TestPorterStemVocabulary(t *testing.T) {
	voc := strings.Fields(`fa fabian fable fables fabric fabulous fac face faced facere faces
	faciant facile facility facinerious facing facit fact faction factionary factions factious
	factor factors faculties faculty fade faded fadeth fadge fading fadings fadom fadoms fagot
	fagots fail failing fails fain faint fainted fainter fainting faintly faintness faints fair
	fairer fairest fairies fairing fairings fairly fairness fairs fairwell fairy fais fait faites
	faith faithful faithfull faithless faiths faitors fal falchion falcon falconbridge
	falconer falconers fall fallacy fallen falleth falliable fallible falling fallow fallows falls
	fally falorous false falsehood falsely falseness falser falsify falsing`)
	out := strings.Fields(`fa fabian fabl fabl fabric fabul fac face face facer face
	faciant facil facil facineri face facit fact faction factionari faction factiou
	factor factor faculti faculti fade fade fadeth fadg fade fade fadom fadom fagot
	fagot fail fail fail fain faint faint fainter faint faintli faint faint fair
	fairer fairest fairi fair fair fairli fair fair fairwel fairi fai fait fait
	faith faith faithful faithless faith faitor fal falchion falcon falconbridg
	falcon falcon fall fallaci fallen falleth falliabl fallibl fall fallow fallow fall
	falli falor fals falsehood fals fals falser falsifi fals`)
	if len(voc) != len(out) {
		t.Fatalf("%d words, %d stems", len(voc), len(out))
	}
	for i, w := range voc {
		if got := PorterStem(w); got != out[i] {
			t.Errorf("PorterStem(%q) = %q, want %q", w, got, out[i])
		}
	}
}
