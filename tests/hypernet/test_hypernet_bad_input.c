/* Every bad-input path of the hypernet API: each call returns its status, lmf_last_error() names the
 * file / tensor / argument, nothing is created (*out untouched) and nothing is written (outputs keep
 * their poison, the cache its bytes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hn_common.h"
#include "hn_run.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

/* A small configuration whose files are quick to write. */
static lmf_hypernet_config_t small_config(void) {
  lmf_hypernet_config_t c = hn_config_mistral_small();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_heads = 2;
  c.n_embd = 32;
  c.original_vocab_size = 50;
  c.n_extra_tokens = 5;
  c.num_layers = 2;
  return c;
}

/* Loads dir (config.json from cfg + the given safetensors entries); expects status + needle. */
static void expect_load_fail(lmf_context_t *ctx, const char *dir, const hn_st_entry *e, size_t n, int64_t truncate,
                             int64_t header_len, lmf_status_t status, const char *needle, const char *what) {
  char p[1024];
  if (!hn_st_write(hn_path(p, sizeof p, dir, "model.safetensors"), e, n, truncate, header_len)) return;
  lmf_hypernet_t *h = (lmf_hypernet_t *)(uintptr_t)0x1234;
  if (!LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), status, needle)) lmf_t_note("case: %s", what);
  LMF_CHECK_MSG(h == (lmf_hypernet_t *)(uintptr_t)0x1234, "%s: *out was written by a failed load", what);
}

