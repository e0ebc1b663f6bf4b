/* Every bad-input path of the MeZO API: each call returns its status, lmf_last_error() names the
 * argument, and nothing changes: parameter and master bytes, *out, result structs and fill_z outputs are
 * compared before and after. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_test_util.h"

enum { NF = 64, NH = 32 };

typedef struct fixture {
  lmf_context_t *ctx;
  float f[NF + 8];  /* fp32 tensor (+ room for overlap cases) */
  uint16_t h[NH];   /* bf16 working copy */
  float m[NH];      /* its master */
  lmf_mezo_tensor_t t[2];
  lmf_mezo_plan_t *plan; /* a valid plan over t */
  lt_snapshot snap;
} fixture;

static int fx_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  fx->ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!fx->ctx) return 0;
  lt_fill_normal(fx->f, NF + 8, 0, 1, 1);
  lt_fill_normal(fx->m, NH, 0, 1, 2);
  lmf_convert_host(fx->h, LMF_DTYPE_BF16, fx->m, LMF_DTYPE_F32, NH);
  fx->t[0] = lt_tensor(fx->f, NULL, NF, 0, 1, LMF_DTYPE_F32, 1);
  fx->t[1] = lt_tensor(fx->h, fx->m, NH, 0, 2, LMF_DTYPE_BF16, 0);
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&fx->plan, fx->ctx, fx->t, 2, NULL))) return 0;
  lt_snap_init(&fx->snap);
  lt_snap_add(&fx->snap, fx->f, sizeof fx->f);
  lt_snap_add(&fx->snap, fx->h, sizeof fx->h);
  lt_snap_add(&fx->snap, fx->m, sizeof fx->m);
  return 1;
}

static void fx_free(fixture *fx) {
  lmf_mezo_plan_destroy(fx->plan);
  lmf_context_destroy(fx->ctx);
  lt_snap_free(&fx->snap);
}

/* plan_create must fail with `status` naming `needle`, leave *out alone and the tensors untouched. */
static void expect_plan_fail(fixture *fx, const lmf_mezo_tensor_t *t, size_t n, const lmf_mezo_config_t *cfg,
                             lmf_status_t status, const char *needle, const char *what) {
  lmf_mezo_plan_t *const sentinel = (lmf_mezo_plan_t *)(uintptr_t)0x5e57;
  lmf_mezo_plan_t *out = sentinel;
  lmf_clear_error();
  lmf_status_t st = lmf_mezo_plan_create(&out, fx->ctx, t, n, cfg);
  lmf_t_check_fail(st, status, needle, what, __FILE__, __LINE__);
  LMF_CHECK_MSG(out == sentinel, "%s: *out was written", what);
  if (out != sentinel) lmf_mezo_plan_destroy(out);
  LT_SNAP_CHECK(&fx->snap, what);
}

