/* lmf_vocab_*: the vocabulary object (include/lmfuse/vocab.h, host/vocab_internal.h) built from plain
 * arrays, its accessors, and the canonical byte-string table shared with the tokenizer.json loader
 * (host/vocab_json.c).
 *
 * Canonical table: an open-addressing hash table (linear probing, FNV-1a keys, load <= 1/2) holding,
 * for every distinct byte string of a non-special, used token, one id: a token without
 * LMF_TOKEN_BYTE_FALLBACK if the string has one, else a byte-fallback token; among equals the smallest
 * id. Special and unused tokens are never in it, so lmf_vocab_find() never returns them. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "vocab_internal.h"

#define FN_CREATE "lmf_vocab_create"

#define LMF_TOKEN_ALL_FLAGS (LMF_TOKEN_SPECIAL | LMF_TOKEN_BYTE_FALLBACK | LMF_TOKEN_UNUSED)

uint64_t lmf_bytes_hash(const uint8_t *bytes, int64_t len) {
  return lmf_bytes_hash_continue(LMF_FNV_OFFSET, bytes, len);
}

uint64_t lmf_bytes_hash_continue(uint64_t h, const uint8_t *bytes, int64_t len) {
  for (int64_t i = 0; i < len; ++i) {
    h ^= bytes[i];
    h *= LMF_FNV_PRIME;
  }
  return h;
}

int32_t lmf_vocab_lookup(const struct lmf_vocab *v, const uint8_t *bytes, int64_t len) {
  if (!v || !v->table || len <= 0 || !bytes) return -1;
  uint64_t mask = (uint64_t)v->table_cap - 1;
  uint64_t slot = lmf_bytes_hash(bytes, len) & mask;
  for (;;) {
    int32_t id = v->table[slot];
    if (id < 0) return -1;
    int64_t tl;
    const uint8_t *tb = lmf_vocab_tok(v, id, &tl);
    if (tl == len && memcmp(tb, bytes, (size_t)len) == 0) return id;
    slot = (slot + 1) & mask;
  }
}

/* 1 if a token with flags fa is preferred as canonical over one with flags fb (ids ascending). */
static int canonical_better(uint8_t fa, uint8_t fb) {
  return !(fa & LMF_TOKEN_BYTE_FALLBACK) && (fb & LMF_TOKEN_BYTE_FALLBACK);
}

uint64_t lmf_vocab_next_serial(void) {
  static uint64_t next = 0;
  return __atomic_add_fetch(&next, 1, __ATOMIC_RELAXED);
}

lmf_status_t lmf_vocab_build_table(struct lmf_vocab *v, const char *fn) {
  v->serial = lmf_vocab_next_serial(); /* every constructor ends here */
  int64_t count = 0;
  for (int32_t i = 0; i < v->size; ++i)
    if (!(v->flags[i] & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED))) ++count;
  int64_t cap = 16;
  while (cap < 2 * count) cap *= 2;
  int32_t *table = (int32_t *)malloc((size_t)cap * sizeof *table);
  if (!table)
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for the byte-string table (%lld slots)",
                    fn, (long long)cap);
  memset(table, 0xff, (size_t)cap * sizeof *table); /* -1 = empty */
  uint64_t mask = (uint64_t)cap - 1;
  for (int32_t id = 0; id < v->size; ++id) {
    uint8_t f = v->flags[id];
    if (f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)) continue;
    int64_t len;
    const uint8_t *b = lmf_vocab_tok(v, id, &len);
    uint64_t slot = lmf_bytes_hash(b, len) & mask;
    for (;;) {
      int32_t other = table[slot];
      if (other < 0) {
        table[slot] = id;
        break;
      }
      int64_t ol;
      const uint8_t *ob = lmf_vocab_tok(v, other, &ol);
      if (ol == len && memcmp(ob, b, (size_t)len) == 0) {
        /* Ids arrive in ascending order: replace only a byte-fallback token by a normal one. */
        if (canonical_better(f, v->flags[other])) table[slot] = id;
        break;
      }
      slot = (slot + 1) & mask;
    }
  }
  v->table = table;
  v->table_cap = cap;
  return LMF_OK;
}

