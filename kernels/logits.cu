/* The CUDA backend of lmf_logits_* (host/logits_backend.h). The CPU backend (host/cpu/logits_cpu.c) is
 * the reference: every decision documented at its top holds here too, with the same fp32 element
 * arithmetic (kernels/common/logits_math.h, compiled with --fmad=false), so tokens, statuses and the
 * masks of the log-prob rows are the CPU's, and floats agree to rounding.
 *
 * Structure. A row's vocabulary is cut into chunks of kChunk = 2048 tokens, the CPU backend's blocks
 * (the per-block maxima of its LSE and top-p-total formulas are reproduced chunk by chunk). A "chunk
 * kernel" runs on B * gx thread blocks of 256 threads: block i serves row i / gx and its chunks
 * i % gx, i % gx + gx, ... (gx = blocks per row, chosen per kernel: chunk_gx). gx is the most blocks
 * per row the device holds at once for that kernel (B x gx within one wave), at most `chunks`, so
 * B = 1 spreads the row over up to `chunks` blocks (V = 152,064: 75 blocks); where B alone fills the
 * device, gx = 1: one block per row. Chunk kernels leave per-chunk partials (max, argmax, count, NaN flag,
 * sum of e^(x - chunk max)) in the workspace, or add exact integers to per-row accumulators with
 * atomics; a small merge kernel (a warp or a block per row) then merges the partials in chunk order
 * with online (max, sum) rescaling, decides the row's status and its next step. The host enqueues a
 * fixed sequence of kernels chosen from the job's options only (no host sync, no allocation, no
 * copies); each kernel skips the rows its step does not concern (per-row state in the workspace).
 *
 * Small batches whose job allows it take one cooperative launch instead (k_coop, logits_coop.cuh: the
 * same bodies and partials, grid-wide barriers for the launch boundaries, y kept in registers), unless
 * LMF_LOGITS_COOP=0; larger ones list mode (below) where the combine pass fills its lists, unless
 * LMF_LOGITS_LIST=0 (env_switch).
 *
 * Kernels, in launch order (each "chunk" kernel is followed by its merge):
 *   init (warp / row)          T, seeds, coefficients / tau, row_index, GeDi state: first statuses
 *   sparse fill + scatter      sparse rows -> a dense fp32 row per (model, output row) in the
 *                              workspace; out-of-range or repeated ids, NaN / +inf values -> statuses
 *   stats (chunk)              max and sum e^(x - max) of the plausibility, nucleus, GeDi and draft
 *                              models (the nucleus model's x -> D)
 *   combine (chunk)            s(v) -> Y: the coefficient fold, plausibility and nucleus masks, GeDi's
 *                              logP(desired | v) -> D, bias, / T; per chunk max / argmax / count / sum
 *   temp (chunk, GeDi filter)  GeDi's class filter applied to Y, then / T
 *   cut searches (below)       nucleus (on D), GeDi class filter (on D, masses from Y), top-k, top-p;
 *                              in list mode (env_switch) top-k and top-p first try a window
 *                              pass and a one-block cut over at most 4096 candidates (b_window,
 *                              b_listcut), which also does min-p, the LSE and the sample
 *   final (chunk)              sum of the survivors' e^(y - ymax) -> the LSE (after cuts and min-p)
 *   sample (chunk)             Gumbel-max over the survivors
 *   logprobs (chunk), outputs  (combine) / verify walk, residual sample (chunk), verify outputs
 *
 * Cut searches (nucleus, GeDi filter, top-k, top-p) find the first token, in the filter's total order
 * (value, then token id: lmf_lg_ord_*), at which the cumulative mass reaches the target, like the
 * CPU's walk, by a radix select over the 32-bit value key: four histogram passes (8-bit digits, 256
 * bins) each followed by a merge that picks the digit where the cumulative mass crosses the target,
 * then one pass summing each chunk's tokens tied at the found key and a last kernel that walks the
 * chunks and then the tokens of the crossing chunk in id order. Masses are added as exact 128-bit
 * fixed-point integers (2^-80 units; a fp32 e^(y - max) <= 1 converts exactly from 2^-57 up), so the
 * histograms can be merged with global atomics in any order and every result is deterministic and
 * independent of gx; the targets (p times the total, computed in double as the CPU does, and for
 * top-p after no top-k the CPU's "window" rule choosing between the combine pass's total and the sum
 * of masses) are compared exactly. Ties in value resolve by ascending token id.
 *
 * Passes over the logits (the models' rows, global memory):
 *   linear methods (EFT, proxy-tuning, CFG, contrastive without plausibility, ...): one pass, the
 *     combine pass, every model read once, 16-byte vector loads where the row is 16-byte aligned;
 *   plausibility mask, nucleus mask: that model twice (stats, combine), the others once;
 *   GeDi: the two class models twice (their LSEs first, then logP), the LM once;
 *   verify_draft: the draft model twice (its LSE in stats; then single tokens and, on a rejection,
 *     the rejected row once more for the residual).
 * Passes over the fp32 scratch row Y (and D) in the workspace, per feature:
 *   greedy without distribution outputs and without GeDi's filter: none (Y is not even written);
 *   sampling: 1 (Gumbel noise only for tokens with y + 17 >= the best key so far, the CPU's bound);
 *   top-k, top-p, nucleus (on D), GeDi filter (on D and Y): 4 histogram passes + 1 tie pass + one
 *     chunk of the row, each; GeDi's filter also 1 rewrite of Y (filter, / T);
 *   list mode, top-k / top-p: 1 window pass; where a window of at most 4096 tokens holds the cut
 *     (peaked rows) nothing more, not even the LSE or sample pass; otherwise the general search as
 *     above. On the separate kernels a row first tries the lists the combine pass filled (no pass over
 *     Y at all), and with top-p and no log-prob rows the combine pass does not even write Y (KP::ylazy;
 *     for rows those lists cannot decide, a second combine pass does the window pass's work on the
 *     values it recomputes, still without writing Y, k_combine<CM_RECWIN>; with top-p alone, such
 *     rows instead take k_coop's 256 bins spread over their chunks, each pass computing y again from
 *     the logits, in the list cuts' own launch, k_listcut_flat, logits_flat.cuh); the list cut's
 *     block runs the general search itself for the rows that need it, and after the step's last cut
 *     the LSE pass, the sample pass and the outputs of its row (KP::ltail); the combine pass's last
 *     block per row merges the partials (KP::cfold), and at small B the window pass's last block per
 *     row does the list cut (KP::wlast), so a B = 1 top-p step is 3 launches;
 *   LSE (lse / token_logprob / logprobs outputs, verify) after top-k, top-p, min-p or GeDi's filter:
 *     1; otherwise none (from the combine pass's per-chunk sums); logprobs: 1 write;
 *   verify_draft: the acceptance walk reads single tokens; a rejection's correction: 1 pass over
 *     that row (Y and the draft model).
 *
 * Workspace (lmf_cuda_logits_workspace, the exact bytes run uses; independent of the outputs and
 * of the mode, as the host layer requires): per row a state record, a sequence record, a 256-bin
 * 128-bit histogram and, in list mode with top-k or top-p, 6 candidate lists of min(V, 8192) (y, id)
 * (and one counter for the step) and k_coop's 256-bin histogram (CoopRow, also the one-launch step's
 * where it may run);
 * per chunk a combine partial, a stats partial and a tie sum; Y [B][V8] fp32 (V8 = V rounded up to
 * 8), D [B][V8] when a nucleus or GeDi model is set, and [B][V8] fp32 per sparse model; plus 256
 * bytes of alignment slack.
 *
 * Sampling: the key of token v is FADD(y(v), G(v)), G from Philox keyed by (row seed, row offset, v)
 * exactly as on the CPU (lmf_lg_gumbel); every block keeps its best (key, id), ties to the lower id,
 * and the row's best is one 64-bit atomicMax of (order key, ~id): the token does not depend on how
 * the vocabulary is split. 64-bit indexing throughout (rows * stride, chunk offsets).
 */
