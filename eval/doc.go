// Package eval measures language models: perplexity (token-weighted,
// float64, pads never scored), zero-shot choice tasks, generation
// metrics, and efficiency. Every number it reports states how it was
// measured (context, stride, BOS policy).
package eval