void test_bad_input_plan_create(void) {
  fixture fx;
  if (!fx_init(&fx)) {
    fx_free(&fx);
    return;
  }
  lmf_mezo_tensor_t t[3];
  LMF_CHECK_FAIL(lmf_mezo_plan_create(NULL, fx.ctx, fx.t, 2, NULL), LMF_ERR_NULL_POINTER, "out");

  /* ctx and tensors NULL */
  {
    lmf_mezo_plan_t *o = (lmf_mezo_plan_t *)(uintptr_t)0x5e57;
    LMF_CHECK_FAIL(lmf_mezo_plan_create(&o, NULL, fx.t, 2, NULL), LMF_ERR_NULL_POINTER, "ctx");
    LMF_CHECK_FAIL(lmf_mezo_plan_create(&o, fx.ctx, NULL, 2, NULL), LMF_ERR_NULL_POINTER, "tensors");
    LMF_CHECK(o == (lmf_mezo_plan_t *)(uintptr_t)0x5e57);
  }

#define WITH(field_stmt, status, needle)             \
  do {                                               \
    memcpy(t, fx.t, sizeof fx.t);                    \
    t[2] = t[1];                                     \
    field_stmt;                                      \
    expect_plan_fail(&fx, t, 2, NULL, status, needle, #field_stmt); \
  } while (0)

  WITH(t[1].data = NULL, LMF_ERR_NULL_POINTER, "tensors[1].data");
  WITH(t[0].data = NULL, LMF_ERR_NULL_POINTER, "tensors[0].data");
  WITH(t[0].numel = 0, LMF_ERR_INVALID_SIZE, "numel");
  WITH(t[1].numel = -1, LMF_ERR_INVALID_SIZE, "numel");
  WITH(t[0].numel = INT64_MIN, LMF_ERR_INVALID_SIZE, "numel");
  WITH(t[0].numel = INT64_MAX, LMF_ERR_INVALID_SIZE, "numel");
  WITH(t[0].numel = ((int64_t)1 << 61) + 1, LMF_ERR_INVALID_SIZE, "numel");
  WITH(t[0].global_offset = -1, LMF_ERR_INVALID_SIZE, "global_offset");
  WITH(t[0].global_offset = INT64_MAX, LMF_ERR_INVALID_SIZE, "global_offset");
  WITH(t[0].global_offset = INT64_MAX - 10, LMF_ERR_INVALID_SIZE, "global_offset");
  WITH(t[0].dtype = LMF_DTYPE_I32, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(t[0].dtype = LMF_DTYPE_I64, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(t[1].dtype = 5, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(t[1].dtype = -1, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(t[0].reserved = 1, LMF_ERR_INVALID_ARGUMENT, "reserved");
  WITH(t[1].reserved = -7, LMF_ERR_INVALID_ARGUMENT, "reserved");
  WITH(t[0].weight_decay = 2, LMF_ERR_INVALID_ARGUMENT, "weight_decay");
  WITH(t[1].weight_decay = -1, LMF_ERR_INVALID_ARGUMENT, "weight_decay");
  /* Misaligned element pointers. */
  WITH(t[0].data = (char *)fx.f + 2, LMF_ERR_INVALID_ARGUMENT, "aligned");
  WITH(t[1].data = (char *)fx.h + 1, LMF_ERR_INVALID_ARGUMENT, "aligned");
  WITH(t[1].master = (float *)((char *)fx.m + 2), LMF_ERR_INVALID_ARGUMENT, "master");
  /* Overlapping tensors and masters. */
  WITH(t[1] = lt_tensor(fx.f + NF - 1, NULL, 4, 0, 3, LMF_DTYPE_F32, 0), LMF_ERR_OVERLAP, "overlap");
  WITH(t[1] = lt_tensor(fx.f, NULL, 1, 0, 3, LMF_DTYPE_F32, 0), LMF_ERR_OVERLAP, "overlap");
  WITH(t[1] = lt_tensor((char *)fx.f + 2, NULL, 2, 0, 3, LMF_DTYPE_BF16, 0), LMF_ERR_OVERLAP, "overlap");
  WITH(t[1].master = fx.f + 8, LMF_ERR_OVERLAP, "overlap");              /* master inside tensor 0's data */
  WITH(t[0].master = fx.m + 4, LMF_ERR_OVERLAP, "overlap");              /* two masters overlap */
  WITH(t[1].master = (float *)fx.h, LMF_ERR_OVERLAP, "overlap");         /* a master over its own data */
  {
    /* Three tensors, the overlap between the first and the last. */
    memcpy(t, fx.t, sizeof fx.t);
    t[2] = lt_tensor(fx.f + 10, NULL, 5, 0, 9, LMF_DTYPE_F32, 0);
    expect_plan_fail(&fx, t, 3, NULL, LMF_ERR_OVERLAP, "overlap", "tensors 0 and 2 overlap");
  }
#undef WITH

  /* config: struct_size, version, dist, rounding. */
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.struct_size = 0;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_STRUCT_SIZE, "struct_size", "config struct_size 0");
  cfg.struct_size = offsetof(lmf_mezo_config_t, dist); /* too short to hold dist */
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_STRUCT_SIZE, "struct_size", "config struct_size short");
  cfg.struct_size = sizeof cfg + 4;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_STRUCT_SIZE, "struct_size", "config struct_size long");
  cfg.struct_size = sizeof cfg;
  cfg.version = 0;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_STRUCT_SIZE, "version", "config version 0");
  cfg.version = LMF_MEZO_CONFIG_VERSION + 1;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_STRUCT_SIZE, "version", "config version 2");
  cfg.version = LMF_MEZO_CONFIG_VERSION;
  cfg.dist = 2;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_INVALID_ARGUMENT, "dist", "dist 2");
  cfg.dist = -1;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_INVALID_ARGUMENT, "dist", "dist -1");
  cfg.dist = LMF_MEZO_GAUSSIAN;
  cfg.rounding = 2;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_INVALID_ARGUMENT, "rounding", "rounding 2");
  cfg.rounding = -1;
  expect_plan_fail(&fx, fx.t, 2, &cfg, LMF_ERR_INVALID_ARGUMENT, "rounding", "rounding -1");

  /* A struct_size below version 1's (lmfuse.h) is rejected. */
  {
    lmf_mezo_config_t old;
    memset(&old, 0, sizeof old);
    old.struct_size = offsetof(lmf_mezo_config_t, rounding);
    old.version = LMF_MEZO_CONFIG_VERSION;
    old.dist = LMF_MEZO_RADEMACHER;
    expect_plan_fail(&fx, fx.t, 2, &old, LMF_ERR_STRUCT_SIZE, "struct_size", "config without rounding");
  }
  fx_free(&fx);
}

