/* lmf_logits_*: check every argument (nothing is written on a bad one), resolve defaults into one
 * lmf_lg_job, size the workspace, run the context's backend (host/logits_backend.h). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "logits_backend.h"
#include "../kernels/common/lmf_hd.h"

#define FN_SIZE "lmf_logits_workspace_size"
#define FN_COMBINE "lmf_logits_combine"
#define FN_VERIFY "lmf_logits_verify_draft"

/* Byte offsets must fit an int64 with room to spare (8-byte elements at most). */
#define LG_MAX_ELEMS (INT64_MAX / 16)

lmf_status_t lmf_logits_params_init(lmf_logits_params_t *params, size_t struct_size) {
  lmf_logits_params_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_LOGITS_PARAMS_VERSION;
  d.num_rows = 0; /* must be set */
  d.vocab_out = 0;
  d.plausibility_model = -1;
  d.plausibility_alpha = 0.1f;
  d.nucleus_model = -1;
  d.nucleus_p = 0.9f;
  d.gedi_pos_model = -1;
  d.gedi_neg_model = -1;
  d.gedi_omega = 30.0f;
  d.gedi_logit_scale = 1.0f;
  d.gedi_filter_p = 0.8f;
  d.gedi_target_p = 0.8f;
  d.temperature = 1.0f;
  d.top_k = 0;
  d.top_p = 1.0f;
  d.min_p = 0.0f;
  return lmf_init_struct(params, struct_size, &d, sizeof d, "lmf_logits_params_init");
}

lmf_status_t lmf_logits_outputs_init(lmf_logits_outputs_t *outputs, size_t struct_size) {
  lmf_logits_outputs_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_LOGITS_OUTPUTS_VERSION;
  return lmf_init_struct(outputs, struct_size, &d, sizeof d, "lmf_logits_outputs_init");
}

static int finite_f(float x) { return lmf_isfinite_f32(x); }

/* (rows - 1) * stride + width elements must fit LG_MAX_ELEMS. */
static int span_ok(int64_t rows, int64_t stride, int64_t width) {
  if (width > LG_MAX_ELEMS || stride < 0) return 0;
  if (rows <= 1 || stride == 0) return 1;
  return stride <= (LG_MAX_ELEMS - width) / (rows - 1);
}

static lmf_status_t check_model(const char *fn, const lmf_logits_model_t *m, size_t i, int32_t rows) {
  if (!m->logits) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: models[%zu].logits is NULL", fn, i);
  if (m->reserved[0] != 0 || m->reserved[1] != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: models[%zu].reserved must be 0", fn, i);
  if (!lmf_is_float_dtype(m->dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE,
                    "%s: models[%zu].dtype is %d (%s); logits take f32, f16 or bf16", fn, i, m->dtype,
                    lmf_dtype_name(m->dtype));
  if (m->vocab < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: models[%zu].vocab is %d, must be >= 1", fn, i, m->vocab);
  int64_t width;
  if (m->sparse_index) {
    if (m->sparse_k < 0)
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: models[%zu].sparse_k is %d, must be >= 0", fn, i,
                      m->sparse_k);
    width = m->sparse_k;
    if (m->row_stride < width)
      return lmf_fail(LMF_ERR_INVALID_SIZE,
                      "%s: models[%zu].row_stride is %lld, must be >= sparse_k (%d)", fn, i,
                      (long long)m->row_stride, m->sparse_k);
    if (!finite_f(m->sparse_fill))
      return lmf_fail(LMF_ERR_NONFINITE, "%s: models[%zu].sparse_fill is not finite", fn, i);
  } else {
    if (m->sparse_k != 0)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: models[%zu].sparse_k is %d but sparse_index is NULL (dense rows take "
                      "sparse_k 0)", fn, i, m->sparse_k);
    width = m->vocab;
    if (m->row_stride < width)
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: models[%zu].row_stride is %lld, must be >= vocab (%d)",
                      fn, i, (long long)m->row_stride, m->vocab);
  }
  /* With row_index any int32 row may be read. */
  if (!span_ok(m->row_index ? (int64_t)INT32_MAX + 1 : rows, m->row_stride, width))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: models[%zu].row_stride %lld overflows the address space",
                    fn, i, (long long)m->row_stride);
  if (!finite_f(m->coeff))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: models[%zu].coeff is not finite", fn, i);
  if (!finite_f(m->temperature))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: models[%zu].temperature is not finite", fn, i);
  if (!(m->temperature > 0.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: models[%zu].temperature is %g, must be > 0", fn, i,
                    (double)m->temperature);
  return LMF_OK;
}

static lmf_status_t check_model_index(const char *fn, const char *what, int32_t idx, size_t num_models,
                                      int allow_off) {
  if (allow_off && idx == -1) return LMF_OK;
  if (idx < 0 || (size_t)idx >= num_models)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->%s is %d; use %s0 .. %zu", fn, what, idx,
                    allow_off ? "-1 (off) or " : "", num_models - 1);
  return LMF_OK;
}

