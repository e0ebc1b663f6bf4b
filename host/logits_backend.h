/* Internal to liblmfuse: what the logits host layer (host/logits.c) asks of a backend.
 *
 * The host layer checks every argument, resolves defaults (V_out, per-model roles, the constants
 * below) and hands the backend one lmf_lg_job, by pointer to host memory; every pointer inside the
 * job is backend memory (host memory for the CPU, device memory for CUDA). A backend only computes:
 * it never fails on the contents of backend memory (those are per-row statuses), only on its own
 * resources (e.g. a CUDA launch error).
 *
 * Per-row semantics both backends implement (the spec, include/lmfuse/logits.h, and the decisions
 * documented at the top of host/cpu/logits_cpu.c), with the shared fp32 arithmetic of
 * kernels/common/logits_math.h.
 */
#ifndef LMF_HOST_LOGITS_BACKEND_H
#define LMF_HOST_LOGITS_BACKEND_H

#include "internal.h"
#include "lmfuse/logits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a model is used for in this call (bits of lmf_lg_model.roles). */
enum {
  LMF_LG_ROLE_COMBINE = 1u,  /* summed into s: coeff != 0, or per-row coefficients given */
  LMF_LG_ROLE_PLAUS = 2u,    /* the plausibility mask's model */
  LMF_LG_ROLE_NUCLEUS = 4u,  /* the nucleus mask's model */
  LMF_LG_ROLE_GEDI_POS = 8u, /* GeDi desired-code rows */
  LMF_LG_ROLE_GEDI_NEG = 16u,/* GeDi undesired-code rows */
  LMF_LG_ROLE_DRAFT = 32u    /* verify_draft: the draft model (its softmax(x) is q) */
};

/* The two operations. */
enum { LMF_LG_MODE_COMBINE = 0, LMF_LG_MODE_VERIFY = 1 };

/* One model, checked. Reading row b: input row r = row_index ? row_index[b] : b (r < 0: the row gets
 * LMF_ROW_BAD_INDEX). Dense: z(v) = logits[r * row_stride + v] for v < min(vocab, V_out), -inf for
 * vocab <= v < V_out. Sparse (sparse_index != NULL): z(v) = the value of id v if the row lists it,
 * else sparse_fill, for v < min(vocab, V_out); -inf for vocab <= v < V_out; ids outside
 * [0, min(vocab, V_out)) or listed twice make the row LMF_ROW_BAD_INDEX. */
typedef struct lmf_lg_model {
  const void *logits;
  const int32_t *row_index;    /* NULL: identity */
  const float *coeff_rows;     /* NULL: coeff for every row */
  const int32_t *sparse_index; /* NULL: dense */
  int64_t row_stride;          /* elements */
  int32_t dtype;               /* LMF_DTYPE_F32, F16, BF16 */
  int32_t vocab;               /* V_k >= 1 */
  int32_t sparse_k;            /* entries per sparse row (0 when dense) */
  uint32_t roles;              /* LMF_LG_ROLE_* bits; 0: the model is not read at all */
  float coeff;                 /* c_k (finite); ignored where coeff_rows is given */
  float temperature;           /* tau_k > 0, finite */
  float sparse_fill;           /* finite */
  int32_t pad;
} lmf_lg_model;

typedef struct lmf_lg_job {
  lmf_lg_model models[LMF_LOGITS_MAX_MODELS];
  int32_t num_models;
  int32_t mode;       /* LMF_LG_MODE_* */
  int32_t num_rows;   /* B: rows of distributions (verify: num_seqs * (draft_len + 1)) */
  int32_t vocab_out;  /* V_out >= 1, resolved */

  /* Masks (model index -1: off). */
  int32_t plaus_model;
  float plaus_log_alpha;  /* (float)log(alpha), computed on the host: keep x >= FADD(max x, this) */
  int32_t nucleus_model;
  float nucleus_p;        /* (0, 1); 1 is passed as "off" (nucleus_model = -1) */
  const float *bias;      /* NULL, or [V_out] (bias_row_stride 0) / [B][bias_row_stride] */
  int64_t bias_row_stride;

  /* GeDi (gedi_pos_model -1: off). */
  int32_t gedi_pos_model;
  int32_t gedi_neg_model;
  float gedi_omega;
  float gedi_logit_scale; /* > 0 */
  float gedi_bias_pos;    /* bias_pos + class_bias, one fp32 rounding (LMF_FADD) */
  float gedi_bias_neg;
  float gedi_filter_p;    /* (0, 1]; 0 (off) */
  float gedi_log_target;  /* log(target_p') as fp32: remove only tokens with logP(desired) < this */
  float *gedi_L_pos;      /* [B], read; updated for the chosen token of OK rows */
  float *gedi_L_neg;
  int32_t *gedi_n;

  /* Sampling. */
  float temperature;             /* >= 0 */
  const float *temperature_rows; /* NULL or [B]; a negative or non-finite entry: LMF_ROW_NONFINITE */
  int32_t top_k;                 /* 0: off */
  float top_p;                   /* (0, 1]; 1: off */
  float min_p;                   /* [0, 1]; 0: off */
  float log_min_p;               /* (float)log(min_p) from the host: keep y - y_max >= this */
  const uint64_t *seeds;         /* combine: [B]; verify: [num_seqs]; NULL only when all greedy */
  const uint64_t *offsets;       /* same shape as seeds, or NULL (0) */

  /* Combine outputs (all but tokens optional). */
  int32_t *tokens;
  int32_t *status;
  float *token_logprob;
  float *lse;
  float *logprobs;
  int64_t logprobs_row_stride;
  float *gedi_logp_desired;

  /* Verify (mode LMF_LG_MODE_VERIFY): rows b * (draft_len + 1) + i. */
  int32_t draft_model;
  int32_t draft_len;         /* >= 0 */
  int32_t num_seqs;
  int32_t pad2;
  const int32_t *draft_tokens; /* [num_seqs][draft_len] */
  int32_t *accepted;         /* [num_seqs] */
  int32_t *next_token;       /* [num_seqs] */
  int32_t *seq_status;       /* [num_seqs] or NULL */
} lmf_lg_job;

/* CPU backend (host/cpu/logits_cpu.c). Host memory. The workspace need not be aligned; its size, like
 * the CUDA one, covers both modes and depends on the context's thread count. */
size_t lmf_cpu_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job);
lmf_status_t lmf_cpu_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                size_t workspace_bytes);

/* CUDA backend (kernels/logits*.cu; host/cuda_stub.c in a CPU-only build). The job's pointers are
 * device memory; run enqueues on `stream` and returns. workspace sets *bytes: the device bytes run
 * needs for these models and params. lmf_logits_workspace_size asks with mode COMBINE and no outputs;
 * the answer must also cover a verify job with the same models and params (num_seqs <= num_rows). */
lmf_status_t lmf_cuda_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job,
                                       size_t *bytes);
lmf_status_t lmf_cuda_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif
