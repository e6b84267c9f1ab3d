package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode"

	"github.com/dlclark/regexp2"
)

// This file holds the tokenizer.json components around the model:
// normalizers, pre-tokenizers and decoders, each parsed from its JSON into
// a function. Only the kinds that BPE language models use are implemented;
// any other is an error naming it.

// pattern is tokenizers' Pattern: {"String": "…"} or {"Regex": "…"}.
type pattern struct {
	String *string `json:"String"`
	Regex  *string `json:"Regex"`
}

// compile returns a function giving the byte ranges of the non-empty
// matches of p in s.
func (p pattern) compile() (func(s string) [][2]int, error) {
	switch {
	case p.String != nil:
		lit := *p.String
		if lit == "" {
			return nil, errors.New("empty String pattern")
		}
		return func(s string) [][2]int {
			var m [][2]int
			for off := 0; ; {
				i := strings.Index(s[off:], lit)
				if i < 0 {
					return m
				}
				m = append(m, [2]int{off + i, off + i + len(lit)})
				off += i + len(lit)
			}
		}, nil
	case p.Regex != nil:
		// tokenizers uses Oniguruma; the patterns in tokenizer.json files
		// (lookahead, \p{L}, (?i:…)) mean the same to regexp2, whose
		// syntax is .NET's. Go's regexp has no lookahead.
		re, err := regexp2.Compile(*p.Regex, regexp2.None)
		if err != nil {
			return nil, fmt.Errorf("regex %q: %w", *p.Regex, err)
		}
		return func(s string) [][2]int { return regexMatches(re, s) }, nil
	}
	return nil, errors.New("pattern is neither String nor Regex")
}

// regexMatches converts regexp2's rune offsets to byte offsets.
func regexMatches(re *regexp2.Regexp, s string) [][2]int {
	runes := []rune(s)
	offs := make([]int, 0, len(runes)+1)
	for i := range s {
		offs = append(offs, i)
	}
	offs = append(offs, len(s))
	var out [][2]int
	m, err := re.FindRunesMatch(runes)
	for err == nil && m != nil {
		if m.Length > 0 {
			out = append(out, [2]int{offs[m.Index], offs[m.Index+m.Length]})
		}
		m, err = re.FindNextMatch(m)
	}
	return out
}

// ---------------------------------------------------------------- normalizers

func parseNormalizer(raw json.RawMessage) (func(string) string, error) {
	if isNull(raw) {
		return nil, nil
	}
	var n struct {
		Type        string            `json:"type"`
		Normalizers []json.RawMessage `json:"normalizers"`
		Prepend     string            `json:"prepend"`
		Pattern     pattern           `json:"pattern"`
		Content     string            `json:"content"`
		Left        bool              `json:"strip_left"`
		Right       bool              `json:"strip_right"`
	}
	if err := json.Unmarshal(raw, &n); err != nil {
		return nil, fmt.Errorf("normalizer: %w", err)
	}
	switch n.Type {
	case "Sequence":
		var fs []func(string) string
		for _, sub := range n.Normalizers {
			f, err := parseNormalizer(sub)
			if err != nil {
				return nil, err
			}
			if f != nil {
				fs = append(fs, f)
			}
		}
		return func(s string) string {
			for _, f := range fs {
				s = f(s)
			}
			return s
		}, nil
	case "NFC":
		return nfc, nil
	case "Prepend":
		return func(s string) string {
			if s == "" {
				return s
			}
			return n.Prepend + s
		}, nil
	case "Replace":
		if n.Pattern.String != nil {
			old := *n.Pattern.String
			return func(s string) string { return strings.ReplaceAll(s, old, n.Content) }, nil
		}
		find, err := n.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("normalizer Replace: %w", err)
		}
		return func(s string) string { return replaceMatches(s, find(s), n.Content) }, nil
	case "Lowercase":
		return strings.ToLower, nil
	case "Strip":
		return func(s string) string {
			if n.Left {
				s = strings.TrimLeftFunc(s, unicode.IsSpace)
			}
			if n.Right {
				s = strings.TrimRightFunc(s, unicode.IsSpace)
			}
			return s
		}, nil
	}
	return nil, fmt.Errorf("normalizer %s is not supported", n.Type)
}

