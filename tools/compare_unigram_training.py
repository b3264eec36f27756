"""Compares arlm's Unigram training with Python `tokenizers`' UnigramTrainer on the same
settings (WikiText-2 train, vocab 8000, max piece length 16, Metaspace, specials
<|unk|> and <|endoftext|>): vocabulary overlap, and mean tokens per whitespace word on
WikiText-2 test for each (each file encoded by arlm; the HF file's ids in arlm equal the
library's, tests/it/tokenizer_unigram.rs).
Run: /root/.cache/arlm-peers/bin/python tools/compare_unigram_training.py [ARLM_BIN]
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from gen_unigram_fixture import DATA, train  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARLM = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "arlm")


def count_ids(tokenizer, path):
    out = subprocess.run([ARLM, "tokenizer", "encode", "--tokenizer", tokenizer, "--input", path],
                         check=True, capture_output=True, text=True).stdout
    return len(out.split())


def main():
    tmp = tempfile.mkdtemp()
    hf_path, arlm_path = os.path.join(tmp, "hf.json"), os.path.join(tmp, "arlm.json")
    train(8000).save(hf_path)
    subprocess.run([ARLM, "tokenizer", "train", "--kind", "unigram", "--vocab-size", "8000",
                    "--max-piece-length", "16", "--input",
                    os.path.join(DATA, "wikitext-2", "train.txt"), "--out", arlm_path], check=True)
    hf = {p for p, _ in json.load(open(hf_path))["model"]["vocab"]}
    ours = {p for p, _ in json.load(open(arlm_path))["model"]["vocab"]}
    test = os.path.join(DATA, "wikitext-2", "test.txt")
    words = len(open(test, encoding="utf-8").read().split())
    print(f"vocab: hf {len(hf)}, arlm {len(ours)}, shared {len(hf & ours)} "
          f"({100 * len(hf & ours) / len(hf):.1f}% of hf's)")
    for name, path in [("hf", hf_path), ("arlm", arlm_path)]:
        n = count_ids(path, test)
        print(f"{name}: {n} tokens on WT2 test, {n / words:.4f} tokens/word ({words} words)")


if __name__ == "__main__":
    main()
