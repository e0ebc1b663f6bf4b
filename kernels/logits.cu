/* The CUDA backend of lmf_logits_* (host/logits_backend.h). The CPU backend (host/cpu/logits_cpu.c) is
 * the reference: every decision documented at its top holds here too, with the same fp32 element
 * arithmetic (kernels/common/logits_math.h, compiled with --fmad=false), so tokens, statuses and the
 * masks of the log-prob rows are the CPU's, and floats agree to rounding.
 *
 * Structure. A row's vocabulary is cut into chunks of kChunk = 2048 tokens, the CPU backend's blocks
 * (the per-block maxima of its LSE and top-p-total formulas are reproduced chunk by chunk). A "chunk
 * kernel" runs on B * gx thread blocks of 256 threads: block i serves row i / gx and its chunks
 * i % gx, i % gx + gx, ... (gx = blocks per row). At small B, gx = min(chunks, ~4 blocks per SM / B),
 * so B = 1 spreads the row over up to `chunks` blocks (V = 152,064: 75 blocks); at B >= 4 * SMs,
 * gx = 1: one block per row. Chunk kernels leave per-chunk partials (max, argmax, count, NaN flag,
 * sum of e^(x - chunk max)) in the workspace, or add exact integers to per-row accumulators with
 * atomics; a small merge kernel (a warp or a block per row) then merges the partials in chunk order
 * with online (max, sum) rescaling, decides the row's status and its next step. The host enqueues a
 * fixed sequence of kernels chosen from the job's options only (no host sync, no allocation, no
 * copies); each kernel skips the rows its step does not concern (per-row state in the workspace).
 *
 * With LMF_LOGITS_COOP=1, small batches whose job allows it take one cooperative launch instead
 * (k_coop, logits_coop.cuh: the same bodies and partials, grid-wide barriers for the launch
 * boundaries, y kept in registers).
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
 *                              in list mode (LMF_LOGITS_LIST=1) top-k and top-p first try a window
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
 *     values it recomputes, still without writing Y, k_combine<CM_RECWIN>); the list cut's
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
 * 128-bit histogram and, in list mode with top-k or top-p, 6 candidate lists of min(V, 8192) (y, id);
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

#include <stdint.h>
#include <string.h>

#include "logits_backend.h"
#include "../kernels/common/half_convert.h"
#include "../kernels/common/logits_math.h"

#include "cuda_check.cuh"

#include <cooperative_groups.h>
#include <stdlib.h>

#include <atomic>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 2048;              /* tokens per chunk: the CPU backend's BLK */
constexpr int kPer = kChunk / kThreads;   /* tokens per thread per chunk */
constexpr int kBins = 256;                /* radix digit: 8 bits */
constexpr int kNst = 5;                   /* statistics roles */
constexpr int kMaxM = LMF_LOGITS_MAX_MODELS;
constexpr int kWinCap = 2048;             /* the CPU's CAP: a top-p window with at most this many tokens */
constexpr int kClasses = 6;  /* list mode: tokens by d = 2 (ymax - y) in [0,4) [4,8) [8,16) [16,20)
                              * [20,24) [24,32) (class_of); the CPU's windows d < 4, 8, 16, 32 end
                              * with classes 0, 1, 2, 5 */
constexpr int kSupCap = 8192; /* list mode: a class list's stride (list_cap: the entries it keeps) */
constexpr int kListCap = 4096; /* list mode: candidates a list cut holds (shared memory) */
constexpr int kSupChunks = 4;  /* list mode: chunks per block for the combine pass to fill the lists */
constexpr int kPrefetchChunks = 8; /* the combine pass prefetches all of a block's chunks up to this many */
constexpr unsigned kFull = 0xffffffffu;
constexpr uint32_t kSentinel = 0x7f800001u; /* an unlisted id in a sparse model's dense row */
constexpr uint32_t kCanonNan = 0x7fc00000u; /* listed NaNs are stored as this (never the sentinel) */
constexpr int64_t kNone64 = INT64_MAX;

static_assert(kPer == 8, "a thread handles one 8-token group (16-byte vectors) per chunk");
static_assert(kThreads == kBins, "the search merge maps one thread to one bin");
static_assert(kListCap % kThreads == 0 && kListCap >= kWinCap && kListCap <= kSupCap, "list cut capacity");

enum { ST_PLAUS = 0, ST_NUC = 1, ST_GPOS = 2, ST_GNEG = 3, ST_DRAFT = 4 };
enum { SK_NONE = 0, SK_NUC = 1, SK_GF = 2, SK_TOPK = 3, SK_TOPP = 4 };
enum { RF_BAD_INDEX = 1u, RF_BAD = 2u };
/* The fused kernel's optional phases (KP::fused). */
constexpr uint32_t FZ_TOPK = 1u, FZ_TOPP = 2u, FZ_FINAL = 4u, FZ_SAMPLE = 8u, FZ_SMEM = 16u;

struct U128 {
  unsigned long long lo, hi;
};

/* Per-row state, in the workspace. Written by init and the merges, read by the chunk kernels; the
 * fields named "atomics" are only added to by chunk kernels and read by the next kernel. */
struct Row {
  int32_t status;
  uint32_t flags; /* RF_*, from init and the sparse scatter (atomics) */
  int32_t greedy, need_dist, need_lse, want_sum, fuse_T;
  int32_t search; /* SK_*: the cut search this row is in */
  int32_t wfree;  /* top-p may take the combine pass's total (the CPU's window rule) */
  uint32_t prefix;
  int32_t nuc_on, gf_on, topk_on, topp_on;
  int32_t do_final, do_sample;
  int32_t yarg;
  uint32_t comb; /* models summed into s for this row */
  uint32_t rd;   /* models read for this row */
  float T, Teff, plaus_thr, gL_pos, gL_neg, gt, ymax, lse;
  float smax[kNst], slse[kNst];
  float w[kMaxM];
  unsigned int win_c[4]; /* atomics */
  int64_t nfin;
  int64_t in_row[kMaxM];
  uint64_t seed, goff;
  uint64_t nuc_cut, gf_cut, topk_cut, topp_cut;
  double total; /* sum over chunks of (sum e^(y - chunk max)) e^(chunk max - ymax), in double */
  U128 flo, target;
  U128 acc;       /* atomics: the final pass's mass */
  U128 win_m[4];  /* atomics (list mode: written by the list cut) */
  unsigned long long best; /* atomics: packed Gumbel-max */
  /* List mode (KP::list): the window pass's per-class counts and masses and the total mass (atomics,
   * zeroed again by the list cut for the row's next search). */
  unsigned int cls_c[kClasses];
  U128 cls_m[kClasses];
  U128 ltot;
  int32_t sup;  /* list mode: the combine pass's lists (a superset of each window) await the first cut */
  int32_t ymiss; /* KP::ylazy: 1 Y not written (the list cut then gives ytok); 2 still not, the
                  * combine's lists could not decide the cut: k_combine<CM_RECWIN> does the window
                  * pass, and where the window's lists cannot decide either, the list cut's block
                  * writes Y (recompute_y) for the general search; 0 Y valid */
  float ytok;    /* ymiss 1 or 2: y of the row's token (token_logprob) */
  unsigned int cdone; /* KP::cfold (atomics): the row's combine blocks that have finished */
  unsigned int wdone; /* list mode (atomics): the row's window blocks that have finished (window_done;
                       * zeroed again by the last) */
};

struct Seq {
  int32_t status, accepted, next, pad;
  int64_t resid_row; /* -1: none */
  unsigned long long best;
};

struct CPart {
  float max;
  int32_t arg;
  int32_t cnt;
  int32_t bad;
  double osum;
  float ybest; /* k_coop: y of the chunk's best Gumbel key */
};

struct SPart {
  float smax[kNst];
  int32_t bad;
  double ssum[kNst];
};

/* Kernel parameters: the job and the workspace layout (under 4 KiB). */
struct KP {
  lmf_lg_job job;
  Row *rows;
  Seq *seqs;
  U128 *hist;
  CPart *cpart;
  SPart *spart;
  U128 *tie;
  float *Y;
  float *D;
  float *sp[kMaxM];
  int64_t ystride;
  int64_t nchunks;
  int64_t nrows;
  int64_t nseqs;
  int32_t gx;
  int32_t nstat;
  int32_t stat_model[kNst];
  int32_t role_stat[kNst];
  int32_t need_y;
  int32_t kind;  /* per launch: the search kind */
  int32_t level; /* per launch: the digit level; the merge kernel: 1 after the GeDi temp pass */
  int32_t model; /* per launch: the sparse model */
  uint32_t fused; /* the fused kernel: which of its optional phases run (FZ_*) */
  int32_t list;   /* list mode for top-k / top-p (combine only; LMF_LOGITS_LIST=1) */
  int32_t lstream; /* list mode: the combine pass fills the lists for each row's first cut */
  int32_t ylazy;   /* lstream, and the combine pass leaves Y unwritten for those rows (Row::ymiss) */
  int32_t cfold;   /* LMF_LOGITS_LIST=1 (any job, with cuts or not), separate kernels, not lstream,
                    * not verify: the combine pass's last block per row merges the row's partials
                    * (combine_done), so no merge kernel follows */
  int32_t ltail;   /* per launch, the last list cut of a step: its block also does the row's LSE and
                    * sample passes where they are left, and its outputs (row_tail) */
  int32_t wlast;   /* list mode, small batches: the window pass's last block per row does the list cut
                    * (k_window<true>) */
  int32_t lcap;   /* list mode: entries per class list, min(V, kSupCap) (a class never holds more) */
  uint2 *cand;    /* list mode: per row kClasses lists of lcap (y bits, id) */
  struct CoopRow *coop;     /* k_coop: per row its histogram (logits_coop.cuh) */
  uint2 *gath;              /* k_coop: per row kListCap (y bits, id) of the crossing bin */
  unsigned *coop_fallback;  /* k_coop: some row's crossing bin is too large for the list */
  int32_t coop_profile;     /* k_coop: LMF_LOGITS_COOP_PROFILE=1, print block 0's phase times */
};
static_assert(sizeof(KP) <= 4000, "kernel parameters must fit the 4 KiB limit");

/* ---- Small helpers ------------------------------------------------------------------------------ */

/* Programmatic dependent launch (KP-free; the host's Launcher sets it up, Hopper on): every separate
 * kernel first waits until the kernel before it in the stream has completed and its memory is visible
 * (griddepcontrol.wait), then lets the next one start launching; with PDL off both are no-ops. So a
 * chain of small kernels overlaps each launch with its predecessor's tail, and nothing is read early. */
__device__ __forceinline__ void pdl_enter() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

__device__ __forceinline__ int lane_id() { return (int)(threadIdx.x & 31u); }
__device__ __forceinline__ int warp_id() { return (int)(threadIdx.x >> 5); }
__device__ __forceinline__ float ninf() { return lmf_lg_ninf(); }

__device__ __forceinline__ U128 u128(unsigned long long lo, unsigned long long hi) {
  U128 r;
  r.lo = lo;
  r.hi = hi;
  return r;
}
__device__ __forceinline__ U128 add(U128 a, U128 b) {
  U128 r;
  r.lo = a.lo + b.lo;
  r.hi = a.hi + b.hi + (r.lo < a.lo ? 1ull : 0ull);
  return r;
}
__device__ __forceinline__ U128 sub(U128 a, U128 b) {
  U128 r;
  r.lo = a.lo - b.lo;
  r.hi = a.hi - b.hi - (a.lo < b.lo ? 1ull : 0ull);
  return r;
}
__device__ __forceinline__ bool ge(U128 a, U128 b) { return a.hi > b.hi || (a.hi == b.hi && a.lo >= b.lo); }
__device__ __forceinline__ bool is_zero(U128 a) { return (a.lo | a.hi) == 0ull; }

/* A mass w in [0, 1] (fp32) as a fixed-point integer in units of 2^-80: exact for w >= 2^-57,
 * truncated below. Sums of up to 2^31 of them fit 128 bits. */
__device__ __forceinline__ U128 fx_of(float w) {
  const uint32_t b = __float_as_uint(w);
  const int e = (int)(b >> 23);
  if (b == 0u || (b >> 31) != 0u || e == 0) return u128(0ull, 0ull); /* 0, negative, subnormal */
  const unsigned long long m = (unsigned long long)((b & 0x7fffffu) | 0x800000u);
  const int sh = (e > 127 ? 127 : e) - 70; /* w = m 2^(e - 150) = (m 2^(e - 70)) 2^-80 */
  if (sh >= 0) return u128(m << sh, sh > 40 ? m >> (64 - sh) : 0ull);
  return u128(-sh < 64 ? m >> (-sh) : 0ull, 0ull);
}

__device__ __forceinline__ double fx_to_double(U128 x) {
  return (__ull2double_rn(x.hi) * 18446744073709551616.0 + __ull2double_rn(x.lo)) * 0x1p-80;
}

/* The smallest fixed-point value >= t (t >= 0, t <= 2^40). */
__device__ __forceinline__ U128 ceil_fx(double t) {
  if (!(t > 0.0)) return u128(0ull, 0ull);
  const double s = t * 65536.0; /* t 2^80 / 2^64, exact */
  const double h = floor(s);
  const double rem = s - h; /* exact, [0, 1) */
  return u128(__double2ull_ru(rem * 18446744073709551616.0), (unsigned long long)h);
}

/* The CPU's max_block order: a float's bits as a signed integer with the floats' order. */
__device__ __forceinline__ int32_t key_s(float f) {
  const int32_t b = (int32_t)__float_as_uint(f);
  return b ^ ((b >> 31) & 0x7fffffff);
}
__device__ __forceinline__ float key_s_inv(int32_t k) {
  return __uint_as_float((uint32_t)(k ^ ((k >> 31) & 0x7fffffff)));
}

/* Best (key, id) of Gumbel-max as one 64-bit value: larger key first, then the lower id. 0: none. */
__device__ __forceinline__ unsigned long long pack_best(float key, uint32_t id) {
  return ((unsigned long long)lmf_lg_fkey(key) << 32) | (unsigned long long)(0xffffffffu - id);
}
__device__ __forceinline__ int32_t unpack_id(unsigned long long p) {
  return (int32_t)(0xffffffffu - (uint32_t)(p & 0xffffffffull));
}

__device__ __forceinline__ bool desc_le(float x, uint32_t id, uint64_t cut) {
  return lmf_lg_ord_desc(x, id) <= cut;
}

/* ---- Warp and block reductions (256 threads; every thread gets the result) --------------------- */

struct Red {
  unsigned long long a[kWarps];
  unsigned long long b[kWarps];
  unsigned long long c[kWarps];
};

enum { OP_SUM = 0, OP_MIN = 1, OP_MAX = 2 };

template <int OP>
__device__ __forceinline__ long long op_ll(long long x, long long y) {
  return OP == OP_SUM ? x + y : OP == OP_MIN ? (y < x ? y : x) : (y > x ? y : x);
}

template <int OP>
__device__ __forceinline__ long long warp_reduce_ll(long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = op_ll<OP>(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

template <int OP>
__device__ long long block_reduce_ll(long long v, Red &r) {
  v = warp_reduce_ll<OP>(v);
  if (lane_id() == 0) r.a[warp_id()] = (unsigned long long)v;
  __syncthreads();
  long long s = (long long)r.a[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) s = op_ll<OP>(s, (long long)r.a[i]);
  __syncthreads();
  return s;
}

__device__ __forceinline__ unsigned long long warp_max_u64(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long t = __shfl_xor_sync(kFull, v, o);
    v = t > v ? t : v;
  }
  return v;
}

__device__ unsigned long long block_max_u64(unsigned long long v, Red &r) {
  v = warp_max_u64(v);
  if (lane_id() == 0) r.a[warp_id()] = v;
  __syncthreads();
  unsigned long long s = r.a[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) s = r.a[i] > s ? r.a[i] : s;
  __syncthreads();
  return s;
}

__device__ __forceinline__ U128 warp_sum_u128(U128 v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    U128 t;
    t.lo = __shfl_xor_sync(kFull, v.lo, o);
    t.hi = __shfl_xor_sync(kFull, v.hi, o);
    v = add(v, t);
  }
  return v;
}

__device__ U128 block_sum_u128(U128 v, Red &r) {
  v = warp_sum_u128(v);
  if (lane_id() == 0) {
    r.a[warp_id()] = v.lo;
    r.b[warp_id()] = v.hi;
  }
  __syncthreads();
  U128 s = u128(0ull, 0ull);
#pragma unroll
  for (int i = 0; i < kWarps; ++i) s = add(s, u128(r.a[i], r.b[i]));
  __syncthreads();
  return s;
}

