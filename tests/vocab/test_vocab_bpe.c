/* lmf_vocab_bpe_encode: BPE with a vocabulary's merges.
 *
 * Real data: every line of data/multilingual/ (3,000 per tokenizer, produced by other tokenizers)
 * re-encoded from its text must give the line's ids exactly: GPT-4o by splitting the text with the
 * file's own Split regex (PCRE2, UTF + UCP; its matches, in order) and encoding each piece's bytes;
 * Mistral (no pre-tokenizer; the normalizer prepends "▁" and writes spaces as "▁") by encoding " " +
 * text as one string. Every ordinary token of both vocabularies encodes to itself.
 * Small vocabularies: rank order, leftmost ties, overlapping runs, a pair listed twice, byte fallback
 * and invalid UTF-8 (metaspace), missing initial symbols. Bad inputs; concurrent first use. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "../dyntok/dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/vocab.h"

/* ---- Real data ------------------------------------------------------------------------------------- */

enum { LINES_PER_LANG = 300, ENC_CAP = 4096 };

static int same_ids(const int32_t *got, int64_t ng, const int32_t *want, int64_t nw, const char *what, int64_t line) {
  if (ng == nw && memcmp(got, want, sizeof(int32_t) * (size_t)ng) == 0) return 1;
  int64_t i = 0;
  while (i < ng && i < nw && got[i] == want[i]) ++i;
  return LMF_CHECK_MSG(0, "%s line %lld: %lld ids, expected %lld; first difference at %lld (%d vs %d)", what,
                       (long long)line, (long long)ng, (long long)nw, (long long)i, i < ng ? got[i] : -1,
                       i < nw ? want[i] : -1);
}

void test_vocab_bpe_gpt4o_real(void) {
  lmf_vocab_t *v = dt_load_vocab("gpt-4o");
  dt_corpus c;
  pcre2_code *re = NULL;
  pcre2_match_data *md = NULL;
  int32_t *enc = (int32_t *)lt_malloc(ENC_CAP * sizeof(int32_t));
  if (!v || !enc || !dt_corpus_load(&c, "gpt-4o", LINES_PER_LANG)) goto done;
  const char *pattern = NULL;
  LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pattern));
  if (!LMF_CHECK(pattern != NULL)) goto done_corpus;
  int err;
  PCRE2_SIZE eoff;
  re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &eoff, NULL);
  if (!LMF_CHECK_MSG(re != NULL, "the file's pattern does not compile (error %d at %zu)", err, (size_t)eoff))
    goto done_corpus;
  md = pcre2_match_data_create_from_pattern(re, NULL);
  int64_t lines = 0, pieces = 0, bad = 0;
  for (int L = 0; L < c.num_langs; ++L)
    for (int64_t s = 0; s < c.batch[L].B; ++s, ++lines) {
      const char *text = c.text[L][s];
      const size_t len = strlen(text);
      int64_t n = 0;
      size_t off = 0;
      while (off < len) {
        int rc = pcre2_match(re, (PCRE2_SPTR)text, len, off, 0, md, NULL);
        if (rc < 0) break; /* the rest matches nothing: Split(Removed, invert) drops it */
        const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        int64_t k = 0;
        if (!LMF_CHECK_OK(lmf_vocab_bpe_encode(v, (const uint8_t *)text + ov[0], (int64_t)(ov[1] - ov[0]), enc + n,
                                               ENC_CAP - n, &k)))
          goto done_corpus;
        n += k;
        ++pieces;
        off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
      }
      const dt_batch *b = &c.batch[L];
      if (!same_ids(enc, n, b->ids + b->offsets[s], b->offsets[s + 1] - b->offsets[s], "gpt-4o", lines) && ++bad > 5)
        goto done_corpus;
    }
  LMF_CHECK_EQ_INT(lines, 3000);
  LMF_CHECK_EQ_INT(bad, 0);
  lmf_t_note("gpt-4o: %lld lines, %lld pieces re-encoded; all equal the data's ids", (long long)lines,
             (long long)pieces);
done_corpus:
  dt_corpus_free(&c);
done:
  pcre2_match_data_free(md);
  pcre2_code_free(re);
  free(enc);
  lmf_vocab_destroy(v);
}

