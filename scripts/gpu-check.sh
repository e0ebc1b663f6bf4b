#!/usr/bin/env bash
# The lent-GPU check: build the CUDA backend on the device machine, run the CUDA-vs-CPU tests, the
# benchmarks, the CUDA pytest cases and compute-sanitizer, most important first, inside a time budget;
# logs go to $OUT (seven files: the device tool returns at most eight).
# Build dependencies the device image lacks (GoogleTest, cJSON, PCRE2) travel unpacked in .device/
# (made by scripts/fetch-device-deps.sh; the device tool carries it with carry: [".device"]).
# Usage: gpu-check.sh [all|test|bench|paths|flat] [seconds]   (default all, 480 s: stages that would not fit
# in what is left are skipped and say so in summary.txt). LMF_GTEST_FILTER narrows the CUDA gtests.
# paths: the short check of the library's choice of logits path (about 150 s with the build): the
# logits gtests as a user runs them (no path variable set), then each path timed at B = 1, 8, 64 and
# 256 (V = 128256) beside that choice, and ncu on the bar's case (B = 256, K = 3, bf16).
# flat: the check of list mode's flat rows (logits_flat.cuh; about 300 s with the build).
set -u
WHAT=${1:-all}
BUDGET=${2:-480}
OUT=${OUT:-/tmp/lmf-out}
mkdir -p "$OUT"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEPS="$ROOT/.device/usr"
export LD_LIBRARY_PATH="$DEPS/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
B=/tmp/lmf-build
# The logits paths, forced (docs/logits.md, "Which path a step takes"; unset: the library's choice).
sep=(env LMF_LOGITS_LIST=0 LMF_LOGITS_COOP=0)
lst=(env LMF_LOGITS_LIST=1 LMF_LOGITS_COOP=0)
END=$(( $(date +%s) + BUDGET ))
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
left() { echo $(( END - $(date +%s) )); }

# stage NAME MAX_SECONDS LOGFILE CMD...: runs CMD under min(MAX, time left), appending to LOGFILE.
stage() {
  local name=$1 max=$2 logf=$3
  shift 3
  local l
  l=$(left)
  local t=$(( l < max ? l : max ))
  if [ "$t" -lt 15 ]; then
    log "$name: skipped, ${l}s left"
    return 0
  fi
  echo "######## $name" >> "$logf"
  local t0
  t0=$(date +%s)
  timeout "$t" "$@" >> "$logf" 2>&1
  local rc=$?
  log "$name rc=$rc in $(( $(date +%s) - t0 ))s"
  return $rc
}

{ nvidia-smi; nvcc --version; cmake --version; python3 -c 'import torch; print("torch", torch.__version__)'; } \
  > "$OUT/summary.txt" 2>&1
log "$(nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv,noheader)"

gen=()
command -v ninja > /dev/null && gen=(-G Ninja)
t0=$(date +%s)
# -lineinfo: compute-sanitizer then names the source line of a hazard (no effect on the code's speed).
cmake -S "$ROOT" -B "$B" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DLMF_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_CUDA_FLAGS=-lineinfo -DLMF_CUDA_EMU=OFF \
  -DCMAKE_PREFIX_PATH="$DEPS" > "$OUT/build.log" 2>&1 &&
  cmake --build "$B" -j16 --target lmfuse lmfuse_cuda_tests lmfuse-bench >> "$OUT/build.log" 2>&1
rc=$?
log "build rc=$rc in $(( $(date +%s) - t0 ))s"
[ $rc -eq 0 ] || { grep -E "error|Error" "$OUT/build.log" | head -40; exit 1; }

T="$OUT/tests.log"
BL="$OUT/bench.log"
S="$OUT/sanitizer.log"
bench="$B/bench/lmfuse-bench"
export LMFUSE_PYTHON=python3
cuda_bin="$B/tests/lmfuse_cuda_tests"
gfilter=${LMF_GTEST_FILTER:-*}