/* Inclusive prefix sum over the block's threads in thread order (exact). */
__device__ U128 block_incl_scan_u128(U128 v, Red &r) {
  const int lane = lane_id();
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    U128 t;
    t.lo = __shfl_up_sync(kFull, v.lo, o);
    t.hi = __shfl_up_sync(kFull, v.hi, o);
    if (lane >= o) v = add(v, t);
  }
  if (lane == 31) {
    r.a[warp_id()] = v.lo;
    r.b[warp_id()] = v.hi;
  }
  __syncthreads();
  U128 pre = u128(0ull, 0ull);
  for (int i = 0; i < warp_id(); ++i) pre = add(pre, u128(r.a[i], r.b[i]));
  __syncthreads();
  return add(pre, v);
}

/* Adds v to a 128-bit counter in global memory: the low word's carries go to the high word, so the
 * result is exact whatever the order of the adds. */
__device__ __forceinline__ void atomic_add_u128(U128 *p, U128 v) {
  if (is_zero(v)) return;
  const unsigned long long old = atomicAdd(&p->lo, v.lo);
  const unsigned long long h = v.hi + ((old + v.lo < old) ? 1ull : 0ull);
  if (h) atomicAdd(&p->hi, h);
}

/* ---- Reading the models ------------------------------------------------------------------------- */

/* One model's row as seen by one output row: z(v) for v < lim, -inf beyond. */
struct MV {
  const void *base; /* dense: element 0 of the input row; sparse: the dense fp32 row in the workspace */
  int64_t lim;
  int32_t dtype;
  int32_t sparse;
  int32_t vec; /* 16-byte aligned base: 8-token groups load as 16-byte vectors */
  float fill;
  float tau;
};

__device__ __forceinline__ MV make_mv(const KP &p, const Row &R, int k, int64_t row) {
  const lmf_lg_model &m = p.job.models[k];
  MV v;
  v.lim = m.vocab < p.job.vocab_out ? (int64_t)m.vocab : (int64_t)p.job.vocab_out;
  v.tau = m.temperature;
  v.fill = m.sparse_fill;
  if (m.sparse_index) {
    v.sparse = 1;
    v.dtype = LMF_DTYPE_F32;
    v.base = p.sp[k] + row * p.ystride;
    v.vec = 1;
  } else {
    v.sparse = 0;
    v.dtype = m.dtype;
    const int64_t es = m.dtype == LMF_DTYPE_F32 ? 4 : 2;
    v.base = static_cast<const char *>(m.logits) + R.in_row[k] * m.row_stride * es;
    v.vec = (reinterpret_cast<uintptr_t>(v.base) & 15u) == 0u;
  }
  return v;
}

/* The bias row as an fp32 "model" of width V_out. */
__device__ __forceinline__ MV bias_mv(const KP &p, int64_t row) {
  MV v;
  v.base = p.job.bias + row * p.job.bias_row_stride;
  v.lim = p.job.vocab_out;
  v.dtype = LMF_DTYPE_F32;
  v.sparse = 0;
  v.vec = (reinterpret_cast<uintptr_t>(v.base) & 15u) == 0u;
  v.fill = 0.0f;
  v.tau = 1.0f;
  return v;
}

__device__ __forceinline__ float elem(const void *base, int32_t dtype, int64_t i) {
  if (dtype == LMF_DTYPE_F32) return static_cast<const float *>(base)[i];
  const uint16_t h = static_cast<const uint16_t *>(base)[i];
  return dtype == LMF_DTYPE_BF16 ? lmf_bf16_to_f32(h) : lmf_f16_to_f32(h);
}

__device__ __forceinline__ float sparse_value(const MV &m, float x) {
  return __float_as_uint(x) == kSentinel ? m.fill : x;
}

/* z(v), -inf for v >= lim. */
__device__ __forceinline__ float load1(const MV &m, int64_t v) {
  if (v >= m.lim) return ninf();
  const float x = elem(m.base, m.dtype, v);
  return m.sparse ? sparse_value(m, x) : x;
}

/* z(v .. v + 7) (v a multiple of 8), -inf at and beyond lim. */
__device__ __forceinline__ void load8(const MV &m, int64_t v, float x[kPer]) {
  if (m.vec && v + kPer <= m.lim) {
    if (m.dtype == LMF_DTYPE_F32) {
      const float4 *q = reinterpret_cast<const float4 *>(static_cast<const float *>(m.base) + v);
      const float4 a = q[0], b = q[1];
      x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
      x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
    } else {
      const uint4 u = *reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(m.base) + v);
      const uint32_t w[4] = {u.x, u.y, u.z, u.w};
      const bool bf = m.dtype == LMF_DTYPE_BF16;
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const uint16_t lo = (uint16_t)(w[q] & 0xffffu), hi = (uint16_t)(w[q] >> 16);
        x[2 * q] = bf ? lmf_bf16_to_f32(lo) : lmf_f16_to_f32(lo);
        x[2 * q + 1] = bf ? lmf_bf16_to_f32(hi) : lmf_f16_to_f32(hi);
      }
    }
    if (m.sparse) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) x[j] = sparse_value(m, x[j]);
    }
  } else {
#pragma unroll
    for (int j = 0; j < kPer; ++j) x[j] = load1(m, v + j);
  }
}

/* Asks for z(v .. v + 7) ahead of its load: into L1 for the chunk at hand, into L2 for the block's next
 * one. The combine pass loads the models one after another; with every model's line already on its
 * way, a chunk waits about one memory latency instead of one per model. A hint: nothing is read. */
__device__ __forceinline__ void prefetch8(const MV &m, int64_t v, bool l1) {
  if (v >= m.lim) return;
  const char *a = static_cast<const char *>(m.base) + v * (m.dtype == LMF_DTYPE_F32 ? 4 : 2);
#if defined(__CUDA_ARCH__)
  if (l1) asm volatile("prefetch.global.L1 [%0];" ::"l"(a));
  else asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
#else
  (void)a, (void)l1; /* the CPU emulator (tests/emu) */
#endif
}

__device__ __forceinline__ void load8_f32(const float *p, float x[kPer]) {
  const float4 a = reinterpret_cast<const float4 *>(p)[0], b = reinterpret_cast<const float4 *>(p)[1];
  x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w;
  x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
}

__device__ __forceinline__ void store8_f32(float *p, const float x[kPer]) {
  reinterpret_cast<float4 *>(p)[0] = make_float4(x[0], x[1], x[2], x[3]);
  reinterpret_cast<float4 *>(p)[1] = make_float4(x[4], x[5], x[6], x[7]);
}

/* ---- Row bookkeeping ---------------------------------------------------------------------------- */

__device__ __forceinline__ int32_t resolve_flags(uint32_t f) {
  return (f & RF_BAD_INDEX) ? (int32_t)LMF_ROW_BAD_INDEX : (f & RF_BAD) ? (int32_t)LMF_ROW_NONFINITE
                                                                        : (int32_t)LMF_ROW_OK;
}

/* What the survivor test reads of a row, in registers. */
struct Surv {
  float ymax;
  int32_t topk_on, topp_on;
  uint64_t topk_cut, topp_cut;
};

__device__ __forceinline__ Surv surv_of(const Row &R) {
  Surv s;
  s.ymax = R.ymax;
  s.topk_on = R.topk_on;
  s.topp_on = R.topp_on;
  s.topk_cut = R.topk_cut;
  s.topp_cut = R.topp_cut;
  return s;
}

/* The survivors of the filters after the masks: top-k and top-p cuts (descending order), min-p. */
__device__ __forceinline__ bool survives(const Surv &S, float y, int64_t v, bool minp, float log_min_p) {
  if (lmf_lg_is_ninf(y)) return false;
  if (S.topk_on && !desc_le(y, (uint32_t)v, S.topk_cut)) return false;
  if (S.topp_on && !desc_le(y, (uint32_t)v, S.topp_cut)) return false;
  if (minp && !(LMF_FSUB(y, S.ymax) >= log_min_p)) return false;
  return true;
}

/* After the cuts: the LSE pass only where an output needs the LSE (the sample needs only the cuts). */
__device__ __forceinline__ void lse_or_sample(Row &R) {
  if (R.need_lse) R.do_final = 1;
  else R.do_sample = !R.greedy;
}

/* The CPU's after_temp: the step after the combine (or GeDi temperature) merge. One thread. */
__device__ void after_temp(const lmf_lg_job &j, Row &R) {
  if (!R.need_dist) return; /* greedy, no distribution outputs: the token is the argmax */
  if (j.top_k > 0 && R.nfin > (int64_t)j.top_k) {
    R.search = SK_TOPK;
  } else if (j.top_p < 1.0f) {
    R.search = SK_TOPP;
    R.wfree = R.want_sum;
  } else if (!R.need_lse) {
    R.do_sample = 1; /* sampling needs no LSE (min-p reads only the max) */
  } else if (R.want_sum && j.min_p <= 0.0f) {
    R.lse = (float)((double)R.ymax + log(R.total)); /* every finite token survives */
    R.do_sample = !R.greedy;
  } else {
    R.do_final = 1;
  }
}

__device__ __forceinline__ int32_t sampled_token(const Row &R) {
  return R.best ? unpack_id(R.best) : R.yarg;
}

/* Where a chunk body runs: its row, its chunks (first, first + step, ...) and the row of Y it uses.
 * The separate kernels map block -> (row, first chunk) with Y row = row; the fused kernel maps a
 * cluster to a row at a time and gives it a Y slot of its own. */
struct Part {
  int64_t row, first, step, ys;
  float *ysm; /* fused kernel: this block's chunks of Y in shared memory (chunk first + i step at
               * offset i kChunk); null elsewhere */
};
__device__ __forceinline__ Part grid_part(const KP &p) {
  Part w;
  w.row = (int64_t)blockIdx.x / p.gx;
  w.first = (int64_t)blockIdx.x % p.gx;
  w.step = p.gx;
  w.ys = w.row;
  w.ysm = nullptr;
  return w;
}

/* Chunk c of this block's Y: the copy in shared memory where there is one, else the row in global. */
__device__ __forceinline__ const float *y_chunk(const Part &w, const float *Yr, int64_t c) {
  return w.ysm ? w.ysm + ((c - w.first) / w.step) * kChunk : Yr + c * kChunk;
}

/* This thread's tokens of chunk c (token c kChunk + q kThreads + threadIdx.x), every load issued before
 * any value is used: one memory latency per chunk, not eight. 0 past V (callers skip those tokens). */
__device__ __forceinline__ void load_strided(const float *chunk, int64_t c, int64_t V, float x[kPer]) {
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t off = (int64_t)q * kThreads + threadIdx.x;
    x[q] = c * kChunk + off < V ? chunk[off] : 0.0f;
  }
}

/* ---- Init ----------------------------------------------------------------------------------------- */

/* The row's scalars and first status into R, its accumulators zeroed (one thread). */
__device__ void init_row(const KP &p, int64_t row, Row &R) {
  const lmf_lg_job &j = p.job;
  const bool verify = j.mode == LMF_LG_MODE_VERIFY;
  uint32_t flags = 0;
  const float T = j.temperature_rows ? j.temperature_rows[row] : j.temperature;
  if (!lmf_isfinite_f32(T) || T < 0.0f) flags |= RF_BAD;
  const int greedy = T == 0.0f;
  R.T = T;
  R.greedy = greedy;
  R.Teff = greedy ? 1.0f : T;
  const int gf = j.gedi_pos_model >= 0 && j.gedi_filter_p > 0.0f;
  R.fuse_T = !gf;
  const int64_t L1 = (int64_t)j.draft_len + 1;
  const int64_t sidx = verify ? row / L1 : row;
  const uint64_t pos = verify ? (uint64_t)(row % L1) : 0ull;
  uint64_t seed = 0, off = 0;
  if (!greedy) {
    seed = j.seeds ? j.seeds[sidx] : 0ull;
    off = j.offsets ? j.offsets[sidx] : 0ull;
  }
  R.seed = seed;
  R.goff = off + pos;
  const int need_lse = verify || j.token_logprob || j.lse || j.logprobs;
  const int need_dist = !greedy || (!verify && need_lse);
  R.need_lse = need_lse;
  R.need_dist = need_dist;
  R.want_sum = !gf && need_dist && j.top_k == 0 && (j.top_p < 1.0f || (need_lse && j.min_p <= 0.0f));
  uint32_t comb = 0, rd = 0;
  for (int k = 0; k < j.num_models; ++k) {
    const lmf_lg_model &m = j.models[k];
    R.w[k] = 0.0f;
    R.in_row[k] = 0;
    if (!m.roles) continue;
    int c_on = 0;
    if (m.roles & LMF_LG_ROLE_COMBINE) {
      const float c = m.coeff_rows ? m.coeff_rows[row] : m.coeff;
      if (!lmf_isfinite_f32(c)) {
        flags |= RF_BAD;
      } else if (c != 0.0f) {
        c_on = 1;
        R.w[k] = lmf_lg_weight(c, m.temperature);
      }
    }
    const int use = c_on || (m.roles & ~(uint32_t)LMF_LG_ROLE_COMBINE) != 0u;
    if (!use) continue;
    const int64_t r = m.row_index ? (int64_t)m.row_index[row] : row;
    if (r < 0) {
      flags |= RF_BAD_INDEX;
      continue;
    }
    R.in_row[k] = r;
    rd |= 1u << k;
    if (c_on) comb |= 1u << k;
  }
  R.comb = comb;
  R.rd = rd;
  R.gL_pos = 0.0f;
  R.gL_neg = 0.0f;
  R.gt = 1.0f;
  if (j.gedi_pos_model >= 0) {
    const float Lp = j.gedi_L_pos[row], Ln = j.gedi_L_neg[row];
    const int32_t n = j.gedi_n[row];
    if (!lmf_isfinite_f32(Lp) || !lmf_isfinite_f32(Ln) || n < 0) flags |= RF_BAD;
    R.gL_pos = Lp;
    R.gL_neg = Ln;
    R.gt = (float)((int64_t)n + 1);
  }
  R.flags = flags;
  R.status = resolve_flags(flags);
  R.search = SK_NONE;
  R.wfree = 0;
  R.prefix = 0;
  R.nuc_on = R.gf_on = R.topk_on = R.topp_on = 0;
  R.do_final = R.do_sample = 0;
  R.yarg = 0;
  R.plaus_thr = 0.0f;
  R.ymax = ninf();
  R.lse = 0.0f;
  for (int s = 0; s < kNst; ++s) {
    R.smax[s] = ninf();
    R.slse[s] = ninf();
  }
  for (int k = 0; k < 4; ++k) {
    R.win_c[k] = 0u;
    R.win_m[k] = u128(0ull, 0ull);
  }
  for (int k = 0; k < kClasses; ++k) {
    R.cls_c[k] = 0u;
    R.cls_m[k] = u128(0ull, 0ull);
  }
  R.ltot = u128(0ull, 0ull);
  R.sup = p.lstream && need_dist;
  R.ymiss = p.ylazy && R.sup;
  R.ytok = 0.0f;
  R.cdone = 0u;
  R.wdone = 0u;
  R.nfin = 0;
  R.nuc_cut = R.gf_cut = R.topk_cut = R.topp_cut = 0ull;
  R.total = 0.0;
  R.flo = R.target = R.acc = u128(0ull, 0ull);
  R.best = 0ull;
}

/* One warp per row: the row's state (init_row) and its histogram zeroed. */
__device__ void b_init(const KP &p, int64_t row) {
  const int lane = lane_id();
  U128 *h = p.hist + row * kBins;
  for (int i = lane; i < kBins; i += 32) h[i] = u128(0ull, 0ull);
  if (lane == 0) init_row(p, row, p.rows[row]);
}

/* ---- Sparse rows ---------------------------------------------------------------------------------- */

/* The dense row of sparse model p.model for each output row reading it: the sentinel on [0, lim). */
__global__ void __launch_bounds__(kThreads) k_sp_fill(const __grid_constant__ KP p) {
  pdl_enter();
  const int k = p.model;
  const lmf_lg_model &m = p.job.models[k];
  const int64_t lim = m.vocab < p.job.vocab_out ? (int64_t)m.vocab : (int64_t)p.job.vocab_out;
  const int64_t total = p.nrows * lim;
  uint32_t *buf = reinterpret_cast<uint32_t *>(p.sp[k]);
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * kThreads) {
    const int64_t b = i / lim, v = i - b * lim;
    if ((p.rows[b].rd >> k) & 1u) buf[b * p.ystride + v] = kSentinel;
  }
}

