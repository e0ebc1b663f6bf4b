/* Properties of lmf_logits_combine on the CPU backend:
 *   - random rows of every feature against the double reference (tests/ref/lmf_ref_logits.c), in each
 *     dtype, with the filter boundaries sandwiched (the survivors must lie between the reference's at the
 *     parameter nudged by 1e-4 either way);
 *   - determinism (specs/logit-combination.md, "Sampling and determinism"): the same (seed, offset) gives
 *     the same token whatever the batch position, batch size, other rows' parameters, padding of the
 *     vocabulary or thread count; strided and row-indexed inputs equal contiguous copies; per-row
 *     coefficients and temperatures equal separate calls; sparse rows equal the dense row filled with
 *     the fill value; the three forms of bias agree; a model temperature equals pre-scaled logits;
 *   - ties go to the lowest token id; GeDi's state over several steps; optional outputs.
 * Random inputs are multiples of 1/64 in [-8, 8] and coefficients dyadic, so s(v) is exact in fp32. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_common.h"
#include "lmf_check.h"
#include "lmf_ref_logits.h"
#include "lmf_test_util.h"

#define TOL 1e-5

/* n values, multiples of 1/64 in [-8, 8], normal(0, sd) before clamping. */
static void fill_q(float *x, int64_t n, double sd, uint64_t seed) {
  uint64_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    double v = nearbyint(sd * lt_normal(&s) * 64.0) / 64.0;
    x[i] = (float)(v > 8.0 ? 8.0 : v < -8.0 ? -8.0 : v);
  }
}

static uint64_t *seeds_for(int32_t B, uint64_t base) {
  uint64_t *s = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)(B > 0 ? B : 1));
  if (s)
    for (int32_t b = 0; b < B; ++b) s[b] = base + 7919u * (uint64_t)b;
  return s;
}

/* Sorts idx[0, n) by key[idx] ascending, ties by index. */
static const double *g_sort_key;
static int cmp_key(const void *a, const void *b) {
  int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  double ki = g_sort_key[i], kj = g_sort_key[j];
  if (ki != kj) return ki < kj ? -1 : 1;
  return (i > j) - (i < j);
}
static void lg_sort_by_key(int32_t *idx, int n, const double *key) {
  g_sort_key = key;
  qsort(idx, (size_t)n, sizeof *idx, cmp_key);
}

/* ---- The reference comparison with sandwiched filter boundaries ---------------------------------------- */

static void survivors_of(const double *lp, int32_t V, unsigned char *alive) {
  for (int32_t v = 0; v < V; ++v) alive[v] = lp[v] != -INFINITY;
}

/* Row `row` of out against the reference; returns 1 if it matched exactly-specified (unambiguous). */
static int compare_row_at(const lmf_logits_model_t *m, size_t K, const lmf_logits_params_t *p, int32_t row,
                          const lg_out *o, double tol, const char *what, const char *file, int line) {
  const int32_t V = o->vocab_out;
  const double d = 1e-4;
  double *lp = (double *)malloc(sizeof(double) * (size_t)V * 3);
  unsigned char *al = (unsigned char *)malloc((size_t)V * 3);
  ref_lg_result r[3];
  lmf_logits_params_t q[3];
  q[0] = q[1] = q[2] = *p;
  /* q[1] keeps more, q[2] keeps fewer. */
  q[1].top_p = fminf(1.0f, p->top_p + (float)d);
  q[2].top_p = p->top_p < 1.0f ? p->top_p - (float)d : 1.0f;
  q[1].min_p = fmaxf(0.0f, p->min_p - (float)d);
  q[2].min_p = p->min_p > 0.0f ? p->min_p + (float)d : 0.0f;
  q[1].nucleus_p = fminf(1.0f, p->nucleus_p + (float)d);
  q[2].nucleus_p = p->nucleus_p < 1.0f ? p->nucleus_p - (float)d : 1.0f;
  q[1].plausibility_alpha = p->plausibility_alpha * (float)(1.0 - d);
  q[2].plausibility_alpha = fminf(1.0f, p->plausibility_alpha * (float)(1.0 + d));
  if (p->gedi_filter_p > 0.0f) {
    q[1].gedi_filter_p = fmaxf(1e-6f, p->gedi_filter_p - (float)d);
    q[2].gedi_filter_p = p->gedi_filter_p + (float)d;
    q[1].gedi_target_p = p->gedi_target_p - (float)d;
    q[2].gedi_target_p = p->gedi_target_p + (float)d;
  }
  for (int i = 0; i < 3; ++i) {
    memset(&r[i], 0, sizeof r[i]);
    r[i].logprobs = lp + (size_t)i * V;
    lg_ref_row(m, K, &q[i], row, &r[i]);
    survivors_of(r[i].logprobs, V, al + (size_t)i * V);
  }
  int ok = lmf_t_check(o->status[row] == r[0].status, file, line, "%s: row %d: status %d, reference %d", what,
                       (int)row, (int)o->status[row], (int)r[0].status);
  int exact = 1;
  /* GeDi's class filter walks tokens in ascending logP(desired | v). Many tokens share the same
   * difference of class logits, so their logP are equal in exact arithmetic and differ by rounding only,
   * in the library (fp32) as in the reference (double): within such a group the walk order, hence which
   * of them the mass cut removes, is not defined. Tokens of a group (logP within 1e-5 of one another)
   * that the reference partly removes and partly keeps are left out of the survivor check. */
  unsigned char *amb = (unsigned char *)calloc((size_t)V, 1);
  if (ok && r[0].status == LMF_ROW_OK && p->gedi_pos_model >= 0 && p->gedi_filter_p > 0.0f) {
    double *ld = (double *)malloc(sizeof(double) * (size_t)V), *sv = (double *)malloc(sizeof(double) * (size_t)V);
    int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * (size_t)V);
    ref_lg_result rg;
    memset(&rg, 0, sizeof rg);
    rg.logp_desired = ld;
    rg.s = sv;
    lg_ref_row(m, K, p, row, &rg);
    int n = 0;
    for (int32_t v = 0; v < V; ++v)
      if (sv[v] != -INFINITY) idx[n++] = v;
    lg_sort_by_key(idx, n, ld);
    for (int i = 0; i < n;) {
      int j = i + 1;
      while (j < n && ld[idx[j]] - ld[idx[j - 1]] <= 1e-5) ++j;
      int kept = 0, removed = 0;
      for (int q2 = i; q2 < j; ++q2) {
        if (al[idx[q2]]) ++kept;
        else ++removed;
      }
      if (kept && removed)
        for (int q2 = i; q2 < j; ++q2) amb[idx[q2]] = 1;
      i = j;
    }
    free(ld);
    free(sv);
    free(idx);
  }
  if (ok && r[0].status == LMF_ROW_OK) {
    const float *g = o->logprobs + (int64_t)row * o->stride;
    int64_t extra = 0, missing = 0;
    for (int32_t v = 0; v < V; ++v) {
      int alive = g[v] != -INFINITY;
      if (amb[v]) {
        if (alive != al[v]) exact = 0;
        continue;
      }
      if (alive && !al[V + v]) ++extra;    /* survives though even the wider reference removes it */
      if (!alive && al[2 * V + v]) ++missing; /* removed though even the narrower reference keeps it */
      if (al[V + v] != al[2 * V + v]) exact = 0;
    }
    ok &= lmf_t_check(extra == 0 && missing == 0, file, line,
                      "%s: row %d: %lld tokens survive that the reference removes, %lld removed that it keeps", what,
                      (int)row, (long long)extra, (long long)missing);
    if (extra || missing) {
      /* Up to 6 of them, with the reference's view (logP(desired | v) when GeDi is on). */
      double *ld = (double *)malloc(sizeof(double) * (size_t)V);
      ref_lg_result rd;
      memset(&rd, 0, sizeof rd);
      rd.logp_desired = ld;
      lg_ref_row(m, K, p, row, &rd);
      int shown = 0;
      for (int32_t v = 0; v < V && shown < 6; ++v) {
        int alive = g[v] != -INFINITY;
        if ((alive && !al[V + v]) || (!alive && al[2 * V + v])) {
          lmf_t_note("  token %d: library logprob %.9g; reference %.9g (wider %.9g, narrower %.9g)%s%.9g", (int)v,
                     (double)g[v], lp[v], lp[V + v], lp[2 * V + v], p->gedi_pos_model >= 0 ? "; logP(desired) " : "",
                     p->gedi_pos_model >= 0 ? ld[v] : 0.0);
          ++shown;
        }
      }
      free(ld);
    }
    if (ok && exact) {
      char w[160];
      snprintf(w, sizeof w, "%s: row %d logprobs", what, (int)row);
      ok &= lg_check_logprobs_rel_at(g, r[0].logprobs, V, tol, 4e-7, w, file, line);
      ok &= lmf_t_check(fabs((double)o->lse[row] - r[0].lse) <= tol * (1.0 + fabs(r[0].lse)), file, line,
                        "%s: row %d: lse %.9g, reference %.9g", what, (int)row, (double)o->lse[row], r[0].lse);
      float T = p->temperature_rows ? p->temperature_rows[row] : p->temperature;
      if (T == 0.0f)
        ok &= lmf_t_check(o->tokens[row] == r[0].argmax, file, line, "%s: row %d: greedy token %d, reference %d",
                          what, (int)row, (int)o->tokens[row], (int)r[0].argmax);
    }
    if (!exact) lmf_t_note("%s: row %d: a filter boundary within 1e-4; only the survivor sandwich was checked", what, (int)row);
  }
  free(amb);
  free(lp);
  free(al);
  return ok;
}
#define COMPARE_ROW(m, K, p, row, o, tol, what) compare_row_at((m), (K), (p), (row), (o), (tol), (what), __FILE__, __LINE__)

