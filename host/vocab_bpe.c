/* lmf_vocab_bpe_encode: a byte string encoded with a vocabulary's BPE merges, exactly as HuggingFace
 * tokenizers' BPE model does it for one word (models/bpe/model.rs merge_word + word.rs merge_all),
 * over the whole string (no pre-tokenization, no normalization, no cache, no dropout).
 *
 *   - Initial symbols (merge_word): byte-level vocabularies: one per byte, the canonical token of that
 *     single byte. Metaspace vocabularies: one per UTF-8 character (RFC 3629) when a token that is not
 *     a byte-fallback token has exactly the character's bytes; otherwise each of its bytes as the
 *     byte-fallback token <0xNN> (a byte that is not part of a valid character too). Raw vocabularies:
 *     one per byte. A byte with no symbol is LMF_ERR_INVALID_ARGUMENT naming the byte and its offset
 *     (HF would emit the unknown token, which a vocabulary here does not name).
 *   - Merges (merge_all): a min-heap of (rank, position, result) entries holds every adjacent pair that
 *     has a merge. Pop the smallest (rank, then position); skip it when its left symbol was absorbed,
 *     is now last, or the pair now at that position does not produce the entry's result (a stale
 *     entry); else merge the two symbols and push the new pairs with the left and right neighbours.
 *     This is "repeatedly merge the lowest-ranked adjacent pair, leftmost first".
 *   - Merge ranks: merges[3 rank] = (left, right, result); a pair listed twice keeps its LAST rank, as
 *     HF's HashMap built from the merge list does.
 *
 * The tables (pair -> rank, open addressing keyed by lmf_mix64(left << 32 | right); per-byte initial
 * symbols) are built on the first call for a vocabulary and published with an atomic compare-and-swap,
 * so a vocabulary shared by threads stays safe: a thread that loses the race frees its own copy. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/common/mix64.h"
#include "vocab_internal.h"

#define FN_ENCODE "lmf_vocab_bpe_encode"

struct lmf_vocab_bpe {
  uint64_t *keys;       /* [mask + 1] (left << 32 | right); EMPTY_KEY = empty */
  int32_t *ranks;       /* [mask + 1] */
  uint64_t mask;
  int32_t byte_tok[256]; /* canonical token of the single byte (any kind), or -1 */
  int32_t byte_fb[256];  /* the smallest byte-fallback token of the byte, or -1 */
};

#define EMPTY_KEY (~(uint64_t)0)

void lmf_vocab_bpe_free(struct lmf_vocab_bpe *t) {
  if (!t) return;
  free(t->keys);
  free(t->ranks);
  free(t);
}

void lmf_vocab_bpe_scratch_free(lmf_vocab_bpe_scratch *s) {
  if (!s) return;
  free(s->buf);
  s->buf = NULL;
  s->cap = 0;
}

static inline uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

/* The rank of pair (a, b), or -1. */
static inline int32_t pair_rank(const struct lmf_vocab_bpe *t, int32_t a, int32_t b) {
  const uint64_t key = pair_key(a, b);
  for (uint64_t s = lmf_mix64(key) & t->mask;; s = (s + 1) & t->mask) {
    const uint64_t k = t->keys[s];
    if (k == key) return t->ranks[s];
    if (k == EMPTY_KEY) return -1;
  }
}

