/* lmfuse-bench: memory, copies and timers on the context's backend (host memory and wall clock on
 * the CPU; cudaMalloc and CUDA events on the GPU). */
#ifndef LMF_BENCH_DEVICE_H
#define LMF_BENCH_DEVICE_H

#include <stddef.h>

#include "lmfuse/lmfuse.h"

#if defined(LMF_HAVE_CUDA)
#include <stdio.h>
#include <stdlib.h>
/* A CUDA runtime call the benchmark cannot go on without: on failure, names it and exits 2. */
#define BENCH_CUDA_CHECK(x)                                                            \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      fprintf(stderr, "lmfuse-bench: %s: %s\n", #x, cudaGetErrorString(e_));           \
      exit(2);                                                                         \
    }                                                                                  \
  } while (0)
#endif

typedef struct bench_dev {
  lmf_context_t *ctx;
  int cuda;
  lmf_stream_t stream;
  char name[256]; /* the machine, in words */
} bench_dev;

int bdev_open(bench_dev *d, int backend, int threads);
void bdev_close(bench_dev *d);
void *bdev_alloc(bench_dev *d, size_t bytes);
void bdev_free(bench_dev *d, void *p);
void bdev_upload(bench_dev *d, void *dst, const void *src, size_t bytes);
void bdev_sync(bench_dev *d);

/* Median milliseconds of fn(arg) over `repeats` runs after `warmup` runs. */
double bdev_time_ms(bench_dev *d, void (*fn)(void *), void *arg, int warmup, int repeats);

/* The same with what one fn(arg) enqueues on the bench's stream captured once into a CUDA graph and the
 * graph replayed: the step without the host's per-launch cost, as a decoding loop that captures it
 * sees it. NAN on the CPU or where the capture fails (the reason goes to stderr). */
double bdev_time_graph_ms(bench_dev *d, void (*fn)(void *), void *arg, int warmup, int repeats);

/* Keeps the GPU busy with device-to-device copies for about `ms` milliseconds (no-op on the CPU or for
 * ms <= 0): a step timed right after runs at the clock a decoding loop's forward pass leaves the card
 * at, not at the clock of an idle card. */
void bdev_busy(bench_dev *d, int ms);

/* Bandwidth of a plain copy of `bytes` on the device, counting bytes read plus bytes written (GB/s). */
double bdev_copy_gbs(bench_dev *d, size_t bytes, int warmup, int repeats);

/* Memory in use on the device (GPU: total - free) or the peak RSS (CPU), in bytes. */
size_t bdev_mem_used(bench_dev *d);
void bdev_mem_reset_peak(bench_dev *d);

#endif
