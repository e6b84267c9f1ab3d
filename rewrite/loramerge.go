package rewrite

import (
	"fmt"

	"github.com/onnxprune/onnxprune/graph"
)

// MergeLoRA folds one trained adapter into its weight: W_eff' = W_eff +
// scale·(B·A)ᵀ for the effective [In, Out] weight (scale = α/r), computed
// in float64 and stored in the initializer's own type and layout (a Gemm
// alpha divides the update, since the node multiplies W by it). A is
// [Rank, In] and B [Out, Rank], row-major. m gains no node: merge into the
// model without the LoRA branches (the pruned model), not into the output
// of InsertLoRA.
func MergeLoRA(m *graph.Model, a LoRAAdapter, rank int, scale float64, A, B []float64) error {
	if rank <= 0 || len(A) != rank*a.In || len(B) != a.Out*rank {
		return fmt.Errorf("lora merge %s: A has %d values, B %d; want %d×%d and %d×%d", a.Name, len(A), len(B), rank, a.In, a.Out, rank)
	}
	t := m.Initializer(a.Weight)
	if t == nil {
		return fmt.Errorf("lora merge %s: no initializer %q in the model", a.Name, a.Weight)
	}
	dims := t.GetDims()
	wantDims := []int64{int64(a.In), int64(a.Out)}
	if a.OutMajor {
		wantDims = []int64{int64(a.Out), int64(a.In)}
	}
	if len(dims) != 2 || dims[0] != wantDims[0] || dims[1] != wantDims[1] {
		return fmt.Errorf("lora merge %s: weight %q is %v, want %v", a.Name, a.Weight, dims, wantDims)
	}
	W, err := floatValues(m, t)
	if err != nil {
		return fmt.Errorf("lora merge %s: %w", a.Name, err)
	}
	ga := a.GemmAlpha
	if ga == 0 {
		ga = 1
	}
	s := scale / ga
	for o := range a.Out {
		brow := B[o*rank : (o+1)*rank]
		for i := range a.In {
			var d float64
			for k, b := range brow {
				d += b * A[k*a.In+i]
			}
			if a.OutMajor {
				W[o*a.In+i] += s * d
			} else {
				W[i*a.Out+o] += s * d
			}
		}
	}
	raw, err := encodeFloats(W, t.GetDataType())
	if err != nil {
		return fmt.Errorf("lora merge %s: %w", a.Name, err)
	}
	setRaw(t, raw, dims)
	return nil
}