/* ---- Random rows against the reference -------------------------------------------------------------------- */

enum { RV = 3000, RB = 4 };

typedef struct rcfg {
  const char *name;
  int K;
  float coeff[4];
  float tau[4];
  int32_t vocab[4]; /* 0: RV */
  float T;
  int32_t top_k;
  float top_p, min_p;
  int32_t plaus, nucleus;
  float alpha, nucleus_p;
  int gedi;         /* models 1, 2 are the GeDi pair */
  float filter_p, target_p, logit_scale, bias_pos, bias_neg;
  int bias;         /* per-row bias */
  int mixed;        /* model k in lg_dtypes[k % 3] */
  float class_bias;
} rcfg;

static const rcfg rcfgs[] = {
    {"EFT greedy", 3, {1, 1, -1}, {1, 1, 1}, {0}, 0, 0, 1, 0, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"proxy T 0.5 top-k 40", 3, {1, 1.5f, -1.5f}, {1, 1, 1}, {0}, 0.5f, 40, 1, 0, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"top-p 0.8", 2, {1, -0.5f}, {1, 1}, {0}, 1, 0, 0.8f, 0, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"T 2 min-p 0.2", 2, {1, 0.25f}, {1, 1}, {0}, 2, 0, 1, 0.2f, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"contrastive", 2, {1, -0.5f}, {1, 0.5f}, {0}, 0, 0, 1, 0, 0, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"DExperts nucleus", 3, {1, 2, -2}, {1, 1, 1}, {0}, 1, 0, 1, 0, -1, 0, 0.1f, 0.9f, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"GeDi", 3, {1, 0, 0}, {1, 1, 1}, {0}, 0, 0, 1, 0, -1, -1, 0.1f, 1, 1, 0.8f, 0.8f, 1, 0, 0, 0, 0, 0},
    {"GeDi scaled, biased", 3, {1, 0, 0}, {1, 1, 1}, {0}, 0, 0, 1, 0, -1, -1, 0.1f, 1, 1, 0.5f, 0.6f, 0.5f, 0.25f, -0.25f, 0, 0, 0},
    {"GeDi class bias", 3, {1, 0, 0}, {1, 1, 1}, {0}, 0, 0, 1, 0, -1, -1, 0.1f, 1, 1, 0.8f, 0.8f, 1, 0, 0, 0, 0, 0.5f},
    {"all filters + bias", 2, {1, 1}, {1, 1}, {0}, 0.5f, 100, 0.95f, 0.01f, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0},
    {"vocab mismatch", 3, {1, 1, 0}, {1, 1, 1}, {RV, RV - 100, RV - 1000}, 0, 0, 1, 0, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0},
    {"mixed dtypes, 4 models", 4, {1, 0.5f, -0.5f, 0.25f}, {1, 2, 1, 0.5f}, {0}, 1, 0, 0.9f, 0, -1, -1, 0.1f, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0},
};

static void reference_random(int32_t dt) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float *z = (float *)lt_malloc(sizeof(float) * RB * RV);
  float *bias = (float *)lt_malloc(sizeof(float) * RB * RV);
  uint64_t *seeds = seeds_for(RB, 11);
  float L_pos[RB], L_neg[RB];
  int32_t n[RB];
  if (!z || !bias || !seeds) goto done;
  for (size_t c = 0; c < sizeof rcfgs / sizeof rcfgs[0]; ++c) {
    const rcfg *f = &rcfgs[c];
    lg_models ms;
    lg_models_init(&ms);
    int ok = 1;
    for (int k = 0; k < f->K && ok; ++k) {
      int32_t vk = f->vocab[k] ? f->vocab[k] : RV;
      fill_q(z, (int64_t)RB * vk, k == 0 ? 2.0 : 1.0, 1000 * c + (uint64_t)k);
      int32_t mdt = f->mixed ? lg_dtypes[(k + (dt == LMF_DTYPE_F32 ? 0 : dt == LMF_DTYPE_F16 ? 1 : 2)) % 3] : dt;
      ok = lg_models_add(&ms, mdt, z, RB, vk, f->coeff[k]) >= 0;
      ms.m[k].temperature = f->tau[k];
    }
    lmf_logits_params_t p;
    lg_params(&p, RB);
    p.vocab_out = RV;
    p.temperature = f->T;
    p.seeds = f->T > 0 ? seeds : NULL;
    p.top_k = f->top_k;
    p.top_p = f->top_p;
    p.min_p = f->min_p;
    p.plausibility_model = f->plaus;
    p.plausibility_alpha = f->alpha;
    p.nucleus_model = f->nucleus;
    p.nucleus_p = f->nucleus_p;
    if (f->gedi) {
      uint64_t s = 5 + c;
      for (int b = 0; b < RB; ++b) {
        n[b] = (int32_t)(lt_next(&s) % 20);
        L_pos[b] = -(float)n[b] * (float)(2.0 + lt_uniform(&s));
        L_neg[b] = -(float)n[b] * (float)(2.0 + lt_uniform(&s));
      }
      p.gedi_pos_model = 1;
      p.gedi_neg_model = 2;
      p.gedi_omega = 30.0f;
      p.gedi_logit_scale = f->logit_scale;
      p.gedi_bias_pos = f->bias_pos;
      p.gedi_bias_neg = f->bias_neg;
      p.gedi_class_bias = f->class_bias;
      p.gedi_filter_p = f->filter_p;
      p.gedi_target_p = f->target_p;
      p.gedi_L_pos = L_pos;
      p.gedi_L_neg = L_neg;
      p.gedi_n = n;
    }
    if (f->bias) {
      fill_q(bias, (int64_t)RB * RV, 0.5, 77 + c);
      p.bias = bias;
      p.bias_row_stride = RV;
    }
    lg_out o;
    char what[128];
    snprintf(what, sizeof what, "random %s, %s", f->name, lg_dtype_name(dt));
    if (ok && lg_out_alloc(&o, RB, RV, 0, f->gedi)) {
      /* The reference reads the GeDi state as it was before the call. */
      lmf_logits_params_t before = p;
      float Lp0[RB], Ln0[RB];
      int32_t n0[RB];
      memcpy(Lp0, L_pos, sizeof Lp0);
      memcpy(Ln0, L_neg, sizeof Ln0);
      memcpy(n0, n, sizeof n0);
      if (f->gedi) {
        before.gedi_L_pos = Lp0;
        before.gedi_L_neg = Ln0;
        before.gedi_n = n0;
      }
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        for (int32_t b = 0; b < RB; ++b) {
          COMPARE_ROW(ms.m, ms.K, &before, b, &o, TOL, what);
          if (f->gedi && o.tokens[b] >= 0) {
            ref_lg_result r;
            double ld[RV];
            memset(&r, 0, sizeof r);
            r.logp_desired = ld;
            lg_ref_row(ms.m, ms.K, &before, b, &r);
            int32_t y = o.tokens[b];
            LMF_CHECK_MSG(fabs((double)o.gedi_logp_desired[b] - ld[y]) <= TOL, "%s: row %d: logP(desired|%d) %.9g, ref %.9g",
                          what, (int)b, (int)y, (double)o.gedi_logp_desired[b], ld[y]);
            LMF_CHECK_EQ_INT(n[b], n0[b] + 1);
          }
        }
      }
      lg_out_free(&o);
    }
    lg_models_free(&ms);
  }
