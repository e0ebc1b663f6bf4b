/* The hypernet API: configs, the ZeTT tensor-name table, building a hypernetwork from a tensor source
 * (a safetensors file or caller pointers), argument checks of lmf_hypernet_predict / lmf_fvt_predict
 * and dispatch to the backend.
 *
 * The name table is the PyTorch state_dict of bminixhofer/zett's hf_hypernet/modeling_hypernet.py
 * (ZettHypernet: a RobertaModel without pooler under "model", Rescalers "in_scaler"/"scaler"/
 * "out_scaler" with parameters w and b of shape [1, dim], nn.Sequential heads indexed .0/.1); see
 * docs/hypernet.md for the full list. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/common/half_convert.h"
#include "hypernet_internal.h"

#define FN_CREATE "lmf_hypernet_create"
#define FN_PREDICT "lmf_hypernet_predict"
#define FN_WS "lmf_hypernet_workspace_size"
#define FN_FVT "lmf_fvt_predict"

#define MAX_DIM 65536   /* hidden, intermediate and n_embd limits (products stay far from overflow) */
#define MAX_LAYERS 64

/* ---- Configs ---------------------------------------------------------------------------------- */

lmf_status_t lmf_hypernet_config_init(lmf_hypernet_config_t *config, size_t struct_size) {
  static const lmf_hypernet_config_t d = LMF_HYPERNET_CONFIG_INIT;
  return lmf_init_struct(config, struct_size, &d, sizeof d, "lmf_hypernet_config_init");
}

lmf_status_t lmf_hypernet_args_init(lmf_hypernet_args_t *args, size_t struct_size) {
  static const lmf_hypernet_args_t d = LMF_HYPERNET_ARGS_INIT;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_hypernet_args_init");
}

lmf_status_t lmf_fvt_args_init(lmf_fvt_args_t *args, size_t struct_size) {
  static const lmf_fvt_args_t d = LMF_FVT_ARGS_INIT;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_fvt_args_init");
}

