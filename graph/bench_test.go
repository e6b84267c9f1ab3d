package graph_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/graph/onnxpb"
	"github.com/onnxprune/onnxprune/internal/irtest"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

// TestMain lets the benchmark run Load+Save in a child process of its
// own, so the child's peak RSS measures Load+Save alone.
func TestMain(m *testing.M) {
	if src := os.Getenv("ONNXPRUNE_LOADSAVE_SRC"); src != "" {
		mod, err := graph.Load(src)
		if err == nil {
			err = graph.Save(mod, os.Getenv("ONNXPRUNE_LOADSAVE_DST"), graph.SaveOptions{})
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		testenv.ReportPeakRSS()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// writeBigModel writes a chain of MatMuls whose weights, n tensors of
// size bytes each, live in one external data file.
func writeBigModel(tb testing.TB, dir string, n, size int) string {
	path := filepath.Join(dir, "big.onnx")
	f, err := os.Create(path + ".data")
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	buf := make([]byte, size)
	for i := range buf {
		buf[i] = byte(i*7 + i>>11) // not zeros: no sparse-file shortcuts
	}
	side := int64(1)
	for side*side*4 < int64(size) {
		side++
	}
	b := irtest.New("big").Input("x", 1, side)
	prev := "x"
	for i := 0; i < n; i++ {
		buf[0] = byte(i)
		if _, err := w.Write(buf); err != nil {
			tb.Fatal(err)
		}
		name := fmt.Sprintf("w%d", i)
		b.Node("MatMul", "mm"+strconv.Itoa(i), []string{prev, name}, []string{name + "_out"})
		prev = name + "_out"
		m := b.Graph()
		m.Initializer = append(m.Initializer, &onnxpb.TensorProto{
			Name:         proto.String(name),
			DataType:     proto.Int32(int32(onnxpb.TensorProto_UINT8)),
			Dims:         []int64{int64(size)},
			DataLocation: onnxpb.TensorProto_EXTERNAL.Enum(),
			ExternalData: []*onnxpb.StringStringEntryProto{
				{Key: proto.String("location"), Value: proto.String("big.onnx.data")},
				{Key: proto.String("offset"), Value: proto.String(strconv.Itoa(i * size))},
				{Key: proto.String("length"), Value: proto.String(strconv.Itoa(size))},
			},
		})
	}
	b.Output(prev, 1, side)
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	f.Close()
	data, _ := proto.Marshal(b.Model().Proto)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		tb.Fatal(err)
	}
	return path
}

// BenchmarkLoadSave1GiB loads and saves a model with 1 GiB of external
// data and compares with `cp` of the same files, measured in the same
// run. Targets (issue 2): peak RSS < 200 MiB, time ≤ 1.5× cp.
func BenchmarkLoadSave1GiB(b *testing.B) {
	dir := b.TempDir()
	src := writeBigModel(b, dir, 64, 16<<20)
	var cpTime, saveTime time.Duration
	var maxRSS int64
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, fmt.Sprint("out", i))
		os.Mkdir(out, 0o755)
		t0 := time.Now()
		cp := exec.Command("cp", src, src+".data", out)
		if msg, err := cp.CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, msg)
		}
		cpTime += time.Since(t0)
		os.RemoveAll(out)
		os.Mkdir(out, 0o755)

		t0 = time.Now()
		child := exec.Command(os.Args[0], "-test.run=^$")
		child.Env = append(os.Environ(), "ONNXPRUNE_LOADSAVE_SRC="+src, "ONNXPRUNE_LOADSAVE_DST="+filepath.Join(out, "big.onnx"))
		msg, err := child.CombinedOutput()
		if err != nil {
			b.Fatalf("load+save: %v %s", err, msg)
		}
		saveTime += time.Since(t0)
		rss, err := testenv.ParsePeakRSS(msg)
		if err != nil {
			b.Fatal(err)
		}
		maxRSS = max(maxRSS, rss)
		os.RemoveAll(out)
	}
	b.ReportMetric(float64(saveTime)/float64(cpTime), "x-cp")
	b.ReportMetric(float64(maxRSS)/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(cpTime.Milliseconds())/float64(b.N), "cp-ms/op")
}
