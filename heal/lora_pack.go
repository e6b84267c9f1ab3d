package heal

import (
	"fmt"
	"math/rand/v2"
)

// Packed is a token stream cut into training rows: the tokenized samples
// (each BOS first) concatenated, row r holding Stream[r·SeqLen :
// (r+1)·SeqLen] and predicting the token after each position, so no
// position is padding and every position whose next token exists is a
// target.
type Packed struct {
	Stream []int
	SeqLen int
	Rows   int
}

// Pack concatenates seqs into rows of seqLen tokens. The stream keeps one
// token beyond the last full row as its last target.
func Pack(seqs [][]int, seqLen int) *Packed {
	p := &Packed{SeqLen: seqLen}
	for _, s := range seqs {
		p.Stream = append(p.Stream, s...)
	}
	if len(p.Stream) > 1 {
		p.Rows = (len(p.Stream) - 1) / seqLen
	}
	return p
}

// Batch fills ids, labels and weights ([len(rows), SeqLen]) for the rows.
func (p *Packed) Batch(rows []int, ids, labels []int64, weights []float32) {
	S := p.SeqLen
	for b, r := range rows {
		o := r * S
		for t := range S {
			ids[b*S+t] = int64(p.Stream[o+t])
			labels[b*S+t] = int64(p.Stream[o+t+1])
			weights[b*S+t] = 1
		}
	}
}

// rowOrder returns the rows for micro-batch number mb of size batch: the
// rows in a seeded random order per epoch, epochs following each other.
type rowOrder struct {
	seed  uint64
	rows  int
	epoch int
	perm  []int
}

func (o *rowOrder) take(pos int64, n int) []int {
	out := make([]int, n)
	for i := range n {
		p := pos + int64(i)
		e := int(p / int64(o.rows))
		if o.perm == nil || e != o.epoch {
			o.epoch = e
			o.perm = rand.New(rand.NewPCG(o.seed, uint64(e)+1)).Perm(o.rows)
		}
		out[i] = o.perm[p%int64(o.rows)]
	}
	return out
}

func errSmallData(tokens, batch, seqLen int) error {
	return fmt.Errorf("lora: the training data holds %d tokens; one batch needs %d (%d rows × %d + 1): give more text or lower --batch-size/--seq-len", tokens, batch*seqLen+1, batch, seqLen)
}
