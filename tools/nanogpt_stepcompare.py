#!/usr/bin/env python3
"""Step-by-step comparison of arlm's training with the real nanoGPT (issue 19).

Runs a patched copy of nanoGPT's train.py (the peer at ../shared/peers/nanoGPT; the copy
and its patches live in a temporary directory, the peer itself is never edited) for N
steps of the `shakespeare-char-cpu` recipe, exporting:

- its step-0 weights as a Hugging Face GPT-2 model directory (config.json +
  model.safetensors: nanoGPT's `nn.Linear` weights transposed into GPT-2's Conv1D layout,
  the absent biases as zeros), which `arlm train --init-weights DIR` loads;
- the offsets of the training windows it drew at each step (`offsets.txt`, one line of B
  offsets per step; the windows its 20-batch evaluation draws are not training batches
  and are left out), which `arlm train --batch-offsets FILE` trains on;
- its loss, learning rate and pre-clip gradient norm at each step, and its weights after
  the last step.

Then it runs arlm from those weights on those windows and prints both curves side by side
with the largest differences, and the largest weight difference after the last step.

nanoGPT's model gets 66 embedding rows instead of 65 (meta.pkl's vocab_size), as arlm's
chars tokenizer has (65 characters + <|endoftext|>, which no window contains): the extra
row is part of the exported step-0 weights. `--gelu tanh` patches nanoGPT's nn.GELU() to
nn.GELU(approximate='tanh') (GPT-2's gelu_new, arlm's default); `--gelu exact` keeps
upstream's erf GELU and trains arlm with `--activation gelu`.

Usage (from the repository root, after `cargo build --release`):
  PY=$(bash ../shared/tools/peers-venv.sh)
  $PY tools/nanogpt_stepcompare.py --steps 100 [--seed 1337] [--gelu tanh|exact]
      [--arlm-args "..."] [--keep DIR]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Loaded by the patched train.py (copied next to it as stepcompare_hooks.py).
HOOKS = r'''
import json, os
import torch
from safetensors.torch import save_file

OUT = os.environ["STEPCOMPARE_OUT"]
offsets = []
steps = []
in_eval = False


def export(model, name, activation):
    """nanoGPT state -> GPT-2 (transformers) names and layouts, absent biases as zeros."""
    sd = {k.replace("_orig_mod.", ""): v.detach().float() for k, v in model.state_dict().items()}
    cfg = model.config
    c, out = cfg.n_embd, {}

    def take(src, shape, transpose=False):
        if src in sd:
            t = sd[src].t() if transpose else sd[src]
            return t.contiguous().clone()
        return torch.zeros(shape)

    out["transformer.wte.weight"] = take("transformer.wte.weight", None)
    out["transformer.wpe.weight"] = take("transformer.wpe.weight", None)
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[p + ln + ".weight"] = take(p + ln + ".weight", None)
            out[p + ln + ".bias"] = take(p + ln + ".bias", (c,))
        for lin, width in (("attn.c_attn", 3 * c), ("attn.c_proj", c), ("mlp.c_fc", 4 * c),
                           ("mlp.c_proj", c)):
            out[p + lin + ".weight"] = take(p + lin + ".weight", None, transpose=True)
            out[p + lin + ".bias"] = take(p + lin + ".bias", (width,))
    out["transformer.ln_f.weight"] = take("transformer.ln_f.weight", None)
    out["transformer.ln_f.bias"] = take("transformer.ln_f.bias", (c,))
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    save_file(out, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    conf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
            "vocab_size": cfg.vocab_size, "n_positions": cfg.block_size,
            "n_ctx": cfg.block_size, "n_embd": c, "n_layer": cfg.n_layer,
            "n_head": cfg.n_head, "n_inner": None, "activation_function": activation,
            "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
            "bos_token_id": cfg.vocab_size - 1, "eos_token_id": cfg.vocab_size - 1}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(conf, f, indent=1)


def finish():
    with open(os.path.join(OUT, "offsets.txt"), "w") as f:
        for ix in offsets:
            f.write(" ".join(str(i) for i in ix) + "\n")
    with open(os.path.join(OUT, "steps.jsonl"), "w") as f:
        for s in steps:
            f.write(json.dumps(s) + "\n")
'''


def patch(text, old, new, count=1):
    """Replaces `old` (which must occur exactly `count` times) by `new`."""
    assert text.count(old) == count, f"patch anchor not found {count}x: {old!r}"
    return text.replace(old, new)


def patch_nanogpt(d, gelu, vocab):
    path = os.path.join(d, "train.py")
    s = open(path).read()
    s = patch(s, "from model import GPTConfig, GPT",
              "from model import GPTConfig, GPT\nimport stepcompare_hooks as _h")
    # record the training windows (not the evaluation's)
    s = patch(s, "    ix = torch.randint(len(data) - block_size, (batch_size,))\n",
              "    ix = torch.randint(len(data) - block_size, (batch_size,))\n"
              "    if split == 'train' and not _h.in_eval:\n"
              "        _h.offsets.append(ix.tolist())\n")
    s = patch(s, "    out = {}\n    model.eval()\n", "    out = {}\n    _h.in_eval = True\n    model.eval()\n")
    s = patch(s, "    model.train()\n    return out\n", "    model.train()\n    _h.in_eval = False\n    return out\n")
    if vocab is not None:
        s = patch(s, "    meta_vocab_size = meta['vocab_size']\n",
                  f"    meta_vocab_size = {vocab}\n")
    act = "gelu_new" if gelu == "tanh" else "gelu"
    s = patch(s, "model.to(device)\n", f"model.to(device)\n_h.export(model, 'init', {act!r})\n")
    s = patch(s, "        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)\n",
              "        _gn = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)\n")
    s = patch(s, "    optimizer.zero_grad(set_to_none=True)\n",
              "    optimizer.zero_grad(set_to_none=True)\n"
              "    _h.steps.append({'step': iter_num + 1, 'loss': loss.item() * gradient_accumulation_steps,"
              " 'lr': lr, 'grad_norm': float(_gn)})\n")
    s = patch(s, "if ddp:\n    destroy_process_group()\n",
              f"_h.export(raw_model, 'final', {act!r})\n_h.finish()\n"
              "if ddp:\n    destroy_process_group()\n")
    open(path, "w").write(s)
    if gelu == "tanh":
        mpath = os.path.join(d, "model.py")
        m = open(mpath).read()
        m = patch(m, "self.gelu    = nn.GELU()", "self.gelu    = nn.GELU(approximate='tanh')")
        open(mpath, "w").write(m)
    open(os.path.join(d, "stepcompare_hooks.py"), "w").write(HOOKS)
    return act


def read_jsonl(path):
    return [json.loads(l) for l in open(path) if l.strip()]


def load_safetensors(path):
    from safetensors.numpy import load_file
    return load_file(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--gelu", choices=["exact", "tanh"], default="tanh")
    ap.add_argument("--nanogpt", default=os.path.join(REPO, "..", "shared", "peers", "nanoGPT"))
    ap.add_argument("--text", default=os.path.join(REPO, "..", "shared", "data", "tinyshakespeare.txt"))
    ap.add_argument("--arlm", default=os.path.join(REPO, "target", "release", "arlm"))
    ap.add_argument("--arlm-args", default="", help="extra flags for arlm train")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", help="work in this directory and keep it")
    ap.add_argument("--show", type=int, default=12, help="table rows to print")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="stepcompare-")
    os.makedirs(work, exist_ok=True)
    d = os.path.join(work, "nanogpt")
    if os.path.exists(d):
        shutil.rmtree(d)
    shutil.copytree(a.nanogpt, d, ignore=shutil.ignore_patterns("out*", "*.bin", "*.pkl", "input.txt"))
    text_copy = os.path.join(d, "data", "shakespeare_char", "input.txt")
    shutil.copy(a.text, text_copy)
    subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=d, check=True,
                   stdout=subprocess.DEVNULL)
    act = patch_nanogpt(d, a.gelu, 66)
    out = os.path.join(work, "export")
    os.makedirs(out, exist_ok=True)
    env = dict(os.environ, STEPCOMPARE_OUT=out, OMP_NUM_THREADS=str(a.threads))
    cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu",
           "--compile=False", "--eval_iters=20", "--log_interval=1000000", "--block_size=64",
           "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128",
           f"--max_iters={a.steps - 1}", "--lr_decay_iters=2000", "--dropout=0.0",
           f"--seed={a.seed}", "--eval_interval=1000000", "--out_dir=out"]
    subprocess.run(cmd, cwd=d, env=env, check=True, stdout=subprocess.DEVNULL)
    # nanoGPT prefetches one batch past the last step: keep the ones it trained on.
    offsets = open(os.path.join(out, "offsets.txt")).read().splitlines()[: a.steps]
    open(os.path.join(out, "offsets.txt"), "w").write("\n".join(offsets) + "\n")

    run = os.path.join(work, "arlm")
    if os.path.exists(run):
        shutil.rmtree(run)
    acmd = [a.arlm, "train", "--preset", "shakespeare-char-cpu", "--data", text_copy,
            "--steps", str(a.steps), "--lr-decay-steps", "2000", "--seed", str(a.seed),
            "--eval-every", "1000000", "--checkpoint-every", "1000000", "--quiet",
            "--out", run, "--init-weights", os.path.join(out, "init"),
            "--batch-offsets", os.path.join(out, "offsets.txt"), "--activation", act] + a.arlm_args.split()
    res = subprocess.run(acmd, env=dict(os.environ, RAYON_NUM_THREADS=str(a.threads)),
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"arlm failed ({' '.join(acmd)}):\n{res.stderr}")

    nano = read_jsonl(os.path.join(out, "steps.jsonl"))
    ours = [r for r in read_jsonl(os.path.join(run, "metrics.jsonl")) if r["kind"] == "train"]
    by_step = {r["step"]: r for r in ours}
    rows = []
    for n in nano:
        r = by_step.get(n["step"])
        if r is None:
            continue
        rows.append((n["step"], n["lr"], r["lr"], n["loss"], r["loss"], n["grad_norm"], r["grad_norm"]))
    assert len(rows) == a.steps, f"{len(rows)} matched steps of {a.steps}"
    print(f"nanoGPT (GELU {a.gelu}, 66 embedding rows) vs arlm, seed {a.seed}, {a.steps} steps, "
          f"same step-0 weights and windows")
    print(f"{'step':>5} {'lr nanoGPT':>11} {'lr arlm':>11} {'loss nanoGPT':>13} {'loss arlm':>10} "
          f"{'diff':>10} {'|g| nanoGPT':>11} {'|g| arlm':>9}")
    picks = sorted(set(list(range(min(5, len(rows)))) +
                       [int(i * (len(rows) - 1) / max(1, a.show - 5)) for i in range(a.show - 4)]))
    for i in picks:
        s, l1, l2, x1, x2, g1, g2 = rows[i]
        print(f"{s:>5} {l1:>11.4e} {l2:>11.4e} {x1:>13.6f} {x2:>10.6f} {x2 - x1:>+10.2e} {g1:>11.5f} {g2:>9.5f}")
    diffs = [abs(r[4] - r[3]) for r in rows]
    lr_rel = max(abs(r[2] - r[1]) / r[1] for r in rows)
    first = min(10, len(rows))
    summary = {"seed": a.seed, "gelu": a.gelu, "steps": a.steps,
               "max_abs_loss_diff_first10": max(diffs[:first]),
               "max_abs_loss_diff": max(diffs),
               "mean_loss_nanogpt": sum(r[3] for r in rows) / len(rows),
               "mean_loss_arlm": sum(r[4] for r in rows) / len(rows),
               "max_rel_lr_diff": lr_rel}
    w_n = load_safetensors(os.path.join(out, "final", "model.safetensors"))
    w_a = load_safetensors(os.path.join(run, "model.safetensors"))
    worst = max(((float(abs(w_n[k] - w_a[k]).max()), k) for k in w_n), key=lambda x: x[0])
    summary["max_abs_weight_diff_final"] = worst[0]
    summary["worst_tensor"] = worst[1]
    print(json.dumps(summary))
    if not a.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
