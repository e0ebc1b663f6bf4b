/* MeZO plans: validate the tensor list once, cut it into chunks, copy the tables to the backend. */
#include <stdlib.h>
#include <string.h>

#include "mezo_plan.h"

lmf_status_t lmf_mezo_config_init(lmf_mezo_config_t *config, size_t struct_size) {
  const lmf_mezo_config_t d = LMF_MEZO_CONFIG_INIT;
  return lmf_init_struct(config, struct_size, &d, sizeof d, "lmf_mezo_config_init");
}

typedef struct span {
  uintptr_t begin, end;
  size_t tensor;
  int is_master;
} span;

static int span_cmp(const void *a, const void *b) {
  const span *x = (const span *)a, *y = (const span *)b;
  return (x->begin > y->begin) - (x->begin < y->begin);
}

/* Every data and master range must be disjoint from every other. */
static lmf_status_t check_overlaps(const lmf_mezo_tensor_t *t, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i) count += t[i].master ? 2 : 1;
  span *s = (span *)malloc(count * sizeof *s);
  if (!s) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_mezo_plan_create: out of host memory");
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    uintptr_t b = (uintptr_t)t[i].data;
    s[k++] = (span){b, b + (uintptr_t)t[i].numel * lmf_dtype_size(t[i].dtype), i, 0};
    if (t[i].master) {
      uintptr_t m = (uintptr_t)t[i].master;
      s[k++] = (span){m, m + (uintptr_t)t[i].numel * 4u, i, 1};
    }
  }
  qsort(s, count, sizeof *s, span_cmp);
  lmf_status_t st = LMF_OK;
  for (size_t i = 1; i < count; ++i) {
    if (s[i].begin < s[i - 1].end) {
      st = lmf_fail(LMF_ERR_OVERLAP,
                    "lmf_mezo_plan_create: the %s of tensor %zu overlaps the %s of tensor %zu",
                    s[i].is_master ? "master" : "data", s[i].tensor,
                    s[i - 1].is_master ? "master" : "data", s[i - 1].tensor);
      break;
    }
  }
  free(s);
  return st;
}

