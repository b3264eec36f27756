#!/usr/bin/env python3
"""The whole `arlm train --preset ptb-lstm-small` run in PyTorch, for its wall time and
its result beside arlm's: the same tokens (arlm's prepared `train.bin` / `val.bin`), the
same model (tools/bench_rnn_torch.py's RNNModel: word_language_model's nn.Embedding ->
nn.LSTM / nn.GRU -> nn.Linear, init U(-0.1, 0.1)) and Zaremba et al.'s recipe as the
preset runs it: B contiguous streams, T steps per batch with the state carried and
detached, reset each epoch; the loss summed over time and averaged over the streams;
clip 5; plain SGD at lr 1 halved each epoch from epoch `--decay-after` on; the whole
validation split (same streams, state carried) every 500 steps and at the end.
Eager mode, torch.set_num_threads(2).

Prints a line per evaluation and a JSON summary (seconds, steps, last validation loss).
With --out DIR it writes the weights as model.safetensors under PyTorch's names, plus
config.json and tokenizer.json copied from an arlm model directory of the same shape
(--like), so `arlm eval --model DIR` scores PyTorch's run on the test set.

Usage: $PY tools/train_rnn_torch.py --data ptb-words --out ptb-lstm-torch --like ptb-lstm
"""
import argparse
import json
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_rnn_torch import RNNModel  # noqa: E402


def streams(path, b):
    """(n, B) tensor: the token file (src/data/bin.rs: a 32-byte header, `ARLMTOK\0`, then
    the ids) cut into B contiguous streams, one per column."""
    raw = open(path, "rb").read()
    assert raw[:8] == b"ARLMTOK\0", f"{path}: not an arlm token file"
    width, count = int.from_bytes(raw[12:16], "little"), int.from_bytes(raw[16:24], "little")
    dtype = {2: np.uint16, 4: np.uint32}[width]
    ids = np.frombuffer(raw, dtype=dtype, count=count, offset=32).astype(np.int64)
    n = len(ids) // b
    return torch.from_numpy(ids[: n * b].reshape(b, n).T.copy())


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def zero_state(cell, layers, b, hidden):
    h = torch.zeros(layers, b, hidden)
    return (h, h.clone()) if cell == "LSTM" else h


def evaluate(model, data, a, vocab):
    """Mean NLL per token over every full (T, B) batch of the split, state carried."""
    model.eval()
    state = zero_state(a.cell, a.layers, a.batch, a.hidden)
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range((data.shape[0] - 1) // a.bptt):
            x = data[k * a.bptt:(k + 1) * a.bptt]
            y = data[k * a.bptt + 1:(k + 1) * a.bptt + 1]
            logits, state = model(x, state)
            total += F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="an `arlm prepare` directory")
    ap.add_argument("--cell", default="LSTM")
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=13)
    ap.add_argument("--decay-after", type=int, default=4)
    ap.add_argument("--factor", type=float, default=0.5)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--max-steps", type=int, default=0, help="stop early (smoke runs)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--like", help="arlm model directory whose config.json and tokenizer.json --out copies")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with open(os.path.join(a.data, "meta.json")) as f:
        meta = json.load(f)
    vocab = meta["vocab_size"]
    train = streams(os.path.join(a.data, "train.bin"), a.batch)
    val = streams(os.path.join(a.data, "val.bin"), a.batch)
    model = RNNModel(a.cell, vocab, a.hidden, a.layers)
    per_epoch = (train.shape[0] - 1) // a.bptt
    total_steps = per_epoch * a.epochs
    if a.max_steps:
        total_steps = min(total_steps, a.max_steps)
    print(f"{a.cell} {a.layers} x {a.hidden}, V {vocab}, {per_epoch} steps per epoch, "
          f"{total_steps} steps, torch {torch.__version__}, {a.threads} threads", flush=True)
    t0 = time.perf_counter()
    step, window, val_loss = 0, [], float("nan")
    while step < total_steps:
        epoch = step // per_epoch
        lr = a.factor ** max(0, epoch + 1 - a.decay_after)
        if step % per_epoch == 0:
            state = zero_state(a.cell, a.layers, a.batch, a.hidden)
        k = step % per_epoch
        x = train[k * a.bptt:(k + 1) * a.bptt]
        y = train[k * a.bptt + 1:(k + 1) * a.bptt + 1]
        state = detach(state)
        model.zero_grad(set_to_none=True)
        logits, state = model(x, state)
        loss = F.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        (loss * a.bptt).backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(p.grad, alpha=-lr)
        window.append(loss.item())
        step += 1
        if step % a.eval_every == 0 or step == total_steps:
            val_loss = evaluate(model, val, a, vocab)
            print(f"step {step:6d}  epoch {epoch + 1:2d}  lr {lr:.5f}  train {np.mean(window):.4f}  "
                  f"val {val_loss:.4f}  {time.perf_counter() - t0:8.1f} s", flush=True)
            window = []
    seconds = time.perf_counter() - t0
    if a.out:
        from safetensors.torch import save_file
        os.makedirs(a.out, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                  os.path.join(a.out, "model.safetensors"))
        for name in ("config.json", "tokenizer.json"):
            shutil.copy(os.path.join(a.like, name), os.path.join(a.out, name))
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "cell": a.cell,
                      "steps": step, "seconds": seconds, "val_loss": val_loss}))


if __name__ == "__main__":
    main()
