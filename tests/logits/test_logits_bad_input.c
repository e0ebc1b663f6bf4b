/* Every bad-input path of the logits API: each call returns its status, lmf_last_error() names the
 * argument, and nothing is written: the outputs are poisoned before each call and must still hold the
 * poison, the GeDi state (read and updated by a good call) must hold its bytes, *bytes of the workspace
 * query must be left alone. The base call, which the cases break one field at a time, uses every feature:
 * four models in three dtypes, plausibility and nucleus masks, a bias row, GeDi, temperature, top-k,
 * top-p, min-p, seeds and offsets. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lg_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

enum { V = 64, B = 4, K = 4 };

typedef struct fixture {
  lmf_context_t *ctx;
  lg_models ms;
  lmf_logits_params_t p;
  float bias[V];
  float L_pos[B], L_neg[B];
  int32_t n[B];
  uint64_t seeds[B], offsets[B];
  float temps[B];
  int32_t sparse_ids[B * 8];
  lg_out o;
  void *ws;
  size_t ws_bytes;
  lt_snapshot snap;
} fixture;

static int fx_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  lg_models_init(&fx->ms);
  lt_snap_init(&fx->snap);
  fx->ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!fx->ctx) return 0;
  float z[B * V];
  static const float coeff[K] = {1.0f, 0.0f, 0.0f, -0.5f};
  static const int32_t dts[K] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16, LMF_DTYPE_F32};
  for (int k = 0; k < K; ++k) {
    lt_fill_normal(z, B * V, 0.0, 2.0, 10 + (uint64_t)k);
    if (lg_models_add(&fx->ms, dts[k], z, B, V, coeff[k]) < 0) return 0;
  }
  lt_fill_normal(fx->bias, V, 0.0, 0.5, 20);
  for (int b = 0; b < B; ++b) {
    fx->L_pos[b] = -2.0f * (float)b;
    fx->L_neg[b] = -2.5f * (float)b;
    fx->n[b] = b;
    fx->seeds[b] = 100 + (uint64_t)b;
    fx->offsets[b] = (uint64_t)b;
    fx->temps[b] = 1.0f;
  }
  for (int i = 0; i < B * 8; ++i) fx->sparse_ids[i] = i % V;
  lmf_logits_params_t *p = &fx->p;
  lg_params(p, B);
  p->plausibility_model = 0;
  p->plausibility_alpha = 0.01f;
  p->nucleus_model = 3;
  p->nucleus_p = 0.99f;
  p->bias = fx->bias;
  p->bias_row_stride = 0;
  p->gedi_pos_model = 1;
  p->gedi_neg_model = 2;
  p->gedi_omega = 30.0f;
  p->gedi_logit_scale = 1.0f;
  p->gedi_filter_p = 0.8f;
  p->gedi_target_p = 0.8f;
  p->gedi_L_pos = fx->L_pos;
  p->gedi_L_neg = fx->L_neg;
  p->gedi_n = fx->n;
  p->temperature = 0.7f;
  p->top_k = 20;
  p->top_p = 0.9f;
  p->min_p = 0.01f;
  p->seeds = fx->seeds;
  p->offsets = fx->offsets;
  if (!lg_out_alloc(&fx->o, B, V, V + 3, 1)) return 0;
  /* The base call works (and moves the GeDi state on). */
  if (!LMF_CHECK_OK(lg_combine(fx->ctx, fx->ms.m, fx->ms.K, p, &fx->o))) return 0;
  if (!LMF_CHECK_OK(lmf_logits_workspace_size(fx->ctx, fx->ms.m, fx->ms.K, p, &fx->ws_bytes))) return 0;
  fx->ws = lt_malloc(fx->ws_bytes + 1);
  if (!fx->ws) return 0;
  lt_snap_add(&fx->snap, fx->L_pos, sizeof fx->L_pos);
  lt_snap_add(&fx->snap, fx->L_neg, sizeof fx->L_neg);
  lt_snap_add(&fx->snap, fx->n, sizeof fx->n);
  return 1;
}

