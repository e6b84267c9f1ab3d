package calib

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAccumulatorMatchesDirect compares the streamed statistics with a
// direct computation written out per definition, on random states with
// padding, split over two batches.
func TestAccumulatorMatchesDirect(t *testing.T) {
	const L, H, seq = 4, 6, 5
	rng := rand.New(rand.NewPCG(1, 2))
	type sample struct {
		h    [][][]float64 // [boundary][token][hidden]
		real int           // real tokens (right padding after)
	}
	var samples []sample
	for _, real := range []int{5, 3, 1, 4} {
		s := sample{real: real, h: make([][][]float64, L+1)}
		for l := range L + 1 {
			for range seq {
				v := make([]float64, H)
				for k := range v {
					v[k] = rng.NormFloat64() + float64(l)*0.3
				}
				s.h[l] = append(s.h[l], v)
			}
		}
		samples = append(samples, s)
	}

	acc := NewAccumulator(L, H)
	for _, batch := range [][]sample{samples[:2], samples[2:]} {
		states := make([][]float32, L+1)
		var mask []int64
		for _, s := range batch {
			for tk := range seq {
				m := int64(0)
				if tk < s.real {
					m = 1
				}
				mask = append(mask, m)
			}
			for l := range L + 1 {
				for tk := range seq {
					for _, x := range s.h[l][tk] {
						states[l] = append(states[l], float32(x))
					}
				}
			}
		}
		if err := acc.Add(states, mask, len(batch), seq); err != nil {
			t.Fatal(err)
		}
	}
	got, err := acc.Stats()
	if err != nil {
		t.Fatal(err)
	}

	f32 := func(v []float64) []float64 { // the accumulator saw float32
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(float32(x))
		}
		return out
	}
	cos := func(u, v []float64) float64 {
		u, v = f32(u), f32(v)
		var d, a, b float64
		for i := range u {
			d += u[i] * v[i]
			a += u[i] * u[i]
			b += v[i] * v[i]
		}
		return d / math.Sqrt(a*b)
	}
	near := func(what string, g, w float64) {
		if math.Abs(g-w) > 1e-12 {
			t.Errorf("%s = %.15g, want %.15g", what, g, w)
		}
	}
	for l := range L {
		for n := 1; l+n <= L; n++ {
			var last, all float64
			var tokens int
			for _, s := range samples {
				last += math.Acos(cos(s.h[l][s.real-1], s.h[l+n][s.real-1])) / math.Pi
				for tk := range s.real {
					all += math.Acos(cos(s.h[l][tk], s.h[l+n][tk])) / math.Pi
					tokens++
				}
			}
			near("d_last", got.Distance(l, n, false), last/float64(len(samples)))
			near("d_all", got.Distance(l, n, true), all/float64(tokens))
		}
		var c float64
		var tokens int
		mean := [2][]float64{make([]float64, H), make([]float64, H)}
		for _, s := range samples {
			for tk := range s.real {
				c += cos(s.h[l][tk], s.h[l+1][tk])
				tokens++
				for k := range H {
					mean[0][k] += float64(float32(s.h[l][tk][k]))
					mean[1][k] += float64(float32(s.h[l+1][tk][k]))
				}
			}
		}
		near("BI", got.BlockInfluence[l], 1-c/float64(tokens))
		var d, a, b float64
		for k := range H {
			d += mean[0][k] * mean[1][k]
			a += mean[0][k] * mean[0][k]
			b += mean[1][k] * mean[1][k]
		}
		near("mean cosine", got.MeanCosine[l], d/math.Sqrt(a*b))
	}
	if got.Samples != 4 || got.Tokens != 13 {
		t.Errorf("samples %d tokens %d, want 4 and 13 (pads excluded)", got.Samples, got.Tokens)
	}
}

func TestAccumulatorRejectsAllPadding(t *testing.T) {
	acc := NewAccumulator(1, 2)
	if err := acc.Add([][]float32{{1, 2}, {3, 4}}, []int64{0}, 1, 1); err != nil {
		t.Fatal(err)
	}
	if _, err := acc.Stats(); err == nil {
		t.Fatal("statistics from padding only")
	}
}
