/* Shared helpers of the logits cases (see lg_common.h). */
#include "lg_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/common/logits_math.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

/* ---- Spec vectors ---------------------------------------------------------------------------------- */

const float lg_t1_zL[5] = {2.0f, 1.0f, 0.5f, -1.0f, 0.0f};
const float lg_t1_zSf[5] = {1.0f, 3.0f, 0.0f, -2.0f, 0.5f};
const float lg_t1_zSb[5] = {1.5f, 1.0f, 0.5f, -1.0f, 0.0f};
const float lg_t2_zSafe[5] = {0.0f, 0.5f, 2.5f, -1.0f, 1.0f};
const float lg_t3_zE[5] = {3.0f, 2.5f, 0.0f, -1.0f, 1.0f};
const float lg_t3_zA[5] = {3.0f, 1.0f, -2.0f, -1.0f, 2.0f};
const float lg_t4_zb[5] = {2.0f, 1.0f, 0.5f, -1.0f, 0.0f};
const float lg_t4_ze[5] = {1.0f, 0.0f, 2.0f, -1.0f, 0.0f};
const float lg_t4_za[5] = {1.0f, 2.0f, 0.0f, -1.0f, 0.0f};
const float lg_t5_zLM[5] = {2.0f, 1.5f, 1.0f, 0.0f, -1.0f};
const float lg_t5_zPos[5] = {0.0f, 1.0f, 2.0f, 0.0f, -1.0f};
const float lg_t5_zNeg[5] = {1.0f, 2.0f, 0.0f, 0.0f, -1.0f};

const int32_t lg_dtypes[3] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};

const char *lg_dtype_name(int32_t dtype) { return lmf_dtype_name(dtype); }

/* ---- Buffers --------------------------------------------------------------------------------------- */

void *lg_encode(int32_t dtype, const float *src, int64_t n) {
  size_t es = lmf_dtype_size(dtype);
  if (!LMF_CHECK_MSG(es != 0, "lg_encode: dtype %d", (int)dtype)) return NULL;
  void *p = lt_malloc((size_t)n * es);
  if (!p) return NULL;
  if (n > 0 && !lt_convert(p, dtype, src, LMF_DTYPE_F32, n)) {
    free(p);
    return NULL;
  }
  return p;
}

void lg_decode(double *dst, int32_t dtype, const void *src, int64_t n) {
  if (dtype == LMF_DTYPE_F32) {
    const float *f = (const float *)src;
    for (int64_t i = 0; i < n; ++i) dst[i] = (double)f[i];
    return;
  }
  const uint16_t *h = (const uint16_t *)src;
  for (int64_t i = 0; i < n; ++i) dst[i] = ref_decode16(h[i], dtype);
}

lmf_logits_model_t lg_model(const void *logits, int32_t dtype, int32_t vocab, int64_t row_stride, float coeff) {
  lmf_logits_model_t m;
  memset(&m, 0, sizeof m);
  m.logits = logits;
  m.row_index = NULL;
  m.coeff_rows = NULL;
  m.sparse_index = NULL;
  m.row_stride = row_stride;
  m.dtype = dtype;
  m.vocab = vocab;
  m.coeff = coeff;
  m.temperature = 1.0f;
  m.sparse_k = 0;
  m.sparse_fill = 0.0f;
  return m;
}

void lg_models_init(lg_models *s) { memset(s, 0, sizeof *s); }

int lg_models_add(lg_models *s, int32_t dtype, const float *z, int64_t rows, int32_t vocab, float coeff) {
  if (!LMF_CHECK(s->K < LMF_LOGITS_MAX_MODELS)) return -1;
  void *b = lg_encode(dtype, z, rows * vocab);
  if (!b) return -1;
  s->buf[s->K] = b;
  s->m[s->K] = lg_model(b, dtype, vocab, vocab, coeff);
  return (int)s->K++;
}

void lg_models_free(lg_models *s) {
  for (size_t k = 0; k < s->K; ++k) free(s->buf[k]);
  memset(s, 0, sizeof *s);
}

void lg_params(lmf_logits_params_t *p, int32_t num_rows) {
  LMF_CHECK_OK(lmf_logits_params_init(p, sizeof *p));
  p->num_rows = num_rows;
  p->vocab_out = 0;
  p->plausibility_model = -1;
  p->plausibility_alpha = 0.1f;
  p->nucleus_model = -1;
  p->nucleus_p = 1.0f;
  p->bias = NULL;
  p->bias_row_stride = 0;
  p->gedi_pos_model = -1;
  p->gedi_neg_model = -1;
  p->temperature = 0.0f;
  p->temperature_rows = NULL;
  p->top_k = 0;
  p->top_p = 1.0f;
  p->min_p = 0.0f;
  p->seeds = NULL;
  p->offsets = NULL;
}

int32_t lg_vocab_out(const lmf_logits_model_t *models, const lmf_logits_params_t *params) {
  return params->vocab_out ? params->vocab_out : models[0].vocab;
}