/* log(sigmoid(logit(t) + b)) in double; t in (0, 1]. */
static double log_target(double t, double b) {
  if (b == 0.0) return log(t);
  double z = (t >= 1.0) ? INFINITY : log(t) - log1p(-t);
  z += b;
  if (z == INFINITY) return 0.0;
  return z >= 0.0 ? -log1p(exp(-z)) : z - log1p(exp(z));
}

/* Checks models and params and fills *job (outputs and verify fields left zero). */
static lmf_status_t build_job(const char *fn, const lmf_context_t *ctx, const lmf_logits_model_t *models,
                              size_t num_models, const lmf_logits_params_t *params, int mode,
                              lmf_lg_job *job) {
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: ctx is NULL", fn);
  if (!models) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: models is NULL", fn);
  char what[64];
  snprintf(what, sizeof what, "%s: params", fn);
  lmf_status_t st = lmf_check_struct(params, sizeof(lmf_logits_params_t), sizeof(lmf_logits_params_t),
                                     LMF_LOGITS_PARAMS_VERSION, what);
  if (st != LMF_OK) return st;
  if (num_models < 1 || num_models > LMF_LOGITS_MAX_MODELS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: num_models is %zu, must be 1 to %d", fn, num_models,
                    LMF_LOGITS_MAX_MODELS);
  const lmf_logits_params_t *p = params;
  if (p->num_rows < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: params->num_rows is %d, must be >= 1", fn, p->num_rows);
  for (size_t i = 0; i < num_models; ++i) {
    st = check_model(fn, &models[i], i, p->num_rows);
    if (st != LMF_OK) return st;
  }
  int32_t vout = p->vocab_out;
  if (vout < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: params->vocab_out is %d, must be >= 0 (0: the models' "
                    "common vocab)", fn, vout);
  if (vout == 0) {
    for (size_t i = 1; i < num_models; ++i)
      if (models[i].vocab != models[0].vocab)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        "%s: the models' vocabularies differ (models[0].vocab %d, models[%zu].vocab "
                        "%d); set params->vocab_out to the output vocabulary", fn, models[0].vocab, i,
                        models[i].vocab);
    vout = models[0].vocab;
  }

  /* Masks. */
  st = check_model_index(fn, "plausibility_model", p->plausibility_model, num_models, 1);
  if (st != LMF_OK) return st;
  if (p->plausibility_model >= 0 && !(p->plausibility_alpha > 0.0f && p->plausibility_alpha <= 1.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->plausibility_alpha is %g, must be in (0, 1]",
                    fn, (double)p->plausibility_alpha);
  st = check_model_index(fn, "nucleus_model", p->nucleus_model, num_models, 1);
  if (st != LMF_OK) return st;
  if (p->nucleus_model >= 0 && !(p->nucleus_p > 0.0f && p->nucleus_p <= 1.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->nucleus_p is %g, must be in (0, 1]", fn,
                    (double)p->nucleus_p);
  if (p->bias) {
    if (p->bias_row_stride < 0 || (p->bias_row_stride > 0 && p->bias_row_stride < vout))
      return lmf_fail(LMF_ERR_INVALID_SIZE,
                      "%s: params->bias_row_stride is %lld; use 0 (one bias row) or >= vocab_out "
                      "(%d)", fn, (long long)p->bias_row_stride, vout);
    if (!span_ok(p->num_rows, p->bias_row_stride, vout))
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: params->bias_row_stride %lld overflows", fn,
                      (long long)p->bias_row_stride);
  }

  /* GeDi. */
  int gedi = p->gedi_pos_model != -1;
  if (gedi) {
    if (mode == LMF_LG_MODE_VERIFY)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: GeDi is not allowed here (params->gedi_pos_model "
                      "must be -1)", fn);
    st = check_model_index(fn, "gedi_pos_model", p->gedi_pos_model, num_models, 0);
    if (st != LMF_OK) return st;
    st = check_model_index(fn, "gedi_neg_model", p->gedi_neg_model, num_models, 0);
    if (st != LMF_OK) return st;
    if (models[p->gedi_pos_model].vocab < vout || models[p->gedi_neg_model].vocab < vout)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: the GeDi models' vocab (%d, %d) must be >= vocab_out (%d)", fn,
                      models[p->gedi_pos_model].vocab, models[p->gedi_neg_model].vocab, vout);
    if (!p->gedi_L_pos) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: params->gedi_L_pos is NULL", fn);
    if (!p->gedi_L_neg) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: params->gedi_L_neg is NULL", fn);
    if (!p->gedi_n) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: params->gedi_n is NULL", fn);
    const struct {
      const char *name;
      float v;
    } fin[] = {{"gedi_omega", p->gedi_omega},       {"gedi_logit_scale", p->gedi_logit_scale},
               {"gedi_bias_pos", p->gedi_bias_pos}, {"gedi_bias_neg", p->gedi_bias_neg},
               {"gedi_class_bias", p->gedi_class_bias}};
    for (size_t i = 0; i < sizeof fin / sizeof fin[0]; ++i)
      if (!finite_f(fin[i].v))
        return lmf_fail(LMF_ERR_NONFINITE, "%s: params->%s is not finite", fn, fin[i].name);
    if (!(p->gedi_logit_scale > 0.0f))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->gedi_logit_scale is %g, must be > 0", fn,
                      (double)p->gedi_logit_scale);
    if (!finite_f(LMF_FADD(p->gedi_bias_pos, p->gedi_class_bias)))
      return lmf_fail(LMF_ERR_NONFINITE, "%s: params->gedi_bias_pos + gedi_class_bias overflows", fn);
    if (!(p->gedi_filter_p >= 0.0f && p->gedi_filter_p <= 1.0f))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->gedi_filter_p is %g, must be in [0, 1] (0: "
                      "off)", fn, (double)p->gedi_filter_p);
    if (p->gedi_filter_p > 0.0f && !(p->gedi_target_p > 0.0f && p->gedi_target_p <= 1.0f))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->gedi_target_p is %g, must be in (0, 1]", fn,
                      (double)p->gedi_target_p);
  }

  /* Sampling. */
  if (!finite_f(p->temperature))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: params->temperature is not finite", fn);
  if (p->temperature < 0.0f)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->temperature is %g, must be >= 0 (0: greedy)",
                    fn, (double)p->temperature);
  if (p->top_k < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->top_k is %d, must be >= 0 (0: off)", fn,
                    p->top_k);
  if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->top_p is %g, must be in (0, 1] (1: off)", fn,
                    (double)p->top_p);
  if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: params->min_p is %g, must be in [0, 1] (0: off)", fn,
                    (double)p->min_p);
  if (!p->seeds && (p->temperature > 0.0f || p->temperature_rows))
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: params->seeds is NULL; it is required unless every row "
                    "is greedy (temperature 0 and no temperature_rows)", fn);

  memset(job, 0, sizeof *job);
  job->num_models = (int32_t)num_models;
  job->mode = mode;
  job->num_rows = p->num_rows;
  job->vocab_out = vout;
  for (size_t i = 0; i < num_models; ++i) {
    const lmf_logits_model_t *m = &models[i];
    lmf_lg_model *d = &job->models[i];
    d->logits = m->logits;
    d->row_index = m->row_index;
    d->coeff_rows = m->coeff_rows;
    d->sparse_index = m->sparse_index;
    d->row_stride = m->row_stride;
    d->dtype = m->dtype;
    d->vocab = m->vocab;
    d->sparse_k = m->sparse_index ? m->sparse_k : 0;
    d->coeff = m->coeff;
    d->temperature = m->temperature;
    d->sparse_fill = m->sparse_index ? m->sparse_fill : 0.0f;
    d->roles = (m->coeff != 0.0f || m->coeff_rows) ? LMF_LG_ROLE_COMBINE : 0u;
  }
  job->plaus_model = p->plausibility_model;
  if (job->plaus_model >= 0) {
    job->plaus_log_alpha = (float)log((double)p->plausibility_alpha);
    job->models[job->plaus_model].roles |= LMF_LG_ROLE_PLAUS;
  }
  job->nucleus_model = p->nucleus_model;
  if (job->nucleus_model >= 0) {
    job->nucleus_p = p->nucleus_p;
    job->models[job->nucleus_model].roles |= LMF_LG_ROLE_NUCLEUS;
  }
  job->bias = p->bias;
  job->bias_row_stride = p->bias ? p->bias_row_stride : 0;
  job->gedi_pos_model = -1;
  job->gedi_neg_model = -1;
  if (gedi) {
    job->gedi_pos_model = p->gedi_pos_model;
    job->gedi_neg_model = p->gedi_neg_model;
    job->models[p->gedi_pos_model].roles |= LMF_LG_ROLE_GEDI_POS;
    job->models[p->gedi_neg_model].roles |= LMF_LG_ROLE_GEDI_NEG;
    job->gedi_omega = p->gedi_omega;
    job->gedi_logit_scale = p->gedi_logit_scale;
    job->gedi_bias_pos = LMF_FADD(p->gedi_bias_pos, p->gedi_class_bias);
    job->gedi_bias_neg = p->gedi_bias_neg;
    job->gedi_filter_p = p->gedi_filter_p;
    job->gedi_log_target =
        p->gedi_filter_p > 0.0f ? (float)log_target(p->gedi_target_p, p->gedi_class_bias) : 0.0f;
    job->gedi_L_pos = p->gedi_L_pos;
    job->gedi_L_neg = p->gedi_L_neg;
    job->gedi_n = p->gedi_n;
  }
  job->temperature = p->temperature;
  job->temperature_rows = p->temperature_rows;
  job->top_k = p->top_k;
  job->top_p = p->top_p;
  job->min_p = p->min_p;
  job->log_min_p = p->min_p > 0.0f ? (float)log((double)p->min_p) : -INFINITY;
  job->seeds = p->seeds;
  job->offsets = p->offsets;
  job->draft_model = -1;
  return LMF_OK;
}

