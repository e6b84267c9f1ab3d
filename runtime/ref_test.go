package runtime_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// TestReferenceFixtures runs every testdata/models/*.ref.json through
// onnxruntime and compares each listed output with the values PyTorch
// computed, at the file's atol. It runs each model both unoptimised and at
// the default (extended) level, whose fusions must not change results
// beyond the tolerance.
func TestReferenceFixtures(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := testenv.Testdata(t, "models")
	files, err := reffile.Glob(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		msg := "no reference files (*.ref.json) in " + dir
		if testenv.InCI() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".ref.json"), func(t *testing.T) {
			ref, err := reffile.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, level := range []ort.OptLevel{ort.OptDisabled, ort.OptDefault} {
				t.Run(level.String(), func(t *testing.T) {
					checkReference(t, ref, ort.Options{OptLevel: level})
				})
			}
		})
	}
}

func checkReference(t *testing.T, ref *reffile.File, opts ort.Options) {
	s, err := ort.NewSession(ref.ModelPath(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range ref.Cases {
		inputs, err := c.RuntimeInputs()
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Run(inputs, c.OutputNames())
		if err != nil {
			t.Fatalf("case %s: %v", c.Name, err)
		}
		worst := 0.0
		for _, name := range c.OutputNames() {
			d, err := reffile.Compare(got[name], c.Outputs[name], ref.Atol)
			if err != nil {
				t.Errorf("case %s, output %s: %v", c.Name, name, err)
			}
			worst = max(worst, d)
		}
		t.Logf("case %s: %d outputs, max abs diff %.3g (atol %g)", c.Name, len(c.Outputs), worst, ref.Atol)
	}
}
