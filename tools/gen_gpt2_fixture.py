#!/usr/bin/env python3
"""Builds the GPT-2 parity fixture for tests/it/gpt_parity.rs (like llm.c's test_gpt2).

A tiny GPT2LMHeadModel (random init, fixed seed) is saved with save_pretrained into
tests/fixtures/gpt2-tiny/ together with reference.safetensors holding, for one fixed batch:
inputs/targets, the logits, the mean cross-entropy loss, every parameter gradient
(grad.<hf name>), and the losses of 10 torch.optim.AdamW steps (weight decay on 2-D
tensors only, as arlm's decay_mask), plus the logits after those steps.

With --check-arlm, it then asks arlm (an ignored test in tests/it/gpt_parity.rs) to load the
fixture, take the same 10 AdamW steps and save its own checkpoint, and checks that
transformers loads that directory with GPT2LMHeadModel.from_pretrained and gets the same
logits as PyTorch's trained model.

With --activation gelu, the same with transformers' exact (erf) GELU, into
tests/fixtures/gpt2-tiny-gelu/.

Usage: PY=/root/.cache/arlm-peers/bin/python; $PY tools/gen_gpt2_fixture.py [--check-arlm]
       [--activation gelu_new|gelu]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "gpt2-tiny")
B, T = 4, 16
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.95), 1e-8, 0.1
STEPS = 10


def build(activation):
    torch.manual_seed(1234)
    cfg = GPT2Config(
        vocab_size=65, n_positions=32, n_embd=32, n_layer=2, n_head=4,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        activation_function=activation, bos_token_id=64, eos_token_id=64,
    )
    model = GPT2LMHeadModel(cfg).float()
    # Non-trivial LayerNorm parameters and biases so their gradients are exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model.eval()  # dropout is 0 anyway; eval keeps it deterministic
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-arlm", action="store_true")
    ap.add_argument("--activation", choices=["gelu_new", "gelu"], default="gelu_new")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = build(args.activation)
    global OUT
    if args.activation == "gelu":
        OUT = OUT + "-gelu"
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT, safe_serialization=True)
    g = torch.Generator().manual_seed(99)
    x = torch.randint(0, 65, (B, T), generator=g)
    y = torch.randint(0, 65, (B, T), generator=g)
    # the targets are the next tokens of the same stream where possible (teacher forcing)
    y[:, :-1] = x[:, 1:]

    ref = {"inputs": x.to(torch.int32), "targets": y.to(torch.int32)}
    logits = model(x).logits
    loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
    loss.backward()
    ref["logits"] = logits.detach().clone()
    ref["loss"] = loss.detach().reshape(1).clone()
    for name, p in model.named_parameters():
        ref["grad." + name] = p.grad.detach().clone()
    model.zero_grad(set_to_none=True)

    decay = [p for p in model.parameters() if p.dim() >= 2]
    nodecay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WD}, {"params": nodecay, "weight_decay": 0.0}],
        lr=LR, betas=BETAS, eps=EPS, foreach=False,
    )
    losses = []
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True)
        lg = model(x).logits
        l = F.cross_entropy(lg.view(-1, lg.size(-1)), y.view(-1))
        l.backward()
        opt.step()
        losses.append(l.item())
    ref["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    with torch.no_grad():
        trained_logits = model(x).logits
    ref["trained_logits"] = trained_logits.clone()
    ref["hyper"] = torch.tensor([LR, BETAS[0], BETAS[1], EPS, WD], dtype=torch.float64)
    save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(OUT, "reference.safetensors"))
    size = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {OUT} ({size} bytes); loss {loss.item():.6f}; adamw losses {losses}")

    if args.check_arlm:
        with tempfile.TemporaryDirectory() as d:
            env = dict(os.environ, ARLM_SAVE_DIR=d, ARLM_FIXTURE=OUT)
            subprocess.run(
                ["cargo", "test", "-q", "--test", "it", "gpt_parity::save_trained_checkpoint",
                 "--", "--ignored"], cwd=ROOT, env=env, check=True)
            back = GPT2LMHeadModel.from_pretrained(d).float().eval()
            with torch.no_grad():
                got = back(x).logits
            err = (got - trained_logits).abs().max().item()
            print(f"transformers loaded arlm's checkpoint; max |logit diff| vs PyTorch-trained = {err:.2e}")
            if err > 1e-3:
                sys.exit("arlm-saved checkpoint does not reproduce PyTorch's trained logits")


if __name__ == "__main__":
    main()
