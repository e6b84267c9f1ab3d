package eval

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// orderRunner records the order in which Interleave calls it.
type orderRunner struct {
	name string
	log  *[]string
	fail int // fail on this call (1-based), 0 never
	n    int
}

func (r *orderRunner) Run(context.Context) (RunTiming, error) {
	r.n++
	*r.log = append(*r.log, r.name)
	if r.n == r.fail {
		return RunTiming{}, errors.New("boom")
	}
	// Encode the call number so the test can tell warm-ups from runs.
	return RunTiming{Prefill: time.Duration(r.n), Decode: time.Second, DecodeTokens: 1}, nil
}

func TestInterleaveOrder(t *testing.T) {
	cases := []struct {
		names          []string
		warmup, runs   int
		want           string
		wantFirstCall  int // call number of the first measured run
		wantPerRunner  int
		wantProgressed int
	}{
		{[]string{"A", "B"}, 1, 3, "A B A B A B A B", 2, 3, 8},
		{[]string{"A", "B"}, 0, 2, "A B A B", 1, 2, 4},
		{[]string{"A"}, 2, 2, "A A A A", 3, 2, 4},
		{[]string{"A", "B", "C"}, 1, 1, "A B C A B C", 2, 1, 6},
	}
	for _, c := range cases {
		t.Run(c.want, func(t *testing.T) {
			var log []string
			var runners []Runner
			for _, n := range c.names {
				runners = append(runners, &orderRunner{name: n, log: &log})
			}
			var calls []int
			got, err := Interleave(context.Background(), runners, c.warmup, c.runs, func(done, total int) {
				calls = append(calls, done)
				if total != c.wantProgressed {
					t.Errorf("progress total %d, want %d", total, c.wantProgressed)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(log, " "); s != c.want {
				t.Fatalf("order %q, want %q", s, c.want)
			}
			if len(calls) != c.wantProgressed || calls[len(calls)-1] != c.wantProgressed {
				t.Errorf("progress calls %v", calls)
			}
			for i, runs := range got {
				if len(runs) != c.wantPerRunner {
					t.Fatalf("runner %d: %d measured runs, want %d", i, len(runs), c.wantPerRunner)
				}
				if int(runs[0].Prefill) != c.wantFirstCall {
					t.Errorf("runner %d: first measured run is call %d, want %d (warm-ups discarded)", i, runs[0].Prefill, c.wantFirstCall)
				}
			}
		})
	}
}

func TestInterleaveStops(t *testing.T) {
	var log []string
	a, b := &orderRunner{name: "A", log: &log}, &orderRunner{name: "B", log: &log, fail: 2}
	if _, err := Interleave(context.Background(), []Runner{a, b}, 0, 5, nil); err == nil || err.Error() != "boom" {
		t.Fatalf("err = %v, want boom", err)
	}
	if s := strings.Join(log, " "); s != "A B A B" {
		t.Fatalf("ran %q after the failure", s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Interleave(ctx, []Runner{a}, 0, 1, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestNewStat(t *testing.T) {
	cases := []struct {
		in                []float64
		median, min, max_ float64
	}{
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
		{[]float64{2, 2, 9, 2, 2}, 2, 2, 9},
	}
	for _, c := range cases {
		s := NewStat(c.in)
		if s.Median != c.median || s.Min != c.min || s.Max != c.max_ {
			t.Errorf("NewStat(%v) = %+v, want median %g [%g–%g]", c.in, s, c.median, c.min, c.max_)
		}
		if !slices.Equal(s.Runs, c.in) {
			t.Errorf("NewStat(%v) reordered the runs: %v", c.in, s.Runs)
		}
	}
	if s := NewStat(nil); !math.IsNaN(s.Median) {
		t.Errorf("empty: %+v", s)
	}
}

func TestSummariseAndCompare(t *testing.T) {
	// A decodes 10 tokens in 1 s, 2 s, 1 s; B in 0.5 s, 1 s, 0.8 s.
	runs := func(prefill []time.Duration, decode []time.Duration) []RunTiming {
		var out []RunTiming
		for i := range prefill {
			out = append(out, RunTiming{Prefill: prefill[i], Decode: decode[i], DecodeTokens: 10, PeakRSS: int64(100 + i)})
		}
		return out
	}
	a := &BenchResult{Model: "a", Blocks: 24, Params: 1000, FileBytes: 4000, PromptLen: 100}
	b := &BenchResult{Model: "b", Blocks: 18, Params: 750, FileBytes: 3100, PromptLen: 100}
	a.summarise(runs([]time.Duration{100 * time.Millisecond, 120 * time.Millisecond, 110 * time.Millisecond},
		[]time.Duration{time.Second, 2 * time.Second, time.Second}), false)
	b.summarise(runs([]time.Duration{80 * time.Millisecond, 100 * time.Millisecond, 90 * time.Millisecond},
		[]time.Duration{500 * time.Millisecond, time.Second, 800 * time.Millisecond}), false)
	if a.DecodeTokensPerS.Median != 10 || a.DecodeTokensPerS.Min != 5 || a.PrefillMS.Median != 110 || a.PrefillTokensPerS.Median != 100/0.11 {
		t.Fatalf("A summarised as %+v", a)
	}
	if a.DecodeMSPerToken.Median != 100 || a.PeakRSSBytes != 102 || a.Energy != nil {
		t.Fatalf("A: ms/token %+v, peak %d, energy %v", a.DecodeMSPerToken, a.PeakRSSBytes, a.Energy)
	}
	c := Compare(a, b)
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-12 }
	switch {
	case !near(c.DecodeSpeedup, 12.5/10):
		t.Errorf("decode speedup %g, want median 12.5 / median 10", c.DecodeSpeedup)
	case !near(c.PrefillSpeedup, 110.0/90) || !near(c.PrefillLatencyRatio, 90.0/110):
		t.Errorf("prefill speedup %g, ratio %g", c.PrefillSpeedup, c.PrefillLatencyRatio)
	case !near(c.IdealSpeedup, 24.0/18) || !near(c.DecodeOfIdeal, 1.25/(24.0/18)):
		t.Errorf("ideal %g, of ideal %g", c.IdealSpeedup, c.DecodeOfIdeal)
	case !near(c.DecodeSpeedupPairs.Min, 1.25) || !near(c.DecodeSpeedupPairs.Max, 2):
		// Pairs: 20/10, 10/5, 12.5/10.
		t.Errorf("pairs %+v", c.DecodeSpeedupPairs)
	case c.ParamsRatio != 0.75 || c.FileRatio != 0.775:
		t.Errorf("ratios %g %g", c.ParamsRatio, c.FileRatio)
	}
	// No blocks on one side: no ideal.
	b.Blocks = 0
	if c := Compare(a, b); c.IdealSpeedup != 0 || c.DecodeOfIdeal != 0 {
		t.Errorf("ideal without blocks: %+v", c)
	}
}

func TestParseStatus(t *testing.T) {
	status := []byte("Name:\tx\nVmPeak:\t  3060 kB\nVmHWM:\t    1676 kB\nVmRSS:\t    1500 kB\nThreads:\t1\n")
	cases := []struct {
		key  string
		want int64
	}{
		{"VmHWM:", 1676 << 10},
		{"VmRSS:", 1500 << 10},
		{"Threads:", 1},
		{"VmSwap:", 0},
	}
	for _, c := range cases {
		if got := parseStatusKB(status, c.key); got != c.want {
			t.Errorf("%s = %d, want %d", c.key, got, c.want)
		}
	}
	if currentRSS() <= 0 || peakRSS() < currentRSS()/2 {
		t.Skipf("no /proc/self/status here (RSS %d, peak %d)", currentRSS(), peakRSS())
	}
}

func TestParseComputeApps(t *testing.T) {
	out := []byte("1234, 500\n99, 7000\n1234, 300\ngarbage\n")
	if got := parseComputeApps(out, 1234); got != 800 {
		t.Errorf("pid 1234: %d MiB, want 800 (two GPUs)", got)
	}
	if got := parseComputeApps(out, 5); got != 0 {
		t.Errorf("absent pid: %d", got)
	}
}
