/* Statistics of the sampler and of speculative verification (specs/logit-combination.md: "Statistics"
 * and T10), with fixed seeds, so every run draws the same tokens:
 *   - 10^6 draws of T1 (beta 1) match p within 5 sigma per token and pass a chi-square test; pairs of
 *     draws that differ only in the offset, or only in the seed, are independent;
 *   - the filters of T9 shape the sampled distribution, not just the log-prob outputs;
 *   - a 64-token row matches its distribution token by token;
 *   - T10: lmf_logits_verify_draft accepts draft token v with probability min(1, p(v)/q(v)), corrects
 *     from normalise(max(0, p - q)), and the token it emits at the draft position is distributed as p.
 * The chi-square threshold is fixed: the statistic's Wilson-Hilferty normal score must stay below 5
 * (about a 1-in-3.5-million false alarm), as must every per-cell deviation in sigmas. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_common.h"
#include "lmf_check.h"
#include "lmf_ref_logits.h"
#include "lmf_test_util.h"

#define SIGMAS 5.0

/* counts[i] of N draws against probabilities p[i] (cells with p = 0 must be empty). */
static int chi2_check_at(const int64_t *count, const double *p, int n, const char *what, const char *file, int line) {
  int64_t N = 0;
  for (int i = 0; i < n; ++i) N += count[i];
  int ok = lmf_t_check(N > 0, file, line, "%s: no draws", what);
  double chi2 = 0.0;
  int cells = 0;
  for (int i = 0; i < n && ok; ++i) {
    double e = (double)N * p[i];
    if (p[i] == 0.0) {
      ok &= lmf_t_check(count[i] == 0, file, line, "%s: cell %d has probability 0 but %lld draws", what, i,
                        (long long)count[i]);
      continue;
    }
    double sd = sqrt(e * (1.0 - p[i]));
    ok &= lmf_t_check(fabs((double)count[i] - e) <= SIGMAS * sd + 1.0, file, line,
                      "%s: cell %d: %lld draws, expected %.1f (%.2f sigma)", what, i, (long long)count[i], e,
                      ((double)count[i] - e) / sd);
    chi2 += ((double)count[i] - e) * ((double)count[i] - e) / e;
    ++cells;
  }
  if (!ok || cells < 2) return ok;
  const double k = cells - 1;
  const double z = (cbrt(chi2 / k) - (1.0 - 2.0 / (9.0 * k))) / sqrt(2.0 / (9.0 * k));
  return lmf_t_check(z < SIGMAS, file, line, "%s: chi-square %.2f with %d degrees of freedom (normal score %.2f)",
                     what, chi2, (int)k, z);
}
#define CHI2_CHECK(count, p, n, what) chi2_check_at((count), (p), (n), (what), __FILE__, __LINE__)

/* A binomial rate: k successes in n against probability q, within 5 sigma. */
static int rate_check_at(int64_t k, int64_t n, double q, const char *what, const char *file, int line) {
  double sd = sqrt((double)n * q * (1.0 - q));
  double e = (double)n * q;
  return lmf_t_check(fabs((double)k - e) <= SIGMAS * sd + 1.0, file, line,
                     "%s: %lld of %lld, expected rate %.6f (got %.6f, %.2f sigma)", what, (long long)k, (long long)n, q,
                     (double)k / (double)n, sd > 0 ? ((double)k - e) / sd : 0.0);
}
#define RATE_CHECK(k, n, q, what) rate_check_at((k), (n), (q), (what), __FILE__, __LINE__)

/* softmax of a double vector. */
static void softmax(const double *x, int n, double *p) {
  double l = ref_lg_lse(x, n);
  for (int i = 0; i < n; ++i) p[i] = x[i] == -INFINITY ? 0.0 : exp(x[i] - l);
}

/* ---- 10^6 draws of T1 -------------------------------------------------------------------------------- */

enum { S_B = 50000, S_CALLS = 20 };

