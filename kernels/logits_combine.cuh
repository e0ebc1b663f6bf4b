/* The combine pass (the models' weighted sum, bias, temperature, per-chunk partials) and list mode's
 * candidate lists it can fill.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

/* ---- List mode's candidate lists --------------------------------------------------------------- */

/* The list class of a token g = ymax - y below the max (in d = 2 g, as kClasses names them): g in
 * [0, 2) 0, [2, 4) 1, [4, 8) 2, [8, 10) 3, [10, 12) 4, [12, 16) 5, else kClasses (none; +inf and NaN
 * g's too; below 0: 0). By a table of floor(g) in 3-bit entries: a clamp, a conversion, a product
 * and a shift per token instead of six compares and selects. The same class for every float g as
 * the earlier table of floor(d / 4) on d = 2 g (checked over all 2^32), without the doubling. */
__device__ __forceinline__ int class_of(float g) {
  static_assert(kClasses == 6, "the table below");
  float c = g < 16.0f ? g : 16.0f; /* NaN, +inf: 16 */
  c = c > 0.0f ? c : 0.0f;
  const int i = (int)c; /* floor(g), 0 .. 16: entry i is the class of [i, i + 1) */
  return (int)((0x6b6d91b492240ull >> (3 * i)) & 7u);
}

/* Entries a class list keeps (its stride in the workspace is lcap; counts go on past the cap, and a
 * class whose count passes it is not used). Every list is written where HBM traffic counts, so each
 * keeps no more than a cut can use: the window pass's, kListCap (a list cut holds at most that many
 * tokens in all); the combine pass's (SUP), lcap for classes 0 .. 3 (their counts are loose: a block's
 * running max is below the row's; a top-p cut of a flat row often lies 4 to 10 nats below the max,
 * class 2 or 3) but kWinCap for the classes past 10 nats (a cut lies there only in a peaked row,
 * among few tokens). */
template <bool SUP>
__device__ __forceinline__ unsigned list_cap(int cls, unsigned lcap) {
  /* SUP needs no min with lcap: the combine fills lists only where a block walks kSupChunks chunks,
   * so V > 3 kChunk and lcap = min(V, kSupCap) > kWinCap (and a min there costs the CM_SUP combine a
   * spill on sm_80). */
  if (SUP) return cls < 4 ? lcap : (unsigned)kWinCap;
  return lcap < (unsigned)kListCap ? lcap : (unsigned)kListCap;
}

/* Appends this lane's tokens of a chunk to the row's class lists (the window pass, b_window and
 * CM_RECWIN): token q is (y[q], id0 + q * idstep) of class (cls >> 4q) & 15 (kClasses: none). Every
 * lane of the warp calls it. The warp's counts per class come from one packed scan (10 bits a class:
 * at most 256 tokens each), and lane k takes class k's slots with one atomic: the warp waits for one
 * round trip to L2 per chunk, not one per class and token (the lists' atomics were the list mode's
 * critical path). Counts go past the cap; entries not. The order within a list is the warps' order of
 * arrival, which no result depends on (a list cut orders its items by key; its sums are exact).
 *
 * Per token the loop does no test of the class: class kClasses (none) counts in the packed word's
 * bits 60 .. 63, whose carries leave the word, and lane kClasses offers no room. Lane k offers its
 * class's first free entry (index into L) and the room left before the cap in one word, so a token
 * takes one shuffle and a compare. The window pass (80 registers) branches around its store: the
 * predicated stores, issued together, spill there. */
__device__ __forceinline__ void list_append8(Row *R, uint2 *L, unsigned lcap, uint32_t cls, const float y[kPer],
                                             int64_t id0, int64_t idstep) {
  static_assert(10 * kClasses + 4 <= 64, "the none class's count field");
  static_assert((uint64_t)kClasses * kSupCap < (1ull << 18) && kSupCap < (1 << 14), "an offer's packing");
  constexpr uint32_t kNone8 = 0x11111111u * (uint32_t)kClasses; /* every token of the lane: no class */
  if (!__any_sync(kFull, cls != kNone8)) return; /* most of a wide row's warps, at one compare */
  unsigned long long mine = 0ull;
#pragma unroll
  for (int q = 0; q < kPer; ++q) mine += 1ull << (10u * ((cls >> (4 * q)) & 15u));
  const int lane = lane_id();
  const unsigned long long inc = warp_incl_scan_u64(mine);
  const unsigned long long tot = __shfl_sync(kFull, inc, 31);
  uint32_t offer = 0u; /* lane k < kClasses: (class k's next index into L) << 14 | room; else no room */
  if (lane < kClasses) {
    const unsigned n = (unsigned)(tot >> (10 * lane)) & 1023u;
    const unsigned base = n ? atomicAdd(&R->cls_c[lane], n) : 0u;
    const unsigned cap = list_cap<false>(lane, lcap);
    if (base < cap) offer = (((unsigned)lane * lcap + base) << 14) | (cap - base);
  }
  unsigned long long run = inc - mine; /* this lane's first slots, past the warp's base per class */
  L = opaque_ptr(L); /* one register pair: not the row's offset rebuilt for every store */
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const unsigned k = (cls >> (4 * q)) & 15u, sh = 10u * k;
    const uint32_t o = __shfl_sync(kFull, offer, (int)k); /* class k's offer, from lane k */
    const unsigned slot = (unsigned)(run >> sh) & 1023u;
    run += 1ull << sh;
    if (slot < (o & 0x3fffu)) L[(o >> 14) + slot] = make_uint2(__float_as_uint(y[q]), (uint32_t)(id0 + (int64_t)q * idstep));
  }
}

/* g = runmax - y below which a token's class is below k (class_of(g) < k iff g < class_edge(k)), for k
 * in 0 .. kClasses: 0, 2, 4, 8, 10, 12, 16, halved in 4-bit fields. */
