/* The regex-free VALID of kernels/common/pretok_match.h (what the CUDA backend runs) against PCRE2
 * running the default pattern itself (what the CPU backend runs), on: the spec's T5 list; every pair
 * of code points from a set covering each 256-code-point block, with and without a leading space; and
 * random concatenations of 2 to 4 real tokens of both real vocabularies. */
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/vocab.h"
#include "pretok_classes.h"

typedef struct pcre_ref {
  pcre2_code *re;
  pcre2_match_data *md;
} pcre_ref;

static int ref_open(pcre_ref *r) {
  int err;
  PCRE2_SIZE off;
  r->re = pcre2_compile((PCRE2_SPTR)LMF_DYNTOK_DEFAULT_PATTERN, PCRE2_ZERO_TERMINATED,
                        PCRE2_UTF | PCRE2_UCP, &err, &off, NULL);
  r->md = r->re ? pcre2_match_data_create_from_pattern(r->re, NULL) : NULL;
  if (r->re) pcre2_jit_compile(r->re, PCRE2_JIT_COMPLETE);
  return r->re && r->md;
}

static void ref_close(pcre_ref *r) {
  pcre2_match_data_free(r->md);
  pcre2_code_free(r->re);
}

/* VALID straight from the spec, with PCRE2 deciding both UTF-8 validity and the match. */
static int ref_valid(pcre_ref *r, const uint8_t *t, size_t n) {
  int inner = 0, all = 1;
  for (size_t i = 0; i < n; ++i) {
    int sp = t[i] == 0x20 || t[i] == 0x09 || t[i] == 0x0A;
    if (i > 0 && sp) inner = 1;
    if (!sp) all = 0;
  }
  if (inner && (!all || (n == 2 && t[0] == '\n' && t[1] == '\n'))) return 0;
  int rc = pcre2_match(r->re, t, n, 0, PCRE2_ANCHORED, r->md, NULL);
  if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21) return 1; /* not UTF-8 */
  if (rc < 0) return 0;
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
  return ov[0] == 0 && ov[1] == n;
}

static int put_utf8(uint32_t cp, uint8_t *o) {
  if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
  if (cp < 0x800) return o[0] = (uint8_t)(0xC0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 63)), 2;
  if (cp < 0x10000) {
    o[0] = (uint8_t)(0xE0 | cp >> 12), o[1] = (uint8_t)(0x80 | (cp >> 6 & 63));
    o[2] = (uint8_t)(0x80 | (cp & 63));
    return 3;
  }
  o[0] = (uint8_t)(0xF0 | cp >> 18), o[1] = (uint8_t)(0x80 | (cp >> 12 & 63));
  o[2] = (uint8_t)(0x80 | (cp >> 6 & 63)), o[3] = (uint8_t)(0x80 | (cp & 63));
  return 4;
}

static int get_table(lmf_pt_table *view) {
  const lmf_pt_host_table *t = NULL;
  const char *why = "";
  if (!LMF_CHECK_MSG(lmf_pt_table_build(&t, &why) == LMF_OK, "class table: %s", why)) return 0;
  *view = lmf_pt_table_view(t);
  return 1;
}

/* Compares one string; reports the first few disagreements with their bytes. */
static int agree(pcre_ref *r, const lmf_pt_table *tab, const uint8_t *t, size_t n, int *reported) {
  int want = ref_valid(r, t, n), got = lmf_pt_valid_default(tab, t, (int64_t)n);
  if (want == got) return 1;
  if ((*reported)++ < 8) {
    char hex[200] = "";
    for (size_t i = 0; i < n && i < 40; ++i) snprintf(hex + 3 * i, 4, "%02x ", t[i]);
    LMF_CHECK_MSG(0, "VALID disagrees on [%s]: PCRE2 %d, matcher %d", hex, want, got);
  }
  return 0;
}

void test_pretok_match_spec_t5(void) {
  pcre_ref r;
  lmf_pt_table tab;
  if (!LMF_CHECK(ref_open(&r)) || !get_table(&tab)) return;
  static const char *valid[] = {"  ", " ab", " 12", "'s", " a", "\xC3\xA9", " caf\xC3"};
  static const char *invalid[] = {"\n\n", "  a", " a b", " a.", " a1", " don't"};
  int rep = 0;
  for (size_t i = 0; i < sizeof valid / sizeof *valid; ++i) {
    const uint8_t *t = (const uint8_t *)valid[i];
    LMF_CHECK_MSG(lmf_pt_valid_default(&tab, t, (int64_t)strlen(valid[i])) == 1, "T5 valid #%zu", i);
    agree(&r, &tab, t, strlen(valid[i]), &rep);
  }
  for (size_t i = 0; i < sizeof invalid / sizeof *invalid; ++i) {
    const uint8_t *t = (const uint8_t *)invalid[i];
    LMF_CHECK_MSG(lmf_pt_valid_default(&tab, t, (int64_t)strlen(invalid[i])) == 0, "T5 invalid #%zu", i);
    agree(&r, &tab, t, strlen(invalid[i]), &rep);
  }
  ref_close(&r);
}

