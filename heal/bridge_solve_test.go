package heal

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestSolveSPDHandComputed(t *testing.T) {
	tests := []struct {
		name string
		n, k int
		A, B []float64
		want []float64
	}{
		// [4 2; 2 3]·x = [2; 1] → x = [0.5; 0] (det 8: x1 = (2·3−1·2)/8, x2 = (4·1−2·2)/8).
		{"2x2", 2, 1, []float64{4, 2, 2, 3}, []float64{2, 1}, []float64{0.5, 0}},
		// A = L·Lᵀ with L = [2 0 0; 1 2 0; 0 1 1], x = [1; −1; 2] → b = A·x.
		{"3x3", 3, 1, []float64{4, 2, 0, 2, 5, 2, 0, 2, 2}, []float64{2, 1, 2}, []float64{1, -1, 2}},
		{"2x2 two columns", 2, 2, []float64{2, 0, 0, 4}, []float64{2, 4, 8, 4}, []float64{1, 2, 2, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x, err := SolveSPD(tc.A, tc.B, tc.n, tc.k)
			if err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if math.Abs(x[i]-tc.want[i]) > 1e-12 {
					t.Fatalf("x = %v, want %v", x, tc.want)
				}
			}
		})
	}
}

func TestSolveSPDRejectsSingular(t *testing.T) {
	for _, A := range [][]float64{{1, 1, 1, 1}, {0, 0, 0, 0}, {-1, 0, 0, 1}} {
		if _, err := SolveSPD(A, []float64{1, 1}, 2, 1); err == nil {
			t.Fatalf("A = %v: no error", A)
		}
	}
}

// randomFit accumulates tokens rows of random X and Y = X·T (+ noise).
func randomFit(n, tokens int, noise float64, seed uint64) (*NormalEquations, []float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	T := make([]float64, n*n)
	for i := range T {
		T[i] = rng.NormFloat64()
	}
	e := NewNormalEquations(n)
	x, y := make([]float64, n), make([]float64, n)
	for range tokens {
		for a := range x {
			x[a] = rng.NormFloat64() * float64(a+1) // unequal scales
		}
		for c := range n {
			s := 0.0
			for a := range n {
				s += x[a] * T[a*n+c]
			}
			y[c] = s + noise*rng.NormFloat64()
		}
		e.AddRow(x, y)
	}
	return e, T
}

func TestRidgeRecoversKnownMap(t *testing.T) {
	for _, n := range []int{2, 3, 16, 32} {
		e, want := randomFit(n, 10*n, 0, uint64(n))
		got, err := e.Solve(0)
		if err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if math.Abs(got[i]-want[i]) > 1e-9 {
				t.Fatalf("n=%d: T[%d] = %g, want %g", n, i, got[i], want[i])
			}
		}
		if r := e.Residual(got); r > 1e-12*e.YtY {
			t.Fatalf("n=%d: residual %g of an exact fit", n, r)
		}
	}
}

func TestRidgePullsTowardsIdentity(t *testing.T) {
	e, _ := randomFit(4, 40, 0.1, 9)
	prev := math.Inf(1)
	for _, ridge := range []float64{0, 1e-3, 1, 1e3, 1e9} {
		T, err := e.Solve(ridge)
		if err != nil {
			t.Fatal(err)
		}
		dist := 0.0
		for a := range 4 {
			for c := range 4 {
				d := T[a*4+c]
				if a == c {
					d--
				}
				dist += d * d
			}
		}
		if dist > prev+1e-12 {
			t.Fatalf("ridge %g: ‖T−I‖² = %g grew from %g", ridge, dist, prev)
		}
		prev = dist
	}
	if prev > 1e-10 {
		t.Fatalf("huge ridge leaves ‖T−I‖² = %g, want ≈ 0", prev)
	}
	// The residual of T = I from the sums equals the one AddRow tracked.
	I := make([]float64, 16)
	for a := range 4 {
		I[a*4+a] = 1
	}
	if r := e.Residual(I); math.Abs(r-e.Ident) > 1e-9*e.Ident {
		t.Fatalf("Residual(I) = %g, Ident = %g", r, e.Ident)
	}
}

func TestSolveErrors(t *testing.T) {
	if _, err := NewNormalEquations(3).Solve(0); err == nil {
		t.Fatal("no tokens: no error")
	}
	e := NewNormalEquations(2)
	e.AddRow([]float64{1, 0}, []float64{1, 1}) // second feature never varies
	if _, err := e.Solve(0); err == nil {
		t.Fatal("singular XᵀX with ridge 0: no error")
	}
	if _, err := e.Solve(1e-3); err != nil {
		t.Fatalf("ridge should make it solvable: %v", err)
	}
	if _, err := e.Solve(-1); err == nil {
		t.Fatal("negative ridge: no error")
	}
}
