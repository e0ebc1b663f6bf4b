/* Helpers for the C test bodies (see lmf_test_util.h). */
#include "lmf_test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(LMF_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

lmf_context_t *lt_context(int32_t backend, int32_t threads) {
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  cfg.backend = backend;
  cfg.cpu_threads = threads;
  lmf_context_t *ctx = NULL;
  if (!LMF_CHECK_OK(lmf_context_create(&ctx, &cfg))) return NULL;
  int32_t got = -1;
  LMF_CHECK_OK(lmf_context_backend(ctx, &got));
  if (backend != LMF_BACKEND_AUTO) LMF_CHECK_EQ_INT(got, backend);
  return ctx;
}

int lt_is_cuda(const lmf_context_t *ctx) {
  int32_t b = LMF_BACKEND_CPU;
  if (lmf_context_backend(ctx, &b) != LMF_OK) return 0;
  return b == LMF_BACKEND_CUDA;
}

int lt_cuda_usable(void) {
#if defined(LMF_HAVE_CUDA)
  return lmf_backend_available(LMF_BACKEND_CUDA);
#else
  return 0;
#endif
}

void *lt_malloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  LMF_CHECK_MSG(p != NULL, "host allocation of %zu bytes failed", bytes);
  return p;
}

void *lt_alloc(const lmf_context_t *ctx, size_t bytes) {
  if (!lt_is_cuda(ctx)) return lt_malloc(bytes);
#if defined(LMF_HAVE_CUDA)
  void *p = NULL;
  cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
  if (!LMF_CHECK_MSG(e == cudaSuccess, "cudaMalloc(%zu): %s", bytes, cudaGetErrorString(e))) return NULL;
  return p;
#else
  LMF_CHECK_MSG(0, "a CUDA context in a build without LMF_HAVE_CUDA");
  return NULL;
#endif
}

void lt_free(const lmf_context_t *ctx, void *p) {
  if (!p) return;
  if (!lt_is_cuda(ctx)) {
    free(p);
    return;
  }
#if defined(LMF_HAVE_CUDA)
  cudaFree(p);
#endif
}

static int copy(lmf_context_t *ctx, void *dst, const void *src, size_t bytes, int to_device) {
  if (!LMF_CHECK_OK(lmf_stream_synchronize(ctx, NULL))) return 0;
  if (!lt_is_cuda(ctx)) {
    memmove(dst, src, bytes);
    return 1;
  }
#if defined(LMF_HAVE_CUDA)
  cudaError_t e = cudaMemcpy(dst, src, bytes, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost);
  if (e == cudaSuccess) return 1;
  struct cudaPointerAttributes attr;
  const void *dev = to_device ? dst : src;
  cudaError_t ea = cudaPointerGetAttributes(&attr, dev);
  return LMF_CHECK_MSG(0, "cudaMemcpy(%p <- %p, %zu bytes, %s): %s; device pointer %s (type %d)", dst, src, bytes,
                       to_device ? "H2D" : "D2H", cudaGetErrorString(e),
                       ea == cudaSuccess ? "known" : cudaGetErrorString(ea), ea == cudaSuccess ? (int)attr.type : -1);
#else
  (void)to_device;
  return LMF_CHECK_MSG(0, "a CUDA context in a build without LMF_HAVE_CUDA");
#endif
}

lmf_status_t lt_graph_run(lmf_context_t *ctx, lmf_status_t (*fn)(void *arg, lmf_stream_t stream), void *arg,
                          int replays) {
  if (!lt_is_cuda(ctx)) return fn(arg, NULL);
#if defined(LMF_HAVE_CUDA)
  cudaStream_t s = NULL;
  cudaGraph_t g = NULL;
  cudaGraphExec_t ge = NULL;
  /* The stream does not wait for the NULL stream: the uploads and memsets before must be done. */
  cudaError_t e = cudaDeviceSynchronize();
  if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
  if (!LMF_CHECK_MSG(e == cudaSuccess, "cudaStreamCreateWithFlags: %s", cudaGetErrorString(e))) return LMF_ERR_INTERNAL;
  lmf_status_t st = LMF_ERR_INTERNAL;
  e = cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal);
  if (LMF_CHECK_MSG(e == cudaSuccess, "cudaStreamBeginCapture: %s", cudaGetErrorString(e))) {
    st = fn(arg, (lmf_stream_t)s);
    e = cudaStreamEndCapture(s, &g);
    if (!LMF_CHECK_MSG(e == cudaSuccess, "cudaStreamEndCapture: %s (the call is not capture-safe)",
                       cudaGetErrorString(e)) && st == LMF_OK)
      st = LMF_ERR_INTERNAL;
  }
  if (st == LMF_OK) {
    e = cudaGraphInstantiate(&ge, g, 0);
    for (int i = 0; i < replays && e == cudaSuccess; ++i) e = cudaGraphLaunch(ge, s);
    if (e == cudaSuccess) e = cudaStreamSynchronize(s);
    if (!LMF_CHECK_MSG(e == cudaSuccess, "instantiating or replaying the graph: %s", cudaGetErrorString(e)))
      st = LMF_ERR_INTERNAL;
  }
  if (ge) cudaGraphExecDestroy(ge);
  if (g) cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  return st;