static lmf_status_t workspace_bytes_for(const char *fn, const lmf_context_t *ctx, const lmf_lg_job *job,
                                        size_t *bytes) {
  if (ctx->backend == LMF_BACKEND_CUDA) return lmf_cuda_logits_workspace(ctx, job, bytes);
  *bytes = lmf_cpu_logits_workspace(ctx, job);
  if (*bytes == SIZE_MAX)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the workspace size overflows (vocab_out %d)", fn,
                    job->vocab_out);
  return LMF_OK;
}

lmf_status_t lmf_logits_workspace_size(lmf_context_t *ctx, const lmf_logits_model_t *models,
                                       size_t num_models, const lmf_logits_params_t *params,
                                       size_t *bytes) {
  if (!bytes) return lmf_fail(LMF_ERR_NULL_POINTER, FN_SIZE ": bytes is NULL");
  lmf_lg_job job;
  lmf_status_t st = build_job(FN_SIZE, ctx, models, num_models, params, LMF_LG_MODE_COMBINE, &job);
  if (st != LMF_OK) return st;
  size_t b = 0;
  st = workspace_bytes_for(FN_SIZE, ctx, &job, &b);
  if (st != LMF_OK) return st;
  *bytes = b;
  return LMF_OK;
}

/* Writable ranges that must not overlap one another. */
typedef struct wrange {
  const char *name;
  uintptr_t begin, end;
} wrange;

