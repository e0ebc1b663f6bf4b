/* lmfuse-bench dyntok: batch-level BPE merging on the real multilingual data (data/multilingual) with
 * both real tokenizers (data/tokenizers): per language, the tokens of a 32-sentence batch before and
 * after m merges and at word level; the time per batch and per merge beside the straightforward Python
 * implementation of the spec (bench/python/dyntok_reference.py) timed in the same run; and the time per
 * merge on a 32 x 128-token batch (the GPU bar); and the whole pipeline per batch, merging plus
 * embedding (hypernetwork, warm cache, FVT), split by stage. */
#define _GNU_SOURCE
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_device.h"
#include "bench_families.h"
#include "bench_random.h"
#include "bench_util.h"
#include "lmfuse/dyntok.h"

enum { BATCH = 32, MAX_LANGS = 16, WORD_LEVEL = 1000000 };

typedef struct lang_batch {
  char lang[8];
  int n;             /* sentences so far (<= BATCH) */
  int64_t offsets[BATCH + 1];
  int32_t *ids;
  int64_t cap;
} lang_batch;

typedef struct corpus {
  lang_batch langs[MAX_LANGS];
  int num_langs;
  int32_t *all_ids; /* every line's ids, concatenated (for the 32 x 128 batch) */
  int64_t all_n, all_cap;
} corpus;

static const char *data_dir(void) {
  const char *d = getenv("LMFUSE_DATA_DIR");
  return d && *d ? d : LMF_BENCH_DATA_DIR;
}

static int push_ids(int32_t **buf, int64_t *n, int64_t *cap, const cJSON *ids) {
  int k = cJSON_GetArraySize(ids);
  if (*n + k > *cap) {
    int64_t c = (*cap ? *cap * 2 : 4096) + k;
    int32_t *p = (int32_t *)realloc(*buf, sizeof(int32_t) * (size_t)c);
    if (!p) return 0;
    *buf = p, *cap = c;
  }
  const cJSON *e;
  cJSON_ArrayForEach(e, ids) (*buf)[(*n)++] = (int32_t)e->valuedouble;
  return 1;
}

/* Reads data/multilingual/<name>.jsonl: the first BATCH lines of every language. */
static int read_corpus(const char *name, corpus *c) {
  memset(c, 0, sizeof *c);
  char path[1024];
  snprintf(path, sizeof path, "%s/multilingual/%s.jsonl", data_dir(), name);
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "lmfuse-bench dyntok: cannot open %s (set LMFUSE_DATA_DIR)\n", path);
    return 0;
  }
  char *line = NULL;
  size_t cap = 0;
  int ok = 1;
  while (ok && getline(&line, &cap, f) > 0) {
    cJSON *j = cJSON_Parse(line);
    const cJSON *lang = cJSON_GetObjectItemCaseSensitive(j, "lang");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "ids");
    if (!cJSON_IsString(lang) || !cJSON_IsArray(ids)) {
      cJSON_Delete(j);
      continue;
    }
    int li = 0;
    while (li < c->num_langs && strcmp(c->langs[li].lang, lang->valuestring)) ++li;
    if (li == c->num_langs && li < MAX_LANGS) {
      snprintf(c->langs[li].lang, sizeof c->langs[li].lang, "%s", lang->valuestring);
      c->num_langs++;
    }
    if (li < c->num_langs && c->langs[li].n < BATCH) {
      lang_batch *b = &c->langs[li];
      int64_t n = b->offsets[b->n];
      ok = push_ids(&b->ids, &n, &b->cap, ids);
      b->offsets[++b->n] = n;
    }
    ok = ok && push_ids(&c->all_ids, &c->all_n, &c->all_cap, ids);
    cJSON_Delete(j);
  }
  free(line);
  fclose(f);
  return ok && c->num_langs > 0;
}

static void free_corpus(corpus *c) {
  for (int i = 0; i < c->num_langs; ++i) free(c->langs[i].ids);
  free(c->all_ids);
}

typedef struct merge_case {
  lmf_context_t *ctx;
  const lmf_vocab_t *vocab;
  lmf_dyntok_batch_t batch;
  lmf_dyntok_config_t cfg;
  int64_t tokens_out;
  int32_t merges;
  int ok;
} merge_case;

