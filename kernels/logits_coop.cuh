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
 *      over [0, 32), added to the row's histogram with atomics; tokens past 32 are not counted (each
 *      token's bin kept in registers for phase 3: CoopBins)                                 | barrier
 *   3  every block reads the histogram: the target (topp_target_of_total: top_p times the combine's
 *      total), and the bin where the cumulative mass from the top reaches it is the crossing bin. Its
 *      tokens (at most kListCap) are appended to the row's list; a crossing bin of more than kListCap
 *      tokens (flat rows), or a target the bins do not reach (past 32), writes Y instead.
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
 * top-k, whose B x nchunks blocks fit the device at once (the occupancy query), unless
 * LMF_LOGITS_COOP=0: on a lent H200 (2026-11-28) it took 31.5 us a step where the separate kernels
 * took 91 (B = 1, K = 3, V = 128256, bf16), and won at every size and dtype it was timed at. */

constexpr int64_t kCoopMaxBlocks = 4096; /* a grid larger than any device holds at once: no scratch */

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

/* LMF_LOGITS_COOP_PROFILE=1 (KP::coop_profile): thread 0 of row 0's blocks stamps each phase's end and
 * each barrier's release with its SM's clock and the global timer; the block that ends the row (the
 * ticket's last one, or with log-prob rows the row's first) prints its marks once per launch: where
 * the step's time goes, and the SM clock it ran at (cycles / ns). A device-only aid; no-op elsewhere.
 * The marks, in order: the row's state (init_row_in and the block barrier after it) | y (the models'
 * loads and the fold) | phase 1 (the chunk's partial) | barrier | the merge (warp 0's cmerge_calc and
 * the block barrier after it) | phase 2 (the bins) | barrier | the pick (coop_pick: the target and
 * the crossing bin) | phase 3, then either | the ticket | the last block's cut and outputs, or |
 * barrier | phase 4 (its fallback barrier included) | phase 5 | barrier | phase 6. (Before
 * 2026-11-28 the state, y, merge and pick marks were not there: the H200 profile of that day has
 * seven marks.) */
constexpr int kCoopMarks = 16;
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

/* Phase 2's bin of a token: d2 = 2 (ymax - y), the CPU's window measure (mass_windows), by 1/8 over
 * [0, 32); kCoopIn past it (-inf included: d2 = +inf). */
__device__ __forceinline__ int coop_bin(float y, float ymax) {
  const float d2 = LMF_FMUL(LMF_FSUB(ymax, y), 2.0f);
  return d2 < 32.0f ? (int)LMF_FMUL(d2, 8.0f) : kCoopIn;
}

/* Each of a thread's tokens' phase-2 bin, kept for phase 3, which would otherwise compute every
 * token's bin again (twice: the gather and the survivors): byte q of `in` is token q's bin below
 * d2 = 32; bit q of `past` marks a token past it. */
struct CoopBins {
  unsigned long long in;
  unsigned past;
};
__device__ __forceinline__ CoopBins coop_bins_none() { return CoopBins{0ull, 0xffu}; }
/* Whether token q lies in bin b, one below d2 = 32 (coop_pick lists no crossing bin past it). */
__device__ __forceinline__ bool coop_bins_in(const CoopBins &k, int q, int b) {
  return !((k.past >> q) & 1u) && (int)((k.in >> (8 * q)) & 0xffu) == b;
}
/* Whether token q lies in a bin above b (a certain survivor of a cut in bin b). */
__device__ __forceinline__ bool coop_bins_above(const CoopBins &k, int q, int b) {
  return !((k.past >> q) & 1u) && (int)((k.in >> (8 * q)) & 0xffu) < b;
}

/* The thread's tokens' phase-2 bins (a token below d2 = 32 lies within 16 nats of the max: it has a
 * mass, and its bin alone places it). */
__device__ __forceinline__ CoopBins coop_bins_of(float ymax, const float y[kPer]) {
  CoopBins k{0ull, 0u};
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int b = coop_bin(y[q], ymax);
    k.in |= (unsigned long long)((uint32_t)b & 0xffu) << (8 * q);
    k.past |= (b == kCoopIn ? 1u : 0u) << q;
  }
  return k;
}

