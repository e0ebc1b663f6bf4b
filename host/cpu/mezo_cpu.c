/* The CPU backend of MeZO: OpenMP over the plan's chunks; within a chunk, z for a block of elements is
 * generated into a small stack buffer by branch-free loops the compiler vectorises, then applied. All
 * arithmetic comes from kernels/common, so results equal the CUDA backend's bit for bit. */
#include <omp.h>
#include <string.h>

#include "lmfuse/mezo.h"
#include "../mezo_backend.h"

/* Elements per inner block: z for 256 elements lives in L1. */
#define BLK 256
#define BUF (BLK + 8)

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define LMF_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define LMF_VECTOR_CLONES
#endif

/* Raw Philox words of groups g0 .. g0+ng-1 into w[4*ng]. */
LMF_VECTOR_CLONES
static void gen_words(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *w) {
  for (int k = 0; k < ng; ++k) {
    lmf_u32x4 r = lmf_z_words(seed, uid, domain, g0 + (uint64_t)k);
    w[4 * k + 0] = r.x;
    w[4 * k + 1] = r.y;
    w[4 * k + 2] = r.z;
    w[4 * k + 3] = r.w;
  }
}

/* z for groups g0 .. g0+ng-1 into z[4*ng]. */
LMF_VECTOR_CLONES
static void gen_z(uint64_t seed, uint32_t uid, uint64_t g0, int ng, int dist, float *z) {
  uint32_t w[BUF];
  gen_words(seed, uid, LMF_DOMAIN_Z, g0, ng, w);
  if (dist == LMF_MEZO_RADEMACHER) {
    for (int k = 0; k < 4 * ng; ++k) z[k] = lmf_rademacher(w[k]);
  } else {
    for (int k = 0; k < 2 * ng; ++k) lmf_box_muller(w[2 * k], w[2 * k + 1], &z[2 * k], &z[2 * k + 1]);
  }
}

static inline float load_elem(const void *data, int32_t dtype, int64_t j) {
  switch (dtype) {
    case LMF_DTYPE_F16: return lmf_f16_to_f32(((const uint16_t *)data)[j]);
    case LMF_DTYPE_BF16: return lmf_bf16_to_f32(((const uint16_t *)data)[j]);
    default: return ((const float *)data)[j];
  }
}

static inline void store_elem(void *data, int32_t dtype, int64_t j, float x, int stochastic, uint32_t r) {
  switch (dtype) {
    case LMF_DTYPE_F16: ((uint16_t *)data)[j] = lmf_f32_to_f16_impl(x, stochastic, r); break;
    case LMF_DTYPE_BF16: ((uint16_t *)data)[j] = lmf_f32_to_bf16_impl(x, stochastic, r); break;
    default: ((float *)data)[j] = x; break;
  }
}

/* Where a block of local elements [j0, j1) sits in Philox groups. */
typedef struct block_groups {
  uint64_t g0; /* first group */
  int shift;   /* (goff + j0) - 4 g0 */
  int ng;      /* groups covered */
} block_groups;

static block_groups groups_of(const lmf_mezo_tdesc *t, int64_t j0, int64_t j1) {
  block_groups b;
  uint64_t gi0 = (uint64_t)(t->goff + j0);
  b.g0 = gi0 / 4;
  b.shift = (int)(gi0 - 4 * b.g0);
  b.ng = (int)((b.shift + (j1 - j0) + 3) / 4);
  return b;
}