func replaceMatches(s string, m [][2]int, with string) string {
	if len(m) == 0 {
		return s
	}
	var b strings.Builder
	prev := 0
	for _, r := range m {
		b.WriteString(s[prev:r[0]])
		b.WriteString(with)
		prev = r[1]
	}
	b.WriteString(s[prev:])
	return b.String()
}

// ------------------------------------------------------------- pre-tokenizers

// piece is a pre-token; first is set on the one that starts the input
// (Metaspace's prepend_scheme "first").
type piece struct {
	s     string
	first bool
}

type preTokenizer func([]piece) []piece

// gpt2Pattern is the regex of GPT-2's encoder.py, which tokenizers'
// ByteLevel uses with use_regex.
const gpt2Pattern = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`

func parsePreTokenizer(raw json.RawMessage) ([]preTokenizer, error) {
	if isNull(raw) {
		return nil, nil
	}
	var p struct {
		Type           string            `json:"type"`
		PreTokenizers  []json.RawMessage `json:"pretokenizers"`
		Pattern        pattern           `json:"pattern"`
		Behavior       string            `json:"behavior"`
		Invert         bool              `json:"invert"`
		AddPrefixSpace *bool             `json:"add_prefix_space"`
		UseRegex       *bool             `json:"use_regex"`
		Replacement    string            `json:"replacement"`
		PrependScheme  string            `json:"prepend_scheme"`
		Split          *bool             `json:"split"`
		Individual     bool              `json:"individual_digits"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return nil, fmt.Errorf("pre_tokenizer: %w", err)
	}
	orTrue := func(b *bool) bool { return b == nil || *b }
	switch p.Type {
	case "Sequence":
		var all []preTokenizer
		for _, sub := range p.PreTokenizers {
			ps, err := parsePreTokenizer(sub)
			if err != nil {
				return nil, err
			}
			all = append(all, ps...)
		}
		return all, nil
	case "Split":
		find, err := p.Pattern.compile()
		if err != nil {
			return nil, fmt.Errorf("pre_tokenizer Split: %w", err)
		}
		if !validBehavior(p.Behavior) {
			return nil, fmt.Errorf("pre_tokenizer Split: behavior %q is not supported", p.Behavior)
		}
		return []preTokenizer{splitPre(find, p.Behavior, p.Invert)}, nil
	case "ByteLevel":
		return []preTokenizer{byteLevelPre(orTrue(p.AddPrefixSpace), orTrue(p.UseRegex))}, nil
	case "Metaspace":
		repl := p.Replacement
		if repl == "" {
			repl = spaceSymbol
		}
		scheme := p.PrependScheme
		if scheme == "" { // files from before prepend_scheme
			scheme = "never"
			if orTrue(p.AddPrefixSpace) {
				scheme = "always"
			}
		}
		if scheme != "always" && scheme != "first" && scheme != "never" {
			return nil, fmt.Errorf("pre_tokenizer Metaspace: prepend_scheme %q is not supported", scheme)
		}
		split := orTrue(p.Split)
		findRepl, _ := pattern{String: &repl}.compile()
		return []preTokenizer{func(ps []piece) []piece {
			for i := range ps {
				s := strings.ReplaceAll(ps[i].s, " ", repl)
				// As tokenizers: no prefix for empty text, nor for text
				// that starts with a space (unlike SentencePiece, which
				// would give "▁▁" for a leading space).
				if (scheme == "always" || scheme == "first" && ps[i].first) && s != "" && !strings.HasPrefix(s, repl) {
					s = repl + s
				}
				ps[i].s = s
			}
			if split {
				ps = splitEach(ps, findRepl, "MergedWithNext", false)
			}
			return ps
		}}, nil
	case "Digits":
		behavior := "Contiguous"
		if p.Individual {
			behavior = "Isolated"
		}
		return []preTokenizer{func(ps []piece) []piece {
			return splitEach(ps, digitRuns(p.Individual), behavior, false)
		}}, nil
	}
	return nil, fmt.Errorf("pre_tokenizer %s is not supported", p.Type)
}