/* Scatters the listed values; an id outside [0, lim) or listed twice: BAD_INDEX; NaN / +inf: BAD. */
__global__ void __launch_bounds__(kThreads) k_sp_scatter(const __grid_constant__ KP p) {
  pdl_enter();
  const int k = p.model;
  const lmf_lg_model &m = p.job.models[k];
  const int64_t lim = m.vocab < p.job.vocab_out ? (int64_t)m.vocab : (int64_t)p.job.vocab_out;
  const int64_t sk = m.sparse_k;
  const int64_t total = p.nrows * sk;
  uint32_t *buf = reinterpret_cast<uint32_t *>(p.sp[k]);
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * kThreads) {
    const int64_t b = i / sk, jj = i - b * sk;
    Row &R = p.rows[b];
    if (!((R.rd >> k) & 1u)) continue;
    const int64_t e = R.in_row[k] * m.row_stride + jj;
    const int32_t id = m.sparse_index[e];
    const float z = elem(m.logits, m.dtype, e);
    uint32_t f = lmf_lg_is_bad(z) ? (uint32_t)RF_BAD : 0u;
    if (id < 0 || (int64_t)id >= lim) {
      f |= RF_BAD_INDEX;
    } else {
      const uint32_t zb = __float_as_uint(z);
      const uint32_t bits = (zb & 0x7fffffffu) > 0x7f800000u ? kCanonNan : zb;
      const uint32_t old = atomicExch(buf + b * p.ystride + id, bits);
      if (old != kSentinel) f |= RF_BAD_INDEX;
    }
    if (f) atomicOr(&R.flags, f);
  }
}

/* The statuses once the sparse rows are checked. */
__global__ void __launch_bounds__(kThreads) k_status(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (row >= p.nrows) return;
  Row &R = p.rows[row];
  R.status = resolve_flags(R.flags);
}

/* ---- Statistics of the mask, GeDi and draft models -------------------------------------------- */

__device__ void b_stats(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  const Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  const int64_t V = p.job.vocab_out;
  const int nuc_s = p.role_stat[ST_NUC];
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    const int64_t v = c * kChunk + (int64_t)threadIdx.x * kPer;
    const bool inr = v < V;
    int bad_all = 0;
    for (int s = 0; s < p.nstat; ++s) {
      const MV mv = make_mv(p, R, p.stat_model[s], row);
      float x[kPer];
      int bad = 0;
      if (inr) {
        load8(mv, v, x);
#pragma unroll
        for (int j = 0; j < kPer; ++j) {
          bad |= lmf_lg_is_bad(x[j]);
          x[j] = lmf_lg_scale_x(x[j], mv.tau);
        }
        if (s == nuc_s) store8_f32(p.D + row * p.ystride + v, x);
      } else {
#pragma unroll
        for (int j = 0; j < kPer; ++j) x[j] = ninf();
      }
      int32_t mk = key_s(ninf());
#pragma unroll
      for (int j = 0; j < kPer; ++j) mk = key_s(x[j]) > mk ? key_s(x[j]) : mk;
      const float mx = key_s_inv((int32_t)block_reduce_ll<OP_MAX>(mk, red));
      U128 sum = u128(0ull, 0ull);
      if (!lmf_lg_is_ninf(mx)) {
#pragma unroll
        for (int j = 0; j < kPer; ++j) sum = add(sum, fx_of(lmf_lg_exp_neg(LMF_FSUB(x[j], mx))));
      }
      sum = block_sum_u128(sum, red);
      bad = (int)block_reduce_ll<OP_MAX>(bad, red);
      bad_all |= bad;
      if (threadIdx.x == 0) {
        SPart &P = p.spart[row * p.nchunks + c];
        P.smax[s] = mx;
        P.ssum[s] = lmf_lg_is_ninf(mx) ? 0.0 : fx_to_double(sum);
      }
    }
    if (threadIdx.x == 0) p.spart[row * p.nchunks + c].bad = bad_all;
  }
}

/* Contiguous chunk ranges per lane of a warp-per-row merge (merged in lane order = chunk order). */
__device__ __forceinline__ void lane_range(int64_t n, int64_t *b, int64_t *e) {
  const int64_t per = (n + 31) / 32;
  *b = per * lane_id();
  *e = *b + per < n ? *b + per : n;
  if (*b > n) *b = n;
}

/* One warp per row: max and LSE per statistics model, merged over chunks in order (the CPU's
 * formula: M = max, S = sum of ssum e^(smax - M) in double); statuses; the nucleus search. */
__global__ void __launch_bounds__(kThreads) k_stats_merge(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kWarps + warp_id();
  if (row >= p.nrows) return;
  Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  const lmf_lg_job &j = p.job;
  const SPart *P = p.spart + row * p.nchunks;
  int64_t c0, c1;
  lane_range(p.nchunks, &c0, &c1);
  int bad = 0;
  for (int64_t c = c0; c < c1; ++c) bad |= P[c].bad;
  bad = (int)warp_reduce_ll<OP_MAX>(bad);
  for (int s = 0; s < p.nstat; ++s) {
    float M = ninf();
    for (int64_t c = c0; c < c1; ++c)
      if (P[c].smax[s] > M) M = P[c].smax[s];
    float Mall = ninf();
    for (int i = 0; i < 32; ++i) {
      const float o = __shfl_sync(kFull, M, i);
      if (o > Mall) Mall = o;
    }
    double S = 0.0;
    if (!lmf_lg_is_ninf(Mall))
      for (int64_t c = c0; c < c1; ++c)
        if (!lmf_lg_is_ninf(P[c].smax[s])) S += P[c].ssum[s] * exp((double)P[c].smax[s] - (double)Mall);
    double Sall = 0.0;
    for (int i = 0; i < 32; ++i) Sall += __shfl_sync(kFull, S, i);
    const float lse = lmf_lg_is_ninf(Mall) ? Mall : (float)((double)Mall + log(Sall));
    if (lane_id() == 0)
      for (int r = 0; r < kNst; ++r)
        if (p.role_stat[r] == s) {
          R.smax[r] = Mall;
          R.slse[r] = lse;
        }
  }
  if (lane_id() != 0) return;
  if (bad) {
    R.status = LMF_ROW_NONFINITE;
    return;
  }
  for (int r = ST_PLAUS; r <= ST_GNEG; ++r)
    if (p.role_stat[r] >= 0 && lmf_lg_is_ninf(R.smax[r])) {
      R.status = LMF_ROW_ALL_MASKED;
      return;
    }
  if (p.role_stat[ST_PLAUS] >= 0) R.plaus_thr = LMF_FADD(R.smax[ST_PLAUS], j.plaus_log_alpha);
  if (p.role_stat[ST_NUC] >= 0 && j.nucleus_p < 1.0f) R.search = SK_NUC;
}

/* ---- List mode's candidate lists --------------------------------------------------------------- */

/* The list class of a token with d = 2 (ymax - y) (kClasses: none; -inf or NaN d's too). */
__device__ __forceinline__ int class_of(float d) {
  return d < 4.0f    ? 0
         : d < 8.0f  ? 1
         : d < 16.0f ? 2
         : d < 20.0f ? 3
         : d < 24.0f ? 4
         : d < 32.0f ? 5
                     : kClasses;
}
/* The class that ends each of the CPU's windows d < 4, 8, 16, 32. */
__device__ __forceinline__ int cpu_window_class(int w) { return w < 3 ? w : kClasses - 1; }

/* Entries a class list keeps (its stride in the workspace is lcap; counts go on past the cap, and a
 * class whose count passes it is not used). Every list is written where HBM traffic counts, so each
 * keeps no more than a cut can use: the window pass's, kListCap (a list cut's window holds at most
 * that many tokens in all); the combine pass's (SUP), lcap for classes 0 .. 2 (their counts are
 * loose: a block's running max is below the row's) but kWinCap past 8 nats, where only the CPU's
 * 16-nat window of at most kWinCap tokens can use them. */
template <bool SUP>
__device__ __forceinline__ unsigned list_cap(int cls, unsigned lcap) {
  /* SUP needs no min with lcap: the combine fills lists only where a block walks kSupChunks chunks,
   * so V > 3 kChunk and lcap = min(V, kSupCap) > kWinCap (and a min there costs the CM_SUP combine a
   * spill on sm_80). */
  if (SUP) return cls < 3 ? lcap : (unsigned)kWinCap;
  return lcap < (unsigned)kListCap ? lcap : (unsigned)kListCap;
}

/* Appends (y, v) to the list of class cls (0 .. kClasses - 1; kClasses: none) of the row: one atomic
 * per class present in the warp. Every lane of the warp calls it. Counts go past the cap; entries
 * not. */
template <bool SUP>
__device__ __forceinline__ void list_append(Row *R, uint2 *L, unsigned lcap, int cls, float y, int64_t v) {
  const int lane = lane_id();
#pragma unroll
  for (int k = 0; k < kClasses; ++k) {
    const unsigned m = __ballot_sync(kFull, cls == k);
    if (!m) continue;
    const int leader = __ffs((int)m) - 1;
    unsigned base = 0u;
    if (lane == leader) base = atomicAdd(&R->cls_c[k], (unsigned)__popc(m));
    base = __shfl_sync(kFull, base, leader);
    if (cls == k) {
      const unsigned slot = base + (unsigned)__popc(m & ((1u << lane) - 1u));
      if (slot < list_cap<SUP>(k, lcap)) L[k * lcap + slot] = make_uint2(__float_as_uint(y), (uint32_t)v);
    }
  }
}

/* The combine pass's part of list mode (KP::lstream): this thread's tokens v .. v + 7 of a chunk go to
 * the lists by their class with respect to the block's running max (the max so far of its chunks,
 * this one included). That max is at most the row's, so a token's class here is at most its true
 * class, and the lists of classes 0 .. k hold a superset of window k's tokens, which the row's first
 * cut filters (sup_items). */
__device__ __forceinline__ void list_append_chunk(const KP &p, int64_t row, float runmax, const float y[kPer],
                                                  int64_t v) {
  Row *R = &p.rows[row];
  uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const float d = LMF_FMUL(LMF_FSUB(runmax, y[q]), 2.0f); /* -inf y: +inf (or NaN): no class */
    const int cls = class_of(d);
    if (__any_sync(kFull, cls < kClasses)) list_append<true>(R, L, (unsigned)p.lcap, cls, y[q], v + q);
  }
}

/* The row's values a search reads, in registers. */
struct SRow {
  float smax_nuc, ymax;
  int topk_on;
  uint64_t topk_cut;
};

__device__ __forceinline__ SRow srow_of(const Row &R) {
  SRow s;
  s.smax_nuc = R.smax[ST_NUC];
  s.ymax = R.ymax;
  s.topk_on = R.topk_on;
  s.topk_cut = R.topk_cut;
  return s;
}

/* Token v in the search's order: its 32-bit order key, its mass (fixed point) and whether it takes
 * part (mass > 0 in fp32; top-k: finite). */
__device__ __forceinline__ bool search_item_v(int kind, const SRow &s, float yval, float dval, int64_t v,
                                              uint32_t *key, U128 *fx, float *yv) {
  switch (kind) {
    case SK_NUC: {
      const float x = dval;
      const float w = lmf_lg_exp_neg(LMF_FSUB(x, s.smax_nuc));
      *key = ~lmf_lg_fkey(x);
      *fx = fx_of(w);
      *yv = x;
      return w > 0.0f;
    }
    case SK_GF: {
      const float d = dval, y = yval;
      const float w = lmf_lg_exp_neg(LMF_FSUB(y, s.ymax));
      *key = lmf_lg_fkey(d);
      *fx = fx_of(w);
      *yv = y;
      return w > 0.0f;
    }
    case SK_TOPK: {
      const float y = yval;
      *key = ~lmf_lg_fkey(y);
      *fx = u128(1ull, 0ull);
      *yv = y;
      return !lmf_lg_is_ninf(y);
    }
    default: {
      const float y = yval;
      const bool in = !lmf_lg_is_ninf(y) && (!s.topk_on || desc_le(y, (uint32_t)v, s.topk_cut));
      const float w = in ? lmf_lg_exp_neg(LMF_FSUB(y, s.ymax)) : 0.0f;
      *key = ~lmf_lg_fkey(y);
      *fx = fx_of(w);
      *yv = y;
      return w > 0.0f;
    }
  }
}

/* The window pass's step for one token of each lane (list mode; every lane of the warp calls it): its
 * class by d = 2 (y_max - y) if it takes part in the search, its mass added to its class's and to the
 * total, and the token appended to its class's list. */
__device__ __forceinline__ void window_item(int kind, const SRow &s, Row *R, uint2 *L, unsigned lcap, float yval,
                                            float dval, int64_t v, int64_t V, U128 cm[kClasses], U128 &tot) {
  uint32_t key = 0;
  U128 fx = u128(0ull, 0ull);
  float y = 0.0f;
  int cls = kClasses;
  const float d = LMF_FMUL(LMF_FSUB(s.ymax, yval), 2.0f); /* -inf y: +inf */
  if (v < V && search_item_v(kind, s, yval, dval, v, &key, &fx, &y)) {
    tot = add(tot, fx);
    cls = class_of(d);
#pragma unroll
    for (int k = 0; k < kClasses; ++k)
      if (cls == k) cm[k] = add(cm[k], fx);
  }
  if (__any_sync(kFull, cls < kClasses)) list_append<false>(R, L, lcap, cls, y, v);
}

/* The end of a window pass's block: its class masses and total added to the row's (atomics). */
__device__ __forceinline__ void window_flush(Row *R, U128 cm[kClasses], U128 tot) {
#pragma unroll
  for (int k = 0; k < kClasses; ++k) {
    const U128 m = warp_sum_u128(cm[k]);
    if (lane_id() == 0) atomic_add_u128(&R->cls_m[k], m);
  }
  tot = warp_sum_u128(tot);
  if (lane_id() == 0) atomic_add_u128(&R->ltot, tot);
}

/* ---- The combine pass ----------------------------------------------------------------------------- */

/* The max of a (max key, packed argmax, count | flag) triple over the block, in one round (one pair
 * of barriers); every thread gets the result. */
__device__ void block_reduce3(int32_t *mk, unsigned long long *pk, long long *cb, Red &r) {
  int32_t m = *mk;
  unsigned long long q = *pk;
  long long s = *cb;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const int32_t m2 = __shfl_xor_sync(kFull, m, o);
    const unsigned long long q2 = __shfl_xor_sync(kFull, q, o);
    m = m2 > m ? m2 : m;
    q = q2 > q ? q2 : q;
    s += __shfl_xor_sync(kFull, s, o);
  }
  if (lane_id() == 0) {
    r.a[warp_id()] = (unsigned long long)(uint32_t)m;
    r.b[warp_id()] = q;
    r.c[warp_id()] = (unsigned long long)s;
  }
  __syncthreads();
  m = (int32_t)(uint32_t)r.a[0];
  q = r.b[0];
  s = (long long)r.c[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) {
    const int32_t m2 = (int32_t)(uint32_t)r.a[i];
    m = m2 > m ? m2 : m;
    q = r.b[i] > q ? r.b[i] : q;
    s += (long long)r.c[i];
  }
  __syncthreads();
  *mk = m;
  *pk = q;
  *cb = s;
}

/* Writes the chunk's partial (max, first argmax, finite count, NaN / +inf flag, sum e^(y - max)). The
 * first four come from one block reduction: the max key (the CPU's max_block order); the argmax as
 * the largest (value with -0 folded into +0, lowest id), i.e. the first token equal (==) to the max,
 * as the CPU's first_index; count and flag as one sum. The sum, which needs the max, takes a second.
 * Returns the chunk's max. */
