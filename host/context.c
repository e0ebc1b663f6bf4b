/* Contexts: which backend runs the work, on which device, with how many CPU threads. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int lmf_backend_available(int32_t backend) {
  switch (backend) {
    case LMF_BACKEND_AUTO:
    case LMF_BACKEND_CPU: return 1;
    case LMF_BACKEND_CUDA: return lmf_cuda_count_devices() > 0;
    default: return 0;
  }
}

int lmf_cuda_device_count(void) { return lmf_cuda_count_devices(); }

lmf_status_t lmf_context_config_init(lmf_context_config_t *config, size_t struct_size) {
  const lmf_context_config_t d = LMF_CONTEXT_CONFIG_INIT;
  return lmf_init_struct(config, struct_size, &d, sizeof d, "lmf_context_config_init");
}

lmf_status_t lmf_context_create(lmf_context_t **out, const lmf_context_config_t *config) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_context_create: out is NULL");
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  if (config) {
    lmf_status_t st = lmf_check_struct(config, sizeof(lmf_context_config_t),
                                       sizeof(lmf_context_config_t), LMF_CONTEXT_CONFIG_VERSION,
                                       "lmf_context_create: config");
    if (st != LMF_OK) return st;
    memcpy(&cfg, config, lmf_struct_size_of(config));
    cfg.struct_size = sizeof cfg;
  }
  if (cfg.backend < LMF_BACKEND_AUTO || cfg.backend > LMF_BACKEND_CUDA)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_context_create: config->backend is %d; use "
                    "LMF_BACKEND_AUTO (0), LMF_BACKEND_CPU (1) or LMF_BACKEND_CUDA (2)", cfg.backend);
  if (cfg.device < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_context_create: config->device is %d, must be >= 0",
                    cfg.device);
  if (cfg.cpu_threads < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "lmf_context_create: config->cpu_threads is %d, must be >= 0 (0 = default)",
                    cfg.cpu_threads);

  struct lmf_context ctx = {LMF_BACKEND_CPU, cfg.device, cfg.cpu_threads, NULL, NULL};
  if (cfg.backend == LMF_BACKEND_CUDA || cfg.backend == LMF_BACKEND_AUTO) {
    if (!lmf_cuda_compiled()) {
      if (cfg.backend == LMF_BACKEND_CUDA)
        return lmf_fail(LMF_ERR_NOT_COMPILED,
                        "lmf_context_create: LMF_BACKEND_CUDA asked for, but this liblmfuse was built "
                        "without CUDA (LMF_CUDA=OFF)");
    } else {
      int count = lmf_cuda_count_devices();
      if (count > cfg.device) {
        ctx.backend = LMF_BACKEND_CUDA;
      } else if (cfg.backend == LMF_BACKEND_CUDA) {
        if (count == 0)
          return lmf_fail(LMF_ERR_NO_DEVICE, "lmf_context_create: LMF_BACKEND_CUDA asked for, but no "
                          "CUDA device or driver is present on this machine");
        return lmf_fail(LMF_ERR_NO_DEVICE, "lmf_context_create: config->device is %d but only %d CUDA "
                        "device(s) are present", cfg.device, count);
      }
    }
  }
  if (ctx.backend == LMF_BACKEND_CUDA) {
    lmf_status_t st = lmf_cuda_context_init(&ctx);
    if (st != LMF_OK) return st;
  }
  lmf_context_t *c = (lmf_context_t *)malloc(sizeof *c);
  if (!c) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_context_create: out of host memory");
  *c = ctx;
  *out = c;
  return LMF_OK;
}

void lmf_context_destroy(lmf_context_t *ctx) {
  if (!ctx) return;
  if (ctx->cuda_cache || ctx->cuda_hypernet_cache) lmf_cuda_context_release(ctx);
  free(ctx);
}

lmf_status_t lmf_context_backend(const lmf_context_t *ctx, int32_t *backend) {
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_context_backend: ctx is NULL");
  if (!backend) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_context_backend: backend is NULL");
  *backend = ctx->backend;
  return LMF_OK;
}

lmf_status_t lmf_stream_synchronize(lmf_context_t *ctx, lmf_stream_t stream) {
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_stream_synchronize: ctx is NULL");
  if (ctx->backend == LMF_BACKEND_CUDA) return lmf_cuda_stream_sync(ctx, stream);
  return LMF_OK;
}
