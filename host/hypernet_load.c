/* Loading a released ZeTT hypernetwork: config.json (cJSON) and model.safetensors (safetensors.c).
 *
 * config.json is the downstream model's config extended with the hypernetwork's fields (ZettHypernetConfig,
 * hf_hypernet/configuration_hypernet.py, plus original_vocab_size, hn_n_extra_tokens, pad_token_id,
 * separate_out_embeddings and n_langs set by ZeTT's training script). Only the hypernetwork's own fields
 * are read: hidden_size, num_attention_heads, max_position_embeddings ... of the file describe the
 * downstream model, not the hypernetwork's RoBERTa. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "hypernet_internal.h"
#include "safetensors.h"

#define FN_LOAD "lmf_hypernet_load"
#define FN_LOAD_FILES "lmf_hypernet_load_files"
#define FN_FROM_JSON "lmf_hypernet_config_from_json"
#define FN_FROM_FILE "lmf_hypernet_config_from_file"
#define MAX_CONFIG_BYTES (16u << 20)

/* ---- config.json ----------------------------------------------------------------------------------- */

/* An integer field: absent or null keeps *out; otherwise it must be an integral JSON number in int32. */
static lmf_status_t get_int(const cJSON *root, const char *key, int32_t *out, const char *fn, const char *what) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
  if (!v || cJSON_IsNull(v)) return LMF_OK;
  if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble || v->valuedouble < -2147483648.0 ||
      v->valuedouble > 2147483647.0)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: field \"%s\" must be an integer", fn, what, key);
  *out = (int32_t)v->valuedouble;
  return LMF_OK;
}

/* A boolean field: true/false (or 0/1); absent or null keeps *out. */
static lmf_status_t get_bool(const cJSON *root, const char *key, int32_t *out, const char *fn, const char *what) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
  if (!v || cJSON_IsNull(v)) return LMF_OK;
  if (cJSON_IsBool(v)) {
    *out = cJSON_IsTrue(v) ? 1 : 0;
    return LMF_OK;
  }
  if (cJSON_IsNumber(v) && (v->valuedouble == 0.0 || v->valuedouble == 1.0)) {
    *out = (int32_t)v->valuedouble;
    return LMF_OK;
  }
  return lmf_fail(LMF_ERR_PARSE, "%s: %s: field \"%s\" must be true or false", fn, what, key);
}

