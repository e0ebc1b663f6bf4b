/* lmf_hypernet_surface_forms: the hypernetwork's input rows for a list of tokens
 * (include/lmfuse/hypernet.h), ZeTT's get_surface_form_matrix over a merged id space: specials as
 * [id, pad, ...], everything else as the BPE encoding of its bytes (host/vocab_bpe.c), truncated and
 * right-padded. Every argument is checked first, then every row is encoded into private memory, and
 * only then are the outputs written, so a failed call writes nothing. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmfuse/hypernet.h"
#include "vocab_internal.h"

#define FN "lmf_hypernet_surface_forms"

lmf_status_t lmf_hypernet_surface_args_init(lmf_hypernet_surface_args_t *args, size_t struct_size) {
  const lmf_hypernet_surface_args_t d = LMF_HYPERNET_SURFACE_ARGS_INIT;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_hypernet_surface_args_init");
}

typedef struct region {
  const void *p;
  size_t bytes;
  const char *name;
  int writable;
} region;

static lmf_status_t check_overlaps(const region *r, int n) {
  for (int i = 0; i < n; ++i) {
    if (!r[i].p || !r[i].bytes) continue;
    for (int j = i + 1; j < n; ++j) {
      if (!r[j].p || !r[j].bytes || (!r[i].writable && !r[j].writable)) continue;
      const uintptr_t a0 = (uintptr_t)r[i].p, a1 = a0 + r[i].bytes;
      const uintptr_t b0 = (uintptr_t)r[j].p, b1 = b0 + r[j].bytes;
      if (a0 < b1 && b0 < a1)
        return lmf_fail(LMF_ERR_OVERLAP, FN ": args->%s and args->%s overlap", r[i].name, r[j].name);
    }
  }
  return LMF_OK;
}

lmf_status_t lmf_hypernet_surface_forms(const struct lmf_vocab *vocab, const lmf_hypernet_surface_args_t *args) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": vocab is NULL");
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_hypernet_surface_args_t),
                                     sizeof(lmf_hypernet_surface_args_t), LMF_HYPERNET_SURFACE_ARGS_VERSION,
                                     FN ": args");
  if (st != LMF_OK) return st;
  const lmf_hypernet_surface_args_t a = *args;
  const int64_t U = a.num_tokens, L = a.surface_len;
  const int32_t V = vocab->size;
  if (U < 0) return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->num_tokens is %lld; must be >= 0", (long long)U);
  if (L < 1) return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->surface_len is %lld; must be >= 1", (long long)L);
  if (a.num_new < 0 || a.num_new > (int64_t)INT32_MAX - V)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->num_new is %lld; must be 0 to %lld (ids are int32)",
                    (long long)a.num_new, (long long)INT32_MAX - V);
  if (U > (int64_t)(SIZE_MAX / 16) / L)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->num_tokens x surface_len = %lld x %lld overflows",
                    (long long)U, (long long)L);
  if (a.pad_id < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": args->pad_id is %d; must be >= 0 (the hypernetwork's "
                    "pad_token_id)", a.pad_id);
  if (a.original_vocab_size < 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": args->original_vocab_size is %d; must be >= 0 (0: the "
                    "vocabulary's size)", a.original_vocab_size);
  if (!a.out_forms) return lmf_fail(LMF_ERR_NULL_POINTER, FN ": args->out_forms is NULL");
  if (!a.ids && U > a.num_new)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->ids is NULL (token u = byte string u) but num_tokens "
                    "%lld > num_new %lld", (long long)U, (long long)a.num_new);
  if (a.num_new > 0 && !a.new_offsets)
    return lmf_fail(LMF_ERR_NULL_POINTER, FN ": args->new_offsets is NULL but num_new is %lld",
                    (long long)a.num_new);
  int64_t total = 0;
  if (a.num_new > 0) {
    if (a.new_offsets[0] != 0)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": args->new_offsets[0] is %lld; must be 0",
                      (long long)a.new_offsets[0]);
    for (int64_t k = 0; k < a.num_new; ++k)
      if (a.new_offsets[k + 1] < a.new_offsets[k])
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        FN ": args->new_offsets decrease at %lld (%lld then %lld); must be non-decreasing",
                        (long long)k, (long long)a.new_offsets[k], (long long)a.new_offsets[k + 1]);
    total = a.new_offsets[a.num_new];
    if (total > INT32_MAX)
      return lmf_fail(LMF_ERR_INVALID_SIZE, FN ": args->new_offsets[num_new] is %lld; byte strings hold at "
                      "most %d bytes in all", (long long)total, INT32_MAX);
    if (total > 0 && !a.new_bytes)
      return lmf_fail(LMF_ERR_NULL_POINTER, FN ": args->new_bytes is NULL but the strings hold %lld bytes",
                      (long long)total);
  }
  if (a.ids)
    for (int64_t u = 0; u < U; ++u) {
      const int32_t id = a.ids[u];
      if (id < 0 || (int64_t)id >= (int64_t)V + a.num_new)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        FN ": args->ids[%lld] is %d; ids are 0 .. %lld (vocabulary %d + %lld byte strings)",
                        (long long)u, id, (long long)V + a.num_new - 1, V, (long long)a.num_new);
      if (id < V && (vocab->flags[id] & LMF_TOKEN_UNUSED))
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN ": args->ids[%lld] is %d, an id the vocabulary leaves "
                        "unused", (long long)u, id);
    }
  const size_t forms_bytes = (size_t)U * (size_t)L * sizeof(int32_t);
  const region r[] = {
      {a.out_forms, forms_bytes, "out_forms", 1},
      {a.out_copy_ids, (size_t)U * sizeof(int32_t), "out_copy_ids", 1},
      {a.out_lengths, (size_t)U * sizeof(int32_t), "out_lengths", 1},
      {a.ids, a.ids ? (size_t)U * sizeof(int32_t) : 0, "ids", 0},
      {a.new_offsets, a.new_offsets ? (size_t)(a.num_new + 1) * sizeof(int64_t) : 0, "new_offsets", 0},
      {a.new_bytes, (size_t)total, "new_bytes", 0},
  };
  if ((st = check_overlaps(r, (int)(sizeof r / sizeof r[0]))) != LMF_OK) return st;
  if (U == 0) return LMF_OK;

  const lmf_vocab_bpe *t = lmf_vocab_bpe_get(vocab, FN);
  if (!t) return LMF_ERR_OUT_OF_MEMORY;
  const int32_t V0 = a.original_vocab_size > 0 ? a.original_vocab_size : V;
  /* Private rows, lengths and copy ids; enc holds one encoding (at most the longest string's bytes). */
  int64_t maxlen = 1;
  for (int64_t u = 0; u < U; ++u) {
    const int32_t id = a.ids ? a.ids[u] : (int32_t)(V + u);
    const int64_t len = id < V ? vocab->offsets[id + 1] - vocab->offsets[id]
                               : a.new_offsets[id - V + 1] - a.new_offsets[id - V];
    if (len > maxlen) maxlen = len;
  }
  int32_t *forms = (int32_t *)malloc(forms_bytes);
  int32_t *lens = (int32_t *)malloc((size_t)U * sizeof(int32_t));
  int32_t *copy = (int32_t *)malloc((size_t)U * sizeof(int32_t));
  int32_t *enc = (int32_t *)malloc((size_t)maxlen * sizeof(int32_t));
  lmf_vocab_bpe_scratch scratch = {NULL, 0};
  if (!forms || !lens || !copy || !enc) {
    st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN ": out of host memory (%lld tokens x %lld)", (long long)U,
                  (long long)L);
    goto done;
  }
  for (int64_t u = 0; u < U && st == LMF_OK; ++u) {
    const int32_t id = a.ids ? a.ids[u] : (int32_t)(V + u);
    int32_t *row = forms + u * L;
    int64_t n = 0;
    copy[u] = -1;
    if (id < V && (vocab->flags[id] & LMF_TOKEN_SPECIAL)) {
      enc[0] = id;
      n = 1;
      if (id < V0) copy[u] = id;
    } else {
      int64_t len;
      const uint8_t *b;
      if (id < V) {
        b = lmf_vocab_tok(vocab, id, &len);
      } else {
        const int64_t o = a.new_offsets[id - V];
        len = a.new_offsets[id - V + 1] - o;
        b = a.new_bytes + o;
      }
      st = lmf_vocab_bpe_run(vocab, t, b, len, enc, &n, &scratch, FN);
      if (st != LMF_OK) { /* name the token: the message says "FN: <what>" */
        char why[512];
        const char *m = lmf_last_error();
        snprintf(why, sizeof why, "%s", strncmp(m, FN ": ", sizeof FN + 1) == 0 ? m + sizeof FN + 1 : m);
        lmf_fail(st, FN ": token %lld (id %d): %s", (long long)u, id, why);
        break;
      }
    }
    const int64_t keep = n < L ? n : L;
    memcpy(row, enc, (size_t)keep * sizeof(int32_t));
    for (int64_t l = keep; l < L; ++l) row[l] = a.pad_id;
    lens[u] = (int32_t)n;
  }
  if (st == LMF_OK) {
    memcpy(a.out_forms, forms, forms_bytes);
    if (a.out_copy_ids) memcpy(a.out_copy_ids, copy, (size_t)U * sizeof(int32_t));
    if (a.out_lengths) memcpy(a.out_lengths, lens, (size_t)U * sizeof(int32_t));
  }
done:
  free(forms);
  free(lens);
  free(copy);
  free(enc);
  lmf_vocab_bpe_scratch_free(&scratch);
  return st;
}
