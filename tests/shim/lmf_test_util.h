/*
 * Helpers for the C test bodies: contexts, backend memory (host memory on a CPU context, device memory on
 * a CUDA context, so one scenario runs on either backend), deterministic test data, float bit tricks,
 * and snapshots for "bad input changes nothing" checks. Uses only the public API (and the CUDA runtime
 * in a CUDA build).
 */
#ifndef LMF_TESTS_SHIM_TEST_UTIL_H
#define LMF_TESTS_SHIM_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "lmf_check.h"
#include "lmfuse/lmfuse.h"
#include "lmfuse/mezo.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Contexts -------------------------------------------------------------------------------- */

/* A context on `backend` with `threads` CPU threads (0: default); NULL (after reporting) on failure. */
lmf_context_t *lt_context(int32_t backend, int32_t threads);
/* 1 if the context runs on CUDA. */
int lt_is_cuda(const lmf_context_t *ctx);
/* 1 if this build's test helpers can touch device memory (LMF_HAVE_CUDA) and a device is usable. */
int lt_cuda_usable(void);

/* Skips the running CUDA case (LMF_SKIP) unless a CUDA device is usable from the tests. */
#define REQUIRE_CUDA()                                                                              \
  do {                                                                                              \
    if (!lt_cuda_usable())                                                                          \
      LMF_SKIP(lmf_backend_available(LMF_BACKEND_CUDA) ? "test helpers built without CUDA"          \
                                                       : "no usable CUDA device (or a CPU-only build)"); \
  } while (0)

/* ---- Backend memory ------------------------------------------------------------------------ */

/* bytes of backend memory (device memory on a CUDA context), or NULL after reporting. */
void *lt_alloc(const lmf_context_t *ctx, size_t bytes);
void lt_free(const lmf_context_t *ctx, void *p);
/* Copies host -> backend and backend -> host; synchronizes the context's NULL stream first. */
int lt_upload(lmf_context_t *ctx, void *dst, const void *src, size_t bytes);
int lt_download(lmf_context_t *ctx, void *dst, const void *src, size_t bytes);
/* Sets backend memory to a byte value. */
int lt_memset(lmf_context_t *ctx, void *p, int byte, size_t bytes);
/* The same, enqueued on a CUDA stream (capturable into a graph); on a CPU context, at once. */
int lt_memset_async(lmf_context_t *ctx, void *p, int byte, size_t bytes, lmf_stream_t stream);

/* ---- CUDA graphs ------------------------------------------------------------------------------- */

/* The work fn(arg, stream) enqueues, run as a CUDA graph: on a fresh stream of a CUDA context, fn is
 * captured (cudaStreamCaptureModeGlobal: any call that is not capture-safe fails the capture), the graph
 * instantiated and launched `replays` times, then the stream synchronized. Returns fn's status; a
 * failure of the capture or of a replay is reported (and returns LMF_ERR_INTERNAL when fn succeeded).
 * On a CPU context, or without CUDA in the build, fn runs once with a NULL stream. */
lmf_status_t lt_graph_run(lmf_context_t *ctx, lmf_status_t (*fn)(void *arg, lmf_stream_t stream), void *arg,
                          int replays);

/* Host malloc that reports and returns NULL on failure. */
void *lt_malloc(size_t bytes);

/* ---- Test data ---------------------------------------------------------------------------------- */

/* splitmix64: a small deterministic generator for test data (independent of lmfuse's Philox). */
uint64_t lt_next(uint64_t *state);
/* Uniform in [0, 1), 53 bits. */
double lt_uniform(uint64_t *state);
/* A standard normal (double Box-Muller on lt_uniform). */
double lt_normal(uint64_t *state);
/* x[i] = mean + sd * normal, rounded to fp32. */
void lt_fill_normal(float *x, int64_t n, double mean, double sd, uint64_t seed);

/* ---- Floats --------------------------------------------------------------------------------------- */

uint32_t lt_f32_bits(float f);
float lt_bits_f32(uint32_t u);
/* Distance in representable fp32 values (0 when equal, also for +0 / -0); huge for NaN. */
int64_t lt_ulp_dist_f32(float a, float b);
/* Converts with lmf_convert_host (reports on failure). */
int lt_convert(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype, int64_t n);
/* Fills fp32 memory with a quiet NaN pattern (0x7fc0dead) so unwritten elements are detected. */
void lt_poison_f32(float *x, int64_t n);
/* Number of elements that are not finite. */
int64_t lt_count_nonfinite(const float *x, int64_t n);

/* A tensor descriptor. */
lmf_mezo_tensor_t lt_tensor(void *data, float *master, int64_t numel, int64_t global_offset, uint32_t uid,
                            int32_t dtype, int32_t weight_decay);

/* ---- Snapshots: "a failed call changed nothing" ------------------------------------------------ */

#define LT_SNAP_MAX 16
typedef struct lt_snapshot {
  int count;
  const void *ptr[LT_SNAP_MAX];
  size_t bytes[LT_SNAP_MAX];
  void *copy[LT_SNAP_MAX];
} lt_snapshot;

void lt_snap_init(lt_snapshot *s);
/* Remembers the current bytes of host memory [p, p + bytes). */
void lt_snap_add(lt_snapshot *s, const void *p, size_t bytes);
/* Checks every remembered region still holds the same bytes. */
int lt_snap_check(const lt_snapshot *s, const char *what, const char *file, int line);
void lt_snap_free(lt_snapshot *s);
#define LT_SNAP_CHECK(s, what) lt_snap_check((s), (what), __FILE__, __LINE__)

#ifdef __cplusplus
}
#endif

#endif
