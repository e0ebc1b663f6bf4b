/* VALID(a, b) of batch-level BPE merging in the pair modes (specs/dynamic-bpe.md, "VALID"):
 * LMF_DYNTOK_PRETOKENS (the reference: whitespace rule, partial-UTF-8 rule, then one match of a
 * pre-tokenizer pattern, PCRE2 with UTF + UCP) and LMF_DYNTOK_WHITESPACE. WORDS mode is per occurrence
 * and lives in the backends.
 *
 * Decisions (the spec's wording, read literally; bench/python/dyntok_reference.py reads it the same way):
 *   - Rule 1 decides on its own when it applies: if t has a space-like byte (0x20, 0x09, 0x0A) after its
 *     first byte, t is valid iff it is all space-like and is not exactly "\n\n"; the pattern is not
 *     consulted (so an all-space t is valid under any pattern).
 *   - Rule 2: "valid UTF-8" is RFC 3629's (no overlong forms, no UTF-16 surrogates, nothing above
 *     U+10FFFF, no 5- or 6-byte forms), the definition Python's strict decoder and PCRE2's check use.
 *   - Rule 3: the first match of an unanchored search must start at 0 and end at len(t); this equals
 *     "the leftmost-first match at offset 0 spans t" (an anchored attempt at 0 fails exactly when the
 *     first unanchored match starts later).
 * Compiling: pcre2_jit_compile is tried and, if it fails (no JIT on this platform, or a pattern JIT
 * cannot take), pcre2_match interprets the pattern: same results either way. JIT compilation costs
 * ~60 us, a fifth of a typical call, so compiled patterns are cached for the process (up to
 * PATTERN_CACHE patterns, compared by their text; a pattern beyond that is compiled per call). A compiled
 * pattern is immutable and PCRE2 allows sharing one between threads (match data is per evaluator); the
 * cache itself is guarded by a mutex and freed when the library is unloaded.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "dyntok_backend.h"
#include "kernels/common/mix64.h"

struct lmf_dt_valid {
  int32_t boundary;
  int jit;
  int cached;          /* code belongs to the cache */
  pcre2_code *code;    /* PRETOKENS only */
  const char *pattern; /* the caller's config->pattern (NULL: the default) */
};

enum { PATTERN_CACHE = 8 };

static struct {
  char *text;
  pcre2_code *code;
  int jit;
} g_cache[PATTERN_CACHE];
static int g_cache_n;
static pthread_mutex_t g_cache_lock = PTHREAD_MUTEX_INITIALIZER;

#if defined(__GNUC__)
__attribute__((destructor)) static void cache_free(void) {
  for (int i = 0; i < g_cache_n; ++i) {
    pcre2_code_free(g_cache[i].code);
    free(g_cache[i].text);
  }
  g_cache_n = 0;
}
#endif

/* The cache index of `pat`, or -1. Called with the lock held. */
static int cache_find(const char *pat) {
  for (int i = 0; i < g_cache_n; ++i)
    if (strcmp(g_cache[i].text, pat) == 0) return i;
  return -1;
}

struct lmf_dt_eval {
  const lmf_dt_valid *v;
  const struct lmf_vocab *vocab;
  pcre2_match_data *md;
  uint8_t *buf; /* t */
  size_t buf_cap;
  /* Memo: open addressing on the packed key (a, b); vals 0/1, keys UINT64_MAX = empty. */
  uint64_t *keys;
  uint8_t *vals;
  int64_t cap, count;
  lmf_status_t err; /* of the last -1 */
};

static void pcre2_message(char *out, size_t n, int code) {
  if (pcre2_get_error_message(code, (PCRE2_UCHAR *)out, n) < 0) {
    out[0] = '\0';
    if (n > 0) strncat(out, "unknown PCRE2 error", n - 1);
  }
}

lmf_status_t lmf_dt_valid_create(lmf_dt_valid **out, int32_t boundary, const char *pattern,
                                 const char *fn) {
  lmf_dt_valid *v = (lmf_dt_valid *)calloc(1, sizeof *v);
  if (!v) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  v->boundary = boundary;
  if (boundary == LMF_DYNTOK_PRETOKENS) {
    v->pattern = pattern;
    const char *pat = pattern ? pattern : LMF_DYNTOK_DEFAULT_PATTERN;
    pthread_mutex_lock(&g_cache_lock);
    int hit = cache_find(pat);
    if (hit >= 0) {
      v->code = g_cache[hit].code;
      v->jit = g_cache[hit].jit;
      v->cached = 1;
    }
    pthread_mutex_unlock(&g_cache_lock);
    if (v->cached) {
      *out = v;
      return LMF_OK;
    }
    int err = 0;
    PCRE2_SIZE erroff = 0;
    v->code = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &erroff,
                            NULL);
    if (!v->code) {
      char msg[256];
      pcre2_message(msg, sizeof msg, err);
      free(v);
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: config->pattern does not compile (PCRE2, UTF + UCP): %s at offset %zu of "
                      "\"%.80s%s\"", fn, msg, (size_t)erroff, pat, strlen(pat) > 80 ? "..." : "");
    }
    v->jit = pcre2_jit_compile(v->code, PCRE2_JIT_COMPLETE) == 0;
    /* Into the cache if there is room (another thread may have added the same pattern meanwhile: then
     * keep this copy private). */
    pthread_mutex_lock(&g_cache_lock);
    if (g_cache_n < PATTERN_CACHE && cache_find(pat) < 0) {
      char *text = (char *)malloc(strlen(pat) + 1);
      if (text) {
        strcpy(text, pat);
        g_cache[g_cache_n].text = text;
        g_cache[g_cache_n].code = v->code;
        g_cache[g_cache_n].jit = v->jit;
        ++g_cache_n;
        v->cached = 1;
      }
    }
    pthread_mutex_unlock(&g_cache_lock);
  }
  *out = v;
  return LMF_OK;
}

