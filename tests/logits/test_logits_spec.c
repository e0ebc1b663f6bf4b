/* The logit-combination spec's test vectors T1-T9 (specs/logit-combination.md, "Test vectors") on the CPU
 * backend, each in fp32, fp16 and bf16 (the inputs are multiples of 0.25, exact in all three; T8's are
 * not, so its 16-bit cases compare with the double reference of the rounded inputs). Log-prob outputs
 * are compared with the spec's numbers within 1e-5 (the library accumulates in fp32), probabilities the
 * spec gives to six decimals within 2e-6, tokens exactly. T10 (statistical) is in test_logits_stats.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lg_common.h"
#include "lmf_check.h"
#include "lmf_ref_logits.h"
#include "lmf_test_util.h"

#define TOL 1e-5
#define PTOL 2e-6

static const double NEG_INF = -INFINITY;

/* exp(logprobs) against probabilities given to six decimals (0 = masked: -inf exactly). */
static int check_probs_at(const float *lp, const double *p, int n, const char *what, const char *file, int line) {
  int ok = 1;
  for (int v = 0; v < n; ++v) {
    if (p[v] == 0.0)
      ok &= lmf_t_check(lp[v] == -INFINITY, file, line, "%s: token %d: logprob %.9g, expected -inf", what, v,
                        (double)lp[v]);
    else
      ok &= lmf_t_check(fabs(exp((double)lp[v]) - p[v]) <= PTOL, file, line,
                        "%s: token %d: probability %.9g, expected %.6f", what, v, exp((double)lp[v]), p[v]);
  }
  return ok;
}
#define CHECK_PROBS(lp, p, n, what) check_probs_at((lp), (p), (n), (what), __FILE__, __LINE__)

static double lse5(const float *z) {
  double x[5];
  for (int v = 0; v < 5; ++v) x[v] = z[v];
  return ref_lg_lse(x, 5);
}

/* The log-softmax of a 5-vector, rounded to fp32. */
static void log_softmax5(const float *z, float *out) {
  double l = lse5(z);
  for (int v = 0; v < 5; ++v) out[v] = (float)((double)z[v] - l);
}

/* Checks the row-0 scalars of an OK greedy row: token, status, token_logprob. */
static void check_row0(const lg_out *o, int32_t token, double token_lp, const char *what) {
  LMF_CHECK_MSG(o->tokens[0] == token, "%s: token %d, expected %d", what, (int)o->tokens[0], (int)token);
  LMF_CHECK_MSG(o->status[0] == LMF_ROW_OK, "%s: status %d", what, (int)o->status[0]);
  LMF_CHECK_MSG(fabs((double)o->token_logprob[0] - token_lp) <= TOL, "%s: token_logprob %.9g, expected %.6f", what,
                (double)o->token_logprob[0], token_lp);
}

#define DTYPE_CASES(fn)                                   \
  void test_logits_##fn##_f32(void) { fn(LMF_DTYPE_F32); } \
  void test_logits_##fn##_f16(void) { fn(LMF_DTYPE_F16); } \
  void test_logits_##fn##_bf16(void) { fn(LMF_DTYPE_BF16); }

/* ---- T1: EFT up-scaling / proxy-tuning ------------------------------------------------------------ */

static const double t1_lp_b1[5] = {-1.808763, -0.308763, -3.308763, -5.308763, -2.808763};
static const double t1_p_b1[5] = {0.163857, 0.734354, 0.036561, 0.004948, 0.060279};
static const double t1_lp_b05[5] = {-1.018508, -0.768508, -2.518508, -4.268508, -2.518508};
static const double t1_lp_b2[5] = {-4.040233, -0.040233, -5.540233, -8.040233, -4.040233};

