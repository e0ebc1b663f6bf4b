#define _GNU_SOURCE
#include "bench_device.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"

#if defined(LMF_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

static void cpu_name(char *out, size_t n) {
  snprintf(out, n, "CPU (%d threads)", omp_get_max_threads());
  FILE *f = fopen("/proc/cpuinfo", "r");
  if (!f) return;
  char line[512];
  while (fgets(line, sizeof line, f)) {
    char *c = strchr(line, ':');
    if (strncmp(line, "model name", 10) == 0 && c) {
      c[strcspn(c, "\n")] = 0;
      snprintf(out, n, "%s, %d threads", c + 2, omp_get_max_threads());
      break;
    }
  }
  fclose(f);
}

int bdev_open(bench_dev *d, int backend, int threads) {
  memset(d, 0, sizeof *d);
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  cfg.backend = backend;
  cfg.cpu_threads = threads;
  if (threads > 0) omp_set_num_threads(threads);
  lmf_status_t st = lmf_context_create(&d->ctx, &cfg);
  if (st != LMF_OK) {
    fprintf(stderr, "lmfuse-bench: %s\n", lmf_last_error());
    return 0;
  }
  int32_t b = 0;
  lmf_context_backend(d->ctx, &b);
  d->cuda = b == LMF_BACKEND_CUDA;
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    struct cudaDeviceProp p;
    BENCH_CUDA_CHECK(cudaGetDeviceProperties(&p, 0));
    /* %.200s: p.name is char[256], so gcc's -Wformat-truncation cannot prove the whole fits. */
    snprintf(d->name, sizeof d->name, "%.200s (%d SMs)", p.name, p.multiProcessorCount);
    cudaStream_t s;
    BENCH_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    d->stream = (lmf_stream_t)s;
    return 1;
  }
#endif
  cpu_name(d->name, sizeof d->name);
  return 1;
}

void bdev_close(bench_dev *d) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) cudaStreamDestroy((cudaStream_t)d->stream);
#endif
  lmf_context_destroy(d->ctx);
}

void *bdev_alloc(bench_dev *d, size_t bytes) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    void *p = NULL;
    BENCH_CUDA_CHECK(cudaMalloc(&p, bytes));
    return p;
  }
#endif
  (void)d;
  void *p = NULL;
  if (posix_memalign(&p, 64, bytes) != 0) {
    fprintf(stderr, "lmfuse-bench: out of host memory (%zu bytes)\n", bytes);
    exit(2);
  }
  return p;
}

void bdev_free(bench_dev *d, void *p) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    cudaFree(p);
    return;
  }
#endif
  (void)d;
  free(p);
}

void bdev_upload(bench_dev *d, void *dst, const void *src, size_t bytes) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    BENCH_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return;
  }
#endif
  (void)d;
  memcpy(dst, src, bytes);
}

void bdev_sync(bench_dev *d) { lmf_stream_synchronize(d->ctx, d->stream); }

#if defined(LMF_HAVE_CUDA)
/* Median milliseconds between two events around each of `repeats` enqueue(arg) on stream s. */
static double event_median_ms(cudaStream_t s, void (*enqueue)(void *), void *arg, int repeats) {
  double *t = (double *)malloc(sizeof(double) * (size_t)repeats);
  cudaEvent_t a, b;
  BENCH_CUDA_CHECK(cudaEventCreate(&a));
  BENCH_CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < repeats; ++i) {
    BENCH_CUDA_CHECK(cudaEventRecord(a, s));
    enqueue(arg);
    BENCH_CUDA_CHECK(cudaEventRecord(b, s));
    BENCH_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t[i] = ms;
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  double m = bench_median(t, repeats);
  free(t);
  return m;
}

typedef struct graph_arg {
  cudaGraphExec_t ge;
  cudaStream_t s;
} graph_arg;

static void graph_launch(void *p) {
  const graph_arg *g = (const graph_arg *)p;
  BENCH_CUDA_CHECK(cudaGraphLaunch(g->ge, g->s));
}
#endif

double bdev_time_ms(bench_dev *d, void (*fn)(void *), void *arg, int warmup, int repeats) {
  for (int i = 0; i < warmup; ++i) fn(arg);
  bdev_sync(d);
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) return event_median_ms((cudaStream_t)d->stream, fn, arg, repeats);
#endif
  double *t = (double *)malloc(sizeof(double) * (size_t)repeats);
  for (int i = 0; i < repeats; ++i) {
    double t0 = bench_now_ms();
    fn(arg);
    t[i] = bench_now_ms() - t0;
  }
  double m = bench_median(t, repeats);
  free(t);
  return m;
}

