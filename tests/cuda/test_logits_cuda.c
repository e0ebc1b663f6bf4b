/* CUDA backend of the logits family against the CPU backend (label cuda): the same host-described call
 * runs on a CPU context and on a CUDA context (tests/logits/lg_common.c copies every buffer to the device
 * and back); tokens, row statuses, verify outcomes and GeDi's n must be equal, floats within 1e-5 on a
 * device and bit for bit on the CPU emulator (tests/emu: the kernels' arithmetic is then the host's).
 * Every case is reported SKIPPED when no CUDA device is usable or the build has no CUDA backend. */
#define _POSIX_C_SOURCE 200809L /* setenv, strdup */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../logits/lg_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

#if defined(LMF_TEST_EMU)
#define TOL 0.0 /* the same libm and rounding as the CPU backend: any difference is a bug */
#else
#define TOL 1e-5 /* the device's exp / log may differ from libm's in the last bits */
#endif

typedef struct backends {
  lmf_context_t *cpu;
  lmf_context_t *cuda;
} backends;

static int backends_open(backends *b) {
  b->cpu = lt_context(LMF_BACKEND_CPU, 0);
  b->cuda = lt_context(LMF_BACKEND_CUDA, 0);
  return b->cpu && b->cuda;
}

static void backends_close(backends *b) {
  lmf_context_destroy(b->cpu);
  lmf_context_destroy(b->cuda);
}

/* n values, multiples of 1/64 in [-8, 8]. */
static void fill_q(float *x, int64_t n, double sd, uint64_t seed) {
  uint64_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    double v = nearbyint(sd * lt_normal(&s) * 64.0) / 64.0;
    x[i] = (float)(v > 8.0 ? 8.0 : v < -8.0 ? -8.0 : v);
  }
}

/* Values of x[0 .. n) that no longer hold lt_poison_f32's bits. */
static int64_t unpoisoned(const float *x, int64_t n) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t b;
    memcpy(&b, x + i, sizeof b);
    c += b != 0x7fc0deadu;
  }
  return c;
}

/* Two GeDi state values: near, or both NaN (a row whose state was NaN keeps it on both backends). */
static int state_near(float a, float b) { return (isnan(a) && isnan(b)) || fabsf(a - b) <= TOL; }

/* Runs the call on both backends (the GeDi state of each from the same starting values) and compares.
 * with_logprobs 0: no log-prob rows are asked for (their buffers must stay untouched). */
static void parity_at(backends *be, const lmf_logits_model_t *m, size_t K, const lmf_logits_params_t *p,
                      int gedi, int with_logprobs, int replays, const char *what, const char *file, int line) {
  const int32_t B = p->num_rows, V = lg_vocab_out(m, p);
  lg_out oc, og;
  memset(&oc, 0, sizeof oc);
  memset(&og, 0, sizeof og);
  float *Lp[2] = {NULL, NULL}, *Ln[2] = {NULL, NULL};
  int32_t *n[2] = {NULL, NULL};
  lmf_logits_params_t pc = *p, pg = *p;
  if (gedi) {
    for (int i = 0; i < 2; ++i) {
      Lp[i] = (float *)lt_malloc(sizeof(float) * (size_t)B);
      Ln[i] = (float *)lt_malloc(sizeof(float) * (size_t)B);
      n[i] = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)B);
      if (!Lp[i] || !Ln[i] || !n[i]) goto done;
      memcpy(Lp[i], p->gedi_L_pos, sizeof(float) * (size_t)B);
      memcpy(Ln[i], p->gedi_L_neg, sizeof(float) * (size_t)B);
      memcpy(n[i], p->gedi_n, sizeof(int32_t) * (size_t)B);
    }
    pc.gedi_L_pos = Lp[0], pc.gedi_L_neg = Ln[0], pc.gedi_n = n[0];
    pg.gedi_L_pos = Lp[1], pg.gedi_L_neg = Ln[1], pg.gedi_n = n[1];
  }
  if (!lg_out_alloc(&oc, B, V, V + 1, gedi) || !lg_out_alloc(&og, B, V, V + 1, gedi)) goto done;
  if (!with_logprobs) oc.o.logprobs = og.o.logprobs = NULL;
  if (!lmf_t_check_status(lg_combine_at(be->cpu, m, K, &pc, &oc, file, line), LMF_OK, what, file, line)) goto done;
  const lmf_status_t sg = replays ? lg_combine_graph_at(be->cuda, m, K, &pg, &og, replays, file, line)
                                  : lg_combine_at(be->cuda, m, K, &pg, &og, file, line);
  if (!lmf_t_check_status(sg, LMF_OK, what, file, line)) goto done;
  if (!with_logprobs) {
    const int64_t n = (int64_t)B * oc.stride;
    lmf_t_check(unpoisoned(oc.logprobs, n) == 0 && unpoisoned(og.logprobs, n) == 0, file, line,
                "%s: a log-prob row was written though none was asked for", what);
    memset(oc.logprobs, 0, sizeof(float) * (size_t)n); /* equal, for the row comparison below */
    memset(og.logprobs, 0, sizeof(float) * (size_t)n);
  }
  for (int32_t b = 0; b < B; ++b) {
    char w[160];
    snprintf(w, sizeof w, "%s: row %d, CPU vs CUDA", what, (int)b);
    if (!lg_row_near_at(&oc, b, &og, b, TOL, w, file, line)) break;
    if (gedi) {
      lmf_t_check(state_near(Lp[0][b], Lp[1][b]) && state_near(Ln[0][b], Ln[1][b]) && n[0][b] == n[1][b] &&
                      (oc.tokens[b] < 0 || fabsf(oc.gedi_logp_desired[b] - og.gedi_logp_desired[b]) <= TOL),
                  file, line, "%s: GeDi state or logP(desired) differs", w);
    }
  }