/* The _init functions: NULL, and any struct_size but this library's, fail and write nothing. */
#define CHECK_INIT(fn, type)                                                              \
  do {                                                                                    \
    type x_, x0_;                                                                         \
    memset(&x_, 0x3c, sizeof x_);                                                         \
    x0_ = x_;                                                                             \
    LMF_CHECK_FAIL(fn(NULL, sizeof(type)), LMF_ERR_NULL_POINTER, NULL);                   \
    const size_t sizes_[4] = {0, sizeof(size_t), sizeof(type) - 1, sizeof(type) + 8};    \
    for (int i_ = 0; i_ < 4; ++i_) {                                                      \
      LMF_CHECK_FAIL(fn(&x_, sizes_[i_]), LMF_ERR_STRUCT_SIZE, "struct_size");            \
      LMF_CHECK_BYTES_EQ(&x_, &x0_, sizeof x_, #fn " with a wrong struct_size wrote");   \
    }                                                                                     \
    LMF_CHECK_OK(fn(&x_, sizeof x_));                                                     \
    LMF_CHECK_EQ_INT(x_.struct_size, sizeof(type));                                       \
    LMF_CHECK_EQ_INT(x_.version, 1);                                                      \
  } while (0)

void test_bad_input_init_functions(void) {
  CHECK_INIT(lmf_mezo_config_init, lmf_mezo_config_t);
  CHECK_INIT(lmf_mezo_step_args_init, lmf_mezo_step_args_t);
  CHECK_INIT(lmf_mezo_multi_args_init, lmf_mezo_multi_args_t);
  CHECK_INIT(lmf_mezo_driver_args_init, lmf_mezo_driver_args_t);
  CHECK_INIT(lmf_context_config_init, lmf_context_config_t);
}

void test_bad_input_passes(void) {
  fixture fx;
  if (!fx_init(&fx)) {
    fx_free(&fx);
    return;
  }
  lmf_mezo_plan_t *p = fx.plan;
  uint64_t ps = 0;
  float po = 0;

  /* perturb / restore */
  LMF_CHECK_FAIL(lmf_mezo_perturb(NULL, 1, 1e-3f, NULL), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_restore(NULL, NULL), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_perturb(p, 1, NAN, NULL), LMF_ERR_NONFINITE, "scale");
  LMF_CHECK_FAIL(lmf_mezo_perturb(p, 1, INFINITY, NULL), LMF_ERR_NONFINITE, "scale");
  LMF_CHECK_FAIL(lmf_mezo_perturb(p, 1, -INFINITY, NULL), LMF_ERR_NONFINITE, "scale");
  LT_SNAP_CHECK(&fx.snap, "bad perturb");

  /* step args */
  lmf_mezo_step_args_t st;
  lmf_mezo_step_args_init(&st, sizeof st);
  st.seed = 1;
  st.lr = 1e-3f;
  st.grad = 1.0f;
  LMF_CHECK_FAIL(lmf_mezo_step(NULL, &st, NULL), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_step(p, NULL, NULL), LMF_ERR_NULL_POINTER, "args");
  {
    lmf_mezo_step_args_t b = st;
    b.struct_size = 0;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b.struct_size = sizeof b - 8;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b.struct_size = sizeof b + 8;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b = st;
    b.version = 0;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "version");
    b.version = 2;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "version");
    b = st;
    b.lr = NAN;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_NONFINITE, "lr");
    b.lr = INFINITY;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_NONFINITE, "lr");
    b = st;
    b.weight_decay = -0.1f;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b.weight_decay = NAN;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b.weight_decay = INFINITY;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b = st;
    b.perturb_next = 2;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "perturb_next");
    b.perturb_next = -1;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "perturb_next");
    b.perturb_next = 1;
    b.next_scale = NAN;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_NONFINITE, "next_scale");
    b.next_scale = -INFINITY;
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_NONFINITE, "next_scale");
    b = st;
    b.lr = 1e30f;
    b.weight_decay = 1e30f; /* both finite; the factor 1 - lr wd is not */
    LMF_CHECK_FAIL(lmf_mezo_step(p, &b, NULL), LMF_ERR_NONFINITE, "decay");
  }
  LT_SNAP_CHECK(&fx.snap, "bad step");

  /* multi args */
  uint64_t seeds[LMF_MEZO_MAX_SEEDS + 1];
  float coeffs[LMF_MEZO_MAX_SEEDS + 1];
  for (int i = 0; i <= LMF_MEZO_MAX_SEEDS; ++i) {
    seeds[i] = (uint64_t)i + 1;
    coeffs[i] = 0.5f;
  }
  lmf_mezo_multi_args_t m;
  lmf_mezo_multi_args_init(&m, sizeof m);
  m.num_seeds = 2;
  m.seeds = seeds;
  m.coeffs = coeffs;
  m.lr = 1e-3f;
  LMF_CHECK_FAIL(lmf_mezo_update_multi(NULL, &m, NULL), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_update_multi(p, NULL, NULL), LMF_ERR_NULL_POINTER, "args");
  {
    lmf_mezo_multi_args_t b = m;
    b.struct_size = sizeof b - 4;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b.struct_size = sizeof b + 4;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b = m;
    b.version = 0;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "version");
    b.version = 2;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_STRUCT_SIZE, "version");
    b = m;
    b.num_seeds = 0;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_INVALID_SIZE, "num_seeds");
    b.num_seeds = LMF_MEZO_MAX_SEEDS + 1;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_INVALID_SIZE, "num_seeds");
    b.num_seeds = (size_t)-1;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_INVALID_SIZE, "num_seeds");
    b = m;
    b.seeds = NULL;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_NULL_POINTER, "seeds");
    b = m;
    b.coeffs = NULL;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_NULL_POINTER, "coeffs");
    b = m;
    b.lr = NAN;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_NONFINITE, "lr");
    b = m;
    b.weight_decay = -1.0f;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b.weight_decay = NAN;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b = m;
    b.lr = -1e30f;
    b.weight_decay = 1e30f;
    LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &b, NULL), LMF_ERR_NONFINITE, "decay");
    /* The most seeds: fine. */
    b = m;
    b.num_seeds = LMF_MEZO_MAX_SEEDS;
    b.lr = 0.0f;
    LMF_CHECK_OK(lmf_mezo_update_multi(p, &b, NULL));
  }
  LT_SNAP_CHECK(&fx.snap, "bad multi");

  /* State: perturbed under seed 5. */
  LMF_CHECK_OK(lmf_mezo_perturb(p, 5, 1e-3f, NULL));
  lt_snapshot pert;
  lt_snap_init(&pert);
  lt_snap_add(&pert, fx.f, sizeof fx.f);
  lt_snap_add(&pert, fx.h, sizeof fx.h);
  lt_snap_add(&pert, fx.m, sizeof fx.m);
  LMF_CHECK_FAIL(lmf_mezo_perturb(p, 6, 1e-3f, NULL), LMF_ERR_INVALID_STATE, "seed");
  st.seed = 6;
  LMF_CHECK_FAIL(lmf_mezo_step(p, &st, NULL), LMF_ERR_INVALID_STATE, "seed");
  LMF_CHECK_FAIL(lmf_mezo_update_multi(p, &m, NULL), LMF_ERR_INVALID_STATE, "perturbed");
  LT_SNAP_CHECK(&pert, "failed calls on a perturbed plan");
  LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &ps, &po));
  LMF_CHECK_EQ_U64(ps, 5);
  LMF_CHECK(po == 1e-3f);
  lt_snap_free(&pert);
  LMF_CHECK_OK(lmf_mezo_restore(p, NULL));

  /* A total offset that overflows fp32: the second FLT_MAX perturbation fails and writes nothing. */
  {
    float big[4] = {0, 0, 0, 0};
    lmf_mezo_tensor_t bt = lt_tensor(big, NULL, 4, 0, 1, LMF_DTYPE_F32, 0);
    lmf_mezo_plan_t *bp = NULL;
    if (LMF_CHECK_OK(lmf_mezo_plan_create(&bp, fx.ctx, &bt, 1, NULL)) &&
        LMF_CHECK_OK(lmf_mezo_perturb(bp, 5, FLT_MAX, NULL))) {
      float before[4];
      memcpy(before, big, sizeof big);
      LMF_CHECK_FAIL(lmf_mezo_perturb(bp, 5, FLT_MAX, NULL), LMF_ERR_NONFINITE, "offset");
      LMF_CHECK_BYTES_EQ(big, before, sizeof big, "parameters after an overflowing perturbation");
      LMF_CHECK_OK(lmf_mezo_plan_perturbation(bp, &ps, &po));
      LMF_CHECK(po == FLT_MAX);
    }
    lmf_mezo_plan_destroy(bp);
  }

  /* numel / perturbation queries. */
  int64_t numel = 5;
  LMF_CHECK_FAIL(lmf_mezo_plan_numel(NULL, &numel), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_plan_numel(p, NULL), LMF_ERR_NULL_POINTER, "numel");
  LMF_CHECK_EQ_INT(numel, 5);
  LMF_CHECK_FAIL(lmf_mezo_plan_perturbation(NULL, &ps, &po), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_plan_perturbation(p, NULL, &po), LMF_ERR_NULL_POINTER, "seed");
  LMF_CHECK_FAIL(lmf_mezo_plan_perturbation(p, &ps, NULL), LMF_ERR_NULL_POINTER, "offset");
  lmf_mezo_plan_destroy(NULL); /* no-op */
  fx_free(&fx);
}

