/* Properties: determinism across thread counts, the plan's perturbation bookkeeping, and what the step
 * driver does around its loss callback. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

enum { PT = 6 };
static const int64_t p_numel[PT] = {200001, 70001, 2 * 65536 + 3, 5, 100000, 65536};
static const int32_t p_dtype[PT] = {LMF_DTYPE_F32, LMF_DTYPE_BF16, LMF_DTYPE_F16,
                                    LMF_DTYPE_F32, LMF_DTYPE_BF16, LMF_DTYPE_F16};

typedef struct pstate {
  void *data[PT];
  float *master4; /* tensor 4 has a master */
  float *z;       /* a fill_z output */
} pstate;

static size_t p_bytes(int k) { return (size_t)p_numel[k] * lmf_dtype_size(p_dtype[k]); }

static int p_loss(void *user, float *loss) {
  pstate *s = (pstate *)user;
  /* Cheap but parameter-dependent: a weighted sum of the first tensor. */
  const float *x = (const float *)s->data[0];
  double acc = 0.0;
  for (int64_t i = 0; i < p_numel[0]; i += 7) acc += (double)x[i] * (double)((i % 13) - 6);
  *loss = (float)acc;
  return 0;
}

/* A fixed sequence of every kind of pass, on a context with `threads` CPU threads. */
static int p_run(int32_t threads, int32_t rounding, pstate *s) {
  int ok = 0;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, threads);
  float *init = (float *)lt_malloc((size_t)p_numel[0] * 4);
  lmf_mezo_plan_t *plan = NULL;
  memset(s, 0, sizeof *s);
  s->master4 = (float *)lt_malloc((size_t)p_numel[4] * 4);
  s->z = (float *)lt_malloc(300001 * 4);
  if (!ctx || !init || !s->master4 || !s->z) goto done;
  lmf_mezo_tensor_t t[PT];
  for (int k = 0; k < PT; ++k) {
    s->data[k] = lt_malloc(p_bytes(k));
    if (!s->data[k]) goto done;
    lt_fill_normal(init, p_numel[k], 0, 0.05, 40 + (uint64_t)k);
    if (!lt_convert(s->data[k], p_dtype[k], init, LMF_DTYPE_F32, p_numel[k])) goto done;
    if (k == 4) memcpy(s->master4, init, (size_t)p_numel[4] * 4);
    t[k] = lt_tensor(s->data[k], k == 4 ? s->master4 : NULL, p_numel[k], k == 5 ? 7 : 0, 50 + (uint32_t)k,
                     p_dtype[k], k % 2);
  }
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.rounding = rounding;
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&plan, ctx, t, PT, &cfg))) goto done;
  lmf_mezo_step_args_t st;
  lmf_mezo_step_args_init(&st, sizeof st);
  st.seed = 1;
  st.grad = 2.0f;
  st.lr = 1e-3f;
  st.weight_decay = 0.1f;
  st.perturb_next = 1;
  st.next_seed = 2;
  st.next_scale = 1e-3f;
  if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 1, 1e-3f, NULL)) || !LMF_CHECK_OK(lmf_mezo_step(plan, &st, NULL)))
    goto done;
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.seed = 2;
  a.lr = 1e-4f;
  a.weight_decay = 0.01f;
  for (int k = 0; k < 3; ++k) {
    a.perturb_next = k < 2;
    a.next_seed = a.seed + 1;
    if (!LMF_CHECK_OK(lmf_mezo_train_step(plan, &a, p_loss, s, NULL, NULL))) goto done;
    a.seed = a.next_seed;
  }
  uint64_t seeds[3] = {10, 11, 12};
  float coeffs[3] = {0.5f, -0.25f, 1.0f};
  lmf_mezo_multi_args_t m;
  lmf_mezo_multi_args_init(&m, sizeof m);
  m.num_seeds = 3;
  m.seeds = seeds;
  m.coeffs = coeffs;
  m.lr = 1e-3f;
  m.weight_decay = 0.2f;
  if (!LMF_CHECK_OK(lmf_mezo_update_multi(plan, &m, NULL))) goto done;
  if (!LMF_CHECK_OK(lmf_mezo_perturb(plan, 13, 2e-3f, NULL)) || !LMF_CHECK_OK(lmf_mezo_restore(plan, NULL))) goto done;
  lt_poison_f32(s->z, 300001);
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_GAUSSIAN, 14, 3, 5, 300001, s->z, NULL))) goto done;
  ok = 1;
done:
  lmf_mezo_plan_destroy(plan);
  free(init);
  lmf_context_destroy(ctx);
  return ok;
}

