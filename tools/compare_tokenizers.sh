#!/usr/bin/env bash
# Tokenization-dependent perplexity: the same small GPT recipe trained on the same text
# under five tokenizers (bytes, chars, BPE 1k, BPE 8k, Unigram 8k), each evaluated on the
# same held-out text. Prints tokens, NLL/token, token perplexity, bits per byte and word
# perplexity per tokenizer. Only arlm commands; the table is in docs/parts/eval.md.
#
# Usage: bash tools/compare_tokenizers.sh [TEXT] [STEPS]
#   env: ARLM (binary, default target/release/arlm), OUT (work dir, default /tmp/arlm-tokcompare)
set -euo pipefail
ARLM=${ARLM:-target/release/arlm}
TEXT=${1:-../shared/data/tinyshakespeare.txt}
STEPS=${2:-300}
OUT=${OUT:-/tmp/arlm-tokcompare}
mkdir -p "$OUT"
# 90% train / 10% val by lines (the tokenizers learn from the train part only).
n=$(wc -l < "$TEXT"); cut=$((n * 9 / 10))
head -n "$cut" "$TEXT" > "$OUT/train.txt"
tail -n +"$((cut + 1))" "$TEXT" > "$OUT/val.txt"

tok() { # name, then `arlm tokenizer train` flags (none: the bytes tokenizer)
  local name=$1; shift
  if [ "$name" = bytes ]; then echo bytes; return; fi
  "$ARLM" tokenizer train "$@" --input "$OUT/train.txt" --out "$OUT/$name.json" >&2
  echo "$OUT/$name.json"
}

printf '%-10s %6s %9s %10s %12s %12s %13s\n' tokenizer vocab "val tok" "NLL/tok" "token ppl" "bits/byte" "word ppl"
for spec in "bytes" "chars --kind chars" "bpe1k --kind bpe --vocab-size 1000" \
            "bpe8k --kind bpe --vocab-size 8000" "unigram8k --kind unigram --vocab-size 8000"; do
  set -- $spec
  name=$1; shift
  t=$(tok "$name" "$@")
  "$ARLM" prepare --tokenizer "$t" --input "$OUT/train.txt" --val "$OUT/val.txt" --out "$OUT/data-$name" >&2
  "$ARLM" train --data "$OUT/data-$name" --steps "$STEPS" --out "$OUT/run-$name" >&2
  "$ARLM" eval --model "$OUT/run-$name" --data "$OUT/val.txt" --resamples 0 --json > "$OUT/eval-$name.json"
  python3 - "$OUT/eval-$name.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m, t = r["metrics"], r["totals"]
print(f"{sys.argv[2]:<10} {r['protocol']['vocab_size']:>6} {t['tokens']:>9} "
      f"{m['nll_per_token_nats']:>10.4f} {m['token_perplexity']:>12.3f} "
      f"{m['bits_per_byte']:>12.4f} {m['word_perplexity']:>13.2f}")
PY
done
