/* lmf_hypernet_surface_forms: the hypernetwork's input rows.
 *
 * Real data: the new tokens that batch-level merging makes on data/multilingual/ (GPT-4o with its own
 * pre-tokenizer pattern; Mistral). Every row is the BPE encoding of the token's bytes (checked against
 * lmf_vocab_bpe_encode, itself checked against the real tokenizers' ids in test_vocab_bpe.c),
 * truncated to 7 and padded. For GPT-4o a new token that covers a whole pre-token piece of the text is
 * exactly what the real tokenizer produced for that piece, so its untruncated surface form must equal
 * the input ids it was merged from: the decomposition the data itself gives. Specials, truncation,
 * vocabulary tokens, ids >= V0, the ids = NULL form; every bad input writes nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pcre2.h>

#include "../dyntok/dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/hypernet.h"

enum { SL = 7, BATCH = 32 };

/* Checks the surface forms of every new token of one merged batch; returns the number of new tokens. */
static int64_t check_batch(lmf_context_t *ctx, const lmf_vocab_t *v, const dt_batch *b, char *const *texts,
                           const char *pattern, int64_t *whole, int64_t *decomp_equal) {
  lmf_dyntok_result_t *r = NULL;
  if (!LMF_CHECK_OK(dt_merge(ctx, v, b, 1000, LMF_DYNTOK_PRETOKENS, pattern, &r))) return 0;
  dt_view w;
  int64_t U = 0;
  int32_t *forms = NULL, *copy = NULL, *lens = NULL, *enc = NULL;
  if (!dt_view_get(&w, r, v, b->offsets)) goto done;
  U = w.num_new;
  forms = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(U * SL + 1));
  copy = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(U + 1));
  lens = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(U + 1));
  enc = (int32_t *)lt_malloc(sizeof(int32_t) * 4096);
  if (!forms || !copy || !lens || !enc) goto done;
  for (int64_t i = 0; i < U * SL; ++i) forms[i] = -7;
  lmf_hypernet_surface_args_t a;
  LMF_CHECK_OK(lmf_hypernet_surface_args_init(&a, sizeof a));
  a.num_tokens = U;
  a.ids = NULL; /* token u = new token u */
  a.num_new = w.num_new;
  a.new_offsets = w.new_offsets;
  a.new_bytes = w.new_bytes;
  a.surface_len = SL;
  a.pad_id = 2;
  a.original_vocab_size = w.V;
  a.out_forms = forms;
  a.out_copy_ids = copy;
  a.out_lengths = lens;
  if (!LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a))) goto done;
  for (int64_t u = 0; u < U; ++u) {
    const uint8_t *bytes = w.new_bytes + w.new_offsets[u];
    const int64_t len = w.new_offsets[u + 1] - w.new_offsets[u];
    int64_t n = 0;
    if (!LMF_CHECK_OK(lmf_vocab_bpe_encode(v, bytes, len, enc, 4096, &n))) goto done;
    LMF_CHECK_EQ_INT(lens[u], n);
    LMF_CHECK_EQ_INT(copy[u], -1);
    for (int64_t l = 0; l < SL; ++l)
      if (!LMF_CHECK_MSG(forms[u * SL + l] == (l < n ? enc[l] : 2), "new token %lld: forms[%lld] = %d, want %d",
                         (long long)u, (long long)l, forms[u * SL + l], l < n ? enc[l] : 2))
        goto done;
    /* The BPE re-encoding usually, not always, equals the merged parts. */
    const int64_t d0 = w.decomp_offsets[u], dl = w.decomp_offsets[u + 1] - d0;
    *decomp_equal += dl == n && memcmp(w.decomp + d0, enc, sizeof(int32_t) * (size_t)n) == 0;
  }
  /* GPT-4o: output tokens that are a whole piece of the text under the file's pattern. The input ids of
   * that span are the real tokenizer's encoding of the piece, so they equal the BPE of its bytes. */
  if (texts && pattern) {
    int err;
    PCRE2_SIZE eoff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err, &eoff, NULL);
    pcre2_match_data *md = re ? pcre2_match_data_create_from_pattern(re, NULL) : NULL;
    if (!LMF_CHECK(re && md)) goto done_re;
    for (int64_t s = 0; s < b->B; ++s) {
      const char *t = texts[s];
      const size_t tl = strlen(t);
      /* byte offset of every input position of the sequence */
      int64_t pos_byte[4096];
      int64_t nin = b->offsets[s + 1] - b->offsets[s], acc = 0;
      if (!LMF_CHECK(nin < 4096)) break;
      for (int64_t i = 0; i < nin; ++i) {
        const uint8_t *tb;
        int64_t ln;
        lmf_vocab_token_bytes(v, b->ids[b->offsets[s] + i], &tb, &ln);
        pos_byte[i] = acc;
        acc += ln;
      }
      pos_byte[nin] = acc;
      if (!LMF_CHECK_EQ_INT(acc, (int64_t)tl)) continue;
      /* pieces as [start, end) byte ranges, marked in a table of piece starts */
      size_t off = 0;
      for (int64_t j = w.offsets[s]; j < w.offsets[s + 1]; ++j) {
        if (w.ids[j] < w.V) continue;
        const int64_t p0 = w.span_start[j] - b->offsets[s], p1 = p0 + w.span_len[j];
        const int64_t b0 = pos_byte[p0], b1 = pos_byte[p1];
        /* is [b0, b1) a match of the pattern when scanning from the start? */
        int is_piece = 0;
        off = 0;
        while (off < tl) {
          int rc = pcre2_match(re, (PCRE2_SPTR)t, tl, off, 0, md, NULL);
          if (rc < 0) break;
          const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
          if ((int64_t)ov[0] == b0 && (int64_t)ov[1] == b1) is_piece = 1;
          if ((int64_t)ov[0] >= b0) break;
          off = ov[1] > ov[0] ? ov[1] : ov[0] + 1;
        }
        if (!is_piece) continue;
        const int32_t k = w.ids[j] - w.V;
        ++*whole;
        LMF_CHECK_EQ_INT(lens[k], w.span_len[j]);
        const int64_t keep = w.span_len[j] < SL ? w.span_len[j] : SL;
        for (int64_t l = 0; l < keep; ++l)
          LMF_CHECK_MSG(forms[k * SL + l] == b->ids[w.span_start[j] + l],
                        "seq %lld: new token %d (a whole piece): forms[%lld] = %d, the tokenizer gave %d",
                        (long long)s, k, (long long)l, forms[k * SL + l], b->ids[w.span_start[j] + l]);
      }
    }
  done_re:
    pcre2_match_data_free(md);
    pcre2_code_free(re);
  }
