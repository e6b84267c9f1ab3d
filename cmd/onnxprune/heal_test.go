package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/heal"
	"github.com/onnxprune/onnxprune/internal/testenv"
)

func TestHealBridge(t *testing.T) {
	testenv.ORTLibrary(t)
	dir := t.TempDir()
	model := fixture("stories260k_kv.onnx")
	out := filepath.Join(dir, "healed")
	code, _, errs := runCLI(t, "heal", model, "--method", "bridge", "--remove", "2,3", "--data", storiesText(t), "-o", out, "--threads", "1")
	if code != 0 {
		t.Fatalf("heal: exit %d: %s", code, errs)
	}
	b, err := os.ReadFile(filepath.Join(out, "bridge.json"))
	if err != nil {
		t.Fatal(err)
	}
	var rep heal.Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 || len(rep.Runs[0].Blocks) != 2 || !(rep.Runs[0].SSEBridged < rep.Runs[0].SSEPruned) {
		t.Fatalf("bridge.json: %s", b)
	}
	m, err := graph.Load(filepath.Join(out, "stories260k_kv.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	if err := graph.Check(m); err != nil {
		t.Fatal(err)
	}
	d, err := graph.FindBlocks(m)
	if err != nil || len(d.Blocks) != 3 {
		t.Fatalf("healed model: %v blocks, err %v", d, err)
	}
	if _, err := os.Stat(filepath.Join(out, "plan.json")); err != nil {
		t.Fatal("no plan.json")
	}
}

func TestHealBadInput(t *testing.T) {
	testenv.ORTLibrary(t)
	model := fixture("stories260k_kv.onnx")
	empty := filepath.Join(t.TempDir(), "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"block 0", []string{"--remove", "0", "--data", storiesText(t)}, exitFailure, "no earlier MLP"},
		{"out of range", []string{"--remove", "9", "--data", storiesText(t)}, exitFailure, "out of range"},
		{"empty data", []string{"--remove", "2", "--data", empty}, exitFailure, "no samples"},
		{"no data", []string{"--remove", "2"}, exitUsage, "--data"},
		{"no blocks", []string{"--data", storiesText(t)}, exitUsage, "exactly one of"},
		{"bad method", []string{"--method", "lora", "--remove", "2"}, exitUsage, "only bridge"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"heal", model, "-o", filepath.Join(t.TempDir(), "o"), "--threads", "1"}, tc.args...)
			code, _, errs := runCLI(t, args...)
			if code != tc.code || !strings.Contains(errs, tc.want) || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
				t.Fatalf("exit %d (want %d), stderr %q (want one line with %q)", code, tc.code, errs, tc.want)
			}
		})
	}
}