// digitRuns finds digits, one by one or in runs.
func digitRuns(individual bool) func(string) [][2]int {
	return func(s string) [][2]int {
		var m [][2]int
		for i, r := range s {
			if !unicode.IsNumber(r) {
				continue
			}
			end := i + len(string(r))
			if !individual && len(m) > 0 && m[len(m)-1][1] == i {
				m[len(m)-1][1] = end
			} else {
				m = append(m, [2]int{i, end})
			}
		}
		return m
	}
}

func splitPre(find func(string) [][2]int, behavior string, invert bool) preTokenizer {
	return func(ps []piece) []piece { return splitEach(ps, find, behavior, invert) }
}

var gpt2Regex = regexp2.MustCompile(gpt2Pattern, regexp2.None)

// byteLevelPre is tokenizers' ByteLevel pre-tokenizer: an optional space
// before every piece that lacks one, GPT-2's split, then the bytes of each
// piece written in the byte-level alphabet.
func byteLevelPre(prefix, useRegex bool) preTokenizer {
	return func(ps []piece) []piece {
		if prefix {
			for i := range ps {
				if !strings.HasPrefix(ps[i].s, " ") {
					ps[i].s = " " + ps[i].s
				}
			}
		}
		if useRegex {
			ps = splitEach(ps, func(s string) [][2]int { return regexMatches(gpt2Regex, s) }, "Isolated", false)
		}
		for i := range ps {
			ps[i].s = toByteLevel(ps[i].s)
		}
		return ps
	}
}

func validBehavior(b string) bool {
	switch b {
	case "Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous":
		return true
	}
	return false
}

// splitEach splits every piece at the matches of find, with tokenizers'
// SplitDelimiterBehavior; invert makes the non-matches the delimiters.
func splitEach(ps []piece, find func(string) [][2]int, behavior string, invert bool) []piece {
	out := make([]piece, 0, len(ps))
	for _, p := range ps {
		for _, r := range splitSpans(p.s, find(p.s), behavior, invert) {
			out = append(out, piece{s: p.s[r[0]:r[1]], first: p.first && r[0] == 0})
		}
	}
	return out
}

type span struct {
	start, end int
	delim      bool
}

// splitSpans follows tokenizers' NormalizedString::split.
func splitSpans(s string, matches [][2]int, behavior string, invert bool) [][2]int {
	var spans []span
	prev := 0
	for _, m := range matches {
		if m[0] > prev {
			spans = append(spans, span{prev, m[0], invert})
		}
		spans = append(spans, span{m[0], m[1], !invert})
		prev = m[1]
	}
	if prev < len(s) {
		spans = append(spans, span{prev, len(s), invert})
	}
	var out [][2]int
	switch behavior {
	case "Removed":
		for _, sp := range spans {
			if !sp.delim {
				out = append(out, [2]int{sp.start, sp.end})
			}
		}
	case "Isolated":
		for _, sp := range spans {
			out = append(out, [2]int{sp.start, sp.end})
		}
	case "MergedWithPrevious":
		prevDelim := false
		for _, sp := range spans {
			if sp.delim && !prevDelim && len(out) > 0 {
				out[len(out)-1][1] = sp.end
			} else {
				out = append(out, [2]int{sp.start, sp.end})
			}
			prevDelim = sp.delim
		}
	case "MergedWithNext":
		nextDelim := false
		for i := len(spans) - 1; i >= 0; i-- {
			sp := spans[i]
			if sp.delim && !nextDelim && len(out) > 0 {
				out[len(out)-1][0] = sp.start
			} else {
				out = append(out, [2]int{sp.start, sp.end})
			}
			nextDelim = sp.delim
		}
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	case "Contiguous":
		prevDelim := false
		for _, sp := range spans {
			if sp.delim == prevDelim && len(out) > 0 {
				out[len(out)-1][1] = sp.end
			} else {
				out = append(out, [2]int{sp.start, sp.end})
			}
			prevDelim = sp.delim
		}
	}
	return out
}