void test_logits_stats_t1_million(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  int32_t *tok = (int32_t *)lt_malloc(sizeof(int32_t) * S_B * S_CALLS);
  int32_t *ri = (int32_t *)lt_malloc(sizeof(int32_t) * S_B);
  uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * S_B);
  uint64_t *offsets = (uint64_t *)lt_malloc(sizeof(uint64_t) * S_B);
  lg_out o;
  memset(&o, 0, sizeof o);
  lg_models ms;
  lg_models_init(&ms);
  if (!tok || !ri || !seeds || !offsets || !lg_out_alloc(&o, S_B, 5, 0, 0)) goto done;
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zL, 1, 5, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zSf, 1, 5, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zSb, 1, 5, -1.0f);
  for (int b = 0; b < S_B; ++b) {
    ri[b] = 0;
    seeds[b] = 0x1000 + (uint64_t)b;
  }
  for (size_t k = 0; k < ms.K; ++k) ms.m[k].row_index = ri;
  /* Row b of call c: seed 0x1000 + b, offset c (the decoding step). */
  for (int c = 0; c < S_CALLS; ++c) {
    for (int b = 0; b < S_B; ++b) offsets[b] = (uint64_t)c;
    lmf_logits_params_t p;
    lg_params(&p, S_B);
    p.temperature = 1.0f;
    p.seeds = seeds;
    p.offsets = offsets;
    if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) goto done;
    memcpy(tok + (size_t)c * S_B, o.tokens, sizeof(int32_t) * S_B);
  }
  double s[5], pr[5];
  for (int v = 0; v < 5; ++v) s[v] = (double)lg_t1_zL[v] + lg_t1_zSf[v] - lg_t1_zSb[v];
  softmax(s, 5, pr);
  {
    int64_t count[5] = {0};
    for (int i = 0; i < S_B * S_CALLS; ++i) {
      if (!LMF_CHECK_MSG(tok[i] >= 0 && tok[i] < 5, "draw %d: token %d", i, (int)tok[i])) goto done;
      count[tok[i]]++;
    }
    CHI2_CHECK(count, pr, 5, "T1 x 10^6");
    /* The first call alone (50000 seeds at one offset) too. */
    int64_t first[5] = {0};
    for (int i = 0; i < S_B; ++i) first[tok[i]]++;
    CHI2_CHECK(first, pr, 5, "T1, one call of 50000 seeds");
  }
  {
    /* Independence: (seed b, offset c) vs (seed b, offset c + 1), and (seed 2j, c) vs (seed 2j + 1, c). */
    double pp[25];
    for (int i = 0; i < 5; ++i)
      for (int j = 0; j < 5; ++j) pp[5 * i + j] = pr[i] * pr[j];
    int64_t by_offset[25] = {0}, by_seed[25] = {0};
    for (int c = 0; c + 1 < S_CALLS; c += 2)
      for (int b = 0; b < S_B; ++b) by_offset[5 * tok[(size_t)c * S_B + b] + tok[(size_t)(c + 1) * S_B + b]]++;
    for (int c = 0; c < S_CALLS; ++c)
      for (int b = 0; b + 1 < S_B; b += 2) by_seed[5 * tok[(size_t)c * S_B + b] + tok[(size_t)c * S_B + b + 1]]++;
    CHI2_CHECK(by_offset, pp, 25, "pairs of draws at consecutive offsets");
    CHI2_CHECK(by_seed, pp, 25, "pairs of draws with consecutive seeds");
  }
done:
  lg_models_free(&ms);
  lg_out_free(&o);
  free(tok);
  free(ri);
  free(seeds);
  free(offsets);
  lmf_context_destroy(ctx);
}

/* ---- Filters shape the samples (T9), and a 64-token row ------------------------------------------------- */

