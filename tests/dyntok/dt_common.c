/* Shared helpers of the dyntok cases: see dt_common.h. */
#include "dt_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

/* ---- GPT-2 byte-level strings ------------------------------------------------------------------ */

/* GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to 256, 257, ... in order. */
static void gpt2_tables(uint16_t byte_to_cp[256], int16_t cp_to_byte[512]) {
  int n = 0;
  for (int i = 0; i < 512; ++i) cp_to_byte[i] = -1;
  for (int b = 0; b < 256; ++b) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    byte_to_cp[b] = (uint16_t)(printable ? b : 256 + n++);
    cp_to_byte[byte_to_cp[b]] = (int16_t)b;
  }
}

int64_t dt_gpt2_decode(const char *s, uint8_t *out, int64_t cap) {
  uint16_t b2c[256];
  int16_t c2b[512];
  gpt2_tables(b2c, c2b);
  const uint8_t *p = (const uint8_t *)s;
  int64_t n = 0;
  while (*p) {
    uint32_t cp;
    if (p[0] < 0x80) cp = p[0], p += 1;
    else if ((p[0] & 0xE0) == 0xC0 && p[1]) cp = ((p[0] & 0x1Fu) << 6) | (p[1] & 0x3Fu), p += 2;
    else return -1;
    if (cp >= 512 || c2b[cp] < 0 || n >= cap) return -1;
    out[n++] = (uint8_t)c2b[cp];
  }
  return n;
}

void dt_gpt2_encode(const uint8_t *b, int64_t n, char *out, size_t cap) {
  uint16_t b2c[256];
  int16_t c2b[512];
  gpt2_tables(b2c, c2b);
  size_t o = strlen(out);
  for (int64_t i = 0; i < n; ++i) {
    uint16_t cp = b2c[b[i]];
    char tmp[3];
    size_t k;
    if (cp < 0x80) tmp[0] = (char)cp, k = 1;
    else tmp[0] = (char)(0xC0 | (cp >> 6)), tmp[1] = (char)(0x80 | (cp & 0x3F)), k = 2;
    if (o + k + 1 > cap) break;
    memcpy(out + o, tmp, k);
    o += k;
  }
  out[o] = '\0';
}

/* ---- Small vocabularies and batches ------------------------------------------------------------- */

static int is_listed(const char *const *list, const char *s) {
  for (; list && *list; ++list)
    if (strcmp(*list, s) == 0) return 1;
  return 0;
}

lmf_vocab_t *dt_vocab(const char *const *names, int n, const char *const *specials) {
  uint8_t *bytes = (uint8_t *)malloc(64 * (size_t)n + 1);
  int64_t *offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n + 1));
  uint8_t *flags = (uint8_t *)calloc((size_t)n + 1, 1);
  lmf_vocab_t *v = NULL;
  if (!LMF_CHECK(bytes && offsets && flags)) goto done;
  offsets[0] = 0;
  for (int i = 0; i < n; ++i) {
    int64_t len;
    if (is_listed(specials, names[i])) {
      len = (int64_t)strlen(names[i]);
      if (!LMF_CHECK(len <= 64)) goto done;
      memcpy(bytes + offsets[i], names[i], (size_t)len);
      flags[i] = LMF_TOKEN_SPECIAL;
    } else {
      len = dt_gpt2_decode(names[i], bytes + offsets[i], 64);
      if (!LMF_CHECK_MSG(len > 0, "token %d \"%s\" is not a GPT-2 byte-level string", i, names[i]))
        goto done;
    }
    offsets[i + 1] = offsets[i] + len;
  }
  lmf_vocab_arrays_t a;
  if (!LMF_CHECK_OK(lmf_vocab_arrays_init(&a, sizeof a))) goto done;
  a.num_tokens = n;
  a.bytes = bytes;
  a.offsets = offsets;
  a.flags = flags;
  LMF_CHECK_OK(lmf_vocab_create(&v, &a));
done:
  free(bytes);
  free(offsets);
  free(flags);
  return v;
}

int32_t dt_id(const char *const *names, int n, const char *tok) {
  for (int i = 0; i < n; ++i)
    if (strcmp(names[i], tok) == 0) return i;
  LMF_CHECK_MSG(0, "token \"%s\" is not in the test vocabulary", tok);
  return -1;
}

