package heal

import "math"

// AdamW is Adam with decoupled weight decay (Loshchilov & Hutter), bias
// corrected, its state in float64: PyTorch's torch.optim.AdamW.
type AdamW struct {
	Beta1, Beta2, Eps, WeightDecay float64
	Step                           int         // updates done
	M, V                           [][]float64 // first and second moments, per parameter
}

// NewAdamW allocates moments for parameters of the given sizes with
// PyTorch's defaults (β 0.9, 0.999; ε 1e-8).
func NewAdamW(sizes []int, weightDecay float64) *AdamW {
	o := &AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: weightDecay}
	for _, n := range sizes {
		o.M = append(o.M, make([]float64, n))
		o.V = append(o.V, make([]float64, n))
	}
	return o
}

// Update applies one step with learning rate lr: p ← p − lr·λ·p, then
// p ← p − lr·m̂/(√v̂ + ε).
func (o *AdamW) Update(params, grads [][]float64, lr float64) {
	o.Step++
	bc1 := 1 - math.Pow(o.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(o.Beta2, float64(o.Step))
	for k, p := range params {
		g, m, v := grads[k], o.M[k], o.V[k]
		for i := range p {
			p[i] -= lr * o.WeightDecay * p[i]
			m[i] = o.Beta1*m[i] + (1-o.Beta1)*g[i]
			v[i] = o.Beta2*v[i] + (1-o.Beta2)*g[i]*g[i]
			p[i] -= lr * (m[i] / bc1) / (math.Sqrt(v[i]/bc2) + o.Eps)
		}
	}
}

// ClipGradNorm scales grads so their global L2 norm is at most max (when
// max > 0) and returns the norm before clipping.
func ClipGradNorm(grads [][]float64, max float64) float64 {
	var s float64
	for _, g := range grads {
		for _, x := range g {
			s += x * x
		}
	}
	norm := math.Sqrt(s)
	if max > 0 && norm > max {
		f := max / (norm + 1e-6)
		for _, g := range grads {
			for i := range g {
				g[i] *= f
			}
		}
	}
	return norm
}

// CosineLR is the learning rate of step (0-based) of steps: linear
// warm-up from lr/warmup to lr over warmup steps, then cosine decay to 0
// (transformers' get_cosine_schedule_with_warmup).
func CosineLR(lr float64, step, warmup, steps int) float64 {
	if step < warmup {
		return lr * float64(step+1) / float64(warmup)
	}
	if steps <= warmup {
		return lr
	}
	p := float64(step-warmup) / float64(steps-warmup)
	return lr * 0.5 * (1 + math.Cos(math.Pi*p))
}
