package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
)

// llama2.c's ids for BOS and EOS, fixed in run.c (the file does not say).
const (
	llama2cBOS = 1
	llama2cEOS = 2
	// llama2cByteOffset is where run.c expects <0x00>…<0xFF>: after
	// <unk>, <s> and </s>.
	llama2cByteOffset = 3
)

// llama2c is a llama2.c tokenizer.bin vocabulary, encoded as run.c does.
type llama2c struct {
	vocab
	scores []float32
	// bytesOK is set when ids 3…258 are <0x00>…<0xFF>, which run.c's
	// byte fallback assumes.
	bytesOK bool
	space   int // id of " ", the dummy prefix; -1 if absent
	// chunked lets Encode merge word by word (see splitSafe).
	chunked bool
}

// LoadLlama2C reads a llama2.c tokenizer.bin: an int32 max_token_length,
// then for every token a float32 score, an int32 length and the piece's
// bytes, all little-endian. The file does not store the vocabulary size
// (run.c takes it from the checkpoint), so entries are read to the end.
func LoadLlama2C(path string) (Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t, err := ParseLlama2C(data)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// ParseLlama2C is LoadLlama2C for a file already in memory.
func ParseLlama2C(data []byte) (Tokenizer, error) {
	if len(data) < 4 {
		return nil, fmt.Errorf("llama2.c tokenizer: %d bytes, too short for the header", len(data))
	}
	maxLen := int32(binary.LittleEndian.Uint32(data))
	if maxLen <= 0 || maxLen > 1<<16 {
		return nil, fmt.Errorf("llama2.c tokenizer: max_token_length %d is implausible (not a llama2.c tokenizer.bin?)", maxLen)
	}
	t := &llama2c{vocab: vocab{bos: llama2cBOS, eos: llama2cEOS}}
	for off := 4; off < len(data); {
		n := len(t.pieces)
		if len(data)-off < 8 {
			return nil, fmt.Errorf("llama2.c tokenizer: truncated in the header of token %d at byte %d", n, off)
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(data[off:]))
		size := int32(binary.LittleEndian.Uint32(data[off+4:]))
		off += 8
		if size < 0 || size > maxLen || int(size) > len(data)-off {
			if size >= 0 && size <= maxLen {
				return nil, fmt.Errorf("llama2.c tokenizer: truncated in token %d: %d bytes announced at byte %d, %d left", n, size, off, len(data)-off)
			}
			return nil, fmt.Errorf("llama2.c tokenizer: token %d at byte %d has length %d (max_token_length %d)", n, off, size, maxLen)
		}
		t.pieces = append(t.pieces, string(data[off:off+int(size)]))
		t.scores = append(t.scores, score)
		off += int(size)
	}
	if len(t.pieces) <= llama2cEOS {
		return nil, fmt.Errorf("llama2.c tokenizer: only %d tokens", len(t.pieces))
	}
	t.indexPieces()
	t.space = t.id(" ")
	t.chunked = splitSafe(t.pieces, " ")
	t.bytesOK = len(t.pieces) >= llama2cByteOffset+256
	for b := 0; t.bytesOK && b < 256; b++ {
		v, ok := parseBytePiece(t.pieces[llama2cByteOffset+b])
		t.bytesOK = ok && int(v) == b
	}
	return t, nil
}

// Encode follows run.c's encode: a " " is prepended to non-empty text,
// each UTF-8 code point becomes its piece or, when it has none, one token
// per byte (id byte+3), then the adjacent pair whose concatenation is the
// best-scoring piece is merged until none is left.
//
// Where run.c misbehaves Encode does not: NUL bytes are ordinary bytes
// (run.c stops at them), a vocabulary without " " gets no dummy prefix
// (run.c emits id -1), and without byte pieces at 3…258 unknown bytes
// become <unk> (id 0) rather than unrelated ids.
func (t *llama2c) Encode(text string) []int {
	if text == "" {
		return nil
	}
	if t.space >= 0 {
		text = " " + text // the dummy prefix is the piece " "
	}
	ids := make([]int, 0, len(text)/3)
	if !t.chunked {
		return t.encodeChunk(ids, text)
	}
	forChunks(text, " ", func(c string) { ids = t.encodeChunk(ids, c) })
	return ids
}

func (t *llama2c) encodeChunk(ids []int, text string) []int {
	syms := make([]symbol, 0, len(text))
	add := func(id int) {
		syms = append(syms, symbol{id: int32(id), prev: int32(len(syms) - 1), next: int32(len(syms) + 1)})
	}
	for i := 0; i < len(text); {
		// run.c's code point: a byte and the continuation bytes
		// (10xxxxxx) after it, at most 4 bytes in all, valid or not.
		j := i + 1
		for j < len(text) && text[j]&0xC0 == 0x80 && j-i < 4 {
			j++
		}
		if id := t.id(text[i:j]); id >= 0 {
			add(id)
		} else {
			for k := i; k < j; k++ {
				if t.bytesOK {
					add(int(text[k]) + llama2cByteOffset)
				} else {
					add(0)
				}
			}
		}
		i = j
	}
	syms[len(syms)-1].next = -1
	mergeSymbols(syms, func(l, r *symbol) (int32, float64, bool) {
		id, ok := t.ids[t.pieces[l.id]+t.pieces[r.id]]
		// run.c starts its search at best_score = -1e10 and takes only
		// strictly better scores.
		if !ok || t.scores[id] <= -1e10 {
			return 0, 0, false
		}
		return int32(id), -float64(t.scores[id]), true
	})
	for i := int32(0); i >= 0; i = syms[i].next {
		ids = append(ids, int(syms[i].id))
	}
	return ids
}

func (t *llama2c) Decode(ids []int) string { return decodeAll(t, ids) }

// DecodeToken follows run.c's decode: <0xXX> pieces are raw bytes, and a
// leading space is dropped after BOS (and at the start). BOS and EOS,
// stored as "\n<s>\n" and "\n</s>\n", decode to nothing: run.c never
// prints them.
func (t *llama2c) DecodeToken(prev, id int) string {
	if id < 0 || id >= len(t.pieces) || id == t.bos || id == t.eos {
		return ""
	}
	p := t.pieces[id]
	if (prev == t.bos || prev < 0) && len(p) > 0 && p[0] == ' ' {
		p = p[1:]
	}
	if b, ok := parseBytePiece(p); ok {
		return string([]byte{b})
	}
	return p
}