double bdev_time_graph_ms(bench_dev *d, void (*fn)(void *), void *arg, int warmup, int repeats) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    cudaStream_t s = (cudaStream_t)d->stream;
    cudaGraph_t g = NULL;
    cudaGraphExec_t ge = NULL;
    bdev_sync(d);
    BENCH_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    fn(arg);
    cudaError_t e = cudaStreamEndCapture(s, &g);
    if (e == cudaSuccess) e = cudaGraphInstantiate(&ge, g, 0);
    if (e != cudaSuccess) {
      fprintf(stderr, "lmfuse-bench: capturing the step into a CUDA graph failed: %s\n", cudaGetErrorString(e));
      (void)cudaGetLastError();
      if (g) cudaGraphDestroy(g);
      return NAN;
    }
    graph_arg ga = {ge, s};
    for (int i = 0; i < warmup; ++i) graph_launch(&ga);
    BENCH_CUDA_CHECK(cudaStreamSynchronize(s));
    const double m = event_median_ms(s, graph_launch, &ga, repeats);
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);
    return m;
  }
#endif
  (void)d;
  (void)fn;
  (void)arg;
  (void)warmup;
  (void)repeats;
  return NAN;
}

typedef struct copy_arg {
  bench_dev *d;
  void *dst;
  const void *src;
  size_t bytes;
} copy_arg;

static void copy_once(void *p) {
  copy_arg *c = (copy_arg *)p;
#if defined(LMF_HAVE_CUDA)
  if (c->d->cuda) {
    BENCH_CUDA_CHECK(cudaMemcpyAsync(c->dst, c->src, c->bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)c->d->stream));
    return;
  }
#endif
  /* The CPU floor: every thread copies its slice, as the MeZO passes split their work. */
#pragma omp parallel
  {
    int nt = omp_get_num_threads(), id = omp_get_thread_num();
    size_t per = (c->bytes / (size_t)nt + 63) & ~(size_t)63;
    size_t b = per * (size_t)id;
    if (b < c->bytes) {
      size_t n = c->bytes - b < per ? c->bytes - b : per;
      memcpy((char *)c->dst + b, (const char *)c->src + b, n);
    }
  }
}

void bdev_busy(bench_dev *d, int ms) {
#if defined(LMF_HAVE_CUDA)
  if (!d->cuda || ms <= 0) return;
  const size_t bytes = (size_t)64 << 20;
  copy_arg c = {d, bdev_alloc(d, bytes), bdev_alloc(d, bytes), bytes};
  BENCH_CUDA_CHECK(cudaMemsetAsync((void *)c.src, 0, bytes, (cudaStream_t)d->stream));
  const double t0 = bench_now_ms();
  while (bench_now_ms() - t0 < (double)ms) {
    for (int i = 0; i < 8; ++i) copy_once(&c);
    bdev_sync(d);
  }
  bdev_free(d, c.dst);
  bdev_free(d, (void *)c.src);
#else
  (void)d;
  (void)ms;
#endif
}

double bdev_copy_gbs(bench_dev *d, size_t bytes, int warmup, int repeats) {
  copy_arg c = {d, bdev_alloc(d, bytes), bdev_alloc(d, bytes), bytes};
  /* Touch both buffers so the copy measures memory, not page faults. */
  void *h = calloc(1, bytes);
  memset(h, 0x3c, bytes);
  bdev_upload(d, (void *)c.src, h, bytes);
  bdev_upload(d, c.dst, h, bytes);
  free(h);
  double ms = bdev_time_ms(d, copy_once, &c, warmup, repeats);
  bdev_free(d, c.dst);
  bdev_free(d, (void *)c.src);
  return 2.0 * (double)bytes / (ms * 1e6);
}

size_t bdev_mem_used(bench_dev *d) {
#if defined(LMF_HAVE_CUDA)
  if (d->cuda) {
    size_t fr = 0, tot = 0;
    BENCH_CUDA_CHECK(cudaMemGetInfo(&fr, &tot));
    return tot - fr;
  }
#endif
  (void)d;
  return bench_peak_rss();
}

void bdev_mem_reset_peak(bench_dev *d) {
  if (!d->cuda) bench_reset_peak_rss();
}
