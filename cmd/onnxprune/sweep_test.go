package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/calib"
	"github.com/onnxprune/onnxprune/eval"
	"github.com/onnxprune/onnxprune/internal/testenv"

	"github.com/onnxprune/onnxprune/graph"
)

// sweepFast keeps the end-to-end sweeps to a few seconds: few samples,
// short sequences, two measured runs of a short benchmark.
var sweepFast = []string{"--samples", "8", "--seq-len", "64", "--batch-size", "4", "--runs", "2", "--warmup", "0",
	"--prompt-len", "16", "--decode-tokens", "8", "--threads", "1"}

// TestSweepStories runs the whole sweep on the stories260K fixture with
// --max-remove 2 and checks every file it writes.
func TestSweepStories(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	text := filepath.Join("..", "..", "testdata", "text", "tinystories_valid200.txt")
	out := t.TempDir()
	code, stdout, errs := runCLI(t, append([]string{"sweep", model, "--max-remove", "2", "--data", text, "-o", out}, sweepFast...)...)
	if code != 0 {
		t.Fatalf("sweep: exit %d: %s", code, errs)
	}
	if !strings.Contains(stdout, "perplexity") || strings.Count(stdout, "\n") != 5 {
		t.Errorf("stdout: a header, a column line and 3 points expected:\n%s", stdout)
	}
	r, err := eval.ReadReport(filepath.Join(out, "report.json"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Blocks != 5 || r.Strategy != "angular" || len(r.Points) != 3 || r.Bench == nil || r.Quality.Samples != 8 {
		t.Fatalf("report: %+v", r)
	}
	for k, p := range r.Points {
		switch {
		case p.Removed != k || p.Blocks != 5-k || len(p.RemovedBlocks) != k:
			t.Errorf("point %d: %+v", k, p)
		case !(p.Perplexity > 1) || p.TokensScored == 0:
			t.Errorf("point %d: perplexity %g over %d tokens", k, p.Perplexity, p.TokensScored)
		case p.Bench == nil || len(p.Bench.DecodeTokensPerS.Runs) != 2:
			t.Errorf("point %d: bench %+v", k, p.Bench)
		case k == 0 && (p.Model != model || p.Plan != nil || p.VsBase != nil):
			t.Errorf("point 0 is not the unpruned model: %+v", p)
		case k > 0 && (p.VsBase == nil || p.VsBase.IdealSpeedup != 5/float64(5-k) || p.Params >= r.Params):
			t.Errorf("point %d: vs base %+v, params %d", k, p.VsBase, p.Params)
		}
		if k > 0 {
			for _, f := range []string{"stories260k_kv.onnx", "plan.json", "tok512.bin"} {
				if _, err := os.Stat(filepath.Join(out, "k"+string(rune('0'+k)), f)); err != nil {
					t.Errorf("k%d/%s not written", k, f)
				}
			}
			plan, err := calib.ReadPlan(filepath.Join(out, p.Plan.File))
			if err != nil || !slices.Equal(plan.Remove, p.RemovedBlocks) {
				t.Errorf("k%d: plan %v (%v) does not match the point's blocks %v", k, plan, err, p.RemovedBlocks)
			}
		}
	}
	// Each point is angular's choice for its k from the statistics the
	// sweep calibrated (and kept as stats.json).
	sb, err := os.ReadFile(filepath.Join(out, "stats.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sf StatsFile
	if err := json.Unmarshal(sb, &sf); err != nil || sf.Stats == nil {
		t.Fatalf("stats.json: %v", err)
	}
	for k := 1; k <= 2; k++ {
		want, _ := calib.SelectAngular(sf.Stats, k, false)
		if got := r.Points[k].RemovedBlocks; !slices.Equal(got, want.Remove) {
			t.Errorf("k=%d removed %v, angular on stats.json says %v", k, got, want.Remove)
		}
	}

	md, _ := os.ReadFile(filepath.Join(out, "report.md"))
	for _, want := range []string{"# Pruning sweep", "| removed | blocks removed |", "![quality](quality.svg)", "![speed](speed.svg)",
		"## k = 2: removed " + graph.FormatBlocks(r.Points[2].RemovedBlocks), "smallest angular distance"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, f := range []string{"quality.svg", "speed.svg", "stats.svg"} {
		b, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Errorf("%s not written", f)
			continue
		}
		if len(b) < 2000 || xml.Unmarshal(b, new(struct{})) != nil {
			t.Errorf("%s: %d bytes, or not XML", f, len(b))
		}
		if fi, _ := os.Stat(filepath.Join(out, f)); fi.Mode().Perm() != 0o644 {
			t.Errorf("%s has mode %v, want 0644", f, fi.Mode().Perm())
		}
	}

	// A second sweep into the same directory needs --force.
	code, _, errs = runCLI(t, append([]string{"sweep", model, "--max-remove", "1", "--data", text, "-o", out}, sweepFast...)...)
	if code != 1 || !strings.Contains(errs, "report.json exists (use --force") {
		t.Errorf("rerun without --force: exit %d, %q", code, errs)
	}
}

// TestSweepStrategies: last and sleb without a benchmark (--bench=false
// writes no speed plot); sleb's choices are nested, one block at a time.
func TestSweepStrategies(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	for _, s := range []string{"last", "sleb", "bi"} {
		t.Run(s, func(t *testing.T) {
			out := t.TempDir()
			code, _, errs := runCLI(t, append([]string{"sweep", model, "--max-remove", "2", "--strategy", s, "--bench=false",
				"--data", storiesText(t), "-o", out, "--json"}, sweepFast...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			r, err := eval.ReadReport(filepath.Join(out, "report.json"))
			if err != nil {
				t.Fatal(err)
			}
			if r.Bench != nil || r.Points[2].Bench != nil || r.Points[2].Plan.Strategy != s {
				t.Errorf("report %+v", r)
			}
			if _, err := os.Stat(filepath.Join(out, "speed.svg")); err == nil {
				t.Error("speed.svg written without a benchmark")
			}
			one, two := r.Points[1].RemovedBlocks, r.Points[2].RemovedBlocks
			switch s {
			case "last":
				if !slices.Equal(one, []int{3}) || !slices.Equal(two, []int{2, 3}) {
					t.Errorf("last: %v, %v", one, two)
				}
			case "sleb":
				if len(one) != 1 || len(two) != 2 || !slices.Contains(two, one[0]) {
					t.Errorf("sleb: %v is not contained in %v", one, two)
				}
			}
		})
	}
}

func TestSlebPrefixes(t *testing.T) {
	// L = 4, K = 3: step 0 tries 0..3 (best 2), step 1 tries 0,1,3 with 2
	// removed (best 1, first of a tie with 3), step 2 tries 0,3.
	c := func(score float64, b ...int) calib.Candidate { return calib.Candidate{Remove: b, Score: score} }
	p := &calib.Plan{Blocks: 4, Strategy: "sleb", Remove: []int{1, 2, 3}, Score: 9, Reason: "final", Candidates: []calib.Candidate{
		c(5, 0), c(6, 1), c(4, 2), c(7, 3),
		c(8, 0, 2), c(6, 1, 2), c(6, 2, 3),
		c(10, 0, 1, 2), c(9, 1, 2, 3),
	}}
	plans, err := slebPrefixes(p, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{{2}, {1, 2}, {1, 2, 3}}
	for i, pl := range plans {
		if !slices.Equal(pl.Remove, want[i]) || pl.Blocks != 4 || pl.Strategy != "sleb" {
			t.Errorf("k=%d: %+v, want %v", i+1, pl, want[i])
		}
	}
	if plans[0].Score != 4 || plans[1].Score != 6 || plans[2] != p || !strings.Contains(plans[1].Reason, "blocks 1-2") {
		t.Errorf("scores %g %g, last %p (want %p), reason %q", plans[0].Score, plans[1].Score, plans[2], p, plans[1].Reason)
	}
	if _, err := slebPrefixes(&calib.Plan{Candidates: p.Candidates[:5]}, 4, 3); err == nil {
		t.Error("too few candidates accepted")
	}
}

func TestSweepUsage(t *testing.T) {
	model := fixture("stories260k_kv.onnx")
	out := t.TempDir()
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"sweep", model, "--data", "x", "-o", out}, 2, "--max-remove K is required"},
		{[]string{"sweep", model, "--max-remove", "1", "-o", out}, 2, "--data FILE is required"},
		{[]string{"sweep", model, "--max-remove", "1", "--data", "x"}, 2, "-o OUTDIR is required"},
		{[]string{"sweep", model, "--max-remove", "5", "--data", "x", "-o", out}, 2, "the model has 5 blocks, at least one must stay"},
		{[]string{"sweep", model, "--max-remove", "1", "--data", "x", "-o", out, "--strategy", "random", "--bench=false"}, 2, "want one of angular"},
	}
	for _, c := range cases {
		code, _, errs := runCLI(t, c.args...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, %q; want exit %d with %q", c.args[2:], code, errs, c.code, c.want)
		}
	}
}