#include <cuda_runtime.h>

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "logits_backend.h"
#include "../kernels/common/half_convert.h"
#include "../kernels/common/logits_math.h"

#include "cuda_check.cuh"

#include <cooperative_groups.h>
#include <stdlib.h>

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

namespace {

#include "logits_core.cuh"
#include "logits_rows.cuh"
#include "logits_combine.cuh"
#include "logits_search.cuh"
#include "logits_list.cuh"
#include "logits_finish.cuh"
#include "logits_kernels.cuh"
#include "logits_coop.cuh"
#include "logits_flat.cuh"

/* ---- Host side ------------------------------------------------------------------------------------ */

struct Layout {
  int64_t ystride, nchunks;
  int32_t lcap;
  bool lists; /* list mode's candidate lists are reserved (at cand) */
  bool coop;  /* k_coop's list and fallback flag are reserved (at gath, cflag; its bins: bins) */
  bool bins;  /* per-row 256 bins (at coop_rows): k_coop's, or list mode's flat rows' */
  size_t rows, seqs, hist, cpart, spart, tie, cand, lseq, coop_rows, gath, cflag, Y, D, sp[kMaxM];
  size_t total;
};

/* A CUDA path's switch in the environment, read by every call: "1" takes the path wherever the job
 * allows it, "0" never; unset (or any other value) leaves the choice to the library, which takes the
 * path where a lent H200 measured it faster (docs/benchmarks.md, 2026-11-28): the one-launch step
 * (LMF_LOGITS_COOP) wherever it applies, list mode (LMF_LOGITS_LIST) where the combine pass fills the
 * lists (lstream: larger batches). */
enum class Switch { kAuto, kOff, kOn };
Switch env_switch(const char *name) {
  const char *e = getenv(name);
  if (e && e[0] == '1') return Switch::kOn;
  if (e && e[0] == '0') return Switch::kOff;
  return Switch::kAuto;
}

bool mul_sz(size_t a, size_t b, size_t *r) {
  if (a != 0 && b > SIZE_MAX / a) return false;
  *r = a * b;
  return true;
}

/* Reserves `bytes` at a 256-byte boundary. */
bool reserve(size_t *off, size_t bytes, size_t *at) {
  const size_t a = (*off + 255) / 256 * 256;
  if (a < *off || bytes > SIZE_MAX - a) return false;
  *at = a;
  *off = a + bytes;
  return true;
}

/* The workspace of a job: depends only on num_rows, vocab_out, the nucleus / GeDi models, which
 * models are sparse, whether top-k or top-p is on and list mode (not on the outputs, the mode or the
 * roles), so a size query covers every call with the same models and params. false on overflow. */
bool make_layout(const lmf_lg_job *job, Layout *L) {
  memset(L, 0, sizeof *L);
  const size_t B = (size_t)job->num_rows;
  const int64_t V = job->vocab_out;
  L->ystride = (V + 7) / 8 * 8;
  L->nchunks = (V + kChunk - 1) / kChunk;
  size_t off = 0, n = 0, bc = 0, yb = 0;
  if (!mul_sz(B, (size_t)L->nchunks, &bc)) return false;
  if (!mul_sz(B, (size_t)L->ystride, &yb) || !mul_sz(yb, sizeof(float), &yb)) return false;
  if (!mul_sz(B, sizeof(Row), &n) || !reserve(&off, n, &L->rows)) return false;
  if (!mul_sz(B, sizeof(Seq), &n) || !reserve(&off, n, &L->seqs)) return false;
  if (!mul_sz(B, kBins * sizeof(U128), &n) || !reserve(&off, n, &L->hist)) return false;
  if (!mul_sz(bc, sizeof(CPart), &n) || !reserve(&off, n, &L->cpart)) return false;
  if (!mul_sz(bc, sizeof(SPart), &n) || !reserve(&off, n, &L->spart)) return false;
  if (!mul_sz(bc, sizeof(U128), &n) || !reserve(&off, n, &L->tie)) return false;
  L->lcap = V < kSupCap ? (int32_t)V : kSupCap;
  /* Only list mode's cuts read the lists; reserved unless LMF_LOGITS_LIST=0 (the library's choice
   * depends on the device, which the size query does not know). */
  L->lists = env_switch("LMF_LOGITS_LIST") != Switch::kOff && (job->top_k > 0 || job->top_p < 1.0f);
  if (L->lists) {
    if (!mul_sz(B, (size_t)kClasses * (size_t)L->lcap * sizeof(uint2), &n) || !reserve(&off, n, &L->cand) ||
        !reserve(&off, sizeof(unsigned), &L->lseq))
      return false;
  }
  /* k_coop's scratch where its grid (a block per chunk) could fit a device at once. */
  L->coop = bc <= (size_t)kCoopMaxBlocks;
  L->bins = L->coop || L->lists; /* list mode's flat rows (logits_flat.cuh): 5.2 KiB a row more */
  if (L->bins && (!mul_sz(B, sizeof(CoopRow), &n) || !reserve(&off, n, &L->coop_rows))) return false;
  if (L->coop) {
    if (!reserve(&off, B * (size_t)kListCap * sizeof(uint2), &L->gath) || !reserve(&off, 256, &L->cflag))
      return false;
  }
  if (!reserve(&off, yb, &L->Y)) return false;
  if (job->nucleus_model >= 0 || job->gedi_pos_model >= 0) {
    if (!reserve(&off, yb, &L->D)) return false;
  }
  for (int k = 0; k < job->num_models; ++k)
    if (job->models[k].sparse_index && !reserve(&off, yb, &L->sp[k])) return false;
  if (off > SIZE_MAX - 256) return false;
  L->total = off + 256; /* the caller's pointer is aligned up to 256 bytes */
  return true;
}

typedef void (*Kernel)(const KP);

constexpr int kMaxDevices = 64; /* the per-device caches below */

/* Whether the separate kernels can take programmatic dependent launch on a device: Hopper or later,
 * and this build's code for them is sm_90 or later, so every kernel really waits (pdl_enter; sm_80
 * code JIT-run on Hopper would not). */
bool pdl_support(int device) {
  static std::atomic<int> state[kMaxDevices]; /* 0 unknown, 1 no, 2 yes */
  int v = state[device].load(std::memory_order_acquire);
  if (!v) {
    cudaFuncAttributes fa;
    int major = 0;
    v = cudaFuncGetAttributes(&fa, k_init) == cudaSuccess && fa.binaryVersion >= 90 &&
                cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess &&
                major >= 9
            ? 2
            : 1;
    (void)cudaGetLastError();
    state[device].store(v, std::memory_order_release);
  }
  return v == 2;
}

/* Thread blocks of kernel `k` that one SM holds at once on `device` (its registers and shared memory:
 * cudaOccupancyMaxActiveBlocksPerMultiprocessor), asked once per kernel and device; 4 (the combine
 * kernels' launch bound) where the runtime cannot say. */
int blocks_per_sm(Kernel k, int device) {
  static std::mutex mu;
  static std::map<std::pair<const void *, int>, int> seen;
  const std::pair<const void *, int> key(reinterpret_cast<const void *>(k), device);
  std::lock_guard<std::mutex> hold(mu);
  const auto it = seen.find(key);
  if (it != seen.end()) return it->second;
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kThreads, 0) != cudaSuccess) {
    (void)cudaGetLastError(); /* not the launch's error */
    n = 0;
  }
  if (n < 1) n = 4;
  seen.emplace(key, n);
  return n;
}

