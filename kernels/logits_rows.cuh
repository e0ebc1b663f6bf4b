/* Reading the models' rows, the per-row state (init, sparse rows) and the statistics of the mask,
 * GeDi and draft models.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

/* ---- Reading the models ------------------------------------------------------------------------- */

/* One model's row as seen by one output row: z(v) for v < lim, -inf beyond. */
struct MV {
  const void *base; /* dense: element 0 of the input row; sparse: the dense fp32 row in the workspace */
  int64_t lim;
  int32_t dtype;
  int32_t sparse;
  int32_t vec; /* 16-byte aligned base: 8-token groups load as 16-byte vectors */
  int32_t esz; /* the element's size in bytes: 4 (fp32), 2 (16-bit) */
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
    v.esz = 4;
    v.base = p.sp[k] + row * p.ystride;
    v.vec = 1;
  } else {
    v.sparse = 0;
    v.dtype = m.dtype;
    v.esz = m.dtype == LMF_DTYPE_F32 ? 4 : 2;
    v.base = static_cast<const char *>(m.logits) + R.in_row[k] * m.row_stride * v.esz;
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
  v.esz = 4;
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

/* The 16 (16-bit dtypes: a) or 32 bytes (fp32: a, b) of the 8 elements at base + v, a 16-byte aligned
 * group: load8_vec's loads, which fold_dense issues for every model before it converts any. */
struct Raw8 {
  uint4 a, b;
};

__device__ __forceinline__ Raw8 raw8_load(const void *base, int32_t dtype, int64_t v) {
  Raw8 r;
  if (dtype == LMF_DTYPE_F32) {
    const uint4 *q = reinterpret_cast<const uint4 *>(static_cast<const float *>(base) + v);
    r.a = q[0], r.b = q[1];
  } else {
    r.a = *reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(base) + v);
    r.b = make_uint4(0u, 0u, 0u, 0u);
  }
  return r;
}

/* raw8_load's bytes as 8 floats. */
__device__ __forceinline__ void raw8_floats(const Raw8 &r, int32_t dtype, float x[kPer]) {
  if (dtype == LMF_DTYPE_F32) {
    x[0] = __uint_as_float(r.a.x), x[1] = __uint_as_float(r.a.y), x[2] = __uint_as_float(r.a.z);
    x[3] = __uint_as_float(r.a.w), x[4] = __uint_as_float(r.b.x), x[5] = __uint_as_float(r.b.y);
    x[6] = __uint_as_float(r.b.z), x[7] = __uint_as_float(r.b.w);
  } else {
    const uint32_t w[4] = {r.a.x, r.a.y, r.a.z, r.a.w};
    /* One branch per 8 tokens, not one per token (the compiler kept a per-token select's branches). */
    if (dtype == LMF_DTYPE_BF16) {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        x[2 * q] = lmf_bf16_to_f32((uint16_t)(w[q] & 0xffffu));
        x[2 * q + 1] = __uint_as_float(w[q] & 0xffff0000u); /* lmf_bf16_to_f32 of the high half */
      }
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        x[2 * q] = lmf_f16_to_f32((uint16_t)(w[q] & 0xffffu));
        x[2 * q + 1] = lmf_f16_to_f32((uint16_t)(w[q] >> 16));
      }
    }
  }
}

/* The 8 elements at base + v (of dtype; a 16-byte aligned group) as floats: vector loads. */
__device__ __forceinline__ void load8_vec(const void *base, int32_t dtype, int64_t v, float x[kPer]) {
  raw8_floats(raw8_load(base, dtype, v), dtype, x);
}

/* z(v .. v + 7) (v a multiple of 8), -inf at and beyond lim. */
__device__ __forceinline__ void load8(const MV &m, int64_t v, float x[kPer]) {
  if (m.vec && v + kPer <= m.lim) {
    load8_vec(m.base, m.dtype, v, x);
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
 * one. Where the combine pass loads the models one after another (not fold_dense's loads all at
 * once), with every model's line already on its way a chunk waits about one memory latency instead
 * of one per model. A hint: nothing is read. */
__device__ __forceinline__ void prefetch8(const MV &m, int64_t v, bool l1) {
  /* In 32 bits (a vocabulary is below 2^31; a v past 2^32 would wrap to a token of the row, and a hint
   * at any of its tokens is harmless): one wide product for the address, one compare. */
  const uint32_t v32 = (uint32_t)v;
  const char *a = static_cast<const char *>(m.base) + (uint64_t)v32 * (uint32_t)m.esz; /* used where v < lim */
  const uint32_t in = v32 < (uint32_t)m.lim;
#if defined(__CUDA_ARCH__)
  /* Predicated rather than branched around: the branch and its convergence barrier cost more
   * instructions than the hint itself. */
  if (l1) asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %1, 0;\n\t@p prefetch.global.L1 [%0];\n\t}" ::"l"(a), "r"(in));
  else asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %1, 0;\n\t@p prefetch.global.L2 [%0];\n\t}" ::"l"(a), "r"(in));
#else
  (void)a, (void)in, (void)l1; /* the CPU emulator (tests/emu) */
#endif
}