void test_hn_bad_files(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  hn_weights w;
  memset(&w, 0, sizeof w);
  char dir[512], p[1024];
  dir[0] = '\0';
  void **bufs = NULL;
  hn_st_entry *e = NULL, *m = NULL;
  lmf_hypernet_config_t c = small_config();
  if (!ctx || !hn_weights_make(&w, &c, 11, LMF_DTYPE_F32) || !hn_tmpdir(dir, sizeof dir)) goto done;
  if (!hn_write_config(hn_path(p, sizeof p, dir, "config.json"), &c, NULL)) goto done;
  e = hn_entries(&w, &bufs);
  m = (hn_st_entry *)calloc(w.n + 1, sizeof *m);
  if (!e || !m) goto done;
  const size_t n = w.n;
  /* The good file loads. */
  {
    char q[1024];
    lmf_hypernet_t *h = NULL;
    if (hn_st_write(hn_path(q, sizeof q, dir, "model.safetensors"), e, n, 0, -1) &&
        LMF_CHECK_OK(lmf_hypernet_load(&h, ctx, dir)))
      lmf_hypernet_destroy(h);
  }
  /* A missing tensor: the message names it. */
  const char *victim = "model.encoder.layer.1.attention.self.key.weight";
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (strcmp(e[i].name, victim) != 0) m[k++] = e[i];
  expect_load_fail(ctx, dir, m, k, 0, -1, LMF_ERR_INVALID_ARGUMENT, victim, "missing tensor");
  /* The unused word embeddings may be absent. */
  k = 0;
  for (size_t i = 0; i < n; ++i)
    if (strcmp(e[i].name, "model.embeddings.word_embeddings.weight") != 0) m[k++] = e[i];
  {
    lmf_hypernet_t *h = NULL;
    if (hn_st_write(hn_path(p, sizeof p, dir, "model.safetensors"), m, k, 0, -1) &&
        LMF_CHECK_OK(lmf_hypernet_load(&h, ctx, dir)))
      lmf_hypernet_destroy(h);
  }
  /* A wrong shape (same byte count, transposed): names the tensor. */
  memcpy(m, e, n * sizeof *m);
  for (size_t i = 0; i < n; ++i)
    if (strcmp(m[i].name, "input_projection.1.dense1.weight") == 0) {
      int64_t t = m[i].shape[0];
      m[i].shape[0] = m[i].shape[1];
      m[i].shape[1] = t;
    }
  expect_load_fail(ctx, dir, m, n, 0, -1, LMF_ERR_INVALID_ARGUMENT, "input_projection.1.dense1.weight", "wrong shape");
  /* A wrong rank. */
  memcpy(m, e, n * sizeof *m);
  for (size_t i = 0; i < n; ++i)
    if (strcmp(m[i].name, "scaler.w") == 0) {
      m[i].ndim = 1;
      m[i].shape[0] = c.n_embd;
    }
  expect_load_fail(ctx, dir, m, n, 0, -1, LMF_ERR_INVALID_ARGUMENT, "scaler.w", "wrong rank");
  /* A dtype lmfuse does not read (I32 with the right byte count). */
  memcpy(m, e, n * sizeof *m);
  for (size_t i = 0; i < n; ++i)
    if (strcmp(m[i].name, "fallback_embeddings.weight") == 0) m[i].dtype = "I32";
  expect_load_fail(ctx, dir, m, n, 0, -1, LMF_ERR_UNSUPPORTED_DTYPE, "fallback_embeddings.weight", "dtype I32");
  /* A dtype whose byte count does not match the data (F16 label on F32 data). */
  memcpy(m, e, n * sizeof *m);
  for (size_t i = 0; i < n; ++i)
    if (strcmp(m[i].name, "bias_projection.weight") == 0) m[i].dtype = "F16";
  expect_load_fail(ctx, dir, m, n, 0, -1, LMF_ERR_PARSE, "bias_projection.weight", "dtype/size mismatch");
  /* An unknown dtype string. */
  memcpy(m, e, n * sizeof *m);
  m[3].dtype = "F7";
  expect_load_fail(ctx, dir, m, n, 0, -1, LMF_ERR_PARSE, "F7", "unknown dtype");
  /* An unexpected tensor (a checkpoint of another configuration). */
  memcpy(m, e, n * sizeof *m);
  m[n] = e[0];
  m[n].name = "output_projection_out.2.weight";
  expect_load_fail(ctx, dir, m, n + 1, 0, -1, LMF_ERR_INVALID_ARGUMENT, "output_projection_out.2.weight", "unexpected");
  /* The transformers buffer position_ids (I64) is ignored. */
  {
    int64_t pid[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    memcpy(m, e, n * sizeof *m);
    hn_st_entry b = {"model.embeddings.position_ids", "I64", 2, {1, 8, 0, 0}, pid, sizeof pid};
    m[n] = b;
    lmf_hypernet_t *h = NULL;
    if (hn_st_write(hn_path(p, sizeof p, dir, "model.safetensors"), m, n + 1, 0, -1) &&
        LMF_CHECK_OK(lmf_hypernet_load(&h, ctx, dir)))
      lmf_hypernet_destroy(h);
  }
  /* Truncated data: the file ends inside the last tensor. */
  expect_load_fail(ctx, dir, e, n, 10, -1, LMF_ERR_IO, "truncated", "truncated data");
  /* A header length beyond the file. */
  expect_load_fail(ctx, dir, e, n, 0, 1 << 30, LMF_ERR_IO, "header length", "header length beyond the file");
  /* A header length that cuts the JSON. */
  expect_load_fail(ctx, dir, e, n, 0, 16, LMF_ERR_PARSE, "JSON", "header cut short");
  /* Bad header JSON, a non-object header, bad entries, offsets past the data, overlapping fields. */
  {
    struct { const char *header; size_t data; lmf_status_t st; const char *needle; } raw[] = {
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]", 8, LMF_ERR_PARSE, "JSON"},
        {"[1, 2, 3]", 0, LMF_ERR_PARSE, "JSON object"},
        {"{\"a\": 5}", 0, LMF_ERR_PARSE, "'a'"},
        {"{\"a\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, LMF_ERR_PARSE, "dtype"},
        {"{\"a\": {\"dtype\": \"F32\", \"data_offsets\": [0, 8]}}", 8, LMF_ERR_PARSE, "shape"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, LMF_ERR_PARSE, "shape[0]"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8, LMF_ERR_PARSE, "data_offsets"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, LMF_ERR_PARSE, "data_offsets"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 4, LMF_ERR_IO, "truncated"},
        {"{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
         " \"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, LMF_ERR_PARSE, "twice"},
        {"{\"__metadata__\": 3}", 0, LMF_ERR_PARSE, "__metadata__"},
        {"{} trailing", 0, LMF_ERR_PARSE, "after"},
    };
    for (size_t i = 0; i < sizeof raw / sizeof raw[0]; ++i) {
      if (!hn_st_write_raw(hn_path(p, sizeof p, dir, "model.safetensors"), raw[i].header, raw[i].data)) continue;
      lmf_hypernet_t *h = NULL;
      if (!LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), raw[i].st, raw[i].needle)) lmf_t_note("raw case %zu", i);
      LMF_CHECK(h == NULL);
    }
    /* A file shorter than the 8-byte length. */
    FILE *f = fopen(p, "wb");
    if (f) {
      fputs("abc", f);
      fclose(f);
      lmf_hypernet_t *h = NULL;
      LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_IO, "8-byte");
    }
  }
  /* A valid file whose tensors miss everything: the message names the first missing tensor. */
  if (hn_st_write_raw(hn_path(p, sizeof p, dir, "model.safetensors"), "{}", 0)) {
    lmf_hypernet_t *h = NULL;
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_INVALID_ARGUMENT, "missing");
  }
  /* Config problems: bad JSON, a missing file, a bad value, a mismatching configuration. */
  {
    char q[1024];
    hn_st_write(hn_path(q, sizeof q, dir, "model.safetensors"), e, n, 0, -1);
    FILE *f = fopen(hn_path(p, sizeof p, dir, "config.json"), "w");
    if (f) {
      fputs("{\"hn_hidden_size\": 64,,}", f);
      fclose(f);
    }
    lmf_hypernet_t *h = NULL;
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_PARSE, "config.json");
    lmf_hypernet_config_t bad = c;
    bad.num_heads = 3;
    hn_write_config(p, &bad, NULL);
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_INVALID_ARGUMENT, "num_heads");
    bad = c;
    bad.separate_out_embeddings = 0; /* the file has output_projection_out.* */
    hn_write_config(p, &bad, NULL);
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_INVALID_ARGUMENT, "unexpected tensor");
    bad = c;
    bad.n_extra_tokens = 6; /* fallback rows do not match */
    hn_write_config(p, &bad, NULL);
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_INVALID_ARGUMENT, "fallback_embeddings.weight");
    hn_write_config(p, &c, ",\n  \"langs\": \"en\"");
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_PARSE, "langs");
    unlink(p);
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_IO, "config.json");
    hn_write_config(p, &c, NULL);
    unlink(q);
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, dir), LMF_ERR_IO, "model.safetensors");
    LMF_CHECK(h == NULL);
    /* NULL arguments. */
    LMF_CHECK_FAIL(lmf_hypernet_load(NULL, ctx, dir), LMF_ERR_NULL_POINTER, "out");
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, NULL, dir), LMF_ERR_NULL_POINTER, "ctx");
    LMF_CHECK_FAIL(lmf_hypernet_load(&h, ctx, NULL), LMF_ERR_NULL_POINTER, "dir");
    LMF_CHECK_FAIL(lmf_hypernet_load_files(&h, ctx, NULL, q), LMF_ERR_NULL_POINTER, "config_path");
    LMF_CHECK_FAIL(lmf_hypernet_load_files(&h, ctx, p, NULL), LMF_ERR_NULL_POINTER, "weights_path");
    LMF_CHECK_FAIL(lmf_hypernet_load_files(&h, ctx, p, dir), LMF_ERR_IO, "regular file");
  }
