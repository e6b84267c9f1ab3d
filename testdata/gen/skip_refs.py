#!/usr/bin/python3
"""Write testdata/models/NAME.skip.json: torch logits with decoder blocks skipped.

Run from the repository root with Debian's Python (python3-torch 1.13):

    /usr/bin/python3 testdata/gen/skip_refs.py --shared ../shared --out testdata/models

Why this exists: rewrite.RemoveBlocks deletes decoder blocks from an ONNX graph.
Its test needs an independent answer for what the pruned model must compute:
the original PyTorch model run with those blocks skipped, i.e. the residual
stream passes a removed block unchanged (h_{j+1} := h_j). This script rebuilds
the torch models of export_torch.py (imported read-only: same classes, same
weights, same seed), drops the removed blocks from their nn.ModuleList and runs
the model's own forward on the inputs of NAME.ref.json.

For each of stories260k, stories260k_kv and gpt2_kv it writes NAME.skip.json:
  {"model": "NAME.onnx", "atol": 1e-4,
   "removals": [{"remove": [k, ...], "cases": [{"name", "inputs", "outputs"}]}]}
with removals = every single block, every contiguous pair [k, k+1], and [0, L-1].
Cases are the "prefill" and "batch2" token inputs of NAME.ref.json; the inputs are
every input of the PRUNED model (KV models: past_key_values.M.* for M = 0..L-n-1,
renumbered contiguously, empty past); outputs: logits only. Tensors are written as
in NAME.ref.json ({"dtype", "shape", "data"}, row-major, floats '%.9g').

stories260k_kv.skip.json also has "hidden": the residual-stream states of the
prefill case, h_0 (the embedding output, entering block 0) and h_1..h_L (leaving
each block, before the final norm), each flattened from shape [1, 8, 64].

Checks before anything is written:
  - removals=[] reproduces NAME.ref.json's logits (<= 1e-5; the same torch code,
    so in practice exactly);
  - the pruned ModuleList gives the same logits as the full model with removed
    blocks replaced by identity blocks (which still take the full-length past);
  - final_norm(h_L) through lm_head reproduces the prefill logits;
  - each JSON reads back to the exact float32 values.

Optional: --ort-dir DIR also writes, for a few removals, a pruned ONNX made by a
naive graph surgery here (consumers of a removed block's output are rewired to its
input, dead nodes dropped, KV inputs/outputs renumbered) plus a NAME.ref.json-style
file, so that `NODE_PATH=... node testdata/gen/verify_ort.js DIR` runs them with
onnxruntime (see README.md).
"""
import argparse
import copy
import hashlib
import json
import os
import sys

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_torch as et  # noqa: E402  (read-only: classes, weights, helpers)

ATOL = 1e-4
GPT2_CFG = dict(n_layer=6, n_embd=64, n_head=4, vocab=512, n_positions=256)  # as export_torch.main
GPT2_SEED = 1234


def blocks_of(model):
    """(parent module, attribute name) of the decoder-block ModuleList."""
    if isinstance(model, et.LlamaForCausalLM):
        return model.model, "layers"
    if isinstance(model, et.GPT2LMHeadModel):
        return model.transformer, "h"
    raise TypeError(type(model))


def pruned(model, remove):
    """A deep copy of model whose block list lacks the blocks in `remove`: the
    model's own forward then runs the remaining blocks in order, so the hidden
    state leaving block k-1 enters block k+1 unchanged."""
    m = copy.deepcopy(model)
    parent, attr = blocks_of(m)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([b for i, b in enumerate(blocks) if i not in remove]))
    return m


class SkipBlock(nn.Module):
    """Identity block (for the cross-check): returns h and the past unchanged."""

    def forward(self, h, *args):
        past = args[-1]
        return h, past


def identity_skipped(model, remove):
    """A deep copy of model with removed blocks replaced by SkipBlock (full block count)."""
    m = copy.deepcopy(model)
    parent, attr = blocks_of(m)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList([SkipBlock() if i in remove else b for i, b in enumerate(blocks)]))
    return m


def run(model, inputs, kv, n_layers, heads, head_dim):
    """Logits for the token inputs (a dict of int64 tensors), empty past for KV models."""
    ids, mask, pos = inputs["input_ids"], inputs["attention_mask"], inputs["position_ids"]
    if not kv:
        return model(ids, mask, pos)
    logits, _ = model(ids, mask, pos, et.empty_past(n_layers, ids.shape[0], heads, head_dim))
    return logits


