/* After the cut: the survivors' LSE, the Gumbel-max sample, the outputs and log-prob rows, and
 * verify_draft's walk.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

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
  const float *Yr = p.Y + w.row * p.ystride;
  U128 sum = u128(0ull, 0ull);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    load_strided(Yr + c * kChunk, c, V, yv);
#pragma unroll 1 /* the body's code fetched once, not kPer times (sel8) */
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      const float y = sel8(yv, q);
      if (survives(S, y, v, minp, lmp)) sum = add(sum, fx_of(lmf_lg_exp_neg(LMF_FSUB(y, S.ymax))));
    }
  }
  sum = block_sum_u128<true>(sum, red);
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
  const float *Yr = p.Y + w.row * p.ystride;
  if (threadIdx.x == 0) /* yarg -1: list mode's lean partials (b_combine) kept no argmax */
    s_bound = yarg < 0 ? ninf() : lmf_lg_gumbel_key(Yr[yarg], lmf_lg_gumbel(seed, goff, (uint32_t)yarg));
  __syncthreads();
  const float bound0 = s_bound;
  float bk = ninf();
  int64_t bid = -1;
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    load_strided(Yr + c * kChunk, c, V, yv);
#pragma unroll 1 /* the Gumbel noise's code fetched once, not kPer times (sel8) */
    for (int q = 0; q < kPer; ++q) {
      const int64_t v = c * kChunk + (int64_t)q * kThreads + threadIdx.x;
      if (v >= V) continue;
      const float y = sel8(yv, q);
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
  const float *Yr = p.Y + w.row * p.ystride;
  float *o = p.job.logprobs + row * p.job.logprobs_row_stride;
  const float nan = __uint_as_float(kCanonNan);
  for (int64_t c = w.first; c < p.nchunks; c += w.step) {
    float yv[kPer];
    if (ok) load_strided(Yr + c * kChunk, c, V, yv);
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

/* One thread per row: tokens, statuses, LSE, token log-prob, the GeDi state update, from the row's
 * state R (the global one, or k_coop's block copy). R's fields are read before the first output is
 * written: the compiler cannot tell the outputs from R, so it issues no read of R before a write that
 * precedes it, and each write then waits for the read before: a round trip per field, in a chain. */
__device__ void b_outputs_of(const KP &p, int64_t row, const Row &R) {
  const lmf_lg_job &j = p.job;
  const int32_t status = R.status;
  const bool ok = status == LMF_ROW_OK;
  const float lse = R.lse, ytok = R.ytok;
  const int ymiss = R.ymiss;
  const float nan = __uint_as_float(kCanonNan);
  const int32_t token = ok ? (R.greedy ? R.yarg : sampled_token(R)) : -1;
  j.tokens[row] = token;
  if (j.status) j.status[row] = ok ? (int32_t)LMF_ROW_OK : status;
  if (j.lse) j.lse[row] = ok ? lse : nan;
  if (j.token_logprob) {
    const float yt = ok ? (ymiss ? ytok : p.Y[row * p.ystride + token]) : 0.0f;
    j.token_logprob[row] = ok ? LMF_FSUB(yt, lse) : nan;
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
__device__ void b_outputs(const KP &p, int64_t row) { b_outputs_of(p, row, p.rows[row]); }

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
  if (threadIdx.x == 0) b_outputs(p, row);
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
