package convert

// Float32ToHalfForTest exposes the builder's float16 rounding to tests.
func Float32ToHalfForTest(f float32) uint16 { return float32ToHalf(f) }
