/* The benchmark families of lmfuse-bench; each returns 0 on success. */
#ifndef LMF_BENCH_FAMILIES_H
#define LMF_BENCH_FAMILIES_H

#include "bench_util.h"

int bench_mezo(const bench_opts *o);
int bench_logits(const bench_opts *o);
int bench_dyntok(const bench_opts *o);
int bench_hypernet(const bench_opts *o);
#if defined(LMF_HAVE_CUDA)
/* The latency floors under a small-batch step (bench/latency_bench.cu); CUDA builds, on a GPU. */
int bench_latency(const bench_opts *o);
#endif

#endif
