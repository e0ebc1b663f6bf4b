/* Every bad-input path of the dyntok API: each call returns its status, lmf_last_error() names the
 * argument, *out keeps the caller's value, and the inputs keep their bytes. The base call, which the
 * cases break one field at a time, merges a small valid batch in PRETOKENS mode. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

enum { V = 5, B = 2, N = 5 };

typedef struct fixture {
  lmf_context_t *ctx;
  lmf_vocab_t *vocab; /* ids 0 "Ġa", 1 "b", 2 unused, 3 "c", 4 "<s>" (special) */
  int64_t offsets[B + 1];
  int32_t ids[N];
  int32_t words[N];
  lmf_dyntok_batch_t batch;
  lmf_dyntok_config_t cfg;
  lt_snapshot snap;
} fixture;

static int fx_init(fixture *fx) {
  memset(fx, 0, sizeof *fx);
  lt_snap_init(&fx->snap);
  fx->ctx = lt_context(LMF_BACKEND_CPU, 0);
  if (!fx->ctx) return 0;
  static const uint8_t bytes[] = {' ', 'a', 'b', 'c', '<', 's', '>'};
  static const int64_t offs[] = {0, 2, 3, 3, 4, 7};
  static const uint8_t flags[] = {0, 0, LMF_TOKEN_UNUSED, 0, LMF_TOKEN_SPECIAL};
  lmf_vocab_arrays_t a;
  if (!LMF_CHECK_OK(lmf_vocab_arrays_init(&a, sizeof a))) return 0;
  a.num_tokens = V;
  a.bytes = bytes;
  a.offsets = offs;
  a.flags = flags;
  if (!LMF_CHECK_OK(lmf_vocab_create(&fx->vocab, &a))) return 0;
  static const int64_t o[B + 1] = {0, 3, 5};
  static const int32_t ids[N] = {4, 0, 1, 0, 1};
  static const int32_t words[N] = {0, 1, 1, 2, 2};
  memcpy(fx->offsets, o, sizeof o);
  memcpy(fx->ids, ids, sizeof ids);
  memcpy(fx->words, words, sizeof words);
  if (!LMF_CHECK_OK(lmf_dyntok_batch_init(&fx->batch, sizeof fx->batch))) return 0;
  fx->batch.num_seqs = B;
  fx->batch.offsets = fx->offsets;
  fx->batch.ids = fx->ids;
  if (!LMF_CHECK_OK(lmf_dyntok_config_init(&fx->cfg, sizeof fx->cfg))) return 0;
  fx->cfg.max_merges = 10;
  /* The base call works: (Ġa, b) twice. */
  lmf_dyntok_result_t *r = NULL;
  if (!LMF_CHECK_OK(lmf_dyntok_merge(fx->ctx, fx->vocab, &fx->batch, &fx->cfg, &r))) return 0;
  int32_t nm = -1;
  int64_t nt = -1;
  LMF_CHECK_OK(lmf_dyntok_result_sizes(r, NULL, &nt, &nm, NULL));
  lmf_dyntok_result_destroy(r);
  if (!LMF_CHECK_EQ_INT(nm, 1) || !LMF_CHECK_EQ_INT(nt, 3)) return 0;
  lt_snap_add(&fx->snap, fx->offsets, sizeof fx->offsets);
  lt_snap_add(&fx->snap, fx->ids, sizeof fx->ids);
  lt_snap_add(&fx->snap, fx->words, sizeof fx->words);
  return 1;
}

static void fx_free(fixture *fx) {
  lt_snap_free(&fx->snap);
  lmf_vocab_destroy(fx->vocab);
  lmf_context_destroy(fx->ctx);
}

/* Calls lmf_dyntok_merge with the fixture's (possibly broken) arguments; checks the status, the message,
 * that *out keeps its value and that the inputs are unchanged. */
