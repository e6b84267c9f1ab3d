package eval

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Energy sources, as Reading.Source names them (joined with "+" when
// several contribute, e.g. "rapl+nvml" or "estimated+nvml").
const (
	// SourceRAPL: the CPU packages' RAPL energy counters read through the
	// Linux powercap interface: whole-package energy, every process, not
	// DRAM or the rest of the platform.
	SourceRAPL = "rapl"
	// SourceNVML: NVIDIA's total-energy counter of every GPU (Volta and
	// later), read through libnvidia-ml.so.1.
	SourceNVML = "nvml"
	// SourceEstimated: this process's CPU time × an assumed power per
	// busy core, used when RAPL cannot be read. An estimate, never a
	// measurement: every output that carries it says so.
	SourceEstimated = "estimated"
)

// DefaultWattsPerCore is the power assumed for one fully busy core when
// energy is estimated from CPU time: an assumption, of the order of a
// server CPU's TDP divided by its cores (e.g. 270 W / 18 cores) or a
// desktop's (125 W / 8 cores), and not a measurement.
const DefaultWattsPerCore = 15.0

// DefaultGridIntensity is the world-average carbon intensity of
// electricity, 475 gCO2e/kWh (IEA), used unless a local value is given.
const DefaultGridIntensity = 475.0

// DefaultPowercapRoot is where Linux exposes RAPL.
const DefaultPowercapRoot = "/sys/class/powercap"

// DefaultRAPLPoll is how often a running meter reads the RAPL counters.
// A package counter wraps at max_energy_range_uj (typically 2^32 µJ ≈
// 4.3 kJ to 262 kJ, minutes at full load); reading well within one wrap
// lets Stop count every wrap, not just one.
const DefaultRAPLPoll = 10 * time.Second

// MeterOptions configure a Meter; the zero value measures RAPL (else
// estimates at DefaultWattsPerCore) and no GPU.
type MeterOptions struct {
	// PowercapRoot holds the intel-rapl:N zones ("" = DefaultPowercapRoot).
	PowercapRoot string
	// WattsPerCore is the assumed power of one busy core for the estimate
	// (0 = DefaultWattsPerCore).
	WattsPerCore float64
	// GPU adds the energy of every NVIDIA GPU from NVML when the library
	// can be loaded; set it when the measured work runs on the GPU (NVML
	// counts the whole GPU, idle or not).
	GPU bool
	// NVMLLibrary is the library to load ("" = libnvidia-ml.so.1).
	NVMLLibrary string
	// RAPLPoll is how often RAPL is read while the meter runs (0 =
	// DefaultRAPLPoll; negative: only at Start and Stop, which counts at
	// most one wrap per counter).
	RAPLPoll time.Duration
	// CPUTime returns the CPU time (user + system) of this process so far;
	// nil reads getrusage(RUSAGE_SELF), which includes onnxruntime's
	// threads.
	CPUTime func() (time.Duration, error)
}

// Reading is the energy of one Start–Stop interval.
type Reading struct {
	// Joules is the total: CPU (measured or estimated) plus GPU.
	Joules float64 `json:"joules"`
	// Source says where Joules came from: "rapl", "estimated", each
	// optionally followed by "+nvml".
	Source string `json:"source"`
	// Estimated is true when any part is the CPU-time estimate.
	Estimated  bool    `json:"estimated"`
	CPUJoules  float64 `json:"cpu_joules"`
	GPUJoules  float64 `json:"gpu_joules"`
	CPUSeconds float64 `json:"cpu_seconds"`
	// WallSeconds is the interval's length.
	WallSeconds float64 `json:"wall_seconds"`
	// Method says what was read (zones, devices) or assumed, and why a
	// source was not available.
	Method string `json:"method"`
}

// KWh converts the energy to kilowatt-hours (1 kWh = 3.6 MJ).
func (r Reading) KWh() float64 { return r.Joules / 3.6e6 }

// CO2eGrams is the emission of the energy at a grid intensity in
// gCO2e/kWh: kWh × intensity.
func (r Reading) CO2eGrams(gramsPerKWh float64) float64 { return r.KWh() * gramsPerKWh }

// PerUnit divides the energy by a count (samples, generated tokens); 0
// when there is nothing to divide by, so that JSON stays valid.
func (r Reading) PerUnit(n int) float64 {
	if n <= 0 {
		return 0
	}
	return r.Joules / float64(n)
}

// Meter measures the energy of an interval: RAPL when readable, else an
// estimate from CPU time; plus NVML when asked for GPUs. Use one meter for
// one interval at a time.
type Meter struct {
	opts MeterOptions

	start    time.Time
	cpuStart time.Duration
	rapl     *raplCounters
	raplErr  error
	nvml     *nvmlCounters
	nvmlErr  error
	stopPoll chan struct{}
	pollDone chan struct{}
	running  bool
}

// NewMeter returns a meter; nothing is read until Start.
func NewMeter(opts MeterOptions) *Meter {
	if opts.PowercapRoot == "" {
		opts.PowercapRoot = DefaultPowercapRoot
	}
	if opts.WattsPerCore == 0 {
		opts.WattsPerCore = DefaultWattsPerCore
	}
	if opts.RAPLPoll == 0 {
		opts.RAPLPoll = DefaultRAPLPoll
	}
	if opts.CPUTime == nil {
		opts.CPUTime = processCPUTime
	}
	return &Meter{opts: opts}
}

// Start begins an interval. Unreadable RAPL or NVML is not an error (the
// reading says what was used instead); failing to read the process's CPU
// time is.
func (m *Meter) Start() error {
	if m.running {
		return errors.New("eval: energy meter already started")
	}
	if m.opts.WattsPerCore < 0 || math.IsNaN(m.opts.WattsPerCore) {
		return fmt.Errorf("eval: energy meter: watts per core %g is negative", m.opts.WattsPerCore)
	}
	cpu, err := m.opts.CPUTime()
	if err != nil {
		return fmt.Errorf("eval: energy meter: process CPU time: %w", err)
	}
	m.rapl, m.raplErr = openRAPL(m.opts.PowercapRoot)
	m.nvml, m.nvmlErr = nil, nil
	if m.opts.GPU {
		m.nvml, m.nvmlErr = openNVML(m.opts.NVMLLibrary)
	}
	m.cpuStart, m.start, m.running = cpu, time.Now(), true
	if m.rapl != nil && m.opts.RAPLPoll > 0 {
		m.stopPoll, m.pollDone = make(chan struct{}), make(chan struct{})
		go m.poll(m.rapl, m.opts.RAPLPoll, m.stopPoll, m.pollDone)
	}
	return nil
}

func (m *Meter) poll(r *raplCounters, every time.Duration, stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			r.update() // an error here resurfaces at Stop's final read
		}
	}
}