int dt_batch_parse(dt_batch *b, const char *const *names, int n, const char *const *seqs, int64_t B) {
  memset(b, 0, sizeof *b);
  int64_t total = 0;
  for (int64_t s = 0; s < B; ++s) total += (int64_t)strlen(seqs[s]) + 1;
  b->B = B;
  b->offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(B + 1));
  b->ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(total + 1));
  if (!LMF_CHECK(b->offsets && b->ids)) return 0;
  int64_t k = 0;
  b->offsets[0] = 0;
  for (int64_t s = 0; s < B; ++s) {
    const char *p = seqs[s];
    while (*p) {
      while (*p == ' ') ++p;
      if (!*p) break;
      const char *e = p;
      while (*e && *e != ' ') ++e;
      char tok[128];
      size_t len = (size_t)(e - p);
      if (!LMF_CHECK(len < sizeof tok)) return 0;
      memcpy(tok, p, len);
      tok[len] = '\0';
      int32_t id = dt_id(names, n, tok);
      if (id < 0) return 0;
      b->ids[k++] = id;
      p = e;
    }
    b->offsets[s + 1] = k;
  }
  return 1;
}

void dt_batch_free(dt_batch *b) {
  free(b->offsets);
  free(b->ids);
  free(b->word_ids);
  memset(b, 0, sizeof *b);
}

lmf_status_t dt_merge(lmf_context_t *ctx, const lmf_vocab_t *vocab, const dt_batch *b, int32_t m,
                      int32_t boundary, const char *pattern, lmf_dyntok_result_t **out) {
  lmf_dyntok_config_t cfg;
  lmf_dyntok_batch_t bt;
  lmf_dyntok_config_init(&cfg, sizeof cfg);
  lmf_dyntok_batch_init(&bt, sizeof bt);
  cfg.max_merges = m;
  cfg.boundary = boundary;
  cfg.pattern = pattern;
  bt.num_seqs = b->B;
  bt.offsets = b->offsets;
  bt.ids = b->ids;
  bt.word_ids = b->word_ids;
  return lmf_dyntok_merge(ctx, vocab, &bt, &cfg, out);
}

/* ---- Results ------------------------------------------------------------------------------------ */

static int get_field(const lmf_dyntok_result_t *r, int32_t field, const void **p, int64_t want_count,
                     int32_t want_dtype, const char *name) {
  int64_t count = -1;
  int32_t dtype = -1;
  if (!LMF_CHECK_OK(lmf_dyntok_result_field(r, field, p, &count, &dtype))) return 0;
  int ok = LMF_CHECK_MSG(dtype == want_dtype, "field %s: dtype %d, expected %d", name, dtype, want_dtype);
  ok &= LMF_CHECK_MSG(count == want_count, "field %s: count %lld, expected %lld", name, (long long)count,
                      (long long)want_count);
  ok &= LMF_CHECK_MSG(*p != NULL, "field %s: NULL data", name);
  return ok;
}

