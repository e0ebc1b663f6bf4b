/* lmf_vocab_create from plain arrays: contents, copies, the canonical lookup (checked against a brute
 * force scan of every id), lmf_vocab_arrays_init, and every bad-input path of the constructor and the
 * accessors (status, message naming the argument, *out and outputs untouched). */
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/vocab.h"

/* A vocabulary under construction: token strings (may contain no NUL), flags, merges. */
#define VB_MAX 64
typedef struct vb {
  int n;
  uint8_t bytes[1024];
  int64_t offsets[VB_MAX + 1];
  uint8_t flags[VB_MAX];
  int32_t merges[2 * VB_MAX];
  int nm;
} vb;

static void vb_init(vb *b) {
  memset(b, 0, sizeof *b);
}

static int vb_add(vb *b, const char *s, uint8_t flags) {
  size_t l = strlen(s);
  int64_t o = b->offsets[b->n];
  memcpy(b->bytes + o, s, l);
  b->flags[b->n] = flags;
  b->offsets[b->n + 1] = o + (int64_t)l;
  return b->n++;
}

static void vb_merge(vb *b, int l, int r) {
  b->merges[2 * b->nm] = l;
  b->merges[2 * b->nm + 1] = r;
  b->nm++;
}

static lmf_vocab_arrays_t vb_arrays(vb *b) {
  lmf_vocab_arrays_t a = LMF_VOCAB_ARRAYS_INIT;
  a.num_tokens = b->n;
  a.bytes = b->bytes;
  a.offsets = b->offsets;
  a.flags = b->flags;
  a.num_merges = b->nm;
  a.merges = b->nm ? b->merges : NULL;
  return a;
}

/* The canonical id by brute force: scan every id, keep the best by (is byte fallback, id). */
static int32_t brute_find(const uint8_t *bytes, const int64_t *off, const uint8_t *flags, int32_t n,
                          const uint8_t *s, int64_t len) {
  int32_t best = -1;
  for (int32_t i = 0; i < n; ++i) {
    uint8_t f = flags ? flags[i] : 0;
    if (f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)) continue;
    if (off[i + 1] - off[i] != len || memcmp(bytes + off[i], s, (size_t)len) != 0) continue;
    if (best < 0) {
      best = i;
    } else if ((flags[best] & LMF_TOKEN_BYTE_FALLBACK) && !(f & LMF_TOKEN_BYTE_FALLBACK)) {
      best = i;
    }
  }
  return best;
}

static int32_t find(const lmf_vocab_t *v, const char *s) {
  int32_t id = -7;
  if (!LMF_CHECK_OK(lmf_vocab_find(v, (const uint8_t *)s, (int64_t)strlen(s), &id))) return -7;
  return id;
}

