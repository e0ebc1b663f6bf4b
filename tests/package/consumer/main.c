/* A consumer of an installed lmfuse: creates a CPU context, builds a plan over one tensor, perturbs it,
 * restores it, and prints the version. Exits non-zero on any failure. */
#include <stdio.h>
#include <string.h>

#include <lmfuse/lmfuse.h>
#include <lmfuse/mezo.h>

int main(void) {
  if (lmf_version() != LMF_VERSION_NUMBER) {
    fprintf(stderr, "header version %d, library version %u\n", LMF_VERSION_NUMBER, lmf_version());
    return 1;
  }
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  cfg.backend = LMF_BACKEND_CPU;
  lmf_context_t *ctx = NULL;
  if (lmf_context_create(&ctx, &cfg) != LMF_OK) {
    fprintf(stderr, "lmf_context_create: %s\n", lmf_last_error());
    return 2;
  }
  float theta[100];
  for (int i = 0; i < 100; ++i) theta[i] = 0.0f;
  lmf_mezo_tensor_t t = {theta, NULL, 100, 0, 1, LMF_DTYPE_F32, 0, 0};
  lmf_mezo_plan_t *plan = NULL;
  int rc = 0;
  if (lmf_mezo_plan_create(&plan, ctx, &t, 1, NULL) != LMF_OK || lmf_mezo_perturb(plan, 42, 1.0f, NULL) != LMF_OK) {
    fprintf(stderr, "lmfuse: %s\n", lmf_last_error());
    rc = 3;
  }
  int nonzero = 0;
  for (int i = 0; i < 100; ++i) nonzero += theta[i] != 0.0f;
  if (rc == 0 && nonzero < 90) {
    fprintf(stderr, "the perturbation changed only %d of 100 elements\n", nonzero);
    rc = 4;
  }
  if (rc == 0 && lmf_mezo_restore(plan, NULL) != LMF_OK) rc = 5;
  lmf_mezo_plan_destroy(plan);
  lmf_context_destroy(ctx);
  if (rc == 0) printf("lmfuse %s OK\n", lmf_version_string());
  return rc;
}