static void expect_fail(fixture *fx, lmf_context_t *ctx, const lmf_vocab_t *vocab,
                        const lmf_dyntok_batch_t *batch, const lmf_dyntok_config_t *cfg, lmf_status_t want,
                        const char *needle, const char *what) {
  static int sentinel;
  lmf_dyntok_result_t *out = (lmf_dyntok_result_t *)(void *)&sentinel;
  lmf_clear_error();
  lmf_status_t st = lmf_dyntok_merge(ctx, vocab, batch, cfg, &out);
  if (!LMF_CHECK_MSG(st == want, "%s: status %s, expected %s (message: %s)", what, lmf_status_string(st),
                     lmf_status_string(want), lmf_last_error()))
    return;
  LMF_CHECK_MSG(lmf_last_error()[0] != '\0', "%s: no message", what);
  if (needle)
    LMF_CHECK_MSG(strstr(lmf_last_error(), needle) != NULL, "%s: message \"%s\" does not mention \"%s\"",
                  what, lmf_last_error(), needle);
  LMF_CHECK_MSG(out == (lmf_dyntok_result_t *)(void *)&sentinel, "%s: *out was written", what);
  LT_SNAP_CHECK(&fx->snap, what);
}

void test_dyntok_bad_null_pointers(void) {
  fixture fx;
  if (fx_init(&fx)) {
    LMF_CHECK_FAIL(lmf_dyntok_merge(fx.ctx, fx.vocab, &fx.batch, &fx.cfg, NULL), LMF_ERR_NULL_POINTER,
                   "out");
    expect_fail(&fx, NULL, fx.vocab, &fx.batch, &fx.cfg, LMF_ERR_NULL_POINTER, "ctx", "ctx NULL");
    expect_fail(&fx, fx.ctx, NULL, &fx.batch, &fx.cfg, LMF_ERR_NULL_POINTER, "vocab", "vocab NULL");
    expect_fail(&fx, fx.ctx, fx.vocab, NULL, &fx.cfg, LMF_ERR_NULL_POINTER, "batch", "batch NULL");
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, NULL, LMF_ERR_NULL_POINTER, "config", "config NULL");
    lmf_dyntok_batch_t b = fx.batch;
    b.offsets = NULL;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_NULL_POINTER, "offsets", "offsets NULL");
    b = fx.batch;
    b.ids = NULL;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_NULL_POINTER, "ids", "ids NULL");
    /* WORDS needs word ids. */
    lmf_dyntok_config_t c = fx.cfg;
    c.boundary = LMF_DYNTOK_WORDS;
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_NULL_POINTER, "word_ids", "WORDS without word_ids");
    /* ... which the other modes ignore, and WORDS takes once given. */
    lmf_dyntok_result_t *r = NULL;
    b = fx.batch;
    b.word_ids = fx.words;
    if (LMF_CHECK_OK(lmf_dyntok_merge(fx.ctx, fx.vocab, &b, &c, &r))) {
      int32_t nm = -1;
      lmf_dyntok_result_sizes(r, NULL, NULL, &nm, NULL);
      LMF_CHECK_EQ_INT(nm, 1);
    }
    lmf_dyntok_result_destroy(r);
  }
  fx_free(&fx);
}

void test_dyntok_bad_ids(void) {
  fixture fx;
  if (fx_init(&fx)) {
    int32_t ids[N];
    lmf_dyntok_batch_t b = fx.batch;
    b.ids = ids;
    static const int32_t bad[] = {-1, V, INT32_MAX, INT32_MIN, 2 /* unused */};
    static const char *const needle[] = {"ids[3]", "ids[3]", "ids[3]", "ids[3]", "unused"};
    for (int i = 0; i < 5; ++i) {
      memcpy(ids, fx.ids, sizeof ids);
      ids[3] = bad[i];
      char what[64];
      snprintf(what, sizeof what, "ids[3] = %d", bad[i]);
      expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_ARGUMENT, needle[i], what);
    }
  }
  fx_free(&fx);
}

void test_dyntok_bad_offsets_and_sizes(void) {
  fixture fx;
  if (fx_init(&fx)) {
    int64_t o[B + 1];
    lmf_dyntok_batch_t b = fx.batch;
    b.offsets = o;
    /* Not starting at 0. */
    o[0] = 1, o[1] = 3, o[2] = 5;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_ARGUMENT, "offsets[0]", "offsets[0] = 1");
    o[0] = -1;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_ARGUMENT, "offsets[0]", "offsets[0] = -1");
    /* Not monotone. */
    o[0] = 0, o[1] = 3, o[2] = 2;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_ARGUMENT, "monotone", "offsets decrease");
    o[0] = 0, o[1] = -1, o[2] = 5;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_ARGUMENT, "monotone", "offsets[1] < 0");
    /* More tokens than positions can index (checked before ids is read). */
    o[0] = 0, o[1] = 3, o[2] = INT64_MAX;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_SIZE, "offsets[2]", "huge batch");
    o[2] = (int64_t)1 << 29; /* one more than the largest batch */
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_SIZE, "at most", "2^29 tokens");
    /* Empty batch. */
    b = fx.batch;
    b.num_seqs = 0;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_SIZE, "num_seqs", "num_seqs = 0");
    b.num_seqs = -3;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_SIZE, "num_seqs", "num_seqs = -3");
    b.num_seqs = INT64_MAX;
    expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_INVALID_SIZE, "num_seqs", "num_seqs huge");
  }
  fx_free(&fx);
}

