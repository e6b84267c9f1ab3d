package eval

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strconv"
	"strings"

	ort "github.com/onnxprune/onnxprune/runtime"

	"github.com/onnxprune/onnxprune/graph"
)

// ReportSchema is the version of the Report JSON. Fields are added without
// changing it; it changes only if a field's meaning does.
const ReportSchema = 1

// Report is a pruning sweep: one model with 0, 1, …, K blocks removed by
// one strategy, each point evaluated and (optionally) benchmarked. It is
// written as report.json; its field names are a stable contract — added,
// never renamed or removed — documented in the README.
type Report struct {
	Schema  int    `json:"schema"`
	Tool    string `json:"tool"`
	Created string `json:"created"` // RFC 3339, UTC
	// Model is the unpruned model; Blocks, Params and FileBytes describe it.
	Model     string `json:"model"`
	Blocks    int    `json:"blocks"`
	Params    int64  `json:"params"`
	FileBytes int64  `json:"file_bytes"`
	// Strategy chose the blocks (angular, bi, last, sleb); Selection says
	// from what (the calibration data and statistic).
	Strategy  string `json:"strategy"`
	Selection string `json:"selection"`
	// Quality says how every point's quality was measured.
	Quality QualitySetup `json:"quality"`
	// Bench says how speed was measured; absent when it was not.
	Bench       *BenchSetup  `json:"bench,omitempty"`
	Environment Environment  `json:"environment"`
	Points      []SweepPoint `json:"points"`
}

// QualitySetup describes the quality measurement shared by all points.
type QualitySetup struct {
	Metric  string `json:"metric"` // "perplexity"
	Data    string `json:"data"`
	Samples int    `json:"samples"`
	SeqLen  int    `json:"seq_len"`
	// Method is the evaluation's own description (context, BOS policy).
	Method string `json:"method"`
}

// BenchSetup describes the speed measurement shared by all points.
type BenchSetup struct {
	PromptLen    int    `json:"prompt_len"`
	DecodeTokens int    `json:"decode_tokens"`
	Runs         int    `json:"runs"`
	Warmup       int    `json:"warmup"`
	Seed         uint64 `json:"seed"`
	Device       string `json:"device"`
	Threads      int    `json:"threads"`
	// Interleaving says which runs were taken side by side.
	Interleaving string `json:"interleaving"`
}

// Environment is the machine the numbers come from.
type Environment struct {
	OS          string `json:"os"`
	Arch        string `json:"arch"`
	CPU         string `json:"cpu"`
	CPUs        int    `json:"cpus"`
	Go          string `json:"go"`
	ONNXRuntime string `json:"onnxruntime"`
}

// CurrentEnvironment describes this machine.
func CurrentEnvironment() Environment {
	return Environment{OS: runtime.GOOS, Arch: runtime.GOARCH, CPU: cpuModel(), CPUs: runtime.NumCPU(),
		Go: runtime.Version(), ONNXRuntime: ort.ORTVersion}
}

// cpuModel is the first "model name" of /proc/cpuinfo ("" elsewhere).
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// SweepPoint is the model with Removed blocks removed.
type SweepPoint struct {
	Removed int `json:"removed"` // k
	Blocks  int `json:"blocks"`  // L − k
	// RemovedBlocks are indices in the unpruned model (empty for k = 0).
	RemovedBlocks []int `json:"removed_blocks"`
	// Model is the file evaluated: the unpruned model for k = 0.
	Model     string `json:"model"`
	Params    int64  `json:"params"`
	FileBytes int64  `json:"file_bytes"`
	// Plan is why these blocks (absent for k = 0).
	Plan *PointPlan `json:"plan,omitempty"`
	// Perplexity is exp(MeanNLL) over TokensScored tokens.
	Perplexity   float64 `json:"perplexity"`
	MeanNLL      float64 `json:"mean_nll"`
	TokensScored int64   `json:"tokens_scored"`
	EvalSeconds  float64 `json:"eval_seconds"`
	// Bench is this model's speed and memory; VsBase compares it with the
	// unpruned model measured in the same interleaved runs (absent for
	// k = 0).
	Bench  *BenchResult `json:"bench,omitempty"`
	VsBase *Comparison  `json:"vs_base,omitempty"`
}

// PointPlan summarises a selection plan (the full plan is File).
type PointPlan struct {
	Strategy string  `json:"strategy"`
	Score    float64 `json:"score"`
	Reason   string  `json:"reason"`
	File     string  `json:"file"` // plan.json, relative to the report
}

// WriteJSON writes r as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("eval: report: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// ReadReport reads a report written by WriteJSON.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("eval: %s: not a sweep report: %v", path, err)
	}
	return &r, nil
}

// base is the k = 0 point, or nil.
func (r *Report) base() *SweepPoint {
	for i := range r.Points {
		if r.Points[i].Removed == 0 {
			return &r.Points[i]
		}
	}
	return nil
}

