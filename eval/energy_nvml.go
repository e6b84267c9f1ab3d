package eval

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// NVML's C API, called through pointers from dlsym so that the binary
// neither links against nor requires the NVIDIA driver. nvmlDevice_t is
// an opaque pointer; return code 0 is NVML_SUCCESS.
typedef int (*nvml_void_fn)(void);
typedef int (*nvml_count_fn)(unsigned int *);
typedef int (*nvml_handle_fn)(unsigned int, void **);
typedef int (*nvml_energy_fn)(void *, unsigned long long *);
typedef const char *(*nvml_error_fn)(int);

static int nvml_call_void(void *f) { return ((nvml_void_fn)f)(); }
static int nvml_call_count(void *f, unsigned int *n) { return ((nvml_count_fn)f)(n); }
static int nvml_call_handle(void *f, unsigned int i, void **h) { return ((nvml_handle_fn)f)(i, h); }
static int nvml_call_energy(void *f, void *h, unsigned long long *mj) { return ((nvml_energy_fn)f)(h, mj); }
static const char *nvml_call_error(void *f, int rc) { return ((nvml_error_fn)f)(rc); }
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"
)

// DefaultNVMLLibrary is the soname the NVIDIA driver installs.
const DefaultNVMLLibrary = "libnvidia-ml.so.1"

// nvmlLib is a loaded libnvidia-ml and the entry points the meter uses.
type nvmlLib struct {
	init, shutdown, count, handle, energy, errorString unsafe.Pointer
}

var (
	nvmlMu   sync.Mutex
	nvmlLibs = map[string]*nvmlLib{} // loaded once per path, never closed
)

// loadNVML dlopens path and resolves the symbols.
func loadNVML(path string) (*nvmlLib, error) {
	nvmlMu.Lock()
	defer nvmlMu.Unlock()
	if l, ok := nvmlLibs[path]; ok {
		return l, nil
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	h := C.dlopen(cpath, C.RTLD_NOW|C.RTLD_LOCAL)
	if h == nil {
		return nil, fmt.Errorf("%s", C.GoString(C.dlerror()))
	}
	sym := func(name string) unsafe.Pointer {
		cn := C.CString(name)
		defer C.free(unsafe.Pointer(cn))
		return C.dlsym(h, cn)
	}
	l := &nvmlLib{init: sym("nvmlInit_v2"), shutdown: sym("nvmlShutdown"), count: sym("nvmlDeviceGetCount_v2"),
		handle: sym("nvmlDeviceGetHandleByIndex_v2"), energy: sym("nvmlDeviceGetTotalEnergyConsumption"),
		errorString: sym("nvmlErrorString")}
	for name, p := range map[string]unsafe.Pointer{"nvmlInit_v2": l.init, "nvmlShutdown": l.shutdown,
		"nvmlDeviceGetCount_v2": l.count, "nvmlDeviceGetHandleByIndex_v2": l.handle,
		"nvmlDeviceGetTotalEnergyConsumption": l.energy} {
		if p == nil {
			return nil, fmt.Errorf("%s: no symbol %s", path, name)
		}
	}
	nvmlLibs[path] = l
	return l, nil
}

func (l *nvmlLib) check(rc C.int, what string) error {
	if rc == 0 {
		return nil
	}
	msg := fmt.Sprintf("error %d", int(rc))
	if l.errorString != nil {
		msg = C.GoString(C.nvml_call_error(l.errorString, rc))
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// nvmlCounters hold the GPUs' energy at Start (millijoules since the
// driver loaded).
type nvmlCounters struct {
	lib     *nvmlLib
	devices []unsafe.Pointer
	start   []uint64
}

// openNVML initialises NVML and reads every GPU's energy counter. GPUs
// before Volta have no such counter: that is an error naming the GPU.
func openNVML(path string) (*nvmlCounters, error) {
	if path == "" {
		path = DefaultNVMLLibrary
	}
	l, err := loadNVML(path)
	if err != nil {
		return nil, err
	}
	if err := l.check(C.nvml_call_void(l.init), "nvmlInit"); err != nil {
		return nil, err
	}
	n := &nvmlCounters{lib: l}
	var count C.uint
	if err := l.check(C.nvml_call_count(l.count, &count), "nvmlDeviceGetCount"); err != nil {
		C.nvml_call_void(l.shutdown)
		return nil, err
	}
	if count == 0 {
		C.nvml_call_void(l.shutdown)
		return nil, fmt.Errorf("no GPU")
	}
	for i := range C.uint(count) {
		var h unsafe.Pointer
		if err := l.check(C.nvml_call_handle(l.handle, i, &h), fmt.Sprintf("GPU %d: nvmlDeviceGetHandleByIndex", i)); err != nil {
			C.nvml_call_void(l.shutdown)
			return nil, err
		}
		n.devices = append(n.devices, h)
	}
	if n.start, err = n.read(); err != nil {
		C.nvml_call_void(l.shutdown)
		return nil, err
	}
	return n, nil
}

func (n *nvmlCounters) read() ([]uint64, error) {
	out := make([]uint64, len(n.devices))
	for i, h := range n.devices {
		var mj C.ulonglong
		if err := n.lib.check(C.nvml_call_energy(n.lib.energy, h, &mj), fmt.Sprintf("GPU %d: nvmlDeviceGetTotalEnergyConsumption", i)); err != nil {
			return nil, err
		}
		out[i] = uint64(mj)
	}
	return out, nil
}

// stop reads the counters again, shuts NVML down and returns the joules
// used by all GPUs together and what was read.
func (n *nvmlCounters) stop() (float64, string, error) {
	defer C.nvml_call_void(n.lib.shutdown)
	end, err := n.read()
	if err != nil {
		return 0, "", err
	}
	var mj uint64
	for i := range end {
		if end[i] >= n.start[i] { // a 64-bit millijoule counter does not wrap
			mj += end[i] - n.start[i]
		}
	}
	return float64(mj) / 1e3, fmt.Sprintf("%d GPU(s) (nvmlDeviceGetTotalEnergyConsumption)", len(end)), nil
}
