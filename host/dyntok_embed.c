/* lmf_dyntok_embed / lmf_dyntok_pipeline: from a merged batch to inputs_embeds, attention mask, merged
 * ids and spans, padded (include/lmfuse/dyntok.h; docs/dyntok.md).
 *
 * Order of work, so that a failed call writes nothing and leaves the cache as it was:
 *   1. check the arguments alone (check_args: the context, the method, the source matrices, dtypes,
 *      the outputs, the cache's shape), then against the result and the vocabulary (check_result:
 *      ids, source rows, L, overlaps);
 *   2. list the new tokens to predict (those the output holds, or all with out_new_out/out_new_bias);
 *      with a cache, find which are there (lmf_embed_cache_contains: no side effect);
 *   3. predict the others into private memory: surface forms + lmf_hypernet_predict, or FVT;
 *   4. commit: the cache's new batch, the hits read (and pinned) before any insert (an insert may
 *      evict unpinned rows), the predictions inserted; then the outputs are written (base rows
 *      converted from E_in, new rows from the predictions, padding).
 * Steps 1-3 can fail; step 4 cannot (a cache insert that runs out of memory only stores nothing).
 *
 * On a CUDA context (embed_cuda) the same steps run with the predictions in device scratch (cudaMalloc'd
 * per call, freed before returning): surface forms / decompositions are planned on the host, the
 * hypernetwork (its own CUDA backend) or FVT (kernels/dyntok_embed.cu) predicts the misses on the
 * device, the cache's rows go through the host (misses copied down and inserted, hits copied up), and
 * one gather kernel writes inputs_embeds from E_in and the predictions; the int32 outputs are built on
 * the host and copied where they live. Everything is enqueued on the legacy default stream and the
 * call synchronises it before returning. Only a failing CUDA call in step 4 can leave outputs partly
 * written (LMF_ERR_CUDA). */
#include <limits.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/common/half_convert.h"
#include "dyntok_backend.h"
#include "hypernet_internal.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/hypernet.h"

#define FN "lmf_dyntok_embed"
#define FN_PIPE "lmf_dyntok_pipeline"

lmf_status_t lmf_dyntok_embed_args_init(lmf_dyntok_embed_args_t *args, size_t struct_size) {
  const lmf_dyntok_embed_args_t d = LMF_DYNTOK_EMBED_ARGS_INIT;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_dyntok_embed_args_init");
}

static int64_t longest(const struct lmf_dyntok_result *r) {
  int64_t m = 0;
  for (int64_t s = 0; s < r->num_seqs; ++s)
    if (r->offsets[s + 1] - r->offsets[s] > m) m = r->offsets[s + 1] - r->offsets[s];
  return m;
}

lmf_status_t lmf_dyntok_embed_shape(const lmf_dyntok_result_t *result, int64_t *num_seqs, int64_t *max_len,
                                    int32_t *num_new) {
  if (!result) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_dyntok_embed_shape: result is NULL");
  if (num_seqs) *num_seqs = result->num_seqs;
  if (max_len) *max_len = longest(result);
  if (num_new) *num_new = result->num_new;
  return LMF_OK;
}

/* ---- Checks ------------------------------------------------------------------------------------- */

typedef struct plan {
  lmf_dyntok_embed_args_t a;   /* the caller's args, source_row_stride resolved */
  lmf_hypernet_config_t hc;    /* HYPERNET: the hypernetwork's config */
  int has_out;                 /* e_out is predicted (hypernet with separate out embeddings, FVT + E_out) */
  int32_t surface_len;         /* HYPERNET: resolved */
  size_t src_bytes;            /* bytes spanned by one source matrix */
  size_t out_esize;
  int64_t B, L, Lmax;
  int cuda;                    /* a CUDA context */
  int dev_small[4];            /* CUDA: out_mask, out_ids, out_span_start, out_span_len are device memory */
} plan;

typedef struct region {
  const void *p;
  size_t bytes;
  const char *name;
  int writable;
} region;

/* Bytes spanned by `rows` rows of `width` elements at `stride`; 0 on overflow. */
static size_t rows_bytes(int64_t rows, int64_t stride, int64_t width, size_t esize) {
  if (rows <= 0) return 0;
  if ((uint64_t)(rows - 1) > (uint64_t)(INT64_MAX / 16) / (uint64_t)stride) return 0;
  const uint64_t el = (uint64_t)(rows - 1) * (uint64_t)stride + (uint64_t)width;
  if (el > (uint64_t)SIZE_MAX / esize / 2) return 0;
  return (size_t)(el * esize);
}

