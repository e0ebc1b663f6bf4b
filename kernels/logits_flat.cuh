/* List mode's flat rows (KP::lbins): the rows whose top-p cut the combine pass's lists could not
 * decide, cut by k_coop's machinery spread over the row's chunks, in two passes that run in the list
 * cuts' own launch (k_listcut_flat).
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace after
 * logits_coop.cuh, whose phases 2 and 3 these are.
 *
 * Why. A row whose crossing window holds more than kListCap tokens (a flat row: the bench's K = 1 rows
 * keep about 20,000 tokens in their top-p set) went to one block's search over its Y: the row's y
 * computed again, then two or more walks over Y, by one block, about 0.9 ms at V = 128,256 whatever
 * B was (docs/benchmarks.md, H200, 2026-11-28). Here every block of the row takes its share:
 *   bins         each block computes y of its chunks again from the logits (combine_y: the combine
 *                pass's arithmetic, the same bits) and adds their masses and counts to the row's 256
 *                bins of d2 = 2 (ymax - y) below 32 (coop_hist);
 *   pick         each block reads the bins (coop_pick: the target and the crossing bin, the same bits
 *                in every block), computes y again, appends the crossing bin's tokens to the row's list
 *                (in the row's class lists, unused by then), adds its certain survivors (the bins above
 *                the crossing one, min-p) to the row's LSE mass and Gumbel-max, and takes a ticket; the
 *                row's last block cuts the crossing bin (list_cut) and writes the outputs (coop_last).
 *                A crossing bin of more than kListCap tokens (or past d2 = 32): every block writes its
 *                chunks' Y and the last block runs the general search over it.
 * They take the place of the window pass (k_combine<CM_RECWIN> and k_window) on that path; Y is never
 * written but for that fallback. The row's bins were zeroed by the list cut that found its lists
 * short (b_listcut), which left the row's outputs to the pick (row_listcut). */

/* One pass over a flat row's chunks (every block of the row calls it; others return at once). PICK
 * false: the bins; true: the pick, the crossing bin's list, the certain survivors, the ticket and, in
 * the row's last block, the cut and the outputs. */
template <bool PICK>
__device__ void b_flat(const KP &p, const Part &w) {
  __shared__ Red red;
  const int64_t row = w.row;
  Row &Rg = p.rows[row];
  if (!flat_pending(p, Rg)) return;
  const int64_t V = p.job.vocab_out, nch = p.nchunks;
  const int t = threadIdx.x;
  CoopRow &CR = p.coop[row];
  uint2 *const G = p.cand + row * (int64_t)kClasses * p.lcap; /* kClasses lcap >= min(V, kListCap) */
  CombRow cr = comb_row_of(p, Rg, row);
  __shared__ CombPlan cp;
  comb_plan(p, Rg, row, cp);
  comb_row_plan(cr, cp);
  const bool ahead = comb_ahead(cp);
  const float ymax = Rg.ymax;
  CoopPick pk;
  pk.cnt = 0u;
  pk.bin = -1;
  bool listed = false, fin = false, samp = false;
  Surv S = surv_of(Rg); /* the certain survivors: no cut yet (maxbin), min-p */
  S.topp_on = 0;
  if constexpr (PICK) {
    pk = coop_pick(p, Rg, CR, red);
    listed = pk.cnt <= (unsigned)kListCap;
    fin = Rg.need_lse != 0;
    samp = !Rg.greedy;
  }
  /* The bins pass: the block's histogram over up to kHistChunks chunks between flushes, in the list
   * cut's room (block_scratch: the launch's static shared memory holds the list cut's and the pick's,
   * not a third share); the pick's instance has none. */
  CoopHistRoom &H = coop_hist_room();
  int held = 0;
  if constexpr (!PICK) coop_hist_zero(H.h);
  SurvAcc sa = surv_acc_none(); /* the pick: the thread's certain survivors over its chunks */
  for (int64_t c = w.first; c < nch; c += w.step) {
    const int64_t v0 = c * kChunk + (int64_t)t * kPer; /* this thread's tokens v0 .. v0 + 7 */
    float y[kPer];
    int bad = 0; /* the combine pass set the row's status */
#pragma unroll
    for (int q = 0; q < kPer; ++q) y[q] = ninf();
    if (v0 < V) {
      prefetch_chunk(cp, ahead, v0, v0 + w.step * kChunk);
      combine_y<false>(p, Rg, cr, cp, v0, y, &bad);
    }
    if constexpr (!PICK) {
      (void)coop_hist_add(H, ymax, y);
      if (++held == kHistChunks) { /* the digit words' room */
        coop_hist_flush(H.h, CR);
        coop_hist_zero(H.h);
        held = 0;
      }
      continue;
    }
    const CoopBins kb = coop_bins_of(ymax, y);
    CoopClaim claim{0u, 0u, 0u};
    if (listed) {
      unsigned in = 0u;
#pragma unroll
      for (int q = 0; q < kPer; ++q) in |= coop_bins_in(kb, q, pk.bin) ? 1u << q : 0u;
      claim = coop_claim(&CR.ngather, in);
    } else if (v0 < V) {
      store8_f32(p.Y + row * p.ystride + v0, y); /* the fallback's search reads Y (padded to 8) */
    }
    const CoopTok me{row, c, v0, ymax};
    if (fin || samp) coop_survivors_add<false>(sa, p, Rg, S, pk.bin, kb, y, me, fin, samp);
    if (listed) coop_gather(G, claim, y, v0); /* the claim's round trip overlapped the survivors */
  }
  if constexpr (!PICK) {
    if (held) coop_hist_flush(H.h, CR);
    return;
  }
  if (fin || samp) coop_survivors_flush(p, Rg, sa, row, fin, samp, red); /* the block's, once */
  /* The ticket: the row's last block sees every block's sums, list entries and Y (each fenced first). */
  __shared__ bool s_last;
  __threadfence();
  __syncthreads();
  if (t == 0) s_last = atomicAdd(&CR.done, 1u) == (unsigned)p.gx - 1u;
  __syncthreads();
  if (!s_last) return;
  __threadfence();
  const CoopTok me{row, 0, 0, ymax};
  coop_last(p, Rg, Rg, G, pk, S, true, true, listed, fin, samp, me, red);
}

