package main

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/help/*.golden from the current help text")

// TestHelpGolden compares "onnxprune [COMMAND] --help" with
// testdata/help/<command>.golden (onnxprune.golden for the root); run
// with -update after changing a command's flags or text, and review the
// diff.
func TestHelpGolden(t *testing.T) {
	t.Setenv("ONNXRUNTIME_LIB", "") // help must not depend on the environment
	names := []string{""}
	for _, c := range newApp(nil, nil).Commands {
		names = append(names, c.Name)
	}
	names = append(names, "completion") // added by urfave/cli (EnableShellCompletion)
	for _, name := range names {
		golden := name
		if golden == "" {
			golden = "onnxprune"
		}
		t.Run(golden, func(t *testing.T) {
			args := []string{"--help"}
			if name != "" {
				args = []string{name, "--help"}
			}
			code, out, errs := runCLI(t, args...)
			if code != 0 || errs != "" {
				t.Fatalf("exit %d, stderr %q", code, errs)
			}
			if name != "" && name != "completion" && !strings.Contains(out, "Examples:") {
				t.Errorf("%s --help has no examples", name)
			}
			path := filepath.Join("testdata", "help", golden+".golden")
			if *updateGolden {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./cmd/onnxprune -run TestHelpGolden -update)", err)
			}
			if out != string(want) {
				t.Errorf("%s --help differs from %s (rerun with -update if intended):\n%s", golden, path, lineDiff(string(want), out))
			}
		})
	}
}

// lineDiff shows the first lines where want and got differ.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 10; i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			b.WriteString("- " + a + "\n+ " + c + "\n")
			shown++
		}
	}
	return b.String()
}

// TestFlagConsistency: the same option has the same name and meaning in
// every command: -o is --output, --json is a boolean, --device and
// --threads come together, no command redefines --quiet or --verbose.
func TestFlagConsistency(t *testing.T) {
	for _, c := range newApp(nil, nil).Commands {
		names := map[string][]string{}
		for _, f := range c.Flags {
			names[f.Names()[0]] = f.Names()
		}
		if a, ok := names["output"]; ok && (len(a) != 2 || a[1] != "o") {
			t.Errorf("%s: --output aliases %v, want [output o]", c.Name, a)
		}
		for n, a := range names {
			if len(a) > 1 && a[1] == "o" && n != "output" {
				t.Errorf("%s: -o is --%s, want --output", c.Name, n)
			}
		}
		if _, ok := names["device"]; ok != (names["threads"] != nil) {
			t.Errorf("%s: --device and --threads must come together", c.Name)
		}
		for _, g := range []string{"quiet", "verbose", "ort-lib"} {
			if _, ok := names[g]; ok {
				t.Errorf("%s redefines the global --%s", c.Name, g)
			}
		}
		if _, ok := names["json"]; !ok {
			t.Errorf("%s has no --json", c.Name)
		}
	}
}
