/* The one-launch step of small batches (KP::coop; included by logits.cu inside its anonymous namespace,
 * after the separate kernels' bodies, which it reuses).
 *
 * Why. At B = 1 the separate kernels are a chain of 3 to 15 small launches whose cost is launch latency
 * and one memory latency per pass, not bandwidth (V = 128,256 bf16: the row's 751.5 KiB take 0.2 us to
 * read on an H100). k_coop does the step in one cooperative launch: one 256-thread block per chunk of
 * 2048 tokens, every block of the grid resident at once, grid-wide barriers where the separate kernels
 * have launch boundaries. Each thread keeps its 8 values of y in registers for the whole step: the
 * logits are read once, Y is never written.
 *
 * Phases (each block: row = block / nchunks, chunk c = block % nchunks; barriers are grid-wide):
 *   1  the row's state (init_row) into block-local shared memory, in every block (no barrier for it);
 *      y = s / T of the block's 8 x 256 tokens; the chunk's partial (chunk_partial)       | barrier
 *   2  every block merges the row's partials (cmerge_calc: the same bits in every block);
 *      top-p: the mass (exact, 2^-80 units) and count of each bin of d2 = 2 (ymax - y), 1/8 wide
 *      over [0, 32) plus one bin past 32, added to the row's histogram with atomics         | barrier
 *   3  every block reads the histogram: the target (search_target: top_p times the combine's total,
 *      at most the bins' total), and the bin where the cumulative mass from the top reaches it is the
 *      crossing bin. Its tokens (at most kListCap) are appended to the row's list; a crossing bin of
 *      more than kListCap tokens (flat rows) writes Y instead.
 *   Without log-prob rows (the ticket path: the bar's case and the bench, which only sample):
 *      each block adds its certain survivors (min-p; for top-p the bins above the crossing one) to
 *      the row's LSE mass and Gumbel-max, fences, and takes a ticket. The row's last block cuts the
 *      crossing bin (list_cut over the list, or the general search, block_search, over Y), adds that
 *      bin's survivors and writes the outputs. Two grid barriers in all.
 *   With log-prob rows every block needs the cut and the LSE:                              | barrier
 *   4  every block copies the list into shared memory and finds the cut there (list_cut, after the
 *      mass of the bins above); for a crossing bin past kListCap the row's first block runs the
 *      general search over Y (block_search)                            | barrier if any row did
 *   5  survivors (the cut, min-p): their mass for the LSE and the Gumbel-max sample, one atomic each
 *      per block                                                                             | barrier
 *   6  every block writes its tokens' log-probs and the row's first block the outputs.
 * Rows with a failed status skip the work but take part in every barrier. The block-local state goes
 * through COOP_BLOCK_LOCAL (the CPU emulator interleaves blocks at the barriers); other shared memory
 * is scratch within a phase.
 *
 * Used (lmf_cuda_logits_run) for combine jobs without sparse models, plausibility, nucleus, GeDi or
 * top-k, whose B x nchunks blocks fit the device at once (the occupancy query), with LMF_LOGITS_COOP=1
 * in the environment: opt-in until a lent GPU measures it faster than the separate kernels. */

constexpr int kCoopBins = 257;          /* d2 in [0, 32) by 1/8, then d2 >= 32 */
constexpr int64_t kCoopMaxBlocks = 4096; /* a grid larger than any device holds at once: no scratch */

/* Per row, in the workspace: the phase-2 histogram and the count of the crossing bin's list. */
struct CoopRow {
  unsigned cnt[kCoopBins];
  unsigned ngather;
  unsigned done; /* blocks of the row past phase 5 (the outputs' ticket without log-prob rows) */
  U128 mass[kCoopBins];
};