done:
  for (int i = 0; i < 2; ++i) {
    free(Lp[i]);
    free(Ln[i]);
    free(n[i]);
  }
  lg_out_free(&oc);
  lg_out_free(&og);
}
#define PARITY(be, m, K, p, gedi, what) parity_at((be), (m), (K), (p), (gedi), 1, 0, (what), __FILE__, __LINE__)
#define PARITY_NO_LOGPROBS(be, m, K, p, what) parity_at((be), (m), (K), (p), 0, 0, 0, (what), __FILE__, __LINE__)
/* The CUDA call captured into a graph and replayed `replays` times (the workspace and the outputs as a
 * decoding loop would reuse them); the CPU runs once. */
#define PARITY_GRAPH(be, m, K, p, gedi, replays, what) \
  parity_at((be), (m), (K), (p), (gedi), 1, (replays), (what), __FILE__, __LINE__)

/* GeDi with models pos / neg as its class models (omega 30, filter and target 0.8) and the given state;
 * the other fields of p as they are. */
static void gedi_on(lmf_logits_params_t *p, int32_t pos, int32_t neg, float *Lp, float *Ln, int32_t *n) {
  p->gedi_pos_model = pos;
  p->gedi_neg_model = neg;
  p->gedi_omega = 30.0f;
  p->gedi_logit_scale = 1.0f;
  p->gedi_filter_p = 0.8f;
  p->gedi_target_p = 0.8f;
  p->gedi_L_pos = Lp;
  p->gedi_L_neg = Ln;
  p->gedi_n = n;
}

/* The spec's vectors T1, T3, T4, T5a, T7 in each dtype. */
void test_cuda_logits_spec_vectors(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  for (int di = 0; di < 3; ++di) {
    const int32_t dt = lg_dtypes[di];
    lg_models ms;
    lmf_logits_params_t p;
    uint64_t seeds[1] = {5};
    /* T1, greedy and sampled with filters. */
    lg_models_init(&ms);
    lg_models_add(&ms, dt, lg_t1_zL, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t1_zSf, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t1_zSb, 1, 5, -1.0f);
    lg_params(&p, 1);
    PARITY(&be, ms.m, ms.K, &p, 0, "T1 greedy");
    p.temperature = 0.7f;
    p.seeds = seeds;
    p.top_k = 3;
    PARITY(&be, ms.m, ms.K, &p, 0, "T9 top-k 3");
    p.top_k = 0;
    p.top_p = 0.9f;
    PARITY(&be, ms.m, ms.K, &p, 0, "T9 top-p 0.9");
    p.top_p = 1.0f;
    p.min_p = 0.05f;
    PARITY(&be, ms.m, ms.K, &p, 0, "T9 min-p 0.05");
    lg_models_free(&ms);
    /* T3. */
    lg_models_init(&ms);
    lg_models_add(&ms, dt, lg_t3_zE, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t3_zA, 1, 5, -1.0f);
    lg_params(&p, 1);
    p.plausibility_model = 0;
    p.plausibility_alpha = 0.1f;
    PARITY(&be, ms.m, ms.K, &p, 0, "T3");
    lg_models_free(&ms);
    /* T4. */
    lg_models_init(&ms);
    lg_models_add(&ms, dt, lg_t4_zb, 1, 5, 1.0f);
    lg_models_add(&ms, dt, lg_t4_ze, 1, 5, 2.0f);
    lg_models_add(&ms, dt, lg_t4_za, 1, 5, -2.0f);
    lg_params(&p, 1);
    p.nucleus_model = 0;
    p.nucleus_p = 0.9f;
    PARITY(&be, ms.m, ms.K, &p, 0, "T4");
    lg_models_free(&ms);
    /* T5a, 5c. */
    {
      float Lp[1] = {-12.0f}, Ln[1] = {-13.0f};
      int32_t n[1] = {4};
      lg_models_init(&ms);
      lg_models_add(&ms, dt, lg_t5_zLM, 1, 5, 1.0f);
      lg_models_add(&ms, dt, lg_t5_zPos, 1, 5, 0.0f);
      lg_models_add(&ms, dt, lg_t5_zNeg, 1, 5, 0.0f);
      lg_params(&p, 1);
      gedi_on(&p, 1, 2, Lp, Ln, n);
      PARITY(&be, ms.m, ms.K, &p, 1, "T5a");
      p.gedi_omega = 5.0f;
      p.gedi_filter_p = 0.5f;
      p.gedi_target_p = 0.54f;
      PARITY(&be, ms.m, ms.K, &p, 1, "T5c");
      lg_models_free(&ms);
    }
    /* T7: statuses. */
    {
      const float inf = INFINITY;
      float e[4 * 4] = {1, 0.5f, 0, 0.2f, 1, 0.5f, 0, 0.2f, 1, NAN, 0, 0.2f, 1, 0.5f, inf, 0.2f};
      float a[4 * 4] = {0, 0, 0, -inf, -inf, -inf, -inf, -inf, 0, 0, 0, 0, 0, 0, 0, 0};
      lg_models_init(&ms);
      lg_models_add(&ms, dt, e, 4, 4, 1.0f);
      lg_models_add(&ms, dt, a, 4, 4, -1.0f);
      lg_params(&p, 4);
      PARITY(&be, ms.m, ms.K, &p, 0, "T7");
      lg_models_free(&ms);
    }
  }
  backends_close(&be);
}