done:
  free(z);
  free(bias);
  free(seeds);
  lmf_context_destroy(ctx);
}

void test_logits_reference_random_f32(void) { reference_random(LMF_DTYPE_F32); }
void test_logits_reference_random_f16(void) { reference_random(LMF_DTYPE_F16); }
void test_logits_reference_random_bf16(void) { reference_random(LMF_DTYPE_BF16); }

/* ---- Determinism: batch position, batch size, other rows, padding, threads -------------------------------- */

enum { PV = 1000, POOL = 64 };

/* A pool of POOL input rows for three models (f32, f16, bf16), each call picks rows with row_index. */
typedef struct pool {
  lg_models ms;
} pool;

static int pool_init(pool *pl, int32_t vocab, int64_t stride_pad) {
  lg_models_init(&pl->ms);
  float *z = (float *)lt_malloc(sizeof(float) * POOL * (size_t)(vocab + stride_pad));
  if (!z) return 0;
  static const float coeff[3] = {1.0f, 0.5f, -0.5f};
  int ok = 1;
  for (int k = 0; k < 3 && ok; ++k) {
    fill_q(z, (int64_t)POOL * (vocab + stride_pad), k == 0 ? 1.5 : 1.0, 300 + (uint64_t)k);
    ok = lg_models_add(&pl->ms, lg_dtypes[k], z, POOL, (int32_t)(vocab + stride_pad), coeff[k]) >= 0;
    pl->ms.m[k].vocab = vocab;
  }
  free(z);
  return ok;
}

typedef struct probe {
  int32_t pool_row;
  uint64_t seed, offset;
} probe;

/* One call: rows[b] from the pool, per-row seeds/offsets/temperatures/coefficient rows. */
static int run_rows(lmf_context_t *ctx, pool *pl, int32_t B, const int32_t *rows, const uint64_t *seeds,
                    const uint64_t *offsets, const float *temps, const float *c1, const float *bias,
                    int64_t bias_stride, int32_t vocab_out, lg_out *o) {
  for (int k = 0; k < 3; ++k) pl->ms.m[k].row_index = rows;
  pl->ms.m[1].coeff_rows = c1;
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.vocab_out = vocab_out;
  p.temperature = 1.0f;
  p.temperature_rows = temps;
  p.top_p = 0.95f;
  p.seeds = seeds;
  p.offsets = offsets;
  p.bias = bias;
  p.bias_row_stride = bias_stride;
  int ok = LMF_CHECK_OK(lg_combine(ctx, pl->ms.m, pl->ms.K, &p, o));
  for (int k = 0; k < 3; ++k) pl->ms.m[k].row_index = NULL;
  pl->ms.m[1].coeff_rows = NULL;
  return ok;
}

void test_logits_determinism_batch(void) {
  enum { NP = 16, BMAX = 64 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  pool pl;
  lg_out one, big;
  memset(&one, 0, sizeof one);
  memset(&big, 0, sizeof big);
  int32_t rows[BMAX];
  uint64_t seeds[BMAX], offsets[BMAX];
  float temps[BMAX], c1[BMAX], *bias = (float *)lt_malloc(sizeof(float) * BMAX * PV);
  if (!bias || !pool_init(&pl, PV, 0) || !lg_out_alloc(&one, 1, PV, 0, 0)) goto done;
  fill_q(bias, (int64_t)BMAX * PV, 0.5, 4242);
  for (int i = 0; i < NP; ++i) {
    const probe pr = {(int32_t)(i * 3 % POOL), 1000 + (uint64_t)i * 17, (uint64_t)i * 5};
    /* Alone: B = 1, no bias, the models' own coefficients. */
    if (!run_rows(ctx, &pl, 1, &pr.pool_row, &pr.seed, &pr.offset, NULL, NULL, NULL, 0, 0, &one)) goto done;
    /* In batches of 9 and 64 at varying positions; the other rows have other data, seeds, offsets,
     * temperatures, coefficients and bias rows; the probe's own per-row values equal the scalars (T 1,
     * coefficient 0.5, a bias row of zeros). */
    const int32_t sizes[2] = {9, 64};
    for (int si = 0; si < 2; ++si) {
      const int32_t B = sizes[si];
      const int32_t pos = si == 0 ? i % B : B - 1 - i;
      lg_out_free(&big);
      if (!lg_out_alloc(&big, B, PV, 0, 0)) goto done;
      for (int32_t b = 0; b < B; ++b) {
        rows[b] = (int32_t)((b * 7 + 1) % POOL);
        seeds[b] = 555 + (uint64_t)b;
        offsets[b] = (uint64_t)b % 3;
        temps[b] = (b % 4 == 0) ? 0.0f : (b % 4 == 1 ? 0.5f : (b % 4 == 2 ? 2.0f : 1.0f));
        c1[b] = (b % 2) ? 1.0f : -0.25f;
      }
      rows[pos] = pr.pool_row;
      seeds[pos] = pr.seed;
      offsets[pos] = pr.offset;
      temps[pos] = 1.0f;
      c1[pos] = 0.5f;
      float *brow = bias + (size_t)pos * PV;
      float saved[PV];
      memcpy(saved, brow, sizeof saved);
      memset(brow, 0, sizeof saved);
      int ok = run_rows(ctx, &pl, B, rows, seeds, offsets, temps, c1, bias, PV, 0, &big);
      memcpy(brow, saved, sizeof saved);
      if (!ok) goto done;
      char what[96];
      snprintf(what, sizeof what, "probe %d at position %d of %d", i, (int)pos, (int)B);
      LG_ROW_NEAR(&one, 0, &big, pos, TOL, what);
    }
    /* Padding: V_out 1024 over models of vocab 1000 (columns past a model's vocab are -inf). */
    {
      lg_out pad;
      if (!lg_out_alloc(&pad, 1, 1024, 0, 0)) goto done;
      if (run_rows(ctx, &pl, 1, &pr.pool_row, &pr.seed, &pr.offset, NULL, NULL, NULL, 0, 1024, &pad)) {
        char what[96];
        snprintf(what, sizeof what, "probe %d, V_out 1024 over vocab 1000", i);
        LG_ROW_NEAR(&one, 0, &pad, 0, TOL, what);
        int64_t finite = 0;
        for (int v = PV; v < 1024; ++v) finite += pad.logprobs[v] != -INFINITY;
        LMF_CHECK_MSG(finite == 0, "%s: %lld padded columns are not -inf", what, (long long)finite);
      }
      lg_out_free(&pad);
    }
  }
done:
  lg_models_free(&pl.ms);
  lg_out_free(&one);
  lg_out_free(&big);
  free(bias);
  lmf_context_destroy(ctx);
}

/* The same batch (and one long row, whose vocabulary a backend may split) on 1, 2, 3 and 4 threads: the
 * same bytes. */
void test_logits_determinism_threads(void) {
  enum { B = 9, LV = 50000 };
  pool pl;
  lg_out ref[2], o[2];
  memset(ref, 0, sizeof ref);
  memset(o, 0, sizeof o);
  lg_models lm;
  lg_models_init(&lm);
  float *z = (float *)lt_malloc(sizeof(float) * LV);
  int32_t rows[B];
  uint64_t seeds[B], offsets[B];
  float temps[B], c1[B];
  if (!z || !pool_init(&pl, PV, 0)) goto done;
  fill_q(z, LV, 2.0, 99);
  lg_models_add(&lm, LMF_DTYPE_BF16, z, 1, LV, 1.0f);
  fill_q(z, LV, 1.0, 98);
  lg_models_add(&lm, LMF_DTYPE_F32, z, 1, LV, -0.5f);
  for (int32_t b = 0; b < B; ++b) {
    rows[b] = (int32_t)(b * 5 % POOL);
    seeds[b] = 31 + (uint64_t)b;
    offsets[b] = (uint64_t)b;
    temps[b] = b == 4 ? 0.0f : 0.5f + 0.25f * (float)(b % 3);
    c1[b] = b % 2 ? 0.5f : 1.5f;
  }
  for (int t = 1; t <= 4; ++t) {
    lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, t);
    if (!ctx) goto done;
    lg_out *dst = t == 1 ? ref : o;
    int ok = lg_out_alloc(&dst[0], B, PV, 0, 0) && lg_out_alloc(&dst[1], 1, LV, 0, 0);
    ok = ok && run_rows(ctx, &pl, B, rows, seeds, offsets, temps, c1, NULL, 0, 0, &dst[0]);
    lmf_logits_params_t p;
    lg_params(&p, 1);
    p.temperature = 1.0f;
    p.top_p = 0.9f;
    p.seeds = seeds;
    ok = ok && LMF_CHECK_OK(lg_combine(ctx, lm.m, lm.K, &p, &dst[1]));
    if (ok && t > 1) {
      char what[64];
      snprintf(what, sizeof what, "batch of 9 on 1 vs %d threads", t);
      LG_OUT_EQUAL(&ref[0], &o[0], what);
      snprintf(what, sizeof what, "one row of 50000 on 1 vs %d threads", t);
      LG_OUT_EQUAL(&ref[1], &o[1], what);
    }
    if (t > 1) {
      lg_out_free(&o[0]);
      lg_out_free(&o[1]);
    }
    lmf_context_destroy(ctx);
    if (!ok) break;
  }
done:
  lg_models_free(&pl.ms);
  lg_models_free(&lm);
  for (int i = 0; i < 2; ++i) {
    lg_out_free(&ref[i]);
    lg_out_free(&o[i]);
  }
  free(z);
}

