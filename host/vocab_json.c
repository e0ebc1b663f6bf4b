/* lmf_vocab_load_json / lmf_vocab_parse_json: a HuggingFace tokenizer.json (BPE model) as a vocabulary of
 * raw byte strings (include/lmfuse/vocab.h documents the conventions; the decisions are repeated here).
 *
 *   - File: fstat first (a regular file over LMF_VOCAB_MAX_FILE_BYTES is LMF_ERR_INVALID_SIZE before
 *     anything is read), then one read into a NUL-terminated buffer, parsed by cJSON (nesting limited by
 *     cJSON to 1000 levels; anything but whitespace after the top-level value is an error).
 *   - model: "type" must be "BPE" (absent: accepted if "merges" is there, as HF reads untagged models);
 *     a non-empty continuing_subword_prefix or end_of_word_suffix is refused (their tokens are not plain
 *     byte strings). model.vocab: string -> integer id in 0 .. LMF_VOCAB_MAX_TOKENS-1; duplicate ids,
 *     duplicate strings and empty strings are errors.
 *   - Byte convention (lmf_vocab_format_t): ByteLevel in pre_tokenizer or decoder -> BYTE_LEVEL; Metaspace
 *     in pre_tokenizer or decoder, a Replace normalizer " " -> R or a Replace decoder R -> " " ->
 *     METASPACE with replacement R (usually "▁"); both -> LMF_ERR_PARSE; neither -> RAW. Sequences are
 *     searched recursively.
 *   - Byte fallback: on iff model.byte_fallback is true or the decoder has a ByteFallback step, and the
 *     format is not BYTE_LEVEL (where every byte already has a character). Then the model tokens spelled
 *     exactly "<0xNN>" (two hex digits, either case, as HF's ByteFallback decoder reads them) are the byte
 *     NN with LMF_TOKEN_BYTE_FALLBACK. Without byte fallback such a token is its literal text.
 *   - Model tokens: BYTE_LEVEL maps every code point back through GPT-2's byte-to-unicode table (a code
 *     point outside it is LMF_ERR_PARSE naming the token); METASPACE replaces every R with a space; RAW
 *     keeps the UTF-8 text.
 *   - added_tokens: their content is matched literally against the input text by HF, so its UTF-8 bytes
 *     are the token's bytes; "special": true adds LMF_TOKEN_SPECIAL (never merged, never returned by
 *     lmf_vocab_find). Exception: a non-special added token with "normalized": true in a METASPACE file
 *     whose normalizer replaces " " by R is matched against normalized text, so R reads as a space there.
 *     An added token whose id is also in model.vocab must have the same content; its added-token reading
 *     wins. Ids between that no entry names are LMF_TOKEN_UNUSED with no bytes.
 *   - merges: "a b" strings (split at the one space, as HF does) or ["a", "b"] pairs. a, b and the string
 *     a+b must all be in model.vocab, none special, and bytes(a+b) must equal bytes(a) + bytes(b);
 *     otherwise LMF_ERR_PARSE naming the merge's index. The result id is the id of the string a+b.
 *   - Pre-tokenizer pattern: the first Split pre-tokenizer (searching Sequences in order) whose pattern
 *     is {"Regex": ...}; a {"String": ...} pattern or a ByteLevel pre-tokenizer's built-in regex is not
 *     reported (NULL). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "vocab_internal.h"

#define FN_LOAD "lmf_vocab_load_json"
#define FN_PARSE "lmf_vocab_parse_json"

/* ---- Small helpers -------------------------------------------------------------------------------- */

/* A token's text for a message: JSON-style escapes, at most ~40 source bytes, "..." when cut. */
static const char *show(const char *s, char *buf, size_t cap) {
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (!s) s = "";
  size_t n = strlen(s);
  size_t lim = n > 40 ? 40 : n;
  while (lim < n && lim > 0 && ((unsigned char)s[lim] & 0xC0) == 0x80) --lim; /* whole characters */
  buf[o++] = '"';
  for (size_t i = 0; i < lim && o + 8 < cap; ++i) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      buf[o++] = '\\';
      buf[o++] = (char)c;
    } else if (c < 0x20 || c == 0x7f) {
      buf[o++] = '\\';
      buf[o++] = 'u';
      buf[o++] = '0';
      buf[o++] = '0';
      buf[o++] = hex[c >> 4];
      buf[o++] = hex[c & 15];
    } else {
      buf[o++] = (char)c;
    }
  }
  if (lim < n && o + 4 < cap) {
    memcpy(buf + o, "...", 3);
    o += 3;
  }
  if (o + 1 < cap) buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}

