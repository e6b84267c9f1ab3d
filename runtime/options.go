package runtime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	ort "github.com/yalue/onnxruntime_go"
)

// Options configures a Session. The zero value runs on CPU with
// onnxruntime's default thread count and the "extended" optimisation level.
type Options struct {
	// Device is "cpu" (the default when empty) or "cuda".
	Device string
	// DeviceID selects the GPU when Device is "cuda".
	DeviceID int
	// Threads is the intra-op thread count; 0 lets onnxruntime decide (one
	// per physical core).
	Threads int
	// OptLevel is onnxruntime's graph optimisation level.
	OptLevel OptLevel
	// OptimizedModelPath, when set, makes onnxruntime write the model it
	// actually runs (after its graph optimisations, weights inline) there.
	// Save at OptExtended: OptAll embeds hardware-specific layouts.
	OptimizedModelPath string
	// ExternalDataDir is the directory that external-data paths in the model
	// are relative to. NewSessionFromBytes needs it for models with external
	// data; NewSession defaults it to the model file's directory.
	ExternalDataDir string
	// Outputs, when non-empty, limits the outputs the session fetches to
	// these names. A Session otherwise copies every output into Go memory on
	// every Run (see the package documentation), which is wasted work when
	// a caller only ever needs some of them (e.g. hidden-state taps but not
	// logits).
	Outputs []string
}

// OptLevel is an onnxruntime graph optimisation level.
type OptLevel int

// Optimisation levels. The zero value, OptDefault, means OptExtended.
const (
	OptDefault  OptLevel = iota
	OptDisabled          // no graph optimisations
	OptBasic             // constant folding, redundant node elimination
	OptExtended          // plus fusions such as SkipLayerNormalization and Attention
	OptAll               // plus layout optimisations specific to this hardware
)

var optLevelNames = map[OptLevel]string{
	OptDisabled: "disabled",
	OptBasic:    "basic",
	OptExtended: "extended",
	OptAll:      "all",
}

func (l OptLevel) String() string {
	if l == OptDefault {
		return optLevelNames[OptExtended]
	}
	if s, ok := optLevelNames[l]; ok {
		return s
	}
	return "OptLevel(" + strconv.Itoa(int(l)) + ")"
}

// ParseOptLevel accepts "disabled", "basic", "extended", "all" ("" means the
// default, extended).
func ParseOptLevel(s string) (OptLevel, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return OptDefault, nil
	}
	for l, name := range optLevelNames {
		if name == s {
			return l, nil
		}
	}
	return OptDefault, fmt.Errorf("runtime: unknown optimisation level %q (want disabled, basic, extended or all)", s)
}

func (l OptLevel) ort() (ort.GraphOptimizationLevel, error) {
	switch l {
	case OptDisabled:
		return ort.GraphOptimizationLevelDisableAll, nil
	case OptBasic:
		return ort.GraphOptimizationLevelEnableBasic, nil
	case OptDefault, OptExtended:
		return ort.GraphOptimizationLevelEnableExtended, nil
	case OptAll:
		return ort.GraphOptimizationLevelEnableAll, nil
	}
	return 0, fmt.Errorf("invalid optimisation level %d", int(l))
}

// ErrCUDAUnavailable is wrapped by the error NewSession returns when
// Device is "cuda" but onnxruntime cannot provide its CUDA execution
// provider. There is deliberately no fallback to CPU: a benchmark that
// silently ran on CPU would be wrong.
var ErrCUDAUnavailable = errors.New("runtime: CUDA execution provider unavailable")

func cudaError(cause error) error {
	return fmt.Errorf("%w (%v): install onnxruntime's CUDA provider libraries "+
		"(libonnxruntime_providers_cuda.so, libonnxruntime_providers_shared.so from the "+
		"onnxruntime-gpu %s release, with CUDA 12 and cuDNN 9) next to the library or use --device cpu",
		ErrCUDAUnavailable, cause, ORTVersion)
}

// Session config key (onnxruntime_session_options_config_keys.h) telling
// onnxruntime where external data lives when the model comes from memory.
const configExternalDataDir = "session.model_external_initializers_file_folder_path"

// sessionOptions builds onnxruntime session options. externalDir is set only
// for models created from bytes; optimizedPath may be "".
func (o Options) sessionOptions(externalDir, optimizedPath string) (*ort.SessionOptions, error) {
	level, err := o.OptLevel.ort()
	if err != nil {
		return nil, err
	}
	if o.Threads < 0 {
		return nil, fmt.Errorf("invalid thread count %d", o.Threads)
	}
	if o.DeviceID < 0 {
		return nil, fmt.Errorf("invalid device id %d", o.DeviceID)
	}
	device := strings.ToLower(o.Device)
	if device != "" && device != "cpu" && device != "cuda" {
		return nil, fmt.Errorf("unknown device %q (want cpu or cuda)", o.Device)
	}

	so, err := ort.NewSessionOptions()
	if err != nil {
		return nil, fmt.Errorf("session options: %w", err)
	}
	fail := func(what string, err error) (*ort.SessionOptions, error) {
		so.Destroy()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := so.SetGraphOptimizationLevel(level); err != nil {
		return fail("optimisation level", err)
	}
	if o.Threads > 0 {
		if err := so.SetIntraOpNumThreads(o.Threads); err != nil {
			return fail("threads", err)
		}
	}
	if optimizedPath != "" {
		if err := so.SetOptimizedModelFilePath(optimizedPath); err != nil {
			return fail("optimized model path", err)
		}
	}
	if externalDir != "" {
		if err := so.AddSessionConfigEntry(configExternalDataDir, externalDir); err != nil {
			return fail("external data directory", err)
		}
	}
	if device == "cuda" {
		if err := appendCUDA(so, o.DeviceID); err != nil {
			so.Destroy()
			return nil, err
		}
	}
	return so, nil
}

func appendCUDA(so *ort.SessionOptions, deviceID int) error {
	cuda, err := ort.NewCUDAProviderOptions()
	if err != nil {
		return cudaError(err)
	}
	defer cuda.Destroy()
	if err := cuda.Update(map[string]string{"device_id": strconv.Itoa(deviceID)}); err != nil {
		return cudaError(err)
	}
	if err := so.AppendExecutionProviderCUDA(cuda); err != nil {
		return cudaError(err)
	}
	return nil
}
