package eval

import (
	"math"
	"testing"
)

// TestNLLByHand: two rows, vocabulary 3; the second row is padded after
// two tokens, so it contributes one prediction.
func TestNLLByHand(t *testing.T) {
	logits := []float32{
		0, 0, 0 /**/, 1, 2, 3 /**/, 9, 9, 9, // row 0
		2, 0, 0 /**/, 5, 5, 5 /**/, 7, 7, 7, // row 1 (t=1 predicts a pad)
	}
	ids := []int64{0, 1, 2, 0, 0, 0}
	mask := []int64{1, 1, 1, 1, 1, 0}
	var n NLL
	if err := n.Add(logits, ids, mask, 2, 3, 3, 0); err != nil {
		t.Fatal(err)
	}
	// Row 0: -log softmax([0,0,0])[1] = log 3; -log softmax([1,2,3])[2] = log(e+e²+e³) − 3.
	// Row 1: -log softmax([2,0,0])[0] = log(e²+2) − 2.
	want := math.Log(3) + math.Log(math.E+math.Exp(2)+math.Exp(3)) - 3 + math.Log(math.Exp(2)+2) - 2
	if n.Tokens != 3 || math.Abs(n.Sum-want) > 1e-12 {
		t.Fatalf("NLL = %.15g over %d tokens, want %.15g over 3", n.Sum, n.Tokens, want)
	}
	if math.Abs(n.Perplexity()-math.Exp(want/3)) > 1e-12 {
		t.Fatal("perplexity is not exp(mean NLL)")
	}
	// from=1 skips the first prediction of each row.
	var m NLL
	m.Add(logits, ids, mask, 2, 3, 3, 1)
	if m.Tokens != 1 {
		t.Fatalf("from=1 scored %d tokens, want 1", m.Tokens)
	}
	if err := m.Add(logits, []int64{0, 5, 0, 0, 0, 0}, mask, 2, 3, 3, 0); err == nil {
		t.Fatal("accepted a token id outside the vocabulary")
	}
	// Huge logits do not overflow.
	var h NLL
	h.Add([]float32{1e30, 0, 1e30, 0}, []int64{0, 0}, []int64{1, 1}, 1, 2, 2, 0)
	if math.IsNaN(h.Sum) || math.IsInf(h.Sum, 0) {
		t.Fatalf("overflow: %g", h.Sum)
	}
}
