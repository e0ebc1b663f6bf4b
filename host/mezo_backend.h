/* Internal to liblmfuse: what the MeZO host layer (host/mezo_*.c) asks of a backend. The host layer has
 * validated every argument; backends only compute. */
#ifndef LMF_HOST_MEZO_BACKEND_H
#define LMF_HOST_MEZO_BACKEND_H

#include "internal.h"
#include "../kernels/common/mezo_math.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One tensor of a plan, as the backends see it. */
typedef struct lmf_mezo_tdesc {
  void *data;
  float *master;      /* NULL: none */
  int64_t numel;
  int64_t goff;       /* global offset of data[0] */
  uint32_t uid;
  int32_t dtype;
  int32_t decay;      /* 1: weight decay applies */
  int32_t vec_ok;     /* 1: data (and master) 16-byte aligned and goff % 4 == 0: vector fast path */
} lmf_mezo_tdesc;

/* A slice of one tensor, the unit of work of one CUDA block / one OpenMP iteration. */
typedef struct lmf_mezo_chunk {
  uint32_t tensor;
  uint32_t pad;
  int64_t begin; /* local element range [begin, end) */
  int64_t end;
} lmf_mezo_chunk;

/* Elements per chunk: a multiple of 8 (so chunk starts keep 16-byte alignment for every dtype). */
#define LMF_MEZO_CHUNK_ELEMS ((int64_t)1 << 16)

/* A multi-seed update, by value. */
typedef struct lmf_mezo_multi_pass {
  uint64_t seeds[64]; /* LMF_MEZO_MAX_SEEDS */
  float coeffs[64];   /* host coefficients, unless a coefficient pointer is given */
  int32_t num_seeds;
  int32_t dist;
  float lr;
  float decay;
  uint32_t nonce;
  int32_t stochastic;
} lmf_mezo_multi_pass;

/* CPU backend (host/cpu/mezo_cpu.c). Pointers are host memory. */
lmf_status_t lmf_cpu_mezo_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                               const lmf_mezo_chunk *chunks, int64_t num_chunks,
                               const lmf_mezo_pass *pass, const float *grad_ptr, int32_t *skipped_ptr);
lmf_status_t lmf_cpu_mezo_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                const lmf_mezo_multi_pass *pass, const float *coeffs_ptr,
                                int32_t *skipped_ptr);
lmf_status_t lmf_cpu_mezo_fill_z(const struct lmf_context *ctx, int32_t dist, uint64_t seed,
                                 uint32_t uid, int64_t goff, int64_t n, float *out);

/* CUDA backend (kernels/mezo.cu). `tensors` and `chunks` are the plan's tables in device memory,
 * uploaded once at plan creation; grad_ptr, coeffs_ptr, skipped_ptr and out are device memory. */
lmf_status_t lmf_cuda_mezo_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                const lmf_mezo_pass *pass, const float *grad_ptr,
                                int32_t *skipped_ptr, lmf_stream_t stream);
lmf_status_t lmf_cuda_mezo_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                 const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                 const lmf_mezo_multi_pass *pass, const float *coeffs_ptr,
                                 int32_t *skipped_ptr, lmf_stream_t stream);
lmf_status_t lmf_cuda_mezo_fill_z(const struct lmf_context *ctx, int32_t dist, uint64_t seed,
                                  uint32_t uid, int64_t goff, int64_t n, float *out,
                                  lmf_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif
