/* lmf_embed_cache_*: hits and misses, LRU eviction order, pinning by the current batch, replacement,
 * capacity 0, clear, statistics, rows with e_out, and every bad input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/hypernet.h"

enum { E = 5 };

static lmf_embed_cache_t *make(int64_t capacity, int with_out) {
  lmf_embed_cache_config_t c;
  if (!LMF_CHECK_OK(lmf_embed_cache_config_init(&c, sizeof c))) return NULL;
  LMF_CHECK_EQ_INT(c.capacity, 5000);
  c.n_embd = E;
  c.capacity = capacity;
  c.with_out = with_out;
  lmf_embed_cache_t *cache = NULL;
  LMF_CHECK_OK(lmf_embed_cache_create(&cache, &c));
  return cache;
}

/* A row derived from the key: value k + i / 8. */
static void row_of(int k, float *e) {
  for (int i = 0; i < E; ++i) e[i] = (float)k + (float)i / 8.0f;
}

static int put(lmf_embed_cache_t *c, const char *key, int k) {
  float e[E], o[E];
  row_of(k, e);
  row_of(-k, o);
  int32_t stored = -1;
  lmf_embed_cache_config_t cfg = LMF_EMBED_CACHE_CONFIG_INIT;
  lmf_embed_cache_get_config(c, &cfg);
  if (!LMF_CHECK_OK(lmf_embed_cache_insert(c, (const uint8_t *)key, (int64_t)strlen(key), e,
                                           cfg.with_out ? o : NULL, (float)k * 0.5f, &stored)))
    return -1;
  return stored;
}

static int has(const lmf_embed_cache_t *c, const char *key) {
  int32_t p = -1;
  LMF_CHECK_OK(lmf_embed_cache_contains(c, (const uint8_t *)key, (int64_t)strlen(key), &p));
  return p;
}

/* Looks key up; 1 on a hit whose row is that of k. */
static int get(lmf_embed_cache_t *c, const char *key, int k) {
  float e[E], want[E], bias = -1.0f;
  int32_t hit = -1;
  for (int i = 0; i < E; ++i) e[i] = -99.0f;
  if (!LMF_CHECK_OK(lmf_embed_cache_lookup(c, (const uint8_t *)key, (int64_t)strlen(key), e, NULL, &bias, &hit)))
    return 0;
  if (!hit) {
    for (int i = 0; i < E; ++i) LMF_CHECK(e[i] == -99.0f); /* a miss writes nothing */
    LMF_CHECK(bias == -1.0f);
    return 0;
  }
  row_of(k, want);
  LMF_CHECK_BYTES_EQ(e, want, sizeof e, key);
  LMF_CHECK(bias == (float)k * 0.5f);
  return 1;
}

static void stats(const lmf_embed_cache_t *c, int64_t rows, int64_t pinned, int64_t hits, int64_t misses,
                  int64_t evictions, int64_t dropped) {
  int64_t r, p, h, m, e, d;
  if (!LMF_CHECK_OK(lmf_embed_cache_stats(c, &r, &p, &h, &m, &e, &d))) return;
  LMF_CHECK_EQ_INT(r, rows);
  LMF_CHECK_EQ_INT(p, pinned);
  LMF_CHECK_EQ_INT(h, hits);
  LMF_CHECK_EQ_INT(m, misses);
  LMF_CHECK_EQ_INT(e, evictions);
  LMF_CHECK_EQ_INT(d, dropped);
}

