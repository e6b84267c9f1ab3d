package tokenizer_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/tokenizer"
)

// TestBadInput checks that broken or unsupported files give one-line
// errors that name the file and the problem.
func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// A valid llama2.c file in miniature: max_token_length 5, then
	// <unk>, <s>, </s> with scores.
	tiny := []byte{5, 0, 0, 0}
	for _, p := range []string{"<unk>", "<s>", "</s>"} {
		tiny = append(tiny, 0, 0, 0, 0, byte(len(p)), 0, 0, 0)
		tiny = append(tiny, p...)
	}
	if _, err := tokenizer.ParseLlama2C(tiny); err != nil {
		t.Fatalf("the miniature llama2.c file is rejected: %v", err)
	}
	cases := []struct {
		name  string
		load  func(string) (tokenizer.Tokenizer, error)
		data  []byte
		wants []string // substrings of the error
	}{
		{"truncated.bin", tokenizer.LoadLlama2C, tiny[:len(tiny)-2], []string{"truncated in token 2"}},
		{"header.bin", tokenizer.LoadLlama2C, tiny[:2], []string{"too short"}},
		{"text.bin", tokenizer.LoadLlama2C, []byte("hello, world\n"), []string{"max_token_length"}},
		{"text.model", tokenizer.LoadSentencePiece, []byte("this is not a protobuf\n"), []string{"not a SentencePiece model"}},
		{"garbage.model", tokenizer.LoadSentencePiece, []byte{0x0a, 0xff, 0xff, 0xff}, []string{"not a SentencePiece model"}},
		{"unigram.model", tokenizer.LoadSentencePiece, unigramModel(), []string{"Unigram", "not supported"}},
		{"unigram.json", tokenizer.LoadHF, []byte(`{"model": {"type": "Unigram", "vocab": []}}`), []string{"model type Unigram is not supported"}},
		{"wordpiece.json", tokenizer.LoadHF, []byte(`{"model": {"type": "WordPiece", "vocab": {}}}`), []string{"model type WordPiece is not supported"}},
		{"nfkc.json", tokenizer.LoadHF, []byte(`{"normalizer": {"type": "NFKC"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`), []string{"normalizer NFKC is not supported"}},
		{"bert.json", tokenizer.LoadHF, []byte(`{"pre_tokenizer": {"type": "BertPreTokenizer"}, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}`), []string{"pre_tokenizer BertPreTokenizer is not supported"}},
		{"merge.json", tokenizer.LoadHF, []byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}`), []string{"merge 0", "not in the vocabulary"}},
		{"broken.json", tokenizer.LoadHF, []byte(`{"model": `), []string{"not a tokenizer.json"}},
		{"unknown.txt", tokenizer.Load, []byte("x"), []string{"unknown tokenizer format"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(c.name, c.data)
			_, err := c.load(p)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.Contains(msg, p) {
				t.Errorf("error %q should be one line naming %s", msg, p)
			}
			for _, w := range c.wants {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
		})
	}
	if _, err := tokenizer.Load(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing path: %v", err)
	}
	if _, err := tokenizer.FromGGUF("bert", []string{"a"}, nil, nil, nil, -1, -1); err == nil || !strings.Contains(err.Error(), `"bert"`) {
		t.Errorf("GGUF model bert: %v", err)
	}
	if _, err := tokenizer.FromGGUFVocab(tokenizer.GGUFVocab{Model: "gpt2", Tokens: []string{"a"}, Pre: "tekken", BOS: -1, EOS: -1}); err == nil || !strings.Contains(err.Error(), "tekken") {
		t.Errorf("GGUF pre tekken: %v", err)
	}
}

// unigramModel is a ModelProto with one piece and model_type UNIGRAM.
func unigramModel() []byte {
	piece := []byte{0x0a, 1, 'a'}                           // piece "a"
	msg := append([]byte{0x0a, byte(len(piece))}, piece...) // pieces
	return append(msg, []byte{0x12, 2, 0x18, 1}...)         // trainer_spec {model_type: 1}
}

// TestLoad checks how Load finds a tokenizer in a directory.
func TestLoad(t *testing.T) {
	models := filepath.Join(testenv.SharedDir(t), "models")
	cases := []struct {
		dir   string
		vocab int
	}{
		{filepath.Join(models, "stories260K"), 512},         // tok512.bin
		{filepath.Join(models, "babyllama-tok105"), 105},    // tok105.model
		{filepath.Join(models, "llama2-tokenizer"), 32000},  // tokenizer.model before tokenizer.bin
		{testenv.Testdata(t, "tokenizer", "qwen3"), 151669}, // tokenizer.json.gz
	}
	for _, c := range cases {
		tok, err := tokenizer.Load(c.dir)
		if err != nil {
			t.Errorf("%s: %v", c.dir, err)
			continue
		}
		if tok.VocabSize() != c.vocab {
			t.Errorf("%s: vocabulary %d, want %d", c.dir, tok.VocabSize(), c.vocab)
		}
	}
	empty := t.TempDir()
	_, err := tokenizer.Load(empty)
	if err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), "tokenizer.json, tokenizer.json.gz, tokenizer.model, tokenizer.bin") {
		t.Errorf("empty directory: %v", err)
	}
}