/* Rows of a batch at V = 20480 where each block walks more than kPrefetchChunks (8) chunks of its row
 * (one block per row: B = 20 on the emulator's 4 SMs, 600 on a 132-SM card). */
#if defined(LMF_TEST_EMU)
enum { kManyChunksB = 20 };
#else
enum { kManyChunksB = 600 };
#endif

/* Batches of random rows, sizes that exercise one row per block and the vocabulary split over blocks,
 * and blocks that walk more than kPrefetchChunks (8) chunks of their row, where the combine pass runs its
 * unrolled sums (B = 20 on the emulator's 4 SMs, B = 600 on a 132-SM card: one block per row). */
void test_cuda_logits_random_batches(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  static const struct {
    int32_t B, V;
  } shapes[] = {{1, 152064}, {3, 32000}, {37, 4099}, {256, 1024}, {1024, 64}, {kManyChunksB, 20480}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const int32_t B = shapes[si].B, V = shapes[si].V;
    float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * V);
    float *bias = (float *)lt_malloc(sizeof(float) * (size_t)V);
    uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    uint64_t *offsets = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    float *temps = (float *)lt_malloc(sizeof(float) * (size_t)B);
    float *Lp = (float *)lt_malloc(sizeof(float) * (size_t)B), *Ln = (float *)lt_malloc(sizeof(float) * (size_t)B);
    int32_t *n = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)B);
    lg_models ms;
    lg_models_init(&ms);
    if (z && bias && seeds && offsets && temps && Lp && Ln && n) {
      static const float coeff[4] = {1.0f, 1.0f, -1.0f, 0.0f};
      for (int k = 0; k < 4; ++k) {
        fill_q(z, (int64_t)B * V, k == 0 ? 2.0 : 1.0, 100 * si + (uint64_t)k);
        lg_models_add(&ms, lg_dtypes[k % 3], z, B, V, coeff[k]);
      }
      fill_q(bias, V, 0.5, 7);
      for (int32_t b = 0; b < B; ++b) {
        seeds[b] = 1000 + (uint64_t)b;
        offsets[b] = (uint64_t)(b % 5);
        temps[b] = (b % 3 == 0) ? 0.0f : (b % 3 == 1 ? 0.7f : 1.0f);
        n[b] = b % 7;
        Lp[b] = -2.0f * (float)n[b];
        Ln[b] = -2.25f * (float)n[b];
      }
      char what[96];
      lmf_logits_params_t p;
      lg_params(&p, B);
      p.temperature_rows = temps;
      p.seeds = seeds;
      p.offsets = offsets;
      snprintf(what, sizeof what, "B %d V %d: EFT, per-row T", (int)B, (int)V);
      PARITY(&be, ms.m, 3, &p, 0, what);
      p.top_k = 50;
      p.top_p = 0.9f;
      p.min_p = 0.02f;
      p.bias = bias;
      snprintf(what, sizeof what, "B %d V %d: filters and bias", (int)B, (int)V);
      PARITY(&be, ms.m, 3, &p, 0, what);
      lg_params(&p, B);
      p.temperature = 1.0f;
      p.seeds = seeds;
      p.plausibility_model = 0;
      p.plausibility_alpha = 0.05f;
      p.nucleus_model = 1;
      p.nucleus_p = 0.95f;
      snprintf(what, sizeof what, "B %d V %d: plausibility and nucleus", (int)B, (int)V);
      PARITY(&be, ms.m, 3, &p, 0, what);
      lg_params(&p, B);
      gedi_on(&p, 1, 3, Lp, Ln, n);
      ms.m[1].coeff = 0.0f;
      ms.m[2].coeff = 0.0f;
      snprintf(what, sizeof what, "B %d V %d: GeDi", (int)B, (int)V);
      PARITY(&be, ms.m, 4, &p, 1, what);
    }
    lg_models_free(&ms);
    free(z);
    free(bias);
    free(seeds);
    free(offsets);
    free(temps);
    free(Lp);
    free(Ln);
    free(n);
  }
  backends_close(&be);
}

/* Models of one dtype, dense, with 16-byte aligned rows: the combine pass's dense fold
 * (CombPlan::dense), in each dtype. Model 1's vocabulary ends inside an 8-token group (V - 13 of
 * V_out = V), so its last group and the tokens past it take the general fold; in the second call
 * model 2's row stride is V + 1, which leaves most of its rows unaligned (those rows' blocks take the
 * general fold). Shapes: the vocabulary split over blocks, and blocks that walk many chunks. Every
 * 131st token (from 5) is masked by model 0 (-inf) or is 0 in every model (a sum of exactly 0), and
 * in row 1 outside fp16 one token is 1e30 in model 1 (a sum past 2^60), in row 2 one is +inf in model
 * 0 (a bad input): the groups that combine_plain's range test sends to the full computation. */
static void dense_model_specials(float *z, int k, int32_t B, int32_t w, int32_t V, int32_t dtype) {
  for (int32_t b = 0; b < B; ++b)
    for (int32_t v = 5, i = 0; v < V; v += 131, ++i) {
      float *x = &z[(int64_t)b * w + v];
      if (i % 3 == 0 && k == 0) *x = -INFINITY;
      else if (i % 3 == 1) *x = 0.0f;
      else if (i == 2 && k == 1 && b == 1 && dtype != LMF_DTYPE_F16) *x = 1e30f; /* once: no tie at 1e30 */
      else if (i == 5 && k == 0 && b == 2) *x = INFINITY; /* row 2: a bad input, its status */
    }
}

