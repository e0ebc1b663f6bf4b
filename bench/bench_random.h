/* lmfuse-bench: reproducible random numbers and random-weight hypernetworks (bench_random.c). */
#ifndef LMF_BENCH_RANDOM_H
#define LMF_BENCH_RANDOM_H

#include <stdint.h>

#include "lmfuse/hypernet.h"

/* splitmix64: the next value of stream *s, and a uniform double in [0, 1). */
uint64_t bench_sm_next(uint64_t *s);
double bench_sm_uniform(uint64_t *s);
/* Element i of stream `seed`, unit variance: uniform on [-sqrt 3, sqrt 3] (counter-based). */
float bench_unit_noise(uint64_t seed, uint64_t i);

/* A hypernetwork with config c and random weights scaled like a trained network's (as
 * tests/python/_hypernet_reference.py's random_state_dict), built with lmf_hypernet_create from host
 * fp32 tensors. Returns lmf_hypernet_create's status (or LMF_ERR_OUT_OF_MEMORY). */
lmf_status_t bench_random_hypernet(lmf_context_t *ctx, const lmf_hypernet_config_t *c, lmf_hypernet_t **out);

#endif
