/*
 * lmfuse logits: fused combination of several models' next-token logits (EFT up-scaling, proxy-tuning,
 * DExperts, contrastive decoding, classifier-free guidance, GeDi) with masks, filters and per-row-seeded
 * sampling, in one call. Semantics: docs/logits.md and the spec (specs/logit-combination.md).
 *
 * Per output row b and token v in [0, V_out):
 *   x_k(v) = z_k(v) / tau_k                     model k's logits (v >= V_k: -inf; sparse: fill value)
 *   s(v)   = sum_k c_k x_k(v) [+ omega logP(desired | v)] [+ bias(v)]     accumulated in fp32, in
 *            model order, each term one fused multiply-add (one rounding; both backends alike)
 *   masks: contrastive plausibility on one model, the nucleus of one model, GeDi's class filter
 *   then the temperature T, top-k, top-p, min-p, and a Gumbel-max sample keyed by
 *   (row seed, row offset, token id): the token depends only on the row's own inputs and seed.
 *
 * Non-finite rules: x_k(v) = -inf in a model with c_k != 0 gives s(v) = -inf whatever the sign of c_k;
 * a NaN or +inf in any input the row uses gives the row status LMF_ROW_NONFINITE and token -1; a row
 * with every token masked gets LMF_ROW_ALL_MASKED and token -1. Ties go to the lowest token id.
 *
 * Memory: every pointer is backend memory (device memory on a CUDA context, host memory on a CPU
 * context); scratch comes from a caller workspace sized by lmf_logits_workspace_size(). No allocation,
 * no host synchronisation: on CUDA the call enqueues on `stream` and returns.
 *
 * CUDA paths: the library picks, per call, among three kernel plans that give the same results (the
 * one-launch step for small batches, list mode where its lists fill, the separate kernels elsewhere;
 * docs/logits.md, "Which path a step takes"). LMF_LOGITS_COOP and LMF_LOGITS_LIST in the environment
 * override it, read by every call: "0" never takes that path, "1" takes it wherever the job allows.
 * The workspace size depends on LMF_LOGITS_LIST ("0" reserves no lists): set it before sizing.
 */
#ifndef LMFUSE_LOGITS_H
#define LMFUSE_LOGITS_H

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Per-row outcome, written to outputs->status. */
typedef enum lmf_row_status {
  LMF_ROW_OK = 0,
  LMF_ROW_ALL_MASKED = 1,   /* every token was masked: token -1 */
  LMF_ROW_NONFINITE = 2,    /* NaN or +inf in an input the row uses: token -1 */
  LMF_ROW_BAD_INDEX = 3     /* a sparse token id outside [0, V_out): token -1 */
} lmf_row_status_t;

/* Most models one call combines. */
#define LMF_LOGITS_MAX_MODELS 16

/* One model's logits. A fixed-size record: reserved must be 0. */
typedef struct lmf_logits_model {
  const void *logits;          /* dense: [rows][row_stride] of dtype, the first `vocab` used;
                                  sparse: [rows][row_stride] values, the first sparse_k used */
  const int32_t *row_index;    /* optional: output row b reads input row row_index[b]; NULL: row b */
  const float *coeff_rows;     /* optional: per-output-row coefficient [num_rows]; NULL: coeff */
  const int32_t *sparse_index; /* sparse rows: token ids [rows][row_stride], the first sparse_k used;
                                  NULL: dense */
  int64_t row_stride;          /* elements between input rows; >= vocab (dense) or sparse_k (sparse) */
  int32_t dtype;               /* LMF_DTYPE_F32, F16 or BF16 */
  int32_t vocab;               /* V_k >= 1: columns this model has (dense); for sparse rows, the
                                  vocabulary its ids come from */
  float coeff;                 /* c_k */
  float temperature;           /* tau_k > 0 (1 = raw logits) */
  int32_t sparse_k;            /* entries per sparse row (0 for dense) */
  float sparse_fill;           /* raw logit of tokens absent from a sparse row (finite, e.g. -50000) */
  int32_t reserved[2];         /* must be 0 */
} lmf_logits_model_t;

#define LMF_LOGITS_PARAMS_VERSION 1u

