/* The CPU backend of MeZO: OpenMP over the plan's chunks; within a chunk, z for a block of elements is
 * generated into a small stack buffer by branch-free loops the compiler vectorises, then applied. All
 * arithmetic comes from kernels/common, so results equal the CUDA backend's bit for bit. */
#include <omp.h>
#include <string.h>

#include "lmfuse/mezo.h"
#include "../mezo_backend.h"
#include "philox_cpu.h"

/* Elements per inner block: z for 256 elements lives in L1. */
#define BLK 256
#define BUF (BLK + 8)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define LMF_VECTOR_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define LMF_VECTOR_CLONES
#endif

/* z for the elements with global indices i0 .. i0+n-1 (n <= BLK) into z[0 .. n). */
LMF_VECTOR_CLONES
static void gen_z(uint64_t seed, uint32_t uid, uint64_t i0, int n, int dist, float *z) {
  uint32_t w[4 * LMF_PHILOX_BATCH];
  if (dist == LMF_MEZO_RADEMACHER) {
    uint64_t g0 = i0 / LMF_RADEMACHER_GROUP;
    int ng = (int)((i0 + (uint64_t)n - 1) / LMF_RADEMACHER_GROUP - g0 + 1);
    lmf_cpu_philox_rows(seed, uid, LMF_DOMAIN_Z, g0, ng, w);
    /* Expand every bit of the groups in stream order (word j of group g is bits 32j.. of the
     * group's 128), then take the n that belong to this block. */
    float t[LMF_RADEMACHER_GROUP * 4];
    for (int g = 0; g < ng; ++g)
      for (int j = 0; j < 4; ++j) {
        uint32_t word = w[j * LMF_PHILOX_BATCH + g];
        float *o = t + LMF_RADEMACHER_GROUP * g + 32 * j;
        for (uint32_t b = 0; b < 32; ++b) o[b] = lmf_rademacher_bit(word, b);
      }
    memcpy(z, t + (i0 - g0 * LMF_RADEMACHER_GROUP), (size_t)n * sizeof(float));
  } else {
    uint64_t g0 = i0 / 4;
    int shift = (int)(i0 - 4 * g0);
    int ng = (shift + n + 3) / 4;
    float c0[LMF_PHILOX_BATCH], s0[LMF_PHILOX_BATCH], c1[LMF_PHILOX_BATCH], s1[LMF_PHILOX_BATCH];
    float t[4 * LMF_PHILOX_BATCH];
    lmf_cpu_philox_rows(seed, uid, LMF_DOMAIN_Z, g0, ng, w);
    const uint32_t *wx = w, *wy = w + LMF_PHILOX_BATCH, *wz = w + 2 * LMF_PHILOX_BATCH,
                   *ww = w + 3 * LMF_PHILOX_BATCH;
    for (int k = 0; k < ng; ++k) lmf_box_muller(wx[k], wy[k], &c0[k], &s0[k]);
    for (int k = 0; k < ng; ++k) lmf_box_muller(wz[k], ww[k], &c1[k], &s1[k]);
    for (int k = 0; k < ng; ++k) {
      t[4 * k] = c0[k];
      t[4 * k + 1] = s0[k];
      t[4 * k + 2] = c1[k];
      t[4 * k + 3] = s1[k];
    }
    memcpy(z, t + shift, (size_t)n * sizeof(float));
  }
}

/* Stochastic-rounding words for elements i0 .. i0+n-1: word (i%4) of group i/4 in the rounding
 * domain. */
static void gen_round_words(uint64_t seed, uint32_t uid, uint32_t nonce, uint64_t i0, int n, uint32_t *r) {
  uint32_t w[4 * LMF_PHILOX_BATCH];
  uint64_t g0 = i0 / 4;
  int shift = (int)(i0 - 4 * g0);
  lmf_cpu_philox_rows(seed, uid, LMF_DOMAIN_ROUND | nonce, g0, (shift + n + 3) / 4, w);
  for (int k = 0; k < n; ++k) {
    int e = shift + k;
    r[k] = w[(e & 3) * LMF_PHILOX_BATCH + (e >> 2)];
  }
}

