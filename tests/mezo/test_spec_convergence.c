/* Spec test vector 8: convergence of MeZO on f(theta) = 0.5 ||theta||^2, d = 4096, theta_0 = 1, through the
 * step driver lmf_mezo_train_step with a C loss callback.
 *
 * With g = (f(theta + eps z) - f(theta - eps z)) / (2 eps) = theta . z (exact for a quadratic), one step
 * multiplies E||theta||^2 by 1 - 2 lr + lr^2 E[(theta.z)^2 ||z||^2] / ||theta||^2, which is
 * 1 - 1/(d+2) for Gaussian z with lr = 1/(d+2) and 1 - 1/d for Rademacher z with lr = 1/d. After 20,000
 * steps: ||theta||^2 / ||theta_0||^2 = exp(-20000/4098) = 7.6e-3 (the spec's constant), within a factor
 * of 2.
 *
 * bf16: with eps = 1e-3, below half of bf16's spacing at 1 (2^-8), the +-eps z perturbations of a bf16
 * tensor mostly round away and progress visibly stalls (the spec's regression test). An fp32 master does
 * not rescue that setting: the loss still sees the bf16 working copy round(master +- eps z), whose
 * difference is a few elements jumping by a whole bf16 spacing, so g's variance is ~ulp/eps times too
 * large and lr = 1/(d+2) diverges (measured: ||theta||^2 grows to ~1e7). With eps at bf16's spacing
 * (2^-7) the working copy resolves the perturbation and the master run converges like fp32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_test_util.h"

enum { D = 4096, STEPS = 20000 };
#define SPEC_RATIO 7.6e-3

typedef struct quad {
  const void *theta;
  int32_t dtype;
  float *scratch; /* fp32 view of 16-bit parameters */
  int64_t calls;
} quad;

static double sum_sq(const quad *q) {
  const float *x = (const float *)q->theta;
  if (q->dtype != LMF_DTYPE_F32) {
    lmf_convert_host(q->scratch, LMF_DTYPE_F32, q->theta, q->dtype, D);
    x = q->scratch;
  }
  double s = 0.0;
  for (int i = 0; i < D; ++i) s += (double)x[i] * (double)x[i];
  return s;
}

static int quad_loss(void *user, float *loss) {
  quad *q = (quad *)user;
  q->calls++;
  *loss = (float)(0.5 * sum_sq(q));
  return 0;
}

/* Runs STEPS driver steps and returns ||theta||^2 / ||theta_0||^2 (NaN on failure). */
static double run(lmf_context_t *ctx, int32_t dist, int32_t dtype, int use_master, float eps, float lr,
                  int perturb_next) {
  void *theta = lt_malloc((size_t)D * 4);
  float *master = use_master ? (float *)lt_malloc((size_t)D * 4) : NULL;
  float *scratch = (float *)lt_malloc((size_t)D * 4);
  lmf_mezo_plan_t *plan = NULL;
  double ratio = NAN;
  if (!theta || !scratch || (use_master && !master)) goto done;
  for (int i = 0; i < D; ++i) scratch[i] = 1.0f;
  if (!lt_convert(theta, dtype, scratch, LMF_DTYPE_F32, D)) goto done;
  if (master) memcpy(master, scratch, (size_t)D * 4);

  lmf_mezo_tensor_t t = lt_tensor(theta, master, D, 0, 11, dtype, 0);
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = dist;
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&plan, ctx, &t, 1, &cfg))) goto done;

  quad q = {theta, dtype, scratch, 0};
  const double start = sum_sq(&q);
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.eps = eps;
  a.lr = lr;
  a.weight_decay = 0.0f;
  a.perturb_next = perturb_next;
  uint64_t rng = 0x5eed0000u + (uint64_t)dist * 7 + (uint64_t)dtype * 131 + (uint64_t)use_master;
  a.seed = lt_next(&rng);
  int skipped = 0;
  for (int s = 0; s < STEPS; ++s) {
    a.next_seed = lt_next(&rng);
    lmf_mezo_step_result_t r;
    if (!LMF_CHECK_OK(lmf_mezo_train_step(plan, &a, quad_loss, &q, &r, NULL))) goto done;
    skipped += r.skipped;
    a.seed = a.next_seed;
  }
  if (!LMF_CHECK_OK(lmf_mezo_restore(plan, NULL))) goto done;
  LMF_CHECK_EQ_INT(skipped, 0);
  LMF_CHECK_EQ_INT(q.calls, 2 * STEPS);
  ratio = sum_sq(&q) / start;
done:
  lmf_mezo_plan_destroy(plan);
  free(theta);
  free(master);
  free(scratch);
  return ratio;
}

static void check_within_factor_2(double ratio, const char *what) {
  lmf_t_note("%s: ||theta||^2 / ||theta_0||^2 = %.4g after %d steps (spec: %.3g)", what, ratio, STEPS,
             SPEC_RATIO);
  LMF_CHECK_MSG(ratio >= SPEC_RATIO / 2 && ratio <= SPEC_RATIO * 2,
                "%s: ratio %.4g is not within a factor of 2 of %.3g", what, ratio, SPEC_RATIO);
}

void test_spec08_convergence_gaussian_f32(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 1);
  LMF_REQUIRE(ctx != NULL);
  check_within_factor_2(run(ctx, LMF_MEZO_GAUSSIAN, LMF_DTYPE_F32, 0, 1e-3f, 1.0f / (D + 2), 1),
                        "Gaussian fp32, lr = 1/(d+2)");
  lmf_context_destroy(ctx);
}

void test_spec08_convergence_rademacher_f32(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 1);
  LMF_REQUIRE(ctx != NULL);
  check_within_factor_2(run(ctx, LMF_MEZO_RADEMACHER, LMF_DTYPE_F32, 0, 1e-3f, 1.0f / D, 0),
                        "Rademacher fp32, lr = 1/d");
  lmf_context_destroy(ctx);
}

/* Without a master, bf16 at the spec's eps = 1e-3 visibly stalls: it ends at least 10x above the spec's
 * fp32 ratio. */
void test_spec08_bf16_stalls_without_master(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 1);
  LMF_REQUIRE(ctx != NULL);
  double plain = run(ctx, LMF_MEZO_GAUSSIAN, LMF_DTYPE_BF16, 0, 1e-3f, 1.0f / (D + 2), 1);
  lmf_t_note("Gaussian bf16 without a master, eps = 1e-3: ratio %.4g after %d steps", plain, STEPS);
  LMF_CHECK_MSG(plain > 10 * SPEC_RATIO, "bf16 without a master reached %.4g: it did not stall", plain);
  lmf_context_destroy(ctx);
}

/* bf16 working copy + fp32 master, eps = 2^-7 (bf16's spacing at theta = 1): converges like fp32. */
void test_spec08_bf16_master_converges(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 1);
  LMF_REQUIRE(ctx != NULL);
  check_within_factor_2(run(ctx, LMF_MEZO_GAUSSIAN, LMF_DTYPE_BF16, 1, 0x1p-7f, 1.0f / (D + 2), 0),
                        "Gaussian bf16 with an fp32 master, eps = 2^-7");
  lmf_context_destroy(ctx);
}