/* Reads an integer id in 0 .. LMF_VOCAB_MAX_TOKENS-1 from a JSON value; *why says what is wrong. */
static int read_id(const cJSON *item, int32_t *id, const char **why) {
  if (!cJSON_IsNumber(item)) {
    *why = "is not a number";
    return 0;
  }
  double d = item->valuedouble;
  if (!(d == floor(d))) {
    *why = "is not an integer";
    return 0;
  }
  if (d < 0) {
    *why = "is negative";
    return 0;
  }
  if (d >= (double)LMF_VOCAB_MAX_TOKENS) {
    *why = "is too large (ids must be below LMF_VOCAB_MAX_TOKENS = 16777216)";
    return 0;
  }
  *id = (int32_t)d;
  return 1;
}

/* GPT-2's byte-to-unicode map, inverted: inv[cp] = the byte of code point cp (cp < 256 + 68), or -1.
 * Bytes 33..126, 161..172 and 174..255 are their own code points; the other 68 bytes, in increasing
 * order, are 256, 257, .... */
#define BL_CODEPOINTS (256 + 68)
static void byte_level_inverse(int16_t inv[BL_CODEPOINTS]) {
  int next = 256;
  for (int cp = 0; cp < BL_CODEPOINTS; ++cp) inv[cp] = -1;
  for (int b = 0; b < 256; ++b) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    inv[printable ? b : next++] = (int16_t)b;
  }
}

/* ---- String -> id map for the model vocabulary (keys point into the cJSON tree) -------------------- */

typedef struct map_slot {
  uint32_t tag; /* the high 32 bits of the key's hash: most mismatches never touch the key */
  int32_t e;    /* index into key/klen/val, -1 empty */
} map_slot;

typedef struct str_map {
  const char **key;
  int64_t *klen;
  int32_t *val;
  map_slot *slot; /* [cap] */
  int64_t cap;
  int64_t count;
} str_map;

static void map_free(str_map *m) {
  free(m->key);
  free(m->klen);
  free(m->val);
  free(m->slot);
}

static int map_init(str_map *m, int64_t n) {
  memset(m, 0, sizeof *m);
  int64_t cap = 16;
  while (cap < 2 * n) cap *= 2;
  m->cap = cap;
  m->key = (const char **)malloc((size_t)(n ? n : 1) * sizeof *m->key);
  m->klen = (int64_t *)malloc((size_t)(n ? n : 1) * sizeof *m->klen);
  m->val = (int32_t *)malloc((size_t)(n ? n : 1) * sizeof *m->val);
  m->slot = (map_slot *)malloc((size_t)cap * sizeof *m->slot);
  if (!m->key || !m->klen || !m->val || !m->slot) return 0;
  for (int64_t i = 0; i < cap; ++i) m->slot[i].e = -1;
  return 1;
}

/* Finds the string a[0..al) + b[0..bl), or -1 (the index into key/val). */
static int64_t map_find2(const str_map *m, const char *a, int64_t al, const char *b, int64_t bl) {
  uint64_t h = lmf_bytes_hash_continue(lmf_bytes_hash((const uint8_t *)a, al), (const uint8_t *)b, bl);
  uint64_t mask = (uint64_t)m->cap - 1;
  uint32_t tag = (uint32_t)(h >> 32);
  for (uint64_t s = h & mask;; s = (s + 1) & mask) {
    int32_t e = m->slot[s].e;
    if (e < 0) return -1;
    if (m->slot[s].tag == tag && m->klen[e] == al + bl && memcmp(m->key[e], a, (size_t)al) == 0 &&
        memcmp(m->key[e] + al, b, (size_t)bl) == 0)
      return e;
  }
}

/* Inserts key -> val; returns the existing entry's index if the key is already there, else -1. */
static int64_t map_insert(str_map *m, const char *key, int64_t len, int32_t val) {
  uint64_t h = lmf_bytes_hash((const uint8_t *)key, len);
  uint64_t mask = (uint64_t)m->cap - 1;
  uint32_t tag = (uint32_t)(h >> 32);
  for (uint64_t s = h & mask;; s = (s + 1) & mask) {
    int32_t e = m->slot[s].e;
    if (e < 0) {
      m->key[m->count] = key;
      m->klen[m->count] = len;
      m->val[m->count] = val;
      m->slot[s].tag = tag;
      m->slot[s].e = (int32_t)m->count++;
      return -1;
    }
    if (m->slot[s].tag == tag && m->klen[e] == len && memcmp(m->key[e], key, (size_t)len) == 0) return e;
  }
}

/* ---- Byte convention --------------------------------------------------------------------------------- */

typedef struct conv {
  int byte_level;            /* a ByteLevel pre-tokenizer or decoder */
  const char *meta;          /* the metaspace replacement string, or NULL */
  const char *meta_where;    /* where meta came from, for messages */
  int meta_from_normalizer;  /* a Replace normalizer " " -> meta */
  int byte_fallback_decoder; /* a ByteFallback decoder step */
  const char *pattern;       /* the first Split {Regex} pattern */
} conv;