const char *lmf_dt_valid_pattern(const lmf_dt_valid *v) { return v->pattern; }

void lmf_dt_valid_destroy(lmf_dt_valid *v) {
  if (!v) return;
  if (!v->cached) pcre2_code_free(v->code);
  free(v);
}


lmf_dt_eval *lmf_dt_eval_create(const lmf_dt_valid *v, const struct lmf_vocab *vocab) {
  lmf_dt_eval *e = (lmf_dt_eval *)calloc(1, sizeof *e);
  if (!e) goto oom;
  e->v = v;
  e->vocab = vocab;
  e->cap = 1024;
  e->keys = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)e->cap);
  e->vals = (uint8_t *)malloc((size_t)e->cap);
  e->buf_cap = 256;
  e->buf = (uint8_t *)malloc(e->buf_cap);
  if (!e->keys || !e->vals || !e->buf) goto oom;
  memset(e->keys, 0xff, sizeof(uint64_t) * (size_t)e->cap);
  if (v->code) {
    e->md = pcre2_match_data_create_from_pattern(v->code, NULL);
    if (!e->md) goto oom;
  }
  return e;
oom:
  lmf_dt_eval_destroy(e);
  lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_dyntok_merge: out of host memory (VALID evaluator)");
  return NULL;
}

void lmf_dt_eval_destroy(lmf_dt_eval *e) {
  if (!e) return;
  pcre2_match_data_free(e->md);
  free(e->keys);
  free(e->vals);
  free(e->buf);
  free(e);
}

lmf_status_t lmf_dt_eval_error(const lmf_dt_eval *e) { return e->err; }

static int space_like(uint8_t c) { return c == 0x20 || c == 0x09 || c == 0x0A; }
static int ws_byte(uint8_t c) { return c == 0x20 || (c >= 0x09 && c <= 0x0D); }

/* RFC 3629 UTF-8. */
static int utf8_valid(const uint8_t *s, int64_t n) {
  int64_t i = 0;
  while (i < n) {
    uint8_t c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    int k;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
      k = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      k = 2;
      if (c == 0xE0) lo = 0xA0;      /* no overlongs */
      else if (c == 0xED) hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      k = 3;
      if (c == 0xF0) lo = 0x90;      /* no overlongs */
      else if (c == 0xF4) hi = 0x8F; /* <= U+10FFFF */
    } else {
      return 0;
    }
    if (n - i <= k) return 0;
    if (s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (int j = 2; j <= k; ++j)
      if (s[i + j] < 0x80 || s[i + j] > 0xBF) return 0;
    i += k + 1;
  }
  return 1;
}

int lmf_dt_valid_quick(const lmf_dt_valid *v, const uint8_t *a, int64_t la, const uint8_t *b, int64_t lb) {
  if (v->boundary == LMF_DYNTOK_WHITESPACE) {
    for (int64_t i = 1; i < la; ++i)
      if (ws_byte(a[i])) return 0;
    for (int64_t i = la ? 0 : 1; i < lb; ++i)
      if (ws_byte(b[i])) return 0;
    return 1;
  }
  if (v->boundary != LMF_DYNTOK_PRETOKENS) return -1;
  /* Rule 1 applies iff a space-like byte sits after t's first byte. */
  int applies = 0, all = 1;
  for (int64_t i = 0; i < la; ++i) {
    int sp = space_like(a[i]);
    all &= sp;
    applies |= sp && i > 0;
  }
  for (int64_t i = 0; i < lb; ++i) {
    int sp = space_like(b[i]);
    all &= sp;
    applies |= sp && (la > 0 || i > 0);
  }
  if (!applies) return -1;
  if (!all) return 0;
  return !(la + lb == 2 && (la ? a[0] : b[0]) == '\n' && (lb ? b[lb - 1] : a[1]) == '\n');
}