static struct lmf_vocab_bpe *build(const struct lmf_vocab *v, const char *fn) {
  struct lmf_vocab_bpe *t = (struct lmf_vocab_bpe *)calloc(1, sizeof *t);
  uint64_t cap = 16;
  while (cap < 2 * (uint64_t)v->num_merges) cap *= 2;
  if (t) {
    t->keys = (uint64_t *)malloc(cap * sizeof *t->keys);
    t->ranks = (int32_t *)malloc(cap * sizeof *t->ranks);
  }
  if (!t || !t->keys || !t->ranks) {
    lmf_vocab_bpe_free(t);
    lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for the BPE merge table (%llu slots)", fn,
             (unsigned long long)cap);
    return NULL;
  }
  memset(t->keys, 0xff, cap * sizeof *t->keys);
  t->mask = cap - 1;
  for (int32_t r = 0; r < v->num_merges; ++r) {
    const uint64_t key = pair_key(v->merges[3 * (int64_t)r], v->merges[3 * (int64_t)r + 1]);
    for (uint64_t s = lmf_mix64(key) & t->mask;; s = (s + 1) & t->mask) {
      if (t->keys[s] == EMPTY_KEY || t->keys[s] == key) {
        t->keys[s] = key;
        t->ranks[s] = r; /* a repeated pair keeps its last rank */
        break;
      }
    }
  }
  for (int b = 0; b < 256; ++b) {
    const uint8_t byte = (uint8_t)b;
    t->byte_tok[b] = lmf_vocab_lookup(v, &byte, 1);
    t->byte_fb[b] = -1;
  }
  for (int32_t id = 0; id < v->size; ++id) {
    if (!(v->flags[id] & LMF_TOKEN_BYTE_FALLBACK)) continue;
    int64_t len;
    const uint8_t *b = lmf_vocab_tok(v, id, &len);
    if (len == 1 && t->byte_fb[b[0]] < 0) t->byte_fb[b[0]] = id;
  }
  return t;
}