/* p, which the compiler can no longer see through: it keeps the pointer in a register pair instead of
 * rebuilding it from the uniform values it came from at each use (5 instructions a use in
 * list_append8's loop). */
template <class T>
__device__ __forceinline__ T *opaque_ptr(T *p) {
#if defined(__CUDA_ARCH__)
  asm("mov.b64 %0, %0;" : "+l"(p));
#endif
  return p;
}

/* q[*pos] = v and ++*pos where in (q in shared memory): predicated, not a branch around the store, whose
 * convergence barrier and rebuilt shared-memory address cost about 12 instructions a token in
 * list_append_sup's packing (2 with the predicate). */
__device__ __forceinline__ void push_shared_if(bool in, uint2 *q, unsigned *pos, uint2 v) {
#if defined(__CUDA_ARCH__)
  const uint32_t a = (uint32_t)__cvta_generic_to_shared(q) + 8u * *pos;
  asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %0, 0;\n\t@p st.shared.v2.u32 [%1], {%2, %3};\n\t}" ::"r"((uint32_t)in),
               "r"(a), "r"(v.x), "r"(v.y)
               : "memory");
#else
  if (in) q[*pos] = v; /* the CPU emulator (tests/emu) */
#endif
  *pos += in ? 1u : 0u;
}

/* *a = v where in: a predicated store, not a branch around one (the branch and its convergence barrier
 * cost more than the store; list_append8's per-token step). */
__device__ __forceinline__ void store_if(bool in, uint2 *a, uint2 v) {
#if defined(__CUDA_ARCH__)
  asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %0, 0;\n\t@p st.global.v2.u32 [%1], {%2, %3};\n\t}" ::"r"((uint32_t)in),
               "l"(a), "r"(v.x), "r"(v.y)
               : "memory");
#else
  if (in) *a = v; /* the CPU emulator (tests/emu) */
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

/* survives() where S has no cut on: finite and min-p only (coop_survivors_add<false>). */
__device__ __forceinline__ bool survives_uncut(float y, float ymax, bool minp, float log_min_p) {
  return !lmf_lg_is_ninf(y) && (!minp || LMF_FSUB(y, ymax) >= log_min_p);
}

/* After the cuts: the LSE pass only where an output needs the LSE (the sample needs only the cuts). */
__device__ __forceinline__ void lse_or_sample(Row &R) {
  if (R.need_lse) R.do_final = 1;
  else R.do_sample = !R.greedy;
}

/* The row's flags that a merge and after_temp read: set by init, unchanged until the merge, so read
 * at once before it. Read where they were used, after the merge's stores to the row, each waited for
 * in turn: k_cmerge waited on L2 four times in a chain after the partials. */
struct RowFlags {
  int32_t status, greedy, need_dist, need_lse, want_sum, fuse_T;
};
__device__ __forceinline__ RowFlags row_flags(const Row &R) {
  RowFlags f;
  f.status = R.status;
  f.greedy = R.greedy;
  f.need_dist = R.need_dist;
  f.need_lse = R.need_lse;
  f.want_sum = R.want_sum;
  f.fuse_T = R.fuse_T;
  return f;
}

/* The CPU's after_temp: the step after the combine (or GeDi temperature) merge, which has just
 * written R's ymax, nfin and total (f: the row's flags). One thread. */
__device__ void after_temp(const lmf_lg_job &j, Row &R, const RowFlags &f) {
  if (!f.need_dist) return; /* greedy, no distribution outputs: the token is the argmax */
  if (j.top_k > 0 && R.nfin > (int64_t)j.top_k) {
    R.search = SK_TOPK;
  } else if (j.top_p < 1.0f) {
    R.search = SK_TOPP;
    R.topp_total = f.want_sum;
  } else if (!f.need_lse) {
    R.do_sample = 1; /* sampling needs no LSE (min-p reads only the max) */
  } else if (f.want_sum && j.min_p <= 0.0f) {
    R.lse = (float)((double)R.ymax + log(R.total)); /* every finite token survives */
    R.do_sample = !f.greedy;
  } else {
    R.do_final = 1;
  }
}

__device__ __forceinline__ int32_t sampled_token(const Row &R) {
  return R.best ? unpack_id(R.best) : R.yarg;
}

/* Where a chunk body runs: its row, its chunks (first, first + step, ...) and the row of Y it uses.
 * The separate kernels map block -> (row, first chunk) with Y row = row. */
