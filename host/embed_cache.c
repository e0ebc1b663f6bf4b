/* lmf_embed_cache_*: predicted embedding rows keyed by token bytes, LRU with per-batch pinning
 * (include/lmfuse/hypernet.h).
 *
 * Layout: entries live in arrays indexed 0 .. allocated-1 (grown by doubling up to the capacity), each
 * with its key (a malloc'd copy), its hash, an intrusive doubly linked recency list (head = most
 * recently used) and a hash chain (buckets: a power of two >= 2 x allocated entries, rehashed on
 * growth). Rows are float [allocated][row_floats] (e_in, then e_out with with_out, then the bias).
 *
 * Pinning is an epoch: begin_batch increments cache->epoch, and an entry is pinned iff its epoch equals
 * the cache's. Every pin is also a move to the head of the recency list, so the pinned entries are
 * always a prefix of the list: the tail is unpinned unless every entry is pinned, and eviction is O(1)
 * (the tail, if unpinned). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "lmfuse/hypernet.h"
#include "vocab_internal.h"

typedef struct ce {
  uint8_t *key;
  int64_t len;
  uint64_t hash;
  uint64_t epoch; /* pinned iff == cache->epoch */
  int32_t prev, next; /* recency list; -1 ends */
  int32_t hnext;      /* hash chain; -1 ends */
} ce;

struct lmf_embed_cache {
  int32_t n_embd;
  int32_t with_out;
  int64_t capacity;
  int64_t row_floats;
  ce *e;               /* [alloc] */
  float *rows;         /* [alloc][row_floats] */
  int32_t alloc;       /* entries allocated */
  int32_t used;        /* entries ever handed out (0 .. alloc); the live ones are on the list */
  int32_t count;       /* live entries */
  int32_t *free_list;  /* indices of freed entries (clear), [alloc] */
  int32_t nfree;
  int32_t *bucket;     /* [nbucket] */
  int64_t nbucket;     /* power of two */
  int32_t head, tail;
  uint64_t epoch;
  int64_t pinned;      /* live entries with epoch == cache->epoch */
  int64_t hits, misses, evictions, dropped;
};

lmf_status_t lmf_embed_cache_config_init(lmf_embed_cache_config_t *config, size_t struct_size) {
  const lmf_embed_cache_config_t d = LMF_EMBED_CACHE_CONFIG_INIT;
  return lmf_init_struct(config, struct_size, &d, sizeof d, "lmf_embed_cache_config_init");
}

lmf_status_t lmf_embed_cache_create(lmf_embed_cache_t **out, const lmf_embed_cache_config_t *config) {
  static const char fn[] = "lmf_embed_cache_create";
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: out is NULL", fn);
  lmf_status_t st = lmf_check_struct(config, sizeof(lmf_embed_cache_config_t), sizeof(lmf_embed_cache_config_t),
                                     LMF_EMBED_CACHE_CONFIG_VERSION, "lmf_embed_cache_create: config");
  if (st != LMF_OK) return st;
  if (config->n_embd < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: config->n_embd is %d; must be >= 1", fn, config->n_embd);
  if (config->capacity < 0 || config->capacity > LMF_EMBED_CACHE_MAX_ROWS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: config->capacity is %lld; must be 0 to %lld", fn,
                    (long long)config->capacity, (long long)LMF_EMBED_CACHE_MAX_ROWS);
  if (config->with_out != 0 && config->with_out != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: config->with_out is %d; must be 0 or 1", fn, config->with_out);
  struct lmf_embed_cache *c = (struct lmf_embed_cache *)calloc(1, sizeof *c);
  if (!c) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  c->n_embd = config->n_embd;
  c->with_out = config->with_out;
  c->capacity = config->capacity;
  c->row_floats = (int64_t)config->n_embd * (config->with_out ? 2 : 1) + 1;
  c->head = c->tail = -1;
  c->epoch = 1; /* entries start at epoch 0: unpinned */
  *out = c;
  return LMF_OK;
}

static void free_keys(struct lmf_embed_cache *c) {
  for (int32_t i = c->head; i >= 0; i = c->e[i].next) {
    free(c->e[i].key);
    c->e[i].key = NULL;
  }
}

void lmf_embed_cache_destroy(lmf_embed_cache_t *cache) {
  if (!cache) return;
  free_keys(cache);
  free(cache->e);
  free(cache->rows);
  free(cache->free_list);
  free(cache->bucket);
  free(cache);
}

static lmf_status_t check_cache(const lmf_embed_cache_t *c, const char *fn) {
  if (!c) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: cache is NULL", fn);
  return LMF_OK;
}

static lmf_status_t check_key(const uint8_t *bytes, int64_t len, const char *fn) {
  if (len < 1) return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: len is %lld; keys are >= 1 byte", fn, (long long)len);
  if (!bytes) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: bytes is NULL", fn);
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_begin_batch(lmf_embed_cache_t *cache) {
  lmf_status_t st = check_cache(cache, "lmf_embed_cache_begin_batch");
  if (st != LMF_OK) return st;
  ++cache->epoch;
  cache->pinned = 0;
  return LMF_OK;
}

/* The live entry with this key, or -1. */
static int32_t find(const struct lmf_embed_cache *c, const uint8_t *b, int64_t len, uint64_t h) {
  if (!c->bucket) return -1;
  for (int32_t i = c->bucket[h & (uint64_t)(c->nbucket - 1)]; i >= 0; i = c->e[i].hnext)
    if (c->e[i].hash == h && c->e[i].len == len && memcmp(c->e[i].key, b, (size_t)len) == 0) return i;
  return -1;
}

static void list_unlink(struct lmf_embed_cache *c, int32_t i) {
  ce *x = &c->e[i];
  if (x->prev >= 0) c->e[x->prev].next = x->next;
  else c->head = x->next;
  if (x->next >= 0) c->e[x->next].prev = x->prev;
  else c->tail = x->prev;
  x->prev = x->next = -1;
}

static void list_push_front(struct lmf_embed_cache *c, int32_t i) {
  ce *x = &c->e[i];
  x->prev = -1;
  x->next = c->head;
  if (c->head >= 0) c->e[c->head].prev = i;
  c->head = i;
  if (c->tail < 0) c->tail = i;
}

/* Most recently used and pinned. */
static void touch(struct lmf_embed_cache *c, int32_t i) {
  if (c->head != i) {
    list_unlink(c, i);
    list_push_front(c, i);
  }
  if (c->e[i].epoch != c->epoch) {
    c->e[i].epoch = c->epoch;
    ++c->pinned;
  }
}

static void chain_remove(struct lmf_embed_cache *c, int32_t i) {
  int32_t *p = &c->bucket[c->e[i].hash & (uint64_t)(c->nbucket - 1)];
  while (*p != i) p = &c->e[*p].hnext;
  *p = c->e[i].hnext;
}

static void chain_insert(struct lmf_embed_cache *c, int32_t i) {
  int32_t *b = &c->bucket[c->e[i].hash & (uint64_t)(c->nbucket - 1)];
  c->e[i].hnext = *b;
  *b = i;
}

/* Grows the entry arrays (doubling, up to the capacity) and rehashes. 0 on out of memory (nothing
 * changed). */
static int grow(struct lmf_embed_cache *c) {
  int64_t na = c->alloc ? 2 * (int64_t)c->alloc : 16;
  if (na > c->capacity) na = c->capacity;
  int64_t nb = 16;
  while (nb < 2 * na) nb *= 2;
  ce *e = (ce *)realloc(c->e, (size_t)na * sizeof *e);
  if (!e) return 0;
  c->e = e;
  float *rows = (float *)realloc(c->rows, (size_t)na * (size_t)c->row_floats * sizeof(float));
  if (!rows) return 0;
  c->rows = rows;
  int32_t *fl = (int32_t *)realloc(c->free_list, (size_t)na * sizeof *fl);
  if (!fl) return 0;
  c->free_list = fl;
  int32_t *bucket = (int32_t *)malloc((size_t)nb * sizeof *bucket);
  if (!bucket) return 0;
  free(c->bucket);
  c->bucket = bucket;
  c->nbucket = nb;
  c->alloc = (int32_t)na;
  memset(c->bucket, 0xff, (size_t)nb * sizeof *bucket);
  for (int32_t i = c->head; i >= 0; i = c->e[i].next) chain_insert(c, i);
  return 1;
}

lmf_status_t lmf_embed_cache_lookup(lmf_embed_cache_t *cache, const uint8_t *bytes, int64_t len, float *e_in,
                                    float *e_out, float *bias, int32_t *hit) {
  static const char fn[] = "lmf_embed_cache_lookup";
  lmf_status_t st = check_cache(cache, fn);
  if (st == LMF_OK) st = check_key(bytes, len, fn);
  if (st != LMF_OK) return st;
  if (!hit) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: hit is NULL", fn);
  if (e_out && !cache->with_out)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: e_out is set but the cache holds no e_out (with_out 0)", fn);
  const int32_t i = find(cache, bytes, len, lmf_bytes_hash(bytes, len));
  if (i < 0) {
    ++cache->misses;
    *hit = 0;
    return LMF_OK;
  }
  const int64_t E = cache->n_embd;
  const float *row = cache->rows + (size_t)i * (size_t)cache->row_floats;
  if (e_in) memcpy(e_in, row, (size_t)E * sizeof(float));
  if (e_out) memcpy(e_out, row + E, (size_t)E * sizeof(float));
  if (bias) *bias = row[cache->row_floats - 1];
  touch(cache, i);
  ++cache->hits;
  *hit = 1;
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_insert(lmf_embed_cache_t *cache, const uint8_t *bytes, int64_t len,
                                    const float *e_in, const float *e_out, float bias, int32_t *stored) {
  static const char fn[] = "lmf_embed_cache_insert";
  lmf_status_t st = check_cache(cache, fn);
  if (st == LMF_OK) st = check_key(bytes, len, fn);
  if (st != LMF_OK) return st;
  if (!e_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: e_in is NULL", fn);
  if (cache->with_out && !e_out)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: e_out is NULL but the cache holds e_out (with_out 1)", fn);
  if (!cache->with_out && e_out)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: e_out is set but the cache holds no e_out (with_out 0)", fn);
  const int64_t E = cache->n_embd;
  const uint64_t h = lmf_bytes_hash(bytes, len);
  int32_t i = find(cache, bytes, len, h);
  if (i < 0) {
    if (cache->count >= cache->capacity && (cache->tail < 0 || cache->e[cache->tail].epoch == cache->epoch)) {
      /* Capacity 0, or every row is pinned by the current batch. */
      ++cache->dropped;
      if (stored) *stored = 0;
      return LMF_OK;
    }
    uint8_t *key = (uint8_t *)malloc((size_t)len);
    if (!key) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for a %lld-byte key", fn, (long long)len);
    if (cache->count >= cache->capacity) {
      /* Evict the least recently used row: the tail, unpinned (pins are a prefix of the list). */
      i = cache->tail;
      list_unlink(cache, i);
      chain_remove(cache, i);
      free(cache->e[i].key);
      cache->e[i].key = NULL;
      --cache->count;
      ++cache->evictions;
    } else if (cache->nfree > 0) {
      i = cache->free_list[--cache->nfree];
    } else {
      if (cache->used == cache->alloc && !grow(cache)) {
        free(key);
        return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for %lld rows", fn,
                        (long long)(cache->alloc ? 2 * (int64_t)cache->alloc : 16));
      }
      i = cache->used++;
    }
    memcpy(key, bytes, (size_t)len);
    ce *x = &cache->e[i];
    x->key = key;
    x->len = len;
    x->hash = h;
    x->epoch = 0;
    x->prev = x->next = -1;
    chain_insert(cache, i);
    list_push_front(cache, i);
    ++cache->count;
  }
  float *row = cache->rows + (size_t)i * (size_t)cache->row_floats;
  memcpy(row, e_in, (size_t)E * sizeof(float));
  if (cache->with_out) memcpy(row + E, e_out, (size_t)E * sizeof(float));
  row[cache->row_floats - 1] = bias;
  touch(cache, i);
  if (stored) *stored = 1;
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_contains(const lmf_embed_cache_t *cache, const uint8_t *bytes, int64_t len,
                                      int32_t *present) {
  static const char fn[] = "lmf_embed_cache_contains";
  lmf_status_t st = check_cache(cache, fn);
  if (st == LMF_OK) st = check_key(bytes, len, fn);
  if (st != LMF_OK) return st;
  if (!present) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: present is NULL", fn);
  *present = find(cache, bytes, len, lmf_bytes_hash(bytes, len)) >= 0;
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_clear(lmf_embed_cache_t *cache) {
  lmf_status_t st = check_cache(cache, "lmf_embed_cache_clear");
  if (st != LMF_OK) return st;
  for (int32_t i = cache->head; i >= 0;) {
    const int32_t nx = cache->e[i].next;
    free(cache->e[i].key);
    cache->e[i].key = NULL;
    cache->free_list[cache->nfree++] = i;
    i = nx;
  }
  if (cache->bucket) memset(cache->bucket, 0xff, (size_t)cache->nbucket * sizeof *cache->bucket);
  cache->head = cache->tail = -1;
  cache->count = 0;
  cache->pinned = 0;
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_stats(const lmf_embed_cache_t *cache, int64_t *rows, int64_t *pinned, int64_t *hits,
                                   int64_t *misses, int64_t *evictions, int64_t *dropped) {
  lmf_status_t st = check_cache(cache, "lmf_embed_cache_stats");
  if (st != LMF_OK) return st;
  if (rows) *rows = cache->count;
  if (pinned) *pinned = cache->pinned;
  if (hits) *hits = cache->hits;
  if (misses) *misses = cache->misses;
  if (evictions) *evictions = cache->evictions;
  if (dropped) *dropped = cache->dropped;
  return LMF_OK;
}

lmf_status_t lmf_embed_cache_get_config(const lmf_embed_cache_t *cache, lmf_embed_cache_config_t *config) {
  static const char fn[] = "lmf_embed_cache_get_config";
  lmf_status_t st = check_cache(cache, fn);
  if (st != LMF_OK) return st;
  st = lmf_check_struct(config, sizeof(lmf_embed_cache_config_t), sizeof(lmf_embed_cache_config_t),
                        LMF_EMBED_CACHE_CONFIG_VERSION, "lmf_embed_cache_get_config: config");
  if (st != LMF_OK) return st;
  config->version = LMF_EMBED_CACHE_CONFIG_VERSION;
  config->n_embd = cache->n_embd;
  config->capacity = cache->capacity;
  config->with_out = cache->with_out;
  return LMF_OK;
}
