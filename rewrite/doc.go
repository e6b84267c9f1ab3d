// Package rewrite holds the graph passes of onnxprune, one pass per file
// with its own test: dead-code elimination, exposing intermediate tensors
// as outputs ("taps"), and, built on those, block removal, width
// shrinking, sparsification and LoRA insertion.
//
// Passes change a *graph.Model in place. Run applies a sequence of them
// and runs graph.Check after each, the way the SSA backend runs its
// checker between passes, so a pass that breaks an invariant is named at
// once rather than discovered by onnxruntime later.
package rewrite