const lmf_vocab_bpe *lmf_vocab_bpe_get(const struct lmf_vocab *v, const char *fn) {
  struct lmf_vocab_bpe *t = __atomic_load_n(&v->bpe, __ATOMIC_ACQUIRE);
  if (t) return t;
  t = build(v, fn);
  if (!t) return NULL;
  struct lmf_vocab_bpe *expected = NULL;
  /* The tables are a cache of immutable data: publishing them does not change what the vocabulary
   * means, so the const object's pointer slot is written through a cast, once. */
  struct lmf_vocab_bpe **slot = (struct lmf_vocab_bpe **)&((struct lmf_vocab *)v)->bpe;
  if (!__atomic_compare_exchange_n(slot, &expected, t, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    lmf_vocab_bpe_free(t); /* another thread published first */
    return expected;
  }
  return t;
}

/* Length of the valid UTF-8 character (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF) at
 * s[i], or 0 if none starts there. */
static int utf8_char_len(const uint8_t *s, int64_t i, int64_t n) {
  const uint8_t c = s[i];
  if (c < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF; /* the allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF) len = 2;
  else if (c == 0xE0) len = 3, lo = 0xA0;
  else if (c >= 0xE1 && c <= 0xEC) len = 3;
  else if (c == 0xED) len = 3, hi = 0x9F;
  else if (c >= 0xEE && c <= 0xEF) len = 3;
  else if (c == 0xF0) len = 4, lo = 0x90;
  else if (c >= 0xF1 && c <= 0xF3) len = 4;
  else if (c == 0xF4) len = 4, hi = 0x8F;
  else return 0;
  if (i + len > n) return 0;
  if (s[i + 1] < lo || s[i + 1] > hi) return 0;
  for (int k = 2; k < len; ++k)
    if ((s[i + k] & 0xC0) != 0x80) return 0;
  return len;
}

typedef struct sym {
  int32_t c;    /* token id */
  int32_t prev; /* -1: first */
  int32_t next; /* -1: last */
  int32_t len;  /* bytes; 0 once absorbed by the left neighbour */
} sym;

typedef struct hent {
  int32_t rank, pos, id;
} hent;

static inline int hless(const hent *x, const hent *y) {
  return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static void heap_push(hent *h, int64_t *n, hent e) {
  int64_t i = (*n)++;
  while (i > 0) {
    int64_t p = (i - 1) / 2;
    if (!hless(&e, &h[p])) break;
    h[i] = h[p];
    i = p;
  }
  h[i] = e;
}

static hent heap_pop(hent *h, int64_t *n) {
  hent top = h[0];
  hent last = h[--(*n)];
  int64_t i = 0, m = *n;
  for (;;) {
    int64_t l = 2 * i + 1;
    if (l >= m) break;
    int64_t c = (l + 1 < m && hless(&h[l + 1], &h[l])) ? l + 1 : l;
    if (!hless(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  if (m > 0) h[i] = last;
  return top;
}

/* Pushes the pair (sy[p], sy[sy[p].next]) if it has a merge. */
static inline void push_pair(const struct lmf_vocab *v, const struct lmf_vocab_bpe *t, const sym *sy,
                             int32_t p, hent *h, int64_t *nh) {
  const int32_t q = sy[p].next;
  if (q < 0) return;
  const int32_t r = pair_rank(t, sy[p].c, sy[q].c);
  if (r < 0) return;
  hent e = {r, p, v->merges[3 * (int64_t)r + 2]};
  heap_push(h, nh, e);
}

lmf_status_t lmf_vocab_bpe_run(const struct lmf_vocab *v, const lmf_vocab_bpe *t, const uint8_t *bytes,
                               int64_t len, int32_t *out, int64_t *n, lmf_vocab_bpe_scratch *scratch,
                               const char *fn) {
  *n = 0;
  if (len <= 0) return LMF_OK;
  /* Symbols [len], heap [3 len]: len - 1 initial pairs, at most 2 pushes per merge, len - 1 merges. */
  const size_t need = (size_t)len * sizeof(sym) + 3 * (size_t)len * sizeof(hent);
  if (scratch->cap < need) {
    void *nb = realloc(scratch->buf, need);
    if (!nb) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (%zu bytes of scratch)", fn, need);
    scratch->buf = nb;
    scratch->cap = need;
  }
  sym *sy = (sym *)scratch->buf;
  hent *h = (hent *)(sy + len);

  /* Initial symbols. */
  int32_t ns = 0;
  for (int64_t i = 0; i < len;) {
    int clen = 1;
    int32_t id = -1;
    if (v->format == LMF_VOCAB_FORMAT_METASPACE) {
      clen = utf8_char_len(bytes, i, len);
      if (clen > 0) {
        id = lmf_vocab_lookup(v, bytes + i, clen);
        if (id >= 0 && (v->flags[id] & LMF_TOKEN_BYTE_FALLBACK)) id = -1;
      }
      if (id < 0) {
        /* Byte fallback: every byte of the character (or the lone invalid byte) must have a token. */
        const int nb = clen > 0 ? clen : 1;
        for (int k = 0; k < nb; ++k)
          if (t->byte_fb[bytes[i + k]] < 0)
            return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                            "%s: bytes[%lld] = 0x%02X: no token has this %s and the vocabulary has no "
                            "byte-fallback token <0x%02X>",
                            fn, (long long)(i + k), bytes[i + k], clen > 0 ? "character" : "byte",
                            bytes[i + k]);
        for (int k = 0; k < nb; ++k) {
          sy[ns].c = t->byte_fb[bytes[i + k]];
          sy[ns].len = 1;
          ++ns;
        }
        i += nb;
        continue;
      }
    } else {
      id = t->byte_tok[bytes[i]];
      if (id < 0)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        "%s: bytes[%lld] = 0x%02X: the vocabulary has no token for this single byte "
                        "(a %s vocabulary starts BPE from one token per byte)",
                        fn, (long long)i, bytes[i],
                        v->format == LMF_VOCAB_FORMAT_BYTE_LEVEL ? "byte-level" : "raw");
    }
    sy[ns].c = id;
    sy[ns].len = clen;
    ++ns;
    i += clen;
  }
  for (int32_t s = 0; s < ns; ++s) {
    sy[s].prev = s - 1;
    sy[s].next = s + 1 < ns ? s + 1 : -1;
  }

  /* Merges, lowest rank first, then leftmost (HF word.rs merge_all). */
  int64_t nh = 0;
  if (v->num_merges > 0) {
    for (int32_t s = 0; s + 1 < ns; ++s) push_pair(v, t, sy, s, h, &nh);
    while (nh > 0) {
      const hent top = heap_pop(h, &nh);
      sym *L = &sy[top.pos];
      if (L->len == 0 || L->next < 0) continue;
      const int32_t q = L->next;
      const int32_t r = pair_rank(t, L->c, sy[q].c);
      if (r < 0 || v->merges[3 * (int64_t)r + 2] != top.id) continue; /* stale */
      L->c = top.id;
      L->len += sy[q].len;
      L->next = sy[q].next;
      sy[q].len = 0;
      if (L->next >= 0) sy[L->next].prev = top.pos;
      if (L->prev >= 0) push_pair(v, t, sy, L->prev, h, &nh);
      push_pair(v, t, sy, top.pos, h, &nh);
    }
  }
  int64_t k = 0;
  for (int32_t s = 0; s < ns; ++s)
    if (sy[s].len > 0) out[k++] = sy[s].c;
  *n = k;
  return LMF_OK;
}

lmf_status_t lmf_vocab_bpe_encode(const lmf_vocab_t *vocab, const uint8_t *bytes, int64_t len, int32_t *ids,
                                  int64_t capacity, int64_t *num_ids) {
  if (!vocab) return lmf_fail(LMF_ERR_NULL_POINTER, FN_ENCODE ": vocab is NULL");
  if (!num_ids) return lmf_fail(LMF_ERR_NULL_POINTER, FN_ENCODE ": num_ids is NULL");
  if (len < 0 || len > INT32_MAX)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_ENCODE ": len is %lld; must be 0 to %d", (long long)len,
                    INT32_MAX);
  if (len > 0 && !bytes)
    return lmf_fail(LMF_ERR_NULL_POINTER, FN_ENCODE ": bytes is NULL but len is %lld", (long long)len);
  if (capacity < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_ENCODE ": capacity is %lld; must be >= 0", (long long)capacity);
  if (!ids && capacity > 0)
    return lmf_fail(LMF_ERR_NULL_POINTER, FN_ENCODE ": ids is NULL but capacity is %lld", (long long)capacity);
  if (ids && len > 0) {
    const char *i0 = (const char *)ids, *b0 = (const char *)bytes;
    const size_t ib = (size_t)capacity * sizeof(int32_t);
    if (i0 < b0 + len && b0 < i0 + ib)
      return lmf_fail(LMF_ERR_OVERLAP, FN_ENCODE ": ids and bytes overlap");
  }
  const lmf_vocab_bpe *t = lmf_vocab_bpe_get(vocab, FN_ENCODE);
  if (!t) return LMF_ERR_OUT_OF_MEMORY;
  if (len == 0) {
    *num_ids = 0;
    return LMF_OK;
  }
  /* Encode into a private buffer: nothing reaches ids unless the whole call succeeds. */
  int32_t small[256];
  int32_t *tmp = len <= 256 ? small : (int32_t *)malloc((size_t)len * sizeof(int32_t));
  if (!tmp) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN_ENCODE ": out of host memory (%lld ids)", (long long)len);
  lmf_vocab_bpe_scratch scratch = {NULL, 0};
  int64_t n = 0;
  lmf_status_t st = lmf_vocab_bpe_run(vocab, t, bytes, len, tmp, &n, &scratch, FN_ENCODE);
  lmf_vocab_bpe_scratch_free(&scratch);
  if (st == LMF_OK && ids && capacity < n)
    st = lmf_fail(LMF_ERR_INVALID_SIZE,
                  FN_ENCODE ": capacity is %lld but the encoding has %lld ids (capacity >= len always "
                  "suffices; ids = NULL, capacity = 0 asks for the count)",
                  (long long)capacity, (long long)n);
  if (st == LMF_OK) {
    if (ids) memcpy(ids, tmp, (size_t)n * sizeof(int32_t));
    *num_ids = n;
  }
  if (tmp != small) free(tmp);
  return st;
}
