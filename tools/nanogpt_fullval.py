#!/usr/bin/env python3
"""Scores arlm runs with the real nanoGPT's whole-val scorer (issue 19), so both sides of a
seed comparison are measured by the same code on the same windows.

nanoGPT's `fullval.py` (../shared/peers/nanoGPT) scores a checkpoint on the val split in
non-overlapping 64-token windows ((len(val) - 1) // 64 = 1742 windows, 111488 tokens for
Tiny Shakespeare). arlm's own end-of-run figure uses whole batches of 12 windows (1740
windows, 111360 tokens). This script loads an arlm run directory (GPT-2 names, Conv1D
layout) into nanoGPT's model.py (weights transposed back into nn.Linear, the GELU of
config.json's activation_function: `gelu` exact, `gelu_new` tanh) and runs fullval.py's
loop on it.

Usage: PY=$(bash ../shared/tools/peers-venv.sh)
       $PY tools/nanogpt_fullval.py RUN_DIR [RUN_DIR ...] [--text ../shared/data/tinyshakespeare.txt]
Prints one JSON line per run.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_arlm(run, model_mod):
    conf = json.load(open(os.path.join(run, "config.json")))
    w = {k.replace("transformer.", "", 1): v for k, v in
         load_file(os.path.join(run, "model.safetensors")).items()}
    bias = any(float(v.abs().max()) != 0.0 for k, v in w.items() if k.endswith(".bias"))
    cfg = model_mod.GPTConfig(block_size=conf["n_positions"], vocab_size=conf["vocab_size"],
                              n_layer=conf["n_layer"], n_head=conf["n_head"],
                              n_embd=conf["n_embd"], dropout=0.0, bias=bias)
    m = model_mod.GPT(cfg)
    act = conf.get("activation_function", "gelu_new")
    for blk in m.transformer.h:
        blk.mlp.gelu = nn.GELU(approximate="none" if act == "gelu" else "tanh")
    sd = {}
    for k, v in w.items():
        linear = any(k.endswith(s + ".weight") for s in ("c_attn", "c_proj", "c_fc"))
        sd["transformer." + k] = v.t().contiguous() if linear else v
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    want = m.state_dict()
    sd = {k: v for k, v in sd.items() if k in want}
    missing = set(want) - set(sd)
    assert not missing, f"{run}: no weights for {sorted(missing)}"
    m.load_state_dict(sd)
    m.eval()
    return m, act


def encode_val(text_path):
    """nanoGPT's prepare.py: sorted characters, the last 10% of the text is val."""
    text = open(text_path, encoding="utf-8").read()
    stoi = {ch: i for i, ch in enumerate(sorted(set(text)))}
    n = len(text)
    return np.array([stoi[c] for c in text[int(n * 0.9):]], dtype=np.uint16), len(stoi)


def fullval(m, val, n_chars, t=64):
    """fullval.py's loop; also the mean -log(1 - p) of the probability p the model puts on
    ids the text never uses (arlm's <|endoftext|>): what renormalizing over the characters
    alone would save, the whole cost of that extra row at the end of training."""
    n = (len(val) - 1) // t
    tot, cnt, unused = 0.0, 0, 0.0
    with torch.no_grad():
        for s in range(0, n, 64):
            idx = range(s, min(n, s + 64))
            x = torch.stack([torch.from_numpy(val[i * t:i * t + t].astype(np.int64)) for i in idx])
            y = torch.stack([torch.from_numpy(val[i * t + 1:i * t + t + 1].astype(np.int64)) for i in idx])
            logits, loss = m(x, y)
            tot += loss.item() * x.numel()
            cnt += x.numel()
            if logits.size(-1) > n_chars:
                p = torch.softmax(logits.double(), -1)[..., n_chars:].sum(-1)
                unused += float(-torch.log1p(-p).sum())
    return tot / cnt, cnt, unused / cnt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--text", default=os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--nanogpt", default=os.path.join(REPO, "..", "shared", "peers", "nanoGPT"))
    a = ap.parse_args()
    sys.path.insert(0, a.nanogpt)
    import model as model_mod  # nanoGPT's model.py
    torch.set_num_threads(1)
    val, n_chars = encode_val(a.text)
    for run in a.runs:
        m, act = load_arlm(run, model_mod)
        loss, cnt, unused = fullval(m, val, n_chars)
        print(json.dumps({"run": run, "activation": act, "full_val": loss, "tokens": cnt,
                          "unused_ids_cost_nats": unused}))


if __name__ == "__main__":
    main()