struct Part {
  int64_t row, first, step;
};
__device__ __forceinline__ Part grid_part(const KP &p) {
  Part w;
  w.row = (int64_t)blockIdx.x / p.gx;
  w.first = (int64_t)blockIdx.x % p.gx;
  w.step = p.gx;
  return w;
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

/* The row's scalars and first status into R, its accumulators zeroed (one thread). Inlined where R's
 * memory space and p are known (k_coop: its parameters then come through the constant cache and its
 * loads can all be issued before R's shared-memory stores); init_row is the called copy. */
__device__ __forceinline__ void init_row_in(const KP &p, int64_t row, Row &R) {
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
  R.topp_total = 0;
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
  R.lcut = 0u;
  R.nfin = 0;
  R.nuc_cut = R.gf_cut = R.topk_cut = R.topp_cut = 0ull;
  R.total = 0.0;
  R.flo = R.target = R.acc = u128(0ull, 0ull);
  R.best = 0ull;
}
/* The separate kernels' copy: through a generic pointer to p, each field is a load from memory, but
 * the code is fetched once (docs/logits.md, "Code footprint"). */
__device__ LMF_NOINLINE void init_row(const KP &p, int64_t row, Row &R) { init_row_in(p, row, R); }

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
      float s8 = 0.0f; /* the thread's group (lmf_lg_group_add) */
      if (!lmf_lg_is_ninf(mx)) {
#pragma unroll
        for (int j = 0; j < kPer; ++j) s8 = lmf_lg_group_add(s8, lmf_lg_exp_neg(LMF_FSUB(x[j], mx)));
      }
      const double sum = block_sum_f64_lead((double)s8, red);
      bad = (int)block_reduce_ll<OP_MAX>(bad, red);
      bad_all |= bad;
      if (threadIdx.x == 0) {
        SPart &P = p.spart[row * p.nchunks + c];
        P.smax[s] = mx;
        P.ssum[s] = lmf_lg_is_ninf(mx) ? 0.0 : sum;
      }
    }
    if (threadIdx.x == 0) p.spart[row * p.nchunks + c].bad = bad_all;
  }
}

/* A warp-per-row merge of a row's n chunk partials: lane l takes chunks l, l + 32, l + 64, ... */

/* The lane holding the first chunk (in chunk order) with the largest max, as the CPU's serial merge
 * (m > M) finds it. M: the lane's largest max, first reached at its chunk c; a lane whose maxima are
 * all -inf passes -inf and its first chunk, a lane without chunks -inf and some c >= n (it never wins:
 * lane 0 has chunk 0). One warp max over (order key, -c): -0 counts as +0, and NaN never becomes a
 * lane's M. Every lane gets the same. */
__device__ __forceinline__ int warp_first_max_lane(float M, int64_t c) {
  const long long k = (long long)key_s(LMF_FADD(M, 0.0f)) * 4294967296ll + (long long)(0xffffffffu - (uint32_t)c);
  const long long best = warp_reduce_ll<OP_MAX>(k);
  return (int)((0xffffffffu - (uint32_t)(best & 0xffffffffll)) & 31u);
}

/* The sum over chunks c < n of term(c), added in chunk order as the CPU's serial loop adds them: lane
 * i computes the terms of chunks i, i + 32, ...; lane 0's, 1's, ... are then added one after another.
 * term(c) is 0 where the CPU adds nothing: the terms are >= 0, and s + 0 = s. Every lane gets the
 * same bits. */
template <class Term>
__device__ __forceinline__ double warp_sum_chunk_order(int64_t n, Term term) {
  double s = 0.0;
#pragma unroll 1
  for (int64_t base = 0; base < n; base += 32) {
    const int64_t c = base + lane_id();
    const double t = c < n ? term(c) : 0.0;
#pragma unroll 4
    for (int i = 0; i < 32; ++i) s += __shfl_sync(kFull, t, i);
  }
  return s;
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
  const int64_t n = p.nchunks;
  int bad = 0;
  for (int64_t c = lane_id(); c < n; c += 32) bad |= P[c].bad;
  bad = (int)warp_reduce_ll<OP_MAX>(bad);
  for (int s = 0; s < p.nstat; ++s) {
    float M = ninf();
    int64_t first = n + lane_id();
    for (int64_t c = lane_id(); c < n; c += 32) {
      if (first >= n) first = c;
      if (P[c].smax[s] > M) {
        M = P[c].smax[s];
        first = c;
      }
    }
    const float Mall = __shfl_sync(kFull, M, warp_first_max_lane(M, first));
    double Sall = 0.0;
    if (!lmf_lg_is_ninf(Mall))
      Sall = warp_sum_chunk_order(n, [&](int64_t c) {
        return lmf_lg_is_ninf(P[c].smax[s]) ? 0.0 : P[c].ssum[s] * exp((double)P[c].smax[s] - (double)Mall);
      });
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