static lmf_status_t check_flag(int32_t v, const char *field, const char *fn) {
  if (v != 0 && v != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: config->%s is %d; must be 0 or 1", fn, field, (int)v);
  return LMF_OK;
}

static lmf_status_t check_dim(int32_t v, int32_t lo, int32_t hi, const char *field, const char *fn) {
  if (v < lo || v > hi)
    return lmf_fail(v < lo ? LMF_ERR_INVALID_SIZE : LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->%s is %d; must be in [%d, %d]", fn, field, (int)v, (int)lo, (int)hi);
  return LMF_OK;
}

/* Checks a full-size config; resolves num_heads = 0 into *heads. */
static lmf_status_t check_config(const lmf_hypernet_config_t *c, int32_t *heads, const char *fn) {
  lmf_status_t st;
  if ((st = check_dim(c->num_layers, 1, MAX_LAYERS, "num_layers", fn)) != LMF_OK) return st;
  if ((st = check_dim(c->hidden_size, 1, MAX_DIM, "hidden_size", fn)) != LMF_OK) return st;
  if ((st = check_dim(c->intermediate_size, 1, MAX_DIM, "intermediate_size", fn)) != LMF_OK) return st;
  if ((st = check_dim(c->n_embd, 1, MAX_DIM, "n_embd", fn)) != LMF_OK) return st;
  if ((st = check_dim(c->surface_maxlen, 1, 1 << 20, "surface_maxlen", fn)) != LMF_OK) return st;
  if ((st = check_dim(c->original_vocab_size, 1, INT32_MAX - 1, "original_vocab_size", fn)) != LMF_OK)
    return st;
  if (c->n_extra_tokens < 0 || c->n_extra_tokens > INT32_MAX - c->original_vocab_size)
    return lmf_fail(c->n_extra_tokens < 0 ? LMF_ERR_INVALID_SIZE : LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->n_extra_tokens is %d; must be >= 0 with original_vocab_size + "
                    "n_extra_tokens <= INT32_MAX", fn, (int)c->n_extra_tokens);
  if (c->pad_token_id < 0 || c->pad_token_id >= c->original_vocab_size)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->pad_token_id is %d; must be in [0, original_vocab_size = %d)", fn,
                    (int)c->pad_token_id, (int)c->original_vocab_size);
  if (c->num_heads < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: config->num_heads is %d; must be >= 1 (or 0: hidden_size / 64)",
                    fn, (int)c->num_heads);
  int32_t nh = c->num_heads ? c->num_heads : c->hidden_size / 64;
  if (nh == 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->num_heads is 0 (hidden_size / 64) but hidden_size is %d < 64; set num_heads",
                    fn, (int)c->hidden_size);
  if (c->hidden_size % nh != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: config->num_heads = %d does not divide hidden_size = %d",
                    fn, (int)nh, (int)c->hidden_size);
  if ((st = check_flag(c->separate_out_embeddings, "separate_out_embeddings", fn)) != LMF_OK) return st;
  if ((st = check_flag(c->rescale_embeddings, "rescale_embeddings", fn)) != LMF_OK) return st;
  if ((st = check_flag(c->predict_bias, "predict_bias", fn)) != LMF_OK) return st;
  if ((st = check_flag(c->single_head, "single_head", fn)) != LMF_OK) return st;
  if ((st = check_flag(c->embed_lang_id, "embed_lang_id", fn)) != LMF_OK) return st;
  if (c->n_langs < 0 || c->n_langs > (1 << 20))
    return lmf_fail(c->n_langs < 0 ? LMF_ERR_INVALID_SIZE : LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->n_langs is %d; must be in [0, 2^20]", fn, (int)c->n_langs);
  if (c->embed_lang_id && c->n_langs < 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: config->embed_lang_id is 1 but n_langs is %d (need >= 1)",
                    fn, (int)c->n_langs);
  if ((st = check_dim(c->max_position_embeddings, 1 + c->embed_lang_id, 1 << 20, "max_position_embeddings",
                      fn)) != LMF_OK)
    return st;
  *heads = nh;
  return LMF_OK;
}

lmf_status_t lmf_hn_config_normalize(const lmf_hypernet_config_t *in, lmf_hypernet_config_t *out,
                                     const char *fn) {
  char what[96];
  snprintf(what, sizeof what, "%s: config", fn);
  lmf_status_t st = lmf_check_struct(in, sizeof(lmf_hypernet_config_t), sizeof(lmf_hypernet_config_t),
                                     LMF_HYPERNET_CONFIG_VERSION, what);
  if (st != LMF_OK) return st;
  static const lmf_hypernet_config_t defaults = LMF_HYPERNET_CONFIG_INIT; /* static: zero padding */
  lmf_hypernet_config_t c;
  memcpy(&c, &defaults, sizeof c);
  memcpy(&c, in, lmf_struct_size_of(in));
  c.struct_size = sizeof c;
  c.version = LMF_HYPERNET_CONFIG_VERSION;
  int32_t heads = 0;
  if ((st = check_config(&c, &heads, fn)) != LMF_OK) return st;
  c.num_heads = heads;
  *out = c;
  return LMF_OK;
}

lmf_status_t lmf_hypernet_config_check(const lmf_hypernet_config_t *config) {
  lmf_hypernet_config_t c;
  return lmf_hn_config_normalize(config, &c, "lmf_hypernet_config_check");
}

/* ---- The name table --------------------------------------------------------------------------- */

typedef struct table_builder {
  lmf_hn_entry *e;
  size_t n, cap;
  int oom;
} table_builder;

static lmf_hn_entry *add(table_builder *tb, const char *name, int32_t ndim, int64_t d0, int64_t d1,
                         int32_t kind) {
  if (tb->oom) return NULL;
  if (tb->n == tb->cap) {
    size_t nc = tb->cap ? tb->cap * 2 : 64;
    lmf_hn_entry *ne = (lmf_hn_entry *)realloc(tb->e, nc * sizeof *ne);
    if (!ne) {
      tb->oom = 1;
      return NULL;
    }
    tb->e = ne;
    tb->cap = nc;
  }
  lmf_hn_entry *x = &tb->e[tb->n++];
  memset(x, 0, sizeof *x);
  snprintf(x->name, sizeof x->name, "%s", name);
  x->ndim = ndim;
  x->shape[0] = d0;
  x->shape[1] = ndim > 1 ? d1 : 0;
  x->numel = ndim > 1 ? d0 * d1 : d0;
  x->kind = kind;
  x->required = kind != LMF_HN_KIND_UNUSED;
  return x;
}

static void add_vec(table_builder *tb, const char *name, int32_t ndim, int64_t d0, int64_t d1, float **slot) {
  lmf_hn_entry *x = add(tb, name, ndim, d0, d1, LMF_HN_KIND_VECTOR);
  if (x) x->vec = slot;
}

/* A Linear: "<prefix>.weight" [n][k] and "<prefix>.bias" [n]. */
static void add_linear(table_builder *tb, const char *prefix, int64_t n, int64_t k, lmf_hn_linear *lin) {
  char name[128];
  snprintf(name, sizeof name, "%s.weight", prefix);
  lmf_hn_entry *x = add(tb, name, 2, n, k, LMF_HN_KIND_MATRIX);
  if (x) x->mat = lin ? &lin->w : NULL;
  snprintf(name, sizeof name, "%s.bias", prefix);
  add_vec(tb, name, 1, n, 0, lin ? &lin->b : NULL);
}

static void add_ln(table_builder *tb, const char *prefix, int64_t n, float **w, float **b) {
  char name[128];
  snprintf(name, sizeof name, "%s.weight", prefix);
  add_vec(tb, name, 1, n, 0, w);
  snprintf(name, sizeof name, "%s.bias", prefix);
  add_vec(tb, name, 1, n, 0, b);
}

static void add_projector(table_builder *tb, const char *prefix, int64_t H, int64_t I, lmf_hn_projector *p) {
  char name[128];
  snprintf(name, sizeof name, "%s.dense1", prefix);
  add_linear(tb, name, I, H, p ? &p->dense1 : NULL);
  snprintf(name, sizeof name, "%s.dense2", prefix);
  add_linear(tb, name, H, I, p ? &p->dense2 : NULL);
  snprintf(name, sizeof name, "%s.ln", prefix);
  add_ln(tb, name, H, p ? &p->ln_w : NULL, p ? &p->ln_b : NULL);
}

static void add_rescaler(table_builder *tb, const char *prefix, int64_t n, float **w, float **b) {
  char name[128];
  snprintf(name, sizeof name, "%s.w", prefix);
  add_vec(tb, name, 2, 1, n, w);
  snprintf(name, sizeof name, "%s.b", prefix);
  add_vec(tb, name, 2, 1, n, b);
}

#define P(field) (h ? &h->field : NULL)

lmf_status_t lmf_hn_table(const lmf_hypernet_config_t *c, struct lmf_hypernet *h, lmf_hn_entry **entries,
                          size_t *count, const char *fn) {
  table_builder tb = {NULL, 0, 0, 0};
  const int64_t H = c->hidden_size, I = c->intermediate_size, E = c->n_embd;
  const int64_t n_in = c->separate_out_embeddings ? 2 * E : E;
  const int64_t n_fb = c->n_extra_tokens > 1 ? c->n_extra_tokens : 1;
  const int64_t n_head_out = c->single_head ? n_in : E;
  const int separate_head = c->separate_out_embeddings && !c->single_head;
  char name[128];

  if (c->embed_lang_id) add_vec(&tb, "lang_embeddings.weight", 2, c->n_langs, H, P(lang));
  add(&tb, "model.embeddings.word_embeddings.weight", 2, (int64_t)c->pad_token_id + 1, H, LMF_HN_KIND_UNUSED);
  add_vec(&tb, "model.embeddings.position_embeddings.weight", 2, c->max_position_embeddings, H, P(pos));
  add_vec(&tb, "model.embeddings.token_type_embeddings.weight", 2, 1, H, P(type));
  add_ln(&tb, "model.embeddings.LayerNorm", H, P(emb_ln_w), P(emb_ln_b));
  for (int32_t l = 0; l < c->num_layers; ++l) {
    lmf_hn_layer *L = h ? &h->layers[l] : NULL;
    static const char *qkv[3] = {"query", "key", "value"};
    for (int j = 0; j < 3; ++j) {
      snprintf(name, sizeof name, "model.encoder.layer.%d.attention.self.%s", (int)l, qkv[j]);
      add_linear(&tb, name, H, H, L ? (j == 0 ? &L->q : j == 1 ? &L->k : &L->v) : NULL);
    }
    snprintf(name, sizeof name, "model.encoder.layer.%d.attention.output.dense", (int)l);
    add_linear(&tb, name, H, H, L ? &L->o : NULL);
    snprintf(name, sizeof name, "model.encoder.layer.%d.attention.output.LayerNorm", (int)l);
    add_ln(&tb, name, H, L ? &L->ln1_w : NULL, L ? &L->ln1_b : NULL);
    snprintf(name, sizeof name, "model.encoder.layer.%d.intermediate.dense", (int)l);
    add_linear(&tb, name, I, H, L ? &L->ffn1 : NULL);
    snprintf(name, sizeof name, "model.encoder.layer.%d.output.dense", (int)l);
    add_linear(&tb, name, H, I, L ? &L->ffn2 : NULL);
    snprintf(name, sizeof name, "model.encoder.layer.%d.output.LayerNorm", (int)l);
    add_ln(&tb, name, H, L ? &L->ln2_w : NULL, L ? &L->ln2_b : NULL);
  }
  add_vec(&tb, "fallback_embeddings.weight", 2, n_fb, n_in, P(fallback));
  add_linear(&tb, "input_projection.0", H, n_in, P(in_linear));
  add_projector(&tb, "input_projection.1", H, I, P(in_block));
  add_projector(&tb, "output_projection.0", H, I, P(head_block));
  add_linear(&tb, "output_projection.1", n_head_out, H, P(head_linear));
  if (separate_head) {
    add_projector(&tb, "output_projection_out.0", H, I, P(out_block));
    add_linear(&tb, "output_projection_out.1", E, H, P(out_linear));
  }
  if (c->rescale_embeddings) {
    add_rescaler(&tb, "in_scaler", n_in, P(in_scale_w), P(in_scale_b));
    add_rescaler(&tb, "scaler", E, P(scale_w), P(scale_b));
    if (c->separate_out_embeddings) add_rescaler(&tb, "out_scaler", E, P(out_scale_w), P(out_scale_b));
  }
  if (c->predict_bias) {
    add_vec(&tb, "bias_projection.weight", 2, 1, H, P(bias_w));
    add_vec(&tb, "bias_projection.bias", 1, 1, 0, P(bias_b));
  }
  if (tb.oom) {
    free(tb.e);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for the tensor table", fn);
  }
  *entries = tb.e;
  *count = tb.n;
  return LMF_OK;
}

#undef P

/* The tensor table of a caller's config (checked and normalised first); the caller frees *entries. */
static lmf_status_t table_of(const lmf_hypernet_config_t *config, lmf_hn_entry **entries, size_t *count,
                             const char *fn) {
  lmf_hypernet_config_t c;
  lmf_status_t st = lmf_hn_config_normalize(config, &c, fn);
  if (st != LMF_OK) return st;
  return lmf_hn_table(&c, NULL, entries, count, fn);
}

lmf_status_t lmf_hypernet_param_count(const lmf_hypernet_config_t *config, int64_t *count) {
  static const char fn[] = "lmf_hypernet_param_count";
  if (!count) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: count is NULL", fn);
  lmf_hn_entry *e;
  size_t n;
  lmf_status_t st = table_of(config, &e, &n, fn);
  if (st != LMF_OK) return st;
  int64_t total = 0;
  for (size_t i = 0; i < n; ++i) total += e[i].numel;
  free(e);
  *count = total;
  return LMF_OK;
}

lmf_status_t lmf_hypernet_tensor_count(const lmf_hypernet_config_t *config, size_t *count) {
  static const char fn[] = "lmf_hypernet_tensor_count";
  if (!count) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: count is NULL", fn);
  lmf_hn_entry *e;
  size_t n;
  lmf_status_t st = table_of(config, &e, &n, fn);
  if (st != LMF_OK) return st;
  free(e);
  *count = n;
  return LMF_OK;
}

lmf_status_t lmf_hypernet_tensor_info(const lmf_hypernet_config_t *config, size_t index, char *name,
                                      size_t name_capacity, int32_t *ndim, int64_t shape[4],
                                      int32_t *required) {
  static const char fn[] = "lmf_hypernet_tensor_info";
  if (name && name_capacity == 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: name_capacity is 0 with a name buffer", fn);
  lmf_hn_entry *e;
  size_t n;
  lmf_status_t st = table_of(config, &e, &n, fn);
  if (st != LMF_OK) return st;
  if (index >= n) {
    free(e);
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: index is %zu; this configuration has %zu tensors", fn,
                    index, n);
  }
  const lmf_hn_entry *x = &e[index];
  if (name) snprintf(name, name_capacity, "%s", x->name);
  if (ndim) *ndim = x->ndim;
  if (shape)
    for (int d = 0; d < 4; ++d) shape[d] = d < x->ndim ? x->shape[d] : 0;
  if (required) *required = x->required;
  free(e);
  return LMF_OK;
}

/* ---- Building ------------------------------------------------------------------------------------ */

static const char *const k_ignored[] = {"model.embeddings.position_ids", "model.embeddings.token_type_ids"};

static int is_ignored(const char *name) {
  for (size_t i = 0; i < sizeof k_ignored / sizeof k_ignored[0]; ++i)
    if (strcmp(name, k_ignored[i]) == 0) return 1;
  return 0;
}

/* "[a, b]" of the first min(ndim, 4) dimensions ("..." for more). */
static void shape_str(char *buf, size_t cap, int32_t ndim, const int64_t *shape) {
  size_t o = 0;
  o += (size_t)snprintf(buf + o, cap - o, "[");
  for (int32_t d = 0; d < ndim && d < 4 && o < cap; ++d)
    o += (size_t)snprintf(buf + o, cap - o, d ? ", %lld" : "%lld", (long long)shape[d]);
  if (ndim > 4 && o < cap) o += (size_t)snprintf(buf + o, cap - o, ", ... (%d dimensions)", (int)ndim);
  if (o < cap) snprintf(buf + o, cap - o, "]");
}

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

void lmf_hn_free_langs(char **langs, int32_t n) {
  if (!langs) return;
  for (int32_t i = 0; i < n; ++i) free(langs[i]);
  free(langs);
}

static void hypernet_free(struct lmf_hypernet *h) {
  if (!h) return;
  if (h->dev) lmf_cuda_hn_free(h);
  free(h->arena);
  free(h->layers);
  lmf_hn_free_langs(h->langs, h->num_langs_named);
  free(h);
}

lmf_status_t lmf_hn_build(struct lmf_hypernet **out, const lmf_context_t *ctx, const lmf_hypernet_config_t *cfg,
                          const lmf_hn_source *src, const char *fn) {
  struct lmf_hypernet *h = (struct lmf_hypernet *)calloc(1, sizeof *h);
  if (!h) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  h->layers = (lmf_hn_layer *)calloc((size_t)cfg->num_layers, sizeof *h->layers);
  if (!h->layers) {
    free(h);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  }
  h->ctx = ctx;
  h->cfg = *cfg;
  h->n_in = cfg->separate_out_embeddings ? 2 * cfg->n_embd : cfg->n_embd;
  h->n_fallback = cfg->n_extra_tokens > 1 ? cfg->n_extra_tokens : 1;
  h->n_head_out = cfg->single_head ? h->n_in : cfg->n_embd;

  lmf_hn_entry *e = NULL;
  size_t n = 0;
  void **handles = NULL;
  float *tmp = NULL;
  lmf_status_t st = lmf_hn_table(cfg, h, &e, &n, fn);
  if (st != LMF_OK) goto fail;
  handles = (void **)calloc(n, sizeof *handles);
  if (!handles) {
    st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    goto fail;
  }

  /* 1. No tensor the configuration does not have (a checkpoint of another configuration). */
  {
    size_t m = src->count(src->self);
    for (size_t j = 0; j < m; ++j) {
      const char *nm = src->name_at(src->self, j);
      if (is_ignored(nm)) continue;
      size_t i = 0;
      while (i < n && strcmp(e[i].name, nm) != 0) ++i;
      if (i == n) {
        st = lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: unexpected tensor '%s' in %s: not a parameter of this configuration (check "
                      "separate_out_embeddings, single_head, rescale_embeddings, predict_bias, "
                      "embed_lang_id, num_layers)",
                      fn, nm, src->what);
        goto fail;
      }
    }
  }
  /* 2. Every table entry: present (if required), a float dtype, the table's shape. */
  for (size_t i = 0; i < n; ++i) {
    int32_t dtype = -1, ndim = 0;
    int64_t shape[4] = {0, 0, 0, 0};
    if (!src->find(src->self, e[i].name, &dtype, &ndim, shape, &handles[i])) {
      handles[i] = NULL;
      if (!e[i].required) continue;
      st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: tensor '%s' is missing from %s", fn, e[i].name, src->what);
      goto fail;
    }
    if (!lmf_is_float_dtype(dtype)) {
      const char *dn = src->dtype_name ? src->dtype_name(src->self, handles[i]) : NULL;
      st = lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE,
                    "%s: tensor '%s' in %s has dtype %s; only f32, f16 and bf16 are read", fn, e[i].name,
                    src->what, dn ? dn : lmf_dtype_name(dtype));
      goto fail;
    }
    int same = ndim == e[i].ndim;
    for (int32_t d = 0; same && d < ndim; ++d) same = shape[d] == e[i].shape[d];
    if (!same) {
      char got[96], want[96];
      shape_str(got, sizeof got, ndim, shape);
      shape_str(want, sizeof want, e[i].ndim, e[i].shape);
      st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: tensor '%s' in %s has shape %s; this configuration needs %s",
                    fn, e[i].name, src->what, got, want);
      goto fail;
    }
  }
  /* 3. On a CUDA context: the device copy (kernels/hypernet.cu), no host arena. */
  if (ctx->backend == LMF_BACKEND_CUDA) {
    if ((st = lmf_cuda_hn_build(h, e, n, handles, src, fn)) != LMF_OK) goto fail;
    free(handles);
    free(e);
    *out = h;
    return LMF_OK;
  }
  /* 3. Layout and one allocation. */
  size_t total = 0, max_mat = 0;
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind == LMF_HN_KIND_MATRIX) {
      size_t np = (size_t)((e[i].shape[0] + LMF_HN_NR - 1) / LMF_HN_NR);
      total += round16(np * (size_t)e[i].shape[1] * LMF_HN_NR);
      if ((size_t)e[i].numel > max_mat) max_mat = (size_t)e[i].numel;
    } else if (e[i].kind == LMF_HN_KIND_VECTOR) {
      total += round16((size_t)e[i].numel);
    }
  }
  void *arena = NULL;
  if (posix_memalign(&arena, 64, total * sizeof(float)) != 0) arena = NULL;
  tmp = (float *)malloc((max_mat ? max_mat : 1) * sizeof(float));
  if (!arena || !tmp) {
    free(arena);
    st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for %zu weights (%.1f MB)", fn, total,
                  (double)total * 4.0 / 1e6);
    goto fail;
  }
  h->arena = (float *)arena;
  h->arena_floats = total;
  /* 4. Read, convert, pack. */
  size_t off = 0;
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind == LMF_HN_KIND_UNUSED) continue;
    if (e[i].kind == LMF_HN_KIND_MATRIX) {
      lmf_hn_mat *m = e[i].mat;
      m->n = (int32_t)e[i].shape[0];
      m->k = (int32_t)e[i].shape[1];
      m->npanels = (m->n + LMF_HN_NR - 1) / LMF_HN_NR;
      m->p = h->arena + off;
      off += round16((size_t)m->npanels * (size_t)m->k * LMF_HN_NR);
      if ((st = src->read(src->self, handles[i], tmp, e[i].numel, fn)) != LMF_OK) goto fail;
      lmf_hn_pack(m, tmp);
    } else {
      *e[i].vec = h->arena + off;
      off += round16((size_t)e[i].numel);
      if ((st = src->read(src->self, handles[i], *e[i].vec, e[i].numel, fn)) != LMF_OK) goto fail;
    }
  }
  free(tmp);
  free(handles);
  free(e);
  *out = h;
  return LMF_OK;