// Stop ends the interval and returns its energy.
func (m *Meter) Stop() (Reading, error) {
	if !m.running {
		return Reading{}, errors.New("eval: energy meter stopped before it was started")
	}
	m.running = false
	if m.stopPoll != nil {
		close(m.stopPoll)
		<-m.pollDone
		m.stopPoll, m.pollDone = nil, nil
	}
	cpu, err := m.opts.CPUTime()
	if err != nil {
		return Reading{}, fmt.Errorf("eval: energy meter: process CPU time: %w", err)
	}
	r := Reading{
		CPUSeconds:  max(cpu-m.cpuStart, 0).Seconds(),
		WallSeconds: time.Since(m.start).Seconds(),
	}
	var sources, notes []string
	raplErr := m.raplErr
	if m.rapl != nil {
		if err := m.rapl.update(); err != nil {
			raplErr = err
		} else {
			r.CPUJoules = m.rapl.joules()
			sources = append(sources, SourceRAPL)
			notes = append(notes, fmt.Sprintf("RAPL energy_uj deltas of %s (package zones; wrap-around at max_energy_range_uj; all processes)", m.rapl.describe()))
		}
	}
	if len(sources) == 0 {
		r.CPUJoules = r.CPUSeconds * m.opts.WattsPerCore
		r.Estimated = true
		sources = append(sources, SourceEstimated)
		notes = append(notes, fmt.Sprintf("estimated: %.3f s of this process's CPU time × %g W per busy core (an assumption; RAPL unavailable: %v)",
			r.CPUSeconds, m.opts.WattsPerCore, raplErr))
	}
	switch {
	case !m.opts.GPU:
	case m.nvmlErr != nil:
		notes = append(notes, fmt.Sprintf("GPU energy not measured (NVML: %v)", m.nvmlErr))
	default:
		gj, desc, err := m.nvml.stop()
		if err != nil {
			notes = append(notes, fmt.Sprintf("GPU energy not measured (NVML: %v)", err))
		} else {
			r.GPUJoules = gj
			sources = append(sources, SourceNVML)
			notes = append(notes, "NVML total-energy deltas of "+desc)
		}
	}
	r.Joules = r.CPUJoules + r.GPUJoules
	r.Source = strings.Join(sources, "+")
	r.Method = strings.Join(notes, "; ")
	return r, nil
}

// processCPUTime is this process's user + system time.
func processCPUTime() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// raplZone is one package zone's counter.
type raplZone struct {
	dir, name   string
	max         uint64 // max_energy_range_uj: the counter wraps to 0 past it
	last, total uint64 // µJ
}