done:
  free(m);
  hn_entries_free(e, bufs, w.n);
  hn_weights_free(&w);
  if (dir[0]) hn_rmdir(dir);
  lmf_context_destroy(ctx);
}

/* lmf_hypernet_create: NULLs, duplicates, ranks, dtypes, shapes, missing and unexpected names. */
void test_hn_bad_create(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  hn_weights w;
  memset(&w, 0, sizeof w);
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = NULL, *m = NULL;
  lmf_hypernet_config_t c = small_config();
  if (!ctx || !hn_weights_make(&w, &c, 12, LMF_DTYPE_BF16)) goto done;
  t = hn_tensors(&w, &bufs);
  m = (lmf_hypernet_tensor_t *)calloc(w.n + 1, sizeof *m);
  if (!t || !m) goto done;
  const size_t n = w.n;
  lmf_hypernet_t *h = (lmf_hypernet_t *)(uintptr_t)0x99;
#define CREATE_FAIL(tensors, count, status, needle)                                              \
  do {                                                                                           \
    LMF_CHECK_FAIL(lmf_hypernet_create(&h, ctx, &c, tensors, count), status, needle);            \
    LMF_CHECK_MSG(h == (lmf_hypernet_t *)(uintptr_t)0x99, "*out written by a failed create");   \
  } while (0)
  memcpy(m, t, n * sizeof *m);
  m[2].name = NULL;
  CREATE_FAIL(m, n, LMF_ERR_NULL_POINTER, "tensors[2].name");
  memcpy(m, t, n * sizeof *m);
  m[4].data = NULL;
  CREATE_FAIL(m, n, LMF_ERR_NULL_POINTER, "tensors[4].data");
  memcpy(m, t, n * sizeof *m);
  m[5].ndim = 0;
  CREATE_FAIL(m, n, LMF_ERR_INVALID_ARGUMENT, "ndim");
  memcpy(m, t, n * sizeof *m);
  m[6].ndim = 5;
  CREATE_FAIL(m, n, LMF_ERR_INVALID_ARGUMENT, "ndim");
  memcpy(m, t, n * sizeof *m);
  m[n] = t[7];
  CREATE_FAIL(m, n + 1, LMF_ERR_INVALID_ARGUMENT, "twice");
  memcpy(m, t, n * sizeof *m);
  m[8].dtype = LMF_DTYPE_I64;
  CREATE_FAIL(m, n, LMF_ERR_UNSUPPORTED_DTYPE, m[8].name);
  memcpy(m, t, n * sizeof *m);
  m[9].shape[0] += 1;
  CREATE_FAIL(m, n, LMF_ERR_INVALID_ARGUMENT, m[9].name);
  memcpy(m, t, n * sizeof *m);
  CREATE_FAIL(m, n - 1, LMF_ERR_INVALID_ARGUMENT, t[n - 1].name); /* the last one missing */
  memcpy(m, t, n * sizeof *m);
  m[n] = t[0];
  m[n].name = "model.encoder.layer.7.output.dense.weight";
  CREATE_FAIL(m, n + 1, LMF_ERR_INVALID_ARGUMENT, "layer.7");
  CREATE_FAIL(NULL, n, LMF_ERR_NULL_POINTER, "tensors");
  LMF_CHECK_FAIL(lmf_hypernet_create(NULL, ctx, &c, t, n), LMF_ERR_NULL_POINTER, "out");
  LMF_CHECK_FAIL(lmf_hypernet_create(&h, NULL, &c, t, n), LMF_ERR_NULL_POINTER, "ctx");
  LMF_CHECK_FAIL(lmf_hypernet_create(&h, ctx, NULL, t, n), LMF_ERR_NULL_POINTER, "config");
  lmf_hypernet_config_t bad = c;
  bad.num_heads = 7;
  LMF_CHECK_FAIL(lmf_hypernet_create(&h, ctx, &bad, t, n), LMF_ERR_INVALID_ARGUMENT, "num_heads");
  bad = c;
  bad.hidden_size = -64;
  LMF_CHECK_FAIL(lmf_hypernet_create(&h, ctx, &bad, t, n), LMF_ERR_INVALID_SIZE, "hidden_size");
  bad = c;
  bad.struct_size = sizeof bad + 8;
  LMF_CHECK_FAIL(lmf_hypernet_create(&h, ctx, &bad, t, n), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK(h == (lmf_hypernet_t *)(uintptr_t)0x99);
  /* The good table works; destroy(NULL) is a no-op; get_config / lang_index NULLs. */
  h = NULL;
  if (LMF_CHECK_OK(lmf_hypernet_create(&h, ctx, &c, t, n))) {
    lmf_hypernet_config_t g = LMF_HYPERNET_CONFIG_INIT;
    LMF_CHECK_FAIL(lmf_hypernet_get_config(NULL, &g), LMF_ERR_NULL_POINTER, "hypernet");
    LMF_CHECK_FAIL(lmf_hypernet_get_config(h, NULL), LMF_ERR_NULL_POINTER, "config");
    int32_t li;
    LMF_CHECK_FAIL(lmf_hypernet_lang_index(h, NULL, &li), LMF_ERR_NULL_POINTER, "lang");
    LMF_CHECK_FAIL(lmf_hypernet_lang_index(h, "en", NULL), LMF_ERR_NULL_POINTER, "index");
    lmf_hypernet_destroy(h);
  }
  lmf_hypernet_destroy(NULL);
#undef CREATE_FAIL
done:
  free(m);
  hn_tensors_free(t, bufs, w.n);
  hn_weights_free(&w);
  lmf_context_destroy(ctx);
}

/* lmf_hypernet_predict / lmf_hypernet_workspace_size: every argument check; outputs and cache stay
 * as they were. */
void test_hn_bad_predict(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = small_config();
  c.embed_lang_id = 1;
  c.n_langs = 3;
  enum { U = 4, L = 5 };
  const int64_t E = c.n_embd, H = c.hidden_size;
  const int64_t n_ids = c.original_vocab_size + c.n_extra_tokens;
  int32_t S[U * L], cp[U] = {-1, 3, -1, -1};
  float oi[U * 32], oo[U * 32], ob[U];
  float *cache = (float *)lt_malloc((size_t)(n_ids * H) * sizeof(float));
  uint8_t *valid = (uint8_t *)lt_malloc((size_t)n_ids);
  char *ws = NULL;
  lt_snapshot snap;
  lt_snap_init(&snap);
  if (!cache || !valid || !hn_fx_init(&fx, &c, 13, LMF_DTYPE_F32, 0, 0)) goto done;
  for (int i = 0; i < U * L; ++i) S[i] = (i * 7) % (c.original_vocab_size + c.n_extra_tokens);
  memset(valid, 0, (size_t)n_ids);
  lt_poison_f32(cache, n_ids * H);
  lt_poison_f32(oi, U * E);
  lt_poison_f32(oo, U * E);
  lt_poison_f32(ob, U);
  lt_snap_add(&snap, oi, sizeof oi);
  lt_snap_add(&snap, oo, sizeof oo);
  lt_snap_add(&snap, ob, sizeof ob);
  lt_snap_add(&snap, cache, (size_t)(n_ids * H) * sizeof(float));
  lt_snap_add(&snap, valid, (size_t)n_ids);

  lmf_hypernet_args_t a = LMF_HYPERNET_ARGS_INIT;
  a.num_tokens = U;
  a.surface_len = L;
  a.surface_forms = S;
  a.source_in = fx.e_in;
  a.source_out = fx.e_out;
  a.source_rows = fx.rows;
  a.lang_index = 1;
  a.copy_ids = cp;
  a.input_cache = cache;
  a.input_cache_valid = valid;
  a.out_in = oi;
  a.out_out = oo;
  a.out_bias = ob;
  int32_t badS[U * L], badS2[U * L], badcp[U] = {-1, -1, (int32_t)c.original_vocab_size, -1}, badcp2[U] = {-2, -1, -1, -1};
  memcpy(badS, S, sizeof S);
  badS[2 * L + 3] = (int32_t)n_ids; /* one past the last fallback row */
  memcpy(badS2, S, sizeof S);
  badS2[1] = -1;
  lmf_hypernet_args_t b;
#define PRED_BAD(field, value, status, needle)                                    \
  b = a;                                                                          \
  b.field = value;                                                                \
  LMF_CHECK_FAIL(lmf_hypernet_predict(fx.h, &b, NULL, 0, NULL), status, needle);  \
  LT_SNAP_CHECK(&snap, #field)
  PRED_BAD(num_tokens, -1, LMF_ERR_INVALID_SIZE, "num_tokens");
  PRED_BAD(num_tokens, INT64_MAX / 2, LMF_ERR_INVALID_SIZE, "num_tokens");
  PRED_BAD(surface_len, 0, LMF_ERR_INVALID_SIZE, "surface_len");
  PRED_BAD(surface_len, 514, LMF_ERR_INVALID_ARGUMENT, "surface_len"); /* 513 + the language position */
  PRED_BAD(surface_forms, NULL, LMF_ERR_NULL_POINTER, "surface_forms");
  PRED_BAD(surface_forms, badS, LMF_ERR_INVALID_ARGUMENT, "surface_forms[2][3]");
  PRED_BAD(surface_forms, badS2, LMF_ERR_INVALID_ARGUMENT, "surface_forms[0][1]");
  PRED_BAD(source_in, NULL, LMF_ERR_NULL_POINTER, "source_in");
  PRED_BAD(source_out, NULL, LMF_ERR_NULL_POINTER, "source_out");
  PRED_BAD(source_dtype, LMF_DTYPE_I32, LMF_ERR_UNSUPPORTED_DTYPE, "source_dtype");
  PRED_BAD(source_dtype, 77, LMF_ERR_UNSUPPORTED_DTYPE, "source_dtype");
  PRED_BAD(source_rows, c.original_vocab_size - 1, LMF_ERR_INVALID_SIZE, "source_rows");
  PRED_BAD(source_row_stride, E - 1, LMF_ERR_INVALID_ARGUMENT, "source_row_stride");
  PRED_BAD(lang_index, 3, LMF_ERR_INVALID_ARGUMENT, "lang_index");
  PRED_BAD(lang_index, -1, LMF_ERR_INVALID_ARGUMENT, "lang_index");
  PRED_BAD(copy_ids, badcp, LMF_ERR_INVALID_ARGUMENT, "copy_ids[2]");
  PRED_BAD(copy_ids, badcp2, LMF_ERR_INVALID_ARGUMENT, "copy_ids[0]");
  PRED_BAD(input_cache, NULL, LMF_ERR_NULL_POINTER, "input_cache");
  PRED_BAD(input_cache_valid, NULL, LMF_ERR_NULL_POINTER, "input_cache_valid");
  PRED_BAD(out_in, NULL, LMF_ERR_NULL_POINTER, "out_in");
  PRED_BAD(out_out, oi, LMF_ERR_OVERLAP, "out_out");
  PRED_BAD(out_bias, oo + 3, LMF_ERR_OVERLAP, "out_bias");
  PRED_BAD(out_in, fx.e_in + 10, LMF_ERR_OVERLAP, "source_in");
  PRED_BAD(input_cache_valid, (uint8_t *)S, LMF_ERR_OVERLAP, "surface_forms");
  PRED_BAD(struct_size, sizeof a - 4, LMF_ERR_STRUCT_SIZE, "struct_size");
  PRED_BAD(version, 2, LMF_ERR_STRUCT_SIZE, "version");
#undef PRED_BAD
  LMF_CHECK_FAIL(lmf_hypernet_predict(NULL, &a, NULL, 0, NULL), LMF_ERR_NULL_POINTER, "hypernet");
  LMF_CHECK_FAIL(lmf_hypernet_predict(fx.h, NULL, NULL, 0, NULL), LMF_ERR_NULL_POINTER, "args");
  LMF_CHECK_FAIL(lmf_hypernet_predict(fx.h, &a, NULL, 64, NULL), LMF_ERR_NULL_POINTER, "workspace");
  {
    size_t need = 0;
    LMF_CHECK_FAIL(lmf_hypernet_workspace_size(fx.h, &a, NULL), LMF_ERR_NULL_POINTER, "bytes");
    LMF_CHECK_FAIL(lmf_hypernet_workspace_size(NULL, &a, &need), LMF_ERR_NULL_POINTER, "hypernet");
    if (LMF_CHECK_OK(lmf_hypernet_workspace_size(fx.h, &a, &need)) && posix_memalign((void **)&ws, 64, need + 64) == 0) {
      LMF_CHECK_FAIL(lmf_hypernet_predict(fx.h, &a, ws, need - 1, NULL), LMF_ERR_INVALID_SIZE, "workspace_bytes");
      LMF_CHECK_FAIL(lmf_hypernet_predict(fx.h, &a, ws + 4, need, NULL), LMF_ERR_INVALID_ARGUMENT, "aligned");
    }
  }
  LT_SNAP_CHECK(&snap, "after the failed calls");
  /* A tied hypernet refuses output-side arguments. */
  {
    hn_fx t;
    lmf_hypernet_config_t tc = small_config();
    tc.separate_out_embeddings = 0;
    if (hn_fx_init(&t, &tc, 14, LMF_DTYPE_F32, 0, 0)) {
      lmf_hypernet_args_t x = LMF_HYPERNET_ARGS_INIT;
      x.num_tokens = U;
      x.surface_len = L;
      x.surface_forms = S;
      x.source_in = t.e_in;
      x.source_out = t.e_in;
      x.source_rows = t.rows;
      x.out_in = oi;
      LMF_CHECK_FAIL(lmf_hypernet_predict(t.h, &x, NULL, 0, NULL), LMF_ERR_INVALID_ARGUMENT, "source_out");
      x.source_out = NULL;
      x.out_out = oo;
      LMF_CHECK_FAIL(lmf_hypernet_predict(t.h, &x, NULL, 0, NULL), LMF_ERR_INVALID_ARGUMENT, "out_out");
      LT_SNAP_CHECK(&snap, "tied");
    }
    hn_fx_free(&t);
  }
  /* The good call works. */
  if (LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, NULL, 0, NULL))) {
    hn_all_written(oi, U * E, "e_in");
    hn_all_written(oo, U * E, "e_out");
    hn_all_written(ob, U, "bias");
  }
  LMF_CHECK_FAIL(lmf_hypernet_args_init(&a, 3), LMF_ERR_STRUCT_SIZE, NULL);
  LMF_CHECK_FAIL(lmf_hypernet_args_init(NULL, sizeof a), LMF_ERR_NULL_POINTER, NULL);
done:
  lt_snap_free(&snap);
  hn_fx_free(&fx);
  free(cache);
  free(valid);
  free(ws);
}
