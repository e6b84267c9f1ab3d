package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
)

// publishedStory is the greedy sample llama2.c's run.c prints for
// stories260K, as doc/stories260K.md publishes it.
func publishedStory(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.SharedDir(t), "models", "stories260K", "stories260K.md"))
	if err != nil {
		t.Fatal(err)
	}
	md := string(b)
	i := strings.Index(md, "-t 0.0\n")
	if i < 0 {
		t.Fatal("stories260K.md: no greedy sample found")
	}
	sample := md[i+len("-t 0.0\n"):]
	return sample[:strings.Index(sample, "```")]
}

// checkPublishedGeneration runs `generate` greedily from BOS for 200
// tokens and checks the text is the start of the published sample.
func checkPublishedGeneration(t *testing.T, model, tokenizer string) {
	t.Helper()
	want := publishedStory(t)
	code, out, errs := runCLI(t, "generate", model, "--tokenizer", tokenizer, "--max-tokens", "200", "--json", "--threads", "1")
	if code != 0 {
		t.Fatalf("generate: exit %d: %s", code, errs)
	}
	var res struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.IDs) != 200 || !strings.HasPrefix(want, res.Text) {
		t.Fatalf("%d tokens:\n%q\nis not the start of the published sample\n%q", len(res.IDs), res.Text, want)
	}
}

func TestGeneratePublishedSampleTorchFixture(t *testing.T) {
	testenv.ORTLibrary(t)
	checkPublishedGeneration(t, fixture("stories260k_kv.onnx"), fixture("tok512.bin"))
}
