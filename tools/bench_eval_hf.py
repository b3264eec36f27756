#!/usr/bin/env python3
"""Reference side of `arlm bench eval`: Hugging Face transformers scores the same token
ids of the same GPT-2 checkpoint with the same sliding windows, and prints one JSON line
{"nll": total nats, "tokens": scored tokens, "seconds": wall time of scoring}.

Windows (same plan as src/eval/window.rs): the sequence is [bos] + ids; the first window
is ids [0, W), each later window ends `stride` further and keeps only the new targets.
"""
import argparse
import json
import time

import numpy as np
import torch
from transformers import GPT2LMHeadModel


def plan(n, w, stride):
    if n < 2:
        return []
    if w >= n:
        return [(0, n, 1)]
    out = [(0, w, 1)]
    end = w
    while end < n:
        nxt = min(end + stride, n)
        out.append((nxt - w, nxt, end))
        end = nxt
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--ids", required=True, help="little-endian u32 token ids")
    p.add_argument("--bos", type=int, required=True)
    p.add_argument("--window", type=int, required=True)
    p.add_argument("--stride", type=int, required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    ids = np.fromfile(a.ids, dtype="<u4").astype(np.int64)
    seq = np.concatenate([[a.bos], ids])
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    windows = plan(len(seq), a.window, a.stride)
    nll = 0.0
    count = 0
    t0 = time.perf_counter()
    with torch.inference_mode():
        i = 0
        while i < len(windows):
            group = [windows[i]]
            while (
                i + len(group) < len(windows)
                and len(group) < a.batch
                and windows[i + len(group)][1] - windows[i + len(group)][0]
                == group[0][1] - group[0][0]
            ):
                group.append(windows[i + len(group)])
            x = torch.tensor(np.stack([seq[s:e] for s, e, _ in group]))
            logits = model(x).logits[:, :-1, :]
            tok_nll = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), x[:, 1:], reduction="none"
            )
            for row, (s, e, first) in zip(tok_nll, group):
                kept = row[first - s - 1 :]
                nll += kept.double().sum().item()
                count += kept.numel()
            i += len(group)
    secs = time.perf_counter() - t0
    print(json.dumps({"nll": nll, "tokens": count, "seconds": secs,
                      "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