__device__ __forceinline__ float class_edge(int k) {
  static_assert(kClasses == 6, "the table below");
  return (float)(((0x8654210u >> (4 * k)) & 15u) * 2u);
}

/* This warp's kPer * 32 entries of list_append_sup's queue (shared memory; only k_combine<false,
 * CM_SUP> calls it, so only that kernel holds the 16 KiB). */
__device__ __forceinline__ uint2 *sup_queue() {
  __shared__ uint2 q[kWarps][kPer * 32];
  return q[warp_id()];
}

/* A float at most a - b (exact): the difference rounded down on the device; in the CPU emulator the
 * nearest one, an ulp lower. */
__device__ __forceinline__ float sub_down(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rd(a, b);
#else
  return nextafterf(a - b, -INFINITY);
#endif
}

/* The combine pass's part of list mode (KP::lstream): this thread's tokens v .. v + 7 of a chunk go to
 * the lists by their class with respect to the block's running max (the max so far of its chunks,
 * this one included). That max is at most the row's, so a token's class here is at most its true
 * class, and the lists of classes 0 .. k hold a superset of window k's tokens, which the row's first
 * cut filters (sup_items).
 *
 * Only tokens below *edge (in g = runmax - y) are appended: once the warp sees a class's count pass
 * its cap, sup_items reads no list from that class on (it stops at the first class over its cap), so
 * the tokens of that class and the later ones are dropped here, uncounted but for a few at the edge
 * (the count that passed the cap already marks the class). *edge (warp-uniform) starts at 16
 * (class_edge(kClasses)) and only falls. The warp packs its tokens below the edge into q (this warp's
 * kPer * 32 entries of shared memory) and appends them 32 at a time, one per lane: the lanes of a
 * class find each other with one match, and the lowest takes the class's slots with one atomic. A
 * warp whose chunk holds few such tokens (a peaked row; a flat row once its far classes are full)
 * runs one round, where the per-token loop of list_append8 ran its 8 steps for a warp with any token
 * within 16 nats. */
__device__ __forceinline__ void list_append_sup(const KP &p, int64_t row, float runmax, const float y[kPer],
                                                int64_t v, float *edge, uint2 *q) {
  const float e = *edge;
  /* y > t for every token with g = FSUB(runmax, y) below e (such a g is below e only where the exact
   * difference is: e is a float), one compare a token instead of a subtraction and a compare. The few
   * more it lets in (g at most an ulp or two past e) have a class of at least the one whose count set e
   * (or none): the round below counts them into a list already past its cap and stores none. */
  const float t = sub_down(runmax, e);
  unsigned m = 0u; /* bit j: token v + j is appended */
#pragma unroll
  for (int j = 0; j < kPer; ++j) m |= (unsigned)(y[j] > t) << j; /* NaN, -inf y: not */
  const unsigned n = (unsigned)__popc(m);
  const unsigned inc = warp_incl_scan_u32(n);
  const unsigned tot = __shfl_sync(kFull, inc, 31);
  if (tot == 0u) return; /* warp-uniform */
  const unsigned lane = (unsigned)lane_id();
  unsigned pos = inc - n;
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    push_shared_if((m >> j) & 1u, q, &pos, make_uint2(__float_as_uint(y[j]), lane * kPer + (unsigned)j));
  __syncwarp();
  Row *R = &p.rows[row];
  const unsigned lcap = (unsigned)p.lcap;
  uint2 *L = opaque_ptr(p.cand + row * (int64_t)kClasses * p.lcap);
  const uint32_t id0 = (uint32_t)(v - (int64_t)lane * kPer); /* the warp's first token (V < 2^31) */
  const unsigned lt = (1u << lane) - 1u;
  int kstop = kClasses; /* the first class this call saw pass its cap */
#pragma unroll 1
  for (unsigned b = 0u; b < tot; b += 32u) {
    const bool has = b + lane < tot;
    uint2 t = make_uint2(0u, 0u);
    if (has) t = q[b + lane];
    const int k = has ? class_of(LMF_FSUB(runmax, __uint_as_float(t.x))) : kClasses;
    const unsigned same = __match_any_sync(kFull, k); /* the lanes of this lane's class */
    const unsigned cnt = (unsigned)__popc(same);
    const unsigned lead = (unsigned)__ffs(same) - 1u;
    const unsigned cap = list_cap<true>(k, lcap);
    unsigned base = 0u;
    bool over = false;
    if (lane == lead && k < kClasses) {
      base = atomicAdd(&R->cls_c[k], cnt);
      over = base + cnt > cap;
    }
    base = __shfl_sync(kFull, base, (int)lead);
    const unsigned slot = base + (unsigned)__popc(same & lt);
    store_if(k < kClasses && slot < cap, &L[(unsigned)k * lcap + slot], make_uint2(t.x, id0 + t.y));
    const int ko = kClasses - (int)__reduce_max_sync(kFull, over ? (unsigned)(kClasses - k) : 0u);
    kstop = ko < kstop ? ko : kstop;
  }
  if (kstop < kClasses) *edge = fminf(e, class_edge(kstop));
  __syncwarp(); /* q is read before the warp's next chunk writes it */
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

/* One token of the window pass (kind: the search's; value yq, dq; id v): if it takes part, its mass
 * goes to its class's sum and to the total. *y gets its value for the lists; returns its class
 * (kClasses: none). */
__device__ __forceinline__ int window_token(int kind, const SRow &s, float yq, float dq, int64_t v, int64_t V,
                                            U128 cm[kClasses], U128 &tot, float *y) {
  uint32_t key = 0;
  U128 fx = u128(0ull, 0ull);
  int c = kClasses;
  *y = 0.0f;
  const float g = LMF_FSUB(s.ymax, yq); /* -inf y: +inf */
  if (v < V && search_item_v(kind, s, yq, dq, v, &key, &fx, y)) {
    tot = add(tot, fx);
    c = class_of(g);
#pragma unroll
    for (int k = 0; k < kClasses; ++k)
      if (c == k) cm[k] = add(cm[k], fx);
  }
  return c;
}

/* The window pass's step for this thread's tokens of a chunk (token q: values yval[q], dval[q], id
 * id0 + q * idstep; every lane of the warp calls it): each token that takes part in the search gets
 * its class by d = 2 (y_max - y), its mass is added to its class's and to the total, and the chunk's
 * tokens go to their classes' lists. warm (block-uniform): the block walks many chunks, so a top-p
 * search runs its tokens unrolled, with the cut kind's switch folded away (the second combine pass at
 * larger batches); otherwise rolled, the switch's code fetched once (B = 1). */
__device__ __forceinline__ void window_chunk(int kind, const SRow &s, Row *R, uint2 *L, unsigned lcap,
                                             const float yval[kPer], const float dval[kPer], int64_t id0,
                                             int64_t idstep, int64_t V, U128 cm[kClasses], U128 &tot,
                                             bool warm) {
  uint32_t cls = 0u;
  float ys[kPer];
  if (warm && kind == SK_TOPP) {
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int c = window_token(SK_TOPP, s, yval[q], dval[q], id0 + (int64_t)q * idstep, V, cm, tot, &ys[q]);
      cls |= (uint32_t)c << (4 * q);
    }
  } else {
#pragma unroll 1 /* search_item_v's switch fetched once, not kPer times (sel8, set8) */
    for (int q = 0; q < kPer; ++q) {
      float y;
      const int c =
          window_token(kind, s, sel8(yval, q), sel8(dval, q), id0 + (int64_t)q * idstep, V, cm, tot, &y);
      set8(ys, q, y);
      cls |= (uint32_t)c << (4 * q);
    }
  }
  list_append8(R, L, lcap, cls, ys, id0, idstep);
}

