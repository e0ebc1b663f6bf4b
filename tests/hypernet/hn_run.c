/* Hypernetworks under test (see hn_run.h). */
#include "hn_run.h"

#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_test_util.h"

int hn_fx_init(hn_fx *fx, const lmf_hypernet_config_t *cfg, uint64_t seed, int32_t dtype, int via_file,
               int32_t threads) {
  memset(fx, 0, sizeof *fx);
  fx->ctx = lt_context(LMF_BACKEND_CPU, threads);
  if (!fx->ctx) return 0;
  if (!hn_weights_make(&fx->w, cfg, seed, dtype)) return 0;
  fx->rows = cfg->original_vocab_size;
  fx->e_in = hn_source(fx->rows, cfg->n_embd, seed + 1);
  if (!fx->e_in) return 0;
  if (cfg->separate_out_embeddings && !(fx->e_out = hn_source(fx->rows, cfg->n_embd, seed + 2))) return 0;
  if (via_file) {
    char dir[512];
    if (!hn_tmpdir(dir, sizeof dir)) return 0;
    int ok = hn_save(dir, &fx->w) && LMF_CHECK_OK(lmf_hypernet_load(&fx->h, fx->ctx, dir));
    hn_rmdir(dir);
    return ok;
  }
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = hn_tensors(&fx->w, &bufs);
  if (!t) return 0;
  int ok = LMF_CHECK_OK(lmf_hypernet_create(&fx->h, fx->ctx, cfg, t, fx->w.n));
  hn_tensors_free(t, bufs, fx->w.n);
  return ok;
}

void hn_fx_free(hn_fx *fx) {
  lmf_hypernet_destroy(fx->h);
  hn_weights_free(&fx->w);
  free(fx->e_in);
  free(fx->e_out);
  lmf_context_destroy(fx->ctx);
  memset(fx, 0, sizeof *fx);
}

lmf_status_t hn_predict(const hn_fx *fx, const lmf_hypernet_t *h, const int32_t *S, int64_t U, int32_t L,
                        int32_t lang_index, const int32_t *copy_ids, float *out_in, float *out_out, float *out_bias) {
  lmf_hypernet_args_t a = LMF_HYPERNET_ARGS_INIT;
  a.num_tokens = U;
  a.surface_len = L;
  a.surface_forms = S;
  a.source_in = fx->e_in;
  a.source_out = fx->e_out;
  a.source_dtype = LMF_DTYPE_F32;
  a.source_rows = fx->rows;
  a.lang_index = lang_index;
  a.copy_ids = copy_ids;
  a.out_in = out_in;
  a.out_out = out_out;
  a.out_bias = out_bias;
  return lmf_hypernet_predict(h, &a, NULL, 0, NULL);
}

int hn_reference(const hn_fx *fx, const lmf_ref_hn_config *rc, const int32_t *S, int64_t U, int32_t L,
                 int32_t lang_index, const int32_t *copy_ids, double *out_in, double *out_out, double *out_bias) {
  int r = lmf_ref_hypernet(rc, hn_lookup, (void *)&fx->w, S, U, L, fx->e_in, fx->e_out, fx->w.cfg.n_embd, lang_index,
                           copy_ids, out_in, out_out, out_bias);
  return LMF_CHECK_MSG(r == 0, "the reference failed (a weight is missing?)");
}
