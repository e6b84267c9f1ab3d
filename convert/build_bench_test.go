package convert_test

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/onnxprune/onnxprune/convert"
	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

// TestMain lets the benchmarks convert in a child process of their own,
// so the child's peak RSS measures the conversion alone.
func TestMain(m *testing.M) {
	if src := os.Getenv("ONNXPRUNE_CONVERT_SRC"); src != "" {
		if err := convertChild(src, os.Getenv("ONNXPRUNE_CONVERT_DST")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("VmHWM %d\n", peakRSS())
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// synthetic1B is the ~1.2B-parameter model of the issue: 24 layers,
// hidden 2048, 16 heads, 8 KV heads, FFN 5632, vocab 32000.
var synthetic1B = convert.Config{Family: convert.FamilyLlama, Layers: 24, Hidden: 2048, Heads: 16, KVHeads: 8,
	FFN: 5632, Vocab: 32000, TiedEmbeddings: true, BOS: 1, EOS: 2}

func convertChild(src, dst string) error {
	var ck convert.Checkpoint
	if src == "synthetic-1b" {
		ck = convert.Synthetic(synthetic1B, 1)
	} else {
		var err error
		if ck, err = convert.Open(src, convert.OpenOptions{}); err != nil {
			return err
		}
		defer ck.Close()
	}
	return convert.Build(ck, dst, convert.BuildOptions{})
}

// peakRSS is this process's peak resident set (VmHWM) in bytes. The
// child reports its own: the rusage of a child started by os/exec
// (vfork) also counts the parent's peak at the time of the exec.
func peakRSS() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// runChild converts src to dst in a child process and returns its wall
// time and peak RSS.
func runChild(b *testing.B, src, dst string) (time.Duration, int64) {
	b.Helper()
	t0 := time.Now()
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "ONNXPRUNE_CONVERT_SRC="+src, "ONNXPRUNE_CONVERT_DST="+dst)
	out, err := child.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		b.Fatalf("convert %s: %v %s", src, err, stderr)
	}
	d := time.Since(t0)
	var rss int64
	if _, err := fmt.Sscanf(string(out), "VmHWM %d", &rss); err != nil {
		b.Fatalf("child reported no peak RSS: %q", out)
	}
	return d, rss
}

// BenchmarkConvertSafetensors1GiB converts a generated Hugging Face
// checkpoint of 1 GiB of float32 weights in a few large tensors
// (safetensors, read by convert.Open) and compares with `cp` and `cat` of
// the same file in the same run. The child's peak RSS must stay under twice
// the largest tensor plus 200 MiB.
func BenchmarkConvertSafetensors1GiB(b *testing.B) {
	dir := b.TempDir()
	ckpt := filepath.Join(dir, "ckpt")
	// 4 tensors of 256 MiB (embedding 32768×2048, and per layer 3 MLP
	// matrices 2048×8192 at 64 MiB plus attention) and small norms.
	cfg := convert.Config{Family: convert.FamilyLlama, Layers: 3, Hidden: 2048, Heads: 16, KVHeads: 16,
		FFN: 8192, Vocab: 32768, TiedEmbeddings: true, BOS: 1, EOS: 2}
	largest := writeHFCheckpoint(b, ckpt, cfg)
	st := filepath.Join(ckpt, "model.safetensors")
	fi, err := os.Stat(st)
	if err != nil {
		b.Fatal(err)
	}
	var cpTime, catTime, convTime time.Duration
	var maxRSS int64
	for i := 0; i < b.N; i++ {
		out := filepath.Join(dir, fmt.Sprint("out", i))
		os.Mkdir(out, 0o755)
		syscall.Sync() // neither side pays for the other's write-back
		t0 := time.Now()
		if msg, err := exec.Command("cp", st, out).CombinedOutput(); err != nil {
			b.Fatalf("cp: %v %s", err, msg)
		}
		cpTime += time.Since(t0)
		os.RemoveAll(out)
		os.Mkdir(out, 0o755)
		syscall.Sync()
		// cp copies inside the kernel (copy_file_range); cat moves the
		// bytes through user space, as any conversion must.
		t0 = time.Now()
		if msg, err := exec.Command("sh", "-c", `cat "$0" > "$1"`, st, filepath.Join(out, "copy")).CombinedOutput(); err != nil {
			b.Fatalf("cat: %v %s", err, msg)
		}
		catTime += time.Since(t0)
		os.RemoveAll(out)
		os.Mkdir(out, 0o755)
		syscall.Sync()

		d, rss := runChild(b, ckpt, filepath.Join(out, "model.onnx"))
		convTime += d
		maxRSS = max(maxRSS, rss)
		os.RemoveAll(out)
	}
	limit := 2*largest + 200<<20
	if maxRSS > limit {
		b.Errorf("peak RSS %d MiB over 2 × largest tensor (%d MiB) + 200 MiB", maxRSS>>20, largest>>20)
	}
	b.ReportMetric(float64(convTime)/float64(cpTime), "x-cp")
	b.ReportMetric(float64(maxRSS)/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(largest)/(1<<20), "largest-tensor-MiB")
	b.ReportMetric(float64(fi.Size())/(1<<20), "checkpoint-MiB")
	b.ReportMetric(float64(convTime)/float64(catTime), "x-cat")
	b.ReportMetric(float64(cpTime.Milliseconds())/float64(b.N), "cp-ms/op")
	b.ReportMetric(float64(convTime.Milliseconds())/float64(b.N), "convert-ms/op")
}

// BenchmarkSynthetic1B builds the 1.2B-parameter synthetic model (4.5 GiB
// of float32 weights, external data) in a child process and reports its
// time and peak RSS; the model must then load and run in onnxruntime,
// decoding through the KV cache as the full forward does.
func BenchmarkSynthetic1B(b *testing.B) {
	dir := b.TempDir()
	var total time.Duration
	var maxRSS int64
	path := filepath.Join(dir, "model.onnx")
	for i := 0; i < b.N; i++ {
		os.Remove(path)
		os.Remove(path + ".data")
		d, rss := runChild(b, "synthetic-1b", path)
		total += d
		maxRSS = max(maxRSS, rss)
	}
	fi, err := os.Stat(path + ".data")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(total.Seconds()/float64(b.N), "s/build")
	b.ReportMetric(float64(maxRSS)/(1<<20), "peakRSS-MiB")
	b.ReportMetric(float64(fi.Size())/(1<<20), "data-MiB")

	b.StopTimer()
	check1B.Do(func() { run1B(b, path) })
}

// check1B runs the 1B model once per process, however often the
// benchmark function is called.
var check1B sync.Once

func run1B(b *testing.B, path string) {
	testenv.ORTLibrary(b)
	cfg := convert.Synthetic(synthetic1B, 1).Config() // with head_dim filled in
	ids := []int64{1, 450, 2, 31999, 7}
	full := runFull(b, path, cfg, ids)
	d := decodeStepByStep(b, path, cfg, ids, full)
	b.Logf("1B model in onnxruntime: one token at a time through the KV cache vs full forward: max |diff| %.3g", d)
	if d > 1e-4 {
		b.Errorf("1B model: cached decoding differs from the full forward by %.3g", d)
	}
}

// writeHFCheckpoint writes a Hugging Face model directory (config.json,
// model.safetensors with float32 tensors in HF layout) for cfg, with
// deterministic non-zero values, and returns the largest tensor's size.
func writeHFCheckpoint(tb testing.TB, dir string, cfg convert.Config) int64 {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	hf := map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": cfg.Hidden, "intermediate_size": cfg.FFN, "num_hidden_layers": cfg.Layers,
		"num_attention_heads": cfg.Heads, "num_key_value_heads": cfg.KVHeads, "vocab_size": cfg.Vocab,
		"max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
		"tie_word_embeddings": cfg.TiedEmbeddings, "bos_token_id": cfg.BOS, "eos_token_id": cfg.EOS,
	}
	cj, _ := json.Marshal(hf)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cj, 0o644); err != nil {
		tb.Fatal(err)
	}
	tensors := convert.Synthetic(cfg, 1).Tensors() // names and shapes only
	header := map[string]any{}
	var off, largest int64
	for _, t := range tensors {
		n := 4 * graph.NumElements(t.Shape)
		header[t.Name] = map[string]any{"dtype": "F32", "shape": t.Shape, "data_offsets": []int64{off, off + n}}
		off += n
		largest = max(largest, n)
	}
	hj, _ := json.Marshal(header)
	f, err := os.Create(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 4<<20)
	binary.Write(w, binary.LittleEndian, uint64(len(hj)))
	w.Write(hj)
	var buf [4]byte
	x := uint32(12345)
	for _, t := range tensors {
		for i := graph.NumElements(t.Shape); i > 0; i-- {
			x = x*1664525 + 1013904223 // not zeros: no sparse-file shortcuts
			binary.LittleEndian.PutUint32(buf[:], math.Float32bits(float32(int32(x>>8)-1<<23)*(0.02/(1<<23))))
			w.Write(buf[:])
		}
	}
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return largest
}