typedef struct parse_ctx {
  const char *fn; /* the message prefix: function name and, for a file, its path */
  char tbuf[3][128];
} parse_ctx;

static lmf_status_t set_meta(parse_ctx *pc, conv *cv, const char *r, const char *where) {
  if (cv->meta && strcmp(cv->meta, r) != 0)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s uses metaspace %s but %s uses %s", pc->fn, where,
                    show(r, pc->tbuf[0], sizeof pc->tbuf[0]), cv->meta_where,
                    show(cv->meta, pc->tbuf[1], sizeof pc->tbuf[1]));
  cv->meta = r;
  cv->meta_where = where;
  return LMF_OK;
}

/* The string of pattern {"String": s} or {"Regex": s} under `key`, or NULL. */
static const char *pattern_of(const cJSON *obj, const char *kind) {
  const cJSON *p = cJSON_GetObjectItemCaseSensitive(obj, "pattern");
  if (!cJSON_IsObject(p)) return NULL;
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(p, kind);
  return cJSON_IsString(s) ? s->valuestring : NULL;
}

enum { PART_NORMALIZER, PART_PRETOKENIZER, PART_DECODER };

/* Scans one normalizer / pre-tokenizer / decoder component (recursing into Sequences). */
static lmf_status_t scan_part(parse_ctx *pc, conv *cv, const cJSON *node, int part, const char *where,
                              int depth) {
  if (!node || cJSON_IsNull(node)) return LMF_OK;
  if (!cJSON_IsObject(node))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s is not an object or null", pc->fn, where);
  if (depth > 64) return lmf_fail(LMF_ERR_PARSE, "%s: %s: Sequences nested too deeply", pc->fn, where);
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
  if (!cJSON_IsString(type))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s has no string \"type\"", pc->fn, where);
  const char *t = type->valuestring;
  static const char *const list_key[3] = {"normalizers", "pretokenizers", "decoders"};
  if (strcmp(t, "Sequence") == 0) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(node, list_key[part]);
    if (!cJSON_IsArray(list))
      return lmf_fail(LMF_ERR_PARSE, "%s: %s is a Sequence without a \"%s\" array", pc->fn, where,
                      list_key[part]);
    const cJSON *c;
    cJSON_ArrayForEach(c, list) {
      lmf_status_t st = scan_part(pc, cv, c, part, where, depth + 1);
      if (st != LMF_OK) return st;
    }
    return LMF_OK;
  }
  if (strcmp(t, "ByteLevel") == 0 && part != PART_NORMALIZER) {
    cv->byte_level = 1;
    return LMF_OK;
  }
  if (strcmp(t, "Metaspace") == 0 && part != PART_NORMALIZER) {
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(node, "replacement");
    const char *rs = "\xE2\x96\x81"; /* U+2581 */
    if (r && !cJSON_IsNull(r)) {
      if (!cJSON_IsString(r) || r->valuestring[0] == '\0')
        return lmf_fail(LMF_ERR_PARSE, "%s: %s: Metaspace \"replacement\" is not a non-empty string", pc->fn,
                        where);
      rs = r->valuestring;
    }
    return set_meta(pc, cv, rs, where);
  }
  if (strcmp(t, "Replace") == 0 && part != PART_PRETOKENIZER) {
    const char *ps = pattern_of(node, "String");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(node, "content");
    if (!ps || !cJSON_IsString(content)) return LMF_OK;
    const char *cs = content->valuestring;
    if (part == PART_NORMALIZER && strcmp(ps, " ") == 0 && cs[0] && strcmp(cs, " ") != 0) {
      cv->meta_from_normalizer = 1;
      return set_meta(pc, cv, cs, where);
    }
    if (part == PART_DECODER && strcmp(cs, " ") == 0 && ps[0] && strcmp(ps, " ") != 0)
      return set_meta(pc, cv, ps, where);
    return LMF_OK;
  }
  if (strcmp(t, "ByteFallback") == 0 && part == PART_DECODER) {
    cv->byte_fallback_decoder = 1;
    return LMF_OK;
  }
  if (strcmp(t, "Split") == 0 && part == PART_PRETOKENIZER && !cv->pattern) {
    cv->pattern = pattern_of(node, "Regex");
    return LMF_OK;
  }
  return LMF_OK;
}

/* ---- Token conversion -------------------------------------------------------------------------------- */

enum { SRC_NONE = 0, SRC_MODEL = 1, SRC_ADDED_LITERAL = 2, SRC_ADDED_META = 3 };

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Writes the bytes of token text s (len bytes) to dst; returns the byte count, or -1 for a byte-level
 * code point outside the map (or broken UTF-8). *bf is set for a byte-fallback token. */
