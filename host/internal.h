/* Internal to liblmfuse: the context, the error helpers and argument checks shared by every family. */
#ifndef LMF_HOST_INTERNAL_H
#define LMF_HOST_INTERNAL_H

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lmf_context {
  int32_t backend;     /* LMF_BACKEND_CPU or LMF_BACKEND_CUDA, never AUTO */
  int32_t device;      /* CUDA device ordinal */
  int32_t cpu_threads; /* 0: OpenMP default */
  void *cuda_cache;    /* CUDA contexts: device-side caches of the backends (kernels/), made on first
                          use, freed by lmf_cuda_context_release(); NULL until then */
  void *cuda_hypernet_cache; /* CUDA contexts: the hypernet backend's cuBLAS handles (kernels/hypernet.cu),
                                made on first use, freed by lmf_cuda_context_release(); NULL until then */
};

#if defined(__GNUC__)
#define LMF_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LMF_PRINTF(a, b)
#endif

/* Records a thread-local message for lmf_last_error() and returns status, for `return lmf_fail(...)`. */
lmf_status_t lmf_fail(lmf_status_t status, const char *fmt, ...) LMF_PRINTF(2, 3);

/* Validates a config struct header: NULL-ness, struct_size between min_size and max_size, version
 * between 1 and max_version. `what` names the argument in the message. */
lmf_status_t lmf_check_struct(const void *ptr, size_t min_size, size_t max_size, uint32_t max_version,
                              const char *what);

/* The body of every *_init(ptr, struct_size) function: copies struct_size bytes of `defaults` (a struct
 * of lib_size bytes whose struct_size field is set) to dst and writes struct_size into its header. */
lmf_status_t lmf_init_struct(void *dst, size_t caller_size, const void *defaults, size_t lib_size,
                             const char *what);

/* Reads the struct_size/version header of a config struct (assumed valid). */
size_t lmf_struct_size_of(const void *ptr);

/* 1 if the field ending at byte `end` lies within a caller struct of size struct_size. */
#define LMF_HAS_FIELD(struct_size, type, field) \
  ((struct_size) >= offsetof(type, field) + sizeof(((type *)0)->field))

/* 1 if `dtype` is f32, f16 or bf16. */
int lmf_is_float_dtype(int32_t dtype);

/* ---- CUDA backend entry points (kernels/ *.cu, or host/cuda_stub.c in a CPU-only build) ---- */
int lmf_cuda_compiled(void);
int lmf_cuda_count_devices(void);
lmf_status_t lmf_cuda_context_init(struct lmf_context *ctx);
lmf_status_t lmf_cuda_stream_sync(const struct lmf_context *ctx, lmf_stream_t stream);
lmf_status_t lmf_cuda_alloc(const struct lmf_context *ctx, void **ptr, size_t bytes);
void lmf_cuda_free(const struct lmf_context *ctx, void *ptr);
lmf_status_t lmf_cuda_upload(const struct lmf_context *ctx, void *dst, const void *src, size_t bytes);
/* Streaming multiprocessors of `device` (cached per device); `fn` names the caller in the message. */
lmf_status_t lmf_cuda_sm_count(int device, const char *fn, int *out);
/* Frees ctx->cuda_cache and ctx->cuda_hypernet_cache (lmf_context_destroy); a no-op when there are none. */
void lmf_cuda_context_release(struct lmf_context *ctx);

#ifdef __cplusplus
}
#endif

#endif
