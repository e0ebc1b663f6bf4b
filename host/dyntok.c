/* lmf_dyntok_*: argument checks (nothing is written on a bad one), the job, dispatch to the context's
 * backend (host/dyntok_backend.h), the result object and its accessors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dyntok_backend.h"

#define FN "lmf_dyntok_merge"

lmf_status_t lmf_dyntok_config_init(lmf_dyntok_config_t *config, size_t struct_size) {
  lmf_dyntok_config_t d = LMF_DYNTOK_CONFIG_INIT;
  /* A caller built against the first layout (without target_reduction) gets its struct_size bytes. */
  if (config && struct_size == LMF_DYNTOK_CONFIG_SIZE_V1) {
    d.struct_size = struct_size;
    memcpy(config, &d, struct_size);
    return LMF_OK;
  }
  return lmf_init_struct(config, struct_size, &d, sizeof d, "lmf_dyntok_config_init");
}

lmf_status_t lmf_dyntok_batch_init(lmf_dyntok_batch_t *batch, size_t struct_size) {
  const lmf_dyntok_batch_t d = LMF_DYNTOK_BATCH_INIT;
  return lmf_init_struct(batch, struct_size, &d, sizeof d, "lmf_dyntok_batch_init");
}

/* ---- Result ------------------------------------------------------------------------------------ */

struct lmf_dyntok_result *lmf_dt_result_alloc(int64_t num_seqs, int64_t num_tokens, int32_t num_merges) {
  struct lmf_dyntok_result *r = (struct lmf_dyntok_result *)calloc(1, sizeof *r);
  if (!r) goto oom;
  r->num_seqs = num_seqs;
  r->num_tokens = num_tokens;
  r->num_merges = num_merges;
  /* +1 element each: malloc(0) may return NULL, and the accessors hand out non-NULL arrays. */
  r->offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(num_seqs + 1));
  r->ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(num_tokens + 1));
  r->span_start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(num_tokens + 1));
  r->span_len = (int32_t *)malloc(sizeof(int32_t) * (size_t)(num_tokens + 1));
  r->merge_pairs = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * (int64_t)num_merges + 1));
  r->merge_results = (int32_t *)malloc(sizeof(int32_t) * (size_t)(num_merges + 1));
  r->merge_counts = (int64_t *)malloc(sizeof(int64_t) * (size_t)(num_merges + 1));
  if (!r->offsets || !r->ids || !r->span_start || !r->span_len || !r->merge_pairs ||
      !r->merge_results || !r->merge_counts)
    goto oom;
  return r;
oom:
  lmf_dyntok_result_destroy(r);
  lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN ": out of host memory (result)");
  return NULL;
}

void lmf_dyntok_result_destroy(lmf_dyntok_result_t *r) {
  if (!r) return;
  free(r->offsets);
  free(r->ids);
  free(r->span_start);
  free(r->span_len);
  free(r->merge_pairs);
  free(r->merge_results);
  free(r->merge_counts);
  free(r->new_offsets);
  free(r->new_bytes);
  free(r->decomp_offsets);
  free(r->decomp);
  free(r);
}

