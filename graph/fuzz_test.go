package graph_test

import (
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
)

// FuzzParse feeds arbitrary bytes to the model parser. Whatever it accepts
// must also survive Check and Save without panicking. The seed corpus (a
// valid model, its truncations, the committed fixtures) runs with every
// `go test`.
func FuzzParse(f *testing.F) {
	good, _ := proto.Marshal(linear(8).Proto)
	f.Add(good)
	f.Add(good[:len(good)/3])
	f.Add([]byte{})
	f.Add([]byte("not a model\n"))
	fixtures, _ := filepath.Glob(filepath.Join("..", "testdata", "models", "*.onnx"))
	for _, p := range fixtures {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		m, err := graph.Parse(data, dir)
		if err != nil {
			return
		}
		_ = graph.Check(m)
		_ = graph.Save(m, filepath.Join(dir, "out.onnx"), graph.SaveOptions{})
	})
}
