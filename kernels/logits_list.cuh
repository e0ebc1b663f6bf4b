/* List mode's cuts: a cut from at most kListCap candidates in shared memory.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

/* ---- List mode: a cut from at most kListCap candidates (KP::list) ------------------------------- */

/* The CPU's list mode. Every token a top-k / top-p cut can keep lies in a window near the maximum; one
 * pass (b_window) counts the tokens of each class of 2 (ymax - y) (class_of), sums their masses and
 * the total mass, and appends each class's tokens to its list. The largest window (classes 0 .. k)
 * holding at most kListCap tokens is then complete in the lists; if it reaches the cut's target (the
 * general search's, search_target), one block per row (b_listcut) finds the cut among its tokens, then
 * top-p on the top-k survivors, min-p, the LSE and the sample: no further pass over the row. Otherwise
 * the row stays in the general search. The window is a prefix of the cut's order, so the cut found is
 * the same token. */

/* The window pass of a top-k (unit masses) or top-p cut (masses e^(y - ymax); after a top-k cut, its
 * survivors only): per class count, mass and tokens; the total mass (search_target's bound). */
__device__ void b_window(const KP &p, const Part &w, int kind) {
  const int64_t row = w.row;
  Row *R = &p.rows[row];
  /* sup: the combine's lists; ymiss 2: k_combine<CM_RECWIN> did this pass's work */
  if (R->status != LMF_ROW_OK || R->search != kind || R->sup || R->ymiss == 2) return;
  const SRow s = srow_of(*R);
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.row * p.ystride;
  uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  U128 cm[kClasses], tot = u128(0ull, 0ull);
#pragma unroll
  for (int k = 0; k < kClasses; ++k) cm[k] = u128(0ull, 0ull);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, nullptr, c, V, yv, dv);
    window_chunk(kind, s, R, L, (unsigned)p.lcap, yv, dv, c * kChunk + (int64_t)threadIdx.x, kThreads, V, cm,
                 tot, false); /* rolled: k_window<false> is held to 80 registers (3 blocks per SM) */
  }
  window_flush(R, cm, tot);
}

/* One thread: the row's classes (b_window's sums), the target (search_target: every token's mass is
 * known here), and the largest window (classes 0 .. k) with at most kListCap tokens if it holds the
 * target (-1: the general search). Clears the class sums; cnt gets the classes' counts. */
