"""Writes the Unigram parity fixture under tests/fixtures/:

- hf_unigram_wt2.json: a Unigram tokenizer.json trained by Python `tokenizers`
  (UnigramTrainer, vocab 8000, Metaspace pre-tokenizer and decoder, byte fallback off,
  specials <|unk|> and <|endoftext|>: WikiText uses "<unk>" as text, and arlm treats
  special-token strings in text as text)
  on WikiText-2 train (/work/shared/data/wikitext-2/train.txt or $ARLM_SHARED_DATA);
- hf_unigram_wt2_ids.json: for WikiText-2 test encoded as one text: the number of ids,
  the SHA-256 of the ids (little-endian u32 each), the first 2000 ids, and the ids of
  every 1000th line (a sample to show where a mismatch starts).

tests/it/tokenizer_unigram.rs loads the tokenizer in arlm and checks that the ids of all of
WikiText-2 test hash the same (SKIPPED when the data is absent).
Run: /root/.cache/arlm-peers/bin/python tools/gen_unigram_fixture.py
Also prints the library's mean tokens per word on WT2 test and the vocabulary, for
comparing arlm's own Unigram training (tools/compare_unigram_training.sh).
"""
import hashlib
import json
import os
import struct
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("ARLM_SHARED_DATA", os.path.join(ROOT, "..", "shared", "data"))
FIX = os.path.join(ROOT, "tests", "fixtures")


def train(vocab_size, max_piece_length=16):
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|unk|>", "<|endoftext|>"],
        unk_token="<|unk|>",
        max_piece_length=max_piece_length,
        show_progress=False,
    )
    tok.train([os.path.join(DATA, "wikitext-2", "train.txt")], trainer)
    return tok


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else FIX
    tok = train(8000)
    tok.save(os.path.join(out, "hf_unigram_wt2.json"))
    text = open(os.path.join(DATA, "wikitext-2", "test.txt"), encoding="utf-8").read()
    ids = tok.encode(text).ids
    digest = hashlib.sha256(b"".join(struct.pack("<I", i) for i in ids)).hexdigest()
    lines = text.split("\n")
    sample = [{"line": i, "ids": tok.encode(lines[i]).ids} for i in range(0, len(lines), 1000)]
    fixture = {"n_ids": len(ids), "sha256_u32le": digest, "head": ids[:2000], "lines": sample}
    with open(os.path.join(out, "hf_unigram_wt2_ids.json"), "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    words = len(text.split())
    print(f"hf: {len(ids)} ids, {words} words, {len(ids) / words:.4f} tokens/word, sha256 {digest}")


if __name__ == "__main__":
    main()