void test_cuda_logits_dense_models(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  static const struct {
    int32_t B, V;
  } shapes[] = {{3, 32000}, {kManyChunksB, 20480}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const int32_t B = shapes[si].B, V = shapes[si].V;
    float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * (V + 1));
    uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    for (int32_t b = 0; seeds && b < B; ++b) seeds[b] = 77 + (uint64_t)b;
    for (int d = 0; d < 3 && z && seeds; ++d) {
      static const float coeff[3] = {1.0f, 1.5f, -0.5f};
      for (int stride = 0; stride < 2; ++stride) {
        lg_models ms;
        lg_models_init(&ms);
        for (int k = 0; k < 3; ++k) {
          const int32_t w = (k == 2 && stride) ? V + 1 : V; /* the buffer's row stride */
          fill_q(z, (int64_t)B * w, k == 0 ? 2.0 : 1.0, 300 * si + 10 * (uint64_t)d + (uint64_t)k);
          dense_model_specials(z, k, B, w, V, lg_dtypes[d]);
          lg_models_add(&ms, lg_dtypes[d], z, B, w, coeff[k]);
          ms.m[k].vocab = V;
        }
        ms.m[1].vocab = V - 13;
        lmf_logits_params_t p;
        lg_params(&p, B);
        p.vocab_out = V;
        p.temperature = 0.8f;
        p.top_p = 0.9f;
        p.seeds = seeds;
        char what[96];
        snprintf(what, sizeof what, "B %d V %d, dtype %d, model 2's stride %d: top-p", (int)B, (int)V,
                 (int)lg_dtypes[d], (int)(stride ? V + 1 : V));
        PARITY(&be, ms.m, 3, &p, 0, what);
        lg_models_free(&ms);
      }
    }
    free(z);
    free(seeds);
  }
  backends_close(&be);
}

/* Strided, row-indexed, per-row coefficient and sparse inputs. */
void test_cuda_logits_layouts(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  enum { B = 5, V = 3000, PAD = 13, P = 8, SK = 40 };
  float *z = (float *)lt_malloc(sizeof(float) * P * (V + PAD));
  float vals[B * SK];
  int32_t ids[B * SK];
  static const int32_t ri[B] = {6, 1, 3, 3, 0};
  float c1[B] = {1.0f, 0.5f, -1.0f, 2.0f, 0.0f};
  uint64_t seeds[B] = {1, 2, 3, 4, 5};
  lg_models ms;
  lg_models_init(&ms);
  if (z) {
    for (int k = 0; k < 2; ++k) {
      fill_q(z, P * (V + PAD), 1.5, 50 + (uint64_t)k);
      lg_models_add(&ms, lg_dtypes[k + 1], z, P, V + PAD, k ? -0.5f : 1.0f);
      ms.m[k].vocab = V;
      ms.m[k].row_index = ri;
    }
    ms.m[1].coeff_rows = c1;
    fill_q(vals, B * SK, 2.0, 60);
    for (int i = 0; i < B * SK; ++i) ids[i] = (int32_t)((i * 37) % V);
    lg_models_add(&ms, LMF_DTYPE_F32, vals, B, SK, 1.0f);
    ms.m[2].sparse_index = ids;
    ms.m[2].sparse_k = SK;
    ms.m[2].sparse_fill = -20.0f;
    ms.m[2].vocab = V;
    lmf_logits_params_t p;
    lg_params(&p, B);
    p.vocab_out = V;
    p.temperature = 1.0f;
    p.top_k = 100;
    p.seeds = seeds;
    PARITY(&be, ms.m, ms.K, &p, 0, "strided, row-indexed, per-row coefficients, sparse");
  }
  lg_models_free(&ms);
  free(z);
  backends_close(&be);
}

/* Rows whose status init sets (a negative row index, a sparse id outside the vocabulary: bad index;
 * a non-finite GeDi state: non-finite) beside good ones, sampled with top-p and every output: no
 * later kernel may run them or overwrite their status (the merge reads their partials with the rest
 * of the batch, unwritten, and must leave its result unused). */
void test_cuda_logits_bad_rows(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  enum { B = 6, V = 5000, SK = 16 };
  float *z = (float *)lt_malloc(sizeof(float) * B * V);
  float vals[B * SK];
  int32_t ids[B * SK];
  static const int32_t ri[B] = {5, -1, 3, 2, -7, 0};
  uint64_t seeds[B] = {9, 8, 7, 6, 5, 4};
  lg_models ms;
  lg_models_init(&ms);
  if (z) {
    for (int k = 0; k < 3; ++k) {
      fill_q(z, B * V, 2.0, 70 + (uint64_t)k);
      lg_models_add(&ms, lg_dtypes[k], z, B, V, k == 2 ? -1.0f : 1.0f);
    }
    ms.m[0].row_index = ri;
    lmf_logits_params_t p;
    lg_params(&p, B);
    p.temperature = 0.8f;
    p.top_p = 0.9f;
    p.seeds = seeds;
    PARITY(&be, ms.m, ms.K, &p, 0, "negative row indices (rows 1 and 4)");
    PARITY_NO_LOGPROBS(&be, ms.m, ms.K, &p, "negative row indices (rows 1 and 4), no log-prob rows");

    fill_q(vals, B * SK, 2.0, 80);
    for (int i = 0; i < B * SK; ++i) ids[i] = (int32_t)((i * 131) % V);
    ids[2 * SK + 5] = V + 3; /* row 2: an id past the vocabulary */
    lg_models_add(&ms, LMF_DTYPE_F32, vals, B, SK, 0.5f);
    ms.m[3].sparse_index = ids;
    ms.m[3].sparse_k = SK;
    ms.m[3].sparse_fill = -30.0f;
    ms.m[3].vocab = V;
    PARITY(&be, ms.m, ms.K, &p, 0, "and a sparse id past the vocabulary (row 2)");

    float Lp[B] = {0.0f, -1.0f, NAN, -2.0f, 0.0f, -0.5f}, Ln[B] = {0.0f, -2.0f, 0.0f, -1.0f, 0.0f, -0.5f};
    int32_t n[B] = {0, 3, 1, 2, -1, 0}; /* row 2: NaN L_pos; row 4: n < 0 */
    ms.m[0].row_index = NULL;
    gedi_on(&p, 1, 2, Lp, Ln, n);
    PARITY(&be, ms.m, 3, &p, 1, "GeDi with non-finite state (rows 2 and 4)");
  }
  lg_models_free(&ms);
  free(z);
  backends_close(&be);
}