int dt_view_get(dt_view *w, const lmf_dyntok_result_t *r, const lmf_vocab_t *vocab,
                const int64_t *in_offsets) {
  memset(w, 0, sizeof *w);
  if (!LMF_CHECK_OK(lmf_vocab_size(vocab, &w->V))) return 0;
  if (!LMF_CHECK_OK(lmf_dyntok_result_sizes(r, &w->B, &w->N, &w->num_merges, &w->num_new))) return 0;
  const void *p;
  int ok = 1;
#define DT_GET(field, member, count, dtype)                              \
  ok &= get_field(r, field, &p, count, dtype, #field);                   \
  w->member = p;
  DT_GET(LMF_DYNTOK_FIELD_OFFSETS, offsets, w->B + 1, LMF_DTYPE_I64)
  DT_GET(LMF_DYNTOK_FIELD_IDS, ids, w->N, LMF_DTYPE_I32)
  DT_GET(LMF_DYNTOK_FIELD_SPAN_START, span_start, w->N, LMF_DTYPE_I64)
  DT_GET(LMF_DYNTOK_FIELD_SPAN_LEN, span_len, w->N, LMF_DTYPE_I32)
  DT_GET(LMF_DYNTOK_FIELD_MERGE_PAIRS, merge_pairs, 2 * (int64_t)w->num_merges, LMF_DTYPE_I32)
  DT_GET(LMF_DYNTOK_FIELD_MERGE_RESULTS, merge_results, w->num_merges, LMF_DTYPE_I32)
  DT_GET(LMF_DYNTOK_FIELD_MERGE_COUNTS, merge_counts, w->num_merges, LMF_DTYPE_I64)
  DT_GET(LMF_DYNTOK_FIELD_NEW_OFFSETS, new_offsets, w->num_new + 1, LMF_DTYPE_I64)
  DT_GET(LMF_DYNTOK_FIELD_DECOMP_OFFSETS, decomp_offsets, w->num_new + 1, LMF_DTYPE_I64)
  if (!ok) return 0;
  DT_GET(LMF_DYNTOK_FIELD_NEW_BYTES, new_bytes, w->new_offsets[w->num_new], LMF_DTYPE_U8)
  DT_GET(LMF_DYNTOK_FIELD_DECOMP, decomp, w->decomp_offsets[w->num_new], LMF_DTYPE_I32)
#undef DT_GET
  if (!ok) return 0;
  /* Structure. */
  if (!LMF_CHECK_EQ_INT(w->offsets[0], 0) || !LMF_CHECK_EQ_INT(w->offsets[w->B], w->N)) return 0;
  if (!LMF_CHECK_EQ_INT(w->new_offsets[0], 0) || !LMF_CHECK_EQ_INT(w->decomp_offsets[0], 0)) return 0;
  for (int32_t k = 0; k < w->num_new; ++k) {
    /* A new token has >= 2 bytes and >= 2 base parts. */
    if (!LMF_CHECK_MSG(w->new_offsets[k + 1] - w->new_offsets[k] >= 2 &&
                           w->decomp_offsets[k + 1] - w->decomp_offsets[k] >= 2,
                       "new token %d: %lld bytes, %lld parts", k,
                       (long long)(w->new_offsets[k + 1] - w->new_offsets[k]),
                       (long long)(w->decomp_offsets[k + 1] - w->decomp_offsets[k])))
      return 0;
  }
  for (int64_t i = 0; i < w->decomp_offsets[w->num_new]; ++i)
    if (!LMF_CHECK_MSG(w->decomp[i] >= 0 && w->decomp[i] < w->V, "decomp[%lld] = %d is not a base id",
                       (long long)i, w->decomp[i]))
      return 0;
  for (int64_t s = 0; s < w->B; ++s) {
    if (!LMF_CHECK_MSG(w->offsets[s + 1] >= w->offsets[s], "offsets not monotone at %lld", (long long)s))
      return 0;
    int64_t pos = in_offsets[s];
    for (int64_t j = w->offsets[s]; j < w->offsets[s + 1]; ++j) {
      if (!LMF_CHECK_MSG(w->span_start[j] == pos && w->span_len[j] >= 1,
                         "seq %lld token %lld: span (%lld, %d), expected start %lld", (long long)s,
                         (long long)j, (long long)w->span_start[j], w->span_len[j], (long long)pos))
        return 0;
      if (!LMF_CHECK_MSG(w->ids[j] >= 0 && w->ids[j] < w->V + w->num_new, "ids[%lld] = %d out of range",
                         (long long)j, w->ids[j]))
        return 0;
      pos += w->span_len[j];
    }
    if (!LMF_CHECK_MSG(pos == in_offsets[s + 1], "seq %lld: spans end at %lld, the input at %lld",
                       (long long)s, (long long)pos, (long long)in_offsets[s + 1]))
      return 0;
  }
  return 1;
}

const uint8_t *dt_bytes(const lmf_vocab_t *vocab, const dt_view *w, int32_t id, int64_t *len) {
  if (id < w->V) {
    const uint8_t *b = NULL;
    *len = 0;
    lmf_vocab_token_bytes(vocab, id, &b, len);
    return b;
  }
  int32_t k = id - w->V;
  *len = w->new_offsets[k + 1] - w->new_offsets[k];
  return w->new_bytes + w->new_offsets[k];
}

static void render_token(const lmf_vocab_t *vocab, const dt_view *w, int32_t id, char *out, size_t cap) {
  int64_t len;
  const uint8_t *b = dt_bytes(vocab, w, id, &len);
  uint32_t flags = 0;
  if (id < w->V) lmf_vocab_token_flags(vocab, id, &flags);
  if (flags & LMF_TOKEN_SPECIAL) {
    size_t o = strlen(out);
    if (o + (size_t)len + 1 <= cap) {
      memcpy(out + o, b, (size_t)len);
      out[o + (size_t)len] = '\0';
    }
  } else {
    dt_gpt2_encode(b, len, out, cap);
  }
}

char *dt_render_seq(const lmf_vocab_t *vocab, const dt_view *w, int64_t s) {
  size_t cap = 64;
  for (int64_t j = w->offsets[s]; j < w->offsets[s + 1]; ++j) {
    int64_t len;
    dt_bytes(vocab, w, w->ids[j], &len);
    cap += 2 * (size_t)len + 2;
  }
  char *out = (char *)calloc(cap, 1);
  if (!out) return NULL;
  for (int64_t j = w->offsets[s]; j < w->offsets[s + 1]; ++j) {
    if (j > w->offsets[s]) strcat(out, " ");
    render_token(vocab, w, w->ids[j], out, cap);
  }
  return out;
}

char *dt_render_merges(const lmf_vocab_t *vocab, const dt_view *w) {
  size_t cap = 64;
  for (int32_t k = 0; k < w->num_merges; ++k) {
    int64_t la, lb;
    dt_bytes(vocab, w, w->merge_pairs[2 * k], &la);
    dt_bytes(vocab, w, w->merge_pairs[2 * k + 1], &lb);
    cap += 2 * (size_t)(la + lb) + 32;
  }
  char *out = (char *)calloc(cap, 1);
  if (!out) return NULL;
  for (int32_t k = 0; k < w->num_merges; ++k) {
    strcat(out, k ? " (" : "(");
    render_token(vocab, w, w->merge_pairs[2 * k], out, cap);
    strcat(out, ",");
    render_token(vocab, w, w->merge_pairs[2 * k + 1], out, cap);
    char num[32];
    snprintf(num, sizeof num, ",%lld)", (long long)w->merge_counts[k]);
    strcat(out, num);
  }
  return out;
}

static int same_i64(const int64_t *x, const int64_t *y, int64_t n, const char *field, const char *what) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] != y[i])
      return LMF_CHECK_MSG(0, "%s: %s[%lld] is %lld, expected %lld", what, field, (long long)i,
                           (long long)x[i], (long long)y[i]);
  return 1;
}