/* The end of a window pass's block: its class masses and total added to the row's. Lane k adds
 * class k's (lane kClasses the total), so the warp waits for one atomic round trip, not seven. */
__device__ __forceinline__ void window_flush(Row *R, U128 cm[kClasses], U128 tot) {
  const int lane = lane_id();
  U128 mine = u128(0ull, 0ull);
#pragma unroll
  for (int k = 0; k < kClasses; ++k) {
    const U128 m = warp_sum_u128(cm[k]);
    if (lane == k) mine = m;
  }
  tot = warp_sum_u128(tot);
  if (lane == kClasses) mine = tot;
  if (lane < kClasses) atomic_add_u128(&R->cls_m[lane], mine);
  else if (lane == kClasses) atomic_add_u128(&R->ltot, mine);
}

/* ---- The combine pass ----------------------------------------------------------------------------- */

/* A chunk's (max key, packed argmax, count | flag << 16) over the block, in one round: every thread
 * gets the max key; thread 0 also the largest packed argmax and the sum (in the others *pk and *cb are
 * left as they were; lean: no argmax, *pk left as it was). The 64-bit argmax's warp max is two 32-bit
 * ones: the high words', then the low words' of the lanes holding that high word. One barrier: the
 * caller takes the one after the reads of r.k, r.b and r.c, before anything writes them again. */
__device__ __forceinline__ void block_reduce3(int32_t *mk, unsigned long long *pk, uint32_t *cb, bool lean,
                                              Red &r) {
  const int32_t m = warp_max32<int32_t>(*mk);
  const uint32_t s = warp_add_u32(*cb);
  unsigned long long qm = 0ull;
  if (!lean) {
    const uint32_t qh = (uint32_t)(*pk >> 32);
    const uint32_t qhm = warp_max32<uint32_t>(qh);
    const uint32_t qlm = warp_max32<uint32_t>(qh == qhm ? (uint32_t)*pk : 0u);
    qm = ((unsigned long long)qhm << 32) | qlm;
  }
  if (lane_id() == 0) {
    r.k[warp_id()] = m;
    r.b[warp_id()] = qm;
    r.c[warp_id()] = s;
  }
  __syncthreads();
  int32_t mm = r.k[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) mm = r.k[i] > mm ? r.k[i] : mm;
  if (threadIdx.x == 0) {
    unsigned long long q = r.b[0];
    uint32_t ss = (uint32_t)r.c[0];
#pragma unroll
    for (int i = 1; i < kWarps; ++i) {
      q = r.b[i] > q ? r.b[i] : q;
      ss += (uint32_t)r.c[i];
    }
    if (!lean) *pk = q;
    *cb = ss;
  }
  *mk = mm;
}

/* Writes the chunk's partial (max, first argmax, finite count, NaN / +inf flag, sum e^(y - max)). The
 * first four come from one block reduction: the max key (the CPU's max_block order); the argmax as
 * the largest (value with -0 folded into +0, lowest id), i.e. the first token equal (==) to the max,
 * as the CPU's first_index; count and flag as one sum. The sum, which needs the max, takes a second.
 * warm: the block runs this code for many chunks (larger batches), so the sum's loop over the
 * thread's tokens is unrolled (no selects, no loop count: about 17 instructions a token fewer);
 * rolled, its code is fetched once per launch where a block has one chunk (B = 1). lean: the row
 * needs neither the argmax nor the count (b_combine's lean), so the partial's arg is -1 and its cnt is 1
 * where the chunk has a token above -inf, else 0 (all the status rule reads of it): about 5
 * instructions a token fewer. loop: the caller's next use of red is the next chunk's chunk_partial (a
 * chunk loop), so where the sum's round runs, the two reductions need two barriers, not four: each
 * round's words are read before the other round's barrier, which every thread passes before it
 * writes them again. Block-uniform. Returns the chunk's max. */
