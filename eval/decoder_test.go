package eval_test

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/internal/reffile"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// TestScoreBatchMatchesTorchLogits scores the reference batch (one row
// left-padded) through onnxruntime and compares with the NLL computed
// directly from PyTorch's logits for the same ids.
func TestScoreBatchMatchesTorchLogits(t *testing.T) {
	testenv.ORTLibrary(t)
	ref, err := reffile.Load(filepath.Join("..", "testdata", "models", "stories260k.ref.json"))
	if err != nil {
		t.Fatal(err)
	}
	var c reffile.Case
	for _, cs := range ref.Cases {
		if cs.Name == "batch2" {
			c = cs
		}
	}
	ids, _ := c.Inputs["input_ids"].Int64s()
	mask, _ := c.Inputs["attention_mask"].Int64s()
	pos, _ := c.Inputs["position_ids"].Int64s()
	logits, _ := c.Outputs["logits"].Float64s()
	batch, seq := int(c.Inputs["input_ids"].Shape[0]), int(c.Inputs["input_ids"].Shape[1])
	V := int(c.Outputs["logits"].Shape[2])

	var want float64
	var tokens int64
	for b := range batch {
		for t := 0; t+1 < seq; t++ {
			if mask[b*seq+t] == 0 || mask[b*seq+t+1] == 0 {
				continue
			}
			row := logits[(b*seq+t)*V : (b*seq+t+1)*V]
			var z float64
			for _, v := range row {
				z += math.Exp(v)
			}
			want += math.Log(z) - row[ids[b*seq+t+1]]
			tokens++
		}
	}

	sess, err := ort.NewSession(ref.ModelPath(), ort.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	dec, err := ort.NewDecoder(sess)
	if err != nil {
		t.Fatal(err)
	}
	var n eval.NLL
	if err := eval.ScoreBatch(dec, ids, mask, pos, batch, seq, 0, &n); err != nil {
		t.Fatal(err)
	}
	if n.Tokens != tokens || math.Abs(n.Sum-want)/float64(tokens) > 1e-4 {
		t.Fatalf("NLL %.6f over %d tokens, PyTorch logits give %.6f over %d", n.Sum, n.Tokens, want, tokens)
	}
}
