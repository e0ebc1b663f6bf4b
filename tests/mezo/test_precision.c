/* fp16 / bf16 parameters: passes against a double-precision reference, stochastic rounding (unbiased,
 * fresh bits per pass, reproducible), and fp32 masters. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

static lmf_mezo_plan_t *plan1(lmf_context_t *ctx, lmf_mezo_tensor_t t, int32_t dist, int32_t rounding) {
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = dist;
  cfg.rounding = rounding;
  lmf_mezo_plan_t *p = NULL;
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, &t, 1, &cfg))) return NULL;
  return p;
}

/* Compares 16-bit results with double values: nearest rounding must be within half an ulp of the
 * format (plus 1% of an ulp for the fp32 arithmetic before the rounding), stochastic rounding within
 * one ulp (strictly below plus the same slack). Returns the number of violations. */
static int64_t check16(const uint16_t *h, const double *want, int64_t n, int32_t dtype, int stochastic,
                       const char *what, double *worst) {
  int64_t bad = 0;
  const double limit = (stochastic ? 1.0 : 0.5) + 0.01;
  for (int64_t i = 0; i < n; ++i) {
    double got = ref_decode16(h[i], dtype);
    double m = fabs(got) > fabs(want[i]) ? fabs(got) : fabs(want[i]);
    double e = fabs(got - want[i]) / ref_ulp(m, dtype);
    if (e > *worst) *worst = e;
    if (!(e <= limit) && bad++ < 3)
      LMF_CHECK_MSG(0, "%s %s %s element %lld: %.9g, double reference %.9g (%.3f ulp)", what,
                    lmf_dtype_name(dtype), stochastic ? "stochastic" : "nearest", (long long)i, got, want[i], e);
  }
  return bad;
}

/* One perturbation and one fused step (restore + decay + update + next perturbation) of f16 and bf16
 * parameters, nearest and stochastic rounding: each pass's result is within one 16-bit ulp of the same
 * pass computed in double from the stored input (nearest: within half an ulp). */
void test_precision_16bit_vs_double(void) {
  const int64_t n = 100003;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *init = (float *)lt_malloc((size_t)n * 4);
  uint16_t *h = (uint16_t *)lt_malloc((size_t)n * 2), *prev = (uint16_t *)lt_malloc((size_t)n * 2);
  double *want = (double *)lt_malloc((size_t)n * 8), *za = (double *)lt_malloc((size_t)n * 8);
  double *zb = (double *)lt_malloc((size_t)n * 8);
  if (!ctx || !init || !h || !prev || !want || !za || !zb) goto done;
  const uint64_t s1 = 71, s2 = 72;
  const uint32_t uid = 30;
  /* z as the passes use it (fill_z; checked against the double Box-Muller in test_philox_z.c), so the
   * reference's only difference is double arithmetic and a single rounding. */
  {
    float *zf = (float *)init;
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, s1, uid, 0, n, zf, NULL))) goto done;
    for (int64_t i = 0; i < n; ++i) za[i] = zf[i];
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, s2, uid, 0, n, zf, NULL))) goto done;
    for (int64_t i = 0; i < n; ++i) zb[i] = zf[i];
  }
  lt_fill_normal(init, n, 0.0, 0.02, 31);
  for (int d = 0; d < 2; ++d) {
    for (int stochastic = 0; stochastic < 2; ++stochastic) {
      const int32_t dt = d ? LMF_DTYPE_F16 : LMF_DTYPE_BF16;
      const float eps = 1e-3f, lr = 1e-3f, wd = 0.1f, g = 3.7f;
      double worst = 0.0;
      if (!lt_convert(h, dt, init, LMF_DTYPE_F32, n)) goto done;
      lmf_mezo_plan_t *p = plan1(ctx, lt_tensor(h, NULL, n, 0, uid, dt, 1), LMF_MEZO_GAUSSIAN, stochastic);
      if (!p) goto done;
      memcpy(prev, h, (size_t)n * 2);
      if (LMF_CHECK_OK(lmf_mezo_perturb(p, s1, eps, NULL))) {
        for (int64_t i = 0; i < n; ++i) want[i] = ref_decode16(prev[i], dt) + (double)eps * za[i];
        LMF_CHECK_EQ_INT(check16(h, want, n, dt, stochastic, "perturb", &worst), 0);
      }
      memcpy(prev, h, (size_t)n * 2);
      lmf_mezo_step_args_t st;
      lmf_mezo_step_args_init(&st, sizeof st);
      st.seed = s1;
      st.grad = g;
      st.lr = lr;
      st.weight_decay = wd;
      st.perturb_next = 1;
      st.next_seed = s2;
      st.next_scale = eps;
      if (LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) {
        for (int64_t i = 0; i < n; ++i)
          want[i] = ref_mezo_elem(ref_decode16(prev[i], dt), za[i], eps, 1, lr, g, wd, 1, zb[i], eps);
        LMF_CHECK_EQ_INT(check16(h, want, n, dt, stochastic, "step", &worst), 0);
      }
      lmf_t_note("%s %s: worst %.3f ulp", lmf_dtype_name(dt), stochastic ? "stochastic" : "nearest", worst);
      lmf_mezo_plan_destroy(p);
    }
  }
