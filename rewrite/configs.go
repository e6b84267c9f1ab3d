package rewrite

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/onnxprune/onnxprune/internal/atomicfile"
)

// SidecarFiles are copied next to a rewritten model as they are: the
// tokenizer and generation settings do not depend on the layer count.
var SidecarFiles = []string{
	"tokenizer.json", "tokenizer.model", "tokenizer.bin", "tokenizer_config.json",
	"special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt",
}

// WriteSidecars writes the files that describe a model with only the kept
// blocks (old indices, ascending) of L: config.json (num_hidden_layers or
// GPT-2's n_layer, layer_types) and genai_config.json
// (model.decoder.num_hidden_layers, sliding_window.layers renumbered) are
// updated; tokenizer files are copied. Files the source directory lacks
// are skipped. It returns the names written.
func WriteSidecars(srcDir, dstDir string, L int, kept []int) ([]string, error) {
	same, err := sameDir(srcDir, dstDir)
	if err != nil {
		return nil, err
	}
	if same {
		return nil, fmt.Errorf("rewrite: output directory %s is the model's own: its config files would be overwritten", dstDir)
	}
	newIdx := map[int]int{}
	for i, k := range kept {
		newIdx[k] = i
	}
	var written []string
	if ok, err := updateJSON(filepath.Join(srcDir, "config.json"), filepath.Join(dstDir, "config.json"), func(c map[string]any) error {
		for _, key := range []string{"num_hidden_layers", "n_layer"} {
			if _, has := c[key]; has {
				c[key] = len(kept)
			}
		}
		if lt, ok := c["layer_types"].([]any); ok {
			if len(lt) != L {
				return fmt.Errorf("layer_types has %d entries for %d layers", len(lt), L)
			}
			var out []any
			for _, k := range kept {
				out = append(out, lt[k])
			}
			c["layer_types"] = out
		}
		return nil
	}); err != nil {
		return written, err
	} else if ok {
		written = append(written, "config.json")
	}
	if ok, err := updateJSON(filepath.Join(srcDir, "genai_config.json"), filepath.Join(dstDir, "genai_config.json"), func(c map[string]any) error {
		model, _ := c["model"].(map[string]any)
		dec, _ := model["decoder"].(map[string]any)
		if dec == nil {
			return fmt.Errorf("no model.decoder section")
		}
		dec["num_hidden_layers"] = len(kept)
		if sw, ok := dec["sliding_window"].(map[string]any); ok {
			if layers, ok := sw["layers"].([]any); ok {
				var out []any
				for _, l := range layers {
					if f, ok := l.(float64); ok {
						if n, kept := newIdx[int(f)]; kept {
							out = append(out, n)
						}
					}
				}
				sw["layers"] = out
			}
		}
		return nil
	}); err != nil {
		return written, err
	} else if ok {
		written = append(written, "genai_config.json")
	}
	entries, _ := os.ReadDir(srcDir)
	for _, e := range entries {
		name := e.Name()
		isTok := slices.Contains(SidecarFiles, name) || (filepath.Ext(name) == ".bin" && len(name) > 3 && name[:3] == "tok")
		if !isTok || e.IsDir() {
			continue
		}
		if err := copyFile(filepath.Join(srcDir, name), filepath.Join(dstDir, name)); err != nil {
			return written, err
		}
		written = append(written, name)
	}
	return written, nil
}

func sameDir(a, b string) (bool, error) {
	ai, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("rewrite: %w", err)
	}
	bi, err := os.Stat(b)
	if err != nil {
		return false, fmt.Errorf("rewrite: %w", err)
	}
	return os.SameFile(ai, bi), nil
}

// updateJSON rewrites a JSON object file through edit, atomically; false
// when src does not exist.
func updateJSON(src, dst string, edit func(map[string]any) error) (bool, error) {
	b, err := os.ReadFile(src)
	if os.IsNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("rewrite: %w", err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		return false, fmt.Errorf("rewrite: %s: %v", src, err)
	}
	if err := edit(c); err != nil {
		return false, fmt.Errorf("rewrite: %s: %w", src, err)
	}
	out, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return false, err
	}
	return true, atomicfile.Write(dst, append(out, '\n'))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("rewrite: %w", err)
	}
	defer in.Close()
	if err := atomicfile.Copy(dst, func(w io.Writer) error { _, err := io.Copy(w, in); return err }); err != nil {
		return fmt.Errorf("rewrite: %w", err)
	}
	return nil
}