#else
  (void)replays;
  return fn(arg, NULL);
#endif
}

int lt_upload(lmf_context_t *ctx, void *dst, const void *src, size_t bytes) {
  return copy(ctx, dst, src, bytes, 1);
}

int lt_download(lmf_context_t *ctx, void *dst, const void *src, size_t bytes) {
  return copy(ctx, dst, src, bytes, 0);
}

int lt_memset_async(lmf_context_t *ctx, void *p, int byte, size_t bytes, lmf_stream_t stream) {
  if (!lt_is_cuda(ctx)) {
    memset(p, byte, bytes);
    return 1;
  }
#if defined(LMF_HAVE_CUDA)
  const cudaError_t e = cudaMemsetAsync(p, byte, bytes, (cudaStream_t)stream);
  return LMF_CHECK_MSG(e == cudaSuccess, "cudaMemsetAsync: %s", cudaGetErrorString(e));
#else
  (void)stream;
  return LMF_CHECK_MSG(0, "a CUDA context in a build without LMF_HAVE_CUDA");
#endif
}

int lt_memset(lmf_context_t *ctx, void *p, int byte, size_t bytes) {
  if (!lt_is_cuda(ctx)) {
    memset(p, byte, bytes);
    return 1;
  }
#if defined(LMF_HAVE_CUDA)
  cudaError_t e = cudaMemset(p, byte, bytes);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  return LMF_CHECK_MSG(e == cudaSuccess, "cudaMemset: %s", cudaGetErrorString(e));
#else
  return LMF_CHECK_MSG(0, "a CUDA context in a build without LMF_HAVE_CUDA");
#endif
}

uint64_t lt_next(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double lt_uniform(uint64_t *state) { return (double)(lt_next(state) >> 11) * 0x1.0p-53; }

double lt_normal(uint64_t *state) {
  double u1 = 1.0 - lt_uniform(state); /* (0, 1] */
  double u2 = lt_uniform(state);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void lt_fill_normal(float *x, int64_t n, double mean, double sd, uint64_t seed) {
  uint64_t s = seed;
  for (int64_t i = 0; i < n; ++i) x[i] = (float)(mean + sd * lt_normal(&s));
}

uint32_t lt_f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

float lt_bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

/* Maps floats to integers that are ordered like the floats and consecutive for neighbours. */
static int64_t ordered(float f) {
  uint32_t u = lt_f32_bits(f);
  return (u & 0x80000000u) ? -(int64_t)(u & 0x7fffffffu) : (int64_t)u;
}

int64_t lt_ulp_dist_f32(float a, float b) {
  if (isnan(a) || isnan(b)) return INT64_MAX;
  int64_t d = ordered(a) - ordered(b);
  return d < 0 ? -d : d;
}

int lt_convert(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n) {
  return LMF_CHECK_OK(lmf_convert_host(dst, dst_dtype, src, src_dtype, n));
}

void lt_poison_f32(float *x, int64_t n) {
  float nan = lt_bits_f32(0x7fc0deadu);
  for (int64_t i = 0; i < n; ++i) x[i] = nan;
}

int64_t lt_count_nonfinite(const float *x, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) c += !isfinite(x[i]);
  return c;
}

lmf_mezo_tensor_t lt_tensor(void *data, float *master, int64_t numel, int64_t global_offset, uint32_t uid,
                            int32_t dtype, int32_t weight_decay) {
  lmf_mezo_tensor_t t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.master = master;
  t.numel = numel;
  t.global_offset = global_offset;
  t.uid = uid;
  t.dtype = dtype;
  t.weight_decay = weight_decay;
  t.reserved = 0;
  return t;
}

void lt_snap_init(lt_snapshot *s) { memset(s, 0, sizeof *s); }

void lt_snap_add(lt_snapshot *s, const void *p, size_t bytes) {
  if (!LMF_CHECK(s->count < LT_SNAP_MAX)) return;
  void *c = lt_malloc(bytes);
  if (!c) return;
  memcpy(c, p, bytes);
  s->ptr[s->count] = p;
  s->bytes[s->count] = bytes;
  s->copy[s->count] = c;
  s->count++;
}

int lt_snap_check(const lt_snapshot *s, const char *what, const char *file, int line) {
  int ok = 1;
  for (int i = 0; i < s->count; ++i)
    ok &= lmf_t_check_bytes_eq(s->ptr[i], s->copy[i], s->bytes[i], what, file, line);
  return ok;
}

void lt_snap_free(lt_snapshot *s) {
  for (int i = 0; i < s->count; ++i) free(s->copy[i]);
  memset(s, 0, sizeof *s);
}