static void add_range(wrange *r, int *n, const char *name, const void *p, int64_t elems, size_t esize) {
  if (!p || elems <= 0) return;
  r[*n].name = name;
  r[*n].begin = (uintptr_t)p;
  r[*n].end = (uintptr_t)p + (uintptr_t)elems * esize;
  ++*n;
}

static int64_t ws_elems(size_t bytes) {
  return bytes > (size_t)INT64_MAX ? INT64_MAX : (int64_t)bytes;
}

static lmf_status_t check_overlaps(const char *fn, const wrange *r, int n) {
  for (int i = 0; i < n; ++i)
    for (int j = i + 1; j < n; ++j)
      if (r[i].begin < r[j].end && r[j].begin < r[i].end)
        return lmf_fail(LMF_ERR_OVERLAP, "%s: %s and %s overlap", fn, r[i].name, r[j].name);
  return LMF_OK;
}

/* Sets *need to the bytes of the workspace the call uses. */
static lmf_status_t check_workspace(const char *fn, const lmf_context_t *ctx, const lmf_lg_job *job,
                                    const void *workspace, size_t workspace_bytes, size_t *need_out) {
  size_t need = 0;
  lmf_status_t st = workspace_bytes_for(fn, ctx, job, &need);
  if (st != LMF_OK) return st;
  if (workspace_bytes < need)
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "%s: workspace_bytes is %zu; this call needs %zu bytes (lmf_logits_workspace_size)",
                    fn, workspace_bytes, need);
  if (need > 0 && !workspace) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: workspace is NULL", fn);
  *need_out = need;
  return LMF_OK;
}