void test_vocab_bpe_mistral_real(void) {
  lmf_vocab_t *v = dt_load_vocab("mistral-7b");
  dt_corpus c;
  int32_t *enc = (int32_t *)lt_malloc(ENC_CAP * sizeof(int32_t));
  char *buf = (char *)lt_malloc(ENC_CAP);
  if (!v || !enc || !buf || !dt_corpus_load(&c, "mistral-7b", LINES_PER_LANG)) goto done;
  int64_t lines = 0, bad = 0, fallback = 0;
  for (int L = 0; L < c.num_langs; ++L)
    for (int64_t s = 0; s < c.batch[L].B; ++s, ++lines) {
      /* The normalizer: prepend "▁", every space -> "▁"; the vocabulary reads "▁" as a space. */
      const size_t len = strlen(c.text[L][s]);
      if (!LMF_CHECK(len + 1 < ENC_CAP)) goto done_corpus;
      buf[0] = ' ';
      memcpy(buf + 1, c.text[L][s], len);
      int64_t n = 0;
      if (!LMF_CHECK_OK(lmf_vocab_bpe_encode(v, (const uint8_t *)buf, (int64_t)len + 1, enc, ENC_CAP, &n)))
        goto done_corpus;
      const dt_batch *b = &c.batch[L];
      for (int64_t i = 0; i < n; ++i) {
        uint32_t f = 0;
        lmf_vocab_token_flags(v, enc[i], &f);
        fallback += (f & LMF_TOKEN_BYTE_FALLBACK) != 0;
      }
      if (!same_ids(enc, n, b->ids + b->offsets[s], b->offsets[s + 1] - b->offsets[s], "mistral-7b", lines) &&
          ++bad > 5)
        goto done_corpus;
    }
  LMF_CHECK_EQ_INT(lines, 3000);
  LMF_CHECK_EQ_INT(bad, 0);
  LMF_CHECK_MSG(fallback > 0, "the data exercises byte fallback (%lld byte-fallback ids)", (long long)fallback);
  lmf_t_note("mistral-7b: %lld lines re-encoded (%lld byte-fallback ids); all equal the data's ids", (long long)lines,
             (long long)fallback);
done_corpus:
  dt_corpus_free(&c);
done:
  free(enc);
  free(buf);
  lmf_vocab_destroy(v);
}

/* Every ordinary token encodes to itself; a byte-fallback token to the canonical token of its byte. */
static void every_token(const char *name) {
  lmf_vocab_t *v = dt_load_vocab(name);
  if (!v) return;
  int32_t V = 0;
  LMF_CHECK_OK(lmf_vocab_size(v, &V));
  int64_t checked = 0, bad = 0;
  for (int32_t id = 0; id < V && bad < 5; ++id) {
    uint32_t f = 0;
    LMF_CHECK_OK(lmf_vocab_token_flags(v, id, &f));
    if (f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)) continue;
    const uint8_t *b = NULL;
    int64_t len = 0, n = -1;
    int32_t enc[512];
    LMF_CHECK_OK(lmf_vocab_token_bytes(v, id, &b, &len));
    if (!LMF_CHECK_OK(lmf_vocab_bpe_encode(v, b, len, enc, 512, &n))) {
      ++bad;
      continue;
    }
    int32_t want = id;
    if (f & LMF_TOKEN_BYTE_FALLBACK) {
      int32_t canon = -1;
      LMF_CHECK_OK(lmf_vocab_find(v, b, 1, &canon));
      want = canon; /* the byte's own character token if it has one, else the fallback token itself */
    }
    if (!LMF_CHECK_MSG(n == 1 && enc[0] == want, "%s: token %d encodes to %lld ids (first %d), expected [%d]", name,
                       id, (long long)n, n > 0 ? enc[0] : -1, want))
      ++bad;
    ++checked;
  }
  LMF_CHECK(checked > 30000);
  lmf_vocab_destroy(v);
}

void test_vocab_bpe_every_token_mistral(void) { every_token("mistral-7b"); }
void test_vocab_bpe_every_token_gpt4o(void) { every_token("gpt-4o"); }

/* ---- Small vocabularies ------------------------------------------------------------------------------ */

