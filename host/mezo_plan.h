/* Internal: the MeZO plan object shared by host/mezo_*.c. */
#ifndef LMF_HOST_MEZO_PLAN_H
#define LMF_HOST_MEZO_PLAN_H

#include "lmfuse/mezo.h"
#include "mezo_backend.h"

struct lmf_mezo_plan {
  lmf_context_t *ctx;
  int32_t dist;
  int32_t rounding;
  size_t num_tensors;
  int64_t numel;
  int64_t num_chunks;
  int has_master;         /* any tensor has a master copy */
  lmf_mezo_tdesc *tensors;  /* host copy */
  lmf_mezo_chunk *chunks;   /* host copy */
  lmf_mezo_tdesc *d_tensors;/* backend copies (== host copies on the CPU) */
  lmf_mezo_chunk *d_chunks;
  /* The perturbation the parameters carry now: offset * z(seed); offset 0 = unperturbed. */
  uint64_t pert_seed;
  float pert_offset;
  uint32_t nonce;         /* counts passes: fresh stochastic-rounding bits per pass */
};

/* Runs one pass on the plan's backend. */
lmf_status_t lmf_mezo_run_pass(lmf_mezo_plan_t *plan, const lmf_mezo_pass *pass, const float *grad_ptr,
                               int32_t *skipped_ptr, lmf_stream_t stream);

#endif