static void p_free(pstate *s) {
  for (int k = 0; k < PT; ++k) free(s->data[k]);
  free(s->master4);
  free(s->z);
}

/* cpu_threads 1, 2 and 3: every pass (perturb, fused step, driver steps, multi-seed update, restore,
 * fill_z) gives bit-identical results, with nearest and with stochastic rounding. */
void test_determinism_across_threads(void) {
  for (int rounding = 0; rounding < 2; ++rounding) {
    pstate s[3];
    int ok = 1;
    for (int k = 0; k < 3; ++k) ok &= p_run(k + 1, rounding, &s[k]);
    if (ok) {
      for (int k = 1; k < 3; ++k) {
        for (int t = 0; t < PT; ++t)
          LMF_CHECK_MSG(memcmp(s[0].data[t], s[k].data[t], p_bytes(t)) == 0,
                        "rounding %d: tensor %d differs between 1 and %d threads", rounding, t, k + 1);
        LMF_CHECK_MSG(memcmp(s[0].master4, s[k].master4, (size_t)p_numel[4] * 4) == 0,
                      "rounding %d: master differs between 1 and %d threads", rounding, k + 1);
        LMF_CHECK_MSG(memcmp(s[0].z, s[k].z, 300001 * 4) == 0, "fill_z differs between 1 and %d threads", k + 1);
      }
      LMF_CHECK_EQ_INT(lt_count_nonfinite(s[0].z, 300001), 0);
    }
    for (int k = 0; k < 3; ++k) p_free(&s[k]);
  }
}

/* The plan's numel and perturbation bookkeeping through perturb, restore and step. */
void test_plan_bookkeeping(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float a[10], b[7];
  uint16_t c[3];
  memset(a, 0, sizeof a);
  memset(b, 0, sizeof b);
  memset(c, 0, sizeof c);
  lmf_mezo_tensor_t t[3] = {lt_tensor(a, NULL, 10, 0, 1, LMF_DTYPE_F32, 1), lt_tensor(b, NULL, 7, 100, 2, LMF_DTYPE_F32, 0),
                            lt_tensor(c, NULL, 3, 0, 3, LMF_DTYPE_BF16, 1)};
  lmf_mezo_plan_t *p = NULL;
  if (!ctx || !LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, t, 3, NULL))) goto done;
  int64_t numel = 0;
  LMF_CHECK_OK(lmf_mezo_plan_numel(p, &numel));
  LMF_CHECK_EQ_INT(numel, 20);
  uint64_t seed = 9;
  float off = 9;
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK(off == 0.0f);
  /* Scale 0 is a no-op, even under another seed. */
  LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 0.0f, NULL));
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK(off == 0.0f);
  LMF_CHECK(a[0] == 0.0f && a[9] == 0.0f);
  LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 0.25f, NULL));
  LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 0.5f, NULL));
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK_EQ_U64(seed, 5);
  LMF_CHECK(off == 0.75f);
  LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 0.0f, NULL)); /* same seed, scale 0: still a no-op */
  LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK(off == 0.0f);
  LMF_CHECK_OK(lmf_mezo_restore(p, NULL)); /* restoring an unperturbed plan is a no-op */
  lmf_mezo_step_args_t st;
  lmf_mezo_step_args_init(&st, sizeof st);
  st.seed = 6;
  st.perturb_next = 1;
  st.next_seed = 7;
  st.next_scale = 1e-3f;
  LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK_EQ_U64(seed, 7);
  LMF_CHECK(off == 1e-3f);
  st.seed = 7;
  st.next_seed = 8;
  st.next_scale = 0.0f; /* perturb_next with scale 0: the plan ends unperturbed */
  LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &seed, &off));
  LMF_CHECK(off == 0.0f);
  /* Seed 0 is a seed like any other. */
  LMF_CHECK_OK(lmf_mezo_perturb(p, 0, 1e-3f, NULL));
  LMF_CHECK_FAIL(lmf_mezo_perturb(p, 1, 1e-3f, NULL), LMF_ERR_INVALID_STATE, "seed");
  LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
done:
  lmf_mezo_plan_destroy(p);
  lmf_context_destroy(ctx);
}

/* The driver around its callback, in an exact dyadic setting: theta = 1 + k 2^-10, Rademacher,
 * eps = 2^-8, loss = sum_i c_i theta_i with small integer c_i (exact in float). The first call sees
 * theta + eps z, the second theta - eps z; result holds both losses and g = (L+ - L-) / (2 eps); the
 * parameters end at theta - lr g z (exact), or, with perturb_next, at that + eps z(next_seed); a
 * following step with the carried perturbation calls the loss at +eps without another perturbation. */