def hidden_states(model, ids, mask, pos, past):
    """Residual stream entering block 0 and leaving every block (pre-hooks/hooks)."""
    parent, attr = blocks_of(model)
    blocks = getattr(parent, attr)
    states, handles = [], []
    handles.append(blocks[0].register_forward_pre_hook(lambda mod, args: states.append(args[0].clone())))
    for b in blocks:
        handles.append(b.register_forward_hook(lambda mod, args, out: states.append(out[0].clone())))
    try:
        logits = model(ids, mask, pos, past)
    finally:
        for h in handles:
            h.remove()
    return states, logits[0] if isinstance(logits, tuple) else logits


def removals(n):
    singles = [[k] for k in range(n)]
    pairs = [[k, k + 1] for k in range(n - 1)]
    return singles + pairs + [[0, n - 1]]


def load_ref(path):
    ref = json.load(open(path))
    cases = {}
    for c in ref["cases"]:
        cases[c["name"]] = c
    return ref, cases


def tensor_from(t):
    return torch.from_numpy(np.array(t["data"], dtype=t["dtype"]).reshape(t["shape"]))


def write_skip(path, model_file, entries, hidden=None):
    """entries: [(remove, [(case name, {input: tensor}, {output: tensor})])]."""
    lines = ['{"model": %s, "atol": %g,' % (json.dumps(model_file), ATOL)]
    if hidden is not None:
        ids, states, shape = hidden
        lines.append(' "hidden": {"input_ids": %s, "shape": %s, "states": [' % (json.dumps(ids), json.dumps(shape)))
        for i, s in enumerate(states):
            a = s.detach().numpy().astype(np.float32).ravel()
            assert np.isfinite(a).all()
            lines.append("  [" + ",".join("%.9g" % x for x in a) + "]" + ("," if i < len(states) - 1 else ""))
        lines.append(" ]},")
    lines.append(' "removals": [')
    for ri, (remove, cases) in enumerate(entries):
        lines.append(' {"remove": %s, "cases": [' % json.dumps(remove))
        for ci, (name, ins, outs) in enumerate(cases):
            lines.append('  {"name": %s,' % json.dumps(name))
            for sec, d, end in (("inputs", ins, ","), ("outputs", outs, "")):
                lines.append('   "%s": {' % sec)
                items = list(d.items())
                lines += ["    " + et.tensor_json(k, v) + ("," if j < len(items) - 1 else "")
                          for j, (k, v) in enumerate(items)]
                lines.append("   }" + end)
            lines.append("  }" + ("," if ci < len(cases) - 1 else ""))
        lines.append(" ]}" + ("," if ri < len(entries) - 1 else ""))
    lines.append("]}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    # read back: exact float32 values
    back = json.load(open(path))
    assert back["model"] == model_file and back["atol"] == ATOL
    for (remove, cases), r in zip(entries, back["removals"]):
        assert r["remove"] == remove
        for (name, ins, outs), c in zip(cases, r["cases"]):
            assert c["name"] == name and list(c["inputs"]) == list(ins) and list(c["outputs"]) == list(outs)
            for k, v in list(ins.items()) + list(outs.items()):
                got = c["inputs"].get(k) or c["outputs"][k]
                want = v.detach().numpy()
                assert got["shape"] == list(want.shape)
                assert np.array_equal(np.array(got["data"], dtype=want.dtype).reshape(want.shape), want), (remove, name, k)
    if hidden is not None:
        ids, states, shape = hidden
        assert back["hidden"]["input_ids"] == ids and back["hidden"]["shape"] == shape
        for s, g in zip(states, back["hidden"]["states"]):
            assert np.array_equal(np.array(g, dtype=np.float32).reshape(shape), s.numpy())


def make_skip(name, model, out_dir, kv, n_layers, ort_dir=None, hidden=False):
    """Compute, check and write NAME.skip.json; returns a summary dict."""
    ref, cases = load_ref(os.path.join(out_dir, name + ".ref.json"))
    model_file = ref["model"]
    assert model_file == name + ".onnx"
    heads = head_dim = None
    if kv:
        heads, _, head_dim = [cases["prefill"]["inputs"]["past_key_values.0.key"]["shape"][i] for i in (1, 2, 3)]
    tok_inputs = {}
    for cname in ("prefill", "batch2"):
        c = cases[cname]
        tok_inputs[cname] = {k: tensor_from(c["inputs"][k]) for k in ("input_ids", "attention_mask", "position_ids")}
        if kv:  # the ref's own past inputs must be empty and fully numbered
            pasts = [k for k in c["inputs"] if k.startswith("past_key_values.")]
            assert len(pasts) == 2 * n_layers and all(c["inputs"][k]["shape"][2] == 0 for k in pasts)

    # sanity check: no removal reproduces NAME.ref.json's logits
    worst = 0.0
    for cname, ins in tok_inputs.items():
        got = run(model, ins, kv, n_layers, heads, head_dim)
        want = tensor_from(cases[cname]["outputs"]["logits"])
        assert got.shape == want.shape
        worst = max(worst, (got - want).abs().max().item())
    print("  %s: removals=[] vs %s.ref.json logits: max |diff| %.2e" % (name, name, worst))
    assert worst <= 1e-5, worst

    entries, summary = [], {"no_removal_vs_ref": worst, "removals": []}
    for remove in removals(n_layers):
        keep = n_layers - len(remove)
        pm, im = pruned(model, remove), identity_skipped(model, remove)
        assert len(getattr(*blocks_of(pm))) == keep
        out_cases, cross, moved = [], 0.0, 0.0
        for cname, ins in tok_inputs.items():
            logits = run(pm, ins, kv, keep, heads, head_dim)
            alt = run(im, ins, kv, n_layers, heads, head_dim)
            cross = max(cross, (logits - alt).abs().max().item())
            moved = max(moved, (logits - run(model, ins, kv, n_layers, heads, head_dim)).abs().max().item())
            inputs = dict(ins)
            if kv:
                b = ins["input_ids"].shape[0]
                for m, (k, v) in enumerate(et.empty_past(keep, b, heads, head_dim)):
                    inputs["past_key_values.%d.key" % m] = k
                    inputs["past_key_values.%d.value" % m] = v
            out_cases.append((cname, inputs, {"logits": logits}))
        print("    remove %-6s: %d blocks left; pruned vs identity-skipped %.1e; max |logits - unpruned| %.3f"
              % (remove, keep, cross, moved))
        assert cross <= 1e-6, cross
        assert moved > 10 * ATOL, ("removal does not change logits", remove, moved)
        entries.append((remove, out_cases))
        summary["removals"].append((remove, cross, moved))

    hid = None
    if hidden:
        ins = tok_inputs["prefill"]
        past = et.empty_past(n_layers, 1, heads, head_dim) if kv else None
        states, logits = hidden_states(model, ins["input_ids"], ins["attention_mask"], ins["position_ids"], past)
        assert len(states) == n_layers + 1
        base, _ = blocks_of(model)
        # h_0 is the embedding output; final_norm(h_L) @ lm_head gives the logits
        err_emb = (states[0] - base.embed_tokens(ins["input_ids"])).abs().max().item()
        err_head = (model.lm_head(base.norm(states[-1])) - logits).abs().max().item()
        print("  hidden states: %d x %s; h_0 vs embedding %.1e; lm_head(norm(h_L)) vs logits %.1e"
              % (len(states), list(states[0].shape), err_emb, err_head))
        assert err_emb == 0 and err_head <= 1e-6
        hid = (ins["input_ids"][0].tolist(), states, list(states[0].shape))

    path = os.path.join(out_dir, name + ".skip.json")
    write_skip(path, model_file, entries, hid)
    summary["bytes"] = os.path.getsize(path)
    print("  wrote %s (%d bytes, %d removals)" % (path, summary["bytes"], len(entries)))

    if ort_dir:
        for remove in (entries[2][0], entries[n_layers][0], entries[-1][0]):  # [2], [0,1], [0,L-1]
            cases_r = next(c for r, c in entries if r == remove)
            write_ort_check(ort_dir, os.path.join(out_dir, model_file), name, remove, cases_r, kv, n_layers)
    return summary


# ----------------------------------------------------------------------------
# optional: a naive ONNX surgery, so onnxruntime can run the references

def write_ort_check(ort_dir, onnx_path, name, remove, cases, kv, n_layers):
    import onnx
    m = onnx.load(onnx_path)
    g = m.graph
    scope = "/model/layers.%d/" if name.startswith("stories") else "/transformer/h.%d/"
    for k in remove:
        nodes = [n for n in g.node if n.name.startswith(scope % k)]
        produced = {o for n in nodes for o in n.output}
        add0 = next(n for n in nodes if n.name == (scope % k) + "Add")
        add1 = next(n for n in nodes if n.name == (scope % k) + "Add_1")
        h_in = [i for i in add0.input if i not in produced]
        assert len(h_in) == 1, (k, list(add0.input))
        h_out = add1.output[0]
        for n in g.node:
            if n not in nodes:
                for j, i in enumerate(n.input):
                    if i == h_out:
                        n.input[j] = h_in[0]
    if kv:
        gone = {"%s.%d.%s" % (p, k, s) for k in remove for p in ("past_key_values", "present") for s in ("key", "value")}
        for o in [o for o in g.output if o.name in gone]:
            g.output.remove(o)
    # drop dead nodes
    live = {o.name for o in g.output}
    keep = []
    for n in reversed(list(g.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(n.input)
    del g.node[:]
    g.node.extend(reversed(keep))
    for i in [i for i in g.input if i.name not in live]:
        g.input.remove(i)
    if kv:  # renumber past/present contiguously
        left = [k for k in range(n_layers) if k not in remove]
        ren = {}
        for new, old in enumerate(left):
            for p in ("past_key_values", "present"):
                for s in ("key", "value"):
                    ren["%s.%d.%s" % (p, old, s)] = "%s.%d.%s" % (p, new, s)
        # two-step so that renames never collide
        for vi in list(g.input) + list(g.output):
            if vi.name in ren:
                vi.name = "tmp:" + ren[vi.name]
        for n in g.node:
            for j, x in enumerate(n.input):
                if x in ren:
                    n.input[j] = "tmp:" + ren[x]
            for j, x in enumerate(n.output):
                if x in ren:
                    n.output[j] = "tmp:" + ren[x]
        for vi in list(g.input) + list(g.output):
            vi.name = vi.name.replace("tmp:", "")
        for n in g.node:
            for j, x in enumerate(n.input):
                n.input[j] = x.replace("tmp:", "")
            for j, x in enumerate(n.output):
                n.output[j] = x.replace("tmp:", "")
        # the check only compares logits
        for o in [o for o in g.output if o.name != "logits"]:
            g.output.remove(o)
        live = {"logits"}
        keep = []
        for n in reversed(list(g.node)):
            if any(o in live for o in n.output):
                keep.append(n)
                live.update(n.input)
        del g.node[:]
        g.node.extend(reversed(keep))
    used = {i for n in g.node for i in n.input}
    for t in [t for t in g.initializer if t.name not in used]:
        g.initializer.remove(t)
    onnx.checker.check_model(m)
    want_inputs = list(cases[0][1])
    got_inputs = [i.name for i in g.input]
    assert got_inputs == want_inputs, (got_inputs, want_inputs)  # the pruned model's inputs, renumbered
    tag = "%s.rm%s" % (name, "_".join(map(str, remove)))
    onnx.save(m, os.path.join(ort_dir, tag + ".onnx"))
    et.write_ref(os.path.join(ort_dir, tag + ".ref.json"), tag + ".onnx", cases, atol=ATOL)
    print("  ort check files: %s (%d nodes, inputs %s)" % (tag, len(g.node), got_inputs))


# ----------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default="../shared", help="the project's shared/ folder")
    ap.add_argument("--out", default="testdata/models")
    ap.add_argument("--ort-dir", default="", help="also write surgically pruned ONNX + refs here (optional)")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as export_torch.py: same float summation order
    if args.ort_dir:
        os.makedirs(args.ort_dir, exist_ok=True)

    sdir = os.path.join(args.shared, "models", "stories260K")
    for f, want in et.SHA256.items():
        got = hashlib.sha256(open(os.path.join(sdir, f), "rb").read()).hexdigest()
        assert got == want, "%s: sha256 %s, want %s" % (f, got, want)
    cfg, w = et.load_llama2c(os.path.join(sdir, "stories260K.bin"))
    llama = et.build_llama(cfg, w)
    gpt2 = et.build_gpt2(GPT2_CFG, seed=GPT2_SEED)

    summaries = {}
    with torch.no_grad():
        print("stories260k")
        summaries["stories260k"] = make_skip("stories260k", llama, args.out, False, cfg["n_layers"], args.ort_dir)
        print("stories260k_kv")
        summaries["stories260k_kv"] = make_skip("stories260k_kv", llama, args.out, True, cfg["n_layers"],
                                                args.ort_dir, hidden=True)
        print("gpt2_kv")
        summaries["gpt2_kv"] = make_skip("gpt2_kv", gpt2, args.out, True, GPT2_CFG["n_layer"], args.ort_dir)
    for n, s in summaries.items():
        print("%-15s %8d bytes  removals=[] vs ref %.1e  %d removals" % (
            n + ".skip.json", s["bytes"], s["no_removal_vs_ref"], len(s["removals"])))


if __name__ == "__main__":
    sys.exit(main())