/* Columns past a model's vocab count as -inf: the same as explicit -inf columns, and as a narrower V_out;
 * a c = 0 model with a smaller vocab changes nothing. */
void test_logits_vocab_padding(void) {
  enum { B = 5, V = 1000, VP = 1024 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float *z = (float *)lt_malloc(sizeof(float) * B * VP);
  uint64_t *seeds = seeds_for(B, 3);
  lg_models explicit_inf, padded;
  lg_models_init(&explicit_inf);
  lg_models_init(&padded);
  lg_out a, b, c, d;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  memset(&d, 0, sizeof d);
  if (!z || !seeds) goto done;
  static const float coeff[3] = {1.0f, 1.0f, -1.0f};
  for (int k = 0; k < 3; ++k) {
    fill_q(z, B * VP, 1.5, 60 + (uint64_t)k);
    lg_models_add(&padded, lg_dtypes[k], z, B, VP, coeff[k]);
    padded.m[k].vocab = V;
    for (int r = 0; r < B; ++r)
      for (int v = V; v < VP; ++v) z[r * VP + v] = -INFINITY;
    lg_models_add(&explicit_inf, lg_dtypes[k], z, B, VP, coeff[k]);
  }
  if (!lg_out_alloc(&a, B, VP, 0, 0) || !lg_out_alloc(&b, B, VP, 0, 0) || !lg_out_alloc(&c, B, V, 0, 0) ||
      !lg_out_alloc(&d, B, VP, 0, 0))
    goto done;
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 1.0f;
  p.top_k = 200;
  p.seeds = seeds;
  if (!LMF_CHECK_OK(lg_combine(ctx, explicit_inf.m, explicit_inf.K, &p, &a))) goto done;
  p.vocab_out = VP;
  if (!LMF_CHECK_OK(lg_combine(ctx, padded.m, padded.K, &p, &b))) goto done;
  p.vocab_out = V;
  if (!LMF_CHECK_OK(lg_combine(ctx, padded.m, padded.K, &p, &c))) goto done;
  /* A fourth model, c = 0, vocab 500. */
  p.vocab_out = VP;
  fill_q(z, B * 500, 1.0, 64);
  lg_models_add(&padded, LMF_DTYPE_F32, z, B, 500, 0.0f);
  if (!LMF_CHECK_OK(lg_combine(ctx, padded.m, padded.K, &p, &d))) goto done;
  for (int32_t r = 0; r < B; ++r) {
    LG_ROW_NEAR(&a, r, &b, r, TOL, "explicit -inf columns vs vocab 1000 in V_out 1024");
    LG_ROW_NEAR(&a, r, &c, r, TOL, "explicit -inf columns vs V_out 1000");
    LG_ROW_NEAR(&b, r, &d, r, TOL, "a c = 0 model of vocab 500 added");
    int64_t finite = 0;
    for (int v = V; v < VP; ++v) finite += b.logprobs[(int64_t)r * VP + v] != -INFINITY;
    LMF_CHECK_MSG(finite == 0, "row %d: %lld columns past the models' vocab are not -inf", (int)r, (long long)finite);
  }
done:
  lg_models_free(&explicit_inf);
  lg_models_free(&padded);
  lg_out_free(&a);
  lg_out_free(&b);
  lg_out_free(&c);
  lg_out_free(&d);
  free(z);
  free(seeds);
  lmf_context_destroy(ctx);
}

/* rows[r] (R rows of V values) placed at pool row place[r] (NULL: r) of a pool of P rows with row stride
 * `stride`, everything else NaN, encoded in dtype. */
static void *place_rows(int32_t dt, const float *rows, int R, int V, int64_t stride, const int32_t *place, int P) {
  float *tmp = (float *)lt_malloc(sizeof(float) * (size_t)P * (size_t)stride);
  if (!tmp) return NULL;
  for (int64_t i = 0; i < (int64_t)P * stride; ++i) tmp[i] = NAN;
  for (int r = 0; r < R; ++r) memcpy(tmp + (int64_t)(place ? place[r] : r) * stride, rows + (int64_t)r * V, sizeof(float) * (size_t)V);
  void *buf = lg_encode(dt, tmp, (int64_t)P * stride);
  free(tmp);
  return buf;
}

/* Strided rows (row_stride > vocab, NaN in the gap) and row-indexed rows (row_index into a pool whose other
 * rows are NaN) give the same bytes as contiguous copies. */
void test_logits_strided_and_row_index(void) {
  enum { B = 6, V = 777, PAD = 37, P = 10 };
  static const int32_t place[B] = {7, 2, 9, 0, 4, 5};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float *z[3] = {NULL, NULL, NULL};
  void *buf[4][3];
  memset(buf, 0, sizeof buf);
  uint64_t *seeds = seeds_for(B, 8);
  lg_out out[4];
  memset(out, 0, sizeof out);
  static const float coeff[3] = {1.0f, 1.5f, -1.5f};
  int ok = seeds != NULL;
  for (int k = 0; k < 3 && ok; ++k) {
    z[k] = (float *)lt_malloc(sizeof(float) * B * V);
    ok = z[k] != NULL;
    if (ok) fill_q(z[k], B * V, 1.5, 700 + (uint64_t)k);
  }
  for (int k = 0; k < 3 && ok; ++k) {
    buf[0][k] = place_rows(lg_dtypes[k], z[k], B, V, V, NULL, B);
    buf[1][k] = place_rows(lg_dtypes[k], z[k], B, V, V + PAD, NULL, B);
    buf[2][k] = place_rows(lg_dtypes[k], z[k], B, V, V, place, P);
    buf[3][k] = place_rows(lg_dtypes[k], z[k], B, V, V + PAD, place, P);
    ok = buf[0][k] && buf[1][k] && buf[2][k] && buf[3][k];
  }
  static const char *names[4] = {"contiguous", "strided", "row-indexed", "strided and row-indexed"};
  for (int i = 0; i < 4 && ok; ++i) {
    lmf_logits_model_t m[3];
    for (int k = 0; k < 3; ++k) {
      m[k] = lg_model(buf[i][k], lg_dtypes[k], V, (i & 1) ? V + PAD : V, coeff[k]);
      if (i >= 2) m[k].row_index = place;
    }
    lmf_logits_params_t p;
    lg_params(&p, B);
    p.temperature = 1.0f;
    p.top_k = 50;
    p.seeds = seeds;
    ok = lg_out_alloc(&out[i], B, V, i == 3 ? V + 3 : 0, 0) && LMF_CHECK_OK(lg_combine(ctx, m, 3, &p, &out[i]));
    if (ok && i > 0) {
      char what[96];
      snprintf(what, sizeof what, "%s vs contiguous", names[i]);
      LG_OUT_EQUAL(&out[0], &out[i], what);
    }
  }
  for (int i = 0; i < 4; ++i) {
    lg_out_free(&out[i]);
    for (int k = 0; k < 3; ++k) free(buf[i][k]);
  }
  for (int k = 0; k < 3; ++k) free(z[k]);
  free(seeds);
  lmf_context_destroy(ctx);
}

/* Per-row coefficients and temperatures equal separate calls with scalars; the T1 rows with beta 1, 0.5
 * and 2 give the spec's log-probs. */
void test_logits_per_row_coefficients(void) {
  enum { B = 6 };
  static const float beta[B] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.0f};
  static const float temps[B] = {0.0f, 0.0f, 0.0f, 1.0f, 0.7f, 2.0f};
  static const double spec[3][5] = {{-1.808763, -0.308763, -3.308763, -5.308763, -2.808763},
                                    {-1.018508, -0.768508, -2.518508, -4.268508, -2.518508},
                                    {-4.040233, -0.040233, -5.540233, -8.040233, -4.040233}};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_models ms;
  lg_models_init(&ms);
  lg_out all, one;
  memset(&all, 0, sizeof all);
  memset(&one, 0, sizeof one);
  int32_t ri[B] = {0};
  float cp[B], cm[B];
  uint64_t seeds[B];
  for (int b = 0; b < B; ++b) cp[b] = beta[b], cm[b] = -beta[b], seeds[b] = 400 + (uint64_t)b;
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zL, 1, 5, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_BF16, lg_t1_zSf, 1, 5, 9.0f); /* ignored: coeff_rows given */
  lg_models_add(&ms, LMF_DTYPE_F16, lg_t1_zSb, 1, 5, -9.0f);
  if (ms.K != 3 || !lg_out_alloc(&all, B, 5, 0, 0) || !lg_out_alloc(&one, 1, 5, 0, 0)) goto done;
  for (int k = 0; k < 3; ++k) ms.m[k].row_index = ri;
  ms.m[1].coeff_rows = cp;
  ms.m[2].coeff_rows = cm;
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 0.5f; /* ignored: temperature_rows given */
  p.temperature_rows = temps;
  p.seeds = seeds;
  if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &all))) goto done;
  for (int b = 0; b < 3; ++b) {
    char what[64];
    snprintf(what, sizeof what, "T1 beta %g as a coefficient row", (double)beta[b]);
    LG_CHECK_LOGPROBS(all.logprobs + 5 * b, spec[b], 5, TOL, what);
    LMF_CHECK_EQ_INT(all.tokens[b], 1);
  }
  for (int b = 0; b < B; ++b) {
    for (int k = 0; k < 3; ++k) ms.m[k].row_index = NULL;
    ms.m[1].coeff_rows = ms.m[2].coeff_rows = NULL;
    ms.m[1].coeff = beta[b];
    ms.m[2].coeff = -beta[b];
    lmf_logits_params_t q;
    lg_params(&q, 1);
    q.temperature = temps[b];
    q.seeds = &seeds[b];
    if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &q, &one))) break;
    char what[64];
    snprintf(what, sizeof what, "row %d (beta %g, T %g) vs a call of its own", b, (double)beta[b], (double)temps[b]);
    LG_ROW_NEAR(&all, b, &one, 0, TOL, what);
  }
done:
  lg_models_free(&ms);
  lg_out_free(&all);
  lg_out_free(&one);
  lmf_context_destroy(ctx);
}

/* Sparse rows (top-k ids and values, the rest the fill value) equal the dense rows filled with the fill
 * value; a sparse id outside [0, V_out) gives its row LMF_ROW_BAD_INDEX. */
void test_logits_sparse_equals_dense(void) {
  enum { B = 4, V = 500, KB = 20, KC = 10, SB = 24, SC = 10 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float za[B * V], db[B * V], dc[B * V], vb[B * SB], vc[B * SC];
  int32_t ib[B * SB], ic[B * SC];
  uint64_t st = 12345;
  uint64_t seeds[B] = {1, 2, 3, 4};
  const float fill_b = -50.0f, fill_c = -40.0f;
  fill_q(za, B * V, 2.0, 5);
  fill_q(vb, B * SB, 2.0, 6);
  fill_q(vc, B * SC, 2.0, 7);
  for (int r = 0; r < B; ++r) {
    for (int v = 0; v < V; ++v) db[r * V + v] = fill_b, dc[r * V + v] = fill_c;
    /* Distinct ids per row: a random permutation prefix. */
    int32_t perm[V];
    for (int v = 0; v < V; ++v) perm[v] = v;
    for (int v = V - 1; v > 0; --v) {
      int j = (int)(lt_next(&st) % (uint64_t)(v + 1));
      int32_t t = perm[v];
      perm[v] = perm[j];
      perm[j] = t;
    }
    for (int j = 0; j < SB; ++j) {
      ib[r * SB + j] = j < KB ? perm[j] : -7; /* past sparse_k: junk the call must not read */
      if (j >= KB) vb[r * SB + j] = NAN;
      else db[r * V + perm[j]] = vb[r * SB + j];
    }
    for (int j = 0; j < SC; ++j) {
      ic[r * SC + j] = perm[100 + j];
      dc[r * V + perm[100 + j]] = vc[r * SC + j];
    }
  }
  lg_out sp, de;
  memset(&sp, 0, sizeof sp);
  memset(&de, 0, sizeof de);
  for (int di = 0; di < 3; ++di) {
    const int32_t dt = lg_dtypes[di];
    lg_models dense, sparse;
    lg_models_init(&dense);
    lg_models_init(&sparse);
    lg_models_add(&dense, dt, za, B, V, 1.0f);
    lg_models_add(&dense, dt, db, B, V, 1.0f);
    lg_models_add(&dense, dt, dc, B, V, -0.5f);
    lg_models_add(&sparse, dt, za, B, V, 1.0f);
    lg_models_add(&sparse, dt, vb, B, SB, 1.0f);
    lg_models_add(&sparse, dt, vc, B, SC, -0.5f);
    if (dense.K == 3 && sparse.K == 3 && lg_out_alloc(&sp, B, V, 0, 0) && lg_out_alloc(&de, B, V, 0, 0)) {
      sparse.m[1].sparse_index = ib;
      sparse.m[1].sparse_k = KB;
      sparse.m[1].sparse_fill = fill_b;
      sparse.m[1].vocab = V;
      sparse.m[2].sparse_index = ic;
      sparse.m[2].sparse_k = KC;
      sparse.m[2].sparse_fill = fill_c;
      sparse.m[2].vocab = V;
      lmf_logits_params_t p;
      lg_params(&p, B);
      p.vocab_out = V;
      p.temperature = 1.0f;
      p.seeds = seeds;
      if (LMF_CHECK_OK(lg_combine(ctx, dense.m, dense.K, &p, &de)) &&
          LMF_CHECK_OK(lg_combine(ctx, sparse.m, sparse.K, &p, &sp))) {
        for (int32_t r = 0; r < B; ++r) {
          char what[64];
          snprintf(what, sizeof what, "sparse vs dense, %s, row %d", lg_dtype_name(dt), (int)r);
          LG_ROW_NEAR(&de, r, &sp, r, TOL, what);
        }
      }
      /* Bad ids: V_out in row 1, -1 in row 2. */
      int32_t saved1 = ib[1 * SB + 3], saved2 = ic[2 * SC + 0];
      ib[1 * SB + 3] = V;
      ic[2 * SC + 0] = -1;
      if (LMF_CHECK_OK(lg_combine(ctx, sparse.m, sparse.K, &p, &sp))) {
        LMF_CHECK_EQ_INT(sp.status[1], LMF_ROW_BAD_INDEX);
        LMF_CHECK_EQ_INT(sp.status[2], LMF_ROW_BAD_INDEX);
        LMF_CHECK_EQ_INT(sp.tokens[1], -1);
        LMF_CHECK_EQ_INT(sp.tokens[2], -1);
        LG_ROW_NEAR(&de, 0, &sp, 0, TOL, "row 0 beside bad-index rows");
        LG_ROW_NEAR(&de, 3, &sp, 3, TOL, "row 3 beside bad-index rows");
      }
      ib[1 * SB + 3] = saved1;
      ic[2 * SC + 0] = saved2;
    }
    lg_out_free(&sp);
    lg_out_free(&de);
    lg_models_free(&dense);
    lg_models_free(&sparse);
  }
  lmf_context_destroy(ctx);
}

/* One shared bias row, per-row bias rows (stride V and a wider stride), and an extra f32 model of
 * coefficient 1 holding the bias: the same results. */
void test_logits_bias_forms(void) {
  enum { B = 3, V = 300, BS = 317 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float za[B * V], zb[B * V], shared[V], rows[B * BS], as_model[B * V], shared_rows[B * V];
  uint64_t seeds[B] = {9, 8, 7};
  fill_q(za, B * V, 2.0, 1);
  fill_q(zb, B * V, 1.0, 2);
  fill_q(shared, V, 1.0, 3);
  fill_q(rows, B * BS, 1.0, 4);
  for (int r = 0; r < B; ++r)
    for (int v = 0; v < V; ++v) shared_rows[r * V + v] = shared[v], as_model[r * V + v] = rows[r * BS + v];
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, LMF_DTYPE_F16, za, B, V, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_BF16, zb, B, V, -0.5f);
  lg_out o[4];
  memset(o, 0, sizeof o);
  int ok = ms.K == 2;
  for (int i = 0; i < 4 && ok; ++i) ok = lg_out_alloc(&o[i], B, V, 0, 0);
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 1.0f;
  p.top_p = 0.9f;
  p.seeds = seeds;
  if (ok) {
    p.bias = shared;
    p.bias_row_stride = 0;
    ok = LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[0]));
    p.bias = shared_rows;
    p.bias_row_stride = V;
    ok = ok && LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[1]));
    p.bias = rows;
    p.bias_row_stride = BS;
    ok = ok && LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[2]));
    p.bias = NULL;
    p.bias_row_stride = 0;
    ok = ok && lg_models_add(&ms, LMF_DTYPE_F32, as_model, B, V, 1.0f) >= 0 &&
         LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[3]));
  }
  if (ok) {
    LG_OUT_EQUAL(&o[0], &o[1], "one shared bias row vs the same row per row");
    for (int32_t r = 0; r < B; ++r) LG_ROW_NEAR(&o[2], r, &o[3], r, TOL, "per-row bias (stride 317) vs a bias model");
  }
  for (int i = 0; i < 4; ++i) lg_out_free(&o[i]);
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
}