__device__ __forceinline__ float chunk_partial(const KP &p, int64_t row, int64_t c, const float y[kPer],
                                               const int64_t id[kPer], int bad, bool want_sum, bool warm,
                                               bool lean, bool loop, Red &red) {
  /* The thread's max key (key_s's order, the CPU's: -0 below +0) from two maxima of the raw bits, keyed
   * once: the largest as signed integers is the largest float where one is not negative; where all are,
   * the smallest as unsigned is (NaNs included: the order of their keys). Two instructions a token. */
  int32_t smax = INT32_MIN;
  uint32_t umin = 0xffffffffu;
  uint32_t cb = bad ? (1u << 16) : 0u; /* finite tokens (at most 2048 a block) | threads with a bad one << 16 */
#pragma unroll
  for (int j = 0; j < kPer; ++j) {
    const uint32_t b = __float_as_uint(y[j]);
    smax = (int32_t)b > smax ? (int32_t)b : smax;
    umin = b < umin ? b : umin;
  }
  int32_t mk = key_s(__uint_as_float(smax >= 0 ? (uint32_t)smax : umin));
  unsigned long long pk = 0ull;
  if (!lean) {
    /* The thread's argmax (the ids grow with j, so the first of equal values wins), by float compares:
     * the order of the keys of y + 0 (-0 and +0 one key) wherever the row has no NaN, and a row with
     * one is bad and its argmax unused. Keyed and packed once. */
    float ay = y[0];
    uint32_t aid = (uint32_t)id[0];
#pragma unroll
    for (int j = 0; j < kPer; ++j) {
      if (y[j] > ay) {
        ay = y[j];
        aid = (uint32_t)id[j];
      }
      cb += !ninf_f(y[j]);
    }
    const int32_t ak = key_s(LMF_FADD(ay, 0.0f)); /* -0 + 0 = +0 */
    pk = ((unsigned long long)((uint32_t)ak ^ 0x80000000u) << 32) | (0xffffffffu - aid);
  }
  block_reduce3(&mk, &pk, &cb, lean, red);
  const float mx = key_s_inv(mk);
  const bool sum_round = want_sum && !lmf_lg_is_ninf(mx);
  if (!(loop && sum_round)) __syncthreads(); /* red's words read before they are written again */
  double sum = 0.0; /* in thread 0, which writes the partial */
  if (sum_round) {
    float s = 0.0f; /* the thread's group (lmf_lg_group_add) */
    if (warm) {
#pragma unroll
      for (int j = 0; j < kPer; ++j) s = lmf_lg_group_add(s, lmf_lg_exp_nonpos(LMF_FSUB(y[j], mx)));
    } else {
#pragma unroll 1 /* the body's code fetched once, not kPer times (sel8) */
      for (int j = 0; j < kPer; ++j) s = lmf_lg_group_add(s, lmf_lg_exp_nonpos(LMF_FSUB(sel8(y, j), mx)));
    }
    sum = block_sum_f64_lead((double)s, red, !loop);
  }
  if (threadIdx.x == 0) {
    CPart &P = p.cpart[row * p.nchunks + c];
    P.max = mx;
    P.arg = lean ? -1 : (int32_t)(0xffffffffu - (uint32_t)pk);
    P.cnt = lean ? !lmf_lg_is_ninf(mx) : (int32_t)(cb & 0xffffu);
    P.bad = (cb >> 16) != 0;
    P.osum = sum;
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

/* The models a row sums into s (Row::comb), in model order, with their weights: built once per
 * block in shared memory, so a chunk reads each model's view with a few shared loads (make_mv reads
 * the job and the row's state from global memory: about 40 instructions per model and chunk). */
struct CombPlan {
  MV mv[kMaxM];
  float w[kMaxM];
  int n;
  int32_t dense; /* every model dense, 16-byte aligned, of this dtype (else -1): fold_dense applies */
  int64_t lim;   /* the models' smallest lim: fold_dense applies to groups below it */
};

/* Fills cp for row (warp 0's lane k: model k) and waits for it; every thread of the block calls it.
 * Whether fold_dense applies and the models' smallest lim come from warp 0's votes and reduction, so
 * one block barrier publishes the plan (thread 0's loop over the written plan took a second). */
__device__ void comb_plan(const KP &p, const Row &R, int64_t row, CombPlan &cp) {
  static_assert(kMaxM <= 32, "one model a lane of warp 0");
  if (warp_id() == 0) { /* warp-uniform */
    const uint32_t comb = R.comb;
    const int k = lane_id();
    const bool on = k < p.job.num_models && ((comb >> k) & 1u);
    int32_t dt = -1;  /* this model's dtype where it is dense and 16-byte aligned, else -1 */
    long long lim = INT64_MAX;
    if (on) {
      const int i = __popc(comb & ((1u << k) - 1u));
      const MV mv = make_mv(p, R, k, row);
      cp.mv[i] = mv;
      cp.w[i] = R.w[k];
      dt = mv.sparse || !mv.vec ? -1 : mv.dtype;
      lim = mv.lim;
    }
    const unsigned act = __ballot_sync(kFull, on);
    const int32_t dt0 = __shfl_sync(kFull, dt, act ? __ffs((int)act) - 1 : 0);
    const bool same = __all_sync(kFull, !on || dt == dt0) != 0;
    lim = warp_reduce_ll<OP_MIN>(lim);
    if (k == 0) {
      cp.n = __popc(act);
      cp.dense = act && same ? dt0 : -1;
      cp.lim = (int64_t)lim;
    }
  }
  __syncthreads();
}

/* Asks for every combined model's z(v .. v + 7) ahead of its load (prefetch8). */
__device__ __forceinline__ void prefetch_models(const CombPlan &cp, int64_t v, bool l1) {
  for (int i = 0; i < cp.n; ++i) prefetch8(cp.mv[i], v, l1);
}

/* The models fold_dense loads all at once (more take its loop, one load at a time). 3: the bench's
 * K = 3; 4 made ptxas keep the loaded bytes in local memory (64 registers in the combine). */
constexpr int kFoldAhead = 3;

/* fold_models<false> where every model is dense and of dtype DT and the group lies below every
 * model's lim (CombPlan::dense): the same adds in the same order, without load8's tests per model
 * (about 20 instructions a model and group). With at most kFoldAhead models, every model's load is
 * issued before the first add, so the group waits for one memory latency, not one per model (the
 * combine pass then needs no prefetch into L1 for it: comb_ahead). Not for fp16, whose conversions
 * are long: its loop's one copy keeps the code that k_coop's blocks fetch smaller. */
template <int32_t DT>
__device__ __forceinline__ void fold_dense(const CombPlan &cp, int64_t v, float y[kPer]) {
  const int n = cp.n;
  if (DT != LMF_DTYPE_F16 && n <= kFoldAhead) {
    Raw8 r[kFoldAhead];
#pragma unroll
    for (int i = 0; i < kFoldAhead; ++i) {
      r[i].a = r[i].b = make_uint4(0u, 0u, 0u, 0u); /* in registers: a partly written array went to memory */
      if (i < n) r[i] = raw8_load(cp.mv[i].base, DT, v);
    }
#pragma unroll
    for (int i = 0; i < kFoldAhead; ++i) {
      if (i < n) {
        const float wk = cp.w[i];
        float x[kPer];
        raw8_floats(r[i], DT, x);
#pragma unroll
        for (int q = 0; q < kPer; ++q) y[q] = LMF_FFMA(wk, x[q], y[q]);
      }
    }
    return;
  }
#pragma unroll 1 /* many models: one at a time */
  for (int i = 0; i < n; ++i) {
    const float wk = cp.w[i];
    float x[kPer];
    load8_vec(cp.mv[i].base, DT, v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) y[q] = LMF_FFMA(wk, x[q], y[q]);
  }
}

/* fold_dense of the plan's dtype (cp.dense >= 0, v + kPer <= cp.lim), y from 0. */
__device__ __forceinline__ void fold_dense_any(const CombPlan &cp, int64_t v, float y[kPer]) {
  if (cp.dense == LMF_DTYPE_BF16) fold_dense<LMF_DTYPE_BF16>(cp, v, y);
  else if (cp.dense == LMF_DTYPE_F32) fold_dense<LMF_DTYPE_F32>(cp, v, y);
  else fold_dense<LMF_DTYPE_F16>(cp, v, y);
}

/* Whether fold_dense loads the row's models all at once wherever it applies (block-uniform). */
__device__ __forceinline__ bool comb_ahead(const CombPlan &cp) {
  return cp.dense >= 0 && cp.dense != LMF_DTYPE_F16 && cp.n <= kFoldAhead;
}

/* A chunk loop's hints for this thread's group: every model's z(v .. v + 7) into L1 (not where ahead,
 * comb_ahead: fold_dense's loads are all in flight at once), z(vn .. vn + 7) into L2 (the block's next
 * chunk; nothing past the model's row: lim <= V). Unrolled where ahead: a loop trip cost about 5
 * instructions a model, the hint 6. */
__device__ __forceinline__ void prefetch_chunk(const CombPlan &cp, bool ahead, int64_t v, int64_t vn) {
  if (ahead) {
#pragma unroll
    for (int i = 0; i < kFoldAhead; ++i)
      if (i < cp.n) prefetch8(cp.mv[i], vn, false);
  } else {
    for (int i = 0; i < cp.n; ++i) {
      prefetch8(cp.mv[i], v, true);
      prefetch8(cp.mv[i], vn, false);
    }
  }
}

/* y(v .. v + 7) = the models combined in this row folded from 0 in model order. RULE: each step is
 * lmf_lg_term (its -inf rule) and returns whether an input was NaN / +inf; otherwise the fused acc + w x
 * and returns false. */
template <bool RULE>
__device__ __forceinline__ bool fold_models(const CombPlan &cp, int64_t v, float y[kPer]) {
  bool b = false;
#pragma unroll
  for (int q = 0; q < kPer; ++q) y[q] = 0.0f;
  if (!RULE && cp.dense >= 0 && v + kPer <= cp.lim) {
    fold_dense_any(cp, v, y);
    return false;
  }
  for (int i = 0; i < cp.n; ++i) {
    const float wk = cp.w[i];
    float x[kPer];
    load8(cp.mv[i], v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      if (RULE) b |= bad_f(x[q]);
      y[q] = RULE ? term_f(y[q], wk, x[q]) : LMF_FFMA(wk, x[q], y[q]);
    }
  }
  return b;
}

/* s(v .. v + 7): the coefficient fold from 0 (lmf_lg_term); bad |= a NaN / +inf among the inputs. 0
 * when no model is combined. First the plain fold, acc + w x. A non-finite input makes its product,
 * and every sum after it, non-finite (0 x inf and NaN give NaN, inf + -inf too), so where all 8 sums
 * are finite every input was finite: lmf_lg_term's -inf rule and the NaN / +inf test had nothing to
 * change, and the sums are its bits. Otherwise (a masked token, a bad input, an overflow) the thread
 * folds again with them: 3 instructions a token and model fewer where no token is. */
__device__ __forceinline__ void sum_models(const CombPlan &cp, int64_t v, float y[kPer], int *bad) {
  fold_models<false>(cp, v, y);
  bool fin = true;
#pragma unroll
  for (int q = 0; q < kPer; ++q) fin &= LMF_FABS(y[q]) < __uint_as_float(0x7f800000u);
  if (!fin) *bad |= fold_models<true>(cp, v, y); /* the exact fold */
}

/* The last steps of y(v .. v + 7) after the masks: the bias row, / T (where divide: T is the row's
 * temperature), -inf past the row; bad |= a NaN / +inf in the bias or in the result. */
__device__ __forceinline__ void bias_and_T(const KP &p, int64_t row, int64_t v, const lmf_lg_divisor &T,
                                           bool divide, float y[kPer], int *bad) {
  const int64_t V = p.job.vocab_out;
  bool b = false;
  if (p.job.bias) {
    const MV mb = bias_mv(p, row);
    float x[kPer];
    load8(mb, v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      b |= bad_f(x[q]);
      /* term_f(y, 1, x)'s bits (1 x is exact) as a plain add: with the fused form ptxas spills 16 bytes
       * instead of 4 in k_combine<false, CM_PLAIN> on sm_80. */
      y[q] = ninf_f(x[q]) ? ninf() : LMF_FADD(y[q], x[q]);
    }
  }
  if (divide) {
    /* One test for the 8 tokens: the fast division where all take it (all but rows with zeros,
     * infinities or extreme values), else LMF_FDIV. The same bits either way. */
    bool fast = T.fast != 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) fast &= lmf_lg_div_fast_ok(y[q]) != 0;
    if (fast) {
#pragma unroll
      for (int q = 0; q < kPer; ++q) y[q] = lmf_lg_div_fast(T, y[q]);
    } else {
#pragma unroll
      for (int q = 0; q < kPer; ++q) y[q] = LMF_FDIV(y[q], T.b);
    }
  }
  if (v + kPer > V) { /* the row's last group */
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      if (v + q >= V) y[q] = ninf();
  }
#pragma unroll
  for (int q = 0; q < kPer; ++q) b |= bad_f(y[q]);
  *bad |= b;
}

/* A row's loop-invariant values for combine_y, read once per block. */
struct CombRow {
  int64_t row;
  float *Dr;            /* the nucleus model's x, then GeDi's logP (null without either) */
  lmf_lg_divisor Td;    /* the row's temperature */
  bool divide, plaus, nuc, nuc_on;
  bool plain;   /* no mask, no bias: y is the models' sum / T (combine_plain) */
  int64_t plim; /* combine_plain takes the groups below it (0: none; comb_row_plan) */
  uint64_t nuc_cut;
  float plaus_thr;
};

__device__ __forceinline__ CombRow comb_row_of(const KP &p, const Row &R, int64_t row) {
  CombRow r;
  r.row = row;
  r.Dr = p.D ? p.D + row * p.ystride : nullptr;
  r.Td = lmf_lg_divisor_of(R.Teff);
#if defined(__CUDA_ARCH__)
  /* Td.r computed here, once: the compiler had sunk its division into the fast division's branch,
   * which runs in every chunk (about 20 instructions). The register it keeps costs a 4-byte spill,
   * reloaded only in the nucleus mask's path. */
  asm("" : "+f"(r.Td.r));
#endif
  r.divide = R.fuse_T && R.Teff != 1.0f;
  r.plaus = p.job.plaus_model >= 0;
  r.nuc = p.job.nucleus_model >= 0;
  r.nuc_on = R.nuc_on != 0;
  r.nuc_cut = R.nuc_cut;
  r.plaus_thr = R.plaus_thr;
  r.plain = !r.plaus && !r.nuc && !p.job.bias;
  r.plim = 0;
  return r;
}

/* cr.plim from the row's plan: the models' smallest lim where the row is plain and the plan dense.
 * Kept in a register: the compiler had rebuilt the test from the job's fields and the plan's shared
 * words in every chunk (about 20 instructions). */
__device__ __forceinline__ void comb_row_plan(CombRow &cr, const CombPlan &cp) {
  int64_t lim = cr.plain && cp.dense >= 0 ? cp.lim : 0;
#if defined(__CUDA_ARCH__)
  asm("" : "+l"(lim));
#endif
  cr.plim = lim;
}

/* combine_y's common case in fewer instructions: a plain row (no GeDi either) whose group lies below
 * every model's lim in a dense plan (fold_models' fold_dense), where every sum is finite and, with a
 * temperature, in the fast division's range (one range test a token, for both): then the sums / T
 * are combine_y's bits (its finite test, the fast division and its last NaN / +inf test have nothing
 * to change; below lim <= V no token is past the row). Returns false where that does not hold, and
 * combine_y computes the group in full. */
__device__ __forceinline__ bool combine_plain(const CombRow &cr, const CombPlan &cp, int64_t v, float y[kPer]) {
#pragma unroll
  for (int q = 0; q < kPer; ++q) y[q] = 0.0f;
  fold_dense_any(cp, v, y);
  bool ok = true;
  if (cr.divide) {
    ok = cr.Td.fast != 0;
#pragma unroll
    for (int q = 0; q < kPer; ++q) ok &= lmf_lg_div_fast_ok(y[q]) != 0; /* |y| in [2^-60, 2^60]: finite */
    if (ok) {
#pragma unroll
      for (int q = 0; q < kPer; ++q) y[q] = lmf_lg_div_fast(cr.Td, y[q]);
    }
  } else {
#pragma unroll
    for (int q = 0; q < kPer; ++q) ok &= LMF_FABS(y[q]) < __uint_as_float(0x7f800000u);
  }
  return ok;
}

/* y(v .. v + 7) for v < V, in the CPU's order: the nucleus mask (D holds the nucleus model's x until
 * GeDi's logP replaces it), GeDi's logP(desired | v) (GEDI: written to D; it does not depend on s, and
 * computing it first keeps fewer values live across its divisions), the models' sum, the plausibility
 * and nucleus masks, GeDi's term, then the bias, / T and -inf past the row (bias_and_T). bad |= a NaN
 * / +inf among the inputs or in y. */
template <bool GEDI>
__device__ __forceinline__ void combine_y(const KP &p, const Row &R, const CombRow &cr, const CombPlan &cp,
                                          int64_t v, float y[kPer], int *bad) {
  if (!GEDI && v + kPer <= cr.plim) {
    const bool done = combine_plain(cr, cp, v, y);
    if (done) return;
  }
  const lmf_lg_job &j = p.job;
  uint32_t nkeep = 0xffu;
  if (cr.nuc) {
    float x[kPer];
    load8_f32(cr.Dr + v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const bool keep = !lmf_lg_is_ninf(x[q]) && (!cr.nuc_on || desc_le(x[q], (uint32_t)(v + q), cr.nuc_cut));
      if (!keep) nkeep &= ~(1u << q);
    }
  }
  float d[kPer];
  if constexpr (GEDI) {
    const MV mp = make_mv(p, R, j.gedi_pos_model, cr.row), mn = make_mv(p, R, j.gedi_neg_model, cr.row);
    float xp[kPer], xn[kPer];
    load8(mp, v, xp);
    load8(mn, v, xn);
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      d[q] = lmf_lg_gedi_logp(lmf_lg_scale_x(xp[q], mp.tau), lmf_lg_scale_x(xn[q], mn.tau), R.slse[ST_GPOS],
                              R.slse[ST_GNEG], R.gL_pos, R.gL_neg, R.gt, j.gedi_logit_scale, j.gedi_bias_pos,
                              j.gedi_bias_neg);
    store8_f32(cr.Dr + v, d);
  } else {
#pragma unroll
    for (int q = 0; q < kPer; ++q) d[q] = 0.0f;
  }
  sum_models(cp, v, y, bad);
  if (cr.plaus) {
    const MV mv = make_mv(p, R, j.plaus_model, cr.row);
    float x[kPer];
    load8(mv, v, x);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const float xs = lmf_lg_scale_x(x[q], mv.tau);
      if (!(xs >= cr.plaus_thr && !lmf_lg_is_ninf(xs))) y[q] = ninf();
    }
  }
  if (cr.nuc) {
#pragma unroll
    for (int q = 0; q < kPer; ++q)
      if (!((nkeep >> q) & 1u)) y[q] = ninf();
  }
  if (GEDI && j.gedi_omega != 0.0f) {
#pragma unroll
    for (int q = 0; q < kPer; ++q) y[q] = lmf_lg_term(y[q], j.gedi_omega, d[q]);
  }
  bias_and_T(p, cr.row, v, cr.Td, cr.divide, y, bad);
}

