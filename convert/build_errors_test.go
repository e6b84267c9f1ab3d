package convert_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
)

// edited is a checkpoint with its config or tensor list changed.
type edited struct {
	convert.Checkpoint
	cfg     func(*convert.Config)
	tensors func([]convert.Tensor) []convert.Tensor
}

func (e edited) Config() convert.Config {
	c := e.Checkpoint.Config()
	if e.cfg != nil {
		e.cfg(&c)
	}
	return c
}

func (e edited) Tensors() []convert.Tensor {
	ts := e.Checkpoint.Tensors()
	if e.tensors != nil {
		ts = e.tensors(ts)
	}
	return ts
}

func tinyLlama() convert.Checkpoint {
	return convert.Synthetic(convert.Config{Family: convert.FamilyLlama, Layers: 2, Hidden: 16, Heads: 2, KVHeads: 1,
		FFN: 24, Vocab: 32, TiedEmbeddings: true, BOS: 1, EOS: 2}, 1)
}

func withTensor(name string, f func(*convert.Tensor)) func([]convert.Tensor) []convert.Tensor {
	return func(ts []convert.Tensor) []convert.Tensor {
		for i := range ts {
			if ts[i].Name == name {
				f(&ts[i])
			}
		}
		return ts
	}
}

// failAt makes the n-th tensor's Read fail, after the earlier ones were
// written: a failure in the middle of the output.
func failAt(n int) func([]convert.Tensor) []convert.Tensor {
	return func(ts []convert.Tensor) []convert.Tensor {
		ts[n].Read = func() ([]float32, error) { return nil, errors.New("disk on fire") }
		return ts
	}
}

// TestBuildErrors checks that bad input gives one error line naming the
// problem and leaves no file behind — not even temporary ones — while
// files already in the directory stay as they were.
func TestBuildErrors(t *testing.T) {
	up := "model.layers.1.mlp.up_proj.weight"
	for _, tc := range []struct {
		name   string
		ck     convert.Checkpoint
		opts   convert.BuildOptions
		out    func(dir string) string // the model path; default dir/model.onnx
		root   bool                    // the case cannot happen as root
		errHas []string
	}{
		{name: "missing tensor", ck: edited{Checkpoint: tinyLlama(), tensors: func(ts []convert.Tensor) []convert.Tensor {
			return slices.DeleteFunc(ts, func(t convert.Tensor) bool { return t.Name == up })
		}}, errHas: []string{"missing tensor", up}},
		{name: "shape mismatch", ck: edited{Checkpoint: tinyLlama(), tensors: withTensor(up, func(t *convert.Tensor) { t.Shape = []int64{25, 16} })},
			errHas: []string{up, "shape [25 16]", "intermediate_size=24"}},
		{name: "config disagrees", ck: edited{Checkpoint: tinyLlama(), cfg: func(c *convert.Config) { c.FFN = 30 }},
			errHas: []string{"shape [24 16]", "intermediate_size=30"}},
		{name: "unknown tensor", ck: edited{Checkpoint: tinyLlama(), tensors: func(ts []convert.Tensor) []convert.Tensor {
			return append(ts, convert.Tensor{Name: "model.layers.0.self_attn.qkv_proj.weight", Shape: []int64{32, 16}})
		}}, errHas: []string{"unknown tensor", "qkv_proj"}},
		{name: "layer beyond config", ck: edited{Checkpoint: tinyLlama(), tensors: func(ts []convert.Tensor) []convert.Tensor {
			return append(ts, convert.Tensor{Name: "model.layers.2.mlp.up_proj.weight", Shape: []int64{24, 16}})
		}}, errHas: []string{"layer 2", "2 layers"}},
		{name: "untied head given to tied config", ck: edited{Checkpoint: tinyLlama(), tensors: func(ts []convert.Tensor) []convert.Tensor {
			return append(ts, convert.Tensor{Name: "lm_head.weight", Shape: []int64{32, 16}})
		}}, errHas: []string{"lm_head.weight", "ties"}},
		{name: "duplicate tensor", ck: edited{Checkpoint: tinyLlama(), tensors: func(ts []convert.Tensor) []convert.Tensor {
			return append(ts, ts[3])
		}}, errHas: []string{"twice"}},
		{name: "invalid config", ck: edited{Checkpoint: tinyLlama(), cfg: func(c *convert.Config) { c.KVHeads = 3 }},
			errHas: []string{"invalid config", "not a multiple"}},
		{name: "read fails mid-way", ck: edited{Checkpoint: tinyLlama(), tensors: failAt(10)},
			errHas: []string{"disk on fire", "model.onnx"}},
		{name: "read fails mid-way, external data", ck: edited{Checkpoint: tinyLlama(), tensors: failAt(10)},
			opts: convert.BuildOptions{ExternalAbove: 1}, errHas: []string{"disk on fire"}},
		{name: "read returns too few values", ck: edited{Checkpoint: tinyLlama(), tensors: withTensor(up, func(t *convert.Tensor) {
			t.Read = func() ([]float32, error) { return make([]float32, 10), nil }
		})}, errHas: []string{up, "read 10 values"}},
		{name: "output directory missing", ck: tinyLlama(), out: func(dir string) string { return filepath.Join(dir, "nope", "model.onnx") },
			errHas: []string{"does not exist"}},
		{name: "output directory is a file", ck: tinyLlama(), out: func(dir string) string {
			os.WriteFile(filepath.Join(dir, "file"), nil, 0o644)
			return filepath.Join(dir, "file", "model.onnx")
		}, errHas: []string{"not a directory"}},
		{name: "output directory not writable", ck: tinyLlama(), root: true, out: func(dir string) string {
			sub := filepath.Join(dir, "ro")
			os.Mkdir(sub, 0o555)
			return filepath.Join(sub, "model.onnx")
		}, errHas: []string{"permission denied"}},
		{name: "tokenizer missing", ck: tinyLlama(), opts: convert.BuildOptions{TokenizerFiles: []string{"/nonexistent/tokenizer.json"}},
			errHas: []string{"tokenizer", "/nonexistent/tokenizer.json"}},
		{name: "tokenizer named like an output", ck: tinyLlama(), opts: convert.BuildOptions{TokenizerFiles: []string{"../testdata/config.json"}},
			errHas: []string{"overwrite", "config.json"}},
		{name: "bad dtype", ck: tinyLlama(), opts: convert.BuildOptions{DType: "int4"}, errHas: []string{"int4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() == 0 {
				t.Skip("root can write anywhere")
			}
			dir := t.TempDir()
			// A model from an earlier run must survive a failed build.
			old := filepath.Join(dir, "model.onnx")
			if err := os.WriteFile(old, []byte("old model"), 0o644); err != nil {
				t.Fatal(err)
			}
			before := listDir(t, dir)
			path := old
			if tc.out != nil {
				path = tc.out(dir)
				before = listDir(t, dir)
			}
			err := convert.Build(tc.ck, path, tc.opts)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") {
				t.Errorf("error is not one line: %q", msg)
			}
			for _, s := range tc.errHas {
				if !strings.Contains(msg, s) {
					t.Errorf("error %q does not mention %q", msg, s)
				}
			}
			if after := listDir(t, dir); !slices.Equal(before, after) {
				t.Errorf("files after the failed build: %v, before: %v", after, before)
			}
			if b, _ := os.ReadFile(old); string(b) != "old model" {
				t.Errorf("existing model.onnx changed")
			}
			t.Logf("%v", err)
		})
	}
}

// listDir lists every file under dir, hidden ones included.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return nil
	})
	return files
}