/* Block loads and stores: one simple loop per dtype, so each vectorises. */
static void load_block(const void *data, int32_t dtype, int64_t j0, int n, float *x) {
  if (dtype == LMF_DTYPE_F32) {
    memcpy(x, (const float *)data + j0, (size_t)n * sizeof(float));
  } else if (dtype == LMF_DTYPE_BF16) {
    const uint16_t *h = (const uint16_t *)data + j0;
    for (int k = 0; k < n; ++k) x[k] = lmf_bf16_to_f32(h[k]);
  } else {
    const uint16_t *h = (const uint16_t *)data + j0;
    for (int k = 0; k < n; ++k) x[k] = lmf_f16_to_f32(h[k]);
  }
}

/* rnd: stochastic-rounding words, or NULL for round to nearest even. */
static void store_block(void *data, int32_t dtype, int64_t j0, int n, const float *x, const uint32_t *rnd) {
  if (dtype == LMF_DTYPE_F32) {
    memcpy((float *)data + j0, x, (size_t)n * sizeof(float));
  } else if (dtype == LMF_DTYPE_BF16) {
    uint16_t *h = (uint16_t *)data + j0;
    if (rnd)
      for (int k = 0; k < n; ++k) h[k] = lmf_f32_to_bf16_impl(x[k], 1, rnd[k]);
    else
      for (int k = 0; k < n; ++k) h[k] = lmf_f32_to_bf16_impl(x[k], 0, 0);
  } else {
    uint16_t *h = (uint16_t *)data + j0;
    if (rnd)
      for (int k = 0; k < n; ++k) h[k] = lmf_f32_to_f16_impl(x[k], 1, rnd[k]);
    else
      for (int k = 0; k < n; ++k) h[k] = lmf_f32_to_f16_impl(x[k], 0, 0);
  }
}

/* x += s z, x *= f, x -= s z: the steps of lmf_mezo_elem as whole-block loops, in the same order,
 * so each element sees exactly the operations (and roundings) of the shared scalar code. */
static void axpy_block(float *x, float s, const float *z, int n) {
  for (int k = 0; k < n; ++k) x[k] = LMF_FADD(x[k], LMF_FMUL(s, z[k]));
}
static void scale_block(float *x, float f, int n) {
  for (int k = 0; k < n; ++k) x[k] = LMF_FMUL(x[k], f);
}
static void sub_block(float *x, float s, const float *z, int n) {
  for (int k = 0; k < n; ++k) x[k] = LMF_FSUB(x[k], LMF_FMUL(s, z[k]));
}

/* lmf_mezo_elem over a block in one loop; the flags are compile-time constants at every call site
 * below, so each combination becomes its own branch-free vectorised loop. */
static inline __attribute__((always_inline)) void elem_block(float *v, const float *za, const float *zb,
                                                             int n, const int fa, const int fdec,
                                                             const int fstep, const int fb, float add_a,
                                                             float decay, float step, float add_b) {
  for (int k = 0; k < n; ++k) {
    float x = v[k];
    if (fa) x = LMF_FADD(x, LMF_FMUL(add_a, za[k]));
    if (fdec) x = LMF_FMUL(x, decay);
    if (fstep) x = LMF_FSUB(x, LMF_FMUL(step, za[k]));
    if (fb) x = LMF_FADD(x, LMF_FMUL(add_b, zb[k]));
    v[k] = x;
  }
}

