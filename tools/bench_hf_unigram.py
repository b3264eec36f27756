"""Hugging Face `tokenizers`' encode throughput of a Unigram tokenizer.json on a text file,
for `arlm bench tokenizer --unigram`.

Prints one JSON line per thread count: {"threads": N, "mb_per_s": median, "tokens": count}.
The text is cut into ~4 KB chunks before a space (a chunk that starts with a space gets
no prepended ▁, so the ids are those of the whole text) and encoded with encode_batch,
with RAYON_NUM_THREADS=N: the library is much slower on one 10 MB string (0.4 MB/s
measured), so this is its best case, not that one.

Usage: python tools/bench_hf_unigram.py --input FILE --tokenizer JSON [--runs 5] [--threads 1,2]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time


def chunks(text, parts):
    target = max(len(text) // parts, 1)
    out, start = [], 0
    while start < len(text):
        cut = text.find(" ", start + target) if start + target < len(text) else -1
        end = cut if cut > 0 else len(text)
        out.append(text[start:end])
        start = end
    return out


def one(args, threads):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(args.tokenizer)
    text = open(args.input, encoding="utf-8").read()
    mb = len(text.encode("utf-8")) / 1e6
    parts = chunks(text, max(len(text) // 4096, 1))
    run = lambda: sum(len(e.ids) for e in tok.encode_batch(parts))  # noqa: E731
    tokens = run()
    secs = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        tokens = run()
        secs.append(time.perf_counter() - t0)
    print(json.dumps({"threads": threads, "mb_per_s": mb / statistics.median(secs), "tokens": tokens}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--input", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--one", type=int, default=0)
    args = p.parse_args()
    if args.one:
        one(args, args.one)
        return
    for t in [int(x) for x in args.threads.split(",")]:
        env = dict(os.environ, RAYON_NUM_THREADS=str(t), TOKENIZERS_PARALLELISM="true")
        out = subprocess.run([sys.executable, __file__, "--input", args.input, "--tokenizer",
                              args.tokenizer, "--runs", str(args.runs), "--one", str(t)],
                             env=env, check=True, capture_output=True, text=True).stdout
        print(out.strip())


if __name__ == "__main__":
    main()