__device__ __forceinline__ float chunk_partial(const KP &p, int64_t row, int64_t c, const float y[kPer],
                                               const int64_t id[kPer], int bad, bool want_sum, Red &red) {
  int32_t mk = key_s(ninf());
  unsigned long long pk = 0ull;
  long long cb = bad ? (1ll << 32) : 0ll;
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    mk = key_s(y[j]) > mk ? key_s(y[j]) : mk;
    const uint32_t fk = (uint32_t)key_s(LMF_FADD(y[j], 0.0f)) ^ 0x80000000u; /* -0 + 0 = +0 */
    const unsigned long long e = ((unsigned long long)fk << 32) | (0xffffffffu - (uint32_t)id[j]);
    pk = e > pk ? e : pk;
    cb += !lmf_lg_is_ninf(y[j]);
  }
  block_reduce3(&mk, &pk, &cb, red);
  const float mx = key_s_inv(mk);
  double osum = 0.0;
  if (want_sum && !lmf_lg_is_ninf(mx)) {
    U128 s = u128(0ull, 0ull);
#pragma unroll
    for (int j = 0; j < kPer; ++j) s = add(s, fx_of(lmf_lg_exp_neg(LMF_FSUB(y[j], mx))));
    osum = fx_to_double(block_sum_u128(s, red));
  }
  if (threadIdx.x == 0) {
    CPart &P = p.cpart[row * p.nchunks + c];
    P.max = mx;
    P.arg = (int32_t)(0xffffffffu - (uint32_t)pk);
    P.cnt = (int32_t)(cb & 0xffffffffll);
    P.bad = (cb >> 32) != 0;
    P.osum = osum;
  }
  return mx;
}

__device__ void b_cmerge(const KP &p, int64_t row, int level);

/* KP::cfold, at the end of a combine block: the row's last block to finish merges the row's partials
 * (each block's partials are written, and fenced, before it counts itself), so the step needs no merge
 * kernel. Block-uniform. */
__device__ void combine_done(const KP &p, int64_t row) {
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) s_last = atomicAdd(&p.rows[row].cdone, 1u) == (unsigned)p.gx - 1u;
  __syncthreads();
  if (s_last && warp_id() == 0) {
    __threadfence();
    b_cmerge(p, row, 0);
  }
}

/* s(v .. v + 7) of the models combined in this row (Row::comb), in model order: the coefficient
 * fold; bad |= a NaN / +inf among them. 0 when no model is combined. */
__device__ __forceinline__ void sum_models(const KP &p, const Row &R, int64_t row, int64_t v, float y[kPer],
                                           int *bad) {
  const uint32_t comb = R.comb;
  bool first = true;
  for (int k = 0; k < p.job.num_models; ++k) {
    if (!((comb >> k) & 1u)) continue;
    const MV mv = make_mv(p, R, k, row);
    const float wk = R.w[k];
    float x[kPer];
    load8(mv, v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      *bad |= lmf_lg_is_bad(x[q]);
      y[q] = lmf_lg_term(first ? 0.0f : y[q], wk, x[q]);
    }
    first = false;
  }
  if (first) {
#pragma unroll
    for (int q = 0; q < kPer; ++q) y[q] = 0.0f;
  }
}

/* The last steps of y(v .. v + 7) after the masks: the bias row, / T, -inf past the row; bad |= a NaN /
 * +inf in the bias or in the result. */
__device__ __forceinline__ void bias_and_T(const KP &p, int64_t row, int64_t v, float Tdiv, float y[kPer],
                                           int *bad) {
  const int64_t V = p.job.vocab_out;
  if (p.job.bias) {
    const MV mb = bias_mv(p, row);
    float b[kPer];
    load8(mb, v, b);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      *bad |= lmf_lg_is_bad(b[q]);
      y[q] = lmf_lg_term(y[q], 1.0f, b[q]);
    }
  }
  if (Tdiv != 1.0f) {
#pragma unroll
    for (int q = 0; q < kPer; ++q) y[q] = LMF_FDIV(y[q], Tdiv);
  }
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    if (v + q >= V) y[q] = ninf(); /* past the row */
    *bad |= lmf_lg_is_bad(y[q]);
  }
}

/* What a combine pass does besides s(v): CM_SUP also fills list mode's candidate lists (KP::lstream;
 * the separate kernels only) and leaves Y unwritten where Row::ymiss. For the rows whose combine lists
 * could not decide their cut (Row::ymiss 2), the same arithmetic once more: CM_RECWIN does the window
 * pass's work on the values it computes (window_item) and writes no Y; CM_RECOMP only writes Y, for
 * a row the general search then needs (in the list cut's block). */
enum { CM_PLAIN = 0, CM_SUP = 1, CM_RECOMP = 2, CM_RECWIN = 3 };

/* GEDI: the GeDi terms are compiled in (its divisions need more registers: 3 blocks per SM). */
template <bool GEDI, int MODE>
__device__ __forceinline__ void b_combine(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  const Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  if ((MODE == CM_RECOMP || MODE == CM_RECWIN) && !(R.ymiss == 2 && R.search == p.kind)) return;
  const lmf_lg_job &j = p.job;
  const int64_t V = j.vocab_out;
  const int K = j.num_models;
  const uint32_t comb = R.comb;
  const bool plaus = j.plaus_model >= 0, nuc = j.nucleus_model >= 0;
  const bool nuc_on = R.nuc_on != 0;
  const uint64_t nuc_cut = R.nuc_cut;
  const float plaus_thr = R.plaus_thr;
  const float Tdiv = R.fuse_T ? R.Teff : 1.0f;
  const bool want_sum = R.want_sum != 0;
  float *Yr = p.Y + w.ys * p.ystride;
  float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  /* CM_RECWIN: the window pass's sums and lists (b_window). */
  const SRow srow = srow_of(R);
  uint2 *const Lw = MODE == CM_RECWIN ? p.cand + row * (int64_t)kClasses * p.lcap : nullptr;
  U128 cm[kClasses], wtot = u128(0ull, 0ull);
#pragma unroll
  for (int k = 0; k < kClasses; ++k) cm[k] = u128(0ull, 0ull);
  /* List mode: the row's first cut takes its candidates from here (see list_append_chunk). */
  const bool sup = MODE == CM_SUP && p.lstream && R.sup;
  float runmax = ninf();
  /* A block with few chunks (small batches: B = 1 spreads a row over the SMs) asks L2 for all of them
   * first, so its later chunks wait on L2 rather than on memory; with many, the next one at a time
   * (below), which keeps the batch's lines from evicting each other. */
  if ((p.nchunks - w.first + w.step - 1) / w.step <= kPrefetchChunks) {
    for (int64_t c = w.first + 2 * w.step; c < p.nchunks; c += w.step) {
      const int64_t v = c * kChunk + (int64_t)threadIdx.x * kPer;
      for (int k = 0; k < K && v < V; ++k)
        if ((comb >> k) & 1u) prefetch8(make_mv(p, R, k, row), v, false);
    }
  }
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    const int64_t v = c * kChunk + (int64_t)threadIdx.x * kPer;
    float y[kPer];
    int64_t id[kPer];
    int bad = 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      id[q] = v + q;
      y[q] = 0.0f;
    }
    if (v < V) {
      const int64_t vn = v + w.step * kChunk; /* this thread's group in the block's next chunk */
      for (int k = 0; k < K; ++k) {
        if (!((comb >> k) & 1u)) continue;
        const MV mv = make_mv(p, R, k, row);
        prefetch8(mv, v, true);
        if (vn < V) prefetch8(mv, vn, false);
      }
      /* The nucleus mask (D holds the nucleus model's x until GeDi's logP replaces it), then GeDi's
       * logP(desired | v) (it does not depend on s; computing it first keeps fewer values live across
       * its divisions). Both are applied to s below, at their places in the CPU's order. */
      uint32_t nkeep = 0xffu;
      if (nuc) {
        float x[kPer];
        load8_f32(Dr + v, x);
#pragma unroll
        for (int q = 0; q < kPer; ++q) {
          const bool keep = !lmf_lg_is_ninf(x[q]) && (!nuc_on || desc_le(x[q], (uint32_t)id[q], nuc_cut));
          if (!keep) nkeep &= ~(1u << q);
        }
      }
      float d[kPer];
      if constexpr (GEDI) {
        const MV mp = make_mv(p, R, j.gedi_pos_model, row), mn = make_mv(p, R, j.gedi_neg_model, row);
        float xp[kPer], xn[kPer];
        load8(mp, v, xp);
        load8(mn, v, xn);
#pragma unroll
        for (int q = 0; q < kPer; ++q)
          d[q] = lmf_lg_gedi_logp(lmf_lg_scale_x(xp[q], mp.tau), lmf_lg_scale_x(xn[q], mn.tau),
                                  R.slse[ST_GPOS], R.slse[ST_GNEG], R.gL_pos, R.gL_neg, R.gt,
                                  j.gedi_logit_scale, j.gedi_bias_pos, j.gedi_bias_neg);
        store8_f32(Dr + v, d);
      } else {
#pragma unroll
        for (int q = 0; q < kPer; ++q) d[q] = 0.0f;
      }
      sum_models(p, R, row, v, y, &bad);
      if (plaus) {
        const MV mv = make_mv(p, R, j.plaus_model, row);
        float x[kPer];
        load8(mv, v, x);
#pragma unroll
        for (int q = 0; q < kPer; ++q) {
          const float xs = lmf_lg_scale_x(x[q], mv.tau);
          if (!(xs >= plaus_thr && !lmf_lg_is_ninf(xs))) y[q] = ninf();
        }
      }
      if (nuc) {
#pragma unroll
        for (int q = 0; q < kPer; ++q)
          if (!((nkeep >> q) & 1u)) y[q] = ninf();
      }
      if (GEDI && j.gedi_omega != 0.0f) {
#pragma unroll
        for (int q = 0; q < kPer; ++q) y[q] = lmf_lg_term(y[q], j.gedi_omega, d[q]);
      }
      bias_and_T(p, row, v, Tdiv, y, &bad);
      if (p.need_y && MODE != CM_RECWIN && !(MODE == CM_SUP && R.ymiss)) store8_f32(Yr + v, y);
      if (w.ysm) store8_f32(w.ysm + ((c - w.first) / w.step) * kChunk + (int64_t)threadIdx.x * kPer, y);
    } else {
#pragma unroll
      for (int q = 0; q < kPer; ++q) y[q] = ninf();
    }
    if (MODE == CM_RECWIN) {
#pragma unroll
      for (int q = 0; q < kPer; ++q)
        window_item(p.kind, srow, &p.rows[row], Lw, (unsigned)p.lcap, y[q], 0.0f, id[q], V, cm, wtot);
    }
    if (MODE == CM_RECOMP || MODE == CM_RECWIN) continue; /* the partials are the first pass's */
    const float mx = chunk_partial(p, row, c, y, id, bad, want_sum, red);
    if (sup) {
      runmax = mx > runmax ? mx : runmax;
      list_append_chunk(p, row, runmax, y, v); /* this thread's tokens are v .. v + 7 */
    }
  }
  if (MODE == CM_RECWIN) window_flush(&p.rows[row], cm, wtot);
}

/* GeDi's class filter, then y / T (the combine pass left s in Y). */
__device__ void b_temp(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  const Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  const int64_t V = p.job.vocab_out;
  const bool gf_on = R.gf_on != 0;
  const uint32_t ck = (uint32_t)(R.gf_cut >> 32), ci = (uint32_t)R.gf_cut;
  const float lt = p.job.gedi_log_target, T = R.Teff;
  float *Yr = p.Y + w.ys * p.ystride;
  const float *Dr = p.D + row * p.ystride;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float y[kPer], yv[kPer], dv[kPer];
    int64_t id[kPer];
    int bad = 0;
    load_strided(Yr + c * kChunk, c, V, yv); /* the separate kernels only: Y in global */
    load_strided(Dr + c * kChunk, c, V, dv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      id[q] = v;
      y[q] = ninf();
      if (v < V) {
        float x = yv[q];
        if (gf_on) {
          const float d = dv[q];
          const uint32_t kk = lmf_lg_fkey(d);
          const bool before = kk < ck || (kk == ck && (uint32_t)v < ci);
          if (before && d < lt) x = ninf();
        }
        if (T != 1.0f) x = LMF_FDIV(x, T);
        Yr[v] = x;
        bad |= lmf_lg_is_bad(x);
        y[q] = x;
      }
    }
    chunk_partial(p, row, c, y, id, bad, false, red);
  }
}

/* One warp per row: merges the combine (level 0) or temperature (level 1) partials in chunk order as
 * the CPU's max_merge; statuses; the row's next step. */
/* A combine (or GeDi temperature) merge's result: the row's status, max, argmax, finite count and
 * (combine, want_sum) total. */
struct CMerge {
  int32_t st, yarg;
  float ymax;
  long long cnt;
  double total;
};

/* Merges the row's chunk partials in chunk order with online (max, sum) rescaling, as the CPU's
 * merge_step; one warp, every lane gets the result (the same bits in every warp that calls it). */
__device__ CMerge cmerge_calc(const KP &p, int64_t row, const Row &R, bool temp) {
  const CPart *P = p.cpart + row * p.nchunks;
  int64_t c0, c1;
  lane_range(p.nchunks, &c0, &c1);
  int bad = 0;
  long long cnt = 0;
  float M = ninf();
  int32_t arg = 0;
  /* __ldcg: from L2, where KP::cfold's last combine block finds the other blocks' partials. */
  for (int64_t c = c0; c < c1; ++c) {
    bad |= __ldcg(&P[c].bad);
    cnt += __ldcg(&P[c].cnt);
    const float m = __ldcg(&P[c].max);
    if (m > M) {
      M = m;
      arg = __ldcg(&P[c].arg);
    }
  }
  bad = (int)warp_reduce_ll<OP_MAX>(bad);
  cnt = warp_reduce_ll<OP_SUM>(cnt);
  CMerge r;
  r.ymax = ninf();
  r.yarg = 0;
  for (int i = 0; i < 32; ++i) {
    const float o = __shfl_sync(kFull, M, i);
    const int32_t a = __shfl_sync(kFull, arg, i);
    if (o > r.ymax) {
      r.ymax = o;
      r.yarg = a;
    }
  }
  r.cnt = cnt;
  r.st = LMF_ROW_OK;
  if (bad) r.st = LMF_ROW_NONFINITE;
  else if (cnt == 0) r.st = LMF_ROW_ALL_MASKED;
  else if ((temp || R.fuse_T) && !lmf_isfinite_f32(r.ymax)) r.st = LMF_ROW_NONFINITE;
  r.total = 0.0;
  if (r.st == LMF_ROW_OK && !temp && R.want_sum) {
    double S = 0.0;
    for (int64_t c = c0; c < c1; ++c) {
      const float m = __ldcg(&P[c].max);
      if (!lmf_lg_is_ninf(m)) S += __ldcg(&P[c].osum) * exp((double)m - (double)r.ymax);
    }
    for (int i = 0; i < 32; ++i) r.total += __shfl_sync(kFull, S, i);
  }
  return r;
}

/* The merge's result into the row's state and its next step (one thread). */
__device__ void cmerge_apply(const lmf_lg_job &j, Row &R, const CMerge &m, bool temp) {
  if (m.st != LMF_ROW_OK) {
    R.status = m.st;
    return;
  }
  R.ymax = m.ymax;
  R.yarg = m.yarg;
  R.nfin = m.cnt;
  if (!temp) R.total = m.total;
  if (!temp && j.gedi_pos_model >= 0 && j.gedi_filter_p > 0.0f) R.search = SK_GF;
  else after_temp(j, R);
}

__device__ void b_cmerge(const KP &p, int64_t row, int level) {
  Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  const bool temp = level != 0;
  const CMerge m = cmerge_calc(p, row, R, temp);
  if (lane_id() == 0) cmerge_apply(p.job, R, m, temp);
}

/* ---- Cut searches ------------------------------------------------------------------------------- */

/* Which row buffers a search reads: the nucleus search D alone, GeDi's filter D and Y, top-k / top-p Y. */
__device__ __forceinline__ bool search_reads_y(int kind) { return kind != SK_NUC; }
__device__ __forceinline__ bool search_reads_d(int kind) { return kind == SK_NUC || kind == SK_GF; }

__device__ __forceinline__ bool search_item(int kind, const SRow &s, const float *Yr, const float *Dr,
                                            int64_t v, uint32_t *key, U128 *fx, float *yv) {
  const float y = search_reads_y(kind) ? Yr[v] : 0.0f, d = search_reads_d(kind) ? Dr[v] : 0.0f;
  return search_item_v(kind, s, y, d, v, key, fx, yv);
}