static void t1(int32_t dt) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  char what[96];
  lg_out o;
  if (!lg_out_alloc(&o, 1, 5, 0, 0)) goto done;
  lmf_logits_params_t p;
  lg_params(&p, 1);

  /* Each model alone: lse is the model's LSE (T = 1 for the distribution outputs of a greedy call). */
  {
    const float *z[3] = {lg_t1_zL, lg_t1_zSf, lg_t1_zSb};
    const double lse[3] = {2.574438, 3.242119, 2.324011};
    for (int k = 0; k < 3; ++k) {
      lg_models ms;
      lg_models_init(&ms);
      lg_models_add(&ms, dt, z[k], 1, 5, 1.0f);
      snprintf(what, sizeof what, "T1 %s: model %d alone", lg_dtype_name(dt), k);
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o)))
        LMF_CHECK_MSG(fabs((double)o.lse[0] - lse[k]) <= TOL, "%s: lse %.9g, expected %.6f", what, (double)o.lse[0],
                      lse[k]);
      lg_models_free(&ms);
    }
  }

  /* Raw logits, coefficients (+1, +beta, -beta). */
  {
    const float betas[3] = {1.0f, 0.5f, 2.0f};
    const double *want[3] = {t1_lp_b1, t1_lp_b05, t1_lp_b2};
    for (int i = 0; i < 3; ++i) {
      lg_models ms;
      lg_models_init(&ms);
      lg_models_add(&ms, dt, lg_t1_zL, 1, 5, 1.0f);
      lg_models_add(&ms, dt, lg_t1_zSf, 1, 5, betas[i]);
      lg_models_add(&ms, dt, lg_t1_zSb, 1, 5, -betas[i]);
      snprintf(what, sizeof what, "T1 %s beta %g", lg_dtype_name(dt), (double)betas[i]);
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        LG_CHECK_LOGPROBS(o.logprobs, want[i], 5, TOL, what);
        check_row0(&o, 1, want[i][1], what);
        /* s(1) = 1 + 2 beta with raw logits; lse = s(1) - logprob(1). */
        double lse = 1.0 + 2.0 * betas[i] - want[i][1];
        LMF_CHECK_MSG(fabs((double)o.lse[0] - lse) <= TOL, "%s: lse %.9g, expected %.6f", what, (double)o.lse[0], lse);
        if (i == 0) CHECK_PROBS(o.logprobs, t1_p_b1, 5, what);
      }
      lg_models_free(&ms);
    }
  }

  /* Log-softmax inputs give the same log-probs; their combined LSE is -0.183782 (fp32: the log-softmax
   * values are not multiples of 0.25). */
  if (dt == LMF_DTYPE_F32) {
    float lL[5], lSf[5], lSb[5];
    log_softmax5(lg_t1_zL, lL);
    log_softmax5(lg_t1_zSf, lSf);
    log_softmax5(lg_t1_zSb, lSb);
    lg_models ms;
    lg_models_init(&ms);
    lg_models_add(&ms, dt, lL, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lSf, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lSb, 1, 5, -1.0f);
    snprintf(what, sizeof what, "T1 log-softmax inputs");
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
      LG_CHECK_LOGPROBS(o.logprobs, t1_lp_b1, 5, TOL, what);
      check_row0(&o, 1, t1_lp_b1[1], what);
      LMF_CHECK_MSG(fabs((double)o.lse[0] - -0.183782) <= TOL, "%s: lse %.9g, expected -0.183782", what,
                    (double)o.lse[0]);
    }
    lg_models_free(&ms);
  }
done:
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t1)

/* ---- T2: EFT with behaviour interpolation ---------------------------------------------------------- */

static void t2(int32_t dt) {
  static const double want[5] = {-1.844945, -1.394945, -0.894945, -3.944945, -1.794945};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  lg_models ms;
  lg_models_init(&ms);
  if (lg_out_alloc(&o, 1, 5, 0, 0)) {
    lg_models_add(&ms, dt, lg_t1_zL, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t1_zSf, 1, 5, 0.3f); /* zHelp = zSf */
    lg_models_add(&ms, dt, lg_t2_zSafe, 1, 5, 0.7f);
    lg_models_add(&ms, dt, lg_t1_zSb, 1, 5, -1.0f);
    lmf_logits_params_t p;
    lg_params(&p, 1);
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
      LG_CHECK_LOGPROBS(o.logprobs, want, 5, TOL, "T2");
      check_row0(&o, 2, want[2], "T2");
    }
  }
  lg_models_free(&ms);
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t2)

/* ---- T3: contrastive decoding (plausibility on the expert, alpha 0.1) ------------------------------ */

static void t3(int32_t dt) {
  static const double want_1[5] = {-1.766368, -0.266368, -INFINITY, -INFINITY, -2.766368};
  static const double want_15[5] = {-0.861247, -0.611247, -INFINITY, -INFINITY, -3.361247};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  if (!lg_out_alloc(&o, 1, 5, 0, 0)) goto done;
  const float ce[2] = {1.0f, 1.5f}, ca[2] = {-1.0f, -0.5f};
  const double *want[2] = {want_1, want_15};
  for (int i = 0; i < 2; ++i) {
    lg_models ms;
    lg_models_init(&ms);
    lg_models_add(&ms, dt, lg_t3_zE, 1, 5, ce[i]);
    lg_models_add(&ms, dt, lg_t3_zA, 1, 5, ca[i]);
    lmf_logits_params_t p;
    lg_params(&p, 1);
    p.plausibility_model = 0;
    p.plausibility_alpha = 0.1f;
    char what[64];
    snprintf(what, sizeof what, "T3 %s (%g, %g)", lg_dtype_name(dt), (double)ce[i], (double)ca[i]);
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
      LG_CHECK_LOGPROBS(o.logprobs, want[i], 5, TOL, what);
      check_row0(&o, 1, want[i][1], what);
    }
    /* Without the mask, tokens 2 and 3 come back (s = [0, 1.5, 2, 0, -1]: greedy 2 for (1, -1)). */
    if (i == 0) {
      p.plausibility_model = -1;
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
        LMF_CHECK_EQ_INT(o.tokens[0], 2);
        LMF_CHECK(isfinite(o.logprobs[3]));
      }
    }
    lg_models_free(&ms);
  }
done:
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t3)

/* ---- T4: DExperts (alpha 2, the base model's nucleus 0.9) ------------------------------------------- */