/* A model temperature tau equals logits divided by tau beforehand (tau = 0.5 and 2: exact). */
void test_logits_model_temperature(void) {
  enum { B = 3, V = 400 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float za[B * V], zb[B * V], za2[B * V], zb2[B * V];
  uint64_t seeds[B] = {5, 6, 7};
  fill_q(za, B * V, 1.0, 11);
  fill_q(zb, B * V, 1.0, 12);
  for (int i = 0; i < B * V; ++i) za2[i] = za[i] * 2.0f, zb2[i] = zb[i] * 0.5f;
  for (int di = 0; di < 3; ++di) {
    lg_models a, b;
    lg_models_init(&a);
    lg_models_init(&b);
    lg_models_add(&a, lg_dtypes[di], za, B, V, 1.0f);
    lg_models_add(&a, lg_dtypes[di], zb, B, V, -0.5f);
    a.m[0].temperature = 0.5f;
    a.m[1].temperature = 2.0f;
    lg_models_add(&b, lg_dtypes[di], za2, B, V, 1.0f);
    lg_models_add(&b, lg_dtypes[di], zb2, B, V, -0.5f);
    lg_out oa, ob;
    if (a.K == 2 && b.K == 2 && lg_out_alloc(&oa, B, V, 0, 0)) {
      if (lg_out_alloc(&ob, B, V, 0, 0)) {
        lmf_logits_params_t p;
        lg_params(&p, B);
        p.temperature = 1.0f;
        p.seeds = seeds;
        p.plausibility_model = 0; /* the mask reads x = z / tau too */
        p.plausibility_alpha = 0.05f;
        if (LMF_CHECK_OK(lg_combine(ctx, a.m, a.K, &p, &oa)) && LMF_CHECK_OK(lg_combine(ctx, b.m, b.K, &p, &ob)))
          for (int32_t r = 0; r < B; ++r) LG_ROW_NEAR(&oa, r, &ob, r, TOL, lg_dtype_name(lg_dtypes[di]));
        lg_out_free(&ob);
      }
      lg_out_free(&oa);
    }
    lg_models_free(&a);
    lg_models_free(&b);
  }
  lmf_context_destroy(ctx);
}

/* offsets NULL means 0; a larger workspace than asked for changes nothing; the optional outputs may be
 * NULL without changing the tokens. */
void test_logits_defaults_and_optional_outputs(void) {
  enum { B = 5, V = 256 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float za[B * V], zb[B * V];
  uint64_t seeds[B] = {1, 2, 3, 4, 5}, zeros[B] = {0};
  fill_q(za, B * V, 2.0, 21);
  fill_q(zb, B * V, 1.0, 22);
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, LMF_DTYPE_F32, za, B, V, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F16, zb, B, V, 0.5f);
  lg_out a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  void *ws = NULL;
  if (ms.K != 2 || !lg_out_alloc(&a, B, V, 0, 0) || !lg_out_alloc(&b, B, V, 0, 0)) goto done;
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 1.0f;
  p.top_k = 20;
  p.seeds = seeds;
  if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &a))) goto done;
  p.offsets = zeros;
  if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &b))) LG_OUT_EQUAL(&a, &b, "offsets NULL vs offsets 0");
  p.offsets = NULL;
  /* A workspace twice the size asked for, plus 4 KiB. */
  {
    size_t bytes = 0;
    if (LMF_CHECK_OK(lmf_logits_workspace_size(ctx, ms.m, ms.K, &p, &bytes))) {
      ws = lt_malloc(2 * bytes + 4096);
      if (ws) {
        memset(ws, 0x5a, 2 * bytes + 4096);
        lg_out_poison(&b);
        if (LMF_CHECK_OK(lmf_logits_combine(ctx, ms.m, ms.K, &p, &b.o, ws, 2 * bytes + 4096, NULL))) {
          lg_out_check_written_at(&b, 0, "larger workspace", __FILE__, __LINE__);
          LG_OUT_EQUAL(&a, &b, "a larger workspace");
        }
      }
    }
  }
  /* Only tokens. */
  b.o.status = NULL;
  b.o.token_logprob = NULL;
  b.o.lse = NULL;
  b.o.logprobs = NULL;
  b.o.logprobs_row_stride = 0;
  if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &b))) {
    LMF_CHECK_BYTES_EQ(a.tokens, b.tokens, sizeof(int32_t) * B, "tokens with every optional output NULL");
    int64_t touched = 0;
    for (int i = 0; i < B; ++i)
      touched += b.status[i] != LG_POISON_TOKEN || lt_f32_bits(b.lse[i]) != LG_POISON_BITS ||
                 lt_f32_bits(b.token_logprob[i]) != LG_POISON_BITS;
    for (int i = 0; i < B * V; ++i) touched += lt_f32_bits(b.logprobs[i]) != LG_POISON_BITS;
    LMF_CHECK_MSG(touched == 0, "%lld elements of NULL'd outputs' buffers written (through what pointer?)",
                  (long long)touched);
  }