static int valid_pretokens(lmf_dt_eval *e, const uint8_t *t, int64_t len) {
  int q = lmf_dt_valid_quick(e->v, t, len, NULL, 0); /* rule 1 */
  if (q >= 0) return q;
  if (!utf8_valid(t, len)) return 1;
  const lmf_dt_valid *v = e->v;
  int rc = v->jit ? pcre2_jit_match(v->code, (PCRE2_SPTR)t, (PCRE2_SIZE)len, 0, 0, e->md, NULL)
                  : pcre2_match(v->code, (PCRE2_SPTR)t, (PCRE2_SIZE)len, 0, PCRE2_NO_UTF_CHECK, e->md,
                                NULL);
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) {
    char msg[256];
    pcre2_message(msg, sizeof msg, rc);
    e->err = lmf_fail(LMF_ERR_INVALID_ARGUMENT,
             "lmf_dyntok_merge: the pre-tokenizer pattern failed on a %lld-byte string: PCRE2 error %d "
             "(%s)", (long long)len, rc, msg);
    return -1;
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
  return ov[0] == 0 && ov[1] == (PCRE2_SIZE)len;
}

int lmf_dt_eval_string(lmf_dt_eval *e, const uint8_t *t, int64_t len) {
  switch (e->v->boundary) {
    case LMF_DYNTOK_PRETOKENS: return valid_pretokens(e, t, len);
    case LMF_DYNTOK_WHITESPACE: return lmf_dt_valid_quick(e->v, t, len, NULL, 0);
    default:
      e->err = lmf_fail(LMF_ERR_INTERNAL, "lmf_dyntok_merge: VALID by pair asked for in boundary mode %d",
                        e->v->boundary);
      return -1;
  }
}

static int memo_grow(lmf_dt_eval *e) {
  int64_t cap = e->cap * 2;
  uint64_t *keys = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)cap);
  uint8_t *vals = (uint8_t *)malloc((size_t)cap);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return 0;
  }
  memset(keys, 0xff, sizeof(uint64_t) * (size_t)cap);
  for (int64_t i = 0; i < e->cap; ++i) {
    if (e->keys[i] == UINT64_MAX) continue;
    int64_t h = (int64_t)(lmf_mix64(e->keys[i]) & (uint64_t)(cap - 1));
    while (keys[h] != UINT64_MAX) h = (h + 1) & (cap - 1);
    keys[h] = e->keys[i];
    vals[h] = e->vals[i];
  }
  free(e->keys);
  free(e->vals);
  e->keys = keys;
  e->vals = vals;
  e->cap = cap;
  return 1;
}

int lmf_dt_eval_pair(lmf_dt_eval *e, int32_t a, const uint8_t *a_bytes, int64_t a_len, int32_t b,
                     const uint8_t *b_bytes, int64_t b_len) {
  const struct lmf_vocab *voc = e->vocab;
  /* Ids are >= 0, so the key is never UINT64_MAX. */
  uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
  int64_t h = (int64_t)(lmf_mix64(key) & (uint64_t)(e->cap - 1));
  while (e->keys[h] != UINT64_MAX) {
    if (e->keys[h] == key) return e->vals[h];
    h = (h + 1) & (e->cap - 1);
  }
  int r;
  if ((a < voc->size && (voc->flags[a] & LMF_TOKEN_SPECIAL)) ||
      (b < voc->size && (voc->flags[b] & LMF_TOKEN_SPECIAL))) {
    r = 0;
  } else {
    if (a < voc->size) a_bytes = lmf_vocab_tok(voc, a, &a_len);
    if (b < voc->size) b_bytes = lmf_vocab_tok(voc, b, &b_len);
    size_t need = (size_t)(a_len + b_len);
    if (need > e->buf_cap) {
      size_t c = e->buf_cap;
      while (c < need) c *= 2;
      uint8_t *nb = (uint8_t *)realloc(e->buf, c);
      if (!nb) {
        e->err = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_dyntok_merge: out of host memory (VALID evaluator)");
        return -1;
      }
      e->buf = nb;
      e->buf_cap = c;
    }
    if (a_len) memcpy(e->buf, a_bytes, (size_t)a_len);
    if (b_len) memcpy(e->buf + a_len, b_bytes, (size_t)b_len);
    r = lmf_dt_eval_string(e, e->buf, a_len + b_len);
    if (r < 0) return -1;
  }
  if ((e->count + 1) * 2 > e->cap) {
    if (!memo_grow(e)) {
      e->err = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "lmf_dyntok_merge: out of host memory (VALID memo)");
      return -1;
    }
    h = (int64_t)(lmf_mix64(key) & (uint64_t)(e->cap - 1));
    while (e->keys[h] != UINT64_MAX) h = (h + 1) & (e->cap - 1);
  }
  e->keys[h] = key;
  e->vals[h] = (uint8_t)r;
  ++e->count;
  return r;
}