fail:
  free(tmp);
  free(handles);
  free(e);
  hypernet_free(h);
  return st;
}

/* ---- Tensors from caller pointers ------------------------------------------------------------------ */

typedef struct ptr_source {
  const lmf_hypernet_tensor_t *t;
  size_t n;
} ptr_source;

static int ptr_find(void *self, const char *name, int32_t *dtype, int32_t *ndim, int64_t shape[4],
                    void **handle) {
  ptr_source *p = (ptr_source *)self;
  for (size_t i = 0; i < p->n; ++i)
    if (strcmp(p->t[i].name, name) == 0) {
      *dtype = p->t[i].dtype;
      *ndim = p->t[i].ndim;
      for (int d = 0; d < 4; ++d) shape[d] = p->t[i].shape[d];
      *handle = (void *)&p->t[i];
      return 1;
    }
  return 0;
}

static size_t ptr_count(void *self) { return ((ptr_source *)self)->n; }

static const char *ptr_name_at(void *self, size_t i) { return ((ptr_source *)self)->t[i].name; }

static lmf_status_t ptr_read(void *self, void *handle, float *dst, int64_t numel, const char *fn) {
  (void)self;
  (void)fn;
  const lmf_hypernet_tensor_t *t = (const lmf_hypernet_tensor_t *)handle;
  if (t->dtype == LMF_DTYPE_F32) {
    memcpy(dst, t->data, (size_t)numel * sizeof(float));
  } else {
    const uint16_t *s = (const uint16_t *)t->data;
    if (t->dtype == LMF_DTYPE_F16)
      for (int64_t i = 0; i < numel; ++i) dst[i] = lmf_f16_to_f32(s[i]);
    else
      for (int64_t i = 0; i < numel; ++i) dst[i] = lmf_bf16_to_f32(s[i]);
  }
  return LMF_OK;
}

