package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// recorder captures Fatalf/Skipf and ends the goroutine like the real ones.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUnavailableFailsInCIAndSkipsElsewhere(t *testing.T) {
	for _, c := range []struct {
		ci        string
		wantFatal bool
	}{{"true", true}, {"", false}, {"false", false}} {
		t.Setenv("CI", c.ci)
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			unavailable(r, "missing %s", "thing")
		}()
		<-done
		if c.wantFatal && r.fatal != "missing thing" || !c.wantFatal && r.skip != "missing thing" {
			t.Errorf("CI=%q: fatal %q, skip %q", c.ci, r.fatal, r.skip)
		}
	}
}

func TestModuleRootAndTestdata(t *testing.T) {
	root := ModuleRoot(t)
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.Contains(string(data), "module github.com/onnxprune/onnxprune\n") {
		t.Fatalf("ModuleRoot = %s: %v", root, err)
	}
	if got, want := Testdata(t, "models", "x.onnx"), filepath.Join(root, "testdata", "models", "x.onnx"); got != want {
		t.Errorf("Testdata = %s, want %s", got, want)
	}
}

func TestSharedDir(t *testing.T) {
	dir := SharedDir(t) // skips (or fails in CI) when absent
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() || filepath.Base(dir) != "shared" {
		t.Fatalf("SharedDir = %s: %v", dir, err)
	}
}

func TestORTLibrary(t *testing.T) {
	path := ORTLibrary(t)
	if fi, err := os.Stat(path); err != nil || fi.IsDir() {
		t.Fatalf("ORTLibrary = %s: %v", path, err)
	}
}