lmf_status_t lmf_dt_result_finish(struct lmf_dyntok_result *r, const struct lmf_vocab *vocab) {
  const int32_t V = vocab->size;
  int32_t num_new = 0;
  int64_t nbytes = 0, ndecomp = 0;
  /* Pass 1: sizes, and the list's consistency. Lengths of new tokens are kept in a scratch array. */
  int64_t *blen = (int64_t *)malloc(sizeof(int64_t) * (size_t)(r->num_merges + 1));
  int64_t *dlen = (int64_t *)malloc(sizeof(int64_t) * (size_t)(r->num_merges + 1));
  if (!blen || !dlen) {
    free(blen);
    free(dlen);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN ": out of host memory (new tokens)");
  }
  for (int32_t k = 0; k < r->num_merges; ++k) {
    int32_t a = r->merge_pairs[2 * k], b = r->merge_pairs[2 * k + 1], c = r->merge_results[k];
    int bad = a < 0 || b < 0 || c < 0 || a >= V + num_new || b >= V + num_new || c > V + num_new;
    if (!bad && c < V && (vocab->flags[c] & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED))) bad = 1;
    if (bad) {
      free(blen);
      free(dlen);
      return lmf_fail(LMF_ERR_INTERNAL, FN ": the backend's merge %d is (%d, %d) -> %d with %d new "
                      "tokens so far", k, a, b, c, num_new);
    }
    if (c == V + num_new) {
      int64_t la, lb;
      int64_t da = 1, db = 1;
      if (a < V) (void)lmf_vocab_tok(vocab, a, &la);
      else la = blen[a - V], da = dlen[a - V];
      if (b < V) (void)lmf_vocab_tok(vocab, b, &lb);
      else lb = blen[b - V], db = dlen[b - V];
      blen[num_new] = la + lb;
      dlen[num_new] = da + db;
      nbytes += la + lb;
      ndecomp += da + db;
      ++num_new;
    }
  }
  r->new_offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(num_new + 1));
  r->decomp_offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(num_new + 1));
  r->new_bytes = (uint8_t *)malloc((size_t)nbytes + 1);
  r->decomp = (int32_t *)malloc(sizeof(int32_t) * (size_t)(ndecomp + 1));
  if (!r->new_offsets || !r->decomp_offsets || !r->new_bytes || !r->decomp) {
    free(blen);
    free(dlen);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN ": out of host memory (new tokens)");
  }
  /* Pass 2: fill, in order of id. */
  r->new_offsets[0] = 0;
  r->decomp_offsets[0] = 0;
  int32_t k_new = 0;
  for (int32_t k = 0; k < r->num_merges; ++k) {
    if (r->merge_results[k] != V + k_new) continue;
    int64_t bo = r->new_offsets[k_new], dof = r->decomp_offsets[k_new];
    for (int side = 0; side < 2; ++side) {
      int32_t x = r->merge_pairs[2 * k + side];
      if (x < V) {
        int64_t lx;
        const uint8_t *bx = lmf_vocab_tok(vocab, x, &lx);
        if (lx) memcpy(r->new_bytes + bo, bx, (size_t)lx);
        bo += lx;
        r->decomp[dof++] = x;
      } else {
        int64_t o = r->new_offsets[x - V], lx = r->new_offsets[x - V + 1] - o;
        memcpy(r->new_bytes + bo, r->new_bytes + o, (size_t)lx);
        bo += lx;
        int64_t d0 = r->decomp_offsets[x - V], dl = r->decomp_offsets[x - V + 1] - d0;
        memcpy(r->decomp + dof, r->decomp + d0, sizeof(int32_t) * (size_t)dl);
        dof += dl;
      }
    }
    r->new_offsets[k_new + 1] = bo;
    r->decomp_offsets[k_new + 1] = dof;
    ++k_new;
  }
  r->num_new = num_new;
  free(blen);
  free(dlen);
  return LMF_OK;
}

lmf_status_t lmf_dyntok_result_sizes(const lmf_dyntok_result_t *result, int64_t *num_seqs,
                                     int64_t *num_tokens, int32_t *num_merges, int32_t *num_new_tokens) {
  if (!result) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_dyntok_result_sizes: result is NULL");
  if (num_seqs) *num_seqs = result->num_seqs;
  if (num_tokens) *num_tokens = result->num_tokens;
  if (num_merges) *num_merges = result->num_merges;
  if (num_new_tokens) *num_new_tokens = result->num_new;
  return LMF_OK;
}