/* Everything that does not need the result. fn prefixes the messages. */
static lmf_status_t check_args(const lmf_context_t *ctx, const lmf_dyntok_embed_args_t *args, plan *p,
                               const char *fn) {
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: ctx is NULL", fn);
  char what[64];
  snprintf(what, sizeof what, "%s: args", fn);
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_dyntok_embed_args_t), sizeof(lmf_dyntok_embed_args_t),
                                     LMF_DYNTOK_EMBED_ARGS_VERSION, what);
  if (st != LMF_OK) return st;
  memset(p, 0, sizeof *p);
  p->a = *args;
  lmf_dyntok_embed_args_t *a = &p->a;
  const int hyper = a->method == LMF_DYNTOK_EMBED_HYPERNET;
  if (!hyper && a->method != LMF_DYNTOK_EMBED_FVT)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->method is %d; use LMF_DYNTOK_EMBED_HYPERNET (0) or "
                    "LMF_DYNTOK_EMBED_FVT (1)", fn, a->method);
  if (a->n_embd < 1) return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->n_embd is %d; must be >= 1", fn, a->n_embd);
  if (!a->source_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->source_in is NULL", fn);
  if (!lmf_is_float_dtype(a->source_dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE, "%s: args->source_dtype is %d; use f32, f16 or bf16", fn,
                    a->source_dtype);
  if (!lmf_is_float_dtype(a->out_dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE, "%s: args->out_dtype is %d; use f32, f16 or bf16", fn,
                    a->out_dtype);
  if (a->source_rows < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows is %lld; must be >= 1", fn,
                    (long long)a->source_rows);
  if (a->source_row_stride == 0) a->source_row_stride = a->n_embd;
  if (a->source_row_stride < a->n_embd)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->source_row_stride is %lld; must be >= n_embd = %d (or 0)",
                    fn, (long long)a->source_row_stride, a->n_embd);
  p->src_bytes = rows_bytes(a->source_rows, a->source_row_stride, a->n_embd, lmf_dtype_size(a->source_dtype));
  if (p->src_bytes == 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows x source_row_stride overflows", fn);
  if (a->pad_side != LMF_DYNTOK_PAD_RIGHT && a->pad_side != LMF_DYNTOK_PAD_LEFT)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->pad_side is %d; use LMF_DYNTOK_PAD_RIGHT (0) or "
                    "LMF_DYNTOK_PAD_LEFT (1)", fn, a->pad_side);
  if (a->pad_id < -1 || a->pad_id >= a->source_rows)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->pad_id is %d; must be -1 (zero rows) or in [0, "
                    "source_rows = %lld)", fn, a->pad_id, (long long)a->source_rows);
  if (a->seq_len < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->seq_len is %lld; must be >= 0", fn, (long long)a->seq_len);
  if (!a->out_embeds) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->out_embeds is NULL", fn);
  if (!a->hn_input_cache != !a->hn_input_cache_valid)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->%s is NULL but args->%s is set (give both or neither)", fn,
                    a->hn_input_cache ? "hn_input_cache_valid" : "hn_input_cache",
                    a->hn_input_cache ? "hn_input_cache" : "hn_input_cache_valid");
  if (hyper) {
    if (!a->hypernet)
      return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->hypernet is NULL (method LMF_DYNTOK_EMBED_HYPERNET)", fn);
    if (a->hypernet->ctx->backend != ctx->backend ||
        (ctx->backend == LMF_BACKEND_CUDA && a->hypernet->ctx->device != ctx->device))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->hypernet lives on a %s context%s; this call's context "
                      "is %s: use a hypernetwork created on the same backend and device", fn,
                      a->hypernet->ctx->backend == LMF_BACKEND_CUDA ? "CUDA" : "CPU",
                      a->hypernet->ctx->backend == LMF_BACKEND_CUDA ? " (or another device)" : "",
                      ctx->backend == LMF_BACKEND_CUDA ? "CUDA" : "CPU");
    lmf_hypernet_config_t hc;
    lmf_hypernet_config_init(&hc, sizeof hc);
    if ((st = lmf_hypernet_get_config(a->hypernet, &hc)) != LMF_OK) return st;
    p->hc = hc;
    if (hc.n_embd != a->n_embd)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->n_embd is %d but the hypernetwork's n_embd is %d", fn,
                      a->n_embd, hc.n_embd);
    if (hc.separate_out_embeddings && !a->source_out)
      return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->source_out is NULL; the hypernetwork has separate output "
                      "embeddings and reads E_out", fn);
    if (!hc.separate_out_embeddings && a->source_out)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->source_out is set but the hypernetwork has tied "
                      "embeddings (leave it NULL)", fn);
    if (a->source_rows < hc.original_vocab_size)
      return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows is %lld; the hypernetwork reads %d rows "
                      "(original_vocab_size)", fn, (long long)a->source_rows, hc.original_vocab_size);
    const int32_t maxL = hc.max_position_embeddings - hc.embed_lang_id;
    p->surface_len = a->surface_len ? a->surface_len : hc.surface_maxlen;
    if (p->surface_len < 1 || p->surface_len > maxL)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->surface_len is %d (resolved %d); must be 0 (the "
                      "config's) or in [1, %d]", fn, a->surface_len, p->surface_len, maxL);
    if (hc.embed_lang_id && (a->lang_index < 0 || a->lang_index >= hc.n_langs))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->lang_index is %d; must be in [0, n_langs = %d)", fn,
                      a->lang_index, hc.n_langs);
    p->has_out = hc.separate_out_embeddings;
  } else {
    if (a->hypernet)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->hypernet is set but method is LMF_DYNTOK_EMBED_FVT",
                      fn);
    if (a->hn_input_cache)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->hn_input_cache is set but method is "
                      "LMF_DYNTOK_EMBED_FVT", fn);
    if (a->fvt_unk_id < 0 || a->fvt_unk_id >= a->source_rows)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->fvt_unk_id is %d; must be in [0, source_rows = %lld)",
                      fn, a->fvt_unk_id, (long long)a->source_rows);
    p->has_out = a->source_out != NULL;
  }
  if (a->out_new_out && !p->has_out)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->out_new_out is set but no e_out is predicted (%s)", fn,
                    hyper ? "the hypernetwork has tied embeddings" : "FVT without source_out");
  if (a->cache) {
    lmf_embed_cache_config_t cc;
    lmf_embed_cache_config_init(&cc, sizeof cc);
    if ((st = lmf_embed_cache_get_config(a->cache, &cc)) != LMF_OK) return st;
    if (cc.n_embd != a->n_embd || cc.with_out != p->has_out)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->cache holds rows of n_embd %d%s; this call predicts "
                      "rows of n_embd %d%s", fn, cc.n_embd, cc.with_out ? " with e_out" : " without e_out",
                      a->n_embd, p->has_out ? " with e_out" : " without e_out");
  }
  p->out_esize = lmf_dtype_size(a->out_dtype);
  p->cuda = ctx->backend == LMF_BACKEND_CUDA;
  if (p->cuda) { /* where each pointer lives (dyntok.h) */
    const struct {
      const void *ptr;
      const char *name;
      int want;
      int *on_device;
    } loc[] = {
        {a->source_in, "args->source_in", LMF_MEM_DEVICE, NULL},
        {a->source_out, "args->source_out", LMF_MEM_DEVICE, NULL},
        {a->out_embeds, "args->out_embeds", LMF_MEM_DEVICE, NULL},
        {a->out_new_out, "args->out_new_out", LMF_MEM_DEVICE, NULL},
        {a->out_new_bias, "args->out_new_bias", LMF_MEM_DEVICE, NULL},
        {a->hn_input_cache, "args->hn_input_cache", LMF_MEM_DEVICE, NULL},
        {a->hn_input_cache_valid, "args->hn_input_cache_valid", LMF_MEM_HOST, NULL},
        {a->out_max_len, "args->out_max_len", LMF_MEM_HOST, NULL},
        {a->out_mask, "args->out_mask", LMF_MEM_ANY, &p->dev_small[0]},
        {a->out_ids, "args->out_ids", LMF_MEM_ANY, &p->dev_small[1]},
        {a->out_span_start, "args->out_span_start", LMF_MEM_ANY, &p->dev_small[2]},
        {a->out_span_len, "args->out_span_len", LMF_MEM_ANY, &p->dev_small[3]},
    };
    for (size_t i = 0; i < sizeof loc / sizeof loc[0]; ++i)
      if ((st = lmf_cuda_locate(ctx, loc[i].ptr, loc[i].name, loc[i].want, loc[i].on_device, fn)) != LMF_OK)
        return st;
  }
  return LMF_OK;
}