static const void *ptr_raw(void *self, void *handle, int32_t *dtype) {
  (void)self;
  const lmf_hypernet_tensor_t *t = (const lmf_hypernet_tensor_t *)handle;
  *dtype = t->dtype;
  return t->data;
}

static lmf_status_t check_ctx(const lmf_context_t *ctx, const char *fn) {
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: ctx is NULL", fn);
  return LMF_OK;
}

lmf_status_t lmf_hypernet_create(lmf_hypernet_t **out, lmf_context_t *ctx, const lmf_hypernet_config_t *config,
                                 const lmf_hypernet_tensor_t *tensors, size_t num_tensors) {
  const char *fn = FN_CREATE;
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: out is NULL", fn);
  lmf_status_t st = check_ctx(ctx, fn);
  if (st != LMF_OK) return st;
  lmf_hypernet_config_t c;
  if ((st = lmf_hn_config_normalize(config, &c, fn)) != LMF_OK) return st;
  if (!tensors && num_tensors > 0) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: tensors is NULL", fn);
  for (size_t i = 0; i < num_tensors; ++i) {
    const lmf_hypernet_tensor_t *t = &tensors[i];
    if (!t->name) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: tensors[%zu].name is NULL", fn, i);
    if (!t->data)
      return lmf_fail(LMF_ERR_NULL_POINTER, "%s: tensors[%zu].data ('%s') is NULL", fn, i, t->name);
    if (t->ndim < 1 || t->ndim > 4)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: tensors[%zu] ('%s'): ndim is %d; must be 1 .. 4", fn, i,
                      t->name, (int)t->ndim);
    for (size_t j = 0; j < i; ++j)
      if (strcmp(tensors[j].name, t->name) == 0)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: tensor '%s' is given twice (tensors[%zu] and [%zu])",
                        fn, t->name, j, i);
  }
  ptr_source ps = {tensors, num_tensors};
  lmf_hn_source src = {ptr_find, ptr_count, ptr_name_at, ptr_read, NULL, "the tensors given", &ps, ptr_raw};
  struct lmf_hypernet *h = NULL;
  if ((st = lmf_hn_build(&h, ctx, &c, &src, fn)) != LMF_OK) return st;
  *out = h;
  return LMF_OK;
}