/* Phase 2: the block's tokens below d2 = 32 into the row's histogram, each bin's count and exact mass
 * (near_digits_add: native shared atomics on the mass's 16-bit digits), the block's bins then added to
 * the row's with one 128-bit atomic each (coop_hist_flush).
 *
 * The tokens past d2 = 32 (about 3 in 4 of the bench's K = 3 rows) are not counted at all. Top-p's
 * target straight after the combine is top_p times the combine pass's total (topp_target_of_total),
 * so the bins below d2 = 32 alone place any cut that lies among them, and coop_pick sends a row whose
 * target they do not hold to the general search. (Until 2026-11-29 every token past 32 also had its
 * exp and a 128-bit fixed-point add, and each block two more block reductions, for the one use of their
 * sum: the clamp of the target at every token's mass, which changes no cut the bins place.)
 *
 * A warp packs its tokens below d2 = 32 into its run in shared memory and adds them 32 at a time, one
 * a lane: a warp of the bench's K = 3 rows holds about 70 of its 256 (3 rounds), where a loop over the
 * thread's 8 tokens ran the exp and the atomics 8 times whenever one lane had a token at that step. */
constexpr int kHistChunks = 32; /* chunks a block's histogram takes between flushes */
static_assert(0xffffull * kChunk * kHistChunks < (1ull << 32), "a digit word's sum between flushes");
static_assert(kCoopIn == kBins && kCoopIn == kThreads, "thread i holds bin i; the near digits' rows");
struct CoopHist {
  unsigned hc[kCoopIn];
  unsigned hd[kNearDigs][kBins];
};
/* The histogram and each warp's run of (y, bin), in the block's scratch: k_coop's phase 2 and the flat
 * rows' bins pass use nothing else of it. */
struct CoopHistRoom {
  CoopHist h;
  uint2 run[kWarps][kPer * 32];
};
static_assert(sizeof(CoopHistRoom) <= kScratch, "the histogram and the warps' runs in the block's scratch");
__device__ __forceinline__ CoopHistRoom &coop_hist_room() { return *static_cast<CoopHistRoom *>(block_scratch()); }
/* Zeroes the block's histogram (thread i: bin i) and waits for it. */
__device__ __forceinline__ void coop_hist_zero(CoopHist &H) {
  const int i = threadIdx.x;
  H.hc[i] = 0u;
#pragma unroll
  for (int d = 0; d < kNearDigs; ++d) H.hd[d][i] = 0u;
  __syncthreads();
}
/* The thread's tokens below d2 = 32 into the block's histogram. Warp-uniform. Returns their bins. */
__device__ __forceinline__ CoopBins coop_hist_add(CoopHistRoom &H, float ymax, const float y[kPer]) {
  const CoopBins k = coop_bins_of(ymax, y);
  const unsigned m = ~k.past & 0xffu; /* bit q: token q lies below d2 = 32 */
  const unsigned n = (unsigned)__popc(m);
  const unsigned inc = warp_incl_scan_u32(n);
  const unsigned tot = __shfl_sync(kFull, inc, 31);
  uint2 *const q = H.run[warp_id()];
  unsigned pos = inc - n;
#pragma unroll
  for (int j = 0; j < kPer; ++j)
    push_shared_if((m >> j) & 1u, q, &pos, make_uint2(__float_as_uint(y[j]), (unsigned)(k.in >> (8 * j)) & 0xffu));
  __syncwarp();
#pragma unroll 1
  for (unsigned i = (unsigned)lane_id(); i < tot; i += 32u) {
    const uint2 e = q[i];
    atomicAdd(&H.h.hc[e.y], 1u);
    near_digits_add(H.h.hd, e.y, lmf_lg_exp_nonpos(LMF_FSUB(__uint_as_float(e.x), ymax)));
  }
  __syncwarp(); /* the run is read before the warp's next call writes it */
  return k;
}
/* The block's histogram added to the row's. Thread i reads only bin i, so coop_hist_zero may follow
 * without a barrier. */
__device__ __forceinline__ void coop_hist_flush(const CoopHist &H, CoopRow &CR) {
  const int i = threadIdx.x;
  __syncthreads(); /* every warp's adds */
  const unsigned c = H.hc[i];
  if (c) {
    atomicAdd(&CR.cnt[i], c);
    atomic_add_u128(&CR.mass[i], near_digits_sum(H.hd, i));
  }
}
/* Phase 2 of one chunk: the block's tokens into the row's histogram. Returns the tokens' bins. */
__device__ CoopBins coop_hist(CoopRow &CR, float ymax, const float y[kPer]) {
  CoopHistRoom &H = coop_hist_room();
  coop_hist_zero(H.h);
  const CoopBins k = coop_hist_add(H, ymax, y);
  coop_hist_flush(H.h, CR);
  return k;
}