done:
  free(init);
  free(h);
  free(prev);
  free(want);
  free(za);
  free(zb);
  lmf_context_destroy(ctx);
}

/* fp32 master + 16-bit working copy: the master after a step is within 2 fp32 ulp of the double
 * reference (plus the reference's z error), and the working copy is round(master) bit-exactly. */
void test_precision_master_step(void) {
  const int64_t n = 50001;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *m = (float *)lt_malloc((size_t)n * 4), *m0 = (float *)lt_malloc((size_t)n * 4);
  uint16_t *w = (uint16_t *)lt_malloc((size_t)n * 2), *r = (uint16_t *)lt_malloc((size_t)n * 2);
  if (!ctx || !m || !m0 || !w || !r) goto done;
  for (int d = 0; d < 2; ++d) {
    const int32_t dt = d ? LMF_DTYPE_F16 : LMF_DTYPE_BF16;
    lt_fill_normal(m0, n, 0.0, 0.02, 32);
    memcpy(m, m0, (size_t)n * 4);
    if (!lt_convert(w, dt, m0, LMF_DTYPE_F32, n)) goto done;
    lmf_mezo_plan_t *p = plan1(ctx, lt_tensor(w, m, n, 0, 33, dt, 1), LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!p) goto done;
    lmf_mezo_step_args_t st;
    lmf_mezo_step_args_init(&st, sizeof st);
    st.seed = 5;
    st.grad = -2.5f;
    st.lr = 1e-2f;
    st.weight_decay = 0.2f;
    if (LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 1e-3f, NULL)) && LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) {
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        double rad, z = ref_z(LMF_MEZO_GAUSSIAN, 5, 33, (uint64_t)i, &rad);
        double want = ref_mezo_elem(m0[i], z, 0.0, 1, st.lr, st.grad, st.weight_decay, 1, 0.0, 0.0);
        double tol = 2 * ref_ulp(fabs(want) > fabs(m[i]) ? want : m[i], LMF_DTYPE_F32) +
                     fabs((double)st.lr * st.grad) * 1e-6 * (rad > 1 ? rad : 1);
        if (!(fabs(m[i] - want) <= tol) && bad++ < 3)
          LMF_CHECK_MSG(0, "%s master element %lld: %.9g, double reference %.9g", lmf_dtype_name(dt), (long long)i,
                        (double)m[i], want);
      }
      LMF_CHECK_EQ_INT(bad, 0);
      if (lt_convert(r, dt, m, LMF_DTYPE_F32, n)) LMF_CHECK_BYTES_EQ(w, r, (size_t)n * 2, "working vs round(master)");
    }
    lmf_mezo_plan_destroy(p);
  }
