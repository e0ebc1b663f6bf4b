/*
 * Double-precision references of the ZeTT hypernetwork forward pass and of FVT (specs/hypernetwork.md),
 * written straight from the spec and the released PyTorch module, independently of the library: every
 * position of every token is computed (padded ones included), masked keys get weight 0 (all masked:
 * uniform weights, as HF's additive finfo.min mask gives), all layers run in full, no caching, weights
 * read in their PyTorch layout ([out][in]) by name.
 *
 * The GELU variants and LayerNorm eps values are parameters, so a test can show that swapping them
 * moves the result by more than its tolerance.
 */
#ifndef LMF_TESTS_REF_HYPERNET_H
#define LMF_TESTS_REF_HYPERNET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmf_ref_hn_config {
  int layers, hidden, intermediate, heads, n_embd;
  int pad_id, vocab0, n_extra;       /* V0, hn_n_extra_tokens (fallback rows: max(1, n_extra)) */
  int separate, rescale, predict_bias, single_head, lang, n_langs;
  double eps_block, eps_roberta;     /* 1e-6, 1e-5 */
  int block_gelu_erf;                /* 0 (right): tanh GELU in the projector blocks; 1: erf */
  int layer_gelu_tanh;               /* 0 (right): erf GELU in the RoBERTa layers; 1: tanh */
} lmf_ref_hn_config;

/* The weights by ZeTT name (fp32, PyTorch shapes, contiguous); NULL if absent. */
typedef const float *(*lmf_ref_hn_lookup)(void *user, const char *name);

/* S [U][L]; E_in / E_out [rows][n_embd] at `stride` floats (E_out NULL when not separate); copy_ids
 * optional ([U], -1: predict). Writes out_in [U][n_embd], out_out [U][n_embd] (separate only) and
 * out_bias [U] (0 without predict_bias), all double. Returns 0 on success, -1 if a weight is missing
 * or memory runs out. */
int lmf_ref_hypernet(const lmf_ref_hn_config *cfg, lmf_ref_hn_lookup get, void *user, const int32_t *S,
                     int64_t U, int64_t L, const float *E_in, const float *E_out, int64_t stride, int lang_index,
                     const int32_t *copy_ids, double *out_in, double *out_out, double *out_bias);

/* FVT in double: out[u] = mean of E rows over ids[offsets[u] .. offsets[u+1]) (ids outside [0, rows)
 * count as unk; empty: the unk row; copy_ids[u] >= 0: that row). E [rows][n] at `stride` floats. */
void lmf_ref_fvt(const int64_t *offsets, const int32_t *ids, const int32_t *copy_ids, int64_t U, const float *E,
                 int64_t rows, int64_t n, int64_t stride, int32_t unk, double *out);

#ifdef __cplusplus
}
#endif

#endif
