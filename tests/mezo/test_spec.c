/* The MeZO spec's test vectors 2-7 and 9-11 (specs/mezo.md, "Test vectors"), on the CPU backend.
 * Vector 1 is in test_philox_z.c, vector 8 in test_spec_convergence.c, the GPU half of 11 in
 * cuda/test_cuda.c. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

/* ---- helpers ------------------------------------------------------------------------------------ */

static lmf_mezo_plan_t *plan_of(lmf_context_t *ctx, const lmf_mezo_tensor_t *t, size_t n, int32_t dist,
                                int32_t rounding) {
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = dist;
  cfg.rounding = rounding;
  lmf_mezo_plan_t *p = NULL;
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, t, n, &cfg))) return NULL;
  return p;
}

static lmf_mezo_step_args_t step_args(uint64_t seed, float grad, float lr, float wd) {
  lmf_mezo_step_args_t a;
  lmf_mezo_step_args_init(&a, sizeof a);
  a.seed = seed;
  a.grad = grad;
  a.lr = lr;
  a.weight_decay = wd;
  return a;
}

static lmf_mezo_step_args_t step_args_next(uint64_t seed, float grad, float lr, float wd, uint64_t next_seed,
                                           float next_scale) {
  lmf_mezo_step_args_t a = step_args(seed, grad, lr, wd);
  a.perturb_next = 1;
  a.next_seed = next_seed;
  a.next_scale = next_scale;
  return a;
}

/* theta_i = 1 + k_i q with k_i uniform in [0, 1/q): every +-q z and +-2q z is exact in the format. */
static void fill_dyadic(float *x, int64_t n, float q, uint64_t seed) {
  uint64_t s = seed;
  uint64_t levels = (uint64_t)(1.0f / q);
  for (int64_t i = 0; i < n; ++i) x[i] = 1.0f + (float)(lt_next(&s) % levels) * q;
}

/* Checks the plan's perturbation bookkeeping. */
static void check_perturbation(const lmf_mezo_plan_t *p, uint64_t seed, float offset) {
  uint64_t s = 12345;
  float o = 12345.0f;
  if (!LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &s, &o))) return;
  LMF_CHECK_MSG(o == offset, "plan offset %.9g, expected %.9g", (double)o, (double)offset);
  if (offset != 0.0f) LMF_CHECK_EQ_U64(s, seed);
}

/* |got - want| in ulps of fp32 at max(|got|, |want|). */
static double ulps_f32(float got, double want) {
  double m = fabs((double)got) > fabs(want) ? fabs((double)got) : fabs(want);
  return fabs((double)got - want) / ref_ulp(m, LMF_DTYPE_F32);
}

/* ---- 2: z statistics --------------------------------------------------------------------------- */

static void moments(const float *x, int64_t n, double *mean, double *var, double *kurt) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  double m = s / (double)n, s2 = 0.0, s4 = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double d = x[i] - m, d2 = d * d;
    s2 += d2;
    s4 += d2 * d2;
  }
  *mean = m;
  *var = s2 / (double)n;
  *kurt = (s4 / (double)n) / (*var * *var);
}

static double correlation(const float *a, const float *b, int64_t n) {
  double ma = 0, mb = 0;
  for (int64_t i = 0; i < n; ++i) {
    ma += a[i];
    mb += b[i];
  }
  ma /= (double)n;
  mb /= (double)n;
  double sab = 0, saa = 0, sbb = 0;
  for (int64_t i = 0; i < n; ++i) {
    double x = a[i] - ma, y = b[i] - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return sab / sqrt(saa * sbb);
}

/* Seed 0x1234, uid 7, 2^24 elements: |mean| < 1.2e-3, |var - 1| < 1.7e-3, kurtosis 3 +- 0.01;
 * correlation across uids and across consecutive seeds < 1.2e-3; Rademacher values exactly +-1. */
void test_spec02_z_statistics(void) {
  const int64_t n = (int64_t)1 << 24;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  float *a = (float *)lt_malloc((size_t)n * 4), *b = (float *)lt_malloc((size_t)n * 4);
  if (!a || !b) goto done;
  lt_poison_f32(a, n);
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, 0x1234, 7, 0, n, a, NULL))) goto done;
  LMF_CHECK_EQ_INT(lt_count_nonfinite(a, n), 0);
  double mean, var, kurt;
  moments(a, n, &mean, &var, &kurt);
  lmf_t_note("Gaussian z, seed 0x1234 uid 7, 2^24 elements: mean %.3g, var %.6f, kurtosis %.5f", mean, var,
             kurt);
  LMF_CHECK_MSG(fabs(mean) < 1.2e-3, "|mean| = %.3g", fabs(mean));
  LMF_CHECK_MSG(fabs(var - 1.0) < 1.7e-3, "|var - 1| = %.3g", fabs(var - 1.0));
  LMF_CHECK_MSG(fabs(kurt - 3.0) < 0.01, "kurtosis %.5f", kurt);

  lt_poison_f32(b, n);
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, 0x1234, 8, 0, n, b, NULL))) goto done;
  LMF_CHECK_EQ_INT(lt_count_nonfinite(b, n), 0);
  double c_uid = correlation(a, b, n);
  lt_poison_f32(b, n);
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, 0x1235, 7, 0, n, b, NULL))) goto done;
  LMF_CHECK_EQ_INT(lt_count_nonfinite(b, n), 0);
  double c_seed = correlation(a, b, n);
  lmf_t_note("correlation across uids 7/8: %.3g; across seeds 0x1234/0x1235: %.3g", c_uid, c_seed);
  LMF_CHECK_MSG(fabs(c_uid) < 1.2e-3, "correlation across uids %.3g", c_uid);
  LMF_CHECK_MSG(fabs(c_seed) < 1.2e-3, "correlation across seeds %.3g", c_seed);

  lt_poison_f32(b, n);
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, 0x1234, 7, 0, n, b, NULL))) goto done;
  int64_t not_pm1 = 0;
  double rs = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    not_pm1 += !(b[i] == 1.0f || b[i] == -1.0f);
    rs += b[i];
  }
  LMF_CHECK_EQ_INT(not_pm1, 0);
  LMF_CHECK_MSG(fabs(rs / (double)n) < 1.2e-3, "Rademacher mean %.3g", rs / (double)n);
done:
  free(a);
  free(b);
  lmf_context_destroy(ctx);
}

/* ---- 3: invariance --------------------------------------------------------------------------------- */

/* The same logical tensor of 10^6 + 3 elements, filled whole, in 3 shards with global offsets, with any
 * launch geometry (1, 2, 3 and the default number of threads; shards not aligned to 4 elements or to
 * 16 bytes), first or last in the plan: bit-identical through perturb, step (+ next perturbation) and
 * a multi-seed update, for both distributions. */
