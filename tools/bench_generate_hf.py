#!/usr/bin/env python3
"""Reference for `arlm bench generate`: Hugging Face transformers `generate` speed.

Loads the GPT-2 checkpoint arlm wrote (model.safetensors + config.json), feeds the same
prompt token ids, generates --new-tokens tokens at batch 1 (end-of-text ignored via
min_new_tokens), greedy and top-p 0.95 (temperature 1, top_k 0), and prints one JSON
line: [{"setting", "prefill_tokens_per_s", "decode_tokens_per_s"}, ...].

Prefill = one forward pass over the prompt with the KV cache on. Decode tokens/s =
new tokens / (generate time - prefill time), matching arlm's split.
"""
import argparse
import json
import time

import torch
from transformers import GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True, help="JSON list of token ids")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    model = GPT2LMHeadModel.from_pretrained(a.model, torch_dtype=torch.float32).eval()
    ids = torch.tensor([json.loads(a.prompt)], dtype=torch.long)
    n = ids.shape[1]
    out = []
    with torch.inference_mode():
        model(ids, use_cache=True)  # warm-up
        best_prefill = float("inf")
        for _ in range(max(1, a.runs)):
            t0 = time.perf_counter()
            model(ids, use_cache=True)
            best_prefill = min(best_prefill, time.perf_counter() - t0)
        for setting in ["greedy", "top-p"]:
            kw = dict(do_sample=False) if setting == "greedy" else dict(
                do_sample=True, top_p=0.95, top_k=0, temperature=1.0)
            best = float("inf")
            for r in range(max(1, a.runs)):
                torch.manual_seed(r)
                t0 = time.perf_counter()
                g = model.generate(ids, attention_mask=torch.ones_like(ids),
                                   max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                   pad_token_id=model.config.eos_token_id, **kw)
                best = min(best, time.perf_counter() - t0)
                assert g.shape[1] == n + a.new_tokens, g.shape
            decode = max(best - best_prefill, 1e-9)
            out.append({"setting": setting, "prefill_tokens_per_s": n / best_prefill,
                        "decode_tokens_per_s": a.new_tokens / decode})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