static void t4(int32_t dt) {
  static const double want[5] = {-2.589609, -7.589609, -0.089609, -INFINITY, -4.589609};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  lg_models ms;
  lg_models_init(&ms);
  if (lg_out_alloc(&o, 1, 5, 0, 0)) {
    lg_models_add(&ms, dt, lg_t4_zb, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t4_ze, 1, 5, 2.0f);
    lg_models_add(&ms, dt, lg_t4_za, 1, 5, -2.0f);
    lmf_logits_params_t p;
    lg_params(&p, 1);
    p.nucleus_model = 0;
    p.nucleus_p = 0.9f;
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
      LG_CHECK_LOGPROBS(o.logprobs, want, 5, TOL, "T4");
      check_row0(&o, 2, want[2], "T4");
    }
  }
  lg_models_free(&ms);
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t4)

/* ---- T5, T6: GeDi ---------------------------------------------------------------------------------------- */

static const double t5_pdes[5] = {0.5, 0.5, 0.645656, 0.549834, 0.549834};
static const double t5_s30[5] = {-21.564307, -22.064307, -14.894530, -20.714058, -21.714058};
static const double t6_logp[5] = {-1.313262, -1.313262, -0.126928, -0.693147, -0.693147};

/* GeDi over B rows: model 0 the LM (c 1), 1 the desired-code model, 2 the undesired one (c 0). */
typedef struct gedi_fx {
  lg_models ms;
  lmf_logits_params_t p;
  float L_pos[5], L_neg[5];
  int32_t n[5];
  float bias[25];
  lg_out o;
} gedi_fx;

static int gedi_setup(gedi_fx *g, int32_t dt, int32_t B, const float *lm, float L_pos, float L_neg, int32_t n,
                      float omega, float filter_p, float target_p) {
  lg_models_init(&g->ms);
  if (!lg_out_alloc(&g->o, B, 5, 0, 1)) return 0;
  float zl[25], zp[25], zn[25];
  for (int32_t b = 0; b < B; ++b) {
    memcpy(zl + 5 * b, lm, sizeof(float) * 5);
    memcpy(zp + 5 * b, lg_t5_zPos, sizeof(float) * 5);
    memcpy(zn + 5 * b, lg_t5_zNeg, sizeof(float) * 5);
    g->L_pos[b] = L_pos;
    g->L_neg[b] = L_neg;
    g->n[b] = n;
  }
  if (lg_models_add(&g->ms, dt, zl, B, 5, 1.0f) < 0 || lg_models_add(&g->ms, dt, zp, B, 5, 0.0f) < 0 ||
      lg_models_add(&g->ms, dt, zn, B, 5, 0.0f) < 0)
    return 0;
  lg_params(&g->p, B);
  g->p.gedi_pos_model = 1;
  g->p.gedi_neg_model = 2;
  g->p.gedi_omega = omega;
  g->p.gedi_logit_scale = 1.0f;
  g->p.gedi_bias_pos = 0.0f;
  g->p.gedi_bias_neg = 0.0f;
  g->p.gedi_class_bias = 0.0f;
  g->p.gedi_filter_p = filter_p;
  g->p.gedi_target_p = target_p;
  g->p.gedi_L_pos = g->L_pos;
  g->p.gedi_L_neg = g->L_neg;
  g->p.gedi_n = g->n;
  return 1;
}

static void gedi_free(gedi_fx *g) {
  lg_models_free(&g->ms);
  lg_out_free(&g->o);
}

static void check_state(const gedi_fx *g, int32_t b, double L_pos, double L_neg, int32_t n, const char *what) {
  LMF_CHECK_MSG(fabs((double)g->L_pos[b] - L_pos) <= TOL, "%s: row %d: L_pos %.9g, expected %.6f", what, (int)b,
                (double)g->L_pos[b], L_pos);
  LMF_CHECK_MSG(fabs((double)g->L_neg[b] - L_neg) <= TOL, "%s: row %d: L_neg %.9g, expected %.6f", what, (int)b,
                (double)g->L_neg[b], L_neg);
  LMF_CHECK_MSG(g->n[b] == n, "%s: row %d: n %d, expected %d", what, (int)b, (int)g->n[b], (int)n);
}