static int64_t convert(const char *s, int64_t len, int kind, int format, const char *meta, int byte_fallback,
                       const int16_t *inv, uint8_t *dst, int *bf) {
  *bf = 0;
  if (kind == SRC_ADDED_LITERAL) {
    memcpy(dst, s, (size_t)len);
    return len;
  }
  if (kind == SRC_MODEL && byte_fallback && len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' &&
      s[5] == '>' && hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
    dst[0] = (uint8_t)(hexval(s[3]) * 16 + hexval(s[4]));
    *bf = 1;
    return 1;
  }
  if (kind == SRC_MODEL && format == LMF_VOCAB_FORMAT_BYTE_LEVEL) {
    int64_t o = 0;
    for (int64_t i = 0; i < len;) {
      unsigned char c = (unsigned char)s[i];
      uint32_t cp;
      if (c < 0x80) {
        cp = c;
        i += 1;
      } else if ((c & 0xE0) == 0xC0 && i + 1 < len && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
        cp = ((uint32_t)(c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
        if (cp < 0x80) return -1; /* overlong */
        i += 2;
      } else {
        return -1; /* 3- and 4-byte characters are all outside the map; anything else is broken */
      }
      int b = cp < BL_CODEPOINTS ? inv[cp] : -1;
      if (b < 0) return -1;
      dst[o++] = (uint8_t)b;
    }
    return o;
  }
  if (meta && (kind == SRC_ADDED_META || (kind == SRC_MODEL && format == LMF_VOCAB_FORMAT_METASPACE))) {
    int64_t ml = (int64_t)strlen(meta), o = 0;
    for (int64_t i = 0; i < len;) {
      if (i + ml <= len && memcmp(s + i, meta, (size_t)ml) == 0) {
        dst[o++] = ' ';
        i += ml;
      } else {
        dst[o++] = (uint8_t)s[i++];
      }
    }
    return o;
  }
  memcpy(dst, s, (size_t)len);
  return len;
}

/* ---- The parser ---------------------------------------------------------------------------------------- */

typedef struct build {
  cJSON *root;
  str_map map;
  const char **src;   /* [size] token text per id, NULL for a hole */
  uint8_t *kind;      /* [size] SRC_* */
  uint8_t *special;   /* [size] */
  struct lmf_vocab *v;
} build;

static void build_free(build *b) {
  cJSON_Delete(b->root);
  map_free(&b->map);
  free(b->src);
  free(b->kind);
  free(b->special);
  lmf_vocab_destroy(b->v);
}

static lmf_status_t oom(const parse_ctx *pc) {
  return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", pc->fn);
}

/* Resolves one side of a merge: *e = the map entry of s[0..len), or a parse error. */
static lmf_status_t merge_side(parse_ctx *pc, const build *b, int32_t r, const char *s, int64_t len,
                               const char *side, int32_t *id) {
  int64_t e = map_find2(&b->map, s, len, "", 0);
  if (e < 0) {
    char tmp[128];
    int64_t n = len < (int64_t)sizeof tmp - 1 ? len : (int64_t)sizeof tmp - 1;
    memcpy(tmp, s, (size_t)n);
    tmp[n] = '\0';
    return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d]: the %s token %s is not in model.vocab", pc->fn, r,
                    side, show(tmp, pc->tbuf[0], sizeof pc->tbuf[0]));
  }
  *id = b->map.val[e];
  return LMF_OK;
}