/* A RAW vocabulary: token i has the bytes of names[i] (plain ASCII), merges as (left, right) names. */
static lmf_vocab_t *small_vocab(const char *const *names, int n, const char *const (*merges)[2], int nm,
                                const uint8_t *flags) {
  uint8_t bytes[1024];
  int64_t offs[128];
  int32_t mids[256];
  offs[0] = 0;
  for (int i = 0; i < n; ++i) {
    size_t l = strlen(names[i]);
    memcpy(bytes + offs[i], names[i], l);
    offs[i + 1] = offs[i] + (int64_t)l;
  }
  for (int r = 0; r < nm; ++r)
    for (int s = 0; s < 2; ++s) {
      mids[2 * r + s] = -1;
      for (int i = 0; i < n; ++i)
        if (strcmp(names[i], merges[r][s]) == 0 && !(flags && flags[i])) mids[2 * r + s] = i;
    }
  lmf_vocab_arrays_t a = LMF_VOCAB_ARRAYS_INIT;
  a.num_tokens = n;
  a.bytes = bytes;
  a.offsets = offs;
  a.flags = flags;
  a.num_merges = nm;
  a.merges = nm ? mids : NULL;
  lmf_vocab_t *v = NULL;
  LMF_CHECK_OK(lmf_vocab_create(&v, &a));
  return v;
}

/* Encodes s and renders the ids as names joined by spaces into out. */
static int enc_names(const lmf_vocab_t *v, const char *const *names, const char *s, char *out, size_t cap) {
  int32_t ids[64];
  int64_t n = -1;
  out[0] = '\0';
  if (!LMF_CHECK_OK(lmf_vocab_bpe_encode(v, (const uint8_t *)s, (int64_t)strlen(s), ids, 64, &n))) return 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i) strncat(out, " ", cap - strlen(out) - 1);
    strncat(out, names[ids[i]], cap - strlen(out) - 1);
  }
  return 1;
}

#define EXPECT_ENC(v, names, s, want)                          \
  do {                                                         \
    char got_[256];                                            \
    if (enc_names((v), (names), (s), got_, sizeof got_)) LMF_CHECK_STR_EQ(got_, (want)); \
  } while (0)

void test_vocab_bpe_small(void) {
  /* Ranks: (b,c) before (a,b): "abc" -> a bc, then (a,bc) -> abc. */
  {
    static const char *const names[] = {"a", "b", "c", "d", "ab", "bc", "abc", "cd", "aa", "aaa", "aaaa"};
    static const char *const merges[][2] = {{"b", "c"}, {"a", "b"}, {"a", "bc"}, {"c", "d"}, {"a", "a"},
                                            {"aa", "a"}, {"aa", "aa"}};
    lmf_vocab_t *v = small_vocab(names, 11, merges, 7, NULL);
    if (v) {
      EXPECT_ENC(v, names, "abc", "abc");
      EXPECT_ENC(v, names, "abcd", "abc d");     /* (b,c) rank 0 wins over (c,d) rank 3 */
      EXPECT_ENC(v, names, "cd", "cd");
      EXPECT_ENC(v, names, "ab", "ab");
      EXPECT_ENC(v, names, "dcba", "d c b a");   /* no pair has a merge */
      /* Overlapping run: (a,a) leftmost first, non-overlapping: "aaaaa" -> aa aa a -> (aa,a) rank 5 is
       * before (aa,aa) rank 6: aa aaa? No: after step 1 (pos 0) and step 2 (pos 2), the heap holds
       * (aa,aa)@0 rank 6 and (aa,a)@2 rank 5: aa aaa; then nothing merges (aa,aaa). */
      EXPECT_ENC(v, names, "aaaaa", "aa aaa");
      EXPECT_ENC(v, names, "aaaa", "aaaa");      /* aa aa -> aaaa */
      EXPECT_ENC(v, names, "aaa", "aaa");        /* aa a -> aaa */
      EXPECT_ENC(v, names, "", "");
      lmf_vocab_destroy(v);
    }
  }
  /* Ties between equal ranks go leftmost: "abab" with (a,b) -> ab ab. Then (ab,ab) -> abab. */
  {
    static const char *const names[] = {"a", "b", "ab", "abab", "ba"};
    static const char *const merges[][2] = {{"a", "b"}, {"ab", "ab"}, {"b", "a"}};
    lmf_vocab_t *v = small_vocab(names, 5, merges, 3, NULL);
    if (v) {
      EXPECT_ENC(v, names, "abab", "abab");
      EXPECT_ENC(v, names, "bab", "b ab");   /* (b,a)@0 rank 2 loses to (a,b)@1 rank 0 */
      EXPECT_ENC(v, names, "aba", "ab a");
      lmf_vocab_destroy(v);
    }
  }
  /* A pair listed twice keeps its last rank (HF builds a map from the list). "xyz": (x,y) at ranks 0 and
   * 2, (y,z) at rank 1 -> (y,z) first: x yz. */
  {
    static const char *const names[] = {"x", "y", "z", "xy", "yz"};
    static const char *const merges[][2] = {{"x", "y"}, {"y", "z"}, {"x", "y"}};
    lmf_vocab_t *v = small_vocab(names, 5, merges, 3, NULL);
    if (v) {
      EXPECT_ENC(v, names, "xyz", "x yz");
      EXPECT_ENC(v, names, "xy", "xy");
      lmf_vocab_destroy(v);
    }
  }
  /* No merges at all: one token per byte. Specials never take part (their bytes are not symbols). */
  {
    static const char *const names[] = {"a", "b", "<s>", "s"};
    static const uint8_t flags[] = {0, 0, LMF_TOKEN_SPECIAL, 0};
    lmf_vocab_t *v = small_vocab(names, 4, NULL, 0, flags);
    if (v) {
      EXPECT_ENC(v, names, "ab", "a b");
      int32_t ids[8];
      int64_t n = 0;
      LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, (const uint8_t *)"<s>", 3, ids, 8, &n), LMF_ERR_INVALID_ARGUMENT,
                     "0x3C");
      lmf_vocab_destroy(v);
    }
  }
}