/* Phase 3: the target, then the crossing bin, the mass above it and its count. The crossing bin is the
 * first where the bins' cumulative mass from the top reaches top_p times the combine's total (the
 * target of every top-p row these steps take: Row::topp_total). Where the bins below d2 = 32 do not
 * reach it (top_p within about 1% of 1, or a row without that target), the pick is the bin past 32
 * with no count: not listed, so Y is written and the row's cut comes from the general search
 * (block_search), which masses every token. Block-uniform results. */
struct CoopPick {
  U128 tgt, flo;
  int bin;
  unsigned cnt;
};
__device__ CoopPick coop_pick(const KP &p, const Row &R, const CoopRow &CR, Red &red) {
  __shared__ CoopPick s_pick;
  const int t = threadIdx.x;
  const U128 m = u128(__ldcg(&CR.mass[t].lo), __ldcg(&CR.mass[t].hi));
  const unsigned n = __ldcg(&CR.cnt[t]);
  const U128 incl = block_incl_scan_u128(m, red);
  const U128 tgt = topp_target_of_total(p.job, R.total);
  if (is_crossing_bin(incl, m, tgt)) { /* one thread */
    const bool reach = R.topp_total && ge(incl, tgt); /* else the general search's */
    s_pick.tgt = tgt;
    s_pick.bin = reach ? t : kCoopIn;
    s_pick.flo = reach ? sub(incl, m) : u128(0ull, 0ull);
    s_pick.cnt = reach ? n : ~0u;
  }
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
  const uint64_t cut = list_cut(S, ~0ull, false, true, ymax, sub(pk.tgt, pk.flo), red); /* a bin below 32 */
  __syncthreads();
  return cut;
}

/* Whether a token lies in phase 2's bin b (a token of no bin, -inf or of zero mass, in none). */
__device__ __forceinline__ bool coop_in_bin(float y, float ymax, int b) {
  if (lmf_lg_is_ninf(y) || !(lmf_lg_exp_neg(LMF_FSUB(y, ymax)) > 0.0f)) return false;
  return coop_bin(y, ymax) == b;
}

/* Phase 3: the row's list G takes the thread's tokens marked in `in`, one atomic per warp (a warp scan
 * of the counts gives each lane its place). In two halves, so that the atomic's round trip overlaps
 * the work put between them (the block's survivors): coop_claim issues it, lane 31 holding the warp's
 * base while it is on its way; coop_gather writes the entries. Warp-uniform calls. */