void test_embed_cache_hits_misses(void) {
  lmf_embed_cache_t *c = make(4, 0);
  if (!c) return;
  LMF_CHECK_EQ_INT(get(c, "alpha", 1), 0);
  LMF_CHECK_EQ_INT(put(c, "alpha", 1), 1);
  LMF_CHECK_EQ_INT(put(c, "beta", 2), 1);
  LMF_CHECK_EQ_INT(get(c, "alpha", 1), 1);
  LMF_CHECK_EQ_INT(get(c, "beta", 2), 1);
  LMF_CHECK_EQ_INT(get(c, "gamma", 3), 0);
  /* Keys are bytes: a prefix, or the same bytes with one more, is another key. */
  LMF_CHECK_EQ_INT(get(c, "alph", 1), 0);
  LMF_CHECK_EQ_INT(get(c, "alphaa", 1), 0);
  static const uint8_t z[3] = {'a', 0, 'b'};
  float e[E];
  row_of(7, e);
  int32_t hit = 0;
  LMF_CHECK_OK(lmf_embed_cache_insert(c, z, 3, e, NULL, 0.0f, NULL));
  LMF_CHECK_OK(lmf_embed_cache_lookup(c, z, 3, NULL, NULL, NULL, &hit)); /* outputs optional */
  LMF_CHECK_EQ_INT(hit, 1);
  LMF_CHECK_OK(lmf_embed_cache_lookup(c, z, 2, NULL, NULL, NULL, &hit));
  LMF_CHECK_EQ_INT(hit, 0);
  /* Replacing a key's row. */
  LMF_CHECK_EQ_INT(put(c, "alpha", 11), 1);
  LMF_CHECK_EQ_INT(get(c, "alpha", 11), 1);
  stats(c, 3, 3, 4, 5, 0, 0);
  lmf_embed_cache_destroy(c);
  lmf_embed_cache_destroy(NULL);
}

void test_embed_cache_lru_order(void) {
  lmf_embed_cache_t *c = make(3, 0);
  if (!c) return;
  /* Each batch pins what it touches; a new batch unpins everything. */
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  put(c, "a", 1);
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  put(c, "b", 2);
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  put(c, "c", 3);
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  /* Recency now c > b > a; touching a makes it the most recent: b is the least recent. */
  LMF_CHECK_EQ_INT(get(c, "a", 1), 1);
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  LMF_CHECK_EQ_INT(put(c, "d", 4), 1); /* evicts b */
  LMF_CHECK(has(c, "a") && !has(c, "b") && has(c, "c") && has(c, "d"));
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  LMF_CHECK_EQ_INT(put(c, "e", 5), 1); /* evicts c */
  LMF_CHECK(has(c, "a") && !has(c, "c") && has(c, "d") && has(c, "e"));
  /* contains() changes no recency: a is still the least recent. */
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  LMF_CHECK_EQ_INT(put(c, "f", 6), 1); /* evicts a */
  LMF_CHECK(!has(c, "a") && has(c, "d") && has(c, "e") && has(c, "f"));
  stats(c, 3, 1, 1, 0, 3, 0);
  lmf_embed_cache_destroy(c);
}

void test_embed_cache_pinning(void) {
  lmf_embed_cache_t *c = make(3, 0);
  if (!c) return;
  put(c, "old1", 1);
  put(c, "old2", 2);
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  /* This batch: a hit on old1, then new rows. old2 is the only unpinned row. */
  LMF_CHECK_EQ_INT(get(c, "old1", 1), 1);
  LMF_CHECK_EQ_INT(put(c, "n1", 3), 1); /* room left: no eviction */
  stats(c, 3, 2, 1, 0, 0, 0);
  LMF_CHECK_EQ_INT(put(c, "n2", 4), 1); /* evicts old2, the least recent unpinned row */
  LMF_CHECK(has(c, "old1") && !has(c, "old2") && has(c, "n1") && has(c, "n2"));
  /* Every row is pinned: the next new row is not stored, none of the batch's rows is lost. */
  LMF_CHECK_EQ_INT(put(c, "n3", 5), 0);
  LMF_CHECK(has(c, "old1") && has(c, "n1") && has(c, "n2") && !has(c, "n3"));
  /* A pinned key can still be replaced. */
  LMF_CHECK_EQ_INT(put(c, "n1", 33), 1);
  LMF_CHECK_EQ_INT(get(c, "n1", 33), 1);
  stats(c, 3, 3, 2, 0, 1, 1);
  /* The next batch unpins: the least recent of the old batch goes first (old1, then n2). */
  LMF_CHECK_OK(lmf_embed_cache_begin_batch(c));
  stats(c, 3, 0, 2, 0, 1, 1);
  LMF_CHECK_EQ_INT(put(c, "m1", 6), 1);
  LMF_CHECK(!has(c, "old1") && has(c, "n2") && has(c, "n1"));
  LMF_CHECK_EQ_INT(put(c, "m2", 7), 1);
  LMF_CHECK(!has(c, "n2") && has(c, "n1") && has(c, "m1") && has(c, "m2"));
  /* Clear: no rows, statistics kept, the cache works again. */
  LMF_CHECK_OK(lmf_embed_cache_clear(c));
  LMF_CHECK(!has(c, "n1") && !has(c, "m1"));
  stats(c, 0, 0, 2, 0, 3, 1);
  LMF_CHECK_EQ_INT(put(c, "x", 8), 1);
  LMF_CHECK_EQ_INT(get(c, "x", 8), 1);
  LMF_CHECK_EQ_INT(put(c, "y", 9), 1);
  LMF_CHECK_EQ_INT(put(c, "z", 10), 1);
  LMF_CHECK_EQ_INT(put(c, "w", 11), 0); /* all pinned by the current batch */
  lmf_embed_cache_destroy(c);
}

