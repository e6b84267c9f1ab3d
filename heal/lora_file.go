package heal

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/onnxprune/onnxprune/rewrite"
)

// Adapter files, PEFT's layout: adapter_model.safetensors holds
// base_model.model.<module>.lora_A.weight [r, in] and .lora_B.weight
// [out, r]; adapter_config.json the LoRA settings, plus what onnxprune
// needs to find each weight again in the ONNX graph.
const (
	AdapterWeightsFile = "adapter_model.safetensors"
	AdapterConfigFile  = "adapter_config.json"
)

// AdapterConfig is adapter_config.json.
type AdapterConfig struct {
	PeftType      string   `json:"peft_type"`
	TaskType      string   `json:"task_type"`
	R             int      `json:"r"`
	LoraAlpha     float64  `json:"lora_alpha"`
	LoraDropout   float64  `json:"lora_dropout"`
	TargetModules []string `json:"target_modules"`
	Bias          string   `json:"bias"`
	// Onnxprune: the target pattern and, per adapted weight, its node,
	// initializer, shape and the adapter model's input names.
	Onnxprune struct {
		Targets string                `json:"targets"`
		Layers  []rewrite.LoRAAdapter `json:"layers"`
	} `json:"onnxprune"`
}

func peftName(l rewrite.LoRAAdapter, ab string) string {
	return "base_model.model." + l.Name + ".lora_" + ab + ".weight"
}

// Save writes the adapters (float32) and their config to dir.
func (a *Adapters) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var ts []stTensor
	for k, l := range a.Layers {
		ts = append(ts,
			stTensor{peftName(l, "A"), []int64{int64(a.Rank), int64(l.In)}, a.A[k]},
			stTensor{peftName(l, "B"), []int64{int64(l.Out), int64(a.Rank)}, a.B[k]})
	}
	if err := writeSafetensors(filepath.Join(dir, AdapterWeightsFile), ts, "F32"); err != nil {
		return err
	}
	cfg := AdapterConfig{PeftType: "LORA", TaskType: "CAUSAL_LM", R: a.Rank, LoraAlpha: a.Alpha, LoraDropout: a.Dropout, Bias: "none"}
	for _, l := range a.Layers {
		cfg.TargetModules = append(cfg.TargetModules, l.Name)
	}
	cfg.Onnxprune.Targets, cfg.Onnxprune.Layers = a.Targets, a.Layers
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return os.WriteFile(filepath.Join(dir, AdapterConfigFile), append(b, '\n'), 0o644)
}

// LoadAdapters reads adapters written by Save.
func LoadAdapters(dir string) (*Adapters, error) {
	b, err := os.ReadFile(filepath.Join(dir, AdapterConfigFile))
	if err != nil {
		return nil, err
	}
	var cfg AdapterConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", AdapterConfigFile, err)
	}
	if cfg.R <= 0 || len(cfg.Onnxprune.Layers) == 0 {
		return nil, fmt.Errorf("%s: no rank or no onnxprune layers", filepath.Join(dir, AdapterConfigFile))
	}
	ts, err := readSafetensors(filepath.Join(dir, AdapterWeightsFile))
	if err != nil {
		return nil, err
	}
	a := &Adapters{Rank: cfg.R, Alpha: cfg.LoraAlpha, Dropout: cfg.LoraDropout, Targets: cfg.Onnxprune.Targets, Layers: cfg.Onnxprune.Layers}
	for _, l := range a.Layers {
		A, okA := ts[peftName(l, "A")]
		B, okB := ts[peftName(l, "B")]
		if !okA || !okB || len(A) != a.Rank*l.In || len(B) != l.Out*a.Rank {
			return nil, fmt.Errorf("%s: missing or mis-sized lora_A/lora_B for %s", AdapterWeightsFile, l.Name)
		}
		a.A, a.B = append(a.A, A), append(a.B, B)
	}
	return a, nil
}

type stTensor struct {
	Name  string
	Shape []int64
	Data  []float64
}

// writeSafetensors writes tensors as dtype F32 or F64 (the safetensors
// format: 8-byte little-endian header length, JSON header, data).
func writeSafetensors(path string, ts []stTensor, dtype string) error {
	size := 4
	if dtype == "F64" {
		size = 8
	}
	header := map[string]any{"__metadata__": map[string]string{"format": "pt"}}
	off := 0
	for _, t := range ts {
		n := len(t.Data) * size
		header[t.Name] = map[string]any{"dtype": dtype, "shape": t.Shape, "data_offsets": []int{off, off + n}}
		off += n
	}
	h, err := json.Marshal(header)
	if err != nil {
		return err
	}
	for len(h)%8 != 0 {
		h = append(h, ' ')
	}
	buf := make([]byte, 8+len(h)+off)
	binary.LittleEndian.PutUint64(buf, uint64(len(h)))
	copy(buf[8:], h)
	p := 8 + len(h)
	for _, t := range ts {
		for _, x := range t.Data {
			if size == 8 {
				binary.LittleEndian.PutUint64(buf[p:], math.Float64bits(x))
			} else {
				binary.LittleEndian.PutUint32(buf[p:], math.Float32bits(float32(x)))
			}
			p += size
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// readSafetensors reads every F32/F64 tensor of a safetensors file.
func readSafetensors(path string) (map[string][]float64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < 8 {
		return nil, fmt.Errorf("%s: not a safetensors file", path)
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return nil, fmt.Errorf("%s: header length %d exceeds the file", path, n)
	}
	var header map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &header); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data := b[8+n:]
	out := map[string][]float64{}
	names := make([]string, 0, len(header))
	for k := range header {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "__metadata__" {
			continue
		}
		var e struct {
			DType   string  `json:"dtype"`
			Shape   []int64 `json:"shape"`
			Offsets [2]int  `json:"data_offsets"`
		}
		if err := json.Unmarshal(header[name], &e); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", path, name, err)
		}
		size := map[string]int{"F32": 4, "F64": 8}[e.DType]
		if size == 0 {
			return nil, fmt.Errorf("%s: %s: dtype %s (want F32 or F64)", path, name, e.DType)
		}
		lo, hi := e.Offsets[0], e.Offsets[1]
		cnt := 1
		for _, d := range e.Shape {
			cnt *= int(d)
		}
		if lo < 0 || hi > len(data) || hi-lo != cnt*size {
			return nil, fmt.Errorf("%s: %s: bad data offsets", path, name)
		}
		v := make([]float64, cnt)
		for i := range v {
			if size == 8 {
				v[i] = math.Float64frombits(binary.LittleEndian.Uint64(data[lo+8*i:]))
			} else {
				v[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[lo+4*i:])))
			}
		}
		out[name] = v
	}
	return out, nil
}
