/* The benchmark families of lmfuse-bench; each returns 0 on success. */
#ifndef LMF_BENCH_FAMILIES_H
#define LMF_BENCH_FAMILIES_H

#include "bench_util.h"

int bench_mezo(const bench_opts *o);
int bench_logits(const bench_opts *o);
int bench_dyntok(const bench_opts *o);
int bench_hypernet(const bench_opts *o);

#endif
