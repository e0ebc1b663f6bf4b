#!/usr/bin/env bash
# The lent-GPU check: build the CUDA backend on the device machine, run the CUDA tests (and
# compute-sanitizer where it works), the benchmarks and the CUDA pytest cases; logs go to $OUT.
# Build dependencies the device image lacks (GoogleTest, cJSON, PCRE2) travel unpacked in .device/
# (made by scripts/fetch-device-deps.sh; the device tool carries it with carry: [".device"]).
# Usage: gpu-check.sh [all|test|bench]  (default all; on a warm machine the build in /tmp/lmf-build is
# reused, so "test" and "bench" can be two calls that each fit the per-call limit).
set -u
WHAT=${1:-all}
OUT=${OUT:-/tmp/lmf-out}
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS="$ROOT/.device/usr"
export LD_LIBRARY_PATH="$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
B=/tmp/lmf-build
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

{ nvidia-smi; nvcc --version; cmake --version; python3 -c 'import torch; print("torch", torch.__version__)'; } \
  > "$OUT/machine.txt" 2>&1
log "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"

t0=$(date +%s)
cmake -S "$ROOT" -B "$B" -DCMAKE_BUILD_TYPE=Release -DLMF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$DEPS" > "$OUT/build.log" 2>&1 &&
  cmake --build "$B" -j16 >> "$OUT/build.log" 2>&1
rc=$?
log "build rc=$rc in $(( $(date +%s) - t0 ))s"
[ $rc -eq 0 ] || { tail -40 "$OUT/build.log"; exit 1; }

if [ "$WHAT" != bench ]; then
  t0=$(date +%s)
  ctest --test-dir "$B" --output-on-failure -j8 > "$OUT/ctest.log" 2>&1
  log "ctest (all labels) rc=$? in $(( $(date +%s) - t0 ))s: $(grep -E 'tests passed|tests failed' "$OUT/ctest.log")"
  grep -E "\(Failed\)|\(Skipped\)|Not Run" "$OUT/ctest.log" | head -20 | tee -a "$OUT/summary.txt"

  # compute-sanitizer memcheck over the CUDA test binary (small cases only: it is slow).
  cuda_bin="$B/tests/lmfuse_cuda_tests"
  if [ -x "$cuda_bin" ] && command -v compute-sanitizer > /dev/null; then
    t0=$(date +%s)
    timeout 90 compute-sanitizer --tool memcheck --error-exitcode 9 "$cuda_bin" \
      --gtest_filter="${LMF_SANITIZER_FILTER:--*2e31*}" > "$OUT/sanitizer.log" 2>&1
    log "compute-sanitizer memcheck rc=$? in $(( $(date +%s) - t0 ))s: $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
    t0=$(date +%s)
    timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$cuda_bin" \
      --gtest_filter='Cuda.PassesMatchCpu:Cuda.TrainStepsMatchCpu:DyntokCuda.SpecVectorsMatchCpu:LogitsCuda.*' \
      > "$OUT/racecheck.log" 2>&1
    log "compute-sanitizer racecheck rc=$? in $(( $(date +%s) - t0 ))s: $(grep -E 'ERROR SUMMARY' "$OUT/racecheck.log" | tail -1)"
fi

t0=$(date +%s)
LMFUSE_LIBRARY="$B/host/liblmfuse.so" PYTHONPATH="$ROOT/python_bindings" \
  timeout 120 python3 -m pytest -q -x "$ROOT/tests/python" > "$OUT/pytest.log" 2>&1
log "pytest rc=$? in $(( $(date +%s) - t0 ))s: $(tail -1 "$OUT/pytest.log")"
fi

if [ "$WHAT" != test ]; then
  t0=$(date +%s)
  LMFUSE_PYTHON=python3 "$B/bench/lmfuse-bench" mezo --repeats 20 > "$OUT/bench-mezo.log" 2>&1
  log "bench rc=$? in $(( $(date +%s) - t0 ))s"
  sed -n '/MeZO passes/,/^extra/p' "$OUT/bench-mezo.log" | tee -a "$OUT/summary.txt"

  for fam in dyntok hypernet logits; do
    t0=$(date +%s)
    LMFUSE_PYTHON=python3 timeout 240 "$B/bench/lmfuse-bench" $fam --repeats 20 > "$OUT/bench-$fam.log" 2>&1
    log "bench $fam rc=$? in $(( $(date +%s) - t0 ))s"
  done
  grep -E "us per merge" "$OUT/bench-dyntok.log" | tee -a "$OUT/summary.txt"
fi