/* Blocks per row (gx) for a chunk kernel over `rows` rows: as many as the device holds at once in
 * one wave (rows x gx <= cap, its resident blocks), at most one per chunk, at least one. A grid just
 * over a wave leaves a second, partial wave with the first's per-block work: at B = 256 on a 132-SM
 * card, the old rule (gx = ceil(4 x SMs / B) for every kernel) gave the combine 768 blocks of 21
 * chunks for 528 places, two waves' time, where 512 blocks of 32 or 31 chunks take one wave of 32;
 * and the histogram pass, 3 blocks an SM, two waves of 21 chunks at B = 64 where 384 blocks of 11
 * take one. Results do not depend on gx (the partials are per chunk). */
int64_t chunk_gx(int64_t cap, int64_t rows, int64_t nchunks) {
  int64_t gx = rows > 0 ? cap / rows : 1;
  if (gx > nchunks) gx = nchunks;
  return gx < 1 ? 1 : gx;
}

/* k_coop's capacity on a device: the blocks it can hold at once (cooperative launch supported), 0 where
 * it cannot be launched cooperatively. Asked once per device. */
int64_t coop_capacity(int device, int sms) {
  static std::atomic<int> per_sm[kMaxDevices]; /* 0 unknown, -1 none, else blocks per SM */
  int v = per_sm[device].load(std::memory_order_acquire);
  if (!v) {
    int coop = 0, n = 0;
    v = cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, device) == cudaSuccess && coop &&
                cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k_coop, kThreads, 0) == cudaSuccess && n > 0
            ? n
            : -1;
    (void)cudaGetLastError();
    per_sm[device].store(v, std::memory_order_release);
  }
  return v > 0 ? (int64_t)v * sms : 0;
}