/* Checks against the vocabulary and the result; resolves L. */
static lmf_status_t check_result(const struct lmf_vocab *v, const struct lmf_dyntok_result *r, plan *p,
                                 const char *fn) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const int32_t V = v->size;
  const int64_t N = r->num_tokens;
  p->B = r->num_seqs;
  p->Lmax = longest(r);
  p->L = a->seq_len ? a->seq_len : p->Lmax;
  if (p->L < p->Lmax)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->seq_len is %lld but the longest merged sequence has %lld "
                    "tokens (lmf_dyntok_embed_shape)", fn, (long long)a->seq_len, (long long)p->Lmax);
  const int64_t E = a->n_embd;
  if (p->L > 0 && (p->B > (int64_t)(INT64_MAX / 16) / p->L || p->B * p->L > (int64_t)(INT64_MAX / 16) / E))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: B x L x n_embd = %lld x %lld x %lld overflows", fn,
                    (long long)p->B, (long long)p->L, (long long)E);
  if (p->L > INT32_MAX)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->seq_len is %lld; at most %d", fn, (long long)p->L, INT32_MAX);
  for (int64_t j = 0; j < N; ++j) {
    const int32_t id = r->ids[j];
    if (id < 0 || (int64_t)id >= (int64_t)V + r->num_new)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: result token %lld has id %d, outside this vocabulary's %d "
                      "ids + %d new tokens (a result of another vocabulary?)", fn, (long long)j, id, V, r->num_new);
    if (id < V && (v->flags[id] & LMF_TOKEN_UNUSED))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: result token %lld has id %d, unused in this vocabulary", fn,
                      (long long)j, id);
    if (id < V && id >= a->source_rows)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: result token %lld has id %d but args->source_rows is %lld",
                      fn, (long long)j, id, (long long)a->source_rows);
  }
  if (a->method == LMF_DYNTOK_EMBED_FVT) {
    const int64_t nd = r->decomp_offsets[r->num_new];
    for (int64_t i = 0; i < nd; ++i)
      if (r->decomp[i] < 0 || r->decomp[i] >= V || r->decomp[i] >= a->source_rows)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: a new token's decomposition holds id %d, not a row of "
                        "args->source_in (source_rows %lld)", fn, r->decomp[i], (long long)a->source_rows);
  }
  const size_t cells = (size_t)p->B * (size_t)p->L;
  const size_t nn = (size_t)r->num_new;
  const region reg[] = {
      {a->out_embeds, cells * (size_t)E * p->out_esize, "out_embeds", 1},
      {a->out_mask, cells * sizeof(int32_t), "out_mask", 1},
      {a->out_ids, cells * sizeof(int32_t), "out_ids", 1},
      {a->out_span_start, cells * sizeof(int32_t), "out_span_start", 1},
      {a->out_span_len, cells * sizeof(int32_t), "out_span_len", 1},
      {a->out_new_out, nn * (size_t)E * p->out_esize, "out_new_out", 1},
      {a->out_new_bias, nn * sizeof(float), "out_new_bias", 1},
      {a->out_max_len, sizeof(int64_t), "out_max_len", 1},
      {a->source_in, p->src_bytes, "source_in", 0},
      {a->source_out, a->source_out ? p->src_bytes : 0, "source_out", 0},
  };
  const int nr = (int)(sizeof reg / sizeof reg[0]);
  for (int i = 0; i < nr; ++i) {
    if (!reg[i].p || !reg[i].bytes) continue;
    for (int j = i + 1; j < nr; ++j) {
      if (!reg[j].p || !reg[j].bytes || (!reg[i].writable && !reg[j].writable)) continue;
      const uintptr_t a0 = (uintptr_t)reg[i].p, a1 = a0 + reg[i].bytes;
      const uintptr_t b0 = (uintptr_t)reg[j].p, b1 = b0 + reg[j].bytes;
      if (a0 < b1 && b0 < a1)
        return lmf_fail(LMF_ERR_OVERLAP, "%s: args->%s and args->%s overlap", fn, reg[i].name, reg[j].name);
    }
  }
  return LMF_OK;
}

