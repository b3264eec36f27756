"""Writes tests/fixtures/gpt2_tiktoken.json: tiktoken's `gpt2` ids for the mixed samples.

Run: /root/.cache/arlm-peers/bin/python tools/gen_tiktoken_fixture.py [GPT2_DIR]
GPT2_DIR holds GPT-2's encoder.json + vocab.bpe (default ../shared/data/gpt2); tiktoken builds
its `gpt2` encoding from exactly these files (no network needed).
"""
import json
import os
import sys

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext import openai_public

sys.path.insert(0, os.path.dirname(__file__))
from tokenizer_samples import samples  # noqa: E402


def gpt2_encoding(gpt2_dir):
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=os.path.join(gpt2_dir, "vocab.bpe"),
        encoder_json_file=os.path.join(gpt2_dir, "encoder.json"),
    )
    spec = openai_public.ENCODING_CONSTRUCTORS["gpt2"]
    # Same pattern and specials as tiktoken's registered gpt2 encoding.
    import inspect
    assert "r50k_pat_str" in inspect.getsource(spec)
    return tiktoken.Encoding(
        "gpt2", pat_str=openai_public.r50k_pat_str, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256}, explicit_n_vocab=50257,
    )


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gpt2_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "../shared/data/gpt2")
    enc = gpt2_encoding(gpt2_dir)
    cases = [{"text": t, "ids": enc.encode_ordinary(t)} for t in samples()]
    out = os.path.join(root, "tests/fixtures/gpt2_tiktoken.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"generator": "tools/gen_tiktoken_fixture.py", "tiktoken": tiktoken.__version__,
                   "cases": cases}, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {out}: {len(cases)} cases, {sum(len(c['ids']) for c in cases)} ids")


if __name__ == "__main__":
    main()
