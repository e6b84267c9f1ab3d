package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

const boolqRecords = `{"question":"is the sky blue","answer":true,"passage":"The sky is blue on a sunny day."}
{"question":"can a dog fly","answer":false,"passage":"Dogs run and play. They can not fly."}
{"question":"is ice cold","answer":true,"passage":"Ice is frozen water. It is very cold."}
`

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestEvalChoice runs both tasks on small files: the JSON result's counts
// agree with each other and the text prints accuracy beside the majority
// baseline and the confusion table.
func TestEvalChoice(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	cases := []struct {
		task, file, content string
		n                   int
		majority            string
		baseline            float64
	}{
		{"boolq", "b.jsonl", boolqRecords, 3, "yes", 2.0 / 3},
		{"imdb", "i.csv", "text,label\nA great film. I loved it.,pos\nBoring and bad.,neg\n\"Dull, dull.\",neg\nFun!,1\n", 4, "negative", 0.5},
	}
	for _, c := range cases {
		t.Run(c.task, func(t *testing.T) {
			data := writeTemp(t, c.file, c.content)
			code, out, errs := runCLI(t, "eval", model, "--task", c.task, "--data", data, "--threads", "1", "--json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			var r ChoiceEvalResult
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			sum := 0
			for g := range r.Confusion {
				sum += r.Confusion[g][g]
			}
			if r.Examples != c.n || r.Correct != sum || r.Accuracy != float64(sum)/float64(c.n) || r.Majority != c.majority ||
				r.Baseline != c.baseline || len(r.Predictions) != c.n || len(r.Indices) != c.n || r.SeqLen != 512 {
				t.Errorf("%+v", r)
			}
			code, out, errs = runCLI(t, "eval", model, "--task", c.task, "--data", data, "--threads", "1")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			for _, want := range []string{c.task + ": accuracy ", "majority-class baseline", "all " + string(rune('0'+c.n)) + " examples", "gold \\ predicted", "BOS first"} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}

	// --limit draws a reproducible subset and says so; --seq-len cuts
	// contexts from the left.
	data := writeTemp(t, "b.jsonl", boolqRecords)
	var got [2]ChoiceEvalResult
	for i := range got {
		code, out, errs := runCLI(t, "eval", model, "--task", "boolq", "--data", data, "--limit", "2", "--seed", "7", "--seq-len", "12", "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errs)
		}
		json.Unmarshal([]byte(out), &got[i])
	}
	if got[0].Examples != 2 || got[0].Subset != "2 of 3 examples drawn at random with seed 7" ||
		got[0].Truncated != 2 || got[0].SeqLen != 12 || got[0].Indices[0] != got[1].Indices[0] || got[0].Indices[1] != got[1].Indices[1] {
		t.Errorf("subset: %+v / %+v", got[0], got[1])
	}
}

// TestEvalChoiceSharedData runs a few examples of the real BoolQ and
// IMDB files, which must parse as they are.
func TestEvalChoiceSharedData(t *testing.T) {
	testenv.ORTLibrary(t)
	shared := testenv.SharedDir(t)
	for task, file := range map[string]string{"boolq": "boolq/boolq.jsonl", "imdb": "imdb/test.csv"} {
		code, out, errs := runCLI(t, "eval", fixture("stories260k_kv.onnx"), "--task", task, "--data", filepath.Join(shared, "data", file),
			"--limit", "6", "--threads", "1")
		if code != 0 || !strings.Contains(out, "6 of ") {
			t.Errorf("%s: exit %d: %s%s", task, code, errs, out)
		}
	}
}

// TestEvalBadInput: each broken input gives exit code 1 and one line on
// stderr saying what is wrong, for perplexity and for the choice tasks.
func TestEvalBadInput(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model, tok := fixture("stories260k_kv.onnx"), fixture("tok512.bin")
	text := testenv.Testdata(t, "text", "tinystories_valid200.txt")
	boolq := writeTemp(t, "boolq.jsonl", boolqRecords)

	// A graph with input_ids but no logits: hidden = Cast(input_ids).
	noLogits := filepath.Join(dir, "nologits.onnx")
	b := irtest.New("g")
	b.Graph().Input = append(b.Graph().Input, irtest.ValueInfo("input_ids", onnxpb.TensorProto_INT64, -1, -1))
	b.Node("Cast", "cast", []string{"input_ids"}, []string{"hidden"}, &onnxpb.AttributeProto{
		Name: proto.String("to"), Type: onnxpb.AttributeProto_INT.Enum(), I: proto.Int64(int64(onnxpb.TensorProto_FLOAT))}).
		Output("hidden", -1, -1)
	if err := graph.Save(b.Model(), noLogits, graph.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	qwen := testenv.Testdata(t, "tokenizer", "qwen3", "tokenizer.json.gz")

	cases := []struct {
		name string
		args []string
		want string
	}{
		{"ppl empty dataset", []string{model, "--data", writeTemp(t, "empty.txt", "\n\n")}, "no samples"},
		{"boolq empty dataset", []string{model, "--task", "boolq", "--data", writeTemp(t, "empty.jsonl", "")}, "no examples"},
		{"imdb empty dataset", []string{model, "--task", "imdb", "--data", writeTemp(t, "empty.csv", "text,label\n")}, "no examples"},
		{"boolq without passage", []string{model, "--task", "boolq", "--data",
			writeTemp(t, "nopassage.jsonl", `{"question":"q","answer":true,"context":"c"}`)}, `line 1: no field "passage"`},
		{"ppl without logits", []string{noLogits, "--tokenizer", tok, "--data", text}, "no logits output (outputs: hidden)"},
		{"boolq without logits", []string{noLogits, "--tokenizer", tok, "--task", "boolq", "--data", boolq}, "no logits output"},
		{"ppl stream without logits", []string{noLogits, "--tokenizer", tok, "--mode", "stream", "--data", text}, "no logits output"},
		{"ppl tokenizer too large", []string{model, "--tokenizer", qwen, "--data", text}, "has 151669 tokens but the logits only 512"},
		{"imdb tokenizer too large", []string{model, "--tokenizer", qwen, "--task", "imdb", "--data",
			writeTemp(t, "i.csv", "text,label\nGood.,pos\n")}, "but the logits only 512"},
		{"stream shorter than a chunk", []string{model, "--mode", "chunks", "--data", writeTemp(t, "short.txt", "Hi.")}, "too few for one chunk"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, _, errs := runCLI(t, append([]string{"eval", "--threads", "1"}, c.args...)...)
			if code != 1 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) {
				t.Errorf("exit %d, stderr %q; want exit 1 and one line containing %q", code, errs, c.want)
			}
		})
	}
	code, _, errs := runCLI(t, "eval", model, "--task", "boolq")
	if code != 2 || !strings.Contains(errs, "--data FILE is required") {
		t.Errorf("boolq without --data: exit %d, %q", code, errs)
	}
}
