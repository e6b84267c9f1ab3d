package eval

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeRAPL writes a powercap tree: zones maps a directory name to its
// name file and counters.
type fakeZone struct {
	name        string
	energy, max uint64
}

func writeZone(t *testing.T, root, dir string, z fakeZone) {
	t.Helper()
	d := filepath.Join(root, dir)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, v := range map[string]string{
		"name":                z.name + "\n",
		"energy_uj":           strconv.FormatUint(z.energy, 10) + "\n",
		"max_energy_range_uj": strconv.FormatUint(z.max, 10) + "\n",
	} {
		if err := os.WriteFile(filepath.Join(d, f), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func setEnergy(t *testing.T, root, dir string, uj uint64) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(root, dir, "energy_uj"), []byte(strconv.FormatUint(uj, 10)), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeCPU returns the given CPU times, one per call.
func fakeCPU(times ...time.Duration) func() (time.Duration, error) {
	i := 0
	return func() (time.Duration, error) {
		d := times[min(i, len(times)-1)]
		i++
		return d, nil
	}
}

func TestRAPLDelta(t *testing.T) {
	const max = 262143328850 // a real package's max_energy_range_uj
	for _, c := range []struct{ prev, now, want uint64 }{
		{100, 350, 250},
		{max - 1_000_000, 2_500_000, 3_500_000}, // 1 J to the wrap, 2.5 J after it
		{5, 5, 0},
	} {
		if got := raplDelta(c.prev, c.now, max); got != c.want {
			t.Errorf("raplDelta(%d, %d) = %d, want %d", c.prev, c.now, got, c.want)
		}
	}
}

// TestMeterRAPL: two packages (one wrapping during the interval), a core
// subzone, a psys zone and an mmio alias, whose changes must not count.
func TestMeterRAPL(t *testing.T) {
	root := t.TempDir()
	const max = 262143328850
	writeZone(t, root, "intel-rapl:0", fakeZone{"package-0", max - 1_000_000, max})
	writeZone(t, root, "intel-rapl:1", fakeZone{"package-1", 5_000_000, max})
	writeZone(t, root, "intel-rapl:0:0", fakeZone{"core", 0, max})
	writeZone(t, root, "intel-rapl:2", fakeZone{"psys", 0, max})
	writeZone(t, root, "intel-rapl-mmio:0", fakeZone{"package-0", 0, max})

	m := NewMeter(MeterOptions{PowercapRoot: root, RAPLPoll: -1, CPUTime: fakeCPU(time.Second, 3*time.Second)})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	setEnergy(t, root, "intel-rapl:0", 2_500_000) // wrapped: 1 J + 2.5 J
	setEnergy(t, root, "intel-rapl:1", 7_000_000) // 2 J
	for _, d := range []string{"intel-rapl:0:0", "intel-rapl:2", "intel-rapl-mmio:0"} {
		setEnergy(t, root, d, 99_000_000)
	}
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	// 3.5 J + 2 J; the CPU time is recorded but not used.
	if r.Source != "rapl" || r.Estimated || !near(r.Joules, 5.5) || !near(r.CPUJoules, 5.5) || r.CPUSeconds != 2 {
		t.Fatalf("reading %+v, want 5.5 J from rapl over 2 CPU-s", r)
	}
	if !strings.Contains(r.Method, "intel-rapl:0 (package-0), intel-rapl:1 (package-1)") {
		t.Errorf("method %q does not name the package zones", r.Method)
	}
	if _, err := m.Stop(); err == nil {
		t.Error("a second Stop succeeded")
	}
}

// TestRAPLTwoWraps: reading between wraps (as the poller does) counts
// both; a single read at the end could only see one.
func TestRAPLTwoWraps(t *testing.T) {
	root := t.TempDir()
	const max = 1000
	writeZone(t, root, "intel-rapl:0", fakeZone{"package-0", 900, max})
	rc, err := openRAPL(root)
	if err != nil {
		t.Fatal(err)
	}
	// 900 → wrap → 400 (500 µJ) → 950 (550 µJ) → wrap → 100 (150 µJ).
	for _, uj := range []uint64{400, 950, 100} {
		setEnergy(t, root, "intel-rapl:0", uj)
		if err := rc.update(); err != nil {
			t.Fatal(err)
		}
	}
	if got := rc.joules(); !near(got, 1200e-6) {
		t.Fatalf("%g J, want 1200 µJ", got)
	}
}

// TestMeterPolls: with a short poll interval the background reader sees
// the wrap that happens between Start and Stop.
func TestMeterPolls(t *testing.T) {
	root := t.TempDir()
	writeZone(t, root, "intel-rapl:0", fakeZone{"package-0", 900, 1000})
	m := NewMeter(MeterOptions{PowercapRoot: root, RAPLPoll: time.Millisecond})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	setEnergy(t, root, "intel-rapl:0", 950)
	time.Sleep(50 * time.Millisecond)
	setEnergy(t, root, "intel-rapl:0", 920) // wrapped: 50 µJ, then 1000 − 950 + 920 = 970 µJ
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if !near(r.Joules, 1020e-6) {
		t.Fatalf("%g J, want 1020 µJ", r.Joules)
	}
}

// TestMeterEstimate: no RAPL, so 2.5 s of CPU × 12 W per core = 30 J,
// labelled as an estimate.
func TestMeterEstimate(t *testing.T) {
	m := NewMeter(MeterOptions{PowercapRoot: filepath.Join(t.TempDir(), "none"), WattsPerCore: 12,
		CPUTime: fakeCPU(time.Second, 3500*time.Millisecond)})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != "estimated" || !r.Estimated || !near(r.Joules, 30) || r.CPUSeconds != 2.5 {
		t.Fatalf("reading %+v, want 30 J estimated", r)
	}
	if !strings.Contains(r.Method, "estimated: 2.500 s") || !strings.Contains(r.Method, "12 W") {
		t.Errorf("method %q does not state the estimate", r.Method)
	}
	rep := NewEnergyReport(r, DefaultGridIntensity, 3, 0)
	if s := rep.String(); !strings.HasPrefix(s, "energy [estimated]") {
		t.Errorf("report %q is not labelled estimated", s)
	}
	// The default is documented as 15 W; the real process clock works.
	if m := NewMeter(MeterOptions{}); m.opts.WattsPerCore != DefaultWattsPerCore || DefaultWattsPerCore != 15 {
		t.Errorf("default watts per core %g", m.opts.WattsPerCore)
	}
	if d, err := processCPUTime(); err != nil || d <= 0 {
		t.Errorf("process CPU time %v, %v", d, err)
	}
}

// TestEnergyUnits: 7.2 MJ = 2 kWh → 950 g at 475 g/kWh; 1800 J =
// 0.0005 kWh → 0.2375 g.
func TestEnergyUnits(t *testing.T) {
	r := Reading{Joules: 7.2e6}
	if !near(r.KWh(), 2) || !near(r.CO2eGrams(475), 950) {
		t.Errorf("7.2 MJ: %g kWh, %g g", r.KWh(), r.CO2eGrams(475))
	}
	r = Reading{Joules: 1800}
	if !near(r.KWh(), 0.0005) || !near(r.CO2eGrams(475), 0.2375) {
		t.Errorf("1800 J: %g kWh, %g g", r.KWh(), r.CO2eGrams(475))
	}
	rep := NewEnergyReport(Reading{Joules: 90, Source: "rapl"}, 300, 3, 45)
	// 90 J = 2.5e-5 kWh → 7.5e-3 g at 300 g/kWh; 30 J per sample, 2 J per token.
	if !near(rep.CO2eGrams, 7.5e-3) || !near(rep.JoulesPerSample, 30) || !near(rep.JoulesPerToken, 2) {
		t.Errorf("report %+v", rep)
	}
	if got := (Reading{Joules: 5}).PerUnit(0); got != 0 {
		t.Errorf("per zero units = %g, want 0", got)
	}
}

// fakeNVML is a libnvidia-ml stand-in with two GPUs whose counters rise
// by 1500 mJ and 3000 mJ at every read.
const fakeNVML = `
static unsigned long long e[2] = {1000000, 2000000};
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
const char *nvmlErrorString(int rc) { return "fake error"; }
int nvmlDeviceGetCount_v2(unsigned int *n) { *n = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int i, void **h) { *h = (void *)(unsigned long)(i + 1); return 0; }
int nvmlDeviceGetTotalEnergyConsumption(void *h, unsigned long long *mj) {
	unsigned long i = (unsigned long)h - 1;
	e[i] += 1500 * (i + 1);
	*mj = e[i];
	return 0;
}
`

// TestMeterNVML loads a fake NVML built here: the GPUs used 1.5 J + 3 J
// between Start and Stop, added to the (estimated) CPU energy.
func TestMeterNVML(t *testing.T) {
	cc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc to build a fake libnvidia-ml")
	}
	dir := t.TempDir()
	src, lib := filepath.Join(dir, "fake.c"), filepath.Join(dir, "libfakenvml.so")
	if err := os.WriteFile(src, []byte(fakeNVML), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	m := NewMeter(MeterOptions{PowercapRoot: filepath.Join(dir, "none"), GPU: true, NVMLLibrary: lib,
		CPUTime: fakeCPU(0, time.Second)})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := m.Stop()
	if err != nil {
		t.Fatal(err)
	}
	if r.Source != "estimated+nvml" || !r.Estimated || !near(r.GPUJoules, 4.5) || !near(r.Joules, 15+4.5) {
		t.Fatalf("reading %+v, want 4.5 J GPU + 15 J estimated CPU", r)
	}
	if !strings.Contains(r.Method, "2 GPU(s)") {
		t.Errorf("method %q", r.Method)
	}

	// Without the library the GPU is reported as not measured.
	m = NewMeter(MeterOptions{PowercapRoot: filepath.Join(dir, "none"), GPU: true, NVMLLibrary: filepath.Join(dir, "missing.so"),
		CPUTime: fakeCPU(0, time.Second)})
	if err := m.Start(); err != nil {
		t.Fatal(err)
	}
	if r, _ = m.Stop(); r.Source != "estimated" || !strings.Contains(r.Method, "GPU energy not measured (NVML: ") {
		t.Errorf("missing NVML: %+v", r)
	}
}