/* Thread 0 waits until the counter reaches n (raised by blocks that fenced their writes first), then
 * the block reads what they wrote. Only on work a block started before this one holds (k_listcut_flat),
 * which runs to its end whatever this block does. */
__device__ void block_wait_for(unsigned *counter, unsigned n) {
  if (threadIdx.x == 0) {
    while (atomicAdd(counter, 0u) < n) {
#if defined(__CUDA_ARCH__)
      __nanosleep(256);
#endif
    }
    __threadfence();
  }
  __syncthreads();
}

/* Raises the counter by one after every thread of the block has fenced its writes. */
__device__ void block_signal(unsigned *counter) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) atomicAdd(counter, 1u);
}

/* List mode's top-p step after the combine (KP::lbins) in one launch: every row's list cut (level 1,
 * with its outputs where the lists decide it), then the flat rows' bins blocks, then their pick
 * blocks, B (1 + 2 gx) blocks in all. Without flat rows (the bench's K = 3 rows) the bins and pick
 * blocks only look at their row and leave: on an H200 each of the three launches this replaces was
 * about 4.5 us of the B = 256 step, two of them empty. A block takes its work by the order in which
 * the blocks start (KP::lseq), not by its index: so the work it waits for (its row's list cut; for a
 * pick, the row's gx bins blocks) was taken by a block that started before it and runs to its end,
 * whether or not the launch's blocks fit the device at once. */
__global__ void __launch_bounds__(kThreads, 2) k_listcut_flat(const __grid_constant__ KP p) {
  pdl_enter();
  __shared__ unsigned s_job;
  if (threadIdx.x == 0) s_job = atomicAdd(p.lseq, 1u);
  __syncthreads();
  const int64_t job = s_job, B = p.nrows, nb = B * p.gx;
  if (job < B) {
    row_listcut(p, job);
    block_signal(&p.rows[job].lcut);
    return;
  }
  const bool pick = job >= B + nb;
  const int64_t k = job - B - (pick ? nb : 0);
  const Part w{k / p.gx, k % p.gx, p.gx};
  Row &R = p.rows[w.row];
  block_wait_for(&R.lcut, 1u);
  if (!flat_pending(p, R)) return; /* block-uniform: decided (or not in this cut) */
  CoopRow &CR = p.coop[w.row];
  if (!pick) {
    b_flat<false>(p, w);
    block_signal(&CR.nbins);
    return;
  }
  block_wait_for(&CR.nbins, (unsigned)p.gx);
  b_flat<true>(p, w);
}