__device__ int list_window(const KP &p, int kind, Row *R, unsigned cnt[kClasses]) {
  unsigned cc = 0u, kc = 0u; /* windows 0 .. k: count and mass; kc, km: window kw's */
  U128 cmass = u128(0ull, 0ull), km = u128(0ull, 0ull);
  int kw = -1;
  for (int k = 0; k < kClasses; ++k) {
    /* Read and cleared by atomics: the other window blocks' sums, seen from the last one's SM. */
    cnt[k] = atomicExch(&R->cls_c[k], 0u);
    cc += cnt[k];
    cmass = add(cmass, u128(atomicExch(&R->cls_m[k].lo, 0ull), atomicExch(&R->cls_m[k].hi, 0ull)));
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

/* Lists of at most this many items, and a digit's crossing bin of at most this many, take few_cut. */
constexpr unsigned kFewCut = 64;
static_assert(2 * kFewCut <= kBins && offsetof(ListSmem, hlo) % 16 == 0,
              "few_cut's items keep their masses in S.hlo as 16-byte pairs and their orders in S.hhi");

/* The cut among a few items, item i's mass in ml[i] and its order in kl[i] (i < m, in any order):
 * the calling thread's candidate (has: order o, cum: the mass before the items plus its own) adds the
 * masses of the items ordered before it, so each candidate's cumulative mass is known at once; the
 * cut is the least order whose cumulative mass reaches tgt. Two block barriers, where a digit of the
 * radix select takes nine; the sums are exact, so the cut is the radix select's. (No candidate
 * reaching tgt, which the callers' targets rule out: the last candidate.) */
__device__ __forceinline__ uint64_t few_cut(const ulonglong2 *ml, const unsigned long long *kl, unsigned m, bool has,
                                            uint64_t o, U128 cum, U128 tgt, Red &red) {
  unsigned long long cand = 0ull, last = 0ull; /* complements: the block max is the least order */
  if (has) {
    for (unsigned i = 0; i < m; ++i) {
      const ulonglong2 x = ml[i];
      if (kl[i] < o) cum = add(cum, u128(x.x, x.y));
    }
    cand = ge(cum, tgt) ? ~o : 0ull;
    last = o;
  }
  cand = block_max_u64(cand, red);
  if (cand) return ~cand;
  return block_max_u64(last, red);
}

/* Exact 128-bit sums of masses within 16 nats of the max, bin by bin, by native 32-bit shared atomics
 * (list_cut's near digit levels; k_coop's and the flat rows' histograms): such a mass is m 2^sh with
 * 33 <= sh <= 57 (fx_parts_near), so its 16-bit digits lie in digits 2 .. 5 of the sum, and each goes
 * to that digit's 32-bit word of the bin (a word's sum stays below 2^32 while the rows take fewer than
 * 2^16 masses a bin). No compare-and-swap loop, no carry waited for: the 64-bit histogram's adds spun
 * where a warp's items shared a bin, about a quarter of the bar's list cut's stall samples on the H200
 * (2026-11-28). */
constexpr int kNearDig0 = 2, kNearDigs = 4;
__device__ __forceinline__ void near_digits_add(unsigned (*hd)[kBins], uint32_t bin, float w) {
  uint32_t m;
  int sh;
  fx_parts_near(w, &m, &sh);
  const int d = (sh >> 4) - kNearDig0; /* 0 or 1 */
  const unsigned long long x = (unsigned long long)m << (sh & 15); /* below 2^39 */
  atomicAdd(&hd[d][bin], (unsigned)x & 0xffffu);
  atomicAdd(&hd[d + 1][bin], (unsigned)(x >> 16) & 0xffffu);
  atomicAdd(&hd[d + 2][bin], (unsigned)(x >> 32));
}
/* Bin i's sum from its digit words. */
__device__ __forceinline__ U128 near_digits_sum(const unsigned (*hd)[kBins], int i) {
  U128 h = u128(0ull, 0ull);
#pragma unroll
  for (int r = 0; r < kNearDigs; ++r) {
    const unsigned long long v = hd[r][i];
    const int sh = 16 * (kNearDig0 + r); /* 32 .. 80 */
    h = add(h, sh >= 64 ? u128(0ull, v << (sh - 64)) : u128(v << sh, v >> (64 - sh)));
  }
  return h;
}

/* list_cut's near digit rows take the room of its 64-bit histogram (S.hlo, S.hhi). */
static_assert(sizeof(ListSmem::hlo) + sizeof(ListSmem::hhi) == kNearDigs * kBins * sizeof(unsigned) &&
                  offsetof(ListSmem, hhi) == offsetof(ListSmem, hlo) + sizeof(ListSmem::hlo),
              "the near digits' rows take the 64-bit histogram's room");
__device__ __forceinline__ unsigned (*near_rows(ListSmem &S))[kBins] {
  return reinterpret_cast<unsigned(*)[kBins]>(S.hlo);
}

/* The smallest order ord (lmf_lg_ord_desc: value descending, then id) at which the cumulative mass of
 * the list's items with ord <= lim (item_fx) reaches tgt (at most their total): a radix select over the
 * 64-bit order, 8-bit digits from the top, exact 128-bit sums, until the crossing digit holds at most
 * kFewCut items (few_cut finishes; one item is the cut). A list of at most kFewCut items goes to
 * few_cut at once (a k_coop crossing bin, 1/16 nat wide, holds 11 to 60 on the bench's K = 3 rows).
 * near: every item lies within 16 nats of ymax (window classes, a crossing bin below d2 = 32), so the
 * masses take the digit words (near_digits_add) where they are not unit masses. */
__device__ LMF_NOINLINE uint64_t list_cut(ListSmem &S, uint64_t lim, bool unit, bool near, float ymax, U128 tgt,
                                          Red &red) {
  const int t = threadIdx.x;
  const unsigned n = S.n;
  ulonglong2 *const ml = reinterpret_cast<ulonglong2 *>(S.hlo); /* few_cut's items: the histogram's room */
  unsigned long long *const kl = S.hhi;
  if (n <= kFewCut) { /* every item in place; an ineligible one has no mass and an order past the rest */
    uint64_t o = ~0ull;
    U128 fx = u128(0ull, 0ull);
    bool e = false;
    if ((unsigned)t < n) {
      const float yv = S.cy[t];
      o = lmf_lg_ord_desc(yv, S.cid[t]);
      e = o <= lim;
      fx = item_fx(e, unit, yv, ymax);
      ml[t] = make_ulonglong2(fx.lo, fx.hi);
      kl[t] = o;
    }
    __syncthreads();
    return few_cut(ml, kl, n, e, o, fx, tgt, red);
  }
  const int jn = (int)((n + kThreads - 1) / kThreads); /* the same for every thread */
  /* A digit every eligible item shares decides nothing (all their mass is in its one bin, and they
   * hold the target): the search starts at the first byte where the smallest and largest keys
   * differ (in a crossing bin 1/16 nat wide, usually the third). */
  unsigned long long klo = ~0ull, khi = 0ull;
  for (unsigned i = (unsigned)t; i < n; i += kThreads) {
    const uint64_t o = lmf_lg_ord_desc(S.cy[i], S.cid[i]);
    if (o <= lim) {
      klo = o < klo ? o : klo;
      khi = o > khi ? o : khi;
    }
  }
  klo = ~block_max_u64(~klo, red);
  khi = block_max_u64(khi, red);
  if (klo == khi) return klo; /* one eligible item (keys are unique): the cut */
  const int first = klo < khi ? __clzll((long long)(klo ^ khi)) / 8 : 0; /* none eligible: 0 */
  U128 flo = u128(0ull, 0ull);
  uint64_t prefix = first > 0 ? klo >> (64 - 8 * first) : 0ull;
  const bool dig = near && !unit; /* block-uniform */
  for (int level = first; level < 8; ++level) {
    const int sh = 56 - 8 * level;
    S.hlo[t] = 0ull; /* and with dig the near rows, which are the same 4 KiB */
    S.hhi[t] = 0ull;
    if (t == 0) S.nfew = 0u;
    __syncthreads();
    for (int jj = 0; jj < jn; ++jj) {
      const unsigned i = (unsigned)(jj * kThreads + t);
      bool e = false;
      uint32_t bin = 0u;
      float yv = 0.0f;
      if (i < n) {
        yv = S.cy[i];
        const uint64_t o = lmf_lg_ord_desc(yv, S.cid[i]);
        e = o <= lim && (level == 0 || (o >> (sh + 8)) == prefix);
        bin = (uint32_t)(o >> sh) & 0xffu;
      }
      if (dig) {
        if (e) near_digits_add(near_rows(S), bin, lmf_lg_exp_neg(LMF_FSUB(yv, ymax)));
      } else {
        warp_hist_add(S.hlo, S.hhi, e, bin, item_fx(e, unit, yv, ymax));
      }
    }
    __syncthreads();
    const U128 h = dig ? near_digits_sum(near_rows(S), t) : u128(S.hlo[t], S.hhi[t]);
    const U128 at = add(flo, block_incl_scan_u128(h, red));
    if (is_crossing_bin(at, h, tgt)) { /* the last bin where none reaches tgt: unreachable, the items hold it */
      S.flo = sub(at, h);
      S.cross = (unsigned)t;
    }
    __syncthreads(); /* also: every read of the histogram is done, its room takes few_cut's items */
    flo = S.flo;
    const unsigned b = S.cross;
    prefix = (prefix << 8) | (uint64_t)b;
    /* The crossing digit's items: counted, and the first kFewCut of them (in any order) put where
     * few_cut reads them, one shared atomic per warp. */
    long long cnt = 0;
    unsigned long long mine = ~0ull;
    for (int jj = 0; jj < jn; ++jj) {
      const unsigned i = (unsigned)(jj * kThreads + t);
      float yv = 0.0f;
      uint64_t o = 0ull;
      bool in = false;
      if (i < n) {
        yv = S.cy[i];
        o = lmf_lg_ord_desc(yv, S.cid[i]);
        in = o <= lim && (o >> sh) == prefix;
      }
      const unsigned ball = __ballot_sync(kFull, in);
      if (!ball) continue; /* warp-uniform */
      unsigned slot = 0u;
      if (lane_id() == 0) slot = atomicAdd(&S.nfew, (unsigned)__popc(ball));
      slot = __shfl_sync(kFull, slot, 0) + (unsigned)__popc(ball & ((1u << lane_id()) - 1u));
      if (in) {
        ++cnt;
        mine = o < mine ? o : mine;
        if (slot < kFewCut) {
          const U128 fx = item_fx(true, unit, yv, ymax);
          ml[slot] = make_ulonglong2(fx.lo, fx.hi);
          kl[slot] = o;
        }
      }
    }
    cnt = block_reduce_ll<OP_SUM>(cnt, red); /* its barriers also publish the items */
    if (cnt == 1) return ~block_max_u64(~mine, red); /* the one item of the crossing digit is the cut */
    if (cnt <= (long long)kFewCut) {
      const bool has = t < cnt;
      U128 cum = flo;
      if (has) cum = add(cum, u128(ml[t].x, ml[t].y));
      return few_cut(ml, kl, (unsigned)cnt, has, has ? kl[t] : ~0ull, cum, tgt, red);
    }
  }
  return prefix;
}

/* Class k's list among a row's lists L (lcap entries each). Readers walk the lists class by class in
 * unrolled loops, so a thread has several loads from L2 in flight (other blocks wrote the entries:
 * window_done). */
__device__ __forceinline__ const uint2 *class_list(const uint2 *L, int lcap, int k) {
  return L + (int64_t)k * lcap;
}

/* The window lists' tokens (b_window, exact classes): classes 0 .. S.kw into the list cut's items. */
__device__ void window_items(const KP &p, int64_t row, ListSmem &S) {
  const uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  unsigned off = 0u;
  for (int k = 0; k <= S.kw; ++k) {
    const uint2 *Lk = class_list(L, p.lcap, k);
    const unsigned n = S.cnt[k];
#pragma unroll 4
    for (unsigned i = threadIdx.x; i < n; i += kThreads) {
      const uint2 e = __ldcg(&Lk[i]);
      S.cy[off + i] = __uint_as_float(e.x);
      S.cid[off + i] = e.y;
    }
    off += n;
  }
  if (threadIdx.x == 0) S.n = off;
  __syncthreads();
}

/* The combine pass's lists (list_append_sup: classes against each block's running max, at most the
 * row's, so lists 0 .. k hold every token of true class at most k, and more). With lists 0 .. ksup
 * complete (within their caps), their entries filtered by their true class (class_of with the row's
 * max) give true classes 0 .. ksup exactly. The cut lies in the first true class kc where the
 * cumulative mass reaches the target (top-p's: top_p times the combine pass's total, search_target;
 * top-k: k tokens); classes 0 .. kc, at most kListCap tokens, become the list cut's items. false: not
 * decided here (block-uniform): the window pass next. Two reads of the lists: the classes' masses and
 * this thread's counts, then the compaction. */
__device__ bool sup_items(const KP &p, int kind, int64_t row, ListSmem &S, Red &red, U128 *tgt) {
  const Row *R = &p.rows[row];
  const uint2 *L = p.cand + row * (int64_t)kClasses * p.lcap;
  const float ymax = R->ymax;
  if (kind == SK_TOPP && !R->topp_total) return false;
  int ksup = -1;
  for (int k = 0; k < kClasses && S.cnt[k] <= list_cap<true>(k, (unsigned)p.lcap); ++k) ksup = k;
  if (ksup < 0) return false;
  const bool unit = kind == SK_TOPK;
  U128 t;
  if (unit) {
    t = u128((unsigned long long)p.job.top_k, 0ull);
  } else {
    t = topp_target_of_total(p.job, R->total);
  }
  /* This thread's entries per true class: counts, 10 bits each (a thread reads at most
   * (4 kSupCap + 2 kWinCap) / kThreads < 1024 entries: list_cap). The block's per true class: counts
   * and exact masses by shared atomics (near_digits_add: a class of at most 5 lies within 16 nats of
   * the max) in the near rows' room (S.hlo, free until list_cut), the counts at columns kClasses ..
   * 2 kClasses - 1 of row 0. A token's true class is at least its list's, so once lists 0 .. c are
   * read, true class c is complete and no later add touches its words: the lists are read in order
   * until the classes so far hold the target (kc), not all of 0 .. ksup (the bench's K = 3 rows:
   * lists 0 .. 2, about 2,300 entries, where 0 .. 3 held about 6,300), with one barrier a list where a
   * block sum of each thread's class masses took two (and a 128-bit add per class an entry). */
  unsigned (*const hd)[kBins] = near_rows(S);
  unsigned *const hc = hd[0] + kClasses;
  static_assert(2 * kClasses <= kBins && kNearDigs * kClasses <= kThreads, "the classes' words in the near rows");
  static_assert(0xffffull * kClasses * kSupCap < (1ull << 32), "a class's digit word: every entry of lists 0 .. ksup");
  if (threadIdx.x < kNearDigs * kClasses) hd[threadIdx.x / kClasses][threadIdx.x % kClasses] = 0u;
  if (threadIdx.x < kClasses) hc[threadIdx.x] = 0u;
  __syncthreads();
  unsigned long long mine = 0ull;
  /* kc and the tokens of classes 0 .. kc: this thread's (mk) and the block's (nk). */
  int kc = -1;
  unsigned mk = 0u, nk = 0u;
  U128 cum = u128(0ull, 0ull);
#pragma unroll
  for (int c = 0; c < kClasses; ++c)
    if (c <= ksup && kc < 0) { /* block-uniform */
      const uint2 *Lk = class_list(L, p.lcap, c);
      const unsigned n = S.cnt[c];
#pragma unroll 4
      for (unsigned i = threadIdx.x; i < n; i += kThreads) {
        const float y = __uint_as_float(__ldcg(&Lk[i].x));
        const int tc = class_of(LMF_FSUB(ymax, y));
        if (tc > ksup) continue;
        mine += 1ull << (10 * tc);
        atomicAdd(&hc[tc], 1u);
        if (!unit) near_digits_add(hd, (uint32_t)tc, lmf_lg_exp_neg(LMF_FSUB(y, ymax)));
      }
      __syncthreads(); /* true class c's words are final */
      const unsigned nc = hc[c];
      cum = add(cum, unit ? u128((unsigned long long)nc, 0ull) : near_digits_sum(hd, c));
      mk += (unsigned)(mine >> (10 * c)) & 1023u;
      nk += nc;
      if (ge(cum, t)) kc = c;
    }
  if (kc < 0) return false;
  if (nk > (unsigned)kListCap) return false;
  unsigned pos = block_incl_scan_u32(mk, red) - mk;
  for (int k = 0; k <= kc; ++k) { /* true classes 0 .. kc lie in lists 0 .. kc */
    const uint2 *Lk = class_list(L, p.lcap, k);
    const unsigned n = S.cnt[k];
#pragma unroll 4
    for (unsigned i = threadIdx.x; i < n; i += kThreads) {
      const uint2 e = __ldcg(&Lk[i]);
      if (class_of(LMF_FSUB(ymax, __uint_as_float(e.x))) <= kc) {
        S.cy[pos] = __uint_as_float(e.x);
        S.cid[pos] = e.y;
        ++pos;
      }
    }
  }
  if (threadIdx.x == 0) S.n = nk;
  __syncthreads();
  *tgt = t;
  return true;
}

/* body(i) for every list item i < n for which pred(i) holds (the survivors of a cut). The block's warps
 * take items i = 32 w + lane + k kThreads as a plain loop would, but each warp first packs the items
 * that pass into q (64 entries of its own) and runs body 32 at a time, every lane busy: a plain loop
 * over the list cut's items ran the survivors' Gumbel noise (about 130 instructions) on nearly every
 * trip of each warp, since about half of the items, scattered, survive. Every lane of the warp calls
 * it; body runs in any order (the callers' sums and maxima are exact). */
template <class P, class F>
__device__ __forceinline__ void warp_packed_for(unsigned n, uint16_t *q, P pred, F body) {
  const unsigned lane = (unsigned)lane_id();
  unsigned qn = 0u; /* warp-uniform: the items waiting in q */
#pragma unroll 1 /* run once per launch: the body's code fetched once */
  for (unsigned b0 = (unsigned)warp_id() * 32u; b0 < n; b0 += kThreads) {
    const unsigned i = b0 + lane;
    const bool in = i < n && pred(i);
    const unsigned ball = __ballot_sync(kFull, in);
    if (in) q[qn + (unsigned)__popc(ball & ((1u << lane) - 1u))] = (uint16_t)i;
    qn += (unsigned)__popc(ball);
    __syncwarp();
    if (qn >= 32u) {
      body(q[lane]);
      qn -= 32u;
      const uint16_t rest = q[32u + lane]; /* at most 31 left: q[32 .. 63] */
      __syncwarp();
      if (lane < qn) q[lane] = rest;
      __syncwarp();
    }
  }
  if (lane < qn) body(q[lane]);
}

/* What a list cut did with a row. */
enum { LC_DONE = 0, LC_SUP_MISS = 1, LC_MISS = 2 };

/* List mode's flat rows (KP::lbins, logits_flat.cuh): a top-p row whose combine lists could not decide
 * its cut (Row::ymiss 2) takes k_coop's 256 bins in two chunk kernels instead of the window pass and
 * the list cut's one-block search. */
__device__ __forceinline__ bool flat_pending(const KP &p, const Row &R) {
  return p.lbins && R.status == LMF_ROW_OK && R.ymiss == 2 && R.search == SK_TOPP;
}

/* A row's bins, list count and ticket zeroed, by the block's threads. */
__device__ __forceinline__ void coop_row_clear(CoopRow &CR) {
  for (int i = threadIdx.x; i < kCoopIn; i += kThreads) {
    CR.cnt[i] = 0u;
    CR.mass[i] = u128(0ull, 0ull);
  }
  if (threadIdx.x == 0) CR.ngather = CR.done = CR.nbins = 0u;
}

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
      if (p.lbins) coop_row_clear(p.coop[row]);              /* or the bins (logits_flat.cuh) */
      return LC_SUP_MISS;
    }
  } else {
    if (S.kw < 0) return LC_MISS;
    window_items(p, row, S);
    tgt = R->target;
  }
  const unsigned n = S.n;
  const bool topk = kind == SK_TOPK;
  const uint64_t cut = list_cut(S, ~0ull, topk, true, ymax, tgt, red); /* window classes: within 16 nats */
  uint64_t pcut = cut;
  const bool then_p = topk && j.top_p < 1.0f;
  if (then_p) { /* top-p on the top-k survivors, as the general search (search_target, no window) */
    U128 sum = u128(0ull, 0ull);
#pragma unroll 1 /* loops over the list run once per launch: their bodies fetched once */
    for (unsigned i = threadIdx.x; i < n; i += kThreads)
      sum = add(sum, item_fx(lmf_lg_ord_desc(S.cy[i], S.cid[i]) <= cut, false, S.cy[i], ymax));
    const U128 tot = block_sum_u128(sum, red);
    U128 t2 = ceil_fx((double)j.top_p * fx_to_double(tot));
    if (!ge(tot, t2)) t2 = tot;
    if (is_zero(t2)) t2 = u128(1ull, 0ull);
    pcut = list_cut(S, cut, false, true, ymax, t2, red);
  }
  const bool minp = j.min_p > 0.0f;
  const float lmp = j.log_min_p;
  /* The survivors: within both cuts (pcut <= cut) and min-p. */
  const auto alive = [&](unsigned i) {
    return lmf_lg_ord_desc(S.cy[i], S.cid[i]) <= pcut && (!minp || LMF_FSUB(S.cy[i], ymax) >= lmp);
  };
  /* The survivors' mass (the LSE where an output needs it) and the Gumbel-max sample, in one pass
   * over the survivors, packed per warp (warp_packed_for; its queues take the histogram's room, free
   * since the last list_cut's block reductions). */
  float lse = R->lse;
  unsigned long long best = 0ull;
  const bool fin = R->need_lse != 0, samp = !R->greedy;
  if (fin || samp) {
    static_assert(kWarps * 64 * sizeof(uint16_t) <= sizeof(S.hlo) && kListCap <= 65536,
                  "the warps' survivor queues (16-bit item indices) in the histogram's room");
    const uint64_t seed = R->seed, goff = R->goff;
    U128 sum = u128(0ull, 0ull);
    unsigned long long mine = 0ull;
    warp_packed_for(n, reinterpret_cast<uint16_t *>(S.hlo) + warp_id() * 64, alive, [&](unsigned i) {
      const float y = S.cy[i];
      const uint32_t id = S.cid[i];
      if (fin) sum = add(sum, item_fx(true, false, y, ymax));
      if (samp) {
        const unsigned long long pk = pack_best(lmf_lg_gumbel_key(y, lmf_lg_gumbel(seed, goff, id)), id);
        mine = pk > mine ? pk : mine;
      }
    });
    if (fin) lse = (float)((double)ymax + log(fx_to_double(block_sum_u128(sum, red))));
    if (samp) best = block_max_u64(mine, red);
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
  return w;
}