static void sample_counts(lmf_context_t *ctx, lg_models *ms, lmf_logits_params_t *p, int32_t V, int calls,
                          int64_t *count, const char *what) {
  const int32_t B = p->num_rows;
  int32_t *ri = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)B);
  uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
  uint64_t *offsets = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
  lg_out o;
  memset(&o, 0, sizeof o);
  if (ri && seeds && offsets && lg_out_alloc(&o, B, V, 0, 0)) {
    for (int b = 0; b < B; ++b) ri[b] = 0, seeds[b] = 77 + (uint64_t)b;
    for (size_t k = 0; k < ms->K; ++k) ms->m[k].row_index = ri;
    p->seeds = seeds;
    p->offsets = offsets;
    for (int c = 0; c < calls; ++c) {
      for (int b = 0; b < B; ++b) offsets[b] = 1000 + (uint64_t)c;
      if (!LMF_CHECK_OK(lg_combine(ctx, ms->m, ms->K, p, &o))) break;
      for (int b = 0; b < B; ++b) {
        if (!LMF_CHECK_MSG(o.tokens[b] >= 0 && o.tokens[b] < V, "%s: token %d", what, (int)o.tokens[b])) break;
        count[o.tokens[b]]++;
      }
    }
    for (size_t k = 0; k < ms->K; ++k) ms->m[k].row_index = NULL;
  }
  lg_out_free(&o);
  free(ri);
  free(seeds);
  free(offsets);
}

void test_logits_stats_t9_filters(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zL, 1, 5, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zSf, 1, 5, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F32, lg_t1_zSb, 1, 5, -1.0f);
  for (int f = 0; f < 4; ++f) {
    lmf_logits_params_t p;
    lg_params(&p, 25000);
    p.temperature = 0.7f;
    const char *name = "T = 0.7";
    if (f == 1) p.top_k = 3, name = "T = 0.7, top-k 3";
    if (f == 2) p.top_p = 0.9f, name = "T = 0.7, top-p 0.9";
    if (f == 3) p.min_p = 0.05f, name = "T = 0.7, min-p 0.05";
    double pr[5];
    ref_lg_result r;
    memset(&r, 0, sizeof r);
    r.logprobs = pr;
    lg_ref_row(ms.m, ms.K, &p, 0, &r);
    for (int v = 0; v < 5; ++v) pr[v] = exp(pr[v]);
    int64_t count[5] = {0};
    sample_counts(ctx, &ms, &p, 5, 8, count, name);
    CHI2_CHECK(count, pr, 5, name);
  }
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
}

void test_logits_stats_v64(void) {
  enum { V = 64 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  float a[V], b[V];
  lt_fill_normal(a, V, 0.0, 1.0, 31);
  lt_fill_normal(b, V, 0.0, 0.5, 32);
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, LMF_DTYPE_BF16, a, 1, V, 1.0f);
  lg_models_add(&ms, LMF_DTYPE_F16, b, 1, V, -0.5f);
  lmf_logits_params_t p;
  lg_params(&p, 25000);
  p.temperature = 1.25f;
  double pr[V];
  ref_lg_result r;
  memset(&r, 0, sizeof r);
  r.logprobs = pr;
  lg_ref_row(ms.m, ms.K, &p, 0, &r);
  for (int v = 0; v < V; ++v) pr[v] = exp(pr[v]);
  int64_t count[V] = {0};
  sample_counts(ctx, &ms, &p, V, 20, count, "V = 64");
  CHI2_CHECK(count, pr, V, "V = 64, bf16 and f16 models, T = 1.25, 5 x 10^5 draws");
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
}

/* ---- T10: speculative verification (draft_len 1) --------------------------------------------------------- */

/* One verify call over S sequences of the same position-0 and bonus rows (row_index 0), draft tokens
 * given. seeds[i] = seed0 + i over all 2S rows: distinct per sequence whether sequence b reads seeds[b]
 * or the seed of its first row, seeds[2b]. Fills accepted and next. */