static int same_i32(const int32_t *x, const int32_t *y, int64_t n, const char *field, const char *what) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] != y[i])
      return LMF_CHECK_MSG(0, "%s: %s[%lld] is %d, expected %d", what, field, (long long)i, x[i], y[i]);
  return 1;
}

int dt_check_same_as_ref(const dt_view *w, const lmf_ref_dt_result *r, const char *what) {
  int ok = LMF_CHECK_MSG(w->B == r->num_seqs && w->N == r->num_tokens && w->num_merges == r->num_merges &&
                             w->num_new == r->num_new,
                         "%s: sizes (B %lld, tokens %lld, merges %d, new %d), reference (%lld, %lld, %d, "
                         "%d)", what, (long long)w->B, (long long)w->N, w->num_merges, w->num_new,
                         (long long)r->num_seqs, (long long)r->num_tokens, r->num_merges, r->num_new);
  /* The merge list first: the first differing merge says the most. */
  int32_t nm = w->num_merges < r->num_merges ? w->num_merges : r->num_merges;
  ok = ok && same_i32(w->merge_pairs, r->merge_pairs, 2 * (int64_t)nm, "merge_pairs", what);
  ok = ok && same_i32(w->merge_results, r->merge_results, nm, "merge_results", what);
  ok = ok && same_i64(w->merge_counts, r->merge_counts, nm, "merge_counts", what);
  if (!ok) return 0;
  ok = ok && same_i64(w->offsets, r->offsets, w->B + 1, "offsets", what);
  ok = ok && same_i32(w->ids, r->ids, w->N, "ids", what);
  ok = ok && same_i64(w->span_start, r->span_start, w->N, "span_start", what);
  ok = ok && same_i32(w->span_len, r->span_len, w->N, "span_len", what);
  ok = ok && same_i64(w->new_offsets, r->new_offsets, w->num_new + 1, "new_offsets", what);
  ok = ok && LMF_CHECK_MSG(memcmp(w->new_bytes, r->new_bytes, (size_t)w->new_offsets[w->num_new]) == 0,
                           "%s: new_bytes differ", what);
  ok = ok && same_i64(w->decomp_offsets, r->decomp_offsets, w->num_new + 1, "decomp_offsets", what);
  ok = ok && same_i32(w->decomp, r->decomp, w->decomp_offsets[w->num_new], "decomp", what);
  return ok;
}

int dt_check_same(const dt_view *x, const dt_view *y, const char *what) {
  int ok = LMF_CHECK_MSG(x->B == y->B && x->N == y->N && x->num_merges == y->num_merges &&
                             x->num_new == y->num_new, "%s: sizes differ", what);
  if (!ok) return 0;
  ok = ok && same_i32(x->merge_pairs, y->merge_pairs, 2 * (int64_t)x->num_merges, "merge_pairs", what);
  ok = ok && same_i32(x->merge_results, y->merge_results, x->num_merges, "merge_results", what);
  ok = ok && same_i64(x->merge_counts, y->merge_counts, x->num_merges, "merge_counts", what);
  ok = ok && same_i64(x->offsets, y->offsets, x->B + 1, "offsets", what);
  ok = ok && same_i32(x->ids, y->ids, x->N, "ids", what);
  ok = ok && same_i64(x->span_start, y->span_start, x->N, "span_start", what);
  ok = ok && same_i32(x->span_len, y->span_len, x->N, "span_len", what);
  ok = ok && same_i64(x->new_offsets, y->new_offsets, x->num_new + 1, "new_offsets", what);
  ok = ok && LMF_CHECK_MSG(memcmp(x->new_bytes, y->new_bytes, (size_t)x->new_offsets[x->num_new]) == 0,
                           "%s: new_bytes differ", what);
  ok = ok && same_i64(x->decomp_offsets, y->decomp_offsets, x->num_new + 1, "decomp_offsets", what);
  ok = ok && same_i32(x->decomp, y->decomp, x->decomp_offsets[x->num_new], "decomp", what);
  return ok;
}

