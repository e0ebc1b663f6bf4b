/* lmf_vocab_load_json / lmf_vocab_parse_json on the real tokenizer files (data/tokenizers) and on small
 * hand-written ones. Every expectation about the real files is derived here independently of the
 * library: the test reads tokenizer.json itself with cJSON and decodes each token string with its own
 * converter (GPT-2's byte-to-unicode table built the way GPT-2's Python code builds it; "▁" -> space and
 * "<0xNN>" -> byte for Mistral), and checks the token ids of data/multilingual/ (produced by
 * other tokenizers) against the texts. Bad inputs: truncated and garbage files, wrong types, a sparse
 * file over the size limit, missing paths; each leaves *out alone and sets lmf_last_error(). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/vocab.h"

#ifndef LMF_TEST_DATA_DIR
#error "LMF_TEST_DATA_DIR must name the repository's data/ directory"
#endif

#define MISTRAL_JSON LMF_TEST_DATA_DIR "/tokenizers/mistral-7b/tokenizer.json"
#define GPT4O_JSON LMF_TEST_DATA_DIR "/tokenizers/gpt-4o/tokenizer.json"
#define MISTRAL_JSONL LMF_TEST_DATA_DIR "/multilingual/mistral-7b.jsonl"
#define GPT4O_JSONL LMF_TEST_DATA_DIR "/multilingual/gpt-4o.jsonl"

/* ---- Helpers --------------------------------------------------------------------------------------- */

static char *read_all(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!LMF_CHECK_MSG(f != NULL, "cannot open %s: %s", path, strerror(errno))) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = (char *)lt_malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    LMF_CHECK_MSG(0, "short read of %s", path);
    free(buf);
    buf = NULL;
  }
  fclose(f);
  if (buf) buf[n] = '\0';
  *len = (size_t)n;
  return buf;
}

/* Writes len bytes to a new temporary file; its path goes to path (>= 64 bytes). */
static int write_temp(const void *data, size_t len, char *path) {
  strcpy(path, "/tmp/lmf_vocab_test_XXXXXX");
  int fd = mkstemp(path);
  if (!LMF_CHECK_MSG(fd >= 0, "mkstemp: %s", strerror(errno))) return 0;
  size_t done = 0;
  while (done < len) {
    ssize_t w = write(fd, (const char *)data + done, len - done);
    if (w <= 0) break;
    done += (size_t)w;
  }
  close(fd);
  return LMF_CHECK_MSG(done == len, "short write to %s", path);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static lmf_vocab_t *load(const char *path) {
  lmf_vocab_t *v = NULL;
  double t0 = now_ms();
  lmf_status_t st = lmf_vocab_load_json(&v, path);
  double t1 = now_ms();
  if (!LMF_CHECK_OK(st)) return NULL;
  lmf_t_note("loaded %s in %.1f ms", path, t1 - t0);
  return v;
}

static lmf_vocab_t *parse(const char *json) {
  lmf_vocab_t *v = NULL;
  if (!LMF_CHECK_OK(lmf_vocab_parse_json(&v, json, strlen(json)))) return NULL;
  return v;
}

static int32_t vsize(const lmf_vocab_t *v) {
  int32_t n = -1;
  LMF_CHECK_OK(lmf_vocab_size(v, &n));
  return n;
}

static int32_t vformat(const lmf_vocab_t *v) {
  int32_t f = -1;
  LMF_CHECK_OK(lmf_vocab_format(v, &f));
  return f;
}

static int32_t vmerges(const lmf_vocab_t *v) {
  int32_t n = -1;
  LMF_CHECK_OK(lmf_vocab_num_merges(v, &n));
  return n;
}

static uint32_t vflags(const lmf_vocab_t *v, int32_t id) {
  uint32_t f = 0xdead;
  LMF_CHECK_OK(lmf_vocab_token_flags(v, id, &f));
  return f;
}

static const uint8_t *vbytes(const lmf_vocab_t *v, int32_t id, int64_t *len) {
  const uint8_t *p = NULL;
  *len = -1;
  LMF_CHECK_OK(lmf_vocab_token_bytes(v, id, &p, len));
  return p;
}

/* 1 if token id's bytes are exactly s[0 .. len). */
static int tok_is(const lmf_vocab_t *v, int32_t id, const char *s, int64_t len) {
  int64_t l;
  const uint8_t *p = vbytes(v, id, &l);
  return p && l == len && (len == 0 || memcmp(p, s, (size_t)len) == 0);
}
#define TOK_IS(v, id, lit) tok_is((v), (id), (lit), (int64_t)sizeof(lit) - 1)

static int32_t vfind(const lmf_vocab_t *v, const char *s, int64_t len) {
  int32_t id = -7;
  LMF_CHECK_OK(lmf_vocab_find(v, (const uint8_t *)s, len, &id));
  return id;
}
#define FIND(v, lit) vfind((v), (lit), (int64_t)sizeof(lit) - 1)

/* GPT-2's bytes_to_unicode(), as its Python builds it: bs = printable ranges; then every other byte b
 * in order is appended with code point 256 + n. Returns the byte of a code point, or -1. */
typedef struct bl_map {
  int byte_of[512];
  uint32_t cp_of[256];
} bl_map;

static void bl_build(bl_map *m) {
  int bs[256], cs[256], nb = 0;
  for (int b = '!'; b <= '~'; ++b) bs[nb++] = b;
  for (int b = 0xA1; b <= 0xAC; ++b) bs[nb++] = b;
  for (int b = 0xAE; b <= 0xFF; ++b) bs[nb++] = b;
  for (int i = 0; i < nb; ++i) cs[i] = bs[i];
  int n = 0, total = nb;
  for (int b = 0; b < 256; ++b) {
    int in = 0;
    for (int i = 0; i < nb; ++i) in |= bs[i] == b;
    if (!in) {
      bs[total] = b;
      cs[total] = 256 + n;
      ++total;
      ++n;
    }
  }
  for (int i = 0; i < 512; ++i) m->byte_of[i] = -1;
  for (int i = 0; i < 256; ++i) {
    m->byte_of[cs[i]] = bs[i];
    m->cp_of[bs[i]] = (uint32_t)cs[i];
  }
}

/* Decodes UTF-8 s (one code point at a time, any length) through the map; -1 on a failure. */
static int64_t bl_decode(const bl_map *m, const char *s, uint8_t *out) {
  int64_t o = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p) {
    uint32_t cp;
    int n;
    if (*p < 0x80) {
      cp = *p;
      n = 1;
    } else if ((*p >> 5) == 6) {
      cp = *p & 0x1F;
      n = 2;
    } else if ((*p >> 4) == 14) {
      cp = *p & 0x0F;
      n = 3;
    } else {
      cp = *p & 0x07;
      n = 4;
    }
    for (int k = 1; k < n; ++k) {
      if ((p[k] & 0xC0) != 0x80) return -1;
      cp = (cp << 6) | (p[k] & 0x3F);
    }
    p += n;
    if (cp >= 512 || m->byte_of[cp] < 0) return -1;
    out[o++] = (uint8_t)m->byte_of[cp];
  }
  return o;
}

