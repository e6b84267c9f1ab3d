package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The Qwen 3 tokenizer committed under testdata/tokenizer: no ../shared
// needed. Its ids for "Hello, world!" come from transformers.js
// (testdata/tokenizer/hf_ref.json).
var qwen3Dir = filepath.Join("..", "..", "testdata", "tokenizer", "qwen3")

func TestTokenizeJSON(t *testing.T) {
	code, out, errs := runCLI(t, "tokenize", "--tokenizer", qwen3Dir, "--json", "Hello,", "world!")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var r TokenizeReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	if want := []int{9707, 11, 1879, 0}; !slices.Equal(r.IDs, want) || r.Count != 4 {
		t.Errorf("ids %v count %d, want %v", r.IDs, r.Count, want)
	}
	if want := []string{"Hello", ",", "Ġworld", "!"}; !slices.Equal(r.Pieces, want) {
		t.Errorf("pieces %q, want %q", r.Pieces, want)
	}
	if strings.Join(r.Texts, "") != "Hello, world!" {
		t.Errorf("texts %q", r.Texts)
	}
}

func TestTokenizeTableFileAndDecode(t *testing.T) {
	f := filepath.Join(t.TempDir(), "text.txt")
	if err := os.WriteFile(f, []byte("Hello, world!"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLI(t, "tokenize", "-t", qwen3Dir, "--file", f)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"pos  id    piece     text", `2    1879  "Ġworld"  " world"`, "4 tokens"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	code, out, errs = runCLI(t, "tokenize", "-t", qwen3Dir, "--decode", "9707,11 1879,0")
	if code != 0 || out != "Hello, world!\n" {
		t.Errorf("--decode: exit %d, %q %s", code, out, errs)
	}
}

func TestTokenizeErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"tokenize", "hello"}, exitUsage, "tokenizer"},                                             // --tokenizer is required
		{[]string{"tokenize", "-t", qwen3Dir}, exitUsage, "exactly one of"},                                 // nothing to do
		{[]string{"tokenize", "-t", qwen3Dir, "--decode", "1", "hello"}, exitUsage, "exactly one of"},       // two things
		{[]string{"tokenize", "-t", qwen3Dir, "--decode", "1,x"}, exitUsage, `"x" is not a token id`},       // bad list
		{[]string{"tokenize", "-t", qwen3Dir, "--decode", "999999"}, exitFailure, "outside the vocabulary"}, // bad id
		{[]string{"tokenize", "-t", qwen3Dir, "--bos", "hi"}, exitFailure, "no BOS"},                        // Qwen has none
		{[]string{"tokenize", "-t", "no/such/dir", "hi"}, exitFailure, "no/such/dir"},
	}
	for _, c := range cases {
		code, _, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want exit %d mentioning %q", c.args, code, errs, c.code, c.want)
		}
	}
}