/* block_binned's bin of a token taking part in a top-k / top-p search: d2 = 2 (ymax - y) by 1/8 (1/16
 * nat) below 255 / 8, then one bin past (kBins - 1). Non-increasing in y, so the bins follow the cut's
 * order (value descending). */
__device__ __forceinline__ uint32_t binned_bin(float y, float ymax) {
  const float d2 = LMF_FMUL(LMF_FSUB(ymax, y), 2.0f);
  return d2 < (float)(kBins - 1) / 8.0f ? (uint32_t)LMF_FMUL(d2, 8.0f) : (uint32_t)(kBins - 1);
}

/* One walk of block_binned over a row's Y: f(bin, token, y, mass) for each of the thread's tokens, bin
 * kBins where the token takes no part in the search (mass 0 there). */
template <class F>
__device__ __forceinline__ void binned_walk(const KP &p, int64_t row, int kind, const SRow &s, F f) {
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + row * p.ystride;
  for (int64_t c = 0; c < p.nchunks; ++c) {
    float yv[kPer];
    load_strided(Yr + c * kChunk, c, V, yv);
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      uint32_t key = 0;
      U128 fx = u128(0ull, 0ull);
      float y = 0.0f;
      const bool e = v < V && search_item_v(kind, s, yv[q], 0.0f, v, &key, &fx, &y);
      f(e ? binned_bin(y, s.ymax) : (uint32_t)kBins, v, y, fx);
    }
  }
}

