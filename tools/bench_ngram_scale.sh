#!/usr/bin/env bash
# Kneser-Ney estimation at scale: synthetic corpora (`arlm corpus synth`, the embedded
# source) of each size in SIZES, a 5-gram fitted by `arlm ngram fit --memory $MEMORY`
# (and by KenLM's lmplz -S $MEMORY when $LMPLZ names it, alternating), reporting wall
# time, peak RSS (/usr/bin/time -v) and the test perplexity of each model (scored by
# `arlm ngram ppl`, lmplz's through its ARPA file). The synthetic source has a few hundred
# words, too few for the unigram discounts to be estimated: both tools use the fixed
# fallback discounts (0.5 1 1.5) for the orders where estimation fails.
#
# Usage: tools/bench_ngram_scale.sh [SIZE_BYTES...]     (default: 10000000 100000000)
# Env:   ARLM (default target/release/arlm), LMPLZ (path to lmplz; optional),
#        MEMORY (default 1G), ORDER (default 5), WORK (default /tmp/arlm-ngram-scale).
set -euo pipefail
ARLM=${ARLM:-target/release/arlm}
MEMORY=${MEMORY:-1G}
ORDER=${ORDER:-5}
WORK=${WORK:-/tmp/arlm-ngram-scale}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000000 100000000)
mkdir -p "$WORK"

# "wall_s peak_MB" of a command run under /usr/bin/time -v (its output to $WORK/last.log).
timed() {
  /usr/bin/time -v "$@" >"$WORK/last.log" 2>"$WORK/time.log" || {
    cat "$WORK/last.log" "$WORK/time.log" >&2
    return 1
  }
  awk -F': ' '/Elapsed \(wall clock\)/ {
      n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; wall = s }
    /Maximum resident set size/ { rss = $2 / 1024 }
    END { printf "%.2f %.0f\n", wall, rss }' "$WORK/time.log"
}

ppl_of() { # model test
  "$ARLM" ngram ppl --model "$1" --input "$2" | sed -n 's/.*perplexity \([0-9.]*\).*/\1/p'
}

echo "# $(lscpu | grep 'Model name' | sed 's/  */ /g'); $(nproc) cores; load: $(uptime | sed 's/.*load average: //')"
printf '%-12s %-6s %9s %9s %12s\n' bytes tool wall_s peak_MB test_ppl
for size in "${SIZES[@]}"; do
  train="$WORK/synth-$size.train.txt"
  test="$WORK/synth-$size.test.txt"
  [ -s "$train" ] || "$ARLM" corpus synth --bytes "$size" --seed 1 --out "$train" >/dev/null
  [ -s "$test" ] || "$ARLM" corpus synth --bytes 1000000 --seed 2 --out "$test" >/dev/null
  out="$WORK/arlm-$size"
  rm -rf "$out"
  read -r wall rss < <(timed nice -n 10 "$ARLM" ngram fit --order "$ORDER" --memory "$MEMORY" \
    --input "$train" --out "$out" --quiet --discount-fallback "0.5 1 1.5")
  printf '%-12s %-6s %9s %9s %12s\n' "$size" arlm "$wall" "$rss" "$(ppl_of "$out" "$test")"
  if [ -n "${LMPLZ:-}" ]; then
    arpa="$WORK/lmplz-$size.arpa"
    read -r wall rss < <(timed nice -n 10 "$LMPLZ" -o "$ORDER" -S "$MEMORY" -T "$WORK" \
      --discount_fallback --text "$train" --arpa "$arpa")
    printf '%-12s %-6s %9s %9s %12s\n' "$size" lmplz "$wall" "$rss" "$(ppl_of "$arpa" "$test")"
    rm -f "$arpa"
  fi
  rm -rf "$out"
done
echo "# load after: $(uptime | sed 's/.*load average: //')"