void lmf_hypernet_destroy(lmf_hypernet_t *hypernet) { hypernet_free(hypernet); }

lmf_status_t lmf_hypernet_get_config(const lmf_hypernet_t *hypernet, lmf_hypernet_config_t *config) {
  static const char fn[] = "lmf_hypernet_get_config";
  if (!hypernet) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: hypernet is NULL", fn);
  lmf_status_t st = lmf_check_struct(config, sizeof(lmf_hypernet_config_t), sizeof(lmf_hypernet_config_t),
                                     LMF_HYPERNET_CONFIG_VERSION, "lmf_hypernet_get_config: config");
  if (st != LMF_OK) return st;
  size_t sz = lmf_struct_size_of(config);
  memcpy(config, &hypernet->cfg, sz);
  memcpy(config, &sz, sizeof sz);
  return LMF_OK;
}

lmf_status_t lmf_hypernet_lang_index(const lmf_hypernet_t *hypernet, const char *lang, int32_t *index) {
  static const char fn[] = "lmf_hypernet_lang_index";
  if (!hypernet) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: hypernet is NULL", fn);
  if (!lang) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: lang is NULL", fn);
  if (!index) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: index is NULL", fn);
  if (!hypernet->langs)
    return lmf_fail(LMF_ERR_INVALID_STATE, "%s: this hypernetwork has no language list (config.json \"langs\")",
                    fn);
  for (int32_t i = 0; i < hypernet->num_langs_named; ++i)
    if (strcmp(hypernet->langs[i], lang) == 0) {
      *index = i;
      return LMF_OK;
    }
  return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: language '%.40s' is not in the hypernetwork's list of %d", fn,
                  lang, (int)hypernet->num_langs_named);
}

/* ---- Argument checks ------------------------------------------------------------------------------- */

typedef struct span {
  const void *p;
  size_t bytes;
  const char *name;
  int writable;
} span;

