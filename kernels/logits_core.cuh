/* The logits kernels' constants, shared structures (Row, KP, ...), 128-bit fixed-point helpers and warp /
 * block reductions.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

/* A device function kept out of line where several call sites would each inline a copy of code that runs
 * once per launch (docs/logits.md, "Code footprint"); the CPU emulator inlines as it likes. */
#if LMF_CUDA_EMU
#define LMF_NOINLINE
#else
#define LMF_NOINLINE __noinline__
#endif

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kChunk = 2048;              /* tokens per chunk: the CPU backend's BLK */
constexpr int kPer = kChunk / kThreads;   /* tokens per thread per chunk */
constexpr int kBins = 256;                /* radix digit: 8 bits */
constexpr int kNst = 5;                   /* statistics roles */
constexpr int kMaxM = LMF_LOGITS_MAX_MODELS;
constexpr int kWinCap = 2048;             /* the combine's lists past 10 nats keep this many (list_cap) */
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

static_assert(kPer == 8 && kPer == LMF_LG_GROUP, "a thread: one 8-token group a chunk (16-byte vectors, exp-sums)");
static_assert(kThreads == kBins, "the search merge maps one thread to one bin");
static_assert(kListCap % kThreads == 0 && kListCap >= kWinCap && kListCap <= kSupCap, "list cut capacity");

enum { ST_PLAUS = 0, ST_NUC = 1, ST_GPOS = 2, ST_GNEG = 3, ST_DRAFT = 4 };
enum { SK_NONE = 0, SK_NUC = 1, SK_GF = 2, SK_TOPK = 3, SK_TOPP = 4 };
enum { RF_BAD_INDEX = 1u, RF_BAD = 2u };

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
  int32_t topp_total; /* top-p's target is top_p times `total` (search_target) */
  uint32_t prefix;
  int32_t nuc_on, gf_on, topk_on, topp_on;
  int32_t do_final, do_sample;
  int32_t yarg;
  uint32_t comb; /* models summed into s for this row */
  uint32_t rd;   /* models read for this row */
  float T, Teff, plaus_thr, gL_pos, gL_neg, gt, ymax, lse;
  float smax[kNst], slse[kNst];
  float w[kMaxM];
  int64_t nfin;
  int64_t in_row[kMaxM];
  uint64_t seed, goff;
  uint64_t nuc_cut, gf_cut, topk_cut, topp_cut;
  double total; /* sum over chunks of (sum e^(y - chunk max)) e^(chunk max - ymax), in double */
  U128 flo, target;
  U128 acc;       /* atomics: the final pass's mass */
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
  unsigned int lcut;  /* KP::lbins: 1 once the row's list cut is done (k_listcut_flat's flag) */
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

/* Per row, in the workspace (KP::coop): k_coop's phase-2 histogram of d2 = 2 (ymax - y) (bins 0 .. 255:
 * [0, 32) by 1/8; bin kCoopIn, d2 >= 32, is counted nowhere: coop_hist_add), the count of the
 * crossing bin's list and the row's ticket; list mode's flat rows (logits_flat.cuh) use the same. */
