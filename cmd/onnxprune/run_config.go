package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v3"
)

// The run configuration file (--config FILE) is one JSON object whose
// keys are run's long flag names without the dashes, plus "model" for the
// MODEL argument:
//
//	{"model": "stories/model.onnx", "data": "valid.txt", "remove": 2, "heal": "bridge", "samples": 32}
//
// Values are strings, numbers or booleans. A flag given on the command
// line wins over the file; relative paths in the file are relative to the
// file's directory; options in neither take the defaults of the commands
// run runs (calibrate, prune, heal, eval, bench). run writes the options
// it was given, from either source, with paths made absolute, to
// OUTDIR/config.json, which --config accepts as it is.

// runConfigFile is the effective configuration run writes into its
// output directory.
const runConfigFile = "config.json"

// runPathKeys are the configuration keys that name files.
var runPathKeys = []string{"model", "output", "data", "eval-data", "train-data", "tokenizer"}

// runNotConfig are run's flags that the configuration does not hold.
var runNotConfig = []string{"config", "json", "help", "force"}

// applyRunConfig reads --config and sets every flag it names that the
// command line did not. It returns the model from the file ("" if none).
func applyRunConfig(cmd *cli.Command) (model string, err error) {
	path := cmd.String("config")
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var cfg map[string]any
	if err := dec.Decode(&cfg); err != nil {
		return "", usagef("%s: not a JSON object of run options: %v", path, err)
	}
	base := filepath.Dir(path)
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := cfg[k]
		var s string
		switch x := v.(type) {
		case string:
			s = x
		case json.Number:
			s = x.String()
		case bool:
			s = strconv.FormatBool(x)
		case nil:
			continue
		default:
			return "", usagef("%s: %q: want a string, number or boolean, got %v", path, k, v)
		}
		if slices.Contains(runPathKeys, k) && s != "" && !filepath.IsAbs(s) {
			s = filepath.Join(base, s)
		}
		if k == "model" {
			model = s
			continue
		}
		if slices.Contains(runNotConfig, k) || !hasFlag(cmd, k) {
			return "", usagef("%s: unknown option %q (keys are run's flag names, e.g. \"remove\", \"data\")", path, k)
		}
		if cmd.IsSet(k) {
			continue // the command line wins
		}
		if err := cmd.Set(k, s); err != nil {
			return "", usagef("%s: %q: %v", path, k, err)
		}
	}
	return model, nil
}

func hasFlag(cmd *cli.Command, name string) bool {
	for _, f := range cmd.Flags {
		if slices.Contains(f.Names(), name) {
			return true
		}
	}
	return false
}

// effectiveRunConfig lists the options run was given (on the command
// line or by --config), paths absolute: the others keep their defaults.
func effectiveRunConfig(cmd *cli.Command, model, outDir string) map[string]any {
	cfg := map[string]any{"model": absPath(model), "output": absPath(outDir)}
	for _, f := range cmd.Flags {
		name := f.Names()[0]
		if slices.Contains(runNotConfig, name) || name == "output" || !cmd.IsSet(name) {
			continue
		}
		v := cmd.Value(name)
		if s, ok := v.(string); ok {
			if s == "" {
				continue
			}
			if slices.Contains(runPathKeys, name) {
				v = absPath(s)
			}
		}
		cfg[name] = v
	}
	return cfg
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// fileFingerprint identifies a file's content: its size, modification
// time and, up to fingerprintHashLimit bytes, its SHA-256.
type fileFingerprint struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	MTime  string `json:"mtime,omitempty"`
	SHA256 string `json:"sha256,omitempty"`
}

// fingerprintHashLimit: files up to this size are hashed, bigger ones are
// identified by size and modification time (hashing gigabytes of weights
// on every run would cost more than the steps it saves).
const fingerprintHashLimit = 256 << 20

func fingerprint(path string) (fileFingerprint, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileFingerprint{}, err
	}
	fp := fileFingerprint{Path: absPath(path), Size: fi.Size()}
	if fi.Size() > fingerprintHashLimit {
		fp.MTime = fi.ModTime().UTC().Format(time.RFC3339Nano)
		return fp, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fp, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fp, fmt.Errorf("%s: %w", path, err)
	}
	fp.SHA256 = hex.EncodeToString(h.Sum(nil))
	return fp, nil
}

// modelSideFiles are the files beside a model that steps read: its
// configuration and tokenizer.
var modelSideFiles = []string{"config.json", "genai_config.json", "tokenizer.json", "tokenizer_config.json",
	"special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "tokenizer.bin", "tokenizer.gguf.json"}

// fingerprintInputs fingerprints files and directories (a directory: its
// regular files, not recursively). A model file brings its external data
// (files named after it) and sidecars along.
func fingerprintInputs(paths ...string) ([]fileFingerprint, error) {
	var files []string
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			for _, e := range entries {
				if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), ".") {
					files = append(files, filepath.Join(p, e.Name()))
				}
			}
			continue
		}
		files = append(files, p)
		if strings.HasSuffix(p, ".onnx") {
			dir := filepath.Dir(p)
			ext, _ := filepath.Glob(filepath.Join(dir, globEscape(filepath.Base(p))+".*"))
			files = append(files, ext...)
			for _, s := range modelSideFiles {
				files = append(files, filepath.Join(dir, s))
			}
			toks, _ := filepath.Glob(filepath.Join(dir, "tok*.bin"))
			files = append(files, toks...)
		}
	}
	var fps []fileFingerprint
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f] {
			continue
		}
		seen[f] = true
		fp, err := fingerprint(f)
		if errors.Is(err, os.ErrNotExist) {
			continue // optional sidecars
		}
		if err != nil {
			return nil, err
		}
		fps = append(fps, fp)
	}
	return fps, nil
}

func globEscape(s string) string {
	r := strings.NewReplacer(`*`, `\*`, `?`, `\?`, `[`, `\[`, `\`, `\\`)
	return r.Replace(s)
}

// stepRecord is OUTDIR/.steps/<step>.json: the key of the inputs a step
// ran on, what they were, what it wrote and what it found. A step whose
// record has the current key and whose outputs exist is not run again.
type stepRecord struct {
	Step     string          `json:"step"`
	Key      string          `json:"key"`
	Inputs   any             `json:"inputs"`
	Outputs  []string        `json:"outputs"`
	Result   json.RawMessage `json:"result,omitempty"`
	Seconds  float64         `json:"seconds"`
	Finished string          `json:"finished"`
}

// stepKey hashes a step's inputs (which include the keys of the steps it
// depends on, so a redone step redoes everything after it).
func stepKey(inputs any) string {
	b, _ := json.Marshal(inputs)
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func stepRecordPath(outDir, step string) string {
	return filepath.Join(outDir, ".steps", step+".json")
}

// readStep returns the record of step if its key is key and its outputs
// (relative to outDir) exist.
func readStep(outDir, step, key string) *stepRecord {
	b, err := os.ReadFile(stepRecordPath(outDir, step))
	if err != nil {
		return nil
	}
	var r stepRecord
	if json.Unmarshal(b, &r) != nil || r.Key != key {
		return nil
	}
	for _, o := range r.Outputs {
		if _, err := os.Stat(filepath.Join(outDir, o)); err != nil {
			return nil
		}
	}
	return &r
}

func writeStep(outDir string, r *stepRecord) error {
	if err := os.MkdirAll(filepath.Join(outDir, ".steps"), 0o755); err != nil {
		return err
	}
	b, _ := json.MarshalIndent(r, "", "  ")
	return writeFileAtomic(stepRecordPath(outDir, r.Step), append(b, '\n'))
}
