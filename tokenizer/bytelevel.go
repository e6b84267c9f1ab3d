package tokenizer

import (
	"strings"
	"unicode/utf8"
)

// GPT-2's byte-level alphabet: every byte is written as a printable
// character so that BPE works on strings without spaces or control
// characters. Printable Latin-1 bytes stand for themselves; the other 68
// bytes, in order, become U+0100, U+0101, … (space, 0x20, is "Ġ" U+0120).
var (
	byteToRune [256]rune
	runeToByte map[rune]byte
)

func init() {
	runeToByte = make(map[rune]byte, 256)
	next := rune(256)
	for b := 0; b < 256; b++ {
		r := rune(b)
		printable := ('!' <= b && b <= '~') || (0xA1 <= b && b <= 0xAC) || (0xAE <= b && b <= 0xFF)
		if !printable {
			r = next
			next++
		}
		byteToRune[b] = r
		runeToByte[r] = byte(b)
	}
}

// toByteLevel writes each byte of s as its byte-level character.
func toByteLevel(s string) string {
	var b strings.Builder
	b.Grow(2 * len(s))
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// fromByteLevel reverses toByteLevel. As tokenizers' ByteLevel decoder, it
// returns s unchanged if any character is outside the alphabet (added
// tokens are stored as plain text).
func fromByteLevel(s string) string {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := runeToByte[r]
		if !ok {
			return s
		}
		out = append(out, b)
	}
	return string(out)
}

// validUTF8 replaces every byte of s that is not part of valid UTF-8 by
// U+FFFD, as SentencePiece's normalizer does (strings.ToValidUTF8 would
// replace whole runs by one).
func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r) // range yields RuneError for each bad byte
	}
	return b.String()
}