/* A barrier across the grid (the launch is cooperative); the CPU emulator's own where it runs. */
#if LMF_CUDA_EMU
#define COOP_SYNC() ::emu::grid_sync(EMU_SITE)
#define COOP_BLOCK_LOCAL(T, name) \
  static char name##_key_;        \
  T &name = *static_cast<T *>(::emu::block_local(&name##_key_, sizeof(T)))
#else
#define COOP_SYNC() cooperative_groups::this_grid().sync()
#define COOP_BLOCK_LOCAL(T, name) __shared__ T name
#endif

static_assert(kCoopBins - 1 == kThreads, "coop_hist maps one thread to one bin below d2 = 32");

/* LMF_LOGITS_COOP_PROFILE=1 (KP::coop_profile): thread 0 of row 0's blocks stamps each phase's end and
 * each barrier's release with its SM's clock and the global timer; the block that ends the row (the
 * ticket's last one, or with log-prob rows the row's first) prints its marks once per launch: where
 * the step's time goes, and the SM clock it ran at (cycles / ns). A device-only aid; no-op elsewhere.
 * The marks, in order: phase 1 | barrier | phase 2 | barrier | phase 3, then either | the ticket |
 * the last block's cut and outputs, or | barrier | phase 4 (its fallback barrier included) | phase 5 |
 * barrier | phase 6. */
constexpr int kCoopMarks = 12;
struct CoopProf {
  long long cyc[kCoopMarks];
  unsigned long long ns[kCoopMarks];
  int n;
};
__device__ __forceinline__ void coop_mark(CoopProf &pr, bool on) {
#if defined(__CUDA_ARCH__)
  if (!on || pr.n >= kCoopMarks) return;
  unsigned long long g;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
  pr.cyc[pr.n] = clock64();
  pr.ns[pr.n++] = g;
#else
  (void)pr, (void)on;
#endif
}
__device__ void coop_print(const CoopProf &pr, bool on) {
#if defined(__CUDA_ARCH__)
  if (!on || pr.n < 2) return;
  const long long cyc = pr.cyc[pr.n - 1] - pr.cyc[0];
  const unsigned long long ns = pr.ns[pr.n - 1] - pr.ns[0];
  printf("k_coop profile (the block that ends row 0): %llu ns in all, %.0f MHz; cycles since start at "
         "each mark:",
         ns, ns ? 1e3 * (double)cyc / (double)ns : 0.0);
  for (int i = 1; i < pr.n; ++i) printf(" %lld", pr.cyc[i] - pr.cyc[0]);
  printf("\n");
#else
  (void)pr, (void)on;
#endif
}

/* Phase 2's histogram bin of a token in the search (w > 0). */
__device__ __forceinline__ int coop_bin(float y, float ymax) {
  const float d2 = LMF_FMUL(LMF_FSUB(ymax, y), 2.0f); /* the CPU's window measure (mass_windows) */
  return d2 < 32.0f ? (int)LMF_FMUL(d2, 8.0f) : kCoopBins - 1;
}

/* Phase 2: this block's tokens into the row's histogram: the bins below d2 = 32 in shared memory
 * first (warp_hist_add: a warp's lanes sharing a bin add once), the bin past 32 (most tokens of a
 * wide row) in registers and one block sum. */
__device__ void coop_hist(const KP &p, CoopRow &CR, float ymax, const float y[kPer], Red &red) {
  constexpr int kIn = kCoopBins - 1;
  __shared__ unsigned hc[kIn];
  __shared__ unsigned long long hlo[kIn], hhi[kIn];
  hc[threadIdx.x] = 0u;
  hlo[threadIdx.x] = hhi[threadIdx.x] = 0ull;
  __syncthreads();
  U128 over = u128(0ull, 0ull);
  long long nover = 0;
#pragma unroll 1 /* once per launch: the body's code fetched once (sel8) */
  for (int q = 0; q < kPer; ++q) {
    const float yq = sel8(y, q);
    const float w = lmf_lg_is_ninf(yq) ? 0.0f : lmf_lg_exp_neg(LMF_FSUB(yq, ymax));
    const int b = w > 0.0f ? coop_bin(yq, ymax) : -1;
    const U128 fx = fx_of(w);
    if (b == kIn) {
      over = add(over, fx);
      ++nover;
    }
    warp_hist_add(hlo, hhi, b >= 0 && b < kIn, (uint32_t)b, fx, hc);
  }
  over = block_sum_u128(over, red);
  nover = block_reduce_ll<OP_SUM>(nover, red); /* its barriers also order the adds above */
  const int i = threadIdx.x;
  if (hc[i]) {
    atomicAdd(&CR.cnt[i], hc[i]);
    atomic_add_u128(&CR.mass[i], u128(hlo[i], hhi[i]));
  }
  if (i == 0 && nover) {
    atomicAdd(&CR.cnt[kIn], (unsigned)nover);
    atomic_add_u128(&CR.mass[kIn], over);
  }
}

/* Phase 3: the target, then the crossing bin, the mass above it and its count. Block-uniform
 * results. */
struct CoopPick {
  U128 tgt, flo;
  int bin;
  unsigned cnt;
};
__device__ CoopPick coop_pick(const KP &p, const Row &R, const CoopRow &CR, Red &red) {
  __shared__ unsigned long long s_in[2]; /* the mass of the bins below d2 = 32 */
  __shared__ CoopPick s_pick;
  const int t = threadIdx.x;
  const U128 m = u128(__ldcg(&CR.mass[t].lo), __ldcg(&CR.mass[t].hi));
  const unsigned n = __ldcg(&CR.cnt[t]);
  const U128 incl = block_incl_scan_u128(m, red);
  if (t == kThreads - 1) {
    s_in[0] = incl.lo;
    s_in[1] = incl.hi;
  }
  const U128 over = u128(__ldcg(&CR.mass[kCoopBins - 1].lo), __ldcg(&CR.mass[kCoopBins - 1].hi));
  __syncthreads();
  const U128 in = u128(s_in[0], s_in[1]);
  const U128 tgt = search_target(p, SK_TOPP, R, add(in, over));
  long long b = block_reduce_ll<OP_MIN>(ge(incl, tgt) ? t : kCoopBins - 1, red);
  if (t == (int)b) { /* b < 256 */
    s_pick.bin = (int)b;
    s_pick.flo = sub(incl, m);
    s_pick.cnt = n;
  }
  if (t == 0 && b == kCoopBins - 1) { /* the mass past d2 = 32 holds the target's end */
    s_pick.bin = (int)b;
    s_pick.flo = in;
    s_pick.cnt = __ldcg(&CR.cnt[kCoopBins - 1]);
  }
  if (t == 0) s_pick.tgt = tgt;
  __syncthreads();
  const CoopPick r = s_pick;
  __syncthreads();
  return r;
}

/* Phase 4: the cut among the crossing bin's tokens (the row's list), after the mass above them. */
__device__ uint64_t coop_listcut(const uint2 *G, const CoopPick &pk, float ymax, Red &red) {
  ListSmem &S = *static_cast<ListSmem *>(block_scratch());
  const unsigned n = pk.cnt;
  for (unsigned i = threadIdx.x; i < n; i += kThreads) {
    const uint2 e = __ldcg(&G[i]);
    S.cy[i] = __uint_as_float(e.x);
    S.cid[i] = e.y;
  }
  if (threadIdx.x == 0) S.n = n;
  __syncthreads();
  const uint64_t cut = list_cut(S, ~0ull, false, ymax, sub(pk.tgt, pk.flo), red);
  __syncthreads();
  return cut;
}

/* Whether a token lies in phase 2's bin b (a token of no bin, -inf or of zero mass, in none). */
__device__ __forceinline__ bool coop_in_bin(float y, float ymax, int b) {
  if (lmf_lg_is_ninf(y) || !(lmf_lg_exp_neg(LMF_FSUB(y, ymax)) > 0.0f)) return false;
  return coop_bin(y, ymax) == b;
}
/* Whether a token lies in a bin above b (a larger y than every token of bin b). */
__device__ __forceinline__ bool coop_above_bin(float y, float ymax, int b) {
  if (lmf_lg_is_ninf(y) || !(lmf_lg_exp_neg(LMF_FSUB(y, ymax)) > 0.0f)) return false;
  return coop_bin(y, ymax) < b;
}

/* Phase 3: appends the thread's tokens marked in `in` to the row's list G, one atomic per warp (a warp
 * scan of the counts gives each lane its place). Warp-uniform call. */
__device__ void coop_gather(uint2 *G, unsigned *n, unsigned in, const float y[kPer], int64_t v0) {
  const unsigned c = (unsigned)__popc(in);
  unsigned incl = c;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const unsigned u = __shfl_up_sync(kFull, incl, o);
    if (lane_id() >= o) incl += u;
  }
  unsigned base = 0u;
  if (lane_id() == 31 && incl) base = atomicAdd(n, incl);
  base = __shfl_sync(kFull, base, 31) + incl - c;
  for (; in; in &= in - 1u) {
    const int q = __ffs((int)in) - 1;
    G[base++] = make_uint2(__float_as_uint(sel8(y, q)), (uint32_t)(v0 + q));
  }
}

/* dst = src, by the block's threads (Row is a plain struct of 8-byte-aligned fields). */
static_assert(sizeof(Row) % sizeof(unsigned long long) == 0 && alignof(Row) >= alignof(unsigned long long),
              "copy_row copies 8-byte words");
__device__ __forceinline__ void copy_row(Row &dst, const Row &src) {
  const unsigned long long *s = reinterpret_cast<const unsigned long long *>(&src);
  unsigned long long *d = reinterpret_cast<unsigned long long *>(&dst);
  for (unsigned i = threadIdx.x; i < sizeof(Row) / sizeof(unsigned long long); i += kThreads) d[i] = s[i];
}

/* A thread's place: its row, its block's chunk, its first token, the row's max. */
struct CoopTok {
  int64_t row, c, v0;
  float ymax;
};

/* Adds this block's tokens that survive S (and, for maxbin >= 0, lie in a bin above maxbin: the top-p
 * cut's certain survivors) to the row's sums, order-free: their mass (fin) to Rg.acc, their best
 * Gumbel-max (key, id) (samp) to Rg.best, with its y in the chunk's partial. Block-uniform. */
__device__ void coop_survivors(const KP &p, const Row &R, Row &Rg, const Surv &S, int maxbin,
                               const float y[kPer], const CoopTok &me, bool fin, bool samp, Red &red) {
  const lmf_lg_job &j = p.job;
  const bool minp = j.min_p > 0.0f;
  const uint64_t seed = R.seed, goff = R.goff;
  U128 acc = u128(0ull, 0ull);
  float bk = ninf(), by = 0.0f;
  int64_t bid = -1;
#pragma unroll 1 /* once per launch: the body's code fetched once (sel8) */
  for (int q = 0; q < kPer; ++q) {
    const int64_t v = me.v0 + q;
    const float yq = sel8(y, q);
    if (v >= j.vocab_out || !survives(S, yq, v, minp, j.log_min_p)) continue;
    if (maxbin >= 0 && !coop_above_bin(yq, me.ymax, maxbin)) continue;
    if (fin) acc = add(acc, fx_of(lmf_lg_exp_neg(LMF_FSUB(yq, me.ymax))));
    if (samp) {
      const float key = lmf_lg_gumbel_key(yq, lmf_lg_gumbel(seed, goff, (uint32_t)v));
      if (bid < 0 || key > bk) { /* ids increase along q: ties keep the lower id */
        bk = key;
        by = yq;
        bid = v;
      }
    }
  }
  if (fin) {
    acc = block_sum_u128<true>(acc, red);
    if (threadIdx.x == 0 && !is_zero(acc)) atomic_add_u128(&Rg.acc, acc);
  }
  if (samp) {
    const unsigned long long mine = bid >= 0 ? pack_best(bk, (uint32_t)bid) : 0ull;
    const unsigned long long best = block_max_u64(mine, red);
    if (best && mine == best) { /* one thread: (key, id) is unique */
      p.cpart[me.row * p.nchunks + me.c].ybest = by;
      atomicMax(&Rg.best, best);
    }
  }
}

/* The row's LSE after its cuts, from the survivors' summed mass (plus `more`). */
__device__ __forceinline__ float coop_lse(const Row &Rg, float ymax, U128 more) {
  const U128 acc = add(u128(__ldcg(&Rg.acc.lo), __ldcg(&Rg.acc.hi)), more);
  return (float)((double)ymax + log(fx_to_double(acc)));
}

/* What b_outputs reads of a row whose step k_coop did: the LSE, the packed best (0: greedy, or no
 * sample) and the token's y (Y is not written). One thread. */
__device__ __forceinline__ void coop_set_token(Row &Rg, float lse, unsigned long long best, float ytok) {
  Rg.lse = lse;
  Rg.best = best;
  Rg.ymiss = 1;
  Rg.ytok = ytok;
}

/* The ticket path's end, in the row's last block (every other block's sums, list entries and Y are
 * visible): the top-p cut in the crossing bin, from the row's list (or, past kListCap tokens, by the
 * general search over Y, which every block wrote), that bin's survivors added to the row's sums, then
 * the outputs. Block-uniform. */
__device__ void coop_last(const KP &p, const Row &R, Row &Rg, const uint2 *G, const CoopPick &pk, Surv S,
                          bool live, bool search, bool listed, bool fin, bool samp, const CoopTok &me,
                          Red &red) {
  const lmf_lg_job &j = p.job;
  const int t = threadIdx.x;
  __shared__ float s_ly;
  if (live) {
    U128 acc = u128(0ull, 0ull);
    unsigned long long mine = 0ull, lbest = 0ull;
    float my = 0.0f;
    if (search) {
      const bool minp = j.min_p > 0.0f;
      const uint64_t seed = R.seed, goff = R.goff;
      S.topp_on = 1;
      /* One token of the crossing bin: into the sums if it survives the cut. */
      auto item = [&](float y, uint32_t id) {
        if (!survives(S, y, id, minp, j.log_min_p)) return;
        if (fin) acc = add(acc, fx_of(lmf_lg_exp_neg(LMF_FSUB(y, me.ymax))));
        if (samp) {
          const unsigned long long b =
              pack_best(lmf_lg_gumbel_key(y, lmf_lg_gumbel(seed, goff, id)), id);
          if (b > mine) {
            mine = b;
            my = y;
          }
        }
      };
      if (listed) {
        S.topp_cut = coop_listcut(G, pk, me.ymax, red);
        const ListSmem &L = *static_cast<const ListSmem *>(block_scratch()); /* the list, still there */
        for (unsigned i = (unsigned)t; i < pk.cnt; i += kThreads) item(L.cy[i], L.cid[i]);
      } else {
        block_search(p, me.row, SK_TOPP);
        __syncthreads();
        S.topp_cut = __ldcg(&Rg.topp_cut);
        const float *Yr = p.Y + me.row * p.ystride;
        for (int64_t v = t; v < j.vocab_out; v += kThreads) {
          const float y = __ldcg(&Yr[v]);
          if (coop_in_bin(y, me.ymax, pk.bin)) item(y, (uint32_t)v);
        }
      }
      if (fin) acc = block_sum_u128(acc, red);
      if (samp) {
        lbest = block_max_u64(mine, red);
        if (lbest && mine == lbest) s_ly = my;
      }
      __syncthreads();
    }
    if (t == 0) {
      const float lse = fin ? coop_lse(Rg, me.ymax, acc) : R.lse;
      unsigned long long best = 0ull;
      float ytok = me.ymax;
      if (samp) {
        const unsigned long long others = __ldcg(&Rg.best);
        best = lbest > others ? lbest : others;
        if (best && best == lbest) ytok = s_ly;
        else if (best) ytok = __ldcg(&p.cpart[me.row * p.nchunks + unpack_id(best) / kChunk].ybest);
      }
      coop_set_token(Rg, lse, best, ytok);
    }
  }
  if (t == 0) b_outputs(p, me.row);
}

__global__ void __launch_bounds__(kThreads) k_coop(const __grid_constant__ KP p) {
  COOP_BLOCK_LOCAL(Row, R); /* this block's copy of the row's state (the row's first block also keeps
                             * the global one, which the fallback search and the outputs read) */
  __shared__ Red red;
  const lmf_lg_job &j = p.job;
  const int64_t nch = p.nchunks, V = j.vocab_out;
  const int64_t row = (int64_t)blockIdx.x / nch, c = (int64_t)blockIdx.x % nch;
  const bool lead = c == 0;
  const int t = threadIdx.x;
  CoopRow &CR = p.coop[row];
  uint2 *const G = p.gath + row * (int64_t)kListCap;
  Row &Rg = p.rows[row];
  const int64_t v0 = c * kChunk + (int64_t)t * kPer; /* this thread's tokens v0 .. v0 + 7 */
  const bool prof = p.coop_profile && row == 0 && t == 0; /* printed by the block that ends row 0 */
  CoopProf pr;
  pr.n = 0;
  coop_mark(pr, prof);

  /* Phase 1. */
  if (t == 0) init_row(p, row, R);
  if (lead) {
    for (int i = t; i < kBins; i += kThreads) p.hist[row * kBins + i] = u128(0ull, 0ull);
    for (int i = t; i < kCoopBins; i += kThreads) {
      CR.cnt[i] = 0u;
      CR.mass[i] = u128(0ull, 0ull);
    }
    if (t == 0) CR.ngather = CR.done = 0u;
  }
  if (blockIdx.x == 0 && t == 0) *p.coop_fallback = 0u;
  __syncthreads();
  if (lead) copy_row(Rg, R); /* the global state: the block's copy, not a second init_row by one thread */
  bool live = R.status == LMF_ROW_OK;
  float y[kPer];
  if (live) {
    __shared__ CombPlan cp;
    comb_plan(p, R, row, cp);
    if (v0 < V) prefetch_models(cp, v0, true); /* every model's line on its way first */
    int bad = 0;
    int64_t id[kPer];
#pragma unroll
    for (int q = 0; q < kPer; ++q) {
      id[q] = v0 + q;
      y[q] = ninf();
    }
    if (v0 < V) {
      sum_models(cp, v0, y, &bad);
      bias_and_T(p, row, v0, lmf_lg_divisor_of(R.Teff), R.fuse_T && R.Teff != 1.0f, y, &bad);
    }
    chunk_partial(p, row, c, y, id, bad, R.want_sum != 0, false, red);
  }
  coop_mark(pr, prof); /* phase 1 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 2. */
  if (live) {
    if (warp_id() == 0) {
      const CMerge m = cmerge_calc(p, row, R, false);
      if (lane_id() == 0) {
        cmerge_apply(j, R, m, false);
        if (lead) cmerge_apply(j, Rg, m, false);
      }
    }
    __syncthreads();
    live = R.status == LMF_ROW_OK;
  }
  const bool search = live && R.search == SK_TOPP;
  const float ymax = live ? R.ymax : 0.0f;
  if (search) coop_hist(p, CR, ymax, y, red);
  coop_mark(pr, prof); /* phase 2 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 3. */
  CoopPick pk;
  pk.cnt = 0u;
  pk.bin = -1;
  bool listed = false;
  if (search) {
    pk = coop_pick(p, R, CR, red);
    listed = pk.cnt <= (unsigned)kListCap;
    if (listed) {
      unsigned in = 0u; /* bit q: token v0 + q lies in the crossing bin */
#pragma unroll 1 /* once per launch: the body's code fetched once (sel8) */
      for (int q = 0; q < kPer; ++q) in |= coop_in_bin(sel8(y, q), ymax, pk.bin) ? 1u << q : 0u;
      coop_gather(G, &CR.ngather, in, y, v0);
    } else {
      if (v0 < V) store8_f32(p.Y + row * p.ystride + v0, y); /* the row's last group: Y is padded to 8 */
      if (t == 0 && j.logprobs) atomicExch(p.coop_fallback, 1u);
    }
  }
  bool fin = false, samp = false;
  if (live) {
    fin = search ? R.need_lse != 0 : R.do_final != 0;
    samp = (search || fin) ? !R.greedy : R.do_sample != 0;
  }
  Surv S = surv_of(R); /* the step's one cut: top-p, or none */
  S.topp_on = 0;
  const CoopTok me{row, c, v0, ymax};

  if (!j.logprobs) {
    /* Without log-prob rows no block but one needs the cut. Each block adds its certain survivors
     * (min-p, and for top-p the bins above the crossing one) to the row's sums; the last of the row's
     * blocks to finish (its fence and ticket order every block's sums, list entries and Y before its
     * reads) cuts the crossing bin, adds its survivors and writes the outputs. Two grid barriers in
     * all. j.logprobs is the same in every block. */
    if (fin || samp) coop_survivors(p, R, Rg, S, search ? pk.bin : -1, y, me, fin, samp, red);
    coop_mark(pr, prof); /* phase 3 */
    __threadfence();
    __syncthreads();
    __shared__ bool s_last;
    if (t == 0) s_last = atomicAdd(&CR.done, 1u) == (unsigned)(nch - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    coop_mark(pr, prof); /* the ticket */
    coop_last(p, R, Rg, G, pk, S, live, search, listed, fin, samp, me, red);
    coop_mark(pr, prof); /* the outputs */
    coop_print(pr, prof);
    return;
  }

  /* With log-prob rows every block writes its tokens' log-probs: each needs the cut and the LSE. */
  coop_mark(pr, prof); /* phase 3 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 4. */
  uint64_t cut = ~0ull;
  if (search && listed) cut = coop_listcut(G, pk, ymax, red);
  if (__ldcg(p.coop_fallback)) { /* the same in every block: written before the last barrier */
    if (search && !listed && lead) {
      block_search(p, row, SK_TOPP);
      __syncthreads();
    }
    COOP_SYNC();
    if (search && !listed) cut = __ldcg(&Rg.topp_cut);
  }
  coop_mark(pr, prof); /* phase 4 */

  /* Phase 5: the survivors' mass (the LSE) and the sample. */
  S.topp_on = search;
  S.topp_cut = cut;
  if (fin || samp) coop_survivors(p, R, Rg, S, -1, y, me, fin, samp, red);
  coop_mark(pr, prof); /* phase 5 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 6: every block writes its tokens' log-probs, the row's first block the outputs. Every block
   * computes the LSE from the same sum: the same bits. */
  float lse = 0.0f;
  if (live) lse = fin ? coop_lse(Rg, ymax, u128(0ull, 0ull)) : R.lse;
  const bool minp = j.min_p > 0.0f;
  float *o = j.logprobs + row * j.logprobs_row_stride;
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t v = v0 + q;
    if (v >= V) continue;
    o[v] = !live ? __uint_as_float(kCanonNan)
                 : survives(S, y[q], v, minp, j.log_min_p) ? LMF_FSUB(y[q], lse) : ninf();
  }
  if (lead && t == 0) {
    if (live) {
      const unsigned long long best = samp ? __ldcg(&Rg.best) : 0ull;
      const float ytok = best ? __ldcg(&p.cpart[row * nch + unpack_id(best) / kChunk].ybest) : ymax;
      coop_set_token(Rg, lse, best, ytok);
    }
    b_outputs(p, row);
  }
  coop_mark(pr, prof); /* phase 6 */
  coop_print(pr, prof && lead);
}
