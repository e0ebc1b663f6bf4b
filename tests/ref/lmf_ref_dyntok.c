/* The plain reference of batch-level BPE merging: see lmf_ref_dyntok.h. Deliberately simple (a full
 * recount per step); only the public vocabulary API and PCRE2 (interpreted) are used. */
#include "lmf_ref_dyntok.h"

#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

/* ---- The boundary rule ---------------------------------------------------------------------------- */

struct lmf_ref_dt_rule {
  int32_t boundary;
  pcre2_code *code;
  pcre2_match_data *md;
};

lmf_ref_dt_rule *lmf_ref_dt_rule_create(int32_t boundary, const char *pattern) {
  lmf_ref_dt_rule *r = (lmf_ref_dt_rule *)calloc(1, sizeof *r);
  if (!r) return NULL;
  r->boundary = boundary;
  if (boundary == LMF_DYNTOK_PRETOKENS) {
    int err;
    PCRE2_SIZE off;
    const char *p = pattern ? pattern : LMF_DYNTOK_DEFAULT_PATTERN;
    r->code = pcre2_compile((PCRE2_SPTR)p, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
    if (!r->code) {
      free(r);
      return NULL;
    }
    r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
    if (!r->md) {
      pcre2_code_free(r->code);
      free(r);
      return NULL;
    }
  }
  return r;
}

void lmf_ref_dt_rule_destroy(lmf_ref_dt_rule *r) {
  if (!r) return;
  pcre2_match_data_free(r->md);
  pcre2_code_free(r->code);
  free(r);
}

/* Decodes one character at t[0 .. len); returns its length, or 0 if it is not valid UTF-8. */
static int utf8_char(const uint8_t *t, int64_t len) {
  uint32_t cp, min;
  int n;
  if (t[0] < 0x80) return 1;
  if ((t[0] & 0xE0) == 0xC0) n = 2, cp = t[0] & 0x1Fu, min = 0x80;
  else if ((t[0] & 0xF0) == 0xE0) n = 3, cp = t[0] & 0x0Fu, min = 0x800;
  else if ((t[0] & 0xF8) == 0xF0) n = 4, cp = t[0] & 0x07u, min = 0x10000;
  else return 0;
  if (len < n) return 0;
  for (int i = 1; i < n; ++i) {
    if ((t[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (t[i] & 0x3Fu);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}

int lmf_ref_dt_utf8_valid(const uint8_t *t, int64_t len) {
  int64_t i = 0;
  while (i < len) {
    int n = utf8_char(t + i, len - i);
    if (!n) return 0;
    i += n;
  }
  return 1;
}

int lmf_ref_dt_valid_string(lmf_ref_dt_rule *rule, const uint8_t *t, int64_t len) {
  if (rule->boundary == LMF_DYNTOK_WHITESPACE) {
    for (int64_t i = 1; i < len; ++i)
      if (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r' || t[i] == '\v' || t[i] == '\f')
        return 0;
    return 1;
  }
  if (rule->boundary != LMF_DYNTOK_PRETOKENS) return -1;
  /* 1. Whitespace. */
  int space_after_first = 0, all_space = 1;
  for (int64_t i = 0; i < len; ++i) {
    int sp = t[i] == ' ' || t[i] == '\t' || t[i] == '\n';
    if (!sp) all_space = 0;
    if (sp && i > 0) space_after_first = 1;
  }
  if (space_after_first) {
    if (len == 2 && t[0] == '\n' && t[1] == '\n') return 0;
    return all_space;
  }
  /* 2. Partial UTF-8. */
  if (!lmf_ref_dt_utf8_valid(t, len)) return 1;
  /* 3. One match of the pattern. */
  int rc = pcre2_match(rule->code, (PCRE2_SPTR)t, (PCRE2_SIZE)len, 0, 0, rule->md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) return -1;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rule->md);
  return ov[0] == 0 && ov[1] == (PCRE2_SIZE)len;
}

int64_t lmf_ref_dt_findall(lmf_ref_dt_rule *rule, const uint8_t *t, int64_t len, int64_t *starts,
                           int64_t *ends, int64_t max) {
  if (!rule->code) return -1;
  int64_t n = 0, pos = 0;
  while (pos <= len) {
    int rc = pcre2_match(rule->code, (PCRE2_SPTR)t, (PCRE2_SIZE)len, (PCRE2_SIZE)pos, 0, rule->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(rule->md);
    if (n < max) {
      starts[n] = (int64_t)ov[0];
      ends[n] = (int64_t)ov[1];
    }
    ++n;
    if (ov[1] > ov[0]) {
      pos = (int64_t)ov[1];
    } else {
      if ((int64_t)ov[1] >= len) break;
      int c = utf8_char(t + ov[1], len - (int64_t)ov[1]);
      pos = (int64_t)ov[1] + (c ? c : 1);
    }
  }
  return n;
}

/* ---- The merge loop ------------------------------------------------------------------------------- */

typedef struct rtok {
  int32_t id;
  int32_t word;
  int64_t start;
  int32_t len;
} rtok;

typedef struct entry {
  int32_t a, b;
  int64_t count;
  int64_t next; /* chain in the bucket */
} entry;

typedef struct run {
  const lmf_vocab_t *vocab;
  int32_t V;
  int32_t boundary;
  lmf_ref_dt_rule *rule;
  int64_t B;
  rtok **seq;
  int64_t *len;
  /* New tokens. */
  uint8_t *nb;
  int64_t nb_len;
  int64_t *nb_off;
  int32_t *dc;
  int64_t dc_len;
  int64_t *dc_off;
  int32_t num_new;
  /* Merges. */
  int32_t *mp, *mr;
  int64_t *mc;
  int32_t nm;
  /* VALID memo: chained hash of (a, b). */
  int64_t *memo_head;
  struct memo {
    int32_t a, b;
    int v;
    int64_t next;
  } *memo;
  int64_t nmemo, memo_cap;
  int64_t memo_buckets;
  uint8_t *buf;
} run;

static const uint8_t *bytes_of(const run *R, int32_t id, int64_t *len) {
  if (id < R->V) {
    const uint8_t *b = NULL;
    lmf_vocab_token_bytes(R->vocab, id, &b, len);
    return b;
  }
  *len = R->nb_off[id - R->V + 1] - R->nb_off[id - R->V];
  return R->nb + R->nb_off[id - R->V];
}

static int special(const run *R, int32_t id) {
  uint32_t f = 0;
  if (id >= R->V) return 0;
  lmf_vocab_token_flags(R->vocab, id, &f);
  return (f & LMF_TOKEN_SPECIAL) != 0;
}

static uint64_t hash2(int32_t a, int32_t b) {
  uint64_t h = (uint64_t)(uint32_t)a * 0x9E3779B97F4A7C15ULL ^ (uint64_t)(uint32_t)b * 0xC2B2AE3D27D4EB4FULL;
  return h ^ (h >> 29);
}

/* VALID(a, b) as a pair (pair modes), memoised. -1 on error. */
static int valid_pair(run *R, int32_t a, int32_t b) {
  int64_t bucket = (int64_t)(hash2(a, b) % (uint64_t)R->memo_buckets);
  for (int64_t i = R->memo_head[bucket]; i >= 0; i = R->memo[i].next)
    if (R->memo[i].a == a && R->memo[i].b == b) return R->memo[i].v;
  int v;
  if (special(R, a) || special(R, b)) {
    v = 0;
  } else {
    int64_t la, lb;
    const uint8_t *ba = bytes_of(R, a, &la), *bb = bytes_of(R, b, &lb);
    uint8_t *t = (uint8_t *)malloc((size_t)(la + lb + 1));
    if (!t) return -1;
    memcpy(t, ba, (size_t)la);
    memcpy(t + la, bb, (size_t)lb);
    v = lmf_ref_dt_valid_string(R->rule, t, la + lb);
    free(t);
    if (v < 0) return -1;
  }
  if (R->nmemo == R->memo_cap) {
    int64_t cap = R->memo_cap ? 2 * R->memo_cap : 1024;
    struct memo *nm = (struct memo *)realloc(R->memo, sizeof *nm * (size_t)cap);
    if (!nm) return -1;
    R->memo = nm;
    R->memo_cap = cap;
  }
  struct memo *m = R->memo;
  m[R->nmemo].a = a, m[R->nmemo].b = b, m[R->nmemo].v = v, m[R->nmemo].next = R->memo_head[bucket];
  R->memo_head[bucket] = R->nmemo++;
  return v;
}

/* Whether the occurrence at position i of sequence s is VALID. -1 on error. */
static int valid_at(run *R, int64_t s, int64_t i) {
  const rtok *x = &R->seq[s][i], *y = &R->seq[s][i + 1];
  if (R->boundary == LMF_DYNTOK_WORDS)
    return x->word >= 0 && x->word == y->word && !special(R, x->id) && !special(R, y->id);
  return valid_pair(R, x->id, y->id);
}

/* The id of bytes(a) + bytes(b): the vocabulary's, an earlier new token's, or a new one. */
static int32_t merged_id(run *R, int32_t a, int32_t b) {
  int64_t la, lb;
  const uint8_t *ba = bytes_of(R, a, &la), *bb = bytes_of(R, b, &lb);
  uint8_t *t = (uint8_t *)malloc((size_t)(la + lb + 1));
  if (!t) return -1;
  memcpy(t, ba, (size_t)la);
  memcpy(t + la, bb, (size_t)lb);
  int64_t len = la + lb;
  int32_t id = -1;
  lmf_vocab_find(R->vocab, t, len, &id);
  if (id >= 0) {
    free(t);
    return id;
  }
  for (int32_t k = 0; k < R->num_new; ++k)
    if (R->nb_off[k + 1] - R->nb_off[k] == len && memcmp(R->nb + R->nb_off[k], t, (size_t)len) == 0) {
      free(t);
      return R->V + k;
    }
  /* New: bytes and decomposition (the parts' decompositions; a vocabulary id is itself). */
  int64_t da = a < R->V ? 1 : R->dc_off[a - R->V + 1] - R->dc_off[a - R->V];
  int64_t db = b < R->V ? 1 : R->dc_off[b - R->V + 1] - R->dc_off[b - R->V];
  uint8_t *nb = (uint8_t *)realloc(R->nb, (size_t)(R->nb_len + len + 1));
  int64_t *no = (int64_t *)realloc(R->nb_off, sizeof(int64_t) * (size_t)(R->num_new + 2));
  int32_t *dc = (int32_t *)realloc(R->dc, sizeof(int32_t) * (size_t)(R->dc_len + da + db + 1));
  int64_t *dof = (int64_t *)realloc(R->dc_off, sizeof(int64_t) * (size_t)(R->num_new + 2));
  if (nb) R->nb = nb;
  if (no) R->nb_off = no;
  if (dc) R->dc = dc;
  if (dof) R->dc_off = dof;
  if (!nb || !no || !dc || !dof) {
    free(t);
    return -1;
  }
  memcpy(R->nb + R->nb_len, t, (size_t)len);
  free(t);
  R->nb_len += len;
  R->nb_off[R->num_new + 1] = R->nb_len;
  if (a < R->V) R->dc[R->dc_len++] = a;
  else memcpy(R->dc + R->dc_len, R->dc + R->dc_off[a - R->V], sizeof(int32_t) * (size_t)da), R->dc_len += da;
  if (b < R->V) R->dc[R->dc_len++] = b;
  else memcpy(R->dc + R->dc_len, R->dc + R->dc_off[b - R->V], sizeof(int32_t) * (size_t)db), R->dc_len += db;
  R->dc_off[R->num_new + 1] = R->dc_len;
  return R->V + R->num_new++;
}

static int snapshot(const run *R, lmf_ref_dt_result *o) {
  memset(o, 0, sizeof *o);
  int64_t n = 0;
  for (int64_t s = 0; s < R->B; ++s) n += R->len[s];
  o->num_seqs = R->B;
  o->num_tokens = n;
  o->num_merges = R->nm;
  o->num_new = R->num_new;
  o->offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(R->B + 1));
  o->ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  o->span_start = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n + 1));
  o->span_len = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  o->merge_pairs = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * R->nm + 1));
  o->merge_results = (int32_t *)malloc(sizeof(int32_t) * (size_t)(R->nm + 1));
  o->merge_counts = (int64_t *)malloc(sizeof(int64_t) * (size_t)(R->nm + 1));
  o->new_offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(R->num_new + 1));
  o->new_bytes = (uint8_t *)malloc((size_t)R->nb_len + 1);
  o->decomp_offsets = (int64_t *)malloc(sizeof(int64_t) * (size_t)(R->num_new + 1));
  o->decomp = (int32_t *)malloc(sizeof(int32_t) * (size_t)(R->dc_len + 1));
  if (!o->offsets || !o->ids || !o->span_start || !o->span_len || !o->merge_pairs || !o->merge_results ||
      !o->merge_counts || !o->new_offsets || !o->new_bytes || !o->decomp_offsets || !o->decomp) {
    lmf_ref_dt_result_free(o);
    return 0;
  }
  int64_t j = 0;
  o->offsets[0] = 0;
  for (int64_t s = 0; s < R->B; ++s) {
    for (int64_t i = 0; i < R->len[s]; ++i, ++j) {
      o->ids[j] = R->seq[s][i].id;
      o->span_start[j] = R->seq[s][i].start;
      o->span_len[j] = R->seq[s][i].len;
    }
    o->offsets[s + 1] = j;
  }
  if (R->nm) {
    memcpy(o->merge_pairs, R->mp, sizeof(int32_t) * (size_t)(2 * R->nm));
    memcpy(o->merge_results, R->mr, sizeof(int32_t) * (size_t)R->nm);
    memcpy(o->merge_counts, R->mc, sizeof(int64_t) * (size_t)R->nm);
  }
  memcpy(o->new_offsets, R->nb_off, sizeof(int64_t) * (size_t)(R->num_new + 1));
  if (R->nb_len) memcpy(o->new_bytes, R->nb, (size_t)R->nb_len);
  memcpy(o->decomp_offsets, R->dc_off, sizeof(int64_t) * (size_t)(R->num_new + 1));
  if (R->dc_len) memcpy(o->decomp, R->dc, sizeof(int32_t) * (size_t)R->dc_len);
  return 1;
}