static void run_merge(void *p) {
  merge_case *m = (merge_case *)p;
  lmf_dyntok_result_t *r = NULL;
  if (lmf_dyntok_merge(m->ctx, m->vocab, &m->batch, &m->cfg, &r) != LMF_OK) {
    if (m->ok) fprintf(stderr, "lmfuse-bench dyntok: %s\n", lmf_last_error());
    m->ok = 0;
    return;
  }
  lmf_dyntok_result_sizes(r, NULL, &m->tokens_out, &m->merges, NULL);
  lmf_dyntok_result_destroy(r);
}

static void set_batch(merge_case *m, int64_t num_seqs, const int64_t *offsets, const int32_t *ids,
                      int32_t merges) {
  lmf_dyntok_batch_init(&m->batch, sizeof m->batch);
  m->batch.num_seqs = num_seqs;
  m->batch.offsets = offsets;
  m->batch.ids = ids;
  lmf_dyntok_config_init(&m->cfg, sizeof m->cfg);
  m->cfg.max_merges = merges;
  m->ok = 1;
}

/* The Python peer's ms per batch for every language, m merges (NULL if it did not run). */
static cJSON *python_peer(const bench_opts *o, const char *name, int merges) {
  if (!o->peer) return NULL;
  char args[2048];
  snprintf(args, sizeof args,
           "--tokenizer-json %s/tokenizers/%s/tokenizer.json --data %s/multilingual/%s.jsonl "
           "--batch %d --merges %d --repeats 3",
           data_dir(), name, data_dir(), name, BATCH, merges);
  return bench_run_peer("dyntok_reference.py", args);
}

/* ---- End to end: merge + embed, by stage ---------------------------------------------------------- */

typedef struct embed_case {
  lmf_context_t *ctx;
  const lmf_vocab_t *vocab;
  const lmf_dyntok_result_t *res;
  lmf_dyntok_embed_args_t args;
  int ok;
} embed_case;

static void run_embed(void *p) {
  embed_case *e = (embed_case *)p;
  if (e->args.cache) lmf_embed_cache_begin_batch(e->args.cache);
  if (lmf_dyntok_embed(e->ctx, e->vocab, e->res, &e->args) != LMF_OK) {
    if (e->ok) fprintf(stderr, "lmfuse-bench dyntok: %s\n", lmf_last_error());
    e->ok = 0;
  }
}

/* lmf_dyntok_embed reads source_in from the context's memory: on the CPU the malloc'd host buffer
 * itself, on a CUDA context a device copy (the host one is freed). Release it with bdev_free. */
static void *to_device(bench_dev *d, void *host, size_t bytes) {
  if (!d->cuda) return host;
  void *p = bdev_alloc(d, bytes);
  bdev_upload(d, p, host, bytes);
  free(host);
  return p;
}

/* An XLM-R-sized hypernetwork (3 layers, H 768, I 1536, 12 heads, tied 768-wide embeddings) over
 * Mistral-7B's 32,000 ids, random weights; source embeddings random too. On a CUDA context the merge
 * result stays on the host (as lmf_dyntok_merge returns it) while the hypernetwork, source_in and
 * out_embeds live on the device; the embed cache is host memory on both backends. Both calls are
 * synchronous on CUDA (the legacy default stream, synchronised before they return), so bdev_time_ms's
 * events on the bench stream bracket the whole call, device scratch allocation included. */