/* A top-k / top-p search of one row by one block over Y, binned: one pass sums the tokens' masses (and
 * counts them) into 256 bins of d2 = 2 (ymax - y) (binned_bin); where the target's crossing bin lies
 * within 16 nats of the max and holds at most kListCap tokens, a second pass gathers that bin into
 * shared memory and the list cut finds the cut among them (the bins before it hold flo of the
 * target). The cut is the radix search's (the same order, masses and target), in two passes over Y
 * instead of five. false: the radix search is needed; nothing was written. Block-uniform. */
__device__ bool block_binned(const KP &p, int64_t row, int kind) {
  __shared__ Red red;
  __shared__ unsigned s_cnt[kBins];
  __shared__ unsigned s_n, s_bcnt;
  __shared__ int s_b;
  __shared__ unsigned long long s_flo[2];
  if (kind != SK_TOPK && kind != SK_TOPP) return false;
  unsigned long long(*wlo)[kBins] = static_cast<unsigned long long(*)[kBins]>(block_scratch());
  unsigned long long(*whi)[kBins] = wlo + kWarps;
  Row *R = &p.rows[row];
  const int t = threadIdx.x, wi = warp_id();
  __syncthreads(); /* the scratch's last readers are done */
  for (int i = t; i < kWarps * kBins; i += kThreads) {
    (&wlo[0][0])[i] = 0ull;
    (&whi[0][0])[i] = 0ull;
  }
  s_cnt[t] = 0u;
  __syncthreads();
  const SRow s = srow_of(*R);
  binned_walk(p, row, kind, s, [&](uint32_t bin, int64_t, float, U128 fx) {
    const bool e = bin < (uint32_t)kBins;
    warp_hist_add(wlo[wi], whi[wi], e, e ? bin : 0u, fx, s_cnt);
  });
  __syncthreads();
  U128 h = u128(0ull, 0ull);
#pragma unroll
  for (int i = 0; i < kWarps; ++i) h = add(h, u128(wlo[i][t], whi[i][t]));
  const unsigned cnt = s_cnt[t];
  const U128 tgt = search_target(p, kind, *R, block_sum_u128(h, red));
  const U128 incl = block_incl_scan_u128(h, red);
  if (is_crossing_bin(incl, h, tgt)) { /* the last bin where none reaches tgt: unreachable, the bins hold it */
    const U128 f = sub(incl, h);
    s_flo[0] = f.lo;
    s_flo[1] = f.hi;
    s_bcnt = cnt;
    s_b = t;
    s_n = 0u;
  }
  __syncthreads();
  const unsigned bcnt = s_bcnt;
  const int b = s_b;
  if (b == kBins - 1 || bcnt > (unsigned)kListCap) return false;
  ListSmem &S = *static_cast<ListSmem *>(block_scratch()); /* the histograms are read */
  binned_walk(p, row, kind, s, [&](uint32_t bin, int64_t v, float y, U128) {
    if (bin == (uint32_t)b) {
      const unsigned i = atomicAdd(&s_n, 1u);
      S.cy[i] = y;
      S.cid[i] = (uint32_t)v;
    }
  });
  if (t == 0) S.n = bcnt;
  __syncthreads();
  const U128 rest = sub(tgt, u128(s_flo[0], s_flo[1])); /* of the target, in the crossing bin */
  const uint64_t cut = list_cut(S, ~0ull, kind == SK_TOPK, true, s.ymax, rest, red); /* b < kBins - 1 */
  if (t == 0) finish_search(p, kind, R, cut);
  return true;
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
  b_tiecut(p, row, kind);
}

/* After a window block (every block of the row calls it, whatever its row's state): true in the last
 * of the row's blocks to finish, which then sees every block's lists and sums (each fenced before it
 * counts itself; list_window, window_items and sup_items read them from L2). Resets the count for
 * the row's next cut. Block-uniform. */
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
