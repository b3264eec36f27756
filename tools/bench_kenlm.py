#!/usr/bin/env python3
"""Query throughput of KenLM's Python module (probing model built from an ARPA file).

Usage: bench_kenlm.py MODEL.arpa TEXT [--repeat 3]
Prints one JSON line: load seconds, scored tokens (words + one </s> per line), best
words/s over the repeats (end to end: strings in, log10 totals out, as `model.score`),
and the total log10 probability (a cross-check against arlm's numbers).
Used by `arlm bench ngram`; needs `pip install kenlm`.
"""
import json
import sys
import time

import kenlm


def main():
    args = sys.argv[1:]
    repeat = 3
    if "--repeat" in args:
        i = args.index("--repeat")
        repeat = int(args[i + 1])
        del args[i : i + 2]
    model_path, text_path = args
    t0 = time.perf_counter()
    model = kenlm.Model(model_path)
    load_s = time.perf_counter() - t0
    with open(text_path, encoding="utf-8") as f:
        text = f.read()
    if text.endswith("\n"):
        text = text[:-1]
    lines = text.split("\n")
    tokens = sum(len(l.split()) + 1 for l in lines)
    best = float("inf")
    total = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        total = 0.0
        for line in lines:
            total += model.score(line, bos=True, eos=True)
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({"load_s": load_s, "tokens": tokens, "seconds": best,
                      "words_per_s": tokens / best, "total_log10": total}))


if __name__ == "__main__":
    main()