static inline __attribute__((always_inline)) void elem_block_dispatch(float *v, const float *za,
                                                                      const float *zb, int n, int fa,
                                                                      int fdec, int fstep, int fb,
                                                                      float add_a, float decay,
                                                                      float step, float add_b) {
#define LMF_EB(A, D, S, B) elem_block(v, za, zb, n, A, D, S, B, add_a, decay, step, add_b)
  switch ((fa << 3) | (fdec << 2) | (fstep << 1) | fb) {
    case 0: break;
    case 1: LMF_EB(0, 0, 0, 1); break;
    case 2: LMF_EB(0, 0, 1, 0); break;
    case 3: LMF_EB(0, 0, 1, 1); break;
    case 4: LMF_EB(0, 1, 0, 0); break;
    case 5: LMF_EB(0, 1, 0, 1); break;
    case 6: LMF_EB(0, 1, 1, 0); break;
    case 7: LMF_EB(0, 1, 1, 1); break;
    case 8: LMF_EB(1, 0, 0, 0); break;
    case 9: LMF_EB(1, 0, 0, 1); break;
    case 10: LMF_EB(1, 0, 1, 0); break;
    case 11: LMF_EB(1, 0, 1, 1); break;
    case 12: LMF_EB(1, 1, 0, 0); break;
    case 13: LMF_EB(1, 1, 0, 1); break;
    case 14: LMF_EB(1, 1, 1, 0); break;
    default: LMF_EB(1, 1, 1, 1); break;
  }
#undef LMF_EB
}

LMF_VECTOR_CLONES
static void pass_chunk(const lmf_mezo_tdesc *t, int64_t begin, int64_t end, const lmf_mezo_pass *p,
                       uint32_t flags, float step) {
  float za[BUF], zb[BUF], x[BUF];
  uint32_t rw[BUF];
  const int master = t->master != NULL;
  const int update = (flags & LMF_PASS_UPDATE) != 0;
  const int need_a = master ? (update && step != 0.0f) : lmf_pass_needs_za(flags, step);
  const int need_b = master ? (flags & LMF_PASS_MASTER_B) != 0 : (flags & LMF_PASS_ADD_B) != 0;
  const int stochastic = !master && p->stochastic && t->dtype != LMF_DTYPE_F32;
  const int write_master = master && (flags & LMF_PASS_WRITE_MASTER) && update;
  for (int64_t j0 = begin; j0 < end; j0 += BLK) {
    const int n = (int)((end - j0 < BLK) ? end - j0 : BLK);
    const uint64_t i0 = (uint64_t)(t->goff + j0);
    if (need_a) gen_z(p->seed_a, t->uid, i0, n, p->dist, za);
    if (need_b) gen_z(p->seed_b, t->uid, i0, n, p->dist, zb);
    if (master) { /* see lmf_mezo_master_elem and lmf_mezo_working_from_master */
      memcpy(x, t->master + j0, (size_t)n * sizeof(float));
      if (update && t->decay) scale_block(x, p->decay, n);
      if (update && step != 0.0f) sub_block(x, step, za, n);
      if (write_master) memcpy(t->master + j0, x, (size_t)n * sizeof(float));
      if (flags & LMF_PASS_MASTER_B) axpy_block(x, p->m_off, zb, n);
      store_block(t->data, t->dtype, j0, n, x, NULL);
    } else { /* see lmf_mezo_elem */
      /* fp32 works in place; 16-bit through the fp32 block x */
      float *v = t->dtype == LMF_DTYPE_F32 ? (float *)t->data + j0 : x;
      if (v == x) load_block(t->data, t->dtype, j0, n, x);
      elem_block_dispatch(v, za, zb, n, (flags & LMF_PASS_ADD_A) != 0, update && t->decay,
                          update && step != 0.0f, (flags & LMF_PASS_ADD_B) != 0, p->add_a, p->decay,
                          step, p->add_b);
      if (v != x) continue;
      const uint32_t *r = NULL;
      if (stochastic) {
        gen_round_words(p->seed_a, t->uid, p->nonce, i0, n, rw);
        r = rw;
      }
      store_block(t->data, t->dtype, j0, n, x, r);
    }
  }
}

static int num_threads(const struct lmf_context *ctx) {
  return ctx->cpu_threads > 0 ? ctx->cpu_threads : omp_get_max_threads();
}

