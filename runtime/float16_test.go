package runtime_test

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	ort "github.com/onnxprune/onnxprune/runtime"
)

func f32(bits uint32) float32 { return math.Float32frombits(bits) }

// Expected bit patterns worked out by hand from the binary16 layout
// (1 sign, 5 exponent bits biased by 15, 10 mantissa bits).
var toFloat16Cases = []struct {
	name string
	in   float32
	want uint16
}{
	{"zero", 0, 0x0000},
	{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
	{"one", 1, 0x3c00},
	{"minus two", -2, 0xc000},
	{"0.1 rounds up", 0.1, 0x2e66}, // 0.1 = 1.6 * 2^-4; mantissa 0.6*1024 = 614.4 -> 614 = 0x266
	{"1/3", 1.0 / 3, 0x3555},       // 1.333.. * 2^-2; 0.333*1024 = 341.33 -> 341 = 0x155
	{"max finite", 65504, 0x7bff},  // (2 - 2^-10) * 2^15
	{"just below overflow tie", 65519, 0x7bff},
	{"overflow tie rounds to inf", 65520, 0x7c00}, // halfway to 2^16, mantissa 0x3ff odd -> up
	{"large", 1e9, 0x7c00},
	{"-large", -1e9, 0xfc00},
	{"+inf", float32(math.Inf(1)), 0x7c00},
	{"-inf", float32(math.Inf(-1)), 0xfc00},
	{"smallest normal", 0x1p-14, 0x0400},
	{"largest subnormal", 1023 * 0x1p-24, 0x03ff},
	{"smallest subnormal", 0x1p-24, 0x0001},
	{"half smallest subnormal ties to zero", 0x1p-25, 0x0000},
	{"just above half smallest subnormal", 0x1.000002p-25, 0x0001},
	{"1.5 subnormal units ties to even 2", 3 * 0x1p-25, 0x0002},
	{"2.5 subnormal units ties to even 2", 5 * 0x1p-25, 0x0002},
	{"-smallest subnormal", -0x1p-24, 0x8001},
	{"subnormal rounds into smallest normal", 0x1p-14 - 0x1p-26, 0x0400},
	{"float32 subnormal flushes to zero", f32(0x00000001), 0x0000},
	{"tie below even stays", 1 + 0x1p-11, 0x3c00},      // between 0x3c00 and 0x3c01
	{"tie above odd rounds up", 1 + 3*0x1p-11, 0x3c02}, // between 0x3c01 and 0x3c02
	{"above tie rounds up", 1 + 0x1p-11 + 0x1p-20, 0x3c01},
	{"mantissa carry into exponent", 2 - 0x1p-12, 0x4000},
	{"quiet NaN", float32(math.NaN()), 0x7e00},
	{"NaN payload only in low bits stays NaN", f32(0x7f800001), 0x7e00},
	{"negative NaN with payload", f32(0xffc02000), 0xfe01},
}

func TestToFloat16(t *testing.T) {
	for _, c := range toFloat16Cases {
		if got := ort.ToFloat16(c.in); uint16(got) != c.want {
			t.Errorf("%s: ToFloat16(%g [%#08x]) = %#04x, want %#04x", c.name, c.in, math.Float32bits(c.in), uint16(got), c.want)
		}
	}
}

func TestFloat16ToFloat32(t *testing.T) {
	cases := []struct {
		in   uint16
		want uint32
	}{
		{0x0000, 0x00000000},
		{0x8000, 0x80000000},
		{0x3c00, 0x3f800000},
		{0xc000, 0xc0000000},
		{0x0001, 0x33800000}, // 2^-24
		{0x8001, 0xb3800000},
		{0x03ff, 0x387fc000}, // 1023 * 2^-24
		{0x0400, 0x38800000}, // 2^-14
		{0x7bff, 0x477fe000}, // 65504
		{0x3555, 0x3eaaa000},
		{0x7c00, 0x7f800000},
		{0xfc00, 0xff800000},
		{0x7e00, 0x7fc00000},
		{0x7c01, 0x7f802000}, // signalling NaN payload kept
	}
	for _, c := range cases {
		if got := math.Float32bits(ort.Float16Bits(c.in).Float32()); got != c.want {
			t.Errorf("Float16Bits(%#04x).Float32() = %#08x, want %#08x", c.in, got, c.want)
		}
	}
}

var toBFloat16Cases = []struct {
	name string
	in   float32
	want uint16
}{
	{"zero", 0, 0x0000},
	{"negative zero", float32(math.Copysign(0, -1)), 0x8000},
	{"one", 1, 0x3f80},
	{"minus one", -1, 0xbf80},
	{"0.1", 0.1, 0x3dcd}, // 0x3dcccccd: low half 0xcccd > 0x8000 -> up
	{"tie stays even", 1 + 0x1p-8, 0x3f80},
	{"tie rounds to even", 1 + 3*0x1p-8, 0x3f82},
	{"above tie", 1 + 0x1p-8 + 0x1p-20, 0x3f81},
	{"float32 max overflows to inf", math.MaxFloat32, 0x7f80},
	{"largest bfloat16", f32(0x7f7f0000), 0x7f7f},
	{"+inf", float32(math.Inf(1)), 0x7f80},
	{"-inf", float32(math.Inf(-1)), 0xff80},
	{"subnormal kept", f32(0x00010000), 0x0001},
	{"subnormal tie to even zero", f32(0x00008000), 0x0000},
	{"subnormal tie to even two", f32(0x00018000), 0x0002},
	{"quiet NaN", float32(math.NaN()), 0x7fc0},
	{"NaN payload only in low bits stays NaN", f32(0x7f800001), 0x7fc0},
}

func TestToBFloat16(t *testing.T) {
	for _, c := range toBFloat16Cases {
		if got := ort.ToBFloat16(c.in); uint16(got) != c.want {
			t.Errorf("%s: ToBFloat16(%g [%#08x]) = %#04x, want %#04x", c.name, c.in, math.Float32bits(c.in), uint16(got), c.want)
		}
	}
	if got := math.Float32bits(ort.BFloat16Bits(0x3dcd).Float32()); got != 0x3dcd0000 {
		t.Errorf("BFloat16Bits(0x3dcd).Float32() = %#08x", got)
	}
}

// Every binary16 value survives a trip through float32.
func TestFloat16RoundTripExhaustive(t *testing.T) {
	for i := 0; i < 1<<16; i++ {
		h := ort.Float16Bits(i)
		f := h.Float32()
		back := ort.ToFloat16(f)
		if math.IsNaN(float64(f)) {
			if !math.IsNaN(float64(back.Float32())) {
				t.Fatalf("%#04x: NaN lost", i)
			}
			continue
		}
		if back != h {
			t.Fatalf("%#04x -> %g -> %#04x", i, f, uint16(back))
		}
		bf := ort.BFloat16Bits(i)
		if g := ort.ToBFloat16(bf.Float32()); g != bf && !math.IsNaN(float64(bf.Float32())) {
			t.Fatalf("bfloat16 %#04x -> %#04x", i, uint16(g))
		}
	}
}

// ToFloat16 agrees with an independent reference: the nearest binary16
// value found by binary search over all finite values (decoded by the
// separately tested Float32), ties to the even bit pattern.
func TestToFloat16MatchesNearestValue(t *testing.T) {
	type entry struct {
		v float64
		h ort.Float16Bits
	}
	var finite []entry // non-negative finite values in increasing order
	for i := 0; i < 0x7c00; i++ {
		finite = append(finite, entry{float64(ort.Float16Bits(i).Float32()), ort.Float16Bits(i)})
	}
	maxV := finite[len(finite)-1].v
	nearest := func(x float64) ort.Float16Bits {
		// Beyond max + half an ulp (2^5 at the top binade) rounds to Inf;
		// exactly halfway rounds to Inf too (0x7bff is odd).
		if x >= maxV+16 {
			return 0x7c00
		}
		i := sort.Search(len(finite), func(i int) bool { return finite[i].v >= x })
		if i == len(finite) {
			return finite[len(finite)-1].h
		}
		if finite[i].v == x || i == 0 {
			return finite[i].h
		}
		lo, hi := finite[i-1], finite[i]
		switch dl, dh := x-lo.v, hi.v-x; {
		case dl < dh:
			return lo.h
		case dh < dl:
			return hi.h
		case lo.h&1 == 0:
			return lo.h
		default:
			return hi.h
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 200000; n++ {
		var x float32
		switch n % 3 {
		case 0: // anywhere in float32's range around binary16's
			x = f32(rng.Uint32() & 0x7fffffff)
			if x > 70000 || math.IsNaN(float64(x)) {
				continue
			}
		case 1: // near binary16's subnormal/normal boundary
			x = float32(rng.Float64() * 0x1p-13)
		default: // exact ties between neighbours
			i := rng.IntN(len(finite) - 1)
			x = float32((finite[i].v + finite[i+1].v) / 2)
		}
		got, want := ort.ToFloat16(x), nearest(float64(x))
		if got != want {
			t.Fatalf("ToFloat16(%g [%#08x]) = %#04x, nearest is %#04x", x, math.Float32bits(x), uint16(got), uint16(want))
		}
		if neg := ort.ToFloat16(-x); neg != want|0x8000 {
			t.Fatalf("ToFloat16(%g) = %#04x, want %#04x", -x, uint16(neg), uint16(want|0x8000))
		}
	}
}
