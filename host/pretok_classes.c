/* The code point class table of kernels/common/pretok_match.h, built with PCRE2 itself. */
#include "pretok_classes.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmf_pt_host_table g_table;
static lmf_status_t g_status = LMF_ERR_INTERNAL;
static char g_message[256] = "the code point class table was not built";
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static int encode_utf8(uint32_t cp, uint8_t *out) {
  if (cp < 0x80) return out[0] = (uint8_t)cp, 1;
  if (cp < 0x800) {
    out[0] = (uint8_t)(0xC0 | (cp >> 6));
    out[1] = (uint8_t)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (uint8_t)(0xE0 | (cp >> 12));
    out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (uint8_t)(0xF0 | (cp >> 18));
  out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (uint8_t)(0x80 | (cp & 0x3F));
  return 4;
}

/* Planes 4-13 hold no assigned code point (Unicode 15.1), and planes 15-16 only private use (Co):
 * class OTHER without asking PCRE2. Everything else is classified by one anchored match. */
static int needs_lookup(uint32_t cp) {
  if (cp >= 0xD800 && cp <= 0xDFFF) return 0; /* surrogates: never in valid UTF-8 */
  return cp < 0x40000 || (cp >= 0xE0000 && cp < 0xF0000);
}

static void build(void) {
  int err = 0;
  PCRE2_SIZE erroff = 0;
  /* Alternatives in class order; the group that matched names the class. */
  static const char pat[] = "(\\p{L})|(\\p{M})|(\\p{N})|(\\s)";
  pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED,
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED, &err, &erroff, NULL);
  pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
  uint8_t *stage2 = (uint8_t *)malloc((size_t)LMF_PT_STAGE1_SIZE * 256);
  if (!re || !md || !stage2) {
    snprintf(g_message, sizeof g_message, "building the code point class table: %s",
             !re ? "PCRE2 could not compile the class pattern" : "out of memory");
    g_status = !re ? LMF_ERR_INTERNAL : LMF_ERR_OUT_OF_MEMORY;
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    free(stage2);
    return;
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is used if JIT fails */
  int32_t blocks = 0;
  uint8_t block[256];
  static uint64_t hashes[LMF_PT_STAGE1_SIZE]; /* of the distinct blocks, to skip most memcmp calls */
  for (uint32_t b = 0; b < LMF_PT_STAGE1_SIZE; ++b) {
    for (uint32_t k = 0; k < 256; ++k) {
      uint32_t cp = (b << 8) | k;
      block[k] = LMF_PT_OTHER;
      if (!needs_lookup(cp)) continue;
      uint8_t s[4];
      int n = encode_utf8(cp, s);
      if (pcre2_match(re, s, (PCRE2_SIZE)n, 0, 0, md, NULL) > 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        for (int g = 1; g <= 4; ++g)
          if (ov[2 * g] != PCRE2_UNSET) {
            block[k] = (uint8_t)g; /* 1 letter, 2 mark, 3 number, 4 space: the LMF_PT_* values */
            break;
          }
      }
    }
    uint64_t h = 1469598103934665603ull;
    for (int k = 0; k < 256; ++k) h = (h ^ block[k]) * 1099511628211ull;
    int32_t found = -1;
    for (int32_t j = 0; j < blocks && found < 0; ++j)
      if (hashes[j] == h && !memcmp(stage2 + (size_t)j * 256, block, 256)) found = j;
    if (found < 0) {
      memcpy(stage2 + (size_t)blocks * 256, block, 256);
      hashes[blocks] = h;
      found = blocks++;
    }
    g_table.stage1[b] = (uint16_t)found;
  }
  pcre2_match_data_free(md);
  pcre2_code_free(re);
  uint8_t *shrunk = (uint8_t *)realloc(stage2, (size_t)blocks * 256);
  g_table.stage2 = shrunk ? shrunk : stage2;
  g_table.blocks = blocks;
  g_status = LMF_OK;
}

lmf_status_t lmf_pt_table_build(const lmf_pt_host_table **out, const char **message) {
  pthread_once(&g_once, build);
  if (g_status != LMF_OK) {
    *message = g_message;
    return g_status;
  }
  *out = &g_table;
  return LMF_OK;
}
