package eval

import (
	"fmt"
	"math"
)

// NLL accumulates next-token negative log-likelihood in float64.
type NLL struct {
	Sum    float64
	Tokens int64
}

// Add scores the logits of one batch: position t of a row predicts token
// t+1, and is scored only when both are real (mask 1) and t ≥ from (to
// skip context already scored by an earlier window). logits are
// [batch, seq, vocab] row-major.
func (n *NLL) Add(logits []float32, ids, mask []int64, batch, seq, vocab, from int) error {
	if len(logits) != batch*seq*vocab {
		return fmt.Errorf("eval: %d logits for batch %d × seq %d × vocab %d", len(logits), batch, seq, vocab)
	}
	for b := range batch {
		for t := max(from, 0); t+1 < seq; t++ {
			if mask[b*seq+t] == 0 || mask[b*seq+t+1] == 0 {
				continue
			}
			target := ids[b*seq+t+1]
			if target < 0 || int(target) >= vocab {
				return fmt.Errorf("eval: token id %d outside the model's vocabulary of %d", target, vocab)
			}
			row := logits[(b*seq+t)*vocab : (b*seq+t+1)*vocab]
			n.Sum += logSumExp(row) - float64(row[target])
			n.Tokens++
		}
	}
	return nil
}

// Perplexity is exp(mean NLL).
func (n *NLL) Perplexity() float64 {
	if n.Tokens == 0 {
		return math.NaN()
	}
	return math.Exp(n.Sum / float64(n.Tokens))
}

// logSumExp of a row, in float64 and shifted by the maximum so large
// logits cannot overflow.
func logSumExp(row []float32) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		m = max(m, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - m)
	}
	return m + math.Log(s)
}