/* Whether a job takes the one-launch step (logits_coop.cuh; unless LMF_LOGITS_COOP=0): a combine
 * without sparse models, mask or GeDi models or top-k, whose grid (a block per chunk) the device
 * holds at once. */
bool coop_takes(const lmf_lg_job *job, const Layout &L, bool sparse, int nstat, int device, int sms) {
  if (env_switch("LMF_LOGITS_COOP") == Switch::kOff || !L.coop || job->mode == LMF_LG_MODE_VERIFY ||
      sparse || nstat > 0 || job->top_k > 0 || device < 0 || device >= kMaxDevices)
    return false;
  return (int64_t)job->num_rows * L.nchunks <= coop_capacity(device, sms);
}

/* Enqueues one kernel of `blocks` x 256 threads on the stream; reports launch errors. With pdl, every
 * launch after the call's first one may overlap the kernel before it (see pdl_enter); the first waits
 * for the caller's work in the usual way. cudaLaunchKernelEx is the one launch path (also what the CPU
 * emulator in tests/emu intercepts). */
struct Launcher {
  cudaStream_t stream;
  const char *fn;
  int device, sms;
  bool pdl;
  mutable bool first = true;
  /* Blocks per row for chunk kernel k over `rows` rows (chunk_gx at k's own occupancy). */
  int64_t gx(Kernel k, int64_t rows, int64_t nchunks) const {
    return chunk_gx((int64_t)sms * blocks_per_sm(k, device), rows, nchunks);
  }
  /* A chunk kernel over `rows` rows (kp.nrows, or verify's sequences): its gx into kp, rows x gx blocks. */
  lmf_status_t chunks(Kernel k, KP &kp, int64_t rows) const {
    kp.gx = (int32_t)gx(k, rows, kp.nchunks);
    return (*this)(k, rows * kp.gx, kp);
  }
  lmf_status_t chunks(Kernel k, KP &kp) const { return chunks(k, kp, kp.nrows); }
  /* A chunk kernel that works on few of its rows (the rest exit at once): the rows the combine's
   * lists left undecided, about 1 in 150 of the bench's. One wave would give such a row a single
   * block walking all its chunks; these keep the earlier rule, ceil(4 x SMs / B) blocks a row (3 at
   * B = 256, 21 chunks each), the spread the H200 runs measured. */
  lmf_status_t chunks_few(Kernel k, KP &kp) const {
    kp.gx = few_gx(kp);
    return (*this)(k, kp.nrows * kp.gx, kp);
  }
  int32_t few_gx(const KP &kp) const {
    const int64_t rows = kp.nrows, cap = 4 * (int64_t)sms;
    return (int32_t)chunk_gx(cap + rows - 1, rows, kp.nchunks);
  }
  lmf_status_t operator()(Kernel k, int64_t blocks, const KP &kp) const {
    if (blocks <= 0) return LMF_OK;
    if (blocks > (int64_t)INT32_MAX)
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: %lld thread blocks exceed the grid limit", fn,
                      (long long)blocks);
    cudaLaunchAttribute at = {};
    at.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)blocks);
    cfg.blockDim = dim3(kThreads);
    cfg.stream = stream;
    cfg.attrs = &at;
    cfg.numAttrs = pdl && !first ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, k, kp);
    first = false;
    return launched(fn, "a logits kernel", device);
  }
};