void test_spec03_invariance(void) {
  const int64_t N = 1000003, A = 333331, B = 700002;
  const uint32_t U = 21;
  lmf_context_t *ctx[4] = {lt_context(LMF_BACKEND_CPU, 1), lt_context(LMF_BACKEND_CPU, 2),
                           lt_context(LMF_BACKEND_CPU, 3), lt_context(LMF_BACKEND_CPU, 0)};
  float *theta0 = (float *)lt_malloc((size_t)N * 4), *z = (float *)lt_malloc((size_t)N * 4);
  float *buf[4] = {(float *)lt_malloc((size_t)N * 4), (float *)lt_malloc((size_t)N * 4),
                   (float *)lt_malloc((size_t)N * 4), (float *)lt_malloc((size_t)N * 4)};
  float *x1 = (float *)lt_malloc(70001 * 4), *x2 = (float *)lt_malloc(5 * 4);
  float *x3 = (float *)lt_malloc(100000 * 4), *x4 = (float *)lt_malloc(3 * 4);
  lmf_mezo_plan_t *plan[4] = {NULL, NULL, NULL, NULL};
  if (!ctx[0] || !ctx[1] || !ctx[2] || !ctx[3] || !theta0 || !z || !buf[0] || !buf[1] || !buf[2] ||
      !buf[3] || !x1 || !x2 || !x3 || !x4)
    goto done;
  lt_fill_normal(theta0, N, 0.0, 0.02, 3);

  for (int dist = 0; dist < 2; ++dist) {
    /* fill_z: whole vs three shards with their global offsets. */
    lt_poison_f32(z, N);
    lt_poison_f32(buf[0], N);
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx[0], dist, 77, U, 0, N, z, NULL))) goto done;
    LMF_CHECK_OK(lmf_mezo_fill_z(ctx[1], dist, 77, U, B, N - B, buf[0] + B, NULL));
    LMF_CHECK_OK(lmf_mezo_fill_z(ctx[2], dist, 77, U, 0, A, buf[0], NULL));
    LMF_CHECK_OK(lmf_mezo_fill_z(ctx[3], dist, 77, U, A, B - A, buf[0] + A, NULL));
    LMF_CHECK_EQ_INT(lt_count_nonfinite(z, N), 0);
    LMF_CHECK_BYTES_EQ(z, buf[0], (size_t)N * 4, "fill_z whole vs 3 shards");

    for (int k = 0; k < 4; ++k) memcpy(buf[k], theta0, (size_t)N * 4);
    lt_fill_normal(x1, 70001, 0, 1, 4);
    lt_fill_normal(x2, 5, 0, 1, 5);
    lt_fill_normal(x3, 100000, 0, 1, 6);
    lt_fill_normal(x4, 3, 0, 1, 7);
    lmf_mezo_tensor_t whole = lt_tensor(buf[0], NULL, N, 0, U, LMF_DTYPE_F32, 1);
    lmf_mezo_tensor_t shards[3] = {lt_tensor(buf[1] + B, NULL, N - B, B, U, LMF_DTYPE_F32, 1),
                                   lt_tensor(buf[1], NULL, A, 0, U, LMF_DTYPE_F32, 1),
                                   lt_tensor(buf[1] + A, NULL, B - A, A, U, LMF_DTYPE_F32, 1)};
    lmf_mezo_tensor_t first[3] = {lt_tensor(buf[2], NULL, N, 0, U, LMF_DTYPE_F32, 1),
                                  lt_tensor(x1, NULL, 70001, 0, U + 1, LMF_DTYPE_F32, 1),
                                  lt_tensor(x2, NULL, 5, 0, U + 2, LMF_DTYPE_F32, 0)};
    lmf_mezo_tensor_t last[3] = {lt_tensor(x3, NULL, 100000, 0, U + 3, LMF_DTYPE_F32, 1),
                                 lt_tensor(x4, NULL, 3, 0, U + 4, LMF_DTYPE_F32, 0),
                                 lt_tensor(buf[3], NULL, N, 0, U, LMF_DTYPE_F32, 1)};
    plan[0] = plan_of(ctx[0], &whole, 1, dist, LMF_ROUND_NEAREST);
    plan[1] = plan_of(ctx[1], shards, 3, dist, LMF_ROUND_NEAREST);
    plan[2] = plan_of(ctx[2], first, 3, dist, LMF_ROUND_NEAREST);
    plan[3] = plan_of(ctx[3], last, 3, dist, LMF_ROUND_NEAREST);
    if (!plan[0] || !plan[1] || !plan[2] || !plan[3]) goto done;

    const float eps = 1e-3f;
    for (int op = 0; op < 5; ++op) {
      for (int k = 0; k < 4; ++k) {
        lmf_mezo_step_args_t a;
        switch (op) {
          case 0: LMF_CHECK_OK(lmf_mezo_perturb(plan[k], 77, eps, NULL)); break;
          case 1: LMF_CHECK_OK(lmf_mezo_perturb(plan[k], 77, -2 * eps, NULL)); break;
          case 2:
            a = step_args_next(77, 3.25f, 1e-3f, 0.1f, 78, eps);
            LMF_CHECK_OK(lmf_mezo_step(plan[k], &a, NULL));
            break;
          case 3:
            a = step_args(78, -1.5f, 1e-3f, 0.0f);
            LMF_CHECK_OK(lmf_mezo_step(plan[k], &a, NULL));
            break;
          default: {
            uint64_t seeds[3] = {79, 80, 81};
            float coeffs[3] = {0.5f, -2.0f, 1.25f};
            lmf_mezo_multi_args_t m;
            lmf_mezo_multi_args_init(&m, sizeof m);
            m.num_seeds = 3;
            m.seeds = seeds;
            m.coeffs = coeffs;
            m.lr = 1e-3f;
            m.weight_decay = 0.05f;
            LMF_CHECK_OK(lmf_mezo_update_multi(plan[k], &m, NULL));
          }
        }
      }
      if (op == 0) {
        /* Sanity: perturbed = theta0 + eps z up to the two fp32 roundings. */
        int bad = 0;
        for (int64_t i = 0; i < N; ++i) {
          double want = (double)theta0[i] + (double)eps * (double)z[i];
          double tol = 0.5 * ref_ulp(want, LMF_DTYPE_F32) + 0.5 * ref_ulp((double)eps * z[i], LMF_DTYPE_F32);
          if (!(fabs((double)buf[0][i] - want) <= tol) && bad++ < 3)
            LMF_CHECK_MSG(0, "element %lld: %.9g vs theta0 + eps z = %.9g", (long long)i, buf[0][i], want);
        }
        LMF_CHECK_EQ_INT(bad, 0);
      }
      static const char *what[5] = {"after +eps", "after -2eps", "after step + next perturbation",
                                    "after a plain step", "after a multi-seed update"};
      LMF_CHECK_MSG(memcmp(buf[0], buf[1], (size_t)N * 4) == 0, "dist %d, %s: whole vs 3 shards differ", dist,
                    what[op]);
      LMF_CHECK_MSG(memcmp(buf[0], buf[2], (size_t)N * 4) == 0, "dist %d, %s: whole vs first in plan differ",
                    dist, what[op]);
      LMF_CHECK_MSG(memcmp(buf[0], buf[3], (size_t)N * 4) == 0, "dist %d, %s: whole vs last in plan differ",
                    dist, what[op]);
    }
    LMF_CHECK(memcmp(buf[0], theta0, (size_t)N * 4) != 0); /* something happened */
    for (int k = 0; k < 4; ++k) {
      lmf_mezo_plan_destroy(plan[k]);
      plan[k] = NULL;
    }
  }
done:
  for (int k = 0; k < 4; ++k) {
    lmf_mezo_plan_destroy(plan[k]);
    free(buf[k]);
  }
  free(theta0);
  free(z);
  free(x1);
  free(x2);
  free(x3);
  free(x4);
  for (int k = 0; k < 4; ++k) lmf_context_destroy(ctx[k]);
}

/* ---- 4: reproducibility ----------------------------------------------------------------------------- */

enum { R4_T = 5, R4_STEPS = 100 };
static const int64_t r4_numel[R4_T] = {5000, 3001, 2048, 1500, 7};
static const int32_t r4_dtype[R4_T] = {LMF_DTYPE_F32, LMF_DTYPE_BF16, LMF_DTYPE_F16, LMF_DTYPE_BF16,
                                       LMF_DTYPE_F32};

typedef struct r4_model {
  void *data[R4_T];
  float *master;
  float *scratch;
} r4_model;

static int r4_loss(void *user, float *loss) {
  r4_model *m = (r4_model *)user;
  double s = 0.0;
  for (int t = 0; t < R4_T; ++t) {
    if (lmf_convert_host(m->scratch, LMF_DTYPE_F32, m->data[t], r4_dtype[t], r4_numel[t]) != LMF_OK) return 1;
    for (int64_t i = 0; i < r4_numel[t]; ++i) s += 0.5 * ((double)m->scratch[i] - 0.1) * (m->scratch[i] - 0.1);
  }
  *loss = (float)s;
  return 0;
}

/* 100 driver steps from a fixed start; writes every parameter byte to out and the losses to losses. */
static int r4_run(int32_t rounding, int32_t threads, unsigned char *out, float *losses) {
  int ok = 0;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, threads);
  r4_model m;
  memset(&m, 0, sizeof m);
  lmf_mezo_plan_t *plan = NULL;
  float *init = (float *)lt_malloc(5000 * 4);
  m.scratch = (float *)lt_malloc(5000 * 4);
  m.master = (float *)lt_malloc(1500 * 4);
  if (!ctx || !init || !m.scratch || !m.master) goto done;
  lmf_mezo_tensor_t t[R4_T];
  for (int k = 0; k < R4_T; ++k) {
    m.data[k] = lt_malloc((size_t)r4_numel[k] * 4);
    if (!m.data[k]) goto done;
    lt_fill_normal(init, r4_numel[k], 0.0, 0.5, 100 + (uint64_t)k);
    if (!lt_convert(m.data[k], r4_dtype[k], init, LMF_DTYPE_F32, r4_numel[k])) goto done;
    if (k == 3) memcpy(m.master, init, 1500 * 4);
    t[k] = lt_tensor(m.data[k], k == 3 ? m.master : NULL, r4_numel[k], k == 4 ? 3 : 0, 40 + (uint32_t)k,
                     r4_dtype[k], k != 1);
  }
  plan = plan_of(ctx, t, R4_T, LMF_MEZO_GAUSSIAN, rounding);
  if (!plan) goto done;
  uint64_t rng = 2024;
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.eps = 1e-3f;
  a.lr = 5e-5f;
  a.weight_decay = 0.01f;
  a.seed = lt_next(&rng);
  for (int s = 0; s < R4_STEPS; ++s) {
    a.perturb_next = s % 3 != 2;
    a.next_seed = lt_next(&rng);
    lmf_mezo_step_result_t r;
    if (!LMF_CHECK_OK(lmf_mezo_train_step(plan, &a, r4_loss, &m, &r, NULL))) goto done;
    losses[2 * s] = r.loss_plus;
    losses[2 * s + 1] = r.loss_minus;
    a.seed = a.next_seed;
  }
  if (!LMF_CHECK_OK(lmf_mezo_restore(plan, NULL))) goto done;
  size_t off = 0;
  for (int k = 0; k < R4_T; ++k) {
    size_t bytes = (size_t)r4_numel[k] * lmf_dtype_size(r4_dtype[k]);
    memcpy(out + off, m.data[k], bytes);
    off += bytes;
  }
  memcpy(out + off, m.master, 1500 * 4);
  ok = 1;
done:
  lmf_mezo_plan_destroy(plan);
  for (int k = 0; k < R4_T; ++k) free(m.data[k]);
  free(m.master);
  free(m.scratch);
  free(init);
  lmf_context_destroy(ctx);
  return ok;
}

static size_t r4_bytes(void) {
  size_t b = 1500 * 4;
  for (int k = 0; k < R4_T; ++k) b += (size_t)r4_numel[k] * lmf_dtype_size(r4_dtype[k]);
  return b;
}

/* 100 steps twice with the same seeds: bit-identical parameters (fp32, bf16, f16, bf16 + master) and
 * losses, with nearest and with stochastic rounding. */
void test_spec04_reproducibility(void) {
  size_t nb = r4_bytes();
  unsigned char *p1 = (unsigned char *)lt_malloc(nb), *p2 = (unsigned char *)lt_malloc(nb);
  float l1[2 * R4_STEPS], l2[2 * R4_STEPS];
  for (int rounding = 0; p1 && p2 && rounding < 2; ++rounding) {
    memset(p1, 0, nb);
    memset(p2, 0xff, nb);
    if (!r4_run(rounding, 0, p1, l1) || !r4_run(rounding, 0, p2, l2)) break;
    LMF_CHECK_BYTES_EQ(p1, p2, nb, rounding ? "parameters (stochastic rounding)" : "parameters");
    LMF_CHECK_BYTES_EQ(l1, l2, sizeof l1, "losses");
    LMF_CHECK_MSG(l1[2 * R4_STEPS - 1] != l1[1], "the losses did not change over 100 steps");
  }
  free(p1);
  free(p2);
}

/* ---- 5: exact restore ---------------------------------------------------------------------------------- */

/* fp32 theta_i = 1 + k_i 2^-10, eps = 2^-8, Rademacher: +eps, -2eps, +eps gives theta back bit-exactly
 * (and each intermediate is exactly theta +- eps z). */
