package calib

import (
	"fmt"
	"math"
)

// Accumulator streams residual states into float64 sums.
type Accumulator struct {
	L, Hidden int
	// angLast[l][n] and angAll[l][n] sum arccos(cos(h_l, h_{l+n}))/π over
	// samples (last real token) and over all real tokens; n = 1 … L−l.
	angLast, angAll [][]float64
	// cosSum[i] sums cos(h_i, h_{i+1}) over real tokens (Block Influence).
	cosSum []float64
	// meanSum[l] sums h_l over real tokens.
	meanSum         [][]float64
	samples, tokens int64
}

// NewAccumulator prepares sums for L blocks (L+1 boundaries) of the given
// width.
func NewAccumulator(L, hidden int) *Accumulator {
	a := &Accumulator{L: L, Hidden: hidden, cosSum: make([]float64, L)}
	a.angLast = make([][]float64, L)
	a.angAll = make([][]float64, L)
	for l := range L {
		a.angLast[l] = make([]float64, L-l+1)
		a.angAll[l] = make([]float64, L-l+1)
	}
	a.meanSum = make([][]float64, L+1)
	for l := range a.meanSum {
		a.meanSum[l] = make([]float64, hidden)
	}
	return a
}

// Add folds in one batch. states[l] holds h_l for the batch, row-major
// [batch, seq, hidden]; mask is [batch, seq] with 1 for real tokens. The
// last real token of a row is its highest masked-in position, so left and
// right padding both work.
func (a *Accumulator) Add(states [][]float32, mask []int64, batch, seq int) error {
	if len(states) != a.L+1 {
		return fmt.Errorf("calib: %d boundary states, want %d", len(states), a.L+1)
	}
	H := a.Hidden
	for l, s := range states {
		if len(s) != batch*seq*H {
			return fmt.Errorf("calib: state h_%d has %d values, want %d×%d×%d", l, len(s), batch, seq, H)
		}
	}
	if len(mask) != batch*seq {
		return fmt.Errorf("calib: mask has %d values, want %d×%d", len(mask), batch, seq)
	}
	norms := make([]float64, a.L+1)
	for b := range batch {
		last := -1
		for t := range seq {
			if mask[b*seq+t] != 0 {
				last = t
			}
		}
		if last < 0 {
			continue // an all-padding row says nothing
		}
		a.samples++
		for t := range seq {
			if mask[b*seq+t] == 0 {
				continue
			}
			a.tokens++
			off := (b*seq + t) * H
			for l := range a.L + 1 {
				v := states[l][off : off+H]
				var ss float64
				m := a.meanSum[l]
				for k, x := range v {
					ss += float64(x) * float64(x)
					m[k] += float64(x)
				}
				norms[l] = math.Sqrt(ss)
			}
			for l := range a.L {
				u := states[l][off : off+H]
				for n := 1; l+n <= a.L; n++ {
					c := cosine(u, states[l+n][off:off+H], norms[l], norms[l+n])
					d := math.Acos(c) / math.Pi
					a.angAll[l][n] += d
					if t == last {
						a.angLast[l][n] += d
					}
					if n == 1 {
						a.cosSum[l] += c
					}
				}
			}
		}
	}
	return nil
}

// cosine of two vectors given their norms, clamped to [-1, 1] so rounding
// cannot push arccos out of its domain. A zero vector has cosine 1 with
// itself and 0 with anything else.
func cosine(u, v []float32, nu, nv float64) float64 {
	if nu == 0 || nv == 0 {
		if nu == nv {
			return 1
		}
		return 0
	}
	var dot float64
	for k := range u {
		dot += float64(u[k]) * float64(v[k])
	}
	return max(-1, min(1, dot/(nu*nv)))
}

// Stats are the finished statistics (see Accumulator for definitions).
type Stats struct {
	Layers  int   `json:"layers"`
	Hidden  int   `json:"hidden"`
	Samples int64 `json:"samples"`
	Tokens  int64 `json:"tokens"`
	// Angular[l][n-1] = d(l, n) at the last real token; AngularAll over
	// all real tokens. Row l has L−l entries (n = 1 … L−l).
	Angular    [][]float64 `json:"angular_last_token"`
	AngularAll [][]float64 `json:"angular_all_tokens"`
	// BlockInfluence[i] = 1 − E_tokens[cos(h_i, h_{i+1})].
	BlockInfluence []float64 `json:"block_influence"`
	// MeanCosine[i] = cos(mean h_i, mean h_{i+1}), the statistic of the
	// original thesis, kept for comparison.
	MeanCosine []float64 `json:"mean_cosine"`
}

// Stats finishes the averages. It fails when no real token was seen.
func (a *Accumulator) Stats() (*Stats, error) {
	if a.tokens == 0 {
		return nil, fmt.Errorf("calib: no real (unpadded) tokens were measured")
	}
	s := &Stats{Layers: a.L, Hidden: a.Hidden, Samples: a.samples, Tokens: a.tokens}
	for l := range a.L {
		last := make([]float64, a.L-l)
		all := make([]float64, a.L-l)
		for n := 1; l+n <= a.L; n++ {
			last[n-1] = a.angLast[l][n] / float64(a.samples)
			all[n-1] = a.angAll[l][n] / float64(a.tokens)
		}
		s.Angular = append(s.Angular, last)
		s.AngularAll = append(s.AngularAll, all)
		s.BlockInfluence = append(s.BlockInfluence, 1-a.cosSum[l]/float64(a.tokens))
	}
	norm := func(v []float64) float64 {
		var ss float64
		for _, x := range v {
			ss += x * x
		}
		return math.Sqrt(ss)
	}
	for l := range a.L {
		u, v := a.meanSum[l], a.meanSum[l+1]
		var dot float64
		for k := range u {
			dot += u[k] * v[k]
		}
		nu, nv := norm(u), norm(v)
		c := 0.0
		if nu > 0 && nv > 0 {
			c = dot / (nu * nv)
		}
		s.MeanCosine = append(s.MeanCosine, c)
	}
	return s, nil
}

// Distance returns d(l, n) at the last token (allTokens false) or over
// all tokens.
func (s *Stats) Distance(l, n int, allTokens bool) float64 {
	if allTokens {
		return s.AngularAll[l][n-1]
	}
	return s.Angular[l][n-1]
}