lmf_status_t lmf_cpu_mezo_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                               const lmf_mezo_chunk *chunks, int64_t num_chunks,
                               const lmf_mezo_pass *pass, const float *grad_ptr, int32_t *skipped_ptr) {
  uint32_t flags = pass->flags;
  float step = 0.0f;
  if (flags & LMF_PASS_UPDATE) {
    float g = grad_ptr ? *grad_ptr : pass->grad;
    step = LMF_FMUL(pass->lr, g);
    int skip = !lmf_isfinite_f32(step); /* g non-finite, or lr * g overflows */
    if (skipped_ptr) *skipped_ptr = skip;
    if (skip) {
      flags &= ~(uint32_t)LMF_PASS_UPDATE;
      step = 0.0f;
    }
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads(ctx))
  for (int64_t c = 0; c < num_chunks; ++c)
    pass_chunk(&tensors[chunks[c].tensor], chunks[c].begin, chunks[c].end, pass, flags, step);
  return LMF_OK;
}

LMF_VECTOR_CLONES
static void multi_chunk(const lmf_mezo_tdesc *t, int64_t begin, int64_t end, const lmf_mezo_multi_pass *m,
                        const float *steps) {
  float z[BUF], x[BUF];
  uint32_t rw[BUF];
  const int master = t->master != NULL;
  const int stochastic = !master && m->stochastic && t->dtype != LMF_DTYPE_F32;
  for (int64_t j0 = begin; j0 < end; j0 += BLK) {
    const int n = (int)((end - j0 < BLK) ? end - j0 : BLK);
    if (master)
      memcpy(x, t->master + j0, (size_t)n * sizeof(float));
    else
      load_block(t->data, t->dtype, j0, n, x);
    if (t->decay) scale_block(x, m->decay, n);
    for (int s = 0; s < m->num_seeds; ++s) {
      if (steps[s] == 0.0f) continue;
      gen_z(m->seeds[s], t->uid, (uint64_t)(t->goff + j0), n, m->dist, z);
      sub_block(x, steps[s], z, n);
    }
    const uint32_t *r = NULL;
    if (master) {
      memcpy(t->master + j0, x, (size_t)n * sizeof(float));
    } else if (stochastic) {
      gen_round_words(m->seeds[0], t->uid, m->nonce, (uint64_t)(t->goff + j0), n, rw);
      r = rw;
    }
    store_block(t->data, t->dtype, j0, n, x, r);
  }
}

lmf_status_t lmf_cpu_mezo_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                const lmf_mezo_multi_pass *pass, const float *coeffs_ptr,
                                int32_t *skipped_ptr) {
  float steps[64];
  int skip = 0;
  for (int s = 0; s < pass->num_seeds; ++s) {
    float c = coeffs_ptr ? coeffs_ptr[s] : pass->coeffs[s];
    steps[s] = LMF_FMUL(pass->lr, c);
    skip |= !lmf_isfinite_f32(steps[s]); /* c non-finite, or lr * c overflows */
  }
  if (skipped_ptr) *skipped_ptr = skip;
  if (skip) return LMF_OK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads(ctx))
  for (int64_t c = 0; c < num_chunks; ++c)
    multi_chunk(&tensors[chunks[c].tensor], chunks[c].begin, chunks[c].end, pass, steps);
  return LMF_OK;
}

lmf_status_t lmf_cpu_mezo_fill_z(const struct lmf_context *ctx, int32_t dist, uint64_t seed,
                                 uint32_t uid, int64_t goff, int64_t n, float *out) {
  int64_t blocks = (n + BLK - 1) / BLK;
#pragma omp parallel for schedule(static) num_threads(num_threads(ctx))
  for (int64_t bi = 0; bi < blocks; ++bi) {
    int64_t j0 = bi * BLK, j1 = n - j0 < BLK ? n : j0 + BLK;
    gen_z(seed, uid, (uint64_t)(goff + j0), (int)(j1 - j0), dist, out + j0);
  }
  return LMF_OK;
}
