#!/usr/bin/env python3
"""Reference for `arlm bench generate`: Hugging Face transformers `generate` speed.

Loads the GPT-2 checkpoint arlm wrote (model.safetensors + config.json), feeds the same
prompt token ids, generates --new-tokens tokens at batch 1 (end-of-text ignored via
min_new_tokens), greedy and top-p 0.95 (temperature 1, top_k 0), once per --dtypes entry
(float32, bfloat16), and prints one JSON line:
[{"weights", "setting", "prefill_tokens_per_s", "decode_tokens_per_s"}, ...].

Prefill = one forward pass over the prompt with the KV cache on. Decode tokens/s =
new tokens / (generate time - prefill time), matching arlm's split. Every time is the
MEDIAN over --runs timed runs (after a warm-up forward pass and a warm-up 8-token
generate), as on the arlm side; the prefill's over at least 5 passes, as arlm times its own.
"""
import argparse
import json
import statistics
import time

import torch
from transformers import GPT2LMHeadModel

PREFILL_REPS = 5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True, help="JSON list of token ids")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    ids = torch.tensor([json.loads(a.prompt)], dtype=torch.long)
    n = ids.shape[1]
    runs = max(1, a.runs)
    out = []
    for dtype_name in [d for d in a.dtypes.split(",") if d]:
        dtype = getattr(torch, dtype_name)
        model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=dtype).eval()
        with torch.inference_mode():
            model(ids, use_cache=True)  # warm-up
            # The first generate() in a process pays one-time setup (generation config,
            # cache classes, logits processors): warm it up too, or with one timed run per
            # process (arlm alternates runs) the first setting, greedy, absorbs it.
            model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                           min_new_tokens=8, do_sample=False,
                           pad_token_id=model.config.eos_token_id)
            prefills = []
            for _ in range(max(runs, PREFILL_REPS)):
                t0 = time.perf_counter()
                model(ids, use_cache=True)
                prefills.append(time.perf_counter() - t0)
            prefill = statistics.median(prefills)
            for setting in ["greedy", "top-p"]:
                kw = dict(do_sample=False) if setting == "greedy" else dict(
                    do_sample=True, top_p=0.95, top_k=0, temperature=1.0)
                times = []
                for r in range(runs):
                    torch.manual_seed(r)
                    t0 = time.perf_counter()
                    g = model.generate(ids, attention_mask=torch.ones_like(ids),
                                       max_new_tokens=a.new_tokens,
                                       min_new_tokens=a.new_tokens,
                                       pad_token_id=model.config.eos_token_id, **kw)
                    times.append(time.perf_counter() - t0)
                    assert g.shape[1] == n + a.new_tokens, g.shape
                decode = max(statistics.median(times) - prefill, 1e-9)
                out.append({"weights": dtype_name, "setting": setting,
                            "prefill_tokens_per_s": n / prefill,
                            "decode_tokens_per_s": a.new_tokens / decode})
        del model
    print(json.dumps(out))


if __name__ == "__main__":
    main()
