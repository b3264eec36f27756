#!/usr/bin/env bash
# Builds llama.cpp's `llama-bench`, `llama-perplexity` and `llama-server` from the
# `llama-cpp-python` source distribution on the package index (it vendors llama.cpp,
# with `convert_hf_to_gguf.py` and `gguf-py`), for the benches that put llama.cpp beside
# arlm. CPU only, tuned for this machine (-DGGML_NATIVE=ON), no curl.
#
# Usage: tools/build_llama_cpp.sh [OUT_DIR]   (default: $HOME/.cache/arlm-llama)
# Prints OUT_DIR, which then holds bin/llama-{bench,perplexity,server} and src/ (the
# vendored llama.cpp tree, for convert_hf_to_gguf.py). Needs g++; takes cmake from PATH,
# else installs the `cmake` wheel into the peers python. About 5 minutes on 2 cores.
set -euo pipefail
out=${1:-$HOME/.cache/arlm-llama}
mkdir -p "$out/bin"
if [[ -x $out/bin/llama-bench && -x $out/bin/llama-server && -x $out/bin/llama-perplexity ]]; then
  echo "$out"
  exit 0
fi
py=$(bash /work/shared/tools/peers-venv.sh 2>/dev/null || command -v python3)
cmake_bin=$(command -v cmake || true)
if [[ -z $cmake_bin ]]; then
  "$py" -m pip install --quiet cmake >&2
  cmake_bin=$(dirname "$py")/cmake
fi
if [[ ! -d $out/src ]]; then
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  "$py" -m pip download --quiet --no-deps --no-binary llama-cpp-python llama-cpp-python -d "$dl" >&2
  tar xzf "$dl"/llama_cpp_python-*.tar.gz -C "$dl"
  mv "$dl"/llama_cpp_python-*/vendor/llama.cpp "$out/src"
fi
"$cmake_bin" -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=ON >&2
"$cmake_bin" --build "$out/build" -j 2 --target llama-bench llama-perplexity llama-server >&2
for b in llama-bench llama-perplexity llama-server; do
  cp "$out/build/bin/$b" "$out/bin/"
done
echo "$out"