/* ---- Rows ----------------------------------------------------------------------------------------- */

/* n elements from src (src_dtype) to dst (dst_dtype); a plain copy when the dtypes match. */
static void put_row(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n) {
  if (dst_dtype == src_dtype) {
    memcpy(dst, src, (size_t)n * lmf_dtype_size(dst_dtype));
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    float x;
    switch (src_dtype) {
      case LMF_DTYPE_F16: x = lmf_f16_to_f32(((const uint16_t *)src)[i]); break;
      case LMF_DTYPE_BF16: x = lmf_bf16_to_f32(((const uint16_t *)src)[i]); break;
      default: x = ((const float *)src)[i]; break;
    }
    switch (dst_dtype) {
      case LMF_DTYPE_F16: ((uint16_t *)dst)[i] = lmf_f32_to_f16(x); break;
      case LMF_DTYPE_BF16: ((uint16_t *)dst)[i] = lmf_f32_to_bf16(x); break;
      default: ((float *)dst)[i] = x; break;
    }
  }
}

static const void *src_row(const plan *p, const void *base, int64_t id) {
  return (const char *)base + (size_t)id * (size_t)p->a.source_row_stride * lmf_dtype_size(p->a.source_dtype);
}

/* ---- Prediction --------------------------------------------------------------------------------- */

typedef struct preds {
  int64_t n;        /* tokens to predict or read from the cache */
  int32_t *k;       /* [n] new-token indices, increasing */
  int32_t *slot;    /* [num_new] index into k, or -1 */
  uint8_t *hit;     /* [n] found in the cache */
  float *e_in;      /* [n][E] */
  float *e_out;     /* [n][E] when has_out */
  float *bias;      /* [n] */
} preds;

static void preds_free(preds *q) {
  free(q->k);
  free(q->slot);
  free(q->hit);
  free(q->e_in);
  free(q->e_out);
  free(q->bias);
}

static lmf_status_t oom(const char *fn) { return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn); }

static const uint8_t *new_bytes(const struct lmf_dyntok_result *r, int32_t k, int64_t *len) {
  *len = r->new_offsets[k + 1] - r->new_offsets[k];
  return r->new_bytes + r->new_offsets[k];
}

/* Step 2: the rows of q (host memory for all of them) and which the cache holds; *nm_out = the misses. */
static lmf_status_t plan_preds(const struct lmf_vocab *v, const struct lmf_dyntok_result *r, const plan *p,
                               preds *q, int64_t *nm_out, const char *fn) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const int64_t E = a->n_embd;
  const int32_t V = v->size;
  const int32_t nn = r->num_new;
  memset(q, 0, sizeof *q);
  q->slot = (int32_t *)malloc(sizeof(int32_t) * (size_t)(nn + 1));
  q->k = (int32_t *)malloc(sizeof(int32_t) * (size_t)(nn + 1));
  if (!q->slot || !q->k) return oom(fn);
  const int all = a->out_new_out || a->out_new_bias;
  for (int32_t k = 0; k < nn; ++k) q->slot[k] = all ? 0 : -1;
  if (!all)
    for (int64_t j = 0; j < r->num_tokens; ++j)
      if (r->ids[j] >= V) q->slot[r->ids[j] - V] = 0;
  for (int32_t k = 0; k < nn; ++k)
    if (q->slot[k] == 0) {
      q->slot[k] = (int32_t)q->n;
      q->k[q->n++] = k;
    }
  const size_t n = (size_t)q->n;
  q->hit = (uint8_t *)calloc(n + 1, 1);
  q->e_in = (float *)malloc(sizeof(float) * (n * (size_t)E + 1));
  q->e_out = p->has_out ? (float *)malloc(sizeof(float) * (n * (size_t)E + 1)) : NULL;
  q->bias = (float *)calloc(n + 1, sizeof(float));
  if (!q->hit || !q->e_in || (p->has_out && !q->e_out) || !q->bias) return oom(fn);

  /* The misses. */
  int64_t nm = 0;
  for (int64_t i = 0; i < q->n; ++i) {
    if (a->cache) {
      int64_t len;
      const uint8_t *b = new_bytes(r, q->k[i], &len);
      int32_t present = 0;
      lmf_status_t st = lmf_embed_cache_contains(a->cache, b, len, &present);
      if (st != LMF_OK) return st;
      q->hit[i] = (uint8_t)present;
    }
    nm += !q->hit[i];
  }
  *nm_out = nm;
  return LMF_OK;
}

/* Step 3: predicts the nm misses mi[0 .. nm) of q into m_in / m_out / m_bias ([nm] rows: host memory
 * on the CPU; device memory on CUDA, enqueued on the default stream, where *ws receives the
 * hypernetwork's device workspace for the caller to free after synchronising). FVT writes no bias. */