/* This thread's Y and D values of chunk c for a search (zeros for a buffer it does not read). */
__device__ __forceinline__ void load_search(int kind, const Part &w, const float *Yr, const float *Dr,
                                            int64_t c, int64_t V, float yv[kPer], float dv[kPer]) {
#pragma unroll
  for (int q = 0; q < kPer; ++q) yv[q] = dv[q] = 0.0f;
  if (search_reads_y(kind)) load_strided(y_chunk(w, Yr, c), c, V, yv);
  if (search_reads_d(kind)) load_strided(Dr + c * kChunk, c, V, dv);
}

/* Shared memory of a list cut (b_listcut): the digit histogram of its radix select and its items. */
struct ListSmem {
  unsigned long long hlo[kBins], hhi[kBins];
  U128 flo;
  int kw, sup;
  unsigned n; /* items in cy / cid */
  unsigned cnt[kClasses];
  float cy[kListCap]; /* the candidates' y and id */
  uint32_t cid[kListCap];
};

/* A block's scratch shared memory, one buffer per kernel whichever body asks: the histogram pass's
 * per-warp histograms, or the list cut's ListSmem, which never run at once; kept apart, the fused
 * kernel's static shared memory would pass the 48 KiB limit. */
constexpr size_t kHistScratch = 2 * kWarps * kBins * sizeof(unsigned long long);
constexpr size_t kScratch = kHistScratch > sizeof(ListSmem) ? kHistScratch : sizeof(ListSmem);
__device__ __forceinline__ void *block_scratch() {
  __shared__ __align__(16) unsigned char buf[kScratch];
  return buf;
}

/* Adds (bin, mass) to a warp's private histogram with shared-memory atomics; the low word's carry goes
 * to the high word, so the sum is exact whatever the order of the adds. */
__device__ __forceinline__ void hist_add(unsigned long long *wlo, unsigned long long *whi, uint32_t bin,
                                         U128 fx) {
  if (is_zero(fx)) return;
  const unsigned long long old = atomicAdd(&wlo[bin], fx.lo);
  const unsigned long long h = fx.hi + ((old + fx.lo < old) ? 1ull : 0ull);
  if (h) atomicAdd(&whi[bin], h);
}

/* Adds each lane's (bin, mass) to the warp's private histogram (and 1 to cnt[bin] where cnt is
 * given). When the active lanes share a few bins (the first digit: the exponent), one leader per bin
 * adds the warp sum of its peers, which avoids 32-way conflicts on one address; otherwise each lane
 * adds its own. */
__device__ __forceinline__ void warp_hist_add(unsigned long long *wlo, unsigned long long *whi, bool e,
                                              uint32_t bin, U128 fx, unsigned *cnt = nullptr) {
  const unsigned peers = __match_any_sync(kFull, e ? bin : 0xffffffffu); /* bins are < 2^32 - 1 */
  const unsigned leaders = __ballot_sync(kFull, e && (__ffs((int)peers) - 1) == lane_id());
  if (__popc(leaders) > 4) {
    if (e) {
      hist_add(wlo, whi, bin, fx);
      if (cnt) atomicAdd(&cnt[bin], 1u);
    }
    return;
  }
  unsigned act = leaders;
  while (act) {
    const int leader = __ffs((int)act) - 1;
    const uint32_t b = __shfl_sync(kFull, bin, leader);
    const U128 s = warp_sum_u128(e && bin == b ? fx : u128(0ull, 0ull));
    if (lane_id() == leader) {
      hist_add(wlo, whi, b, s);
      if (cnt) atomicAdd(&cnt[b], (unsigned)__popc(peers));
    }
    act &= act - 1u;
  }
}

/* Histogram pass of digit `level` (bits 31-24, 23-16, 15-8, 7-0 of the key) over the tokens whose
 * higher digits match the prefix found so far; top-p's first pass also sums the CPU's windows. */
__device__ void b_hist(const KP &p, const Part &w, int kind, int level) {
  unsigned long long(*wlo)[kBins] = static_cast<unsigned long long(*)[kBins]>(block_scratch());
  unsigned long long(*whi)[kBins] = wlo + kWarps;
  const int64_t row = w.row;
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || R->search != kind) return;
  for (int i = threadIdx.x; i < kWarps * kBins; i += kThreads) {
    (&wlo[0][0])[i] = 0ull;
    (&whi[0][0])[i] = 0ull;
  }
  __syncthreads();
  const SRow s = srow_of(*R);
  const uint32_t prefix = R->prefix;
  /* In list mode every top-k / top-p search starts with list_window, which writes the windows. */
  const bool win = !p.list && kind == SK_TOPP && level == 0 && R->wfree != 0;
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  const float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  const int wi = warp_id();
  U128 wm[4];
  unsigned wc[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    wm[k] = u128(0ull, 0ull);
    wc[k] = 0u;
  }
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, Dr, c, V, yv, dv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      uint32_t key = 0;
      U128 fx = u128(0ull, 0ull);
      float y = 0.0f;
      bool e = false;
      if (v < V) e = search_item_v(kind, s, yv[q], dv[q], v, &key, &fx, &y);
      if (e && level > 0) e = (key >> (32 - 8 * level)) == prefix;
      warp_hist_add(wlo[wi], whi[wi], e, (key >> (24 - 8 * level)) & 0xffu, fx);
      if (win && e) {
        const float d = LMF_FMUL(LMF_FSUB(s.ymax, y), 2.0f);
#pragma unroll
        for (int k = 0; k < 4; ++k)
          if (d < (float)(4 << k)) {
            wm[k] = add(wm[k], fx);
            ++wc[k];
          }
      }
    }
  }
  __syncthreads();
  {
    const int t = threadIdx.x; /* bin */
    U128 sum = u128(0ull, 0ull);
#pragma unroll
    for (int i = 0; i < kWarps; ++i) sum = add(sum, u128(wlo[i][t], whi[i][t]));
    atomic_add_u128(p.hist + row * kBins + t, sum);
  }
  if (win) {
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const U128 m = warp_sum_u128(wm[k]);
      const long long n = warp_reduce_ll<OP_SUM>((long long)wc[k]);
      if (lane_id() == 0) {
        atomic_add_u128(&R->win_m[k], m);
        if (n) atomicAdd(&R->win_c[k], (unsigned int)n);
      }
    }
  }
}

/* The target of a search (level 0): fraction times the total mass, as the CPU computes it. */
__device__ U128 search_target(const KP &p, int kind, const Row &R, U128 tot) {
  const lmf_lg_job &j = p.job;
  U128 t;
  switch (kind) {
    case SK_NUC: t = ceil_fx((double)j.nucleus_p * fx_to_double(tot)); break;
    case SK_GF: t = ceil_fx((double)j.gedi_filter_p * fx_to_double(tot)); break;
    case SK_TOPK: t = u128((unsigned long long)j.top_k, 0ull); break;
    default: {
      double td = (double)j.top_p * fx_to_double(tot);
      if (R.wfree) {
        /* The CPU first tries the largest window (2 (ymax - y) < 4, 8, 16, 32) holding at most CAP
         * tokens against the combine pass's total; it keeps that target if the window's mass
         * reaches it. */
        int kw = -1;
        for (int k = 0; k < 4; ++k)
          if (R.win_c[k] <= (unsigned)kWinCap) kw = k;
        if (kw >= 0) {
          const double to = (double)j.top_p * R.total;
          if (ge(R.win_m[kw], ceil_fx(to))) td = to;
        }
      }
      t = ceil_fx(td);
    }
  }
  if (!ge(tot, t)) t = tot;
  if (is_zero(t)) t = u128(1ull, 0ull);
  return t;
}

/* One block per row in the search, thread t = bin t: the digit at which the cumulative mass reaches
 * the target. Clears the histogram for the next level. */
__device__ void b_smerge(const KP &p, int64_t row, int kind, int level) {
  __shared__ Red red;
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || R->search != kind) return;
  const int t = threadIdx.x;
  U128 *H = p.hist + row * kBins;
  const U128 h = H[t];
  H[t] = u128(0ull, 0ull);
  U128 flo, tgt;
  if (level == 0) {
    const U128 tot = block_sum_u128(h, red);
    tgt = search_target(p, kind, *R, tot);
    flo = u128(0ull, 0ull);
  } else {
    flo = R->flo;
    tgt = R->target;
  }
  const U128 incl = block_incl_scan_u128(h, red);
  const long long cand = ge(add(flo, incl), tgt) ? t : kBins;
  long long b = block_reduce_ll<OP_MIN>(cand, red);
  if (b == kBins) b = kBins - 1; /* unreachable: the prefix holds the target */
  if (t == (int)b) {
    R->flo = add(flo, sub(incl, h));
    R->prefix = level == 0 ? (uint32_t)b : ((R->prefix << 8) | (uint32_t)b);
    if (level == 0) R->target = tgt;
  }
}

/* Per chunk: the mass of the tokens whose key is the one found (the tie group). */
__device__ void b_tie(const KP &p, const Part &w, int kind) {
  __shared__ Red red;
  const int64_t row = w.row;
  const Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || R->search != kind) return;
  const SRow s = srow_of(*R);
  const uint32_t K = R->prefix;
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  const float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    U128 sum = u128(0ull, 0ull);
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, Dr, c, V, yv, dv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      uint32_t key;
      U128 fx;
      float y;
      if (search_item_v(kind, s, yv[q], dv[q], v, &key, &fx, &y) && key == K) sum = add(sum, fx);
    }
    sum = block_sum_u128(sum, red);
    if (threadIdx.x == 0) p.tie[row * p.nchunks + c] = sum;
  }
}

/* The search's result and the row's next step (one thread). */
__device__ void finish_search(const KP &p, int kind, Row *R, uint64_t cut) {
  switch (kind) {
    case SK_NUC:
      R->nuc_on = 1;
      R->nuc_cut = cut;
      R->search = SK_NONE;
      break;
    case SK_GF:
      R->gf_on = 1;
      R->gf_cut = cut;
      R->search = SK_NONE;
      break;
    case SK_TOPK:
      R->topk_on = 1;
      R->topk_cut = cut;
      if (p.job.top_p < 1.0f) {
        R->search = SK_TOPP; /* on the top-k survivors, with their mass as the total */
        R->wfree = 0;
      } else {
        R->search = SK_NONE;
        lse_or_sample(*R);
      }
      break;
    default:
      R->topp_on = 1;
      R->topp_cut = cut;
      R->search = SK_NONE;
      lse_or_sample(*R);
      break;
  }
}

/* One block per row in the search: the chunk where the tie group's cumulative mass reaches the
 * target, then the token within it (id order); the cut is that token's order. */
__device__ void b_tiecut(const KP &p, int64_t row, int kind, int64_t ys) {
  __shared__ Red red;
  __shared__ unsigned long long s_lo, s_hi;
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || R->search != kind) return;
  const SRow s = srow_of(*R);
  const uint32_t K = R->prefix;
  const U128 tgt = R->target;
  U128 base = R->flo;
  const int64_t V = p.job.vocab_out, nch = p.nchunks;
  const U128 *TT = p.tie + row * nch;
  const float *Yr = p.Y + ys * p.ystride;
  const float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  int64_t cstar = -1;
  for (int64_t c0 = 0; c0 < nch; c0 += kThreads) {
    const int64_t c = c0 + threadIdx.x;
    const U128 h = c < nch ? TT[c] : u128(0ull, 0ull);
    const U128 incl = block_incl_scan_u128(h, red);
    const int64_t m = block_reduce_ll<OP_MIN>(ge(add(base, incl), tgt) ? c : kNone64, red);
    if (m != kNone64) {
      if (c == m) {
        const U128 e = add(base, sub(incl, h));
        s_lo = e.lo;
        s_hi = e.hi;
      }
      __syncthreads();
      base = u128(s_lo, s_hi);
      cstar = m;
      break;
    }
    base = add(base, block_sum_u128(h, red));
  }
  uint32_t cut_id = 0xffffffffu; /* unreachable fallback: the whole tie group */
  if (cstar >= 0) {
    const int64_t v0 = cstar * kChunk + (int64_t)threadIdx.x * kPer; /* id order = thread order */
    U128 fx[kPer];
    bool tie[kPer];
    U128 mine = u128(0ull, 0ull);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = v0 + q;
      uint32_t key = 0;
      float y;
      fx[q] = u128(0ull, 0ull);
      tie[q] = v < V && search_item(kind, s, Yr, Dr, v, &key, &fx[q], &y) && key == K;
      if (tie[q]) mine = add(mine, fx[q]);
    }
    const U128 incl = block_incl_scan_u128(mine, red);
    U128 run = add(base, sub(incl, mine));
    int64_t found = kNone64;
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      if (tie[q]) {
        run = add(run, fx[q]);
        if (found == kNone64 && ge(run, tgt)) found = v0 + q;
      }
    const int64_t m = block_reduce_ll<OP_MIN>(found, red);
    if (m != kNone64) cut_id = (uint32_t)m;
  }
  if (threadIdx.x == 0) finish_search(p, kind, R, ((uint64_t)K << 32) | (uint64_t)cut_id);
}

/* ---- List mode: a cut from at most kListCap candidates (KP::list) ------------------------------- */

/* The CPU's list mode. Every token a top-k / top-p cut can keep lies in a window near the maximum; one
 * pass (b_window) counts the tokens of each class of 2 (ymax - y) (class_of; the CPU's windows are
 * unions of the first classes), sums their masses and the total mass, and appends each class's tokens
 * to its list. The largest window (classes 0 .. k) holding at most kListCap tokens is then
 * complete in the lists; if it reaches the cut's target (the same target the general search uses,
 * search_target), one block per row (b_listcut) finds the cut among its tokens, then top-p on the top-k
 * survivors, min-p, the LSE and the sample: no further pass over the row. Otherwise the row stays in
 * the general search. The window is a prefix of the cut's order, so the cut found is the same token. */

/* The window pass of a top-k (unit masses) or top-p cut (masses e^(y - ymax); after a top-k cut, its
 * survivors only): per class count, mass and tokens; the total mass (the CPU's target for top-p when
 * its window cannot take the combine pass's total: search_target). */
__device__ void b_window(const KP &p, const Part &w, int kind) {
  const int64_t row = w.row;
  Row *R = &p.rows[row];
  /* sup: the combine's lists; ymiss 2: k_combine<CM_RECWIN> did this pass's work */
  if (R->status != LMF_ROW_OK || R->search != kind || R->sup || R->ymiss == 2) return;
  const SRow s = srow_of(*R);
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  U128 cm[kClasses], tot = u128(0ull, 0ull);
#pragma unroll
  for (int k = 0; k < kClasses; ++k) cm[k] = u128(0ull, 0ull);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, nullptr, c, V, yv, dv);
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      window_item(kind, s, R, L, (unsigned)p.lcap, yv[q], dv[q], c * kChunk + (int64_t)q * kThreads + threadIdx.x,
                  V, cm, tot);
  }
  window_flush(R, cm, tot);
}

/* One thread: the windows from the classes (win_c / win_m, as the general search's first histogram
 * pass leaves them), the target (search_target: the CPU's rule, its windows of at most kWinCap tokens
 * included), and the largest window with at most kListCap tokens if it holds the target (-1: the
 * general search). Clears the class sums; cnt gets the classes' counts. */
__device__ int list_window(const KP &p, int kind, Row *R, unsigned cnt[kClasses]) {
  unsigned cc = 0u, kc = 0u; /* windows 0 .. k: count and mass; kc, km: window kw's */
  U128 cmass = u128(0ull, 0ull), km = u128(0ull, 0ull);
  int kw = -1;
  for (int k = 0; k < kClasses; ++k) {
    /* Read and cleared by atomics: the other window blocks' sums, seen from the last one's SM. */
    cnt[k] = atomicExch(&R->cls_c[k], 0u);
    cc += cnt[k];
    cmass = add(cmass, u128(atomicExch(&R->cls_m[k].lo, 0ull), atomicExch(&R->cls_m[k].hi, 0ull)));
    for (int w = 0; w < 4; ++w) /* the CPU's windows, as the general search's first pass sums them */
      if (cpu_window_class(w) == k) {
        R->win_c[w] = cc;
        R->win_m[w] = cmass;
      }
    if (cc <= (unsigned)kListCap) {
      kw = k;
      kc = cc;
      km = cmass;
    }
  }
  const U128 tot = u128(atomicExch(&R->ltot.lo, 0ull), atomicExch(&R->ltot.hi, 0ull));
  if (kw < 0) return -1;
  const U128 tgt = search_target(p, kind, *R, tot);
  const bool holds = kind == SK_TOPK ? (unsigned long long)kc >= tgt.lo : ge(km, tgt);
  if (!holds) return -1;
  R->target = tgt;
  return kw;
}