if [ "$WHAT" = paths ]; then
  stage "cuda gtests, logits, the library's choice" 60 "$T" "$cuda_bin" --gtest_filter='LogitsCuda.*'
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]" "$T" | sort | uniq -c | tee -a "$OUT/summary.txt"
  for b in 1 8 64 256; do
    stage "bench logits B=$b, the library's choice" 30 "$BL" "$bench" logits --batch $b --vocab 128256 \
      --no-peer --repeats 20
    stage "bench logits B=$b, separate kernels" 30 "$BL" "${sep[@]}" "$bench" \
      logits --batch $b --vocab 128256 --no-peer --repeats 20
    stage "bench logits B=$b, list mode" 30 "$BL" "${lst[@]}" "$bench" logits \
      --batch $b --vocab 128256 --no-peer --repeats 20
  done
  stage "bench logits B=16 V=32000, the library's choice" 30 "$BL" "$bench" logits --batch 16 --vocab 32000 \
    --no-peer --repeats 20
  stage "bench logits B=16 V=32000, separate kernels" 30 "$BL" "${sep[@]}" "$bench" \
    logits --batch 16 --vocab 32000 --no-peer --repeats 20
  grep -E "^######## |^ +[0-9]+ +[0-9]+ " "$BL" >> "$OUT/summary.txt"
  if command -v ncu > /dev/null; then
    metrics=gpu__time_duration.sum,dram__bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
    metrics=$metrics,smsp__inst_executed.sum,sm__warps_active.avg.pct_of_peak_sustained_active
    metrics=$metrics,dram__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size
    metrics=$metrics,launch__registers_per_thread
    stage "ncu logits B=256 K=3 bf16, the library's choice" 60 "$OUT/profile.csv" ncu --clock-control none \
      --csv --page raw --metrics "$metrics" --section WarpStateStats --launch-count 16 "$bench" logits \
      --batch 256 --vocab 128256 --models 3 --dtype bf16 --no-peer --repeats 3
  fi
  log "done, $(left)s of the budget left"
  exit 0
fi

if [ "$WHAT" = flat ]; then
  # List mode's flat rows (logits_flat.cuh) and the list cut's early stop: the logits gtests on the
  # library's choice (CutsMatchCpu runs list mode on flat rows at B = 160 and 600), the choice at
  # B = 1 and 4 (k_coop, which shares the survivors' code) and beside the separate kernels where
  # list mode streams (B = 32, 64, 256; K = 1 rows are flat), ncu on
  # B = 256 (K = 1 and the bar's K = 3), the sanitizers on a flat list-mode step, the latency floors.
  stage "cuda gtests, logits, the library's choice" 120 "$T" "$cuda_bin" --gtest_filter='LogitsCuda.*'
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]" "$T" | sort | uniq -c | tee -a "$OUT/summary.txt"
  for b in 1 4 32 64 256; do
    stage "bench logits B=$b, the library's choice" 30 "$BL" "$bench" logits --batch $b --vocab 128256 \
      --no-peer --repeats 20
  done
  for b in 64 256; do
    stage "bench logits B=$b K=1, separate kernels" 20 "$BL" "${sep[@]}" "$bench" logits --batch $b \
      --vocab 128256 --models 1 --no-peer --repeats 20
  done
  grep -E "^######## |^ +[0-9]+ +[0-9]+ " "$BL" >> "$OUT/summary.txt"
  if command -v ncu > /dev/null; then
    metrics=gpu__time_duration.sum,dram__bytes.sum,smsp__inst_executed.sum,launch__grid_size
    metrics=$metrics,launch__registers_per_thread,dram__throughput.avg.pct_of_peak_sustained_elapsed
    for k in 1 3; do
      stage "ncu logits B=256 K=$k bf16, the library's choice" 45 "$OUT/profile.csv" ncu --clock-control none \
        --csv --page raw --metrics "$metrics" --launch-count 8 "$bench" logits --batch 256 --vocab 128256 \
        --models $k --dtype bf16 --no-peer --repeats 1 --warmup 1
    done
    # Where the bar's list cut waits, instruction by instruction (the warps' stall samples per SASS
    # line; scripts/sass.sh's listing has the same addresses).
    stage "ncu source k_listcut B=256 K=3 bf16" 45 "$OUT/listcut_source.csv" ncu --clock-control none \
      --section SourceCounters --section WarpStateStats -k regex:k_listcut --launch-count 1 --page source \
      --csv --print-source sass "$bench" logits --batch 256 --vocab 128256 --models 3 --dtype bf16 --no-peer \
      --repeats 1 --warmup 1
  fi
  if command -v compute-sanitizer > /dev/null; then
    for tool in memcheck racecheck; do
      stage "$tool list mode, flat rows" 45 "$S" compute-sanitizer --tool $tool --error-exitcode 9 "$bench" \
        logits --batch 32 --vocab 128256 --models 1 --dtype bf16 --no-peer --repeats 1 --warmup 0
      grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$S" | tail -1 | tee -a "$OUT/summary.txt"
    done
  fi
  stage "bench latency floors" 30 "$BL" "$bench" latency --repeats 50
  grep -E "^(empty|each|cooperative|last-block|SM clock|dependent)" "$BL" >> "$OUT/summary.txt"
  log "done, $(left)s of the budget left"
  exit 0
fi

