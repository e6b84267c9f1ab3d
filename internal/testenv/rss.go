package testenv

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PeakRSS returns this process's peak resident set size in bytes
// (VmHWM). Unlike a child's getrusage ru_maxrss, which starts from the
// parent's peak at fork, VmHWM belongs to the address space exec created,
// so a benchmark's child process measures itself alone.
func PeakRSS() (int64, error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("testenv: no VmHWM in /proc/self/status")
}

// ReportPeakRSS prints the peak RSS on a line a parent can parse with
// ParsePeakRSS; benchmark children call it last.
func ReportPeakRSS() {
	if n, err := PeakRSS(); err == nil {
		fmt.Printf("onnxprune-peak-rss %d\n", n)
	}
}

// ParsePeakRSS finds the line ReportPeakRSS printed in a child's output.
func ParsePeakRSS(out []byte) (int64, error) {
	for _, line := range strings.Split(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, "onnxprune-peak-rss "); ok {
			return strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
		}
	}
	return 0, fmt.Errorf("testenv: the child reported no peak RSS")
}
