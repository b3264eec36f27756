#!/usr/bin/env python3
"""Builds the recurrent-model parity fixtures for tests/it/rnn_parity.rs.

For each of LSTM and GRU, PyTorch's word_language_model architecture (nn.Embedding ->
nn.LSTM / nn.GRU -> nn.Linear, module names encoder / rnn / decoder; 2 layers, small
sizes, random init with a fixed seed) is saved as an arlm model directory
(tests/fixtures/rnn-tiny-<cell>/: config.json + model.safetensors with the state_dict
names) plus reference.safetensors holding, for a token stream cut into B contiguous
streams (PyTorch's batchify):
- inputs/targets of the first (B, T) batch, its logits (T, B, V) from a zero state, the
  mean cross-entropy and every parameter gradient (grad.<name>);
- the losses of 10 plain SGD steps (lr LR) over consecutive batches with the hidden state
  carried from step to step and detached (truncated BPTT), and the logits of the first
  batch after those steps (from a zero state).

With --check-arlm it then runs arlm (an ignored test in tests/it/rnn_parity.rs) to load the
fixture, take the same 10 steps and save its own checkpoint, loads that checkpoint back
into the PyTorch module with load_state_dict(strict=True) and checks its logits against
PyTorch's trained model.

Usage: PY=$(bash ../shared/tools/peers-venv.sh); $PY tools/gen_rnn_fixture.py [--check-arlm]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V, E, H, L = 23, 8, 12, 2
B, T, STEPS, LR = 3, 5, 10, 0.5


class RNNModel(nn.Module):
    """word_language_model's RNNModel without dropout (module names as there)."""

    def __init__(self, cell):
        super().__init__()
        self.encoder = nn.Embedding(V, E)
        self.rnn = getattr(nn, cell)(E, H, L)
        self.decoder = nn.Linear(H, V)

    def forward(self, x, state):
        out, state = self.rnn(self.encoder(x), state)
        return self.decoder(out), state


def zero_state(cell):
    h = torch.zeros(L, B, H)
    return (h, torch.zeros(L, B, H)) if cell == "LSTM" else h


def detach(state):
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def streams(seed):
    """A token stream cut into B contiguous streams: (B, STEPS * T + 1)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, STEPS * T + 1), generator=g)


def batch(data, k):
    # (B, T) inputs and targets of batch k; PyTorch's RNN wants (T, B).
    return data[:, k * T:(k + 1) * T], data[:, k * T + 1:(k + 1) * T + 1]


def build(cell, out):
    torch.manual_seed(4321 if cell == "LSTM" else 8765)
    model = RNNModel(cell)
    os.makedirs(out, exist_ok=True)
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = {"model_type": "arlm-rnn", "architectures": ["RNNModel"], "rnn_type": cell,
              "ntoken": V, "ninp": E, "nhid": H, "nlayers": L, "dropout": 0.0,
              "tie_weights": False, "bos_token_id": V - 1, "torch_dtype": "float32"}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    data = streams(99)
    x, y = batch(data, 0)
    logits, _ = model(x.t(), zero_state(cell))  # (T, B, V)
    loss = F.cross_entropy(logits.reshape(-1, V), y.t().reshape(-1))
    loss.backward()
    ref = {"inputs": x.to(torch.int32).contiguous(), "targets": y.to(torch.int32).contiguous(),
           "logits": logits.detach().contiguous(), "loss": loss.detach().double().reshape(1)}
    for name, p in model.named_parameters():
        ref["grad." + name] = p.grad.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    state, losses = zero_state(cell), []
    for k in range(STEPS):
        x, y = batch(data, k)
        opt.zero_grad()
        logits, state = model(x.t(), state)
        state = detach(state)
        loss = F.cross_entropy(logits.reshape(-1, V), y.t().reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ref["sgd_losses"] = torch.tensor(losses, dtype=torch.float64)
    ref["stream"] = data.to(torch.int32).contiguous()
    with torch.no_grad():
        ref["trained_logits"] = model(batch(data, 0)[0].t(), zero_state(cell))[0].contiguous()
    save_file(ref, os.path.join(out, "reference.safetensors"))
    print(f"{cell}: loss {ref['loss'].item():.6f}, SGD losses {[round(l, 5) for l in losses]} -> {out}")
    return model, ref


def check_arlm(cell, model, ref, out):
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, ARLM_RNN_PARITY_OUT=tmp, ARLM_RNN_PARITY_CELL=cell.lower())
        subprocess.run(["cargo", "test", "--test", "it", "--", "--ignored",
                        "rnn_parity::arlm_trained_checkpoint", "--nocapture"], cwd=ROOT, env=env, check=True)
        fresh = RNNModel(cell)
        fresh.load_state_dict(load_file(os.path.join(tmp, "model.safetensors")), strict=True)
        with open(os.path.join(tmp, "config.json")) as f:
            cfg = json.load(f)
        assert cfg["rnn_type"] == cell and cfg["nhid"] == H and cfg["nlayers"] == L, cfg
    with torch.no_grad():
        got = fresh(batch(ref["stream"].long(), 0)[0].t(), zero_state(cell))[0]
    diff = (got - ref["trained_logits"]).abs().max().item()
    scale = ref["trained_logits"].abs().max().item()
    print(f"{cell}: arlm's checkpoint loaded into PyTorch: max |logit diff| {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= 1e-4 * max(scale, 1.0), diff


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-arlm", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for cell in ["LSTM", "GRU"]:
        out = os.path.join(ROOT, "tests", "fixtures", f"rnn-tiny-{cell.lower()}")
        model, ref = build(cell, out)
        if args.check_arlm:
            check_arlm(cell, model, ref, out)


if __name__ == "__main__":
    sys.exit(main())