/* Encodes one byte as its GPT-2 character (UTF-8) into out; returns the length. */
static int bl_encode(const bl_map *m, uint8_t b, char *out) {
  uint32_t cp = m->cp_of[b];
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | (cp >> 6));
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

/* Mistral: "▁" -> " " everywhere, a token "<0xNN>" -> byte NN (*fallback = 1). */
static int64_t ms_decode(const char *s, uint8_t *out, int *fallback) {
  size_t n = strlen(s);
  *fallback = 0;
  if (n == 6 && strncmp(s, "<0x", 3) == 0 && s[5] == '>') {
    unsigned v;
    char hex[3] = {s[3], s[4], 0};
    if (sscanf(hex, "%2x", &v) == 1) {
      out[0] = (uint8_t)v;
      *fallback = 1;
      return 1;
    }
  }
  int64_t o = 0;
  for (size_t i = 0; i < n;) {
    if (i + 3 <= n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 &&
        (unsigned char)s[i + 2] == 0x81) {
      out[o++] = ' ';
      i += 3;
    } else {
      out[o++] = (uint8_t)s[i++];
    }
  }
  return o;
}

/* The file's own view: id -> token string (vocab), special flags from added_tokens. */
typedef struct file_view {
  cJSON *root;
  int32_t size;         /* max id + 1 */
  int64_t num_vocab;    /* entries in model.vocab */
  const char **str;     /* [size] vocab string or added content, NULL for holes */
  uint8_t *special;     /* [size] */
  uint8_t *added;       /* [size] */
  const cJSON *merges;
} file_view;

static void fv_free(file_view *f) {
  cJSON_Delete(f->root);
  free(f->str);
  free(f->special);
  free(f->added);
  memset(f, 0, sizeof *f);
}

static int fv_load(file_view *f, const char *path) {
  memset(f, 0, sizeof *f);
  size_t len;
  char *text = read_all(path, &len);
  if (!text) return 0;
  f->root = cJSON_Parse(text);
  free(text);
  if (!LMF_CHECK_MSG(f->root != NULL, "test-side cJSON cannot parse %s", path)) return 0;
  const cJSON *model = cJSON_GetObjectItem(f->root, "model");
  const cJSON *vocab = cJSON_GetObjectItem(model, "vocab");
  const cJSON *added = cJSON_GetObjectItem(f->root, "added_tokens");
  f->merges = cJSON_GetObjectItem(model, "merges");
  int32_t max_id = -1;
  const cJSON *it;
  cJSON_ArrayForEach(it, vocab) {
    if ((int32_t)it->valuedouble > max_id) max_id = (int32_t)it->valuedouble;
    f->num_vocab++;
  }
  cJSON_ArrayForEach(it, added) {
    int32_t id = (int32_t)cJSON_GetObjectItem(it, "id")->valuedouble;
    if (id > max_id) max_id = id;
  }
  f->size = max_id + 1;
  f->str = (const char **)calloc((size_t)f->size, sizeof *f->str);
  f->special = (uint8_t *)calloc((size_t)f->size, 1);
  f->added = (uint8_t *)calloc((size_t)f->size, 1);
  if (!LMF_CHECK(f->str && f->special && f->added)) return 0;
  cJSON_ArrayForEach(it, vocab) f->str[(int32_t)it->valuedouble] = it->string;
  cJSON_ArrayForEach(it, added) {
    int32_t id = (int32_t)cJSON_GetObjectItem(it, "id")->valuedouble;
    f->str[id] = cJSON_GetObjectItem(it, "content")->valuestring;
    f->special[id] = (uint8_t)cJSON_IsTrue(cJSON_GetObjectItem(it, "special"));
    f->added[id] = 1;
  }
  return 1;
}

/* The id of a string in model.vocab (linear: for a few spot checks only). */
static int32_t fv_id(const file_view *f, const char *s) {
  const cJSON *it = cJSON_GetObjectItemCaseSensitive(
      cJSON_GetObjectItem(cJSON_GetObjectItem(f->root, "model"), "vocab"), s);
  return it ? (int32_t)it->valuedouble : -1;
}

/* ---- Canonical lookup over a whole vocabulary: sort (bytes, fallback, id), one group per string -------- */

typedef struct canon_entry {
  const uint8_t *p;
  int64_t len;
  int32_t id;
  uint32_t fb;
} canon_entry;

static int canon_cmp(const void *a, const void *b) {
  const canon_entry *x = (const canon_entry *)a, *y = (const canon_entry *)b;
  int64_t m = x->len < y->len ? x->len : y->len;
  int c = m ? memcmp(x->p, y->p, (size_t)m) : 0;
  if (c) return c;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  if (x->fb != y->fb) return x->fb < y->fb ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

/* Checks lmf_vocab_find on every token's bytes against the sorted groups; returns mismatches. */
static int check_canonical(const lmf_vocab_t *v) {
  int32_t n = vsize(v);
  canon_entry *e = (canon_entry *)lt_malloc((size_t)n * sizeof *e);
  if (!e) return 1;
  int32_t k = 0;
  for (int32_t id = 0; id < n; ++id) {
    uint32_t f = vflags(v, id);
    if (f & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)) continue;
    e[k].p = vbytes(v, id, &e[k].len);
    e[k].id = id;
    e[k].fb = (f & LMF_TOKEN_BYTE_FALLBACK) ? 1u : 0u;
    ++k;
  }
  qsort(e, (size_t)k, sizeof *e, canon_cmp);
  int bad = 0, shared = 0;
  for (int32_t i = 0; i < k;) {
    int32_t j = i + 1;
    while (j < k && e[j].len == e[i].len && memcmp(e[j].p, e[i].p, (size_t)e[i].len) == 0) ++j;
    if (j - i > 1) ++shared;
    int32_t got = -7;
    LMF_CHECK_OK(lmf_vocab_find(v, e[i].p, e[i].len, &got));
    if (got != e[i].id && bad++ < 5)
      LMF_CHECK_MSG(0, "find(bytes of id %d) = %d, want %d", e[j - 1].id, got, e[i].id);
    i = j;
  }
  lmf_t_note("%d byte strings are shared by several ids", shared);
  free(e);
  return bad;
}

/* Every token of the file, decoded here, against the library; every merge against the file's strings and
 * the bytes. format: LMF_VOCAB_FORMAT_BYTE_LEVEL or _METASPACE (with byte fallback). */
static void check_whole_file(const char *path, int32_t format) {
  file_view f;
  lmf_vocab_t *v = NULL;
  uint8_t *buf = NULL;
  if (!fv_load(&f, path)) goto done;
  v = load(path);
  if (!v) goto done;
  LMF_CHECK_EQ_INT(vsize(v), f.size);
  LMF_CHECK_EQ_INT(vformat(v), format);
  bl_map m;
  bl_build(&m);
  buf = (uint8_t *)lt_malloc(4096);
  if (!buf) goto done;
  int bad = 0, holes = 0, specials = 0, fallbacks = 0;
  for (int32_t id = 0; id < f.size && bad < 10; ++id) {
    uint32_t flags = vflags(v, id);
    int64_t len;
    const uint8_t *p = vbytes(v, id, &len);
    if (!f.str[id]) {
      ++holes;
      if (!LMF_CHECK_MSG(flags == LMF_TOKEN_UNUSED && len == 0, "hole %d: flags %u, %lld bytes", id, flags,
                         (long long)len))
        ++bad;
      continue;
    }
    int64_t want_len;
    uint32_t want_flags = 0;
    if (f.added[id]) {
      want_len = (int64_t)strlen(f.str[id]);
      memcpy(buf, f.str[id], (size_t)want_len);
      want_flags = f.special[id] ? LMF_TOKEN_SPECIAL : 0u;
    } else if (format == LMF_VOCAB_FORMAT_BYTE_LEVEL) {
      want_len = bl_decode(&m, f.str[id], buf);
    } else {
      int fb;
      want_len = ms_decode(f.str[id], buf, &fb);
      want_flags = fb ? LMF_TOKEN_BYTE_FALLBACK : 0u;
    }
    specials += (want_flags & LMF_TOKEN_SPECIAL) != 0;
    fallbacks += (want_flags & LMF_TOKEN_BYTE_FALLBACK) != 0;
    if (!LMF_CHECK_MSG(want_len >= 0 && flags == want_flags && len == want_len &&
                           (len == 0 || memcmp(p, buf, (size_t)len) == 0),
                       "token %d \"%s\": flags %u (want %u), %lld bytes (want %lld) or content differ", id,
                       f.str[id], flags, want_flags, (long long)len, (long long)want_len))
      ++bad;
  }
  lmf_t_note("%s: %d ids, %d holes, %d special, %d byte-fallback", path, f.size, holes, specials, fallbacks);

  /* Merges: the file's strings, and result bytes = left bytes + right bytes. */
  int32_t nm = vmerges(v);
  LMF_CHECK_EQ_INT(nm, cJSON_GetArraySize(f.merges));
  int32_t r = 0;
  const cJSON *it;
  bad = 0;
  cJSON_ArrayForEach(it, f.merges) {
    if (r >= nm || bad >= 10) break;
    int32_t l = -1, rt = -1, res = -1;
    LMF_CHECK_OK(lmf_vocab_merge(v, r, &l, &rt, &res));
    if (!LMF_CHECK(l >= 0 && rt >= 0 && res >= 0 && l < f.size && rt < f.size && res < f.size)) {
      ++bad;
      continue;
    }
    char want[1024];
    const char *ms = cJSON_IsString(it) ? it->valuestring : NULL;
    if (ms) {
      snprintf(want, sizeof want, "%s %s", f.str[l], f.str[rt]);
    } else {
      snprintf(want, sizeof want, "%s", cJSON_GetArrayItem(it, 0)->valuestring);
      ms = want;
      LMF_CHECK_STR_EQ(f.str[rt], cJSON_GetArrayItem(it, 1)->valuestring);
    }
    char cat[1024];
    snprintf(cat, sizeof cat, "%s%s", f.str[l], f.str[rt]);
    int64_t ll, rl, xl;
    const uint8_t *lb = vbytes(v, l, &ll), *rb = vbytes(v, rt, &rl), *xb = vbytes(v, res, &xl);
    int ok = strcmp(want, ms) == 0 && strcmp(cat, f.str[res]) == 0 && xl == ll + rl && ll > 0 && rl > 0 &&
             memcmp(xb, lb, (size_t)ll) == 0 && memcmp(xb + ll, rb, (size_t)rl) == 0;
    if (!LMF_CHECK_MSG(ok, "merge %d: file \"%s\", library (%d \"%s\", %d \"%s\") -> %d \"%s\"", r, ms, l,
                       f.str[l], rt, f.str[rt], res, f.str[res]))
      ++bad;
    ++r;
  }
  LMF_CHECK_EQ_INT(check_canonical(v), 0);
done:
  free(buf);
  lmf_vocab_destroy(v);
  fv_free(&f);
}

/* ---- Real files ------------------------------------------------------------------------------------ */

void test_vocab_json_mistral(void) {
  file_view f;
  if (!fv_load(&f, MISTRAL_JSON)) return;
  lmf_vocab_t *v = load(MISTRAL_JSON);
  if (!v) {
    fv_free(&f);
    return;
  }
  LMF_CHECK_EQ_INT(vsize(v), 32000);
  LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_METASPACE);
  LMF_CHECK_EQ_INT(vmerges(v), 58980);
  const char *pat = "sentinel";
  LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pat));
  LMF_CHECK(pat == NULL);
  /* Specials keep their text. */
  LMF_CHECK(TOK_IS(v, 0, "<unk>") && TOK_IS(v, 1, "<s>") && TOK_IS(v, 2, "</s>"));
  for (int32_t id = 0; id < 3; ++id) LMF_CHECK_EQ_INT(vflags(v, id), LMF_TOKEN_SPECIAL);
  LMF_CHECK_EQ_INT(FIND(v, "<s>"), -1);
  /* "▁the" is " the", id 272 (Mistral-7B's well-known id, and the file's). */
  LMF_CHECK_EQ_INT(fv_id(&f, "\xE2\x96\x81the"), 272);
  LMF_CHECK(TOK_IS(v, 272, " the"));
  LMF_CHECK_EQ_INT(vflags(v, 272), 0);
  LMF_CHECK_EQ_INT(FIND(v, " the"), 272);
  /* "<0x0A>" is "\n", a byte-fallback token; no other token is "\n", so it is canonical. */
  int32_t nl = fv_id(&f, "<0x0A>");
  LMF_REQUIRE(nl >= 0);
  LMF_CHECK(TOK_IS(v, nl, "\n"));
  LMF_CHECK_EQ_INT(vflags(v, nl), LMF_TOKEN_BYTE_FALLBACK);
  LMF_CHECK_EQ_INT(FIND(v, "\n"), nl);
  /* "A" exists both as "<0x41>" and as "A": the normal token is canonical. */
  int32_t fbA = fv_id(&f, "<0x41>"), A = fv_id(&f, "A");
  LMF_CHECK(fbA >= 0 && A >= 0 && fbA != A);
  LMF_CHECK(TOK_IS(v, fbA, "A") && TOK_IS(v, A, "A"));
  LMF_CHECK_EQ_INT(FIND(v, "A"), A);
  /* "▁" alone is a space. */
  int32_t sp = fv_id(&f, "\xE2\x96\x81");
  LMF_CHECK(sp >= 0 && TOK_IS(v, sp, " "));
  LMF_CHECK_EQ_INT(FIND(v, " "), sp);
  lmf_vocab_destroy(v);
  fv_free(&f);
}