void lmf_vocab_destroy(lmf_vocab_t *vocab) {
  if (!vocab) return;
  free(vocab->bytes);
  free(vocab->offsets);
  free(vocab->flags);
  free(vocab->merges);
  free(vocab->pattern);
  free(vocab->table);
  lmf_vocab_bpe_free(vocab->bpe);
  free(vocab);
}

/* ---- From arrays ---------------------------------------------------------------------------------- */

lmf_status_t lmf_vocab_arrays_init(lmf_vocab_arrays_t *arrays, size_t struct_size) {
  lmf_vocab_arrays_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_VOCAB_ARRAYS_VERSION;
  d.num_tokens = 0; /* must be set */
  d.bytes = NULL;
  d.offsets = NULL;
  d.flags = NULL;
  d.num_merges = 0;
  d.merges = NULL;
  d.pretokenizer_pattern = NULL;
  return lmf_init_struct(arrays, struct_size, &d, sizeof d, "lmf_vocab_arrays_init");
}

/* Checks everything about a (copied) arrays struct except the merges' results. */
static lmf_status_t check_arrays(const lmf_vocab_arrays_t *a) {
  if (a->num_tokens < 1 || a->num_tokens > LMF_VOCAB_MAX_TOKENS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_CREATE ": arrays->num_tokens is %d; must be 1 to %d",
                    a->num_tokens, LMF_VOCAB_MAX_TOKENS);
  if (!a->offsets) return lmf_fail(LMF_ERR_NULL_POINTER, FN_CREATE ": arrays->offsets is NULL");
  int32_t n = a->num_tokens;
  if (a->offsets[0] != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, FN_CREATE ": arrays->offsets[0] is %lld; must be 0",
                    (long long)a->offsets[0]);
  for (int32_t i = 0; i < n; ++i)
    if (a->offsets[i + 1] < a->offsets[i])
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": arrays->offsets decrease at token %d (offsets[%d] = %lld, offsets[%d] "
                      "= %lld); they must be non-decreasing",
                      i, i, (long long)a->offsets[i], i + 1, (long long)a->offsets[i + 1]);
  int64_t total = a->offsets[n];
  if ((uint64_t)total > (uint64_t)SIZE_MAX / 2)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_CREATE ": arrays->offsets[num_tokens] = %lld bytes overflows",
                    (long long)total);
  if (total > 0 && !a->bytes)
    return lmf_fail(LMF_ERR_NULL_POINTER, FN_CREATE ": arrays->bytes is NULL but the tokens hold %lld bytes",
                    (long long)total);
  for (int32_t i = 0; i < n; ++i) {
    uint32_t f = a->flags ? a->flags[i] : 0u;
    int64_t len = a->offsets[i + 1] - a->offsets[i];
    if (f & ~(uint32_t)LMF_TOKEN_ALL_FLAGS)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": arrays->flags[%d] is 0x%x; known bits are LMF_TOKEN_SPECIAL (1), "
                      "LMF_TOKEN_BYTE_FALLBACK (2) and LMF_TOKEN_UNUSED (4)",
                      i, f);
    if ((f & LMF_TOKEN_UNUSED) && (f != LMF_TOKEN_UNUSED || len != 0))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": arrays->flags[%d] is 0x%x with %lld bytes; an LMF_TOKEN_UNUSED id "
                      "takes no other flag and no bytes",
                      i, f, (long long)len);
    if ((f & LMF_TOKEN_BYTE_FALLBACK) && (f != LMF_TOKEN_BYTE_FALLBACK || len != 1))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": arrays->flags[%d] is 0x%x with %lld bytes; an LMF_TOKEN_BYTE_FALLBACK "
                      "token is exactly one byte and not special",
                      i, f, (long long)len);
    if (len == 0 && !(f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)))
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": token %d is empty (offsets[%d] == offsets[%d]); an empty token must "
                      "be LMF_TOKEN_SPECIAL or LMF_TOKEN_UNUSED",
                      i, i, i + 1);
  }
  if (a->num_merges < 0 || a->num_merges > LMF_VOCAB_MAX_TOKENS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_CREATE ": arrays->num_merges is %d; must be 0 to %d",
                    a->num_merges, LMF_VOCAB_MAX_TOKENS);
  if (a->num_merges > 0 && !a->merges)
    return lmf_fail(LMF_ERR_NULL_POINTER, FN_CREATE ": arrays->merges is NULL but num_merges is %d",
                    a->num_merges);
  for (int32_t r = 0; r < a->num_merges; ++r) {
    for (int s = 0; s < 2; ++s) {
      int32_t id = a->merges[2 * (int64_t)r + s];
      if (id < 0 || id >= n)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        FN_CREATE ": arrays->merges[%lld] (merge %d, %s) is %d; ids are 0 to %d",
                        2 * (long long)r + s, r, s ? "right" : "left", id, n - 1);
      uint32_t f = a->flags ? a->flags[id] : 0u;
      if (f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED))
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        FN_CREATE ": arrays->merges[%lld] (merge %d, %s) is id %d, which is %s; merges "
                        "take only normal tokens",
                        2 * (long long)r + s, r, s ? "right" : "left", id,
                        (f & LMF_TOKEN_SPECIAL) ? "special" : "unused");
    }
  }
  return LMF_OK;
}