static lmf_status_t predict_misses(lmf_context_t *ctx, const struct lmf_vocab *v, const struct lmf_dyntok_result *r,
                                   const plan *p, const preds *q, const int32_t *mi, int64_t nm, float *m_in,
                                   float *m_out, float *m_bias, void **ws, const char *fn) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const int32_t V = v->size;
  const int32_t nn = r->num_new;
  lmf_status_t st = LMF_OK;
  if (a->method == LMF_DYNTOK_EMBED_HYPERNET) {
    const int64_t SL = p->surface_len;
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)nm);
    int32_t *S = (int32_t *)malloc(sizeof(int32_t) * (size_t)nm * (size_t)SL);
    if (!ids || !S) {
      free(ids);
      free(S);
      return oom(fn);
    }
    for (int64_t c = 0; c < nm; ++c) ids[c] = V + q->k[mi[c]];
    lmf_hypernet_surface_args_t sa;
    lmf_hypernet_surface_args_init(&sa, sizeof sa);
    sa.num_tokens = nm;
    sa.ids = ids;
    sa.num_new = nn;
    sa.new_offsets = r->new_offsets;
    sa.new_bytes = r->new_bytes;
    sa.surface_len = (int32_t)SL;
    sa.pad_id = p->hc.pad_token_id;
    sa.original_vocab_size = p->hc.original_vocab_size;
    sa.out_forms = S;
    st = lmf_hypernet_surface_forms(v, &sa);
    if (st == LMF_OK) {
      lmf_hypernet_args_t ha;
      lmf_hypernet_args_init(&ha, sizeof ha);
      ha.num_tokens = nm;
      ha.surface_len = (int32_t)SL;
      ha.surface_forms = S;
      ha.source_in = a->source_in;
      ha.source_out = a->source_out;
      ha.source_dtype = a->source_dtype;
      ha.source_rows = a->source_rows;
      ha.source_row_stride = a->source_row_stride;
      ha.lang_index = a->lang_index;
      ha.input_cache = a->hn_input_cache;
      ha.input_cache_valid = a->hn_input_cache_valid;
      ha.out_in = m_in;
      ha.out_out = m_out;
      ha.out_bias = m_bias;
      if (!p->cuda) {
        st = lmf_hypernet_predict(a->hypernet, &ha, NULL, 0, NULL);
      } else { /* device workspace, handed to the caller to free once the stream is done */
        size_t wb = 0;
        st = lmf_hypernet_workspace_size(a->hypernet, &ha, &wb);
        if (st == LMF_OK) st = lmf_cuda_alloc(ctx, ws, wb);
        if (st == LMF_OK) st = lmf_hypernet_predict(a->hypernet, &ha, *ws, wb, NULL);
      }
    }
    free(ids);
    free(S);
  } else {
    int64_t nd = 0;
    for (int64_t c = 0; c < nm; ++c) {
      const int32_t k = q->k[mi[c]];
      nd += r->decomp_offsets[k + 1] - r->decomp_offsets[k];
    }
    int64_t *offs = (int64_t *)malloc(sizeof(int64_t) * (size_t)(nm + 1));
    int32_t *dids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(nd + 1));
    if (!offs || !dids) {
      free(offs);
      free(dids);
      return oom(fn);
    }
    offs[0] = 0;
    for (int64_t c = 0; c < nm; ++c) {
      const int32_t k = q->k[mi[c]];
      const int64_t d0 = r->decomp_offsets[k], dl = r->decomp_offsets[k + 1] - d0;
      memcpy(dids + offs[c], r->decomp + d0, sizeof(int32_t) * (size_t)dl);
      offs[c + 1] = offs[c] + dl;
    }
    lmf_fvt_args_t fa;
    lmf_fvt_args_init(&fa, sizeof fa);
    fa.num_tokens = nm;
    fa.offsets = offs;
    fa.ids = dids;
    fa.source_in = a->source_in;
    fa.source_out = a->source_out;
    fa.source_dtype = a->source_dtype;
    fa.n_embd = a->n_embd;
    fa.source_rows = a->source_rows;
    fa.source_row_stride = a->source_row_stride;
    fa.unk_id = a->fvt_unk_id;
    fa.out_in = m_in;
    fa.out_out = m_out;
    st = lmf_fvt_predict(ctx, &fa, NULL);
    free(offs);
    free(dids);
  }
  return st;
}

/* Steps 2 and 3: every row of q, predicted (misses) or left for the cache's commit (hits). */
static lmf_status_t predict(lmf_context_t *ctx, const struct lmf_vocab *v, const struct lmf_dyntok_result *r,
                            const plan *p, preds *q, const char *fn) {
  const int64_t E = p->a.n_embd;
  int64_t nm = 0;
  lmf_status_t st0 = plan_preds(v, r, p, q, &nm, fn);
  if (st0 != LMF_OK || nm == 0) return st0;
  int32_t *mi = (int32_t *)malloc(sizeof(int32_t) * (size_t)nm); /* indices into q of the misses */
  float *m_in = (float *)malloc(sizeof(float) * (size_t)nm * (size_t)E);
  float *m_out = p->has_out ? (float *)malloc(sizeof(float) * (size_t)nm * (size_t)E) : NULL;
  float *m_bias = (float *)calloc((size_t)nm, sizeof(float));
  lmf_status_t st = LMF_OK;
  if (!mi || !m_in || (p->has_out && !m_out) || !m_bias) {
    st = oom(fn);
    goto done;
  }
  {
    int64_t c = 0;
    for (int64_t i = 0; i < q->n; ++i)
      if (!q->hit[i]) mi[c++] = (int32_t)i;
  }
  st = predict_misses(ctx, v, r, p, q, mi, nm, m_in, m_out, m_bias, NULL, fn);
  if (st == LMF_OK)
    for (int64_t c = 0; c < nm; ++c) {
      const size_t i = (size_t)mi[c];
      memcpy(q->e_in + i * (size_t)E, m_in + (size_t)c * (size_t)E, sizeof(float) * (size_t)E);
      if (p->has_out) memcpy(q->e_out + i * (size_t)E, m_out + (size_t)c * (size_t)E, sizeof(float) * (size_t)E);
      q->bias[i] = m_bias[c];
    }
done:
  free(mi);
  free(m_in);
  free(m_out);
  free(m_bias);
  return st;
}
/* Step 4a: the cache's batch. Cannot fail: the arguments were checked; an insert that runs out of
 * memory stores nothing (the cache is an optimisation). */
