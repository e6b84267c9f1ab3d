package tokenizer_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// spmRef is testdata/tokenizer/spm_ref.json, written by gen_ref.py.
type spmRef struct {
	Texts []struct {
		Chunk  *int   `json:"chunk"`
		Chunks []int  `json:"chunks"`
		Text   string `json:"text"`
		SHA256 string `json:"sha256"`
	} `json:"texts"`
	IDs map[string][][]int `json:"ids"` // file under ../shared/models → ids per text
}

// loadSPMRef returns the reference and its texts, rebuilt from the
// TinyStories validation file in ../shared.
func loadSPMRef(t *testing.T) (*spmRef, []string, string) {
	t.Helper()
	shared := testenv.SharedDir(t)
	data, err := os.ReadFile(testenv.Testdata(t, "tokenizer", "spm_ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref spmRef
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(shared, "data", "tinystories", "validation.txt"))
	if err != nil {
		t.Fatal(err)
	}
	chunks := strings.Split(string(raw), "\n\n")
	texts := make([]string, len(ref.Texts))
	for i, rt := range ref.Texts {
		switch {
		case rt.Chunk != nil:
			texts[i] = chunks[*rt.Chunk]
		case rt.Chunks != nil:
			texts[i] = strings.Join(chunks[rt.Chunks[0]:rt.Chunks[1]], "\n\n")
		default:
			texts[i] = rt.Text
		}
		sum := sha256.Sum256([]byte(texts[i]))
		if hex.EncodeToString(sum[:]) != rt.SHA256 {
			t.Fatalf("text %d differs from the one the reference was made from (validation.txt changed?)", i)
		}
	}
	return &ref, texts, filepath.Join(shared, "models")
}

// TestReferenceIDs compares Encode with gen_ref.py's independent Python
// implementations of run.c's encode and SentencePiece BPE, on TinyStories
// text and handmade edge cases, for all four shared vocabularies.
func TestReferenceIDs(t *testing.T) {
	ref, texts, models := loadSPMRef(t)
	if len(ref.IDs) != 4 {
		t.Fatalf("reference has %d tokenizers, want 4", len(ref.IDs))
	}
	for file, want := range ref.IDs {
		t.Run(file, func(t *testing.T) {
			tok, err := tokenizer.Load(filepath.Join(models, file))
			if err != nil {
				t.Fatal(err)
			}
			for i, text := range texts {
				got := tok.Encode(text)
				if !slices.Equal(got, want[i]) {
					t.Errorf("text %d %.40q:\n got %v\nwant %v\n(first difference at %d)", i, text, got, want[i], firstDiff(got, want[i]))
				}
			}
		})
	}
}

func firstDiff(a, b []int) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestPublishedLlama2 checks ids published in karpathy/llama2.c test.c
// (commit 350e04fe35433e6d2941dce5a1f53308f87058eb), which came from
// Meta's SentencePiece, against both files of the Llama 2 tokenizer.
func TestPublishedLlama2(t *testing.T) {
	dir := filepath.Join(testenv.SharedDir(t), "models", "llama2-tokenizer")
	cases := []struct {
		text string
		ids  []int // with BOS
	}{
		{"", []int{1}},
		{"I believe the meaning of life is", []int{1, 306, 4658, 278, 6593, 310, 2834, 338}},
		{"Simply put, the theory of relativity states that ", []int{1, 3439, 17632, 1925, 29892, 278, 6368, 310, 14215, 537, 5922, 393, 29871}},
		{"A brief message congratulating the team on the launch:\n\n        Hi everyone,\n\n        I just ",
			[]int{1, 319, 11473, 2643, 378, 629, 271, 18099, 278, 3815, 373, 278, 6826, 29901, 13, 13, 4706, 6324, 14332, 29892, 13, 13, 4706, 306, 925, 29871}},
		{"Translate English to French:\n\n        sea otter => loutre de mer\n        peppermint => menthe poivrée\n        plush girafe => girafe peluche\n        cheese =>",
			[]int{1, 4103, 9632, 4223, 304, 5176, 29901, 13, 13, 4706, 7205, 4932, 357, 1149, 301, 449, 276, 316, 2778, 13, 4706, 1236, 407, 837, 524, 1149, 6042, 354, 772, 440, 29878, 1318, 13, 4706, 715, 1878, 330, 3055, 1725, 1149, 330, 3055, 1725, 4639, 28754, 13, 4706, 923, 968, 1149}},
	}
	for _, file := range []string{"tokenizer.bin", "tokenizer.model"} {
		tok, err := tokenizer.Load(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if tok.BOS() != 1 || tok.EOS() != 2 || tok.VocabSize() != 32000 {
			t.Errorf("%s: BOS %d EOS %d vocab %d, want 1 2 32000", file, tok.BOS(), tok.EOS(), tok.VocabSize())
		}
		for _, c := range cases {
			got := append([]int{tok.BOS()}, tok.Encode(c.text)...)
			if !slices.Equal(got, c.ids) {
				t.Errorf("%s: %.30q:\n got %v\nwant %v", file, c.text, got, c.ids)
			}
			if d := tok.Decode(got); d != c.text {
				t.Errorf("%s: Decode(Encode(%.30q)) = %q", file, c.text, d)
			}
		}
	}
}

// TestRoundTrip checks Decode(Encode(s)) == s wherever the vocabulary can
// represent s, and that streaming with DecodeToken gives the same text.
func TestRoundTrip(t *testing.T) {
	_, texts, models := loadSPMRef(t)
	for _, file := range []string{"stories260K/tok512.bin", "llama2-tokenizer/tokenizer.bin", "llama2-tokenizer/tokenizer.model", "babyllama-tok105/tok105.model"} {
		tok, err := tokenizer.Load(filepath.Join(models, file))
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for _, text := range texts {
			ids := tok.Encode(text)
			if !representable(file, text, ids) {
				continue
			}
			checked++
			if got := tok.Decode(ids); got != text {
				t.Errorf("%s: Decode(Encode(%.40q)) = %.40q", file, text, got)
			}
			// Streaming after BOS, as a generation loop prints.
			var b strings.Builder
			prev := tok.BOS()
			for _, id := range ids {
				b.WriteString(tok.DecodeToken(prev, id))
				prev = id
			}
			if b.String() != text {
				t.Errorf("%s: DecodeToken stream of %.40q = %.40q", file, text, b.String())
			}
		}
		if checked < len(texts)/2 {
			t.Errorf("%s: only %d of %d texts round-trip", file, checked, len(texts))
		}
	}
}

// representable reports whether Decode can give text back: SentencePiece
// reads "▁" as a space, and tok105 has neither a byte fallback nor a
// newline and cleans up spaces.
func representable(file, text string, ids []int) bool {
	if strings.HasSuffix(file, ".model") && strings.Contains(text, "\u2581") {
		return false
	}
	if strings.Contains(file, "tok105") {
		if slices.Contains(ids, 0) || strings.Contains(text, "  ") || strings.TrimSpace(text) != text {
			return false
		}
	}
	return true
}

// TestDecodeToken covers the rules a generation loop relies on.
func TestDecodeToken(t *testing.T) {
	models := filepath.Join(testenv.SharedDir(t), "models")
	for _, file := range []string{"stories260K/tok512.bin", "llama2-tokenizer/tokenizer.model"} {
		tok, err := tokenizer.Load(filepath.Join(models, file))
		if err != nil {
			t.Fatal(err)
		}
		once := tok.Encode("Once")[0] // "▁Once"
		cases := []struct {
			prev, id int
			want     string
		}{
			{tok.BOS(), once, "Once"},   // llama2.c strips the space after BOS
			{-1, once, "Once"},          // and at the start
			{once, once, " Once"},       // but not elsewhere
			{once, tok.EOS(), ""},       // EOS prints nothing
			{-1, tok.BOS(), ""},         // nor does BOS
			{once, 3 + '\n', "\n"},      // <0x0A> is a newline byte
			{once, 3 + 0xE2, "\xe2"},    // a lone byte of a UTF-8 sequence
			{once, tok.VocabSize(), ""}, // out of range
			{once, -5, ""},
		}
		for _, c := range cases {
			if got := tok.DecodeToken(c.prev, c.id); got != c.want {
				t.Errorf("%s: DecodeToken(%d, %d) = %q, want %q", file, c.prev, c.id, got, c.want)
			}
		}
		if p := tok.Piece(3 + 'A'); p != "<0x41>" {
			t.Errorf("%s: Piece(68) = %q", file, p)
		}
	}
}

// TestGGUFLlama builds the "llama" vocabulary embedded in stories260K.gguf
// (read by the small reader in gguf_read_test.go) and checks it encodes as
// tok512.bin, the same vocabulary in llama2.c's format.
func TestGGUFLlama(t *testing.T) {
	ref, texts, models := loadSPMRef(t)
	v := readGGUFVocab(t, filepath.Join(models, "stories260K", "stories260K.gguf"))
	if v.Model != "llama" || len(v.Tokens) != 512 {
		t.Fatalf("stories260K.gguf: model %q with %d tokens", v.Model, len(v.Tokens))
	}
	tok, err := tokenizer.FromGGUF(v.Model, v.Tokens, v.Scores, v.Types, v.Merges, v.BOS, v.EOS)
	if err != nil {
		t.Fatal(err)
	}
	if tok.BOS() != 1 || tok.EOS() != 2 {
		t.Errorf("BOS %d EOS %d", tok.BOS(), tok.EOS())
	}
	want := ref.IDs["stories260K/tok512.bin"]
	for i, text := range texts {
		if strings.Contains(text, "\u2581") || strings.Contains(text, "\x00") {
			continue // llama2.c and SentencePiece differ here by design
		}
		if got := tok.Encode(text); !slices.Equal(got, want[i]) {
			t.Errorf("text %d %.40q:\n got %v\nwant %v", i, text, got, want[i])
		}
	}
}

func ExampleLoad() {
	tok, err := tokenizer.Load("../../shared/models/stories260K")
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := append([]int{tok.BOS()}, tok.Encode("Once upon a time")...)
	fmt.Println(ids)
	fmt.Println(tok.Decode(ids))
}
