package rewrite_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/onnxprune/onnxprune/rewrite"
)

func TestWriteSidecars(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"architectures":["Qwen2ForCausalLM"],"num_hidden_layers":4,
		"layer_types":["full_attention","sliding_attention","full_attention","sliding_attention"]}`), 0o644)
	os.WriteFile(filepath.Join(src, "genai_config.json"), []byte(`{"model":{"decoder":{"num_hidden_layers":4,
		"sliding_window":{"window_size":8,"layers":[1,3]}}}}`), 0o644)
	os.WriteFile(filepath.Join(src, "tokenizer.json"), []byte(`{}`), 0o644)
	os.WriteFile(filepath.Join(src, "tok512.bin"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(src, "model.onnx"), []byte("not copied"), 0o644)

	// Keep old blocks 0, 2, 3 (block 1 removed).
	written, err := rewrite.WriteSidecars(src, dst, 4, []int{0, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 4 {
		t.Fatalf("wrote %v", written)
	}
	var cfg, genai map[string]any
	b, _ := os.ReadFile(filepath.Join(dst, "config.json"))
	json.Unmarshal(b, &cfg)
	b, _ = os.ReadFile(filepath.Join(dst, "genai_config.json"))
	json.Unmarshal(b, &genai)
	if cfg["num_hidden_layers"] != 3.0 ||
		!reflect.DeepEqual(cfg["layer_types"], []any{"full_attention", "full_attention", "sliding_attention"}) {
		t.Errorf("config.json: %v", cfg)
	}
	dec := genai["model"].(map[string]any)["decoder"].(map[string]any)
	// Old layer 3 (sliding) is new layer 2; old layer 1 is gone.
	if dec["num_hidden_layers"] != 3.0 || !reflect.DeepEqual(dec["sliding_window"].(map[string]any)["layers"], []any{2.0}) {
		t.Errorf("genai_config.json: %v", dec)
	}
	if _, err := os.Stat(filepath.Join(dst, "model.onnx")); err == nil {
		t.Error("copied the model as a sidecar")
	}
	if _, err := rewrite.WriteSidecars(src, src, 4, []int{0}); err == nil {
		t.Error("wrote sidecars over the model's own")
	}
}