typedef struct lmf_logits_params {
  size_t struct_size;          /* sizeof(lmf_logits_params_t) */
  uint32_t version;            /* LMF_LOGITS_PARAMS_VERSION */
  int32_t num_rows;            /* B >= 1 */
  int32_t vocab_out;           /* V_out; 0: every model has the same vocab, which V_out then is */

  /* Masks. A model index of -1 turns the mask off. */
  int32_t plausibility_model;  /* contrastive decoding: keep v with x_m(v) >= max x_m + log(alpha) */
  float plausibility_alpha;    /* (0, 1] */
  int32_t nucleus_model;       /* DExperts: keep model m's own smallest top-p set (of softmax(x_m)) */
  float nucleus_p;             /* (0, 1] */
  const float *bias;           /* optional additive bias: [V_out], or [num_rows][bias_row_stride] */
  int64_t bias_row_stride;     /* 0: the one bias row serves every row */

  /* GeDi (off when gedi_pos_model is -1). The two class-conditional models are models of the call
   * (usually with coeff 0); their rows are the desired- and undesired-code logits. */
  int32_t gedi_pos_model;
  int32_t gedi_neg_model;
  float gedi_omega;            /* disc_weight (30 in GeDi's code) */
  float gedi_logit_scale;      /* 1 */
  float gedi_bias_pos;         /* class biases, 0 */
  float gedi_bias_neg;
  float gedi_class_bias;       /* added to the desired class's logit; 0 */
  float gedi_filter_p;         /* 0.8 = 1 - rho; 0 disables the class filter */
  float gedi_target_p;         /* 0.8 = tau */
  float *gedi_L_pos;           /* per-row state [num_rows], read, then updated for the chosen token */
  float *gedi_L_neg;
  int32_t *gedi_n;             /* prefix length per row */

  /* Sampling, in this order after the masks: temperature, top-k, top-p, min-p, Gumbel-max. */
  float temperature;           /* T >= 0; 0 = greedy (argmax) */
  const float *temperature_rows; /* optional per-row T [num_rows] */
  int32_t top_k;               /* 0: off */
  float top_p;                 /* in (0, 1]; 1: off (smallest set with mass >= p: fp32 masses
                                  e^(y - y_max) in value-then-id order against p times the row's
                                  total, computed as docs/logits.md says; exact to rounding) */
  float min_p;                 /* in [0, 1]; 0: off (keep p(v) >= min_p * p_max) */
  const uint64_t *seeds;       /* [num_rows] (verify: [num_seqs]); required unless all rows are greedy */
  const uint64_t *offsets;     /* [num_rows] (verify: [num_seqs]) per-row step / offset; NULL: 0 */
} lmf_logits_params_t;

#define LMF_LOGITS_OUTPUTS_VERSION 1u

/* Outputs. For T = 0 the distribution outputs use T = 1 (the argmax is the same). */
typedef struct lmf_logits_outputs {
  size_t struct_size;          /* sizeof(lmf_logits_outputs_t) */
  uint32_t version;            /* LMF_LOGITS_OUTPUTS_VERSION */
  int32_t *tokens;             /* [num_rows], required: the token, -1 when the row's status is not OK */
  int32_t *status;             /* optional [num_rows]: lmf_row_status_t */
  float *token_logprob;        /* optional [num_rows]: log-prob of the token in the final distribution */
  float *lse;                  /* optional [num_rows]: logsumexp of s/T over the surviving tokens */
  float *logprobs;             /* optional [num_rows][logprobs_row_stride]: s(v)/T - lse, -inf masked */
  int64_t logprobs_row_stride; /* >= V_out when logprobs is given */
  float *gedi_logp_desired;    /* optional [num_rows]: logP(desired | token) (GeDi) */
} lmf_logits_outputs_t;

LMF_API lmf_status_t lmf_logits_params_init(lmf_logits_params_t *params, size_t struct_size);
LMF_API lmf_status_t lmf_logits_outputs_init(lmf_logits_outputs_t *outputs, size_t struct_size);

/* Bytes of workspace lmf_logits_combine / lmf_logits_verify_draft need for these inputs. */
LMF_API lmf_status_t lmf_logits_workspace_size(lmf_context_t *ctx, const lmf_logits_model_t *models,
                                               size_t num_models, const lmf_logits_params_t *params,
                                               size_t *bytes);

/* Combines, masks, filters and samples every row. Checks every argument first; on a bad argument
 * nothing is written. Row-level problems (non-finite inputs, all masked) are per-row statuses. */
LMF_API lmf_status_t lmf_logits_combine(lmf_context_t *ctx, const lmf_logits_model_t *models,
                                        size_t num_models, const lmf_logits_params_t *params,
                                        const lmf_logits_outputs_t *outputs, void *workspace,
                                        size_t workspace_bytes, lmf_stream_t stream);

/* Speculative verification for EFT up-scaling: a draft of `draft_len` tokens per sequence, drafted by
 * model `draft_model` (its softmax(x) is q), is scored by the combined distribution p. Rows are laid
 * out per sequence: row b * (draft_len + 1) + i holds position i of sequence b (params->num_rows =
 * num_seqs * (draft_len + 1)). Token i is accepted with probability min(1, p(d_i) / q(d_i)) (uniform
 * keyed by (seed, offset + i)); at the first rejection the correction is sampled from
 * normalise(max(0, p - q)); if all are accepted the bonus token is sampled from p at position
 * draft_len. Here params->seeds and params->offsets are per sequence ([num_seqs]: sequence b uses
 * seeds[b] and offsets[b] + i at position i). Writes accepted[b] (0 .. draft_len), next_token[b] and,
 * if status is not NULL, status[b] (lmf_row_status_t; not OK: next_token[b] = -1). Masks, filters and
 * temperature apply to p as in lmf_logits_combine; GeDi is not allowed here. */
LMF_API lmf_status_t lmf_logits_verify_draft(lmf_context_t *ctx, const lmf_logits_model_t *models,
                                             size_t num_models, const lmf_logits_params_t *params,
                                             int32_t draft_model, const int32_t *draft_tokens,
                                             int32_t draft_len, int32_t *accepted,
                                             int32_t *next_token, int32_t *status, void *workspace,
                                             size_t workspace_bytes, lmf_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_LOGITS_H */