/* ---- Outputs --------------------------------------------------------------------------------------- */

int lg_out_alloc(lg_out *out, int32_t rows, int32_t vocab_out, int64_t stride, int gedi) {
  memset(out, 0, sizeof *out);
  out->rows = rows;
  out->vocab_out = vocab_out;
  out->stride = stride ? stride : vocab_out;
  out->tokens = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)rows);
  out->status = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)rows);
  out->token_logprob = (float *)lt_malloc(sizeof(float) * (size_t)rows);
  out->lse = (float *)lt_malloc(sizeof(float) * (size_t)rows);
  out->logprobs = (float *)lt_malloc(sizeof(float) * (size_t)rows * (size_t)out->stride);
  out->gedi_logp_desired = (float *)lt_malloc(sizeof(float) * (size_t)rows);
  if (!out->tokens || !out->status || !out->token_logprob || !out->lse || !out->logprobs ||
      !out->gedi_logp_desired)
    return 0;
  if (!LMF_CHECK_OK(lmf_logits_outputs_init(&out->o, sizeof out->o))) return 0;
  out->o.tokens = out->tokens;
  out->o.status = out->status;
  out->o.token_logprob = out->token_logprob;
  out->o.lse = out->lse;
  out->o.logprobs = out->logprobs;
  out->o.logprobs_row_stride = out->stride;
  out->o.gedi_logp_desired = gedi ? out->gedi_logp_desired : NULL;
  lg_out_poison(out);
  return 1;
}

void lg_out_free(lg_out *out) {
  free(out->tokens);
  free(out->status);
  free(out->token_logprob);
  free(out->lse);
  free(out->logprobs);
  free(out->gedi_logp_desired);
  memset(out, 0, sizeof *out);
}

static void poison_i32(int32_t *x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = LG_POISON_TOKEN;
}

void lg_out_poison(lg_out *out) {
  poison_i32(out->tokens, out->rows);
  poison_i32(out->status, out->rows);
  lt_poison_f32(out->token_logprob, out->rows);
  lt_poison_f32(out->lse, out->rows);
  lt_poison_f32(out->logprobs, (int64_t)out->rows * out->stride);
  lt_poison_f32(out->gedi_logp_desired, out->rows);
}

static int is_poison_f(float f) { return lt_f32_bits(f) == LG_POISON_BITS; }

int lg_out_untouched_at(const lg_out *out, const char *what, const char *file, int line) {
  int64_t changed = 0;
  for (int32_t b = 0; b < out->rows; ++b) {
    changed += out->tokens[b] != LG_POISON_TOKEN;
    changed += out->status[b] != LG_POISON_TOKEN;
    changed += !is_poison_f(out->token_logprob[b]);
    changed += !is_poison_f(out->lse[b]);
    changed += !is_poison_f(out->gedi_logp_desired[b]);
  }
  for (int64_t i = 0; i < (int64_t)out->rows * out->stride; ++i) changed += !is_poison_f(out->logprobs[i]);
  return lmf_t_check(changed == 0, file, line, "%s: a failed call wrote %lld output elements", what,
                     (long long)changed);
}

int lg_out_check_written_at(const lg_out *out, int gedi, const char *what, const char *file, int line) {
  const lmf_logits_outputs_t *o = &out->o;
  const int32_t V = out->vocab_out;
  int ok = 1;
  for (int32_t b = 0; b < out->rows && ok; ++b) {
    int32_t tok = o->tokens[b];
    ok &= lmf_t_check(tok >= -1 && tok < V, file, line, "%s: row %d: token %d is outside [-1, %d)", what,
                      (int)b, (int)tok, (int)V);
    if (o->status) {
      int32_t st = o->status[b];
      ok &= lmf_t_check(st >= LMF_ROW_OK && st <= LMF_ROW_BAD_INDEX, file, line,
                        "%s: row %d: status %d (0x%x) is not an lmf_row_status_t", what, (int)b, (int)st,
                        (unsigned)st);
      ok &= lmf_t_check((tok == -1) == (st != LMF_ROW_OK), file, line,
                        "%s: row %d: token %d with status %d (token -1 exactly when the status is not OK)",
                        what, (int)b, (int)tok, (int)st);
    }
    if (o->token_logprob)
      ok &= lmf_t_check(!is_poison_f(o->token_logprob[b]), file, line, "%s: row %d: token_logprob not written",
                        what, (int)b);
    if (o->lse) ok &= lmf_t_check(!is_poison_f(o->lse[b]), file, line, "%s: row %d: lse not written", what, (int)b);
    if (gedi && o->gedi_logp_desired)
      ok &= lmf_t_check(!is_poison_f(o->gedi_logp_desired[b]), file, line,
                        "%s: row %d: gedi_logp_desired not written", what, (int)b);
    if (o->logprobs) {
      const float *row = o->logprobs + (int64_t)b * o->logprobs_row_stride;
      int64_t unwritten = 0, padding = 0;
      for (int32_t v = 0; v < V; ++v) unwritten += is_poison_f(row[v]);
      for (int64_t v = V; v < o->logprobs_row_stride; ++v) padding += !is_poison_f(row[v]);
      ok &= lmf_t_check(unwritten == 0, file, line, "%s: row %d: %lld of %d logprobs not written", what, (int)b,
                        (long long)unwritten, (int)V);
      ok &= lmf_t_check(padding == 0, file, line, "%s: row %d: %lld padding columns past V_out were written",
                        what, (int)b, (long long)padding);
    }
    if (tok < 0 || !ok) continue;
    /* An OK row: a normalised distribution, no NaN anywhere, the token's log-prob finite. */
    if (o->logprobs) {
      const float *row = o->logprobs + (int64_t)b * o->logprobs_row_stride;
      double sum = 0.0;
      int64_t bad = 0;
      for (int32_t v = 0; v < V; ++v) {
        if (isnan(row[v]) || row[v] == INFINITY || row[v] > 1e-5f) ++bad;
        else if (row[v] != -INFINITY) sum += exp((double)row[v]);
      }
      ok &= lmf_t_check(bad == 0, file, line, "%s: row %d: %lld logprobs are NaN, +inf or > 0", what, (int)b,
                        (long long)bad);
      ok &= lmf_t_check(isfinite(row[tok]), file, line, "%s: row %d: the chosen token %d has logprob %g", what,
                        (int)b, (int)tok, (double)row[tok]);
      ok &= lmf_t_check(fabs(sum - 1.0) <= 1e-4, file, line, "%s: row %d: exp(logprobs) sums to %.9g", what,
                        (int)b, sum);
      if (o->token_logprob)
        ok &= lmf_t_check(fabs((double)o->token_logprob[b] - (double)row[tok]) <= 1e-6, file, line,
                          "%s: row %d: token_logprob %.9g but logprobs[%d] = %.9g", what, (int)b,
                          (double)o->token_logprob[b], (int)tok, (double)row[tok]);
    }
    if (o->token_logprob)
      ok &= lmf_t_check(isfinite(o->token_logprob[b]) && o->token_logprob[b] <= 1e-5f, file, line,
                        "%s: row %d: token_logprob %g", what, (int)b, (double)o->token_logprob[b]);
    if (o->lse)
      ok &= lmf_t_check(isfinite(o->lse[b]), file, line, "%s: row %d: lse %g", what, (int)b, (double)o->lse[b]);
    if (gedi && o->gedi_logp_desired)
      ok &= lmf_t_check(isfinite(o->gedi_logp_desired[b]) && o->gedi_logp_desired[b] <= 1e-6f, file, line,
                        "%s: row %d: gedi_logp_desired %g", what, (int)b, (double)o->gedi_logp_desired[b]);
  }
  return ok;
}

/* ---- Running a call on either backend ------------------------------------------------------------ */

enum { MIRROR_MAX = 128 };

typedef struct mirror {
  lmf_context_t *ctx;
  int cuda;
  int n;
  int ok;
  void *host[MIRROR_MAX];
  void *dev[MIRROR_MAX];
  size_t bytes[MIRROR_MAX];
  int back[MIRROR_MAX];
} mirror;

static void mirror_init(mirror *m, lmf_context_t *ctx) {
  memset(m, 0, sizeof *m);
  m->ctx = ctx;
  m->cuda = lt_is_cuda(ctx);
  m->ok = 1;
}

/* The backend copy of host[0, bytes): the host pointer itself on a CPU context. `back`: copy it back. */
static void *mirror_of(mirror *m, const void *host, size_t bytes, int back) {
  if (!host || !m->cuda) return (void *)host;
  if (!LMF_CHECK(m->n < MIRROR_MAX)) {
    m->ok = 0;
    return NULL;
  }
  void *d = lt_alloc(m->ctx, bytes ? bytes : 1);
  if (!d || (bytes && !lt_upload(m->ctx, d, host, bytes))) {
    lt_free(m->ctx, d);
    m->ok = 0;
    return NULL;
  }
  m->host[m->n] = (void *)host;
  m->dev[m->n] = d;
  m->bytes[m->n] = bytes;
  m->back[m->n] = back;
  m->n++;
  return d;
}

static void mirror_finish(mirror *m) {
  if (m->cuda) {
    LMF_CHECK_OK(lmf_stream_synchronize(m->ctx, NULL));
    for (int i = 0; i < m->n; ++i) {
      if (m->back[i] && m->bytes[i]) lt_download(m->ctx, m->host[i], m->dev[i], m->bytes[i]);
      lt_free(m->ctx, m->dev[i]);
    }
  }
  m->n = 0;
}

static int64_t input_rows(const lmf_logits_model_t *m, int32_t num_rows) {
  if (!m->row_index) return num_rows;
  int64_t mx = 0;
  for (int32_t b = 0; b < num_rows; ++b)
    if (m->row_index[b] + 1 > mx) mx = m->row_index[b] + 1;
  return mx;
}