static int verify_run(lmf_context_t *ctx, lg_models *ms, int32_t draft_model, const int32_t *draft, int32_t S,
                      uint64_t seed0, int32_t *accepted, int32_t *next, int32_t *status) {
  const int32_t R = 2 * S;
  int32_t *ri = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)R);
  uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)R);
  int ok = 0;
  if (ri && seeds) {
    for (int32_t i = 0; i < R; ++i) ri[i] = 0, seeds[i] = seed0 + (uint64_t)i;
    for (size_t k = 0; k < ms->K; ++k) ms->m[k].row_index = ri;
    lmf_logits_params_t p;
    lg_params(&p, R);
    p.temperature = 1.0f;
    p.seeds = seeds;
    ok = LMF_CHECK_OK(lg_verify(ctx, ms->m, ms->K, &p, draft_model, draft, 1, accepted, next, status));
    for (int32_t b = 0; b < S && ok; ++b) ok &= LMF_CHECK_MSG(status[b] == LMF_ROW_OK, "sequence %d: status %d", (int)b, (int)status[b]);
    for (size_t k = 0; k < ms->K; ++k) ms->m[k].row_index = NULL;
  }
  free(ri);
  free(seeds);
  return ok;
}

/* Draws n tokens from p with the test's own generator. */
static void draw(const double *p, int V, int32_t *out, int32_t n, uint64_t seed) {
  uint64_t st = seed;
  for (int32_t i = 0; i < n; ++i) {
    double u = lt_uniform(&st), c = 0.0;
    int32_t t = V - 1;
    for (int v = 0; v < V; ++v) {
      c += p[v];
      if (u < c) {
        t = v;
        break;
      }
    }
    out[i] = t;
  }
}

/* Runs the checks of T10 on models (p: the combination; q: softmax of model draft_model) of V tokens.
 * acc_want: the spec's acceptance probabilities (NULL: computed), res_want likewise for the residual. */
static void verify_checks(lmf_context_t *ctx, lg_models *ms, int32_t draft_model, int V, const double *acc_want,
                          const double *res_want, double overlap_want, const char *name) {
  enum { PER = 20000, SQ = 200000 };
  double pp[16], q[16], acc[16], res[16], x[16];
  char what[128];
  {
    ref_lg_result r;
    memset(&r, 0, sizeof r);
    r.logprobs = x;
    lmf_logits_params_t p;
    lg_params(&p, 1);
    p.temperature = 1.0f;
    lg_ref_row(ms->m, ms->K, &p, 0, &r);
    for (int v = 0; v < V; ++v) pp[v] = exp(x[v]);
    double zq[16];
    lg_decode(zq, ms->m[draft_model].dtype, ms->buf[draft_model], V);
    softmax(zq, V, q);
    double rs = 0.0, ov = 0.0;
    for (int v = 0; v < V; ++v) {
      acc[v] = pp[v] >= q[v] ? 1.0 : pp[v] / q[v];
      res[v] = pp[v] > q[v] ? pp[v] - q[v] : 0.0;
      rs += res[v];
      ov += pp[v] < q[v] ? pp[v] : q[v];
    }
    for (int v = 0; v < V; ++v) res[v] /= rs;
    for (int v = 0; v < V && acc_want; ++v) LMF_CHECK_NEAR(acc[v], acc_want[v], 1e-6);
    for (int v = 0; v < V && res_want; ++v) LMF_CHECK_NEAR(res[v], res_want[v], 1e-6);
    if (overlap_want > 0) LMF_CHECK_NEAR(ov, overlap_want, 1e-6);
  }
  int32_t *draft = (int32_t *)lt_malloc(sizeof(int32_t) * SQ);
  int32_t *accepted = (int32_t *)lt_malloc(sizeof(int32_t) * SQ);
  int32_t *next = (int32_t *)lt_malloc(sizeof(int32_t) * SQ);
  int32_t *status = (int32_t *)lt_malloc(sizeof(int32_t) * SQ);
  if (!draft || !accepted || !next || !status) goto done;

  /* (a) Draft token v fixed: acceptance rate min(1, p/q); corrections from the residual. */
  {
    const int32_t S = PER * V;
    for (int32_t b = 0; b < S; ++b) draft[b] = b % V;
    if (!verify_run(ctx, ms, draft_model, draft, S, 5000, accepted, next, status)) goto done;
    int64_t corr[16] = {0};
    for (int v = 0; v < V; ++v) {
      int64_t k = 0;
      for (int32_t b = v; b < S; b += V) {
        k += accepted[b];
        if (!accepted[b]) corr[next[b]]++;
      }
      snprintf(what, sizeof what, "%s: acceptance of draft token %d", name, v);
      if (acc[v] == 1.0) LMF_CHECK_MSG(k == PER, "%s: %lld of %d accepted, expected all", what, (long long)k, PER);
      else RATE_CHECK(k, PER, acc[v], what);
    }
    snprintf(what, sizeof what, "%s: corrections after a rejection", name);
    CHI2_CHECK(corr, res, V, what);
  }

  /* (b) Draft tokens drawn from q: acceptance rate sum min(p, q); the token emitted at the draft position
   * (the draft if accepted, else the correction) is distributed as p; so is the bonus token. */
  {
    draw(q, V, draft, SQ, 99);
    if (!verify_run(ctx, ms, draft_model, draft, SQ, 1000000, accepted, next, status)) goto done;
    int64_t k = 0, emitted[16] = {0}, bonus[16] = {0};
    double ov = 0.0;
    for (int v = 0; v < V; ++v) ov += pp[v] < q[v] ? pp[v] : q[v];
    for (int32_t b = 0; b < SQ; ++b) {
      k += accepted[b];
      emitted[accepted[b] ? draft[b] : next[b]]++;
      if (accepted[b]) bonus[next[b]]++;
    }
    snprintf(what, sizeof what, "%s: acceptance rate with drafts from q", name);
    RATE_CHECK(k, SQ, ov, what);
    snprintf(what, sizeof what, "%s: the emitted token follows p", name);
    CHI2_CHECK(emitted, pp, V, what);
    snprintf(what, sizeof what, "%s: the bonus token follows p", name);
    CHI2_CHECK(bonus, pp, V, what);
  }
done:
  free(draft);
  free(accepted);
  free(next);
  free(status);
}

