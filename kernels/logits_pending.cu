/* Placeholder for the CUDA backend of lmf_logits_* (host/logits_backend.h) until kernels/logits.cu
 * is written: on a CUDA context the calls fail with LMF_ERR_NOT_COMPILED. It also compiles the shared
 * math (kernels/common/logits_math.h) for the device, so the header stays CUDA-clean. Replace this file
 * in host/CMakeLists.txt's LMF_CUDA_SOURCES with the real kernels. */
#include <cuda_runtime.h>

#include "logits_backend.h"
#include "../kernels/common/logits_math.h"

namespace {

/* Never launched: instantiates the shared math on the device. */
__global__ void lmf_logits_math_compile_check(float *out, uint64_t seed, uint64_t offset) {
  const uint32_t v = threadIdx.x;
  float g = lmf_lg_gumbel(seed, offset, v);
  float d = lmf_lg_gedi_logp(0.5f, -0.5f, 1.0f, 1.0f, -3.0f, -4.0f, 2.0f, 1.0f, 0.0f, 0.0f);
  lmf_lg_ms ms = {lmf_lg_ninf(), 0.0f};
  ms = lmf_lg_ms_add(ms, g);
  float r = lmf_lg_log_residual(-0.5f, -1.0f);
  uint64_t o = lmf_lg_ord_desc(g, v) ^ lmf_lg_ord_asc(d, v);
  out[v] = lmf_lg_term(ms.s, lmf_lg_weight(1.0f, 2.0f), lmf_lg_scale_x(r, 0.5f)) + (float)(o & 1u) +
           lmf_lg_gumbel_key(g, d);
}

lmf_status_t pending(void) {
  return lmf_fail(LMF_ERR_NOT_COMPILED,
                  "the CUDA backend of lmf_logits_* is not built yet; use a CPU context");
}

}  // namespace

extern "C" {

lmf_status_t lmf_cuda_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job,
                                       size_t *bytes) {
  (void)ctx;
  (void)job;
  (void)bytes;
  (void)&lmf_logits_math_compile_check;
  return pending();
}

lmf_status_t lmf_cuda_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  (void)ctx;
  (void)job;
  (void)workspace;
  (void)workspace_bytes;
  (void)stream;
  return pending();
}

}  // extern "C"
