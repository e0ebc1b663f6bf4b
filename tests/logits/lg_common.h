/*
 * Shared helpers of the logits cases (tests/logits/, tests/cuda/test_logits_cuda.c): the spec's input
 * vectors, host buffers in any dtype, params with every option off, outputs that are poisoned before
 * each call and checked after it (every element written, nothing outside the rows touched, NaN never
 * passes), and one entry point that runs a call on a CPU or a CUDA context from host-side descriptions.
 */
#ifndef LMF_TESTS_LOGITS_COMMON_H
#define LMF_TESTS_LOGITS_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "lmf_check.h"
#include "lmf_ref_logits.h"
#include "lmfuse/logits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- The spec's vectors (specs/logit-combination.md, "Test vectors") ------------------------------- */

extern const float lg_t1_zL[5], lg_t1_zSf[5], lg_t1_zSb[5];
extern const float lg_t2_zSafe[5];
extern const float lg_t3_zE[5], lg_t3_zA[5];
extern const float lg_t4_zb[5], lg_t4_ze[5], lg_t4_za[5];
extern const float lg_t5_zLM[5], lg_t5_zPos[5], lg_t5_zNeg[5];

/* The three float dtypes, and names for messages. */
extern const int32_t lg_dtypes[3];
const char *lg_dtype_name(int32_t dtype);

/* ---- Buffers ------------------------------------------------------------------------------------- */

/* n floats converted to dtype, in a fresh host buffer (free()); NULL after reporting on failure. */
void *lg_encode(int32_t dtype, const float *src, int64_t n);
/* The values a dtype buffer holds, back in double. */
void lg_decode(double *dst, int32_t dtype, const void *src, int64_t n);

/* A set of models whose logits the set owns (host buffers in each model's dtype). */
typedef struct lg_models {
  size_t K;
  void *buf[LMF_LOGITS_MAX_MODELS];
  lmf_logits_model_t m[LMF_LOGITS_MAX_MODELS];
} lg_models;
void lg_models_init(lg_models *s);
/* Appends a dense model: rows x vocab values of z (contiguous, row_stride = vocab), encoded in dtype.
 * Returns the model's index, or -1 after reporting. */
int lg_models_add(lg_models *s, int32_t dtype, const float *z, int64_t rows, int32_t vocab, float coeff);
void lg_models_free(lg_models *s);

/* A dense model record: every optional field off, reserved zero. */
lmf_logits_model_t lg_model(const void *logits, int32_t dtype, int32_t vocab, int64_t row_stride, float coeff);

/* params (via lmf_logits_params_init) with num_rows, every mask, GeDi and filter off, T = 0 (greedy). */
void lg_params(lmf_logits_params_t *p, int32_t num_rows);

/* ---- Outputs ------------------------------------------------------------------------------------- */

typedef struct lg_out {
  int32_t rows;
  int32_t vocab_out;
  int64_t stride;            /* logprobs row stride (>= vocab_out) */
  int32_t *tokens;
  int32_t *status;
  float *token_logprob;
  float *lse;
  float *logprobs;           /* [rows][stride] */
  float *gedi_logp_desired;
  lmf_logits_outputs_t o;    /* points at the arrays above; a case may NULL an optional one */
} lg_out;

/* Every output array, stride 0 meaning vocab_out; o.gedi_logp_desired only if gedi. 0 on failure. */
int lg_out_alloc(lg_out *out, int32_t rows, int32_t vocab_out, int64_t stride, int gedi);
void lg_out_free(lg_out *out);

/* The poison the outputs hold before each call. */
#define LG_POISON_TOKEN ((int32_t)0x5eadbeef)
/* A byte whose repetition is no token and no status (a graph's replays poison by memset). */
#define LG_POISON_BYTE 0x5e
#define LG_POISON_BITS 0x7fc0deadu
/* Poisons every output array (the whole logprobs allocation, padding included). */
void lg_out_poison(lg_out *out);
/* 1 if every output array still holds the poison (nothing written). */
int lg_out_untouched_at(const lg_out *out, const char *what, const char *file, int line);
#define LG_OUT_UNTOUCHED(out, what) lg_out_untouched_at((out), (what), __FILE__, __LINE__)
/* After a successful call: every element the call owns was written, padding columns were not, a token is
 * -1 exactly when its row status is not OK, OK rows hold a normalised distribution with no NaN and
 * token_logprob = logprobs[token]; `gedi` says whether GeDi was on. */
int lg_out_check_written_at(const lg_out *out, int gedi, const char *what, const char *file, int line);

/* ---- Running a call --------------------------------------------------------------------------------- */

/* Runs lmf_logits_combine on ctx. Every pointer in models, params and out->o is host memory; on a CUDA
 * context each buffer is copied to device memory first, and outputs and GeDi state are copied back.
 * Queries the workspace size (its status is returned if it fails) and passes a poisoned workspace of
 * exactly that size. Poisons the outputs first; on LMF_OK checks them with lg_out_check_written, on a
 * failure checks that nothing was written. Returns the call's status. */
lmf_status_t lg_combine_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t num_models,
                           const lmf_logits_params_t *params, lg_out *out, const char *file, int line);
#define lg_combine(ctx, models, k, params, out) lg_combine_at((ctx), (models), (k), (params), (out), __FILE__, __LINE__)

