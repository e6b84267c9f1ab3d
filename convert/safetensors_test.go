package convert

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
)

// stEntry is one tensor for writeSafetensors: values are encoded in
// dtype ("F32", "F16" or "BF16") by the test's own encoders.
type stEntry struct {
	name  string
	dtype string
	shape []int64
	data  []float32
	raw   []byte // written as is when set (for dtypes the reader refuses)
}

// encodeSafetensors builds a safetensors file the way the reference
// implementation lays it out: header JSON padded with spaces to a multiple
// of 8, then the tensors back to back in the given order.
func encodeSafetensors(t testing.TB, entries []stEntry) []byte {
	t.Helper()
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	var data bytes.Buffer
	for _, e := range entries {
		begin := data.Len()
		switch {
		case e.raw != nil:
			data.Write(e.raw)
		case e.dtype == "F32":
			for _, v := range e.data {
				binary.Write(&data, binary.LittleEndian, math.Float32bits(v))
			}
		case e.dtype == "F16":
			for _, v := range e.data {
				binary.Write(&data, binary.LittleEndian, encodeF16(v))
			}
		case e.dtype == "BF16":
			for _, v := range e.data {
				binary.Write(&data, binary.LittleEndian, encodeBF16(v))
			}
		default:
			t.Fatalf("encodeSafetensors: dtype %s", e.dtype)
		}
		header[e.name] = map[string]any{"dtype": e.dtype, "shape": e.shape, "data_offsets": []int{begin, data.Len()}}
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	if pad := len(h) % 8; pad != 0 {
		h = append(h, bytes.Repeat([]byte(" "), 8-pad)...)
	}
	var out bytes.Buffer
	binary.Write(&out, binary.LittleEndian, uint64(len(h)))
	out.Write(h)
	out.Write(data.Bytes())
	return out.Bytes()
}

func writeSafetensors(t testing.TB, path string, entries []stEntry) {
	t.Helper()
	if err := os.WriteFile(path, encodeSafetensors(t, entries), 0o644); err != nil {
		t.Fatal(err)
	}
}

// encodeF16 rounds f to IEEE half precision (nearest, ties to even) by
// bit manipulation.
func encodeF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127
	mant := b & 0x7fffff
	switch {
	case exp == 128:
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 15:
		return sign | 0x7c00
	case exp >= -14:
		m, rest := mant>>13, mant&0x1fff
		h := uint32(exp+15)<<10 | m
		if rest > 0x1000 || rest == 0x1000 && m&1 == 1 {
			h++ // a carry into the exponent is still correct
		}
		return sign | uint16(h)
	case exp >= -25:
		full := mant | 0x800000 // value = full·2^(exp−23) = full·2^(exp+1) units of 2⁻²⁴
		shift := uint(-exp - 1)
		m, rest, half := full>>shift, full&(1<<shift-1), uint32(1)<<(shift-1)
		if rest > half || rest == half && m&1 == 1 {
			m++
		}
		return sign | uint16(m)
	}
	return sign
}

// encodeBF16 rounds f to bfloat16 (nearest, ties to even).
func encodeBF16(f float32) uint16 {
	b := math.Float32bits(f)
	return uint16((b + 0x7fff + (b >> 16 & 1)) >> 16)
}

// roundSignificand rounds x to bits significant bits (nearest, ties to
// even) with quanta no smaller than 2^minExp: the value a float format
// with that precision stores for x, computed with arithmetic rather than
// bit patterns, as an independent check on the encoders and decoders.
func roundSignificand(x float32, bits, minExp int) float32 {
	if x == 0 {
		return x
	}
	_, e := math.Frexp(float64(x)) // x = frac·2^e, frac in [0.5, 1)
	qexp := max(e-bits, minExp)
	q := math.Ldexp(1, qexp)
	return float32(math.RoundToEven(float64(x)/q) * q)
}

func roundF16(x float32) float32  { return roundSignificand(x, 11, -24) }
func roundBF16(x float32) float32 { return roundSignificand(x, 8, -133) }

func TestFloat16Conversions(t *testing.T) {
	cases := []struct {
		f    float32
		bits uint16
	}{
		{0, 0x0000},
		{1, 0x3c00},
		{-2, 0xc000},
		{0.5, 0x3800},
		{65504, 0x7bff},                       // largest finite
		{float32(math.Ldexp(1, -14)), 0x0400}, // smallest normal
		{float32(math.Ldexp(1, -24)), 0x0001}, // smallest subnormal
		{float32(math.Ldexp(3, -25)), 0x0002}, // 1.5 units: tie, rounds to even 2
		{float32(math.Ldexp(1, -25)), 0x0000}, // half a unit: tie, rounds to even 0
		{1 + 1.0/2048, 0x3c00},                // tie between 1 and 1+2⁻¹⁰: even
		{1 + 3.0/2048, 0x3c02},                // tie: rounds up to even
		{float32(math.Inf(-1)), 0xfc00},
	}
	for _, c := range cases {
		if got := encodeF16(c.f); got != c.bits {
			t.Errorf("encodeF16(%g) = %#04x, want %#04x", c.f, got, c.bits)
		}
		if got, want := float16to32(c.bits), roundF16(c.f); got != want && !math.IsInf(float64(want), 0) {
			t.Errorf("float16to32(%#04x) = %g, want %g", c.bits, got, want)
		}
	}
	// Every half-precision value survives decode → encode.
	for h := 0; h < 1<<16; h++ {
		f := float16to32(uint16(h))
		if math.IsNaN(float64(f)) {
			if h&0x7c00 != 0x7c00 || h&0x3ff == 0 {
				t.Fatalf("float16to32(%#04x) = NaN", h)
			}
			continue
		}
		if got := encodeF16(f); got != uint16(h) {
			t.Fatalf("encodeF16(float16to32(%#04x) = %g) = %#04x", h, f, got)
		}
		if !math.IsInf(float64(f), 0) && roundF16(f) != f {
			t.Fatalf("roundF16(%g) = %g: not a fixed point", f, roundF16(f))
		}
	}
}

func TestParseSafetensorsErrors(t *testing.T) {
	good := encodeSafetensors(t, []stEntry{{name: "a", dtype: "F32", shape: []int64{2, 3}, data: make([]float32, 6)}})
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"truncated data", good[:len(good)-4], "truncated file: tensor a ends at byte"},
		{"truncated header", good[:20], "truncated file: header of"},
		{"not json", append(binary.LittleEndian.AppendUint64(nil, 4), "nope"...), "not a safetensors file"},
		{"huge header", binary.LittleEndian.AppendUint64(nil, 1<<40), "not a safetensors file"},
		{"short", []byte{1, 2}, "truncated file"},
		{"size mismatch", encodeSafetensors(t, []stEntry{{name: "a", dtype: "F32", shape: []int64{2, 3}, raw: make([]byte, 20)}}), "tensor a: 20 bytes for F32 [2 3], want 24"},
	} {
		_, err := parseSafetensors(bytes.NewReader(c.data), int64(len(c.data)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	st, err := parseSafetensors(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.tensor("f", "a"); err != nil {
		t.Fatal(err)
	}
	i64 := encodeSafetensors(t, []stEntry{{name: "ids", dtype: "I64", shape: []int64{2}, raw: make([]byte, 16)}})
	st, err = parseSafetensors(bytes.NewReader(i64), int64(len(i64)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.tensor("f", "ids"); err == nil || !strings.Contains(err.Error(), "unsupported dtype I64") {
		t.Errorf("I64 tensor: err = %v", err)
	}
}
