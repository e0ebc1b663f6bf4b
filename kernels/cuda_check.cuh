/* Host-side helpers the CUDA backends share: an error message naming the CUDA call, the device and
 * the error; the launch check after <<<...>>>; grid sizes for grid-stride kernels. The family
 * backends in kernels/ include it; the functions are static inline. */
#ifndef LMF_KERNELS_CUDA_CHECK_CUH
#define LMF_KERNELS_CUDA_CHECK_CUH

#include <cuda_runtime.h>

#include <stdint.h>

#include "internal.h"

/* Blocks of one launch at most; kernels stride past it. */
static constexpr int64_t kMaxGrid = (int64_t)1 << 20;

/* Clears the sticky error and records "fn: call failed on device d: message (name)". */
static inline lmf_status_t cuda_fail(lmf_status_t st, const char *fn, const char *call, int device,
                                     cudaError_t e) {
  (void)cudaGetLastError();
  return lmf_fail(st, "%s: %s failed on device %d: %s (%s)", fn, call, device, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}

static inline lmf_status_t set_device(int device, const char *fn) {
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return cuda_fail(LMF_ERR_CUDA, fn, "cudaSetDevice", device, e);
  return LMF_OK;
}

/* After a <<<...>>>: the launch's error, naming the kernel. */
static inline lmf_status_t launched(const char *fn, const char *kernel, int device) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    return lmf_fail(LMF_ERR_CUDA, "%s: launch of %s failed on device %d: %s (%s)", fn, kernel, device,
                    cudaGetErrorString(e), cudaGetErrorName(e));
  return LMF_OK;
}

/* Blocks for `work` items (>= 1), at most kMaxGrid. */
static inline unsigned grid_for(int64_t work) {
  return (unsigned)(work < 1 ? 1 : work < kMaxGrid ? work : kMaxGrid);
}

#endif