/* An item's mass in a list cut: 1 (top-k) or e^(y - ymax) (fixed point); 0 for an item not taking part. */
__device__ __forceinline__ U128 item_fx(bool in, bool unit, float y, float ymax) {
  if (!in) return u128(0ull, 0ull);
  return unit ? u128(1ull, 0ull) : fx_of(lmf_lg_exp_neg(LMF_FSUB(y, ymax)));
}

/* The smallest order ord (lmf_lg_ord_desc: value descending, then id) at which the cumulative mass of
 * the list's items with ord <= lim (item_fx) reaches tgt (at most their total): a radix select over the
 * 64-bit order, 8-bit digits from the top, exact 128-bit sums; it stops when one item is left. */
__device__ uint64_t list_cut(ListSmem &S, uint64_t lim, bool unit, float ymax, U128 tgt, Red &red) {
  const int t = threadIdx.x;
  const unsigned n = S.n;
  const int jn = (int)((n + kThreads - 1) / kThreads); /* the same for every thread */
  U128 flo = u128(0ull, 0ull);
  uint64_t prefix = 0ull;
  for (int level = 0; level < 8; ++level) {
    const int sh = 56 - 8 * level;
    S.hlo[t] = 0ull;
    S.hhi[t] = 0ull;
    __syncthreads();
    for (int jj = 0; jj < jn; ++jj) {
      const unsigned i = (unsigned)(jj * kThreads + t);
      bool e = false;
      uint32_t bin = 0u;
      U128 fx = u128(0ull, 0ull);
      if (i < n) {
        const float yv = S.cy[i];
        const uint64_t o = lmf_lg_ord_desc(yv, S.cid[i]);
        e = o <= lim && (level == 0 || (o >> (sh + 8)) == prefix);
        bin = (uint32_t)(o >> sh) & 0xffu;
        fx = item_fx(e, unit, yv, ymax);
      }
      warp_hist_add(S.hlo, S.hhi, e, bin, fx);
    }
    __syncthreads();
    const U128 h = u128(S.hlo[t], S.hhi[t]);
    const U128 incl = block_incl_scan_u128(h, red);
    long long b = block_reduce_ll<OP_MIN>(ge(add(flo, incl), tgt) ? t : kBins, red);
    if (b == kBins) b = kBins - 1; /* unreachable: the items hold the target */
    if (t == (int)b) S.flo = add(flo, sub(incl, h));
    __syncthreads();
    flo = S.flo;
    prefix = (prefix << 8) | (uint64_t)b;
    long long cnt = 0;
    unsigned long long mine = ~0ull;
    for (unsigned i = (unsigned)t; i < n; i += kThreads) {
      const uint64_t o = lmf_lg_ord_desc(S.cy[i], S.cid[i]);
      if (o <= lim && (o >> sh) == prefix) {
        ++cnt;
        mine = o < mine ? o : mine;
      }
    }
    cnt = block_reduce_ll<OP_SUM>(cnt, red);
    if (cnt == 1) return ~block_max_u64(~mine, red); /* the one item of the crossing digit is the cut */
  }
  return prefix;
}

/* Entry i of the lists of classes 0, 1, ... (counts cnt) in order. */
__device__ __forceinline__ uint2 list_entry(const uint2 *L, int lcap, const unsigned cnt[kClasses],
                                            unsigned i) {
  int k = 0;
  while (k < kClasses - 1 && i >= cnt[k]) i -= cnt[k++];
  return __ldcg(&L[k * lcap + i]); /* from L2: other blocks wrote them (window_done) */
}

/* The window lists' tokens (b_window, exact classes): classes 0 .. S.kw into the list cut's items. */
__device__ void window_items(const KP &p, int64_t row, ListSmem &S) {
  const uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  unsigned n = 0u;
  for (int k = 0; k <= S.kw; ++k) n += S.cnt[k];
  for (unsigned i = threadIdx.x; i < n; i += kThreads) {
    const uint2 e = list_entry(L, p.lcap, S.cnt, i);
    S.cy[i] = __uint_as_float(e.x);
    S.cid[i] = e.y;
  }
  if (threadIdx.x == 0) S.n = n;
  __syncthreads();
}

/* The combine pass's lists (list_append_chunk: a superset of each window, classes 0 .. k holding every
 * token of window k). Their entries, filtered with the row's max, give the exact counts of the windows
 * whose classes were all kept. The target can only be the CPU's first choice, top-p's from the combine
 * pass's total (its other needs every token's mass): it stands if the largest of those windows with at
 * most kWinCap tokens holds it (then the CPU's window, no smaller, does too). That window is compacted
 * into the list cut's items. Top-k: k. false: not decided here (block-uniform). */
__device__ bool sup_items(const KP &p, int kind, int64_t row, ListSmem &S, Red &red, U128 *tgt) {
  const Row *R = &p.rows[row];
  const uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  const float ymax = R->ymax;
  if (kind == SK_TOPP && !R->wfree) return false;
  int ksup = -1;
  unsigned m = 0u;
  for (int k = 0; k < kClasses && S.cnt[k] <= list_cap<true>(k, (unsigned)p.lcap); ++k) {
    ksup = k;
    m += S.cnt[k];
  }
  if (ksup < 0) return false;
  /* The CPU's windows d < 4, 8, 16, 32 only (a window this rule takes must lie inside the CPU's),
   * their counts 16 bits each (m <= 3 kSupCap + 3 kWinCap < 2^16: list_cap). */
  long long wc = 0;
  for (unsigned i = threadIdx.x; i < m; i += kThreads) {
    const float d = LMF_FMUL(LMF_FSUB(ymax, __uint_as_float(list_entry(L, p.lcap, S.cnt, i).x)), 2.0f);
#pragma unroll
    for (int w = 0; w < 4; ++w) wc += (long long)(d < (float)(4 << w)) << (16 * w);
  }
  wc = block_reduce_ll<OP_SUM>(wc, red);
  int kw = -1;
  for (int w = 0; w < 4 && cpu_window_class(w) <= ksup; ++w)
    if (((wc >> (16 * w)) & 0xffff) <= kWinCap) kw = w;
  if (kw < 0) return false;
  const unsigned n = (unsigned)((wc >> (16 * kw)) & 0xffff);
  const float lim = (float)(4 << kw);
  unsigned mine = 0u;
  for (unsigned i = threadIdx.x; i < m; i += kThreads)
    mine += LMF_FMUL(LMF_FSUB(ymax, __uint_as_float(list_entry(L, p.lcap, S.cnt, i).x)), 2.0f) < lim;
  unsigned pos = (unsigned)block_incl_scan_u128(u128(mine, 0ull), red).lo - mine;
  for (unsigned i = threadIdx.x; i < m; i += kThreads) {
    const uint2 e = list_entry(L, p.lcap, S.cnt, i);
    if (LMF_FMUL(LMF_FSUB(ymax, __uint_as_float(e.x)), 2.0f) < lim) {
      S.cy[pos] = __uint_as_float(e.x);
      S.cid[pos] = e.y;
      ++pos;
    }
  }
  if (threadIdx.x == 0) S.n = n;
  __syncthreads();
  if (kind == SK_TOPK) {
    *tgt = u128((unsigned long long)p.job.top_k, 0ull);
    return n >= (unsigned)p.job.top_k;
  }
  U128 sum = u128(0ull, 0ull);
  for (unsigned i = threadIdx.x; i < n; i += kThreads) sum = add(sum, item_fx(true, false, S.cy[i], ymax));
  sum = block_sum_u128(sum, red);
  U128 t = ceil_fx((double)p.job.top_p * R->total);
  if (is_zero(t)) t = u128(1ull, 0ull);
  *tgt = t;
  return ge(sum, t);
}

/* What a list cut did with a row. */
enum { LC_DONE = 0, LC_SUP_MISS = 1, LC_MISS = 2 };

/* One block per row in a top-k / top-p cut (list mode): the candidates (with p.level 1, the combine
 * pass's lists, for the rows that have them; else the window pass's), and if they hold the target, the
 * cut among them; after top-k, top-p on its survivors (the general search's target: top_p times their
 * mass); min-p, the LSE where an output needs it, the Gumbel-max sample. The row then skips the general
 * search, the LSE pass and the sample pass. SUP: the combine pass's lists may be pending (the separate
 * kernels). Returns LC_DONE (finished, or not this call's row), LC_SUP_MISS (the window pass next) or
 * LC_MISS (the general search next); block-uniform. */
template <bool SUP>
__device__ int b_listcut(const KP &p, int64_t row, int kind) {
  __shared__ Red red;
  ListSmem &S = *static_cast<ListSmem *>(block_scratch());
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || R->search != kind) return LC_DONE;
  const bool sup_call = SUP && p.level == 1;
  if (threadIdx.x == 0) { /* one thread reads and updates the row's list state; the block follows S */
    S.sup = sup_call ? (R->sup ? 1 : -1) : 0; /* -1: no pending lists, not this call's row */
    if (S.sup > 0) { /* the combine's lists serve this cut only */
      for (int k = 0; k < kClasses; ++k) {
        S.cnt[k] = atomicExch(&R->cls_c[k], 0u);
      }
      R->sup = 0;
    } else if (S.sup == 0) {
      S.kw = list_window(p, kind, R, S.cnt);
    }
  }
  __syncthreads();
  if (S.sup < 0) return LC_DONE;
  const lmf_lg_job &j = p.job;
  const float ymax = R->ymax;
  U128 tgt;
  if (S.sup > 0) {
    if (!sup_items(p, kind, row, S, red, &tgt)) {
      if (threadIdx.x == 0 && R->ymiss == 1) R->ymiss = 2; /* Y unwritten: k_combine<CM_RECWIN> next */
      return LC_SUP_MISS;
    }
  } else {
    if (S.kw < 0) return LC_MISS;
    window_items(p, row, S);
    tgt = R->target;
  }
  const unsigned n = S.n;
  const bool topk = kind == SK_TOPK;
  const uint64_t cut = list_cut(S, ~0ull, topk, ymax, tgt, red);
  uint64_t pcut = cut;
  const bool then_p = topk && j.top_p < 1.0f;
  if (then_p) { /* top-p on the top-k survivors, as the general search (search_target, no window) */
    U128 sum = u128(0ull, 0ull);
    for (unsigned i = threadIdx.x; i < n; i += kThreads)
      sum = add(sum, item_fx(lmf_lg_ord_desc(S.cy[i], S.cid[i]) <= cut, false, S.cy[i], ymax));
    const U128 tot = block_sum_u128(sum, red);
    U128 t2 = ceil_fx((double)j.top_p * fx_to_double(tot));
    if (!ge(tot, t2)) t2 = tot;
    if (is_zero(t2)) t2 = u128(1ull, 0ull);
    pcut = list_cut(S, cut, false, ymax, t2, red);
  }
  const bool minp = j.min_p > 0.0f;
  const float lmp = j.log_min_p;
  /* The survivors: within both cuts (pcut <= cut) and min-p. */
  const auto alive = [&](unsigned i) {
    return lmf_lg_ord_desc(S.cy[i], S.cid[i]) <= pcut && (!minp || LMF_FSUB(S.cy[i], ymax) >= lmp);
  };
  float lse = R->lse;
  if (R->need_lse) {
    U128 sum = u128(0ull, 0ull);
    for (unsigned i = threadIdx.x; i < n; i += kThreads)
      sum = add(sum, item_fx(alive(i), false, S.cy[i], ymax));
    lse = (float)((double)ymax + log(fx_to_double(block_sum_u128(sum, red))));
  }
  unsigned long long best = 0ull;
  if (!R->greedy) {
    const uint64_t seed = R->seed, goff = R->goff;
    unsigned long long mine = 0ull;
    for (unsigned i = threadIdx.x; i < n; i += kThreads)
      if (alive(i)) {
        const float key = lmf_lg_gumbel_key(S.cy[i], lmf_lg_gumbel(seed, goff, S.cid[i]));
        const unsigned long long pk = pack_best(key, S.cid[i]);
        mine = pk > mine ? pk : mine;
      }
    best = block_max_u64(mine, red);
  }
  const int32_t token = R->greedy ? R->yarg : unpack_id(best);
  /* The token's y, for token_logprob where Y is unwritten. */
  for (unsigned i = threadIdx.x; i < n; i += kThreads)
    if ((int32_t)S.cid[i] == token) R->ytok = S.cy[i];
  if (threadIdx.x == 0) {
    if (topk) {
      R->topk_on = 1;
      R->topk_cut = cut;
    }
    if (!topk || then_p) {
      R->topp_on = 1;
      R->topp_cut = pcut;
    }
    R->lse = lse;
    R->best = best;
    R->do_final = 0;
    R->do_sample = 0;
    R->search = SK_NONE;
  }
  return LC_DONE;
}

/* One block over a whole row (all chunks, Y row = row): the list cut's kernel. */
__device__ __forceinline__ Part row_part(int64_t row) {
  Part w;
  w.row = row;
  w.first = 0;
  w.step = 1;
  w.ys = row;
  w.ysm = nullptr;
  return w;
}

/* The general search of one row by one block, in the list cut's kernel (list mode, separate kernels:
 * with a block per row anyway, the rows the lists could not decide need not cost every row ten more
 * launches; such a row pays one SM's walks over its Y instead): the separate kernels' bodies in their
 * order. */
__device__ void block_search(const KP &p, int64_t row, int kind) {
  __syncthreads(); /* the list cut's shared memory is the histogram pass's */
  const Part w = row_part(row);
  for (int level = 0; level < 4; ++level) {
    b_hist(p, w, kind, level);
    __syncthreads();
    b_smerge(p, row, kind, level);
    __syncthreads();
  }
  b_tie(p, w, kind);
  __syncthreads();
  b_tiecut(p, row, kind, row);
}

/* After a window block (every block of the row calls it, whatever its row's state): true in the last
 * of the row's blocks to finish, which then sees every block's lists and sums (each fenced before it
 * counts itself; list_window and list_entry read them from L2). Resets the count for the row's next
 * cut. Block-uniform. */
__device__ bool window_done(const KP &p, int64_t row) {
  __shared__ int s_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    s_last = atomicAdd(&p.rows[row].wdone, 1u) == (unsigned)p.gx - 1u;
    if (s_last) p.rows[row].wdone = 0u;
  }
  __syncthreads();
  if (s_last) __threadfence();
  return s_last != 0;
}

/* Before a row's general search in the list cut's block: where Y was never written (Row::ymiss 2), the
 * block computes it, reading the row's logits once more. Block-uniform. */
__device__ void recompute_y(const KP &p, int64_t row) {
  __syncthreads(); /* the list cut's reads of the row state are done */
  if (p.rows[row].ymiss != 2) return;
  b_combine<false, CM_RECOMP>(p, row_part(row));
  __syncthreads();
  if (threadIdx.x == 0) p.rows[row].ymiss = 0;
}

/* ---- LSE of the survivors, sampling, outputs -------------------------------------------------- */

__device__ void b_final(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || !R->do_final) return;
  const Surv S = surv_of(*R);
  const bool minp = p.job.min_p > 0.0f;
  const float lmp = p.job.log_min_p;
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  U128 sum = u128(0ull, 0ull);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    load_strided(y_chunk(w, Yr, c), c, V, yv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      const float y = yv[q];
      if (survives(S, y, v, minp, lmp)) sum = add(sum, fx_of(lmf_lg_exp_neg(LMF_FSUB(y, S.ymax))));
    }
  }
  sum = block_sum_u128(sum, red);
  if (threadIdx.x == 0) atomic_add_u128(&R->acc, sum);
}

__device__ void b_final_merge(const KP &p, int64_t row) {
  Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK || !R.do_final) return;
  R.lse = (float)((double)R.ymax + log(fx_to_double(R.acc)));
  R.do_sample = !R.greedy;
}

/* Gumbel-max over the survivors: every thread keeps its best (key, id), skipping tokens that cannot
 * reach max(the argmax's key, its best so far) (y + LMF_LG_GUMBEL_MAX below it); the block's best
 * goes to the row with one 64-bit atomicMax. */
