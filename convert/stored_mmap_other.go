//go:build !linux

package convert

// mapFloats is not implemented here; Build reads the values instead.
func (s *storedTensor) mapFloats() (vals []float32, unmap func(), ok bool) {
	return nil, nil, false
}