static lmf_status_t run_job(const lmf_context_t *ctx, const lmf_lg_job *job, void *workspace,
                            size_t workspace_bytes, lmf_stream_t stream) {
  if (ctx->backend == LMF_BACKEND_CUDA)
    return lmf_cuda_logits_run(ctx, job, workspace, workspace_bytes, stream);
  return lmf_cpu_logits_run(ctx, job, workspace, workspace_bytes);
}

lmf_status_t lmf_logits_combine(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t num_models,
                                const lmf_logits_params_t *params, const lmf_logits_outputs_t *outputs,
                                void *workspace, size_t workspace_bytes, lmf_stream_t stream) {
  const char *fn = FN_COMBINE;
  lmf_lg_job job;
  lmf_status_t st = build_job(fn, ctx, models, num_models, params, LMF_LG_MODE_COMBINE, &job);
  if (st != LMF_OK) return st;
  st = lmf_check_struct(outputs, sizeof(lmf_logits_outputs_t), sizeof(lmf_logits_outputs_t),
                        LMF_LOGITS_OUTPUTS_VERSION, FN_COMBINE ": outputs");
  if (st != LMF_OK) return st;
  const lmf_logits_outputs_t *o = outputs;
  if (!o->tokens) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: outputs->tokens is NULL", fn);
  const int64_t B = job.num_rows, V = job.vocab_out;
  if (o->logprobs) {
    if (o->logprobs_row_stride < V)
      return lmf_fail(LMF_ERR_INVALID_SIZE,
                      "%s: outputs->logprobs_row_stride is %lld, must be >= vocab_out (%lld)", fn,
                      (long long)o->logprobs_row_stride, (long long)V);
    if (!span_ok(B, o->logprobs_row_stride, V))
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: outputs->logprobs_row_stride %lld overflows", fn,
                      (long long)o->logprobs_row_stride);
  }
  size_t need = 0;
  st = check_workspace(fn, ctx, &job, workspace, workspace_bytes, &need);
  if (st != LMF_OK) return st;
  wrange r[12];
  int n = 0;
  add_range(r, &n, "outputs->tokens", o->tokens, B, 4);
  add_range(r, &n, "outputs->status", o->status, B, 4);
  add_range(r, &n, "outputs->token_logprob", o->token_logprob, B, 4);
  add_range(r, &n, "outputs->lse", o->lse, B, 4);
  add_range(r, &n, "outputs->logprobs", o->logprobs,
            o->logprobs ? (B - 1) * o->logprobs_row_stride + V : 0, 4);
  add_range(r, &n, "outputs->gedi_logp_desired", o->gedi_logp_desired, B, 4);
  add_range(r, &n, "params->gedi_L_pos", job.gedi_L_pos, B, 4);
  add_range(r, &n, "params->gedi_L_neg", job.gedi_L_neg, B, 4);
  add_range(r, &n, "params->gedi_n", job.gedi_n, B, 4);
  add_range(r, &n, "workspace", workspace, ws_elems(need), 1);
  st = check_overlaps(fn, r, n);
  if (st != LMF_OK) return st;
  job.tokens = o->tokens;
  job.status = o->status;
  job.token_logprob = o->token_logprob;
  job.lse = o->lse;
  job.logprobs = o->logprobs;
  job.logprobs_row_stride = o->logprobs ? o->logprobs_row_stride : 0;
  job.gedi_logp_desired = job.gedi_pos_model >= 0 ? o->gedi_logp_desired : NULL;
  return run_job(ctx, &job, workspace, workspace_bytes, stream);
}