__device__ void b_sample(const KP &p, const Part &w) {
  __shared__ Red red;
  __shared__ float s_bound;
  const int64_t row = w.row;
  Row *R = &p.rows[row];
  if (R->status != LMF_ROW_OK || !R->do_sample) return;
  const Surv S = surv_of(*R);
  const uint64_t seed = R->seed, goff = R->goff;
  const int32_t yarg = R->yarg;
  const bool minp = p.job.min_p > 0.0f;
  const float lmp = p.job.log_min_p;
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  if (threadIdx.x == 0)
    s_bound = lmf_lg_gumbel_key(Yr[yarg], lmf_lg_gumbel(seed, goff, (uint32_t)yarg));
  __syncthreads();
  const float bound0 = s_bound;
  float bk = ninf();
  int64_t bid = -1;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    load_strided(y_chunk(w, Yr, c), c, V, yv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      const float y = yv[q];
      if (!survives(S, y, v, minp, lmp)) continue;
      const float bound = (bid >= 0 && bk > bound0) ? bk : bound0;
      if (LMF_FADD(y, LMF_LG_GUMBEL_MAX) < bound) continue;
      const float key = lmf_lg_gumbel_key(y, lmf_lg_gumbel(seed, goff, (uint32_t)v));
      if (bid < 0 || key > bk) { /* ids increase along a thread's loop: ties keep the lower id */
        bk = key;
        bid = v;
      }
    }
  }
  const unsigned long long pk = block_max_u64(bid >= 0 ? pack_best(bk, (uint32_t)bid) : 0ull, red);
  if (threadIdx.x == 0 && pk) atomicMax(&R->best, pk);
}

/* The log-prob rows: y - lse on the survivors, -inf elsewhere; NaN for failed rows. */
__device__ void b_logprobs(const KP &p, const Part &w) {
  const int64_t row = w.row;
  const Row &R = p.rows[row];
  const bool ok = R.status == LMF_ROW_OK;
  const Surv S = surv_of(R);
  const float lse = R.lse;
  const bool minp = p.job.min_p > 0.0f;
  const float lmp = p.job.log_min_p;
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.ys * p.ystride;
  float *o = p.job.logprobs + row * p.job.logprobs_row_stride;
  const float nan = __uint_as_float(kCanonNan);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    if (ok) load_strided(y_chunk(w, Yr, c), c, V, yv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      float r = nan;
      if (ok) {
        const float y = yv[q];
        r = survives(S, y, v, minp, lmp) ? LMF_FSUB(y, lse) : ninf();
      }
      o[v] = r;
    }
  }
}

/* One thread per row: tokens, statuses, LSE, token log-prob, the GeDi state update. */
__device__ void b_outputs(const KP &p, int64_t row, int64_t ys) {
  const lmf_lg_job &j = p.job;
  const Row &R = p.rows[row];
  const bool ok = R.status == LMF_ROW_OK;
  const float nan = __uint_as_float(kCanonNan);
  const int32_t token = ok ? (R.greedy ? R.yarg : sampled_token(R)) : -1;
  j.tokens[row] = token;
  if (j.status) j.status[row] = ok ? (int32_t)LMF_ROW_OK : R.status;
  if (j.lse) j.lse[row] = ok ? R.lse : nan;
  if (j.token_logprob) {
    const float yt = ok ? (R.ymiss ? R.ytok : p.Y[ys * p.ystride + token]) : 0.0f;
    j.token_logprob[row] = ok ? LMF_FSUB(yt, R.lse) : nan;
  }
  if (j.gedi_pos_model >= 0) {
    if (ok) {
      const MV mp = make_mv(p, R, j.gedi_pos_model, row), mn = make_mv(p, R, j.gedi_neg_model, row);
      const float xp = lmf_lg_scale_x(load1(mp, token), mp.tau);
      const float xn = lmf_lg_scale_x(load1(mn, token), mn.tau);
      j.gedi_L_pos[row] = lmf_lg_gedi_update(R.gL_pos, xp, R.slse[ST_GPOS]);
      j.gedi_L_neg[row] = lmf_lg_gedi_update(R.gL_neg, xn, R.slse[ST_GNEG]);
      j.gedi_n[row] += 1;
    }
    if (j.gedi_logp_desired) j.gedi_logp_desired[row] = ok ? p.D[row * p.ystride + token] : nan;
  }
}

/* KP::ltail, in the last list cut's block after the row's cuts: the LSE pass and the sample pass where
 * the row still needs them (the general search decided it, or it took no cut), then its outputs, so no
 * chunk kernel follows for them. Block-uniform (the row's flags were written before a barrier). */
__device__ void row_tail(const KP &p, int64_t row) {
  __syncthreads();
  const Row *R = &p.rows[row];
  const Part w = row_part(row);
  if (R->status == LMF_ROW_OK && R->do_final) {
    b_final(p, w);
    __syncthreads();
    if (threadIdx.x == 0) b_final_merge(p, row);
    __syncthreads();
  }
  if (R->status == LMF_ROW_OK && R->do_sample) {
    b_sample(p, w);
    __syncthreads();
  }
  if (threadIdx.x == 0) b_outputs(p, row, row);
}

/* ---- verify_draft --------------------------------------------------------------------------------- */

/* One thread per sequence: the acceptance walk over the rows (all computed), as the CPU's after_final. */
__global__ void __launch_bounds__(kThreads) k_vwalk(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t s = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (s >= p.nseqs) return;
  const lmf_lg_job &j = p.job;
  const int32_t L = j.draft_len;
  const int64_t base = s * ((int64_t)L + 1);
  const bool minp = j.min_p > 0.0f;
  Seq &Q = p.seqs[s];
  Q.best = 0ull;
  Q.resid_row = -1;
  int32_t st = LMF_ROW_OK, acc = 0, next = -1;
  for (int32_t pos = 0; pos <= L; ++pos) {
    const int64_t rb = base + pos;
    const Row &R = p.rows[rb];
    if (R.status != LMF_ROW_OK) {
      st = R.status;
      acc = pos;
      break;
    }
    if (pos == L) {
      acc = L;
      next = R.greedy ? R.yarg : sampled_token(R);
      break;
    }
    const int32_t d = j.draft_tokens[s * (int64_t)L + pos];
    if (d < 0 || d >= j.vocab_out) {
      st = LMF_ROW_BAD_INDEX;
      acc = pos;
      break;
    }
    bool accept;
    if (R.greedy) {
      accept = d == R.yarg;
    } else {
      const float y = p.Y[rb * p.ystride + d];
      const float yd = survives(surv_of(R), y, d, minp, j.log_min_p) ? y : ninf();
      const float lp = lmf_lg_is_ninf(yd) ? yd : LMF_FSUB(yd, R.lse);
      const MV dm = make_mv(p, R, j.draft_model, rb);
      const float xd = lmf_lg_scale_x(load1(dm, d), dm.tau);
      const float lq = lmf_lg_is_ninf(xd) ? xd : LMF_FSUB(xd, R.slse[ST_DRAFT]);
      if (lmf_lg_is_ninf(lp)) {
        accept = false;
      } else if (lp >= lq) {
        accept = true;
      } else {
        const uint32_t w = lmf_lg_word(R.seed, R.goff, (uint32_t)d, LMF_LG_DOMAIN_ACCEPT);
        accept = lmf_log_unit(lmf_lg_uniform(w)) < LMF_FSUB(lp, lq);
      }
    }
    if (accept) continue;
    acc = pos;
    if (R.greedy) next = R.yarg;
    else Q.resid_row = rb; /* the correction: Gumbel-max of log(p - q) on this row */
    break;
  }
  Q.status = st;
  Q.accepted = acc;
  Q.next = next;
}

/* The correction's Gumbel-max over log(p - q) (tokens with p > q), per sequence with a rejection. */
__global__ void __launch_bounds__(kThreads) k_resid(const __grid_constant__ KP p) {
  pdl_enter();
  __shared__ Red red;
  const Part w = grid_part(p); /* w.row: the sequence */
  Seq *Q = &p.seqs[w.row];
  const int64_t rb = Q->resid_row;
  if (rb < 0) return;
  const lmf_lg_job &j = p.job;
  const Row &R = p.rows[rb];
  const bool minp = j.min_p > 0.0f;
  const int64_t V = j.vocab_out;
  const float *Yr = p.Y + rb * p.ystride;
  const MV dm = make_mv(p, R, j.draft_model, rb);
  const float lse = R.lse, lsed = R.slse[ST_DRAFT];
  const Surv S = surv_of(R);
  const uint64_t seed = R.seed, goff = R.goff;
  float bk = ninf();
  int64_t bid = -1;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
#pragma unroll 1
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      const float y = Yr[v];
      const float lp = survives(S, y, v, minp, j.log_min_p) ? LMF_FSUB(y, lse) : ninf();
      const float x = lmf_lg_scale_x(load1(dm, v), dm.tau);
      const float lq = lmf_lg_is_ninf(x) ? x : LMF_FSUB(x, lsed);
      const float r = lmf_lg_log_residual(lp, lq);
      if (lmf_lg_is_ninf(r)) continue;
      if (bid >= 0 && LMF_FADD(r, LMF_LG_GUMBEL_MAX) < bk) continue;
      const float key = lmf_lg_gumbel_key(r, lmf_lg_gumbel(seed, goff, (uint32_t)v));
      if (bid < 0 || key > bk) {
        bk = key;
        bid = v;
      }
    }
  }
  const unsigned long long pk = block_max_u64(bid >= 0 ? pack_best(bk, (uint32_t)bid) : 0ull, red);
  if (threadIdx.x == 0 && pk) atomicMax(&Q->best, pk);
}

__global__ void __launch_bounds__(kThreads) k_vfinish(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t s = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (s >= p.nseqs) return;
  const lmf_lg_job &j = p.job;
  const Seq &Q = p.seqs[s];
  int32_t next = Q.next;
  if (Q.status == LMF_ROW_OK && Q.resid_row >= 0) /* no token with p > q in fp32: sampled from p */
    next = Q.best ? unpack_id(Q.best) : sampled_token(p.rows[Q.resid_row]);
  j.accepted[s] = Q.accepted;
  j.next_token[s] = Q.status == LMF_ROW_OK ? next : -1;
  if (j.seq_status) j.seq_status[s] = Q.status;
}

/* ---- The separate kernels: one launch per step, for any job on any device ---------------------- */

