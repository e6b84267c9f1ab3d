package calib

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestLoadSamples(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(s), 0o644)
		return p
	}
	cases := []struct {
		name, file, content string
		opts                TextOptions
		want                []string
		err                 string
	}{
		{"blank lines", "a.txt", "one\ntwo\n\n  \nthree\r\n\r\nfour\n", TextOptions{}, []string{"one\ntwo", "three", "four"}, ""},
		{"endoftext", "b.txt", "a b<|endoftext|>\nc<|endoftext|>", TextOptions{}, []string{"a b", "c"}, ""},
		{"explicit separator", "c.txt", "x###y", TextOptions{Separator: "###"}, []string{"x", "y"}, ""},
		{"jsonl field", "d.jsonl", `{"text":"hi","n":1}` + "\n\n" + `{"text":"yo"}`, TextOptions{Field: "text"}, []string{"hi", "yo"}, ""},
		{"jsonl template", "e.jsonl", `{"passage":"P","question":"q","answer":true}`, TextOptions{Template: "{passage}\n{question}? {answer}"}, []string{"P\nq? true"}, ""},
		{"jsonl wrong field", "f.jsonl", `{"prefix":"a"}`, TextOptions{Field: "text"}, nil, `no field "text" (record has prefix)`},
		{"jsonl without field", "g.jsonl", `{"a":1}`, TextOptions{}, nil, "needs --field"},
		{"empty", "h.txt", "\n\n  \n", TextOptions{}, nil, "no samples"},
		{"bad json", "i.jsonl", "{nope", TextOptions{Field: "x"}, nil, "line 1: not a JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := write(c.file, c.content)
			got, err := LoadSamples(p, c.opts)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), p) {
					t.Fatalf("err = %v, want one naming %s and saying %q", err, p, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(got, c.want) {
				t.Fatalf("got %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

type fakeEncoder struct{}

func (fakeEncoder) Encode(s string) []int {
	var ids []int
	for _, w := range strings.Fields(s) {
		ids = append(ids, len(w)+10)
	}
	return ids
}
func (fakeEncoder) BOS() int { return 1 }

func TestTokenizeAndBatches(t *testing.T) {
	seqs := Tokenize(fakeEncoder{}, []string{"a bb ccc", "", "dddd", "e e e e e e e"}, 4, true)
	want := [][]int{{1, 11, 12, 13}, {1, 14}, {1, 11, 11, 11}}
	if len(seqs) != len(want) {
		t.Fatalf("seqs = %v, want %v", seqs, want)
	}
	for i := range want {
		if !slices.Equal(seqs[i], want[i]) {
			t.Fatalf("seqs = %v, want %v", seqs, want)
		}
	}
	bs := Batches(seqs, 2)
	if len(bs) != 2 || bs[0].SeqLen != 4 || bs[1].SeqLen != 4 || bs[1].Size != 1 {
		t.Fatalf("batches: %+v", bs)
	}
	b := bs[0]
	if !slices.Equal(b.Mask, []int64{1, 1, 1, 1, 1, 1, 0, 0}) ||
		!slices.Equal(b.IDs, []int64{1, 11, 12, 13, 1, 14, 0, 0}) ||
		!slices.Equal(b.Positions, []int64{0, 1, 2, 3, 0, 1, 0, 0}) {
		t.Fatalf("batch 0: %+v", b)
	}
}