static int bench_end_to_end(bench_dev *d, const bench_opts *o, const lmf_vocab_t *vocab, corpus *c) {
  enum { E = 768 };
  int32_t V0 = 0;
  lmf_vocab_size(vocab, &V0);
  lmf_hypernet_config_t cfg;
  lmf_hypernet_config_init(&cfg, sizeof cfg);
  cfg.num_layers = 3, cfg.hidden_size = 768, cfg.intermediate_size = 1536, cfg.num_heads = 12;
  cfg.n_embd = E, cfg.surface_maxlen = 7, cfg.pad_token_id = 2, cfg.original_vocab_size = V0;
  cfg.n_extra_tokens = 522, cfg.rescale_embeddings = 1, cfg.predict_bias = 1;
  lmf_hypernet_t *hn = NULL;
  if (bench_random_hypernet(d->ctx, &cfg, &hn) != LMF_OK) {
    fprintf(stderr, "lmfuse-bench dyntok: %s\n", lmf_last_error());
    return 1;
  }
  float *src = (float *)malloc(sizeof(float) * (size_t)V0 * E);
  lmf_embed_cache_config_t cc;
  lmf_embed_cache_config_init(&cc, sizeof cc);
  cc.n_embd = E;
  lmf_embed_cache_t *cache = NULL;
  if (!src || lmf_embed_cache_create(&cache, &cc) != LMF_OK) {
    fprintf(stderr, "lmfuse-bench dyntok: out of memory for the source embeddings or the cache\n");
    free(src);
    lmf_hypernet_destroy(hn);
    return 1;
  }
  for (int64_t i = 0; i < (int64_t)V0 * E; ++i) src[i] = 0.3f * bench_unit_noise(0xE2Eull, (uint64_t)i);
  void *src_dev = to_device(d, src, sizeof(float) * (size_t)V0 * E);
  const int M = 200;
  char title[512];
  snprintf(title, sizeof title,
           "End to end per 32-sentence batch, m = %d, inputs_embeds [B][L'][768] f32 (ms, median of %d; "
           "random XLM-R-sized hypernetwork over these ids; warm = every new token in the cache)",
           M, o->repeats);
  bench_table_header(title,
                     "lang  tokens  after  new    merge  hypernet   total   warm cache      FVT");
  int rc = 0;
  for (int li = 0; li < c->num_langs && rc == 0; ++li) {
    lang_batch *b = &c->langs[li];
    merge_case m;
    m.ctx = d->ctx, m.vocab = vocab;
    set_batch(&m, b->n, b->offsets, b->ids, M);
    const double merge_ms = bdev_time_ms(d, run_merge, &m, o->warmup, o->repeats);
    lmf_dyntok_result_t *res = NULL;
    if (!m.ok || lmf_dyntok_merge(d->ctx, vocab, &m.batch, &m.cfg, &res) != LMF_OK) {
      rc = 1;
      break;
    }
    int64_t B = 0, L = 0;
    int32_t num_new = 0;
    lmf_dyntok_embed_shape(res, &B, &L, &num_new);
    void *out = bdev_alloc(d, sizeof(float) * (size_t)(B * L * E)); /* exits if out of memory */
    embed_case e;
    memset(&e, 0, sizeof e);
    e.ctx = d->ctx, e.vocab = vocab, e.res = res, e.ok = 1;
    lmf_dyntok_embed_args_init(&e.args, sizeof e.args);
    e.args.method = LMF_DYNTOK_EMBED_HYPERNET;
    e.args.hypernet = hn;
    e.args.n_embd = E;
    e.args.source_in = src_dev;
    e.args.source_rows = V0;
    e.args.out_embeds = out;
    double ms[3] = {NAN, NAN, NAN};
    if (e.ok) ms[0] = bdev_time_ms(d, run_embed, &e, o->warmup, o->repeats);
    e.args.cache = cache;
    lmf_embed_cache_clear(cache);
    if (e.ok) ms[1] = bdev_time_ms(d, run_embed, &e, 1 + o->warmup, o->repeats); /* first run fills it */
    e.args.cache = NULL;
    e.args.method = LMF_DYNTOK_EMBED_FVT;
    e.args.hypernet = NULL;
    if (e.ok) ms[2] = bdev_time_ms(d, run_embed, &e, o->warmup, o->repeats);
    if (!e.ok) rc = 1;
    printf("%-4s %7lld %6lld %4d %8.2f %9.2f %7.2f %12.2f %8.2f\n", b->lang, (long long)b->offsets[b->n],
           (long long)m.tokens_out, num_new, merge_ms, ms[0], merge_ms + ms[0], ms[1], ms[2]);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "family", "dyntok");
    cJSON_AddStringToObject(r, "table", "end_to_end");
    cJSON_AddStringToObject(r, "lang", b->lang);
    cJSON_AddNumberToObject(r, "tokens", (double)b->offsets[b->n]);
    cJSON_AddNumberToObject(r, "tokens_after", (double)m.tokens_out);
    cJSON_AddNumberToObject(r, "new_tokens", num_new);
    cJSON_AddNumberToObject(r, "merge_ms", merge_ms);
    cJSON_AddNumberToObject(r, "embed_hypernet_ms", ms[0]);
    cJSON_AddNumberToObject(r, "embed_warm_cache_ms", ms[1]);
    cJSON_AddNumberToObject(r, "embed_fvt_ms", ms[2]);
    cJSON_AddStringToObject(r, "device", d->name);
    bench_record(r);
    bdev_free(d, out);
    lmf_dyntok_result_destroy(res);
  }
  lmf_embed_cache_destroy(cache);
  bdev_free(d, src_dev);
  lmf_hypernet_destroy(hn);
  return rc;
}

