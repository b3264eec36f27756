#!/usr/bin/env bash
# Builds KenLM's `build_binary` and `query` (no Boost, no CMake needed) from the `kenlm`
# source distribution on the package index, the same sources the `kenlm` Python module is
# compiled from, so the probing binaries it writes load in that module.
#
# Usage: tools/build_kenlm_build_binary.sh [OUT_DIR]   (default: $HOME/.cache/arlm-kenlm)
# Prints the directory holding build_binary and query. Needs g++ and the zlib, bz2, lzma
# headers; fetches the sdist with the peers python (`pip download`).
set -euo pipefail
out=${1:-$HOME/.cache/arlm-kenlm}
mkdir -p "$out"
if [[ -x $out/build_binary && -x $out/query ]]; then echo "$out"; exit 0; fi
py=$(bash /work/shared/tools/peers-venv.sh 2>/dev/null || command -v python3)
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
"$py" -m pip download --quiet --no-deps --no-binary kenlm kenlm -d "$src" >&2
tar xzf "$src"/kenlm-*.tar.gz -C "$src"
cd "$src"/kenlm-*/
flags=(-w -O3 -DNDEBUG -DKENLM_MAX_ORDER=6 -std=c++11 -DHAVE_CLOCKGETTIME -DHAVE_ZLIB -DHAVE_BZLIB -DHAVE_XZLIB -I.)
mapfile -t lib < <(ls util/*.cc lm/*.cc util/double-conversion/*.cc | grep -v -e 'main\.cc$' -e 'test\.cc$')
objs=()
for f in "${lib[@]}"; do
  o=obj/${f//\//_}.o
  mkdir -p obj
  g++ "${flags[@]}" -c "$f" -o "$o" &
  objs+=("$o")
  # Two compiles at a time (the machine is shared).
  if (( ${#objs[@]} % 2 == 0 )); then wait; fi
done
wait
for prog in build_binary query; do
  g++ "${flags[@]}" "lm/${prog}_main.cc" "${objs[@]}" -o "$out/$prog" -lz -lbz2 -llzma -lrt -lpthread
done
echo "$out"
