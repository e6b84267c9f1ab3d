package eval

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Resident memory comes from /proc/self/status (Linux): VmRSS now, VmHWM
// the peak. Writing "5" to /proc/self/clear_refs resets the peak to the
// current RSS (Linux ≥ 4.0), which makes per-run peaks possible; where
// that is refused the peak is the process's since it started.

// freeMemory collects garbage and returns it to the operating system, so
// that memory measurements and runs start from the same state.
func freeMemory() { debug.FreeOSMemory() }

// currentRSS is the process's resident set size in bytes (0 if unknown).
func currentRSS() int64 { return procStatus("VmRSS:") }

// peakRSS is the process's resident-memory high-water mark in bytes (0 if
// unknown).
func peakRSS() int64 { return procStatus("VmHWM:") }

// resetPeakRSS resets the high-water mark to the current RSS and reports
// whether the kernel allowed it.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// canResetPeakRSS reports, once per process, whether resetPeakRSS works.
var canResetPeakRSS = sync.OnceValue(resetPeakRSS)

// peakRSSScope says what BenchResult.PeakRSSBytes covers.
func peakRSSScope() string {
	if canResetPeakRSS() {
		return "process peak RSS during the run (VmHWM, reset before each run); includes every loaded model, the Go heap and onnxruntime"
	}
	return "process peak RSS since it started (VmHWM; reset not permitted); includes every loaded model, the Go heap and onnxruntime"
}

// procStatus reads one "Key:   N kB" line of /proc/self/status.
func procStatus(key string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return parseStatusKB(b, key)
}

func parseStatusKB(status []byte, key string) int64 {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		f := strings.Fields(line[len(key):])
		if len(f) == 0 {
			return 0
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n
	}
	return 0
}

// gpuMemory asks nvidia-smi how much GPU memory the process pid uses. It
// returns 0 and "" when nvidia-smi is absent or does not list the process.
// onnxruntime's C API does not report its arena, and the figure includes
// the CUDA context (a few hundred MiB), which the source label says.
func gpuMemory(pid int) (int64, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits").Output()
	if err != nil {
		return 0, ""
	}
	mib := parseComputeApps(out, pid)
	if mib <= 0 {
		return 0, ""
	}
	return mib << 20, "nvidia-smi used_memory of this process (includes the CUDA context)"
}

// parseComputeApps sums the MiB nvidia-smi lists for pid (one line per
// GPU the process uses).
func parseComputeApps(out []byte, pid int) int64 {
	var total int64
	for line := range strings.SplitSeq(string(out), "\n") {
		f := strings.Split(line, ",")
		if len(f) != 2 {
			continue
		}
		p, err1 := strconv.Atoi(strings.TrimSpace(f[0]))
		m, err2 := strconv.ParseInt(strings.TrimSpace(f[1]), 10, 64)
		if err1 == nil && err2 == nil && p == pid {
			total += m
		}
	}
	return total
}
