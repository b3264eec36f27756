#!/usr/bin/env python3
"""lm-evaluation-harness's `local-completions` model against `arlm serve`, unmodified:
a rolling-loglikelihood task on local documents (a task YAML with `dataset_path: json`,
no network), using the server's own tokenizer (`tokenizer_backend=remote`, which reads
GET /tokenizer_info and POST /tokenize). Prints its bits per byte beside `arlm eval`'s on
the same documents with the same window protocol, and fails if they differ by more than
--tol (relative).

The two protocols, made equal:
- lm-eval (`max_length=L`) scores each document as log p(doc | end-of-text) in disjoint
  windows: it sends the server prompts of at most L ids (end-of-text + L-1 tokens, then
  L-1 new targets per window, each later window ending L-1 ids further on and reaching
  back L ids) with `echo: true, logprobs: 1, max_tokens: 1`, and sums the echoed
  log-probs of each window's new targets. bits/byte = total NLL / (UTF-8 bytes of the
  documents * ln 2).
- `arlm eval --docs lines --end-token false --context L --stride L-1` is the same: each
  line a document conditioned on end-of-text, no end token scored, windows of L ids with
  L-1 new targets each, the last one reaching back a whole window.
L = the model's context - 1, because the server needs room for the one token lm-eval
asks it to generate.

    PY=$(bash ../shared/tools/peers-venv.sh)
    $PY tools/serve_lm_eval.py --arlm target/release/arlm --model DIR --docs FILE [--limit 200]
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time


def start_server(arlm, model):
    srv = subprocess.Popen([arlm, "serve", "--model", model, "--port", "0"],
                           stderr=subprocess.PIPE, text=True)
    port, t = None, time.time()
    while port is None and time.time() - t < 120:
        line = srv.stderr.readline()
        if not line and srv.poll() is not None:
            sys.exit("the server exited")
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    return srv, port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arlm", default="target/release/arlm")
    ap.add_argument("--model", required=True)
    ap.add_argument("--docs", required=True, help="text file, one document per non-empty line")
    ap.add_argument("--limit", type=int, default=200, help="first N non-empty lines")
    ap.add_argument("--tol", type=float, default=1e-5)
    a = ap.parse_args()

    import lm_eval
    from lm_eval.tasks import TaskManager

    with open(a.docs, encoding="utf-8") as f:
        docs = [line.rstrip("\n") for line in f if line.strip()][: a.limit]
    tmp = tempfile.mkdtemp(prefix="arlm-lm-eval-")
    with open(os.path.join(tmp, "docs.jsonl"), "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    with open(os.path.join(tmp, "docs.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(docs) + "\n")
    with open(os.path.join(tmp, "arlm_docs.yaml"), "w") as f:
        f.write(f"""task: arlm_docs
dataset_path: json
dataset_kwargs:
  data_files:
    test: {os.path.join(tmp, "docs.jsonl")}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
  - metric: word_perplexity
""")

    srv, port = start_server(a.arlm, a.model)
    try:
        import urllib.request
        info = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/tokenizer_info"))
        name = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models"))["data"][0]["id"]
        ctx = info.get("model_max_length") or 1_000_000
        window = ctx - 1  # lm-eval's max_length: its prompts are at most this long
        print(f"model {name}: tokenizer {info['tokenizer_class']}, context {info.get('model_max_length')}, "
              f"windows of {window} ids; {len(docs)} documents from {a.docs}")
        t0 = time.time()
        res = lm_eval.simple_evaluate(
            model="local-completions",
            model_args=(f"base_url=http://127.0.0.1:{port}/v1/completions,model={name},"
                        f"tokenizer_backend=remote,tokenized_requests=True,max_length={window},"
                        "num_concurrent=1,max_retries=1"),
            tasks=["arlm_docs"],
            task_manager=TaskManager(include_path=tmp),
        )
        harness_bpb = res["results"]["arlm_docs"]["bits_per_byte,none"]
        print(f"lm-eval local-completions: bits/byte {harness_bpb:.6f} ({time.time() - t0:.1f} s)")
    finally:
        srv.terminate()
        srv.wait(30)

    out = subprocess.run([a.arlm, "eval", "--model", a.model, "--data", os.path.join(tmp, "docs.txt"),
                          "--docs", "lines", "--end-token", "false", "--context", str(window),
                          "--stride", str(window - 1), "--resamples", "0", "--json"],
                         capture_output=True, text=True, check=True).stdout
    arlm_bpb = json.loads(out)["metrics"]["bits_per_byte"]
    rel = abs(arlm_bpb - harness_bpb) / arlm_bpb
    print(f"arlm eval:                 bits/byte {arlm_bpb:.6f}  (relative difference {rel:.2e})")
    if not (rel <= a.tol) or math.isnan(rel):
        sys.exit(f"FAIL: differ by {rel:.2e} > {a.tol}")
    print("OK")


if __name__ == "__main__":
    main()