void test_vocab_json_gpt4o(void) {
  file_view f;
  if (!fv_load(&f, GPT4O_JSON)) return;
  lmf_vocab_t *v = load(GPT4O_JSON);
  if (!v) {
    fv_free(&f);
    return;
  }
  LMF_CHECK_EQ_INT(f.num_vocab, 200000);
  LMF_CHECK_EQ_INT(vsize(v), 200019);
  LMF_CHECK_EQ_INT(vsize(v), f.size);
  LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_BYTE_LEVEL);
  LMF_CHECK_EQ_INT(vmerges(v), 199742);
  /* The Split regex, exactly as the file spells it. */
  const cJSON *pre = cJSON_GetObjectItem(f.root, "pre_tokenizer");
  const cJSON *split = cJSON_GetArrayItem(cJSON_GetObjectItem(pre, "pretokenizers"), 0);
  const cJSON *rx = cJSON_GetObjectItem(cJSON_GetObjectItem(split, "pattern"), "Regex");
  LMF_REQUIRE(cJSON_IsString(rx));
  const char *pat = NULL;
  LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pat));
  LMF_REQUIRE(pat != NULL);
  LMF_CHECK_STR_EQ(pat, rx->valuestring);
  /* Specials, holes. */
  int32_t specials = 0, unused = 0;
  for (int32_t id = 0; id < vsize(v); ++id) {
    uint32_t fl = vflags(v, id);
    specials += (fl & LMF_TOKEN_SPECIAL) != 0;
    unused += (fl & LMF_TOKEN_UNUSED) != 0;
  }
  LMF_CHECK_EQ_INT(specials, 2);
  LMF_CHECK_EQ_INT(unused, 19);
  LMF_CHECK(TOK_IS(v, 199999, "<|endoftext|>") && TOK_IS(v, 200018, "<|endofprompt|>"));
  LMF_CHECK_EQ_INT(vflags(v, 199999), LMF_TOKEN_SPECIAL);
  LMF_CHECK_EQ_INT(FIND(v, "<|endoftext|>"), -1);
  /* "Ġ" = " ", "Ċ" = "\n", "ĉ" = "\t", "Ġthe" = " the". */
  int32_t g = fv_id(&f, "\xC4\xA0"), c = fv_id(&f, "\xC4\x8A"), t = fv_id(&f, "\xC4\x89");
  int32_t the = fv_id(&f, "\xC4\xA0the");
  LMF_REQUIRE(g >= 0 && c >= 0 && t >= 0 && the >= 0);
  LMF_CHECK(TOK_IS(v, g, " ") && TOK_IS(v, c, "\n") && TOK_IS(v, t, "\t") && TOK_IS(v, the, " the"));
  LMF_CHECK_EQ_INT(FIND(v, " "), g);
  LMF_CHECK_EQ_INT(FIND(v, "\n"), c);
  LMF_CHECK_EQ_INT(FIND(v, " the"), the);
  /* A byte-level vocabulary has all 256 single bytes. */
  int missing = 0;
  for (int b = 0; b < 256; ++b) {
    char s = (char)b;
    if (vfind(v, &s, 1) < 0) ++missing;
  }
  LMF_CHECK_EQ_INT(missing, 0);
  lmf_vocab_destroy(v);
  fv_free(&f);
}

void test_vocab_json_mistral_every_token_and_merge(void) {
  check_whole_file(MISTRAL_JSON, LMF_VOCAB_FORMAT_METASPACE);
}

void test_vocab_json_gpt4o_every_token_and_merge(void) {
  check_whole_file(GPT4O_JSON, LMF_VOCAB_FORMAT_BYTE_LEVEL);
}

/* Every line of the multilingual data: the bytes of `ids` concatenate to the UTF-8 text (Mistral: with
 * the leading space of the prepended "▁", as all 3000 lines show), and each id's bytes are what the
 * line's own token string decodes to. */
static void check_jsonl(const char *json_path, const char *jsonl_path, int metaspace) {
  lmf_vocab_t *v = load(json_path);
  if (!v) return;
  FILE *fp = fopen(jsonl_path, "r");
  if (!LMF_CHECK_MSG(fp != NULL, "cannot open %s", jsonl_path)) {
    lmf_vocab_destroy(v);
    return;
  }
  bl_map m;
  bl_build(&m);
  char *line = NULL;
  size_t cap = 0;
  int lines = 0, bad = 0;
  long long tokens = 0;
  uint8_t *cat = NULL;
  size_t cat_cap = 0;
  while (getline(&line, &cap, fp) > 0 && bad < 5) {
    cJSON *d = cJSON_Parse(line);
    if (!LMF_CHECK_MSG(d != NULL, "%s line %d is not JSON", jsonl_path, lines + 1)) break;
    ++lines;
    const cJSON *text = cJSON_GetObjectItem(d, "text"), *ids = cJSON_GetObjectItem(d, "ids"),
                *toks = cJSON_GetObjectItem(d, "tokens");
    LMF_CHECK(cJSON_IsString(text) && cJSON_IsArray(ids) && cJSON_IsArray(toks) &&
              cJSON_GetArraySize(ids) == cJSON_GetArraySize(toks));
    size_t tl = strlen(text->valuestring);
    if (cat_cap < tl + 16) {
      free(cat);
      cat_cap = 2 * tl + 16;
      cat = (uint8_t *)lt_malloc(cat_cap);
      if (!cat) {
        cJSON_Delete(d);
        break;
      }
    }
    size_t o = 0;
    int over = 0;
    const cJSON *id_it, *tok_it = toks->child;
    cJSON_ArrayForEach(id_it, ids) {
      int32_t id = (int32_t)id_it->valuedouble;
      int64_t len;
      const uint8_t *p = vbytes(v, id, &len);
      if (!p) {
        over = 1;
        break;
      }
      uint8_t want[4096];
      int fb = 0;
      int64_t wl = metaspace ? ms_decode(tok_it->valuestring, want, &fb) : bl_decode(&m, tok_it->valuestring, want);
      if (!LMF_CHECK_MSG(wl == len && memcmp(want, p, (size_t)len) == 0,
                         "%s line %d: id %d is not what its token \"%s\" decodes to", jsonl_path, lines, id,
                         tok_it->valuestring))
        ++bad;
      if (o + (size_t)len > cat_cap) {
        over = 1;
        break;
      }
      memcpy(cat + o, p, (size_t)len);
      o += (size_t)len;
      tok_it = tok_it->next;
      ++tokens;
    }
    const char *want = text->valuestring;
    int ok = !over && (metaspace ? (o == tl + 1 && cat[0] == ' ' && memcmp(cat + 1, want, tl) == 0)
                                 : (o == tl && memcmp(cat, want, tl) == 0));
    if (!LMF_CHECK_MSG(ok, "%s line %d: the ids' bytes (%zu) do not spell the text (%zu bytes): %s", jsonl_path,
                       lines, o, tl, want))
      ++bad;
    cJSON_Delete(d);
  }
  LMF_CHECK_EQ_INT(lines, 3000);
  lmf_t_note("%s: %d lines, %lld tokens", jsonl_path, lines, tokens);
  free(cat);
  free(line);
  fclose(fp);
  lmf_vocab_destroy(v);
}

