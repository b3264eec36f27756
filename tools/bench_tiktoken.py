"""tiktoken's GPT-2 encode throughput on a text file, for `arlm bench tokenizer`.

Prints one JSON line per thread count: {"threads": N, "mb_per_s": median, "tokens": count}.
1 thread: enc.encode_ordinary(whole text). N > 1 threads: encode_ordinary_batch over chunks
cut at the same split points arlm uses (a space after printable ASCII, before an ASCII
letter), where neither GPT-2 nor GPT-4 pre-tokenization can cross, so counts are unchanged.
The encoding is tiktoken's `gpt2`, built from GPT-2's local encoder.json + vocab.bpe.

Usage: python tools/bench_tiktoken.py --input FILE --gpt2 DIR [--runs 5] [--threads 1,2]
"""
import argparse
import json
import os
import re
import statistics
import time

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext import openai_public

SPLIT = re.compile(r"(?<=[\x21-\x7e]) (?=[A-Za-z])")


def chunks(text, parts):
    target = max(len(text) // parts, 1 << 15)
    out, start = [], 0
    while start < len(text):
        m = SPLIT.search(text, start + target) if start + target < len(text) else None
        end = m.start() if m else len(text)
        out.append(text[start:end])
        start = end
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--input", required=True)
    ap.add_argument("--gpt2", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", default="1,2")
    a = ap.parse_args()
    ranks = data_gym_to_mergeable_bpe_ranks(os.path.join(a.gpt2, "vocab.bpe"), os.path.join(a.gpt2, "encoder.json"))
    enc = tiktoken.Encoding("gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257)
    with open(a.input, encoding="utf-8") as f:
        text = f.read()
    mb = len(text.encode("utf-8")) / 1e6
    for n in [int(x) for x in a.threads.split(",")]:
        if n == 1:
            run = lambda: len(enc.encode_ordinary(text))  # noqa: E731
        else:
            parts = chunks(text, n * 8)
            run = lambda: sum(map(len, enc.encode_ordinary_batch(parts, num_threads=n)))  # noqa: E731
        tokens = run()  # warm-up
        times = []
        for _ in range(a.runs):
            t0 = time.perf_counter()
            tokens = run()
            times.append(time.perf_counter() - t0)
        print(json.dumps({"threads": n, "mb_per_s": mb / statistics.median(times), "tokens": tokens}), flush=True)


if __name__ == "__main__":
    main()
