#!/usr/bin/env python3
"""The official `openai` package against `arlm serve`, unmodified: generate, stream,
log-probs and echo scoring. Checks the answers' shapes and that echo scoring agrees
with `arlm score` on the same text (the first echoed token's log-prob is null, as OpenAI
reports it; the rest must be equal).

    PY=$(bash ../shared/tools/peers-venv.sh)
    $PY tools/serve_openai_client.py --arlm target/debug/arlm --model DIR
"""
import argparse
import json
import re
import subprocess
import sys
import threading
import time

from openai import OpenAI


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arlm", default="target/debug/arlm")
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", default="The cat sat on the mat.")
    a = ap.parse_args()
    srv = subprocess.Popen([a.arlm, "serve", "--model", a.model, "--port", "0", "--api-key", "k"],
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
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k")
        name = client.models.list().data[0].id
        print("models:", [m.id for m in client.models.list().data])

        r = client.completions.create(model=name, prompt=a.text, max_tokens=12, temperature=0.8, seed=42,
                                      logprobs=2)
        c = r.choices[0]
        print("generate:", json.dumps(c.text), "finish:", c.finish_reason, "usage:", r.usage.model_dump())
        print("  first tokens:", c.logprobs.tokens[:3], [round(x, 3) for x in c.logprobs.token_logprobs[:3]])
        print("  top_logprobs[0]:", {k: round(v, 3) for k, v in c.logprobs.top_logprobs[0].items()})
        assert len(c.logprobs.tokens) == r.usage.completion_tokens

        parts = []
        for chunk in client.completions.create(model=name, prompt=a.text, max_tokens=12, temperature=0.8, seed=42,
                                               stream=True):
            if chunk.choices:
                parts.append(chunk.choices[0].text)
        print("stream:", json.dumps("".join(parts)), f"({len(parts)} chunks)")
        assert "".join(parts) == c.text, "stream and non-stream differ"

        e = client.completions.create(model=name, prompt=a.text, max_tokens=0, echo=True, logprobs=0)
        lps = e.choices[0].logprobs.token_logprobs
        print("echo:", json.dumps(e.choices[0].text), "token_logprobs[:4]:", lps[:4])
        out = subprocess.run([a.arlm, "score", "--model", a.model, "--format", "jsonl", a.text],
                             capture_output=True, text=True, check=True).stdout
        want = [t["logprob"] for t in json.loads(out.splitlines()[0])["tokens"]]
        assert lps[0] is None and lps[1:] == want[1:], (lps, want)
        print(f"echo scoring: {len(want) - 1} log-probs equal to arlm score's; sum {sum(lps[1:]):.6f} nats")

        try:
            client.completions.create(model=name, prompt=a.text, max_tokens=4, temperature=-1)
        except Exception as err:  # openai.BadRequestError
            print("temperature -1:", type(err).__name__, getattr(err, "status_code", None))
        print("OK")
    finally:
        srv.terminate()
        srv.wait(30)


if __name__ == "__main__":
    main()