lmf_status_t lmf_hn_parse_config(const char *json, size_t length, lmf_hypernet_config_t *cfg, char ***langs_out,
                                 int32_t *num_langs_out, const char *fn, const char *what) {
  static const lmf_hypernet_config_t defaults = LMF_HYPERNET_CONFIG_INIT; /* static: zero padding */
  lmf_hypernet_config_t c;
  memcpy(&c, &defaults, sizeof c);
  char **langs = NULL;
  int32_t nl = 0;
  lmf_status_t st = LMF_OK;
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(json, length, &end, 0);
  if (!root) {
    const char *ep = cJSON_GetErrorPtr();
    size_t at = (ep && ep >= json && ep <= json + length) ? (size_t)(ep - json) : 0;
    return lmf_fail(LMF_ERR_PARSE, "%s: %s is not valid JSON (error near byte %zu)", fn, what, at);
  }
  for (const char *p = end; p && p < json + length; ++p)
    if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
      st = lmf_fail(LMF_ERR_PARSE, "%s: %s: unexpected text after the JSON value (byte %zu)", fn, what,
                    (size_t)(p - json));
      goto done;
    }
  if (!cJSON_IsObject(root)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: %s is not a JSON object", fn, what);
    goto done;
  }
  /* Variants the released module cannot run. */
  {
    int32_t using_src = 0;
    if ((st = get_bool(root, "hn_embed_using_source_embeddings", &using_src, fn, what)) != LMF_OK) goto done;
    if (!using_src) {
      st = lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: %s: \"hn_embed_using_source_embeddings\" is false or absent; the ZeTT module only "
                    "runs with source embeddings",
                    fn, what);
      goto done;
    }
    static const char *const off_only[] = {"hn_concat_last_hidden_state", "hn_embed_target_priors",
                                           "hn_add_inter_token_attention"};
    for (size_t i = 0; i < sizeof off_only / sizeof off_only[0]; ++i) {
      int32_t v = 0;
      if ((st = get_bool(root, off_only[i], &v, fn, what)) != LMF_OK) goto done;
      if (v) {
        st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: %s: \"%s\" is true; this variant is not supported", fn,
                      what, off_only[i]);
        goto done;
      }
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "hn_model_type");
    if (mt && !cJSON_IsNull(mt)) {
      if (!cJSON_IsString(mt)) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: %s: field \"hn_model_type\" must be a string", fn, what);
        goto done;
      }
      if (strcmp(mt->valuestring, "roberta") != 0) {
        st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: %s: \"hn_model_type\" is \"%.20s\"; only \"roberta\" is supported",
                      fn, what, mt->valuestring);
        goto done;
      }
    }
  }
  {
    struct { const char *key; int32_t *dst; int is_bool; } f[] = {
        {"hn_n_layers", &c.num_layers, 0},
        {"hn_hidden_size", &c.hidden_size, 0},
        {"hn_intermediate_size", &c.intermediate_size, 0},
        {"hn_num_attention_heads", &c.num_heads, 0},
        {"n_embd", &c.n_embd, 0},
        {"hn_surface_maxlen", &c.surface_maxlen, 0},
        {"pad_token_id", &c.pad_token_id, 0},
        {"original_vocab_size", &c.original_vocab_size, 0},
        {"hn_n_extra_tokens", &c.n_extra_tokens, 0},
        {"separate_out_embeddings", &c.separate_out_embeddings, 1},
        {"hn_rescale_embeddings", &c.rescale_embeddings, 1},
        {"hn_predict_bias", &c.predict_bias, 1},
        {"hn_single_head", &c.single_head, 1},
        {"hn_embed_lang_id", &c.embed_lang_id, 1},
        {"n_langs", &c.n_langs, 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; ++i) {
      st = f[i].is_bool ? get_bool(root, f[i].key, f[i].dst, fn, what) : get_int(root, f[i].key, f[i].dst, fn, what);
      if (st != LMF_OK) goto done;
    }
  }
  {
    const cJSON *la = cJSON_GetObjectItemCaseSensitive(root, "langs");
    if (la && !cJSON_IsNull(la)) {
      if (!cJSON_IsArray(la)) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: %s: field \"langs\" must be an array of strings", fn, what);
        goto done;
      }
      int n = cJSON_GetArraySize(la);
      langs = (char **)calloc((size_t)(n > 0 ? n : 1), sizeof *langs);
      if (!langs) {
        st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        goto done;
      }
      for (const cJSON *it = la->child; it; it = it->next) {
        if (!cJSON_IsString(it)) {
          st = lmf_fail(LMF_ERR_PARSE, "%s: %s: \"langs\"[%d] is not a string", fn, what, (int)nl);
          goto done;
        }
        size_t sl = strlen(it->valuestring);
        langs[nl] = (char *)malloc(sl + 1);
        if (!langs[nl]) {
          st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
          goto done;
        }
        memcpy(langs[nl++], it->valuestring, sl + 1);
      }
      if (c.embed_lang_id && nl > c.n_langs) {
        st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: %s: \"langs\" names %d languages but n_langs is %d", fn, what,
                      (int)nl, (int)c.n_langs);
        goto done;
      }
    }
  }
  {
    lmf_hypernet_config_t chk;
    if ((st = lmf_hn_config_normalize(&c, &chk, fn)) != LMF_OK) goto done;
  }
  *cfg = c;
  if (langs_out) {
    *langs_out = langs;
    *num_langs_out = nl;
    langs = NULL;
  }
done:
  lmf_hn_free_langs(langs, nl);
  cJSON_Delete(root);
  return st;
}

/* Reads a whole (small) file into a NUL-terminated buffer. */
static lmf_status_t read_file(const char *path, char **buf, size_t *len, const char *fn) {
  FILE *f = fopen(path, "rb");
  if (!f) return lmf_fail(LMF_ERR_IO, "%s: cannot open %s: %s", fn, path, strerror(errno));
  struct stat sb;
  if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    fclose(f);
    return lmf_fail(LMF_ERR_IO, "%s: %s is not a regular file", fn, path);
  }
  if ((uint64_t)sb.st_size > MAX_CONFIG_BYTES) {
    fclose(f);
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: %s is %lld bytes; a config is at most %u", fn, path,
                    (long long)sb.st_size, MAX_CONFIG_BYTES);
  }
  size_t n = (size_t)sb.st_size;
  char *b = (char *)malloc(n + 1);
  if (!b) {
    fclose(f);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  }
  if (fread(b, 1, n, f) != n) {
    free(b);
    fclose(f);
    return lmf_fail(LMF_ERR_IO, "%s: cannot read %s", fn, path);
  }
  fclose(f);
  b[n] = '\0';
  *buf = b;
  *len = n;
  return LMF_OK;
}

/* Parses into a caller struct: defaults, then the JSON; writes the caller's struct_size bytes only on
 * success. */
static lmf_status_t config_into(lmf_hypernet_config_t *config, const char *json, size_t length, const char *fn,
                                const char *what) {
  char w[96];
  snprintf(w, sizeof w, "%s: config", fn);
  lmf_status_t st = lmf_check_struct(config, sizeof(lmf_hypernet_config_t), sizeof(lmf_hypernet_config_t),
                                     LMF_HYPERNET_CONFIG_VERSION, w);
  if (st != LMF_OK) return st;
  lmf_hypernet_config_t c;
  if ((st = lmf_hn_parse_config(json, length, &c, NULL, NULL, fn, what)) != LMF_OK) return st;
  size_t sz = lmf_struct_size_of(config);
  memcpy(config, &c, sz);
  memcpy(config, &sz, sizeof sz);
  return LMF_OK;
}

