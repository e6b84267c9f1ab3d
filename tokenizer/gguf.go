package tokenizer

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/dlclark/regexp2"
)

// GGUFVocab is the tokenizer.ggml.* metadata of a GGUF file. The GGUF
// reader lives in convert; this package takes only the arrays.
type GGUFVocab struct {
	Model  string    // tokenizer.ggml.model: "llama" or "gpt2"
	Tokens []string  // tokenizer.ggml.tokens
	Scores []float32 // tokenizer.ggml.scores ("llama")
	Types  []int32   // tokenizer.ggml.token_type: SentencePiece's piece types
	Merges []string  // tokenizer.ggml.merges ("gpt2"): "a b", best first
	// BOS and EOS are tokenizer.ggml.bos_token_id and eos_token_id, -1
	// when absent.
	BOS, EOS int
	// Pre is tokenizer.ggml.pre ("gpt2"): which pre-tokenizer regex the
	// vocabulary was trained with. See FromGGUFVocab.
	Pre string
	// NoSpacePrefix is tokenizer.ggml.add_space_prefix = false ("llama").
	NoSpacePrefix bool
	// RemoveExtraWhitespaces is tokenizer.ggml.remove_extra_whitespaces
	// ("llama").
	RemoveExtraWhitespaces bool
}

// FromGGUF builds a tokenizer from the vocabulary arrays of a GGUF file:
// FromGGUFVocab with GGUF's defaults for the rest.
func FromGGUF(model string, tokens []string, scores []float32, types []int32, merges []string, bos, eos int) (Tokenizer, error) {
	return FromGGUFVocab(GGUFVocab{Model: model, Tokens: tokens, Scores: scores, Types: types, Merges: merges, BOS: bos, EOS: eos})
}

// ggufPre maps tokenizer.ggml.pre to the split regex of the Hugging Face
// tokenizer the vocabulary came from (llama.cpp's llama-vocab.cpp table).
var ggufPre = map[string]string{
	"":          gpt2Pattern,
	"gpt-2":     gpt2Pattern,
	"gpt2":      gpt2Pattern,
	"llama-bpe": llama3Pattern,
	"llama3":    llama3Pattern,
	"qwen2":     qwen2Pattern,
}

// The Split regexes of Llama 3's and Qwen 2's tokenizer.json; they differ
// only in digits (runs of 1–3 against single digits).
const (
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

// FromGGUFVocab builds a tokenizer from a GGUF vocabulary.
//
// "llama" vocabularies are SentencePiece BPE and encode as
// LoadSentencePiece does: byte fallback when there are BYTE tokens, a
// space prefix unless NoSpacePrefix, identity normalization.
//
// "gpt2" vocabularies are byte-level BPE with ranked merges, pre-tokenized
// with the regex Pre names: "llama-bpe" (Llama 3), "qwen2", "gpt-2"; an
// empty Pre, from files written before the key existed, gets GPT-2's
// regex. CONTROL and USER_DEFINED tokens are matched in the text before
// the model, as Hugging Face added tokens are.
func FromGGUFVocab(v GGUFVocab) (Tokenizer, error) {
	t, err := fromGGUF(v)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: GGUF %q vocabulary: %w", v.Model, err)
	}
	return t, nil
}