done:
  free(forms);
  free(copy);
  free(lens);
  free(enc);
  lmf_dyntok_result_destroy(r);
  return U;
}

static void surface_real(const char *name, int own_pattern) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *v = dt_load_vocab(name);
  dt_corpus c;
  if (!ctx || !v || !dt_corpus_load(&c, name, BATCH)) goto done;
  const char *pattern = NULL;
  if (own_pattern) LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(v, &pattern));
  int64_t total = 0, whole = 0, equal = 0;
  for (int L = 0; L < c.num_langs; ++L)
    total += check_batch(ctx, v, &c.batch[L], own_pattern ? c.text[L] : NULL, pattern, &whole, &equal);
  LMF_CHECK(total > 1000);
  if (own_pattern) LMF_CHECK_MSG(whole > 500, "only %lld new tokens are whole pieces", (long long)whole);
  char pieces[96] = "";
  if (own_pattern) snprintf(pieces, sizeof pieces, "; %lld are whole pieces and equal the tokenizer's ids", (long long)whole);
  lmf_t_note("%s: %lld new tokens in %d batches of %d%s; the BPE re-encoding equals the merged parts for %lld "
             "(%.1f%%)", name, (long long)total, c.num_langs, BATCH, pieces, (long long)equal,
             100.0 * (double)equal / (double)(total ? total : 1));
  dt_corpus_free(&c);
done:
  lmf_vocab_destroy(v);
  lmf_context_destroy(ctx);
}

void test_hn_surface_real_gpt4o(void) { surface_real("gpt-4o", 1); }
void test_hn_surface_real_mistral(void) { surface_real("mistral-7b", 0); }

