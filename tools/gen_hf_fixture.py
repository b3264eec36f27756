"""Writes the Hugging Face interop fixtures under tests/fixtures/:

- bpe_corpus.txt: a small deterministic training text;
- arlm_bpe_gpt2.json, arlm_bpe_gpt4.json, arlm_chars.json: tokenizers trained by arlm on it
  (`arlm tokenizer train ...`, binary from $ARLM_BIN or target/debug/arlm);
- hf_bpe_gpt2.json, hf_bpe_gpt4.json: byte-level BPEs trained by Python `tokenizers` on it;
- hf_interop.json: the ids Python `tokenizers` gives for the mixed samples with each file.

tests/it/tokenizer_fixtures.rs checks that arlm loads every file and gives the same ids.
Run: /root/.cache/arlm-peers/bin/python tools/gen_hf_fixture.py
"""
import json
import os
import random
import subprocess
import sys

import tokenizers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

sys.path.insert(0, os.path.dirname(__file__))
from tokenizer_samples import samples  # noqa: E402

GPT4 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
WORDS = ("the of and to in a is that for it as was with be by on not he I this are or his from at which "
         "but have an they you were her she there been one all we their has would when if so no will can "
         "more other its time who may about into than them some could only these two new first also "
         "language model token byte piece merge vocabulary Shakespeare Valkyria chronicles naïve café").split()


def corpus():
    rng = random.Random(7)
    lines = []
    for _ in range(400):
        n = rng.randint(3, 15)
        words = [rng.choice(WORDS[: rng.randint(10, len(WORDS))]) for _ in range(n)]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ",", " 42.", " 1999."]))
    return "\n".join(lines + samples()) + "\n"


def hf_train(path, text, split_gpt4):
    tok = Tokenizer(models.BPE())
    if split_gpt4:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(GPT4), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text], trainer=trainer)
    tok.save(path)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    fx = os.path.join(root, "tests/fixtures")
    arlm = os.environ.get("ARLM_BIN", os.path.join(root, "target/debug/arlm"))
    text = corpus()
    corpus_path = os.path.join(fx, "bpe_corpus.txt")
    with open(corpus_path, "w", encoding="utf-8") as f:
        f.write(text)
    files = {}
    for name, args in [("arlm_bpe_gpt2.json", ["--kind", "bpe", "--vocab-size", "500"]),
                       ("arlm_bpe_gpt4.json", ["--kind", "bpe", "--vocab-size", "500", "--pretokenizer", "gpt4"]),
                       ("arlm_chars.json", ["--kind", "chars"])]:
        subprocess.run([arlm, "tokenizer", "train", *args, "--input", corpus_path,
                        "--out", os.path.join(fx, name)], check=True)
        files[name] = name
    hf_train(os.path.join(fx, "hf_bpe_gpt2.json"), text, False)
    hf_train(os.path.join(fx, "hf_bpe_gpt4.json"), text, True)
    files["hf_bpe_gpt2.json"] = "hf_bpe_gpt2.json"
    files["hf_bpe_gpt4.json"] = "hf_bpe_gpt4.json"
    texts = samples()
    results = {}
    for name in files:
        tok = Tokenizer.from_file(os.path.join(fx, name))
        ids = []
        for t in texts:
            e = tok.encode(t, add_special_tokens=False).ids
            ids.append(e)
            if "chars" not in name:  # byte-level: decoding must give the text back
                assert tok.decode(e, skip_special_tokens=False) == t, (name, t)
        results[name] = ids
    out = os.path.join(fx, "hf_interop.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/gen_hf_fixture.py", "tokenizers": tokenizers.__version__,
                   "texts": texts, "ids": results}, f, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