/* Device copies of the models and of the params' arrays (pointers replaced in *dm / *dp). */
static void mirror_inputs(mirror *mr, const lmf_logits_model_t *models, size_t K, const lmf_logits_params_t *p,
                          lmf_logits_model_t *dm, lmf_logits_params_t *dp) {
  const int32_t B = p->num_rows > 0 ? p->num_rows : 0;
  const int32_t V = lg_vocab_out(models, p);
  for (size_t k = 0; k < K; ++k) {
    dm[k] = models[k];
    if (!mr->cuda) continue;
    int64_t rows = input_rows(&models[k], B);
    size_t n = (size_t)rows * (size_t)(models[k].row_stride > 0 ? models[k].row_stride : 0);
    dm[k].logits = mirror_of(mr, models[k].logits, n * lmf_dtype_size(models[k].dtype), 0);
    dm[k].sparse_index = (const int32_t *)mirror_of(mr, models[k].sparse_index, n * sizeof(int32_t), 0);
    dm[k].row_index = (const int32_t *)mirror_of(mr, models[k].row_index, (size_t)B * sizeof(int32_t), 0);
    dm[k].coeff_rows = (const float *)mirror_of(mr, models[k].coeff_rows, (size_t)B * sizeof(float), 0);
  }
  *dp = *p;
  if (!mr->cuda) return;
  size_t nb = p->bias_row_stride ? (size_t)B * (size_t)p->bias_row_stride : (size_t)V;
  dp->bias = (const float *)mirror_of(mr, p->bias, nb * sizeof(float), 0);
  dp->gedi_L_pos = (float *)mirror_of(mr, p->gedi_L_pos, (size_t)B * sizeof(float), 1);
  dp->gedi_L_neg = (float *)mirror_of(mr, p->gedi_L_neg, (size_t)B * sizeof(float), 1);
  dp->gedi_n = (int32_t *)mirror_of(mr, p->gedi_n, (size_t)B * sizeof(int32_t), 1);
  dp->temperature_rows = (const float *)mirror_of(mr, p->temperature_rows, (size_t)B * sizeof(float), 0);
  dp->seeds = (const uint64_t *)mirror_of(mr, p->seeds, (size_t)B * sizeof(uint64_t), 0);
  dp->offsets = (const uint64_t *)mirror_of(mr, p->offsets, (size_t)B * sizeof(uint64_t), 0);
}

/* A fresh workspace full of garbage: 0xa5 and 0x5a bytes on alternate calls, so a field read before it
 * is written holds a negative integer on one call and a positive one on the next (a flag that is
 * tested as nonzero, or combined by a maximum, then goes both ways). */
static void *workspace_for(lmf_context_t *ctx, size_t bytes) {
  static int calls;
  void *ws = lt_alloc(ctx, bytes ? bytes : 1);
  if (ws) lt_memset(ctx, ws, (calls++ & 1) ? 0x5a : 0xa5, bytes ? bytes : 1);
  return ws;
}

typedef struct combine_call {
  lmf_context_t *ctx;
  const lmf_logits_model_t *models;
  size_t K;
  const lmf_logits_params_t *params;
  const lmf_logits_outputs_t *out;
  void *ws;
  size_t ws_bytes;
} combine_call;

/* On a stream (a graph's capture), the tokens and statuses are poisoned again first, in the graph: so
 * each replay must write them itself, not leave the first replay's (a step that relied on workspace
 * state a previous replay left behind would show there). */
static lmf_status_t combine_on(void *arg, lmf_stream_t stream) {
  const combine_call *c = (const combine_call *)arg;
  const size_t B = (size_t)c->params->num_rows;
  if (stream && c->out->tokens && !lt_memset_async(c->ctx, c->out->tokens, LG_POISON_BYTE, B * 4, stream))
    return LMF_ERR_INTERNAL;
  if (stream && c->out->status && !lt_memset_async(c->ctx, c->out->status, LG_POISON_BYTE, B * 4, stream))
    return LMF_ERR_INTERNAL;
  return lmf_logits_combine(c->ctx, c->models, c->K, c->params, c->out, c->ws, c->ws_bytes, stream);
}

