#!/usr/bin/env python3
"""PyTorch reference for the recurrent models' training step: word_language_model's
architecture (nn.Embedding -> nn.LSTM / nn.GRU -> nn.Linear), eager mode,
torch.set_num_threads(2), truncated BPTT with the state carried and detached, plain SGD
with clip_grad_norm_(5) -- the same step as `arlm train --preset ptb-lstm-small`.

Prints one JSON line: the median milliseconds per BPTT step over --steps timed steps
(after --warmup untimed ones), and the peak RSS.

Usage: $PY tools/bench_rnn_torch.py --cell LSTM --hidden 200 --layers 2 --vocab 10001 \
           --batch 20 --bptt 20 --steps 30
"""
import argparse
import json
import resource
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class RNNModel(nn.Module):
    def __init__(self, cell, vocab, hidden, layers):
        super().__init__()
        self.encoder = nn.Embedding(vocab, hidden)
        self.rnn = getattr(nn, cell)(hidden, hidden, layers)
        self.decoder = nn.Linear(hidden, vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def forward(self, x, state):
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cell", default="LSTM")
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=10001)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--bptt", type=int, default=20)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = RNNModel(a.cell, a.vocab, a.hidden, a.layers)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    n = a.steps + a.warmup
    data = torch.randint(0, a.vocab, (a.bptt * n + 1, a.batch))
    h = torch.zeros(a.layers, a.batch, a.hidden)
    state = (h, h.clone()) if a.cell == "LSTM" else h
    times = []
    for k in range(n):
        x, y = data[k * a.bptt:(k + 1) * a.bptt], data[k * a.bptt + 1:(k + 1) * a.bptt + 1]
        t0 = time.perf_counter()
        state = tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()
        opt.zero_grad()
        logits, state = model(x, state)
        # Zaremba's scale: summed over time, averaged over the batch.
        loss = F.cross_entropy(logits.reshape(-1, a.vocab), y.reshape(-1)) * a.bptt
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if k >= a.warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"peer": "pytorch", "torch": torch.__version__, "cell": a.cell,
                      "ms_per_step_median": statistics.median(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