constexpr int kCoopBins = 257;            /* the bins a token may lie in */
constexpr int kCoopIn = kCoopBins - 1;    /* the bins below d2 = 32, and the index of the one past */
struct CoopRow {
  unsigned cnt[kCoopIn];
  unsigned ngather;
  unsigned done; /* blocks of the row past their last phase (the outputs' ticket) */
  unsigned nbins; /* list mode's flat rows: the row's bins blocks that have finished */
  U128 mass[kCoopIn];
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
  int32_t list;   /* list mode for top-k / top-p (combine only; LMF_LOGITS_LIST=1) */
  int32_t lstream; /* list mode: the combine pass fills the lists for each row's first cut */
  int32_t ylazy;   /* lstream, and the combine pass leaves Y unwritten for those rows (Row::ymiss) */
  int32_t cfold;   /* LMF_LOGITS_LIST=1 (any job, with cuts or not) not verify, or lstream: the
                    * combine pass's last block per row merges the row's partials (combine_done), so
                    * no merge kernel follows */
  int32_t ltail;   /* per launch, the last list cut of a step: its block also does the row's LSE and
                    * sample passes where they are left, and its outputs (row_tail) */
  int32_t lbins;   /* lstream with top-p, no top-k and no log-prob rows: the rows the combine's lists
                    * cannot decide take the 257 bins, spread over their chunks (logits_flat.cuh) */
  int32_t wlast;   /* list mode, small batches: the window pass's last block per row does the list cut
                    * (k_window<true>) */
  int32_t lcap;   /* list mode: entries per class list, min(V, kSupCap) (a class never holds more) */
  uint2 *cand;    /* list mode: per row kClasses lists of lcap (y bits, id) */
  CoopRow *coop;            /* k_coop, and list mode's flat rows (lbins): per row its histogram */
  uint2 *gath;              /* k_coop: per row kListCap (y bits, id) of the crossing bin */
  unsigned *coop_fallback;  /* k_coop: some row's crossing bin is too large for the list */
  unsigned *lseq;           /* list mode: k_listcut_flat's blocks, counted as they start (k_init zeroes it) */
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

/* The streaming passes' per-token tests as float compares, which the compiler chains into one
 * predicate per token (lmf_lg_is_bad and lmf_lg_is_ninf test bits: three to four integer instructions
 * each). The same values: NaN and +inf are exactly the floats not below +inf; -inf is the one float
 * equal to -inf. */
__device__ __forceinline__ bool bad_f(float x) { return !(x < __uint_as_float(0x7f800000u)); }
__device__ __forceinline__ bool ninf_f(float x) { return x == ninf(); }
/* lmf_lg_term(acc, w, x) with ninf_f. */
__device__ __forceinline__ float term_f(float acc, float w, float x) {
  const float t = LMF_FFMA(w, x, acc);
  return ninf_f(x) ? ninf() : t;
}

/* a[q] for a q known only at run time, with a kept in registers (kPer selects). A loop over a thread's
 * kPer tokens of a chunk can then stay rolled: its body's code is fetched once per launch, not kPer
 * times (docs/logits.md, "Code footprint"). */
__device__ __forceinline__ float sel8(const float a[kPer], int q) {
  float r = a[0];
#pragma unroll
  for (int i = 1; i < kPer; ++i) r = q == i ? a[i] : r;
  return r;
}
/* a[q] = v for a q known only at run time, a kept in registers. */
__device__ __forceinline__ void set8(float a[kPer], int q, float v) {
#pragma unroll
  for (int i = 0; i < kPer; ++i) a[i] = q == i ? v : a[i];
}

__device__ __forceinline__ U128 u128(unsigned long long lo, unsigned long long hi) {
  U128 r;
  r.lo = lo;
  r.hi = hi;
  return r;
}
__device__ __forceinline__ U128 add(U128 a, U128 b) {
  U128 r;
#if defined(__CUDA_ARCH__)
  /* The carry chain in four adds; written in C, the compiler recomputed the carry with compares. */
  asm("add.cc.u64 %0, %2, %4;\n\taddc.u64 %1, %3, %5;"
      : "=l"(r.lo), "=l"(r.hi)
      : "l"(a.lo), "l"(a.hi), "l"(b.lo), "l"(b.hi));
#else
  r.lo = a.lo + b.lo;
  r.hi = a.hi + b.hi + (r.lo < a.lo ? 1ull : 0ull);
#endif
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

/* A normal mass's bits b (w > 0) in the fixed point of fx_of: w = m 2^(e - 150) = (m 2^(e - 70)) 2^-80,
 * m the significand with its implicit bit, exponents past 1's taken as 1's; returns e - 70 (negative
 * below 2^-57, where the fixed point truncates). */
__device__ __forceinline__ int fx_split(uint32_t b, uint32_t *m) {
  const int e = (int)(b >> 23);
  *m = (b & 0x7fffffu) | 0x800000u;
  return (e > 127 ? 127 : e) - 70;
}

/* A mass w in [0, 1] (fp32) as a fixed-point integer in units of 2^-80: exact for w >= 2^-57,
 * truncated below; 0 for 0, negatives and subnormals. Sums of up to 2^31 of them fit 128 bits. */
__device__ __forceinline__ U128 fx_of(float w) {
  const uint32_t b = __float_as_uint(w);
  if (b == 0u || (b >> 31) != 0u || (b >> 23) == 0u) return u128(0ull, 0ull);
  uint32_t m32;
  const int sh = fx_split(b, &m32);
  const unsigned long long m = m32;
  if (sh >= 0) return u128(m << sh, sh > 40 ? m >> (64 - sh) : 0ull);
  return u128(-sh < 64 ? m >> (-sh) : 0ull, 0ull);
}

/* fx_of(w) for a mass within 16 nats of the max (2^-24 <= w <= 1: w >= e^-16) as m 2^sh with m < 2^24
 * and 33 <= sh <= 57, so its 16-bit digits lie in digits 2 .. 5 of the 128-bit sum (near_digits_add).
 * fx_of's clamp (fx_split), subnormal and truncated cases do not arise there. */
__device__ __forceinline__ void fx_parts_near(float w, uint32_t *m, int *sh) {
  const uint32_t b = __float_as_uint(w);
  *m = (b & 0x7fffffu) | 0x800000u;
  *sh = (int)(b >> 23) - 70;
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
  alignas(16) int32_t k[kWarps]; /* 32-bit values, read as two 16-byte vectors */
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

/* Warp-wide 32-bit reductions, every lane gets the result: one REDUX instruction from sm_80 on
 * (__reduce_*_sync), five shuffle steps before. T: int32_t (signed max) or uint32_t. */
template <class T>
__device__ __forceinline__ T warp_max32(T v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  return __reduce_max_sync(kFull, v);
#else
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFull, v, o));
  return v;
#endif
}
__device__ __forceinline__ uint32_t warp_add_u32(uint32_t v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  return __reduce_add_sync(kFull, v);
#else
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
#endif
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

/* The block's sum in every thread; LEAD: in thread 0 only (the others get 0 and skip the warps'
 * sums: the callers that only add it to the row in thread 0). */
template <bool LEAD = false>
__device__ U128 block_sum_u128(U128 v, Red &r) {
  v = warp_sum_u128(v);
  if (lane_id() == 0) {
    r.a[warp_id()] = v.lo;
    r.b[warp_id()] = v.hi;
  }
  __syncthreads();
  U128 s = u128(0ull, 0ull);
  if (!LEAD || threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < kWarps; ++i) s = add(s, u128(r.a[i], r.b[i]));
  }
  __syncthreads();
  return s;
}

/* The block's sum of v in thread 0 (0 in the others), in one fixed order: a warp butterfly (every
 * lane of a warp gets the same bits: each addition's operands only swap sides), then the warps in
 * order. So the sum depends on which thread holds which value, never on timing. tail: a barrier
 * after thread 0's reads of r.a (without: the caller's next barrier must come before r.a is written
 * again). */
__device__ double block_sum_f64_lead(double v, Red &r, bool tail = true) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  if (lane_id() == 0) r.a[warp_id()] = (unsigned long long)__double_as_longlong(v);
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int i = 0; i < kWarps; ++i) s += __longlong_as_double((long long)r.a[i]);
  }
  if (tail) __syncthreads();
  return s;
}