void test_spec05_dyadic_exact_restore(void) {
  const int64_t n = 100003;
  const float eps = 0x1p-8f;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *theta0 = (float *)lt_malloc((size_t)n * 4), *x = (float *)lt_malloc((size_t)n * 4);
  float *z = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *plan = NULL;
  if (!ctx || !theta0 || !x || !z) goto done;
  fill_dyadic(theta0, n, 0x1p-10f, 5);
  memcpy(x, theta0, (size_t)n * 4);
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, n, 0, 9, LMF_DTYPE_F32, 1);
  plan = plan_of(ctx, &t, 1, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
  if (!plan) goto done;
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, 555, 9, 0, n, z, NULL))) goto done;
  const float scales[3] = {eps, -2 * eps, eps};
  const float offsets[3] = {eps, -eps, 0.0f};
  for (int p = 0; p < 3; ++p) {
    if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 555, scales[p], NULL))) goto done;
    check_perturbation(plan, 555, offsets[p]);
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = theta0[i] + offsets[p] * z[i]; /* exact */
      if (x[i] != want && bad++ < 3)
        LMF_CHECK_MSG(0, "pass %d element %lld: %a, expected %a", p, (long long)i, (double)x[i], (double)want);
    }
    LMF_CHECK_EQ_INT(bad, 0);
  }
  LMF_CHECK_BYTES_EQ(x, theta0, (size_t)n * 4, "theta after +eps, -2eps, +eps (dyadic)");
done:
  lmf_mezo_plan_destroy(plan);
  free(theta0);
  free(x);
  free(z);
  lmf_context_destroy(ctx);
}

/* Gaussian fp32, theta ~ N(0, 0.02^2), eps = 1e-3: after +eps, -2eps, +eps the error is at most 2 ulp,
 * ulps taken at the largest magnitude the element held (theta0 and the two perturbed values). */
void test_spec05_gaussian_restore_2ulp(void) {
  const int64_t n = 200003;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *theta0 = (float *)lt_malloc((size_t)n * 4), *x = (float *)lt_malloc((size_t)n * 4);
  float *x1 = (float *)lt_malloc((size_t)n * 4), *x2 = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *plan = NULL;
  if (!ctx || !theta0 || !x || !x1 || !x2) goto done;
  lt_fill_normal(theta0, n, 0.0, 0.02, 8);
  memcpy(x, theta0, (size_t)n * 4);
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, n, 0, 2, LMF_DTYPE_F32, 0);
  plan = plan_of(ctx, &t, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
  if (!plan) goto done;
  if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 31, 1e-3f, NULL))) goto done;
  memcpy(x1, x, (size_t)n * 4);
  if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 31, -2e-3f, NULL))) goto done;
  memcpy(x2, x, (size_t)n * 4);
  if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 31, 1e-3f, NULL))) goto done;
  check_perturbation(plan, 0, 0.0f);
  int64_t differ = 0, bad = 0;
  double worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    double m = fabs(theta0[i]);
    if (fabs(x1[i]) > m) m = fabs(x1[i]);
    if (fabs(x2[i]) > m) m = fabs(x2[i]);
    double e = fabs((double)x[i] - theta0[i]) / ref_ulp(m, LMF_DTYPE_F32);
    differ += x[i] != theta0[i];
    if (e > worst) worst = e;
    if (!(e <= 2.0) && bad++ < 3)
      LMF_CHECK_MSG(0, "element %lld: %a restored to %a (%.2f ulp)", (long long)i, (double)theta0[i],
                    (double)x[i], e);
  }
  LMF_CHECK_EQ_INT(bad, 0);
  lmf_t_note("Gaussian fp32 restore: %.1f%% of elements not bit-identical, worst %.2f ulp", 100.0 * differ / n,
             worst);
done:
  lmf_mezo_plan_destroy(plan);
  free(theta0);
  free(x);
  free(x1);
  free(x2);
  lmf_context_destroy(ctx);
}

/* fp32 master + bf16 / f16 working copy, Gaussian: the master never changes, each perturbed working copy
 * is round(master + offset z) (within one 16-bit ulp of the exact value), and after the three passes
 * the working copy equals round(master) bit-exactly. */
void test_spec05_master_exact_restore(void) {
  const int64_t n = 100003;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *master = (float *)lt_malloc((size_t)n * 4), *m0 = (float *)lt_malloc((size_t)n * 4);
  float *view = (float *)lt_malloc((size_t)n * 4), *z = (float *)lt_malloc((size_t)n * 4);
  uint16_t *work = (uint16_t *)lt_malloc((size_t)n * 2), *round0 = (uint16_t *)lt_malloc((size_t)n * 2);
  lmf_mezo_plan_t *plan = NULL;
  if (!ctx || !master || !m0 || !view || !z || !work || !round0) goto done;
  for (int d = 0; d < 2; ++d) {
    const int32_t dtype = d ? LMF_DTYPE_F16 : LMF_DTYPE_BF16;
    lt_fill_normal(m0, n, 0.0, 0.02, 9);
    memcpy(master, m0, (size_t)n * 4);
    if (!lt_convert(round0, dtype, m0, LMF_DTYPE_F32, n)) goto done;
    memcpy(work, round0, (size_t)n * 2);
    lmf_mezo_tensor_t t = lt_tensor(work, master, n, 0, 4, dtype, 1);
    plan = plan_of(ctx, &t, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!plan) goto done;
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, 64, 4, 0, n, z, NULL))) goto done;
    const float scales[3] = {1e-3f, -2e-3f, 1e-3f};
    const double offsets[3] = {1e-3, -1e-3, 0.0};
    for (int p = 0; p < 3; ++p) {
      if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 64, scales[p], NULL))) goto done;
      LMF_CHECK_BYTES_EQ(master, m0, (size_t)n * 4, "master after a perturbation");
      if (!lt_convert(view, LMF_DTYPE_F32, work, dtype, n)) goto done;
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        double want = (double)m0[i] + (double)(float)offsets[p] * z[i];
        double ulp = ref_ulp(fabs(want) > fabs(view[i]) ? want : view[i], dtype);
        if (!(fabs(view[i] - want) <= ulp) && bad++ < 3)
          LMF_CHECK_MSG(0, "%s pass %d element %lld: working %.9g, master + offset z = %.9g",
                        lmf_dtype_name(dtype), p, (long long)i, view[i], want);
      }
      LMF_CHECK_EQ_INT(bad, 0);
    }
    LMF_CHECK_BYTES_EQ(work, round0, (size_t)n * 2, "working copy after +eps, -2eps, +eps vs round(master)");
    lmf_mezo_plan_destroy(plan);
    plan = NULL;
  }
done:
  lmf_mezo_plan_destroy(plan);
  free(master);
  free(m0);
  free(view);
  free(z);
  free(work);
  free(round0);
  lmf_context_destroy(ctx);
}

/* ---- 6: fused vs unfused ------------------------------------------------------------------------------ */

/* The fused 2-pass schedule (lmf_mezo_step with perturb_next) against the unfused one (lmf_mezo_restore,
 * a plain lmf_mezo_step, lmf_mezo_perturb), fp32, Gaussian, decay and non-decay tensors, plus fp32
 * masters: within 2 ulp per element per step (each step starts both from the same state), and the
 * working copy of a master tensor equal wherever the masters are. */
