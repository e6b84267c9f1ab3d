package convert

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"

	"github.com/onnxprune/onnxprune/graph"
)

// Synthetic returns a checkpoint of cfg's shape with random weights:
// matrices and embeddings N(0, 0.02²) (Hugging Face's initializer_range),
// biases N(0, 0.02²), norm weights 1 + N(0, 0.02²). Zero fields of cfg get
// defaults: HeadDim Hidden/Heads, KVHeads Heads, MaxPositions 2048,
// NormEps 1e-5, RopeTheta 10000.
//
// Nothing is held in memory: each Read regenerates its tensor from seed
// and the tensor's index, so a model of any size costs one tensor at a
// time, and the same (cfg, seed) always gives the same weights.
func Synthetic(cfg Config, seed int64) Checkpoint {
	if cfg.Family == "" {
		cfg.Family = FamilyLlama
	}
	if cfg.KVHeads == 0 {
		cfg.KVHeads = cfg.Heads
	}
	if cfg.HeadDim == 0 && cfg.Heads > 0 {
		cfg.HeadDim = cfg.Hidden / cfg.Heads
	}
	if cfg.MaxPositions == 0 {
		cfg.MaxPositions = 2048
	}
	if cfg.NormEps == 0 {
		cfg.NormEps = 1e-5
	}
	if cfg.RopeTheta == 0 && cfg.Family == FamilyLlama {
		cfg.RopeTheta = 10000
	}
	if cfg.Family == FamilyGPT2 {
		cfg.TiedEmbeddings = true
	}
	s := &synthetic{cfg: cfg}
	for i, spec := range expectedWeights(cfg) {
		kind := synthMatrix
		switch {
		case isNormWeight(spec.name):
			kind = synthNorm
		case len(spec.shape) == 1:
			kind = synthBias
		}
		s.tensors = append(s.tensors, Tensor{
			Name:  spec.name,
			Shape: spec.shape,
			Read:  synthReader(uint64(seed), uint64(i), graph.NumElements(spec.shape), kind),
		})
	}
	return s
}

type synthetic struct {
	cfg     Config
	tensors []Tensor
}

func (s *synthetic) Config() Config    { return s.cfg }
func (s *synthetic) Tensors() []Tensor { return append([]Tensor(nil), s.tensors...) }
func (s *synthetic) Close() error      { return nil }

type synthKind int

const (
	synthMatrix synthKind = iota
	synthBias
	synthNorm
)

// isNormWeight tells norm gains (≈ 1) from biases and matrices (≈ 0).
func isNormWeight(name string) bool {
	for _, suffix := range []string{"norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight"} {
		if strings.HasSuffix(name, suffix) {
			return true
		}
	}
	return false
}

// synthChunk is the number of values one random stream generates. Each
// chunk has its own stream (seed, tensor, chunk), so chunks can be
// generated in parallel and the result does not depend on how.
const synthChunk = 1 << 20

func synthReader(seed, index uint64, n int64, kind synthKind) func() ([]float32, error) {
	return func() ([]float32, error) {
		vals := make([]float32, n)
		chunks := int((n + synthChunk - 1) / synthChunk)
		workers := min(chunks, runtime.GOMAXPROCS(0))
		var wg sync.WaitGroup
		next := make(chan int, chunks)
		for c := 0; c < chunks; c++ {
			next <- c
		}
		close(next)
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for c := range next {
					lo := int64(c) * synthChunk
					fillNormal(vals[lo:min(lo+synthChunk, n)], seed, index<<32|uint64(c), kind)
				}
			}()
		}
		wg.Wait()
		return vals, nil
	}
}

func fillNormal(dst []float32, seed, stream uint64, kind synthKind) {
	r := rand.New(rand.NewPCG(seed, stream))
	const std = 0.02
	var offset float32
	if kind == synthNorm {
		offset = 1
	}
	for i := range dst {
		dst[i] = offset + float32(r.NormFloat64()*std)
	}
}