void lmf_ref_dt_result_free(lmf_ref_dt_result *r) {
  if (!r) return;
  free(r->offsets);
  free(r->ids);
  free(r->span_start);
  free(r->span_len);
  free(r->merge_pairs);
  free(r->merge_results);
  free(r->merge_counts);
  free(r->new_offsets);
  free(r->new_bytes);
  free(r->decomp_offsets);
  free(r->decomp);
  memset(r, 0, sizeof *r);
}

static void run_free(run *R) {
  for (int64_t s = 0; s < R->B; ++s) free(R->seq ? R->seq[s] : NULL);
  free(R->seq);
  free(R->len);
  free(R->nb);
  free(R->nb_off);
  free(R->dc);
  free(R->dc_off);
  free(R->mp);
  free(R->mr);
  free(R->mc);
  free(R->memo_head);
  free(R->memo);
}

int lmf_ref_dyntok(const lmf_vocab_t *vocab, int64_t B, const int64_t *offsets, const int32_t *ids,
                   const int32_t *word_ids, lmf_ref_dt_rule *rule, int32_t boundary, int n_ms,
                   const int32_t *ms, lmf_ref_dt_result *out) {
  run R;
  memset(&R, 0, sizeof R);
  R.vocab = vocab;
  lmf_vocab_size(vocab, &R.V);
  R.boundary = boundary;
  R.rule = rule;
  R.B = B;
  int ok = 0;
  int *taken = (int *)calloc((size_t)n_ms + 1, sizeof(int));
  int32_t max_m = 0;
  for (int i = 0; i < n_ms; ++i)
    if (ms[i] > max_m) max_m = ms[i];
  R.seq = (rtok **)calloc((size_t)B, sizeof(rtok *));
  R.len = (int64_t *)calloc((size_t)B, sizeof(int64_t));
  R.nb_off = (int64_t *)calloc(1, sizeof(int64_t));
  R.dc_off = (int64_t *)calloc(1, sizeof(int64_t));
  R.memo_buckets = 1 << 16;
  R.memo_head = (int64_t *)malloc(sizeof(int64_t) * (size_t)R.memo_buckets);
  if (!taken || !R.seq || !R.len || !R.nb_off || !R.dc_off || !R.memo_head) goto done;
  for (int64_t i = 0; i < R.memo_buckets; ++i) R.memo_head[i] = -1;
  for (int64_t s = 0; s < B; ++s) {
    R.len[s] = offsets[s + 1] - offsets[s];
    R.seq[s] = (rtok *)malloc(sizeof(rtok) * (size_t)(R.len[s] + 1));
    if (!R.seq[s]) goto done;
    for (int64_t i = 0; i < R.len[s]; ++i) {
      int64_t p = offsets[s] + i;
      R.seq[s][i].id = ids[p];
      R.seq[s][i].word = boundary == LMF_DYNTOK_WORDS ? word_ids[p] : 0;
      R.seq[s][i].start = p;
      R.seq[s][i].len = 1;
    }
  }

  for (;;) {
    for (int i = 0; i < n_ms; ++i)
      if (!taken[i] && ms[i] == R.nm) {
        if (!snapshot(&R, &out[i])) goto done;
        taken[i] = 1;
      }
    if (R.nm >= max_m) break;

    /* counts = insertion-ordered map pair -> count, over every valid adjacent pair. */
    int64_t nbuck = 1024, nent = 0, cap = 1024;
    while (nbuck < offsets[B]) nbuck *= 2;
    int64_t *head = (int64_t *)malloc(sizeof(int64_t) * (size_t)nbuck);
    entry *ent = (entry *)malloc(sizeof(entry) * (size_t)cap);
    if (!head || !ent) {
      free(head);
      free(ent);
      goto done;
    }
    for (int64_t i = 0; i < nbuck; ++i) head[i] = -1;
    int err = 0;
    for (int64_t s = 0; s < B && !err; ++s) {
      for (int64_t i = 0; i + 1 < R.len[s]; ++i) {
        int v = valid_at(&R, s, i);
        if (v < 0) {
          err = 1;
          break;
        }
        if (!v) continue;
        int32_t a = R.seq[s][i].id, b = R.seq[s][i + 1].id;
        int64_t bk = (int64_t)(hash2(a, b) % (uint64_t)nbuck), e;
        for (e = head[bk]; e >= 0; e = ent[e].next)
          if (ent[e].a == a && ent[e].b == b) break;
        if (e < 0) {
          if (nent == cap) {
            cap *= 2;
            entry *ne = (entry *)realloc(ent, sizeof(entry) * (size_t)cap);
            if (!ne) {
              err = 1;
              break;
            }
            ent = ne;
          }
          e = nent++;
          ent[e].a = a, ent[e].b = b, ent[e].count = 0, ent[e].next = head[bk];
          head[bk] = e;
        }
        ++ent[e].count;
      }
    }
    if (err) {
      free(head);
      free(ent);
      goto done;
    }
    if (nent == 0) { /* stop early */
      free(head);
      free(ent);
      break;
    }
    /* The highest count; ties: the first inserted (= first occurrence in row-major order). */
    int64_t best = 0;
    for (int64_t e = 1; e < nent; ++e)
      if (ent[e].count > ent[best].count) best = e;
    int32_t a = ent[best].a, b = ent[best].b;
    int64_t count = ent[best].count;
    free(head);
    free(ent);

    int32_t c = merged_id(&R, a, b);
    if (c < 0) goto done;
    int32_t *mp = (int32_t *)realloc(R.mp, sizeof(int32_t) * (size_t)(2 * R.nm + 2));
    int32_t *mr = (int32_t *)realloc(R.mr, sizeof(int32_t) * (size_t)(R.nm + 1));
    int64_t *mc = (int64_t *)realloc(R.mc, sizeof(int64_t) * (size_t)(R.nm + 1));
    if (mp) R.mp = mp;
    if (mr) R.mr = mr;
    if (mc) R.mc = mc;
    if (!mp || !mr || !mc) goto done;
    R.mp[2 * R.nm] = a, R.mp[2 * R.nm + 1] = b, R.mr[R.nm] = c, R.mc[R.nm] = count;
    ++R.nm;

    /* In every sequence, left to right, non-overlapping: replace each valid occurrence of a, b. */
    for (int64_t s = 0; s < B; ++s) {
      rtok *nt = (rtok *)malloc(sizeof(rtok) * (size_t)(R.len[s] + 1));
      if (!nt) goto done;
      int64_t n = 0, i = 0;
      while (i < R.len[s]) {
        if (i + 1 < R.len[s] && R.seq[s][i].id == a && R.seq[s][i + 1].id == b) {
          int v = valid_at(&R, s, i);
          if (v < 0) {
            free(nt);
            goto done;
          }
          if (v) {
            nt[n].id = c;
            nt[n].word = R.seq[s][i].word;
            nt[n].start = R.seq[s][i].start;
            nt[n].len = R.seq[s][i].len + R.seq[s][i + 1].len;
            ++n;
            i += 2;
            continue;
          }
        }
        nt[n++] = R.seq[s][i++];
      }
      free(R.seq[s]);
      R.seq[s] = nt;
      R.len[s] = n;
    }
  }
  for (int i = 0; i < n_ms; ++i)
    if (!taken[i]) {
      if (!snapshot(&R, &out[i])) goto done;
      taken[i] = 1;
    }
  ok = 1;
done:
  if (!ok && taken)
    for (int i = 0; i < n_ms; ++i)
      if (taken[i]) lmf_ref_dt_result_free(&out[i]);
  free(taken);
  run_free(&R);
  return ok;
}