static void commit_cache(const struct lmf_dyntok_result *r, const plan *p, preds *q) {
  lmf_embed_cache_t *c = p->a.cache;
  if (!c) return;
  const int64_t E = p->a.n_embd;
  (void)lmf_embed_cache_begin_batch(c);
  /* Every lookup first: a hit is pinned before any insert could evict it; a miss is counted. */
  for (int64_t i = 0; i < q->n; ++i) {
    int64_t len;
    const uint8_t *b = new_bytes(r, q->k[i], &len);
    int32_t hit = 0;
    (void)lmf_embed_cache_lookup(c, b, len, q->hit[i] ? q->e_in + (size_t)i * (size_t)E : NULL,
                                 q->hit[i] && p->has_out ? q->e_out + (size_t)i * (size_t)E : NULL,
                                 q->hit[i] ? &q->bias[i] : NULL, &hit);
  }
  for (int64_t i = 0; i < q->n; ++i) {
    if (q->hit[i]) continue;
    int64_t len;
    const uint8_t *b = new_bytes(r, q->k[i], &len);
    (void)lmf_embed_cache_insert(c, b, len, q->e_in + (size_t)i * (size_t)E,
                                 p->has_out ? q->e_out + (size_t)i * (size_t)E : NULL, q->bias[i], NULL);
  }
}

/* Step 4b: the outputs. */
static void write_outputs(const lmf_context_t *ctx, const struct lmf_vocab *v, const struct lmf_dyntok_result *r,
                          const plan *p, const preds *q) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const int32_t V = v->size;
  const int64_t E = a->n_embd, B = p->B, L = p->L;
  const size_t row_bytes = (size_t)E * p->out_esize;
  const int64_t cells = B * L;
  const int nt = ctx->cpu_threads > 0 ? ctx->cpu_threads : omp_get_max_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (cells * E >= (1 << 16))
  for (int64_t cell = 0; cell < cells; ++cell) {
    const int64_t s = cell / L, l = cell % L;
    const int64_t o = r->offsets[s], n = r->offsets[s + 1] - o;
    const int64_t j = a->pad_side == LMF_DYNTOK_PAD_LEFT ? l - (L - n) : l;
    char *dst = (char *)a->out_embeds + (size_t)cell * row_bytes;
    if (j >= 0 && j < n) {
      const int64_t t = o + j;
      const int32_t id = r->ids[t];
      if (id < V)
        put_row(dst, a->out_dtype, src_row(p, a->source_in, id), a->source_dtype, E);
      else
        put_row(dst, a->out_dtype, q->e_in + (size_t)q->slot[id - V] * (size_t)E, LMF_DTYPE_F32, E);
      if (a->out_mask) a->out_mask[cell] = 1;
      if (a->out_ids) a->out_ids[cell] = id;
      if (a->out_span_start) a->out_span_start[cell] = (int32_t)(r->span_start[t] - r->span_start[o]);
      if (a->out_span_len) a->out_span_len[cell] = r->span_len[t];
    } else {
      if (a->pad_id >= 0)
        put_row(dst, a->out_dtype, src_row(p, a->source_in, a->pad_id), a->source_dtype, E);
      else
        memset(dst, 0, row_bytes);
      if (a->out_mask) a->out_mask[cell] = 0;
      if (a->out_ids) a->out_ids[cell] = a->pad_id;
      if (a->out_span_start) a->out_span_start[cell] = -1;
      if (a->out_span_len) a->out_span_len[cell] = 0;
    }
  }
  for (int32_t k = 0; k < r->num_new; ++k) {
    const size_t i = (size_t)q->slot[k]; /* every new token was predicted when these are asked for */
    if (a->out_new_out)
      put_row((char *)a->out_new_out + (size_t)k * row_bytes, a->out_dtype, q->e_out + i * (size_t)E, LMF_DTYPE_F32,
              E);
    if (a->out_new_bias) a->out_new_bias[k] = q->bias[i];
  }
  if (a->out_max_len) *a->out_max_len = p->Lmax;
}

/* ---- CUDA (see the top of the file) ---------------------------------------------------------------- */

/* The device buffers of one call (lmf_cuda_alloc; freed after the stream is synchronised). */
typedef struct dev_bufs {
  float *m_in, *m_out, *m_bias; /* [nm] predicted rows */
  float *in, *out, *bias;       /* [n] every row of q (== m_* when there is no hit) */
  int32_t *codes;               /* [cells] */
  void *ws;                     /* the hypernetwork's workspace */
} dev_bufs;

static void dev_free(const lmf_context_t *ctx, dev_bufs *d) {
  if (d->in != d->m_in) lmf_cuda_free(ctx, d->in);
  if (d->out != d->m_out) lmf_cuda_free(ctx, d->out);
  if (d->bias != d->m_bias) lmf_cuda_free(ctx, d->bias);
  lmf_cuda_free(ctx, d->m_in);
  lmf_cuda_free(ctx, d->m_out);
  lmf_cuda_free(ctx, d->m_bias);
  lmf_cuda_free(ctx, d->codes);
  lmf_cuda_free(ctx, d->ws);
}

/* Per cell: the gather code (dyntok.h's rows: source row, zeros, prediction row) and the int32 outputs
 * (small[0..3] = mask, ids, span_start, span_len: [cells] each), exactly as write_outputs. */
