// Package testenv finds what tests need outside the Go toolchain — the
// onnxruntime library, the module's testdata and the read-only ../shared
// folder — and decides what happens when something is missing.
//
// The policy: when CI=true a missing dependency fails the test (CI must
// install everything, so absence is a bug); otherwise the test is skipped
// with a message saying how to get the dependency, so that `go test ./...`
// stays usable on a fresh clone.
package testenv

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

	ort "github.com/onnxprune/onnxprune/runtime"
)

// InCI reports whether the tests run in CI (CI=true), where missing
// dependencies are failures rather than skips.
func InCI() bool { return os.Getenv("CI") == "true" }

// unavailable fails the test in CI and skips it elsewhere.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// ORTLibrary finds the onnxruntime library the way the CLI does (explicit
// flag aside: $ONNXRUNTIME_LIB, then the setup script's cache), initialises
// the runtime with it and returns its path. A library that is found but
// fails to load is always a failure.
func ORTLibrary(t testing.TB) string {
	t.Helper()
	path, err := ort.FindLibrary("")
	if err != nil {
		unavailable(t, "%v", err)
	}
	if err := ort.Init(path); err != nil {
		t.Fatalf("%v", err)
	}
	return path
}

var (
	rootOnce sync.Once
	rootDir  string
	rootErr  error
)

// ModuleRoot returns the directory holding this module's go.mod, found by
// walking up from the test's working directory (its package directory).
func ModuleRoot(t testing.TB) string {
	t.Helper()
	rootOnce.Do(func() {
		dir, err := os.Getwd()
		if err != nil {
			rootErr = err
			return
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				rootDir = dir
				return
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				rootErr = os.ErrNotExist
				return
			}
			dir = parent
		}
	})
	if rootErr != nil {
		t.Fatalf("testenv: no go.mod above the working directory: %v", rootErr)
	}
	return rootDir
}

// Testdata returns the path of rel under the module's testdata directory.
// It does not check that the path exists.
func Testdata(t testing.TB, rel ...string) string {
	t.Helper()
	return filepath.Join(append([]string{ModuleRoot(t), "testdata"}, rel...)...)
}

// SharedDir returns ../shared next to the module root: the read-only
// folder of pretrained models and evaluation data (see its README.md) that
// developers' checkouts and CI have but a user's fresh clone does not.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(filepath.Dir(ModuleRoot(t)), "shared")
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		unavailable(t, "shared models/data folder %s (read-only, beside the module root; holds pretrained checkpoints and evaluation text) is not available", dir)
	}
	return dir
}
