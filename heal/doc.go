// Package heal recovers some of what pruning loses without retraining the
// whole model.
//
// The linear bridge (ReplaceMe, Shopkhoev et al. 2025; DESIGN.md §5) is
// training-free: when blocks i..j are removed, the residual stream that now
// skips them carries h_i = r + m into block j+1, where m is block i−1's MLP
// branch (its down projection's output) and r the rest of the sum. From
// calibration states it fits a hidden×hidden map T so that r + m·T ≈
// h_{j+1}, by ridge least squares in float64 (normal equations accumulated
// streaming, solved by Cholesky), and folds T into the down projection,
// W' = W·T (b' = b·T), so the pruned graph gains no node.
package heal