static void t5(int32_t dt) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  const double lse_lm = lse5(lg_t5_zLM);
  gedi_fx g;
  char what[96];

  /* s(v) through the log-probs with the class filter off (omega 30): logprobs = s - LSE(s). */
  if (gedi_setup(&g, dt, 1, lg_t5_zLM, -12.0f, -13.0f, 4, 30.0f, 0.0f, 0.8f)) {
    double want[5], ls = ref_lg_lse(t5_s30, 5);
    for (int v = 0; v < 5; ++v) want[v] = t5_s30[v] - ls;
    snprintf(what, sizeof what, "T5 %s omega 30, no filter", lg_dtype_name(dt));
    if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      LG_CHECK_LOGPROBS(g.o.logprobs, want, 5, TOL, what);
      check_row0(&g.o, 2, want[2], what);
      /* With raw LM logits, s is shifted by LSE(zLM). */
      LMF_CHECK_MSG(fabs((double)g.o.lse[0] - (ls + lse_lm)) <= TOL, "%s: lse %.9g, expected %.6f", what,
                    (double)g.o.lse[0], ls + lse_lm);
      LMF_CHECK_MSG(fabs((double)g.o.gedi_logp_desired[0] - log(t5_pdes[2])) <= TOL,
                    "%s: gedi_logp_desired %.9g, expected %.6f", what, (double)g.o.gedi_logp_desired[0],
                    log(t5_pdes[2]));
    }
  }
  gedi_free(&g);

  /* P(desired | v) of every token: five rows, each forcing its token with a bias of -10000 elsewhere. */
  if (gedi_setup(&g, dt, 5, lg_t5_zLM, -12.0f, -13.0f, 4, 30.0f, 0.0f, 0.8f)) {
    for (int b = 0; b < 5; ++b)
      for (int v = 0; v < 5; ++v) g.bias[5 * b + v] = v == b ? 0.0f : -10000.0f;
    g.p.bias = g.bias;
    g.p.bias_row_stride = 5;
    snprintf(what, sizeof what, "T5 %s forced tokens", lg_dtype_name(dt));
    if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      double lp_pos = lse5(lg_t5_zPos), lp_neg = lse5(lg_t5_zNeg);
      for (int b = 0; b < 5; ++b) {
        LMF_CHECK_MSG(g.o.tokens[b] == b, "%s: row %d: token %d", what, b, (int)g.o.tokens[b]);
        LMF_CHECK_MSG(fabs(exp((double)g.o.gedi_logp_desired[b]) - t5_pdes[b]) <= PTOL,
                      "%s: row %d: P(desired) %.9g, expected %.6f", what, b, exp((double)g.o.gedi_logp_desired[b]),
                      t5_pdes[b]);
        check_state(&g, b, -12.0 + lg_t5_zPos[b] - lp_pos, -13.0 + lg_t5_zNeg[b] - lp_neg, 5, what);
      }
    }
  }
  gedi_free(&g);

  /* 5a: omega 30, filter_p 0.8, target_p 0.8 removes {0, 1, 3, 4}; greedy 2; the state update. */
  if (gedi_setup(&g, dt, 1, lg_t5_zLM, -12.0f, -13.0f, 4, 30.0f, 0.8f, 0.8f)) {
    static const double want[5] = {-INFINITY, -INFINITY, 0.0, -INFINITY, -INFINITY};
    snprintf(what, sizeof what, "T5a %s", lg_dtype_name(dt));
    if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      LG_CHECK_LOGPROBS(g.o.logprobs, want, 5, TOL, what);
      check_row0(&g.o, 2, 0.0, what);
      LMF_CHECK_MSG(fabs((double)g.o.lse[0] - (t5_s30[2] + lse_lm)) <= TOL, "%s: lse %.9g, expected %.6f", what,
                    (double)g.o.lse[0], t5_s30[2] + lse_lm);
      LMF_CHECK_MSG(fabs((double)g.o.gedi_logp_desired[0] - -0.437488) <= TOL,
                    "%s: gedi_logp_desired %.9g, expected -0.437488", what, (double)g.o.gedi_logp_desired[0]);
      check_state(&g, 0, -12.523744, -15.523744, 5, what);
    }
  }
  gedi_free(&g);

  /* 5a with the LM given as log-softmax (fp32): lse is s(2) itself. */
  if (dt == LMF_DTYPE_F32) {
    float l[5];
    log_softmax5(lg_t5_zLM, l);
    if (gedi_setup(&g, dt, 1, l, -12.0f, -13.0f, 4, 30.0f, 0.8f, 0.8f) &&
        LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      LMF_CHECK_EQ_INT(g.o.tokens[0], 2);
      LMF_CHECK_MSG(fabs((double)g.o.lse[0] - t5_s30[2]) <= TOL, "T5a log-softmax LM: lse %.9g, expected %.6f",
                    (double)g.o.lse[0], t5_s30[2]);
    }
    gedi_free(&g);
  }

  /* 5c: omega 5, filter_p 0.5, target_p 0.54 removes {0, 1}. 5d: filter_p 0.58 removes {0, 1} only. */
  {
    static const double probs[5] = {0.0, 0.0, 0.816077, 0.134458, 0.049464};
    const float fps[2] = {0.5f, 0.58f};
    for (int i = 0; i < 2; ++i) {
      if (gedi_setup(&g, dt, 1, lg_t5_zLM, -12.0f, -13.0f, 4, 5.0f, fps[i], 0.54f)) {
        snprintf(what, sizeof what, "T5%c %s", i ? 'd' : 'c', lg_dtype_name(dt));
        if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
          CHECK_PROBS(g.o.logprobs, probs, 5, what);
          check_row0(&g.o, 2, log(probs[2]), what);
          check_state(&g, 0, -12.523744, -15.523744, 5, what);
        }
      }
      gedi_free(&g);
    }
  }
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t5)

