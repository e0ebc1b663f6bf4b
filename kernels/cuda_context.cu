/* The CUDA backend's context, memory and stream entry points (declared in host/internal.h).
 * The runtime is linked statically and touched only from these calls, never at load time, so the
 * library loads and runs on the CPU where no driver is installed. */
#include <cuda_runtime.h>

#include <atomic>

#include "internal.h"

namespace {

/* An empty kernel built with the library's architectures: if the device cannot run it, it cannot run
 * any of our kernels. */
__global__ void lmf_probe_kernel() {}

bool is_no_device_error(cudaError_t e) {
  return e == cudaErrorNoDevice || e == cudaErrorInvalidDevice || e == cudaErrorInsufficientDriver ||
         e == cudaErrorDevicesUnavailable || e == cudaErrorCompatNotSupportedOnDevice ||
         e == cudaErrorSystemDriverMismatch || e == cudaErrorNoKernelImageForDevice ||
         e == cudaErrorUnsupportedPtxVersion || e == cudaErrorInvalidDeviceFunction;
}

/* Records the failure of `call` and clears the runtime's last (non-sticky) error. */
lmf_status_t cuda_fail(lmf_status_t st, const char *fn, const char *call, int device, cudaError_t e) {
  (void)cudaGetLastError();
  return lmf_fail(st, "%s: %s failed on device %d: %s (%s)", fn, call, device, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}

lmf_status_t set_device(const struct lmf_context *ctx, const char *fn) {
  cudaError_t e = cudaSetDevice(ctx->device);
  if (e != cudaSuccess)
    return cuda_fail(is_no_device_error(e) ? LMF_ERR_NO_DEVICE : LMF_ERR_CUDA, fn, "cudaSetDevice",
                     ctx->device, e);
  return LMF_OK;
}

}  // namespace

extern "C" {

int lmf_cuda_compiled(void) { return 1; }

/* Cached per device: attribute queries are cheap, but launches are many. 0 = not cached yet. */
static std::atomic<int> g_sm_count[64];

lmf_status_t lmf_cuda_sm_count(int device, const char *fn, int *out) {
  const bool cached = device >= 0 && device < 64;
  if (cached) {
    const int c = g_sm_count[device].load(std::memory_order_relaxed);
    if (c > 0) {
      *out = c;
      return LMF_OK;
    }
  }
  int c = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess || c < 1) {
    (void)cudaGetLastError();
    return lmf_fail(LMF_ERR_CUDA, "%s: cudaDeviceGetAttribute(MultiProcessorCount) failed on device %d: %s",
                    fn, device, cudaGetErrorString(e));
  }
  if (cached) g_sm_count[device].store(c, std::memory_order_relaxed);
  *out = c;
  return LMF_OK;
}

int lmf_cuda_count_devices(void) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError(); /* no driver / no device: not an error for the caller */
    return 0;
  }
  return n < 0 ? 0 : n;
}

lmf_status_t lmf_cuda_context_init(struct lmf_context *ctx) {
  const char *fn = "lmf_context_create";
  if (!ctx) return lmf_fail(LMF_ERR_INTERNAL, "%s: NULL context", fn);
  lmf_status_t st = set_device(ctx, fn);
  if (st != LMF_OK) return st;
  cudaFuncAttributes attr;
  cudaError_t e = cudaFuncGetAttributes(&attr, lmf_probe_kernel);
  if (e != cudaSuccess) {
    int major = 0, minor = 0;
    (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, ctx->device);
    (void)cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, ctx->device);
    (void)cudaGetLastError();
    return lmf_fail(is_no_device_error(e) ? LMF_ERR_NO_DEVICE : LMF_ERR_CUDA,
                    "%s: device %d (compute capability %d.%d) cannot run this liblmfuse's kernels: %s "
                    "(%s); rebuild with CMAKE_CUDA_ARCHITECTURES including it",
                    fn, ctx->device, major, minor, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  return LMF_OK;
}

lmf_status_t lmf_cuda_stream_sync(const struct lmf_context *ctx, lmf_stream_t stream) {
  const char *fn = "lmf_stream_synchronize";
  lmf_status_t st = set_device(ctx, fn);
  if (st != LMF_OK) return st;
  cudaError_t e = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return cuda_fail(LMF_ERR_CUDA, fn, "cudaStreamSynchronize", ctx->device, e);
  return LMF_OK;
}

lmf_status_t lmf_cuda_alloc(const struct lmf_context *ctx, void **ptr, size_t bytes) {
  const char *fn = "lmfuse device allocation";
  *ptr = NULL;
  if (bytes == 0) return LMF_OK;
  lmf_status_t st = set_device(ctx, fn);
  if (st != LMF_OK) return st;
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    if (e == cudaErrorMemoryAllocation)
      return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: cudaMalloc of %zu bytes failed on device %d: %s", fn,
                      bytes, ctx->device, cudaGetErrorString(e));
    return lmf_fail(LMF_ERR_CUDA, "%s: cudaMalloc of %zu bytes failed on device %d: %s (%s)", fn, bytes,
                    ctx->device, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  *ptr = p;
  return LMF_OK;
}

void lmf_cuda_free(const struct lmf_context *ctx, void *ptr) {
  if (!ptr || !ctx) return;
  if (cudaSetDevice(ctx->device) != cudaSuccess || cudaFree(ptr) != cudaSuccess)
    (void)cudaGetLastError(); /* a destroy path: nothing to report to */
}

/* kernels/dyntok.cu: frees the batch-merging caches (vocabulary, class table, workspace, stream). */
void lmf_cuda_dyntok_cache_free(const struct lmf_context *ctx, void *cache);
/* kernels/hypernet.cu: destroys the hypernet backend's cuBLAS handles. */
void lmf_cuda_hypernet_cache_free(const struct lmf_context *ctx, void *cache);

void lmf_cuda_context_release(struct lmf_context *ctx) {
  if (!ctx) return;
  if (ctx->cuda_cache) {
    lmf_cuda_dyntok_cache_free(ctx, ctx->cuda_cache);
    ctx->cuda_cache = NULL;
  }
  if (ctx->cuda_hypernet_cache) {
    lmf_cuda_hypernet_cache_free(ctx, ctx->cuda_hypernet_cache);
    ctx->cuda_hypernet_cache = NULL;
  }
}

lmf_status_t lmf_cuda_upload(const struct lmf_context *ctx, void *dst, const void *src, size_t bytes) {
  const char *fn = "lmfuse device upload";
  if (bytes == 0) return LMF_OK;
  lmf_status_t st = set_device(ctx, fn);
  if (st != LMF_OK) return st;
  cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) return cuda_fail(LMF_ERR_CUDA, fn, "cudaMemcpy (host to device)", ctx->device, e);
  return LMF_OK;
}

}  // extern "C"