// raplCounters accumulate the package zones' energy; update may run on the
// poller while Stop waits for it, hence the lock.
type raplCounters struct {
	mu    sync.Mutex
	zones []*raplZone
}

// topZone matches package zones: intel-rapl:N, not their subzones
// (intel-rapl:N:M: core, uncore, dram) whose energy the package already
// counts (except DRAM, which is then not counted at all), nor
// intel-rapl-mmio:N, a second interface to the same package counter.
var topZone = regexp.MustCompile(`^intel-rapl:\d+$`)

// openRAPL finds the package zones under root and reads their counters.
// Zones named psys (the whole platform, which includes the packages) are
// skipped so nothing is counted twice.
func openRAPL(root string) (*raplCounters, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var rc raplCounters
	for _, e := range entries {
		if !topZone.MatchString(e.Name()) {
			continue
		}
		dir := filepath.Join(root, e.Name())
		name, _ := os.ReadFile(filepath.Join(dir, "name"))
		z := &raplZone{dir: dir, name: strings.TrimSpace(string(name))}
		if z.name == "psys" {
			continue
		}
		if z.max, err = readUint(filepath.Join(dir, "max_energy_range_uj")); err != nil {
			return nil, err
		}
		if z.last, err = readUint(filepath.Join(dir, "energy_uj")); err != nil {
			return nil, err // commonly permission denied: root-only since 2020 (CVE-2020-8694)
		}
		rc.zones = append(rc.zones, z)
	}
	if len(rc.zones) == 0 {
		return nil, fmt.Errorf("%s: no RAPL package zones (intel-rapl:N)", root)
	}
	slices.SortFunc(rc.zones, func(a, b *raplZone) int { return strings.Compare(a.dir, b.dir) })
	return &rc, nil
}

// update adds each zone's change since the last read.
func (rc *raplCounters) update() error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, z := range rc.zones {
		now, err := readUint(filepath.Join(z.dir, "energy_uj"))
		if err != nil {
			return err
		}
		z.total += raplDelta(z.last, now, z.max)
		z.last = now
	}
	return nil
}

// raplDelta is the energy between two readings of a counter that wraps to
// 0 after max: a smaller second reading means one wrap (more cannot be
// seen, hence the polling).
func raplDelta(prev, now, max uint64) uint64 {
	if now >= prev {
		return now - prev
	}
	return max - prev + now
}

func (rc *raplCounters) joules() float64 {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var uj uint64
	for _, z := range rc.zones {
		uj += z.total
	}
	return float64(uj) / 1e6
}

func (rc *raplCounters) describe() string {
	var s []string
	for _, z := range rc.zones {
		d := filepath.Base(z.dir)
		if z.name != "" {
			d += " (" + z.name + ")"
		}
		s = append(s, d)
	}
	return strings.Join(s, ", ")
}

func readUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// EnergyReport is a reading put in the units reports use: kWh, CO2e at
// a grid intensity, and per sample and per generated token.
type EnergyReport struct {
	Reading
	KWh             float64 `json:"kwh"`
	GridIntensity   float64 `json:"grid_gco2e_per_kwh"`
	CO2eGrams       float64 `json:"co2e_grams"`
	Samples         int     `json:"samples"`
	Tokens          int     `json:"tokens"`
	JoulesPerSample float64 `json:"joules_per_sample"`
	JoulesPerToken  float64 `json:"joules_per_token"`
}

// NewEnergyReport converts r; samples and tokens may be 0 (then the
// per-unit values are 0).
func NewEnergyReport(r Reading, gridGramsPerKWh float64, samples, tokens int) EnergyReport {
	return EnergyReport{Reading: r, KWh: r.KWh(), GridIntensity: gridGramsPerKWh,
		CO2eGrams: r.CO2eGrams(gridGramsPerKWh), Samples: samples, Tokens: tokens,
		JoulesPerSample: r.PerUnit(samples), JoulesPerToken: r.PerUnit(tokens)}
}

// String is one line that always names the source, so an estimate is
// never mistaken for a measurement.
func (e EnergyReport) String() string {
	s := fmt.Sprintf("energy [%s]: %.4g J = %.4g kWh → %.4g g CO2e at %g g/kWh", e.Source, e.Joules, e.KWh, e.CO2eGrams, e.GridIntensity)
	if e.Samples > 0 {
		s += fmt.Sprintf("; %.4g J per sample", e.JoulesPerSample)
	}
	if e.Tokens > 0 {
		s += fmt.Sprintf("; %.4g J per generated token", e.JoulesPerToken)
	}
	return s + fmt.Sprintf(" (%.2f s wall, %.2f s CPU; %s)", e.WallSeconds, e.CPUSeconds, e.Method)
}
