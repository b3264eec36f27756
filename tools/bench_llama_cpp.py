#!/usr/bin/env python3
"""llama.cpp's side of `arlm bench generate` / `arlm bench eval`: llama-bench on the same
checkpoint, converted to GGUF by llama.cpp's own convert_hf_to_gguf.py.

    PY=$(bash ../shared/tools/peers-venv.sh)
    $PY tools/bench_llama_cpp.py --model target/bench/gpt2-124m-random \
        --llama ~/.cache/arlm-llama --types f32,f16,q8_0 --prompt-len 64 --new-tokens 256

--llama is tools/build_llama_cpp.sh's output directory (bin/llama-bench, src/ with the
converter and gguf-py). The GGUFs are written once under MODEL/gguf/ (the converter wants
`n_ctx` in config.json and a GPT-2 tokenizer beside the weights, so it reads a staging
copy: the weights linked, config.json completed, the tokenizer from the shared GPT-2
files). For each type, two llama-bench runs on --threads threads: prefill of --prompt-len
tokens (pp), 5 repetitions (one short pass is at the mercy of a noisy neighbour: the
median of the repetitions is reported, as arlm's side does), and --new-tokens decode
steps after a context of --prompt-len tokens (tg at that depth), once. The last line of stdout is a JSON list of
{"weights", "setting", "prefill_tokens_per_s", "decode_tokens_per_s"} with setting
"no-sampler" (llama-bench times the model only; it does not sample).

With --score-ids IDS (little-endian u32 token ids, as `arlm bench eval` writes them) it
times scoring instead: the ids decoded to text with the GPT-2 tokenizer, then
llama-perplexity over that text in windows of --ctx tokens; the last line is
{"weights", "tokens", "seconds", "tokens_per_s", "ppl"} from its own report (seconds
per pass times windows; it
re-tokenizes the text and scores the second half of each window, so its NLL is not
arlm's: this row is for speed).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path


def shared_gpt2() -> Path:
    root = Path(os.environ.get("ARLM_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))
    for d in (root / "gpt2", Path("/work/shared/data/gpt2")):
        if (d / "encoder.json").exists():
            return d
    sys.exit("GPT-2 tokenizer files not found (set ARLM_SHARED_DATA)")


def gpt2_tokenizer(g: Path):
    """GPT-2's tokenizer from the shared encoder.json / vocab.bpe. Built from the loaded
    vocabulary and merges: built from the file paths instead it splits llama.cpp's
    pre-tokenizer check text differently, and the converter refuses it."""
    from transformers import GPT2TokenizerFast

    vocab = json.loads((g / "encoder.json").read_text())
    merges = [tuple(line.split()) for line in (g / "vocab.bpe").read_text().split("\n")[1:] if line]
    return GPT2TokenizerFast(vocab=vocab, merges=merges)


def ensure_gguf(model: Path, llama: Path, typ: str) -> Path:
    out = model / "gguf" / f"model-{typ}.gguf"
    if out.exists():
        return out
    stage = model / "gguf" / "hf"
    stage.mkdir(parents=True, exist_ok=True)
    st = stage / "model.safetensors"
    if not st.exists():
        os.symlink((model / "model.safetensors").resolve(), st)
    cfg = json.loads((model / "config.json").read_text())
    cfg.setdefault("n_ctx", cfg.get("n_positions", cfg.get("block_size", 1024)))
    cfg.setdefault("architectures", ["GPT2LMHeadModel"])
    cfg.setdefault("model_type", "gpt2")
    (stage / "config.json").write_text(json.dumps(cfg, indent=1))
    if not (stage / "tokenizer.json").exists():
        gpt2_tokenizer(shared_gpt2()).save_pretrained(stage)
    env = dict(os.environ, PYTHONPATH=str(llama / "src" / "gguf-py"))
    subprocess.run([sys.executable, str(llama / "src" / "convert_hf_to_gguf.py"), str(stage), "--outtype", typ,
                    "--outfile", str(out)], check=True, env=env, stdout=subprocess.DEVNULL, stderr=sys.stderr)
    return out


PREFILL_REPS = 5


def bench(llama: Path, gguf: Path, prompt: int, new: int, threads: int) -> tuple[float, float]:
    def rows(*args: str) -> list[dict]:
        cmd = [str(llama / "bin" / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-o", "json", *args]
        r = subprocess.run(cmd, check=True, capture_output=True, text=True)
        return json.loads(r.stdout)

    pp_rows = rows("-p", str(prompt), "-n", "0", "-r", str(PREFILL_REPS))
    tg_rows = rows("-p", "0", "-n", str(new), "-d", str(prompt), "-r", "1")
    pp = [statistics.median(x["samples_ts"]) for x in pp_rows if x["n_prompt"] == prompt and x["n_gen"] == 0]
    tg = [x["avg_ts"] for x in tg_rows if x["n_gen"] == new and x.get("n_depth", 0) == prompt]
    if not pp or not tg:
        sys.exit(f"unexpected llama-bench output: {pp_rows} {tg_rows}"[:1000])
    return pp[0], tg[0]


def score(llama: Path, gguf: Path, ids_path: Path, ctx: int, threads: int, work: Path) -> dict:
    import re
    import struct

    raw = ids_path.read_bytes()
    ids = list(struct.unpack(f"<{len(raw) // 4}I", raw))
    text = gpt2_tokenizer(shared_gpt2()).decode(ids)
    txt = work / "score.txt"
    txt.write_text(text, errors="replace")
    cmd = [str(llama / "bin" / "llama-perplexity"), "-m", str(gguf), "-f", str(txt), "-c", str(ctx),
           "-b", str(ctx), "-t", str(threads)]
    r = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
    log = r.stdout + r.stderr
    # Its own timing: the seconds of one pass (one window of ctx tokens, all logits),
    # which it measures on the first window; every window is the same size.
    m = re.search(r"([0-9.]+) seconds per pass", log)
    c = re.search(r"perplexity over (\d+) chunks", log)
    p = re.search(r"Final estimate: PPL = ([0-9.]+)", log)
    if r.returncode != 0 or not m or not c:
        sys.exit(f"llama-perplexity failed ({r.returncode}): {log[-800:]}")
    toks = int(c.group(1)) * ctx
    secs = float(m.group(1)) * int(c.group(1))
    return {"weights": gguf.stem.removeprefix("model-"), "tokens": toks, "seconds": secs,
            "tokens_per_s": toks / secs, "ppl": float(p.group(1)) if p else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--llama", default=str(Path.home() / ".cache/arlm-llama"))
    ap.add_argument("--types", default="f32,f16,q8_0")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--score-ids", help="time llama-perplexity on these ids (u32 LE) instead of llama-bench")
    ap.add_argument("--ctx", type=int, default=1024, help="llama-perplexity's window (with --score-ids)")
    a = ap.parse_args()
    llama = Path(a.llama).expanduser()
    if not (llama / "bin" / "llama-bench").exists():
        sys.exit(f"no llama-bench under {llama}/bin: build it with tools/build_llama_cpp.sh")
    if a.score_ids:
        typ = a.types.split(",")[0]
        gguf = ensure_gguf(Path(a.model), llama, typ)
        print(json.dumps(score(llama, gguf, Path(a.score_ids), a.ctx, a.threads, Path(a.score_ids).parent)))
        return
    out = []
    for typ in a.types.split(","):
        gguf = ensure_gguf(Path(a.model), llama, typ)
        pp, tg = bench(llama, gguf, a.prompt_len, a.new_tokens, a.threads)
        out.append({"weights": typ, "setting": "no-sampler", "prefill_tokens_per_s": pp, "decode_tokens_per_s": tg})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