static void t10(int32_t dt) {
  static const double acc[5] = {1.0, 0.935527, 0.935527, 0.935527, 0.935527};
  static const double res[5] = {1.0, 0.0, 0.0, 0.0, 0.0};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, dt, lg_t1_zL, 1, 5, 1.0f);
  lg_models_add(&ms, dt, lg_t1_zSf, 1, 5, 1.0f); /* the drafter: small fine-tuned */
  lg_models_add(&ms, dt, lg_t1_zSb, 1, 5, -1.0f);
  char name[64];
  snprintf(name, sizeof name, "T10 %s", lg_dtype_name(dt));
  verify_checks(ctx, &ms, 1, 5, acc, res, 0.942377, name);
  lg_models_free(&ms);

  /* A drafter whose residual spreads over several tokens (and is not one of the combined models). */
  {
    static const float zA[6] = {1.0f, 0.5f, 0.0f, -0.5f, 0.25f, -1.0f};
    static const float zQ[6] = {0.0f, 1.0f, 0.75f, 0.5f, -1.0f, 0.25f};
    static const float zB[6] = {0.5f, 0.0f, 0.0f, 0.25f, 0.0f, 0.0f};
    lg_models_init(&ms);
    lg_models_add(&ms, dt, zA, 1, 6, 1.0f);
    lg_models_add(&ms, dt, zB, 1, 6, -1.0f);
    lg_models_add(&ms, dt, zQ, 1, 6, 0.0f); /* the drafter, c = 0 */
    snprintf(name, sizeof name, "T10 %s, spread residual", lg_dtype_name(dt));
    verify_checks(ctx, &ms, 2, 6, NULL, NULL, 0.0, name);
    lg_models_free(&ms);
  }
  lmf_context_destroy(ctx);
}

void test_logits_t10_f32(void) { t10(LMF_DTYPE_F32); }
void test_logits_t10_f16(void) { t10(LMF_DTYPE_F16); }
void test_logits_t10_bf16(void) { t10(LMF_DTYPE_BF16); }