static void cells_host(const struct lmf_vocab *v, const struct lmf_dyntok_result *r, const plan *p, const preds *q,
                       int32_t *codes, int32_t *const small[4]) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const int32_t V = v->size;
  const int64_t L = p->L, cells = p->B * p->L;
  for (int64_t cell = 0; cell < cells; ++cell) {
    const int64_t s = cell / L, l = cell % L;
    const int64_t o = r->offsets[s], n = r->offsets[s + 1] - o;
    const int64_t j = a->pad_side == LMF_DYNTOK_PAD_LEFT ? l - (L - n) : l;
    if (j >= 0 && j < n) {
      const int64_t t = o + j;
      const int32_t id = r->ids[t];
      codes[cell] = id < V ? id : -2 - q->slot[id - V];
      small[0][cell] = 1;
      small[1][cell] = id;
      small[2][cell] = (int32_t)(r->span_start[t] - r->span_start[o]);
      small[3][cell] = r->span_len[t];
    } else {
      codes[cell] = a->pad_id >= 0 ? a->pad_id : -1;
      small[0][cell] = 0;
      small[1][cell] = a->pad_id;
      small[2][cell] = -1;
      small[3][cell] = 0;
    }
  }
}

/* Steps 2-4 on a CUDA context (the arguments checked). */
static lmf_status_t embed_cuda(lmf_context_t *ctx, const struct lmf_vocab *v, const struct lmf_dyntok_result *r,
                               const plan *p, const char *fn) {
  const lmf_dyntok_embed_args_t *a = &p->a;
  const size_t E = (size_t)a->n_embd;
  const size_t cells = (size_t)p->B * (size_t)p->L;
  const size_t fe = sizeof(float);
  preds q;
  dev_bufs d;
  memset(&d, 0, sizeof d);
  int32_t *mi = NULL, *host = NULL; /* host: codes then the four int32 outputs, [cells] each */
  float *h_in = NULL, *h_out = NULL, *h_bias = NULL; /* the misses' rows on the host (with a cache) */
  int64_t nm = 0;
  lmf_status_t st = plan_preds(v, r, p, &q, &nm, fn);
  if (st != LMF_OK) goto done;
  const size_t n = (size_t)q.n, m = (size_t)nm;
  mi = (int32_t *)malloc(sizeof(int32_t) * (m + 1));
  host = (int32_t *)malloc(sizeof(int32_t) * (5 * cells + 1));
  if (!mi || !host) {
    st = oom(fn);
    goto done;
  }
  {
    int64_t c = 0;
    for (int64_t i = 0; i < q.n; ++i)
      if (!q.hit[i]) mi[c++] = (int32_t)i;
  }
  /* Step 3: the misses into device rows (FVT predicts no bias: zeros, q.bias is still all zero). */
  if (m > 0) {
    if ((st = lmf_cuda_alloc(ctx, (void **)&d.m_in, m * E * fe)) != LMF_OK ||
        (p->has_out && (st = lmf_cuda_alloc(ctx, (void **)&d.m_out, m * E * fe)) != LMF_OK) ||
        (st = lmf_cuda_alloc(ctx, (void **)&d.m_bias, m * fe)) != LMF_OK)
      goto done;
    if (a->method == LMF_DYNTOK_EMBED_FVT && (st = lmf_cuda_copy(ctx, d.m_bias, q.bias, m * fe, NULL, fn)) != LMF_OK)
      goto done;
    if ((st = predict_misses(ctx, v, r, p, &q, mi, nm, d.m_in, d.m_out, d.m_bias, &d.ws, fn)) != LMF_OK) goto done;
  }
  d.in = d.m_in, d.out = d.m_out, d.bias = d.m_bias;
  if (a->cache) {
    /* The misses to the host, then the cache's batch as on the CPU (hits read into q). */
    if (m > 0) {
      h_in = (float *)malloc(m * E * fe);
      h_out = p->has_out ? (float *)malloc(m * E * fe) : NULL;
      h_bias = (float *)malloc(m * fe);
      if (!h_in || (p->has_out && !h_out) || !h_bias) {
        st = oom(fn);
        goto done;
      }
      if ((st = lmf_cuda_copy(ctx, h_in, d.m_in, m * E * fe, NULL, fn)) != LMF_OK ||
          (p->has_out && (st = lmf_cuda_copy(ctx, h_out, d.m_out, m * E * fe, NULL, fn)) != LMF_OK) ||
          (st = lmf_cuda_copy(ctx, h_bias, d.m_bias, m * fe, NULL, fn)) != LMF_OK ||
          (st = lmf_cuda_sync(ctx, NULL, fn)) != LMF_OK)
        goto done;
      for (size_t c = 0; c < m; ++c) {
        const size_t i = (size_t)mi[c];
        memcpy(q.e_in + i * E, h_in + c * E, fe * E);
        if (p->has_out) memcpy(q.e_out + i * E, h_out + c * E, fe * E);
        q.bias[i] = h_bias[c];
      }
    }
    if (m < n) { /* hits: every row of q up to the device (allocated before the commit: it cannot fail) */
      d.in = d.out = d.bias = NULL;
      if ((st = lmf_cuda_alloc(ctx, (void **)&d.in, n * E * fe)) != LMF_OK ||
          (p->has_out && (st = lmf_cuda_alloc(ctx, (void **)&d.out, n * E * fe)) != LMF_OK) ||
          (st = lmf_cuda_alloc(ctx, (void **)&d.bias, n * fe)) != LMF_OK)
        goto done;
    }
  }
  if (cells > 0 && (st = lmf_cuda_alloc(ctx, (void **)&d.codes, cells * sizeof(int32_t))) != LMF_OK) goto done;
  /* Step 4. */
  commit_cache(r, p, &q);
  if (a->cache && m < n) {
    if ((st = lmf_cuda_copy(ctx, d.in, q.e_in, n * E * fe, NULL, fn)) != LMF_OK ||
        (p->has_out && (st = lmf_cuda_copy(ctx, d.out, q.e_out, n * E * fe, NULL, fn)) != LMF_OK) ||
        (st = lmf_cuda_copy(ctx, d.bias, q.bias, n * fe, NULL, fn)) != LMF_OK)
      goto done;
  }
  int32_t *const small[4] = {host + cells, host + 2 * cells, host + 3 * cells, host + 4 * cells};
  cells_host(v, r, p, &q, host, small);
  if (cells > 0) {
    if ((st = lmf_cuda_copy(ctx, d.codes, host, cells * sizeof(int32_t), NULL, fn)) != LMF_OK) goto done;
    lmf_embed_gather g;
    memset(&g, 0, sizeof g);
    g.rows = (int64_t)cells;
    g.n_embd = a->n_embd;
    g.codes = d.codes;
    g.source = a->source_in;
    g.source_row_stride = a->source_row_stride;
    g.source_dtype = a->source_dtype;
    g.preds = d.in;
    g.out = a->out_embeds;
    g.out_dtype = a->out_dtype;
    if ((st = lmf_cuda_embed_gather(ctx, &g, NULL, fn)) != LMF_OK) goto done;
  }
  if (r->num_new > 0 && a->out_new_out) { /* every new token predicted, in order: row k of d.out */
    lmf_embed_gather g;
    memset(&g, 0, sizeof g);
    g.rows = r->num_new;
    g.n_embd = a->n_embd;
    g.codes = NULL;
    g.source = a->source_in;
    g.source_row_stride = a->source_row_stride;
    g.source_dtype = a->source_dtype;
    g.preds = d.out;
    g.out = a->out_new_out;
    g.out_dtype = a->out_dtype;
    if ((st = lmf_cuda_embed_gather(ctx, &g, NULL, fn)) != LMF_OK) goto done;
  }
  if (r->num_new > 0 && a->out_new_bias &&
      (st = lmf_cuda_copy(ctx, a->out_new_bias, d.bias, (size_t)r->num_new * fe, NULL, fn)) != LMF_OK)
    goto done;
  {
    int32_t *const dst[4] = {a->out_mask, a->out_ids, a->out_span_start, a->out_span_len};
    for (int i = 0; i < 4; ++i)
      if (dst[i] && p->dev_small[i] &&
          (st = lmf_cuda_copy(ctx, dst[i], small[i], cells * sizeof(int32_t), NULL, fn)) != LMF_OK)
        goto done;
    if ((st = lmf_cuda_sync(ctx, NULL, fn)) != LMF_OK) goto done;
    for (int i = 0; i < 4; ++i)
      if (dst[i] && !p->dev_small[i] && cells > 0) memcpy(dst[i], small[i], cells * sizeof(int32_t));
  }
  if (a->out_max_len) *a->out_max_len = p->Lmax;
done:
  if (st != LMF_OK) { /* nothing in flight may read what is freed; the first error's message stays */
    char msg[512];
    snprintf(msg, sizeof msg, "%s", lmf_last_error());
    if (lmf_cuda_sync(ctx, NULL, fn) != LMF_OK) (void)lmf_fail(st, "%s", msg);
  }
  dev_free(ctx, &d);
  free(mi);
  free(host);
  free(h_in);
  free(h_out);
  free(h_bias);
  preds_free(&q);
  return st;
}