void test_bad_input_fill_z(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  float out[16];
  lt_poison_f32(out, 16);
  lt_snapshot s;
  lt_snap_init(&s);
  lt_snap_add(&s, out, sizeof out);
  LMF_CHECK_FAIL(lmf_mezo_fill_z(NULL, 0, 1, 1, 0, 16, out, NULL), LMF_ERR_NULL_POINTER, "ctx");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, 0, 16, NULL, NULL), LMF_ERR_NULL_POINTER, "out");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 2, 1, 1, 0, 16, out, NULL), LMF_ERR_INVALID_ARGUMENT, "dist");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, -1, 1, 1, 0, 16, out, NULL), LMF_ERR_INVALID_ARGUMENT, "dist");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, 0, 0, out, NULL), LMF_ERR_INVALID_SIZE, "n");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, 0, -16, out, NULL), LMF_ERR_INVALID_SIZE, "n");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, 0, INT64_MAX, out, NULL), LMF_ERR_INVALID_SIZE, "n");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, -1, 16, out, NULL), LMF_ERR_INVALID_SIZE, "global_offset");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, INT64_MAX, 16, out, NULL), LMF_ERR_INVALID_SIZE, "global_offset");
  LMF_CHECK_FAIL(lmf_mezo_fill_z(ctx, 0, 1, 1, INT64_MAX - 16, 16, out, NULL), LMF_ERR_INVALID_SIZE,
                 "global_offset");
  LT_SNAP_CHECK(&s, "fill_z output after bad input");
  lt_snap_free(&s);
  lmf_context_destroy(ctx);
}