/* The first pair of spans (at least one writable) that overlap, as an error. */
static lmf_status_t check_overlaps(const span *s, int n, const char *fn) {
  for (int i = 0; i < n; ++i) {
    if (!s[i].p || s[i].bytes == 0) continue;
    for (int j = i + 1; j < n; ++j) {
      if (!s[j].p || s[j].bytes == 0 || (!s[i].writable && !s[j].writable)) continue;
      uintptr_t a0 = (uintptr_t)s[i].p, a1 = a0 + s[i].bytes;
      uintptr_t b0 = (uintptr_t)s[j].p, b1 = b0 + s[j].bytes;
      if (a0 < b1 && b0 < a1)
        return lmf_fail(LMF_ERR_OVERLAP, "%s: args->%s and args->%s overlap", fn, s[i].name, s[j].name);
    }
  }
  return LMF_OK;
}

/* Bytes spanned by `rows` rows of `width` elements at `stride` elements of `esize` bytes; 0 on overflow. */
static size_t rows_bytes(int64_t rows, int64_t stride, int64_t width, size_t esize) {
  if (rows <= 0) return 0;
  if ((uint64_t)(rows - 1) > (uint64_t)(INT64_MAX / 16) / (uint64_t)(stride ? stride : 1)) return 0;
  uint64_t el = (uint64_t)(rows - 1) * (uint64_t)stride + (uint64_t)width;
  if (el > (uint64_t)SIZE_MAX / esize / 2) return 0;
  return (size_t)(el * esize);
}

/* Normalizes and checks the caller's args into *a (a full-size copy). */
static lmf_status_t check_args(const lmf_hypernet_t *h, const lmf_hypernet_args_t *args, lmf_hypernet_args_t *a,
                               int full, const char *fn) {
  if (!h) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: hypernet is NULL", fn);
  char what[64];
  snprintf(what, sizeof what, "%s: args", fn);
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_hypernet_args_t), sizeof(lmf_hypernet_args_t),
                                     LMF_HYPERNET_ARGS_VERSION, what);
  if (st != LMF_OK) return st;
  lmf_hypernet_args_t x = LMF_HYPERNET_ARGS_INIT;
  memcpy(&x, args, lmf_struct_size_of(args));
  const lmf_hypernet_config_t *c = &h->cfg;
  if (x.num_tokens < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->num_tokens is %lld; must be >= 0", fn, (long long)x.num_tokens);
  int32_t maxL = c->max_position_embeddings - c->embed_lang_id;
  if (x.surface_len < 1 || x.surface_len > maxL)
    return lmf_fail(x.surface_len < 1 ? LMF_ERR_INVALID_SIZE : LMF_ERR_INVALID_ARGUMENT,
                    "%s: args->surface_len is %d; must be in [1, %d] (max_position_embeddings %d%s)", fn,
                    (int)x.surface_len, (int)maxL, (int)c->max_position_embeddings,
                    c->embed_lang_id ? " less the language position" : "");
  const int64_t U = x.num_tokens, L = x.surface_len, E = c->n_embd;
  if (U > (int64_t)(INT64_MAX / 64) / L / (E > 1 ? E : 1))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->num_tokens = %lld overflows the output sizes", fn,
                    (long long)U);
  *a = x;
  if (!full) return LMF_OK;
  if (!x.surface_forms) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->surface_forms is NULL", fn);
  if (!x.source_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->source_in is NULL", fn);
  if (!x.out_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->out_in is NULL", fn);
  if (c->separate_out_embeddings) {
    if (!x.source_out)
      return lmf_fail(LMF_ERR_NULL_POINTER,
                      "%s: args->source_out is NULL; this hypernetwork has separate output embeddings", fn);
  } else {
    if (x.source_out)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: args->source_out is set but this hypernetwork has tied embeddings (leave it NULL)", fn);
    if (x.out_out)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: args->out_out is set but this hypernetwork predicts no output embeddings", fn);
  }
  if (!lmf_is_float_dtype(x.source_dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE, "%s: args->source_dtype is %d; use f32, f16 or bf16", fn,
                    (int)x.source_dtype);
  if (x.source_rows < c->original_vocab_size)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows is %lld; must be >= original_vocab_size = %d",
                    fn, (long long)x.source_rows, (int)c->original_vocab_size);
  if (x.source_row_stride == 0) x.source_row_stride = E;
  if (x.source_row_stride < E)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->source_row_stride is %lld; must be >= n_embd = %lld",
                    fn, (long long)x.source_row_stride, (long long)E);
  const size_t esz = lmf_dtype_size(x.source_dtype);
  const size_t src_bytes = rows_bytes(x.source_rows, x.source_row_stride, E, esz);
  if (src_bytes == 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows x source_row_stride overflows", fn);
  if (x.allow_tf32 != 0 && x.allow_tf32 != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->allow_tf32 is %d; must be 0 or 1", fn, (int)x.allow_tf32);
  if (c->embed_lang_id && (x.lang_index < 0 || x.lang_index >= c->n_langs))
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->lang_index is %d; must be in [0, n_langs = %d)", fn,
                    (int)x.lang_index, (int)c->n_langs);
  if (!x.input_cache != !x.input_cache_valid)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->%s is NULL but args->%s is set (give both or neither)", fn,
                    x.input_cache ? "input_cache_valid" : "input_cache",
                    x.input_cache ? "input_cache" : "input_cache_valid");
  const int64_t n_ids = (int64_t)c->original_vocab_size + h->n_fallback;
  for (int64_t u = 0; u < U; ++u)
    for (int64_t l = 0; l < L; ++l) {
      int32_t id = x.surface_forms[u * L + l];
      if (id < 0 || id >= n_ids)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        "%s: args->surface_forms[%lld][%lld] is %d; ids must be in [0, original_vocab_size + "
                        "fallback rows = %lld)",
                        fn, (long long)u, (long long)l, (int)id, (long long)n_ids);
    }
  if (x.copy_ids)
    for (int64_t u = 0; u < U; ++u) {
      int32_t id = x.copy_ids[u];
      if (id < -1 || id >= c->original_vocab_size)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        "%s: args->copy_ids[%lld] is %d; must be -1 or in [0, original_vocab_size = %d)", fn,
                        (long long)u, (int)id, (int)c->original_vocab_size);
    }
  const size_t out_bytes = (size_t)U * (size_t)E * sizeof(float);
  const size_t cache_rows = (size_t)n_ids;
  span s[] = {
      {x.out_in, out_bytes, "out_in", 1},
      {x.out_out, out_bytes, "out_out", 1},
      {x.out_bias, (size_t)U * sizeof(float), "out_bias", 1},
      {x.input_cache, cache_rows * (size_t)c->hidden_size * sizeof(float), "input_cache", 1},
      {x.input_cache_valid, cache_rows, "input_cache_valid", 1},
      {x.surface_forms, (size_t)U * (size_t)L * sizeof(int32_t), "surface_forms", 0},
      {x.copy_ids, (size_t)U * sizeof(int32_t), "copy_ids", 0},
      {x.source_in, src_bytes, "source_in", 0},
      {x.source_out, x.source_out ? src_bytes : 0, "source_out", 0},
  };
  if ((st = check_overlaps(s, (int)(sizeof s / sizeof s[0]), fn)) != LMF_OK) return st;
  *a = x;
  return LMF_OK;
}

