package eval

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

var updateReport = flag.Bool("update-report", false, "rewrite eval/testdata/report.golden.{json,md} from the sample report")

// sampleReport is a two-point sweep with every optional part filled, so
// that the golden files show every field name.
func sampleReport() *Report {
	bench := func(model string, blocks int, params, file int64, prefill, tps []float64) *BenchResult {
		r := &BenchResult{Model: model, FileBytes: file, Params: params, Blocks: blocks, KVCache: true, Device: "cpu",
			PromptLen: 128, DecodeTokens: 64, Warmup: 1, Runs: 3, LoadSeconds: 0.5,
			PrefillMS: NewStat(prefill), DecodeTokensPerS: NewStat(tps), RSSLoadBytes: 300 << 20, PeakRSSBytes: 900 << 20,
			PeakRSSScope: "process peak RSS during the run", GPUMemoryBytes: 1 << 30, GPUMemorySource: "nvidia-smi",
			Energy: &BenchEnergy{Source: "rapl", Method: "RAPL energy_uj deltas", PrefillJoules: NewStat([]float64{2, 2.5, 3}),
				DecodeJoulesPerToken: NewStat([]float64{0.5, 0.4, 0.6})}}
		var pre, ms []float64
		for i := range prefill {
			pre = append(pre, 128/prefill[i]*1000)
			ms = append(ms, 1000/tps[i])
		}
		r.PrefillTokensPerS, r.DecodeMSPerToken = NewStat(pre), NewStat(ms)
		return r
	}
	a := bench("m/model.onnx", 24, 71721472, 287195328, []float64{80, 90, 85}, []float64{80, 90, 85})
	b := bench("out/k6/model.onnx", 18, 54315520, 217494935, []float64{64, 70, 68}, []float64{104, 118, 110})
	return &Report{Schema: ReportSchema, Tool: "onnxprune sweep", Created: "2026-01-02T03:04:05Z",
		Model: "m/model.onnx", Blocks: 24, Params: 71721472, FileBytes: 287195328,
		Strategy: "angular", Selection: "the contiguous run minimising d(l, k)",
		Quality: QualitySetup{Metric: "perplexity", Data: "valid.txt", Samples: 50, SeqLen: 256, Method: "per sample, BOS first"},
		Bench: &BenchSetup{PromptLen: 128, DecodeTokens: 64, Runs: 3, Warmup: 1, Seed: 1, Device: "cpu",
			Interleaving: "A B A B"},
		Environment: Environment{OS: "linux", Arch: "amd64", CPU: "Test CPU", CPUs: 2, Go: "go1.26", ONNXRuntime: "1.24.1"},
		Points: []SweepPoint{
			{Removed: 0, Blocks: 24, RemovedBlocks: []int{}, Model: "m/model.onnx", Params: 71721472, FileBytes: 287195328,
				Perplexity: 4, MeanNLL: 1.386, TokensScored: 5000, EvalSeconds: 2, Bench: a},
			{Removed: 6, Blocks: 18, RemovedBlocks: []int{9, 10, 11, 12, 13, 14}, Model: "out/k6/model.onnx", Params: 54315520, FileBytes: 217494935,
				Plan:       &PointPlan{Strategy: "angular", Score: 0.25, Reason: "blocks 9-14: smallest angular distance", File: "k6/plan.json"},
				Perplexity: 20, MeanNLL: 2.996, TokensScored: 5000, EvalSeconds: 1.5, Bench: b, VsBase: Compare(a, b)},
		},
	}
}

// golden compares got with testdata/name, or rewrites it with -update-report.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateReport {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./eval -run %s -update-report)", err, t.Name())
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from the golden file (if the change is intended, run go test ./eval -run %s -update-report):\n%s",
			path, t.Name(), firstDiff(string(want), string(got)))
	}
}

func firstDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := range max(len(w), len(g)) {
		var a, b string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			b = g[i]
		}
		if a != b {
			return "line " + strconv.Itoa(i+1) + ":\n want " + a + "\n  got " + b
		}
	}
	return ""
}

// TestReportJSONGolden pins the JSON field names: report.json is a
// contract (fields are added, never renamed or removed), so a change here
// must be deliberate.
func TestReportJSONGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.json", b.Bytes())

	// It reads back to the same report.
	path := filepath.Join(t.TempDir(), "report.json")
	os.WriteFile(path, b.Bytes(), 0o644)
	r, err := ReadReport(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r, sampleReport()) {
		t.Fatal("report.json does not read back to the report written")
	}
}

// TestReportJSONNames checks that every JSON field name is snake_case and
// that no two fields of a struct share one, for the types a report holds.
func TestReportJSONNames(t *testing.T) {
	for _, v := range []any{Report{}, SweepPoint{}, BenchResult{}, Comparison{}, Stat{}, BenchEnergy{}, BenchSetup{}, QualitySetup{}, Environment{}, PointPlan{}} {
		typ := reflect.TypeOf(v)
		seen := map[string]bool{}
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag != strings.ToLower(tag) || strings.ContainsAny(tag, "- ") {
				t.Errorf("%s.%s: JSON name %q is not snake_case", typ.Name(), typ.Field(i).Name, tag)
			}
			if seen[tag] {
				t.Errorf("%s: JSON name %q used twice", typ.Name(), tag)
			}
			seen[tag] = true
		}
	}
	var m map[string]any
	var b bytes.Buffer
	sampleReport().WriteJSON(&b)
	if err := json.Unmarshal(b.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"schema", "model", "blocks", "strategy", "quality", "bench", "environment", "points"} {
		if _, ok := m[k]; !ok {
			t.Errorf("report.json has no %q", k)
		}
	}
}

func TestReportMarkdownGolden(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteMarkdown(&b, "quality.svg", "speed.svg"); err != nil {
		t.Fatal(err)
	}
	golden(t, "report.golden.md", b.Bytes())
}

// TestReportMarkdownWithoutBench: a quality-only sweep has no speed
// columns and no empty sections.
func TestReportMarkdownWithoutBench(t *testing.T) {
	r := sampleReport()
	r.Bench = nil
	for i := range r.Points {
		r.Points[i].Bench, r.Points[i].VsBase = nil, nil
	}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b, "quality.svg"); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, bad := range []string{"decode tok/s", "Speed", "speed.svg", "peak RSS"} {
		if strings.Contains(md, bad) {
			t.Errorf("quality-only report mentions %q:\n%s", bad, md)
		}
	}
	for _, want := range []string{"| 6 | 9-14 | 18 |", "×5", "blocks 9-14: smallest angular distance", "![quality](quality.svg)"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestFormatting(t *testing.T) {
	cases := []struct{ got, want string }{
		{blockList(nil), "–"},
		{blockList([]int{3}), "3"},
		{blockList([]int{2, 3, 4, 7}), "2-4,7"},
		{blockList([]int{1, 4}), "1,4"},
		{relChange(4.4, &SweepPoint{Perplexity: 4}), "+10.0%"},
		{relChange(40, &SweepPoint{Perplexity: 4}), "×10"},
		{relChange(4, &SweepPoint{Perplexity: 4}), "–"},
		{fmtCount(1234567), "1,234,567"},
		{fmtBytes(3 << 20), "3.00 MiB"},
		{formatTick(0.30000000000000004), "0.3"},
		{formatTick(934902.2686), "9.35e5"},
		{formatTick(100000), "1e5"},
		{formatTick(2500), "2500"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}