void test_vocab_arrays_basic(void) {
  vb b;
  vb_init(&b);
  int s0 = vb_add(&b, "<s>", LMF_TOKEN_SPECIAL);   /* 0 */
  int a = vb_add(&b, "a", 0);                      /* 1 */
  int bb = vb_add(&b, "b", 0);                     /* 2 */
  int hole = vb_add(&b, "", LMF_TOKEN_UNUSED);     /* 3 */
  int ab = vb_add(&b, "ab", 0);                    /* 4 */
  int sp = vb_add(&b, " ", 0);                     /* 5 */
  int spab = vb_add(&b, " ab", 0);                 /* 6 */
  int empty_special = vb_add(&b, "", LMF_TOKEN_SPECIAL); /* 7 */
  vb_merge(&b, a, bb);
  vb_merge(&b, sp, ab);
  lmf_vocab_arrays_t arr = vb_arrays(&b);
  char pattern[] = " ?\\p{L}+|\\s+";
  arr.pretokenizer_pattern = pattern;
  lmf_vocab_t *v = NULL;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &arr));
  LMF_REQUIRE(v != NULL);
  /* The arrays are copied: scribbling over them afterwards changes nothing. */
  vb saved = b;
  memset(b.bytes, 'x', sizeof b.bytes);
  memset(b.flags, 0xff, sizeof b.flags);
  memset(b.merges, 0xff, sizeof b.merges);
  pattern[0] = 'X';

  int32_t size = -1, format = -1, nm = -1;
  LMF_CHECK_OK(lmf_vocab_size(v, &size));
  LMF_CHECK_EQ_INT(size, saved.n);
  LMF_CHECK_OK(lmf_vocab_format(v, &format));
  LMF_CHECK_EQ_INT(format, LMF_VOCAB_FORMAT_RAW);
  for (int32_t i = 0; i < saved.n; ++i) {
    const uint8_t *p = NULL;
    int64_t len = -1;
    uint32_t f = 99;
    LMF_CHECK_OK(lmf_vocab_token_bytes(v, i, &p, &len));
    LMF_CHECK_EQ_INT(len, saved.offsets[i + 1] - saved.offsets[i]);
    LMF_CHECK(p != NULL);
    if (p && len > 0) LMF_CHECK_BYTES_EQ(p, saved.bytes + saved.offsets[i], (size_t)len, "token bytes");
    LMF_CHECK_OK(lmf_vocab_token_flags(v, i, &f));
    LMF_CHECK_EQ_INT(f, saved.flags[i]);
  }
  LMF_CHECK_OK(lmf_vocab_num_merges(v, &nm));
  LMF_CHECK_EQ_INT(nm, 2);
  int32_t l = -1, r = -1, res = -1;
  LMF_CHECK_OK(lmf_vocab_merge(v, 0, &l, &r, &res));
  LMF_CHECK(l == a && r == bb && res == ab);
  LMF_CHECK_OK(lmf_vocab_merge(v, 1, &l, &r, &res));
  LMF_CHECK(l == sp && r == ab && res == spab);
  const char *pat = NULL;
  LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pat));
  LMF_REQUIRE(pat != NULL);
  LMF_CHECK(pat != pattern);
  LMF_CHECK_STR_EQ(pat, " ?\\p{L}+|\\s+");

  /* Lookups: specials, holes, empty strings and non-tokens are never found. */
  LMF_CHECK_EQ_INT(find(v, "ab"), ab);
  LMF_CHECK_EQ_INT(find(v, " ab"), spab);
  LMF_CHECK_EQ_INT(find(v, "<s>"), -1);
  LMF_CHECK_EQ_INT(find(v, ""), -1);
  LMF_CHECK_EQ_INT(find(v, "abc"), -1);
  int32_t id = -7;
  LMF_CHECK_OK(lmf_vocab_find(v, NULL, 0, &id));
  LMF_CHECK_EQ_INT(id, -1);
  /* Lengths matter, not NUL termination. */
  LMF_CHECK_OK(lmf_vocab_find(v, (const uint8_t *)"abzzz", 2, &id));
  LMF_CHECK_EQ_INT(id, ab);
  (void)s0;
  (void)hole;
  (void)empty_special;
  lmf_vocab_destroy(v);

  /* No pattern, no flags, no merges: all tokens normal. */
  lmf_vocab_arrays_t arr2 = LMF_VOCAB_ARRAYS_INIT;
  const uint8_t bytes2[] = "xyz";
  const int64_t off2[] = {0, 1, 2, 3};
  arr2.num_tokens = 3;
  arr2.bytes = bytes2;
  arr2.offsets = off2;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &arr2));
  pat = "sentinel";
  LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pat));
  LMF_CHECK(pat == NULL);
  uint32_t f = 99;
  LMF_CHECK_OK(lmf_vocab_token_flags(v, 2, &f));
  LMF_CHECK_EQ_INT(f, 0);
  LMF_CHECK_OK(lmf_vocab_num_merges(v, &nm));
  LMF_CHECK_EQ_INT(nm, 0);
  LMF_CHECK_EQ_INT(find(v, "z"), 2);
  lmf_vocab_destroy(v);

  /* bytes may be NULL when every token is empty (special or unused). */
  lmf_vocab_arrays_t arr3 = LMF_VOCAB_ARRAYS_INIT;
  const int64_t off3[] = {0, 0, 0};
  const uint8_t fl3[] = {LMF_TOKEN_SPECIAL, LMF_TOKEN_UNUSED};
  arr3.num_tokens = 2;
  arr3.offsets = off3;
  arr3.flags = fl3;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &arr3));
  LMF_CHECK_OK(lmf_vocab_size(v, &size));
  LMF_CHECK_EQ_INT(size, 2);
  lmf_vocab_destroy(v);
  lmf_vocab_destroy(NULL);
}