done:
  free(ws);
  lg_models_free(&ms);
  lg_out_free(&a);
  lg_out_free(&b);
  lmf_context_destroy(ctx);
}

/* Ties go to the lowest token id: greedy, top-k, top-p. */
void test_logits_ties(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  /* Row 0: max 3 at tokens 1, 3, 4 (z_a + z_b ties), greedy -> 1. Row 1: all equal, top-k 2 -> {0, 1}.
   * Row 2: all equal, top-p 0.35 -> {0, 1} (mass 0.4 >= 0.35). */
  static const float za[3 * 5] = {1, 2, 0, 3, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1};
  static const float zb[3 * 5] = {1, 1, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int di = 0; di < 3; ++di) {
    lg_models ms;
    lg_models_init(&ms);
    lg_models_add(&ms, lg_dtypes[di], za, 3, 5, 1.0f);
    lg_models_add(&ms, lg_dtypes[di], zb, 3, 5, 1.0f);
    lg_out o;
    if (ms.K == 2 && lg_out_alloc(&o, 1, 5, 0, 0)) {
      lmf_logits_params_t p;
      lg_params(&p, 1);
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) LMF_CHECK_EQ_INT(o.tokens[0], 1);
      static const double half[5] = {-0.69314718, -0.69314718, -INFINITY, -INFINITY, -INFINITY};
      for (int k = 0; k < 2; ++k) ms.m[k].logits = (const char *)ms.buf[k] + 5 * lmf_dtype_size(lg_dtypes[di]);
      p.top_k = 2;
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        LG_CHECK_LOGPROBS(o.logprobs, half, 5, TOL, "top-k 2 over five equal logits");
        LMF_CHECK_EQ_INT(o.tokens[0], 0);
      }
      for (int k = 0; k < 2; ++k) ms.m[k].logits = (const char *)ms.buf[k] + 10 * lmf_dtype_size(lg_dtypes[di]);
      p.top_k = 0;
      p.top_p = 0.35f;
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        LG_CHECK_LOGPROBS(o.logprobs, half, 5, TOL, "top-p 0.35 over five equal logits");
        LMF_CHECK_EQ_INT(o.tokens[0], 0);
      }
      lg_out_free(&o);
    }
    lg_models_free(&ms);
  }
  lmf_context_destroy(ctx);
}

/* Top-p's target where the candidates near the max cannot hold it (docs/logits.md, "Sampling and the
 * determinism guarantee"): top_p times the combine pass's total, not times the sum of every token's mass
 * (lg_topp_total_row), and that total as its 8-token groups add it, not every mass in double
 * (lg_topp_group_row). Each builds a row where the two need different numbers of tied tokens; the
 * log-prob row shows how many survived, and the token is one of them. */
void test_logits_topp_target_is_combine_total(void) {
  enum { V = 4 * 2048 };
  static int32_t (*const rows[2])(float *, int32_t, float *, int32_t *) = {lg_topp_total_row, lg_topp_group_row};
  static const char *const names[2] = {"the masses' sum", "every mass in double"};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *z = (float *)lt_malloc(sizeof(float) * V);
  for (int r = 0; r < 2 && ctx && z; ++r) {
    lg_models ms;
    lg_models_init(&ms);
    lg_out o;
    memset(&o, 0, sizeof o);
    float top_p = 0.0f;
    int32_t other = 0;
    const int32_t want = rows[r](z, V, &top_p, &other);
    if (LMF_CHECK_MSG(want > 1, "row %d: no top_p in [0.85, 0.95) separates the two targets", r) &&
        LMF_CHECK(lg_models_add(&ms, LMF_DTYPE_F32, z, 1, V, 1.0f) >= 0) && LMF_CHECK(lg_out_alloc(&o, 1, V, 0, 0))) {
      lmf_logits_params_t p;
      lg_params(&p, 1);
      p.temperature = 1.0f;
      p.top_p = top_p;
      const uint64_t seed = 3;
      p.seeds = &seed;
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        int32_t alive = 0;
        for (int32_t v = 0; v < V; ++v) alive += o.logprobs[v] > -INFINITY;
        LMF_CHECK_MSG(alive == want, "row %d, top_p %a: %d survivors, want %d (%s as the total: %d)", r,
                      (double)top_p, (int)alive, (int)want, names[r], (int)other);
        LMF_CHECK_MSG(o.tokens[0] >= 0 && o.logprobs[o.tokens[0]] > -INFINITY, "row %d: token %d is not a survivor",
                      r, (int)o.tokens[0]);
      }
    }
    lg_out_free(&o);
    lg_models_free(&ms);
  }
  free(z);
  lmf_context_destroy(ctx);
}

/* GeDi over several greedy steps of a batch: each step's token, logP(desired | token) and state against
 * the reference fed the library's own state. */