/* ---- the step driver ----------------------------------------------------------------------------------- */

typedef struct fail_cb {
  int fail_on; /* 1-based call that fails */
  int calls;
  int rc;
} fail_cb;

static int failing_loss(void *user, float *loss) {
  fail_cb *f = (fail_cb *)user;
  f->calls++;
  *loss = 1.0f;
  return f->calls == f->fail_on ? f->rc : 0;
}

static int count_loss(void *user, float *loss) {
  ++*(int *)user;
  *loss = 0.0f;
  return 0;
}

static int ok_loss(void *user, float *loss) {
  (void)user;
  *loss = 0.0f;
  return 0;
}

void test_bad_input_train_step(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  enum { N = 257 };
  float x[N], x0[N], m[N];
  uint16_t h[N], h0[N];
  uint64_t s = 1;
  for (int i = 0; i < N; ++i) x0[i] = 1.0f + (float)(lt_next(&s) % 1024) * 0x1p-10f; /* dyadic: exact restore */
  lt_fill_normal(m, N, 0, 0.02, 5);
  lmf_convert_host(h0, LMF_DTYPE_F16, m, LMF_DTYPE_F32, N);
  memcpy(x, x0, sizeof x);
  memcpy(h, h0, sizeof h);
  lmf_mezo_tensor_t t[2] = {lt_tensor(x, NULL, N, 0, 1, LMF_DTYPE_F32, 1), lt_tensor(h, m, N, 0, 2, LMF_DTYPE_F16, 1)};
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = LMF_MEZO_RADEMACHER;
  lmf_mezo_plan_t *p = NULL;
  if (!LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, t, 2, &cfg))) {
    lmf_context_destroy(ctx);
    return;
  }
  lt_snapshot snap;
  lt_snap_init(&snap);
  lt_snap_add(&snap, x, sizeof x);
  lt_snap_add(&snap, h, sizeof h);
  lt_snap_add(&snap, m, sizeof m);
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.seed = 4;
  a.eps = 0x1p-8f;
  a.lr = 1e-3f;
  lmf_mezo_step_result_t r, r0;
  memset(&r, 0x5a, sizeof r);
  r0 = r;

  LMF_CHECK_FAIL(lmf_mezo_train_step(NULL, &a, ok_loss, NULL, &r, NULL), LMF_ERR_NULL_POINTER, "plan");
  LMF_CHECK_FAIL(lmf_mezo_train_step(p, NULL, ok_loss, NULL, &r, NULL), LMF_ERR_NULL_POINTER, "args");
  LMF_CHECK_FAIL(lmf_mezo_train_step(p, &a, NULL, NULL, &r, NULL), LMF_ERR_NULL_POINTER, "loss_fn");
  {
    lmf_mezo_driver_args_t b = a;
    b.struct_size = sizeof b - 8;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b.struct_size = sizeof b + 8;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_STRUCT_SIZE, "struct_size");
    b = a;
    b.version = 0;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_STRUCT_SIZE, "version");
    b.version = 2;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_STRUCT_SIZE, "version");
    const float bad_eps[5] = {0.0f, -1e-3f, NAN, INFINITY, -0.0f};
    for (int i = 0; i < 5; ++i) {
      b = a;
      b.eps = bad_eps[i];
      LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_ARGUMENT, "eps");
    }
    b = a;
    b.lr = NAN;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_NONFINITE, "lr");
    b.lr = -INFINITY;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_NONFINITE, "lr");
    b = a;
    b.weight_decay = -1e-3f;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b.weight_decay = NAN;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_ARGUMENT, "weight_decay");
    b = a;
    b.perturb_next = 3;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_ARGUMENT, "perturb_next");
  }
  LT_SNAP_CHECK(&snap, "train_step bad arguments");
  LMF_CHECK_BYTES_EQ(&r, &r0, sizeof r, "result after bad arguments");

  /* A failing callback (first or second call, any nonzero code): LMF_ERR_CALLBACK, the plan restored
   * (exact here, so the bytes are the original ones), no update, result untouched. */
  const int codes[3] = {1, -1, 42};
  for (int call = 1; call <= 2; ++call) {
    for (int c = 0; c < 3; ++c) {
      fail_cb f = {call, 0, codes[c]};
      LMF_CHECK_FAIL(lmf_mezo_train_step(p, &a, failing_loss, &f, &r, NULL), LMF_ERR_CALLBACK, "callback");
      LMF_CHECK_EQ_INT(f.calls, call);
      uint64_t ps;
      float po = 1.0f;
      LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &ps, &po));
      LMF_CHECK(po == 0.0f);
      LT_SNAP_CHECK(&snap, "parameters after a failing callback");
      LMF_CHECK_BYTES_EQ(&r, &r0, sizeof r, "result after a failing callback");
    }
  }
  /* The same with a carried perturbation (from a fused step): also removed on failure. */
  {
    lmf_mezo_step_args_t st;
    lmf_mezo_step_args_init(&st, sizeof st);
    st.seed = 4;
    st.perturb_next = 1;
    st.next_seed = 9;
    st.next_scale = a.eps;
    if (LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL))) { /* lr = 0: only the perturbation */
      lmf_mezo_driver_args_t b = a;
      b.seed = 9;
      fail_cb f = {1, 0, 1};
      LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, failing_loss, &f, &r, NULL), LMF_ERR_CALLBACK, "callback");
      LT_SNAP_CHECK(&snap, "parameters after a failing callback on a carried perturbation");
    }
  }

  /* Wrong state: perturbed under another seed, or by another amount than +eps. */
  LMF_CHECK_OK(lmf_mezo_perturb(p, 4, a.eps, NULL));
  {
    lmf_mezo_driver_args_t b = a;
    b.seed = 5;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_STATE, "seed");
    b = a;
    b.eps = 2 * a.eps;
    LMF_CHECK_FAIL(lmf_mezo_train_step(p, &b, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_STATE, NULL);
  }
  LMF_CHECK_OK(lmf_mezo_perturb(p, 4, -3 * a.eps, NULL)); /* carries -2 eps z(4) */
  LMF_CHECK_FAIL(lmf_mezo_train_step(p, &a, ok_loss, NULL, &r, NULL), LMF_ERR_INVALID_STATE, NULL);
  LMF_CHECK_BYTES_EQ(&r, &r0, sizeof r, "result after a wrong-state call");
  LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
  LT_SNAP_CHECK(&snap, "parameters after the wrong-state calls and a restore");

  lt_snap_free(&snap);
  lmf_mezo_plan_destroy(p);
  lmf_context_destroy(ctx);
}