static void t6(int32_t dt) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  gedi_fx g;
  /* Empty prefix: n = 0, L = 0. Row b forces token b (bias -10000 elsewhere), filter off. */
  if (gedi_setup(&g, dt, 5, lg_t5_zLM, 0.0f, 0.0f, 0, 30.0f, 0.0f, 0.8f)) {
    for (int b = 0; b < 5; ++b)
      for (int v = 0; v < 5; ++v) g.bias[5 * b + v] = v == b ? 0.0f : -10000.0f;
    g.p.bias = g.bias;
    g.p.bias_row_stride = 5;
    if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      double lp_pos = lse5(lg_t5_zPos), lp_neg = lse5(lg_t5_zNeg);
      for (int b = 0; b < 5; ++b) {
        LMF_CHECK_MSG(g.o.tokens[b] == b, "T6 %s: row %d: token %d", lg_dtype_name(dt), b, (int)g.o.tokens[b]);
        LMF_CHECK_MSG(fabs((double)g.o.gedi_logp_desired[b] - t6_logp[b]) <= TOL,
                      "T6 %s: token %d: gedi_logp_desired %.9g, expected %.6f", lg_dtype_name(dt), b,
                      (double)g.o.gedi_logp_desired[b], t6_logp[b]);
        check_state(&g, b, lg_t5_zPos[b] - lp_pos, lg_t5_zNeg[b] - lp_neg, 1, "T6");
      }
    }
  }
  gedi_free(&g);

  /* The same through the log-probs of one unforced row (omega 30, no filter): s(v) - s(u) =
   * l_LM(v) - l_LM(u) + 30 (logP(v) - logP(u)). */
  if (gedi_setup(&g, dt, 1, lg_t5_zLM, 0.0f, 0.0f, 0, 30.0f, 0.0f, 0.8f)) {
    double s[5], want[5];
    for (int v = 0; v < 5; ++v) s[v] = (double)lg_t5_zLM[v] + 30.0 * t6_logp[v];
    double ls = ref_lg_lse(s, 5);
    for (int v = 0; v < 5; ++v) want[v] = s[v] - ls;
    if (LMF_CHECK_OK(lg_combine(ctx, g.ms.m, g.ms.K, &g.p, &g.o))) {
      LG_CHECK_LOGPROBS(g.o.logprobs, want, 5, 3e-5 /* 30 x the spec's rounding */, "T6 logprobs");
      LMF_CHECK_EQ_INT(g.o.tokens[0], 2);
    }
  }
  gedi_free(&g);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t6)

/* ---- T7: non-finite inputs --------------------------------------------------------------------------- */

static void t7(int32_t dt) {
  enum { B = 9 };
  const float inf = INFINITY, nan = NAN;
  const float zE[4] = {1.0f, 0.5f, 0.0f, 0.2f}, zA[4] = {0.0f, 0.0f, 0.0f, -inf};
  float e[B * 4], a[B * 4];
  for (int b = 0; b < B; ++b) {
    memcpy(e + 4 * b, zE, sizeof zE);
    memcpy(a + 4 * b, zA, sizeof zA);
  }
  /* row 0 (and 8): the spec's row; 1: the amateur all -inf; 2: the expert all -inf; 3: NaN in the expert;
   * 4: +inf in the expert (c = +1); 5: +inf in the amateur (c = -1); 6: NaN in the amateur; 7: a normal
   * row with the mask moved to token 0. */
  for (int v = 0; v < 4; ++v) a[4 * 1 + v] = -inf;
  for (int v = 0; v < 4; ++v) e[4 * 2 + v] = -inf;
  e[4 * 3 + 1] = nan;
  e[4 * 4 + 2] = inf;
  a[4 * 5 + 0] = inf;
  a[4 * 6 + 2] = nan;
  a[4 * 7 + 3] = 0.0f;
  a[4 * 7 + 0] = -inf;
  static const int32_t want_status[B] = {LMF_ROW_OK,        LMF_ROW_ALL_MASKED, LMF_ROW_ALL_MASKED,
                                         LMF_ROW_NONFINITE, LMF_ROW_NONFINITE,  LMF_ROW_NONFINITE,
                                         LMF_ROW_NONFINITE, LMF_ROW_OK,         LMF_ROW_OK};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  lg_models ms;
  lg_models_init(&ms);
  uint64_t seeds[B];
  for (int b = 0; b < B; ++b) seeds[b] = 100 + (uint64_t)b;
  /* A third model with c = 0 and no other role, NaN everywhere: not an input the rows use. */
  float unused[B * 4];
  for (int i = 0; i < B * 4; ++i) unused[i] = (i % 2) ? nan : inf;
  if (lg_out_alloc(&o, B, 4, 0, 0) && lg_models_add(&ms, dt, e, B, 4, 1.0f) >= 0 &&
      lg_models_add(&ms, dt, a, B, 4, -1.0f) >= 0 && lg_models_add(&ms, dt, unused, B, 4, 0.0f) >= 0) {
    for (int sampled = 0; sampled < 2; ++sampled) {
      lmf_logits_params_t p;
      lg_params(&p, B);
      if (sampled) {
        p.temperature = 1.0f;
        p.seeds = seeds;
      }
      if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) break;
      for (int b = 0; b < B; ++b) {
        LMF_CHECK_MSG(o.status[b] == want_status[b], "T7 %s%s: row %d: status %d, expected %d", lg_dtype_name(dt),
                      sampled ? " sampled" : "", b, (int)o.status[b], (int)want_status[b]);
        if (want_status[b] != LMF_ROW_OK)
          LMF_CHECK_MSG(o.tokens[b] == -1, "T7: row %d: token %d, expected -1", b, (int)o.tokens[b]);
      }
      /* Row 0: s = [1, 0.5, 0, -inf]; finite - (-inf) must not become +inf. */
      double s[4] = {1.0, 0.5, 0.0, -INFINITY}, want[4];
      double l = ref_lg_lse(s, 4);
      for (int v = 0; v < 4; ++v) want[v] = s[v] - l;
      LG_CHECK_LOGPROBS(o.logprobs, want, 4, TOL, "T7 row 0");
      LG_CHECK_LOGPROBS(o.logprobs + 4 * 8, want, 4, TOL, "T7 row 8");
      LMF_CHECK(o.tokens[0] != 3 && o.tokens[8] != 3);
      LMF_CHECK(o.tokens[7] != 0 && o.logprobs[4 * 7] == -INFINITY);
      if (!sampled) {
        LMF_CHECK_EQ_INT(o.tokens[0], 0);
        LMF_CHECK_EQ_INT(o.tokens[7], 1);
      }
    }
  }
  lg_models_free(&ms);
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t7)