void test_embed_cache_capacity_zero_and_growth(void) {
  lmf_embed_cache_t *c = make(0, 0);
  if (c) {
    LMF_CHECK_EQ_INT(put(c, "a", 1), 0);
    LMF_CHECK_EQ_INT(get(c, "a", 1), 0);
    LMF_CHECK(!has(c, "a"));
    stats(c, 0, 0, 0, 1, 0, 1);
    lmf_embed_cache_destroy(c);
  }
  /* Many rows (the arrays grow, the table rehashes): everything stays findable; then LRU over
   * batches of 100 keeps the last 1000 keys. */
  c = make(1000, 1);
  if (!c) return;
  char key[32];
  for (int k = 0; k < 3000; ++k) {
    if (k % 100 == 0) lmf_embed_cache_begin_batch(c);
    snprintf(key, sizeof key, "tok%d", k);
    if (!LMF_CHECK_EQ_INT(put(c, key, k), 1)) break;
  }
  int present = 0;
  for (int k = 0; k < 3000; ++k) {
    snprintf(key, sizeof key, "tok%d", k);
    const int h = has(c, key);
    present += h;
    if (!LMF_CHECK_EQ_INT(h, k >= 2000)) break;
  }
  LMF_CHECK_EQ_INT(present, 1000);
  /* e_out comes back too. */
  float e[E], o[E], bias = 0, we[E], wo[E];
  int32_t hit = 0;
  LMF_CHECK_OK(lmf_embed_cache_lookup(c, (const uint8_t *)"tok2500", 7, e, o, &bias, &hit));
  row_of(2500, we);
  row_of(-2500, wo);
  if (LMF_CHECK_EQ_INT(hit, 1)) {
    LMF_CHECK_BYTES_EQ(e, we, sizeof e, "e_in");
    LMF_CHECK_BYTES_EQ(o, wo, sizeof o, "e_out");
    LMF_CHECK(bias == 1250.0f);
  }
  stats(c, 1000, 101, 1, 0, 2000, 0);
  lmf_embed_cache_config_t cfg;
  lmf_embed_cache_config_init(&cfg, sizeof cfg);
  if (LMF_CHECK_OK(lmf_embed_cache_get_config(c, &cfg)))
    LMF_CHECK(cfg.n_embd == E && cfg.capacity == 1000 && cfg.with_out == 1);
  lmf_embed_cache_destroy(c);
}

