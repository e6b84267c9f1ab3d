package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// hf is a Hugging Face tokenizers pipeline with a BPE model: added tokens
// are split off first, the rest is normalized, pre-tokenized into words
// and each word merged by BPE.
type hf struct {
	vocab
	addedByID map[int]*addedToken
	raw       addedMatcher // added tokens matched in the input text
	norm      addedMatcher // added tokens matched after normalization
	normalize func(string) string
	pre       []preTokenizer
	model     bpeModel
	dec       decoder
}

type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

type hfFile struct {
	AddedTokens   []*addedToken   `json:"added_tokens"`
	Normalizer    json.RawMessage `json:"normalizer"`
	PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
	PostProcessor json.RawMessage `json:"post_processor"`
	Decoder       json.RawMessage `json:"decoder"`
	Model         json.RawMessage `json:"model"`
}

type hfModel struct {
	Type                    string            `json:"type"`
	Vocab                   map[string]int    `json:"vocab"`
	Merges                  []json.RawMessage `json:"merges"`
	UnkToken                *string           `json:"unk_token"`
	ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
	EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
	FuseUnk                 bool              `json:"fuse_unk"`
	ByteFallback            bool              `json:"byte_fallback"`
	IgnoreMerges            bool              `json:"ignore_merges"`
}

// LoadHF reads a Hugging Face tokenizer.json (or tokenizer.json.gz) whose
// model is BPE: byte-level (GPT-2, Llama 3, Qwen) or SentencePiece-style
// (Llama 2, Mistral: "▁" for spaces, byte fallback). A tokenizer_config.json
// in the same directory supplies bos_token and eos_token when the
// post-processor does not name them. Components it does not implement are
// errors naming them, never silently skipped.
func LoadHF(path string) (Tokenizer, error) {
	data, err := readMaybeGzip(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	cfg, err := readTokenizerConfig(filepath.Join(filepath.Dir(path), "tokenizer_config.json"))
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := parseHF(data, cfg)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// ParseHF is LoadHF for a tokenizer.json already in memory, without a
// tokenizer_config.json.
func ParseHF(data []byte) (Tokenizer, error) {
	t, err := parseHF(data, nil)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

func readMaybeGzip(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil || !strings.HasSuffix(path, ".gz") {
		return data, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err = io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// hfConfig is the part of tokenizer_config.json that matters here.
// A token is a string, an AddedToken object, or null.
type hfConfig struct {
	BOS, EOS json.RawMessage
}

func readTokenizerConfig(path string) (*hfConfig, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	var c struct {
		BOS json.RawMessage `json:"bos_token"`
		EOS json.RawMessage `json:"eos_token"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &hfConfig{BOS: c.BOS, EOS: c.EOS}, nil
}

func parseHF(data []byte, cfg *hfConfig) (*hf, error) {
	var f hfFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	// The type first: other models' vocab is not a map.
	var head struct {
		Type   string          `json:"type"`
		Merges json.RawMessage `json:"merges"`
	}
	if err := json.Unmarshal(f.Model, &head); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: model: %w", err)
	}
	if head.Type == "" && head.Merges != nil {
		head.Type = "BPE" // files from before "type" was written
	}
	switch head.Type {
	case "":
		return nil, errors.New("no model type")
	case "BPE":
	default:
		return nil, fmt.Errorf("model type %s is not supported (only BPE)", head.Type)
	}
	var m hfModel
	if err := json.Unmarshal(f.Model, &m); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: model: %w", err)
	}
	switch {
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, fmt.Errorf("BPE continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, fmt.Errorf("BPE end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	}

	t := &hf{addedByID: make(map[int]*addedToken)}
	n := 0
	for _, id := range m.Vocab {
		n = max(n, id+1)
	}
	for _, a := range f.AddedTokens {
		n = max(n, a.ID+1)
	}
	t.pieces = make([]string, n)
	for p, id := range m.Vocab {
		if id < 0 {
			return nil, fmt.Errorf("vocab: negative id %d for %q", id, p)
		}
		t.pieces[id] = p
	}
	for _, a := range f.AddedTokens {
		if a.ID < 0 || a.Content == "" {
			return nil, fmt.Errorf("added token %d %q is invalid", a.ID, a.Content)
		}
		t.pieces[a.ID] = a.Content
		t.addedByID[a.ID] = a
		if a.Normalized {
			t.norm.add(a)
		} else {
			t.raw.add(a)
		}
	}
	t.raw.sort()
	t.norm.sort()
	t.ids = make(map[string]int, len(m.Vocab)+len(f.AddedTokens))
	for p, id := range m.Vocab {
		t.ids[p] = id
	}
	for _, a := range f.AddedTokens {
		t.ids[a.Content] = a.ID
	}

	var err error
	if t.model, err = newBPEModel(m); err != nil {
		return nil, err
	}
	if t.normalize, err = parseNormalizer(f.Normalizer); err != nil {
		return nil, err
	}
	if t.pre, err = parsePreTokenizer(f.PreTokenizer); err != nil {
		return nil, err
	}
	if t.dec, err = parseDecoder(f.Decoder); err != nil {
		return nil, err
	}
	if err := t.findBOSEOS(f.PostProcessor, cfg); err != nil {
		return nil, err
	}
	return t, nil
}

// findBOSEOS takes BOS and EOS from the post-processor (the tokens around
// $A in a TemplateProcessing, cls and sep in Roberta/BertProcessing), else
// from tokenizer_config.json, else from the usual names.
func (t *hf) findBOSEOS(post json.RawMessage, cfg *hfConfig) error {
	t.bos, t.eos = -1, -1
	bos, eos, err := templateSpecials(post)
	if err != nil {
		return err
	}
	lookup := func(name string) int {
		if id, ok := t.ids[name]; ok {
			return id
		}
		return -1
	}
	t.bos, t.eos = lookup(bos), lookup(eos)
	fromConfig := func(raw json.RawMessage) (int, bool) {
		if raw == nil {
			return -1, false // absent
		}
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return lookup(s), true
		}
		var obj struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(raw, &obj) == nil && obj.Content != "" {
			return lookup(obj.Content), true
		}
		return -1, true // null: the model has none
	}
	guess := func(names ...string) int {
		for _, n := range names {
			if id := lookup(n); id >= 0 {
				return id
			}
		}
		return -1
	}
	if t.bos < 0 {
		id, said := -1, false
		if cfg != nil {
			id, said = fromConfig(cfg.BOS)
		}
		if !said {
			id = guess("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>")
		}
		t.bos = id
	}
	if t.eos < 0 {
		id, said := -1, false
		if cfg != nil {
			id, said = fromConfig(cfg.EOS)
		}
		if !said {
			id = guess("</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>")
		}
		t.eos = id
	}
	return nil
}

// templateSpecials returns the names of the special tokens a post-processor
// puts before and after a single sequence.
func templateSpecials(raw json.RawMessage) (bos, eos string, err error) {
	if isNull(raw) {
		return "", "", nil
	}
	var p struct {
		Type       string            `json:"type"`
		Single     []json.RawMessage `json:"single"`
		Processors []json.RawMessage `json:"processors"`
		Cls        []any             `json:"cls"`
		Sep        []any             `json:"sep"`
	}
	if err := json.Unmarshal(raw, &p); err != nil {
		return "", "", fmt.Errorf("post_processor: %w", err)
	}
	switch p.Type {
	case "TemplateProcessing":
		seen := false
		for _, item := range p.Single {
			var it struct {
				SpecialToken *struct {
					ID string `json:"id"`
				} `json:"SpecialToken"`
				Sequence json.RawMessage `json:"Sequence"`
			}
			if err := json.Unmarshal(item, &it); err != nil {
				return "", "", fmt.Errorf("post_processor: %w", err)
			}
			switch {
			case it.Sequence != nil:
				seen = true
			case it.SpecialToken != nil && !seen && bos == "":
				bos = it.SpecialToken.ID
			case it.SpecialToken != nil && seen && eos == "":
				eos = it.SpecialToken.ID
			}
		}
	case "RobertaProcessing", "BertProcessing":
		if len(p.Cls) > 0 {
			bos, _ = p.Cls[0].(string)
		}
		if len(p.Sep) > 0 {
			eos, _ = p.Sep[0].(string)
		}
	case "Sequence":
		for _, sub := range p.Processors {
			b, e, err := templateSpecials(sub)
			if err != nil {
				return "", "", err
			}
			bos, eos = firstNonEmpty(bos, b), firstNonEmpty(eos, e)
		}
	}
	// Other post-processors (ByteLevel) add no tokens.
	return bos, eos, nil
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func isNull(raw json.RawMessage) bool {
	return len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null"
}

// Encode follows tokenizers' encode with add_special_tokens=False.
// Text that is not valid UTF-8 (which tokenizers cannot receive) has each
// bad byte replaced by U+FFFD first.
func (t *hf) Encode(text string) []int {
	text = validUTF8(text)
	var ids []int
	first := true // the next plain segment starts at offset 0
	for _, seg := range t.raw.split(text) {
		if seg.id >= 0 {
			ids = append(ids, seg.id)
			first = false
			continue
		}
		s := seg.text
		if t.normalize != nil {
			s = t.normalize(s)
		}
		for _, nseg := range t.norm.split(s) {
			if nseg.id >= 0 {
				ids = append(ids, nseg.id)
			} else {
				words := []piece{{s: nseg.text, first: first}}
				for _, p := range t.pre {
					words = p(words)
				}
				for _, w := range words {
					ids = t.model.encode(ids, w.s, &t.vocab)
				}
			}
			first = false
		}
	}
	return ids
}

func (t *hf) Decode(ids []int) string { return decodeAll(t, ids) }

// DecodeToken runs the tokenizer.json decoder on one token: added tokens
// are their text (BOS and EOS nothing), model tokens go through the
// decoder's per-token steps, and the decoder's strip of the text's first
// character applies at the start and after BOS. Byte-fallback and
// byte-level bytes are returned as they are, where tokenizers would
// replace invalid UTF-8 in the whole text by U+FFFD.
func (t *hf) DecodeToken(prev, id int) string {
	if id < 0 || id >= len(t.pieces) || id == t.bos || id == t.eos {
		return ""
	}
	s := t.pieces[id]
	if _, added := t.addedByID[id]; added {
		if t.dec.byteLevel {
			return fromByteLevel(s)
		}
		return s
	}
	return t.dec.token(s, prev < 0 || prev == t.bos)
}

// segment is a piece of text, or an added token (id ≥ 0).
type segment struct {
	text string
	id   int
}

// addedMatcher finds added tokens in text, leftmost-longest as the
// Aho-Corasick automaton tokenizers builds.
type addedMatcher struct {
	byFirst map[byte][]*addedToken // longest first
}

func (m *addedMatcher) add(a *addedToken) {
	if m.byFirst == nil {
		m.byFirst = make(map[byte][]*addedToken)
	}
	m.byFirst[a.Content[0]] = append(m.byFirst[a.Content[0]], a)
}

func (m *addedMatcher) sort() {
	for _, l := range m.byFirst {
		sort.SliceStable(l, func(i, j int) bool { return len(l[i].Content) > len(l[j].Content) })
	}
}

// split cuts text around the added tokens it contains, honouring
// single_word, lstrip and rstrip as AddedVocabulary::find_matches does.
func (m *addedMatcher) split(text string) []segment {
	if len(m.byFirst) == 0 || text == "" {
		return []segment{{text: text, id: -1}}
	}
	var segs []segment
	done := 0 // text[:done] is in segs
	for i := 0; i < len(text); {
		var hit *addedToken
		for _, a := range m.byFirst[text[i]] {
			if strings.HasPrefix(text[i:], a.Content) {
				hit = a
				break
			}
		}
		if hit == nil {
			i++
			continue
		}
		start, stop := i, i+len(hit.Content)
		i = stop // the automaton resumes after a match even if it is discarded
		if hit.SingleWord && (endsWithWord(text[:start]) || startsWithWord(text[stop:])) {
			continue
		}
		if hit.LStrip {
			start = max(len(strings.TrimRightFunc(text[:start], unicode.IsSpace)), done)
		}
		if hit.RStrip {
			stop = len(text) - len(strings.TrimLeftFunc(text[stop:], unicode.IsSpace))
			i = stop
		}
		if start > done {
			segs = append(segs, segment{text: text[done:start], id: -1})
		}
		segs = append(segs, segment{id: hit.ID})
		done = stop
	}
	if done < len(text) {
		segs = append(segs, segment{text: text[done:], id: -1})
	}
	return segs
}

func isWordChar(r rune) bool { return unicode.IsLetter(r) || unicode.IsNumber(r) || r == '_' }

func endsWithWord(s string) bool {
	r, n := utf8.DecodeLastRuneInString(s)
	return n > 0 && isWordChar(r)
}

func startsWithWord(s string) bool {
	r, n := utf8.DecodeRuneInString(s)
	return n > 0 && isWordChar(r)
}

// bpeModel is tokenizers' BPE model: merges ranked by their order.
type bpeModel struct {
	merges       map[[2]int32]mergeRule
	unk          int
	fuseUnk      bool
	byteFallback bool
	ignoreMerges bool
	byteIDs      [256]int32
	// chunkSep, when set, lets encode merge a long word piece by piece
	// (see splitSafe): SentencePiece-style tokenizer.json files have no
	// pre-tokenizer, so the whole text is one word.
	chunkSep string
	cache    *wordCache
}

// wordCache remembers the ids of recent words, as tokenizers' BPE does:
// natural text repeats its words, and merging dominates encoding.
type wordCache struct {
	mu  sync.Mutex
	ids map[string][]int
}

const wordCacheSize = 1 << 15

func (c *wordCache) get(w string) ([]int, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids, ok := c.ids[w]
	return ids, ok
}

func (c *wordCache) put(w string, ids []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.ids) >= wordCacheSize {
		clear(c.ids) // crude but bounded; a full cache is rare
	}
	c.ids[w] = ids
}

type mergeRule struct{ rank, id int32 }

func newBPEModel(m hfModel) (bpeModel, error) {
	b := bpeModel{
		cache:        &wordCache{ids: make(map[string][]int)},
		unk:          -1,
		fuseUnk:      m.FuseUnk,
		byteFallback: m.ByteFallback,
		ignoreMerges: m.IgnoreMerges,
	}
	if m.UnkToken != nil {
		id, ok := m.Vocab[*m.UnkToken]
		if !ok {
			return b, fmt.Errorf("BPE unk_token %q is not in the vocabulary", *m.UnkToken)
		}
		b.unk = id
	}
	pairs := make([][2]string, len(m.Merges))
	for rank, raw := range m.Merges {
		var s string
		var pair []string
		switch {
		case json.Unmarshal(raw, &s) == nil:
			// "a b": tokens never contain a space in these vocabularies.
			l, r, ok := strings.Cut(s, " ")
			if !ok || strings.Contains(r, " ") {
				return b, fmt.Errorf("BPE merge %d %q is not two tokens", rank, s)
			}
			pairs[rank] = [2]string{l, r}
		case json.Unmarshal(raw, &pair) == nil && len(pair) == 2:
			pairs[rank] = [2]string{pair[0], pair[1]}
		default:
			return b, fmt.Errorf("BPE merge %d is neither \"a b\" nor [\"a\", \"b\"]: %s", rank, raw)
		}
	}
	if err := b.setMerges(m.Vocab, pairs); err != nil {
		return b, err
	}
	if _, ok := m.Vocab[spaceSymbol]; ok {
		pieces := make([]string, 0, len(m.Vocab))
		for p := range m.Vocab {
			pieces = append(pieces, p)
		}
		if splitSafe(pieces, spaceSymbol) {
			b.chunkSep = spaceSymbol
		}
	}
	return b, nil
}

// setMerges ranks merges by their order and finds the byte pieces.
func (b *bpeModel) setMerges(vocab map[string]int, pairs [][2]string) error {
	for i := range b.byteIDs {
		b.byteIDs[i] = -1
		if id, ok := vocab[fmt.Sprintf("<0x%02X>", i)]; ok {
			b.byteIDs[i] = int32(id)
		}
	}
	b.merges = make(map[[2]int32]mergeRule, len(pairs))
	for rank, p := range pairs {
		li, ok1 := vocab[p[0]]
		ri, ok2 := vocab[p[1]]
		mi, ok3 := vocab[p[0]+p[1]]
		if !ok1 || !ok2 || !ok3 {
			return fmt.Errorf("BPE merge %d (%q, %q) uses a token not in the vocabulary", rank, p[0], p[1])
		}
		key := [2]int32{int32(li), int32(ri)}
		if _, dup := b.merges[key]; !dup { // the first (best) rank wins
			b.merges[key] = mergeRule{rank: int32(rank), id: int32(mi)}
		}
	}
	return nil
}

// encode appends the ids of one pre-tokenized word, as tokenizers'
// BPE::tokenize does without dropout: characters missing from the
// vocabulary become their byte pieces (byte_fallback) or unk (runs fused
// with fuse_unk); a character with neither is dropped, where tokenizers
// fails the whole encode.
func (b *bpeModel) encode(ids []int, word string, v *vocab) []int {
	if word == "" {
		return ids
	}
	if b.ignoreMerges {
		if id, ok := v.ids[word]; ok {
			return append(ids, id)
		}
	}
	if b.chunkSep != "" && len(word) > 64 {
		forChunks(word, b.chunkSep, func(c string) { ids = b.cachedMerge(ids, c, v) })
		return ids
	}
	return b.cachedMerge(ids, word, v)
}

func (b *bpeModel) cachedMerge(ids []int, word string, v *vocab) []int {
	if b.cache == nil || len(word) > 256 {
		return b.merge(ids, word, v)
	}
	if w, ok := b.cache.get(word); ok {
		return append(ids, w...)
	}
	n := len(ids)
	ids = b.merge(ids, word, v)
	b.cache.put(word, slices.Clone(ids[n:]))
	return ids
}

func (b *bpeModel) merge(ids []int, word string, v *vocab) []int {
	syms := make([]symbol, 0, len(word))
	add := func(id int, unk bool) {
		if unk && b.fuseUnk && len(syms) > 0 && syms[len(syms)-1].id == int32(b.unk) {
			return
		}
		n := int32(len(syms))
		syms = append(syms, symbol{id: int32(id), prev: n - 1, next: n + 1})
	}
	for i, r := range word {
		size := utf8.RuneLen(r) // word is valid UTF-8
		if id, ok := v.ids[word[i:i+size]]; ok {
			add(id, false)
			continue
		}
		if b.byteFallback {
			ok := true
			for k := i; k < i+size; k++ {
				ok = ok && b.byteIDs[word[k]] >= 0
			}
			if ok {
				for k := i; k < i+size; k++ {
					add(int(b.byteIDs[word[k]]), false)
				}
				continue
			}
		}
		if b.unk >= 0 {
			add(b.unk, true)
		}
	}
	if len(syms) == 0 {
		return ids
	}
	syms[len(syms)-1].next = -1
	mergeSymbols(syms, func(l, r *symbol) (int32, float64, bool) {
		m, ok := b.merges[[2]int32{l.id, r.id}]
		return m.id, float64(m.rank), ok
	})
	for i := int32(0); i >= 0; i = syms[i].next {
		ids = append(ids, int(syms[i].id))
	}
	return ids
}
