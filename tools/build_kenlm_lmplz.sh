#!/usr/bin/env bash
# Builds KenLM's estimator `lmplz` (lm/builder, util/stream) from the `kenlm` source
# distribution on the package index, with g++ directly (no CMake), for the side-by-side
# runs of tools/bench_ngram_scale.sh.
#
# Usage: tools/build_kenlm_lmplz.sh [OUT_DIR]   (default: $HOME/.cache/arlm-kenlm)
# Prints the directory holding lmplz. Needs g++, the zlib, bz2 and lzma headers and Boost
# (apt-get install libboost-program-options-dev libboost-thread-dev libboost-system-dev);
# fetches the sdist with the peers python (`pip download`). One compile at a time
# (JOBS=N for more): the machine is shared.
set -euo pipefail
out=${1:-$HOME/.cache/arlm-kenlm}
jobs=${JOBS:-1}
mkdir -p "$out"
if [[ -x $out/lmplz ]]; then echo "$out"; exit 0; fi
py=$(bash /work/shared/tools/peers-venv.sh 2>/dev/null || command -v python3)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary kenlm kenlm -d "$src" >&2
tar xzf "$src"/kenlm-*.tar.gz -C "$src"
cd "$src"/kenlm-*/
flags=(-w -O3 -DNDEBUG -DKENLM_MAX_ORDER=6 -std=c++11 -DHAVE_CLOCKGETTIME -DHAVE_ZLIB -DHAVE_BZLIB -DHAVE_XZLIB -I.)
mapfile -t lib < <(ls util/*.cc util/stream/*.cc lm/*.cc lm/common/*.cc lm/builder/*.cc \
  util/double-conversion/*.cc | grep -v -e 'main\.cc$' -e 'test\.cc$')
objs=()
mkdir -p obj
for f in "${lib[@]}"; do
  o=obj/${f//\//_}.o
  nice -n 10 g++ "${flags[@]}" -c "$f" -o "$o" &
  objs+=("$o")
  if (( ${#objs[@]} % jobs == 0 )); then wait; fi
done
wait
nice -n 10 g++ "${flags[@]}" lm/builder/lmplz_main.cc "${objs[@]}" -o "$out/lmplz" \
  -lboost_program_options -lboost_thread -lboost_system -lz -lbz2 -llzma -lrt -lpthread
echo "$out"