lmf_status_t lmf_logits_verify_draft(lmf_context_t *ctx, const lmf_logits_model_t *models,
                                     size_t num_models, const lmf_logits_params_t *params,
                                     int32_t draft_model, const int32_t *draft_tokens, int32_t draft_len,
                                     int32_t *accepted, int32_t *next_token, int32_t *status,
                                     void *workspace, size_t workspace_bytes, lmf_stream_t stream) {
  const char *fn = FN_VERIFY;
  lmf_lg_job job;
  lmf_status_t st = build_job(fn, ctx, models, num_models, params, LMF_LG_MODE_VERIFY, &job);
  if (st != LMF_OK) return st;
  if (draft_model < 0 || (size_t)draft_model >= num_models)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: draft_model is %d; use 0 .. %zu", fn, draft_model,
                    num_models - 1);
  if (draft_len < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: draft_len is %d, must be >= 0", fn, draft_len);
  if (job.num_rows % ((int64_t)draft_len + 1) != 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "%s: params->num_rows (%d) must be num_seqs * (draft_len + 1) = a multiple of %lld",
                    fn, job.num_rows, (long long)draft_len + 1);
  if (draft_len > 0 && !draft_tokens)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: draft_tokens is NULL", fn);
  if (!accepted) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: accepted is NULL", fn);
  if (!next_token) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: next_token is NULL", fn);
  size_t need = 0;
  st = check_workspace(fn, ctx, &job, workspace, workspace_bytes, &need);
  if (st != LMF_OK) return st;
  const int64_t S = job.num_rows / ((int64_t)draft_len + 1);
  wrange r[4];
  int n = 0;
  add_range(r, &n, "accepted", accepted, S, 4);
  add_range(r, &n, "next_token", next_token, S, 4);
  add_range(r, &n, "status", status, S, 4);
  add_range(r, &n, "workspace", workspace, ws_elems(need), 1);
  st = check_overlaps(fn, r, n);
  if (st != LMF_OK) return st;
  job.draft_model = draft_model;
  job.models[draft_model].roles |= LMF_LG_ROLE_DRAFT;
  job.draft_len = draft_len;
  job.num_seqs = (int32_t)S;
  job.draft_tokens = draft_tokens;
  job.accepted = accepted;
  job.next_token = next_token;
  job.seq_status = status;
  return run_job(ctx, &job, workspace, workspace_bytes, stream);
}