/* lg_combine_at, and with replays > 0 lg_combine_graph_at. */
static lmf_status_t combine_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t K,
                               const lmf_logits_params_t *params, lg_out *out, int replays, const char *file,
                               int line) {
  lmf_logits_model_t dm[LMF_LOGITS_MAX_MODELS];
  lmf_logits_params_t dp;
  lmf_logits_outputs_t dout = out->o;
  if (!lmf_t_check(K <= LMF_LOGITS_MAX_MODELS && params && params->num_rows == out->rows, file, line,
                   "lg_combine: K %zu, num_rows %d vs the outputs' %d rows", K,
                   params ? (int)params->num_rows : -1, (int)out->rows))
    return LMF_ERR_INTERNAL;
  lg_out_poison(out);
  mirror mr;
  mirror_init(&mr, ctx);
  mirror_inputs(&mr, models, K, params, dm, &dp);
  const size_t B = (size_t)out->rows;
  dout.tokens = (int32_t *)mirror_of(&mr, out->o.tokens, B * 4, 1);
  dout.status = (int32_t *)mirror_of(&mr, out->o.status, B * 4, 1);
  dout.token_logprob = (float *)mirror_of(&mr, out->o.token_logprob, B * 4, 1);
  dout.lse = (float *)mirror_of(&mr, out->o.lse, B * 4, 1);
  dout.logprobs = (float *)mirror_of(&mr, out->o.logprobs, B * (size_t)out->stride * 4, 1);
  dout.gedi_logp_desired = (float *)mirror_of(&mr, out->o.gedi_logp_desired, B * 4, 1);
  lmf_status_t st = LMF_ERR_INTERNAL;
  if (mr.ok) {
    size_t ws_bytes = 0;
    st = lmf_logits_workspace_size(ctx, dm, K, &dp, &ws_bytes);
    lmf_t_check_status(st, LMF_OK, "lmf_logits_workspace_size", file, line);
    if (st == LMF_OK) {
      void *ws = workspace_for(ctx, ws_bytes);
      const combine_call c = {ctx, dm, K, &dp, &dout, ws, ws_bytes};
      st = replays > 0 ? lt_graph_run(ctx, combine_on, (void *)&c, replays) : combine_on((void *)&c, NULL);
      mirror_finish(&mr);
      lt_free(ctx, ws);
    }
  }
  mirror_finish(&mr);
  if (st == LMF_OK)
    lg_out_check_written_at(out, dp.gedi_pos_model >= 0, "lmf_logits_combine", file, line);
  else
    lg_out_untouched_at(out, "lmf_logits_combine failed", file, line);
  return st;
}

lmf_status_t lg_combine_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t K,
                           const lmf_logits_params_t *params, lg_out *out, const char *file, int line) {
  return combine_at(ctx, models, K, params, out, 0, file, line);
}

lmf_status_t lg_combine_graph_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t K,
                                 const lmf_logits_params_t *params, lg_out *out, int replays, const char *file,
                                 int line) {
  return combine_at(ctx, models, K, params, out, replays < 1 ? 1 : replays, file, line);
}

lmf_status_t lg_verify_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t K,
                          const lmf_logits_params_t *params, int32_t draft_model, const int32_t *draft_tokens,
                          int32_t draft_len, int32_t *accepted, int32_t *next_token, int32_t *status,
                          const char *file, int line) {
  lmf_logits_model_t dm[LMF_LOGITS_MAX_MODELS];
  lmf_logits_params_t dp;
  if (!lmf_t_check(K <= LMF_LOGITS_MAX_MODELS && draft_len >= 0 && params->num_rows % (draft_len + 1) == 0, file,
                   line, "lg_verify: K %zu, draft_len %d, num_rows %d", K, (int)draft_len, (int)params->num_rows))
    return LMF_ERR_INTERNAL;
  const int32_t S = params->num_rows / (draft_len + 1);
  const int32_t V = lg_vocab_out(models, params);
  poison_i32(accepted, S);
  poison_i32(next_token, S);
  if (status) poison_i32(status, S);
  mirror mr;
  mirror_init(&mr, ctx);
  mirror_inputs(&mr, models, K, params, dm, &dp);
  const int32_t *ddraft = (const int32_t *)mirror_of(&mr, draft_tokens, (size_t)S * (size_t)draft_len * 4, 0);
  int32_t *dacc = (int32_t *)mirror_of(&mr, accepted, (size_t)S * 4, 1);
  int32_t *dnext = (int32_t *)mirror_of(&mr, next_token, (size_t)S * 4, 1);
  int32_t *dst = (int32_t *)mirror_of(&mr, status, (size_t)S * 4, 1);
  lmf_status_t st = LMF_ERR_INTERNAL;
  if (mr.ok) {
    size_t ws_bytes = 0;
    st = lmf_logits_workspace_size(ctx, dm, K, &dp, &ws_bytes);
    lmf_t_check_status(st, LMF_OK, "lmf_logits_workspace_size", file, line);
    if (st == LMF_OK) {
      void *ws = workspace_for(ctx, ws_bytes);
      st = lmf_logits_verify_draft(ctx, dm, K, &dp, draft_model, ddraft, draft_len, dacc, dnext, dst, ws,
                                   ws_bytes, NULL);
      mirror_finish(&mr);
      lt_free(ctx, ws);
    }
  }
  mirror_finish(&mr);
  if (st != LMF_OK) return st;
  for (int32_t b = 0; b < S; ++b) {
    int ok = lmf_t_check(accepted[b] >= 0 && accepted[b] <= draft_len, file, line,
                         "verify: sequence %d: accepted %d (0x%x) outside [0, %d]", (int)b, (int)accepted[b],
                         (unsigned)accepted[b], (int)draft_len);
    if (status) {
      ok &= lmf_t_check(status[b] >= LMF_ROW_OK && status[b] <= LMF_ROW_BAD_INDEX, file, line,
                        "verify: sequence %d: status %d", (int)b, (int)status[b]);
      if (status[b] == LMF_ROW_OK)
        ok &= lmf_t_check(next_token[b] >= 0 && next_token[b] < V, file, line,
                          "verify: sequence %d: status OK, next_token %d", (int)b, (int)next_token[b]);
      else
        ok &= lmf_t_check(next_token[b] == -1, file, line, "verify: sequence %d: status %d, next_token %d",
                          (int)b, (int)status[b], (int)next_token[b]);
    } else {
      ok &= lmf_t_check(next_token[b] >= -1 && next_token[b] < V, file, line, "verify: sequence %d: next_token %d",
                        (int)b, (int)next_token[b]);
    }
    if (!ok) break;
  }
  return st;
}