lmf_status_t lmf_hypernet_config_from_json(lmf_hypernet_config_t *config, const char *json, size_t length) {
  if (!json) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: json is NULL", FN_FROM_JSON);
  return config_into(config, json, length, FN_FROM_JSON, "the config JSON");
}

lmf_status_t lmf_hypernet_config_from_file(lmf_hypernet_config_t *config, const char *path) {
  if (!path) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: path is NULL", FN_FROM_FILE);
  lmf_status_t st = lmf_check_struct(config, sizeof(lmf_hypernet_config_t), sizeof(lmf_hypernet_config_t),
                                     LMF_HYPERNET_CONFIG_VERSION, FN_FROM_FILE ": config");
  if (st != LMF_OK) return st;
  char *buf;
  size_t len;
  if ((st = read_file(path, &buf, &len, FN_FROM_FILE)) != LMF_OK) return st;
  st = config_into(config, buf, len, FN_FROM_FILE, path);
  free(buf);
  return st;
}

/* ---- model.safetensors as a tensor source -------------------------------------------------------- */

static int st_find(void *self, const char *name, int32_t *dtype, int32_t *ndim, int64_t shape[4], void **handle) {
  const lmf_st_tensor *t = lmf_st_find((lmf_st_file *)self, name);
  if (!t) return 0;
  *dtype = t->dtype;
  *ndim = t->ndim;
  for (int d = 0; d < 4; ++d) shape[d] = d < t->ndim ? t->shape[d] : 0;
  *handle = (void *)t;
  return 1;
}

static size_t st_count(void *self) { return ((lmf_st_file *)self)->count; }

static const char *st_name_at(void *self, size_t i) { return ((lmf_st_file *)self)->tensors[i].name; }

static lmf_status_t st_read(void *self, void *handle, float *dst, int64_t numel, const char *fn) {
  (void)numel;
  return lmf_st_read_f32((lmf_st_file *)self, (const lmf_st_tensor *)handle, dst, fn);
}

static const char *st_dtype_name(void *self, void *handle) {
  (void)self;
  return ((const lmf_st_tensor *)handle)->dtype_name;
}

static lmf_status_t load_files(lmf_hypernet_t **out, lmf_context_t *ctx, const char *config_path,
                               const char *weights_path, const char *fn) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: out is NULL", fn);
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: ctx is NULL", fn);
  if (!config_path) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: config_path is NULL", fn);
  if (!weights_path) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: weights_path is NULL", fn);
  char *buf = NULL;
  size_t len = 0;
  lmf_status_t st = read_file(config_path, &buf, &len, fn);
  if (st != LMF_OK) return st;
  lmf_hypernet_config_t c;
  char **langs = NULL;
  int32_t nl = 0;
  st = lmf_hn_parse_config(buf, len, &c, &langs, &nl, fn, config_path);
  free(buf);
  if (st != LMF_OK) return st;
  lmf_hypernet_config_t cn;
  if ((st = lmf_hn_config_normalize(&c, &cn, fn)) != LMF_OK) {
    lmf_hn_free_langs(langs, nl);
    return st;
  }
  lmf_st_file sf;
  if ((st = lmf_st_open(&sf, weights_path, fn)) != LMF_OK) {
    lmf_hn_free_langs(langs, nl);
    return st;
  }
  char what[1100];
  snprintf(what, sizeof what, "%s", weights_path);
  lmf_hn_source src = {st_find, st_count, st_name_at, st_read, st_dtype_name, what, &sf, NULL};
  struct lmf_hypernet *h = NULL;
  st = lmf_hn_build(&h, ctx, &cn, &src, fn);
  lmf_st_close(&sf);
  if (st != LMF_OK) {
    lmf_hn_free_langs(langs, nl);
    return st;
  }
  h->langs = langs;
  h->num_langs_named = nl;
  *out = h;
  return LMF_OK;
}

lmf_status_t lmf_hypernet_load_files(lmf_hypernet_t **out, lmf_context_t *ctx, const char *config_path,
                                     const char *weights_path) {
  return load_files(out, ctx, config_path, weights_path, FN_LOAD_FILES);
}

lmf_status_t lmf_hypernet_load(lmf_hypernet_t **out, lmf_context_t *ctx, const char *dir) {
  if (!dir) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: dir is NULL", FN_LOAD);
  size_t n = strlen(dir);
  char *cp = (char *)malloc(n + 32), *wp = (char *)malloc(n + 32);
  if (!cp || !wp) {
    free(cp);
    free(wp);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", FN_LOAD);
  }
  const char *sep = (n > 0 && dir[n - 1] == '/') ? "" : "/";
  snprintf(cp, n + 32, "%s%sconfig.json", dir, sep);
  snprintf(wp, n + 32, "%s%smodel.safetensors", dir, sep);
  lmf_status_t st = load_files(out, ctx, cp, wp, FN_LOAD);
  free(cp);
  free(wp);
  return st;
}