static void pass_chunk(const lmf_mezo_tdesc *t, int64_t begin, int64_t end, const lmf_mezo_pass *p,
                       uint32_t flags, float step) {
  float za[BUF], zb[BUF];
  uint32_t rw[BUF];
  const int master = t->master != NULL;
  const int need_a = master ? ((flags & LMF_PASS_UPDATE) && step != 0.0f) : lmf_pass_needs_za(flags, step);
  const int need_b = master ? (flags & LMF_PASS_MASTER_B) != 0 : (flags & LMF_PASS_ADD_B) != 0;
  const int stochastic = !master && p->stochastic && t->dtype != LMF_DTYPE_F32;
  const int write_master = master && (flags & LMF_PASS_WRITE_MASTER) && (flags & LMF_PASS_UPDATE);
  for (int64_t j0 = begin; j0 < end; j0 += BLK) {
    int64_t j1 = end - j0 < BLK ? end : j0 + BLK;
    block_groups g = groups_of(t, j0, j1);
    if (need_a) gen_z(p->seed_a, t->uid, g.g0, g.ng, p->dist, za);
    if (need_b) gen_z(p->seed_b, t->uid, g.g0, g.ng, p->dist, zb);
    if (stochastic) gen_words(p->seed_a, t->uid, LMF_DOMAIN_ROUND | p->nonce, g.g0, g.ng, rw);
    const float *a = za + g.shift, *b = zb + g.shift;
    const uint32_t *r = rw + g.shift;
    const int64_t n = j1 - j0;
    if (master) {
      float *m = t->master + j0;
      for (int64_t k = 0; k < n; ++k) {
        float v = lmf_mezo_master_elem(m[k], need_a ? a[k] : 0.0f, flags, p->decay, step, t->decay);
        if (write_master) m[k] = v;
        store_elem(t->data, t->dtype, j0 + k,
                   lmf_mezo_working_from_master(v, need_b ? b[k] : 0.0f, flags, p->m_off), 0, 0);
      }
    } else {
      for (int64_t k = 0; k < n; ++k) {
        float x = load_elem(t->data, t->dtype, j0 + k);
        x = lmf_mezo_elem(x, need_a ? a[k] : 0.0f, need_b ? b[k] : 0.0f, flags, p->add_a, p->add_b,
                          p->decay, step, t->decay);
        store_elem(t->data, t->dtype, j0 + k, x, stochastic, stochastic ? r[k] : 0u);
      }
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
    int skip = !lmf_isfinite_f32(g);
    if (skipped_ptr) *skipped_ptr = skip;
    if (skip)
      flags &= ~(uint32_t)LMF_PASS_UPDATE;
    else
      step = LMF_FMUL(pass->lr, g);
  }
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads(ctx))
  for (int64_t c = 0; c < num_chunks; ++c)
    pass_chunk(&tensors[chunks[c].tensor], chunks[c].begin, chunks[c].end, pass, flags, step);
  return LMF_OK;
}

static void multi_chunk(const lmf_mezo_tdesc *t, int64_t begin, int64_t end, const lmf_mezo_multi_pass *m,
                        const float *steps) {
  float z[BUF], acc[BLK];
  uint32_t rw[BUF];
  const int master = t->master != NULL;
  const int stochastic = !master && m->stochastic && t->dtype != LMF_DTYPE_F32;
  for (int64_t j0 = begin; j0 < end; j0 += BLK) {
    int64_t j1 = end - j0 < BLK ? end : j0 + BLK;
    const int64_t n = j1 - j0;
    block_groups g = groups_of(t, j0, j1);
    for (int64_t k = 0; k < n; ++k) {
      float x = master ? t->master[j0 + k] : load_elem(t->data, t->dtype, j0 + k);
      acc[k] = t->decay ? LMF_FMUL(x, m->decay) : x;
    }
    for (int s = 0; s < m->num_seeds; ++s) {
      if (steps[s] == 0.0f) continue;
      gen_z(m->seeds[s], t->uid, g.g0, g.ng, m->dist, z);
      for (int64_t k = 0; k < n; ++k) acc[k] = LMF_FSUB(acc[k], LMF_FMUL(steps[s], z[g.shift + k]));
    }
    if (stochastic) gen_words(m->seeds[0], t->uid, LMF_DOMAIN_ROUND | m->nonce, g.g0, g.ng, rw);
    for (int64_t k = 0; k < n; ++k) {
      if (master) t->master[j0 + k] = acc[k];
      store_elem(t->data, t->dtype, j0 + k, acc[k], stochastic, stochastic ? rw[g.shift + k] : 0u);
    }
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
    skip |= !lmf_isfinite_f32(c);
    steps[s] = LMF_FMUL(pass->lr, c);
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
    float z[BUF];
    int64_t j0 = bi * BLK, j1 = n - j0 < BLK ? n : j0 + BLK;
    uint64_t gi0 = (uint64_t)(goff + j0), g0 = gi0 / 4;
    int shift = (int)(gi0 - 4 * g0);
    gen_z(seed, uid, g0, (int)((shift + (j1 - j0) + 3) / 4), dist, z);
    memcpy(out + j0, z + shift, (size_t)(j1 - j0) * sizeof(float));
  }
  return LMF_OK;
}