void test_vocab_bpe_metaspace(void) {
  lmf_vocab_t *v = dt_load_vocab("mistral-7b");
  if (!v) return;
  int32_t ids[64];
  int64_t n = -1;
  /* An invalid byte (0xFF) and a truncated character (0xE4 0xB8): byte-fallback tokens. */
  static const uint8_t bad_utf8[] = {' ', 'a', 0xFF, 0xE4, 0xB8};
  if (LMF_CHECK_OK(lmf_vocab_bpe_encode(v, bad_utf8, 5, ids, 64, &n)) && LMF_CHECK_EQ_INT(n, 4)) {
    int32_t want_a = -1;
    LMF_CHECK_OK(lmf_vocab_find(v, (const uint8_t *)" a", 2, &want_a));
    LMF_CHECK_EQ_INT(ids[0], want_a);
    for (int k = 1; k < 4; ++k) {
      uint32_t f = 0;
      const uint8_t *b;
      int64_t len;
      LMF_CHECK_OK(lmf_vocab_token_flags(v, ids[k], &f));
      LMF_CHECK_OK(lmf_vocab_token_bytes(v, ids[k], &b, &len));
      LMF_CHECK_MSG((f & LMF_TOKEN_BYTE_FALLBACK) && len == 1 && b[0] == bad_utf8[k + 1],
                    "symbol %d is not the byte-fallback token of 0x%02X", k, bad_utf8[k + 1]);
    }
  }
  /* A character with no token of its own (U+10348, 4 bytes) falls back to its bytes; one that has a
   * token (é) does not. */
  static const uint8_t gothic[] = {0xF0, 0x90, 0x8D, 0x88};
  if (LMF_CHECK_OK(lmf_vocab_bpe_encode(v, gothic, 4, ids, 64, &n))) LMF_CHECK_EQ_INT(n, 4);
  static const uint8_t e_acute[] = {0xC3, 0xA9};
  int32_t want = -1;
  LMF_CHECK_OK(lmf_vocab_find(v, e_acute, 2, &want));
  if (LMF_CHECK(want >= 0) && LMF_CHECK_OK(lmf_vocab_bpe_encode(v, e_acute, 2, ids, 64, &n)) &&
      LMF_CHECK_EQ_INT(n, 1))
    LMF_CHECK_EQ_INT(ids[0], want);
  /* Counting only. */
  n = -1;
  if (LMF_CHECK_OK(lmf_vocab_bpe_encode(v, bad_utf8, 5, NULL, 0, &n))) LMF_CHECK_EQ_INT(n, 4);
  lmf_vocab_destroy(v);

  /* A metaspace vocabulary without byte-fallback tokens: a character it lacks is an error. */
  static const char json[] =
      "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"\\u2581\": 0, \"a\": 1, \"\\u2581a\": 2},"
      " \"merges\": [\"\\u2581 a\"]}, \"pre_tokenizer\": {\"type\": \"Metaspace\"}}";
  lmf_vocab_t *m = NULL;
  if (LMF_CHECK_OK(lmf_vocab_parse_json(&m, json, sizeof json - 1))) {
    if (LMF_CHECK_OK(lmf_vocab_bpe_encode(m, (const uint8_t *)" a a", 4, ids, 64, &n)) && LMF_CHECK_EQ_INT(n, 2))
      LMF_CHECK(ids[0] == 2 && ids[1] == 2);
    LMF_CHECK_FAIL(lmf_vocab_bpe_encode(m, (const uint8_t *)" ab", 3, ids, 64, &n), LMF_ERR_INVALID_ARGUMENT,
                   "bytes[2] = 0x62");
    lmf_vocab_destroy(m);
  }
}