static int bench_tokenizer(bench_dev *d, const bench_opts *o, const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", data_dir(), name);
  lmf_vocab_t *vocab = NULL;
  double t0 = bench_now_ms();
  if (lmf_vocab_load_json(&vocab, path) != LMF_OK) {
    fprintf(stderr, "lmfuse-bench dyntok: %s\n", lmf_last_error());
    return 1;
  }
  double load_ms = bench_now_ms() - t0;
  corpus c;
  if (!read_corpus(name, &c)) {
    lmf_vocab_destroy(vocab);
    return 1;
  }
  int rc = 0;
  printf("\n%s: tokenizer.json loaded in %.0f ms\n", name, load_ms);
  bench_table_header("Tokens per 32-sentence batch after m merges (word = until no valid pair is left)",
                     "lang  before   m=10   m=50  m=100  m=200   word  word merges  reduction");
  static const int ms[4] = {10, 50, 100, 200};
  for (int li = 0; li < c.num_langs; ++li) {
    lang_batch *b = &c.langs[li];
    merge_case m;
    m.ctx = d->ctx, m.vocab = vocab;
    int64_t after[5];
    int32_t word_merges = 0;
    for (int k = 0; k < 5; ++k) {
      set_batch(&m, b->n, b->offsets, b->ids, k < 4 ? ms[k] : WORD_LEVEL);
      run_merge(&m);
      if (!m.ok) rc = 1;
      after[k] = m.tokens_out;
      if (k == 4) word_merges = m.merges;
    }
    int64_t before = b->offsets[b->n];
    printf("%-4s %7lld %6lld %6lld %6lld %6lld %6lld %12d %9.1f%%\n", b->lang, (long long)before,
           (long long)after[0], (long long)after[1], (long long)after[2], (long long)after[3],
           (long long)after[4], word_merges, 100.0 * (double)(before - after[4]) / (double)before);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "family", "dyntok");
    cJSON_AddStringToObject(r, "table", "reduction");
    cJSON_AddStringToObject(r, "tokenizer", name);
    cJSON_AddStringToObject(r, "lang", b->lang);
    cJSON_AddNumberToObject(r, "tokens_before", (double)before);
    for (int k = 0; k < 4; ++k) {
      char key[32];
      snprintf(key, sizeof key, "tokens_m%d", ms[k]);
      cJSON_AddNumberToObject(r, key, (double)after[k]);
    }
    cJSON_AddNumberToObject(r, "tokens_word_level", (double)after[4]);
    cJSON_AddNumberToObject(r, "word_level_merges", word_merges);
    bench_record(r);
  }

  const int M = 200;
  cJSON *peer = python_peer(o, name, M);
  const cJSON *peer_langs = cJSON_GetObjectItemCaseSensitive(peer, "langs");
  char title[512];
  snprintf(title, sizeof title, "Merging m = %d on %s (median of %d; python = the spec in Python, same run)",
           M, d->name, o->repeats);
  bench_table_header(title,
                     "lang  tokens merges   ms/batch  us/merge   merges/s  batches/s  python ms  speedup");
  for (int li = 0; li < c.num_langs; ++li) {
    lang_batch *b = &c.langs[li];
    merge_case m;
    m.ctx = d->ctx, m.vocab = vocab;
    set_batch(&m, b->n, b->offsets, b->ids, M);
    double ms_batch = bdev_time_ms(d, run_merge, &m, o->warmup, o->repeats);
    if (!m.ok) rc = 1;
    double py_ms = NAN;
    const cJSON *pl = cJSON_GetObjectItemCaseSensitive(peer_langs, b->lang);
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(pl, "ms_per_batch");
    if (cJSON_IsNumber(pv)) py_ms = pv->valuedouble;
    double us_merge = m.merges ? 1e3 * ms_batch / m.merges : NAN;
    char py_col[32] = "", sp_col[32] = "";
    if (!isnan(py_ms)) {
      snprintf(py_col, sizeof py_col, "%.2f", py_ms);
      snprintf(sp_col, sizeof sp_col, "%.0fx", py_ms / ms_batch);
    }
    printf("%-4s %6lld %6d %10.3f %9.2f %10.0f %10.1f %10s %8s\n", b->lang,
           (long long)b->offsets[b->n], m.merges, ms_batch, us_merge, 1e3 * m.merges / ms_batch,
           1e3 / ms_batch, py_col, sp_col);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "family", "dyntok");
    cJSON_AddStringToObject(r, "table", "speed");
    cJSON_AddStringToObject(r, "tokenizer", name);
    cJSON_AddStringToObject(r, "lang", b->lang);
    cJSON_AddNumberToObject(r, "tokens", (double)b->offsets[b->n]);
    cJSON_AddNumberToObject(r, "merges", m.merges);
    cJSON_AddNumberToObject(r, "ms_per_batch", ms_batch);
    cJSON_AddNumberToObject(r, "us_per_merge", us_merge);
    if (!isnan(py_ms)) {
      cJSON_AddNumberToObject(r, "python_ms_per_batch", py_ms);
      cJSON_AddNumberToObject(r, "speedup_vs_python", py_ms / ms_batch);
    }
    cJSON_AddStringToObject(r, "device", d->name);
    bench_record(r);
  }
  cJSON_Delete(peer);

  /* 32 rows of 128 tokens cut from the concatenated corpus (all languages, in file order). */
  enum { ROWS = 32, COLS = 128 };
  if (c.all_n >= ROWS * COLS) {
    int64_t offsets[ROWS + 1];
    for (int s = 0; s <= ROWS; ++s) offsets[s] = (int64_t)s * COLS;
    merge_case m;
    m.ctx = d->ctx, m.vocab = vocab;
    set_batch(&m, ROWS, offsets, c.all_ids, M);
    double ms_batch = bdev_time_ms(d, run_merge, &m, o->warmup, o->repeats);
    if (!m.ok) rc = 1;
    printf("32 x 128 tokens, m = %d: %d merges, %.3f ms per batch, %.2f us per merge\n", M, m.merges,
           ms_batch, m.merges ? 1e3 * ms_batch / m.merges : NAN);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "family", "dyntok");
    cJSON_AddStringToObject(r, "table", "32x128");
    cJSON_AddStringToObject(r, "tokenizer", name);
    cJSON_AddNumberToObject(r, "merges", m.merges);
    cJSON_AddNumberToObject(r, "ms_per_batch", ms_batch);
    cJSON_AddNumberToObject(r, "us_per_merge", m.merges ? 1e3 * ms_batch / m.merges : NAN);
    cJSON_AddStringToObject(r, "device", d->name);
    bench_record(r);
  }
  /* The whole pipeline once, on the tokenizer whose vocabulary fits a small source matrix. */
  if (!strcmp(name, "mistral-7b")) rc |= bench_end_to_end(d, o, vocab, &c);
  free_corpus(&c);
  lmf_vocab_destroy(vocab);
  return rc;
}

int bench_dyntok(const bench_opts *o) {
  bench_dev d;
  if (!bdev_open(&d, o->backend, o->threads)) return 1;
  printf("\nlmfuse-bench dyntok on %s: batch-level BPE merging, batches of %d sentences per language\n",
         d.name, BATCH);
  int rc = bench_tokenizer(&d, o, "mistral-7b");
  rc |= bench_tokenizer(&d, o, "gpt-4o");
  bdev_close(&d);
  return rc;
}