/* lg_combine_at with the call captured into a CUDA graph (lt_graph_run: capture mode global) and the
 * graph launched `replays` times (at least once) on a stream of its own; on a CPU context, one plain
 * call on the NULL stream. */
lmf_status_t lg_combine_graph_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t num_models,
                                 const lmf_logits_params_t *params, lg_out *out, int replays, const char *file,
                                 int line);

/* The same for lmf_logits_verify_draft: num_seqs = params->num_rows / (draft_len + 1); accepted,
 * next_token and status (may be NULL) are host arrays of num_seqs, poisoned first and checked after: an
 * OK sequence has accepted in [0, draft_len] and next_token in [0, V_out); otherwise next_token is -1. */
lmf_status_t lg_verify_at(lmf_context_t *ctx, const lmf_logits_model_t *models, size_t num_models,
                          const lmf_logits_params_t *params, int32_t draft_model, const int32_t *draft_tokens,
                          int32_t draft_len, int32_t *accepted, int32_t *next_token, int32_t *status,
                          const char *file, int line);
#define lg_verify(ctx, models, k, params, dm, dt, dl, acc, next, st) \
  lg_verify_at((ctx), (models), (k), (params), (dm), (dt), (dl), (acc), (next), (st), __FILE__, __LINE__)

/* V_out of a call: params->vocab_out, or models[0].vocab when it is 0. */
int32_t lg_vocab_out(const lmf_logits_model_t *models, const lmf_logits_params_t *params);

/* ---- Checks ---------------------------------------------------------------------------------------- */

/* got[v] against want[v] for v < n: -inf exactly where want is -inf, within tol elsewhere. */
int lg_check_logprobs_at(const float *got, const double *want, int n, double tol, const char *what,
                         const char *file, int line);
#define LG_CHECK_LOGPROBS(got, want, n, tol, what) \
  lg_check_logprobs_at((got), (want), (n), (tol), (what), __FILE__, __LINE__)
/* The same with tolerance tol + rel * |want| (fp32 rounding of large log-probs). */
int lg_check_logprobs_rel_at(const float *got, const double *want, int n, double tol, double rel, const char *what,
                             const char *file, int line);

/* The bytes of two output sets (tokens, status, token_logprob, lse, logprobs rows) are equal. */
int lg_out_equal_at(const lg_out *a, const lg_out *b, const char *what, const char *file, int line);
#define LG_OUT_EQUAL(a, b, what) lg_out_equal_at((a), (b), (what), __FILE__, __LINE__)
/* Row ra of a equals row rb of b: token and status exactly, floats within tol (-inf where -inf). */
int lg_row_near_at(const lg_out *a, int32_t ra, const lg_out *b, int32_t rb, double tol, const char *what,
                   const char *file, int line);
#define LG_ROW_NEAR(a, ra, b, rb, tol, what) lg_row_near_at((a), (ra), (b), (rb), (tol), (what), __FILE__, __LINE__)

/* The reference row for models given as (host dtype buffers of) lmf_logits_model_t rows: reads row `row`
 * of each model (row_index, coeff_rows, sparse rows, temperature honoured) and the params' masks, GeDi
 * state, bias and filters. logprobs / s / logp_desired may be NULL. */
int32_t lg_ref_row(const lmf_logits_model_t *models, size_t num_models, const lmf_logits_params_t *params,
                   int32_t row, ref_lg_result *r);

/* ---- Top-p's target ----------------------------------------------------------------------------- */

/* A row (z[0 .. V), V >= 3 x 2048) and a top_p on which top-p's target rule decides the cut
 * (docs/logits.md): token 0 at 0, LG_TIED tokens at one value -a from id 2048 on (the second and third
 * of the 2048-token blocks), -inf elsewhere; top_p such that top_p x the combine pass's total (the
 * blocks' e^(y - block max) sums, rescaled to the row's max in double) and top_p x the sum of every
 * token's fp32 mass e^(y - ymax) need different numbers of the tied tokens, both at least 1e-6 of a
 * token's mass from a boundary. With temperature 1, the count of survivors the library's rule (the
 * combine's total) keeps, token 0 included (*other: the other rule's); 0 if no such top_p was found
 * (then *top_p is untouched). */
#define LG_TIED 3000
int32_t lg_topp_total_row(float *z, int32_t V, float *top_p, int32_t *other);

/* A row (V >= 2 x 2048) and a top_p on which the combine's total is decided by its groups (docs/logits.md:
 * each 8-token group of a 2048-token block adds its masses in fp32 in token order, lmf_lg_group_add):
 * token 0 at 0, id 2048 at -4, each later group of ids 2056 .. 4095 a token at -4.5 then seven tied
 * lower, -inf elsewhere; top_p such that top_p x that total, top_p x the total with every mass added
 * in double and top_p x the groups added in the reverse order need different numbers of the tied
 * tokens (the first against each other), each at least 1e-6 of a token's mass from a boundary. With
 * temperature 1, the count of survivors the groups' total keeps (*other: the double sums'); 0 if no
 * such top_p was found. */
int32_t lg_topp_group_row(float *z, int32_t V, float *top_p, int32_t *other);

#ifdef __cplusplus
}
#endif

#endif
