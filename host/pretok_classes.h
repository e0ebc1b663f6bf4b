/* Internal to liblmfuse: the code point class table of kernels/common/pretok_match.h, built once per
 * process with PCRE2 (UTF + UCP), so the regex-free matcher the CUDA backend runs classifies exactly
 * as PCRE2 does. */
#ifndef LMF_HOST_PRETOK_CLASSES_H
#define LMF_HOST_PRETOK_CLASSES_H

#include "internal.h"
#include "kernels/common/pretok_match.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmf_pt_host_table {
  uint16_t stage1[LMF_PT_STAGE1_SIZE];
  uint8_t *stage2; /* [blocks * 256] */
  int32_t blocks;
} lmf_pt_host_table;

/* The process-wide table (built on the first call, thread-safe; never freed). LMF_ERR_OUT_OF_MEMORY
 * or LMF_ERR_INTERNAL (PCRE2 failed) with *message saying why if it cannot be built. Sets no error
 * message itself (the tests link this file alone). */
lmf_status_t lmf_pt_table_build(const lmf_pt_host_table **out, const char **message);

/* lmf_pt_table_build, with the failure recorded for lmf_last_error(). */
static inline lmf_status_t lmf_pt_table_get(const lmf_pt_host_table **out) {
  const char *message = "";
  lmf_status_t st = lmf_pt_table_build(out, &message);
  return st == LMF_OK ? st : lmf_fail(st, "%s", message);
}

/* The table as the matcher reads it. */
static inline lmf_pt_table lmf_pt_table_view(const lmf_pt_host_table *t) {
  lmf_pt_table v = {t->stage1, t->stage2};
  return v;
}

#ifdef __cplusplus
}
#endif

#endif