static void fx_free(fixture *fx) {
  lg_models_free(&fx->ms);
  lg_out_free(&fx->o);
  free(fx->ws);
  lt_snap_free(&fx->snap);
  lmf_context_destroy(fx->ctx);
}

/* lmf_logits_combine with these arguments must fail with `status` naming `needle` and write nothing. */
static void expect_fail_at(fixture *fx, lmf_context_t *ctx, const lmf_logits_model_t *models, size_t k,
                           const lmf_logits_params_t *params, const lmf_logits_outputs_t *outputs, void *ws,
                           size_t ws_bytes, lmf_status_t status, const char *needle, const char *what,
                           const char *file, int line) {
  lg_out_poison(&fx->o);
  lmf_clear_error();
  lmf_status_t st = lmf_logits_combine(ctx, models, k, params, outputs, ws, ws_bytes, NULL);
  lmf_t_check_fail(st, status, needle, what, file, line);
  lg_out_untouched_at(&fx->o, what, file, line);
  lt_snap_check(&fx->snap, what, file, line);
}

void test_logits_bad_input_combine(void) {
  fixture fx;
  if (!fx_init(&fx)) {
    fx_free(&fx);
    return;
  }
  lmf_logits_model_t m[LMF_LOGITS_MAX_MODELS + 1];
  lmf_logits_params_t p;
  lmf_logits_outputs_t o;
  lmf_context_t *ctx;
  const lmf_logits_model_t *mp;
  const lmf_logits_params_t *pp;
  const lmf_logits_outputs_t *op;
  size_t k;
  void *ws;
  size_t wsb;
  float nanf_ = NAN, inff_ = INFINITY;

#define WITH(stmt, status, needle)                                                       \
  do {                                                                                   \
    for (int i_ = 0; i_ <= LMF_LOGITS_MAX_MODELS; ++i_) m[i_] = fx.ms.m[i_ % K];         \
    p = fx.p;                                                                            \
    o = fx.o.o;                                                                          \
    ctx = fx.ctx;                                                                        \
    mp = m;                                                                              \
    pp = &p;                                                                             \
    op = &o;                                                                             \
    k = K;                                                                               \
    ws = fx.ws;                                                                          \
    wsb = fx.ws_bytes;                                                                   \
    stmt;                                                                                \
    expect_fail_at(&fx, ctx, mp, k, pp, op, ws, wsb, status, needle, #stmt, __FILE__, __LINE__); \
  } while (0)

  /* NULL pointers. */
  WITH(ctx = NULL, LMF_ERR_NULL_POINTER, "ctx");
  WITH(mp = NULL, LMF_ERR_NULL_POINTER, "models");
  WITH(pp = NULL, LMF_ERR_NULL_POINTER, "params");
  WITH(op = NULL, LMF_ERR_NULL_POINTER, "outputs");
  WITH(o.tokens = NULL, LMF_ERR_NULL_POINTER, "tokens");
  WITH(m[2].logits = NULL, LMF_ERR_NULL_POINTER, "logits");

  /* Counts and sizes. */
  WITH(k = 0, LMF_ERR_INVALID_SIZE, "num_models");
  WITH(k = LMF_LOGITS_MAX_MODELS + 1, LMF_ERR_INVALID_SIZE, "num_models");
  WITH(p.num_rows = 0, LMF_ERR_INVALID_SIZE, "num_rows");
  WITH(p.num_rows = -3, LMF_ERR_INVALID_SIZE, "num_rows");
  WITH(m[1].vocab = 0, LMF_ERR_INVALID_SIZE, "vocab");
  WITH(m[0].vocab = -5, LMF_ERR_INVALID_SIZE, "vocab");
  WITH(p.vocab_out = -1, LMF_ERR_INVALID_SIZE, "vocab_out");
  /* Vocabularies that differ without vocab_out. */
  WITH(m[3].vocab = V - 1, LMF_ERR_INVALID_ARGUMENT, "vocab");
  /* A GeDi model narrower than V_out. */
  WITH((p.vocab_out = V, m[2].vocab = V - 1), LMF_ERR_INVALID_ARGUMENT, "vocab");

  /* Strides. */
  WITH(m[0].row_stride = -1, LMF_ERR_INVALID_SIZE, "row_stride");
  WITH(m[3].row_stride = V - 1, LMF_ERR_INVALID_SIZE, "row_stride");
  WITH(m[1].row_stride = 0, LMF_ERR_INVALID_SIZE, "row_stride");
  WITH(m[0].row_stride = INT64_MAX / 4, LMF_ERR_INVALID_SIZE, "row_stride");
  WITH(o.logprobs_row_stride = V - 1, LMF_ERR_INVALID_SIZE, "logprobs_row_stride");
  WITH(o.logprobs_row_stride = 0, LMF_ERR_INVALID_SIZE, "logprobs_row_stride");
  WITH(o.logprobs_row_stride = -V, LMF_ERR_INVALID_SIZE, "logprobs_row_stride");
  WITH(p.bias_row_stride = -1, LMF_ERR_INVALID_SIZE, "bias_row_stride");
  WITH(p.bias_row_stride = V - 1, LMF_ERR_INVALID_SIZE, "bias_row_stride");

  /* dtype and reserved fields. */
  WITH(m[1].dtype = LMF_DTYPE_I32, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(m[2].dtype = LMF_DTYPE_I64, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(m[0].dtype = 7, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(m[3].dtype = -1, LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  WITH(m[0].reserved[0] = 1, LMF_ERR_INVALID_ARGUMENT, "reserved");
  WITH(m[3].reserved[1] = -1, LMF_ERR_INVALID_ARGUMENT, "reserved");

  /* Coefficients and model temperatures. */
  WITH(m[3].coeff = nanf_, LMF_ERR_NONFINITE, "coeff");
  WITH(m[0].coeff = inff_, LMF_ERR_NONFINITE, "coeff");
  WITH(m[3].coeff = -inff_, LMF_ERR_NONFINITE, "coeff");
  WITH(m[0].temperature = 0.0f, LMF_ERR_INVALID_ARGUMENT, "temperature");
  WITH(m[1].temperature = -1.0f, LMF_ERR_INVALID_ARGUMENT, "temperature");
  WITH(m[2].temperature = nanf_, LMF_ERR_NONFINITE, "temperature");
  WITH(m[3].temperature = inff_, LMF_ERR_NONFINITE, "temperature");

  /* Sparse rows. */
  WITH(m[3].sparse_k = 3, LMF_ERR_INVALID_ARGUMENT, "sparse_k"); /* dense rows take sparse_k 0 */
  WITH((m[3].sparse_index = fx.sparse_ids, m[3].sparse_k = -1), LMF_ERR_INVALID_SIZE, "sparse_k");
  WITH((m[3].sparse_index = fx.sparse_ids, m[3].sparse_k = 8, m[3].row_stride = 7), LMF_ERR_INVALID_SIZE,
       "row_stride");
  WITH((m[3].sparse_index = fx.sparse_ids, m[3].sparse_k = 8, m[3].row_stride = 8, m[3].sparse_fill = nanf_),
       LMF_ERR_NONFINITE, "sparse_fill");
  WITH((m[3].sparse_index = fx.sparse_ids, m[3].sparse_k = 8, m[3].row_stride = 8, m[3].sparse_fill = -inff_),
       LMF_ERR_NONFINITE, "sparse_fill");

  /* Sampling parameters. */
  WITH(p.temperature = -0.5f, LMF_ERR_INVALID_ARGUMENT, "temperature");
  WITH(p.temperature = nanf_, LMF_ERR_NONFINITE, "temperature");
  WITH(p.temperature = inff_, LMF_ERR_NONFINITE, "temperature");
  WITH(p.top_p = 0.0f, LMF_ERR_INVALID_ARGUMENT, "top_p");
  WITH(p.top_p = -0.1f, LMF_ERR_INVALID_ARGUMENT, "top_p");
  WITH(p.top_p = 1.5f, LMF_ERR_INVALID_ARGUMENT, "top_p");
  WITH(p.top_p = nanf_, LMF_ERR_INVALID_ARGUMENT, "top_p");
  WITH(p.min_p = -0.1f, LMF_ERR_INVALID_ARGUMENT, "min_p");
  WITH(p.min_p = 1.1f, LMF_ERR_INVALID_ARGUMENT, "min_p");
  WITH(p.min_p = nanf_, LMF_ERR_INVALID_ARGUMENT, "min_p");
  WITH(p.top_k = -1, LMF_ERR_INVALID_ARGUMENT, "top_k");
  WITH(p.seeds = NULL, LMF_ERR_NULL_POINTER, "seeds");
  /* Per-row temperatures may sample: seeds are needed even at T = 0. */
  WITH((p.temperature = 0.0f, p.temperature_rows = fx.temps, p.seeds = NULL), LMF_ERR_NULL_POINTER, "seeds");

  /* Masks: model indices and their parameters. */
  WITH(p.plausibility_model = K, LMF_ERR_INVALID_ARGUMENT, "plausibility_model");
  WITH(p.plausibility_model = -2, LMF_ERR_INVALID_ARGUMENT, "plausibility_model");
  WITH(p.plausibility_alpha = 0.0f, LMF_ERR_INVALID_ARGUMENT, "plausibility_alpha");
  WITH(p.plausibility_alpha = 1.5f, LMF_ERR_INVALID_ARGUMENT, "plausibility_alpha");
  WITH(p.plausibility_alpha = nanf_, LMF_ERR_INVALID_ARGUMENT, "plausibility_alpha");
  WITH(p.nucleus_model = 7, LMF_ERR_INVALID_ARGUMENT, "nucleus_model");
  WITH(p.nucleus_model = INT32_MIN, LMF_ERR_INVALID_ARGUMENT, "nucleus_model");
  WITH(p.nucleus_p = 0.0f, LMF_ERR_INVALID_ARGUMENT, "nucleus_p");
  WITH(p.nucleus_p = 1.01f, LMF_ERR_INVALID_ARGUMENT, "nucleus_p");

  /* GeDi. */
  WITH(p.gedi_pos_model = K, LMF_ERR_INVALID_ARGUMENT, "gedi_pos_model");
  WITH(p.gedi_pos_model = -3, LMF_ERR_INVALID_ARGUMENT, "gedi_pos_model");
  WITH(p.gedi_neg_model = -1, LMF_ERR_INVALID_ARGUMENT, "gedi_neg_model");
  WITH(p.gedi_neg_model = 99, LMF_ERR_INVALID_ARGUMENT, "gedi_neg_model");
  WITH(p.gedi_L_pos = NULL, LMF_ERR_NULL_POINTER, "gedi_L_pos");
  WITH(p.gedi_L_neg = NULL, LMF_ERR_NULL_POINTER, "gedi_L_neg");
  WITH(p.gedi_n = NULL, LMF_ERR_NULL_POINTER, "gedi_n");
  WITH(p.gedi_omega = nanf_, LMF_ERR_NONFINITE, "gedi_omega");
  WITH(p.gedi_logit_scale = 0.0f, LMF_ERR_INVALID_ARGUMENT, "gedi_logit_scale");
  WITH(p.gedi_bias_neg = inff_, LMF_ERR_NONFINITE, "gedi_bias_neg");
  WITH(p.gedi_class_bias = nanf_, LMF_ERR_NONFINITE, "gedi_class_bias");
  WITH(p.gedi_filter_p = 1.5f, LMF_ERR_INVALID_ARGUMENT, "gedi_filter_p");
  WITH(p.gedi_filter_p = -0.1f, LMF_ERR_INVALID_ARGUMENT, "gedi_filter_p");
  WITH(p.gedi_target_p = 0.0f, LMF_ERR_INVALID_ARGUMENT, "gedi_target_p");
  WITH(p.gedi_target_p = 1.5f, LMF_ERR_INVALID_ARGUMENT, "gedi_target_p");

  /* Workspace. */
  if (fx.ws_bytes > 0) {
    WITH(wsb = fx.ws_bytes - 1, LMF_ERR_INVALID_SIZE, "workspace");
    WITH(wsb = 0, LMF_ERR_INVALID_SIZE, "workspace");
    WITH(ws = NULL, LMF_ERR_NULL_POINTER, "workspace");
  } else {
    lmf_t_note("the base call needs no workspace; the workspace cases are skipped");
  }

  /* Struct headers. */
  WITH(p.struct_size = 0, LMF_ERR_STRUCT_SIZE, "struct_size");
  WITH(p.struct_size = sizeof p - 4, LMF_ERR_STRUCT_SIZE, "struct_size");
  WITH(p.struct_size = sizeof p + 8, LMF_ERR_STRUCT_SIZE, "struct_size");
  WITH(p.version = 0, LMF_ERR_STRUCT_SIZE, "version");
  WITH(p.version = LMF_LOGITS_PARAMS_VERSION + 1, LMF_ERR_STRUCT_SIZE, "version");
  WITH(o.struct_size = 0, LMF_ERR_STRUCT_SIZE, "struct_size");
  WITH(o.struct_size = sizeof o + 8, LMF_ERR_STRUCT_SIZE, "struct_size");
  WITH(o.version = 0, LMF_ERR_STRUCT_SIZE, "version");
  WITH(o.version = LMF_LOGITS_OUTPUTS_VERSION + 1, LMF_ERR_STRUCT_SIZE, "version");

  /* Outputs (and the GeDi state) that overlap one another. */
  WITH(o.status = o.tokens, LMF_ERR_OVERLAP, "overlap");
  WITH(o.token_logprob = o.logprobs + 5, LMF_ERR_OVERLAP, "overlap");
  WITH(o.gedi_logp_desired = fx.L_pos, LMF_ERR_OVERLAP, "overlap");
  WITH(o.lse = (float *)fx.n, LMF_ERR_OVERLAP, "overlap");
#undef WITH
  fx_free(&fx);
}

/* lmf_logits_workspace_size: NULL arguments, a bad model or params, and *bytes left alone on failure. */
void test_logits_bad_input_workspace_size(void) {
  fixture fx;
  if (!fx_init(&fx)) {
    fx_free(&fx);
    return;
  }
  const size_t sentinel = (size_t)0x5e5e5e5e;
  size_t bytes = sentinel;
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, fx.ms.m, fx.ms.K, &fx.p, NULL), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_logits_workspace_size(NULL, fx.ms.m, fx.ms.K, &fx.p, &bytes), LMF_ERR_NULL_POINTER, "ctx");
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, NULL, fx.ms.K, &fx.p, &bytes), LMF_ERR_NULL_POINTER, "models");
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, fx.ms.m, fx.ms.K, NULL, &bytes), LMF_ERR_NULL_POINTER, "params");
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, fx.ms.m, 0, &fx.p, &bytes), LMF_ERR_INVALID_SIZE, "num_models");
  lmf_logits_model_t m[K];
  memcpy(m, fx.ms.m, sizeof m);
  m[1].dtype = LMF_DTYPE_I32;
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, m, K, &fx.p, &bytes), LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  lmf_logits_params_t p = fx.p;
  p.top_p = 2.0f;
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, fx.ms.m, K, &p, &bytes), LMF_ERR_INVALID_ARGUMENT, "top_p");
  p = fx.p;
  p.version = 9;
  LMF_CHECK_FAIL(lmf_logits_workspace_size(fx.ctx, fx.ms.m, K, &p, &bytes), LMF_ERR_STRUCT_SIZE, "version");
  LMF_CHECK_EQ_U64(bytes, sentinel);
  /* The query is repeatable. */
  LMF_CHECK_OK(lmf_logits_workspace_size(fx.ctx, fx.ms.m, K, &fx.p, &bytes));
  LMF_CHECK_EQ_U64(bytes, fx.ws_bytes);
  fx_free(&fx);
}