void test_pretok_match_code_point_pairs(void) {
  pcre_ref r;
  lmf_pt_table tab;
  if (!LMF_CHECK(ref_open(&r)) || !get_table(&tab)) return;
  /* Every ASCII code point, then per 256-block up to 3 code points of distinct classes. */
  uint32_t *cps = (uint32_t *)malloc(sizeof(uint32_t) * 16384);
  int n = 0;
  for (uint32_t c = 0; c < 128; ++c) cps[n++] = c;
  for (uint32_t b = 0; b < LMF_PT_STAGE1_SIZE && n < 16000; ++b) {
    int seen = 0;
    for (uint32_t k = 0; k < 256; ++k) {
      uint32_t c = b << 8 | k;
      if (c < 128 || (c >= 0xD800 && c <= 0xDFFF)) continue;
      int cls = lmf_pt_class(&tab, c);
      if (seen & 1 << cls) continue;
      seen |= 1 << cls;
      cps[n++] = c;
    }
  }
  int rep = 0, bad = 0;
  long long checked = 0;
  uint8_t t[16];
  /* Pairs over a stride through the set keep the count near 3 million. */
  int stride = n / 250 + 1;
  for (int i = 0; i < n; ++i)
    for (int j = (i % stride); j < n; j += stride)
      for (int lead = 0; lead < 2; ++lead) {
        int len = 0;
        if (lead) t[len++] = ' ';
        len += put_utf8(cps[i], t + len);
        len += put_utf8(cps[j], t + len);
        bad += !agree(&r, &tab, t, (size_t)len, &rep);
        ++checked;
      }
  LMF_CHECK_MSG(bad == 0, "%d of %lld code point pairs disagree", bad, checked);
  LMF_CHECK_MSG(checked > 2000000, "only %lld pairs checked", checked);
  free(cps);
  ref_close(&r);
}

static void real_vocab_pairs(const char *name) {
  pcre_ref r;
  lmf_pt_table tab;
  if (!LMF_CHECK(ref_open(&r)) || !get_table(&tab)) return;
  char path[1024];
  snprintf(path, sizeof path, "%s/tokenizers/%s/tokenizer.json", LMF_TEST_DATA_DIR, name);
  lmf_vocab_t *v = NULL;
  if (!LMF_CHECK_MSG(lmf_vocab_load_json(&v, path) == LMF_OK, "%s", lmf_last_error())) {
    ref_close(&r);
    return;
  }
  int32_t size = 0;
  lmf_vocab_size(v, &size);
  uint64_t s = 0x243F6A8885A308D3ull;
  int rep = 0, bad = 0, checked = 0;
  uint8_t buf[1024];
  while (checked < 400000) {
    int parts = 2 + (int)(checked % 3);
    size_t len = 0;
    int ok = 1;
    for (int p = 0; p < parts && ok; ++p) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      int32_t id = (int32_t)(s % (uint64_t)size);
      uint32_t flags = 0;
      const uint8_t *b = NULL;
      int64_t bl = 0;
      lmf_vocab_token_flags(v, id, &flags);
      if (flags & (LMF_TOKEN_SPECIAL | LMF_TOKEN_UNUSED)) ok = 0;
      else if (lmf_vocab_token_bytes(v, id, &b, &bl) != LMF_OK || len + (size_t)bl > sizeof buf) ok = 0;
      else memcpy(buf + len, b, (size_t)bl), len += (size_t)bl;
    }
    if (!ok || len < 2) continue;
    bad += !agree(&r, &tab, buf, len, &rep);
    ++checked;
  }
  LMF_CHECK_MSG(bad == 0, "%s: %d of %d token concatenations disagree", name, bad, checked);
  lmf_vocab_destroy(v);
  ref_close(&r);
}

void test_pretok_match_mistral_tokens(void) { real_vocab_pairs("mistral-7b"); }
void test_pretok_match_gpt4o_tokens(void) { real_vocab_pairs("gpt-4o"); }
