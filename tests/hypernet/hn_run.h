/* A hypernetwork under test plus its inputs, shared by the forward and bad-input cases. */
#ifndef LMF_TESTS_HYPERNET_RUN_H
#define LMF_TESTS_HYPERNET_RUN_H

#include "hn_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hn_fx {
  lmf_context_t *ctx;
  hn_weights w;
  lmf_hypernet_t *h;
  float *e_in, *e_out; /* [rows][n_embd]; e_out only with separate output embeddings */
  int64_t rows;        /* V0 */
} hn_fx;

/* Weights (seed, dtype as hn_weights_make), saved and loaded through files when via_file, else given by
 * pointer; source embeddings for V0 rows. threads: the context's CPU threads (0: default). */
int hn_fx_init(hn_fx *fx, const lmf_hypernet_config_t *cfg, uint64_t seed, int32_t dtype, int via_file,
               int32_t threads);
void hn_fx_free(hn_fx *fx);

/* Calls lmf_hypernet_predict with host buffers (no workspace: the library allocates). */
lmf_status_t hn_predict(const hn_fx *fx, const lmf_hypernet_t *h, const int32_t *S, int64_t U, int32_t L,
                        int32_t lang_index, const int32_t *copy_ids, float *out_in, float *out_out, float *out_bias);

/* The double reference for the same call. */
int hn_reference(const hn_fx *fx, const lmf_ref_hn_config *rc, const int32_t *S, int64_t U, int32_t L,
                 int32_t lang_index, const int32_t *copy_ids, double *out_in, double *out_out, double *out_bias);

#ifdef __cplusplus
}
#endif

#endif