lmf_status_t lmf_dyntok_result_field(const lmf_dyntok_result_t *r, int32_t field, const void **data,
                                     int64_t *count, int32_t *dtype) {
  if (!r) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_dyntok_result_field: result is NULL");
  const void *p;
  int64_t n;
  int32_t dt;
  switch (field) {
    case LMF_DYNTOK_FIELD_OFFSETS: p = r->offsets, n = r->num_seqs + 1, dt = LMF_DTYPE_I64; break;
    case LMF_DYNTOK_FIELD_IDS: p = r->ids, n = r->num_tokens, dt = LMF_DTYPE_I32; break;
    case LMF_DYNTOK_FIELD_SPAN_START: p = r->span_start, n = r->num_tokens, dt = LMF_DTYPE_I64; break;
    case LMF_DYNTOK_FIELD_SPAN_LEN: p = r->span_len, n = r->num_tokens, dt = LMF_DTYPE_I32; break;
    case LMF_DYNTOK_FIELD_MERGE_PAIRS:
      p = r->merge_pairs, n = 2 * (int64_t)r->num_merges, dt = LMF_DTYPE_I32;
      break;
    case LMF_DYNTOK_FIELD_MERGE_RESULTS: p = r->merge_results, n = r->num_merges, dt = LMF_DTYPE_I32; break;
    case LMF_DYNTOK_FIELD_MERGE_COUNTS: p = r->merge_counts, n = r->num_merges, dt = LMF_DTYPE_I64; break;
    case LMF_DYNTOK_FIELD_NEW_OFFSETS: p = r->new_offsets, n = r->num_new + 1, dt = LMF_DTYPE_I64; break;
    case LMF_DYNTOK_FIELD_NEW_BYTES:
      p = r->new_bytes, n = r->new_offsets[r->num_new], dt = LMF_DTYPE_U8;
      break;
    case LMF_DYNTOK_FIELD_DECOMP_OFFSETS:
      p = r->decomp_offsets, n = r->num_new + 1, dt = LMF_DTYPE_I64;
      break;
    case LMF_DYNTOK_FIELD_DECOMP: p = r->decomp, n = r->decomp_offsets[r->num_new], dt = LMF_DTYPE_I32; break;
    default:
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_dyntok_result_field: field is %d; use "
                      "LMF_DYNTOK_FIELD_OFFSETS (0) .. LMF_DYNTOK_FIELD_DECOMP (10)", field);
  }
  if (data) *data = p;
  if (count) *count = n;
  if (dtype) *dtype = dt;
  return LMF_OK;
}

/* ---- Merge ------------------------------------------------------------------------------------- */

static lmf_status_t check_batch(const struct lmf_vocab *voc, const lmf_dyntok_batch_t *b, int32_t boundary,
                                int64_t *num_tokens) {
  if (b->num_seqs < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": batch->num_seqs is %lld, must be >= 1",
                    (long long)b->num_seqs);
  if (b->num_seqs > LMF_DT_MAX_TOKENS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": batch->num_seqs is %lld, at most %lld are supported",
                    (long long)b->num_seqs, (long long)LMF_DT_MAX_TOKENS);
  if (!b->offsets) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": batch->offsets is NULL");
  if (b->offsets[0] != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": batch->offsets[0] is %lld, must be 0",
                    (long long)b->offsets[0]);
  const int64_t max_tokens = LMF_DT_MAX_TOKENS;
  for (int64_t s = 0; s < b->num_seqs; ++s) {
    if (b->offsets[s + 1] < b->offsets[s])
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN ": batch->offsets is not monotone: offsets[%lld] = %lld < offsets[%lld] = %lld",
                      (long long)(s + 1), (long long)b->offsets[s + 1], (long long)s,
                      (long long)b->offsets[s]);
    if (b->offsets[s + 1] > max_tokens)
      return lmf_fail(LMF_ERR_INVALID_SIZE,
                      FN ": batch->offsets[%lld] is %lld; a batch holds at most %lld tokens",
                      (long long)(s + 1), (long long)b->offsets[s + 1], (long long)max_tokens);
  }
  const int64_t n = b->offsets[b->num_seqs];
  if (n > 0 && !b->ids) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": batch->ids is NULL");
  for (int64_t i = 0; i < n; ++i) {
    int32_t id = b->ids[i];
    if (id < 0 || id >= voc->size)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN ": batch->ids[%lld] is %d; the vocabulary's ids are 0 .. %d", (long long)i, id,
                      voc->size - 1);
    if (voc->flags[id] & LMF_TOKEN_UNUSED)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN ": batch->ids[%lld] is %d, an id the vocabulary leaves unused", (long long)i, id);
  }
  if (boundary == LMF_DYNTOK_WORDS && n > 0 && !b->word_ids)
    return lmf_fail(LMF_ERR_NULL_POINTER,
                    FN ": batch->word_ids is NULL; LMF_DYNTOK_WORDS needs a word id per token");
  *num_tokens = n;
  return LMF_OK;
}