/* Several ids per byte string: normal tokens beat byte-fallback ones, then the smallest id wins;
 * specials and unused ids never count. The merge result is the canonical id of the concatenation. */
void test_vocab_canonical_lookup(void) {
  vb b;
  vb_init(&b);
  int fbA = vb_add(&b, "A", LMF_TOKEN_BYTE_FALLBACK); /* 0: byte fallback first */
  int spA = vb_add(&b, "A", LMF_TOKEN_SPECIAL);       /* 1 */
  int A1 = vb_add(&b, "A", 0);                        /* 2: canonical */
  int A2 = vb_add(&b, "A", 0);                        /* 3 */
  int fbB1 = vb_add(&b, "B", LMF_TOKEN_BYTE_FALLBACK);/* 4: canonical among fallbacks */
  int fbB2 = vb_add(&b, "B", LMF_TOKEN_BYTE_FALLBACK);/* 5 */
  int spC = vb_add(&b, "C", LMF_TOKEN_SPECIAL);       /* 6: only special -> -1 */
  int AB1 = vb_add(&b, "AB", 0);                      /* 7 */
  int AB0 = vb_add(&b, "AB", 0);                      /* 8 */
  vb_merge(&b, A2, fbB2);
  lmf_vocab_arrays_t arr = vb_arrays(&b);
  lmf_vocab_t *v = NULL;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &arr));
  LMF_CHECK_EQ_INT(find(v, "A"), A1);
  LMF_CHECK_EQ_INT(find(v, "B"), fbB1);
  LMF_CHECK_EQ_INT(find(v, "C"), -1);
  LMF_CHECK_EQ_INT(find(v, "AB"), AB1);
  int32_t l, r, res;
  LMF_CHECK_OK(lmf_vocab_merge(v, 0, &l, &r, &res));
  LMF_CHECK(l == A2 && r == fbB2 && res == AB1);
  (void)fbA;
  (void)spA;
  (void)spC;
  (void)AB0;
  lmf_vocab_destroy(v);

  /* Random vocabularies over a tiny alphabet (many collisions), against the brute-force scan. */
  enum { N = 3000 };
  uint8_t *bytes = (uint8_t *)lt_malloc(N * 4);
  int64_t *off = (int64_t *)lt_malloc((N + 1) * sizeof *off);
  uint8_t *flags = (uint8_t *)lt_malloc(N);
  if (!bytes || !off || !flags) goto done;
  for (int trial = 0; trial < 4; ++trial) {
    uint64_t st = 1234 + (uint64_t)trial;
    off[0] = 0;
    for (int i = 0; i < N; ++i) {
      uint64_t x = lt_next(&st);
      int len = 1 + (int)(x % 3);
      uint32_t kind = (uint32_t)((x >> 8) % 10);
      flags[i] = kind == 0 ? LMF_TOKEN_SPECIAL : kind == 1 ? LMF_TOKEN_UNUSED : 0;
      if (flags[i] == LMF_TOKEN_UNUSED) len = 0;
      if (kind == 2) {
        flags[i] = LMF_TOKEN_BYTE_FALLBACK;
        len = 1;
      }
      for (int k = 0; k < len; ++k) bytes[off[i] + k] = (uint8_t)('a' + (lt_next(&st) % (trial + 2)));
      off[i + 1] = off[i] + len;
    }
    lmf_vocab_arrays_t ra = LMF_VOCAB_ARRAYS_INIT;
    ra.num_tokens = N;
    ra.bytes = bytes;
    ra.offsets = off;
    ra.flags = flags;
    if (!LMF_CHECK_OK(lmf_vocab_create(&v, &ra))) continue;
    int bad = 0;
    for (int i = 0; i < N && bad < 5; ++i) {
      int64_t len = off[i + 1] - off[i];
      int32_t id = -7;
      LMF_CHECK_OK(lmf_vocab_find(v, bytes + off[i], len, &id));
      int32_t want = len ? brute_find(bytes, off, flags, N, bytes + off[i], len) : -1;
      if (!LMF_CHECK_MSG(id == want, "trial %d token %d: find gives %d, brute force %d", trial, i, id, want))
        ++bad;
    }
    /* Strings of length 4 are never tokens. */
    int32_t id = -7;
    LMF_CHECK_OK(lmf_vocab_find(v, (const uint8_t *)"aaaa", 4, &id));
    LMF_CHECK_EQ_INT(id, -1);
    lmf_vocab_destroy(v);
  }