void test_spec06_fused_vs_unfused(void) {
  const int64_t n = 50001, nm = 20001;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *f[2] = {(float *)lt_malloc((size_t)n * 4), (float *)lt_malloc((size_t)n * 4)};
  float *u[2] = {(float *)lt_malloc((size_t)n * 4), (float *)lt_malloc((size_t)n * 4)};
  float *fm = (float *)lt_malloc((size_t)nm * 4), *um = (float *)lt_malloc((size_t)nm * 4);
  uint16_t *fw = (uint16_t *)lt_malloc((size_t)nm * 2), *uw = (uint16_t *)lt_malloc((size_t)nm * 2);
  lmf_mezo_plan_t *pf = NULL, *pu = NULL;
  if (!ctx || !f[0] || !f[1] || !u[0] || !u[1] || !fm || !um || !fw || !uw) goto done;
  lt_fill_normal(f[0], n, 0.0, 0.02, 10);
  lt_fill_normal(f[1], n, 0.0, 0.5, 11);
  lt_fill_normal(fm, nm, 0.0, 0.02, 12);
  if (!lt_convert(fw, LMF_DTYPE_BF16, fm, LMF_DTYPE_F32, nm)) goto done;
  memcpy(u[0], f[0], (size_t)n * 4);
  memcpy(u[1], f[1], (size_t)n * 4);
  memcpy(um, fm, (size_t)nm * 4);
  memcpy(uw, fw, (size_t)nm * 2);
  lmf_mezo_tensor_t tf[3] = {lt_tensor(f[0], NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                             lt_tensor(f[1], NULL, n, 0, 2, LMF_DTYPE_F32, 0),
                             lt_tensor(fw, fm, nm, 0, 3, LMF_DTYPE_BF16, 1)};
  lmf_mezo_tensor_t tu[3] = {lt_tensor(u[0], NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                             lt_tensor(u[1], NULL, n, 0, 2, LMF_DTYPE_F32, 0),
                             lt_tensor(uw, um, nm, 0, 3, LMF_DTYPE_BF16, 1)};
  pf = plan_of(ctx, tf, 3, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
  pu = plan_of(ctx, tu, 3, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
  if (!pf || !pu) goto done;
  const float eps = 1e-3f, lr = 1e-3f, wd = 0.1f;
  uint64_t rng = 66, seed = lt_next(&rng);
  if (!LMF_CHECK_OK(lmf_mezo_perturb(pf, seed, eps, NULL)) || !LMF_CHECK_OK(lmf_mezo_perturb(pu, seed, eps, NULL)))
    goto done;
  double worst = 0.0;
  for (int s = 0; s < 20; ++s) {
    uint64_t next = lt_next(&rng);
    float g = (float)(10.0 * lt_normal(&rng));
    lmf_mezo_step_args_t a = step_args_next(seed, g, lr, wd, next, eps);
    if (!LMF_CHECK_OK(lmf_mezo_step(pf, &a, NULL))) goto done;
    lmf_mezo_step_args_t b = step_args(seed, g, lr, wd);
    if (!LMF_CHECK_OK(lmf_mezo_restore(pu, NULL)) || !LMF_CHECK_OK(lmf_mezo_step(pu, &b, NULL)) ||
        !LMF_CHECK_OK(lmf_mezo_perturb(pu, next, eps, NULL)))
      goto done;
    check_perturbation(pf, next, eps);
    int bad = 0;
    for (int k = 0; k < 3; ++k) {
      const float *x = k < 2 ? f[k] : fm, *y = k < 2 ? u[k] : um;
      int64_t cnt = k < 2 ? n : nm;
      for (int64_t i = 0; i < cnt; ++i) {
        double e = ulps_f32(x[i], y[i]);
        if (e > worst) worst = e;
        if (!(e <= 2.0) && bad++ < 3)
          LMF_CHECK_MSG(0, "step %d tensor %d element %lld: fused %a, unfused %a", s, k, (long long)i,
                        (double)x[i], (double)y[i]);
      }
    }
    LMF_CHECK_EQ_INT(bad, 0);
    if (memcmp(fm, um, (size_t)nm * 4) == 0)
      LMF_CHECK_BYTES_EQ(fw, uw, (size_t)nm * 2, "working copies of equal masters");
    /* The next step starts both schedules from the same state. */
    memcpy(f[0], u[0], (size_t)n * 4);
    memcpy(f[1], u[1], (size_t)n * 4);
    memcpy(fm, um, (size_t)nm * 4);
    memcpy(fw, uw, (size_t)nm * 2);
    seed = next;
  }
  lmf_t_note("fused vs unfused, fp32: worst %.2f ulp per step", worst);
done:
  lmf_mezo_plan_destroy(pf);
  lmf_mezo_plan_destroy(pu);
  free(f[0]);
  free(f[1]);
  free(u[0]);
  free(u[1]);
  free(fm);
  free(um);
  free(fw);
  free(uw);
  lmf_context_destroy(ctx);
}

/* Dyadic case (theta = 1 + k 2^-10, Rademacher, eps = 2^-8, g = 2^-4, lr = 2^-6, wd = 0): fused and
 * unfused are bit-identical over 10 steps, and equal the exact result theta - 2^-10 z_t + 2^-8 z_{t+1}. */
void test_spec06_fused_vs_unfused_dyadic(void) {
  const int64_t n = 30001;
  const float eps = 0x1p-8f, g = 0x1p-4f, lr = 0x1p-6f;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *f = (float *)lt_malloc((size_t)n * 4), *u = (float *)lt_malloc((size_t)n * 4);
  float *theta = (float *)lt_malloc((size_t)n * 4), *za = (float *)lt_malloc((size_t)n * 4);
  float *zb = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *pf = NULL, *pu = NULL;
  if (!ctx || !f || !u || !theta || !za || !zb) goto done;
  fill_dyadic(theta, n, 0x1p-10f, 13);
  memcpy(f, theta, (size_t)n * 4);
  memcpy(u, theta, (size_t)n * 4);
  lmf_mezo_tensor_t tf = lt_tensor(f, NULL, n, 0, 5, LMF_DTYPE_F32, 1);
  lmf_mezo_tensor_t tu = lt_tensor(u, NULL, n, 0, 5, LMF_DTYPE_F32, 1);
  pf = plan_of(ctx, &tf, 1, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
  pu = plan_of(ctx, &tu, 1, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
  if (!pf || !pu) goto done;
  uint64_t seed = 1000;
  if (!LMF_CHECK_OK(lmf_mezo_perturb(pf, seed, eps, NULL)) || !LMF_CHECK_OK(lmf_mezo_perturb(pu, seed, eps, NULL)))
    goto done;
  for (int s = 0; s < 10; ++s) {
    uint64_t next = seed + 1;
    lmf_mezo_step_args_t a = step_args_next(seed, g, lr, 0.0f, next, eps);
    lmf_mezo_step_args_t b = step_args(seed, g, lr, 0.0f);
    if (!LMF_CHECK_OK(lmf_mezo_step(pf, &a, NULL)) || !LMF_CHECK_OK(lmf_mezo_restore(pu, NULL)) ||
        !LMF_CHECK_OK(lmf_mezo_step(pu, &b, NULL)) || !LMF_CHECK_OK(lmf_mezo_perturb(pu, next, eps, NULL)))
      goto done;
    LMF_CHECK_BYTES_EQ(f, u, (size_t)n * 4, "fused vs unfused (dyadic)");
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, seed, 5, 0, n, za, NULL)) ||
        !LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, next, 5, 0, n, zb, NULL)))
      goto done;
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      theta[i] = theta[i] - 0x1p-10f * za[i]; /* exact */
      float want = theta[i] + eps * zb[i];
      if (f[i] != want && bad++ < 3)
        LMF_CHECK_MSG(0, "step %d element %lld: %a, exact %a", s, (long long)i, (double)f[i], (double)want);
    }
    LMF_CHECK_EQ_INT(bad, 0);
    seed = next;
  }
done:
  lmf_mezo_plan_destroy(pf);
  lmf_mezo_plan_destroy(pu);
  free(f);
  free(u);
  free(theta);
  free(za);
  free(zb);
  lmf_context_destroy(ctx);
}

/* ---- 7: weight decay ------------------------------------------------------------------------------------ */

/* g = 0, lr = 0.1, wd = 0.5: decay tensors become theta * (1 - lr wd), the factor computed in fp32 as
 * 1.0f - lr * wd and the product rounded once (to fp32; for 16-bit tensors then once to the format);
 * tensors without the decay flag are unchanged bit for bit; decay applies to the restored value. */
void test_spec07_weight_decay(void) {
  const int64_t n = 40001;
  const float lr = 0.1f, wd = 0.5f;
  volatile float lr_v = lr, wd_v = wd;
  const float factor = 1.0f - lr_v * wd_v;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *a0 = (float *)lt_malloc((size_t)n * 4), *b0 = (float *)lt_malloc((size_t)n * 4);
  float *a = (float *)lt_malloc((size_t)n * 4), *b = (float *)lt_malloc((size_t)n * 4);
  float *ra = (float *)lt_malloc((size_t)n * 4), *rb = (float *)lt_malloc((size_t)n * 4);
  uint16_t *h = (uint16_t *)lt_malloc((size_t)n * 2), *h0 = (uint16_t *)lt_malloc((size_t)n * 2);
  uint16_t *hw = (uint16_t *)lt_malloc((size_t)n * 2);
  float *hm = (float *)lt_malloc((size_t)n * 4), *hm0 = (float *)lt_malloc((size_t)n * 4);
  float *view = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *p = NULL, *q = NULL;
  if (!ctx || !a0 || !b0 || !a || !b || !ra || !rb || !h || !h0 || !hw || !hm || !hm0 || !view) goto done;
  LMF_CHECK(factor == 0.95f);
  lmf_mezo_step_args_t st = step_args(7, 0.0f, lr, wd);

  /* (a) Unperturbed plan: fp32, bf16, f16 and bf16 + master. */
  for (int d = 0; d < 3; ++d) {
    const int32_t dtype = d == 0 ? LMF_DTYPE_BF16 : LMF_DTYPE_F16;
    lt_fill_normal(a0, n, 0.0, 0.02, 14);
    lt_fill_normal(b0, n, 0.0, 0.02, 15);
    lt_fill_normal(hm0, n, 0.0, 0.02, 16);
    memcpy(a, a0, (size_t)n * 4);
    memcpy(b, b0, (size_t)n * 4);
    memcpy(hm, hm0, (size_t)n * 4);
    if (!lt_convert(h0, dtype, a0, LMF_DTYPE_F32, n) || !lt_convert(hw, LMF_DTYPE_BF16, hm0, LMF_DTYPE_F32, n))
      goto done;
    memcpy(h, h0, (size_t)n * 2);
    lmf_mezo_tensor_t t[4] = {lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                              lt_tensor(b, NULL, n, 0, 2, LMF_DTYPE_F32, 0),
                              lt_tensor(h, NULL, n, 0, 3, dtype, 1),
                              lt_tensor(hw, hm, n, 0, 4, LMF_DTYPE_BF16, 1)};
    p = plan_of(ctx, t, 4, d == 2 ? LMF_MEZO_RADEMACHER : LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!p || !LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) goto done;
    if (!lt_convert(view, LMF_DTYPE_F32, h0, dtype, n)) goto done;
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float wa = a0[i] * factor, wm = hm0[i] * factor;
      double wh = ref_round((double)(view[i] * factor), dtype);
      if (a[i] != wa && bad++ < 3) LMF_CHECK_MSG(0, "fp32 element %lld: %a vs %a", (long long)i, (double)a[i], (double)wa);
      if (hm[i] != wm && bad++ < 3) LMF_CHECK_MSG(0, "master element %lld: %a vs %a", (long long)i, (double)hm[i], (double)wm);
      if (ref_decode16(h[i], dtype) != wh && bad++ < 3)
        LMF_CHECK_MSG(0, "%s element %lld: %a vs %a", lmf_dtype_name(dtype), (long long)i,
                      ref_decode16(h[i], dtype), wh);
      if (ref_decode16(hw[i], LMF_DTYPE_BF16) != ref_round((double)hm[i], LMF_DTYPE_BF16) && bad++ < 3)
        LMF_CHECK_MSG(0, "working copy element %lld is not round(master)", (long long)i);
    }
    LMF_CHECK_EQ_INT(bad, 0);
    LMF_CHECK_BYTES_EQ(b, b0, (size_t)n * 4, "tensor without the decay flag");
    lmf_mezo_plan_destroy(p);
    p = NULL;
  }

  /* (b) Dyadic, Rademacher, perturbed first: the restore is exact, so decayed = theta0 * factor exactly. */
  fill_dyadic(a0, n, 0x1p-10f, 17);
  fill_dyadic(b0, n, 0x1p-10f, 18);
  memcpy(a, a0, (size_t)n * 4);
  memcpy(b, b0, (size_t)n * 4);
  {
    lmf_mezo_tensor_t t[2] = {lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                              lt_tensor(b, NULL, n, 0, 2, LMF_DTYPE_F32, 0)};
    p = plan_of(ctx, t, 2, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
    if (!p || !LMF_CHECK_OK(lmf_mezo_perturb(p, 7, 0x1p-8f, NULL)) || !LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL)))
      goto done;
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = a0[i] * factor;
      if (a[i] != want && bad++ < 3)
        LMF_CHECK_MSG(0, "dyadic element %lld: %a vs theta0 * factor %a", (long long)i, (double)a[i], (double)want);
    }
    LMF_CHECK_EQ_INT(bad, 0);
    LMF_CHECK_BYTES_EQ(b, b0, (size_t)n * 4, "dyadic tensor without the decay flag");
    lmf_mezo_plan_destroy(p);
    p = NULL;
  }

  /* (c) Gaussian, perturbed first: decayed = (the value lmf_mezo_restore gives) * factor; the non-decay
   * tensor equals the restored value. The twin plan q restores instead of stepping. */
  lt_fill_normal(a0, n, 0.0, 0.02, 19);
  lt_fill_normal(b0, n, 0.0, 0.02, 20);
  memcpy(a, a0, (size_t)n * 4);
  memcpy(b, b0, (size_t)n * 4);
  memcpy(ra, a0, (size_t)n * 4);
  memcpy(rb, b0, (size_t)n * 4);
  {
    lmf_mezo_tensor_t t[2] = {lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                              lt_tensor(b, NULL, n, 0, 2, LMF_DTYPE_F32, 0)};
    lmf_mezo_tensor_t tr[2] = {lt_tensor(ra, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                               lt_tensor(rb, NULL, n, 0, 2, LMF_DTYPE_F32, 0)};
    p = plan_of(ctx, t, 2, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    q = plan_of(ctx, tr, 2, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!p || !q || !LMF_CHECK_OK(lmf_mezo_perturb(p, 7, 1e-3f, NULL)) ||
        !LMF_CHECK_OK(lmf_mezo_perturb(q, 7, 1e-3f, NULL)) || !LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL)) ||
        !LMF_CHECK_OK(lmf_mezo_restore(q, NULL)))
      goto done;
    int bad = 0;
    for (int64_t i = 0; i < n; ++i) {
      float want = ra[i] * factor;
      if (a[i] != want && bad++ < 3)
        LMF_CHECK_MSG(0, "element %lld: %a vs restored * factor %a", (long long)i, (double)a[i], (double)want);
    }
    LMF_CHECK_EQ_INT(bad, 0);
    LMF_CHECK_BYTES_EQ(b, rb, (size_t)n * 4, "non-decay tensor after a g = 0 step vs restored");
  }