lmf_status_t lmf_hypernet_workspace_size(const lmf_hypernet_t *hypernet, const lmf_hypernet_args_t *args,
                                         size_t *bytes) {
  if (!bytes) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: bytes is NULL", FN_WS);
  lmf_hypernet_args_t a;
  lmf_status_t st = check_args(hypernet, args, &a, 0, FN_WS);
  if (st != LMF_OK) return st;
  if (hypernet->dev) { /* a CUDA context: device bytes */
    size_t b = 0;
    if ((st = lmf_cuda_hn_workspace(hypernet, a.num_tokens, a.surface_len, &b, FN_WS)) != LMF_OK) return st;
    *bytes = b;
    return LMF_OK;
  }
  size_t b = lmf_cpu_hypernet_workspace(hypernet, a.num_tokens, a.surface_len);
  if (b == 0 && a.num_tokens > 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the workspace size overflows", FN_WS);
  *bytes = b;
  return LMF_OK;
}

/* A CUDA context's call: the memory checks come before check_args reads the ids on the host. */
static lmf_status_t predict_cuda(const lmf_hypernet_t *h, const lmf_hypernet_args_t *args, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  lmf_hypernet_args_t a;
  lmf_status_t st = check_args(h, args, &a, 0, FN_PREDICT);
  if (st != LMF_OK) return st;
  if (!workspace && workspace_bytes > 0)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: workspace is NULL but workspace_bytes is %zu", FN_PREDICT,
                    workspace_bytes);
  if ((st = lmf_cuda_hn_check_memory(h, &a, workspace, FN_PREDICT)) != LMF_OK) return st;
  if ((st = check_args(h, args, &a, 1, FN_PREDICT)) != LMF_OK) return st;
  if (a.num_tokens == 0) return LMF_OK;
  size_t need = 0;
  if ((st = lmf_cuda_hn_workspace(h, a.num_tokens, a.surface_len, &need, FN_PREDICT)) != LMF_OK) return st;
  if (!workspace)
    return lmf_fail(LMF_ERR_NULL_POINTER,
                    "%s: workspace is NULL; on a CUDA context pass lmf_hypernet_workspace_size() bytes (%zu here) of "
                    "device memory: the CUDA backend allocates nothing",
                    FN_PREDICT, need);
  if (workspace_bytes < need)
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "%s: workspace_bytes is %zu; this call needs %zu (lmf_hypernet_workspace_size)", FN_PREDICT,
                    workspace_bytes, need);
  if (((uintptr_t)workspace & 63u) != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: workspace must be 64-byte aligned", FN_PREDICT);
  const size_t U = (size_t)a.num_tokens, E = (size_t)h->cfg.n_embd;
  const size_t n_ids = (size_t)h->cfg.original_vocab_size + (size_t)h->n_fallback;
  span s[] = {
      {workspace, need, "workspace", 1},
      {a.out_in, U * E * sizeof(float), "out_in", 1},
      {a.out_out, U * E * sizeof(float), "out_out", 1},
      {a.out_bias, U * sizeof(float), "out_bias", 1},
      {a.input_cache, n_ids * (size_t)h->cfg.hidden_size * sizeof(float), "input_cache", 1},
      {a.source_in, rows_bytes(a.source_rows, a.source_row_stride, h->cfg.n_embd, lmf_dtype_size(a.source_dtype)),
       "source_in", 0},
      {a.source_out, a.source_out ? rows_bytes(a.source_rows, a.source_row_stride, h->cfg.n_embd,
                                               lmf_dtype_size(a.source_dtype))
                                  : 0,
       "source_out", 0},
  };
  if ((st = check_overlaps(s, (int)(sizeof s / sizeof s[0]), FN_PREDICT)) != LMF_OK) return st;
  return lmf_cuda_hn_predict(h, &a, workspace, workspace_bytes, stream);
}

lmf_status_t lmf_hypernet_predict(const lmf_hypernet_t *hypernet, const lmf_hypernet_args_t *args, void *workspace,
                                  size_t workspace_bytes, lmf_stream_t stream) {
  if (hypernet && hypernet->dev) return predict_cuda(hypernet, args, workspace, workspace_bytes, stream);
  (void)stream;
  lmf_hypernet_args_t a;
  lmf_status_t st = check_args(hypernet, args, &a, 1, FN_PREDICT);
  if (st != LMF_OK) return st;
  if (!workspace && workspace_bytes > 0)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: workspace is NULL but workspace_bytes is %zu", FN_PREDICT,
                    workspace_bytes);
  if (a.num_tokens == 0) return LMF_OK;
  size_t need = lmf_cpu_hypernet_workspace(hypernet, a.num_tokens, a.surface_len);
  if (need == 0) return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the workspace size overflows", FN_PREDICT);
  void *own = NULL;
  if (workspace) {
    if (workspace_bytes < need)
      return lmf_fail(LMF_ERR_INVALID_SIZE,
                      "%s: workspace_bytes is %zu; this call needs %zu (lmf_hypernet_workspace_size)", FN_PREDICT,
                      workspace_bytes, need);
    if (((uintptr_t)workspace & 63u) != 0)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: workspace must be 64-byte aligned", FN_PREDICT);
  } else {
    if (posix_memalign(&own, 64, need) != 0)
      return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for a %zu-byte workspace", FN_PREDICT, need);
    workspace = own;
  }
  st = lmf_cpu_hypernet_predict(hypernet, &a, workspace);
  free(own);
  return st;
}