static lmf_status_t parse_merges(parse_ctx *pc, build *b, const cJSON *merges) {
  struct lmf_vocab *v = b->v;
  int64_t n = cJSON_GetArraySize(merges);
  if (n > LMF_VOCAB_MAX_TOKENS)
    return lmf_fail(LMF_ERR_PARSE, "%s: model.merges has %lld entries; at most %d are accepted", pc->fn,
                    (long long)n, LMF_VOCAB_MAX_TOKENS);
  v->merges = (int32_t *)malloc(3 * (size_t)(n ? n : 1) * sizeof *v->merges);
  if (!v->merges) return oom(pc);
  int32_t r = 0;
  const cJSON *m;
  cJSON_ArrayForEach(m, merges) {
    const char *a, *bs;
    int64_t al, bl;
    if (cJSON_IsString(m)) {
      const char *s = m->valuestring;
      const char *sp = strchr(s, ' ');
      if (!sp || strchr(sp + 1, ' '))
        return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d] %s is not two tokens separated by one space",
                        pc->fn, r, show(s, pc->tbuf[0], sizeof pc->tbuf[0]));
      a = s;
      al = sp - s;
      bs = sp + 1;
      bl = (int64_t)strlen(bs);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {
      a = m->child->valuestring;
      al = (int64_t)strlen(a);
      bs = m->child->next->valuestring;
      bl = (int64_t)strlen(bs);
    } else {
      return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d] is neither a \"a b\" string nor a [\"a\", \"b\"] "
                      "pair of strings", pc->fn, r);
    }
    int32_t l = -1, rt = -1, res;
    lmf_status_t st = merge_side(pc, b, r, a, al, "left", &l);
    if (st == LMF_OK) st = merge_side(pc, b, r, bs, bl, "right", &rt);
    if (st != LMF_OK) return st;
    int64_t e = map_find2(&b->map, a, al, bs, bl);
    if (e < 0) {
      char tmp[128];
      snprintf(tmp, sizeof tmp, "%.*s%.*s", (int)(al < 60 ? al : 60), a, (int)(bl < 60 ? bl : 60), bs);
      return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d]: the merged token %s is not in model.vocab",
                      pc->fn, r, show(tmp, pc->tbuf[0], sizeof pc->tbuf[0]));
    }
    res = b->map.val[e];
    int32_t ids[3] = {l, rt, res};
    static const char *const names[3] = {"left", "right", "merged"};
    for (int k = 0; k < 3; ++k)
      if (v->flags[ids[k]] & LMF_TOKEN_SPECIAL)
        return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d]: the %s token (id %d) is a special token",
                        pc->fn, r, names[k], ids[k]);
    int64_t ll, rl, xl;
    const uint8_t *lb = lmf_vocab_tok(v, l, &ll), *rb = lmf_vocab_tok(v, rt, &rl),
                  *xb = lmf_vocab_tok(v, res, &xl);
    if (xl != ll + rl || memcmp(xb, lb, (size_t)ll) != 0 || memcmp(xb + ll, rb, (size_t)rl) != 0)
      return lmf_fail(LMF_ERR_PARSE, "%s: model.merges[%d]: the bytes of the merged token (id %d) are not "
                      "the left token's (id %d) followed by the right token's (id %d)",
                      pc->fn, r, res, l, rt);
    v->merges[3 * (int64_t)r] = l;
    v->merges[3 * (int64_t)r + 1] = rt;
    v->merges[3 * (int64_t)r + 2] = res;
    ++r;
  }
  v->num_merges = r;
  return LMF_OK;
}

/* Optional string field: NULL or "" when absent/null, else must be a string. */
static lmf_status_t empty_or_absent(parse_ctx *pc, const cJSON *model, const char *key) {
  const cJSON *x = cJSON_GetObjectItemCaseSensitive(model, key);
  if (!x || cJSON_IsNull(x)) return LMF_OK;
  if (!cJSON_IsString(x)) return lmf_fail(LMF_ERR_PARSE, "%s: model.%s is not a string or null", pc->fn, key);
  if (x->valuestring[0])
    return lmf_fail(LMF_ERR_PARSE, "%s: model.%s is %s; only an empty one is supported (its tokens are "
                    "not plain byte strings)",
                    pc->fn, key, show(x->valuestring, pc->tbuf[0], sizeof pc->tbuf[0]));
  return LMF_OK;
}

