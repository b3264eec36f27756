#!/usr/bin/env python3
"""PyTorch eager reference for `arlm bench train`: the same GPT-2 model (nanoGPT-style
code: pre-LN blocks, causal SDPA attention, GELU tanh MLP, tied head, dropout 0), one full
training step (forward + backward + AdamW) timed, torch.set_num_threads(2).

Prints one JSON line: ms_median, tokens_per_s, gflops, peak_rss_mb, gemm_gflops (f32
2048^3 torch.mm, best of 3, measured in the same run).
Usage: $PY tools/bench_train_torch.py --model a|b --steps N
"""
import argparse
import json
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = {
    "a": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, B=12, T=64),
    "b": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=50304, B=4, T=256),
}


class Block(nn.Module):
    def __init__(self, c, nh):
        super().__init__()
        self.nh = nh
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.c_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (z.view(B, T, self.nh, C // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, n_embd, block_size, vocab_size):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx, targets):
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="a")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = MODELS[args.model]
    B, T = m["B"], m["T"]
    cfg = {k: m[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")}
    model = GPT(**cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": nodecay, "weight_decay": 0.0}], lr=1e-4, betas=(0.9, 0.95))
    times = []
    for step in range(args.steps + 1):
        x = torch.randint(0, cfg["vocab_size"], (B, T))
        y = torch.randint(0, cfg["vocab_size"], (B, T))
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x, y)
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t0
        if step > 0:
            times.append(dt)
    times.sort()
    s = times[len(times) // 2]
    c, L, V = cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    flops_per_token = 6 * (12 * L * c * c + V * c) + 6 * L * c * T
    n = 2048
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({
        "ms_median": s * 1e3,
        "tokens_per_s": B * T / s,
        "gflops": flops_per_token * B * T / s / 1e9,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gemm_gflops": 2 * n ** 3 / best / 1e9,
    }))


if __name__ == "__main__":
    main()