typedef struct drv {
  float *x;
  int n;
  int calls;
  float seen[2][16];
} drv;

static int drv_loss(void *user, float *loss) {
  drv *d = (drv *)user;
  float s = 0.0f;
  for (int i = 0; i < d->n; ++i) s += (float)((i % 5) - 2) * d->x[i];
  if (d->calls < 2) memcpy(d->seen[d->calls], d->x, (size_t)d->n * 4);
  d->calls++;
  *loss = s;
  return 0;
}

void test_driver_semantics(void) {
  enum { N = 16 };
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float x[N], x0[N], za[N], zb[N];
  lmf_mezo_plan_t *p = NULL;
  uint64_t s = 3;
  for (int i = 0; i < N; ++i) x0[i] = 1.0f + (float)(lt_next(&s) % 1024) * 0x1p-10f;
  memcpy(x, x0, sizeof x);
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, N, 0, 4, LMF_DTYPE_F32, 0);
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = LMF_MEZO_RADEMACHER;
  if (!ctx || !LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, &t, 1, &cfg))) goto done;
  if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, 21, 4, 0, N, za, NULL)) ||
      !LMF_CHECK_OK(lmf_mezo_fill_z(ctx, LMF_MEZO_RADEMACHER, 22, 4, 0, N, zb, NULL)))
    goto done;
  for (int fused = 0; fused < 2; ++fused) {
    memcpy(x, x0, sizeof x);
    drv d;
    memset(&d, 0, sizeof d);
    d.x = x;
    d.n = N;
    lmf_mezo_driver_args_t a;
    lmf_mezo_driver_args_init(&a, sizeof a);
    a.seed = 21;
    a.eps = 0x1p-8f;
    a.lr = 0x1p-12f;
    a.perturb_next = fused;
    a.next_seed = 22;
    lmf_mezo_step_result_t r;
    memset(&r, 0xff, sizeof r);
    if (!LMF_CHECK_OK(lmf_mezo_train_step(p, &a, drv_loss, &d, &r, NULL))) goto done;
    LMF_CHECK_EQ_INT(d.calls, 2);
    float gsum = 0.0f;
    for (int i = 0; i < N; ++i) {
      LMF_CHECK(d.seen[0][i] == x0[i] + a.eps * za[i]);
      LMF_CHECK(d.seen[1][i] == x0[i] - a.eps * za[i]);
      gsum += (float)((i % 5) - 2) * za[i];
    }
    LMF_CHECK(r.grad == gsum); /* (L+ - L-) / (2 eps) = sum c_i z_i, exact here */
    LMF_CHECK(r.grad == (r.loss_plus - r.loss_minus) / (2.0f * a.eps));
    LMF_CHECK_EQ_INT(r.skipped, 0);
    for (int i = 0; i < N; ++i) {
      float want = x0[i] - a.lr * r.grad * za[i] + (fused ? a.eps * zb[i] : 0.0f);
      LMF_CHECK_MSG(x[i] == want, "fused %d element %d: %a, expected %a", fused, i, (double)x[i], (double)want);
    }
    if (fused) {
      /* The next step starts from the carried +eps z(22): its first loss call sees exactly that. */
      float carried[N];
      memcpy(carried, x, sizeof x);
      d.calls = 0;
      a.seed = 22;
      a.perturb_next = 0;
      if (!LMF_CHECK_OK(lmf_mezo_train_step(p, &a, drv_loss, &d, &r, NULL))) goto done;
      LMF_CHECK_BYTES_EQ(d.seen[0], carried, sizeof carried, "first loss call of a carried step");
      for (int i = 0; i < N; ++i) LMF_CHECK(d.seen[1][i] == carried[i] - 2 * a.eps * zb[i]);
      uint64_t ps;
      float po;
      LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &ps, &po));
      LMF_CHECK(po == 0.0f);
    }
  }
  /* result may be NULL. */
  {
    drv d;
    memset(&d, 0, sizeof d);
    d.x = x;
    d.n = N;
    lmf_mezo_driver_args_t a;
    lmf_mezo_driver_args_init(&a, sizeof a);
    a.seed = 23;
    LMF_CHECK_OK(lmf_mezo_train_step(p, &a, drv_loss, &d, NULL, NULL));
    LMF_CHECK_EQ_INT(d.calls, 2);
  }
done:
  lmf_mezo_plan_destroy(p);
  lmf_context_destroy(ctx);
}