static lmf_status_t embed(lmf_context_t *ctx, const struct lmf_vocab *v, const struct lmf_dyntok_result *r,
                          plan *p, const char *fn) {
  lmf_status_t st = check_result(v, r, p, fn);
  if (st != LMF_OK) return st;
  if (p->cuda) return embed_cuda(ctx, v, r, p, fn);
  preds q;
  st = predict(ctx, v, r, p, &q, fn);
  if (st == LMF_OK) {
    commit_cache(r, p, &q);
    write_outputs(ctx, v, r, p, &q);
  }
  preds_free(&q);
  return st;
}

lmf_status_t lmf_dyntok_embed(lmf_context_t *ctx, const lmf_vocab_t *vocab, const lmf_dyntok_result_t *result,
                              const lmf_dyntok_embed_args_t *args) {
  plan p;
  lmf_status_t st = check_args(ctx, args, &p, FN);
  if (st != LMF_OK) return st;
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": vocab is NULL");
  if (!result) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": result is NULL");
  return embed(ctx, vocab, result, &p, FN);
}

lmf_status_t lmf_dyntok_pipeline(lmf_context_t *ctx, const lmf_vocab_t *vocab, const lmf_dyntok_batch_t *batch,
                                 const lmf_dyntok_config_t *config, const lmf_dyntok_embed_args_t *args,
                                 lmf_dyntok_result_t **result) {
  plan p;
  lmf_status_t st = check_args(ctx, args, &p, FN_PIPE);
  if (st != LMF_OK) return st;
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, FN_PIPE ": vocab is NULL");
  lmf_dyntok_result_t *r = NULL;
  if ((st = lmf_dyntok_merge(ctx, vocab, batch, config, &r)) != LMF_OK) return st;
  if (p.a.seq_len == 0) /* the longest input sequence: the batch was checked by the merge */
    for (int64_t s = 0; s < batch->num_seqs; ++s)
      if (batch->offsets[s + 1] - batch->offsets[s] > p.a.seq_len)
        p.a.seq_len = batch->offsets[s + 1] - batch->offsets[s];
  st = embed(ctx, vocab, r, &p, FN_PIPE);
  if (st != LMF_OK || !result) {
    lmf_dyntok_result_destroy(r);
    return st;
  }
  *result = r;
  return LMF_OK;
}