void test_vocab_bpe_bad_input(void) {
  static const char *const names[] = {"a", "b", "ab"};
  static const char *const merges[][2] = {{"a", "b"}};
  lmf_vocab_t *v = small_vocab(names, 3, merges, 1, NULL);
  if (!v) return;
  const uint8_t *s = (const uint8_t *)"abba";
  int32_t ids[8];
  int64_t n = 77;
  for (int i = 0; i < 8; ++i) ids[i] = -99;
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(NULL, s, 4, ids, 8, &n), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, 4, ids, 8, NULL), LMF_ERR_NULL_POINTER, "num_ids");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, NULL, 4, ids, 8, &n), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, -1, ids, 8, &n), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, (int64_t)1 << 31, ids, 8, &n), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, 4, ids, -1, &n), LMF_ERR_INVALID_SIZE, "capacity");
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, 4, NULL, 8, &n), LMF_ERR_NULL_POINTER, "ids");
  /* "abba" -> ab b a: 3 ids; capacity 2 is too small and writes nothing. */
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, s, 4, ids, 2, &n), LMF_ERR_INVALID_SIZE, "3 ids");
  /* ids overlapping the input bytes. */
  uint8_t mem[64];
  memcpy(mem, "abab", 4);
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, mem, 4, (int32_t *)(void *)(mem + 0), 4, &n), LMF_ERR_OVERLAP, "overlap");
  /* A byte with no token. */
  LMF_CHECK_FAIL(lmf_vocab_bpe_encode(v, (const uint8_t *)"abc", 3, ids, 8, &n), LMF_ERR_INVALID_ARGUMENT,
                 "bytes[2] = 0x63");
  LMF_CHECK_EQ_INT(n, 77);
  for (int i = 0; i < 8; ++i) LMF_CHECK_EQ_INT(ids[i], -99);
  /* Valid edge cases. */
  LMF_CHECK_OK(lmf_vocab_bpe_encode(v, NULL, 0, NULL, 0, &n));
  LMF_CHECK_EQ_INT(n, 0);
  if (LMF_CHECK_OK(lmf_vocab_bpe_encode(v, s, 4, ids, 3, &n))) {
    LMF_CHECK_EQ_INT(n, 3);
    LMF_CHECK(ids[0] == 2 && ids[1] == 1 && ids[2] == 0 && ids[3] == -99);
  }
  lmf_vocab_destroy(v);
}

/* The first call builds the merge table; threads racing on a fresh vocabulary agree. */
typedef struct race_arg {
  const lmf_vocab_t *v;
  const uint8_t *s;
  int64_t len;
  int32_t ids[256];
  int64_t n;
  lmf_status_t st;
} race_arg;

static void *race_main(void *p) {
  race_arg *r = (race_arg *)p;
  r->st = lmf_vocab_bpe_encode(r->v, r->s, r->len, r->ids, 256, &r->n);
  return NULL;
}

void test_vocab_bpe_concurrent_first_use(void) {
  enum { T = 4 };
  for (int round = 0; round < 2; ++round) {
    lmf_vocab_t *v = dt_load_vocab(round ? "gpt-4o" : "mistral-7b");
    if (!v) return;
    static const char text[] = " Zero-shot tokenizer transfer, dynamic tokenization: Ünïcödé and 漢字 too.";
    race_arg args[T];
    pthread_t th[T];
    for (int t = 0; t < T; ++t) {
      memset(&args[t], 0, sizeof args[t]);
      args[t].v = v;
      args[t].s = (const uint8_t *)text;
      args[t].len = (int64_t)sizeof text - 1;
      LMF_CHECK_EQ_INT(pthread_create(&th[t], NULL, race_main, &args[t]), 0);
    }
    for (int t = 0; t < T; ++t) pthread_join(th[t], NULL);
    for (int t = 0; t < T; ++t) {
      LMF_CHECK_OK(args[t].st);
      LMF_CHECK_EQ_INT(args[t].n, args[0].n);
      LMF_CHECK_BYTES_EQ(args[t].ids, args[0].ids, sizeof(int32_t) * (size_t)args[0].n, "thread ids");
    }
    lmf_vocab_destroy(v);
  }
}
