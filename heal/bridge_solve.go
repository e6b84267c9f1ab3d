package heal

import (
	"fmt"
	"math"
)

// NormalEquations accumulates, over calibration tokens, the sums a
// least-squares fit of Y ≈ X·T needs: XᵀX, XᵀY and the scalars that let
// the fit's residual be reported without keeping any tensor. Everything
// is float64: float32 sums over millions of tokens lose the small
// differences the fit is about.
type NormalEquations struct {
	N      int       // features (hidden size)
	XtX    []float64 // [N, N], row-major
	XtY    []float64 // [N, N]
	YtY    float64   // Σ‖y‖²: residual of T = 0
	Ident  float64   // Σ‖x − y‖²: residual of T = I (plain pruning)
	Tokens int
}

// NewNormalEquations returns empty sums for n features.
func NewNormalEquations(n int) *NormalEquations {
	return &NormalEquations{N: n, XtX: make([]float64, n*n), XtY: make([]float64, n*n)}
}

// AddRow adds one token's x and y (both length N).
func (e *NormalEquations) AddRow(x, y []float64) {
	n := e.N
	for a := range n {
		xa := x[a]
		if xa == 0 {
			continue
		}
		rowA, rowB := e.XtX[a*n:(a+1)*n], e.XtY[a*n:(a+1)*n]
		// Only the upper triangle of XᵀX: it is symmetric and Solve
		// mirrors it, which halves the work per token.
		for b := a; b < n; b++ {
			rowA[b] += xa * x[b]
		}
		for b := range n {
			rowB[b] += xa * y[b]
		}
	}
	for a := range n {
		e.YtY += y[a] * y[a]
		d := x[a] - y[a]
		e.Ident += d * d
	}
	e.Tokens++
}

// symmetric returns XᵀX with the lower triangle filled in.
func (e *NormalEquations) symmetric() []float64 {
	n := e.N
	A := make([]float64, n*n)
	for a := range n {
		for b := a; b < n; b++ {
			A[a*n+b] = e.XtX[a*n+b]
			A[b*n+a] = e.XtX[a*n+b]
		}
	}
	return A
}

// Lambda is the ridge strength for a relative strength: ridge times the
// mean diagonal of XᵀX, so one setting means the same for any hidden
// size, token count or activation scale.
func (e *NormalEquations) Lambda(ridge float64) float64 {
	tr := 0.0
	for a := range e.N {
		tr += e.XtX[a*e.N+a]
	}
	return ridge * tr / float64(max(e.N, 1))
}

// Solve returns T minimising ‖X·T − Y‖² + λ‖T − I‖², λ = Lambda(ridge).
// The ridge pulls T towards the identity rather than towards zero: with
// little data or a strong ridge the bridge degrades to plain pruning
// (T = I), never to dropping the MLP branch (T = 0). The normal equations
// are (XᵀX + λI)·T = XᵀY + λI.
func (e *NormalEquations) Solve(ridge float64) ([]float64, error) {
	if e.Tokens == 0 {
		return nil, fmt.Errorf("bridge: no calibration tokens")
	}
	if ridge < 0 || math.IsNaN(ridge) {
		return nil, fmt.Errorf("bridge: ridge %g must be ≥ 0", ridge)
	}
	n := e.N
	A := e.symmetric()
	B := append([]float64(nil), e.XtY...)
	lam := e.Lambda(ridge)
	for a := range n {
		A[a*n+a] += lam
		B[a*n+a] += lam
	}
	T, err := SolveSPD(A, B, n, n)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w (raise --ridge)", err)
	}
	return T, nil
}

// Residual is ‖X·T − Y‖² over the accumulated tokens, from the sums:
// tr(TᵀXᵀXT) − 2 tr(TᵀXᵀY) + Σ‖y‖².
func (e *NormalEquations) Residual(T []float64) float64 {
	n := e.N
	A := e.symmetric()
	quad, cross := 0.0, 0.0
	AT := make([]float64, n) // column c of A·T
	for c := range n {
		for a := range n {
			s := 0.0
			for b := range n {
				s += A[a*n+b] * T[b*n+c]
			}
			AT[a] = s
		}
		for a := range n {
			quad += T[a*n+c] * AT[a]
			cross += T[a*n+c] * e.XtY[a*n+c]
		}
	}
	return max(quad-2*cross+e.YtY, 0)
}

// SolveSPD solves A·X = B for X, A symmetric positive definite [n, n],
// B [n, k], both row-major, by Cholesky factorisation A = L·Lᵀ and two
// triangular solves per column. A and B are not modified.
func SolveSPD(A, B []float64, n, k int) ([]float64, error) {
	if len(A) != n*n || len(B) != n*k {
		return nil, fmt.Errorf("solve: A has %d elements (want %d), B %d (want %d)", len(A), n*n, len(B), n*k)
	}
	L := make([]float64, n*n)
	for i := range n {
		for j := 0; j <= i; j++ {
			s := A[i*n+j]
			for p := range j {
				s -= L[i*n+p] * L[j*n+p]
			}
			if i == j {
				// Relative test: a pivot lost to rounding against the
				// diagonal it came from means A is singular in float64.
				if s <= 1e-13*math.Abs(A[i*n+i]) || s <= 0 {
					return nil, fmt.Errorf("solve: matrix not positive definite (pivot %d is %g)", i, s)
				}
				L[i*n+i] = math.Sqrt(s)
			} else {
				L[i*n+j] = s / L[j*n+j]
			}
		}
	}
	X := make([]float64, n*k)
	z := make([]float64, n)
	for c := range k {
		for i := range n { // L·z = b
			s := B[i*k+c]
			for p := range i {
				s -= L[i*n+p] * z[p]
			}
			z[i] = s / L[i*n+i]
		}
		for i := n - 1; i >= 0; i-- { // Lᵀ·x = z
			s := z[i]
			for p := i + 1; p < n; p++ {
				s -= L[p*n+i] * X[p*k+c]
			}
			X[i*k+c] = s / L[i*n+i]
		}
	}
	return X, nil
}
