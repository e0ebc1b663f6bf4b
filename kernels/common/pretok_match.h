/* VALID(a, b) of batch-level BPE merging in the reference "pretokens" mode with the DEFAULT
 * pre-tokenizer pattern (LMF_DYNTOK_DEFAULT_PATTERN), without a regex engine, for the CUDA backend:
 *
 *   's|'t|'re|'ve|'m|'ll|'d| ?[\p{L}\p{M}]+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *
 * t = bytes(a) + bytes(b) is valid iff (specs/dynamic-bpe.md): no space-like byte (0x20, 0x09, 0x0A)
 * after its first byte unless t is all space-like, and t != "\n\n"; then, if t is not valid UTF-8,
 * valid; else the pattern's first match at offset 0 (leftmost-first alternation) spans all of t.
 *
 * The match is computed alternative by alternative on code point classes (L, M, N, \s, other) read
 * from a two-level table that the host builds with PCRE2 itself (host/pretok_classes.c), so \p{..}
 * and \s mean exactly what they mean to PCRE2 with UTF + UCP. The CPU backend evaluates VALID with
 * PCRE2; tests/dyntok/test_pretok_match.c checks this function against PCRE2 on real vocabularies.
 */
#ifndef LMF_KERNELS_COMMON_PRETOK_MATCH_H
#define LMF_KERNELS_COMMON_PRETOK_MATCH_H

#include <stdint.h>

#include "lmf_hd.h"

/* Code point classes. */
enum { LMF_PT_OTHER = 0, LMF_PT_LETTER = 1, LMF_PT_MARK = 2, LMF_PT_NUMBER = 3, LMF_PT_SPACE = 4 };

/* Two-level class table: block = stage1[cp >> 8], class = stage2[block * 256 + (cp & 255)]. */
#define LMF_PT_STAGE1_SIZE (0x110000 >> 8)

typedef struct lmf_pt_table {
  const uint16_t *stage1; /* [LMF_PT_STAGE1_SIZE] */
  const uint8_t *stage2;  /* [blocks * 256] */
} lmf_pt_table;

LMF_HD int lmf_pt_class(const lmf_pt_table *t, uint32_t cp) {
  return t->stage2[(uint32_t)t->stage1[cp >> 8] * 256u + (cp & 255u)];
}

LMF_HD int lmf_pt_space_like(uint8_t c) { return c == 0x20 || c == 0x09 || c == 0x0A; }

/* Decodes one UTF-8 code point at s[*i] (strict: no overlongs, surrogates or values > 0x10FFFF, as
 * PCRE2 and Python require); returns it and advances *i, or returns -1 if the bytes are not valid. */
LMF_HD int32_t lmf_pt_decode(const uint8_t *s, int64_t n, int64_t *i) {
  uint32_t c = s[*i];
  if (c < 0x80) {
    *i += 1;
    return (int32_t)c;
  }
  int len;
  uint32_t min;
  if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80, c &= 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800, c &= 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000, c &= 0x07;
  else return -1;
  if (*i + len > n) return -1;
  for (int k = 1; k < len; ++k) {
    uint32_t d = s[*i + k];
    if ((d & 0xC0) != 0x80) return -1;
    c = (c << 6) | (d & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return -1;
  *i += len;
  return (int32_t)c;
}

/* 1 if the pair whose concatenated bytes are t[0 .. n) is VALID (see above), else 0. n >= 2. */
LMF_HD int lmf_pt_valid_default(const lmf_pt_table *tab, const uint8_t *t, int64_t n) {
  /* Rule 1: space-like bytes. */
  int inner_space = 0, all_space = 1;
  for (int64_t i = 0; i < n; ++i) {
    int sp = lmf_pt_space_like(t[i]);
    if (i > 0 && sp) inner_space = 1;
    if (!sp) all_space = 0;
  }
  if (inner_space && (!all_space || (n == 2 && t[0] == 0x0A && t[1] == 0x0A))) return 0;
  /* Rule 2: not valid UTF-8 -> valid. */
  for (int64_t i = 0; i < n;)
    if (lmf_pt_decode(t, n, &i) < 0) return 1;

  /* Rule 3: the first alternative that matches at offset 0 must span t. */
  /* 's 't 're 've 'm 'll 'd (case-sensitive, in this order). */
  if (t[0] == '\'' && n >= 2) {
    const uint8_t c1 = t[1], c2 = n >= 3 ? t[2] : 0;
    int len = 0;
    if (c1 == 's' || c1 == 't') len = 2;
    else if (c1 == 'r' && c2 == 'e') len = 3;
    else if (c1 == 'v' && c2 == 'e') len = 3;
    else if (c1 == 'm') len = 2;
    else if (c1 == 'l' && c2 == 'l') len = 3;
    else if (c1 == 'd') len = 2;
    if (len) return len == n;
  }
  int64_t i = 0;
  int32_t c0 = lmf_pt_decode(t, n, &i);
  const int64_t after0 = i;
  int cls0 = lmf_pt_class(tab, (uint32_t)c0);
  int cls1 = -1;
  int64_t after1 = after0;
  if (after0 < n) {
    int32_t c1 = lmf_pt_decode(t, n, &after1);
    cls1 = lmf_pt_class(tab, (uint32_t)c1);
  }
  /* For " ?X+": the run of class set X starts after an optional U+0020 space. Returns the end (byte
   * offset) of the maximal run, or -1 if the alternative does not match at offset 0. */
#define LMF_PT_IN(cls, set) (((set) >> (cls)) & 1u)
  const uint32_t sets[3] = {
      (1u << LMF_PT_LETTER) | (1u << LMF_PT_MARK),  /*  ?[\p{L}\p{M}]+        */
      (1u << LMF_PT_NUMBER),                         /*  ?\p{N}+               */
      (1u << LMF_PT_OTHER) | (1u << LMF_PT_MARK)};   /*  ?[^\s\p{L}\p{N}]+     */
  for (int a = 0; a < 3; ++a) {
    int64_t start;
    if (c0 == 0x20 && cls1 >= 0 && LMF_PT_IN(cls1, sets[a])) start = after1;
    else if (LMF_PT_IN(cls0, sets[a])) start = after0;
    else continue;
    int64_t j = start;
    while (j < n) {
      int64_t k = j;
      int32_t c = lmf_pt_decode(t, n, &k);
      if (!LMF_PT_IN(lmf_pt_class(tab, (uint32_t)c), sets[a])) break;
      j = k;
    }
    return j == n;
  }
#undef LMF_PT_IN
  /* \s+(?!\S) then \s+: both need t[0] to be whitespace. The greedy run r either reaches the end
   * (the first alternative matches all of t) or stops before a non-space; then the first alternative
   * backs off one code point (or fails if r is one code point) and \s+ gives r: neither spans t. */
  if (cls0 != LMF_PT_SPACE) return 0;
  int64_t j = after0;
  while (j < n) {
    int64_t k = j;
    int32_t c = lmf_pt_decode(t, n, &k);
    if (lmf_pt_class(tab, (uint32_t)c) != LMF_PT_SPACE) return 0;
    j = k;
  }
  return 1;
}

#endif
