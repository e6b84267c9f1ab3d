package eval

import (
	"fmt"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// ScoreBatch runs one padded batch through a decoder (empty KV cache) and
// adds its next-token NLL to n; positions before from are context only.
func ScoreBatch(dec *ort.Decoder, ids, mask, positions []int64, batch, seq, from int, n *NLL) error {
	if dec.Logits == "" {
		return fmt.Errorf("eval: the model has no logits output")
	}
	in, err := dec.Inputs(ids, mask, positions, batch, seq, nil)
	if err != nil {
		return err
	}
	out, err := dec.Session.Run(in, []string{dec.Logits})
	if err != nil {
		return err
	}
	lt := out[dec.Logits]
	if len(lt.Shape) != 3 || lt.Shape[0] != int64(batch) || lt.Shape[1] != int64(seq) {
		return fmt.Errorf("eval: logits have shape %v, want [%d, %d, vocab]", lt.Shape, batch, seq)
	}
	logits, err := lt.Float32s()
	if err != nil {
		return err
	}
	return n.Add(logits, ids, mask, batch, seq, int(lt.Shape[2]), from)
}