lmf_status_t lmf_vocab_create(lmf_vocab_t **out, const lmf_vocab_arrays_t *arrays) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, FN_CREATE ": out is NULL");
  lmf_status_t st = lmf_check_struct(arrays, sizeof(lmf_vocab_arrays_t), sizeof(lmf_vocab_arrays_t),
                                     LMF_VOCAB_ARRAYS_VERSION, FN_CREATE ": arrays");
  if (st != LMF_OK) return st;
  lmf_vocab_arrays_t a;
  memcpy(&a, arrays, sizeof a);
  st = check_arrays(&a);
  if (st != LMF_OK) return st;

  int32_t n = a.num_tokens;
  int64_t total = a.offsets[n];
  struct lmf_vocab *v = (struct lmf_vocab *)calloc(1, sizeof *v);
  if (!v) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN_CREATE ": out of host memory");
  v->size = n;
  v->format = LMF_VOCAB_FORMAT_RAW;
  v->bytes = (uint8_t *)malloc((size_t)total + 1);
  v->offsets = (int64_t *)malloc(((size_t)n + 1) * sizeof *v->offsets);
  v->flags = (uint8_t *)malloc((size_t)n);
  v->merges = (int32_t *)malloc(3 * (size_t)a.num_merges * sizeof *v->merges + 1);
  if (a.pretokenizer_pattern) {
    size_t pl = strlen(a.pretokenizer_pattern);
    v->pattern = (char *)malloc(pl + 1);
    if (v->pattern) memcpy(v->pattern, a.pretokenizer_pattern, pl + 1);
  }
  if (!v->bytes || !v->offsets || !v->flags || !v->merges || (a.pretokenizer_pattern && !v->pattern)) {
    lmf_vocab_destroy(v);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN_CREATE ": out of host memory for %d tokens (%lld bytes)", n,
                    (long long)total);
  }
  if (total > 0) memcpy(v->bytes, a.bytes, (size_t)total);
  memcpy(v->offsets, a.offsets, ((size_t)n + 1) * sizeof *v->offsets);
  if (a.flags)
    memcpy(v->flags, a.flags, (size_t)n);
  else
    memset(v->flags, 0, (size_t)n);
  st = lmf_vocab_build_table(v, FN_CREATE);
  if (st != LMF_OK) {
    lmf_vocab_destroy(v);
    return st;
  }
  /* Each merge's concatenation must itself be a token: its canonical id is the result. */
  v->num_merges = a.num_merges;
  uint8_t small[256];
  for (int32_t r = 0; r < a.num_merges; ++r) {
    int32_t l = a.merges[2 * (int64_t)r], rt = a.merges[2 * (int64_t)r + 1];
    int64_t ll, rl;
    const uint8_t *lb = lmf_vocab_tok(v, l, &ll), *rb = lmf_vocab_tok(v, rt, &rl);
    uint8_t *cat = small;
    if (ll + rl > (int64_t)sizeof small) {
      cat = (uint8_t *)malloc((size_t)(ll + rl));
      if (!cat) {
        lmf_vocab_destroy(v);
        return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN_CREATE ": out of host memory");
      }
    }
    memcpy(cat, lb, (size_t)ll);
    memcpy(cat + ll, rb, (size_t)rl);
    int32_t res = lmf_vocab_lookup(v, cat, ll + rl);
    if (cat != small) free(cat);
    if (res < 0) {
      lmf_vocab_destroy(v);
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      FN_CREATE ": arrays->merges: merge %d (%d, %d): the concatenation of the two tokens' "
                      "bytes is not a token",
                      r, l, rt);
    }
    v->merges[3 * (int64_t)r] = l;
    v->merges[3 * (int64_t)r + 1] = rt;
    v->merges[3 * (int64_t)r + 2] = res;
  }
  *out = v;
  return LMF_OK;
}