struct CoopClaim {
  unsigned in, before, base; /* the tokens; the lane's place after the warp's base; the base (lane 31) */
};
__device__ __forceinline__ CoopClaim coop_claim(unsigned *n, unsigned in) {
  const unsigned c = (unsigned)__popc(in);
  const unsigned incl = warp_incl_scan_u32(c);
  CoopClaim k{in, incl - c, 0u};
  if (lane_id() == 31 && incl) k.base = atomicAdd(n, incl);
  return k;
}
__device__ void coop_gather(uint2 *G, const CoopClaim &k, const float y[kPer], int64_t v0) {
  unsigned base = __shfl_sync(kFull, k.base, 31) + k.before;
  for (unsigned in = k.in; in; in &= in - 1u) {
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

/* Phase 1's first act: the lines of the thread's tokens in every dense model the row may combine
 * without a row index, asked for (prefetch8) from the kernel's parameters alone. The loads come after
 * init_row (a round trip for the row's seed) and comb_plan (two block barriers with init's); the lines are on
 * their way meanwhile. A hint: a model whose per-row coefficient is 0 in this row costs a line read. */
__device__ __forceinline__ void coop_prefetch_early(const KP &p, int64_t row, int64_t v0) {
  const lmf_lg_job &j = p.job;
  for (int k = 0; k < j.num_models; ++k) {
    const lmf_lg_model &m = j.models[k];
    if (!(m.roles & LMF_LG_ROLE_COMBINE) || m.sparse_index || m.row_index) continue; /* COMBINE: c != 0 */
    MV mv;
    mv.esz = m.dtype == LMF_DTYPE_F32 ? 4 : 2;
    mv.base = static_cast<const char *>(m.logits) + row * m.row_stride * mv.esz;
    mv.lim = m.vocab < j.vocab_out ? (int64_t)m.vocab : (int64_t)j.vocab_out;
    prefetch8(mv, v0, true);
  }
}

/* A thread's place: its row, its block's chunk, its first token, the row's max. */
struct CoopTok {
  int64_t row, c, v0;
  float ymax;
};

/* A thread's share of the survivors' sums, kept across chunks: their mass (fin), the best packed
 * Gumbel-max (key, id) (samp), that token's y and chunk. */
struct SurvAcc {
  U128 acc;
  unsigned long long bp;
  float by;
  int64_t bc;
};
__device__ __forceinline__ SurvAcc surv_acc_none() { return SurvAcc{u128(0ull, 0ull), 0ull, 0.0f, 0}; }

/* Adds this block's tokens of one chunk (me) that survive S to the threads' sums a (and, for
 * maxbin >= 0, lie in a bin above maxbin by their phase-2 bins kb: the top-p cut's certain
 * survivors). CUT false: S has no cut on (its top-p cut not yet known, and no top-k: k_coop's steps
 * and list mode's flat rows', KP::lbins, have none), so only finiteness and min-p are tested
 * (survives_uncut: the flat rows' pick issues 988 instructions a chunk and warp instead of 1,012).
 * Warp-uniform; the block's scratch must be free (each warp uses its 256 entries).
 *
 * The survivors are first packed, warp by warp, into the block's scratch, and each lane then takes
 * every 32nd of its warp's: where a few tokens of each lane survive (a flat row's top-p set is about
 * 12% of its tokens), a token-by-token loop ran the Gumbel noise (Philox, two logs: about 150
 * instructions) and the mass for all 8 token places of every lane whenever one lane had a survivor
 * there, eight times the work. */
template <bool CUT>
__device__ void coop_survivors_add(SurvAcc &a, const KP &p, const Row &R, const Surv &S, int maxbin,
                                   const CoopBins &kb, const float y[kPer], const CoopTok &me, bool fin,
                                   bool samp) {
  const lmf_lg_job &j = p.job;
  const bool minp = j.min_p > 0.0f;
  const uint64_t seed = R.seed, goff = R.goff;
  uint2 *const wb = static_cast<uint2 *>(block_scratch()) + warp_id() * kThreads; /* this warp's run */
  static_assert(kScratch >= (size_t)kThreads * sizeof(uint2), "a warp's survivors in the scratch");
  unsigned m = 0u; /* bit q: token v0 + q survives */
#pragma unroll
  for (int q = 0; q < kPer; ++q) {
    const int64_t v = me.v0 + q;
    const bool ok = (maxbin < 0 || coop_bins_above(kb, q, maxbin)) && v < j.vocab_out &&
                    (CUT ? survives(S, y[q], v, minp, j.log_min_p)
                         : survives_uncut(y[q], S.ymax, minp, j.log_min_p));
    m |= ok ? 1u << q : 0u;
  }
  const unsigned c = (unsigned)__popc(m);
  const unsigned incl = warp_incl_scan_u32(c);
  const unsigned total = __shfl_sync(kFull, incl, 31);
  unsigned at = incl - c;
  for (unsigned r = m; r; r &= r - 1u) {
    const int q = __ffs((int)r) - 1;
    wb[at++] = make_uint2(__float_as_uint(sel8(y, q)), (uint32_t)(me.v0 + q));
  }
  __syncwarp();
  for (unsigned i = (unsigned)lane_id(); i < total; i += 32u) {
    const uint2 e = wb[i];
    const float yq = __uint_as_float(e.x);
    if (fin) a.acc = add(a.acc, fx_of(lmf_lg_exp_neg(LMF_FSUB(yq, me.ymax))));
    if (samp) {
      const unsigned long long pk = pack_best(lmf_lg_gumbel_key(yq, lmf_lg_gumbel(seed, goff, e.y)), e.y);
      if (pk > a.bp) {
        a.bp = pk;
        a.by = yq;
        a.bc = me.c;
      }
    }
  }
  __syncwarp(); /* the run is read before the warp's next call writes it */
}

/* The block's survivors' sums (every thread's a) added to the row's, order-free: the mass to Rg.acc,
 * the best (key, id) to Rg.best, with its y in its chunk's partial. Block-uniform. */
__device__ void coop_survivors_flush(const KP &p, Row &Rg, const SurvAcc &a, int64_t row, bool fin, bool samp,
                                     Red &red) {
  if (fin) {
    const U128 acc = block_sum_u128<true>(a.acc, red);
    if (threadIdx.x == 0 && !is_zero(acc)) atomic_add_u128(&Rg.acc, acc);
  }
  if (samp) {
    const unsigned long long best = block_max_u64(a.bp, red);
    if (best && a.bp == best) { /* one thread: (key, id) is unique */
      p.cpart[row * p.nchunks + a.bc].ybest = a.by;
      atomicMax(&Rg.best, best);
    }
  }
}

/* One chunk's survivors (coop_survivors_add) added to the row's sums at once (k_coop: a chunk a
 * block). Block-uniform. */
template <bool CUT>
__device__ void coop_survivors(const KP &p, const Row &R, Row &Rg, const Surv &S, int maxbin,
                               const CoopBins &kb, const float y[kPer], const CoopTok &me, bool fin,
                               bool samp, Red &red) {
  SurvAcc a = surv_acc_none();
  coop_survivors_add<CUT>(a, p, R, S, maxbin, kb, y, me, fin, samp);
  coop_survivors_flush(p, Rg, a, me.row, fin, samp, red);
}

/* The row's LSE after its cuts, from the survivors' summed mass. */
__device__ __forceinline__ float coop_lse_of(float ymax, U128 acc) {
  return (float)((double)ymax + log(fx_to_double(acc)));
}
/* The same from the row's sum (plus `more`). */
__device__ __forceinline__ float coop_lse(const Row &Rg, float ymax, U128 more) {
  return coop_lse_of(ymax, add(u128(__ldcg(&Rg.acc.lo), __ldcg(&Rg.acc.hi)), more));
}

/* What b_outputs reads of a row whose step k_coop did: the LSE, the packed best (0: greedy, or no
 * sample) and the token's y (Y is not written). One thread. */
__device__ __forceinline__ void coop_set_token(Row &R, float lse, unsigned long long best, float ytok) {
  R.lse = lse;
  R.best = best;
  R.ymiss = 1;
  R.ytok = ytok;
}

/* The ticket path's end, in the row's last block (every other block's sums, list entries and Y are
 * visible): the top-p cut in the crossing bin, from the row's list (or, past kListCap tokens, by the
 * general search over Y, which every block wrote), that bin's survivors added to the row's sums, then
 * the outputs, from the block's copy of the row's state R (the row's global state is not written
 * back: this block is the step's last reader of the row). Block-uniform.
 *
 * The row's sums and every chunk's best y are final here (each block added its own before its
 * ticket), so they are read first, with the list: their round trip overlaps the list's, where thread
 * 0 once read them after the cut, the chunk's y only once it knew the chunk, and the outputs read the
 * row's state back from global memory: three round trips in a chain on the step's serial tail. */
__device__ void coop_last(const KP &p, Row &R, Row &Rg, const uint2 *G, const CoopPick &pk, Surv S,
                          bool live, bool search, bool listed, bool fin, bool samp, const CoopTok &me,
                          Red &red) {
  const lmf_lg_job &j = p.job;
  const int t = threadIdx.x;
  const int64_t nch = p.nchunks;
  __shared__ float s_ly;
  __shared__ float s_yb[kThreads]; /* chunk c's best y, for c < kThreads */
  if (live) {
    float yb = 0.0f;
    if (samp && t < nch) yb = __ldcg(&p.cpart[me.row * nch + t].ybest);
    unsigned long long others = 0ull;
    U128 racc = u128(0ull, 0ull);
    if (t == 0) {
      if (samp) others = __ldcg(&Rg.best);
      if (fin) racc = u128(__ldcg(&Rg.acc.lo), __ldcg(&Rg.acc.hi));
    }
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
    }
    if (samp && t < nch) s_yb[t] = yb;
    __syncthreads();
    if (t == 0) {
      const float lse = fin ? coop_lse_of(me.ymax, add(racc, acc)) : R.lse;
      unsigned long long best = 0ull;
      float ytok = me.ymax;
      if (samp) {
        best = lbest > others ? lbest : others;
        if (best && best == lbest) {
          ytok = s_ly;
        } else if (best) {
          const int64_t c = unpack_id(best) / kChunk;
          ytok = c < kThreads ? s_yb[c] : __ldcg(&p.cpart[me.row * nch + c].ybest);
        }
      }
      coop_set_token(R, lse, best, ytok);
    }
  }
  if (t == 0) b_outputs_of(p, me.row, R);
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
  coop_prefetch_early(p, row, v0);
  if (t == 0) init_row_in(p, row, R); /* inlined: see init_row_in */
  if (lead) {
    for (int i = t; i < kBins; i += kThreads) p.hist[row * kBins + i] = u128(0ull, 0ull);
    for (int i = t; i < kCoopIn; i += kThreads) {
      CR.cnt[i] = 0u;
      CR.mass[i] = u128(0ull, 0ull);
    }
    if (t == 0) CR.ngather = CR.done = 0u;
  }
  if (blockIdx.x == 0 && t == 0) *p.coop_fallback = 0u;
  __syncthreads();
  coop_mark(pr, prof); /* the row's state */
  if (lead) copy_row(Rg, R); /* the global state: the block's copy, not a second init_row by one thread */
  bool live = R.status == LMF_ROW_OK;
  float y[kPer];
  if (live) {
    __shared__ CombPlan cp;
    comb_plan(p, R, row, cp);
    /* every model's line on its way first, where fold_dense does not load them all at once */
    if (v0 < V && !comb_ahead(cp)) prefetch_models(cp, v0, true);
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
    coop_mark(pr, prof); /* y */
    chunk_partial(p, row, c, y, id, bad, R.want_sum != 0, false, false, false, red);
  } else {
    coop_mark(pr, prof); /* y: none (the marks keep their places) */
  }
  coop_mark(pr, prof); /* phase 1 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 2. */
  if (live) {
    if (warp_id() == 0) {
      const RowFlags f = row_flags(R);
      const CMerge m = cmerge_calc(p, row, f, false);
      if (lane_id() == 0) {
        cmerge_apply(j, R, f, m, false);
        if (lead) cmerge_apply(j, Rg, f, m, false);
      }
    }
    __syncthreads();
    live = R.status == LMF_ROW_OK;
  }
  coop_mark(pr, prof); /* the merge */
  const bool search = live && R.search == SK_TOPP;
  const float ymax = live ? R.ymax : 0.0f;
  const CoopBins kb = search ? coop_hist(CR, ymax, y) : coop_bins_none();
  coop_mark(pr, prof); /* phase 2 */
  COOP_SYNC();
  coop_mark(pr, prof);

  /* Phase 3. */
  CoopPick pk;
  pk.cnt = 0u;
  pk.bin = -1;
  bool listed = false;
  CoopClaim claim{0u, 0u, 0u}; /* listed: the thread's tokens of the crossing bin, their places claimed */
  if (!search) coop_mark(pr, prof); /* the pick: none */
  if (search) {
    pk = coop_pick(p, R, CR, red);
    coop_mark(pr, prof); /* the pick */
    listed = pk.cnt <= (unsigned)kListCap;
    if (listed) {
      unsigned in = 0u; /* bit q: token v0 + q lies in the crossing bin (a few instructions a token) */
#pragma unroll
      for (int q = 0; q < kPer; ++q) in |= coop_bins_in(kb, q, pk.bin) ? 1u << q : 0u;
      claim = coop_claim(&CR.ngather, in);
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
    if (fin || samp) coop_survivors<false>(p, R, Rg, S, search ? pk.bin : -1, kb, y, me, fin, samp, red);
    if (listed) coop_gather(G, claim, y, v0); /* the claims' round trip overlapped the survivors */
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
  if (listed) coop_gather(G, claim, y, v0);
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
  if (fin || samp) coop_survivors<true>(p, R, Rg, S, -1, kb, y, me, fin, samp, red);
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
      coop_set_token(Rg, lse, best, ytok); /* not R: the block's other threads read R.lse above */
    }
    b_outputs(p, row);
  }
  coop_mark(pr, prof); /* phase 6 */
  coop_print(pr, prof && lead);
}