/* Accumulation is fp32 whatever the dtype: 2 x 60000 overflows fp16, s(v) does not. */
static void fp16_products(int32_t dt) {
  static const float z1[4] = {60000.0f, 50000.0f, 40000.0f, 0.0f};
  static const float z2[4] = {59968.0f, 50016.0f, 40000.0f, 0.0f};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  lg_models ms;
  lg_models_init(&ms);
  if (lg_out_alloc(&o, 1, 4, 0, 0) && lg_models_add(&ms, dt, z1, 1, 4, 2.0f) >= 0 &&
      lg_models_add(&ms, dt, z2, 1, 4, -2.0f) >= 0) {
    lmf_logits_params_t p;
    lg_params(&p, 1);
    double a[4], b[4], s[4], want[4];
    lg_decode(a, dt, ms.buf[0], 4);
    lg_decode(b, dt, ms.buf[1], 4);
    for (int v = 0; v < 4; ++v) s[v] = 2.0 * a[v] - 2.0 * b[v];
    double l = ref_lg_lse(s, 4);
    for (int v = 0; v < 4; ++v) want[v] = s[v] - l;
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) {
      LMF_CHECK_EQ_INT(o.status[0], LMF_ROW_OK);
      LG_CHECK_LOGPROBS(o.logprobs, want, 4, TOL, lg_dtype_name(dt));
    }
  }
  lg_models_free(&ms);
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(fp16_products)

/* ---- T8: a large row, V = 152,064 ---------------------------------------------------------------------- */

enum { T8_V = 152064, T8_HOT = 123457 };

