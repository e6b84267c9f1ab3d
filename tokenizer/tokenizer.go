package tokenizer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Tokenizer maps text to token ids and back. Implementations are safe for
// concurrent use.
type Tokenizer interface {
	// Encode returns the ids of text, without BOS or EOS.
	Encode(text string) []int
	// Decode returns the text of ids; ids outside the vocabulary, BOS and
	// EOS give nothing. Decode(Encode(s)) == s for the texts the
	// vocabulary can represent (see the package documentation).
	Decode(ids []int) string
	// DecodeToken returns the text id adds when it follows prev, for
	// printing tokens as a model generates them: concatenating
	// DecodeToken(prev, id) over a sequence, with prev -1 for the first,
	// gives Decode's result. The space a SentencePiece-style encoder puts
	// in front of the text is dropped from a token at the start (prev < 0)
	// or right after BOS, as llama2.c's decode does.
	DecodeToken(prev, id int) string
	// BOS and EOS return the beginning- and end-of-sequence ids, or -1
	// when the vocabulary has none.
	BOS() int
	EOS() int
	// VocabSize is one more than the largest id.
	VocabSize() int
	// Piece returns the vocabulary entry of id as the file stores it
	// ("▁the" for SentencePiece, "Ġthe" for byte-level BPE, " the" for
	// llama2.c), or "" when id is out of range.
	Piece(id int) string
}

// Load finds the tokenizer of the model in dir, in this order:
// tokenizer.json (Hugging Face, also gzipped), tokenizer.model
// (SentencePiece), tokenizer.bin (llama2.c), then a single tok*.model or
// tok*.bin (llama2.c's custom vocabularies, such as tok512.bin). A path to
// a file is loaded by its extension the same way.
func Load(dir string) (Tokenizer, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !fi.IsDir() {
		return loadFile(dir)
	}
	for _, name := range []string{"tokenizer.json", "tokenizer.json.gz", "tokenizer.model", "tokenizer.bin", GGUFVocabFile} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return loadFile(p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("tokenizer: %w", err)
		}
	}
	for _, glob := range []string{"tok*.model", "tok*.bin"} {
		matches, err := filepath.Glob(filepath.Join(dir, glob))
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", dir, err)
		}
		switch len(matches) {
		case 0:
			continue
		case 1:
			return loadFile(matches[0])
		}
		sort.Strings(matches)
		for i := range matches {
			matches[i] = filepath.Base(matches[i])
		}
		return nil, fmt.Errorf("tokenizer: %s: several tokenizers (%s); name the file", dir, strings.Join(matches, ", "))
	}
	return nil, fmt.Errorf("tokenizer: %s: no tokenizer found (looked for tokenizer.json, tokenizer.json.gz, tokenizer.model, tokenizer.bin, tokenizer.gguf.json, tok*.model, tok*.bin)", dir)
}

// loadFile picks the loader by the file name.
func loadFile(path string) (Tokenizer, error) {
	base := strings.TrimSuffix(filepath.Base(path), ".gz")
	if base == GGUFVocabFile {
		return LoadGGUFVocab(path)
	}
	switch filepath.Ext(base) {
	case ".json":
		return LoadHF(path)
	case ".model":
		return LoadSentencePiece(path)
	case ".bin":
		return LoadLlama2C(path)
	}
	return nil, fmt.Errorf("tokenizer: %s: unknown tokenizer format (want tokenizer.json, a SentencePiece .model or a llama2.c .bin)", path)
}

// vocab is what every format has: pieces by id and the reverse map.
type vocab struct {
	pieces []string
	ids    map[string]int
	bos    int
	eos    int
}

func (v *vocab) BOS() int       { return v.bos }
func (v *vocab) EOS() int       { return v.eos }
func (v *vocab) VocabSize() int { return len(v.pieces) }

func (v *vocab) Piece(id int) string {
	if id < 0 || id >= len(v.pieces) {
		return ""
	}
	return v.pieces[id]
}

// id returns the id of piece, or -1.
func (v *vocab) id(piece string) int {
	if id, ok := v.ids[piece]; ok {
		return id
	}
	return -1
}

// indexPieces fills ids from pieces; the first of duplicate pieces wins.
func (v *vocab) indexPieces() {
	v.ids = make(map[string]int, len(v.pieces))
	for i, p := range v.pieces {
		if _, dup := v.ids[p]; !dup {
			v.ids[p] = i
		}
	}
}

// parseBytePiece reports the byte of a "<0xXX>" piece (upper-case hex, as
// SentencePiece writes them).
func parseBytePiece(p string) (byte, bool) {
	if len(p) != 6 || p[:3] != "<0x" || p[5] != '>' {
		return 0, false
	}
	hi, ok1 := unhex(p[3])
	lo, ok2 := unhex(p[4])
	return hi<<4 | lo, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// decodeAll implements Decode in terms of DecodeToken.
func decodeAll(t Tokenizer, ids []int) string {
	var b strings.Builder
	prev := -1
	for _, id := range ids {
		b.WriteString(t.DecodeToken(prev, id))
		prev = id
	}
	return b.String()
}