#define LMF_TRY(expr)                    \
  do {                                   \
    const lmf_status_t st_ = (expr);     \
    if (st_ != LMF_OK) return st_;       \
  } while (0)

/* The kernels of one cut search. List mode (top-k, top-p): a window pass and the list cut, whose block
 * runs the general search itself for the rows the lists cannot decide; `tail`: this is the step's last
 * cut, and the list cut's block finishes each row (row_tail). */
lmf_status_t run_search(const Launcher &launch, KP &kp, int kind, bool tail) {
  kp.kind = kind;
  if (kp.lbins && kind == SK_TOPP) { /* top-p alone: the list cuts and the flat rows, one launch */
    kp.level = 1;
    kp.ltail = tail;
    kp.gx = launch.few_gx(kp);
    LMF_TRY(launch(k_listcut_flat, kp.nrows * (1 + 2 * (int64_t)kp.gx), kp));
    kp.ltail = 0;
    kp.level = 0;
    kp.kind = SK_NONE;
    return LMF_OK;
  }
  if (kp.list && (kind == SK_TOPK || kind == SK_TOPP)) {
    if (kp.lstream) { /* the rows whose combine pass filled their lists (Row::sup) try those first */
      kp.level = 1;
      LMF_TRY(launch(k_listcut, kp.nrows, kp));
      kp.level = 0;
      /* the rows the lists left: their window pass, from their logits */
      if (kp.ylazy) LMF_TRY(launch.chunks_few(k_combine<false, CM_RECWIN>, kp));
    }
    kp.ltail = tail;
    if (kp.wlast) {
      LMF_TRY(launch.chunks(k_window<true>, kp)); /* and each row's list cut, in its last block */
    } else {
      /* after the combine's lists, only the rows they left undecided */
      LMF_TRY(kp.lstream ? launch.chunks_few(k_window<false>, kp) : launch.chunks(k_window<false>, kp));
      LMF_TRY(launch(k_listcut, kp.nrows, kp)); /* the list cuts' rows' outputs (ltail) */
    }
    kp.ltail = 0;
    kp.kind = SK_NONE;
    return LMF_OK;
  }
  for (int level = 0; level < 4; ++level) {
    kp.level = level;
    LMF_TRY(launch.chunks(k_hist, kp));
    LMF_TRY(launch(k_smerge, kp.nrows, kp));
  }
  LMF_TRY(launch.chunks(k_tie, kp));
  LMF_TRY(launch(k_tiecut, kp.nrows, kp));
  kp.kind = SK_NONE;
  kp.level = 0;
  return LMF_OK;
}

}  // namespace

