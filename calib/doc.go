// Package calib runs calibration text through a model and reduces the
// residual-stream states at every block boundary (h_0 … h_L) to the
// statistics that decide which blocks to remove: the angular distance
// d(l, n) between h_l and h_{l+n} for every start l and block size n
// (Gromov et al. 2024), ShortGPT's Block Influence, and the cosine of the
// mean states. Statistics stream: each batch updates float64 sums and is
// dropped, so memory does not grow with the number of samples. Padding
// tokens never enter a statistic.
package calib
