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
	// Per token, each boundary state is converted to float64 and
	// normalized once; every pair's cosine is then a plain dot product.
	unit := make([][]float64, a.L+1)
	for l := range unit {
		unit[l] = make([]float64, H)
	}
	zero := make([]bool, a.L+1)
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
				u, m := unit[l], a.meanSum[l]
				var ss float64
				for k, x := range states[l][off : off+H] {
					v := float64(x)
					u[k] = v
					m[k] += v
					ss += v * v
				}
				zero[l] = ss == 0
				if !zero[l] {
					inv := 1 / math.Sqrt(ss)
					for k := range u {
						u[k] *= inv
					}
				}
			}
			for l := range a.L {
				for n := 1; l+n <= a.L; n++ {
					c := unitCosine(unit[l], unit[l+n], zero[l], zero[l+n])
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

// unitCosine is the cosine of two unit vectors, clamped to [-1, 1] so
// rounding cannot push arccos out of its domain. A zero vector has cosine
// 1 with another zero vector and 0 with anything else.
func unitCosine(u, v []float64, zu, zv bool) float64 {
	if zu || zv {
		if zu == zv {
			return 1
		}
		return 0
	}
	v = v[:len(u)]
	var dot float64
	for k, x := range u {
		dot += x * v[k]
	}
	return max(-1, min(1, dot))
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