/* Parses buf[0 .. len) (buf[len] == '\0'); on success *out is set. */
static lmf_status_t parse_buffer(parse_ctx *pc, lmf_vocab_t **out, const char *buf, size_t len) {
  build b;
  memset(&b, 0, sizeof b);
  lmf_status_t st = LMF_OK;
  const char *end = NULL;
  b.root = cJSON_ParseWithLengthOpts(buf, len + 1, &end, 0);
  if (!b.root) {
    size_t at = (end && end >= buf && end <= buf + len) ? (size_t)(end - buf) : len;
    return lmf_fail(LMF_ERR_PARSE, "%s: not valid JSON: error at byte %zu of %zu%s", pc->fn, at, len,
                    at >= len ? " (truncated?)" : "");
  }
  if (end) {
    const char *p = end;
    while (p < buf + len && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) ++p;
    if (p < buf + len) {
      st = lmf_fail(LMF_ERR_PARSE,
                    "%s: not valid JSON: unexpected data after the top-level value at byte %zu", pc->fn,
                    (size_t)(p - buf));
      goto done;
    }
  }
  if (!cJSON_IsObject(b.root)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: the top-level JSON value is not an object", pc->fn);
    goto done;
  }
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(b.root, "model");
  if (!cJSON_IsObject(model)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: %s", pc->fn,
                  model ? "\"model\" is not an object" : "no \"model\" object");
    goto done;
  }
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  if (type) {
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "BPE") != 0) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.type is %s; only \"BPE\" is supported", pc->fn,
                    cJSON_IsString(type) ? show(type->valuestring, pc->tbuf[0], sizeof pc->tbuf[0])
                                         : "not a string");
      goto done;
    }
  } else if (!merges) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: model has no \"type\" and no \"merges\": not a BPE model", pc->fn);
    goto done;
  }
  if ((st = empty_or_absent(pc, model, "continuing_subword_prefix")) != LMF_OK) goto done;
  if ((st = empty_or_absent(pc, model, "end_of_word_suffix")) != LMF_OK) goto done;
  const cJSON *bfj = cJSON_GetObjectItemCaseSensitive(model, "byte_fallback");
  if (bfj && !cJSON_IsNull(bfj) && !cJSON_IsBool(bfj)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: model.byte_fallback is not a boolean", pc->fn);
    goto done;
  }
  if (merges && !cJSON_IsNull(merges) && !cJSON_IsArray(merges)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: model.merges is not an array", pc->fn);
    goto done;
  }

  /* The byte convention and the pre-tokenizer pattern. */
  conv cv;
  memset(&cv, 0, sizeof cv);
  if ((st = scan_part(pc, &cv, cJSON_GetObjectItemCaseSensitive(b.root, "normalizer"), PART_NORMALIZER,
                      "normalizer", 0)) != LMF_OK ||
      (st = scan_part(pc, &cv, cJSON_GetObjectItemCaseSensitive(b.root, "pre_tokenizer"), PART_PRETOKENIZER,
                      "pre_tokenizer", 0)) != LMF_OK ||
      (st = scan_part(pc, &cv, cJSON_GetObjectItemCaseSensitive(b.root, "decoder"), PART_DECODER, "decoder",
                      0)) != LMF_OK)
    goto done;
  if (cv.byte_level && cv.meta) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: the file declares both ByteLevel and a metaspace (%s in %s); it can "
                  "only use one byte convention", pc->fn, show(cv.meta, pc->tbuf[0], sizeof pc->tbuf[0]),
                  cv.meta_where);
    goto done;
  }
  int32_t format = cv.byte_level ? LMF_VOCAB_FORMAT_BYTE_LEVEL
                                 : cv.meta ? LMF_VOCAB_FORMAT_METASPACE : LMF_VOCAB_FORMAT_RAW;
  int byte_fallback =
      (cJSON_IsTrue(bfj) || cv.byte_fallback_decoder) && format != LMF_VOCAB_FORMAT_BYTE_LEVEL;

  /* model.vocab: first pass, ids and size. */
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  if (!cJSON_IsObject(vocab)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab is %s", pc->fn, vocab ? "not an object" : "missing");
    goto done;
  }
  int64_t nvocab = 0;
  int32_t max_id = -1;
  const cJSON *it;
  cJSON_ArrayForEach(it, vocab) {
    int32_t id;
    const char *why;
    if (!read_id(it, &id, &why)) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab: the id of token %s %s", pc->fn,
                    show(it->string, pc->tbuf[0], sizeof pc->tbuf[0]), why);
      goto done;
    }
    if (!it->string || !it->string[0]) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab: id %d has an empty token string", pc->fn, id);
      goto done;
    }
    if (id > max_id) max_id = id;
    ++nvocab;
  }
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(b.root, "added_tokens");
  if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added)) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens is not an array", pc->fn);
    goto done;
  }
  int32_t ai = 0;
  if (cJSON_IsArray(added)) {
    cJSON_ArrayForEach(it, added) {
      int32_t id;
      const char *why;
      const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
      const cJSON *special = cJSON_GetObjectItemCaseSensitive(it, "special");
      const cJSON *normalized = cJSON_GetObjectItemCaseSensitive(it, "normalized");
      if (!cJSON_IsObject(it)) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d] is not an object", pc->fn, ai);
        goto done;
      }
      if (!read_id(cJSON_GetObjectItemCaseSensitive(it, "id"), &id, &why)) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d]: \"id\" %s", pc->fn, ai,
                      cJSON_GetObjectItemCaseSensitive(it, "id") ? why : "is missing");
        goto done;
      }
      if (!cJSON_IsString(content) || !content->valuestring[0]) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d] (id %d): \"content\" is not a non-empty string",
                      pc->fn, ai, id);
        goto done;
      }
      if ((special && !cJSON_IsBool(special)) || (normalized && !cJSON_IsBool(normalized))) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d] (id %d): \"special\" or \"normalized\" is not a "
                      "boolean", pc->fn, ai, id);
        goto done;
      }
      if (id > max_id) max_id = id;
      ++ai;
    }
  }
  if (max_id < 0) {
    st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab and added_tokens define no token", pc->fn);
    goto done;
  }
  int32_t size = max_id + 1;

  /* Second pass: per-id sources, the string map, duplicate checks. */
  b.src = (const char **)calloc((size_t)size, sizeof *b.src);
  b.kind = (uint8_t *)calloc((size_t)size, 1);
  b.special = (uint8_t *)calloc((size_t)size, 1);
  if (!b.src || !b.kind || !b.special || !map_init(&b.map, nvocab)) {
    st = oom(pc);
    goto done;
  }
  size_t total_text = 0;
  cJSON_ArrayForEach(it, vocab) {
    int32_t id = (int32_t)it->valuedouble;
    if (b.src[id]) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab: id %d is used twice (tokens %s and %s)", pc->fn, id,
                    show(b.src[id], pc->tbuf[0], sizeof pc->tbuf[0]),
                    show(it->string, pc->tbuf[1], sizeof pc->tbuf[1]));
      goto done;
    }
    int64_t len = (int64_t)strlen(it->string);
    int64_t e = map_insert(&b.map, it->string, len, id);
    if (e >= 0) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab: token %s appears twice (ids %d and %d)", pc->fn,
                    show(it->string, pc->tbuf[0], sizeof pc->tbuf[0]), b.map.val[e], id);
      goto done;
    }
    b.src[id] = it->string;
    b.kind[id] = SRC_MODEL;
    total_text += (size_t)len;
  }
  uint8_t *added_seen = NULL;
  if (cJSON_IsArray(added)) {
    added_seen = (uint8_t *)calloc((size_t)size, 1);
    if (!added_seen) {
      st = oom(pc);
      goto done;
    }
    ai = 0;
    cJSON_ArrayForEach(it, added) {
      const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
      int32_t id = (int32_t)cJSON_GetObjectItemCaseSensitive(it, "id")->valuedouble;
      const char *c = content->valuestring;
      if (added_seen[id]) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d] (%s): id %d is used by an earlier added token",
                      pc->fn, ai, show(c, pc->tbuf[0], sizeof pc->tbuf[0]), id);
        break;
      }
      if (b.src[id] && strcmp(b.src[id], c) != 0) {
        st = lmf_fail(LMF_ERR_PARSE, "%s: added_tokens[%d] (%s) has id %d, which model.vocab gives to %s",
                      pc->fn, ai, show(c, pc->tbuf[0], sizeof pc->tbuf[0]), id,
                      show(b.src[id], pc->tbuf[1], sizeof pc->tbuf[1]));
        break;
      }
      added_seen[id] = 1;
      int is_special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "special"));
      int is_norm = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "normalized"));
      if (!b.src[id]) total_text += strlen(c);
      b.src[id] = c;
      b.special[id] = (uint8_t)is_special;
      b.kind[id] = (!is_special && is_norm && cv.meta_from_normalizer) ? SRC_ADDED_META : SRC_ADDED_LITERAL;
      ++ai;
    }
    free(added_seen);
    if (st != LMF_OK) goto done;
  }

  /* The vocabulary object: bytes (never longer than the text), offsets, flags. */
  struct lmf_vocab *v = (struct lmf_vocab *)calloc(1, sizeof *v);
  if (!v) {
    st = oom(pc);
    goto done;
  }
  b.v = v;
  v->size = size;
  v->format = format;
  v->bytes = (uint8_t *)malloc(total_text + 1);
  v->offsets = (int64_t *)malloc(((size_t)size + 1) * sizeof *v->offsets);
  v->flags = (uint8_t *)malloc((size_t)size);
  if (cv.pattern) {
    size_t pl = strlen(cv.pattern);
    v->pattern = (char *)malloc(pl + 1);
    if (v->pattern) memcpy(v->pattern, cv.pattern, pl + 1);
  }
  if (!v->bytes || !v->offsets || !v->flags || (cv.pattern && !v->pattern)) {
    st = oom(pc);
    goto done;
  }
  int16_t inv[BL_CODEPOINTS];
  byte_level_inverse(inv);
  int64_t o = 0;
  for (int32_t id = 0; id < size; ++id) {
    v->offsets[id] = o;
    if (!b.src[id]) {
      v->flags[id] = LMF_TOKEN_UNUSED;
      continue;
    }
    int bf;
    int64_t n = convert(b.src[id], (int64_t)strlen(b.src[id]), b.kind[id], format, cv.meta, byte_fallback,
                        inv, v->bytes + o, &bf);
    if (n < 0) {
      st = lmf_fail(LMF_ERR_PARSE, "%s: model.vocab: token %s (id %d) has a character outside the GPT-2 "
                    "byte-level alphabet", pc->fn, show(b.src[id], pc->tbuf[0], sizeof pc->tbuf[0]), id);
      goto done;
    }
    o += n;
    v->flags[id] = (uint8_t)((b.special[id] ? LMF_TOKEN_SPECIAL : 0) | (bf ? LMF_TOKEN_BYTE_FALLBACK : 0));
  }
  v->offsets[size] = o;
  if ((st = lmf_vocab_build_table(v, pc->fn)) != LMF_OK) goto done;
  if (cJSON_IsArray(merges)) {
    if ((st = parse_merges(pc, &b, merges)) != LMF_OK) goto done;
  } else {
    v->merges = (int32_t *)malloc(3 * sizeof *v->merges);
    if (!v->merges) {
      st = oom(pc);
      goto done;
    }
    v->num_merges = 0;
  }
  *out = v;
  b.v = NULL;
