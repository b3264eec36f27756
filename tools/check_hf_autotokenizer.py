"""Checks that transformers' AutoTokenizer loads an arlm run directory's tokenizer exactly.

For every tokenizer kind arlm writes (bytes, chars, byte-level BPE, words), this trains the
tokenizer with arlm, trains a tiny GPT on it for a few steps (so the directory is a real run
directory, with config.json `model_type: gpt2`), then compares
`AutoTokenizer.from_pretrained(run_dir)` with `arlm tokenizer encode` on sample texts, and
checks that decoding the ids gives the text back.

Without the tokenizer_config.json arlm writes, transformers picks GPT2TokenizerFast from
config.json's model_type and gives other ids for a chars vocabulary (the space dropped).

Run: PY=$(bash ../shared/tools/peers-venv.sh); cargo build --release; \
     "$PY" tools/check_hf_autotokenizer.py [--arlm target/release/arlm] [--text FILE]
Exits non-zero on any mismatch.
"""
import argparse
import os
import subprocess
import sys
import tempfile

from transformers import AutoTokenizer

SAMPLES = [
    "ROMEO: hi",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    "  two  spaces and a tab\there ",
    "the king is dead , long live the king",
]


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arlm", default="target/release/arlm")
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--text", default=os.path.join(here, "..", "..", "shared", "data", "tinyshakespeare.txt"))
    args = ap.parse_args()
    arlm = os.path.abspath(args.arlm)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "train.txt")
        with open(args.text, encoding="utf-8") as f:
            body = f.read()[:200_000]
        with open(text, "w", encoding="utf-8") as f:
            f.write(body)
        kinds = {
            "bytes": ["--kind", "bytes"],
            "chars": ["--kind", "chars"],
            "bpe": ["--kind", "bpe", "--vocab-size", "400"],
            "words": ["--kind", "words"],
        }
        for kind, flags in kinds.items():
            tok = os.path.join(tmp, f"{kind}.json")
            run([arlm, "tokenizer", "train", *flags, "--input", text, "--out", tok])
            data = os.path.join(tmp, f"{kind}-data")
            run([arlm, "prepare", "--tokenizer", tok, "--input", text, "--out", data])
            rundir = os.path.join(tmp, f"{kind}-run")
            run([arlm, "train", "--preset", "tiny", "--data", data, "--steps", "2", "--eval-every", "1",
                 "--block-size", "16", "--out", rundir, "--quiet"])
            hf = AutoTokenizer.from_pretrained(rundir)
            for s in SAMPLES:
                r = subprocess.run([arlm, "tokenizer", "encode", "--tokenizer",
                                    os.path.join(rundir, "tokenizer.json")],
                                   input=s, capture_output=True, text=True)
                if r.returncode != 0:
                    print(f"{kind:6} skipped (not in this vocabulary: {r.stderr.strip()}): {s!r}")
                    continue
                want = [int(x) for x in r.stdout.split()]
                if kind == "words":
                    # arlm's words tokenizer ends every line with </s> (KenLM's sentence
                    # convention); HF's WordLevel has no notion of lines, so compare per line
                    # with that token appended.
                    got = [i for line in s.split("\n")
                           for i in hf.encode(line, add_special_tokens=False) + [hf.eos_token_id]]
                else:
                    got = hf.encode(s, add_special_tokens=False)
                ok = got == want
                back = hf.decode(got)
                note = "" if back == s or kind == "words" else f" (decodes to {back!r})"
                print(f"{kind:6} {type(hf).__name__:24} {'same ids' if ok else 'DIFFERENT'}{note}: {s!r}")
                if not ok:
                    print(f"    arlm {want}\n    hf   {got}")
                    failures += 1
    print("all kinds agree" if failures == 0 else f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
