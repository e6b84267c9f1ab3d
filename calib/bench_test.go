package calib

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	ort "github.com/onnxprune/onnxprune/runtime"
)

// benchConfig is a synthetic 24-layer Llama small enough to run a few
// batches on two cores in seconds.
var benchConfig = convert.Config{Family: convert.FamilyLlama, Layers: 24, Hidden: 256, Heads: 8, KVHeads: 4,
	FFN: 688, Vocab: 2048, BOS: 1, EOS: 2}

func buildBench(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "model.onnx")
	if err := convert.Build(convert.Synthetic(benchConfig, 1), p, convert.BuildOptions{}); err != nil {
		tb.Fatal(err)
	}
	return p
}

func benchBatches(n, seq, size int) []Batch {
	var seqs [][]int
	for i := range n {
		s := []int{1}
		for t := 1; t < seq; t++ {
			s = append(s, 3+(i*31+t*17)%2000)
		}
		seqs = append(seqs, s)
	}
	return Batches(seqs, size)
}

// BenchmarkCalibrationOverhead compares calibration (taps at all 25
// boundaries, streaming statistics) with a plain forward pass over the
// same batches without taps, interleaved run by run. Target (issue 4):
// ≤ 1.15×.
func BenchmarkCalibrationOverhead(b *testing.B) {
	testenv.ORTLibrary(b)
	path := buildBench(b)
	m, err := graph.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		b.Fatal(err)
	}
	batches := benchBatches(32, 128, 4)
	ro := ort.Options{}
	// Both sides pay for their session: calibration builds one for the
	// tapped graph, the baseline one for the model as it is.
	plain := func() {
		sess, err := ort.NewSession(path, ort.Options{Outputs: []string{"logits"}})
		if err != nil {
			b.Fatal(err)
		}
		defer sess.Close()
		dec, _ := ort.NewDecoder(sess)
		for _, bt := range batches {
			in, err := dec.Inputs(bt.IDs, bt.Mask, bt.Positions, bt.Size, bt.SeqLen, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := sess.Run(in, []string{"logits"}); err != nil {
				b.Fatal(err)
			}
		}
	}
	calibrate := func() {
		if _, err := Calibrate(context.Background(), m, d, batches, Options{Runtime: ro}); err != nil {
			b.Fatal(err)
		}
	}
	plain() // warm-up
	calibrate()
	var tp, tc []time.Duration
	for range b.N {
		t0 := time.Now()
		plain()
		tp = append(tp, time.Since(t0))
		t0 = time.Now()
		calibrate()
		tc = append(tc, time.Since(t0))
	}
	slices.Sort(tp)
	slices.Sort(tc)
	b.ReportMetric(float64(tc[len(tc)/2])/float64(tp[len(tp)/2]), "x-plain")
	b.ReportMetric(tp[len(tp)/2].Seconds()*1000, "plain-ms")
	b.ReportMetric(tc[len(tc)/2].Seconds()*1000, "calib-ms")
}

// BenchmarkCalibrationMemory runs calibration on 16 and on 64 samples in
// child processes and reports both peak RSS: statistics stream, so the
// two should be close.
func BenchmarkCalibrationMemory(b *testing.B) {
	testenv.ORTLibrary(b)
	path := buildBench(b)
	rss := map[int]int64{}
	for range b.N {
		for _, n := range []int{16, 64} {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "ONNXPRUNE_CALIB_MODEL="+path, "ONNXPRUNE_CALIB_SAMPLES="+strconv.Itoa(n))
			out, err := cmd.CombinedOutput()
			if err != nil {
				b.Fatalf("child: %v %s", err, out)
			}
			peak, err := testenv.ParsePeakRSS(out)
			if err != nil {
				b.Fatal(err)
			}
			rss[n] = max(rss[n], peak)
		}
	}
	b.ReportMetric(float64(rss[16])/(1<<20), "rss16-MiB")
	b.ReportMetric(float64(rss[64])/(1<<20), "rss64-MiB")
	b.ReportMetric(float64(rss[64])/float64(rss[16]), "x-rss")
}

func TestMain(m *testing.M) {
	if path := os.Getenv("ONNXPRUNE_CALIB_MODEL"); path != "" {
		n, _ := strconv.Atoi(os.Getenv("ONNXPRUNE_CALIB_SAMPLES"))
		if err := childCalibrate(path, n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		testenv.ReportPeakRSS()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func childCalibrate(path string, n int) error {
	lib, err := ort.FindLibrary("")
	if err != nil {
		return err
	}
	if err := ort.Init(lib); err != nil {
		return err
	}
	m, err := graph.Load(path)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return err
	}
	_, err = Calibrate(context.Background(), m, d, benchBatches(n, 128, 4), Options{})
	return err
}
