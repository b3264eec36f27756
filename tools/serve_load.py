#!/usr/bin/env python3
"""Load run for `arlm serve`: N concurrent clients stream T tokens each (loopback only).

Writes (once) a GPT-2 124M-shaped model with random weights and the GPT-2 tokenizer
(from /work/shared/data/gpt2 or $ARLM_SHARED_DATA/gpt2) to --dir, starts
`arlm serve --port 0` on 127.0.0.1, and for each client count runs one round: every
client sends a streaming completion (max_tokens T, end-of-text banned so each gets T
tokens) at the same moment. Per round: aggregate generated tokens / round wall time,
time to first token and inter-token gaps (p50/p99, client side), errors by status;
the server's peak RSS (VmHWM) at the end. Every loop is bounded in count and time.
With --llama DIR (tools/build_llama_cpp.sh's output) llama.cpp's llama-server runs too,
on the same weights (converted to GGUF f32 by llama.cpp's convert_hf_to_gguf.py), one
slot per concurrent stream (-np --max-batch); its rounds alternate with arlm's, --reps
times per client count, and the table gives per-engine medians.

    PY=$(bash ../shared/tools/peers-venv.sh)
    $PY tools/serve_load.py --arlm target/release/arlm --clients 1,4,16,50 --tokens 128
"""
import argparse
import http.client
import json
import statistics
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path


def write_tokenizer(d: Path, data: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    bpe = models.BPE.from_file(str(data / "encoder.json"), str(data / "vocab.bpe"))
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(d / "tokenizer.json"))


def ensure_model(d: Path, data: Path):
    if (d / "model.safetensors").exists() and (d / "tokenizer.json").exists():
        return
    if (d / "model.safetensors").exists():
        write_tokenizer(d, data)
        return
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1234)
    model = GPT2LMHeadModel(GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257))
    model.save_pretrained(d, safe_serialization=True)
    write_tokenizer(d, data)


def start_server(a, data, llama):
    """Starts arlm serve (or llama-server with --llama) on an ephemeral/free port; returns (proc, port)."""
    if a.llama:
        import socket

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_llama_cpp import ensure_gguf

        gguf = ensure_gguf(Path(a.dir), Path(a.llama).expanduser(), "f32")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # One slot per concurrent stream, each with room for the prompt and the tokens.
        cmd = [str(Path(a.llama) / "bin" / "llama-server"), "-m", str(gguf), "--host", "127.0.0.1",
               "--port", str(port), "-t", str(a.threads), "-np", str(a.max_batch),
               "-c", str(a.max_batch * 256), "--no-webui"]
        srv = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
        t = time.time()
        while time.time() - t < 300:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    return srv, port
            except OSError:
                pass
            time.sleep(0.5)
        srv.kill()
        sys.exit("llama-server did not start")
    srv = subprocess.Popen([a.arlm, "serve", "--model", a.dir, "--port", "0", "--max-batch", str(a.max_batch),
                            "--weights", a.weights, "--threads", str(a.threads)], stderr=subprocess.PIPE, text=True)
    port = None
    t = time.time()
    while port is None and time.time() - t < 300:
        line = srv.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
    if port is None:
        srv.kill()
        sys.exit("the server did not start")
    threading.Thread(target=lambda: [None for _ in srv.stderr], daemon=True).start()
    return srv, port


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def client(port, prompt, tokens, out, start_evt, timeout_s):
    start_evt.wait()
    t0 = time.perf_counter()
    rec = {"status": None, "ttft": None, "gaps": [], "tokens": 0}
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
        body = json.dumps({"prompt": prompt, "max_tokens": tokens, "stream": True, "temperature": 1.0,
                           "seed": 1, "logit_bias": {"50256": -100}})
        c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        r = c.getresponse()
        rec["status"] = r.status
        if r.status == 200:
            last = None
            for raw in r:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                ev = json.loads(line[6:])
                if not ev.get("choices") or ev["choices"][0].get("finish_reason"):
                    continue
                now = time.perf_counter()
                if last is None:
                    rec["ttft"] = now - t0
                else:
                    rec["gaps"].append(now - last)
                last = now
                rec["tokens"] += 1
        else:
            r.read()
        c.close()
    except Exception as e:  # a failed client is counted, not fatal
        rec["status"] = f"error {type(e).__name__}"
    out.append(rec)


