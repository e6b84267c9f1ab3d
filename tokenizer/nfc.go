package tokenizer

import (
	"sort"
	"strings"
	"sync"
)

//go:generate /usr/bin/python3 gen_nfc.py

// nfc returns s in Unicode Normalization Form C, as the NFC normalizer of
// Qwen's tokenizer.json asks. The tables come from Python's unicodedata
// (gen_nfc.py), so that the module needs no golang.org/x/text.
func nfc(s string) string {
	nfcOnce.Do(nfcInit)
	// Fast path: text without a character NFC could change (nothing below
	// U+0300 can) is already NFC.
	clean := true
	for _, r := range s {
		if r >= 0x300 && nfcUnsafe[r] {
			clean = false
			break
		}
	}
	if clean {
		return s
	}

	// Canonical decomposition.
	d := make([]rune, 0, len(s))
	for _, r := range s {
		d = decompose(d, r)
	}
	// Canonical ordering: stable sort of every run of non-starters by class.
	for i := 0; i < len(d); {
		if ccc(d[i]) == 0 {
			i++
			continue
		}
		j := i
		for j < len(d) && ccc(d[j]) != 0 {
			j++
		}
		run := d[i:j]
		sort.SliceStable(run, func(a, b int) bool { return ccc(run[a]) < ccc(run[b]) })
		i = j
	}
	// Canonical composition.
	out := d[:0]
	starter := -1
	for _, r := range d {
		c := ccc(r)
		if starter >= 0 {
			last := out[len(out)-1]
			adjacent := len(out)-1 == starter
			if adjacent || (ccc(last) != 0 && ccc(last) < c) {
				if comp, ok := compose(out[starter], r); ok {
					out[starter] = comp
					continue
				}
			}
		}
		if c == 0 {
			starter = len(out)
		}
		out = append(out, r)
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range out {
		b.WriteRune(r)
	}
	return b.String()
}

// Hangul syllables are composed algorithmically (Unicode §3.12).
const (
	hangulS, hangulL, hangulV, hangulT = 0xAC00, 0x1100, 0x1161, 0x11A7
	hangulLCount, hangulVCount         = 19, 21
	hangulTCount                       = 28
	hangulNCount                       = hangulVCount * hangulTCount
	hangulSCount                       = hangulLCount * hangulNCount
)

var (
	nfcOnce    sync.Once
	nfcUnsafe  map[rune]bool
	nfcFull    map[rune][]rune // full canonical decompositions
	nfcCompose map[[2]rune]rune
)

func nfcInit() {
	nfcUnsafe = make(map[rune]bool)
	one := make(map[rune][2]rune, len(nfcDecomp))
	nfcCompose = make(map[[2]rune]rune)
	for _, e := range nfcDecomp {
		one[e[0]] = [2]rune{e[1], e[2]}
		if e[3] == 1 {
			nfcCompose[[2]rune{e[1], e[2]}] = e[0]
			nfcUnsafe[e[2]] = true // may combine with what precedes it
		} else {
			nfcUnsafe[e[0]] = true // never appears in NFC text
		}
	}
	for _, r := range nfcCCC {
		for c := r[0]; c <= r[1]; c++ {
			nfcUnsafe[c] = true
		}
	}
	for c := rune(hangulV); c < hangulV+hangulVCount; c++ {
		nfcUnsafe[c] = true
	}
	for c := rune(hangulT + 1); c < hangulT+hangulTCount; c++ {
		nfcUnsafe[c] = true
	}
	nfcFull = make(map[rune][]rune, len(one))
	var full func(r rune) []rune
	full = func(r rune) []rune {
		p, ok := one[r]
		if !ok {
			return []rune{r}
		}
		out := full(p[0])
		if p[1] != 0 {
			out = append(out, full(p[1])...)
		}
		return out
	}
	for r := range one {
		nfcFull[r] = full(r)
	}
}

func decompose(dst []rune, r rune) []rune {
	if s := r - hangulS; 0 <= s && s < hangulSCount {
		dst = append(dst, hangulL+s/hangulNCount, hangulV+(s%hangulNCount)/hangulTCount)
		if t := s % hangulTCount; t != 0 {
			dst = append(dst, hangulT+t)
		}
		return dst
	}
	if f, ok := nfcFull[r]; ok {
		return append(dst, f...)
	}
	return append(dst, r)
}

func compose(a, b rune) (rune, bool) {
	if l := a - hangulL; 0 <= l && l < hangulLCount {
		if v := b - hangulV; 0 <= v && v < hangulVCount {
			return hangulS + (l*hangulVCount+v)*hangulTCount, true
		}
	}
	if s := a - hangulS; 0 <= s && s < hangulSCount && s%hangulTCount == 0 {
		if t := b - hangulT; 0 < t && t < hangulTCount {
			return a + t, true
		}
	}
	c, ok := nfcCompose[[2]rune{a, b}]
	return c, ok
}

// ccc returns the canonical combining class of r.
func ccc(r rune) int32 {
	if r < 0x300 {
		return 0
	}
	i := sort.Search(len(nfcCCC), func(i int) bool { return nfcCCC[i][1] >= r })
	if i < len(nfcCCC) && nfcCCC[i][0] <= r {
		return nfcCCC[i][2]
	}
	return 0
}