/* Specials, vocabulary tokens, truncation, original_vocab_size, ids given explicitly. */
void test_hn_surface_cases(void) {
  lmf_vocab_t *v = dt_load_vocab("mistral-7b");
  if (!v) return;
  int32_t V = 0;
  lmf_vocab_size(v, &V);
  /* Two byte strings: a long word (more than 7 ids) and a short one. */
  static const char s0[] = " Rhabarberbarbarabarbarbarenbartbarbier";
  static const char s1[] = " Hello";
  uint8_t bytes[128];
  int64_t offs[3] = {0, (int64_t)sizeof s0 - 1, (int64_t)(sizeof s0 - 1 + sizeof s1 - 1)};
  memcpy(bytes, s0, sizeof s0 - 1);
  memcpy(bytes + offs[1], s1, sizeof s1 - 1);
  int32_t hello = -1, e0 = -1;
  lmf_vocab_find(v, (const uint8_t *)" Hello", 6, &hello);
  int32_t fb_ff = -1; /* <0xFF>: its bytes are one invalid byte, so it encodes to itself */
  for (int32_t id = 0; id < V && fb_ff < 0; ++id) {
    uint32_t f;
    const uint8_t *b;
    int64_t l;
    lmf_vocab_token_flags(v, id, &f);
    lmf_vocab_token_bytes(v, id, &b, &l);
    if ((f & LMF_TOKEN_BYTE_FALLBACK) && l == 1 && b[0] == 0xFF) fb_ff = id;
  }
  if (!LMF_CHECK(hello >= 0 && fb_ff >= 0)) goto done;
  {
    /* <s> (special, id 1), " hello" as a vocabulary token, <0xFF>, new 0, new 1, new 1 again. */
    const int32_t ids[6] = {1, hello, fb_ff, V + 0, V + 1, V + 1};
    int32_t forms[6 * SL], copy[6], lens[6];
    lmf_hypernet_surface_args_t a = LMF_HYPERNET_SURFACE_ARGS_INIT;
    a.num_tokens = 6;
    a.ids = ids;
    a.num_new = 2;
    a.new_offsets = offs;
    a.new_bytes = bytes;
    a.surface_len = SL;
    a.pad_id = 2;
    a.original_vocab_size = V;
    a.out_forms = forms;
    a.out_copy_ids = copy;
    a.out_lengths = lens;
    if (LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a))) {
      LMF_CHECK(forms[0] == 1 && copy[0] == 1 && lens[0] == 1);
      for (int l = 1; l < SL; ++l) LMF_CHECK_EQ_INT(forms[l], 2);
      LMF_CHECK(forms[SL] == hello && forms[SL + 1] == 2 && copy[1] == -1 && lens[1] == 1);
      LMF_CHECK(forms[2 * SL] == fb_ff && lens[2] == 1);
      int32_t enc[64];
      int64_t n = 0;
      LMF_CHECK_OK(lmf_vocab_bpe_encode(v, bytes, offs[1], enc, 64, &n));
      LMF_CHECK_MSG(n > SL, "the long word needs more than %d ids (%lld)", SL, (long long)n);
      LMF_CHECK_EQ_INT(lens[3], n);
      LMF_CHECK_BYTES_EQ(forms + 3 * SL, enc, SL * sizeof(int32_t), "truncated to the first 7 ids");
      LMF_CHECK(forms[4 * SL] == hello && lens[4] == 1 && forms[4 * SL + 1] == 2);
      LMF_CHECK_BYTES_EQ(forms + 5 * SL, forms + 4 * SL, SL * sizeof(int32_t), "same token, same row");
      e0 = enc[0];
    }
    /* A special above original_vocab_size is not copied (the hypernetwork reads a fallback row); ids
     * of an encoding at or above V0 stay as they are. */
    a.original_vocab_size = 1;
    if (LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a))) {
      LMF_CHECK(forms[0] == 1 && copy[0] == -1);
      LMF_CHECK(forms[SL] == hello && forms[3 * SL] == e0);
    }
    /* surface_len 1, no optional outputs. */
    a.surface_len = 1;
    a.out_copy_ids = NULL;
    a.out_lengths = NULL;
    if (LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a))) {
      LMF_CHECK(forms[0] == 1 && forms[1] == hello && forms[2] == fb_ff && forms[3] == e0 && forms[4] == hello);
    }
    /* No tokens: nothing to do. */
    a.num_tokens = 0;
    LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a));
  }
  {
    /* An empty byte string: a row of pads, length 0. */
    const int64_t eo[2] = {0, 0};
    int32_t forms[SL], lens[1];
    lmf_hypernet_surface_args_t a = LMF_HYPERNET_SURFACE_ARGS_INIT;
    a.num_tokens = 1;
    a.num_new = 1;
    a.new_offsets = eo;
    a.surface_len = SL;
    a.pad_id = 9;
    a.out_forms = forms;
    a.out_lengths = lens;
    if (LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a))) {
      LMF_CHECK_EQ_INT(lens[0], 0);
      for (int l = 0; l < SL; ++l) LMF_CHECK_EQ_INT(forms[l], 9);
    }
  }
