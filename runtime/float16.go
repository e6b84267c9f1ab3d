package runtime

import "math"

// Float16Bits is an IEEE 754 binary16 value (1 sign, 5 exponent, 10 mantissa
// bits) stored as its bit pattern, the layout of ONNX FLOAT16.
type Float16Bits uint16

// BFloat16Bits is a bfloat16 value (the top 16 bits of a float32: 1 sign,
// 8 exponent, 7 mantissa bits) stored as its bit pattern, the layout of ONNX
// BFLOAT16.
type BFloat16Bits uint16

// ToFloat16 rounds f to the nearest binary16 value, ties to even, as IEEE 754
// and onnxruntime's Cast do: values too large become ±Inf, values too small
// become (signed) subnormals or zero, and NaN stays NaN (quieted, keeping the
// top payload bits).
func ToFloat16(f float32) Float16Bits {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff

	if exp == 0xff {
		if mant == 0 {
			return Float16Bits(sign | 0x7c00)
		}
		// Setting the quiet bit also guarantees a nonzero mantissa, so a NaN
		// whose payload lives only in the low 13 bits does not become Inf.
		return Float16Bits(sign | 0x7c00 | 0x0200 | uint16(mant>>13))
	}

	e := exp - 127 + 15 // binary16 biased exponent
	if e >= 0x1f {
		return Float16Bits(sign | 0x7c00)
	}
	if e <= 0 {
		// The result is subnormal (or zero): count in units of 2^-24, the
		// smallest binary16 subnormal. The float32 value is
		// (mant|1<<23) * 2^(exp-150) = (mant|1<<23) >> (126-exp) units.
		shift := uint32(126 - exp)
		if shift > 24 {
			// Below half a unit (float32 subnormals land here too).
			return Float16Bits(sign)
		}
		full := mant | 0x800000
		q := full >> shift
		r := full & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if r > half || (r == half && q&1 == 1) {
			q++ // may carry into the smallest normal, 0x0400, which is right
		}
		return Float16Bits(sign | uint16(q))
	}

	h := uint16(e)<<10 | uint16(mant>>13)
	r := mant & 0x1fff
	if r > 0x1000 || (r == 0x1000 && h&1 == 1) {
		h++ // a carry out of the mantissa bumps the exponent; 0x7c00 is Inf
	}
	return Float16Bits(sign | h)
}

// Float32 converts h to float32 exactly (every binary16 value is a float32).
func (h Float16Bits) Float32() float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch exp {
	case 0x1f: // Inf or NaN; the NaN payload moves to the top mantissa bits
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case 0: // zero or subnormal: mant * 2^-24, exact in float32
		f := float32(mant) * 0x1p-24
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

// ToBFloat16 rounds f to the nearest bfloat16 value, ties to even (what
// PyTorch and onnxruntime do); NaN stays NaN (quieted).
func ToBFloat16(f float32) BFloat16Bits {
	b := math.Float32bits(f)
	if b&0x7f800000 == 0x7f800000 && b&0x7fffff != 0 {
		return BFloat16Bits(uint16(b>>16) | 0x0040)
	}
	// Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even;
	// a carry propagates into the exponent, so the largest finite values
	// correctly overflow to Inf.
	bias := uint32(0x7fff) + (b>>16)&1
	return BFloat16Bits((b + bias) >> 16)
}

// Float32 converts h to float32 exactly.
func (h BFloat16Bits) Float32() float32 {
	return math.Float32frombits(uint32(h) << 16)
}