/* ---- Real data ---------------------------------------------------------------------------------- */

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!LMF_CHECK_MSG(f != NULL, "cannot open %s", path)) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = (char *)malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (!LMF_CHECK_MSG(buf != NULL, "cannot read %s", path)) return NULL;
  buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

int dt_corpus_load(dt_corpus *c, const char *name, int batch) {
  memset(c, 0, sizeof *c);
  char path[1024];
  snprintf(path, sizeof path, "%s/multilingual/%s.jsonl", LMF_TEST_DATA_DIR, name);
  size_t len;
  char *buf = read_file(path, &len);
  if (!buf) return 0;
  int64_t cap[DT_MAX_LANGS] = {0};
  int ok = 1;
  char *line = buf;
  while (ok && line < buf + len) {
    char *end = strchr(line, '\n');
    if (end) *end = '\0';
    if (*line) {
      cJSON *j = cJSON_Parse(line);
      const cJSON *lang = cJSON_GetObjectItemCaseSensitive(j, "lang");
      const cJSON *ids = cJSON_GetObjectItemCaseSensitive(j, "ids");
      const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
      ok = LMF_CHECK_MSG(j && cJSON_IsString(lang) && cJSON_IsArray(ids) && cJSON_IsString(text),
                         "%s: a malformed line", path);
      int L = -1;
      for (int i = 0; ok && i < c->num_langs; ++i)
        if (strcmp(c->lang[i], lang->valuestring) == 0) L = i;
      if (ok && L < 0) {
        ok = LMF_CHECK(c->num_langs < DT_MAX_LANGS);
        if (ok) {
          L = c->num_langs++;
          snprintf(c->lang[L], sizeof c->lang[L], "%s", lang->valuestring);
          c->batch[L].offsets = (int64_t *)calloc((size_t)batch + 1, sizeof(int64_t));
          c->text[L] = (char **)calloc((size_t)batch, sizeof(char *));
          ok = LMF_CHECK(c->batch[L].offsets && c->text[L]);
        }
      }
      dt_batch *b = ok ? &c->batch[L] : NULL;
      if (ok && b->B < batch) {
        int k = cJSON_GetArraySize(ids);
        int64_t n = b->offsets[b->B];
        if (n + k > cap[L]) {
          cap[L] = 2 * (n + k) + 1024;
          int32_t *p = (int32_t *)realloc(b->ids, sizeof(int32_t) * (size_t)cap[L]);
          ok = LMF_CHECK(p != NULL);
          if (ok) b->ids = p;
        }
        const cJSON *e;
        cJSON_ArrayForEach(e, ids) if (ok) b->ids[n++] = (int32_t)e->valuedouble;
        c->text[L][b->B] = ok ? strdup(text->valuestring) : NULL;
        if (ok) b->offsets[++b->B] = n;
      }
      cJSON_Delete(j);
    }
    line = end ? end + 1 : buf + len;
  }
  free(buf);
  for (int L = 0; ok && L < c->num_langs; ++L)
    ok = LMF_CHECK_MSG(c->batch[L].B == batch, "%s: language %s has only %lld lines", name, c->lang[L],
                       (long long)c->batch[L].B);
  if (!ok) dt_corpus_free(c);
  return ok;
}

void dt_corpus_free(dt_corpus *c) {
  for (int L = 0; L < c->num_langs; ++L) {
    for (int64_t s = 0; c->text[L] && s < c->batch[L].B; ++s) free(c->text[L][s]);
    free(c->text[L]);
    dt_batch_free(&c->batch[L]);
  }
  memset(c, 0, sizeof *c);
}

lmf_vocab_t *dt_load_vocab(const char *name) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", LMF_TEST_DATA_DIR, name);
  lmf_vocab_t *v = NULL;
  if (!LMF_CHECK_OK(lmf_vocab_load_json(&v, path))) return NULL;
  return v;
}