void test_logits_gedi_steps(void) {
  enum { B = 3, V = 200, STEPS = 4 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float L_pos[B] = {0, -3.5f, -20}, L_neg[B] = {0, -4.25f, -18}, Lp0[B], Ln0[B];
  int32_t n[B] = {0, 2, 9}, n0[B];
  float z[B * V];
  for (int step = 0; step < STEPS; ++step) {
    lg_models ms;
    lg_models_init(&ms);
    for (int k = 0; k < 3; ++k) {
      fill_q(z, B * V, k == 0 ? 2.0 : 1.5, 1000 + 10 * (uint64_t)step + (uint64_t)k);
      lg_models_add(&ms, lg_dtypes[(k + step) % 3], z, B, V, k == 0 ? 1.0f : 0.0f);
    }
    lmf_logits_params_t p;
    lg_params(&p, B);
    p.gedi_pos_model = 1;
    p.gedi_neg_model = 2;
    p.gedi_omega = 30.0f;
    p.gedi_logit_scale = 1.0f;
    p.gedi_bias_pos = p.gedi_bias_neg = p.gedi_class_bias = 0.0f;
    p.gedi_filter_p = step % 2 ? 0.8f : 0.0f;
    p.gedi_target_p = 0.8f;
    p.gedi_L_pos = L_pos;
    p.gedi_L_neg = L_neg;
    p.gedi_n = n;
    memcpy(Lp0, L_pos, sizeof Lp0);
    memcpy(Ln0, L_neg, sizeof Ln0);
    memcpy(n0, n, sizeof n0);
    lmf_logits_params_t before = p;
    before.gedi_L_pos = Lp0;
    before.gedi_L_neg = Ln0;
    before.gedi_n = n0;
    lg_out o;
    if (ms.K == 3 && lg_out_alloc(&o, B, V, 0, 1)) {
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        for (int32_t b = 0; b < B; ++b) {
          char what[64];
          snprintf(what, sizeof what, "GeDi step %d", step);
          if (!COMPARE_ROW(ms.m, ms.K, &before, b, &o, TOL, what)) continue;
          ref_lg_result r;
          double ld[V];
          memset(&r, 0, sizeof r);
          r.logp_desired = ld;
          lg_ref_row(ms.m, ms.K, &before, b, &r);
          int32_t y = o.tokens[b];
          if (!LMF_CHECK(y >= 0)) continue;
          /* The state after the library's token. */
          double xp[V], xn[V];
          lg_decode(xp, ms.m[1].dtype, (const char *)ms.buf[1] + (size_t)b * V * lmf_dtype_size(ms.m[1].dtype), V);
          lg_decode(xn, ms.m[2].dtype, (const char *)ms.buf[2] + (size_t)b * V * lmf_dtype_size(ms.m[2].dtype), V);
          double wp = Lp0[b] + xp[y] - ref_lg_lse(xp, V), wn = Ln0[b] + xn[y] - ref_lg_lse(xn, V);
          LMF_CHECK_MSG(fabs((double)L_pos[b] - wp) <= 1e-4, "%s row %d: L_pos %.9g, expected %.9g", what, (int)b,
                        (double)L_pos[b], wp);
          LMF_CHECK_MSG(fabs((double)L_neg[b] - wn) <= 1e-4, "%s row %d: L_neg %.9g, expected %.9g", what, (int)b,
                        (double)L_neg[b], wn);
          LMF_CHECK_EQ_INT(n[b], n0[b] + 1);
          LMF_CHECK_MSG(fabs((double)o.gedi_logp_desired[b] - ld[y]) <= TOL, "%s row %d: logP(desired|%d) %.9g, ref %.9g",
                        what, (int)b, (int)y, (double)o.gedi_logp_desired[b], ld[y]);
        }
      }
      lg_out_free(&o);
    }
    lg_models_free(&ms);
  }
  lmf_context_destroy(ctx);
}

/* Speculative verification's row layout (row b * (draft_len + 1) + i holds position i of sequence b),
 * greedy: a draft token is accepted exactly when it is its row's argmax, the correction is the argmax of
 * the first rejected row, the bonus the argmax of row draft_len. */
void test_logits_verify_greedy_layout(void) {
  enum { S = 4, L = 3, R = S * (L + 1), V = 50 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float z[R * V];
  lg_models ms;
  lg_models_init(&ms);
  static const float coeff[3] = {1.0f, 1.0f, -1.0f};
  for (int k = 0; k < 3; ++k) {
    fill_q(z, R * V, 2.0, 90 + (uint64_t)k);
    lg_models_add(&ms, lg_dtypes[k], z, R, V, coeff[k]);
  }
  lmf_logits_params_t p;
  lg_params(&p, R); /* T = 0, no seeds */
  int32_t arg[R];
  for (int32_t r = 0; r < R; ++r) {
    ref_lg_result rr;
    memset(&rr, 0, sizeof rr);
    lg_ref_row(ms.m, ms.K, &p, r, &rr);
    arg[r] = rr.argmax;
  }
  /* Sequence b accepts want_acc[b] tokens, then drafts a wrong one. */
  static const int32_t want_acc[S] = {3, 1, 0, 2};
  int32_t draft[S * L], acc[S], next[S], st[S];
  for (int b = 0; b < S; ++b)
    for (int i = 0; i < L; ++i) {
      int32_t a = arg[b * (L + 1) + i];
      draft[b * L + i] = i < want_acc[b] ? a : (i == want_acc[b] ? (a + 1) % V : (a + 7) % V);
    }
  if (ms.K == 3 && LMF_CHECK_OK(lg_verify(ctx, ms.m, ms.K, &p, 1, draft, L, acc, next, st))) {
    for (int b = 0; b < S; ++b) {
      LMF_CHECK_MSG(st[b] == LMF_ROW_OK, "sequence %d: status %d", b, (int)st[b]);
      LMF_CHECK_MSG(acc[b] == want_acc[b], "sequence %d: accepted %d, expected %d", b, (int)acc[b], (int)want_acc[b]);
      int32_t want_next = arg[b * (L + 1) + want_acc[b]];
      LMF_CHECK_MSG(next[b] == want_next, "sequence %d: next_token %d, expected %d (the argmax of row %d)", b,
                    (int)next[b], (int)want_next, (int)(b * (L + 1) + want_acc[b]));
    }
  }
  /* draft_len 0 (no draft tokens): every row is a sequence's bonus row, accepted 0. */
  int32_t acc0[R], next0[R], st0[R];
  if (ms.K == 3 && LMF_CHECK_OK(lg_verify(ctx, ms.m, ms.K, &p, 1, NULL, 0, acc0, next0, st0)))
    for (int b = 0; b < R; ++b)
      LMF_CHECK_MSG(acc0[b] == 0 && next0[b] == arg[b] && st0[b] == LMF_ROW_OK,
                    "draft_len 0, sequence %d: accepted %d, next %d (argmax %d), status %d", b, (int)acc0[b],
                    (int)next0[b], (int)arg[b], (int)st0[b]);
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
}

/* GeDi's class filter walks equal P(desired | v) by ascending token id (the spec's fixed rule): six
 * tokens with identical class logits (so bit-identical P), equal masses 1/8, filter_p 0.3: the walk
 * removes tokens 0 and 1 (cumulative 0.125, 0.25) and stops at token 2 (0.375). */
void test_logits_gedi_filter_ties(void) {
  static const float lm[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  static const float zp[8] = {0, 0, 0, 0, 0, 0, 3, 3};
  static const float zn[8] = {0, 0, 0, 0, 0, 0, -3, -3};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  for (int di = 0; di < 3; ++di) {
    lg_models ms;
    lg_models_init(&ms);
    lg_models_add(&ms, lg_dtypes[di], lm, 1, 8, 1.0f);
    lg_models_add(&ms, lg_dtypes[di], zp, 1, 8, 0.0f);
    lg_models_add(&ms, lg_dtypes[di], zn, 1, 8, 0.0f);
    float Lp = 0.0f, Ln = 0.0f;
    int32_t n = 0;
    lmf_logits_params_t p;
    lg_params(&p, 1);
    p.gedi_pos_model = 1;
    p.gedi_neg_model = 2;
    p.gedi_omega = 0.0f;
    p.gedi_logit_scale = 1.0f;
    p.gedi_filter_p = 0.3f;
    p.gedi_target_p = 0.8f;
    p.gedi_L_pos = &Lp;
    p.gedi_L_neg = &Ln;
    p.gedi_n = &n;
    lg_out o;
    if (ms.K == 3 && lg_out_alloc(&o, 1, 8, 0, 1)) {
      const double l6 = -log(6.0);
      const double want[8] = {-INFINITY, -INFINITY, l6, l6, l6, l6, l6, l6};
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        LG_CHECK_LOGPROBS(o.logprobs, want, 8, TOL, lg_dtype_name(lg_dtypes[di]));
        LMF_CHECK_EQ_INT(o.tokens[0], 2);
      }
      lg_out_free(&o);
    }
    lg_models_free(&ms);
  }
  lmf_context_destroy(ctx);
}