done:
  lmf_mezo_plan_destroy(p);
  lmf_mezo_plan_destroy(q);
  free(a0);
  free(b0);
  free(a);
  free(b);
  free(ra);
  free(rb);
  free(h);
  free(h0);
  free(hw);
  free(hm);
  free(hm0);
  free(view);
  lmf_context_destroy(ctx);
}

/* ---- 9: multi-seed update ---------------------------------------------------------------------------- */

/* update_multi({s1, s2, s3}, coefficients) equals three single updates within 3 ulp (fp32), for both
 * distributions, without and with weight decay (which the multi update applies once: the singles carry
 * it in the first step only). */
void test_spec09_multi_vs_singles(void) {
  const int64_t n = 100003;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *a = (float *)lt_malloc((size_t)n * 4), *b = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *pa = NULL, *pb = NULL;
  if (!ctx || !a || !b) goto done;
  const uint64_t seeds[3] = {101, 202, 0xfeedface12345678ull};
  const float coeffs[3] = {0.7f, -1.3f, 2.1f};
  for (int v = 0; v < 4; ++v) {
    const int32_t dist = v & 1;
    const float wd = (v & 2) ? 0.3f : 0.0f, lr = 1e-2f;
    lt_fill_normal(a, n, 0.0, 0.02, 21 + (uint64_t)v);
    memcpy(b, a, (size_t)n * 4);
    lmf_mezo_tensor_t ta = lt_tensor(a, NULL, n, 0, 6, LMF_DTYPE_F32, 1);
    lmf_mezo_tensor_t tb = lt_tensor(b, NULL, n, 0, 6, LMF_DTYPE_F32, 1);
    pa = plan_of(ctx, &ta, 1, dist, LMF_ROUND_NEAREST);
    pb = plan_of(ctx, &tb, 1, dist, LMF_ROUND_NEAREST);
    if (!pa || !pb) goto done;
    lmf_mezo_multi_args_t m;
    lmf_mezo_multi_args_init(&m, sizeof m);
    m.num_seeds = 3;
    m.seeds = seeds;
    m.coeffs = coeffs;
    m.lr = lr;
    m.weight_decay = wd;
    int32_t skipped = 7;
    m.skipped_ptr = &skipped;
    if (!LMF_CHECK_OK(lmf_mezo_update_multi(pa, &m, NULL))) goto done;
    LMF_CHECK_EQ_INT(skipped, 0);
    for (int j = 0; j < 3; ++j) {
      lmf_mezo_step_args_t s = step_args(seeds[j], coeffs[j], lr, j == 0 ? wd : 0.0f);
      if (!LMF_CHECK_OK(lmf_mezo_step(pb, &s, NULL))) goto done;
    }
    int bad = 0;
    double worst = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double e = ulps_f32(a[i], b[i]);
      if (e > worst) worst = e;
      if (!(e <= 3.0) && bad++ < 3)
        LMF_CHECK_MSG(0, "variant %d element %lld: multi %a, singles %a", v, (long long)i, (double)a[i],
                      (double)b[i]);
    }
    LMF_CHECK_EQ_INT(bad, 0);
    if (v == 0) lmf_t_note("multi vs singles: worst %.2f ulp", worst);
    lmf_mezo_plan_destroy(pa);
    lmf_mezo_plan_destroy(pb);
    pa = pb = NULL;
  }
done:
  lmf_mezo_plan_destroy(pa);
  lmf_mezo_plan_destroy(pb);
  free(a);
  free(b);
  lmf_context_destroy(ctx);
}

/* ---- 10: distributed equivalences (simulated ranks) -------------------------------------------------- */

enum { D10 = 96, RANKS = 4, PER_RANK = 16, EXAMPLES = RANKS * PER_RANK, STEPS10 = 30 };

typedef struct dataset {
  float x[EXAMPLES][D10];
  float y[EXAMPLES];
} dataset;

/* The mean over examples [e0, e0 + count) of 0.5 (theta . x_e - y_e)^2, accumulated in double. */
static double shard_mean_loss(const dataset *ds, const float *theta, int e0, int count) {
  double s = 0.0;
  for (int e = e0; e < e0 + count; ++e) {
    double p = 0.0;
    for (int i = 0; i < D10; ++i) p += (double)theta[i] * ds->x[e][i];
    s += 0.5 * (p - ds->y[e]) * (p - ds->y[e]);
  }
  return s / count;
}

typedef struct rank_state {
  const dataset *ds;
  int rank;
  float *theta;
  pthread_barrier_t *barrier;
  float *slots; /* RANKS shared loss slots: the simulated all-reduce */
  lmf_mezo_plan_t *plan;
  int failed;
} rank_state;

/* All-reduce of the batch loss: each rank writes its shard's mean, then every rank averages the RANKS
 * floats in rank order (so every rank gets the same float). */
static int rank_loss(void *user, float *loss) {
  rank_state *r = (rank_state *)user;
  r->slots[r->rank] = (float)shard_mean_loss(r->ds, r->theta, r->rank * PER_RANK, PER_RANK);
  pthread_barrier_wait(r->barrier);
  float s = 0.0f;
  for (int k = 0; k < RANKS; ++k) s += r->slots[k];
  *loss = s / RANKS;
  pthread_barrier_wait(r->barrier); /* nobody overwrites a slot before everyone has read it */
  return 0;
}

/* The single rank's loss on the concatenated batch: the mean over all examples, computed as the mean of
 * the per-shard means (equal shards), in the same float order as the all-reduce. */
typedef struct single_state {
  const dataset *ds;
  float *theta;
} single_state;

static int single_loss(void *user, float *loss) {
  single_state *s = (single_state *)user;
  float sum = 0.0f;
  for (int k = 0; k < RANKS; ++k) sum += (float)shard_mean_loss(s->ds, s->theta, k * PER_RANK, PER_RANK);
  *loss = sum / RANKS;
  return 0;
}

static lmf_mezo_driver_args_t dist_args(int step, uint64_t *seed) {
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.eps = 1e-3f;
  a.lr = 2e-3f;
  a.weight_decay = 0.01f;
  a.seed = *seed;
  a.perturb_next = step % 4 != 3;
  a.next_seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
  *seed = a.next_seed;
  return a;
}

static void *rank_main(void *arg) {
  rank_state *r = (rank_state *)arg;
  uint64_t seed = 0xabcdef; /* the shared seed sequence */
  for (int s = 0; s < STEPS10 && !r->failed; ++s) {
    lmf_mezo_driver_args_t a = dist_args(s, &seed);
    if (lmf_mezo_train_step(r->plan, &a, rank_loss, r, NULL, NULL) != LMF_OK) r->failed = 1;
  }
  if (lmf_mezo_restore(r->plan, NULL) != LMF_OK) r->failed = 1;
  return NULL;
}

static void make_dataset(dataset *ds, float *theta0) {
  uint64_t s = 99;
  float truth[D10];
  for (int i = 0; i < D10; ++i) {
    truth[i] = (float)lt_normal(&s);
    theta0[i] = (float)(0.1 * lt_normal(&s));
  }
  for (int e = 0; e < EXAMPLES; ++e) {
    double y = 0.0;
    for (int i = 0; i < D10; ++i) {
      ds->x[e][i] = (float)lt_normal(&s);
      y += (double)ds->x[e][i] * truth[i];
    }
    ds->y[e] = (float)(y + 0.1 * lt_normal(&s));
  }
}

/* Shared seed + averaged losses (each rank a thread with its own parameters, data shard and context; the
 * all-reduce inside the loss callback): after 30 driver steps all ranks are bit-identical and equal to
 * single-rank MeZO on the concatenated batch. */