void test_vocab_json_mistral_round_trip(void) { check_jsonl(MISTRAL_JSON, MISTRAL_JSONL, 1); }

void test_vocab_json_gpt4o_round_trip(void) { check_jsonl(GPT4O_JSON, GPT4O_JSONL, 0); }

/* ---- Small files: the conventions one at a time ------------------------------------------------------------ */

void test_vocab_json_metaspace_byte_fallback(void) {
  /* byte_fallback true: "<0x41>" and lowercase "<0x0a>" are bytes. */
  lmf_vocab_t *v = parse(
      "{\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"},"
      "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,"
      "\"vocab\":{\"<0x41>\":0,\"<0x0a>\":1,\"\\u2581a\":2,\"A\":3,\"<0x4\":4,\"1>\":5,\"<0xZZ>\":6}}}");
  if (v) {
    LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_METASPACE);
    LMF_CHECK(TOK_IS(v, 0, "A") && TOK_IS(v, 1, "\n") && TOK_IS(v, 2, " a") && TOK_IS(v, 3, "A"));
    LMF_CHECK(TOK_IS(v, 4, "<0x4") && TOK_IS(v, 6, "<0xZZ>"));
    LMF_CHECK_EQ_INT(vflags(v, 0), LMF_TOKEN_BYTE_FALLBACK);
    LMF_CHECK_EQ_INT(vflags(v, 1), LMF_TOKEN_BYTE_FALLBACK);
    LMF_CHECK_EQ_INT(vflags(v, 6), 0);
    LMF_CHECK_EQ_INT(FIND(v, "A"), 3);
    LMF_CHECK_EQ_INT(vmerges(v), 0);
    lmf_vocab_destroy(v);
  }
  /* No byte_fallback and no ByteFallback decoder: "<0x41>" is its own text. */
  v = parse("{\"decoder\":{\"type\":\"Metaspace\"},"
            "\"model\":{\"type\":\"BPE\",\"byte_fallback\":false,\"vocab\":{\"<0x41>\":0,\"\\u2581x\":1}}}");
  if (v) {
    LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_METASPACE);
    LMF_CHECK(TOK_IS(v, 0, "<0x41>") && TOK_IS(v, 1, " x"));
    LMF_CHECK_EQ_INT(vflags(v, 0), 0);
    lmf_vocab_destroy(v);
  }
  /* A ByteFallback decoder step alone turns it on; Metaspace with its own replacement character. */
  v = parse("{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\"},"
            "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},"
            "\"model\":{\"type\":\"BPE\",\"vocab\":{\"<0x41>\":0,\"_x_\":1,\"\\u2581\":2}}}");
  if (v) {
    LMF_CHECK(TOK_IS(v, 0, "A") && TOK_IS(v, 1, " x ") && TOK_IS(v, 2, "\xE2\x96\x81"));
    LMF_CHECK_EQ_INT(vflags(v, 0), LMF_TOKEN_BYTE_FALLBACK);
    lmf_vocab_destroy(v);
  }
  /* Raw: nothing converted, not even "▁". */
  v = parse("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u2581a\":0,\"<0x41>\":1}}}");
  if (v) {
    LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_RAW);
    LMF_CHECK(TOK_IS(v, 0, "\xE2\x96\x81" "a") && TOK_IS(v, 1, "<0x41>"));
    lmf_vocab_destroy(v);
  }
}

void test_vocab_json_byte_level_all_bytes(void) {
  /* A vocabulary of the 256 single-byte characters in scrambled id order, plus a few merges. */
  bl_map m;
  bl_build(&m);
  cJSON *root = cJSON_CreateObject();
  cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
  cJSON_AddStringToObject(pre, "type", "ByteLevel");
  cJSON *model = cJSON_AddObjectToObject(root, "model");
  cJSON_AddStringToObject(model, "type", "BPE");
  cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
  char s[8];
  for (int b = 0; b < 256; ++b) {
    int id = (b * 37 + 11) % 256;
    int n = bl_encode(&m, (uint8_t)b, s);
    s[n] = '\0';
    cJSON_AddNumberToObject(vocab, s, id);
  }
  cJSON_AddNumberToObject(vocab, "\xC4\xA0\xC4\x8A", 256); /* " \n" */
  cJSON_AddNumberToObject(vocab, "\xC4\xA0\xC4\x8A\xC4\x80", 257); /* " \n\0" */
  cJSON *merges = cJSON_AddArrayToObject(model, "merges");
  cJSON_AddItemToArray(merges, cJSON_CreateString("\xC4\xA0 \xC4\x8A"));
  const char *pair[2] = {"\xC4\xA0\xC4\x8A", "\xC4\x80"};
  cJSON_AddItemToArray(merges, cJSON_CreateStringArray(pair, 2));
  char *json = cJSON_PrintUnformatted(root);
  cJSON_Delete(root);
  LMF_REQUIRE(json != NULL);
  lmf_vocab_t *v = parse(json);
  free(json);
  if (!v) return;
  LMF_CHECK_EQ_INT(vsize(v), 258);
  LMF_CHECK_EQ_INT(vformat(v), LMF_VOCAB_FORMAT_BYTE_LEVEL);
  for (int b = 0; b < 256; ++b) {
    int id = (b * 37 + 11) % 256;
    char c = (char)b;
    LMF_CHECK_MSG(tok_is(v, id, &c, 1), "byte %d (id %d) did not decode to itself", b, id);
    LMF_CHECK_EQ_INT(vfind(v, &c, 1), id);
  }
  LMF_CHECK(TOK_IS(v, 257, " \n\0"));
  int32_t l, r, res;
  LMF_CHECK_OK(lmf_vocab_merge(v, 0, &l, &r, &res));
  LMF_CHECK(l == (32 * 37 + 11) % 256 && r == (10 * 37 + 11) % 256 && res == 256);
  LMF_CHECK_OK(lmf_vocab_merge(v, 1, &l, &r, &res));
  LMF_CHECK(l == 256 && r == 11 && res == 257);
  lmf_vocab_destroy(v);
}