done:
  build_free(&b);
  return st;
}

/* ---- Entry points ---------------------------------------------------------------------------------- */

lmf_status_t lmf_vocab_parse_json(lmf_vocab_t **out, const char *json, size_t len) {
  parse_ctx pc;
  pc.fn = FN_PARSE;
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, FN_PARSE ": out is NULL");
  if (!json) return lmf_fail(LMF_ERR_NULL_POINTER, FN_PARSE ": json is NULL");
  if ((uint64_t)len > (uint64_t)LMF_VOCAB_MAX_FILE_BYTES)
    return lmf_fail(LMF_ERR_INVALID_SIZE, FN_PARSE ": len is %zu bytes; at most LMF_VOCAB_MAX_FILE_BYTES "
                    "(%lld) are accepted", len, (long long)LMF_VOCAB_MAX_FILE_BYTES);
  char *buf = (char *)malloc(len + 1);
  if (!buf) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN_PARSE ": out of host memory for a %zu-byte copy", len);
  memcpy(buf, json, len);
  buf[len] = '\0';
  lmf_status_t st = parse_buffer(&pc, out, buf, len);
  free(buf);
  return st;
}

lmf_status_t lmf_vocab_load_json(lmf_vocab_t **out, const char *path) {
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, FN_LOAD ": out is NULL");
  if (!path) return lmf_fail(LMF_ERR_NULL_POINTER, FN_LOAD ": path is NULL");
  char fn[200];
  char pbuf[128];
  snprintf(fn, sizeof fn, FN_LOAD ": %s", show(path, pbuf, sizeof pbuf));
  int fd;
  do {
    fd = open(path, O_RDONLY | O_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return lmf_fail(LMF_ERR_IO, "%s: cannot open: %s", fn, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    close(fd);
    return lmf_fail(LMF_ERR_IO, "%s: cannot stat: %s", fn, strerror(e));
  }
  if (S_ISDIR(sb.st_mode)) {
    close(fd);
    return lmf_fail(LMF_ERR_IO, "%s: is a directory", fn);
  }
  int regular = S_ISREG(sb.st_mode);
  if (regular && (int64_t)sb.st_size > LMF_VOCAB_MAX_FILE_BYTES) {
    close(fd);
    return lmf_fail(LMF_ERR_INVALID_SIZE,
                    "%s: the file has %lld bytes; at most LMF_VOCAB_MAX_FILE_BYTES (%lld) are read", fn,
                    (long long)sb.st_size, (long long)LMF_VOCAB_MAX_FILE_BYTES);
  }
  /* A regular file is read in one buffer of its size (+1 to see it grow); anything else (a pipe) grows. */
  size_t cap = regular ? (size_t)sb.st_size + 1 : 1u << 16;
  size_t len = 0;
  char *buf = (char *)malloc(cap + 1);
  if (!buf) {
    close(fd);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for %zu bytes", fn, cap);
  }
  for (;;) {
    if (len == cap) {
      if ((uint64_t)len > (uint64_t)LMF_VOCAB_MAX_FILE_BYTES) break;
      size_t ncap = cap * 2;
      if ((uint64_t)ncap > (uint64_t)LMF_VOCAB_MAX_FILE_BYTES + 1)
        ncap = (size_t)LMF_VOCAB_MAX_FILE_BYTES + 1;
      char *nb = (char *)realloc(buf, ncap + 1);
      if (!nb) {
        free(buf);
        close(fd);
        return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for %zu bytes", fn, ncap);
      }
      buf = nb;
      cap = ncap;
    }
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      free(buf);
      close(fd);
      return lmf_fail(LMF_ERR_IO, "%s: read failed after %zu bytes: %s", fn, len, strerror(e));
    }
    if (r == 0) break;
    len += (size_t)r;
  }
  close(fd);
  if ((uint64_t)len > (uint64_t)LMF_VOCAB_MAX_FILE_BYTES) {
    free(buf);
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the file has more than LMF_VOCAB_MAX_FILE_BYTES (%lld) bytes",
                    fn, (long long)LMF_VOCAB_MAX_FILE_BYTES);
  }
  buf[len] = '\0';
  parse_ctx pc;
  pc.fn = fn;
  lmf_status_t st = parse_buffer(&pc, out, buf, len);
  free(buf);
  return st;
}