/* Arguments the driver accepts up front but that only fail inside the step: eps so large that -2 eps
 * overflows, and lr * weight_decay so large that the decay factor 1 - lr wd overflows (lmf_mezo_step
 * rejects that). A failing call must change nothing (lmfuse.h): the parameters must be back to their
 * original bytes, the plan unperturbed, the loss not called, result untouched. */
void test_bad_input_train_step_late_failures(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  enum { N = 64 };
  float x[N];
  for (int i = 0; i < N; ++i) x[i] = 1.0f + (float)i * 0x1p-10f;
  lmf_mezo_tensor_t t = lt_tensor(x, NULL, N, 0, 1, LMF_DTYPE_F32, 1);
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = LMF_MEZO_RADEMACHER;
  for (int c = 0; c < 2; ++c) {
    for (int i = 0; i < N; ++i) x[i] = 1.0f + (float)i * 0x1p-10f;
    lmf_mezo_plan_t *p = NULL;
    if (!LMF_CHECK_OK(lmf_mezo_plan_create(&p, ctx, &t, 1, &cfg))) break;
    lt_snapshot snap;
    lt_snap_init(&snap);
    lt_snap_add(&snap, x, sizeof x);
    lmf_mezo_driver_args_t a;
    lmf_mezo_driver_args_init(&a, sizeof a);
    a.seed = 1;
    if (c == 0) {
      a.eps = 3e38f; /* finite and > 0, but -2 eps is -inf */
      a.lr = 1e-3f;
    } else {
      a.eps = 0x1p-8f;
      a.lr = 1e30f; /* finite; so is weight_decay; 1 - lr * wd is -inf */
      a.weight_decay = 1e30f;
    }
    int calls = 0;
    lmf_mezo_step_result_t r, r0;
    memset(&r, 0x5a, sizeof r);
    r0 = r;
    lmf_clear_error();
    lmf_status_t st = lmf_mezo_train_step(p, &a, count_loss, &calls, &r, NULL);
    LMF_CHECK_MSG(st != LMF_OK, "case %d: lmf_mezo_train_step accepted eps %g, lr %g, weight_decay %g", c,
                  (double)a.eps, (double)a.lr, (double)a.weight_decay);
    if (st != LMF_OK) {
      LMF_CHECK_MSG(lmf_last_error()[0] != '\0', "case %d: no error message", c);
      LMF_CHECK_MSG(calls == 0, "case %d: the call failed after calling the loss %d times (library bug: "
                    "host/mezo_driver.c validates too little before perturbing)", c, calls);
      uint64_t ps;
      float po = 1.0f;
      LMF_CHECK_OK(lmf_mezo_plan_perturbation(p, &ps, &po));
      LMF_CHECK_MSG(po == 0.0f, "case %d: the failed call left the plan perturbed by %g (library bug: "
                    "host/mezo_driver.c)", c, (double)po);
      LT_SNAP_CHECK(&snap, "parameters after a failed lmf_mezo_train_step (library bug if they differ)");
      LMF_CHECK_BYTES_EQ(&r, &r0, sizeof r, "result after a failed call");
    }
    lt_snap_free(&snap);
    lmf_mezo_plan_destroy(p);
  }
  lmf_context_destroy(ctx);
}