void test_spec10_shared_seed_ranks(void) {
  dataset *ds = (dataset *)lt_malloc(sizeof *ds);
  float theta0[D10], single[D10], theta[RANKS][D10], slots[RANKS];
  lmf_context_t *ctx[RANKS + 1] = {NULL};
  rank_state rs[RANKS];
  memset(rs, 0, sizeof rs);
  lmf_mezo_plan_t *sp = NULL;
  pthread_barrier_t barrier;
  int have_barrier = 0;
  if (!ds) return;
  make_dataset(ds, theta0);
  for (int k = 0; k <= RANKS; ++k) {
    ctx[k] = lt_context(LMF_BACKEND_CPU, 1);
    if (!ctx[k]) goto done;
  }
  /* Single rank on the whole batch. */
  memcpy(single, theta0, sizeof single);
  lmf_mezo_tensor_t t = lt_tensor(single, NULL, D10, 0, 8, LMF_DTYPE_F32, 1);
  sp = plan_of(ctx[RANKS], &t, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
  if (!sp) goto done;
  single_state ss = {ds, single};
  uint64_t seed = 0xabcdef;
  double start = shard_mean_loss(ds, single, 0, EXAMPLES);
  for (int s = 0; s < STEPS10; ++s) {
    lmf_mezo_driver_args_t a = dist_args(s, &seed);
    if (!LMF_CHECK_OK(lmf_mezo_train_step(sp, &a, single_loss, &ss, NULL, NULL))) goto done;
  }
  if (!LMF_CHECK_OK(lmf_mezo_restore(sp, NULL))) goto done;
  double end = shard_mean_loss(ds, single, 0, EXAMPLES);
  lmf_t_note("single rank: batch loss %.4g -> %.4g in %d steps", start, end, STEPS10);
  LMF_CHECK_MSG(end < start, "MeZO did not reduce the loss (%.4g -> %.4g)", start, end);

  LMF_REQUIRE(pthread_barrier_init(&barrier, NULL, RANKS) == 0);
  have_barrier = 1;
  for (int k = 0; k < RANKS; ++k) {
    memcpy(theta[k], theta0, sizeof theta0);
    lmf_mezo_tensor_t tk = lt_tensor(theta[k], NULL, D10, 0, 8, LMF_DTYPE_F32, 1);
    rs[k].ds = ds;
    rs[k].rank = k;
    rs[k].theta = theta[k];
    rs[k].barrier = &barrier;
    rs[k].slots = slots;
    rs[k].plan = plan_of(ctx[k], &tk, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!rs[k].plan) goto done;
  }
  pthread_t th[RANKS];
  int started = 0;
  for (int k = 0; k < RANKS; ++k) {
    if (pthread_create(&th[k], NULL, rank_main, &rs[k]) != 0) break;
    started++;
  }
  LMF_REQUIRE(started == RANKS); /* a partial start would deadlock at the barrier: give up loudly */
  for (int k = 0; k < RANKS; ++k) pthread_join(th[k], NULL);
  for (int k = 0; k < RANKS; ++k) {
    LMF_CHECK_EQ_INT(rs[k].failed, 0);
    LMF_CHECK_MSG(memcmp(theta[k], theta[0], sizeof theta0) == 0, "rank %d differs from rank 0", k);
  }
  LMF_CHECK_BYTES_EQ(theta[0], single, sizeof single, "ranks vs single rank on the concatenated batch");
done:
  for (int k = 0; k < RANKS; ++k) lmf_mezo_plan_destroy(rs[k].plan);
  lmf_mezo_plan_destroy(sp);
  for (int k = 0; k <= RANKS; ++k) lmf_context_destroy(ctx[k]);
  if (have_barrier) pthread_barrier_destroy(&barrier);
  free(ds);
}

/* Per-rank seeds: each rank estimates g_r on its own shard with its own seed (perturb, loss, perturb,
 * loss, restore), the (seed, g) pairs are all-gathered, and every rank applies all of them in one
 * lmf_mezo_update_multi with c_r = g_r / R. bf16 working copies with fp32 masters, so each rank's
 * restore is exact: all ranks stay bit-identical (masters and working copies), equal to one plan
 * applying the same gathered update. */
void test_spec10_per_rank_seeds(void) {
  dataset *ds = (dataset *)lt_malloc(sizeof *ds);
  float theta0[D10], master[RANKS + 1][D10], view[D10];
  uint16_t work[RANKS + 1][D10];
  lmf_mezo_plan_t *plan[RANKS + 1] = {NULL};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!ds || !ctx) goto done;
  make_dataset(ds, theta0);
  for (int k = 0; k <= RANKS; ++k) {
    memcpy(master[k], theta0, sizeof theta0);
    if (!lt_convert(work[k], LMF_DTYPE_BF16, theta0, LMF_DTYPE_F32, D10)) goto done;
    lmf_mezo_tensor_t t = lt_tensor(work[k], master[k], D10, 0, 12, LMF_DTYPE_BF16, 0);
    plan[k] = plan_of(ctx, &t, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!plan[k]) goto done;
  }
  const float eps = 1e-2f; /* above bf16's spacing at these magnitudes: the perturbation survives */
  for (int s = 0; s < 10; ++s) {
    uint64_t seeds[RANKS];
    float coeffs[RANKS], g[RANKS];
    for (int r = 0; r < RANKS; ++r) {
      seeds[r] = 1000003ull * (uint64_t)(s + 1) + (uint64_t)r;
      float lp, lm;
      if (!LMF_CHECK_OK(lmf_mezo_perturb(plan[r], seeds[r], eps, NULL))) goto done;
      lt_convert(view, LMF_DTYPE_F32, work[r], LMF_DTYPE_BF16, D10);
      lp = (float)shard_mean_loss(ds, view, r * PER_RANK, PER_RANK);
      if (!LMF_CHECK_OK(lmf_mezo_perturb(plan[r], seeds[r], -2 * eps, NULL))) goto done;
      lt_convert(view, LMF_DTYPE_F32, work[r], LMF_DTYPE_BF16, D10);
      lm = (float)shard_mean_loss(ds, view, r * PER_RANK, PER_RANK);
      if (!LMF_CHECK_OK(lmf_mezo_restore(plan[r], NULL))) goto done;
      g[r] = (lp - lm) / (2 * eps);
      coeffs[r] = g[r] / RANKS;
    }
    LMF_CHECK(g[0] != g[1] || g[1] != g[2]);
    /* Every rank's restore was exact: all ranks still agree before the update. */
    for (int r = 1; r < RANKS; ++r)
      LMF_CHECK_MSG(memcmp(work[r], work[0], sizeof work[0]) == 0, "step %d: rank %d's restore was not exact",
                    s, r);
    lmf_mezo_multi_args_t m;
    lmf_mezo_multi_args_init(&m, sizeof m);
    m.num_seeds = RANKS;
    m.seeds = seeds;
    m.coeffs = coeffs;
    m.lr = 1e-3f;
    for (int k = 0; k <= RANKS; ++k)
      if (!LMF_CHECK_OK(lmf_mezo_update_multi(plan[k], &m, NULL))) goto done;
  }
  for (int k = 1; k <= RANKS; ++k) {
    LMF_CHECK_MSG(memcmp(master[k], master[0], sizeof master[0]) == 0, "master of %d differs", k);
    LMF_CHECK_MSG(memcmp(work[k], work[0], sizeof work[0]) == 0, "working copy of %d differs", k);
  }
  LMF_CHECK(memcmp(master[0], theta0, sizeof theta0) != 0);
done:
  for (int k = 0; k <= RANKS; ++k) lmf_mezo_plan_destroy(plan[k]);
  lmf_context_destroy(ctx);
  free(ds);
}

/* ---- 11: edge cases ------------------------------------------------------------------------------------------ */

/* numel in {1, 3, 4, 5, 7, 8, 9} at global offsets around Philox group and block boundaries, every dtype
 * and distribution: perturb and step touch exactly the tensor's elements (guards around it keep their
 * bytes) and give the expected values: exact in the dyadic Rademacher case, within one ulp of the
 * format against the double reference for Gaussian z. */
void test_spec11_small_numel(void) {
  static const int64_t sizes[] = {1, 3, 4, 5, 7, 8, 9};
  static const int64_t offsets[] = {0, 1, 2, 3, 5, 126, 127, 128, 129, 255};
  static const int32_t dtypes[] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};
  enum { G = 16, MAXN = 9 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  int bad = 0;
  for (size_t di = 0; di < 3; ++di) {
    const int32_t dt = dtypes[di];
    const size_t es = lmf_dtype_size(dt);
    /* Dyadic spacing that keeps theta +- q z and theta - q z exact in the format. */
    const float q = dt == LMF_DTYPE_F32 ? 0x1p-10f : dt == LMF_DTYPE_F16 ? 0x1p-8f : 0x1p-7f;
    for (int dist = 0; dist < 2; ++dist) {
      for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
        for (size_t oi = 0; oi < sizeof offsets / sizeof offsets[0]; ++oi) {
          const int64_t n = sizes[si], off = offsets[oi];
          float storage[MAXN + 2 * G]; /* element-aligned for every dtype */
          unsigned char *buf = (unsigned char *)storage, guard[(MAXN + 2 * G) * 4];
          float theta0[MAXN], x[MAXN];
          uint64_t rs = 1000 + si * 31 + oi;
          for (size_t b = 0; b < sizeof storage; ++b) buf[b] = (unsigned char)lt_next(&rs);
          fill_dyadic(theta0, n, q, 7 + oi);
          if (!lt_convert(buf + G * es, dt, theta0, LMF_DTYPE_F32, n)) goto done;
          memcpy(guard, buf, sizeof storage);
          lmf_mezo_tensor_t t = lt_tensor(buf + G * es, NULL, n, off, 17, dt, 1);
          lmf_mezo_plan_t *p = plan_of(ctx, &t, 1, dist, LMF_ROUND_NEAREST);
          if (!p) goto done;
          const float eps = dist == LMF_MEZO_RADEMACHER ? q : 1e-3f;
          lmf_mezo_step_args_t st = step_args(5, 1.0f, dist == LMF_MEZO_RADEMACHER ? q : 1e-3f, 0.0f);
          int ok = LMF_CHECK_OK(lmf_mezo_perturb(p, 5, eps, NULL));
          for (int phase = 0; ok && phase < 2; ++phase) {
            if (phase == 1) ok = LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
            if (!ok) break;
            lt_convert(x, LMF_DTYPE_F32, buf + G * es, dt, n);
            for (int64_t i = 0; i < n; ++i) {
              double z = ref_z(dist, 5, 17, (uint64_t)(off + i), NULL);
              /* phase 0: theta + eps z; phase 1: restored, then - lr g z. */
              double want = phase == 0 ? (double)theta0[i] + eps * z : (double)theta0[i] - (double)st.lr * z;
              double err = fabs((double)x[i] - want);
              double tol = dist == LMF_MEZO_RADEMACHER ? 0.0 : ref_ulp(want, dt);
              if (dist == LMF_MEZO_GAUSSIAN && phase == 1) tol *= 2; /* two roundings to the format */
              if (!(err <= tol) && bad++ < 5)
                LMF_CHECK_MSG(0, "%s dist %d numel %lld offset %lld phase %d element %lld: %.9g, expected %.9g",
                              lmf_dtype_name(dt), dist, (long long)n, (long long)off, phase, (long long)i,
                              (double)x[i], want);
            }
            if (memcmp(buf, guard, G * es) != 0 ||
                memcmp(buf + (G + n) * es, guard + (G + n) * es, G * es) != 0) {
              if (bad++ < 5)
                LMF_CHECK_MSG(0, "%s numel %lld offset %lld: a pass wrote outside the tensor", lmf_dtype_name(dt),
                              (long long)n, (long long)off);
            }
          }
          lmf_mezo_plan_destroy(p);
        }
      }
    }
  }
  LMF_CHECK_EQ_INT(bad, 0);