/* ---- Checks ---------------------------------------------------------------------------------------- */

int lg_check_logprobs_rel_at(const float *got, const double *want, int n, double tol, double rel, const char *what,
                             const char *file, int line) {
  int ok = 1;
  for (int v = 0; v < n; ++v) {
    double t = tol + rel * fabs(want[v]);
    if (want[v] == -INFINITY)
      ok &= lmf_t_check(got[v] == -INFINITY, file, line, "%s: [%d] is %.9g, expected -inf (masked)", what, v,
                        (double)got[v]);
    else
      ok &= lmf_t_check(fabs((double)got[v] - want[v]) <= t, file, line,
                        "%s: [%d] is %.9g, expected %.9g (diff %.3g > %.3g)", what, v, (double)got[v], want[v],
                        fabs((double)got[v] - want[v]), t);
  }
  return ok;
}

int lg_check_logprobs_at(const float *got, const double *want, int n, double tol, const char *what,
                         const char *file, int line) {
  return lg_check_logprobs_rel_at(got, want, n, tol, 0.0, what, file, line);
}

int lg_out_equal_at(const lg_out *a, const lg_out *b, const char *what, const char *file, int line) {
  if (!lmf_t_check(a->rows == b->rows && a->vocab_out == b->vocab_out, file, line, "%s: shapes differ", what))
    return 0;
  int ok = 1;
  const size_t R = (size_t)a->rows;
  ok &= lmf_t_check_bytes_eq(a->tokens, b->tokens, R * 4, what, file, line);
  ok &= lmf_t_check_bytes_eq(a->status, b->status, R * 4, what, file, line);
  ok &= lmf_t_check_bytes_eq(a->token_logprob, b->token_logprob, R * 4, what, file, line);
  ok &= lmf_t_check_bytes_eq(a->lse, b->lse, R * 4, what, file, line);
  for (int32_t r = 0; r < a->rows && ok; ++r)
    ok &= lmf_t_check_bytes_eq(a->logprobs + (int64_t)r * a->stride, b->logprobs + (int64_t)r * b->stride,
                               (size_t)a->vocab_out * 4, what, file, line);
  if (a->o.gedi_logp_desired && b->o.gedi_logp_desired)
    ok &= lmf_t_check_bytes_eq(a->gedi_logp_desired, b->gedi_logp_desired, R * 4, what, file, line);
  return ok;
}

static int near_f(float x, float y, double tol) {
  if (x == -INFINITY || y == -INFINITY) return x == y;
  return fabs((double)x - (double)y) <= tol;
}

int lg_row_near_at(const lg_out *a, int32_t ra, const lg_out *b, int32_t rb, double tol, const char *what,
                   const char *file, int line) {
  int ok = lmf_t_check(a->tokens[ra] == b->tokens[rb], file, line, "%s: token %d vs %d", what, (int)a->tokens[ra],
                       (int)b->tokens[rb]);
  ok &= lmf_t_check(a->status[ra] == b->status[rb], file, line, "%s: status %d vs %d", what, (int)a->status[ra],
                    (int)b->status[rb]);
  if (a->status[ra] != LMF_ROW_OK || b->status[rb] != LMF_ROW_OK) return ok;
  ok &= lmf_t_check(near_f(a->token_logprob[ra], b->token_logprob[rb], tol), file, line,
                    "%s: token_logprob %.9g vs %.9g", what, (double)a->token_logprob[ra],
                    (double)b->token_logprob[rb]);
  ok &= lmf_t_check(near_f(a->lse[ra], b->lse[rb], tol), file, line, "%s: lse %.9g vs %.9g", what,
                    (double)a->lse[ra], (double)b->lse[rb]);
  const int32_t V = a->vocab_out < b->vocab_out ? a->vocab_out : b->vocab_out;
  const float *x = a->logprobs + (int64_t)ra * a->stride, *y = b->logprobs + (int64_t)rb * b->stride;
  int64_t bad = 0, first = -1;
  for (int32_t v = 0; v < V; ++v)
    if (!near_f(x[v], y[v], tol)) {
      if (first < 0) first = v;
      ++bad;
    }
  ok &= lmf_t_check(bad == 0, file, line, "%s: %lld logprobs differ by more than %g; first [%lld] %.9g vs %.9g",
                    what, (long long)bad, tol, (long long)first, first >= 0 ? (double)x[first] : 0.0,
                    first >= 0 ? (double)y[first] : 0.0);
  return ok;
}