void test_dyntok_bad_config(void) {
  fixture fx;
  if (fx_init(&fx)) {
    lmf_dyntok_config_t c = fx.cfg;
    c.max_merges = -1;
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "max_merges", "m = -1");
    c.max_merges = INT32_MIN;
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "max_merges", "m = INT32_MIN");
    static const int32_t modes[] = {3, -1, 100};
    for (int i = 0; i < 3; ++i) {
      c = fx.cfg;
      c.boundary = modes[i];
      char what[64];
      snprintf(what, sizeof what, "boundary = %d", modes[i]);
      expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "boundary", what);
    }
  }
  fx_free(&fx);
}

void test_dyntok_bad_pattern(void) {
  fixture fx;
  if (fx_init(&fx)) {
    lmf_dyntok_config_t c = fx.cfg;
    /* PCRE2's own error text and the offset. */
    c.pattern = "(ab";
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "missing closing parenthesis",
                "pattern (ab");
    LMF_CHECK_MSG(strstr(lmf_last_error(), "offset 3") != NULL, "message: %s", lmf_last_error());
    LMF_CHECK_MSG(strstr(lmf_last_error(), "pattern") != NULL, "message: %s", lmf_last_error());
    c.pattern = "ab[c-";
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "offset 5", "pattern ab[c-");
    LMF_CHECK_MSG(strstr(lmf_last_error(), "missing terminating ]") != NULL, "message: %s", lmf_last_error());
    c.pattern = "\\p{NoSuchProperty}";
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "offset", "unknown property");
    /* Invalid UTF-8 in the pattern itself (UTF mode). */
    c.pattern = "a\xC3(";
    expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_INVALID_ARGUMENT, "UTF-8", "pattern not UTF-8");
  }
  fx_free(&fx);
}