void test_vocab_json_added_tokens(void) {
  /* Specials keep their text; a non-special added token is a normal token with its literal text
   * (here "Ġx" stays "Ġx" although the vocabulary is byte-level); ids not named are holes; an added
   * token beyond model.vocab extends the size. */
  lmf_vocab_t *v = parse(
      "{\"added_tokens\":[{\"id\":9,\"content\":\"<|end|>\",\"special\":true},"
      "{\"id\":0,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
      "{\"id\":6,\"content\":\"\\u0120x\",\"special\":false}],"
      "\"decoder\":{\"type\":\"ByteLevel\"},"
      "\"model\":{\"type\":\"BPE\",\"vocab\":{\"<s>\":0,\"a\":1,\"b\":2,\"ab\":4,\"\\u0120\":5},"
      "\"merges\":[[\"a\",\"b\"]]}}");
  if (v) {
    LMF_CHECK_EQ_INT(vsize(v), 10);
    LMF_CHECK(TOK_IS(v, 0, "<s>") && TOK_IS(v, 9, "<|end|>") && TOK_IS(v, 5, " "));
    LMF_CHECK(TOK_IS(v, 6, "\xC4\xA0x"));
    LMF_CHECK_EQ_INT(vflags(v, 0), LMF_TOKEN_SPECIAL);
    LMF_CHECK_EQ_INT(vflags(v, 9), LMF_TOKEN_SPECIAL);
    LMF_CHECK_EQ_INT(vflags(v, 6), 0);
    LMF_CHECK_EQ_INT(FIND(v, "\xC4\xA0x"), 6);
    for (int id = 3; id < 9; id += 4) {
      LMF_CHECK_EQ_INT(vflags(v, id), LMF_TOKEN_UNUSED);
      LMF_CHECK(TOK_IS(v, id, ""));
    }
    LMF_CHECK_EQ_INT(vflags(v, 7), LMF_TOKEN_UNUSED);
    LMF_CHECK_EQ_INT(vmerges(v), 1);
    lmf_vocab_destroy(v);
  }
  /* A normalized non-special added token in a file whose normalizer writes spaces as "▁" stands for
   * the text with spaces; a non-normalized one for its literal text. */
  v = parse("{\"added_tokens\":[{\"id\":1,\"content\":\"\\u2581hi\",\"special\":false,\"normalized\":true},"
            "{\"id\":2,\"content\":\"\\u2581yo\",\"special\":false,\"normalized\":false},"
            "{\"id\":3,\"content\":\"<\\u2581s>\",\"special\":true,\"normalized\":true}],"
            "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
            "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
            "\"model\":{\"type\":\"BPE\",\"vocab\":{\"x\":0}}}");
  if (v) {
    LMF_CHECK(TOK_IS(v, 1, " hi") && TOK_IS(v, 2, "\xE2\x96\x81yo"));
    /* Specials always keep their literal text. */
    LMF_CHECK(TOK_IS(v, 3, "<\xE2\x96\x81s>"));
    LMF_CHECK_EQ_INT(vflags(v, 3), LMF_TOKEN_SPECIAL);
    lmf_vocab_destroy(v);
  }
  /* No "type" but "merges": read as BPE (HF's untagged form); a Split regex inside a Sequence is kept, a
   * Split with a String pattern is not. */
  v = parse("{\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
            "{\"String\":\"x\"}},{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+|\\\\w+\"}},"
            "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"second\"}}]},"
            "\"model\":{\"vocab\":{\"a\":0},\"merges\":[]}}");
  if (v) {
    const char *pat = NULL;
    LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pat));
    LMF_CHECK(pat && strcmp(pat, "\\s+|\\w+") == 0);
    lmf_vocab_destroy(v);
  }
}

/* ---- Bad input -------------------------------------------------------------------------------------------- */

typedef struct bad_case {
  const char *json;
  lmf_status_t status;
  const char *needle;
} bad_case;

