package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	ort "github.com/yalue/onnxruntime_go"
)

// ORTVersion is the onnxruntime release whose C API onnxruntime_go v1.27.0
// is compiled against; scripts/setup-onnxruntime.sh installs exactly this one.
const ORTVersion = "1.24.1"

// LibraryEnv names the environment variable that points at the onnxruntime
// shared library.
const LibraryEnv = "ONNXRUNTIME_LIB"

// ErrLibraryNotFound is wrapped by FindLibrary's error when no library is
// found anywhere.
var ErrLibraryNotFound = errors.New("runtime: onnxruntime library not found")

// CachedLibraryPath is where scripts/setup-onnxruntime.sh installs the
// library: $ONNXPRUNE_CACHE, else $XDG_CACHE_HOME/onnxprune, else
// ~/.cache/onnxprune, followed by onnxruntime-<version>/libonnxruntime.so.1.
// It returns "" when no cache directory can be determined.
func CachedLibraryPath() string {
	root := os.Getenv("ONNXPRUNE_CACHE")
	if root == "" {
		cache := os.Getenv("XDG_CACHE_HOME")
		if cache == "" {
			home, err := os.UserHomeDir()
			if err != nil {
				return ""
			}
			cache = filepath.Join(home, ".cache")
		}
		root = filepath.Join(cache, "onnxprune")
	}
	return filepath.Join(root, "onnxruntime-"+ORTVersion, "libonnxruntime.so.1")
}

// FindLibrary locates the onnxruntime shared library. It tries, in order,
// explicit (a --ort-lib flag; an error if set but missing), $ONNXRUNTIME_LIB
// (likewise) and the setup script's cache location.
func FindLibrary(explicit string) (string, error) {
	if explicit != "" {
		return checkLibrary(explicit, "--ort-lib")
	}
	if env := os.Getenv(LibraryEnv); env != "" {
		return checkLibrary(env, "$"+LibraryEnv)
	}
	cached := CachedLibraryPath()
	if cached != "" {
		if fi, err := os.Stat(cached); err == nil && !fi.IsDir() {
			return cached, nil
		}
	}
	looked := []string{"--ort-lib (not set)", "$" + LibraryEnv + " (not set)"}
	if cached != "" {
		looked = append(looked, cached)
	}
	return "", fmt.Errorf("%w (looked at: %s): run \"make setup\" (fetches onnxruntime %s from npm) or set %s",
		ErrLibraryNotFound, strings.Join(looked, ", "), ORTVersion, LibraryEnv)
}

func checkLibrary(path, source string) (string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s=%s: %v", ErrLibraryNotFound, source, path, err)
	}
	if fi.IsDir() {
		return "", fmt.Errorf("%w: %s=%s is a directory", ErrLibraryNotFound, source, path)
	}
	return path, nil
}

// onnxruntime_go keeps one process-wide environment, so this package does
// too: the first successful Init fixes the library for the process.
var (
	envMu   sync.Mutex
	envPath string // absolute path of the loaded library; "" until Init succeeds
)

// Init loads the onnxruntime library at libPath ("" means FindLibrary("")) and
// creates the process-wide environment with log level error. Calling it again
// with the same library is a no-op; with a different one it is an error,
// because a process can hold only one onnxruntime environment. A failed Init
// may be retried.
func Init(libPath string) error {
	path, err := FindLibrary(libPath)
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("runtime: %s: %w", path, err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}

	envMu.Lock()
	defer envMu.Unlock()
	if envPath != "" {
		if envPath == abs {
			return nil
		}
		return fmt.Errorf("runtime: onnxruntime already initialised from %s; cannot switch to %s in the same process", envPath, abs)
	}
	ort.SetSharedLibraryPath(abs)
	if err := ort.InitializeEnvironment(ort.WithLogLevelError()); err != nil {
		return fmt.Errorf("runtime: loading onnxruntime from %s: %w", abs, err)
	}
	envPath = abs
	return nil
}

// Initialized reports whether Init has succeeded.
func Initialized() bool {
	envMu.Lock()
	defer envMu.Unlock()
	return envPath != ""
}

// LibraryPath returns the library Init loaded, or "" before Init.
func LibraryPath() string {
	envMu.Lock()
	defer envMu.Unlock()
	return envPath
}

// Version returns the loaded onnxruntime's version string ("1.24.1"), or ""
// before Init.
func Version() string {
	if !Initialized() {
		return ""
	}
	return ort.GetVersion()
}
