package convert_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/onnxprune/onnxprune/convert"
)

// referenceLlama is a plain float64 forward pass of a Llama-family
// checkpoint over one sequence (positions 0…n−1, causal, no cache),
// written from the Hugging Face definitions with loops rather than from
// the builder's graph: RMSNorm, q/k/v projections with optional biases,
// rotate-half RoPE, grouped-query attention (query head h reads KV head
// h / (heads/kv_heads)), SwiGLU, final norm, tied or untied head. It
// returns logits [n][vocab].
func referenceLlama(t *testing.T, ck convert.Checkpoint, ids []int64) [][]float64 {
	t.Helper()
	cfg := ck.Config()
	w := map[string][]float64{}
	for _, ten := range ck.Tensors() {
		v, err := ten.Read()
		if err != nil {
			t.Fatal(err)
		}
		f := make([]float64, len(v))
		for i, x := range v {
			f[i] = float64(x)
		}
		w[ten.Name] = f
	}
	H, nh, nkv, hd, n := cfg.Hidden, cfg.Heads, cfg.KVHeads, cfg.HeadDim, len(ids)
	// matvec: y = W x (+ b) for W [out, in] row-major.
	matvec := func(W []float64, x []float64, out int, b []float64) []float64 {
		in := len(x)
		y := make([]float64, out)
		for o := 0; o < out; o++ {
			s := 0.0
			for i := 0; i < in; i++ {
				s += W[o*in+i] * x[i]
			}
			if b != nil {
				s += b[o]
			}
			y[o] = s
		}
		return y
	}
	rmsnorm := func(x, g []float64) []float64 {
		ss := 0.0
		for _, v := range x {
			ss += v * v
		}
		r := 1 / math.Sqrt(ss/float64(len(x))+cfg.NormEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = g[i] * x[i] * r
		}
		return y
	}
	rope := func(v []float64, heads, pos int) {
		for h := 0; h < heads; h++ {
			for i := 0; i < hd/2; i++ {
				ang := float64(pos) * math.Pow(cfg.RopeTheta, -float64(2*i)/float64(hd))
				a, b := v[h*hd+i], v[h*hd+i+hd/2]
				v[h*hd+i] = a*math.Cos(ang) - b*math.Sin(ang)
				v[h*hd+i+hd/2] = b*math.Cos(ang) + a*math.Sin(ang)
			}
		}
	}
	x := make([][]float64, n)
	for s, id := range ids {
		x[s] = append([]float64(nil), w["model.embed_tokens.weight"][int(id)*H:(int(id)+1)*H]...)
	}
	for l := 0; l < cfg.Layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		q, k, v := make([][]float64, n), make([][]float64, n), make([][]float64, n)
		for s := 0; s < n; s++ {
			xn := rmsnorm(x[s], w[p+"input_layernorm.weight"])
			q[s] = matvec(w[p+"self_attn.q_proj.weight"], xn, nh*hd, w[p+"self_attn.q_proj.bias"])
			k[s] = matvec(w[p+"self_attn.k_proj.weight"], xn, nkv*hd, w[p+"self_attn.k_proj.bias"])
			v[s] = matvec(w[p+"self_attn.v_proj.weight"], xn, nkv*hd, w[p+"self_attn.v_proj.bias"])
			rope(q[s], nh, s)
			rope(k[s], nkv, s)
		}
		for s := 0; s < n; s++ {
			ctx := make([]float64, nh*hd)
			for h := 0; h < nh; h++ {
				g := h / (nh / nkv)
				scores := make([]float64, s+1)
				top := math.Inf(-1)
				for j := 0; j <= s; j++ {
					dot := 0.0
					for i := 0; i < hd; i++ {
						dot += q[s][h*hd+i] * k[j][g*hd+i]
					}
					scores[j] = dot / math.Sqrt(float64(hd))
					top = max(top, scores[j])
				}
				sum := 0.0
				for j := range scores {
					scores[j] = math.Exp(scores[j] - top)
					sum += scores[j]
				}
				for j := range scores {
					for i := 0; i < hd; i++ {
						ctx[h*hd+i] += scores[j] / sum * v[j][g*hd+i]
					}
				}
			}
			o := matvec(w[p+"self_attn.o_proj.weight"], ctx, H, nil)
			for i := range o {
				x[s][i] += o[i]
			}
		}
		for s := 0; s < n; s++ {
			xn := rmsnorm(x[s], w[p+"post_attention_layernorm.weight"])
			gate := matvec(w[p+"mlp.gate_proj.weight"], xn, cfg.FFN, nil)
			up := matvec(w[p+"mlp.up_proj.weight"], xn, cfg.FFN, nil)
			for i := range gate {
				gate[i] = gate[i] / (1 + math.Exp(-gate[i])) * up[i]
			}
			m := matvec(w[p+"mlp.down_proj.weight"], gate, H, nil)
			for i := range m {
				x[s][i] += m[i]
			}
		}
	}
	head := w["lm_head.weight"]
	if cfg.TiedEmbeddings {
		head = w["model.embed_tokens.weight"]
	}
	logits := make([][]float64, n)
	for s := 0; s < n; s++ {
		logits[s] = matvec(head, rmsnorm(x[s], w["model.norm.weight"]), cfg.Vocab, nil)
	}
	return logits
}