/* Speculative verification: the same acceptances and tokens on both backends. */
void test_cuda_logits_verify(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  enum { S = 500, L = 3, R = S * (L + 1), V = 2048 };
  float *z = (float *)lt_malloc(sizeof(float) * R * V);
  int32_t *draft = (int32_t *)lt_malloc(sizeof(int32_t) * S * L);
  uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * R);
  int32_t acc[2][S], next[2][S], st[2][S];
  lg_models ms;
  lg_models_init(&ms);
  if (z && draft && seeds) {
    static const float coeff[3] = {1.0f, 1.0f, -1.0f};
    for (int k = 0; k < 3; ++k) {
      fill_q(z, (int64_t)R * V, 1.0, 80 + (uint64_t)k);
      lg_models_add(&ms, lg_dtypes[k], z, R, V, coeff[k]);
    }
    uint64_t s = 3;
    for (int i = 0; i < S * L; ++i) draft[i] = (int32_t)(lt_next(&s) % V);
    for (int i = 0; i < R; ++i) seeds[i] = 9000 + (uint64_t)i;
    lmf_logits_params_t p;
    lg_params(&p, R);
    p.temperature = 1.0f;
    p.top_p = 0.98f;
    p.seeds = seeds;
    lmf_context_t *ctx[2] = {be.cpu, be.cuda};
    int ok = 1;
    for (int i = 0; i < 2 && ok; ++i)
      ok = LMF_CHECK_OK(lg_verify(ctx[i], ms.m, ms.K, &p, 1, draft, L, acc[i], next[i], st[i]));
    if (ok) {
      LMF_CHECK_BYTES_EQ(acc[0], acc[1], sizeof acc[0], "accepted, CPU vs CUDA");
      LMF_CHECK_BYTES_EQ(next[0], next[1], sizeof next[0], "next_token, CPU vs CUDA");
      LMF_CHECK_BYTES_EQ(st[0], st[1], sizeof st[0], "status, CPU vs CUDA");
    }
  }
  lg_models_free(&ms);
  free(z);
  free(draft);
  free(seeds);
  backends_close(&be);
}

/* The CUDA path a case selects through the environment (read by every CUDA call; "0" turns a path off,
 * unset leaves the choice to the library): 0 the separate kernels, 1 and 2 list mode (LMF_LOGITS_LIST=1;
 * mode 2 is the cases' run without log-prob rows), 3 the one-launch step (LMF_LOGITS_COOP=1) where the
 * job and the device allow it, else the separate kernels. */
static void select_path(int mode) {
  setenv("LMF_LOGITS_LIST", mode == 1 || mode == 2 ? "1" : "0", 1);
  setenv("LMF_LOGITS_COOP", mode == 3 ? "1" : "0", 1);
}

/* The two variables as the case found them, put back by paths_restore. */
typedef struct saved_paths {
  char *list, *coop;
} saved_paths;

static saved_paths paths_save(void) {
  const char *l = getenv("LMF_LOGITS_LIST"), *c = getenv("LMF_LOGITS_COOP");
  saved_paths s = {l ? strdup(l) : NULL, c ? strdup(c) : NULL};
  return s;
}

static void paths_restore(saved_paths s) {
  if (s.list) setenv("LMF_LOGITS_LIST", s.list, 1);
  else unsetenv("LMF_LOGITS_LIST");
  if (s.coop) setenv("LMF_LOGITS_COOP", s.coop, 1);
  else unsetenv("LMF_LOGITS_COOP");
  free(s.list);
  free(s.coop);
}

/* Top-k and top-p cuts, with the list mode off and on (LMF_LOGITS_LIST, read by every CUDA call): rows
 * peaked enough for the window below the maximum to hold the cut (list mode finishes them), rows in
 * between, flat rows whose windows hold too many tokens (the general search, in the list cut's block), a
 * step with min-p and no cut (every block of the one-launch step adds its survivors before the ticket),
 * and values on a 1/64 grid, so the cuts fall inside groups of tied tokens. B = 160, V = 32768 on the
 * GPUs lent (132 SMs): 4 chunks per block, so the combine pass fills the lists; without log-prob rows
 * it leaves Y unwritten, and the rows its lists cannot decide take the second combine pass with the
 * window's work (medium rows) and, where that cannot decide either (flat rows), Y written by the list
 * cut's block; with top-p alone (no log-prob rows) they take the 256 bins spread over their chunks
 * instead (logits_flat.cuh: FlatRowsMatchCpu). B = 600, V = 20480 there: one block per row walking 10 chunks, the combine's unrolled
 * sums (more than kPrefetchChunks chunks a block). */
