#!/usr/bin/python3
"""Export the PyTorch-made ONNX test fixtures in testdata/models/.

Run from the repository root with Debian's Python (python3-torch 1.13,
python3-onnx, python3-numpy):

    /usr/bin/python3 testdata/gen/export_torch.py --shared ../shared --out testdata/models

Why this exists: onnxprune must find decoder blocks in graphs it did not write.
These fixtures are produced by torch.onnx.export (TorchScript exporter, opset
17), so node names, initializer names and op patterns are PyTorch's, not ours.
The modules below use Hugging Face module names so that the exported node names
look like those of real HF/optimum exports (/model/layers.N/..., /transformer/h.N/...).

Fixtures:
  stories260k.onnx     real stories260K weights (karpathy/tinyllamas), HF Llama, no cache
  stories260k_kv.onnx  same model with optimum-style past_key_values.N.* / present.N.*
  gpt2_kv.onnx         GPT-2 architecture, random (seeded) weights, with KV cache
  gpt2_kv_static.onnx  the same GPT-2 and weights, exported with static shapes
                       (batch 1, 4 new tokens, past 4) so that onnxruntime can fuse
                       a SkipLayerNormalization (testdata/gen/ortopt makes that copy)
and NAME.ref.json next to each: fixed inputs and the torch outputs for them.

Before anything is written, the script checks the torch models (see README.md):
the HF-style Llama against an independent llama2.c-style numpy forward, greedy
decoding against the text published with stories260K, and KV-cache consistency.
No network is needed.
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys
import warnings

import numpy as np
import onnx
import torch
from torch import nn

OPSET = 17
BOS = 1
STATIC_SEQ, STATIC_PAST = 4, 4  # gpt2_kv_static.onnx: new tokens, cached tokens
SHA256 = {
    "stories260K.bin": "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696",
    "tok512.bin": "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312",
}
EXPECTED_GREEDY = ("Once upon a time, there was a little girl named Lily. "
                   "She loved to play outside in the park.")


# ----------------------------------------------------------------------------
# llama2.c checkpoint and tokenizer

def load_llama2c(path):
    """Read a llama2.c legacy (version 0) checkpoint into numpy arrays."""
    with open(path, "rb") as f:
        data = f.read()
    dim, hidden, n_layers, n_heads, n_kv_heads, vocab, seq_len = struct.unpack("<7i", data[:28])
    shared_classifier = vocab > 0  # a negative vocab_size means a separate classifier
    vocab = abs(vocab)
    head_size = dim // n_heads
    kv_dim = n_kv_heads * head_size
    flat = np.frombuffer(data, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        a = flat[pos:pos + n].reshape(shape).copy()
        pos += n
        return a

    L = n_layers
    w = dict(
        tok=take(vocab, dim), rms_att=take(L, dim), wq=take(L, dim, dim),
        wk=take(L, kv_dim, dim), wv=take(L, kv_dim, dim), wo=take(L, dim, dim),
        rms_ffn=take(L, dim), w1=take(L, hidden, dim), w2=take(L, dim, hidden),
        w3=take(L, hidden, dim), rms_final=take(dim),
        freq_real=take(seq_len, head_size // 2), freq_imag=take(seq_len, head_size // 2))
    w["cls"] = w["tok"] if shared_classifier else take(vocab, dim)
    assert pos == flat.size, "trailing bytes in checkpoint: %d floats" % (flat.size - pos)
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads,
               n_kv_heads=n_kv_heads, vocab=vocab, seq_len=seq_len, tied=shared_classifier)
    return cfg, w


class Tokenizer:
    """llama2.c tokenizer (tok512.bin): encode/decode exactly as run.c does."""

    def __init__(self, path):
        with open(path, "rb") as f:
            data = f.read()
        (self.max_len,) = struct.unpack_from("<i", data, 0)
        off, self.pieces, self.scores = 4, [], []
        while off < len(data):
            score, n = struct.unpack_from("<fi", data, off)
            self.pieces.append(data[off + 8:off + 8 + n])
            self.scores.append(score)
            off += 8 + n
        self.index = {p: i for i, p in enumerate(self.pieces)}

    def piece_bytes(self, prev, tok):
        p = self.pieces[tok]
        if prev == BOS and p.startswith(b" "):  # run.c strips the space after BOS
            p = p[1:]
        if len(p) == 6 and p.startswith(b"<0x") and p.endswith(b">"):  # byte fallback
            return bytes([int(p[3:5], 16)])
        return p

    def decode(self, tokens):
        # run.c prints decode(prev, next) for each token after the first (BOS)
        out = b"".join(self.piece_bytes(p, t) for p, t in zip(tokens, tokens[1:]))
        return out.decode("utf-8", errors="replace")

    def encode(self, text, bos=True):
        # run.c: dummy-prefix space, one token per UTF-8 character (byte fallback
        # +3 when unknown), then greedily merge the best-scoring adjacent pair.
        toks = [self.index[b" "]] if text else []
        for ch in text:
            b = ch.encode("utf-8")
            toks += [self.index[b]] if b in self.index else [x + 3 for x in b]
        while True:
            best, best_i = -1e10, -1
            for i in range(len(toks) - 1):
                j = self.index.get(self.pieces[toks[i]] + self.pieces[toks[i + 1]])
                if j is not None and self.scores[j] > best:
                    best, best_i = self.scores[j], i
            if best_i < 0:
                break
            toks[best_i:best_i + 2] = [self.index[self.pieces[toks[best_i]] + self.pieces[toks[best_i + 1]]]]
        return ([BOS] if bos else []) + toks


def llama2c_forward_np(cfg, w, tokens):
    """Independent reference: run.c's arithmetic in float64 over a whole sequence,
    with the ORIGINAL (unpermuted) weights, interleaved-pair RoPE from the
    checkpoint's freq_cis tables, and grouped kv heads by index h // kv_mul."""
    f64 = {k: v.astype(np.float64) for k, v in w.items()}
    T, dim, nh, nkv = len(tokens), cfg["dim"], cfg["n_heads"], cfg["n_kv_heads"]
    hs = dim // nh
    kv_mul = nh // nkv

    def rmsnorm(x, g):
        return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5)

    def rope(v):  # v [T, n*hs]; rotate pairs (v[2i], v[2i+1]) of each head
        pairs = v.reshape(T, -1, hs // 2, 2)
        cos = f64["freq_real"][:T][:, None, :]
        sin = f64["freq_imag"][:T][:, None, :]
        a, b = pairs[..., 0], pairs[..., 1]
        return np.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(T, -1)

    x = f64["tok"][tokens]
    causal = np.tril(np.ones((T, T), bool))
    for l in range(cfg["n_layers"]):
        xb = rmsnorm(x, f64["rms_att"][l])
        q = rope(xb @ f64["wq"][l].T).reshape(T, nh, hs)
        k = rope(xb @ f64["wk"][l].T).reshape(T, nkv, hs)
        v = (xb @ f64["wv"][l].T).reshape(T, nkv, hs)
        out = np.empty((T, nh, hs))
        for h in range(nh):
            s = q[:, h] @ k[:, h // kv_mul].T / math.sqrt(hs)
            s = np.where(causal, s, -np.inf)
            p = np.exp(s - s.max(-1, keepdims=True))
            out[:, h] = (p / p.sum(-1, keepdims=True)) @ v[:, h // kv_mul]
        x = x + out.reshape(T, dim) @ f64["wo"][l].T
        xb = rmsnorm(x, f64["rms_ffn"][l])
        h1 = xb @ f64["w1"][l].T
        x = x + ((h1 / (1 + np.exp(-h1))) * (xb @ f64["w3"][l].T)) @ f64["w2"][l].T
    return rmsnorm(x, f64["rms_final"]) @ f64["cls"].T


# ----------------------------------------------------------------------------
# Llama in Hugging Face layout (LlamaForCausalLM module names, eager attention)

class LlamaRMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, hidden_states):  # pow/mean/rsqrt/mul, as HF writes it
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states


class LlamaRotaryEmbedding(nn.Module):
    """cos/sin from position_ids (computed once, shared by all layers)."""

    def __init__(self, head_dim, theta=10000.0):
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids):
        freqs = position_ids[:, :, None].float() * self.inv_freq[None, None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # HF layout: halves, not pairs
        return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(x, n_rep):  # GQA: [b, nkv, t, hd] -> [b, nkv*n_rep, t, hd]
    b, nkv, t, hd = x.shape
    return x[:, :, None, :, :].expand(b, nkv, n_rep, t, hd).reshape(b, nkv * n_rep, t, hd)


class LlamaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.nh, self.nkv, self.hd = c["n_heads"], c["n_kv_heads"], c["dim"] // c["n_heads"]
        self.q_proj = nn.Linear(c["dim"], self.nh * self.hd, bias=False)
        self.k_proj = nn.Linear(c["dim"], self.nkv * self.hd, bias=False)
        self.v_proj = nn.Linear(c["dim"], self.nkv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.nh * self.hd, c["dim"], bias=False)

    def forward(self, x, cos, sin, bias, past):
        b, s, d = x.shape
        q = self.q_proj(x).view(b, s, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.nkv, self.hd).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:  # cache holds keys after RoPE, as HF does
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v)
        n_rep = self.nh // self.nkv
        scores = torch.matmul(q, repeat_kv(k, n_rep).transpose(2, 3)) / math.sqrt(self.hd)
        probs = torch.softmax(scores + bias, dim=-1, dtype=torch.float32)
        out = torch.matmul(probs, repeat_kv(v, n_rep)).transpose(1, 2).reshape(b, s, d)
        return self.o_proj(out), present


class LlamaMLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["dim"], c["hidden"], bias=False)
        self.up_proj = nn.Linear(c["dim"], c["hidden"], bias=False)
        self.down_proj = nn.Linear(c["hidden"], c["dim"], bias=False)

    def forward(self, x):  # SwiGLU
        return self.down_proj(nn.functional.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(c["dim"])
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = LlamaRMSNorm(c["dim"])
        self.mlp = LlamaMLP(c)

    def forward(self, h, cos, sin, bias, past):
        a, present = self.self_attn(self.input_layernorm(h), cos, sin, bias, past)
        h = h + a
        h = h + self.mlp(self.post_attention_layernorm(h))
        return h, present


def attention_bias(attention_mask, q_len):
    """Additive mask [b, 1, q, past+q]: 0 where allowed, float32 min where the key
    is in the future or is padding (HF masks with torch.finfo(dtype).min; we set it
    with masked_fill so that two masks never add up to -inf)."""
    t = attention_mask.shape[1]
    q_pos = torch.arange(q_len) + (t - q_len)  # absolute positions of the queries
    k_pos = torch.arange(t)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None, None] & attention_mask[:, None, None, :].bool()
    return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)


class LlamaModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["dim"])
        self.layers = nn.ModuleList([LlamaDecoderLayer(c) for _ in range(c["n_layers"])])
        self.norm = LlamaRMSNorm(c["dim"])
        self.rotary_emb = LlamaRotaryEmbedding(c["dim"] // c["n_heads"])

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        h = self.embed_tokens(input_ids)
        cos, sin = self.rotary_emb(position_ids)
        bias = attention_bias(attention_mask, input_ids.shape[1])
        presents = []
        for i, layer in enumerate(self.layers):
            h, present = layer(h, cos, sin, bias, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        return self.norm(h), tuple(presents)


class LlamaForCausalLM(nn.Module):
    """forward(input_ids, attention_mask, position_ids[, past_key_values]).
    Without past_key_values it returns logits only (the no-cache export);
    with them (a tuple of (key, value) per layer) it returns (logits, presents)."""

    def __init__(self, c):
        super().__init__()
        self.model = LlamaModel(c)
        self.lm_head = nn.Linear(c["dim"], c["vocab"], bias=False)
        self.lm_head.weight = self.model.embed_tokens.weight  # tied

    def forward(self, input_ids, attention_mask, position_ids, past_key_values=None):
        h, presents = self.model(input_ids, attention_mask, position_ids, past_key_values)
        logits = self.lm_head(h)
        return logits if past_key_values is None else (logits, presents)


def permute_rope(w, n_heads, dim1, dim2):
    """llama2.c rotates interleaved pairs, HF rotates halves: reorder q/k rows per
    head (transformers' convert_llama_weights_to_hf.py permute)."""
    return w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)


def build_llama(cfg, w):
    m = LlamaForCausalLM(cfg).eval()
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    dim, kv_dim = cfg["dim"], cfg["n_kv_heads"] * (cfg["dim"] // cfg["n_heads"])
    with torch.no_grad():
        m.model.embed_tokens.weight.copy_(t(w["tok"]))
        for i, layer in enumerate(m.model.layers):
            layer.input_layernorm.weight.copy_(t(w["rms_att"][i]))
            layer.self_attn.q_proj.weight.copy_(permute_rope(t(w["wq"][i]), cfg["n_heads"], dim, dim))
            layer.self_attn.k_proj.weight.copy_(permute_rope(t(w["wk"][i]), cfg["n_kv_heads"], kv_dim, dim))
            layer.self_attn.v_proj.weight.copy_(t(w["wv"][i]))
            layer.self_attn.o_proj.weight.copy_(t(w["wo"][i]))
            layer.post_attention_layernorm.weight.copy_(t(w["rms_ffn"][i]))
            layer.mlp.gate_proj.weight.copy_(t(w["w1"][i]))
            layer.mlp.down_proj.weight.copy_(t(w["w2"][i]))
            layer.mlp.up_proj.weight.copy_(t(w["w3"][i]))
        m.model.norm.weight.copy_(t(w["rms_final"]))
    assert cfg["tied"]
    return m


# ----------------------------------------------------------------------------
# GPT-2 in Hugging Face layout (GPT2LMHeadModel module names, eager attention)

class Conv1D(nn.Module):
    """HF's Conv1D: a linear layer with weight stored [in, out], computed with addmm."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        n = c["n_positions"]
        # HF keeps a lower-triangular bool buffer per layer and slices it.
        self.register_buffer("bias", torch.tril(torch.ones((n, n), dtype=torch.bool)).view(1, 1, n, n),
                             persistent=False)
        self.nh, self.hd = c["n_head"], c["n_embd"] // c["n_head"]
        self.c_attn = Conv1D(3 * c["n_embd"], c["n_embd"])
        self.c_proj = Conv1D(c["n_embd"], c["n_embd"])

    def split_heads(self, x):
        return x.view(x.size()[:-1] + (self.nh, self.hd)).permute(0, 2, 1, 3)

    def forward(self, x, attention_bias, past):
        q, k, v = self.c_attn(x).split(self.nh * self.hd, dim=2)
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        if past is not None:
            k = torch.cat((past[0], k), dim=-2)
            v = torch.cat((past[1], v), dim=-2)
        present = (k, v)
        w = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.hd)
        q_len, k_len = q.size(-2), k.size(-2)
        causal = self.bias[:, :, k_len - q_len:k_len, :k_len]
        w = torch.where(causal, w, torch.full([], torch.finfo(torch.float32).min))
        w = torch.softmax(w + attention_bias, dim=-1)
        out = torch.matmul(w, v).permute(0, 2, 1, 3).contiguous()
        return self.c_proj(out.view(out.size()[:-2] + (self.nh * self.hd,))), present


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c_fc = Conv1D(4 * c["n_embd"], c["n_embd"])
        self.c_proj = Conv1D(c["n_embd"], 4 * c["n_embd"])

    def forward(self, x):
        h = self.c_fc(x)
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))  # gelu_new
        return self.c_proj(h)


class GPT2Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.ln_1 = nn.LayerNorm(c["n_embd"], eps=1e-5)
        self.attn = GPT2Attention(c)
        self.ln_2 = nn.LayerNorm(c["n_embd"], eps=1e-5)
        self.mlp = GPT2MLP(c)

    def forward(self, h, attention_bias, past):
        a, present = self.attn(self.ln_1(h), attention_bias, past)
        h = h + a
        return h + self.mlp(self.ln_2(h)), present


class GPT2Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.wte = nn.Embedding(c["vocab"], c["n_embd"])
        self.wpe = nn.Embedding(c["n_positions"], c["n_embd"])
        self.h = nn.ModuleList([GPT2Block(c) for _ in range(c["n_layer"])])
        self.ln_f = nn.LayerNorm(c["n_embd"], eps=1e-5)

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        h = self.wte(input_ids) + self.wpe(position_ids)
        # HF GPT2Model: padding becomes an additive (1 - mask) * min bias.
        bias = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        presents = []
        for i, block in enumerate(self.h):
            h, present = block(h, bias, past_key_values[i])
            presents.append(present)
        return self.ln_f(h), tuple(presents)


class GPT2LMHeadModel(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.transformer = GPT2Model(c)
        self.lm_head = nn.Linear(c["n_embd"], c["vocab"], bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied

    def forward(self, input_ids, attention_mask, position_ids, past_key_values):
        h, presents = self.transformer(input_ids, attention_mask, position_ids, past_key_values)
        return self.lm_head(h), presents


def build_gpt2(c, seed):
    g = torch.Generator().manual_seed(seed)
    m = GPT2LMHeadModel(c).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))  # not trivially 1
            elif p.dim() == 1:  # LayerNorm and Conv1D biases: small, not trivially 0
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
            else:  # HF initializer_range 0.02; residual projections scaled by 1/sqrt(2*n_layer)
                std = 0.02 / math.sqrt(2 * c["n_layer"]) if name.endswith("c_proj.weight") else 0.02
                p.copy_(std * torch.randn(p.shape, generator=g))
    return m


# ----------------------------------------------------------------------------
# helpers: inputs, export, reference JSON

def batch_inputs(rows, pad_id=0):
    """Left-pad token rows; position_ids as HF generate: cumsum(mask) - 1, pads -> 1."""
    n = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (n - len(r)) + r for r in rows], dtype=torch.int64)
    mask = torch.tensor([[0] * (n - len(r)) + [1] * len(r) for r in rows], dtype=torch.int64)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    return ids, mask, pos


def empty_past(n_layers, batch, heads, head_dim):
    return tuple((torch.zeros(batch, heads, 0, head_dim), torch.zeros(batch, heads, 0, head_dim))
                 for _ in range(n_layers))


def kv_names(n_layers):
    past = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
    return past, present


def flat_past(past):
    return [t for kv in past for t in kv]


def export(model, args, path, input_names, output_names, kv, static=False):
    """torch.onnx.export at opset 17, weights inline, default (scope-based) node names.
    static=True: no dynamic axes, every shape is the traced one."""
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "position_ids": {0: "batch", 1: "sequence"},
           "attention_mask": {0: "batch", 1: "past_sequence + sequence" if kv else "sequence"},
           "logits": {0: "batch", 1: "sequence"}}
    for n in input_names[3:]:
        dyn[n] = {0: "batch", 2: "past_sequence"}
    for n in output_names[1:]:
        dyn[n] = {0: "batch", 2: "past_sequence + sequence"}
    if static:
        dyn = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.onnx.export(model, args, path, input_names=input_names, output_names=output_names,
                          dynamic_axes=dyn, opset_version=OPSET, do_constant_folding=True)
    for w in caught:
        print("  export warning: %s: %s" % (w.category.__name__, str(w.message).splitlines()[0]))
    m = onnx.load(path)
    onnx.checker.check_model(m)
    assert [i.name for i in m.graph.input] == input_names, [i.name for i in m.graph.input]
    assert [o.name for o in m.graph.output] == output_names
    return m


def check_block_names(m, prefix, n_layers):
    """Every block must be visible in node names, e.g. /model/layers.3/..."""
    for i in range(n_layers):
        tag = "/%s.%d/" % (prefix, i)
        assert any(tag in n.name for n in m.graph.node), "no node named *%s*" % tag


def tensor_json(name, t):
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    if a.dtype == np.int64:
        data = ",".join(str(int(x)) for x in a.ravel())
    else:
        a = a.astype(np.float32)
        assert np.isfinite(a).all(), name
        data = ",".join("%.9g" % x for x in a.ravel())  # 9 digits: float32 round-trips
    return '%s: {"dtype": "%s", "shape": %s, "data": [%s]}' % (
        json.dumps(name), a.dtype.name, json.dumps(list(a.shape)), data)


def write_ref(path, model_file, cases, atol=1e-4):
    """NAME.ref.json, one tensor per line. cases: [(name, {input: t}, {output: t})]."""
    lines = ['{"model": %s, "atol": %g, "cases": [' % (json.dumps(model_file), atol)]
    for ci, (name, ins, outs) in enumerate(cases):
        lines.append(' {"name": %s,' % json.dumps(name))
        for sec, d, end in (("inputs", ins, ","), ("outputs", outs, "")):
            lines.append('  "%s": {' % sec)
            items = list(d.items())
            lines += ["   " + tensor_json(k, v) + ("," if j < len(items) - 1 else "") for j, (k, v) in enumerate(items)]
            lines.append("  }" + end)
        lines.append(" }" + ("," if ci < len(cases) - 1 else ""))
    lines.append("]}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # read back: exact float32 values and no NaN/inf
    back = json.load(open(path))
    for (name, ins, outs), c in zip(cases, back["cases"]):
        for k, v in list(ins.items()) + list(outs.items()):
            got = c["inputs"].get(k) or c["outputs"][k]
            want = v.detach().numpy()
            assert got["shape"] == list(want.shape)
            assert np.array_equal(np.array(got["data"], dtype=want.dtype).reshape(want.shape), want), (name, k)


def kv_cases(model, in_names, out_names, n_layers, heads, head_dim, prefix8, rows2):
    """prefill (8 tokens, empty past), batch2 (left-padded), decode (past 5 + 3 new).
    Also asserts that prefill(5) + decode(3) == the 8-token run (<= 1e-5)."""
    ids, mask, pos = batch_inputs([prefix8])
    logits, presents = model(ids, mask, pos, empty_past(n_layers, 1, heads, head_dim))
    prefill = ("prefill", dict(zip(in_names, [ids, mask, pos] + flat_past(empty_past(n_layers, 1, heads, head_dim)))),
               dict(zip(out_names, [logits] + flat_past(presents))))
    _, past5 = model(ids[:, :5], mask[:, :5], pos[:, :5], empty_past(n_layers, 1, heads, head_dim))
    step, presents3 = model(ids[:, 5:], mask, pos[:, 5:], past5)
    err = (step - logits[:, 5:]).abs().max().item()
    print("  KV check: prefill(5)+decode(3) vs 8 tokens: max |diff| %.2e" % err)
    assert err <= 1e-5, err
    for a, b in zip(flat_past(presents3), flat_past(presents)):
        assert (a - b).abs().max().item() <= 1e-5
    decode = ("decode", dict(zip(in_names, [ids[:, 5:], mask, pos[:, 5:]] + flat_past(past5))),
              dict(zip(out_names, [step] + flat_past(presents3))))
    ids2, mask2, pos2 = batch_inputs(rows2)
    logits2, _ = model(ids2, mask2, pos2, empty_past(n_layers, 2, heads, head_dim))
    check_padding(model, rows2, logits2, lambda i, m, p: model(i, m, p, empty_past(n_layers, 1, heads, head_dim))[0])
    batch2 = ("batch2", dict(zip(in_names, [ids2, mask2, pos2] + flat_past(empty_past(n_layers, 2, heads, head_dim)))),
              {"logits": logits2})
    return [prefill, batch2, decode]


def static_kv_cases(model, in_names, out_names, n_layers, heads, head_dim, prefix8, row6):
    """Cases for a model exported with static shapes: batch 1, STATIC_SEQ (4) new
    tokens after a past of STATIC_PAST (4). Both pasts are prefills computed in torch.
      decode:        past = prefill of prefix8[:4]; new tokens prefix8[4:8]
      decode_padded: past = prefill of [pad, pad, row6[0], row6[1]] (mask 0 0 1 1);
                     new tokens row6[2:6] at positions 2..5
    Asserts that each matches the corresponding uncached run (<= 1e-5)."""
    S, P = STATIC_SEQ, STATIC_PAST
    assert len(prefix8) == P + S and len(row6) == 2 + S
    empty = empty_past(n_layers, 1, heads, head_dim)
    ids, mask, pos = batch_inputs([prefix8])
    full, full_presents = model(ids, mask, pos, empty)
    _, past = model(ids[:, :P], mask[:, :P], pos[:, :P], empty)
    logits, presents = model(ids[:, P:], mask, pos[:, P:], past)
    err = (logits - full[:, P:]).abs().max().item()
    for a, b in zip(flat_past(presents), flat_past(full_presents)):
        err = max(err, (a - b).abs().max().item())
    print("  static decode: prefill(%d)+decode(%d) vs %d tokens: max |diff| %.2e" % (P, S, P + S, err))
    assert err <= 1e-5, err
    decode = ("decode", dict(zip(in_names, [ids[:, P:], mask, pos[:, P:]] + flat_past(past))),
              dict(zip(out_names, [logits] + flat_past(presents))))

    # left-padded past: two pads, then the first two tokens of row6
    pad = P - 2
    ids = torch.tensor([[0] * pad + row6], dtype=torch.int64)
    mask = torch.tensor([[0] * pad + [1] * len(row6)], dtype=torch.int64)
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    _, past = model(ids[:, :P], mask[:, :P], pos[:, :P], empty)
    logits, presents = model(ids[:, P:], mask, pos[:, P:], past)
    alone = model(*batch_inputs([row6]), empty)[0]
    err = (logits - alone[:, 2:]).abs().max().item()
    print("  static decode_padded vs the row alone: max |diff| %.2e" % err)
    assert err <= 1e-5, err
    padded = ("decode_padded", dict(zip(in_names, [ids[:, P:], mask, pos[:, P:]] + flat_past(past))),
              dict(zip(out_names, [logits] + flat_past(presents))))
    return [decode, padded]


def check_static_shapes(m, residual):
    """Every graph input/output and, after ONNX shape inference, every intermediate
    tensor has a fully static shape; `residual` (the last residual Add, the one
    onnxruntime can fuse into SkipLayerNormalization) is [1, STATIC_SEQ, n_embd]."""
    from onnx import shape_inference

    def dims(vi):
        t = vi.type.tensor_type
        return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else None

    inf = shape_inference.infer_shapes(m, strict_mode=True)
    shapes = {v.name: dims(v) for v in list(inf.graph.input) + list(inf.graph.output) + list(inf.graph.value_info)}
    loose = [k for k, v in shapes.items() if v is None or None in v or 0 in v]
    assert not loose, ("tensors without a static shape", loose[:10])
    assert residual in shapes, residual
    print("  static shapes: %d tensors, all static; %s %s" % (len(shapes), residual, shapes[residual]))
    return shapes[residual]


def check_padding(model, rows, logits, run):
    """Real positions of each left-padded row must match that row run alone."""
    n = logits.shape[1]
    for r, row in enumerate(rows):
        alone = run(*batch_inputs([row]))
        err = (logits[r, n - len(row):] - alone[0]).abs().max().item()
        assert err <= 1e-5, ("padding changes logits", r, err)
    print("  padding check: left-padded rows match unpadded runs")


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default="../shared", help="the project's shared/ folder")
    ap.add_argument("--out", default="testdata/models")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # same float summation order on every machine we can
    os.makedirs(args.out, exist_ok=True)
    sdir = os.path.join(args.shared, "models", "stories260K")

    # ---- stories260K: load and check against llama2.c arithmetic ----
    for f, want in SHA256.items():  # the exact blobs listed in shared/SOURCES.md
        got = hashlib.sha256(open(os.path.join(sdir, f), "rb").read()).hexdigest()
        assert got == want, "%s: sha256 %s, want %s" % (f, got, want)
    cfg, w = load_llama2c(os.path.join(sdir, "stories260K.bin"))
    print("stories260K config:", cfg)
    assert (cfg["dim"], cfg["hidden"], cfg["n_layers"], cfg["n_heads"], cfg["n_kv_heads"], cfg["vocab"]) == (64, 172, 5, 8, 4, 512)
    hs = cfg["dim"] // cfg["n_heads"]
    # the checkpoint's RoPE tables must be theta=10000 (else HF-style RoPE would differ)
    ang = np.arange(cfg["seq_len"])[:, None] * (10000.0 ** (-np.arange(0, hs, 2) / hs))[None, :]
    assert np.abs(w["freq_real"] - np.cos(ang)).max() < 1e-4 and np.abs(w["freq_imag"] - np.sin(ang)).max() < 1e-4

    tok = Tokenizer(os.path.join(sdir, "tok512.bin"))
    stories = open(os.path.join(args.shared, "data", "tinystories", "validation.txt")).read().split("\n\n")
    story = next(s for s in stories if s.startswith("Once upon a time"))
    ids_story = tok.encode(story)
    assert tok.decode(ids_story) == story, "tokenizer round trip"
    prefix8 = ids_story[:8]
    # batch2: 6 tokens of another story, and 4 tokens left-padded by 2
    rows2 = [tok.encode(stories[1].strip())[:6], tok.encode("One day, a cat")[:4]]
    assert [len(r) for r in rows2] == [6, 4]
    print("prefix8 %s = %r" % (prefix8, tok.decode(prefix8)))

    llama = build_llama(cfg, w)
    with torch.no_grad():
        test_ids = ids_story[:32]
        ids, mask, pos = batch_inputs([test_ids])
        got = llama(ids, mask, pos).numpy()[0]
        err = np.abs(got - llama2c_forward_np(cfg, w, test_ids)).max()
        print("  HF-style torch vs llama2.c-style numpy (32 tokens): max |diff| %.2e" % err)
        assert err <= 1e-4, err

        # greedy decoding from BOS, with the KV cache, as run.c -t 0.0
        toks = [BOS]
        past = empty_past(cfg["n_layers"], 1, cfg["n_kv_heads"], hs)
        for step in range(60):
            n = len(toks)
            logits, past = llama(torch.tensor([toks[-1:]]), torch.ones(1, n, dtype=torch.int64),
                                 torch.tensor([[n - 1]]), past)
            toks.append(int(logits[0, -1].argmax()))
        text = tok.decode(toks)
        print("  greedy: %r" % text)
        assert text.startswith(EXPECTED_GREEDY), text

        # ---- stories260k.onnx (no cache) ----
        print("exporting stories260k.onnx")
        ids, mask, pos = batch_inputs([prefix8])
        m = export(llama, (ids, mask, pos), os.path.join(args.out, "stories260k.onnx"),
                   ["input_ids", "attention_mask", "position_ids"], ["logits"], kv=False)
        check_block_names(m, "layers", cfg["n_layers"])
        ids2, mask2, pos2 = batch_inputs(rows2)
        logits2 = llama(ids2, mask2, pos2)
        check_padding(llama, rows2, logits2, lambda i, mk, p: llama(i, mk, p))
        write_ref(os.path.join(args.out, "stories260k.ref.json"), "stories260k.onnx", [
            ("prefill", {"input_ids": ids, "attention_mask": mask, "position_ids": pos}, {"logits": llama(ids, mask, pos)}),
            ("batch2", {"input_ids": ids2, "attention_mask": mask2, "position_ids": pos2}, {"logits": logits2})])

        # ---- stories260k_kv.onnx ----
        print("exporting stories260k_kv.onnx")
        past_names, present_names = kv_names(cfg["n_layers"])
        in_names = ["input_ids", "attention_mask", "position_ids"] + past_names
        out_names = ["logits"] + present_names
        cases = kv_cases(llama, in_names, out_names, cfg["n_layers"], cfg["n_kv_heads"], hs, prefix8, rows2)
        # trace with a non-empty past so no shape is specialised to 0
        dec_in = cases[2][1]
        past_args = tuple((dec_in[past_names[2 * i]], dec_in[past_names[2 * i + 1]]) for i in range(cfg["n_layers"]))
        m = export(llama, (dec_in["input_ids"], dec_in["attention_mask"], dec_in["position_ids"], past_args),
                   os.path.join(args.out, "stories260k_kv.onnx"), in_names, out_names, kv=True)
        check_block_names(m, "layers", cfg["n_layers"])
        write_ref(os.path.join(args.out, "stories260k_kv.ref.json"), "stories260k_kv.onnx", cases)

        # ---- gpt2_kv.onnx (random weights) ----
        print("exporting gpt2_kv.onnx")
        gc = dict(n_layer=6, n_embd=64, n_head=4, vocab=512, n_positions=256)
        gpt2 = build_gpt2(gc, seed=1234)
        gh = gc["n_embd"] // gc["n_head"]
        past_names, present_names = kv_names(gc["n_layer"])
        in_names = ["input_ids", "attention_mask", "position_ids"] + past_names
        out_names = ["logits"] + present_names
        cases = kv_cases(gpt2, in_names, out_names, gc["n_layer"], gc["n_head"], gh, prefix8, rows2)
        # how much each block moves the residual stream (random blocks should matter)
        ids, mask, pos = batch_inputs([prefix8])
        h, bias = gpt2.transformer.wte(ids) + gpt2.transformer.wpe(pos), 0.0
        cosines = []
        for blk in gpt2.transformer.h:
            h2, _ = blk(h, bias, None)
            cosines.append(nn.functional.cosine_similarity(h, h2, dim=-1).mean().item())
            h = h2
        print("  gpt2 cos(h_i, h_i+1) per block: %s" % " ".join("%.3f" % c for c in cosines))
        dec_in = cases[2][1]
        past_args = tuple((dec_in[past_names[2 * i]], dec_in[past_names[2 * i + 1]]) for i in range(gc["n_layer"]))
        m = export(gpt2, (dec_in["input_ids"], dec_in["attention_mask"], dec_in["position_ids"], past_args),
                   os.path.join(args.out, "gpt2_kv.onnx"), in_names, out_names, kv=True)
        check_block_names(m, "h", gc["n_layer"])
        write_ref(os.path.join(args.out, "gpt2_kv.ref.json"), "gpt2_kv.onnx", cases)

        # ---- gpt2_kv_static.onnx: the same model and weights, static shapes ----
        # onnxruntime fuses Add -> LayerNormalization into SkipLayerNormalization
        # only when both Add inputs have static dims 1 and 2 (see README.md); the
        # dynamic-axes export above reshapes through Shape/Gather/Concat chains
        # whose values neither ONNX nor onnxruntime shape inference can follow.
        # Without dynamic axes, torch folds every shape into a constant.
        print("exporting gpt2_kv_static.onnx")
        cases = static_kv_cases(gpt2, in_names, out_names, gc["n_layer"], gc["n_head"], gh, prefix8, rows2[0])
        dec_in = cases[0][1]
        past_args = tuple((dec_in[past_names[2 * i]], dec_in[past_names[2 * i + 1]]) for i in range(gc["n_layer"]))
        m = export(gpt2, (dec_in["input_ids"], dec_in["attention_mask"], dec_in["position_ids"], past_args),
                   os.path.join(args.out, "gpt2_kv_static.onnx"), in_names, out_names, kv=True, static=True)
        check_block_names(m, "h", gc["n_layer"])
        last = "/transformer/h.%d/Add_1_output_0" % (gc["n_layer"] - 1)
        assert [n for n in m.graph.node if last in n.input] == [n for n in m.graph.node if n.op_type == "LayerNormalization" and n.name == "/transformer/ln_f/LayerNormalization"]
        assert check_static_shapes(m, last) == [1, STATIC_SEQ, gc["n_embd"]]
        write_ref(os.path.join(args.out, "gpt2_kv_static.ref.json"), "gpt2_kv_static.onnx", cases)

    summarize(args.out, ["stories260k.onnx", "stories260k_kv.onnx", "gpt2_kv.onnx", "gpt2_kv_static.onnx"])


def summarize(out, files):
    from collections import Counter
    for f in files:
        m = onnx.load(os.path.join(out, f))
        print("\n== %s (%d bytes, ref %d bytes) opset %s ir %d" % (
            f, os.path.getsize(os.path.join(out, f)),
            os.path.getsize(os.path.join(out, f.replace(".onnx", ".ref.json"))),
            [(o.domain or "ai.onnx", o.version) for o in m.opset_import], m.ir_version))
        print("inputs: ", [i.name for i in m.graph.input])
        print("outputs:", [o.name for o in m.graph.output])
        print("ops:", dict(sorted(Counter(n.op_type for n in m.graph.node).items())))
        print("first nodes:", [n.name for n in m.graph.node[:15]])
        block0 = [n for n in m.graph.node if "/layers.0/" in n.name or "/h.0/" in n.name]
        print("block 0: %d nodes, heavy ops %s; nodes without a scope: %d" % (
            len(block0), dict(Counter(n.name.rsplit("/", 2)[-2] + ":" + n.op_type for n in block0
                                      if n.op_type in ("MatMul", "Gemm", "LayerNormalization", "Softmax"))),
            sum(not n.name.startswith("/") for n in m.graph.node)))


if __name__ == "__main__":
    sys.exit(main())
