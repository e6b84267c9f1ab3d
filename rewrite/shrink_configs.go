package rewrite

import (
	"fmt"
	"path/filepath"
	"slices"
)

// WriteShrinkSidecars writes the files next to a model of L blocks shrunk
// by plan: what WriteSidecars writes for the blocks the plan keeps (all
// but its RemoveBlocks), then in
// config.json the widths — intermediate_size (GPT-2: n_inner),
// num_attention_heads (n_head), num_key_value_heads, and head_dim, which
// no longer follows from hidden_size / num_attention_heads — and in
// genai_config.json model.decoder.num_attention_heads and
// num_key_value_heads. Hugging Face configs hold one width for all
// layers: when the plan leaves layers with different widths, the scalar
// keys get the largest and *_per_layer lists (an onnxprune extension)
// give each layer's.
func WriteShrinkSidecars(srcDir, dstDir string, L int, plan *ShrinkPlan) ([]string, error) {
	kept := plan.Kept(L)
	written, err := WriteSidecars(srcDir, dstDir, L, kept)
	if err != nil {
		return written, err
	}
	byBlock := map[int]LayerShrink{}
	for _, ls := range plan.Layers {
		byBlock[ls.Block] = ls
	}
	// widths fills per-layer values: the plan's where it shrank the
	// layer, the config's value elsewhere.
	widths := func(orig int, after func(LayerShrink) (int, bool)) []any {
		v := make([]any, len(kept))
		for i, l := range kept {
			v[i] = orig
			if ls, ok := byBlock[l]; ok {
				if n, ok := after(ls); ok {
					v[i] = n
				}
			}
		}
		return v
	}
	ffnAfter := func(ls LayerShrink) (int, bool) { return ls.FFNAfter, len(ls.RemoveChannels) > 0 }
	headsAfter := func(ls LayerShrink) (int, bool) { return ls.HeadsAfter, len(ls.RemoveKVGroups) > 0 }
	kvAfter := func(ls LayerShrink) (int, bool) { return ls.KVHeadsAfter, len(ls.RemoveKVGroups) > 0 }
	for _, ls := range plan.Layers {
		if len(ls.RemoveKVGroups) > 0 && (ls.HeadsAfter == 0 || ls.KVHeadsAfter == 0) {
			return written, fmt.Errorf("rewrite: shrink plan for block %d removes KV groups but does not give the head counts after", ls.Block)
		}
		if len(ls.RemoveChannels) > 0 && ls.FFNAfter == 0 {
			return written, fmt.Errorf("rewrite: shrink plan for block %d removes FFN channels but does not give the width after", ls.Block)
		}
	}
	// set writes a width: one value, or the largest plus the list.
	set := func(c map[string]any, key string, v []any) {
		if len(v) == 0 {
			return
		}
		uniform := true
		best := v[0].(int)
		for _, x := range v {
			uniform = uniform && x == v[0]
			best = max(best, x.(int))
		}
		c[key] = best
		if !uniform {
			c[key+"_per_layer"] = v
		} else {
			delete(c, key+"_per_layer")
		}
	}
	num := func(c map[string]any, key string) (int, bool) {
		f, ok := c[key].(float64)
		return int(f), ok
	}
	if slices.Contains(written, "config.json") {
		p := filepath.Join(dstDir, "config.json")
		if _, err := updateJSON(p, p, func(c map[string]any) error {
			ffnKey, headKey := "intermediate_size", "num_attention_heads"
			if _, ok := c["n_head"]; ok {
				ffnKey, headKey = "n_inner", "n_head"
			}
			ffn, ok := num(c, ffnKey)
			if !ok && ffnKey == "n_inner" { // GPT-2's null means 4·n_embd
				if e, ok2 := num(c, "n_embd"); ok2 {
					ffn, ok = 4*e, true
				}
			}
			if ok {
				set(c, ffnKey, widths(ffn, ffnAfter))
			}
			heads, okH := num(c, headKey)
			if !okH {
				return nil
			}
			kv, okKV := num(c, "num_key_value_heads")
			if !okKV {
				kv = heads
			}
			if _, has := c["head_dim"]; !has {
				hidden, okHid := num(c, "hidden_size")
				if !okHid {
					hidden, okHid = num(c, "n_embd")
				}
				if okHid && heads > 0 {
					c["head_dim"] = hidden / heads
				}
			}
			set(c, headKey, widths(heads, headsAfter))
			if okKV || headKey == "num_attention_heads" {
				set(c, "num_key_value_heads", widths(kv, kvAfter))
			}
			return nil
		}); err != nil {
			return written, err
		}
	}
	if slices.Contains(written, "genai_config.json") {
		p := filepath.Join(dstDir, "genai_config.json")
		if _, err := updateJSON(p, p, func(c map[string]any) error {
			model, _ := c["model"].(map[string]any)
			dec, _ := model["decoder"].(map[string]any)
			if dec == nil {
				return fmt.Errorf("no model.decoder section")
			}
			heads, ok := num(dec, "num_attention_heads")
			if !ok {
				return nil
			}
			kv, ok := num(dec, "num_key_value_heads")
			if !ok {
				kv = heads
			}
			set(dec, "num_attention_heads", widths(heads, headsAfter))
			set(dec, "num_key_value_heads", widths(kv, kvAfter))
			return nil
		}); err != nil {
			return written, err
		}
	}
	return written, nil
}
