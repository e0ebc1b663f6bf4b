#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then builds and tests
#   1. the default build (the CUDA backend too when nvcc is found; its GPU cases skip without a GPU),
#   2. a CPU-only build (LMF_CUDA=OFF),
#   3. the CPU suite under AddressSanitizer + UndefinedBehaviorSanitizer, with the CUDA logits kernels
#      on the CPU emulator of CUDA (tests/emu, label cuda-emu; also in 1) under them too,
#   4. the emulated kernels under ThreadSanitizer (races between the warps of a block), at 4 SMs.
# The Python bindings' pytest suite runs inside 1 and 2 (CTest label `python`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
jobs=$(nproc)
run() { echo "+ $*"; "$@"; }

run cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
run cmake --build build -j"$jobs"
run ctest --test-dir build --output-on-failure -j"$jobs"

run cmake -S . -B build-cpu -DCMAKE_BUILD_TYPE=Release -DLMF_CUDA=OFF
run cmake --build build-cpu -j"$jobs"
run ctest --test-dir build-cpu --output-on-failure -j"$jobs"

# The emulator needs the CUDA headers: where the toolkit is installed.
emu=OFF
if command -v nvcc > /dev/null || [ -x /usr/local/cuda/bin/nvcc ]; then emu=ON; fi
run cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLMF_CUDA=OFF -DLMF_SANITIZE=ON \
  -DLMF_BUILD_BENCH=OFF -DLMF_CUDA_EMU=$emu
run cmake --build build-asan -j"$jobs"
# The emulated cases too (3x slower here), but not the reverse-order entries nor the graph case at 4 SMs.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run ctest --test-dir build-asan --output-on-failure -j"$jobs" -L 'cpu|cuda-emu' -LE python \
  -E 'reverse|GraphReplayMatchesCpu\.sms4'

# Races between the warps of a block (tests/emu/README.md, "Races"): the emulator's rules tests and the
# logits cases at 4 SMs. OpenMP on one thread: TSan cannot see its synchronisation.
if [ "$emu" = ON ]; then
  run cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLMF_CUDA=OFF -DLMF_CUDA_EMU=ON \
    -DLMF_EMU_TSAN=ON -DLMF_BUILD_BENCH=OFF
  run cmake --build build-tsan -j"$jobs" --target lmfuse_emu_tests lmfuse_emu_rules
  OMP_NUM_THREADS=1 run ctest --test-dir build-tsan --output-on-failure -j"$jobs" -L cuda-emu \
    -R '^CudaEmu|\.sms4$'
fi