/* ---- The reference of one row ------------------------------------------------------------------------ */

int32_t lg_ref_row(const lmf_logits_model_t *models, size_t K, const lmf_logits_params_t *p, int32_t row,
                   ref_lg_result *r) {
  const int32_t V = lg_vocab_out(models, p);
  ref_lg_model m[LMF_LOGITS_MAX_MODELS];
  double *vals[LMF_LOGITS_MAX_MODELS];
  double *bias = NULL;
  for (size_t k = 0; k < K; ++k) {
    const lmf_logits_model_t *mk = &models[k];
    int64_t in = mk->row_index ? mk->row_index[row] : row;
    size_t es = lmf_dtype_size(mk->dtype);
    int32_t n = mk->sparse_index ? mk->sparse_k : mk->vocab;
    vals[k] = (double *)malloc(sizeof(double) * (size_t)(n > 0 ? n : 1));
    lg_decode(vals[k], mk->dtype, (const char *)mk->logits + (size_t)(in * mk->row_stride) * es, n);
    memset(&m[k], 0, sizeof m[k]);
    m[k].z = vals[k];
    m[k].ids = mk->sparse_index ? mk->sparse_index + in * mk->row_stride : NULL;
    m[k].vocab = mk->vocab;
    m[k].sparse_k = mk->sparse_k;
    m[k].fill = mk->sparse_fill;
    m[k].coeff = mk->coeff_rows ? mk->coeff_rows[row] : mk->coeff;
    m[k].tau = mk->temperature;
  }
  ref_lg_config c;
  ref_lg_config_default(&c, V);
  c.plausibility_model = p->plausibility_model;
  c.plausibility_alpha = p->plausibility_alpha;
  c.nucleus_model = p->nucleus_model;
  c.nucleus_p = p->nucleus_p;
  if (p->bias) {
    bias = (double *)malloc(sizeof(double) * (size_t)V);
    const float *br = p->bias + (int64_t)row * p->bias_row_stride;
    for (int32_t v = 0; v < V; ++v) bias[v] = br[v];
    c.bias = bias;
  }
  c.gedi_pos = p->gedi_pos_model;
  c.gedi_neg = p->gedi_neg_model;
  c.omega = p->gedi_omega;
  c.logit_scale = p->gedi_logit_scale;
  c.bias_pos = p->gedi_bias_pos;
  c.bias_neg = p->gedi_bias_neg;
  c.class_bias = p->gedi_class_bias;
  c.filter_p = p->gedi_filter_p;
  c.target_p = p->gedi_target_p;
  if (p->gedi_pos_model >= 0) {
    c.L_pos = p->gedi_L_pos[row];
    c.L_neg = p->gedi_L_neg[row];
    c.n = p->gedi_n[row];
  }
  c.temperature = p->temperature_rows ? p->temperature_rows[row] : p->temperature;
  c.top_k = p->top_k;
  c.top_p = p->top_p;
  c.min_p = p->min_p;
  int32_t st = ref_lg_row(m, (int)K, &c, r);
  for (size_t k = 0; k < K; ++k) free(vals[k]);
  free(bias);
  return st;
}

/* The first top_p in [0.85, 0.95) (float steps) at which top_p x total needs a different number of tied
 * tokens (of mass w, after `before` mass in nbase tokens) than top_p x each of the n other totals (every
 * target capped at the masses' sum), each at least 1e-6 of w from a boundary and within the ntied
 * tokens. The count the first keeps (nbase + its tied tokens; *other: others[0]'s); 0 if none. */
static int32_t topp_separating(double total, const double *others, int n, double masses, double before,
                               int32_t nbase, double w, int32_t ntied, float *top_p, int32_t *other) {
  for (float p = 0.85f; p < 0.95f; p = nextafterf(p, 1.0f)) {
    double j[8];
    int ok = 1;
    for (int i = 0; i <= n && i < 8 && ok; ++i) {
      double t = (double)p * (i == 0 ? total : others[i - 1]);
      if (t > masses) t = masses;
      const double x = (t - before) / w; /* tied tokens the target needs */
      j[i] = ceil(x);
      ok = j[i] - x >= 1e-6 && x - (j[i] - 1.0) >= 1e-6 && j[i] >= 1.0 && j[i] <= (double)ntied &&
           (i == 0 || j[i] != j[0]);
    }
    if (!ok) continue;
    *top_p = p;
    if (other) *other = nbase + (int32_t)j[1];
    return nbase + (int32_t)j[0];
  }
  return 0;
}

