#!/usr/bin/env python3
"""Document perplexity with KenLM's Python module, CCNet style (the peer of
`arlm score --perplexity`).

Usage: score_docs_kenlm.py MODEL DOCS.jsonl OUT.jsonl [--field text] [--procs N]
Each record's field is split into lines (one final newline dropped); each line is scored
with model.score(line, bos=True, eos=True) and counts len(line.split()) + 1 tokens; the
record is written back with "tokens", "log10_prob" and "perplexity" added, in input order
(multiprocessing.Pool.imap with N processes, each loading the model, as CCNet does).
Prints one JSON line: documents, tokens, seconds end to end (model load included).
"""
import json
import sys
import time
from multiprocessing import Pool

import kenlm

MODEL = None


def init(path):
    global MODEL
    MODEL = kenlm.Model(path)


def score(args):
    line, field = args
    rec = json.loads(line)
    text = rec[field]
    if text.endswith("\n"):
        text = text[:-1]
    log10 = 0.0
    tokens = 0
    if text:
        for l in text.split("\n"):
            log10 += MODEL.score(l, bos=True, eos=True)
            tokens += len(l.split()) + 1
    rec["tokens"] = tokens
    rec["log10_prob"] = log10
    rec["perplexity"] = 10.0 ** (-log10 / tokens) if tokens else None
    return json.dumps(rec), tokens


def main():
    args = sys.argv[1:]
    field, procs = "text", 1
    for flag in ("--field", "--procs"):
        if flag in args:
            i = args.index(flag)
            if flag == "--field":
                field = args[i + 1]
            else:
                procs = int(args[i + 1])
            del args[i : i + 2]
    model_path, docs_path, out_path = args
    t0 = time.perf_counter()
    docs = tokens = 0
    with open(docs_path, encoding="utf-8") as f, open(out_path, "w", encoding="utf-8") as out:
        items = ((l, field) for l in f if l.strip())
        if procs == 1:
            init(model_path)
            results = map(score, items)
            pool = None
        else:
            pool = Pool(procs, initializer=init, initargs=(model_path,))
            results = pool.imap(score, items, chunksize=256)
        for line, n in results:
            out.write(line + "\n")
            docs += 1
            tokens += n
        if pool is not None:
            pool.close()
            pool.join()
    secs = time.perf_counter() - t0
    print(json.dumps({"docs": docs, "tokens": tokens, "seconds": secs}))


if __name__ == "__main__":
    main()