extern "C" {

lmf_status_t lmf_cuda_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job,
                                       size_t *bytes) {
  (void)ctx;
  Layout L;
  if (!make_layout(job, &L))
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "lmf_logits_workspace_size: the CUDA workspace size overflows (num_rows %d, vocab_out %d)",
                    job->num_rows, job->vocab_out);
  *bytes = L.total;
  return LMF_OK;
}

lmf_status_t lmf_cuda_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  const bool verify = job->mode == LMF_LG_MODE_VERIFY;
  const char *fn = verify ? "lmf_logits_verify_draft (CUDA)" : "lmf_logits_combine (CUDA)";
  Layout L;
  if (!make_layout(job, &L))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the workspace size overflows", fn);
  if (workspace_bytes < L.total)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: workspace_bytes is %zu; this call needs %zu", fn,
                    workspace_bytes, L.total);
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  int sms = 0;
  st = lmf_cuda_sm_count(ctx->device, fn, &sms);
  if (st != LMF_OK) return st;

  KP local; /* about 2 KiB */
  memset(&local, 0, sizeof local);
  local.job = *job;
  char *base = static_cast<char *>(workspace);
  base += (256u - (uintptr_t)base % 256u) % 256u;
  local.rows = reinterpret_cast<Row *>(base + L.rows);
  local.seqs = reinterpret_cast<Seq *>(base + L.seqs);
  local.hist = reinterpret_cast<U128 *>(base + L.hist);
  local.cpart = reinterpret_cast<CPart *>(base + L.cpart);
  local.spart = reinterpret_cast<SPart *>(base + L.spart);
  local.tie = reinterpret_cast<U128 *>(base + L.tie);
  local.cand = L.lists ? reinterpret_cast<uint2 *>(base + L.cand) : nullptr;
  local.lseq = L.lists ? reinterpret_cast<unsigned *>(base + L.lseq) : nullptr;
  local.lcap = L.lcap;
  local.coop = L.bins ? reinterpret_cast<CoopRow *>(base + L.coop_rows) : nullptr;
  local.Y = reinterpret_cast<float *>(base + L.Y);
  local.D = L.D ? reinterpret_cast<float *>(base + L.D) : nullptr;
  for (int k = 0; k < job->num_models; ++k)
    local.sp[k] = job->models[k].sparse_index ? reinterpret_cast<float *>(base + L.sp[k]) : nullptr;
  local.ystride = L.ystride;
  local.nchunks = L.nchunks;
  local.nrows = job->num_rows;
  local.nseqs = verify ? job->num_seqs : 0;

  /* Statistics roles: distinct models in role order (the CPU's row_init). */
  const int32_t role_model[kNst] = {job->plaus_model, job->nucleus_model, job->gedi_pos_model,
                                    job->gedi_neg_model, verify ? job->draft_model : -1};
  local.nstat = 0;
  for (int r = 0; r < kNst; ++r) {
    local.role_stat[r] = -1;
    if (role_model[r] < 0) continue;
    int s = 0;
    while (s < local.nstat && local.stat_model[s] != role_model[r]) ++s;
    if (s == local.nstat) local.stat_model[local.nstat++] = role_model[r];
    local.role_stat[r] = s;
  }

  const bool sampling = job->temperature > 0.0f || job->temperature_rows != nullptr;
  const bool need_lse = verify || job->token_logprob || job->lse || job->logprobs;
  const bool dist = sampling || (!verify && need_lse); /* some row may need the filtered distribution */
  const bool gf = job->gedi_pos_model >= 0 && job->gedi_filter_p > 0.0f;
  const bool nuc_search = job->nucleus_model >= 0 && job->nucleus_p < 1.0f;
  const bool final_pass = dist && need_lse; /* the sample needs no LSE (lse_or_sample) */
  local.need_y = dist || gf;

  const int64_t B = local.nrows;
  const int64_t warp_blocks = (B + kWarps - 1) / kWarps;
  const int64_t thread_blocks = (B + kThreads - 1) / kThreads;
  const int64_t grid_cap = (int64_t)sms * 8;

  const Switch list_sw = env_switch("LMF_LOGITS_LIST");
  local.list = !verify && L.lists; /* not LMF_LOGITS_LIST=0, and a cut, as the layout */

  const char *pdl_env = getenv("LMF_LOGITS_PDL"); /* opt-in until measured (docs/logits.md) */
  const bool pdl = pdl_env && pdl_env[0] == '1' && ctx->device >= 0 && ctx->device < kMaxDevices &&
                   pdl_support(ctx->device);
  const Launcher launch{reinterpret_cast<cudaStream_t>(stream), fn, ctx->device, sms, pdl};
  bool sparse = false;
  for (int k = 0; k < job->num_models; ++k) sparse |= job->models[k].sparse_index && job->models[k].roles;
  if (coop_takes(job, L, sparse, local.nstat, ctx->device, sms)) {
    local.gx = (int32_t)L.nchunks;
    local.list = 0;
    local.gath = reinterpret_cast<uint2 *>(base + L.gath);
    local.coop_fallback = reinterpret_cast<unsigned *>(base + L.cflag);
    const char *prof = getenv("LMF_LOGITS_COOP_PROFILE");
    local.coop_profile = prof && prof[0] == '1';
    cudaLaunchAttribute at = {};
    at.id = cudaLaunchAttributeCooperative;
    at.val.cooperative = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(B * L.nchunks));
    cfg.blockDim = dim3(kThreads);
    cfg.stream = reinterpret_cast<cudaStream_t>(stream);
    cfg.attrs = &at;
    cfg.numAttrs = 1;
    (void)cudaLaunchKernelEx(&cfg, k_coop, local);
    return launched(fn, "k_coop", ctx->device);
  }
  /* List mode, separate kernels: the combine pass fills the lists for each row's first cut (top-k or
   * top-p; not after GeDi's filter, which rewrites Y, nor with GeDi's combine). Only where a block
   * walks several chunks: with one (small batches), its running max is its chunk's, far below the
   * row's, and the lists hold most of the row (a model of the bench's rows: none decided at 1). */
  const int64_t sup_gx = launch.gx(k_combine<false, CM_SUP>, B, L.nchunks);
  const int64_t sup_chunks = (L.nchunks + sup_gx - 1) / sup_gx; /* the combine's chunks per block */
  local.lstream = local.list && dist && !gf && job->gedi_pos_model < 0 &&
                  (job->top_k > 0 || job->top_p < 1.0f) && sup_chunks >= kSupChunks;
  /* The library's choice: list mode only where the combine fills the lists. Elsewhere (small
   * batches, GeDi) its window pass is a gamble on the row's shape: at B = 1 (bf16) it took 54 us
   * against the separate kernels' 91 for the bench's K = 3 rows, 909 against 95 for its flat K = 1
   * rows. */
  if (list_sw == Switch::kAuto && !local.lstream) local.list = 0;
  /* With top-p every row that needs the distribution enters a cut, so Y can wait for the rows the
   * lists cannot decide; a log-prob row needs Y whole. */
  local.ylazy = local.lstream && job->top_p < 1.0f && !job->logprobs;
  /* ... and with top-p alone, the rows the combine's lists cannot decide (flat rows) take the 256
   * bins over their chunks (k_listcut_flat) instead of the window pass and one block's
   * search each. */
  local.lbins = local.ylazy && job->top_k <= 0;
  /* List mode also folds the combine's merge into the combine pass and, where the step takes a cut,
   * the LSE, sample and output kernels into the last list cut: at B = 1 a top-p step is then four
   * launches (init, combine, window, list cut), not fifteen. */
  local.cfold = (list_sw == Switch::kOn && !verify) || local.lstream;
  /* ... and up to 8 window chunks per SM (B = 1 and 8 at V = 128256), the list cut into the window
   * pass: a top-p step is then three launches (init, combine, window). */
  local.wlast = B * L.nchunks <= 8 * (int64_t)sms;
  const bool tail = local.list && dist;
  LMF_TRY(launch(k_init, warp_blocks, local));
  for (int k = 0; k < job->num_models; ++k) {
    const lmf_lg_model &m = job->models[k];
    if (!m.sparse_index || !m.roles) continue;
    local.model = k;
    const int64_t lim = m.vocab < job->vocab_out ? m.vocab : job->vocab_out;
    const int64_t nfill = (B * lim + kThreads - 1) / kThreads, nsc = (B * m.sparse_k + kThreads - 1) / kThreads;
    LMF_TRY(launch(k_sp_fill, nfill < grid_cap ? nfill : grid_cap, local));
    LMF_TRY(launch(k_sp_scatter, nsc < grid_cap ? nsc : grid_cap, local));
  }
  local.model = 0;
  if (sparse) LMF_TRY(launch(k_status, thread_blocks, local));
  if (local.nstat > 0) {
    LMF_TRY(launch.chunks(k_stats, local));
    LMF_TRY(launch(k_stats_merge, warp_blocks, local));
  }
  if (nuc_search) LMF_TRY(run_search(launch, local, SK_NUC, false));
  const Kernel combine = job->gedi_pos_model >= 0 ? k_combine<true, CM_PLAIN>
                         : local.lstream           ? k_combine<false, CM_SUP>
                                                   : k_combine<false, CM_PLAIN>;
  LMF_TRY(launch.chunks(combine, local));
  local.level = 0;
  if (!local.cfold) LMF_TRY(launch(k_cmerge, warp_blocks, local));
  if (gf) {
    LMF_TRY(run_search(launch, local, SK_GF, false));
    LMF_TRY(launch.chunks(k_temp, local));
    local.level = 1;
    LMF_TRY(launch(k_cmerge, warp_blocks, local));
    local.level = 0;
  }
  const bool topp = dist && job->top_p < 1.0f;
  if (dist && job->top_k > 0) LMF_TRY(run_search(launch, local, SK_TOPK, tail && !topp));
  if (topp) LMF_TRY(run_search(launch, local, SK_TOPP, tail));
  if (final_pass && !tail) {
    LMF_TRY(launch.chunks(k_final, local));
    LMF_TRY(launch(k_final_merge, thread_blocks, local));
  }
  if (sampling && !tail) LMF_TRY(launch.chunks(k_sample, local));
  if (!verify) {
    if (job->logprobs) LMF_TRY(launch.chunks(k_logprobs, local));
    return tail ? LMF_OK : launch(k_outputs, thread_blocks, local);
  }
  const int64_t S = local.nseqs;
  LMF_TRY(launch(k_vwalk, (S + kThreads - 1) / kThreads, local));
  if (sampling) LMF_TRY(launch.chunks(k_resid, local, S));
  return launch(k_vfinish, (S + kThreads - 1) / kThreads, local);
}

}  // extern "C"