done:
  lmf_context_destroy(ctx);
}

/* A tensor starting at an odd element (pointer data + 1, global offset 1; also a master at master + 1)
 * gives the same bits as those elements of the whole tensor, and element 0 is untouched. */
void test_spec11_odd_element_offset(void) {
  const int64_t n = 70001; /* more than one chunk */
  static const int32_t dtypes[] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *init = (float *)lt_malloc((size_t)n * 4);
  unsigned char *w = (unsigned char *)lt_malloc((size_t)n * 4), *o = (unsigned char *)lt_malloc((size_t)n * 4);
  float *wm = (float *)lt_malloc((size_t)n * 4), *om = (float *)lt_malloc((size_t)n * 4);
  if (!ctx || !init || !w || !o || !wm || !om) goto done;
  lt_fill_normal(init, n, 0.0, 0.02, 22);
  for (size_t di = 0; di < 3; ++di) {
    for (int with_master = 0; with_master < 2; ++with_master) {
      for (int rounding = 0; rounding < 2; ++rounding) {
        const int32_t dt = dtypes[di];
        const size_t es = lmf_dtype_size(dt);
        if (!lt_convert(w, dt, init, LMF_DTYPE_F32, n)) goto done;
        memcpy(o, w, (size_t)n * es);
        memcpy(wm, init, (size_t)n * 4);
        memcpy(om, init, (size_t)n * 4);
        lmf_mezo_tensor_t tw = lt_tensor(w, with_master ? wm : NULL, n, 0, 23, dt, 1);
        lmf_mezo_tensor_t to = lt_tensor(o + es, with_master ? om + 1 : NULL, n - 1, 1, 23, dt, 1);
        lmf_mezo_plan_t *pw = plan_of(ctx, &tw, 1, LMF_MEZO_GAUSSIAN, rounding);
        lmf_mezo_plan_t *po = plan_of(ctx, &to, 1, LMF_MEZO_GAUSSIAN, rounding);
        lmf_mezo_step_args_t st = step_args_next(3, 2.5f, 1e-3f, 0.1f, 4, 1e-3f);
        if (pw && po && LMF_CHECK_OK(lmf_mezo_perturb(pw, 3, 1e-3f, NULL)) &&
            LMF_CHECK_OK(lmf_mezo_perturb(po, 3, 1e-3f, NULL)) && LMF_CHECK_OK(lmf_mezo_step(pw, &st, NULL)) &&
            LMF_CHECK_OK(lmf_mezo_step(po, &st, NULL))) {
          LMF_CHECK_MSG(memcmp(w + es, o + es, (size_t)(n - 1) * es) == 0,
                        "%s master %d rounding %d: odd-offset tensor differs from the whole one",
                        lmf_dtype_name(dt), with_master, rounding);
          unsigned char first[4];
          lt_convert(first, dt, init, LMF_DTYPE_F32, 1);
          LMF_CHECK_MSG(memcmp(o, first, es) == 0, "element 0 (outside the odd-offset tensor) was written");
          if (with_master) {
            LMF_CHECK_MSG(memcmp(wm + 1, om + 1, (size_t)(n - 1) * 4) == 0, "%s: masters differ", lmf_dtype_name(dt));
            LMF_CHECK(om[0] == init[0]);
          }
        }
        lmf_mezo_plan_destroy(pw);
        lmf_mezo_plan_destroy(po);
      }
    }
  }
done:
  free(init);
  free(w);
  free(o);
  free(wm);
  free(om);
  lmf_context_destroy(ctx);
}

/* A non-finite g (NaN, +inf, -inf; as a value and through grad_ptr): the restore happens (and the next
 * perturbation, if asked), the update and the decay are skipped, *skipped_ptr = 1; a finite g sets it
 * to 0. The driver reports a non-finite g from its losses in result.skipped; update_multi with a
 * non-finite coefficient changes nothing. */
void test_spec11_nonfinite_grad(void) {
  const int64_t n = 5003;
  const float bad_g[3] = {NAN, INFINITY, -INFINITY};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *a = (float *)lt_malloc((size_t)n * 4), *r = (float *)lt_malloc((size_t)n * 4);
  float *am = (float *)lt_malloc((size_t)n * 4), *rm = (float *)lt_malloc((size_t)n * 4);
  uint16_t *aw = (uint16_t *)lt_malloc((size_t)n * 2), *rw = (uint16_t *)lt_malloc((size_t)n * 2);
  lmf_mezo_plan_t *p = NULL, *q = NULL;
  if (!ctx || !a || !r || !am || !rm || !aw || !rw) goto done;
  for (int k = 0; k < 3; ++k) {
    for (int via_ptr = 0; via_ptr < 2; ++via_ptr) {
      for (int next = 0; next < 2; ++next) {
        lt_fill_normal(a, n, 0, 0.02, 24);
        lt_fill_normal(am, n, 0, 0.02, 25);
        if (!lt_convert(aw, LMF_DTYPE_BF16, am, LMF_DTYPE_F32, n)) goto done;
        memcpy(r, a, (size_t)n * 4);
        memcpy(rm, am, (size_t)n * 4);
        memcpy(rw, aw, (size_t)n * 2);
        lmf_mezo_tensor_t ta[2] = {lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                                   lt_tensor(aw, am, n, 0, 2, LMF_DTYPE_BF16, 1)};
        lmf_mezo_tensor_t tr[2] = {lt_tensor(r, NULL, n, 0, 1, LMF_DTYPE_F32, 1),
                                   lt_tensor(rw, rm, n, 0, 2, LMF_DTYPE_BF16, 1)};
        p = plan_of(ctx, ta, 2, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
        q = plan_of(ctx, tr, 2, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
        if (!p || !q) goto done;
        lmf_mezo_step_args_t st = next ? step_args_next(8, 1.0f, 0.1f, 0.5f, 9, 1e-3f) : step_args(8, 1.0f, 0.1f, 0.5f);
        int32_t skipped = 7;
        float g = bad_g[k];
        if (via_ptr)
          st.grad_ptr = &g; /* host memory on a CPU context; args.grad (1.0) is ignored */
        else
          st.grad = g;
        st.skipped_ptr = &skipped;
        /* The twin q: perturb, restore (+ perturb next) - what a skipped step must leave. */
        if (!LMF_CHECK_OK(lmf_mezo_perturb(p, 8, 1e-3f, NULL)) || !LMF_CHECK_OK(lmf_mezo_perturb(q, 8, 1e-3f, NULL)) ||
            !LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL)) || !LMF_CHECK_OK(lmf_mezo_restore(q, NULL)))
          goto done;
        if (next && !LMF_CHECK_OK(lmf_mezo_perturb(q, 9, 1e-3f, NULL))) goto done;
        LMF_CHECK_EQ_INT(skipped, 1);
        check_perturbation(p, 9, next ? 1e-3f : 0.0f);
        LMF_CHECK_BYTES_EQ(a, r, (size_t)n * 4, "fp32 tensor after a skipped step vs restored");
        LMF_CHECK_BYTES_EQ(am, rm, (size_t)n * 4, "master after a skipped step");
        LMF_CHECK_BYTES_EQ(aw, rw, (size_t)n * 2, "working copy after a skipped step");
        /* A finite g afterwards: skipped = 0 and the update happens. */
        g = 1.0f;
        st = step_args(next ? 9 : 8, 1.0f, 0.1f, 0.5f);
        st.skipped_ptr = &skipped;
        skipped = 7;
        if (!LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) goto done;
        LMF_CHECK_EQ_INT(skipped, 0);
        if (!LMF_CHECK_OK(lmf_mezo_restore(q, NULL))) goto done;
        LMF_CHECK(memcmp(a, r, (size_t)n * 4) != 0);
        lmf_mezo_plan_destroy(p);
        lmf_mezo_plan_destroy(q);
        p = q = NULL;
      }
    }
  }
  /* update_multi with one non-finite coefficient: nothing changes, skipped = 1. */
  {
    lt_fill_normal(a, n, 0, 0.02, 26);
    memcpy(r, a, (size_t)n * 4);
    lmf_mezo_tensor_t t = lt_tensor(a, NULL, n, 0, 1, LMF_DTYPE_F32, 1);
    p = plan_of(ctx, &t, 1, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST);
    if (!p) goto done;
    uint64_t seeds[3] = {1, 2, 3};
    float coeffs[3] = {1.0f, NAN, 2.0f};
    lmf_mezo_multi_args_t m;
    lmf_mezo_multi_args_init(&m, sizeof m);
    m.num_seeds = 3;
    m.seeds = seeds;
    m.coeffs = coeffs;
    m.lr = 0.1f;
    m.weight_decay = 0.5f;
    int32_t skipped = 7;
    m.skipped_ptr = &skipped;
    LMF_CHECK_OK(lmf_mezo_update_multi(p, &m, NULL));
    LMF_CHECK_EQ_INT(skipped, 1);
    LMF_CHECK_BYTES_EQ(a, r, (size_t)n * 4, "update_multi with a NaN coefficient");
    coeffs[1] = INFINITY;
    m.coeffs = NULL;
    m.coeffs_ptr = coeffs; /* backend memory = host memory on the CPU */
    skipped = 7;
    LMF_CHECK_OK(lmf_mezo_update_multi(p, &m, NULL));
    LMF_CHECK_EQ_INT(skipped, 1);
    LMF_CHECK_BYTES_EQ(a, r, (size_t)n * 4, "update_multi with an infinite coefficient (coeffs_ptr)");
    lmf_mezo_plan_destroy(p);
    p = NULL;
  }
done:
  lmf_mezo_plan_destroy(p);
  lmf_mezo_plan_destroy(q);
  free(a);
  free(r);
  free(am);
  free(rm);
  free(aw);
  free(rw);
  lmf_context_destroy(ctx);
}