if [ "$WHAT" != bench ]; then
  stage "cuda gtests" 150 "$T" "$cuda_bin" --gtest_filter="$gfilter"
  # The logits cases once more in the opt-in modes: the one-launch step (k_coop), list mode
  # (GraphReplayMatchesCpu and CutsMatchCpu set the modes themselves).
  lc='LogitsCuda.*:-LogitsCuda.GraphReplayMatchesCpu:LogitsCuda.CutsMatchCpu'
  stage "cuda gtests, logits one launch" 60 "$T" env LMF_LOGITS_COOP=1 "$cuda_bin" --gtest_filter="$lc"
  stage "cuda gtests, logits list mode" 60 "$T" "${lst[@]}" "$cuda_bin" --gtest_filter="$lc"
  grep -E "^\[  (FAILED|PASSED|SKIPPED) |^\[  FAILED  \]" "$T" | sort | uniq -c | head -40 | tee -a "$OUT/summary.txt"
fi

if [ "$WHAT" != test ]; then
  # Small batches on each path in the same run (B = 4 x 63 chunks still fits k_coop's grid on a 132-SM
  # card at 2 blocks per SM), with the PyTorch peer at B = 1; the SM clock sampled meanwhile (whether
  # a latency-bound step runs the card at its idle clock).
  dmon_pid=
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi dmon -s pc -d 1 > "$OUT/dmon.log" 2>&1 &
    dmon_pid=$!
  fi
  # The floors a B = 1 step stands on (launch, grid barrier, ticket, dependent load, SM clock).
  stage "bench latency floors" 30 "$BL" "$bench" latency --repeats 50
  stage "bench logits B=1, one launch" 75 "$BL" env LMF_LOGITS_COOP=1 "$bench" logits --batch 1 --quick \
    --repeats 50
  stage "bench logits B=1, separate kernels" 30 "$BL" "${sep[@]}" "$bench" logits --batch 1 --quick --no-peer \
    --repeats 50
  # The same right after 200 ms of copies: the clock a decoding loop's forward pass leaves the card at.
  stage "bench logits B=1, separate kernels, busy card" 30 "$BL" "${sep[@]}" "$bench" logits --batch 1 --quick \
    --no-peer --repeats 50 --busy-ms 200
  stage "bench logits B=1, one launch, busy card" 30 "$BL" env LMF_LOGITS_COOP=1 "$bench" logits --batch 1 \
    --quick --no-peer --repeats 50 --busy-ms 200
  stage "bench logits B=1, list mode" 30 "$BL" "${lst[@]}" "$bench" logits --batch 1 --quick \
    --no-peer --repeats 50
  # B = 256 on the separate kernels and in list mode (the 70%-of-floor bar), early: the full grid runs last.
  stage "bench logits B=256, separate kernels" 45 "$BL" "${sep[@]}" "$bench" logits --batch 256 --vocab 128256 \
    --no-peer --repeats 20
  stage "bench logits B=256, list mode" 45 "$BL" "${lst[@]}" "$bench" logits --batch 256 \
    --vocab 128256 --no-peer --repeats 20
  stage "bench logits B=4, one launch" 30 "$BL" env LMF_LOGITS_COOP=1 "$bench" logits --batch 4 --vocab 128256 \
    --no-peer --repeats 50
  stage "bench logits B=4, separate kernels" 30 "$BL" "${sep[@]}" "$bench" logits --batch 4 --vocab 128256 \
    --no-peer --repeats 50
  # Where k_coop's time goes: the phase stamps (cycles) of the block that ends row 0, and its SM clock.
  stage "k_coop phase profile" 30 "$BL" env LMF_LOGITS_COOP=1 LMF_LOGITS_COOP_PROFILE=1 "$bench" logits \
    --batch 1 --vocab 128256 --no-peer --repeats 5 --warmup 1
  [ -n "$dmon_pid" ] && kill "$dmon_pid" 2> /dev/null
  grep -E "^######## |^ +[0-9]+ +[0-9]+ |^(empty|each|cooperative|last-block|SM clock|dependent|k_coop profile)" \
    "$BL" >> "$OUT/summary.txt"
fi

# The one-launch step under the sanitizers first: it is the newest code (its grid barriers, the
# histogram atomics, the shared-memory list cut).
if [ "$WHAT" != bench ] && command -v compute-sanitizer > /dev/null; then
  lf='LogitsCuda.SpecVectorsMatchCpu:LogitsCuda.RandomBatchesMatchCpu:LogitsCuda.LayoutsMatchCpu'
  for tool in memcheck racecheck synccheck; do
    stage "$tool logits one launch" 60 "$S" env LMF_LOGITS_COOP=1 compute-sanitizer --tool $tool \
      --error-exitcode 9 "$cuda_bin" --gtest_filter="$lf"
  done
fi