def one_round(port, n, prompt, tokens, timeout_s):
    out, evt = [], threading.Event()
    ths = [threading.Thread(target=client, args=(port, prompt, tokens, out, evt, timeout_s)) for _ in range(n)]
    for th in ths:
        th.start()
    t0 = time.perf_counter()
    evt.set()
    for th in ths:
        th.join(timeout_s)
    wall = time.perf_counter() - t0
    toks = sum(r["tokens"] for r in out)
    ttft = [r["ttft"] for r in out if r["ttft"] is not None]
    gaps = [g for r in out for g in r["gaps"]]
    statuses = {}
    for r in out:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {"clients": n, "tokens": toks, "wall_s": round(wall, 2), "agg_tok_s": round(toks / wall, 2),
            "ttft_p50_s": round(pct(ttft, 50), 3), "ttft_p99_s": round(pct(ttft, 99), 3),
            "itl_p50_ms": round(1000 * pct(gaps, 50), 1), "itl_p99_ms": round(1000 * pct(gaps, 99), 1),
            "statuses": statuses}


def peak_rss_mib(pid):
    hwm = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return round(int(hwm.group(1)) / 1024, 1) if hwm else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arlm", default="target/release/arlm")
    ap.add_argument("--dir", default="target/bench/gpt2-124m-serve")
    ap.add_argument("--clients", default="1,4,16,50")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--weights", default="f32")
    ap.add_argument("--round-timeout", type=float, default=900.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1, help="rounds per client count (medians reported)")
    ap.add_argument("--llama", help="also llama-server from this tools/build_llama_cpp.sh output directory, on "
                    "the same weights converted to GGUF f32; its rounds alternate with arlm's")
    a = ap.parse_args()
    data = Path(os.environ.get("ARLM_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data")) / "gpt2"
    if not (data / "encoder.json").exists():
        data = Path("/work/shared/data/gpt2")
    ensure_model(Path(a.dir), data)
    servers = [("arlm",) + start_server(a, data, llama=False)]
    if a.llama:
        servers.append(("llama.cpp",) + start_server(a, data, llama=True))
    prompt = "The quick brown fox jumps over the lazy dog. " * 2
    med = {}
    try:
        for n in [int(x) for x in a.clients.split(",")]:
            for rep in range(a.reps):
                for name, _, port in servers:
                    row = dict(engine=name, rep=rep + 1, **one_round(port, n, prompt, a.tokens, a.round_timeout))
                    print(json.dumps(row), flush=True)
                    med.setdefault((name, n), []).append(row)
        for name, srv, _ in servers:
            print(json.dumps({"engine": name, "server_peak_rss_mib": peak_rss_mib(srv.pid)}))
        print(f"medians over {a.reps} rounds per client count (engines alternate round by round)")
        print("| engine | clients | aggregate tok/s | vs 1 stream | TTFT p50 / p99 s | inter-token p50 / p99 ms | statuses |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for name, _, _ in servers:
            base = None
            for (e, n), rows in med.items():
                if e != name:
                    continue
                m = lambda k: statistics.median(r[k] for r in rows)
                tps = m("agg_tok_s")
                if n == 1:
                    base = tps
                vs = f"{tps / base:.2f}x" if base else "-"
                st = {}
                for r in rows:
                    for k, v in r["statuses"].items():
                        st[k] = st.get(k, 0) + v
                print(f"| {name} | {n} | {tps:.1f} | {vs} | {m('ttft_p50_s'):.2f} / {m('ttft_p99_s'):.2f} | "
                      f"{m('itl_p50_ms'):.1f} / {m('itl_p99_ms'):.1f} | {st} |")
    finally:
        for _, srv, _ in servers:
            srv.terminate()
            try:
                srv.wait(60)
            except subprocess.TimeoutExpired:
                srv.kill()


if __name__ == "__main__":
    main()