static int nan_loss_calls;
static int nan_loss(void *user, float *loss) {
  (void)user;
  /* L+ finite, L- infinite: g is not finite. */
  *loss = (nan_loss_calls++ % 2 == 0) ? 1.0f : INFINITY;
  return 0;
}

/* The driver with a loss that makes g non-finite: the step succeeds, reports skipped = 1, and leaves the
 * parameters restored (dyadic case, so restored = original bit for bit). */
void test_spec11_nonfinite_grad_driver(void) {
  const int64_t n = 1001;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *x = (float *)lt_malloc((size_t)n * 4), *x0 = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *p = NULL;
  if (!ctx || !x || !x0) goto done;
  fill_dyadic(x0, n, 0x1p-10f, 27);
  memcpy(x, x0, (size_t)n * 4);
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, n, 0, 1, LMF_DTYPE_F32, 1);
  p = plan_of(ctx, &t, 1, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
  if (!p) goto done;
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.seed = 3;
  a.eps = 0x1p-8f;
  a.lr = 0.1f;
  a.weight_decay = 0.5f;
  lmf_mezo_step_result_t r;
  memset(&r, 0, sizeof r);
  nan_loss_calls = 0;
  if (!LMF_CHECK_OK(lmf_mezo_train_step(p, &a, nan_loss, NULL, &r, NULL))) goto done;
  LMF_CHECK_EQ_INT(r.skipped, 1);
  LMF_CHECK(!isfinite(r.grad));
  LMF_CHECK(r.loss_plus == 1.0f && isinf(r.loss_minus));
  LMF_CHECK_EQ_INT(nan_loss_calls, 2);
  check_perturbation(p, 0, 0.0f);
  LMF_CHECK_BYTES_EQ(x, x0, (size_t)n * 4, "parameters after a skipped driver step");
done:
  lmf_mezo_plan_destroy(p);
  free(x);
  free(x0);
  lmf_context_destroy(ctx);
}

static int count_calls(void *user, float *loss) {
  int *calls = (int *)user;
  *loss = (float)(*calls)++;
  return 0;
}

/* An empty parameter list: every call succeeds and does nothing; the driver still calls the loss twice. */
void test_spec11_empty_plan(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  lmf_mezo_tensor_t unused = lt_tensor(NULL, NULL, 0, 0, 0, 99, 0); /* never read: num_tensors = 0 */
  for (int variant = 0; variant < 2; ++variant) {
    lmf_mezo_plan_t *p = NULL;
    if (!LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, variant ? &unused : NULL, 0, NULL))) continue;
    int64_t numel = -1;
    LMF_CHECK_OK(lmf_mezo_plan_numel(p, &numel));
    LMF_CHECK_EQ_INT(numel, 0);
    LMF_CHECK_OK(lmf_mezo_perturb(p, 1, 1e-3f, NULL));
    LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
    check_perturbation(p, 0, 0.0f);
    int32_t skipped = 7;
    lmf_mezo_step_args_t st = step_args_next(1, 2.0f, 0.1f, 0.1f, 2, 1e-3f);
    st.skipped_ptr = &skipped;
    LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
    LMF_CHECK_EQ_INT(skipped, 0);
    LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
    uint64_t seeds[2] = {1, 2};
    float coeffs[2] = {1, 2};
    lmf_mezo_multi_args_t m;
    lmf_mezo_multi_args_init(&m, sizeof m);
    m.num_seeds = 2;
    m.seeds = seeds;
    m.coeffs = coeffs;
    m.lr = 0.1f;
    LMF_CHECK_OK(lmf_mezo_update_multi(p, &m, NULL));
    lmf_mezo_driver_args_t a;
    lmf_mezo_driver_args_init(&a, sizeof a);
    a.seed = 5;
    a.lr = 0.1f;
    int calls = 0;
    lmf_mezo_step_result_t r;
    LMF_CHECK_OK(lmf_mezo_train_step(p, &a, count_calls, &calls, &r, NULL));
    LMF_CHECK_EQ_INT(calls, 2);
    LMF_CHECK(r.loss_plus == 0.0f && r.loss_minus == 1.0f && r.skipped == 0);
    LMF_CHECK(r.grad == (0.0f - 1.0f) / (2.0f * a.eps));
    lmf_mezo_plan_destroy(p);
  }
  lmf_context_destroy(ctx);
}

/* 64-bit indexing on the CPU: a shard at global offset 2^34 + 3 (Philox counter word 1 nonzero) and one
 * past 2^40 get z of their global indices (checked against fill_z and the double reference). */
void test_spec11_large_global_offset(void) {
  const int64_t n = 1027;
  const int64_t offs[2] = {((int64_t)1 << 34) + 3, ((int64_t)1 << 40) + 1};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *x = (float *)lt_malloc((size_t)n * 4), *z = (float *)lt_malloc((size_t)n * 4);
  if (!ctx || !x || !z) goto done;
  for (int k = 0; k < 2; ++k) {
    for (int dist = 0; dist < 2; ++dist) {
      memset(x, 0, (size_t)n * 4);
      lmf_mezo_tensor_t t = lt_tensor(x, NULL, n, offs[k], 0xffffffffu, LMF_DTYPE_F32, 0);
      lmf_mezo_plan_t *p = plan_of(ctx, &t, 1, dist, LMF_ROUND_NEAREST);
      if (!p) goto done;
      /* From zeros with scale 1: theta = 0 + 1 * z = z exactly. */
      LMF_CHECK_OK(lmf_mezo_perturb(p, 0xdeadbeefcafef00dull, 1.0f, NULL));
      lt_poison_f32(z, n);
      LMF_CHECK_OK(lmf_mezo_fill_z(ctx, dist, 0xdeadbeefcafef00dull, 0xffffffffu, offs[k], n, z, NULL));
      LMF_CHECK_BYTES_EQ(x, z, (size_t)n * 4, "perturbation from zeros vs fill_z at a 64-bit offset");
      int bad = 0;
      for (int64_t i = 0; i < n; ++i) {
        double r, want = ref_z(dist, 0xdeadbeefcafef00dull, 0xffffffffu, (uint64_t)(offs[k] + i), &r);
        if (!(fabs(x[i] - want) <= 1e-6 * (r > 1 ? r : 1)) && bad++ < 3)
          LMF_CHECK_MSG(0, "offset %lld + %lld: %.9g vs reference %.9g", (long long)offs[k], (long long)i,
                        (double)x[i], want);
      }
      LMF_CHECK_EQ_INT(bad, 0);
      lmf_mezo_plan_destroy(p);
    }
  }
done:
  free(x);
  free(z);
  lmf_context_destroy(ctx);
}

/* A finite g whose step lr * g overflows fp32 is treated like a non-finite g: skipped = 1, the
 * restore happens, nothing becomes infinite (a NaN or infinity must never reach the parameters). */
void test_spec11_step_overflow_skips(void) {
  const int64_t n = 1001;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *x = (float *)lt_malloc((size_t)n * 4), *x0 = (float *)lt_malloc((size_t)n * 4);
  lmf_mezo_plan_t *p = NULL;
  if (!ctx || !x || !x0) goto done;
  fill_dyadic(x0, n, 0x1p-10f, 28);
  memcpy(x, x0, (size_t)n * 4);
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, n, 0, 1, LMF_DTYPE_F32, 0);
  p = plan_of(ctx, &t, 1, LMF_MEZO_RADEMACHER, LMF_ROUND_NEAREST);
  if (!p || !LMF_CHECK_OK(lmf_mezo_perturb(p, 2, 0x1p-8f, NULL))) goto done;
  int32_t skipped = 7;
  lmf_mezo_step_args_t st = step_args(2, 1e30f, 1e30f, 0.0f);
  st.skipped_ptr = &skipped;
  if (!LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) goto done;
  LMF_CHECK_EQ_INT(skipped, 1);
  LMF_CHECK_EQ_INT(lt_count_nonfinite(x, n), 0);
  LMF_CHECK_BYTES_EQ(x, x0, (size_t)n * 4, "parameters after an overflowing step (restored only)");
  /* The same through update_multi. */
  uint64_t seeds[2] = {3, 4};
  float coeffs[2] = {1.0f, 1e30f};
  lmf_mezo_multi_args_t m;
  lmf_mezo_multi_args_init(&m, sizeof m);
  m.num_seeds = 2;
  m.seeds = seeds;
  m.coeffs = coeffs;
  m.lr = 1e30f;
  m.skipped_ptr = &skipped;
  skipped = 7;
  if (!LMF_CHECK_OK(lmf_mezo_update_multi(p, &m, NULL))) goto done;
  LMF_CHECK_EQ_INT(skipped, 1);
  LMF_CHECK_BYTES_EQ(x, x0, (size_t)n * 4, "parameters after an overflowing multi update");
done:
  lmf_mezo_plan_destroy(p);
  free(x);
  free(x0);
  lmf_context_destroy(ctx);
}
