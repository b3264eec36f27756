#!/usr/bin/env python3
"""Reference for issue 3's quality target: nanoGPT's shakespeare_char CPU recipe in PyTorch.

nanoGPT's README: `python train.py config/train_shakespeare_char.py --device=cpu
--compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`
"gets val loss 1.88". This script is a compact, faithful re-implementation of that run
(nanoGPT's model.py with bias=False by default, GPT-2 init with the scaled c_proj, weight
decay on every >= 2-D tensor, AdamW betas (0.9, 0.99), lr 1e-3 -> 1e-4 warmup 100 + cosine,
grad clip 1.0, random windows of the first 90% of the characters), so arlm's number can be
put next to what nanoGPT's recipe itself reaches, on the same metrics:

- `val_est`: nanoGPT's estimator (eval_iters=20 random batches of 12 x 64 from val.bin),
- `val_blocks`: the mean over ALL non-overlapping 64-token blocks of the val split (the
  expectation of that estimator, without its sampling noise).

Usage: $PY tools/nanogpt_shakespeare_ref.py --data ../shared/data/tinyshakespeare.txt
       [--seed 1337] [--bias] [--steps 2000] [--threads 2]
Prints one JSON line.
"""
import argparse
import json
import math
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, nh, bias):
        super().__init__()
        self.nh = nh
        self.ln_1 = nn.LayerNorm(c, bias=bias)
        self.c_attn = nn.Linear(c, 3 * c, bias=bias)
        self.c_proj = nn.Linear(c, c, bias=bias)
        self.ln_2 = nn.LayerNorm(c, bias=bias)
        self.c_fc = nn.Linear(c, 4 * c, bias=bias)
        self.mlp_proj = nn.Linear(4 * c, c, bias=bias)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class GPT(nn.Module):
    def __init__(self, v, t, l, nh, c, bias):
        super().__init__()
        self.wte = nn.Embedding(v, c)
        self.wpe = nn.Embedding(t, c)
        self.h = nn.ModuleList([Block(c, nh, bias) for _ in range(l)])
        self.ln_f = nn.LayerNorm(c, bias=bias)
        self.lm_head = nn.Linear(c, v, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as nanoGPT
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0.0, 0.02)
        for n, p in self.named_parameters():
            if n.endswith("c_proj.weight") or n.endswith("mlp_proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * l))

    def forward(self, idx, targets):
        pos = torch.arange(idx.shape[1])
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.h:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--bias", action="store_true", help="nanoGPT's bias=True (GPT-2 style)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    text = open(a.data, encoding="utf-8").read()
    chars = sorted(set(text))
    stoi = {ch: i for i, ch in enumerate(chars)}
    ids = np.array([stoi[ch] for ch in text], dtype=np.int64)
    n = int(0.9 * len(ids))
    train, val = ids[:n], ids[n:]
    bs, t = 12, 64
    model = GPT(len(chars), t, 4, 4, 128, a.bias)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    nodecay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def batch(data):
        ix = torch.randint(len(data) - t, (bs,))
        x = torch.stack([torch.from_numpy(data[i:i + t]) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + t]) for i in ix])
        return x, y

    def lr_at(it, warmup=100, decay_iters=2000, lr=1e-3, min_lr=1e-4):
        if it < warmup:
            return lr * (it + 1) / (warmup + 1)
        if it > decay_iters:
            return min_lr
        ratio = (it - warmup) / (decay_iters - warmup)
        return min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (lr - min_lr)

    t0 = time.perf_counter()
    for it in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        x, y = batch(train)
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train_s = time.perf_counter() - t0
    model.eval()
    with torch.no_grad():
        est = float(np.mean([model(*batch(val)).item() for _ in range(20)]))
        nb = (len(val) - 1) // t
        x = torch.from_numpy(val[: nb * t].reshape(nb, t))
        y = torch.from_numpy(val[1: nb * t + 1].reshape(nb, t))
        losses = [model(x[i:i + 256], y[i:i + 256]).item() * len(x[i:i + 256])
                  for i in range(0, nb, 256)]
        blocks = sum(losses) / nb
    print(json.dumps({"seed": a.seed, "bias": a.bias, "steps": a.steps, "train_s": train_s,
                      "val_est": est, "val_blocks": blocks}))


if __name__ == "__main__":
    main()