if [ "$WHAT" != test ] && command -v ncu > /dev/null; then
  # Where a logits step spends its time (--clock-control none: the card as is), with the SM clock each
  # kernel ran at (sm__cycles_elapsed.avg.per_second), the instructions it issued, the warps it
  # kept resident and its grid: B = 1 on the one-launch step and in list mode, then B = 256 on the separate
  # kernels and in list mode (the warm-up steps), where the bar asks for 70% of the bandwidth floor.
  PR="$OUT/profile.csv"
  metrics=gpu__time_duration.sum,dram__bytes.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed
  metrics=$metrics,sm__cycles_elapsed.avg.per_second,smsp__inst_executed.sum
  metrics=$metrics,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed
  # Each kernel's grid (chunk_gx: one wave at its occupancy) and registers, beside its time.
  metrics=$metrics,launch__grid_size,launch__registers_per_thread
  # With the warps' stall reasons: "no instruction" is the SM waiting for code to fetch (docs/logits.md,
  # "Code footprint"), against "long scoreboard" (memory) and "barrier".
  # The bars' case (K = 3, bf16: --models, --dtype) on each path that serves it.
  bar=(--vocab 128256 --models 3 --dtype bf16 --no-peer --repeats 3)
  stage "ncu logits B=1 one launch" 45 "$PR" env LMF_LOGITS_COOP=1 ncu --clock-control none --csv --page raw \
    --metrics "$metrics" --section WarpStateStats -k regex:k_coop --launch-count 8 "$bench" logits --batch 1 \
    "${bar[@]}"
  stage "ncu logits B=1 list mode" 45 "$PR" "${lst[@]}" ncu --clock-control none --csv --page raw \
    --metrics "$metrics" --section WarpStateStats --launch-count 24 "$bench" logits --batch 1 "${bar[@]}"
  stage "ncu logits B=256 separate kernels" 60 "$PR" "${sep[@]}" ncu --clock-control none --csv --page raw \
    --metrics "$metrics" --launch-count 40 "$bench" logits --batch 256 "${bar[@]}"
  # List mode at B = 256 with the warps' stall reasons (WarpStateStats): what its kernels wait on.
  stage "ncu logits B=256 list mode" 60 "$PR" "${lst[@]}" ncu --clock-control none --csv --page raw \
    --metrics "$metrics" --section WarpStateStats --launch-count 24 "$bench" logits --batch 256 "${bar[@]}"
fi

if [ "$WHAT" != bench ]; then
  stage "pytest cuda" 90 "$T" env LMFUSE_LIBRARY="$B/host/liblmfuse.so" PYTHONPATH="$ROOT/python_bindings" \
    python3 -m pytest -q "$ROOT"/tests/python/test_cuda.py "$ROOT"/tests/python/test_*_cuda.py
  tail -3 "$T" >> "$OUT/summary.txt"
  if command -v compute-sanitizer > /dev/null; then
    # CutsMatchCpu (180 calls) would take memcheck's whole share.
    stage "memcheck" 90 "$S" compute-sanitizer --tool memcheck --error-exitcode 9 "$cuda_bin" \
      --gtest_filter="${LMF_SANITIZER_FILTER:-$gfilter:-*2e31*:*RealData*:*LargeBatches*:*LongRuns*:*CutsMatchCpu*}"
    stage "racecheck" 90 "$S" compute-sanitizer --tool racecheck --error-exitcode 9 "$cuda_bin" \
      --gtest_filter='Cuda.PassesMatchCpu:DyntokCuda.SpecVectorsMatchCpu:LogitsCuda.SpecVectorsMatchCpu:LogitsCuda.LayoutsMatchCpu:HypernetCuda.VariantsMatchCpu:EmbedCuda.FvtMatchesCpu'
    # List mode's class lists take predicated stores at indices packed into one word per class
    # (list_append8's offers): memcheck on the cases that fill them, last, where time is left.
    stage "memcheck logits list mode" 60 "$S" "${lst[@]}" compute-sanitizer --tool memcheck \
      --error-exitcode 9 "$cuda_bin" --gtest_filter='LogitsCuda.RandomBatchesMatchCpu:LogitsCuda.DenseModelsMatchCpu'
  fi
  if [ -f "$S" ]; then
    grep -E "^######## |ERROR SUMMARY" "$S" >> "$OUT/summary.txt"
  fi
fi

if [ "$WHAT" != test ]; then
  stage "bench logits" 120 "$BL" "$bench" logits --quick --repeats 50
  stage "bench logits, list + pdl" 45 "$BL" "${lst[@]}" LMF_LOGITS_PDL=1 "$bench" logits --quick \
    --no-peer --repeats 50
fi

# The families measured less often (their issues are resolved), if time is left.
if [ "$WHAT" != test ]; then
  stage "bench dyntok" 60 "$BL" "$bench" dyntok --no-peer --repeats 20
  stage "bench hypernet" 90 "$BL" "$bench" hypernet --repeats 10
  stage "bench mezo" 60 "$BL" "$bench" mezo --repeats 10
fi
log "done, $(left)s of the budget left"
