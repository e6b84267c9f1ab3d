package rewrite_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
	"github.com/onnxprune/onnxprune/rewrite"
)

// TestMain lets BenchmarkRemoveBlocks1GiB prune in a child process, so
// the child's peak RSS measures Load+FindBlocks+RemoveBlocks+Save alone.
func TestMain(m *testing.M) {
	if src := os.Getenv("ONNXPRUNE_PRUNE_SRC"); src != "" {
		if err := prune8(src, os.Getenv("ONNXPRUNE_PRUNE_DST")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		testenv.ReportPeakRSS()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func prune8(src, dst string) error {
	m, err := graph.Load(src)
	if err != nil {
		return err
	}
	d, err := graph.FindBlocks(m)
	if err != nil {
		return err
	}
	if err := rewrite.RemoveBlocks(m, d, []int{8, 9, 10, 11, 12, 13, 14, 15}); err != nil {
		return err
	}
	return graph.Save(m, dst, graph.SaveOptions{})
}

// BenchmarkRemoveBlocks1GiB removes 8 of 24 blocks from a synthetic model
// with ≥ 1 GiB of external weights, and compares with `cp` of the kept
// bytes (the pruned model's own files), measured in the same run.
// Targets (issue 4): ≤ 1.5× cp, peak RSS < 300 MiB.
func BenchmarkRemoveBlocks1GiB(b *testing.B) {
	dir := b.TempDir()
	src := filepath.Join(dir, "src", "model.onnx")
	os.Mkdir(filepath.Dir(src), 0o755)
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 24, Hidden: 1024, Heads: 16, KVHeads: 8, FFN: 2816, Vocab: 8192, BOS: 1, EOS: 2}
	if err := convert.Build(convert.Synthetic(cfg, 1), src, convert.BuildOptions{}); err != nil {
		b.Fatal(err)
	}
	fi, err := os.Stat(src + ".data")
	if err != nil || fi.Size() < 1<<30 {
		b.Fatalf("synthetic model has no ≥ 1 GiB external data: %v", err)
	}
	var tPrune, tCp time.Duration
	var rss int64
	var kept int64
	for i := range b.N {
		out := filepath.Join(dir, fmt.Sprint("out", i))
		os.Mkdir(out, 0o755)
		t0 := time.Now()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "ONNXPRUNE_PRUNE_SRC="+src, "ONNXPRUNE_PRUNE_DST="+filepath.Join(out, "model.onnx"))
		msg, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("prune: %v %s", err, msg)
		}
		tPrune += time.Since(t0)
		peak, err := testenv.ParsePeakRSS(msg)
		if err != nil {
			b.Fatal(err)
		}
		rss = max(rss, peak)
		fk, _ := os.Stat(filepath.Join(out, "model.onnx.data"))
		kept = fk.Size()

		cpDir := filepath.Join(dir, fmt.Sprint("cp", i))
		os.Mkdir(cpDir, 0o755)
		t0 = time.Now()
		if msg, err := exec.Command("cp", filepath.Join(out, "model.onnx"), filepath.Join(out, "model.onnx.data"), cpDir).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, msg)
		}
		tCp += time.Since(t0)
		os.RemoveAll(out)
		os.RemoveAll(cpDir)
	}
	b.ReportMetric(float64(tPrune)/float64(tCp), "x-cp")
	b.ReportMetric(float64(rss)/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(fi.Size())/(1<<30), "src-GiB")
	b.ReportMetric(float64(kept)/(1<<30), "kept-GiB")
}