void test_cuda_logits_cuts(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  static const struct {
    int32_t B, V;
  } shapes[] = {
#if defined(LMF_TEST_EMU)
      /* On the CPU emulator (tests/emu), fewer tokens with the same plans at 4 and 132 SMs: B = 1 and 4
       * with several chunks per block or one, B = 20 with one block of 10 chunks per row at 4 SMs
       * (more than kPrefetchChunks: the combine's unrolled sums); B = 1, V = 32000 is the one-launch
       * step's grid (16 blocks) at 4 SMs too, where the ThreadSanitizer build (LMF_EMU_TSAN) runs. */
      {1, 128256}, {1, 32000}, {4, 32000}, {20, 20480}, {64, 4099}, {300, 1000}
#else
      {1, 128256}, {8, 128256}, {4, 32000}, {64, 4099}, {160, 32768}, {300, 1000}, {600, 20480}
#endif
  };
  static const struct {
    float T, top_p, min_p;
    int32_t top_k;
    const char *name;
  } cuts[] = {{0.8f, 0.9f, 0.0f, 0, "top-p 0.9"},
              {1.0f, 0.5f, 0.0f, 0, "top-p 0.5"},
              {1.0f, 0.99f, 0.05f, 0, "top-p 0.99, min-p 0.05"},
              {0.7f, 1.0f, 0.0f, 1000, "top-k 1000"},
              {1.0f, 0.95f, 0.0f, 2048, "top-k 2048, top-p 0.95"},
              {0.0f, 0.9f, 0.0f, 0, "greedy, top-p 0.9 (log-probs)"},
              {0.9f, 1.0f, 0.05f, 0, "min-p 0.05, no cut"}};
  const saved_paths keep = paths_save();
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const int32_t B = shapes[si].B, V = shapes[si].V;
    float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * V);
    uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    if (!z || !seeds) {
      free(z);
      free(seeds);
      break;
    }
    for (int32_t b = 0; b < B; ++b) seeds[b] = 77 + (uint64_t)b;
    /* Spread per model: 2 (peaked), 0.05 (flat), and at V >= 32000 1.5, where rows mix windows of at
     * most 2048 tokens, windows of 2049 .. 4096 (the CPU then masses every token; the lists may still
     * decide the row) and wider ones. */
    static const double sds[3] = {2.0, 0.05, 1.5};
    static const char *const sdname[3] = {"peaked", "flat", "medium"};
    for (int di = 0; di < 3; ++di) {
      if (di == 2 && V < 32000) continue;
      lg_models ms;
      lg_models_init(&ms);
      static const float coeff[3] = {1.0f, 1.0f, -1.0f};
      for (int k = 0; k < 3; ++k) {
        fill_q(z, (int64_t)B * V, sds[di], 300 + 10 * si + (uint64_t)k + 5 * (uint64_t)di);
        lg_models_add(&ms, lg_dtypes[k], z, B, V, coeff[k]);
      }
      /* mode 0: the separate kernels, list mode off; 1: on; 2: on without log-prob rows (the combine
       * pass then leaves Y unwritten for top-p calls until a row needs it); 3: the one-launch step
       * (k_coop, LMF_LOGITS_COOP=1) where the job and the device allow it (no top-k; a grid the
       * device holds at once) */
      for (size_t ci = 0; ci < sizeof cuts / sizeof cuts[0]; ++ci)
        for (int mode = 0; mode < 4; ++mode) {
          if (mode == 3 && cuts[ci].top_k > 0) continue;
          select_path(mode);
          lmf_logits_params_t p;
          lg_params(&p, B);
          p.temperature = cuts[ci].T;
          p.top_p = cuts[ci].top_p;
          p.top_k = cuts[ci].top_k;
          p.min_p = cuts[ci].min_p;
          p.seeds = seeds;
          char what[128];
          snprintf(what, sizeof what, "B %d V %d %s: %s, %s", (int)B, (int)V, sdname[di], cuts[ci].name,
                   mode == 0   ? "list mode off"
                   : mode == 1 ? "list mode on"
                   : mode == 2 ? "list mode on, no log-prob rows"
                               : "one launch where it fits");
          if (mode < 2) PARITY(&be, ms.m, ms.K, &p, 0, what);
          else PARITY_NO_LOGPROBS(&be, ms.m, ms.K, &p, what);
        }
      lg_models_free(&ms);
    }
    free(z);
    free(seeds);
  }
  paths_restore(keep);
  backends_close(&be);
}

/* List mode's flat rows (kernels/logits_flat.cuh): a top-p step without log-prob rows whose combine
 * lists cannot decide a row takes the bins and the pick (k_listcut_flat). Rows on a 1/64 grid (ties
 * at the cut) of spread 1 (the crossing bin, 1/16 nat wide, is listed: the list cut finds the cut)
 * and 0.05 (it holds more than 4096 tokens: every block writes Y and the last one searches it), and
 * rows of one token 20 nats above a flat rest under top-p 0.9999 (the cut lies past d2 = 32, where
 * the bins count nothing: the pick sends the row to the general search over Y); top-p alone, with
 * min-p, and greedy with the LSE; rows 1 and 2 bad (a NaN, a +inf: their bins and pick blocks leave
 * at once); top-p alone also replayed from a graph (each replay poisons the tokens and statuses
 * first, so each must write them: k_listcut_flat's blocks count from 0 again in every replay). The
 * CPU emulator at 4 SMs: B = 16 of 34 chunks, one block a row, so the bins pass flushes its block
 * histogram after 32 chunks and at the end; the lent GPUs (132 SMs): B = 64 and B = 600 of 35
 * chunks, one block a row there too. */