done:
  free(bytes);
  free(off);
  free(flags);
}

void test_vocab_arrays_init_fn(void) {
  lmf_vocab_arrays_t a;
  memset(&a, 0xab, sizeof a);
  LMF_REQUIRE_OK(lmf_vocab_arrays_init(&a, sizeof a));
  lmf_vocab_arrays_t m = LMF_VOCAB_ARRAYS_INIT;
  LMF_CHECK_EQ_U64(a.struct_size, sizeof a);
  LMF_CHECK_EQ_INT(a.version, LMF_VOCAB_ARRAYS_VERSION);
  LMF_CHECK_EQ_INT(a.num_tokens, m.num_tokens);
  LMF_CHECK(a.bytes == NULL && a.offsets == NULL && a.flags == NULL && a.merges == NULL &&
            a.pretokenizer_pattern == NULL);
  LMF_CHECK_EQ_INT(a.num_merges, 0);
  LMF_CHECK_EQ_U64(m.struct_size, sizeof m);
  LMF_CHECK_EQ_INT(m.version, LMF_VOCAB_ARRAYS_VERSION);
  LMF_CHECK_FAIL(lmf_vocab_arrays_init(NULL, sizeof a), LMF_ERR_NULL_POINTER, "lmf_vocab_arrays_init");
  memset(&a, 0xab, sizeof a);
  lmf_vocab_arrays_t before = a;
  LMF_CHECK_FAIL(lmf_vocab_arrays_init(&a, sizeof a - 1), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_vocab_arrays_init(&a, sizeof a + 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_BYTES_EQ(&a, &before, sizeof a, "arrays after a failed init");
}

/* One bad constructor call: status, message naming the argument, *out untouched. */
#define BAD_CREATE(arr, status, needle)                                                  \
  do {                                                                                   \
    lmf_vocab_t *out_ = (lmf_vocab_t *)&sentinel;                                        \
    LMF_CHECK_FAIL(lmf_vocab_create(&out_, (arr)), (status), (needle));                  \
    LMF_CHECK_MSG(out_ == (lmf_vocab_t *)&sentinel, "*out was written by a failed call"); \
  } while (0)

void test_vocab_arrays_bad_input(void) {
  static int sentinel;
  vb b;
  vb_init(&b);
  int a = vb_add(&b, "a", 0);
  int bb = vb_add(&b, "b", 0);
  int ab = vb_add(&b, "ab", 0);
  int s = vb_add(&b, "<s>", LMF_TOKEN_SPECIAL);
  int u = vb_add(&b, "", LMF_TOKEN_UNUSED);
  int fb = vb_add(&b, "c", LMF_TOKEN_BYTE_FALLBACK);
  vb_merge(&b, a, bb);
  (void)ab;
  const lmf_vocab_arrays_t good = vb_arrays(&b);
  /* The base call works. */
  lmf_vocab_t *v = NULL;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &good));
  lmf_vocab_destroy(v);

  LMF_CHECK_FAIL(lmf_vocab_create(NULL, &good), LMF_ERR_NULL_POINTER, "out");
  BAD_CREATE(NULL, LMF_ERR_NULL_POINTER, "arrays");
  lmf_vocab_arrays_t x = good;
  x.struct_size = sizeof x - 8;
  BAD_CREATE(&x, LMF_ERR_STRUCT_SIZE, "struct_size");
  x = good;
  x.struct_size = sizeof x + 8;
  BAD_CREATE(&x, LMF_ERR_STRUCT_SIZE, "struct_size");
  x = good;
  x.version = 0;
  BAD_CREATE(&x, LMF_ERR_STRUCT_SIZE, "version");
  x = good;
  x.version = LMF_VOCAB_ARRAYS_VERSION + 1;
  BAD_CREATE(&x, LMF_ERR_STRUCT_SIZE, "version");

  x = good;
  x.num_tokens = 0;
  BAD_CREATE(&x, LMF_ERR_INVALID_SIZE, "num_tokens");
  x.num_tokens = -1;
  BAD_CREATE(&x, LMF_ERR_INVALID_SIZE, "num_tokens");
  x.num_tokens = LMF_VOCAB_MAX_TOKENS + 1;
  BAD_CREATE(&x, LMF_ERR_INVALID_SIZE, "num_tokens");
  x = good;
  x.offsets = NULL;
  BAD_CREATE(&x, LMF_ERR_NULL_POINTER, "offsets");
  x = good;
  x.bytes = NULL;
  BAD_CREATE(&x, LMF_ERR_NULL_POINTER, "bytes");

  vb c = b;
  c.offsets[0] = 1;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "offsets[0]");
  c = b;
  c.offsets[2] = c.offsets[1] - 1; /* token 1 has -1 bytes */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "offsets decrease at token 1");
  c = b;
  c.offsets[c.n] = -5;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "offsets decrease at token 5");

  c = b;
  c.flags[a] = 8;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[0]");
  c = b;
  c.flags[bb] = 0x80 | LMF_TOKEN_SPECIAL;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[1]");
  c = b;
  c.flags[a] = LMF_TOKEN_UNUSED; /* unused but has a byte */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[0]");
  c = b;
  c.flags[u] = LMF_TOKEN_UNUSED | LMF_TOKEN_SPECIAL;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[4]");
  c = b;
  c.flags[ab] = LMF_TOKEN_BYTE_FALLBACK; /* two bytes */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[2]");
  c = b;
  c.flags[fb] = LMF_TOKEN_BYTE_FALLBACK | LMF_TOKEN_SPECIAL;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "flags[5]");
  c = b;
  c.flags[u] = 0; /* an empty normal token */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "token 4");
  x = good;
  x.flags = NULL; /* then the empty token 4 is normal */
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "token 4");

  x = good;
  x.num_merges = -1;
  BAD_CREATE(&x, LMF_ERR_INVALID_SIZE, "num_merges");
  x.num_merges = LMF_VOCAB_MAX_TOKENS + 1;
  BAD_CREATE(&x, LMF_ERR_INVALID_SIZE, "num_merges");
  x = good;
  x.merges = NULL;
  BAD_CREATE(&x, LMF_ERR_NULL_POINTER, "merges");
  c = b;
  c.merges[0] = -1;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "merges[0]");
  c = b;
  c.merges[1] = c.n;
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "merges[1]");
  c = b;
  vb_merge(&c, s, a); /* merge 1: a special token */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "merges[2]");
  c = b;
  vb_merge(&c, a, u); /* an unused id */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "merges[3]");
  c = b;
  vb_merge(&c, bb, a); /* "ba" is not a token */
  x = vb_arrays(&c);
  BAD_CREATE(&x, LMF_ERR_INVALID_ARGUMENT, "merge 1");
}

