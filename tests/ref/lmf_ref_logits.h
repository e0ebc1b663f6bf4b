/*
 * A plain C double-precision reference of one row of the logit combination (specs/logit-combination.md,
 * include/lmfuse/logits.h): combination, contrastive plausibility, a model's nucleus, GeDi (posterior,
 * class filter), bias, temperature, top-k, top-p, min-p, and the final log-probs. It samples nothing: the
 * Gumbel noise is the library's; the reference gives the distribution the samples must follow and the
 * greedy token.
 *
 * The rules it implements, where the spec leaves a choice, are the ones logits.h documents:
 *   - x_k(v) = z_k(v) / tau_k; a dense column v >= V_k is -inf; an absent sparse token is the fill value;
 *   - a model with c_k = 0 adds nothing (no 0 * inf), but is still read if a mask or GeDi uses it;
 *   - x_k(v) = -inf in a model with c_k != 0 gives s(v) = -inf whatever the sign of c_k;
 *   - a NaN or +inf in an input the row uses: LMF_ROW_NONFINITE; no survivor: LMF_ROW_ALL_MASKED;
 *     a sparse id outside [0, V_out): LMF_ROW_BAD_INDEX; then argmax = -1;
 *   - ties (greedy, top-k, top-p order, GeDi's ascending desirability) go to the lowest token id;
 *   - the filters see the distribution left by the previous step; top-p keeps the smallest
 *     highest-first prefix whose mass is >= p; min-p keeps p(v) >= min_p * p_max;
 *   - T = 0 is greedy, and the distribution outputs then use T = 1;
 *   - GeDi's class_bias is added to the desired class's logit and moves the filter's target to
 *     target_p' = sigmoid(logit(target_p) + class_bias) (the spec states both).
 */
#ifndef LMF_TESTS_REF_LOGITS_H
#define LMF_TESTS_REF_LOGITS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ref_lg_model {
  const double *z;      /* dense: [vocab] raw logits; sparse: [sparse_k] values */
  const int32_t *ids;   /* sparse: [sparse_k] token ids; NULL: dense */
  int32_t vocab;        /* dense: columns the model has */
  int32_t sparse_k;
  double fill;          /* sparse: the raw logit of absent tokens */
  double coeff;         /* c_k */
  double tau;           /* tau_k */
} ref_lg_model;

typedef struct ref_lg_config {
  int32_t vocab_out;
  int32_t plausibility_model; /* -1: off */
  double plausibility_alpha;
  int32_t nucleus_model;      /* -1: off */
  double nucleus_p;
  const double *bias;         /* [vocab_out] or NULL */
  int32_t gedi_pos, gedi_neg; /* -1: off */
  double omega, logit_scale, bias_pos, bias_neg, class_bias, filter_p, target_p;
  double L_pos, L_neg;
  int32_t n;
  double temperature;         /* 0: greedy (distribution at T = 1) */
  int32_t top_k;              /* 0: off */
  double top_p;               /* 1: off */
  double min_p;               /* 0: off */
} ref_lg_config;

/* Every mask and filter off, T = 1, GeDi's documented defaults (omega 30, scale 1, filter 0.8/0.8). */
void ref_lg_config_default(ref_lg_config *c, int32_t vocab_out);

typedef struct ref_lg_result {
  int32_t status;       /* lmf_row_status_t */
  int32_t argmax;       /* the greedy token of the final distribution; -1 unless status is OK */
  double lse;           /* logsumexp of s/T over the survivors */
  int32_t survivors;
  /* Optional arrays of vocab_out the caller provides (NULL: not wanted). */
  double *s;            /* s(v): combination + omega logP(desired|v) + bias, before masks */
  double *logprobs;     /* final log-probs, -inf where masked */
  double *logp_desired; /* GeDi: logP(desired | v) */
  /* GeDi's state after the token `argmax` (valid when status is OK and GeDi is on). */
  double L_pos_next, L_neg_next;
} ref_lg_result;

/* One row. Returns the status (also in r->status). */
int32_t ref_lg_row(const ref_lg_model *m, int num_models, const ref_lg_config *c, ref_lg_result *r);

/* Stable helpers, in double. */
double ref_lg_lse(const double *x, int n);       /* -inf entries ignored; -inf if all are */
double ref_lg_softplus(double x);

#ifdef __cplusplus
}
#endif

#endif