static void t8(int32_t dt) {
  float *z = (float *)lt_malloc(sizeof(float) * T8_V);
  double *zd = (double *)lt_malloc(sizeof(double) * T8_V);
  double *want = (double *)lt_malloc(sizeof(double) * T8_V);
  lg_out o[3];
  memset(o, 0, sizeof o);
  lg_models ms;
  lg_models_init(&ms);
  if (!z || !zd || !want) goto done;
  for (int v = 0; v < T8_V; ++v) z[v] = (float)(8.0 * sin(0.7 * v) + 0.1 * (v % 7));
  z[T8_HOT] = 20.0f;
  if (lg_models_add(&ms, dt, z, 1, T8_V, 1.0f) < 0) goto done;
  lg_decode(zd, dt, ms.buf[0], T8_V);
  double lse = ref_lg_lse(zd, T8_V);
  for (int v = 0; v < T8_V; ++v) want[v] = zd[v] - lse;
  if (dt == LMF_DTYPE_F32) {
    /* The generator is the spec's (its logp[V-1] agrees to within half an fp32 ulp of z[V-1]). */
    LMF_CHECK_NEAR(lse, 20.169345619, 1e-8);
    LMF_CHECK_NEAR(want[T8_V - 1], -15.078889531, 2.5e-7);
  }
  /* Greedy, on 1, 2 and 3 threads: the same bytes. */
  for (int t = 0; t < 3; ++t) {
    lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, t + 1);
    if (!ctx || !lg_out_alloc(&o[t], 1, T8_V, 0, 0)) {
      lmf_context_destroy(ctx);
      goto done;
    }
    lmf_logits_params_t p;
    lg_params(&p, 1);
    if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[t]))) {
      char what[64];
      snprintf(what, sizeof what, "T8 %s, %d threads", lg_dtype_name(dt), t + 1);
      LMF_CHECK_EQ_INT(o[t].tokens[0], T8_HOT);
      LMF_CHECK_MSG(fabs((double)o[t].lse[0] - lse) <= 1e-4, "%s: lse %.9g, expected %.9f", what,
                    (double)o[t].lse[0], lse);
      LMF_CHECK_MSG(fabs((double)o[t].token_logprob[0] - want[T8_HOT]) <= 1e-4, "%s: token_logprob %.9g", what,
                    (double)o[t].token_logprob[0]);
      LMF_CHECK_MSG(fabs((double)o[t].logprobs[T8_V - 1] - want[T8_V - 1]) <= 1e-4, "%s: logp[V-1] %.9g", what,
                    (double)o[t].logprobs[T8_V - 1]);
      if (dt == LMF_DTYPE_F32) {
        LMF_CHECK_NEAR(o[t].lse[0], 20.169345619, 1e-4);
        LMF_CHECK_NEAR(o[t].logprobs[T8_HOT], -0.169345619, 1e-4);
        LMF_CHECK_NEAR(o[t].logprobs[T8_V - 1], -15.078889531, 1e-4);
      }
      LG_CHECK_LOGPROBS(o[t].logprobs, want, T8_V, 1e-4, what);
      if (t > 0) LG_OUT_EQUAL(&o[0], &o[t], "T8: greedy outputs on 1 thread vs more");
    }
    lmf_context_destroy(ctx);
  }
  for (int t = 0; t < 3; ++t) lg_out_free(&o[t]);

  /* Sampled at T = 1 (four rows reading the same input row, seeds 1..4) on 1, 2 and 3 threads. */
  {
    int32_t ri[4] = {0, 0, 0, 0};
    uint64_t seeds[4] = {1, 2, 3, 4};
    ms.m[0].row_index = ri;
    for (int t = 0; t < 3; ++t) {
      lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, t + 1);
      if (!ctx || !lg_out_alloc(&o[t], 4, T8_V, 0, 0)) {
        lmf_context_destroy(ctx);
        goto done;
      }
      lmf_logits_params_t p;
      lg_params(&p, 4);
      p.temperature = 1.0f;
      p.seeds = seeds;
      if (LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o[t])) && t > 0)
        LG_OUT_EQUAL(&o[0], &o[t], "T8: sampled outputs on 1 thread vs more");
      lmf_context_destroy(ctx);
    }
  }
done:
  for (int t = 0; t < 3; ++t) lg_out_free(&o[t]);
  lg_models_free(&ms);
  free(z);
  free(zd);
  free(want);
}
DTYPE_CASES(t8)

/* ---- T9: filters on T1 (beta 1) at T = 0.7 ---------------------------------------------------------------- */

static void t9(int32_t dt) {
  static const double probs[5] = {0.101138, 0.862077, 0.011865, 0.000681, 0.024238};
  static const int keep_k3[5] = {1, 1, 0, 0, 1}, keep_01[5] = {1, 1, 0, 0, 0};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx) return;
  lg_out o;
  lg_models ms;
  lg_models_init(&ms);
  uint64_t seed = 7;
  if (lg_out_alloc(&o, 1, 5, 0, 0)) {
    lg_models_add(&ms, dt, lg_t1_zL, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t1_zSf, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t1_zSb, 1, 5, -1.0f);
    for (int f = 0; f < 4; ++f) {
      lmf_logits_params_t p;
      lg_params(&p, 1);
      p.temperature = 0.7f;
      p.seeds = &seed;
      const int *keep = NULL;
      const char *name = "no filter";
      if (f == 1) p.top_k = 3, keep = keep_k3, name = "top-k 3";
      if (f == 2) p.top_p = 0.9f, keep = keep_01, name = "top-p 0.9";
      if (f == 3) p.min_p = 0.05f, keep = keep_01, name = "min-p 0.05";
      double want[5], mass = 0.0;
      for (int v = 0; v < 5; ++v) mass += (!keep || keep[v]) ? probs[v] : 0.0;
      for (int v = 0; v < 5; ++v) want[v] = (!keep || keep[v]) ? probs[v] / mass : 0.0;
      char what[64];
      snprintf(what, sizeof what, "T9 %s %s", lg_dtype_name(dt), name);
      if (!LMF_CHECK_OK(lg_combine(ctx, ms.m, ms.K, &p, &o))) continue;
      CHECK_PROBS(o.logprobs, want, 5, what);
      /* And against the double reference of the same filters. */
      double ref[5];
      ref_lg_result r;
      memset(&r, 0, sizeof r);
      r.logprobs = ref;
      lg_ref_row(ms.m, ms.K, &p, 0, &r);
      LG_CHECK_LOGPROBS(o.logprobs, ref, 5, TOL, what);
      LMF_CHECK_MSG(o.tokens[0] >= 0 && (!keep || keep[o.tokens[0]]), "%s: sampled token %d did not survive", what,
                    (int)o.tokens[0]);
      /* lse: logsumexp of s / 0.7 over the survivors, s = [1.5, 3, 0, -2, 0.5]. */
      const double s[5] = {1.5, 3.0, 0.0, -2.0, 0.5};
      double y[5];
      for (int v = 0; v < 5; ++v) y[v] = (!keep || keep[v]) ? s[v] / 0.7 : NEG_INF;
      LMF_CHECK_MSG(fabs((double)o.lse[0] - ref_lg_lse(y, 5)) <= TOL, "%s: lse %.9g, expected %.6f", what,
                    (double)o.lse[0], ref_lg_lse(y, 5));
    }
  }
  lg_models_free(&ms);
  lg_out_free(&o);
  lmf_context_destroy(ctx);
}
DTYPE_CASES(t9)