done:
  free(m);
  free(m0);
  free(w);
  free(r);
  lmf_context_destroy(ctx);
}

/* Stochastic rounding is unbiased: x = 1 + s and x = 1 - s (Rademacher z, theta = 1) lie between two
 * neighbours of the 16-bit format; the fraction rounded up must match (x - down) / (up - down) within 5
 * sigma over ~2^19 elements each, and so must the mean of the outcomes. Then: a second pass with the
 * same inputs draws fresh bits (about 2p(1-p) of the outcomes differ), and a fresh plan replaying the
 * same history reproduces the first outcome exactly. */
void test_precision_stochastic_rounding(void) {
  const int64_t n = (int64_t)1 << 20;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *ones = (float *)lt_malloc((size_t)n * 4), *z = (float *)lt_malloc((size_t)n * 4);
  uint16_t *h = (uint16_t *)lt_malloc((size_t)n * 2), *first = (uint16_t *)lt_malloc((size_t)n * 2);
  uint16_t *one16 = (uint16_t *)lt_malloc((size_t)n * 2);
  if (!ctx || !ones || !z || !h || !first || !one16) goto done;
  for (int64_t i = 0; i < n; ++i) ones[i] = 1.0f;
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, 77, 3, 0, n, z, NULL))) goto done;
  for (int d = 0; d < 2; ++d) {
    const int32_t dt = d ? LMF_DTYPE_F16 : LMF_DTYPE_BF16;
    const double up_ulp = d ? 0x1p-10 : 0x1p-7; /* spacing above 1 */
    const float s = (float)(0.3 * up_ulp);
    if (!lt_convert(one16, dt, ones, LMF_DTYPE_F32, n)) goto done;
    memcpy(h, one16, (size_t)n * 2);
    lmf_mezo_plan_t *p = plan1(ctx, lt_tensor(h, NULL, n, 0, 3, dt, 0), LMF_MEZO_RADEMACHER, LMF_ROUND_STOCHASTIC);
    if (!p) goto done;
    if (!LMF_CHECK_OK(lmf_mezo_perturb(p, 77, s, NULL))) {
      lmf_mezo_plan_destroy(p);
      goto done;
    }
    memcpy(first, h, (size_t)n * 2);
    /* x = fl(1 + s) and fl(1 - s): the fp32 values the rounding sees. */
    const float xp = 1.0f + s, xm = 1.0f - s;
    const double pp = ((double)xp - 1.0) / up_ulp;         /* P(up) above 1 */
    const double pm = (1.0 - (double)xm) / (up_ulp / 2);   /* P(down) below 1 (spacing halves) */
    int64_t np = 0, nm = 0, up = 0, down = 0, other = 0;
    double dev = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double v = ref_decode16(h[i], dt);
      if (z[i] > 0) {
        np++;
        if (v == 1.0 + up_ulp) up++;
        else if (v != 1.0) other++;
        dev += v - (double)xp;
      } else {
        nm++;
        if (v == 1.0 - up_ulp / 2) down++;
        else if (v != 1.0) other++;
        dev += v - (double)xm;
      }
    }
    LMF_CHECK_EQ_INT(other, 0);
    double fp = (double)up / np, fm = (double)down / nm;
    double sp = sqrt(pp * (1 - pp) / np), sm = sqrt(pm * (1 - pm) / nm);
    lmf_t_note("%s: P(up) %.5f (expected %.5f), P(down) %.5f (expected %.5f)", lmf_dtype_name(dt), fp, pp, fm, pm);
    LMF_CHECK_MSG(fabs(fp - pp) < 5 * sp, "%s: rounded up %.5f of the time, expected %.5f +- %.5f",
                  lmf_dtype_name(dt), fp, pp, sp);
    LMF_CHECK_MSG(fabs(fm - pm) < 5 * sm, "%s: rounded down %.5f of the time, expected %.5f +- %.5f",
                  lmf_dtype_name(dt), fm, pm, sm);
    /* Mean outcome minus x: sd per element <= up_ulp / 2. */
    double mean_dev = dev / n;
    LMF_CHECK_MSG(fabs(mean_dev) < 5 * (up_ulp / 2) / sqrt((double)n), "%s: mean rounding error %.3g (biased)",
                  lmf_dtype_name(dt), mean_dev);

    /* Fresh bits per pass: restore, reset the values to 1, perturb again with the same seed and scale. */
    if (LMF_CHECK_OK(lmf_mezo_restore(p, NULL))) {
      memcpy(h, one16, (size_t)n * 2);
      if (LMF_CHECK_OK(lmf_mezo_perturb(p, 77, s, NULL))) {
        int64_t differ = 0;
        for (int64_t i = 0; i < n; ++i) differ += h[i] != first[i];
        double expect = (np * 2 * pp * (1 - pp) + nm * 2 * pm * (1 - pm)) / n;
        double frac = (double)differ / n;
        lmf_t_note("%s: second pass differs in %.4f of the elements (independent bits: %.4f)", lmf_dtype_name(dt),
                   frac, expect);
        LMF_CHECK_MSG(fabs(frac - expect) < 5 * sqrt(expect * (1 - expect) / n),
                      "%s: the second pass's rounding differs in %.4f of the elements, expected %.4f",
                      lmf_dtype_name(dt), frac, expect);
      }
    }
    lmf_mezo_plan_destroy(p);

    /* Reproducible: a fresh plan with the same history gives the first outcome bit for bit. */
    memcpy(h, one16, (size_t)n * 2);
    p = plan1(ctx, lt_tensor(h, NULL, n, 0, 3, dt, 0), LMF_MEZO_RADEMACHER, LMF_ROUND_STOCHASTIC);
    if (p && LMF_CHECK_OK(lmf_mezo_perturb(p, 77, s, NULL)))
      LMF_CHECK_BYTES_EQ(h, first, (size_t)n * 2, "stochastic rounding replayed in a fresh plan");
    lmf_mezo_plan_destroy(p);
  }