lmf_status_t lmf_dyntok_merge(lmf_context_t *ctx, const lmf_vocab_t *vocab, const lmf_dyntok_batch_t *batch,
                              const lmf_dyntok_config_t *config, lmf_dyntok_result_t **out) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": out is NULL");
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": ctx is NULL");
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": vocab is NULL");
  lmf_status_t st = lmf_check_struct(batch, sizeof(lmf_dyntok_batch_t), sizeof(lmf_dyntok_batch_t),
                                     LMF_DYNTOK_BATCH_VERSION, FN ": batch");
  if (st != LMF_OK) return st;
  st = lmf_check_struct(config, LMF_DYNTOK_CONFIG_SIZE_V1, sizeof(lmf_dyntok_config_t),
                        LMF_DYNTOK_CONFIG_VERSION, FN ": config");
  if (st != LMF_OK) return st;
  if (lmf_struct_size_of(config) != LMF_DYNTOK_CONFIG_SIZE_V1 &&
      lmf_struct_size_of(config) != sizeof(lmf_dyntok_config_t))
    return lmf_fail(LMF_ERR_STRUCT_SIZE,
                    FN ": config->struct_size is %zu; this library takes %zu (the first layout) or %zu (use "
                    "LMF_DYNTOK_CONFIG_INIT or lmf_dyntok_config_init)",
                    lmf_struct_size_of(config), (size_t)LMF_DYNTOK_CONFIG_SIZE_V1, sizeof(lmf_dyntok_config_t));
  lmf_dyntok_config_t cfg = LMF_DYNTOK_CONFIG_INIT; /* fields past the caller's struct_size: defaults */
  memcpy(&cfg, config, lmf_struct_size_of(config));
  config = &cfg;
  if (!(config->target_reduction >= 0.0f && config->target_reduction < 1.0f))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    FN ": config->target_reduction is %g; must be 0 (off) or in (0, 1)",
                    (double)config->target_reduction);
  if (config->max_merges < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": config->max_merges is %d, must be >= 0",
                    config->max_merges);
  if (config->boundary != LMF_DYNTOK_PRETOKENS && config->boundary != LMF_DYNTOK_WORDS &&
      config->boundary != LMF_DYNTOK_WHITESPACE)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    FN ": config->boundary is %d; use LMF_DYNTOK_PRETOKENS (0), LMF_DYNTOK_WORDS (1) or "
                    "LMF_DYNTOK_WHITESPACE (2)", config->boundary);
  int64_t n = 0;
  st = check_batch(vocab, batch, config->boundary, &n);
  if (st != LMF_OK) return st;

  lmf_dt_valid *valid = NULL;
  st = lmf_dt_valid_create(&valid, config->boundary, config->pattern, FN);
  if (st != LMF_OK) return st;

  lmf_dt_job job;
  memset(&job, 0, sizeof job);
  job.vocab = vocab;
  job.valid = valid;
  job.num_seqs = batch->num_seqs;
  job.num_tokens = n;
  job.offsets = batch->offsets;
  job.ids = batch->ids;
  job.word_ids = config->boundary == LMF_DYNTOK_WORDS ? batch->word_ids : NULL;
  job.max_merges = config->max_merges;
  job.boundary = config->boundary;
  job.cpu_threads = ctx->cpu_threads;
  job.target_tokens = -1;
  if (config->target_reduction > 0.0f) {
    /* r to 6 decimals, then T = floor((10^6 - r6) N / 10^6) in integers (N < 2^29: no overflow). */
    const int64_t r6 = (int64_t)floor((double)config->target_reduction * 1e6 + 0.5);
    job.target_tokens = (int32_t)(((1000000 - r6) * n) / 1000000);
  }

  struct lmf_dyntok_result *r = NULL;
  st = ctx->backend == LMF_BACKEND_CUDA ? lmf_cuda_dyntok_run(ctx, &job, &r)
                                        : lmf_cpu_dyntok_run(ctx, &job, &r);
  if (st == LMF_OK) {
    st = lmf_dt_result_finish(r, vocab);
    if (st != LMF_OK) lmf_dyntok_result_destroy(r);
  }
  lmf_dt_valid_destroy(valid);
  if (st != LMF_OK) return st;
  *out = r;
  return LMF_OK;
}