int32_t lg_topp_total_row(float *z, int32_t V, float *top_p, int32_t *other) {
  enum { BLK = 2048 };
  if (V < 3 * BLK) return 0;
  /* The tied value: the -a in (-8, -4] whose fp32 mass lies farthest (relatively) from e^-a, so that
   * the two totals differ by as much as they can. */
  float a = 4.0f;
  double worst = -1.0;
  for (int k = 0; k < 1024; ++k) {
    const float c = 4.0f + (float)k / 256.0f;
    const double e = exp(-(double)c), r = fabs((double)lmf_lg_exp_neg(-c) - e) / e;
    if (r > worst) {
      worst = r;
      a = c;
    }
  }
  for (int32_t v = 0; v < V; ++v) z[v] = v == 0 ? 0.0f : v >= BLK && v < BLK + LG_TIED ? -a : -INFINITY;
  const double w = (double)lmf_lg_exp_neg(-a); /* each tied token's mass */
  /* The combine's total: block 0 holds token 0 alone; blocks 1 and 2 the tied tokens, each e^0 = 1
   * against its block's max -a, rescaled by e^-a. The masses' sum is exact (multiples of w). */
  double total = 1.0;
  total += (double)BLK * exp(-(double)a);
  total += (double)(LG_TIED - BLK) * exp(-(double)a);
  const double masses = 1.0 + (double)LG_TIED * w;
  return topp_separating(total, &masses, 1, masses, 1.0, 1, w, LG_TIED, top_p, other);
}

/* A group's exp-sum as lmf_lg_group_add forms it: the masses added in fp32 in token order from 0
 * (backward: in the reverse order, as a wrong implementation might). */
static float group_sum(const float *w, int backward) {
  float s = 0.0f;
  for (int q = 0; q < LMF_LG_GROUP; ++q) s = lmf_lg_group_add(s, w[backward ? LMF_LG_GROUP - 1 - q : q]);
  return s;
}

int32_t lg_topp_group_row(float *z, int32_t V, float *top_p, int32_t *other) {
  enum { BLK = 2048, NG = BLK / LMF_LG_GROUP };
  if (V < 2 * BLK) return 0;
  /* Block 1: its max -c at id 2048; each later group's first token half a nat lower (a "leader"),
   * the group's other seven tied h lower, with h in [1, 3) where the groups' fp32 sums, in token
   * order, lie farthest from both the sums in double and the sums in the reverse order. The block's
   * NG - 1 such groups repeat the same roundings, so the totals differ by about NG - 1 times them. */
  const float c = 4.0f, za = LMF_FSUB(-c, 0.5f);
  const float a = lmf_lg_exp_neg(LMF_FSUB(za, -c)); /* a leader's mass against the block's max */
  float zt = LMF_FSUB(-c, 1.0f);
  double worst = -1.0;
  for (int k = 0; k < 512; ++k) {
    const float t = LMF_FSUB(-c, 1.0f + (float)k / 256.0f);
    const float u = lmf_lg_exp_neg(LMF_FSUB(t, -c));
    const float g[LMF_LG_GROUP] = {a, u, u, u, u, u, u, u};
    const double f = (double)group_sum(g, 0);
    const double dd = fabs(f - ((double)a + 7.0 * (double)u)), dr = fabs(f - (double)group_sum(g, 1));
    const double r = (dd < dr ? dd : dr) / (double)u;
    if (r > worst) {
      worst = r;
      zt = t;
    }
  }
  for (int32_t v = 0; v < V; ++v)
    z[v] = v == 0 ? 0.0f : v == BLK ? -c : v > BLK && v < 2 * BLK ? (v % LMF_LG_GROUP == 0 ? za : zt) : -INFINITY;
  /* The combine's total: block 0's group 0 is token 0 alone (1); block 1's group 0 holds the head's 1
   * and seven u, its others a leader's a and seven u, rescaled from the block's max -c. */
  const float u = lmf_lg_exp_neg(LMF_FSUB(zt, -c));
  const float g0[LMF_LG_GROUP] = {1.0f, u, u, u, u, u, u, u}, g[LMF_LG_GROUP] = {a, u, u, u, u, u, u, u};
  const double scale = exp(-(double)c);
  const double fwd = (double)group_sum(g0, 0) + (double)(NG - 1) * (double)group_sum(g, 0);
  const double bwd = (double)group_sum(g0, 1) + (double)(NG - 1) * (double)group_sum(g, 1);
  const double each = 1.0 + (double)(NG - 1) * (double)a + (double)(BLK - NG) * (double)u;
  const double others[2] = {1.0 + each * scale, 1.0 + bwd * scale};
  /* The walk's masses, against the row's max 0: token 0, the head, the leaders, then the tied tokens. */
  const double wh = (double)lmf_lg_exp_neg(-c), wa = (double)lmf_lg_exp_neg(za), w = (double)lmf_lg_exp_neg(zt);
  const double before = 1.0 + wh + (double)(NG - 1) * wa;
  const double masses = before + (double)(BLK - NG) * w;
  return topp_separating(1.0 + fwd * scale, others, 2, masses, before, 1 + NG, w, BLK - NG, top_p, other);
}