/* lmf_logits_params_init / lmf_logits_outputs_init: NULL, a wrong struct_size; nothing written. */
void test_logits_bad_input_init(void) {
  unsigned char buf[sizeof(lmf_logits_params_t) + 16], ref[sizeof buf];
  memset(buf, 0xab, sizeof buf);
  memcpy(ref, buf, sizeof buf);
  lmf_logits_params_t *p = (lmf_logits_params_t *)(void *)buf;
  lmf_logits_outputs_t *o = (lmf_logits_outputs_t *)(void *)buf;
  LMF_CHECK_FAIL(lmf_logits_params_init(NULL, sizeof(lmf_logits_params_t)), LMF_ERR_NULL_POINTER, NULL);
  LMF_CHECK_FAIL(lmf_logits_params_init(p, 0), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_logits_params_init(p, sizeof(lmf_logits_params_t) - 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_logits_params_init(p, sizeof(lmf_logits_params_t) + 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_logits_outputs_init(NULL, sizeof(lmf_logits_outputs_t)), LMF_ERR_NULL_POINTER, NULL);
  LMF_CHECK_FAIL(lmf_logits_outputs_init(o, 0), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_logits_outputs_init(o, sizeof(lmf_logits_outputs_t) - 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_logits_outputs_init(o, sizeof(lmf_logits_outputs_t) + 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_BYTES_EQ(buf, ref, sizeof buf, "a failed _init wrote to the struct");
  /* The right size writes exactly sizeof bytes. */
  LMF_CHECK_OK(lmf_logits_params_init(p, sizeof(lmf_logits_params_t)));
  LMF_CHECK_BYTES_EQ(buf + sizeof(lmf_logits_params_t), ref + sizeof(lmf_logits_params_t), 16,
                     "params_init wrote past struct_size");
}

/* lmf_logits_verify_draft: every bad argument; accepted, next_token and status untouched. */
void test_logits_bad_input_verify(void) {
  enum { S = 3, L = 2, R = S * (L + 1) };
  lmf_context_t *ctx0 = lt_context(LMF_BACKEND_CPU, 0);
  if (!ctx0) return;
  float z[R * V];
  lg_models ms;
  lg_models_init(&ms);
  static const float coeff[3] = {1.0f, 1.0f, -1.0f};
  for (int k = 0; k < 3; ++k) {
    lt_fill_normal(z, R * V, 0.0, 1.0, 40 + (uint64_t)k);
    lg_models_add(&ms, lg_dtypes[k], z, R, V, coeff[k]);
  }
  int32_t draft[S * L] = {1, 2, 3, 4, 5, 6};
  int32_t acc[S], next[S], st[S];
  uint64_t seeds[R];
  float Lp[R] = {0}, Ln[R] = {0};
  int32_t n[R] = {0};
  for (int i = 0; i < R; ++i) seeds[i] = 7 + (uint64_t)i;
  lmf_logits_params_t base;
  lg_params(&base, R);
  base.temperature = 1.0f;
  base.top_p = 0.95f;
  base.seeds = seeds;
  size_t need = 0;
  void *wsbuf = NULL;
  if (ms.K != 3 || !LMF_CHECK_OK(lmf_logits_workspace_size(ctx0, ms.m, ms.K, &base, &need))) goto done;
  wsbuf = lt_malloc(need + 1);
  if (!wsbuf) goto done;
  LMF_CHECK_OK(lg_verify(ctx0, ms.m, ms.K, &base, 1, draft, L, acc, next, st));

  lmf_context_t *ctx;
  const lmf_logits_model_t *mp;
  lmf_logits_params_t p;
  const lmf_logits_params_t *pp;
  int32_t dm, dl;
  const int32_t *dt;
  int32_t *ap, *np, *sp;
  void *ws;
  size_t wsb;
#define VWITH(stmt, status, needle)                                                                            \
  do {                                                                                                         \
    ctx = ctx0;                                                                                                \
    mp = ms.m;                                                                                                 \
    p = base;                                                                                                  \
    pp = &p;                                                                                                   \
    dm = 1;                                                                                                    \
    dl = L;                                                                                                    \
    dt = draft;                                                                                                \
    ap = acc;                                                                                                  \
    np = next;                                                                                                 \
    sp = st;                                                                                                   \
    ws = wsbuf;                                                                                                \
    wsb = need;                                                                                                \
    stmt;                                                                                                      \
    for (int i_ = 0; i_ < S; ++i_) acc[i_] = next[i_] = st[i_] = LG_POISON_TOKEN;                              \
    lmf_clear_error();                                                                                         \
    lmf_t_check_fail(lmf_logits_verify_draft(ctx, mp, ms.K, pp, dm, dt, dl, ap, np, sp, ws, wsb, NULL), status, \
                     needle, #stmt, __FILE__, __LINE__);                                                       \
    int64_t w_ = 0;                                                                                            \
    for (int i_ = 0; i_ < S; ++i_)                                                                             \
      w_ += (acc[i_] != LG_POISON_TOKEN) + (next[i_] != LG_POISON_TOKEN) + (st[i_] != LG_POISON_TOKEN);         \
    LMF_CHECK_MSG(w_ == 0, "%s: %lld outputs written by a failed call", #stmt, (long long)w_);                 \
  } while (0)

  VWITH(ctx = NULL, LMF_ERR_NULL_POINTER, "ctx");
  VWITH(mp = NULL, LMF_ERR_NULL_POINTER, "models");
  VWITH(pp = NULL, LMF_ERR_NULL_POINTER, "params");
  VWITH(dt = NULL, LMF_ERR_NULL_POINTER, "draft_tokens");
  VWITH(ap = NULL, LMF_ERR_NULL_POINTER, "accepted");
  VWITH(np = NULL, LMF_ERR_NULL_POINTER, "next_token");
  VWITH(dm = -1, LMF_ERR_INVALID_ARGUMENT, "draft_model");
  VWITH(dm = 3, LMF_ERR_INVALID_ARGUMENT, "draft_model");
  VWITH(dl = -1, LMF_ERR_INVALID_SIZE, "draft_len");
  VWITH(p.num_rows = R - 1, LMF_ERR_INVALID_SIZE, "num_rows"); /* not a multiple of draft_len + 1 */
  VWITH(dl = 3, LMF_ERR_INVALID_SIZE, "num_rows");             /* 9 rows are not num_seqs * 4 */
  VWITH(p.seeds = NULL, LMF_ERR_NULL_POINTER, "seeds");
  VWITH(p.top_p = 0.0f, LMF_ERR_INVALID_ARGUMENT, "top_p");
  VWITH(p.struct_size = 1, LMF_ERR_STRUCT_SIZE, "struct_size");
  /* GeDi is not allowed in verification. */
  VWITH((p.gedi_pos_model = 0, p.gedi_neg_model = 1, p.gedi_L_pos = Lp, p.gedi_L_neg = Ln, p.gedi_n = n),
        LMF_ERR_INVALID_ARGUMENT, "gedi");
  VWITH(sp = acc, LMF_ERR_OVERLAP, "overlap");
  if (need > 0) {
    VWITH(wsb = need - 1, LMF_ERR_INVALID_SIZE, "workspace");
    VWITH(ws = NULL, LMF_ERR_NULL_POINTER, "workspace");
  }
#undef VWITH
done:
  free(wsbuf);
  lg_models_free(&ms);
  lmf_context_destroy(ctx0);
}