/* What a combine pass does besides s(v): CM_SUP also fills list mode's candidate lists (KP::lstream;
 * the separate kernels only) and leaves Y unwritten where Row::ymiss. For the rows whose combine lists
 * could not decide their cut (Row::ymiss 2), the same arithmetic once more: CM_RECWIN does the window
 * pass's work on the values it computes (window_chunk) and writes no Y; CM_RECOMP only writes Y, for
 * a row the general search then needs (in the list cut's block). */
enum { CM_PLAIN = 0, CM_SUP = 1, CM_RECOMP = 2, CM_RECWIN = 3 };

/* y = -inf for a thread whose group lies past the row, in a chunk loop. On the device as volatile
 * moves: the compiler hoisted plain ones above the branch, which put 8 instructions a chunk on every
 * thread's path (all but the row's last chunk have no such thread). */
__device__ __forceinline__ void ninf8_past(float y[kPer]) {
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
#if defined(__CUDA_ARCH__)
    asm volatile("mov.b32 %0, 0xff800000;" : "=f"(y[q]));
#else
    y[q] = ninf(); /* the CPU emulator (tests/emu) */
#endif
  }
}

/* GEDI: the GeDi terms are compiled in (its divisions need more registers: 3 blocks per SM). */
template <bool GEDI, int MODE>
__device__ __forceinline__ void b_combine(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  const Row &R = p.rows[row];
  if (R.status != LMF_ROW_OK) return;
  if ((MODE == CM_RECOMP || MODE == CM_RECWIN) && !(R.ymiss == 2 && R.search == p.kind)) return;
  const int64_t V = p.job.vocab_out;
  CombRow cr = comb_row_of(p, R, row);
  const bool want_sum = R.want_sum != 0;
  float *Yr = p.Y + w.row * p.ystride;
  /* CM_RECWIN: the window pass's sums and lists (b_window). */
  const SRow srow = srow_of(R);
  uint2 *const Lw = MODE == CM_RECWIN ? p.cand + row * (int64_t)kClasses * p.lcap : nullptr;
  U128 cm[kClasses], wtot = u128(0ull, 0ull);
#pragma unroll
  for (int k = 0; k < kClasses; ++k) cm[k] = u128(0ull, 0ull);
  /* List mode: the row's first cut takes its candidates from here (see list_append_sup). */
  const bool sup = MODE == CM_SUP && p.lstream && R.sup;
  /* chunk_partial's lean partials: such a row (lstream: top-k or top-p) without top-k has no use for
   * the finite count (after_temp's top-k test), and one that samples none for the argmax: its token
   * is the list cut's (or the flat rows' pick's) Gumbel-max, and b_sample, where a row the lists
   * cannot decide ends, starts without the argmax's bound (Row::yarg -1). */
  const bool lean = sup && !R.greedy && p.job.top_k <= 0;
  float runmax = ninf(), sedge = class_edge(kClasses);
  uint2 *sq = nullptr;
  if constexpr (MODE == CM_SUP) sq = sup_queue();
  __shared__ CombPlan cp;
  comb_plan(p, R, row, cp);
  comb_row_plan(cr, cp);
  const bool ahead = comb_ahead(cp); /* its groups below cp.lim need no prefetch into L1 */
  /* A block with few chunks (small batches: B = 1 spreads a row over the SMs) asks L2 for all of them
   * first, so its later chunks wait on L2 rather than on memory; with many, the next one at a time
   * (below), which keeps the batch's lines from evicting each other. Many chunks also keep the code
   * warm: chunk_partial then runs its unrolled loop. */
  const bool few = (p.nchunks - w.first + w.step - 1) / w.step <= kPrefetchChunks;
  if (few) {
    for (int64_t c = w.first + 2 * w.step; c < p.nchunks; c += w.step) {
      const int64_t v = c * kChunk + (int64_t)threadIdx.x * kPer;
      if (v < V) prefetch_models(cp, v, false);
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
      prefetch_chunk(cp, ahead, v, vn);
      combine_y<GEDI>(p, R, cr, cp, v, y, &bad);
      if (p.need_y && MODE != CM_RECWIN && !(MODE == CM_SUP && R.ymiss)) store8_f32(Yr + v, y);
    } else {
      ninf8_past(y);
    }
    if (MODE == CM_RECWIN) {
      const float none[kPer] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
      window_chunk(p.kind, srow, &p.rows[row], Lw, (unsigned)p.lcap, y, none, id[0], 1, V, cm, wtot, !few);
    }
    if (MODE == CM_RECOMP || MODE == CM_RECWIN) continue; /* the partials are the first pass's */
    const float mx = chunk_partial(p, row, c, y, id, bad, want_sum, !few, lean, true, red);
    if (sup) {
      runmax = mx > runmax ? mx : runmax;
      list_append_sup(p, row, runmax, y, v, &sedge, sq); /* this thread's tokens are v .. v + 7 */
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
  float *Yr = p.Y + w.row * p.ystride;
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
    chunk_partial(p, row, c, y, id, bad, false, false, false, false, red);
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
 * merge_step; one warp, every lane gets the result (the same bits in every warp that calls it).
 * f: the row's flags (row_flags). */
__device__ CMerge cmerge_calc(const KP &p, int64_t row, const RowFlags &f, bool temp) {
  const CPart *P = p.cpart + row * p.nchunks;
  const int64_t n = p.nchunks;
  int bad = 0;
  long long cnt = 0;
  float M = ninf();
  int32_t arg = 0;
  int64_t first = n + lane_id();
  /* One chunk's partial into the lane's max, first argmax, count and flag. */
  auto take = [&](int64_t c, float m, int32_t a, int32_t k, int32_t b) {
    bad |= b;
    cnt += k;
    if (first >= n) first = c;
    if (m > M) {
      M = m;
      arg = a;
      first = c;
    }
  };
  /* __ldcg: from L2, where KP::cfold's last combine block finds the other blocks' partials. The
   * lane's first two chunks (every chunk where n <= 64: k_coop's rows, B = 1 up to V = 131,072) are
   * read at once, every field, their sums kept for the total below: one round trip, where the loop
   * waited for each chunk's max before the next chunk's and its argmax, and the total read the maxima
   * and sums again. */
  const int64_t c0 = lane_id(), c1 = c0 + 32;
  float m0 = ninf(), m1 = ninf();
  int32_t a0 = 0, a1 = 0, k0 = 0, k1 = 0, b0 = 0, b1 = 0;
  double o0 = 0.0, o1 = 0.0;
  if (c0 < n) {
    m0 = __ldcg(&P[c0].max), a0 = __ldcg(&P[c0].arg), k0 = __ldcg(&P[c0].cnt), b0 = __ldcg(&P[c0].bad);
    o0 = __ldcg(&P[c0].osum);
  }
  if (c1 < n) {
    m1 = __ldcg(&P[c1].max), a1 = __ldcg(&P[c1].arg), k1 = __ldcg(&P[c1].cnt), b1 = __ldcg(&P[c1].bad);
    o1 = __ldcg(&P[c1].osum);
  }
  if (c0 < n) take(c0, m0, a0, k0, b0);
  if (c1 < n) take(c1, m1, a1, k1, b1);
#pragma unroll 1
  for (int64_t c = c0 + 64; c < n; c += 32)
    take(c, __ldcg(&P[c].max), __ldcg(&P[c].arg), __ldcg(&P[c].cnt), __ldcg(&P[c].bad));
  bad = (int)warp_reduce_ll<OP_MAX>(bad);
  cnt = warp_reduce_ll<OP_SUM>(cnt);
  const int wl = warp_first_max_lane(M, first);
  CMerge r;
  r.ymax = __shfl_sync(kFull, M, wl);
  r.yarg = __shfl_sync(kFull, arg, wl);
  r.cnt = cnt;
  r.st = LMF_ROW_OK;
  if (bad) r.st = LMF_ROW_NONFINITE;
  else if (cnt == 0) r.st = LMF_ROW_ALL_MASKED;
  else if ((temp || f.fuse_T) && !lmf_isfinite_f32(r.ymax)) r.st = LMF_ROW_NONFINITE;
  r.total = 0.0;
  if (r.st == LMF_ROW_OK && !temp && f.want_sum) {
    const double ymax = (double)r.ymax;
    r.total = warp_sum_chunk_order(n, [&](int64_t c) { /* c: this lane's c0, c1, c0 + 64, ... */
      const float m = c < 32 ? m0 : c < 64 ? m1 : __ldcg(&P[c].max);
      const double o = c < 32 ? o0 : c < 64 ? o1 : __ldcg(&P[c].osum);
      return lmf_lg_is_ninf(m) ? 0.0 : o * exp((double)m - ymax);
    });
  }
  return r;
}

/* The merge's result into the row's state and its next step (one thread; f: the row's flags). */
__device__ void cmerge_apply(const lmf_lg_job &j, Row &R, const RowFlags &f, const CMerge &m, bool temp) {
  if (m.st != LMF_ROW_OK) {
    R.status = m.st;
    return;
  }
  R.ymax = m.ymax;
  R.yarg = m.yarg;
  R.nfin = m.cnt;
  if (!temp) R.total = m.total;
  if (!temp && j.gedi_pos_model >= 0 && j.gedi_filter_p > 0.0f) R.search = SK_GF;
  else after_temp(j, R, f);
}

/* One warp merges a row. The partials are read with the row's flags, before its status is known (a
 * row whose status is set leaves the result unused): one round trip to L2, where the status, the
 * partials and the flags (read where used, some after the merge's stores) were six in a chain. */
__device__ void b_cmerge(const KP &p, int64_t row, int level) {
  Row &R = p.rows[row];
  const RowFlags f = row_flags(R);
  const bool temp = level != 0;
  const CMerge m = cmerge_calc(p, row, f, temp);
  if (f.status == LMF_ROW_OK && lane_id() == 0) cmerge_apply(p.job, R, f, m, temp);
}