// WriteMarkdown renders r: what was measured and how, one summary row per
// point, the plots (files named in plots, relative to the report), and a
// table per point with the plan's reason.
func (r *Report) WriteMarkdown(w io.Writer, plots ...string) error {
	var b strings.Builder
	base := r.base()
	fmt.Fprintf(&b, "# Pruning sweep: `%s`\n\n", r.Model)
	fmt.Fprintf(&b, "%d blocks, %s parameters, %s. Strategy **%s**", r.Blocks, fmtCount(r.Params), fmtBytes(r.FileBytes), r.Strategy)
	if r.Selection != "" {
		fmt.Fprintf(&b, ": %s", r.Selection)
	}
	b.WriteString(".\n\n")
	q := r.Quality
	fmt.Fprintf(&b, "- **Quality**: %s on `%s`", q.Metric, q.Data)
	if q.Method != "" {
		fmt.Fprintf(&b, "; %s", q.Method)
	} else {
		fmt.Fprintf(&b, " (%d samples, at most %d tokens each)", q.Samples, q.SeqLen)
	}
	b.WriteString(".\n")
	if s := r.Bench; s != nil {
		threads := strconv.Itoa(s.Threads)
		if s.Threads == 0 {
			threads = "onnxruntime's default"
		}
		fmt.Fprintf(&b, "- **Speed**: prefill of %d random tokens, then %d decode steps through the KV cache, batch 1; "+
			"%d runs after %d warm-up, median [min–max]; %s; device %s, threads %s.",
			s.PromptLen, s.DecodeTokens, s.Runs, s.Warmup, s.Interleaving, s.Device, threads)
		if bp := r.base(); bp != nil && bp.Bench != nil {
			fmt.Fprintf(&b, " Peak RSS: %s.", bp.Bench.PeakRSSScope)
		}
		b.WriteString("\n")
	}
	e := r.Environment
	fmt.Fprintf(&b, "- **Machine**: %s, %d CPUs, %s/%s, onnxruntime %s, %s; %s.\n\n", orDash(e.CPU), e.CPUs, e.OS, e.Arch, e.ONNXRuntime, e.Go, r.Created)

	// Summary: one row per point.
	cols := []string{"removed", "blocks removed", "blocks", "params", "file", q.Metric, "Δ"}
	if r.Bench != nil {
		cols = append(cols, "decode tok/s", "decode speedup", "ideal", "of ideal", "prefill ms", "prefill speedup")
	}
	b.WriteString("| " + strings.Join(cols, " | ") + " |\n|")
	for range cols {
		b.WriteString("---:|")
	}
	b.WriteString("\n")
	for _, p := range r.Points {
		row := []string{strconv.Itoa(p.Removed), blockList(p.RemovedBlocks), strconv.Itoa(p.Blocks),
			fmtCount(p.Params), fmtBytes(p.FileBytes), formatTick(p.Perplexity), relChange(p.Perplexity, base)}
		if r.Bench != nil {
			row = append(row, r.speedCells(p)...)
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	if r.Bench != nil {
		fmt.Fprintf(&b, "\nSpeedups are B/A ratios of medians against the unpruned model measured in the same runs; "+
			"ideal is L/(L−k) = the speedup if all time were spent in the blocks.\n")
	}
	b.WriteString("\n")
	for _, p := range plots {
		fmt.Fprintf(&b, "![%s](%s)\n\n", strings.TrimSuffix(p, pathExt(p)), p)
	}

	// Details: a table per point.
	for _, p := range r.Points {
		title := "unpruned"
		if p.Removed > 0 {
			title = "removed " + blockList(p.RemovedBlocks)
		}
		fmt.Fprintf(&b, "## k = %d: %s\n\n", p.Removed, title)
		if p.Plan != nil {
			fmt.Fprintf(&b, "%s (strategy %s, score %.4g; plan: `%s`).\n\n", p.Plan.Reason, p.Plan.Strategy, p.Plan.Score, p.Plan.File)
		}
		b.WriteString("| | |\n|---|---|\n")
		fmt.Fprintf(&b, "| model | `%s` |\n", p.Model)
		fmt.Fprintf(&b, "| blocks | %d |\n", p.Blocks)
		fmt.Fprintf(&b, "| parameters | %s%s |\n", fmtCount(p.Params), relParens(float64(p.Params), float64(r.Params)))
		fmt.Fprintf(&b, "| file | %s%s |\n", fmtBytes(p.FileBytes), relParens(float64(p.FileBytes), float64(r.FileBytes)))
		fmt.Fprintf(&b, "| %s | %s (NLL %.4f/token, %s tokens, %.1f s)%s |\n", q.Metric, formatTick(p.Perplexity), p.MeanNLL,
			fmtCount(p.TokensScored), p.EvalSeconds, qualityChange(p, base))
		if bt := p.Bench; bt != nil {
			fmt.Fprintf(&b, "| prefill %d tokens | %s ms (%s tok/s) |\n", bt.PromptLen, statString(bt.PrefillMS), sig4(bt.PrefillTokensPerS.Median))
			fmt.Fprintf(&b, "| decode %d tokens | %s tok/s (%s ms/token) |\n", bt.DecodeTokens, statString(bt.DecodeTokensPerS), sig4(bt.DecodeMSPerToken.Median))
			if c := p.VsBase; c != nil {
				fmt.Fprintf(&b, "| vs unpruned | decode %.3f× [%.3f–%.3f over run pairs], prefill %.3f×; ideal %d/%d = %.3f× (decode %.1f%%, prefill %.1f%% of ideal) |\n",
					c.DecodeSpeedup, c.DecodeSpeedupPairs.Min, c.DecodeSpeedupPairs.Max, c.PrefillSpeedup,
					c.BlocksA, c.BlocksB, c.IdealSpeedup, 100*c.DecodeOfIdeal, 100*c.PrefillOfIdeal)
			}
			fmt.Fprintf(&b, "| session load | %.2f s, +%s resident |\n", bt.LoadSeconds, fmtBytes(bt.RSSLoadBytes))
			fmt.Fprintf(&b, "| peak RSS (process) | %s |\n", fmtBytes(bt.PeakRSSBytes))
			if bt.GPUMemoryBytes > 0 {
				fmt.Fprintf(&b, "| GPU memory | %s (%s) |\n", fmtBytes(bt.GPUMemoryBytes), bt.GPUMemorySource)
			}
			if en := bt.Energy; en != nil {
				fmt.Fprintf(&b, "| energy | prefill %s J, decode %s J/token (%s) |\n", statString(en.PrefillJoules), statString(en.DecodeJoulesPerToken), en.Source)
			}
		}
		b.WriteString("\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// speedCells are the summary table's speed columns for p.
func (r *Report) speedCells(p SweepPoint) []string {
	if p.Bench == nil {
		return []string{"–", "–", "–", "–", "–", "–"}
	}
	dec, ideal, of, pre := "1.000×", "1.000×", "–", "1.000×"
	if c := p.VsBase; c != nil {
		dec = fmt.Sprintf("%.3f×", c.DecodeSpeedup)
		pre = fmt.Sprintf("%.3f×", c.PrefillSpeedup)
		if c.IdealSpeedup > 0 {
			ideal = fmt.Sprintf("%.3f×", c.IdealSpeedup)
			of = fmt.Sprintf("%.1f%%", 100*c.DecodeOfIdeal)
		}
	}
	return []string{statString(p.Bench.DecodeTokensPerS), dec, ideal, of, statString(p.Bench.PrefillMS), pre}
}

// statString is "median [min–max]" with 4 significant digits.
func statString(s Stat) string {
	if math.IsNaN(s.Median) {
		return "–"
	}
	return fmt.Sprintf("%s [%s–%s]", sig4(s.Median), sig4(s.Min), sig4(s.Max))
}

// sig4 prints 4 significant digits, but whole numbers from 10,000 up
// without an exponent (80901, not 8.09e+04).
func sig4(v float64) string {
	if math.Abs(v) >= 1e4 && math.Abs(v) < 1e12 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// blockList is "3", "2-4" or "1,4"; "–" for none.
func blockList(b []int) string {
	if len(b) == 0 {
		return "–"
	}
	return graph.FormatBlocks(b)
}

// relChange is the change of v against the base point's perplexity:
// a percentage, or a factor once it is more than ×3.
func relChange(v float64, base *SweepPoint) string {
	if base == nil || base.Perplexity == 0 || math.IsNaN(v) || v == base.Perplexity {
		return "–"
	}
	if f := v / base.Perplexity; f > 3 {
		return "×" + formatTick(math.Round(f*10)/10)
	}
	return fmt.Sprintf("%+.1f%%", 100*(v/base.Perplexity-1))
}

// qualityChange is " (change)" of p against the base, or "" for the base.
func qualityChange(p SweepPoint, base *SweepPoint) string {
	if c := relChange(p.Perplexity, base); c != "–" {
		return " (" + c + ")"
	}
	return ""
}

// relParens is " (+x.x%)" of v against ref, or "" when v equals ref.
func relParens(v, ref float64) string {
	if ref == 0 || v == ref {
		return ""
	}
	return fmt.Sprintf(" (%+.1f%%)", 100*(v/ref-1))
}

func orDash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func pathExt(p string) string {
	if i := strings.LastIndexByte(p, '.'); i > strings.LastIndexByte(p, '/') {
		return p[i:]
	}
	return ""
}

// fmtCount writes 1234567 as 1,234,567.
func fmtCount(n int64) string {
	if n < 0 {
		return "-" + fmtCount(-n)
	}
	s := strconv.FormatInt(n, 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// fmtBytes is a size in KiB, MiB or GiB.
func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