/* Inclusive prefix sum of v over the warp's lanes (64-bit words, carries within the word). On the
 * device each step's add is predicated on the shuffle's own in-range flag instead of a lane compare
 * (ptxas turns the predicated add into an add and a select: 6 instructions a step, not 7). */
__device__ __forceinline__ unsigned long long warp_incl_scan_u64(unsigned long long v) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
#if defined(__CUDA_ARCH__)
    asm("{\n\t.reg .pred p;\n\t.reg .b32 vl, vh, tl, th;\n\t.reg .b64 t;\n\t"
        "mov.b64 {vl, vh}, %0;\n\t"
        "shfl.sync.up.b32 tl|p, vl, %1, 0, -1;\n\t"
        "shfl.sync.up.b32 th, vh, %1, 0, -1;\n\t"
        "mov.b64 t, {tl, th};\n\t"
        "@p add.u64 %0, %0, t;\n\t}"
        : "+l"(v)
        : "r"(o));
#else
    const unsigned long long n = __shfl_up_sync(kFull, v, o); /* the CPU emulator (tests/emu) */
    if (lane_id() >= o) v += n;
#endif
  }
  return v;
}

/* The same for 32-bit counts. */
__device__ __forceinline__ unsigned warp_incl_scan_u32(unsigned v) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
#if defined(__CUDA_ARCH__)
    asm("{\n\t.reg .pred p;\n\t.reg .b32 t;\n\t"
        "shfl.sync.up.b32 t|p, %0, %1, 0, -1;\n\t"
        "@p add.u32 %0, %0, t;\n\t}"
        : "+r"(v)
        : "r"(o));
#else
    const unsigned n = __shfl_up_sync(kFull, v, o); /* the CPU emulator (tests/emu) */
    if (lane_id() >= o) v += n;
#endif
  }
  return v;
}

/* Inclusive prefix sum of counts over the block's threads in thread order. */
__device__ unsigned block_incl_scan_u32(unsigned v, Red &r) {
  v = warp_incl_scan_u32(v);
  if (lane_id() == 31) r.c[warp_id()] = v;
  __syncthreads();
  unsigned pre = 0u;
#pragma unroll
  for (int i = 0; i < kWarps - 1; ++i)
    if (i < warp_id()) pre += (unsigned)r.c[i];
  __syncthreads();
  return pre + v;
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
#pragma unroll
  for (int i = 0; i < kWarps - 1; ++i) /* a fixed trip count: kWarps - 1 predicated adds */
    if (i < warp_id()) pre = add(pre, u128(r.a[i], r.b[i]));
  __syncthreads();
  return add(pre, v);
}

/* Whether this thread's bin is the crossing one of a walk over the block's kBins bins (thread t: bin t;
 * h its mass; at the cumulative mass up to and including it, which grows with t): the first bin where
 * at reaches tgt, or, where none does, the last. Exactly one thread answers true, with no block
 * reduction of the least such t (two barriers more): the callers publish its bin through shared
 * memory under a barrier they take anyway, or only that thread needs it. */
__device__ __forceinline__ bool is_crossing_bin(U128 at, U128 h, U128 tgt) {
  static_assert(kThreads == kBins, "thread t holds bin t");
  const int t = threadIdx.x;
  return ge(at, tgt) ? t == 0 || !ge(sub(at, h), tgt) : t == kBins - 1;
}

/* Adds v to a 128-bit counter in global memory: the low word's carries go to the high word, so the
 * result is exact whatever the order of the adds. */
__device__ __forceinline__ void atomic_add_u128(U128 *p, U128 v) {
  if (is_zero(v)) return;
  const unsigned long long old = atomicAdd(&p->lo, v.lo);
  const unsigned long long h = v.hi + ((old + v.lo < old) ? 1ull : 0ull);
  if (h) atomicAdd(&p->hi, h);
}