void test_embed_cache_bad_input(void) {
  lmf_embed_cache_config_t cfg = LMF_EMBED_CACHE_CONFIG_INIT, bad;
  cfg.n_embd = E;
  cfg.capacity = 4;
  lmf_embed_cache_t *c = NULL, *sentinel = (lmf_embed_cache_t *)(uintptr_t)0x1234;
  lmf_embed_cache_t *out = sentinel;
  LMF_CHECK_FAIL(lmf_embed_cache_create(NULL, &cfg), LMF_ERR_NULL_POINTER, "out");
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, NULL), LMF_ERR_NULL_POINTER, "config");
  bad = cfg;
  bad.struct_size = 4;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_STRUCT_SIZE, "struct_size");
  bad = cfg;
  bad.version = 7;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_STRUCT_SIZE, "version");
  bad = cfg;
  bad.n_embd = 0;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_INVALID_SIZE, "n_embd");
  bad = cfg;
  bad.capacity = -1;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_INVALID_SIZE, "capacity");
  bad.capacity = LMF_EMBED_CACHE_MAX_ROWS + 1;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_INVALID_SIZE, "capacity");
  bad = cfg;
  bad.with_out = 2;
  LMF_CHECK_FAIL(lmf_embed_cache_create(&out, &bad), LMF_ERR_INVALID_ARGUMENT, "with_out");
  LMF_CHECK(out == sentinel);
  LMF_CHECK_FAIL(lmf_embed_cache_config_init(NULL, sizeof cfg), LMF_ERR_NULL_POINTER, NULL);
  LMF_CHECK_FAIL(lmf_embed_cache_config_init(&bad, 3), LMF_ERR_STRUCT_SIZE, "struct_size");
  if (!LMF_CHECK_OK(lmf_embed_cache_create(&c, &cfg))) return;
  float e[E], o[E], bias = 3.0f;
  row_of(1, e);
  int32_t hit = 5, stored = 5, present = 5;
  const uint8_t *k = (const uint8_t *)"key";
  LMF_CHECK_FAIL(lmf_embed_cache_insert(NULL, k, 3, e, NULL, 0, &stored), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_insert(c, NULL, 3, e, NULL, 0, &stored), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_embed_cache_insert(c, k, 0, e, NULL, 0, &stored), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_embed_cache_insert(c, k, 3, NULL, NULL, 0, &stored), LMF_ERR_NULL_POINTER, "e_in");
  LMF_CHECK_FAIL(lmf_embed_cache_insert(c, k, 3, e, o, 0, &stored), LMF_ERR_INVALID_ARGUMENT, "e_out");
  LMF_CHECK_EQ_INT(stored, 5);
  LMF_CHECK_FAIL(lmf_embed_cache_lookup(NULL, k, 3, e, NULL, NULL, &hit), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_lookup(c, NULL, 3, e, NULL, NULL, &hit), LMF_ERR_NULL_POINTER, "bytes");
  LMF_CHECK_FAIL(lmf_embed_cache_lookup(c, k, -2, e, NULL, NULL, &hit), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_embed_cache_lookup(c, k, 3, e, NULL, NULL, NULL), LMF_ERR_NULL_POINTER, "hit");
  LMF_CHECK_FAIL(lmf_embed_cache_lookup(c, k, 3, e, o, &bias, &hit), LMF_ERR_INVALID_ARGUMENT, "e_out");
  LMF_CHECK(hit == 5 && bias == 3.0f);
  LMF_CHECK_FAIL(lmf_embed_cache_contains(NULL, k, 3, &present), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_contains(c, k, 0, &present), LMF_ERR_INVALID_SIZE, "len");
  LMF_CHECK_FAIL(lmf_embed_cache_contains(c, k, 3, NULL), LMF_ERR_NULL_POINTER, "present");
  LMF_CHECK_FAIL(lmf_embed_cache_begin_batch(NULL), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_clear(NULL), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_stats(NULL, NULL, NULL, NULL, NULL, NULL, NULL), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_get_config(NULL, &cfg), LMF_ERR_NULL_POINTER, "cache");
  LMF_CHECK_FAIL(lmf_embed_cache_get_config(c, NULL), LMF_ERR_NULL_POINTER, "config");
  /* No failed call changed the cache. */
  stats(c, 0, 0, 0, 0, 0, 0);
  lmf_embed_cache_destroy(c);
  /* with_out: e_out is required. */
  lmf_embed_cache_t *w = make(2, 1);
  if (w) {
    LMF_CHECK_FAIL(lmf_embed_cache_insert(w, k, 3, e, NULL, 0, &stored), LMF_ERR_NULL_POINTER, "e_out");
    stats(w, 0, 0, 0, 0, 0, 0);
    lmf_embed_cache_destroy(w);
  }
}