void test_cuda_logits_flat_rows(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  static const struct {
    int32_t B, V;
  } shapes[] = {
#if defined(LMF_TEST_EMU)
      {16, 33 * 2048 + 5}
#else
      {64, 128256}, {600, 34 * 2048 + 5}
#endif
  };
  static const struct {
    float T, top_p, min_p;
    const char *name;
  } cuts[] = {{1.0f, 0.9f, 0.0f, "top-p 0.9"},
              {0.8f, 0.99f, 0.05f, "top-p 0.99, min-p 0.05"},
              {0.0f, 0.9f, 0.0f, "greedy, top-p 0.9"}};
  static const double sds[3] = {1.0, 0.05, 0.05};
  const saved_paths keep = paths_save();
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const int32_t B = shapes[si].B, V = shapes[si].V;
    float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * V);
    uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    if (!z || !seeds) {
      free(z);
      free(seeds);
      break;
    }
    for (int32_t b = 0; b < B; ++b) seeds[b] = 901 + (uint64_t)b;
    for (int di = 0; di < 3; ++di) {
      lg_models ms;
      lg_models_init(&ms);
      fill_q(z, (int64_t)B * V, sds[di], 4100 + 7 * si + (uint64_t)di);
      if (di == 2) /* x = 8 at T = 0.4: y = 20, the rest within 0.2 of 0 */
        for (int32_t b = 0; b < B; ++b) z[(int64_t)b * V + (b * 7919) % V] = 8.0f;
      z[(int64_t)1 * V + 4099] = NAN; /* rows 1 and 2: a bad status, from the list cut's launch */
      z[(int64_t)2 * V + 70000 % V] = INFINITY;
      lg_models_add(&ms, lg_dtypes[di], z, B, V, 1.0f);
      for (size_t ci = 0; ci < sizeof cuts / sizeof cuts[0]; ++ci) {
        select_path(2); /* list mode, without log-prob rows below */
        lmf_logits_params_t p;
        lg_params(&p, B);
        p.temperature = di == 2 ? (cuts[ci].T > 0.0f ? 0.4f : 0.0f) : cuts[ci].T;
        p.top_p = di == 2 ? 0.9999f : cuts[ci].top_p;
        p.min_p = di == 2 ? 0.0f : cuts[ci].min_p;
        p.seeds = seeds;
        char what[128];
        snprintf(what, sizeof what, "B %d V %d spread %.2f: %s, list mode, no log-prob rows", (int)B, (int)V,
                 sds[di], cuts[ci].name);
        PARITY_NO_LOGPROBS(&be, ms.m, ms.K, &p, what);
        if (ci == 0) { /* replayed from a graph: each replay's blocks count from 0 again (k_init) */
          snprintf(what, sizeof what, "B %d V %d spread %.2f: %s, list mode, graph replayed twice", (int)B,
                   (int)V, sds[di], cuts[ci].name);
          parity_at(&be, ms.m, ms.K, &p, 0, 0, 2, what, __FILE__, __LINE__);
        }
      }
      lg_models_free(&ms);
    }
    free(z);
    free(seeds);
  }
  paths_restore(keep);
  backends_close(&be);
}

/* A row whose top-p target lies past d2 = 32 (16 nats below the max): token 0 at 0, the rest tied at
 * -18, so top_p times the combine's total exceeds token 0's mass (the tail holds about 1.2e-4 of the
 * total at V = 8192). k_coop's and the flat rows' bins count only the tokens below d2 = 32, so their
 * pick sends such a row to the general search (coop_pick); the other paths search it as any row. Returns
 * the number of tokens the cut keeps in double arithmetic (a check that the target is past token 0). */
static int32_t topp_past_row(float *z, int32_t V, float *top_p, int32_t *other) {
  (void)other;
  for (int32_t v = 0; v < V; ++v) z[v] = v == 0 ? 0.0f : -18.0f;
  *top_p = 0.9999f;
  const double tail = (double)(V - 1) * exp(-18.0);
  return (double)*top_p * (1.0 + tail) > 1.0 ? V : 1;
}

/* Top-p's target rule (lg_topp_total_row: a row where top_p times the combine's total and top_p times
 * every token's mass keep different numbers of tied tokens; lg_topp_group_row: one where that total's
 * 8-token groups, added in fp32, decide it; topp_past_row: a target past the tokens within 16 nats of
 * the max) on each CUDA path: the separate kernels' general search, list mode (the window pass's lists;
 * where a block walks 4 chunks, the combine pass's lists: B = 16 at 4 SMs, 600 at 132), without
 * log-prob rows, and the one-launch step with and without them (B = 4 at 4 SMs: 16 blocks, the grid
 * the emulator holds at once there). */
void test_cuda_logits_topp_total(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  enum { V = 4 * 2048 };
#if defined(LMF_TEST_EMU)
  static const int32_t batches[] = {4, 16};
#else
  static const int32_t batches[] = {4, 16, 600};
#endif
  static int32_t (*const builders[3])(float *, int32_t, float *, int32_t *) = {lg_topp_total_row,
                                                                               lg_topp_group_row, topp_past_row};
  const saved_paths keep = paths_save();
  for (int r = 0; r < 3; ++r) {
    float row[V], top_p = 0.0f;
    if (!LMF_CHECK_MSG(builders[r](row, V, &top_p, NULL) > 1, "row %d", r)) continue;
    for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; ++bi) {
      const int32_t B = batches[bi];
      float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * V);
      uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
      lg_models ms;
      lg_models_init(&ms);
      if (z && seeds) {
        for (int32_t b = 0; b < B; ++b) {
          memcpy(z + (size_t)b * V, row, sizeof row);
          seeds[b] = 500 + (uint64_t)b;
        }
        if (LMF_CHECK(lg_models_add(&ms, LMF_DTYPE_F32, z, B, V, 1.0f) >= 0))
          for (int mode = 0; mode < 4; ++mode) {
            select_path(mode);
            lmf_logits_params_t p;
            lg_params(&p, B);
            p.temperature = 1.0f;
            p.top_p = top_p;
            p.seeds = seeds;
            char what[96];
            snprintf(what, sizeof what, "row %d, B %d, top-p %a, mode %d", r, (int)B, (double)top_p, mode);
            if (mode == 2 || mode == 3) PARITY_NO_LOGPROBS(&be, ms.m, ms.K, &p, what);
            if (mode != 2) PARITY(&be, ms.m, ms.K, &p, 0, what);
          }
      }
      lg_models_free(&ms);
      free(z);
      free(seeds);
    }
  }
  paths_restore(keep);
  backends_close(&be);
}

