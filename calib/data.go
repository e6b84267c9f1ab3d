package calib

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// TextOptions say how to cut a file into samples.
type TextOptions struct {
	// Separator between samples in a text file. Empty: "<|endoftext|>"
	// when the file contains it (TinyStories train), else blank lines
	// (TinyStories validation, paragraphs).
	Separator string
	// Field of a JSONL record to use, or Template combining fields, e.g.
	// "{passage}\nQuestion: {question}?". One of them for .jsonl files.
	Field, Template string
}

// LoadSamples reads calibration or evaluation samples: plain text cut at a
// separator, or JSONL records (one field, or a template of fields).
// Empty samples are dropped; an empty result is an error naming the file.
func LoadSamples(path string, opts TextOptions) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	var samples []string
	if strings.HasSuffix(path, ".jsonl") || opts.Field != "" || opts.Template != "" {
		samples, err = jsonlSamples(data, opts)
	} else {
		samples = textSamples(string(data), opts.Separator)
	}
	if err != nil {
		return nil, fmt.Errorf("calib: %s: %w", path, err)
	}
	if len(samples) == 0 {
		return nil, fmt.Errorf("calib: %s: no samples (empty file or only separators)", path)
	}
	return samples, nil
}

var blankLines = regexp.MustCompile(`\r?\n[ \t]*\r?\n`)

func textSamples(text, sep string) []string {
	text = strings.ReplaceAll(text, "\r\n", "\n")
	var parts []string
	switch {
	case sep != "":
		parts = strings.Split(text, sep)
	case strings.Contains(text, "<|endoftext|>"):
		parts = strings.Split(text, "<|endoftext|>")
	default:
		parts = blankLines.Split(text, -1)
	}
	var out []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

var templateField = regexp.MustCompile(`\{([A-Za-z0-9_]+)\}`)

func jsonlSamples(data []byte, opts TextOptions) ([]string, error) {
	if opts.Field == "" && opts.Template == "" {
		return nil, fmt.Errorf("JSONL needs --field NAME or --template \"{a} {b}\"")
	}
	tmpl := opts.Template
	if tmpl == "" {
		tmpl = "{" + opts.Field + "}"
	}
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	line := 0
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("line %d: not a JSON object: %v", line, err)
		}
		var missing string
		s := templateField.ReplaceAllStringFunc(tmpl, func(m string) string {
			name := m[1 : len(m)-1]
			v, ok := rec[name]
			if !ok {
				missing = name
				return ""
			}
			if str, ok := v.(string); ok {
				return str
			}
			b, _ := json.Marshal(v)
			return string(b)
		})
		if missing != "" {
			var have []string
			for k := range rec {
				have = append(have, k)
			}
			return nil, fmt.Errorf("line %d: no field %q (record has %s)", line, missing, strings.Join(sortedStrings(have), ", "))
		}
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// Encoder is the part of a tokenizer batching needs.
type Encoder interface {
	Encode(text string) []int
	BOS() int
}

// Batch is a padded batch of token sequences. Padding is on the right:
// Mask is 0 there and no statistic or loss reads those positions.
type Batch struct {
	Size, SeqLen int
	IDs          []int64 // [Size, SeqLen]
	Mask         []int64 // [Size, SeqLen]
	Positions    []int64 // [Size, SeqLen], 0… along real tokens
	Lengths      []int   // real tokens per row
}

// Tokenize encodes samples with BOS first, truncated to seqLen tokens;
// samples that encode to nothing but BOS are dropped.
func Tokenize(enc Encoder, samples []string, seqLen int, bos bool) [][]int {
	var out [][]int
	for _, s := range samples {
		var ids []int
		if bos && enc.BOS() >= 0 {
			ids = append(ids, enc.BOS())
		}
		ids = append(ids, enc.Encode(s)...)
		if len(ids) > seqLen {
			ids = ids[:seqLen]
		}
		if len(ids) > 1 || (!bos && len(ids) > 0) {
			out = append(out, ids)
		}
	}
	return out
}

// Batches groups token sequences into batches of at most size rows, each
// padded to its longest row (padding id 0, masked out).
func Batches(seqs [][]int, size int) []Batch {
	var out []Batch
	for i := 0; i < len(seqs); i += size {
		rows := seqs[i:min(i+size, len(seqs))]
		T := 0
		for _, r := range rows {
			T = max(T, len(r))
		}
		b := Batch{Size: len(rows), SeqLen: T,
			IDs: make([]int64, len(rows)*T), Mask: make([]int64, len(rows)*T), Positions: make([]int64, len(rows)*T)}
		for r, ids := range rows {
			b.Lengths = append(b.Lengths, len(ids))
			for t, id := range ids {
				b.IDs[r*T+t] = int64(id)
				b.Mask[r*T+t] = 1
				b.Positions[r*T+t] = int64(t)
			}
		}
		out = append(out, b)
	}
	return out
}