func fromGGUF(v GGUFVocab) (Tokenizer, error) {
	n := len(v.Tokens)
	switch {
	case n == 0:
		return nil, errors.New("no tokens")
	case v.Types != nil && len(v.Types) != n:
		return nil, fmt.Errorf("%d tokens but %d token types", n, len(v.Types))
	case v.BOS >= n || v.EOS >= n:
		return nil, fmt.Errorf("BOS %d or EOS %d is not among %d tokens", v.BOS, v.EOS, n)
	}
	types := v.Types
	if types == nil {
		types = make([]int32, n)
		for i := range types {
			types[i] = pieceNormal
			if i == v.BOS || i == v.EOS {
				types[i] = pieceControl
			} else if _, ok := parseBytePiece(v.Tokens[i]); ok {
				types[i] = pieceByte
			}
		}
	}
	switch v.Model {
	case "llama":
		scores := v.Scores
		if scores == nil {
			scores = make([]float32, n)
		} else if len(scores) != n {
			return nil, fmt.Errorf("%d tokens but %d scores", n, len(scores))
		}
		t := &spm{
			vocab:             vocab{pieces: v.Tokens, bos: v.BOS, eos: v.EOS},
			scores:            scores,
			types:             types,
			addDummyPrefix:    !v.NoSpacePrefix,
			removeExtraSpaces: v.RemoveExtraWhitespaces,
			escapeSpaces:      true,
			unkSurface:        defaultUnkSurface,
		}
		unk := -1
		for i, ty := range types {
			t.byteFallback = t.byteFallback || ty == pieceByte
			if ty == pieceUnknown && unk < 0 {
				unk = i
			}
		}
		t.unk = max(unk, 0) // llama.cpp's default unknown_token_id is 0
		if err := t.init(); err != nil {
			return nil, err
		}
		return t, nil
	case "gpt2":
		t, err := ggufByteLevel(v, types)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return t, nil
	}
	return nil, errors.New(`tokenizer.ggml.model is not supported (only "llama" and "gpt2")`)
}

func ggufByteLevel(v GGUFVocab, types []int32) (*hf, error) {
	pat, ok := ggufPre[v.Pre]
	if !ok {
		return nil, fmt.Errorf("tokenizer.ggml.pre %q is not supported (only gpt-2, llama-bpe, qwen2)", v.Pre)
	}
	re, err := regexp2.Compile(pat, regexp2.None)
	if err != nil {
		return nil, err
	}
	t := &hf{
		vocab:     vocab{pieces: v.Tokens, bos: v.BOS, eos: v.EOS},
		addedByID: make(map[int]*addedToken),
		// llama.cpp, as Llama 3's tokenizer.json, takes a word that is a
		// token whole before trying merges.
		model: bpeModel{
			unk:          -1,
			ignoreMerges: v.Pre == "llama-bpe" || v.Pre == "llama3",
			cache:        &wordCache{ids: make(map[string][]int)},
		},
		pre: []preTokenizer{
			splitPre(func(s string) [][2]int { return regexMatches(re, s) }, "Isolated", false),
			byteLevelPre(false, false),
		},
		dec: decoder{steps: []func(string) string{fromByteLevel}, byteLevel: true},
	}
	t.indexPieces()
	for i, ty := range types {
		if (ty == pieceControl || ty == pieceUserDefined) && v.Tokens[i] != "" {
			a := &addedToken{ID: i, Content: v.Tokens[i], Special: ty == pieceControl}
			t.addedByID[i] = a
			t.raw.add(a)
		}
	}
	t.raw.sort()
	pairs := make([][2]string, len(v.Merges))
	for i, m := range v.Merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok || strings.Contains(r, " ") {
			return nil, fmt.Errorf("merge %d %q is not two tokens", i, m)
		}
		pairs[i] = [2]string{l, r}
	}
	if err := t.model.setMerges(t.ids, pairs); err != nil {
		return nil, err
	}
	return t, nil
}

// GGUFVocabFile is the file name under which a GGUF checkpoint's embedded
// vocabulary is kept beside a converted model (see WriteGGUFVocab).
const GGUFVocabFile = "tokenizer.gguf.json"

// WriteGGUFVocab saves v as JSON, so a model converted from GGUF keeps
// its tokenizer without the checkpoint: the arrays are what
// FromGGUFVocab needs, nothing is lost.
func WriteGGUFVocab(path string, v GGUFVocab) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	return nil
}

// LoadGGUFVocab reads a file written by WriteGGUFVocab.
func LoadGGUFVocab(path string) (Tokenizer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var v GGUFVocab
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: not a GGUF vocabulary: %v", path, err)
	}
	t, err := FromGGUFVocab(v)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}
