/* The CUDA entry points of a CPU-only build (LMF_CUDA=OFF or no nvcc): CUDA is never available. With
 * LMF_CUDA_EMU: those of the families the emulated-CUDA test library (tests/emu) does not emulate. */
#include "dyntok_backend.h"
#include "hypernet_internal.h"
#include "internal.h"
#include "logits_backend.h"
#include "mezo_backend.h"

static lmf_status_t not_compiled(void) {
  return lmf_fail(LMF_ERR_NOT_COMPILED, "this liblmfuse was built without CUDA (LMF_CUDA=OFF)");
}

#if defined(LMF_CUDA_EMU)
/* The emulated-CUDA test library (tests/emu) has the real kernels/cuda_context.cu and kernels/logits.cu;
 * the other families stay uncompiled, so their device caches are never made. */
void lmf_cuda_dyntok_cache_free(const struct lmf_context *ctx, void *cache);
void lmf_cuda_hypernet_cache_free(const struct lmf_context *ctx, void *cache);
void lmf_cuda_dyntok_cache_free(const struct lmf_context *ctx, void *cache) { (void)ctx; (void)cache; }
void lmf_cuda_hypernet_cache_free(const struct lmf_context *ctx, void *cache) { (void)ctx; (void)cache; }
#else
int lmf_cuda_compiled(void) { return 0; }
int lmf_cuda_count_devices(void) { return 0; }
lmf_status_t lmf_cuda_context_init(struct lmf_context *ctx) { (void)ctx; return not_compiled(); }
lmf_status_t lmf_cuda_stream_sync(const struct lmf_context *ctx, lmf_stream_t stream) {
  (void)ctx; (void)stream;
  return not_compiled();
}
lmf_status_t lmf_cuda_alloc(const struct lmf_context *ctx, void **ptr, size_t bytes) {
  (void)ctx; (void)ptr; (void)bytes;
  return not_compiled();
}
void lmf_cuda_free(const struct lmf_context *ctx, void *ptr) { (void)ctx; (void)ptr; }
lmf_status_t lmf_cuda_upload(const struct lmf_context *ctx, void *dst, const void *src, size_t bytes) {
  (void)ctx; (void)dst; (void)src; (void)bytes;
  return not_compiled();
}
#endif
lmf_status_t lmf_cuda_mezo_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                const lmf_mezo_pass *pass, const float *grad_ptr,
                                int32_t *skipped_ptr, lmf_stream_t stream) {
  (void)ctx; (void)tensors; (void)chunks; (void)num_chunks; (void)pass; (void)grad_ptr;
  (void)skipped_ptr; (void)stream;
  return not_compiled();
}
lmf_status_t lmf_cuda_mezo_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                 const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                 const lmf_mezo_multi_pass *pass, const float *coeffs_ptr,
                                 int32_t *skipped_ptr, lmf_stream_t stream) {
  (void)ctx; (void)tensors; (void)chunks; (void)num_chunks; (void)pass; (void)coeffs_ptr;
  (void)skipped_ptr; (void)stream;
  return not_compiled();
}
lmf_status_t lmf_cuda_mezo_fill_z(const struct lmf_context *ctx, int32_t dist, uint64_t seed,
                                  uint32_t uid, int64_t goff, int64_t n, float *out,
                                  lmf_stream_t stream) {
  (void)ctx; (void)dist; (void)seed; (void)uid; (void)goff; (void)n; (void)out; (void)stream;
  return not_compiled();
}
#if !defined(LMF_CUDA_EMU)
lmf_status_t lmf_cuda_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job,
                                       size_t *bytes) {
  (void)ctx; (void)job; (void)bytes;
  return not_compiled();
}
lmf_status_t lmf_cuda_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  (void)ctx; (void)job; (void)workspace; (void)workspace_bytes; (void)stream;
  return not_compiled();
}
void lmf_cuda_context_release(struct lmf_context *ctx) { (void)ctx; }
#endif
lmf_status_t lmf_cuda_dyntok_run(const struct lmf_context *ctx, const lmf_dt_job *job,
                                 struct lmf_dyntok_result **out) {
  (void)ctx; (void)job; (void)out;
  return not_compiled();
}
lmf_status_t lmf_cuda_hn_build(struct lmf_hypernet *h, const lmf_hn_entry *e, size_t n, void *const *handles,
                               const lmf_hn_source *src, const char *fn) {
  (void)h; (void)e; (void)n; (void)handles; (void)src; (void)fn;
  return not_compiled();
}
void lmf_cuda_hn_free(struct lmf_hypernet *h) { (void)h; }
lmf_status_t lmf_cuda_hn_workspace(const struct lmf_hypernet *h, int64_t num_tokens, int32_t surface_len,
                                   size_t *bytes, const char *fn) {
  (void)h; (void)num_tokens; (void)surface_len; (void)bytes; (void)fn;
  return not_compiled();
}
lmf_status_t lmf_cuda_hn_check_memory(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a,
                                      const void *workspace, const char *fn) {
  (void)h; (void)a; (void)workspace; (void)fn;
  return not_compiled();
}
lmf_status_t lmf_cuda_hn_predict(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  (void)h; (void)a; (void)workspace; (void)workspace_bytes; (void)stream;
  return not_compiled();
}
lmf_status_t lmf_cuda_locate(const lmf_context_t *ctx, const void *p, const char *name, int want,
                             int *on_device, const char *fn) {
  (void)ctx; (void)p; (void)name; (void)want; (void)on_device; (void)fn;
  return not_compiled();
}
lmf_status_t lmf_cuda_fvt_predict(const lmf_context_t *ctx, const lmf_fvt_args_t *a, lmf_stream_t stream) {
  (void)ctx; (void)a; (void)stream;
  return not_compiled();
}
lmf_status_t lmf_cuda_embed_gather(const lmf_context_t *ctx, const lmf_embed_gather *g, lmf_stream_t stream,
                                   const char *fn) {
  (void)ctx; (void)g; (void)stream; (void)fn;
  return not_compiled();
}
lmf_status_t lmf_cuda_copy(const lmf_context_t *ctx, void *dst, const void *src, size_t bytes,
                           lmf_stream_t stream, const char *fn) {
  (void)ctx; (void)dst; (void)src; (void)bytes; (void)stream; (void)fn;
  return not_compiled();
}
lmf_status_t lmf_cuda_sync(const lmf_context_t *ctx, lmf_stream_t stream, const char *fn) {
  (void)ctx; (void)stream; (void)fn;
  return not_compiled();
}