/* M(body): the model member, closing the top-level object too: write "{" M(...) or "{...," M(...). */
#define M(body) "\"model\":{\"type\":\"BPE\"," body "}}"
static const bad_case k_bad[] = {
    {"", LMF_ERR_PARSE, "not valid JSON"},
    {"{", LMF_ERR_PARSE, "not valid JSON"},
    {"garbage", LMF_ERR_PARSE, "not valid JSON"},
    {"{\"model\":{}} trailing", LMF_ERR_PARSE, "after the top-level value"},
    {"[1,2]", LMF_ERR_PARSE, "not an object"},
    {"{}", LMF_ERR_PARSE, "no \"model\""},
    {"{\"model\":[]}", LMF_ERR_PARSE, "\"model\" is not an object"},
    {"{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}", LMF_ERR_PARSE, "WordPiece"},
    {"{\"model\":{\"type\":3,\"vocab\":{\"a\":0}}}", LMF_ERR_PARSE, "model.type"},
    {"{\"model\":{\"vocab\":{\"a\":0}}}", LMF_ERR_PARSE, "type"},
    {"{" M("\"vocab\":[]"), LMF_ERR_PARSE, "model.vocab is not an object"},
    {"{" M("\"merges\":[]"), LMF_ERR_PARSE, "model.vocab is missing"},
    {"{" M("\"vocab\":{}"), LMF_ERR_PARSE, "no token"},
    {"{" M("\"vocab\":{\"a\":\"0\"}"), LMF_ERR_PARSE, "\"a\" is not a number"},
    {"{" M("\"vocab\":{\"a\":1.5}"), LMF_ERR_PARSE, "\"a\" is not an integer"},
    {"{" M("\"vocab\":{\"a\":-1}"), LMF_ERR_PARSE, "\"a\" is negative"},
    {"{" M("\"vocab\":{\"a\":16777216}"), LMF_ERR_PARSE, "\"a\" is too large"},
    {"{" M("\"vocab\":{\"a\":1e300}"), LMF_ERR_PARSE, "too large"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":0}"), LMF_ERR_PARSE, "id 0 is used twice"},
    {"{" M("\"vocab\":{\"a\":0,\"a\":1}"), LMF_ERR_PARSE, "\"a\" appears twice"},
    {"{" M("\"vocab\":{\"\":0}"), LMF_ERR_PARSE, "empty"},
    {"{" M("\"vocab\":{\"a\":0},\"merges\":{}"), LMF_ERR_PARSE, "model.merges is not an array"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",\"b a\"]"), LMF_ERR_PARSE,
     "model.merges[1]: the merged token \"ba\""},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a c\"]"), LMF_ERR_PARSE,
     "model.merges[0]: the right token \"c\""},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"ab\"]"), LMF_ERR_PARSE, "model.merges[0]"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\",\"a b c\"]"), LMF_ERR_PARSE, "model.merges[1]"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\"]]"), LMF_ERR_PARSE, "model.merges[0]"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[[\"a\",2]]"), LMF_ERR_PARSE, "model.merges[0]"},
    {"{" M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[7]"), LMF_ERR_PARSE, "model.merges[0]"},
    {"{\"added_tokens\":[{\"id\":0,\"content\":\"a\",\"special\":true}]," M("\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},"
     "\"merges\":[\"a b\"]"), LMF_ERR_PARSE, "special"},
    /* "<0x4" + "1>" is the string "<0x41>", but that token is the byte "A", not the bytes "<0x41>". */
    {"{" M("\"byte_fallback\":true,\"vocab\":{\"<0x4\":0,\"1>\":1,\"<0x41>\":2},\"merges\":[\"<0x4 1>\"]"),
     LMF_ERR_PARSE, "model.merges[0]: the bytes of the merged token (id 2)"},
    {"{" M("\"continuing_subword_prefix\":\"##\",\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "continuing_subword_prefix"},
    {"{" M("\"end_of_word_suffix\":\"</w>\",\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "end_of_word_suffix"},
    {"{" M("\"byte_fallback\":\"yes\",\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "byte_fallback"},
    {"{\"added_tokens\":{}," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "added_tokens"},
    {"{\"added_tokens\":[1]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "added_tokens[0]"},
    {"{\"added_tokens\":[{\"content\":\"x\"}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "added_tokens[0]"},
    {"{\"added_tokens\":[{\"id\":-3,\"content\":\"x\"}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "negative"},
    {"{\"added_tokens\":[{\"id\":1,\"content\":\"\"}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "content"},
    {"{\"added_tokens\":[{\"id\":1,\"content\":7}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "content"},
    {"{\"added_tokens\":[{\"id\":1,\"content\":\"x\",\"special\":1}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE,
     "special"},
    {"{\"added_tokens\":[{\"id\":0,\"content\":\"x\"}]," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE,
     "model.vocab gives to \"a\""},
    {"{\"added_tokens\":[{\"id\":1,\"content\":\"x\"},{\"id\":1,\"content\":\"y\"}]," M("\"vocab\":{\"a\":0}"),
     LMF_ERR_PARSE, "added_tokens[1]"},
    /* Byte-level: characters outside GPT-2's map (a raw space, U+00AD, U+0144, a CJK character). */
    {"{\"pre_tokenizer\":{\"type\":\"ByteLevel\"}," M("\"vocab\":{\"a\":0,\"a b\":1}"), LMF_ERR_PARSE, "\"a b\""},
    {"{\"decoder\":{\"type\":\"ByteLevel\"}," M("\"vocab\":{\"\\u00ad\":0}"), LMF_ERR_PARSE, "id 0"},
    {"{\"decoder\":{\"type\":\"ByteLevel\"}," M("\"vocab\":{\"a\":0,\"\\u0144\":1}"), LMF_ERR_PARSE, "id 1"},
    {"{\"decoder\":{\"type\":\"ByteLevel\"}," M("\"vocab\":{\"\\u4e2d\":5}"), LMF_ERR_PARSE, "id 5"},
    {"{\"decoder\":{\"type\":\"ByteLevel\"},\"pre_tokenizer\":{\"type\":\"Metaspace\"}," M("\"vocab\":{\"a\":0}"),
     LMF_ERR_PARSE, "both ByteLevel and a metaspace"},
    {"{\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"_\"},\"decoder\":{\"type\":\"Metaspace\"}," M(
         "\"vocab\":{\"a\":0}"),
     LMF_ERR_PARSE, "metaspace"},
    {"{\"pre_tokenizer\":\"ByteLevel\"," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "pre_tokenizer"},
    {"{\"decoder\":{\"decoders\":[]}," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "decoder"},
    {"{\"normalizer\":{\"type\":\"Sequence\"}," M("\"vocab\":{\"a\":0}"), LMF_ERR_PARSE, "normalizers"},
};
#undef M

void test_vocab_json_bad_strings(void) {
  static int sentinel;
  for (size_t i = 0; i < sizeof k_bad / sizeof k_bad[0]; ++i) {
    lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
    int ok = LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, k_bad[i].json, strlen(k_bad[i].json)), k_bad[i].status,
                            k_bad[i].needle);
    ok &= LMF_CHECK_MSG(out == (lmf_vocab_t *)&sentinel, "case %zu: *out written", i);
    if (!ok) lmf_t_note("bad case %zu: %s", i, k_bad[i].json);
    if (out != (lmf_vocab_t *)&sentinel) lmf_vocab_destroy(out);
  }
  /* The length is honoured: a valid document followed by bytes outside len parses. */
  const char *doc = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}garbage";
  lmf_vocab_t *v = NULL;
  LMF_CHECK_OK(lmf_vocab_parse_json(&v, doc, strlen(doc) - 7));
  lmf_vocab_destroy(v);
  /* ... and an embedded NUL inside len is an error, not an early end. */
  const char nul[] = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0}}}\0{";
  lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
  LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, nul, sizeof nul - 1), LMF_ERR_PARSE, "after the top-level value");
  LMF_CHECK(out == (lmf_vocab_t *)&sentinel);
  LMF_CHECK_FAIL(lmf_vocab_parse_json(NULL, doc, 10), LMF_ERR_NULL_POINTER, "out");
  LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, NULL, 10), LMF_ERR_NULL_POINTER, "json");
  LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, doc, (size_t)LMF_VOCAB_MAX_FILE_BYTES + 1), LMF_ERR_INVALID_SIZE,
                 "len");
  LMF_CHECK(out == (lmf_vocab_t *)&sentinel);
}

/* A failed load: status, message (contains needle), *out untouched. */
static void bad_load(const char *path, lmf_status_t status, const char *needle) {
  static int sentinel;
  lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
  LMF_CHECK_FAIL(lmf_vocab_load_json(&out, path), status, needle);
  LMF_CHECK_MSG(out == (lmf_vocab_t *)&sentinel, "%s: *out written by a failed load", path);
}

void test_vocab_json_bad_files(void) {
  /* The real files truncated at several points (never a valid document: both end in "}"). */
  static const char *const files[2] = {MISTRAL_JSON, GPT4O_JSON};
  for (int fi = 0; fi < 2; ++fi) {
    size_t len;
    char *text = read_all(files[fi], &len);
    if (!text) continue;
    LMF_CHECK(len > 2 && text[len - 1] == '}');
    size_t cuts[] = {0, 1, 2, 100, len / 7, len / 3, len / 2, 2 * len / 3, len - 100, len - 2, len - 1};
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; ++c) {
      if (fi == 1 && c % 3 != 0 && c + 1 != sizeof cuts / sizeof cuts[0]) continue; /* fewer for the big file */
      char path[64];
      if (!write_temp(text, cuts[c], path)) continue;
      bad_load(path, LMF_ERR_PARSE, "not valid JSON");
      unlink(path);
    }
    free(text);
  }
  /* Garbage bytes. */
  {
    uint8_t junk[4096];
    uint64_t st = 99;
    for (size_t i = 0; i < sizeof junk; ++i) junk[i] = (uint8_t)lt_next(&st);
    junk[0] = '{';
    char path[64];
    if (write_temp(junk, sizeof junk, path)) {
      bad_load(path, LMF_ERR_PARSE, "not valid JSON");
      unlink(path);
    }
  }
  /* Missing path, a directory, NULL arguments. */
  bad_load("/nonexistent/lmfuse/tokenizer.json", LMF_ERR_IO, "cannot open");
  bad_load("/tmp", LMF_ERR_IO, "directory");
  bad_load(LMF_TEST_DATA_DIR "/multilingual/gpt-4o.jsonl", LMF_ERR_PARSE, "after the top-level value");
  LMF_CHECK_FAIL(lmf_vocab_load_json(NULL, MISTRAL_JSON), LMF_ERR_NULL_POINTER, "out");
  lmf_vocab_t *out = NULL;
  LMF_CHECK_FAIL(lmf_vocab_load_json(&out, NULL), LMF_ERR_NULL_POINTER, "path");
  LMF_CHECK(out == NULL);
  /* A sparse file just over the limit: refused from its size, before any read. */
  char path[64];
  if (write_temp("{", 1, path)) {
    int fd = open(path, O_WRONLY);
    int ok = fd >= 0 && ftruncate(fd, (off_t)LMF_VOCAB_MAX_FILE_BYTES + 1) == 0;
    if (fd >= 0) close(fd);
    if (LMF_CHECK_MSG(ok, "cannot make a sparse file: %s", strerror(errno)))
      bad_load(path, LMF_ERR_INVALID_SIZE, "LMF_VOCAB_MAX_FILE_BYTES");
    unlink(path);
  }
}