static lmf_status_t check_tensor(const lmf_mezo_tensor_t *t, size_t i) {
  if (!t->data) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_create: tensors[%zu].data is NULL", i);
  if (!lmf_is_float_dtype(t->dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE,
                    "lmf_mezo_plan_create: tensors[%zu].dtype is %d (%s); MeZO takes f32, f16 or bf16",
                    i, t->dtype, lmf_dtype_name(t->dtype));
  if (t->numel < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_mezo_plan_create: tensors[%zu].numel is %lld, must be >= 1",
                    i, (long long)t->numel);
  if (t->global_offset < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "lmf_mezo_plan_create: tensors[%zu].global_offset is %lld, must be >= 0", i,
                    (long long)t->global_offset);
  /* numel * 4 bytes must fit the address space, and offset + numel must fit 62 bits (Philox group). */
  if (t->numel > (INT64_MAX >> 3) || t->global_offset > (INT64_MAX >> 2) - t->numel)
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "lmf_mezo_plan_create: tensors[%zu]: numel %lld + global_offset %lld overflows", i,
                    (long long)t->numel, (long long)t->global_offset);
  uintptr_t b = (uintptr_t)t->data;
  if ((uint64_t)t->numel * lmf_dtype_size(t->dtype) > UINTPTR_MAX - b)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_mezo_plan_create: tensors[%zu] wraps the address space", i);
  if (b % lmf_dtype_size(t->dtype) != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: tensors[%zu].data is not aligned to "
                    "its %zu-byte element", i, lmf_dtype_size(t->dtype));
  if (t->master && (uintptr_t)t->master % 4 != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: tensors[%zu].master is not 4-byte "
                    "aligned", i);
  if (t->weight_decay != 0 && t->weight_decay != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: tensors[%zu].weight_decay is %d, "
                    "must be 0 or 1", i, t->weight_decay);
  if (t->reserved != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: tensors[%zu].reserved must be 0", i);
  return LMF_OK;
}

static void plan_free(lmf_mezo_plan_t *p) {
  if (!p) return;
  if (p->ctx && p->ctx->backend == LMF_BACKEND_CUDA) {
    lmf_cuda_free(p->ctx, p->d_tensors);
    lmf_cuda_free(p->ctx, p->d_chunks);
  }
  free(p->tensors);
  free(p->chunks);
  free(p);
}

lmf_status_t lmf_mezo_plan_create(lmf_mezo_plan_t **out, lmf_context_t *ctx,
                                  const lmf_mezo_tensor_t *tensors, size_t num_tensors,
                                  const lmf_mezo_config_t *config) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_create: out is NULL");
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_create: ctx is NULL");
  if (num_tensors > 0 && !tensors)
    return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_create: tensors is NULL with num_tensors = %zu",
                    num_tensors);
  if (num_tensors > UINT32_MAX)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_mezo_plan_create: num_tensors %zu exceeds 2^32 - 1",
                    num_tensors);
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  if (config) {
    lmf_status_t st = lmf_check_struct(config, sizeof(lmf_mezo_config_t), sizeof(lmf_mezo_config_t), LMF_MEZO_CONFIG_VERSION,
                                       "lmf_mezo_plan_create: config");
    if (st != LMF_OK) return st;
    memcpy(&cfg, config, lmf_struct_size_of(config));
  }
  if (cfg.dist != LMF_MEZO_GAUSSIAN && cfg.dist != LMF_MEZO_RADEMACHER)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: config->dist is %d; use "
                    "LMF_MEZO_GAUSSIAN (0) or LMF_MEZO_RADEMACHER (1)", cfg.dist);
  if (cfg.rounding != LMF_ROUND_NEAREST && cfg.rounding != LMF_ROUND_STOCHASTIC)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_plan_create: config->rounding is %d; use "
                    "LMF_ROUND_NEAREST (0) or LMF_ROUND_STOCHASTIC (1)", cfg.rounding);

  int64_t total = 0, num_chunks = 0;
  for (size_t i = 0; i < num_tensors; ++i) {
    lmf_status_t st = check_tensor(&tensors[i], i);
    if (st != LMF_OK) return st;
    if (total > INT64_MAX - tensors[i].numel)
      return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_mezo_plan_create: total numel overflows");
    total += tensors[i].numel;
    num_chunks += (tensors[i].numel + LMF_MEZO_CHUNK_ELEMS - 1) / LMF_MEZO_CHUNK_ELEMS;
  }
  if (num_tensors > 0) {
    lmf_status_t st = check_overlaps(tensors, num_tensors);
    if (st != LMF_OK) return st;
  }

  lmf_mezo_plan_t *p = (lmf_mezo_plan_t *)calloc(1, sizeof *p);
  if (!p) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_mezo_plan_create: out of host memory");
  p->ctx = ctx;
  p->dist = cfg.dist;
  p->rounding = cfg.rounding;
  p->num_tensors = num_tensors;
  p->numel = total;
  p->num_chunks = num_chunks;
  p->tensors = (lmf_mezo_tdesc *)calloc(num_tensors ? num_tensors : 1, sizeof *p->tensors);
  p->chunks = (lmf_mezo_chunk *)calloc(num_chunks ? (size_t)num_chunks : 1, sizeof *p->chunks);
  if (!p->tensors || !p->chunks) {
    plan_free(p);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_mezo_plan_create: out of host memory");
  }
  int64_t c = 0;
  for (size_t i = 0; i < num_tensors; ++i) {
    const lmf_mezo_tensor_t *t = &tensors[i];
    lmf_mezo_tdesc *d = &p->tensors[i];
    d->data = t->data;
    d->master = t->master;
    d->numel = t->numel;
    d->goff = t->global_offset;
    d->uid = t->uid;
    d->dtype = t->dtype;
    d->decay = t->weight_decay;
    d->vec_ok = ((uintptr_t)t->data % 16 == 0) && ((uintptr_t)t->master % 16 == 0) &&
                (t->global_offset % 4 == 0);
    if (t->master) p->has_master = 1;
    for (int64_t b = 0; b < t->numel; b += LMF_MEZO_CHUNK_ELEMS, ++c) {
      p->chunks[c].tensor = (uint32_t)i;
      p->chunks[c].begin = b;
      p->chunks[c].end = (t->numel - b < LMF_MEZO_CHUNK_ELEMS) ? t->numel : b + LMF_MEZO_CHUNK_ELEMS;
    }
  }
  if (ctx->backend == LMF_BACKEND_CUDA && num_tensors > 0) {
    size_t tb = num_tensors * sizeof *p->tensors, cb = (size_t)num_chunks * sizeof *p->chunks;
    lmf_status_t st = lmf_cuda_alloc(ctx, (void **)&p->d_tensors, tb);
    if (st == LMF_OK) st = lmf_cuda_alloc(ctx, (void **)&p->d_chunks, cb);
    if (st == LMF_OK) st = lmf_cuda_upload(ctx, p->d_tensors, p->tensors, tb);
    if (st == LMF_OK) st = lmf_cuda_upload(ctx, p->d_chunks, p->chunks, cb);
    if (st != LMF_OK) {
      plan_free(p);
      return st;
    }
  } else if (ctx->backend != LMF_BACKEND_CUDA) {
    p->d_tensors = p->tensors; /* the CPU backend reads the host tables */
    p->d_chunks = p->chunks;
  } /* an empty CUDA plan has no device tables: its passes launch nothing */
  *out = p;
  return LMF_OK;
}

void lmf_mezo_plan_destroy(lmf_mezo_plan_t *plan) { plan_free(plan); }

lmf_status_t lmf_mezo_plan_numel(const lmf_mezo_plan_t *plan, int64_t *numel) {
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_numel: plan is NULL");
  if (!numel) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_numel: numel is NULL");
  *numel = plan->numel;
  return LMF_OK;
}

lmf_status_t lmf_mezo_plan_perturbation(const lmf_mezo_plan_t *plan, uint64_t *seed, float *offset) {
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_perturbation: plan is NULL");
  if (!seed || !offset)
    return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_plan_perturbation: %s is NULL", seed ? "offset" : "seed");
  *seed = plan->pert_seed;
  *offset = plan->pert_offset;
  return LMF_OK;
}

lmf_status_t lmf_mezo_run_pass(lmf_mezo_plan_t *plan, const lmf_mezo_pass *pass, const float *grad_ptr,
                               int32_t *skipped_ptr, lmf_stream_t stream) {
  if (plan->ctx->backend == LMF_BACKEND_CUDA)
    return lmf_cuda_mezo_pass(plan->ctx, plan->d_tensors, plan->d_chunks, plan->num_chunks, pass,
                              grad_ptr, skipped_ptr, stream);
  return lmf_cpu_mezo_pass(plan->ctx, plan->tensors, plan->chunks, plan->num_chunks, pass, grad_ptr,
                           skipped_ptr);
}
