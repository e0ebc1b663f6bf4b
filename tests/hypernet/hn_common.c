/* Helpers of the hypernet cases (see hn_common.h). */
#include "hn_common.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lmf_check.h"
#include "lmf_test_util.h"

lmf_hypernet_config_t hn_config_xlmr(int32_t vocab0) {
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  c.num_layers = 3;
  c.hidden_size = 768;
  c.intermediate_size = 1536;
  c.num_heads = 12;
  c.n_embd = 768;
  c.surface_maxlen = 7;
  c.pad_token_id = 1;
  c.original_vocab_size = vocab0;
  c.n_extra_tokens = 161;
  c.separate_out_embeddings = 0;
  c.rescale_embeddings = 1;
  c.predict_bias = 1;
  c.embed_lang_id = 1;
  c.n_langs = 26;
  return c;
}

lmf_hypernet_config_t hn_config_mistral_small(void) {
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  c.num_layers = 3;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_heads = 4;
  c.n_embd = 128;
  c.surface_maxlen = 7;
  c.pad_token_id = 2;
  c.original_vocab_size = 700;
  c.n_extra_tokens = 522;
  c.separate_out_embeddings = 1;
  c.rescale_embeddings = 1;
  c.predict_bias = 1;
  return c;
}

int hn_config_eq(const lmf_hypernet_config_t *a, const lmf_hypernet_config_t *b) {
#define F(x) \
  if (!LMF_CHECK_MSG(a->x == b->x, "config field " #x ": %lld vs %lld", (long long)a->x, (long long)b->x)) return 0
  F(struct_size); F(version); F(num_layers); F(hidden_size); F(intermediate_size); F(num_heads); F(n_embd);
  F(surface_maxlen); F(pad_token_id); F(original_vocab_size); F(n_extra_tokens); F(separate_out_embeddings);
  F(rescale_embeddings); F(predict_bias); F(single_head); F(embed_lang_id); F(n_langs); F(max_position_embeddings);
#undef F
  return 1;
}

/* ---- The test's name table ------------------------------------------------------------------------ */

enum { INIT_LINEAR_W, INIT_BIAS, INIT_LN_W, INIT_LN_B, INIT_EMB_SMALL, INIT_EMB, INIT_SCALE_W, INIT_SCALE_B };

typedef struct tab {
  hn_weights *w;
  int32_t *init;
  size_t cap;
  int oom;
} tab;

static void put(tab *t, const char *name, int32_t ndim, int64_t d0, int64_t d1, int32_t init) {
  if (t->oom) return;
  if (t->w->n == t->cap) {
    size_t nc = t->cap ? 2 * t->cap : 64;
    hn_tensor *nt = (hn_tensor *)realloc(t->w->t, nc * sizeof *nt);
    int32_t *ni = (int32_t *)realloc(t->init, nc * sizeof *ni);
    if (nt) t->w->t = nt;
    if (ni) t->init = ni;
    if (!nt || !ni) {
      t->oom = 1;
      return;
    }
    t->cap = nc;
  }
  hn_tensor *x = &t->w->t[t->w->n];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->ndim = ndim;
  x->shape[0] = d0;
  x->shape[1] = d1;
  x->numel = ndim == 2 ? d0 * d1 : d0;
  t->init[t->w->n] = init;
  t->w->n++;
}

/* dst = a + b (cut to cap - 1 bytes). */
static void join(char *dst, size_t cap, const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > cap - 1) la = cap - 1;
  if (lb > cap - 1 - la) lb = cap - 1 - la;
  memcpy(dst, a, la);
  memcpy(dst + la, b, lb);
  dst[la + lb] = '\0';
}

static void put_linear(tab *t, const char *p, int64_t out, int64_t in) {
  char n[256];
  join(n, sizeof n, p, ".weight");
  put(t, n, 2, out, in, INIT_LINEAR_W);
  join(n, sizeof n, p, ".bias");
  put(t, n, 1, out, 0, INIT_BIAS);
}

static void put_ln(tab *t, const char *p, int64_t n_) {
  char n[256];
  join(n, sizeof n, p, ".weight");
  put(t, n, 1, n_, 0, INIT_LN_W);
  join(n, sizeof n, p, ".bias");
  put(t, n, 1, n_, 0, INIT_LN_B);
}

/* ZeTT's ProjectorBlock: dense1 (H -> I), dense2 (I -> H), ln. */
static void put_block(tab *t, const char *p, int64_t H, int64_t I) {
  char n[256];
  join(n, sizeof n, p, ".dense1");
  put_linear(t, n, I, H);
  join(n, sizeof n, p, ".dense2");
  put_linear(t, n, H, I);
  join(n, sizeof n, p, ".ln");
  put_ln(t, n, H);
}

static void put_rescaler(tab *t, const char *p, int64_t d) {
  char n[256];
  join(n, sizeof n, p, ".w");
  put(t, n, 2, 1, d, INIT_SCALE_W);
  join(n, sizeof n, p, ".b");
  put(t, n, 2, 1, d, INIT_SCALE_B);
}

static float uniform_pm(uint64_t *st) { return (float)(2.0 * lt_uniform(st) - 1.0); }

/* The table alone (data NULL); *init gets each tensor's init kind. */
static int weights_table(hn_weights *w, const lmf_hypernet_config_t *c, int32_t **init) {
  memset(w, 0, sizeof *w);
  w->cfg = *c;
  tab t = {w, NULL, 0, 0};
  const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->n_embd;
  const int64_t n_in = c->separate_out_embeddings ? 2 * E : E;
  const int64_t fb = c->n_extra_tokens > 1 ? c->n_extra_tokens : 1;
  char n[256];
  /* Written from bminixhofer/zett hf_hypernet/modeling_hypernet.py (ZettHypernet.state_dict()). */
  put(&t, "model.embeddings.word_embeddings.weight", 2, c->pad_token_id + 1, H, INIT_EMB);
  put(&t, "model.embeddings.position_embeddings.weight", 2, c->max_position_embeddings, H, INIT_EMB);
  put(&t, "model.embeddings.token_type_embeddings.weight", 2, 1, H, INIT_EMB);
  put_ln(&t, "model.embeddings.LayerNorm", H);
  for (int l = 0; l < c->num_layers; ++l) {
    snprintf(n, sizeof n, "model.encoder.layer.%d.attention.self.query", l);
    put_linear(&t, n, H, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.attention.self.key", l);
    put_linear(&t, n, H, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.attention.self.value", l);
    put_linear(&t, n, H, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.attention.output.dense", l);
    put_linear(&t, n, H, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.attention.output.LayerNorm", l);
    put_ln(&t, n, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.intermediate.dense", l);
    put_linear(&t, n, I, H);
    snprintf(n, sizeof n, "model.encoder.layer.%d.output.dense", l);
    put_linear(&t, n, H, I);
    snprintf(n, sizeof n, "model.encoder.layer.%d.output.LayerNorm", l);
    put_ln(&t, n, H);
  }
  put(&t, "fallback_embeddings.weight", 2, fb, n_in, INIT_EMB_SMALL);
  put_linear(&t, "input_projection.0", H, n_in);
  put_block(&t, "input_projection.1", H, I);
  put_block(&t, "output_projection.0", H, I);
  put_linear(&t, "output_projection.1", c->single_head ? n_in : E, H);
  if (c->separate_out_embeddings && !c->single_head) {
    put_block(&t, "output_projection_out.0", H, I);
    put_linear(&t, "output_projection_out.1", E, H);
  }
  if (c->rescale_embeddings) {
    put_rescaler(&t, "in_scaler", n_in);
    put_rescaler(&t, "scaler", E);
    if (c->separate_out_embeddings) put_rescaler(&t, "out_scaler", E);
  }
  if (c->predict_bias) put_linear(&t, "bias_projection", 1, H);
  if (c->embed_lang_id) put(&t, "lang_embeddings.weight", 2, c->n_langs, H, INIT_EMB);
  if (t.oom) {
    free(t.init);
    hn_weights_free(w);
    return LMF_CHECK_MSG(0, "out of memory building the weight table");
  }
  *init = t.init;
  return 1;
}

int hn_weights_table(hn_weights *w, const lmf_hypernet_config_t *c) {
  int32_t *init = NULL;
  if (!weights_table(w, c, &init)) return 0;
  free(init);
  return 1;
}

int hn_weights_make(hn_weights *w, const lmf_hypernet_config_t *c, uint64_t seed, int32_t dtype) {
  tab t;
  t.init = NULL;
  if (!weights_table(w, c, &t.init)) return 0;
  uint64_t st = seed * 0x9e3779b97f4a7c15ull + 12345;
  static const int32_t cyc[3] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};
  for (size_t i = 0; i < w->n; ++i) {
    hn_tensor *x = &w->t[i];
    x->data = (float *)malloc((size_t)x->numel * sizeof(float));
    if (!x->data) {
      free(t.init);
      hn_weights_free(w);
      return LMF_CHECK_MSG(0, "out of memory for tensor weights");
    }
    const double sq3 = sqrt(3.0); /* uniform(-a, a) has sd a / sqrt(3) */
    double a = 0.0, mean = 0.0;
    switch (t.init[i]) {
      case INIT_LINEAR_W: a = sq3 / sqrt((double)x->shape[1]); break; /* sd 1/sqrt(fan_in) */
      case INIT_BIAS: a = sq3 * 0.02; break;
      case INIT_LN_W: a = sq3 * 0.1; mean = 1.0; break;
      case INIT_LN_B: a = sq3 * 0.05; break;
      case INIT_EMB_SMALL: a = sq3 * 0.02; break;
      case INIT_EMB: a = sq3 * 0.3; break;
      case INIT_SCALE_W: a = 0.5; mean = 1.0; break;
      case INIT_SCALE_B: a = sq3 * 0.01; break;
    }
    for (int64_t j = 0; j < x->numel; ++j) x->data[j] = (float)(mean + a * uniform_pm(&st));
    x->dtype = dtype >= 0 ? dtype : cyc[i % 3];
    if (x->dtype != LMF_DTYPE_F32) { /* round the values to what the file / pointer will hold */
      void *tmp = malloc((size_t)x->numel * 2);
      if (!tmp || !lt_convert(tmp, x->dtype, x->data, LMF_DTYPE_F32, x->numel) ||
          !lt_convert(x->data, LMF_DTYPE_F32, tmp, x->dtype, x->numel)) {
        free(tmp);
        free(t.init);
        hn_weights_free(w);
        return LMF_CHECK_MSG(0, "rounding weights failed");
      }
      free(tmp);
    }
  }
  free(t.init);
  return 1;
}

void hn_weights_free(hn_weights *w) {
  if (!w) return;
  for (size_t i = 0; i < w->n; ++i) free(w->t[i].data);
  free(w->t);
  w->t = NULL;
  w->n = 0;
}

hn_tensor *hn_weights_find(const hn_weights *w, const char *name) {
  for (size_t i = 0; i < w->n; ++i)
    if (strcmp(w->t[i].name, name) == 0) return &w->t[i];
  return NULL;
}

int64_t hn_weights_numel(const hn_weights *w) {
  int64_t s = 0;
  for (size_t i = 0; i < w->n; ++i) s += w->t[i].numel;
  return s;
}

const float *hn_lookup(void *weights, const char *name) {
  hn_tensor *t = hn_weights_find((const hn_weights *)weights, name);
  return t ? t->data : NULL;
}

lmf_ref_hn_config hn_ref_config(const lmf_hypernet_config_t *c) {
  lmf_ref_hn_config r;
  memset(&r, 0, sizeof r);
  r.layers = c->num_layers;
  r.hidden = c->hidden_size;
  r.intermediate = c->intermediate_size;
  r.heads = c->num_heads ? c->num_heads : c->hidden_size / 64;
  r.n_embd = c->n_embd;
  r.pad_id = c->pad_token_id;
  r.vocab0 = c->original_vocab_size;
  r.n_extra = c->n_extra_tokens;
  r.separate = c->separate_out_embeddings;
  r.rescale = c->rescale_embeddings;
  r.predict_bias = c->predict_bias;
  r.single_head = c->single_head;
  r.lang = c->embed_lang_id;
  r.n_langs = c->n_langs;
  r.eps_block = 1e-6;
  r.eps_roberta = 1e-5;
  return r;
}

/* Converts a tensor's fp32 values (already rounded) to its dtype in a fresh buffer. */
static void *encode(const hn_tensor *x, size_t *nbytes) {
  const size_t es = x->dtype == LMF_DTYPE_F32 ? 4 : 2;
  void *b = malloc((size_t)x->numel * es + 1);
  if (!b) return NULL;
  if (!lt_convert(b, x->dtype, x->data, LMF_DTYPE_F32, x->numel)) {
    free(b);
    return NULL;
  }
  *nbytes = (size_t)x->numel * es;
  return b;
}

lmf_hypernet_tensor_t *hn_tensors(const hn_weights *w, void ***bufs) {
  lmf_hypernet_tensor_t *t = (lmf_hypernet_tensor_t *)calloc(w->n, sizeof *t);
  void **b = (void **)calloc(w->n, sizeof *b);
  if (!t || !b) {
    free(t);
    free(b);
    LMF_CHECK_MSG(0, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < w->n; ++i) {
    size_t nb;
    b[i] = encode(&w->t[i], &nb);
    if (!b[i]) {
      hn_tensors_free(t, b, w->n);
      LMF_CHECK_MSG(0, "out of memory");
      return NULL;
    }
    t[i].name = w->t[i].name;
    t[i].data = b[i];
    t[i].dtype = w->t[i].dtype;
    t[i].ndim = w->t[i].ndim;
    t[i].shape[0] = w->t[i].shape[0];
    t[i].shape[1] = w->t[i].ndim > 1 ? w->t[i].shape[1] : 0;
  }
  *bufs = b;
  return t;
}

void hn_tensors_free(lmf_hypernet_tensor_t *t, void **bufs, size_t n) {
  if (bufs)
    for (size_t i = 0; i < n; ++i) free(bufs[i]);
  free(bufs);
  free(t);
}

/* ---- Files ------------------------------------------------------------------------------------------ */

int hn_tmpdir(char *dir, size_t cap) {
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  snprintf(dir, cap, "%s/lmf_hn_XXXXXX", base);
  if (!mkdtemp(dir)) return LMF_CHECK_MSG(0, "mkdtemp(%s) failed", dir);
  return 1;
}

void hn_rmdir(const char *dir) {
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d)) != NULL) {
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
      unlink(p);
    }
    closedir(d);
  }
  rmdir(dir);
}

const char *hn_path(char *buf, size_t cap, const char *dir, const char *name) {
  snprintf(buf, cap, "%s/%s", dir, name);
  return buf;
}

int hn_write_config(const char *path, const lmf_hypernet_config_t *c, const char *extra) {
  FILE *f = fopen(path, "w");
  if (!f) return LMF_CHECK_MSG(0, "cannot write %s", path);
  /* The downstream model's own fields come first (the hypernetwork must not read them). */
  fprintf(f,
          "{\n  \"architectures\": [\"ZettHypernet\"],\n  \"model_type\": \"zett_hypernetwork\",\n"
          "  \"hidden_size\": 4096, \"num_attention_heads\": 32, \"max_position_embeddings\": 32768,\n"
          "  \"vocab_size\": %d,\n  \"hn_model_name_or_path\": \"roberta-base\",\n  \"hn_model_type\": \"roberta\",\n"
          "  \"hn_embed_using_source_embeddings\": true,\n  \"hn_concat_last_hidden_state\": false,\n"
          "  \"hn_embed_target_priors\": false,\n  \"hn_add_inter_token_attention\": false,\n"
          "  \"hn_n_layers\": %d,\n  \"hn_hidden_size\": %d,\n  \"hn_intermediate_size\": %d,\n"
          "  \"hn_num_attention_heads\": %d,\n  \"n_embd\": %d,\n  \"hn_surface_maxlen\": %d,\n"
          "  \"pad_token_id\": %d,\n  \"original_vocab_size\": %d,\n  \"hn_n_extra_tokens\": %d,\n"
          "  \"separate_out_embeddings\": %s,\n  \"hn_rescale_embeddings\": %s,\n  \"hn_predict_bias\": %s,\n"
          "  \"hn_single_head\": %s,\n  \"hn_embed_lang_id\": %s,\n  \"n_langs\": %d%s\n}\n",
          c->original_vocab_size, c->num_layers, c->hidden_size, c->intermediate_size, c->num_heads, c->n_embd,
          c->surface_maxlen, c->pad_token_id, c->original_vocab_size, c->n_extra_tokens,
          c->separate_out_embeddings ? "true" : "false", c->rescale_embeddings ? "true" : "false",
          c->predict_bias ? "true" : "false", c->single_head ? "true" : "false",
          c->embed_lang_id ? "true" : "false", c->n_langs, extra ? extra : "");
  int ok = fclose(f) == 0;
  return LMF_CHECK_MSG(ok, "writing %s failed", path);
}

static int write_u64le(FILE *f, uint64_t v) {
  unsigned char b[8];
  for (int i = 0; i < 8; ++i) b[i] = (unsigned char)(v >> (8 * i));
  return fwrite(b, 1, 8, f) == 8;
}

int hn_st_write(const char *path, const hn_st_entry *e, size_t n, int64_t truncate, int64_t header_len) {
  size_t cap = 256 + n * 256, o = 0;
  char *h = (char *)malloc(cap);
  if (!h) return LMF_CHECK_MSG(0, "out of memory");
  o += (size_t)snprintf(h + o, cap - o, "{\"__metadata__\":{\"format\":\"pt\"}");
  uint64_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    o += (size_t)snprintf(h + o, cap - o, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", e[i].name, e[i].dtype);
    for (int32_t d = 0; d < e[i].ndim; ++d)
      o += (size_t)snprintf(h + o, cap - o, d ? ",%lld" : "%lld", (long long)e[i].shape[d]);
    o += (size_t)snprintf(h + o, cap - o, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                          (unsigned long long)(off + e[i].nbytes));
    off += e[i].nbytes;
  }
  o += (size_t)snprintf(h + o, cap - o, "}");
  while (o % 8 != 0) h[o++] = ' '; /* the format pads the header to 8 bytes with spaces */
  char tmp[1100];
  snprintf(tmp, sizeof tmp, "%s", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    free(h);
    return LMF_CHECK_MSG(0, "cannot write %s", path);
  }
  int ok = write_u64le(f, header_len >= 0 ? (uint64_t)header_len : (uint64_t)o) && fwrite(h, 1, o, f) == o;
  free(h);
  uint64_t total = 8 + o + off, written = 8 + o;
  for (size_t i = 0; ok && i < n; ++i) {
    size_t nb = e[i].nbytes;
    if (truncate > 0 && written + nb > total - (uint64_t)truncate) nb = (size_t)(total - (uint64_t)truncate - written);
    if (nb > 0) ok = fwrite(e[i].data, 1, nb, f) == nb;
    written += nb;
    if (truncate > 0 && written >= total - (uint64_t)truncate) break;
  }
  ok = (fclose(f) == 0) && ok;
  return LMF_CHECK_MSG(ok, "writing %s failed", path);
}

int hn_st_write_raw(const char *path, const char *header, size_t data_bytes) {
  FILE *f = fopen(path, "wb");
  if (!f) return LMF_CHECK_MSG(0, "cannot write %s", path);
  size_t n = strlen(header);
  int ok = write_u64le(f, n) && fwrite(header, 1, n, f) == n;
  for (size_t i = 0; ok && i < data_bytes; ++i) ok = fputc(0, f) != EOF;
  ok = (fclose(f) == 0) && ok;
  return LMF_CHECK_MSG(ok, "writing %s failed", path);
}

static const char *dtype_str(int32_t d) {
  return d == LMF_DTYPE_F16 ? "F16" : d == LMF_DTYPE_BF16 ? "BF16" : "F32";
}

hn_st_entry *hn_entries(const hn_weights *w, void ***bufs) {
  hn_st_entry *e = (hn_st_entry *)calloc(w->n, sizeof *e);
  void **b = (void **)calloc(w->n, sizeof *b);
  if (!e || !b) {
    free(e);
    free(b);
    LMF_CHECK_MSG(0, "out of memory");
    return NULL;
  }
  for (size_t i = 0; i < w->n; ++i) {
    size_t nb = 0;
    b[i] = encode(&w->t[i], &nb);
    if (!b[i]) {
      hn_entries_free(e, b, w->n);
      LMF_CHECK_MSG(0, "out of memory");
      return NULL;
    }
    e[i].name = w->t[i].name;
    e[i].dtype = dtype_str(w->t[i].dtype);
    e[i].ndim = w->t[i].ndim;
    e[i].shape[0] = w->t[i].shape[0];
    e[i].shape[1] = w->t[i].shape[1];
    e[i].data = b[i];
    e[i].nbytes = nb;
  }
  *bufs = b;
  return e;
}

void hn_entries_free(hn_st_entry *e, void **bufs, size_t n) {
  if (bufs)
    for (size_t i = 0; i < n; ++i) free(bufs[i]);
  free(bufs);
  free(e);
}

int hn_save(const char *dir, const hn_weights *w) {
  char p[1024];
  if (!hn_write_config(hn_path(p, sizeof p, dir, "config.json"), &w->cfg, NULL)) return 0;
  void **bufs = NULL;
  hn_st_entry *e = hn_entries(w, &bufs);
  if (!e) return 0;
  int ok = hn_st_write(hn_path(p, sizeof p, dir, "model.safetensors"), e, w->n, 0, -1);
  hn_entries_free(e, bufs, w->n);
  return ok;
}

/* ---- Inputs and comparison --------------------------------------------------------------------- */

float *hn_source(int64_t rows, int64_t n_embd, uint64_t seed) {
  float *e = (float *)lt_malloc((size_t)(rows * n_embd) * sizeof(float));
  if (!e) return NULL;
  uint64_t st = seed * 0x2545f4914f6cdd1dull + 777;
  const double a = sqrt(3.0) * 0.02;
  for (int64_t i = 0; i < rows * n_embd; ++i) e[i] = (float)(a * uniform_pm(&st));
  return e;
}

int hn_check_close(const float *got, const double *want, int64_t n, double tol, const char *what, double *err_out) {
  double ss = 0.0;
  for (int64_t i = 0; i < n; ++i) ss += want[i] * want[i];
  const double rms = sqrt(ss / (double)(n > 0 ? n : 1));
  double worst = 0.0;
  int64_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    double d = fabs((double)got[i] - want[i]);
    if (!(d <= worst)) { /* NaN counts as worst */
      worst = d;
      at = i;
    }
  }
  const double err = rms > 0 ? worst / rms : worst;
  if (err_out) *err_out = err;
  return LMF_CHECK_MSG(err <= tol, "%s: max |got - ref| / rms(ref) = %.3g > %.3g (element %lld: got %.9g, ref %.9g)",
                       what, err, tol, (long long)at, (double)got[at], want[at]);
}

int hn_all_written(const float *x, int64_t n, const char *what) {
  int64_t bad = lt_count_nonfinite(x, n);
  return LMF_CHECK_MSG(bad == 0, "%s: %lld of %lld elements not written or not finite", what, (long long)bad,
                       (long long)n);
}