__global__ void __launch_bounds__(kThreads) k_init(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kWarps + warp_id();
  if (row < p.nrows) b_init(p, row);
}
__global__ void __launch_bounds__(kThreads) k_stats(const __grid_constant__ KP p) {
  pdl_enter();
  b_stats(p, grid_part(p));
}
template <bool GEDI, int MODE>
/* CM_RECWIN keeps the window pass's sums too: 2 blocks per SM. */
__global__ void __launch_bounds__(kThreads, GEDI ? 3 : MODE == CM_RECWIN ? 2 : 4)
    k_combine(const __grid_constant__ KP p) {
  pdl_enter();
  const Part w = grid_part(p);
  b_combine<GEDI, MODE>(p, w);
  /* Every block of the row, whatever its status. Not with CM_SUP (large batches, where one merge
   * launch matters little): on sm_80 its 64 registers would spill. */
  if (MODE == CM_PLAIN && p.cfold) combine_done(p, w.row);
}
__global__ void __launch_bounds__(kThreads) k_temp(const __grid_constant__ KP p) {
  pdl_enter();
  b_temp(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_cmerge(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kWarps + warp_id();
  if (row < p.nrows) b_cmerge(p, row, p.level);
}
/* 128 registers: with __launch_bounds__(256) alone ptxas held it to 64 and spilled. */
__global__ void __maxnreg__(128) k_hist(const __grid_constant__ KP p) {
  pdl_enter();
  b_hist(p, grid_part(p), p.kind, p.level);
}
__global__ void __launch_bounds__(kThreads) k_smerge(const __grid_constant__ KP p) {
  pdl_enter();
  b_smerge(p, blockIdx.x, p.kind, p.level);
}
__global__ void __launch_bounds__(kThreads) k_tie(const __grid_constant__ KP p) {
  pdl_enter();
  b_tie(p, grid_part(p), p.kind);
}
__global__ void __launch_bounds__(kThreads) k_tiecut(const __grid_constant__ KP p) {
  pdl_enter();
  b_tiecut(p, blockIdx.x, p.kind, blockIdx.x);
}
/* A row's list cut (p.level 1: the combine's lists, KP::lstream; 0: the window's), the general search
 * where the lists cannot decide, and with KP::ltail the rest of the row's step. */
__device__ __forceinline__ void row_listcut(const KP &p, int64_t row) {
  if (b_listcut<true>(p, row, p.kind) == LC_MISS) {
    recompute_y(p, row);
    block_search(p, row, p.kind);
  }
  if (p.ltail) row_tail(p, row);
}
/* The window pass. LAST: then the last of a row's blocks to finish does row_listcut (one launch per cut
 * instead of two, for small batches, whose window pass is latency-bound: the list cut's registers
 * leave 2 blocks per SM instead of 3). */
template <bool LAST>
__global__ void __maxnreg__(128) k_window(const __grid_constant__ KP p) {
  pdl_enter();
  const Part w = grid_part(p);
  b_window(p, w, p.kind);
  if (LAST && window_done(p, w.row)) row_listcut(p, w.row);
}
__global__ void __launch_bounds__(kThreads) k_listcut(const __grid_constant__ KP p) {
  pdl_enter();
  row_listcut(p, blockIdx.x);
}
__global__ void __launch_bounds__(kThreads) k_final(const __grid_constant__ KP p) {
  pdl_enter();
  b_final(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_final_merge(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (row < p.nrows) b_final_merge(p, row);
}
__global__ void __launch_bounds__(kThreads) k_sample(const __grid_constant__ KP p) {
  pdl_enter();
  b_sample(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_logprobs(const __grid_constant__ KP p) {
  pdl_enter();
  b_logprobs(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_outputs(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (row < p.nrows) b_outputs(p, row, row);
}

/* ---- The fused kernel (Hopper thread block clusters) ---------------------------------------------- */

/* A cluster of p.gx blocks takes one row at a time (rows c, c + clusters, ...) and runs the separate
 * kernels' bodies in their launch order, with a cluster barrier (release / acquire: the global writes
 * of one phase are visible to the next) where the separate kernels have a launch boundary. The row's
 * Y lives in the cluster's own slot (Y row = cluster index), which the next row reuses while it is
 * still in L2; where it fits, each block also keeps its own chunks of Y in shared memory (FZ_SMEM), so
 * the searches, the LSE pass and the sample read no global memory but single tokens. One launch per
 * step: at B = 1 the step is no longer a chain of ~16 launches. Jobs with sparse models, statistics
 * models (plausibility, nucleus, GeDi, draft) or verify_draft keep the separate kernels (see
 * lmf_cuda_logits_run), as do pre-Hopper devices and builds without sm_90 code. */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define LMF_LG_FUSED_BODY 1
namespace cg = cooperative_groups;

/* A row's status and flags as every block of the cluster sees them after a barrier: the same for all
 * (the next writes come after the next barrier), so a phase no row needs skips its barriers too. */
__device__ __forceinline__ bool row_in(const KP &p, int64_t row, int kind) {
  const Row &R = p.rows[row];
  return R.status == LMF_ROW_OK && R.search == kind;
}

__device__ void fused_search(const KP &p, cg::cluster_group &cl, const Part &w, int kind, bool lead) {
  if (!row_in(p, w.row, kind)) return;
  if (p.list) {
    b_window(p, w, kind);
    cl.sync();
    if (lead) (void)b_listcut<false>(p, w.row, kind); /* a row it leaves goes on below */
    cl.sync();
    if (!row_in(p, w.row, kind)) return; /* the list cut finished the row */
  }
  for (int level = 0; level < 4; ++level) {
    b_hist(p, w, kind, level);
    cl.sync();
    if (lead) b_smerge(p, w.row, kind, level);
    cl.sync();
  }
  b_tie(p, w, kind);
  cl.sync();
  if (lead) b_tiecut(p, w.row, kind, w.ys);
  cl.sync();
}
#endif

__global__ void __launch_bounds__(kThreads, 2) k_fused(const __grid_constant__ KP p) {
#if defined(LMF_LG_FUSED_BODY)
  extern __shared__ __align__(16) float ysm_dyn[]; /* FZ_SMEM: this block's chunks of the row's Y */
  cg::cluster_group cl = cg::this_cluster();
  const int64_t cs = p.gx, rank = (int64_t)cl.block_rank();
  const int64_t cid = (int64_t)blockIdx.x / cs, ncl = (int64_t)gridDim.x / cs;
  const bool lead = rank == 0;
  for (int64_t row = cid; row < p.nrows; row += ncl) {
    Part w;
    w.row = row;
    w.first = rank;
    w.step = cs;
    w.ys = cid;
    w.ysm = (p.fused & FZ_SMEM) ? ysm_dyn : nullptr;
    if (lead && warp_id() == 0) b_init(p, row);
    cl.sync();
    b_combine<false, CM_PLAIN>(p, w); /* KP::lstream is 0 here: the window pass reads Y in shared memory */
    cl.sync();
    if (lead && warp_id() == 0) b_cmerge(p, row, 0);
    cl.sync();
    if (p.fused & FZ_TOPK) fused_search(p, cl, w, SK_TOPK, lead);
    if (p.fused & FZ_TOPP) fused_search(p, cl, w, SK_TOPP, lead);
    if ((p.fused & FZ_FINAL) && p.rows[row].status == LMF_ROW_OK && p.rows[row].do_final) {
      b_final(p, w);
      cl.sync();
      if (lead && threadIdx.x == 0) b_final_merge(p, row);
      cl.sync();
    }
    if ((p.fused & FZ_SAMPLE) && p.rows[row].status == LMF_ROW_OK && p.rows[row].do_sample) {
      b_sample(p, w);
      cl.sync();
    }
    if (p.job.logprobs) b_logprobs(p, w);
    if (lead && threadIdx.x == 0) b_outputs(p, row, cid);
    cl.sync(); /* the slot and the blocks are free for the next row */
  }
#endif
}

/* ---- Host side ------------------------------------------------------------------------------------ */

#include "logits_coop.cuh"

struct Layout {
  int64_t ystride, nchunks;
  int32_t lcap;
  bool lists; /* list mode's candidate lists are reserved (at cand) */
  bool coop;  /* k_coop's scratch is reserved (at coop, gath, cflag) */
  size_t rows, seqs, hist, cpart, spart, tie, cand, coop_rows, gath, cflag, Y, D, sp[kMaxM];
  size_t total;
};

/* List mode: LMF_LOGITS_LIST=1 in the environment, opt-in until measured (docs/logits.md). The
 * workspace size follows it, so set it before lmf_logits_workspace_size. */
bool list_mode_on() {
  const char *e = getenv("LMF_LOGITS_LIST");
  return e && e[0] == '1';
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
  L->lists = list_mode_on() && (job->top_k > 0 || job->top_p < 1.0f); /* only list mode's cuts read them */
  if (L->lists) {
    if (!mul_sz(B, (size_t)kClasses * (size_t)L->lcap * sizeof(uint2), &n) || !reserve(&off, n, &L->cand))
      return false;
  }
  /* k_coop's scratch where its grid (a block per chunk) could fit a device at once. */
  L->coop = bc <= (size_t)kCoopMaxBlocks;
  if (L->coop) {
    if (!reserve(&off, B * sizeof(CoopRow), &L->coop_rows) ||
        !reserve(&off, B * (size_t)kListCap * sizeof(uint2), &L->gath) || !reserve(&off, 256, &L->cflag))
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

/* ---- The fused kernel's geometry ----------------------------------------------------------------- */

constexpr int kFusedDevices = 64;
constexpr int kMaxCluster = 16; /* non-portable on Hopper; 8 where that is refused */

/* What k_fused can do on a device: whether this build has Hopper code for it (binaryVersion >= 90),
 * whether 16-block clusters are allowed, and the dynamic shared memory it may take. */
struct FusedSupport {
  int ok, wide;
  size_t smem_max;
};

FusedSupport fused_support(int device) {
  static std::atomic<int> state[kFusedDevices]; /* 0 unknown, 1 no, 2 yes (8), 3 yes (16) */
  static std::atomic<size_t> smem[kFusedDevices];
  int v = state[device].load(std::memory_order_acquire);
  if (!v) {
    cudaFuncAttributes fa;
    int optin = 0;
    size_t sm = 0;
    v = 1;
    if (cudaFuncGetAttributes(&fa, k_fused) == cudaSuccess && fa.binaryVersion >= 90 &&
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess) {
      sm = (size_t)optin > fa.sharedSizeBytes ? (size_t)optin - fa.sharedSizeBytes : 0;
      if (cudaFuncSetAttribute(k_fused, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)sm) != cudaSuccess)
        sm = 0;
      const cudaError_t wide = cudaFuncSetAttribute(k_fused, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      v = wide == cudaSuccess ? 3 : 2;
    }
    (void)cudaGetLastError(); /* a refusal is an answer, not an error of the call */
    smem[device].store(sm, std::memory_order_relaxed);
    state[device].store(v, std::memory_order_release);
  }
  FusedSupport f;
  f.ok = v >= 2;
  f.wide = v == 3;
  f.smem_max = smem[device].load(std::memory_order_relaxed);
  return f;
}

constexpr int kMaxSmemChunks = 32; /* chunks of Y per block kept in shared memory, at most */

/* A launch of k_fused: `clusters` clusters of `cs` blocks, `smem` bytes of dynamic shared memory each;
 * *at holds the cluster attribute the config points to. */
cudaLaunchConfig_t fused_config(int cs, int64_t clusters, size_t smem, cudaStream_t stream,
                                cudaLaunchAttribute *at) {
  *at = cudaLaunchAttribute{};
  at->id = cudaLaunchAttributeClusterDimension;
  at->val.clusterDim.x = (unsigned)cs;
  at->val.clusterDim.y = 1;
  at->val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)(clusters * cs));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cfg.attrs = at;
  cfg.numAttrs = 1;
  return cfg;
}

/* Clusters of `cs` blocks with `cpb` chunks of Y each in shared memory resident at once (0: none fit). */
int fused_max_clusters(int device, int cs, int cpb) {
  static std::atomic<int> cache[kFusedDevices][kMaxCluster + 1][kMaxSmemChunks + 1];
  const int v = cache[device][cs][cpb].load(std::memory_order_relaxed);
  if (v) return v - 1;
  cudaLaunchAttribute at;
  const cudaLaunchConfig_t cfg = fused_config(cs, 1, (size_t)cpb * kChunk * sizeof(float), nullptr, &at);
  int n = 0;
  if (cudaOccupancyMaxActiveClusters(&n, k_fused, &cfg) != cudaSuccess) n = 0;
  (void)cudaGetLastError();
  cache[device][cs][cpb].store(n + 1, std::memory_order_relaxed);
  return n;
}

struct FusedGeometry {
  int cs;           /* blocks per cluster */
  int64_t clusters; /* clusters launched (each takes rows c, c + clusters, ...) */
  size_t smem;      /* dynamic shared memory per block: its chunks of Y, or 0 */
};

/* The fused kernel's geometry for this job, or false to use the separate kernels. It runs only where
 * LMF_LOGITS_FUSED=1 is in the environment until it is measured faster than the separate kernels
 * (docs/logits.md). */
bool fused_geometry(int device, int64_t B, int64_t nchunks, bool need_y, FusedGeometry *g) {
  const char *env = getenv("LMF_LOGITS_FUSED");
  if (!env || env[0] != '1') return false;
  if (device < 0 || device >= kFusedDevices) return false;
  const FusedSupport sup = fused_support(device);
  if (!sup.ok) return false;
  /* Few rows: the widest cluster, for the bandwidth of more SMs per row; many rows: 8 blocks. */
  for (int cs = (B <= 8 && sup.wide) ? kMaxCluster : 8; cs >= 8; cs /= 2) {
    const int c = cs < nchunks ? cs : (int)nchunks;
    const int64_t per = (nchunks + c - 1) / c;
    const bool fits = per <= kMaxSmemChunks && (size_t)per * kChunk * sizeof(float) <= sup.smem_max;
    int cpb = need_y && fits ? (int)per : 0;
    int n = fused_max_clusters(device, c, cpb);
    if (n <= 0 && cpb) n = fused_max_clusters(device, c, cpb = 0); /* without the shared-memory copy */
    if (n <= 0) continue;
    g->cs = c;
    g->clusters = B < n ? B : n;
    g->smem = (size_t)cpb * kChunk * sizeof(float);
    return true;
  }
  return false;
}

typedef void (*Kernel)(const KP);

/* Whether the separate kernels can take programmatic dependent launch on a device: Hopper or later,
 * and this build's code for them is sm_90 or later, so every kernel really waits (pdl_enter; sm_80
 * code JIT-run on Hopper would not). */
bool pdl_support(int device) {
  static std::atomic<int> state[kFusedDevices]; /* 0 unknown, 1 no, 2 yes */
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

/* k_coop's capacity on a device: the blocks it can hold at once (cooperative launch supported), 0 where
 * it cannot be launched cooperatively. Asked once per device. */
int64_t coop_capacity(int device, int sms) {
  static std::atomic<int> per_sm[kFusedDevices]; /* 0 unknown, -1 none, else blocks per SM */
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

/* Whether a job takes the one-launch step (logits_coop.cuh; opt-in: LMF_LOGITS_COOP=1): a combine
 * without sparse models, mask or GeDi models or top-k, whose grid (a block per chunk) the device
 * holds at once. */
bool coop_takes(const lmf_lg_job *job, const Layout &L, bool sparse, int nstat, int device, int sms) {
  const char *e = getenv("LMF_LOGITS_COOP"); /* opt-in until measured faster (docs/logits.md) */
  if (!e || e[0] != '1' || !L.coop || job->mode == LMF_LG_MODE_VERIFY || sparse || nstat > 0 ||
      job->top_k > 0 || device < 0 || device >= kFusedDevices)
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
  int device;
  bool pdl;
  mutable bool first = true;
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
lmf_status_t run_search(const Launcher &launch, KP &kp, int kind, int64_t chunk_blocks, bool tail) {
  kp.kind = kind;
  if (kp.list && (kind == SK_TOPK || kind == SK_TOPP)) {
    if (kp.lstream) { /* the rows whose combine pass filled their lists (Row::sup) try those first */
      kp.level = 1;
      LMF_TRY(launch(k_listcut, kp.nrows, kp));
      kp.level = 0;
      /* the window pass of the rows whose Y is unwritten, from their logits */
      if (kp.ylazy) LMF_TRY(launch(k_combine<false, CM_RECWIN>, chunk_blocks, kp));
    }
    kp.ltail = tail;
    if (kp.wlast) {
      LMF_TRY(launch(k_window<true>, chunk_blocks, kp)); /* and each row's list cut, in its last block */
    } else {
      LMF_TRY(launch(k_window<false>, chunk_blocks, kp));
      LMF_TRY(launch(k_listcut, kp.nrows, kp));
    }
    kp.ltail = 0;
    kp.kind = SK_NONE;
    return LMF_OK;
  }
  for (int level = 0; level < 4; ++level) {
    kp.level = level;
    LMF_TRY(launch(k_hist, chunk_blocks, kp));
    LMF_TRY(launch(k_smerge, kp.nrows, kp));
  }
  LMF_TRY(launch(k_tie, chunk_blocks, kp));
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
  local.lcap = L.lcap;
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

  /* Blocks per row: about four resident blocks per SM in all, at most one per chunk. */
  const int64_t B = local.nrows, target = (int64_t)sms * 4;
  int64_t gx = B >= target ? 1 : (target + B - 1) / B;
  if (gx > L.nchunks) gx = L.nchunks;
  if (gx < 1) gx = 1;
  local.gx = (int32_t)gx;
  const int64_t chunk_blocks = B * gx;
  const int64_t warp_blocks = (B + kWarps - 1) / kWarps;
  const int64_t thread_blocks = (B + kThreads - 1) / kThreads;
  const int64_t grid_cap = (int64_t)sms * 8;

  local.list = !verify && L.lists; /* list_mode_on() and a cut, as the layout */

  const char *pdl_env = getenv("LMF_LOGITS_PDL"); /* opt-in until measured (docs/logits.md) */
  const bool pdl = pdl_env && pdl_env[0] == '1' && ctx->device >= 0 && ctx->device < kFusedDevices &&
                   pdl_support(ctx->device);
  const Launcher launch{reinterpret_cast<cudaStream_t>(stream), fn, ctx->device, pdl};
  bool sparse = false;
  for (int k = 0; k < job->num_models; ++k) sparse |= job->models[k].sparse_index && job->models[k].roles;
  if (coop_takes(job, L, sparse, local.nstat, ctx->device, sms)) {
    local.gx = (int32_t)L.nchunks;
    local.list = 0;
    local.coop = reinterpret_cast<CoopRow *>(base + L.coop_rows);
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
  FusedGeometry fg;
  if (!verify && !sparse && local.nstat == 0 &&
      fused_geometry(ctx->device, B, L.nchunks, local.need_y != 0, &fg)) {
    const int cs = fg.cs;
    local.gx = cs;
    local.fused = (dist && job->top_k > 0 ? FZ_TOPK : 0u) | (dist && job->top_p < 1.0f ? FZ_TOPP : 0u) |
                  (final_pass ? FZ_FINAL : 0u) | (sampling ? FZ_SAMPLE : 0u) | (fg.smem ? FZ_SMEM : 0u);
    cudaLaunchAttribute at;
    const cudaLaunchConfig_t cfg =
        fused_config(cs, fg.clusters, fg.smem, reinterpret_cast<cudaStream_t>(stream), &at);
    (void)cudaLaunchKernelEx(&cfg, k_fused, local);
    return launched(fn, "k_fused", ctx->device);
  }
  /* List mode, separate kernels: the combine pass fills the lists for each row's first cut (top-k or
   * top-p; not after GeDi's filter, which rewrites Y, nor with GeDi's combine). Only where a block
   * walks several chunks: with one (small batches), its running max is its chunk's, far below the
   * row's, and the lists hold most of the row (a model of the bench's rows: none decided at 1). */
  local.lstream = local.list && dist && !gf && job->gedi_pos_model < 0 &&
                  (job->top_k > 0 || job->top_p < 1.0f) && (L.nchunks + gx - 1) / gx >= kSupChunks;
  /* With top-p every row that needs the distribution enters a cut, so Y can wait for the rows the
   * lists cannot decide; a log-prob row needs Y whole. */
  local.ylazy = local.lstream && job->top_p < 1.0f && !job->logprobs;
  /* List mode also folds the combine's merge into the combine pass and, where the step takes a cut,
   * the LSE, sample and output kernels into the last list cut: at B = 1 a top-p step is then four
   * launches (init, combine, window, list cut), not fifteen. */
  local.cfold = list_mode_on() && !verify && !local.lstream;
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
    LMF_TRY(launch(k_stats, chunk_blocks, local));
    LMF_TRY(launch(k_stats_merge, warp_blocks, local));
  }
  if (nuc_search) LMF_TRY(run_search(launch, local, SK_NUC, chunk_blocks, false));
  const Kernel combine = job->gedi_pos_model >= 0 ? k_combine<true, CM_PLAIN>
                         : local.lstream           ? k_combine<false, CM_SUP>
                                                   : k_combine<false, CM_PLAIN>;
  LMF_TRY(launch(combine, chunk_blocks, local));
  local.level = 0;
  if (!local.cfold) LMF_TRY(launch(k_cmerge, warp_blocks, local));
  if (gf) {
    LMF_TRY(run_search(launch, local, SK_GF, chunk_blocks, false));
    LMF_TRY(launch(k_temp, chunk_blocks, local));
    local.level = 1;
    LMF_TRY(launch(k_cmerge, warp_blocks, local));
    local.level = 0;
  }
  const bool topp = dist && job->top_p < 1.0f;
  if (dist && job->top_k > 0) LMF_TRY(run_search(launch, local, SK_TOPK, chunk_blocks, tail && !topp));
  if (topp) LMF_TRY(run_search(launch, local, SK_TOPP, chunk_blocks, tail));
  if (final_pass && !tail) {
    LMF_TRY(launch(k_final, chunk_blocks, local));
    LMF_TRY(launch(k_final_merge, thread_blocks, local));
  }
  if (sampling && !tail) LMF_TRY(launch(k_sample, chunk_blocks, local));
  if (!verify) {
    if (job->logprobs) LMF_TRY(launch(k_logprobs, chunk_blocks, local));
    return tail ? LMF_OK : launch(k_outputs, thread_blocks, local);
  }
  const int64_t S = local.nseqs;
  LMF_TRY(launch(k_vwalk, (S + kThreads - 1) / kThreads, local));
  if (sampling) LMF_TRY(launch(k_resid, S * gx, local));
  return launch(k_vfinish, (S + kThreads - 1) / kThreads, local);
}

}  // extern "C"
