#!/usr/bin/env bash
# The main job: installs what is missing, builds, and runs lmfuse-bench on the default backend (the GPU
# if there is one, else the CPU), with the same-run floors and PyTorch peers. Extra arguments go to
# lmfuse-bench (e.g. `scripts/bench.sh mezo --numel 2e7`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target lmfuse-bench
exec build/bench/lmfuse-bench "${@:-all}"