/* Corrupting the real Mistral file in place (same length): a merge with an unknown token, a duplicate
 * id, an unknown model type; each names what is wrong. */
void test_vocab_json_corrupted_real_file(void) {
  size_t len;
  char *text = read_all(MISTRAL_JSON, &len);
  if (!text) return;
  static int sentinel;
  /* 1. Model type. */
  char *t = strstr(text, "\"type\": \"BPE\"");
  if (LMF_CHECK(t != NULL)) {
    memcpy(t, "\"type\": \"XYZ\"", 13);
    lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
    LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, text, len), LMF_ERR_PARSE, "\"XYZ\"");
    LMF_CHECK(out == (lmf_vocab_t *)&sentinel);
    memcpy(t, "\"type\": \"BPE\"", 13);
  }
  /* 2. merges[0] ("▁ t"): its right token becomes "\x7f", which is not in the vocabulary. */
  char *mg = strstr(text, "\"merges\": [");
  if (LMF_CHECK(mg != NULL)) {
    char *first = strchr(mg + 11, '"'); /* opening quote of merges[0] */
    char *close_q = first ? strchr(first + 1, '"') : NULL;
    if (LMF_CHECK(first && close_q && close_q - first > 3)) {
      char saved = close_q[-1];
      close_q[-1] = '\x7f'; /* "▁ t" -> "▁ \x7f": DEL is no token */
      lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
      LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, text, len), LMF_ERR_PARSE, "model.merges[0]");
      LMF_CHECK(out == (lmf_vocab_t *)&sentinel);
      close_q[-1] = saved;
    }
  }
  /* 3. A duplicate id: "<s>": 1 -> "<s>": 2 within model.vocab. */
  char *vs = strstr(text, "\"vocab\": {");
  char *s1 = vs ? strstr(vs, "\"<s>\": 1,") : NULL;
  if (LMF_CHECK(s1 != NULL)) {
    s1[7] = '2';
    lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
    LMF_CHECK_FAIL(lmf_vocab_parse_json(&out, text, len), LMF_ERR_PARSE, "id 2 is used twice");
    LMF_CHECK(out == (lmf_vocab_t *)&sentinel);
    s1[7] = '1';
  }
  /* Restored: it loads again. */
  lmf_vocab_t *v = NULL;
  LMF_CHECK_OK(lmf_vocab_parse_json(&v, text, len));
  lmf_vocab_destroy(v);
  free(text);
}

/* A small file using every feature, corrupted at random (byte flips, insertions, deletions, cuts) a few
 * thousand times: every call either succeeds with a consistent vocabulary or fails with a message and
 * leaves *out alone; never a crash (the sanitizer build runs this too). */
void test_vocab_json_random_corruptions(void) {
  static const char base[] =
      "{\"added_tokens\":[{\"id\":0,\"content\":\"<s>\",\"special\":true,\"normalized\":false},"
      "{\"id\":9,\"content\":\"<x>\",\"special\":false,\"normalized\":true}],"
      "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":\"\\u2581\"},"
      "{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},\"content\":\"\\u2581\"}]},"
      "\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\"},"
      "\"decoder\":{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]},"
      "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":{\"<s>\":0,\"<0x41>\":1,\"A\":2,"
      "\"\\u2581\":3,\"b\":4,\"\\u2581b\":5,\"Ab\":6,\"\\u2581bAb\":7},"
      "\"merges\":[\"\\u2581 b\",[\"A\",\"b\"],\"\\u2581b Ab\"]}}";
  static int sentinel;
  size_t n = sizeof base - 1;
  lmf_vocab_t *v = parse(base);
  if (!v) return;
  LMF_CHECK_EQ_INT(vsize(v), 10);
  LMF_CHECK_EQ_INT(vmerges(v), 3);
  lmf_vocab_destroy(v);
  char *buf = (char *)lt_malloc(2 * n + 16);
  if (!buf) return;
  uint64_t st = 2024;
  int ok_count = 0, fail_count = 0;
  for (int iter = 0; iter < 4000; ++iter) {
    memcpy(buf, base, n);
    size_t len = n;
    int edits = 1 + (int)(lt_next(&st) % 3);
    for (int e = 0; e < edits && len > 0; ++e) {
      size_t pos = (size_t)(lt_next(&st) % len);
      switch (lt_next(&st) % 4) {
        case 0: buf[pos] = (char)lt_next(&st); break;                        /* flip */
        case 1: memmove(buf + pos, buf + pos + 1, len - pos - 1); --len; break; /* delete */
        case 2:                                                              /* insert */
          memmove(buf + pos + 1, buf + pos, len - pos);
          buf[pos] = "{}[]\",:0 \\u"[lt_next(&st) % 11];
          ++len;
          break;
        default: len = pos; break; /* cut */
      }
    }
    lmf_vocab_t *out = (lmf_vocab_t *)&sentinel;
    lmf_clear_error();
    lmf_status_t s = lmf_vocab_parse_json(&out, buf, len);
    if (s == LMF_OK) {
      ++ok_count;
      /* Consistent: every merge's result bytes are its parts' bytes. */
      int32_t nm = vmerges(out);
      for (int32_t r = 0; r < nm; ++r) {
        int32_t l, rt, res;
        int64_t ll, rl, xl;
        LMF_CHECK_OK(lmf_vocab_merge(out, r, &l, &rt, &res));
        const uint8_t *lb = vbytes(out, l, &ll), *rb = vbytes(out, rt, &rl), *xb = vbytes(out, res, &xl);
        LMF_CHECK(xl == ll + rl && memcmp(xb, lb, (size_t)ll) == 0 && memcmp(xb + ll, rb, (size_t)rl) == 0);
      }
      lmf_vocab_destroy(out);
    } else {
      ++fail_count;
      if (!LMF_CHECK_MSG(out == (lmf_vocab_t *)&sentinel && lmf_last_error()[0] != '\0' &&
                             (s == LMF_ERR_PARSE || s == LMF_ERR_INVALID_SIZE),
                         "iteration %d: status %d, message \"%s\"", iter, (int)s, lmf_last_error()))
        break;
    }
  }
  lmf_t_note("random corruptions: %d loaded, %d refused", ok_count, fail_count);
  LMF_CHECK(fail_count > 0);
  free(buf);
}
