/* lmfuse-bench: reproducible random numbers (counter-based splitmix64, the same on every thread count
 * and in bench/python) and random-weight hypernetworks at any config's shapes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_random.h"

/* ---- Random numbers: splitmix64 ---------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t bench_sm_next(uint64_t *s) {
  *s += 0x9E3779B97F4A7C15ull;
  return splitmix64(*s);
}

double bench_sm_uniform(uint64_t *s) { return (double)(bench_sm_next(s) >> 11) * 0x1.0p-53; }

/* Element i of stream `seed`, unit variance: uniform on [-sqrt 3, sqrt 3] (counter-based, so the
 * weights are the same whatever the thread count). */
float bench_unit_noise(uint64_t seed, uint64_t i) {
  uint64_t z = splitmix64(seed + (i + 1) * 0x9E3779B97F4A7C15ull);
  return (float)(((double)(z >> 11) * 0x1.0p-53 - 0.5) * 3.4641016151377544);
}

/* ---- Weights -------------------------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

/* Scale and offset of tensor `name` (tests/python/_hypernet_reference.py's random_state_dict). */
static void weight_scale(const char *name, int32_t ndim, const int64_t *shape, float *sd, float *mean) {
  *mean = 0.0f;
  if (ends_with(name, "LayerNorm.weight") || ends_with(name, ".ln.weight")) {
    *sd = 0.1f, *mean = 1.0f;
  } else if (ends_with(name, "LayerNorm.bias") || ends_with(name, ".ln.bias")) {
    *sd = 0.05f;
  } else if (ends_with(name, "scaler.w")) {
    *sd = 0.25f, *mean = 1.0f;
  } else if (ends_with(name, "scaler.b")) {
    *sd = 0.01f;
  } else if (!strcmp(name, "fallback_embeddings.weight")) {
    *sd = 0.02f;
  } else if (strstr(name, "embeddings")) {
    *sd = 0.3f;
  } else if (ends_with(name, ".weight") && ndim == 2) {
    *sd = (float)(1.0 / sqrt((double)shape[1]));
  } else {
    *sd = 0.02f;
  }
}

/* Builds the hypernetwork from host fp32 tensors. Returns the status of lmf_hypernet_create. */
lmf_status_t bench_random_hypernet(lmf_context_t *ctx, const lmf_hypernet_config_t *c, lmf_hypernet_t **out) {
  size_t count = 0;
  lmf_status_t st = lmf_hypernet_tensor_count(c, &count);
  if (st != LMF_OK) return st;
  lmf_hypernet_tensor_t *t = (lmf_hypernet_tensor_t *)calloc(count, sizeof *t);
  char(*names)[128] = (char(*)[128])calloc(count, 128);
  float **bufs = (float **)calloc(count, sizeof *bufs);
  size_t n = 0;
  for (size_t i = 0; i < count && st == LMF_OK; ++i) {
    int32_t ndim = 0, required = 0;
    int64_t shape[4] = {1, 1, 1, 1};
    st = lmf_hypernet_tensor_info(c, i, names[n], sizeof names[n], &ndim, shape, &required);
    if (st != LMF_OK || !required) continue; /* the word embeddings: never read */
    int64_t numel = 1;
    for (int k = 0; k < ndim; ++k) numel *= shape[k];
    float *b = (float *)malloc(sizeof(float) * (size_t)numel);
    if (!b) {
      fprintf(stderr, "lmfuse-bench hypernet: out of host memory for %s\n", names[n]);
      st = LMF_ERR_OUT_OF_MEMORY;
      break;
    }
    float sd, mean;
    weight_scale(names[n], ndim, shape, &sd, &mean);
    const uint64_t seed = 0x5EED0000ull + i;
#pragma omp parallel for schedule(static)
    for (int64_t e = 0; e < numel; ++e) b[e] = mean + sd * bench_unit_noise(seed, (uint64_t)e);
    bufs[n] = b;
    t[n].name = names[n];
    t[n].data = b;
    t[n].dtype = LMF_DTYPE_F32;
    t[n].ndim = ndim;
    memcpy(t[n].shape, shape, sizeof shape);
    ++n;
  }
  if (st == LMF_OK) st = lmf_hypernet_create(out, ctx, c, t, n);
  for (size_t i = 0; i < n; ++i) free(bufs[i]);
  free(bufs);
  free(names);
  free(t);
  return st;
}

