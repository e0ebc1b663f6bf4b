/* The general cut searches (top-k, top-p, nucleus, GeDi filter): radix histograms of the order key,
 * the CPU's windows and target, the tie pass.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

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
  if (search_reads_y(kind)) load_strided(Yr + c * kChunk, c, V, yv);
  if (search_reads_d(kind)) load_strided(Dr + c * kChunk, c, V, dv);
}

/* Shared memory of a list cut (b_listcut): the digit histogram of its radix select and its items. */
struct ListSmem {
  unsigned long long hlo[kBins], hhi[kBins];
  U128 flo;
  int kw, sup;
  unsigned n; /* items in cy / cid */
  unsigned cross; /* list_cut: the crossing digit (is_crossing_bin) */
  unsigned nfew; /* list_cut: the crossing digit's items put for few_cut */
  unsigned cnt[kClasses];
  float cy[kListCap]; /* the candidates' y and id */
  uint32_t cid[kListCap];
};

/* A block's scratch shared memory, one buffer per kernel whichever body asks: the histogram pass's
 * per-warp histograms, or the list cut's ListSmem, which never run at once; kept apart, a kernel
 * that runs both (a list cut with its general-search fallback; k_coop) would pass the 48 KiB limit of
 * static shared memory. */
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
 * higher digits match the prefix found so far. */
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
  const int64_t V = p.job.vocab_out;
  const float *Yr = p.Y + w.row * p.ystride;
  const float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  const int wi = warp_id();
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, Dr, c, V, yv, dv);
#pragma unroll 2 /* search_item_v's switch fetched twice, not kPer times (sel8) */
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      uint32_t key = 0;
      U128 fx = u128(0ull, 0ull);
      float y = 0.0f;
      bool e = false;
      if (v < V) e = search_item_v(kind, s, sel8(yv, q), sel8(dv, q), v, &key, &fx, &y);
      if (e && level > 0) e = (key >> (32 - 8 * level)) == prefix;
      warp_hist_add(wlo[wi], whi[wi], e, (key >> (24 - 8 * level)) & 0xffu, fx);
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
}

/* Top-p's target straight after the combine (Row::topp_total): top_p times the combine pass's total,
 * at least one unit. search_target's, less its clamp at the masses' sum, which needs every token's
 * mass: the callers (the combine's lists, sup_items; k_coop's and the flat rows' bins, coop_pick) hold
 * the masses of the tokens near the max only, and send a row whose target those do not reach to the
 * general search. Where they reach it the clamp changes nothing (the target is at most their sum). */
__device__ __forceinline__ U128 topp_target_of_total(const lmf_lg_job &j, double total) {
  const U128 t = ceil_fx((double)j.top_p * total);
  return is_zero(t) ? u128(1ull, 0ull) : t;
}

/* The target of a search (level 0), as the CPU computes it: fraction times the total mass tot (exact,
 * every token's), except for top-p straight after the combine (Row::topp_total), where it is top_p
 * times the combine pass's total (in double: the chunks' exp-sums rescaled to the row's max), so a
 * cut whose tokens lie near the max needs no pass over every token to know its target. Never above
 * tot, so the cut is always reached (a target that rounding puts past every token keeps up to the
 * last token with mass). */
__device__ U128 search_target(const KP &p, int kind, const Row &R, U128 tot) {
  const lmf_lg_job &j = p.job;
  U128 t;
  switch (kind) {
    case SK_NUC: t = ceil_fx((double)j.nucleus_p * fx_to_double(tot)); break;
    case SK_GF: t = ceil_fx((double)j.gedi_filter_p * fx_to_double(tot)); break;
    case SK_TOPK: t = u128((unsigned long long)j.top_k, 0ull); break;
    default: t = ceil_fx((double)j.top_p * (R.topp_total ? R.total : fx_to_double(tot)));
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
  const U128 at = add(flo, block_incl_scan_u128(h, red));
  if (is_crossing_bin(at, h, tgt)) { /* the last bin where none reaches tgt: unreachable, the prefix holds it */
    R->flo = sub(at, h);
    R->prefix = level == 0 ? (uint32_t)t : ((R->prefix << 8) | (uint32_t)t);
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
  const float *Yr = p.Y + w.row * p.ystride;
  const float *Dr = p.D ? p.D + row * p.ystride : nullptr;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    U128 sum = u128(0ull, 0ull);
    float yv[kPer], dv[kPer];
    load_search(kind, w, Yr, Dr, c, V, yv, dv);
#pragma unroll 1 /* search_item_v's switch fetched once, not kPer times (sel8) */
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      uint32_t key;
      U128 fx;
      float y;
      if (search_item_v(kind, s, sel8(yv, q), sel8(dv, q), v, &key, &fx, &y) && key == K) sum = add(sum, fx);
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
        R->topp_total = 0;
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
__device__ void b_tiecut(const KP &p, int64_t row, int kind) {
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
  const float *Yr = p.Y + row * p.ystride;
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