done:
  lmf_vocab_destroy(v);
}

/* The surface form is the BPE re-encoding, not the merged parts: merging [ab c] makes "abc" with
 * parts [ab, c], but the merges (b, c) before (a, b) encode it as [a, bc]. */
void test_hn_surface_not_the_parts(void) {
  static const uint8_t bytes[] = "abcabbc";
  static const int64_t offs[6] = {0, 1, 2, 3, 5, 7}; /* a b c ab bc */
  static const int32_t merges[4] = {1, 2, 0, 1};     /* (b, c), then (a, b) */
  lmf_vocab_arrays_t va = LMF_VOCAB_ARRAYS_INIT;
  va.num_tokens = 5;
  va.bytes = bytes;
  va.offsets = offs;
  va.num_merges = 2;
  va.merges = merges;
  lmf_vocab_t *v = NULL;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_dyntok_result_t *r = NULL;
  if (!ctx || !LMF_CHECK_OK(lmf_vocab_create(&v, &va))) goto done;
  dt_batch b;
  int64_t bo[2] = {0, 2};
  int32_t bi[2] = {3, 2}; /* [ab c] */
  b.B = 1;
  b.offsets = bo;
  b.ids = bi;
  b.word_ids = NULL;
  if (!LMF_CHECK_OK(dt_merge(ctx, v, &b, 1, LMF_DYNTOK_WHITESPACE, NULL, &r))) goto done;
  dt_view w;
  if (!dt_view_get(&w, r, v, bo) || !LMF_CHECK_EQ_INT(w.num_new, 1)) goto done;
  LMF_CHECK(w.decomp[0] == 3 && w.decomp[1] == 2); /* the parts: ab c */
  int32_t forms[4], lens[1];
  lmf_hypernet_surface_args_t a = LMF_HYPERNET_SURFACE_ARGS_INIT;
  a.num_tokens = 1;
  a.num_new = w.num_new;
  a.new_offsets = w.new_offsets;
  a.new_bytes = w.new_bytes;
  a.surface_len = 4;
  a.pad_id = 0;
  a.out_forms = forms;
  a.out_lengths = lens;
  if (LMF_CHECK_OK(lmf_hypernet_surface_forms(v, &a)))
    LMF_CHECK_MSG(forms[0] == 0 && forms[1] == 4 && forms[2] == 0 && forms[3] == 0 && lens[0] == 2,
                  "surface form [%d %d %d %d], expected [a bc pad pad] = [0 4 0 0]", forms[0], forms[1], forms[2],
                  forms[3]);
done:
  lmf_dyntok_result_destroy(r);
  lmf_vocab_destroy(v);
  lmf_context_destroy(ctx);
}