/* ---- FVT ------------------------------------------------------------------------------------------- */

lmf_status_t lmf_fvt_predict(lmf_context_t *ctx, const lmf_fvt_args_t *args, lmf_stream_t stream) {
  const char *fn = FN_FVT;
  lmf_status_t st = check_ctx(ctx, fn);
  if (st != LMF_OK) return st;
  st = lmf_check_struct(args, sizeof(lmf_fvt_args_t), sizeof(lmf_fvt_args_t), LMF_FVT_ARGS_VERSION,
                        "lmf_fvt_predict: args");
  if (st != LMF_OK) return st;
  lmf_fvt_args_t x = LMF_FVT_ARGS_INIT;
  memcpy(&x, args, lmf_struct_size_of(args));
  const int cuda = ctx->backend == LMF_BACKEND_CUDA;
  if (cuda) { /* where each pointer lives, before the host reads offsets, ids and copy_ids */
    const struct {
      const void *p;
      const char *name;
      int want;
    } loc[] = {
        {x.offsets, "args->offsets", LMF_MEM_HOST},        {x.ids, "args->ids", LMF_MEM_HOST},
        {x.copy_ids, "args->copy_ids", LMF_MEM_HOST},      {x.source_in, "args->source_in", LMF_MEM_DEVICE},
        {x.source_out, "args->source_out", LMF_MEM_DEVICE}, {x.out_in, "args->out_in", LMF_MEM_DEVICE},
        {x.out_out, "args->out_out", LMF_MEM_DEVICE},
    };
    for (size_t i = 0; i < sizeof loc / sizeof loc[0]; ++i)
      if ((st = lmf_cuda_locate(ctx, loc[i].p, loc[i].name, loc[i].want, NULL, fn)) != LMF_OK) return st;
  }
  if (x.num_tokens < 0)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->num_tokens is %lld; must be >= 0", fn, (long long)x.num_tokens);
  if (x.n_embd < 1) return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->n_embd is %d; must be >= 1", fn, (int)x.n_embd);
  if (x.source_rows < 1)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows is %lld; must be >= 1", fn, (long long)x.source_rows);
  if (x.source_row_stride == 0) x.source_row_stride = x.n_embd;
  if (x.source_row_stride < x.n_embd)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->source_row_stride is %lld; must be >= n_embd = %d", fn,
                    (long long)x.source_row_stride, (int)x.n_embd);
  if (!lmf_is_float_dtype(x.source_dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE, "%s: args->source_dtype is %d; use f32, f16 or bf16", fn,
                    (int)x.source_dtype);
  if (x.unk_id < 0 || x.unk_id >= x.source_rows)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->unk_id is %d; must be in [0, source_rows = %lld)", fn,
                    (int)x.unk_id, (long long)x.source_rows);
  const int64_t U = x.num_tokens;
  if (U > (int64_t)(INT64_MAX / 64) / x.n_embd)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->num_tokens = %lld overflows the output sizes", fn, (long long)U);
  if (!x.offsets) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->offsets is NULL", fn);
  if (!x.source_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->source_in is NULL", fn);
  if (!x.out_in) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->out_in is NULL", fn);
  if (!x.source_out != !x.out_out)
    return lmf_fail(x.source_out ? LMF_ERR_NULL_POINTER : LMF_ERR_INVALID_ARGUMENT,
                    "%s: args->out_out %s (give out_out exactly when source_out is given)", fn,
                    x.source_out ? "is NULL but source_out is set" : "is set but source_out is NULL");
  if (x.offsets[0] != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->offsets[0] is %lld; must be 0", fn, (long long)x.offsets[0]);
  for (int64_t u = 0; u < U; ++u)
    if (x.offsets[u + 1] < x.offsets[u])
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: args->offsets decrease at %lld (%lld then %lld)", fn,
                      (long long)u, (long long)x.offsets[u], (long long)x.offsets[u + 1]);
  const int64_t nids = x.offsets[U];
  if (nids > 0 && !x.ids) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: args->ids is NULL", fn);
  if (nids > (int64_t)(SIZE_MAX / 8))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->offsets[num_tokens] = %lld is too large", fn, (long long)nids);
  if (x.copy_ids)
    for (int64_t u = 0; u < U; ++u)
      if (x.copy_ids[u] < -1 || x.copy_ids[u] >= x.source_rows)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                        "%s: args->copy_ids[%lld] is %d; must be -1 or in [0, source_rows = %lld)", fn,
                        (long long)u, (int)x.copy_ids[u], (long long)x.source_rows);
  const size_t src_bytes = rows_bytes(x.source_rows, x.source_row_stride, x.n_embd, lmf_dtype_size(x.source_dtype));
  if (src_bytes == 0) return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: args->source_rows x source_row_stride overflows", fn);
  const size_t out_bytes = (size_t)U * (size_t)x.n_embd * sizeof(float);
  span s[] = {
      {x.out_in, out_bytes, "out_in", 1},
      {x.out_out, out_bytes, "out_out", 1},
      {x.offsets, (size_t)(U + 1) * sizeof(int64_t), "offsets", 0},
      {x.ids, (size_t)nids * sizeof(int32_t), "ids", 0},
      {x.copy_ids, (size_t)U * sizeof(int32_t), "copy_ids", 0},
      {x.source_in, src_bytes, "source_in", 0},
      {x.source_out, x.source_out ? src_bytes : 0, "source_out", 0},
  };
  if ((st = check_overlaps(s, (int)(sizeof s / sizeof s[0]), fn)) != LMF_OK) return st;
  if (U == 0) return LMF_OK;
  if (cuda) return lmf_cuda_fvt_predict(ctx, &x, stream);
  (void)stream;
  return lmf_cpu_fvt_predict(ctx, &x);
}