done:
  free(ones);
  free(z);
  free(h);
  free(first);
  free(one16);
  lmf_context_destroy(ctx);
}

/* fp32 tensors ignore the rounding mode: a stochastic-rounding plan gives the same fp32 bits. */
void test_precision_stochastic_f32_unaffected(void) {
  const int64_t n = 10007;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *a = (float *)lt_malloc((size_t)n * 4), *b = (float *)lt_malloc((size_t)n * 4);
  if (!ctx || !a || !b) goto done;
  lt_fill_normal(a, n, 0, 0.02, 34);
  memcpy(b, a, (size_t)n * 4);
  lmf_mezo_plan_t *pa = plan1(ctx, lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1), LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
  lmf_mezo_plan_t *pb = plan1(ctx, lt_tensor(b, NULL, n, 0, 1, LMF_DTYPE_F32, 1), LMF_MEZO_GAUSSIAN, LMF_ROUND_STOCHASTIC);
  lmf_mezo_step_args_t st;
  lmf_mezo_step_args_init(&st, sizeof st);
  st.seed = 2;
  st.grad = 1.5f;
  st.lr = 1e-2f;
  st.weight_decay = 0.1f;
  if (pa && pb && LMF_CHECK_OK(lmf_mezo_perturb(pa, 2, 1e-3f, NULL)) && LMF_CHECK_OK(lmf_mezo_perturb(pb, 2, 1e-3f, NULL)) &&
      LMF_CHECK_OK(lmf_mezo_step(pa, &st, NULL)) && LMF_CHECK_OK(lmf_mezo_step(pb, &st, NULL)))
    LMF_CHECK_BYTES_EQ(a, b, (size_t)n * 4, "fp32 under nearest vs stochastic rounding");
  lmf_mezo_plan_destroy(pa);
  lmf_mezo_plan_destroy(pb);
done:
  free(a);
  free(b);
  lmf_context_destroy(ctx);
}