/* The call is graph-capturable (capture mode global: no call inside it may be unsafe to capture) and a
 * replayed graph gives the direct call's results, on each CUDA path the environment can select: the
 * separate kernels, list mode (its folded launches), PDL, and the one-launch cooperative step. Replayed twice where the call has no in-place state (the second replay must
 * re-initialise the workspace), once with GeDi (whose state each replay advances). */
void test_cuda_logits_graph(void) {
  REQUIRE_CUDA();
  backends be;
  if (!backends_open(&be)) {
    backends_close(&be);
    return;
  }
  static const char *const envs[3] = {"LMF_LOGITS_LIST", "LMF_LOGITS_PDL", "LMF_LOGITS_COOP"};
  char *saved[3];
  for (int e = 0; e < 3; ++e) {
    const char *v = getenv(envs[e]);
    saved[e] = v ? strdup(v) : NULL;
  }
  /* Each mode's values of envs (NULL: unset). */
  static const struct {
    const char *name;
    const char *env[3];
  } modes[] = {{"separate kernels", {"0", NULL, "0"}},
               {"list mode", {"1", NULL, "0"}},
               {"list mode + PDL", {"1", "1", "0"}},
               {"one launch where it fits", {"0", NULL, "1"}},
               {"the library's choice", {NULL, NULL, NULL}}};
  static const struct {
    int32_t B, V;
  } shapes[] = {{1, 128256}, {8, 32000}, {300, 1000}};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
    const int32_t B = shapes[si].B, V = shapes[si].V;
    float *z = (float *)lt_malloc(sizeof(float) * (size_t)B * V);
    uint64_t *seeds = (uint64_t *)lt_malloc(sizeof(uint64_t) * (size_t)B);
    float *Lp = (float *)lt_malloc(sizeof(float) * (size_t)B), *Ln = (float *)lt_malloc(sizeof(float) * (size_t)B);
    int32_t *n = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)B);
    lg_models ms;
    lg_models_init(&ms);
    if (z && seeds && Lp && Ln && n) {
      static const float coeff[4] = {1.0f, 1.0f, -1.0f, 0.0f};
      for (int k = 0; k < 4; ++k) {
        fill_q(z, (int64_t)B * V, k == 0 ? 2.0 : 1.0, 900 + 10 * si + (uint64_t)k);
        lg_models_add(&ms, lg_dtypes[k % 3], z, B, V, coeff[k]);
      }
      for (int32_t b = 0; b < B; ++b) {
        seeds[b] = 31 + (uint64_t)b;
        n[b] = b % 3;
        Lp[b] = -1.5f * (float)n[b];
        Ln[b] = -1.75f * (float)n[b];
      }
      for (size_t mi = 0; mi < sizeof modes / sizeof modes[0]; ++mi) {
        for (int e = 0; e < 3; ++e) {
          if (modes[mi].env[e]) setenv(envs[e], modes[mi].env[e], 1);
          else unsetenv(envs[e]);
        }
        char what[160];
        lmf_logits_params_t p;
        lg_params(&p, B);
        p.temperature = 0.8f;
        p.top_p = 0.9f;
        p.seeds = seeds;
        snprintf(what, sizeof what, "B %d V %d, %s, graph: top-p 0.9", (int)B, (int)V, modes[mi].name);
        PARITY_GRAPH(&be, ms.m, 3, &p, 0, 2, what);
        p.top_k = 40;
        p.min_p = 0.02f;
        snprintf(what, sizeof what, "B %d V %d, %s, graph: top-k 40, top-p, min-p", (int)B, (int)V,
                 modes[mi].name);
        PARITY_GRAPH(&be, ms.m, 3, &p, 0, 2, what);
        lg_params(&p, B);
        snprintf(what, sizeof what, "B %d V %d, %s, graph: greedy", (int)B, (int)V, modes[mi].name);
        PARITY_GRAPH(&be, ms.m, 3, &p, 0, 2, what);
        lg_params(&p, B);
        p.temperature = 1.0f;
        p.top_p = 0.95f;
        p.seeds = seeds;
        gedi_on(&p, 1, 3, Lp, Ln, n);
        ms.m[1].coeff = 0.0f;
        ms.m[2].coeff = 0.0f;
        snprintf(what, sizeof what, "B %d V %d, %s, graph: GeDi, top-p 0.95", (int)B, (int)V, modes[mi].name);
        PARITY_GRAPH(&be, ms.m, 4, &p, 1, 1, what);
        ms.m[1].coeff = 1.0f;
        ms.m[2].coeff = -1.0f;
      }
    }
    lg_models_free(&ms);
    free(z);
    free(seeds);
    free(Lp);
    free(Ln);
    free(n);
  }
  for (int e = 0; e < 3; ++e) {
    if (saved[e]) setenv(envs[e], saved[e], 1);
    else unsetenv(envs[e]);
    free(saved[e]);
  }
  backends_close(&be);
}