/* ---- The reference itself reproduces the spec's numbers (it is used by the property tests) ------------ */

void test_logits_reference_matches_spec(void) {
  double zL[5], zSf[5], zSb[5], lp[5], pd[5], s[5];
  for (int v = 0; v < 5; ++v) zL[v] = lg_t1_zL[v], zSf[v] = lg_t1_zSf[v], zSb[v] = lg_t1_zSb[v];
  ref_lg_model m[3] = {{zL, NULL, 5, 0, 0, 1.0, 1.0}, {zSf, NULL, 5, 0, 0, 1.0, 1.0}, {zSb, NULL, 5, 0, 0, -1.0, 1.0}};
  ref_lg_config c;
  ref_lg_result r;
  ref_lg_config_default(&c, 5);
  memset(&r, 0, sizeof r);
  r.logprobs = lp;
  ref_lg_row(m, 3, &c, &r);
  for (int v = 0; v < 5; ++v) LMF_CHECK_NEAR(lp[v], t1_lp_b1[v], 1e-6);
  LMF_CHECK_EQ_INT(r.argmax, 1);

  /* T5a and T5d. */
  double zLM[5], zP[5], zN[5];
  for (int v = 0; v < 5; ++v) zLM[v] = lg_t5_zLM[v], zP[v] = lg_t5_zPos[v], zN[v] = lg_t5_zNeg[v];
  double l = ref_lg_lse(zLM, 5);
  for (int v = 0; v < 5; ++v) zLM[v] -= l;
  ref_lg_model g[3] = {{zLM, NULL, 5, 0, 0, 1.0, 1.0}, {zP, NULL, 5, 0, 0, 0.0, 1.0}, {zN, NULL, 5, 0, 0, 0.0, 1.0}};
  ref_lg_config_default(&c, 5);
  c.gedi_pos = 1;
  c.gedi_neg = 2;
  c.L_pos = -12;
  c.L_neg = -13;
  c.n = 4;
  c.temperature = 0;
  memset(&r, 0, sizeof r);
  r.logprobs = lp;
  r.logp_desired = pd;
  r.s = s;
  ref_lg_row(g, 3, &c, &r);
  for (int v = 0; v < 5; ++v) {
    LMF_CHECK_NEAR(exp(pd[v]), t5_pdes[v], 1e-6);
    LMF_CHECK_NEAR(s[v], t5_s30[v], 1e-6);
  }
  LMF_CHECK_EQ_INT(r.argmax, 2);
  LMF_CHECK_EQ_INT(r.survivors, 1);
  LMF_CHECK_NEAR(r.L_pos_next, -12.523744, 1e-6);
  LMF_CHECK_NEAR(r.L_neg_next, -15.523744, 1e-6);
  c.omega = 5;
  c.filter_p = 0.58;
  c.target_p = 0.54;
  ref_lg_row(g, 3, &c, &r);
  LMF_CHECK_EQ_INT(r.survivors, 3);
  LMF_CHECK_NEAR(exp(lp[2]), 0.816077, 1e-6);
  LMF_CHECK_NEAR(exp(lp[3]), 0.134458, 1e-6);
  LMF_CHECK_NEAR(exp(lp[4]), 0.049464, 1e-6);
  c.filter_p = 0.5;
  ref_lg_row(g, 3, &c, &r);
  LMF_CHECK_EQ_INT(r.survivors, 3);

  /* T6. */
  c.L_pos = c.L_neg = 0;
  c.n = 0;
  ref_lg_row(g, 3, &c, &r);
  for (int v = 0; v < 5; ++v) LMF_CHECK_NEAR(pd[v], t6_logp[v], 1e-6);

  /* T4. */
  double b[5], e[5], a[5];
  for (int v = 0; v < 5; ++v) b[v] = lg_t4_zb[v], e[v] = lg_t4_ze[v], a[v] = lg_t4_za[v];
  ref_lg_model d[3] = {{b, NULL, 5, 0, 0, 1.0, 1.0}, {e, NULL, 5, 0, 0, 2.0, 1.0}, {a, NULL, 5, 0, 0, -2.0, 1.0}};
  ref_lg_config_default(&c, 5);
  c.nucleus_model = 0;
  c.nucleus_p = 0.9;
  memset(&r, 0, sizeof r);
  r.logprobs = lp;
  ref_lg_row(d, 3, &c, &r);
  static const double t4[5] = {-2.589609, -7.589609, -0.089609, -INFINITY, -4.589609};
  for (int v = 0; v < 5; ++v)
    LMF_CHECK(t4[v] == -INFINITY ? lp[v] == -INFINITY : fabs(lp[v] - t4[v]) <= 1e-6);
}
