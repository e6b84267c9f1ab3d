package convert

import "math"

// swiGLU is the Llama MLP: down(silu(gate(x)) · up(x)), with SiLU written
// as x · Sigmoid(x) as torch exports it.
func (b *graphBuilder) swiGLU(scope, x, gate, up, down string) string {
	g := b.linear(scope+"/gate_proj", x, gate, "")
	g = b.op(scope, "Mul", g, b.op(scope, "Sigmoid", g))
	u := b.linear(scope+"/up_proj", x, up, "")
	return b.linear(scope+"/down_proj", b.op(scope, "Mul", g, u), down, "")
}

// geluMLP is the GPT-2 MLP: c_proj(gelu_new(c_fc(x))), with gelu_new the
// tanh approximation 0.5·h·(1 + tanh(√(2/π)·(h + 0.044715·h³))) written out
// as Hugging Face does (onnxruntime fuses it into FastGelu).
func (b *graphBuilder) geluMLP(scope, x, fcW, fcB, projW, projB string) string {
	h := b.linear(scope+"/c_fc", x, fcW, fcB)
	cube := b.op(scope, "Pow", h, b.scalarF32(scope, 3))
	inner := b.op(scope, "Add", h, b.op(scope, "Mul", cube, b.scalarF32(scope, 0.044715)))
	t := b.op(scope, "Tanh", b.op(scope, "Mul", inner, b.scalarF32(scope, float32(math.Sqrt(2/math.Pi)))))
	g := b.op(scope, "Mul", b.op(scope, "Mul", h, b.scalarF32(scope, 0.5)), b.op(scope, "Add", t, b.scalarF32(scope, 1)))
	return b.linear(scope+"/c_proj", g, projW, projB)
}