// ------------------------------------------------------------------- decoders

// decoder is a tokenizer.json decoder reduced to what streaming needs:
// steps applied to each token's text, and a prefix stripped once from the
// start of the text (Strip after Fuse, Metaspace's prefix space).
type decoder struct {
	steps     []func(string) string
	byteLevel bool
	strip     string
	stripN    int
	// dropAtStart is Metaspace's replacement, which its decoder deletes
	// from the first token instead of turning it into a space.
	dropAtStart string
}

func (d *decoder) token(s string, atStart bool) string {
	if atStart && d.dropAtStart != "" {
		s = strings.ReplaceAll(s, d.dropAtStart, "")
	}
	for _, f := range d.steps {
		s = f(s)
	}
	if atStart {
		for i := 0; i < d.stripN && d.strip != "" && strings.HasPrefix(s, d.strip); i++ {
			s = s[len(d.strip):]
		}
	}
	return s
}

func parseDecoder(raw json.RawMessage) (decoder, error) {
	var d decoder
	if isNull(raw) {
		return d, nil
	}
	fused := false
	err := d.add(raw, &fused)
	return d, err
}

func (d *decoder) add(raw json.RawMessage, fused *bool) error {
	var p struct {
		Type           string            `json:"type"`
		Decoders       []json.RawMessage `json:"decoders"`
		Pattern        pattern           `json:"pattern"`
		Content        string            `json:"content"`
		Start          int               `json:"start"`
		Stop           int               `json:"stop"`
		Replacement    string            `json:"replacement"`
		PrependScheme  string            `json:"prepend_scheme"`
		AddPrefixSpace *bool             `json:"add_prefix_space"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return fmt.Errorf("decoder: %w", err)
	}
	switch p.Type {
	case "Sequence":
		for _, sub := range p.Decoders {
			if err := d.add(sub, fused); err != nil {
				return err
			}
		}
	case "ByteLevel":
		d.byteLevel = true
		d.steps = append(d.steps, fromByteLevel)
	case "ByteFallback":
		d.steps = append(d.steps, func(s string) string {
			if b, ok := parseBytePiece(s); ok {
				return string([]byte{b})
			}
			return s
		})
	case "Fuse":
		*fused = true
	case "Replace":
		if p.Pattern.String == nil {
			return errors.New("decoder Replace with a Regex pattern is not supported")
		}
		old := *p.Pattern.String
		d.steps = append(d.steps, func(s string) string { return strings.ReplaceAll(s, old, p.Content) })
	case "Strip":
		if p.Stop != 0 {
			return errors.New("decoder Strip with stop > 0 is not supported")
		}
		if *fused {
			d.strip, d.stripN = p.Content, p.Start
		} else {
			content, n := p.Content, p.Start
			d.steps = append(d.steps, func(s string) string {
				for i := 0; i < n && content != "" && strings.HasPrefix(s, content); i++ {
					s = s[len(content):]
				}
				return s
			})
		}
	case "Metaspace":
		repl := p.Replacement
		if repl == "" {
			repl = spaceSymbol
		}
		d.steps = append(d.steps, func(s string) string { return strings.ReplaceAll(s, repl, " ") })
		prepend := p.PrependScheme == "always" || p.PrependScheme == "first" ||
			p.PrependScheme == "" && (p.AddPrefixSpace == nil || *p.AddPrefixSpace)
		if prepend {
			d.dropAtStart = repl
		}
	default:
		return fmt.Errorf("decoder %s is not supported", p.Type)
	}
	return nil
}