void test_dyntok_bad_struct_sizes(void) {
  fixture fx;
  if (fx_init(&fx)) {
    for (int i = 0; i < 3; ++i) {
      lmf_dyntok_batch_t b = fx.batch;
      b.struct_size = i == 0 ? sizeof b - 1 : i == 1 ? sizeof b + 8 : 0;
      expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_STRUCT_SIZE, "struct_size", "batch struct_size");
      lmf_dyntok_config_t c = fx.cfg;
      c.struct_size = i == 0 ? sizeof c - 1 : i == 1 ? sizeof c + 8 : 0;
      expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_STRUCT_SIZE, "struct_size",
                  "config struct_size");
    }
    static const uint32_t versions[] = {0, LMF_DYNTOK_BATCH_VERSION + 1};
    for (int i = 0; i < 2; ++i) {
      lmf_dyntok_batch_t b = fx.batch;
      b.version = versions[i];
      expect_fail(&fx, fx.ctx, fx.vocab, &b, &fx.cfg, LMF_ERR_STRUCT_SIZE, "version", "batch version");
      lmf_dyntok_config_t c = fx.cfg;
      c.version = i == 0 ? 0 : LMF_DYNTOK_CONFIG_VERSION + 1;
      expect_fail(&fx, fx.ctx, fx.vocab, &fx.batch, &c, LMF_ERR_STRUCT_SIZE, "version", "config version");
    }
    /* The init functions: NULL, and a size that is not this library's (nothing written). */
    LMF_CHECK_FAIL(lmf_dyntok_config_init(NULL, sizeof(lmf_dyntok_config_t)), LMF_ERR_NULL_POINTER, NULL);
    LMF_CHECK_FAIL(lmf_dyntok_batch_init(NULL, sizeof(lmf_dyntok_batch_t)), LMF_ERR_NULL_POINTER, NULL);
    lmf_dyntok_config_t c;
    lmf_dyntok_batch_t b;
    memset(&c, 0xAB, sizeof c);
    memset(&b, 0xAB, sizeof b);
    lt_snapshot s;
    lt_snap_init(&s);
    lt_snap_add(&s, &c, sizeof c);
    lt_snap_add(&s, &b, sizeof b);
    LMF_CHECK_FAIL(lmf_dyntok_config_init(&c, sizeof c - 1), LMF_ERR_STRUCT_SIZE, "struct_size");
    LMF_CHECK_FAIL(lmf_dyntok_config_init(&c, sizeof c + 1), LMF_ERR_STRUCT_SIZE, "struct_size");
    LMF_CHECK_FAIL(lmf_dyntok_batch_init(&b, sizeof b - 1), LMF_ERR_STRUCT_SIZE, "struct_size");
    LMF_CHECK_FAIL(lmf_dyntok_batch_init(&b, 0), LMF_ERR_STRUCT_SIZE, "struct_size");
    LT_SNAP_CHECK(&s, "init with a bad size");
    lt_snap_free(&s);
    /* And the good ones give the documented defaults, like the macros. */
    const lmf_dyntok_config_t cm = LMF_DYNTOK_CONFIG_INIT;
    const lmf_dyntok_batch_t bm = LMF_DYNTOK_BATCH_INIT;
    if (LMF_CHECK_OK(lmf_dyntok_config_init(&c, sizeof c))) {
      LMF_CHECK_EQ_INT(c.struct_size, sizeof c);
      LMF_CHECK_EQ_INT(c.version, LMF_DYNTOK_CONFIG_VERSION);
      LMF_CHECK_EQ_INT(c.max_merges, 200);
      LMF_CHECK_EQ_INT(c.boundary, LMF_DYNTOK_PRETOKENS);
      LMF_CHECK(c.pattern == NULL);
      LMF_CHECK(cm.struct_size == c.struct_size && cm.max_merges == c.max_merges && cm.pattern == NULL);
    }
    if (LMF_CHECK_OK(lmf_dyntok_batch_init(&b, sizeof b))) {
      LMF_CHECK_EQ_INT(b.struct_size, sizeof b);
      LMF_CHECK_EQ_INT(b.version, LMF_DYNTOK_BATCH_VERSION);
      LMF_CHECK(b.num_seqs == 0 && b.offsets == NULL && b.ids == NULL && b.word_ids == NULL);
      LMF_CHECK(bm.struct_size == b.struct_size && bm.num_seqs == 0);
    }
  }
  fx_free(&fx);
}

void test_dyntok_bad_result_access(void) {
  fixture fx;
  if (fx_init(&fx)) {
    int64_t ns = -7, nt = -7;
    int32_t nm = -7, nn = -7;
    LMF_CHECK_FAIL(lmf_dyntok_result_sizes(NULL, &ns, &nt, &nm, &nn), LMF_ERR_NULL_POINTER, "result");
    LMF_CHECK(ns == -7 && nt == -7 && nm == -7 && nn == -7);
    const void *p = (const void *)&ns;
    int64_t count = -7;
    int32_t dtype = -7;
    LMF_CHECK_FAIL(lmf_dyntok_result_field(NULL, LMF_DYNTOK_FIELD_IDS, &p, &count, &dtype),
                   LMF_ERR_NULL_POINTER, "result");
    lmf_dyntok_result_t *r = NULL;
    if (LMF_CHECK_OK(lmf_dyntok_merge(fx.ctx, fx.vocab, &fx.batch, &fx.cfg, &r))) {
      static const int32_t bad[] = {-1, 11, 1000, INT32_MIN};
      for (int i = 0; i < 4; ++i) {
        LMF_CHECK_FAIL(lmf_dyntok_result_field(r, bad[i], &p, &count, &dtype), LMF_ERR_INVALID_ARGUMENT,
                       "field");
        LMF_CHECK(p == (const void *)&ns && count == -7 && dtype == -7);
      }
      /* Outputs may be NULL individually. */
      LMF_CHECK_OK(lmf_dyntok_result_sizes(r, NULL, NULL, NULL, NULL));
      LMF_CHECK_OK(lmf_dyntok_result_field(r, LMF_DYNTOK_FIELD_IDS, NULL, NULL, NULL));
      LMF_CHECK_OK(lmf_dyntok_result_field(r, LMF_DYNTOK_FIELD_NEW_BYTES, NULL, &count, NULL));
      LMF_CHECK_EQ_INT(count, 3); /* " ab" */
    }
    lmf_dyntok_result_destroy(r);
    lmf_dyntok_result_destroy(NULL); /* a no-op */
  }
  fx_free(&fx);
}