/* ---- Accessors ------------------------------------------------------------------------------------ */

lmf_status_t lmf_vocab_size(const lmf_vocab_t *vocab, int32_t *size) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_size: vocab is NULL");
  if (!size) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_size: size is NULL");
  *size = vocab->size;
  return LMF_OK;
}

lmf_status_t lmf_vocab_format(const lmf_vocab_t *vocab, int32_t *format) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_format: vocab is NULL");
  if (!format) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_format: format is NULL");
  *format = vocab->format;
  return LMF_OK;
}

static lmf_status_t check_id(const lmf_vocab_t *vocab, int32_t id, const char *fn) {
  if (id < 0 || id >= vocab->size)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: id is %d; this vocabulary has ids 0 to %d", fn, id,
                    vocab->size - 1);
  return LMF_OK;
}

lmf_status_t lmf_vocab_token_bytes(const lmf_vocab_t *vocab, int32_t id, const uint8_t **bytes,
                                   int64_t *len) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_token_bytes: vocab is NULL");
  if (!bytes) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_token_bytes: bytes is NULL");
  if (!len) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_token_bytes: len is NULL");
  lmf_status_t st = check_id(vocab, id, "lmf_vocab_token_bytes");
  if (st != LMF_OK) return st;
  int64_t l;
  const uint8_t *b = lmf_vocab_tok(vocab, id, &l);
  *bytes = b;
  *len = l;
  return LMF_OK;
}

lmf_status_t lmf_vocab_token_flags(const lmf_vocab_t *vocab, int32_t id, uint32_t *flags) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_token_flags: vocab is NULL");
  if (!flags) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_token_flags: flags is NULL");
  lmf_status_t st = check_id(vocab, id, "lmf_vocab_token_flags");
  if (st != LMF_OK) return st;
  *flags = vocab->flags[id];
  return LMF_OK;
}

lmf_status_t lmf_vocab_find(const lmf_vocab_t *vocab, const uint8_t *bytes, int64_t len, int32_t *id) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_find: vocab is NULL");
  if (!id) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_find: id is NULL");
  if (len < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_vocab_find: len is %lld; must be >= 0", (long long)len);
  if (len > 0 && !bytes)
    return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_find: bytes is NULL but len is %lld", (long long)len);
  *id = lmf_vocab_lookup(vocab, bytes, len);
  return LMF_OK;
}

lmf_status_t lmf_vocab_num_merges(const lmf_vocab_t *vocab, int32_t *num_merges) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_num_merges: vocab is NULL");
  if (!num_merges) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_num_merges: num_merges is NULL");
  *num_merges = vocab->num_merges;
  return LMF_OK;
}

lmf_status_t lmf_vocab_merge(const lmf_vocab_t *vocab, int32_t rank, int32_t *left, int32_t *right,
                             int32_t *result) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_merge: vocab is NULL");
  if (!left) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_merge: left is NULL");
  if (!right) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_merge: right is NULL");
  if (!result) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_merge: result is NULL");
  if (rank < 0 || rank >= vocab->num_merges)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_vocab_merge: rank is %d; this vocabulary has %d merges",
                    rank, vocab->num_merges);
  *left = vocab->merges[3 * (int64_t)rank];
  *right = vocab->merges[3 * (int64_t)rank + 1];
  *result = vocab->merges[3 * (int64_t)rank + 2];
  return LMF_OK;
}

lmf_status_t lmf_vocab_pretokenizer_pattern(const lmf_vocab_t *vocab, const char **pattern) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_pretokenizer_pattern: vocab is NULL");
  if (!pattern) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_vocab_pretokenizer_pattern: pattern is NULL");
  *pattern = vocab->pattern;
  return LMF_OK;
}
