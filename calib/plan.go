package calib

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/onnxprune/onnxprune/graph"
	"github.com/onnxprune/onnxprune/internal/atomicfile"
)

// Plan says which blocks to remove and why. It is written as JSON by
// `onnxprune calibrate`/`select` and read back by `onnxprune prune`.
type Plan struct {
	Model    string `json:"model,omitempty"`
	Blocks   int    `json:"blocks"`   // L of the model the plan is for
	Strategy string `json:"strategy"` // angular, bi, last, sleb, layers
	Remove   []int  `json:"remove"`   // sorted block indices
	// Score is the strategy's figure of merit for the chosen set: d(l*, n)
	// for angular, the summed BI for bi, the calibration perplexity after
	// removal for sleb.
	Score  float64 `json:"score"`
	Reason string  `json:"reason"`
	// Candidates lists what the strategy compared (start → d(l, n) for
	// angular, layer → BI for bi, step-wise choices for sleb).
	Candidates []Candidate `json:"candidates,omitempty"`
}

// Candidate is one option a strategy weighed.
type Candidate struct {
	Remove []int   `json:"remove"`
	Score  float64 `json:"score"`
}

// Strategies that work from calibration statistics alone (sleb needs the
// model; see SelectSLEB).
var Strategies = []string{"angular", "bi", "last", "sleb", "layers"}

// SelectAngular picks the contiguous run of n blocks l*…l*+n−1 whose
// input and output states are closest: l* = argmin_l d(l, n).
func SelectAngular(s *Stats, n int, allTokens bool) (*Plan, error) {
	if err := checkN(n, s.Layers); err != nil {
		return nil, err
	}
	p := &Plan{Blocks: s.Layers, Strategy: "angular", Score: math.Inf(1)}
	for l := 0; l+n <= s.Layers; l++ {
		d := s.Distance(l, n, allTokens)
		p.Candidates = append(p.Candidates, Candidate{Remove: span(l, n), Score: d})
		if d < p.Score {
			p.Score, p.Remove = d, span(l, n)
		}
	}
	where := "last real token"
	if allTokens {
		where = "all real tokens"
	}
	p.Reason = fmt.Sprintf("%s: smallest angular distance d(%d, %d) = %.4f between their input and output (%s)",
		blocksString(p.Remove), p.Remove[0], n, p.Score, where)
	return p, nil
}

// SelectBI picks the n blocks with the lowest Block Influence, wherever
// they are.
func SelectBI(s *Stats, n int) (*Plan, error) {
	if err := checkN(n, s.Layers); err != nil {
		return nil, err
	}
	idx := make([]int, s.Layers)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return s.BlockInfluence[idx[a]] < s.BlockInfluence[idx[b]] })
	p := &Plan{Blocks: s.Layers, Strategy: "bi"}
	for _, i := range idx {
		p.Candidates = append(p.Candidates, Candidate{Remove: []int{i}, Score: s.BlockInfluence[i]})
	}
	p.Remove = slices.Clone(idx[:n])
	sort.Ints(p.Remove)
	for _, i := range p.Remove {
		p.Score += s.BlockInfluence[i]
	}
	p.Reason = fmt.Sprintf("%s: lowest Block Influence (sum %.4f)", blocksString(p.Remove), p.Score)
	return p, nil
}

// SelectLast picks the n blocks before the last one, the heuristic the
// pruning literature found close to the angular choice on large models.
func SelectLast(L, n int) (*Plan, error) {
	if err := checkN(n, L); err != nil {
		return nil, err
	}
	if n > L-1 {
		return nil, fmt.Errorf("select last: %d blocks before the last of %d do not exist", n, L)
	}
	p := &Plan{Blocks: L, Strategy: "last", Remove: span(L-1-n, n)}
	p.Reason = fmt.Sprintf("%s: the %d before the last", blocksString(p.Remove), n)
	return p, nil
}

// SelectLayers is an explicit choice, e.g. from --layers 2,3.
func SelectLayers(L int, layers []int) (*Plan, error) {
	seen := map[int]bool{}
	for _, b := range layers {
		if b < 0 || b >= L {
			return nil, fmt.Errorf("block %d out of range: the model has blocks 0..%d", b, L-1)
		}
		if seen[b] {
			return nil, fmt.Errorf("block %d listed twice", b)
		}
		seen[b] = true
	}
	if err := checkN(len(layers), L); err != nil {
		return nil, err
	}
	p := &Plan{Blocks: L, Strategy: "layers", Remove: slices.Sorted(slices.Values(layers))}
	p.Reason = fmt.Sprintf("%s: chosen explicitly", blocksString(p.Remove))
	return p, nil
}

func checkN(n, L int) error {
	switch {
	case n <= 0:
		return fmt.Errorf("remove %d blocks: need at least 1", n)
	case n >= L:
		return fmt.Errorf("remove %d blocks: the model has %d, at least one must stay", n, L)
	}
	return nil
}

func span(l, n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = l + i
	}
	return s
}

// blocksString says "block 3" or "blocks 2-4,7".
func blocksString(b []int) string {
	if len(b) == 1 {
		return "block " + strconv.Itoa(b[0])
	}
	return "blocks " + graph.FormatBlocks(b)
}

// ParseLayers parses "2,3" or "2-4,7".
func ParseLayers(s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("layers %q: %q is not a block index", s, part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("layers %q: bad range %q", s, part)
			}
		}
		for i := a; i <= b; i++ {
			out = append(out, i)
		}
	}
	return out, nil
}

// WritePlan writes p as indented JSON, atomically.
func WritePlan(p *Plan, path string) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'))
}

// ReadPlan reads a plan written by WritePlan.
func ReadPlan(path string) (*Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("calib: %w", err)
	}
	var p Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("calib: %s: not a plan: %v", path, err)
	}
	if len(p.Remove) == 0 {
		return nil, fmt.Errorf("calib: %s: plan removes no blocks", path)
	}
	return &p, nil
}