void test_hn_surface_bad_input(void) {
  lmf_vocab_t *v = dt_load_vocab("mistral-7b");
  if (!v) return;
  int32_t V = 0;
  lmf_vocab_size(v, &V);
  static const uint8_t bytes[] = " hello world";
  int64_t offs[3] = {0, 6, 12};
  int32_t ids[3] = {1, V, V + 1};
  int32_t forms[3 * SL + 8], copy[3], lens[3];
  lmf_hypernet_surface_args_t good = LMF_HYPERNET_SURFACE_ARGS_INIT;
  good.num_tokens = 3;
  good.ids = ids;
  good.num_new = 2;
  good.new_offsets = offs;
  good.new_bytes = bytes;
  good.surface_len = SL;
  good.pad_id = 2;
  good.out_forms = forms;
  good.out_copy_ids = copy;
  good.out_lengths = lens;
  lt_snapshot snap;
  for (int i = 0; i < 3 * SL + 8; ++i) forms[i] = -5;
  for (int i = 0; i < 3; ++i) copy[i] = lens[i] = -5;
  lt_snap_init(&snap);
  lt_snap_add(&snap, forms, sizeof forms);
  lt_snap_add(&snap, copy, sizeof copy);
  lt_snap_add(&snap, lens, sizeof lens);
  lmf_hypernet_surface_args_t a;
#define BAD(mutate, status, needle)                                        \
  do {                                                                    \
    a = good;                                                             \
    mutate;                                                               \
    LMF_CHECK_FAIL(lmf_hypernet_surface_forms(v, &a), status, needle);    \
    LT_SNAP_CHECK(&snap, needle);                                         \
  } while (0)
  LMF_CHECK_FAIL(lmf_hypernet_surface_forms(NULL, &good), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_hypernet_surface_forms(v, NULL), LMF_ERR_NULL_POINTER, "args");
  BAD(a.struct_size = 8, LMF_ERR_STRUCT_SIZE, "struct_size");
  BAD(a.version = 9, LMF_ERR_STRUCT_SIZE, "version");
  BAD(a.num_tokens = -1, LMF_ERR_INVALID_SIZE, "num_tokens");
  BAD(a.surface_len = 0, LMF_ERR_INVALID_SIZE, "surface_len");
  BAD(a.num_new = -1, LMF_ERR_INVALID_SIZE, "num_new");
  BAD(a.num_tokens = (int64_t)1 << 60, LMF_ERR_INVALID_SIZE, "overflows");
  BAD(a.pad_id = -1, LMF_ERR_INVALID_ARGUMENT, "pad_id");
  BAD(a.original_vocab_size = -3, LMF_ERR_INVALID_ARGUMENT, "original_vocab_size");
  BAD(a.out_forms = NULL, LMF_ERR_NULL_POINTER, "out_forms");
  BAD((a.ids = NULL, a.num_tokens = 3), LMF_ERR_INVALID_SIZE, "num_new");
  BAD(a.new_offsets = NULL, LMF_ERR_NULL_POINTER, "new_offsets");
  BAD(a.new_bytes = NULL, LMF_ERR_NULL_POINTER, "new_bytes");
  {
    int64_t o2[3] = {1, 6, 12};
    BAD(a.new_offsets = o2, LMF_ERR_INVALID_ARGUMENT, "new_offsets[0]");
    int64_t o3[3] = {0, 7, 6};
    BAD(a.new_offsets = o3, LMF_ERR_INVALID_ARGUMENT, "decrease");
  }
  {
    int32_t i2[3] = {1, V + 2, V};
    BAD(a.ids = i2, LMF_ERR_INVALID_ARGUMENT, "ids[1]");
    int32_t i3[3] = {-1, V, V};
    BAD(a.ids = i3, LMF_ERR_INVALID_ARGUMENT, "ids[0]");
  }
  BAD(a.out_copy_ids = forms + 2, LMF_ERR_OVERLAP, "overlap");
  BAD(a.out_lengths = (int32_t *)(void *)offs, LMF_ERR_OVERLAP, "overlap");
#undef BAD
  lt_snap_free(&snap);
  lmf_vocab_destroy(v);

  /* A byte the vocabulary cannot start BPE from: the message names the token; nothing written. */
  static const char *const names[] = {"a", "b"};
  uint8_t vb[2] = {'a', 'b'};
  int64_t vo[3] = {0, 1, 2};
  lmf_vocab_arrays_t va = LMF_VOCAB_ARRAYS_INIT;
  va.num_tokens = 2;
  va.bytes = vb;
  va.offsets = vo;
  lmf_vocab_t *raw = NULL;
  (void)names;
  if (LMF_CHECK_OK(lmf_vocab_create(&raw, &va))) {
    static const uint8_t nb[] = "abc";
    int64_t no[3] = {0, 2, 3};
    int32_t f[2 * SL];
    for (int i = 0; i < 2 * SL; ++i) f[i] = -5;
    lmf_hypernet_surface_args_t b = LMF_HYPERNET_SURFACE_ARGS_INIT;
    b.num_tokens = 2;
    b.num_new = 2;
    b.new_offsets = no;
    b.new_bytes = nb;
    b.surface_len = SL;
    b.pad_id = 0;
    b.out_forms = f;
    LMF_CHECK_FAIL(lmf_hypernet_surface_forms(raw, &b), LMF_ERR_INVALID_ARGUMENT, "token 1");
    for (int i = 0; i < 2 * SL; ++i) LMF_CHECK_EQ_INT(f[i], -5);
    LMF_CHECK(strstr(lmf_last_error(), "0x63") != NULL);
    lmf_vocab_destroy(raw);
  }
}