void test_vocab_accessors_bad_input(void) {
  vb b;
  vb_init(&b);
  int a = vb_add(&b, "a", 0);
  int bb = vb_add(&b, "b", 0);
  vb_add(&b, "ab", 0);
  vb_merge(&b, a, bb);
  lmf_vocab_arrays_t arr = vb_arrays(&b);
  lmf_vocab_t *v = NULL;
  LMF_REQUIRE_OK(lmf_vocab_create(&v, &arr));
  int32_t i32 = 77, l = 77, r = 77, res = 77;
  uint32_t u32 = 77;
  int64_t len = 77;
  const uint8_t *p = (const uint8_t *)"sentinel";
  const char *pat = "sentinel";

  LMF_CHECK_FAIL(lmf_vocab_size(NULL, &i32), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_size(v, NULL), LMF_ERR_NULL_POINTER, "size");
  LMF_CHECK_FAIL(lmf_vocab_format(NULL, &i32), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_format(v, NULL), LMF_ERR_NULL_POINTER, "format");
  LMF_CHECK_FAIL(lmf_vocab_token_bytes(NULL, 0, &p, &len), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_token_bytes(v, 0, NULL, &len), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_vocab_token_bytes(v, 0, &p, NULL), LMF_ERR_NULL_POINTER, "len");
  LMF_CHECK_FAIL(lmf_vocab_token_bytes(v, -1, &p, &len), LMF_ERR_INVALID_ARGUMENT, "id");
  LMF_CHECK_FAIL(lmf_vocab_token_bytes(v, 3, &p, &len), LMF_ERR_INVALID_ARGUMENT, "id");
  LMF_CHECK_FAIL(lmf_vocab_token_flags(NULL, 0, &u32), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_token_flags(v, 0, NULL), LMF_ERR_NULL_POINTER, "flags");
  LMF_CHECK_FAIL(lmf_vocab_token_flags(v, 3, &u32), LMF_ERR_INVALID_ARGUMENT, "id");
  LMF_CHECK_FAIL(lmf_vocab_token_flags(v, INT32_MIN, &u32), LMF_ERR_INVALID_ARGUMENT, "id");
  LMF_CHECK_FAIL(lmf_vocab_find(NULL, (const uint8_t *)"a", 1, &i32), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_find(v, (const uint8_t *)"a", 1, NULL), LMF_ERR_NULL_POINTER, "id");
  LMF_CHECK_FAIL(lmf_vocab_find(v, NULL, 1, &i32), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_vocab_find(v, (const uint8_t *)"a", -1, &i32), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_vocab_num_merges(NULL, &i32), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_num_merges(v, NULL), LMF_ERR_NULL_POINTER, "num_merges");
  LMF_CHECK_FAIL(lmf_vocab_merge(NULL, 0, &l, &r, &res), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_merge(v, 0, NULL, &r, &res), LMF_ERR_NULL_POINTER, "left");
  LMF_CHECK_FAIL(lmf_vocab_merge(v, 0, &l, NULL, &res), LMF_ERR_NULL_POINTER, "right");
  LMF_CHECK_FAIL(lmf_vocab_merge(v, 0, &l, &r, NULL), LMF_ERR_NULL_POINTER, "result");
  LMF_CHECK_FAIL(lmf_vocab_merge(v, 1, &l, &r, &res), LMF_ERR_INVALID_ARGUMENT, "rank");
  LMF_CHECK_FAIL(lmf_vocab_merge(v, -1, &l, &r, &res), LMF_ERR_INVALID_ARGUMENT, "rank");
  LMF_CHECK_FAIL(lmf_vocab_pretokenizer_pattern(NULL, &pat), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_pretokenizer_pattern(v, NULL), LMF_ERR_NULL_POINTER, "pattern");
  /* Nothing was written by the failed calls. */
  LMF_CHECK(i32 == 77 && l == 77 && r == 77 && res == 77 && u32 == 77 && len == 77);
  LMF_CHECK_STR_EQ((const char *)p, "sentinel");
  LMF_CHECK_STR_EQ(pat, "sentinel");
  lmf_vocab_destroy(v);
}
