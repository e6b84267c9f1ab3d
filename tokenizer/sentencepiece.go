package tokenizer

import (
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// SentencePiece piece types (ModelProto.SentencePiece.Type); GGUF's
// tokenizer.ggml.token_type uses the same numbers.
const (
	pieceNormal      = 1
	pieceUnknown     = 2
	pieceControl     = 3
	pieceUserDefined = 4
	pieceUnused      = 5
	pieceByte        = 6
)

// spaceSymbol is U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's space.
const spaceSymbol = "\u2581"

// spm is a SentencePiece BPE vocabulary, encoded as sentencepiece's
// normalizer.cc, bpe_model.cc and sentencepiece_processor.cc do.
type spm struct {
	vocab
	scores []float32
	types  []int32
	// mergeable holds the pieces BPE may produce (NORMAL, USER_DEFINED,
	// UNUSED); other pieces are found only by PieceToId.
	mergeable map[string]int32
	reserved  map[string]int32
	user      []string // USER_DEFINED pieces, longest first
	byteIDs   [256]int32
	unk       int

	byteFallback      bool
	addDummyPrefix    bool
	removeExtraSpaces bool
	escapeSpaces      bool
	unkSurface        string
	// chunkSep, when set, lets Encode merge word by word (see splitSafe).
	chunkSep string
}

// SentencePiece field numbers (sentencepiece_model.proto).
const (
	fModelPieces     = 1
	fModelTrainer    = 2
	fModelNormalizer = 3

	fPiecePiece = 1
	fPieceScore = 2
	fPieceType  = 3

	fTrainerModelType  = 3
	fTrainerSuffixWS   = 24 // treat_whitespace_as_suffix
	fTrainerByteFB     = 35 // byte_fallback
	fTrainerUnkID      = 40
	fTrainerBOSID      = 41
	fTrainerEOSID      = 42
	fTrainerUnkSurface = 44

	fNormCharsmap     = 2 // precompiled_charsmap
	fNormDummyPrefix  = 3 // add_dummy_prefix
	fNormRemoveSpaces = 4 // remove_extra_whitespaces
	fNormEscapeSpaces = 5 // escape_whitespaces

	modelTypeUnigram = 1
	modelTypeBPE     = 2

	defaultUnkSurface = " \u2047 " // " ⁇ "
)

// LoadSentencePiece reads a SentencePiece .model file (a serialized
// ModelProto) with a BPE model, such as Llama 2's tokenizer.model.
func LoadSentencePiece(path string) (Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseSentencePiece(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// ParseSentencePiece is LoadSentencePiece for a file already in memory.
func ParseSentencePiece(data []byte) (Tokenizer, error) {
	t := &spm{
		vocab:             vocab{bos: 1, eos: 2},
		addDummyPrefix:    true,
		removeExtraSpaces: true,
		escapeSpaces:      true,
		unkSurface:        defaultUnkSurface,
	}
	modelType := modelTypeUnigram
	suffixWS := false
	charsmap := false
	err := walkProto(data, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
		switch num {
		case fModelPieces:
			if typ != protowire.BytesType {
				return errBadProto
			}
			piece, score, ptype := "", float32(0), int32(pieceNormal)
			err := walkProto(b, func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error {
				switch {
				case num == fPiecePiece && typ == protowire.BytesType:
					piece = string(b)
				case num == fPieceScore && typ == protowire.Fixed32Type:
					score = math.Float32frombits(uint32(v))
				case num == fPieceType && typ == protowire.VarintType:
					ptype = int32(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("piece %d: %w", len(t.pieces), err)
			}
			t.pieces = append(t.pieces, piece)
			t.scores = append(t.scores, score)
			t.types = append(t.types, ptype)
		case fModelTrainer, fModelNormalizer:
			if typ != protowire.BytesType {
				return errBadProto
			}
			return walkProto(b, func(n protowire.Number, typ protowire.Type, v uint64, b []byte) error {
				if num == fModelTrainer {
					switch n {
					case fTrainerModelType:
						modelType = int(v)
					case fTrainerSuffixWS:
						suffixWS = v != 0
					case fTrainerByteFB:
						t.byteFallback = v != 0
					case fTrainerUnkID:
						t.unk = int(int32(v))
					case fTrainerBOSID:
						t.bos = int(int32(v))
					case fTrainerEOSID:
						t.eos = int(int32(v))
					case fTrainerUnkSurface:
						t.unkSurface = string(b)
					}
					return nil
				}
				switch n {
				case fNormCharsmap:
					charsmap = len(b) > 0
				case fNormDummyPrefix:
					t.addDummyPrefix = v != 0
				case fNormRemoveSpaces:
					t.removeExtraSpaces = v != 0
				case fNormEscapeSpaces:
					t.escapeSpaces = v != 0
				}
				return nil
			})
		}
		return nil
	})
	switch {
	case err != nil:
		return nil, fmt.Errorf("not a SentencePiece model: %w", err)
	case len(t.pieces) == 0:
		return nil, errors.New("not a SentencePiece model: no pieces")
	case modelType == modelTypeUnigram:
		return nil, errors.New("SentencePiece Unigram models are not supported (only BPE)")
	case modelType != modelTypeBPE:
		return nil, fmt.Errorf("SentencePiece model type %d is not supported (only BPE, 2)", modelType)
	case suffixWS:
		return nil, errors.New("SentencePiece treat_whitespace_as_suffix is not supported")
	case charsmap:
		// A precompiled charsmap is a normalization rule such as
		// nmt_nfkc; BPE models for LLMs use "identity".
		return nil, errors.New("SentencePiece normalization rules (precompiled_charsmap) are not supported; only \"identity\"")
	}
	if err := t.init(); err != nil {
		return nil, err
	}
	return t, nil
}

var errBadProto = errors.New("malformed protobuf")

// walkProto calls f for every field of the message in b: the value of
// varint and fixed fields in v, the bytes of length-delimited ones in b.
func walkProto(b []byte, f func(num protowire.Number, typ protowire.Type, v uint64, b []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v uint64
		var val []byte
		switch typ {
		case protowire.VarintType:
			v, n = protowire.ConsumeVarint(b)
		case protowire.Fixed32Type:
			var x uint32
			x, n = protowire.ConsumeFixed32(b)
			v = uint64(x)
		case protowire.Fixed64Type:
			v, n = protowire.ConsumeFixed64(b)
		case protowire.BytesType:
			val, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v, val); err != nil {
			return err
		}
	}
	return nil
}

// init builds the lookup tables once pieces, scores, types and the options
// are set; ParseSentencePiece and FromGGUF share it.
func (t *spm) init() error {
	n := len(t.pieces)
	if len(t.scores) != n || len(t.types) != n {
		return fmt.Errorf("%d pieces but %d scores and %d types", n, len(t.scores), len(t.types))
	}
	t.indexPieces()
	t.mergeable = make(map[string]int32, n)
	t.reserved = make(map[string]int32)
	for i := range t.byteIDs {
		t.byteIDs[i] = -1
	}
	unkType := -1
	for i, p := range t.pieces {
		switch t.types[i] {
		case pieceNormal, pieceUserDefined, pieceUnused:
			if _, dup := t.mergeable[p]; !dup {
				t.mergeable[p] = int32(i)
			}
			if t.types[i] == pieceUserDefined && p != "" {
				t.user = append(t.user, p)
			}
		default:
			if _, dup := t.reserved[p]; !dup {
				t.reserved[p] = int32(i)
			}
			if t.types[i] == pieceByte {
				if b, ok := parseBytePiece(p); ok {
					t.byteIDs[b] = int32(i)
				}
			}
			if t.types[i] == pieceUnknown && unkType < 0 {
				unkType = i
			}
		}
	}
	if t.unk < 0 || t.unk >= n {
		if unkType < 0 {
			return fmt.Errorf("unk_id %d is not a piece", t.unk)
		}
		t.unk = unkType
	}
	if t.byteFallback {
		for b, id := range t.byteIDs {
			if id < 0 {
				return fmt.Errorf("byte_fallback is set but piece <0x%02X> is missing", b)
			}
		}
	}
	if t.bos >= n {
		t.bos = -1
	}
	if t.eos >= n {
		t.eos = -1
	}
	sort.Slice(t.user, func(i, j int) bool { return len(t.user[i]) > len(t.user[j]) })
	sep := " "
	if t.escapeSpaces {
		sep = spaceSymbol
	}
	mergeable := make([]string, 0, len(t.mergeable))
	for p := range t.mergeable {
		mergeable = append(mergeable, p)
	}
	if splitSafe(mergeable, sep) {
		t.chunkSep = sep
	}
	return nil
}

// normalize is normalizer.cc's Normalize with the identity rule: invalid
// UTF-8 bytes become U+FFFD; with remove_extra_whitespaces leading,
// trailing and repeated spaces go; add_dummy_prefix puts a space in front
// of non-empty text; escape_whitespaces writes spaces as "▁".
// User-defined pieces are copied untouched.
func (t *spm) normalize(text string) string {
	if t.removeExtraSpaces {
		text = strings.TrimLeft(text, " ")
	}
	if text == "" {
		return ""
	}
	space := " "
	if t.escapeSpaces {
		space = spaceSymbol
	}
	var b strings.Builder
	b.Grow(len(text) + len(text)/2 + len(space))
	if t.addDummyPrefix {
		b.WriteString(space)
	}
	prevSpace := t.removeExtraSpaces
	for len(text) > 0 {
		if u := t.userPrefix(text); u > 0 {
			b.WriteString(text[:u])
			text = text[u:]
			prevSpace = false
			continue
		}
		r, size := utf8.DecodeRuneInString(text)
		text = text[size:]
		switch {
		case r == ' ':
			if !prevSpace {
				b.WriteString(space)
			}
			prevSpace = t.removeExtraSpaces
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
			prevSpace = false
		default:
			b.WriteRune(r)
			prevSpace = false
		}
	}
	s := b.String()
	if t.removeExtraSpaces {
		s = strings.TrimRight(s, space)
	}
	return s
}

// userPrefix returns the length of the longest user-defined piece text
// starts with, or 0.
func (t *spm) userPrefix(text string) int {
	for _, u := range t.user {
		if strings.HasPrefix(text, u) {
			return len(u)
		}
	}
	return 0
}

// Encode normalizes text, splits it into characters (user-defined pieces
// whole) and merges the adjacent pair whose concatenation is the
// best-scoring mergeable piece, leftmost first, until none is left.
// Symbols that are not pieces become byte pieces with byte_fallback, else
// <unk> (one per character: SentencePiece BPE does not fuse them).
func (t *spm) Encode(text string) []int {
	norm := t.normalize(text)
	if norm == "" {
		return nil
	}
	ids := make([]int, 0, len(norm)/3)
	if t.chunkSep == "" {
		return t.encodeChunk(ids, norm)
	}
	forChunks(norm, t.chunkSep, func(c string) { ids = t.encodeChunk(ids, c) })
	return ids
}

func (t *spm) encodeChunk(ids []int, norm string) []int {
	syms := make([]symbol, 0, len(norm))
	for i := 0; i < len(norm); {
		size := t.userPrefix(norm[i:])
		frozen := size > 0
		if !frozen {
			_, size = utf8.DecodeRuneInString(norm[i:])
		}
		n := int32(len(syms))
		syms = append(syms, symbol{id: -1, start: int32(i), end: int32(i + size), prev: n - 1, next: n + 1, frozen: frozen})
		i += size
	}
	syms[len(syms)-1].next = -1
	var unused map[string][2]string // merged UNUSED piece → its halves
	mergeSymbols(syms, func(l, r *symbol) (int32, float64, bool) {
		merged := norm[l.start:r.end]
		id, ok := t.mergeable[merged]
		if !ok {
			return 0, 0, false
		}
		if t.types[id] == pieceUnused {
			if unused == nil {
				unused = make(map[string][2]string)
			}
			unused[merged] = [2]string{norm[l.start:l.end], norm[r.start:r.end]}
		}
		return id, -float64(t.scores[id]), true
	})
	for i := int32(0); i >= 0; i = syms[i].next {
		ids = t.emit(ids, norm[syms[i].start:syms[i].end], unused)
	}
	return ids
}

// emit appends the ids of one merged symbol: UNUSED pieces are split back
// into the pieces they were merged from (bpe_model.cc's resegment), unknown
// symbols become bytes or <unk>.
func (t *spm) emit(ids []int, piece string, unused map[string][2]string) []int {
	id := t.pieceID(piece)
	if id >= 0 && t.types[id] == pieceUnused {
		if halves, ok := unused[piece]; ok {
			ids = t.emit(ids, halves[0], unused)
			return t.emit(ids, halves[1], unused)
		}
	}
	if id >= 0 {
		return append(ids, id)
	}
	if !t.byteFallback {
		return append(ids, t.unk)
	}
	for i := 0; i < len(piece); i++ {
		ids = append(ids, int(t.byteIDs[piece[i]]))
	}
	return ids
}

// pieceID is ModelInterface::PieceToId without the unknown fallback:
// reserved pieces first, then mergeable ones, else -1.
func (t *spm) pieceID(piece string) int {
	if id, ok := t.reserved[piece]; ok {
		return int(id)
	}
	if id, ok := t.mergeable[piece]; ok {
		return int(id)
	}
	return -1
}

func (t *spm) Decode(ids []int) string { return decodeAll(t, ids) }

// DecodeToken: "▁" becomes a space, byte pieces their byte, control pieces
// nothing, <unk> the model's unk_surface (" ⁇ " by default), and the
// leading space of the first piece (at the start or after BOS) goes, as
// SentencePiece's decoder removes the dummy prefix.
func (t *spm) DecodeToken(prev, id int) string {
	if id < 0 || id >= len(t.pieces) {
		return ""
	}
	var s string
	switch t.types[id] {
	case pieceControl:
		return ""
	case pieceUnknown:
		return t.unkSurface
	case pieceByte:
		if b, ok := parseBytePiece(t.pieces[id]); ok {
			return string([]byte{b})
		}
		s = t.pieces[id]
	default:
		s = t.pieces[id]
	}
	if t.escapeSpaces {
		s = strings.ReplaceAll(s, spaceSymbol, " ")
	}
	if t.addDummyPrefix && (prev < 0 || prev == t.bos) {
		s = strings.TrimPrefix(s, " ")
	}
	return s
}
