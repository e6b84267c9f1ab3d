package runtime_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

func decoderFor(t *testing.T, file string) *ort.Decoder {
	t.Helper()
	testenv.ORTLibrary(t)
	s, err := ort.NewSession(filepath.Join(testenv.ModuleRoot(t), "testdata", "models", file), ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	d, err := ort.NewDecoder(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestGenerateCacheEqualsRecompute: greedy decoding through the KV cache
// gives the same tokens as recomputing the whole sequence every step.
func TestGenerateCacheEqualsRecompute(t *testing.T) {
	for _, file := range []string{"stories260k_kv.onnx", "gpt2_kv.onnx"} {
		d := decoderFor(t, file)
		if len(d.KV) == 0 {
			t.Fatalf("%s: no KV inputs found", file)
		}
		prompt := []int{1, 403, 407}
		cached, err := d.Generate(context.Background(), prompt, ort.GenerateOptions{MaxTokens: 64})
		if err != nil {
			t.Fatal(err)
		}
		full, err := d.Generate(context.Background(), prompt, ort.GenerateOptions{MaxTokens: 64, NoCache: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(cached) != 64 || !slices.Equal(cached, full) {
			t.Fatalf("%s: with cache %v\nwithout %v", file, cached, full)
		}
	}
}

func TestGenerateSamplingIsSeeded(t *testing.T) {
	d := decoderFor(t, "stories260k_kv.onnx")
	gen := func(seed uint64) []int {
		out, err := d.Generate(context.Background(), []int{1}, ort.GenerateOptions{MaxTokens: 20, Temperature: 1, TopP: 0.9, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	a, b, c := gen(7), gen(7), gen(8)
	if !slices.Equal(a, b) {
		t.Fatalf("same seed, different tokens: %v vs %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatalf("seeds 7 and 8 gave the same 20 sampled tokens: %v", a)
	}
	stop, err := d.Generate(context.Background(), []int{1}, ort.GenerateOptions{MaxTokens: 50, Stop: []int{a[0]}, Temperature: 1, TopP: 0.9, Seed: 7})
	if err != nil || len(stop) != 0 {
		t.Fatalf("stop token not honoured: %v %v", stop, err)
	}
}
