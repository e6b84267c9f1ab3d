package heal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// A checkpoint is a directory checkpoint-NNNNNN under CheckpointDir:
// the current adapters in PEFT's layout (usable as they are),
// train_state.safetensors (float64 adapters, AdamW moments and the best
// adapters so far) and state.json (step, data position, the log), which
// is written last: a directory without it is incomplete and ignored.
const (
	checkpointPrefix = "checkpoint-"
	stateFile        = "state.json"
	trainStateFile   = "train_state.safetensors"
	keepCheckpoints  = 2
)

type checkpoint struct {
	Step          int             `json:"step"`
	Position      int64           `json:"position"` // packed rows consumed
	AdamStep      int             `json:"adam_step"`
	InitialValPPL float64         `json:"initial_val_ppl"`
	BestValPPL    float64         `json:"best_val_ppl"`
	BestStep      int             `json:"best_step"`
	ValTokens     int64           `json:"val_tokens"`
	History       []TrainProgress `json:"history"`
	// What must match to resume.
	Rank      int      `json:"rank"`
	Alpha     float64  `json:"alpha"`
	Targets   string   `json:"targets"`
	Layers    []string `json:"layers"`
	BatchSize int      `json:"batch_size"`
	SeqLen    int      `json:"seq_len"`
	Seed      uint64   `json:"seed"`

	best *Adapters
}

func layerNames(a *Adapters) []string {
	var n []string
	for _, l := range a.Layers {
		n = append(n, l.Name)
	}
	return n
}

func saveCheckpoint(dir string, c *checkpoint, ad *Adapters, opt *AdamW, o LoRAOptions) error {
	c.AdamStep = opt.Step
	c.Rank, c.Alpha, c.Targets, c.Layers = ad.Rank, ad.Alpha, ad.Targets, layerNames(ad)
	c.BatchSize, c.SeqLen, c.Seed = o.BatchSize, o.SeqLen, o.Seed
	final := filepath.Join(dir, fmt.Sprintf("%s%06d", checkpointPrefix, c.Step))
	tmp := final + ".tmp"
	os.RemoveAll(tmp)
	if err := ad.Save(tmp); err != nil {
		return fmt.Errorf("lora: checkpoint: %w", err)
	}
	var ts []stTensor
	for k := range ad.A {
		ks := strconv.Itoa(k)
		ts = append(ts,
			stTensor{"A." + ks, nil, ad.A[k]}, stTensor{"B." + ks, nil, ad.B[k]},
			stTensor{"best.A." + ks, nil, c.best.A[k]}, stTensor{"best.B." + ks, nil, c.best.B[k]},
			stTensor{"adam.m.A." + ks, nil, opt.M[2*k]}, stTensor{"adam.m.B." + ks, nil, opt.M[2*k+1]},
			stTensor{"adam.v.A." + ks, nil, opt.V[2*k]}, stTensor{"adam.v.B." + ks, nil, opt.V[2*k+1]})
	}
	for i := range ts {
		ts[i].Shape = []int64{int64(len(ts[i].Data))}
	}
	if err := writeSafetensors(filepath.Join(tmp, trainStateFile), ts, "F64"); err != nil {
		return fmt.Errorf("lora: checkpoint: %w", err)
	}
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.WriteFile(filepath.Join(tmp, stateFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("lora: checkpoint: %w", err)
	}
	os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("lora: checkpoint: %w", err)
	}
	// Keep the newest few.
	steps, _ := checkpointSteps(dir)
	for i := 0; i+keepCheckpoints < len(steps); i++ {
		os.RemoveAll(filepath.Join(dir, fmt.Sprintf("%s%06d", checkpointPrefix, steps[i])))
	}
	return nil
}

// checkpointSteps lists the complete checkpoints' steps, ascending.
func checkpointSteps(dir string) ([]int, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var steps []int
	for _, e := range es {
		name := e.Name()
		if !e.IsDir() || !strings.HasPrefix(name, checkpointPrefix) {
			continue
		}
		n, err := strconv.Atoi(strings.TrimPrefix(name, checkpointPrefix))
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, name, stateFile)); err == nil {
			steps = append(steps, n)
		}
	}
	sort.Ints(steps)
	return steps, nil
}

// loadCheckpoint restores the newest checkpoint in dir into ad and opt;
// nil when there is none.
func loadCheckpoint(dir string, ad *Adapters, opt *AdamW, o LoRAOptions) (*checkpoint, error) {
	if dir == "" {
		return nil, nil
	}
	steps, err := checkpointSteps(dir)
	if err != nil || len(steps) == 0 {
		return nil, nil
	}
	path := filepath.Join(dir, fmt.Sprintf("%s%06d", checkpointPrefix, steps[len(steps)-1]))
	b, err := os.ReadFile(filepath.Join(path, stateFile))
	if err != nil {
		return nil, err
	}
	var c checkpoint
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("lora: checkpoint %s: %w", path, err)
	}
	if c.Rank != ad.Rank || c.Alpha != ad.Alpha || c.Targets != ad.Targets || strings.Join(c.Layers, ",") != strings.Join(layerNames(ad), ",") ||
		c.BatchSize != o.BatchSize || c.SeqLen != o.SeqLen {
		return nil, fmt.Errorf("lora: checkpoint %s was made with other settings (rank %d, alpha %g, targets %q, batch %d × %d); use another --checkpoint-dir",
			path, c.Rank, c.Alpha, c.Targets, c.BatchSize, c.SeqLen)
	}
	ts, err := readSafetensors(filepath.Join(path, trainStateFile))
	if err != nil {
		return nil, fmt.Errorf("lora: checkpoint: %w", err)
	}
	c.best = ad.Clone()
	get := func(name string, dst []float64) error {
		v, ok := ts[name]
		if !ok || len(v) != len(dst) {
			return fmt.Errorf("lora: checkpoint %s: missing or mis-sized %s", path, name)
		}
		copy(dst, v)
		return nil
	}
	for k := range ad.A {
		ks := strconv.Itoa(k)
		for _, e := range []struct {
			n string
			d []float64
		}{{"A." + ks, ad.A[k]}, {"B." + ks, ad.B[k]}, {"best.A." + ks, c.best.A[k]}, {"best.B." + ks, c.best.B[k]},
			{"adam.m.A." + ks, opt.M[2*k]}, {"adam.m.B." + ks, opt.M[2*k+1]}, {"adam.v.A." + ks, opt.V[2*k]}, {"adam.v.B." + ks, opt.V[2*k+1]}} {
			if err := get(e.n, e.d); err != nil {
				return nil, err
			}
		}
	}
	opt.Step = c.AdamStep
	return &c, nil
}
