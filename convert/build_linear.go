package convert

// linear is x·W (+ bias). W is the initializer stored [in, out] (the
// transpose of PyTorch's nn.Linear weight, or GPT-2's Conv1D weight as
// is), so that the product is one MatMul without a Transpose at run time.
// bias is "" for none.
func (b *graphBuilder) linear(scope, x, w, bias string) string {
	y := b.op(scope, "MatMul", x, b.weight(scope, w))
	if bias != "" {
		y = b.op(scope, "Add", y, b.weight(scope, bias))
	}
	return y
}
