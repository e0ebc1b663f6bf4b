/* The spec's test vectors T1-T9 (specs/dynamic-bpe.md), each with its own RAW vocabulary holding exactly
 * the tokens the vector uses (GPT-2 byte-level strings: "Ġ" is a space byte, "Ċ" a newline, "Ã" and "©"
 * the bytes C3 and A9; <s> and </s> special), and the expectations written as in the spec: merge lists
 * "(left,right,count)", output sequences as token strings. Plus hand-worked cases of the other boundary
 * modes, string identity with the base vocabulary, spans and decompositions, and edge shapes (empty
 * sequences, m = 0). Expectations are derived by hand from the spec, never from lmfuse. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

typedef struct dcase {
  const char *const *names;
  int n;
  lmf_context_t *ctx;
  lmf_vocab_t *vocab;
  dt_batch batch;
  lmf_dyntok_result_t *res;
  dt_view w;
} dcase;

static const char *const k_specials[] = {"<s>", "</s>", NULL};

static void dc_free(dcase *c) {
  lmf_dyntok_result_destroy(c->res);
  dt_batch_free(&c->batch);
  lmf_vocab_destroy(c->vocab);
  lmf_context_destroy(c->ctx);
  memset(c, 0, sizeof *c);
}

/* Builds the vocabulary and the batch and runs the merge. 0 after reporting on failure. */
static int dc_run(dcase *c, const char *const *names, int n, const char *const *seqs, int B, int32_t m,
                  int32_t boundary, const int32_t *word_ids) {
  memset(c, 0, sizeof *c);
  c->names = names;
  c->n = n;
  c->ctx = lt_context(LMF_BACKEND_CPU, 0);
  c->vocab = dt_vocab(names, n, k_specials);
  if (!c->ctx || !c->vocab) return 0;
  if (!dt_batch_parse(&c->batch, names, n, seqs, B)) return 0;
  if (word_ids) {
    int64_t N = c->batch.offsets[B];
    c->batch.word_ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(N + 1));
    if (!LMF_CHECK(c->batch.word_ids)) return 0;
    memcpy(c->batch.word_ids, word_ids, sizeof(int32_t) * (size_t)N);
  }
  if (!LMF_CHECK_OK(dt_merge(c->ctx, c->vocab, &c->batch, m, boundary, NULL, &c->res))) return 0;
  return dt_view_get(&c->w, c->res, c->vocab, c->batch.offsets);
}

/* The merge list and the output sequences, as the spec writes them. */
static int dc_expect(dcase *c, const char *merges, const char *const *out) {
  int ok = 1;
  char *got = dt_render_merges(c->vocab, &c->w);
  ok &= LMF_CHECK_STR_EQ(got, merges);
  free(got);
  for (int64_t s = 0; s < c->w.B; ++s) {
    char *seq = dt_render_seq(c->vocab, &c->w, s);
    ok &= LMF_CHECK_STR_EQ(seq, out[s]);
    free(seq);
  }
  return ok;
}

/* Number of distinct ids among the output tokens. */
static int64_t distinct_ids(const dt_view *w) {
  int64_t d = 0;
  for (int64_t i = 0; i < w->N; ++i) {
    int seen = 0;
    for (int64_t j = 0; j < i && !seen; ++j) seen = w->ids[j] == w->ids[i];
    d += !seen;
  }
  return d;
}

/* The decomposition of output id `id` (a new token) as space-separated token strings of names[]. */
static int expect_decomp(dcase *c, int32_t id, const char *want) {
  if (!LMF_CHECK_MSG(id >= c->w.V && id < c->w.V + c->w.num_new, "id %d is not a new token", id)) return 0;
  int32_t k = id - c->w.V;
  char buf[1024] = "";
  for (int64_t i = c->w.decomp_offsets[k]; i < c->w.decomp_offsets[k + 1]; ++i) {
    if (i > c->w.decomp_offsets[k]) strcat(buf, " ");
    strcat(buf, c->names[c->w.decomp[i]]);
  }
  return LMF_CHECK_STR_EQ(buf, want);
}

/* ---- T1 ----------------------------------------------------------------------------------------- */

static const char *const t1_names[] = {
    "<s>", "</s>", "ĠR", "ib", "on", "uc", "le", "op", "rote", "in", "Ġparticles", "Ġreg", "ulate", "Ġm", "R",
    "NA", "Ġstability", ".", "Ġis", "Ġmod", "ulated", "Ġby", "Ġrib", "Ġfactors"};
static const char *const t1_seqs[] = {
    "<s> ĠR ib on uc le op rote in Ġparticles Ġreg ulate Ġm R NA Ġstability . </s>",
    "<s> Ġm R NA Ġstability Ġis Ġmod ulated Ġby Ġrib on uc le op rote in Ġfactors . </s>"};

void test_dyntok_t1_readme(void) {
  dcase c;
  if (dc_run(&c, t1_names, 24, t1_seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    LMF_CHECK_EQ_INT(c.batch.offsets[2], 37);
    static const char *const out[] = {
        "<s> ĠRibonucleoprotein Ġparticles Ġregulate ĠmRNA Ġstability . </s>",
        "<s> ĠmRNA Ġstability Ġis Ġmod ulated Ġby Ġrib onucleoprotein Ġfactors . </s>"};
    dc_expect(&c,
              "(on,uc,2) (onuc,le,2) (onucle,op,2) (onucleop,rote,2) (onucleoprote,in,2) (Ġm,R,2) "
              "(ĠmR,NA,2) (ĠR,ib,1) (ĠRib,onucleoprotein,1) (Ġreg,ulate,1)",
              out);
    LMF_CHECK_EQ_INT(c.w.N, 20);
    LMF_CHECK_EQ_INT(c.w.num_new, 10);
    /* Ids: new tokens in order of creation. */
    for (int32_t k = 0; k < c.w.num_merges; ++k) LMF_CHECK_EQ_INT(c.w.merge_results[k], 24 + k);
    /* Decompositions: the concatenation of the parts'. */
    expect_decomp(&c, c.w.ids[1], "ĠR ib on uc le op rote in");
    expect_decomp(&c, c.w.ids[4], "Ġm R NA");
    expect_decomp(&c, c.w.ids[c.w.offsets[1] + 8], "on uc le op rote in");
    /* Spans: ĠRibonucleoprotein covers input 1 .. 8; seq 1 (flat start 18)'s onucleoprotein covers its
     * positions 10 .. 15. */
    LMF_CHECK_EQ_INT(c.w.span_start[1], 1);
    LMF_CHECK_EQ_INT(c.w.span_len[1], 8);
    LMF_CHECK_EQ_INT(c.w.span_start[c.w.offsets[1] + 8], 18 + 10);
    LMF_CHECK_EQ_INT(c.w.span_len[c.w.offsets[1] + 8], 6);
  }
  dc_free(&c);
}

void test_dyntok_t1_early_stop(void) {
  dcase c;
  if (dc_run(&c, t1_names, 24, t1_seqs, 2, 100, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {
        "<s> ĠRibonucleoprotein Ġparticles Ġregulate ĠmRNA Ġstability . </s>",
        "<s> ĠmRNA Ġstability Ġis Ġmodulated Ġby Ġribonucleoprotein Ġfactors . </s>"};
    dc_expect(&c,
              "(on,uc,2) (onuc,le,2) (onucle,op,2) (onucleop,rote,2) (onucleoprote,in,2) (Ġm,R,2) "
              "(ĠmR,NA,2) (ĠR,ib,1) (ĠRib,onucleoprotein,1) (Ġreg,ulate,1) (Ġmod,ulated,1) "
              "(Ġrib,onucleoprotein,1)",
              out);
    LMF_CHECK_EQ_INT(c.w.num_merges, 12);
    LMF_CHECK_EQ_INT(c.w.N, 18);
    expect_decomp(&c, c.w.ids[c.w.offsets[1] + 6], "Ġrib on uc le op rote in");
  }
  dc_free(&c);
}

/* ---- T2: an overlapping run ----------------------------------------------------------------------- */

void test_dyntok_t2_overlapping_run(void) {
  static const char *const names[] = {"Ġa", "a"};
  static const char *const seqs[] = {"Ġa a a a a"};
  dcase c;
  if (dc_run(&c, names, 2, seqs, 1, 3, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"Ġaaaaa"};
    dc_expect(&c, "(a,a,3) (Ġa,aa,1) (Ġaaa,aa,1)", out);
    LMF_CHECK_EQ_INT(c.w.span_start[0], 0);
    LMF_CHECK_EQ_INT(c.w.span_len[0], 5);
    expect_decomp(&c, c.w.ids[0], "Ġa a a a a");
  }
  dc_free(&c);
  /* After the first merge alone: [Ġa aa aa], left-greedy. */
  if (dc_run(&c, names, 2, seqs, 1, 1, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"Ġa aa aa"};
    dc_expect(&c, "(a,a,3)", out);
    LMF_CHECK_EQ_INT(c.w.span_start[1], 1);
    LMF_CHECK_EQ_INT(c.w.span_len[1], 2);
    LMF_CHECK_EQ_INT(c.w.span_start[2], 3);
    LMF_CHECK_EQ_INT(c.w.span_len[2], 2);
    LMF_CHECK_EQ_INT(c.w.ids[1], c.w.ids[2]);
  }
  dc_free(&c);
  /* Odd and even runs around other tokens: "a a a" leaves "aa a"; counts of (a, a) stay exact. */
  static const char *const names2[] = {"Ġx", "a", "Ġy"};
  static const char *const seqs2[] = {"Ġx a a a Ġy a a a a a a a", "a a"};
  if (dc_run(&c, names2, 3, seqs2, 2, 2, LMF_DYNTOK_PRETOKENS, NULL)) {
    /* (a,a): 2 + 6 + 1 = 9. Then "Ġx aa a Ġy aa aa aa a" / "aa": (aa,a) 2 (first at seq 0 pos 1),
     * (aa,aa) 2, (Ġx,aa) 1, (Ġy,aa) 1 -> (aa,a) by first occurrence. */
    static const char *const out[] = {"Ġx aaa Ġy aa aa aaa", "aa"};
    dc_expect(&c, "(a,a,9) (aa,a,2)", out);
  }
  dc_free(&c);
}

/* ---- T3: tie-break by first occurrence ------------------------------------------------------------ */

void test_dyntok_t3_tie_break(void) {
  static const char *const names[] = {"Ġc", "d", "Ġx", "y"}; /* (Ġc,d) has the smaller ids */
  static const char *const seqs[] = {"Ġx y Ġc d", "Ġc d Ġx y"};
  dcase c;
  if (dc_run(&c, names, 4, seqs, 2, 1, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"Ġxy Ġc d", "Ġc d Ġxy"};
    dc_expect(&c, "(Ġx,y,2)", out);
  }
  dc_free(&c);
}

/* ---- T4: whitespace ------------------------------------------------------------------------------- */

void test_dyntok_t4_whitespace(void) {
  static const char *const names[] = {"Ġ", "Ġa", "Ċ", "x"};
  static const char *const seqs[] = {"Ġ Ġ Ġ Ġa", "Ċ Ċ x"};
  dcase c;
  if (dc_run(&c, names, 4, seqs, 2, 4, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"ĠĠĠ Ġa", "Ċ Ċ x"};
    dc_expect(&c, "(Ġ,Ġ,2) (ĠĠ,Ġ,1)", out);
    LMF_CHECK_EQ_INT(c.w.num_merges, 2);
  }
  dc_free(&c);
}

/* ---- T5: validity --------------------------------------------------------------------------------- */

static const char *const t5_names[] = {"Ġ", "Ġa", "b", "Ġ1", "2", "'", "s", "a", "Ã", "©", "Ġcaf", "Ċ",
                                       "Ġb", ".", "1", "Ġdon", "'t", "<s>", "ĠR", "</s>"};

/* VALID(a, b) through the public API: a one-pair batch with m = 1 merges iff the pair is valid. */
static int t5_valid(lmf_context_t *ctx, lmf_vocab_t *vocab, const char *a, const char *b) {
  dt_batch bt;
  char seq[64];
  snprintf(seq, sizeof seq, "%s %s", a, b);
  const char *seqs[] = {seq};
  int r = -1;
  lmf_dyntok_result_t *res = NULL;
  if (dt_batch_parse(&bt, t5_names, 20, seqs, 1) &&
      LMF_CHECK_OK(dt_merge(ctx, vocab, &bt, 1, LMF_DYNTOK_PRETOKENS, NULL, &res))) {
    int32_t nm = -1;
    int64_t nt = -1;
    lmf_dyntok_result_sizes(res, NULL, &nt, &nm, NULL);
    r = nm;
    LMF_CHECK_EQ_INT(nt, 2 - nm);
  }
  lmf_dyntok_result_destroy(res);
  dt_batch_free(&bt);
  return r;
}

void test_dyntok_t5_validity(void) {
  static const char *const valid[][2] = {{"Ġ", "Ġ"}, {"Ġa", "b"}, {"Ġ1", "2"}, {"'", "s"},
                                         {"Ġ", "a"}, {"Ã", "©"}, {"Ġcaf", "Ã"}};
  static const char *const invalid[][2] = {{"Ċ", "Ċ"},    {"Ġ", "Ġa"},   {"Ġa", "Ġb"},
                                           {"Ġa", "."},   {"Ġa", "1"},   {"Ġdon", "'t"},
                                           {"<s>", "ĠR"}, {".", "</s>"}, {"</s>", "</s>"}};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *vocab = dt_vocab(t5_names, 20, k_specials);
  if (ctx && vocab) {
    for (size_t i = 0; i < sizeof valid / sizeof valid[0]; ++i)
      LMF_CHECK_MSG(t5_valid(ctx, vocab, valid[i][0], valid[i][1]) == 1, "(%s,%s) must be valid",
                    valid[i][0], valid[i][1]);
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; ++i)
      LMF_CHECK_MSG(t5_valid(ctx, vocab, invalid[i][0], invalid[i][1]) == 0, "(%s,%s) must be invalid",
                    invalid[i][0], invalid[i][1]);
  }
  lmf_vocab_destroy(vocab);
  lmf_context_destroy(ctx);
}

/* ---- T6: string identity -------------------------------------------------------------------------- */

void test_dyntok_t6_string_identity(void) {
  static const char *const names[] = {"Ġa", "bc", "d", "Ġab", "c", "e"};
  static const char *const seqs[] = {"Ġa bc d", "Ġab c d", "Ġab c e", "Ġa bc e", "Ġab c d"};
  dcase c;
  if (dc_run(&c, names, 6, seqs, 5, 6, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"Ġabcd", "Ġabcd", "Ġabce", "Ġabce", "Ġabcd"};
    dc_expect(&c, "(Ġab,c,3) (Ġa,bc,2) (Ġabc,d,3) (Ġabc,e,2)", out);
    LMF_CHECK_EQ_INT(distinct_ids(&c.w), 2);
    LMF_CHECK_EQ_INT(c.w.num_new, 3); /* Ġabc, Ġabcd, Ġabce */
    /* (Ġa,bc) made the same token as (Ġab,c): same id. */
    LMF_CHECK_EQ_INT(c.w.merge_results[0], 6);
    LMF_CHECK_EQ_INT(c.w.merge_results[1], 6);
    /* Decomposition of the first path that made it. */
    expect_decomp(&c, 6, "Ġab c");
    expect_decomp(&c, c.w.ids[0], "Ġab c d");
    expect_decomp(&c, c.w.ids[2], "Ġab c e");
  }
  dc_free(&c);
}

/* ---- T7: specials --------------------------------------------------------------------------------- */

void test_dyntok_t7_specials(void) {
  static const char *const names[] = {"<s>", "</s>", "Ġa", "b"};
  static const char *const seqs[] = {"<s> Ġa b </s>"};
  dcase c;
  if (dc_run(&c, names, 4, seqs, 1, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"<s> Ġab </s>"};
    dc_expect(&c, "(Ġa,b,1)", out);
  }
  dc_free(&c);
  /* Specials never merge in the other modes either (WORDS: even with equal word ids). */
  static const char *const seqs2[] = {"<s> <s> Ġa b </s> </s>"};
  static const int32_t words[] = {0, 0, 0, 0, 0, 0};
  if (dc_run(&c, names, 4, seqs2, 1, 10, LMF_DYNTOK_WORDS, words)) {
    static const char *const out[] = {"<s> <s> Ġab </s> </s>"};
    dc_expect(&c, "(Ġa,b,1)", out);
  }
  dc_free(&c);
  if (dc_run(&c, names, 4, seqs2, 1, 10, LMF_DYNTOK_WHITESPACE, NULL)) {
    static const char *const out[] = {"<s> <s> Ġab </s> </s>"};
    dc_expect(&c, "(Ġa,b,1)", out);
  }
  dc_free(&c);
}

/* ---- T8: digits vs letters ------------------------------------------------------------------------ */

void test_dyntok_t8_digits(void) {
  static const char *const names[] = {"Ġa", "1", "2", "Ġ1", "3"};
  static const char *const seqs[] = {"Ġa 1 2", "Ġ1 2 3"};
  dcase c;
  if (dc_run(&c, names, 5, seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"Ġa 12", "Ġ123"};
    dc_expect(&c, "(1,2,1) (Ġ1,2,1) (Ġ12,3,1)", out);
  }
  dc_free(&c);
}

/* ---- T9: partial UTF-8 ---------------------------------------------------------------------------- */

void test_dyntok_t9_partial_utf8(void) {
  static const char *const names[] = {"Ġcaf", "Ã", "©", "s"};
  static const char *const seqs[] = {"Ġcaf Ã ©", "Ġcaf Ã © s"};
  dcase c;
  if (dc_run(&c, names, 4, seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"ĠcafÃ©", "ĠcafÃ©s"};
    dc_expect(&c, "(Ġcaf,Ã,2) (ĠcafÃ,©,2) (ĠcafÃ©,s,1)", out);
    /* The bytes of the new token: " caf\xC3\xA9s". */
    int64_t len;
    const uint8_t *b = dt_bytes(c.vocab, &c.w, c.w.ids[1], &len);
    LMF_CHECK_EQ_INT(len, 7);
    if (len == 7) LMF_CHECK_BYTES_EQ(b, " caf\xC3\xA9s", 7, "new token bytes");
  }
  dc_free(&c);
}

/* ---- The other boundary modes ------------------------------------------------------------------- */

/* WORDS: validity per occurrence. (b, c) occurs 3 times but only twice inside one word; its first
 * occurrence (seq 0, pos 1) is across words and does not count for the tie-break either. */
void test_dyntok_words_mode(void) {
  static const char *const names[] = {"a", "b", "c", "d"};
  static const char *const seqs[] = {"a b c d", "b c b c d d"};
  /* seq 0: words a b | c d      -> (a,b) (c,d) valid, (b,c) not;
   * seq 1: words b c | b c | d | d(-1) -> (b,c) twice, (c,b) no, (c,d) no, (d,d) no (second d is -1). */
  static const int32_t words[] = {0, 0, 1, 1, 5, 5, 6, 6, 7, -1};
  dcase c;
  if (dc_run(&c, names, 4, seqs, 2, 10, LMF_DYNTOK_WORDS, words)) {
    /* Counts: (a,b) 1, (c,d) 1, (b,c) 2 -> (b,c). Then (a,b) 1 at 0 and (c,d) 1 at 2: (a,b), (c,d). */
    static const char *const out[] = {"ab cd", "bc bc d d"};
    dc_expect(&c, "(b,c,2) (a,b,1) (c,d,1)", out);
  }
  dc_free(&c);
  /* Tie-break on the first VALID occurrence: (a,b) appears first across words, then (c,d) inside a
   * word, then (a,b) inside a word: both count 1, (c,d) wins. */
  static const char *const seqs2[] = {"a b c d a b"};
  static const int32_t words2[] = {0, 1, 2, 2, 3, 3};
  if (dc_run(&c, names, 4, seqs2, 1, 1, LMF_DYNTOK_WORDS, words2)) {
    static const char *const out[] = {"a b cd a b"};
    dc_expect(&c, "(c,d,1)", out);
  }
  dc_free(&c);
}

/* WHITESPACE: no whitespace byte (0x09-0x0D, 0x20) after the first; punctuation and digits do merge. */
void test_dyntok_whitespace_mode(void) {
  static const char *const names[] = {"Ġa", "b", ".", "Ġ", "Ċ", "1", "x"};
  static const char *const seqs[] = {"Ġa b . 1 Ġ Ġ Ċ x"};
  dcase c;
  if (dc_run(&c, names, 7, seqs, 1, 10, LMF_DYNTOK_WHITESPACE, NULL)) {
    /* Valid: (Ġa,b) (b,.) (.,1) (Ċ,x); invalid: (1,Ġ) (Ġ,Ġ) (Ġ,Ċ). All count 1: by position. */
    static const char *const out[] = {"Ġab.1 Ġ Ġ Ċx"};
    dc_expect(&c, "(Ġa,b,1) (Ġab,.,1) (Ġab.,1,1) (Ċ,x,1)", out);
  }
  dc_free(&c);
  /* Tab, CR, VT and FF (GPT-2 "ĉ", "č", "ċ", "Č") are whitespace too, after the first byte only. */
  static const char *const names3[] = {"x", "ĉ", "č", "ċ", "Č"};
  static const char *const seqs3[] = {"x ĉ", "x č", "x ċ", "x Č", "ĉ x", "č x"};
  if (dc_run(&c, names3, 5, seqs3, 6, 10, LMF_DYNTOK_WHITESPACE, NULL)) {
    static const char *const out[] = {"x ĉ", "x č", "x ċ", "x Č", "ĉx", "čx"};
    dc_expect(&c, "(ĉ,x,1) (č,x,1)", out);
  }
  dc_free(&c);
  /* The same batch in PRETOKENS: (Ġ,Ġ) and (Ġ,Ċ) are all space-like (valid); (b,.) and (.,1) are not
   * one match. */
  if (dc_run(&c, names, 7, seqs, 1, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    /* Step 1: (Ġa,b) at 0. Step 2: (Ġ,Ġ) at 4 ((Ġ,Ċ) at 5 comes later). Step 3: (ĠĠ,Ċ) -> "  \n".
     * (Ċ,x) = "\nx" is not one match ("\s+(?!\S)" cannot stop before x, "\s+" matches "\n" alone). */
    static const char *const out[] = {"Ġab . 1 ĠĠĊ x"};
    dc_expect(&c, "(Ġa,b,1) (Ġ,Ġ,1) (ĠĠ,Ċ,1)", out);
  }
  dc_free(&c);
}

/* A merged byte string that is a base token IS that token (the canonical id of its bytes). */
void test_dyntok_identity_with_vocab(void) {
  static const char *const names[] = {"a", "b", "x", "ab", "ab", "abx"};
  static const char *const seqs[] = {"a b x", "a b", "ab x"};
  dcase c;
  if (dc_run(&c, names, 6, seqs, 3, 10, LMF_DYNTOK_PRETOKENS, NULL)) {
    /* (a,b) 2 -> "ab" = id 3 (the smaller of the two "ab" ids); then (ab,x) 2 -> "abx" = id 5. */
    static const char *const out[] = {"abx", "ab", "abx"};
    dc_expect(&c, "(a,b,2) (ab,x,2)", out);
    LMF_CHECK_EQ_INT(c.w.merge_results[0], 3);
    LMF_CHECK_EQ_INT(c.w.merge_results[1], 5);
    LMF_CHECK_EQ_INT(c.w.num_new, 0);
    LMF_CHECK_EQ_INT(c.w.ids[0], 5);
    LMF_CHECK_EQ_INT(c.w.ids[1], 3);
    LMF_CHECK_EQ_INT(c.w.ids[2], 5);
    /* Spans: seq 2's "abx" covers input positions 5 and 6 (ab stayed one input token). */
    LMF_CHECK_EQ_INT(c.w.span_start[2], 5);
    LMF_CHECK_EQ_INT(c.w.span_len[2], 2);
  }
  dc_free(&c);
}

/* Empty sequences, one-token sequences, an all-empty batch, and m = 0. */
void test_dyntok_edge_shapes(void) {
  static const char *const names[] = {"Ġa", "b"};
  static const char *const seqs[] = {"", "Ġa b", "", "b", "Ġa b Ġa"};
  dcase c;
  if (dc_run(&c, names, 2, seqs, 5, 5, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"", "Ġab", "", "b", "Ġab Ġa"};
    dc_expect(&c, "(Ġa,b,2)", out);
    LMF_CHECK_EQ_INT(c.w.offsets[1], 0);
    LMF_CHECK_EQ_INT(c.w.offsets[3], 1);
  }
  dc_free(&c);
  if (dc_run(&c, names, 2, seqs, 5, 0, LMF_DYNTOK_PRETOKENS, NULL)) {
    static const char *const out[] = {"", "Ġa b", "", "b", "Ġa b Ġa"};
    dc_expect(&c, "", out);
    LMF_CHECK_EQ_INT(c.w.num_new, 0);
  }
  dc_free(&c);
  /* No tokens at all: ids may be NULL. */
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *vocab = dt_vocab(names, 2, NULL);
  if (ctx && vocab) {
    int64_t offsets[3] = {0, 0, 0};
    dt_batch b = {2, offsets, NULL, NULL};
    lmf_dyntok_result_t *res = NULL;
    if (LMF_CHECK_OK(dt_merge(ctx, vocab, &b, 10, LMF_DYNTOK_PRETOKENS, NULL, &res))) {
      dt_view w;
      if (dt_view_get(&w, res, vocab, offsets)) {
        LMF_CHECK_EQ_INT(w.N, 0);
        LMF_CHECK_EQ_INT(w.num_merges, 0);
        LMF_CHECK_EQ_INT(w.B, 2);
      }
    }
    lmf_dyntok_result_destroy(res);
  }
  lmf_vocab_destroy(vocab);
  lmf_context_destroy(ctx);
}

/* The pattern is used only in PRETOKENS mode: another mode ignores it, even one that would not compile. */
void test_dyntok_pattern_only_for_pretokens(void) {
  static const char *const names[] = {"Ġa", "b"};
  static const char *const seqs[] = {"Ġa b"};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *vocab = dt_vocab(names, 2, NULL);
  dt_batch b;
  if (ctx && vocab && dt_batch_parse(&b, names, 2, seqs, 1)) {
    lmf_dyntok_result_t *res = NULL;
    if (LMF_CHECK_OK(dt_merge(ctx, vocab, &b, 5, LMF_DYNTOK_WHITESPACE, "(unclosed", &res))) {
      int32_t nm = -1;
      lmf_dyntok_result_sizes(res, NULL, NULL, &nm, NULL);
      LMF_CHECK_EQ_INT(nm, 1);
    }
    lmf_dyntok_result_destroy(res);
    /* A custom pattern changes VALID: with "\S" (one non-space character) nothing longer is valid. */
    res = NULL;
    if (LMF_CHECK_OK(dt_merge(ctx, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, "\\S", &res))) {
      int32_t nm = -1;
      lmf_dyntok_result_sizes(res, NULL, NULL, &nm, NULL);
      LMF_CHECK_EQ_INT(nm, 0);
    }
    lmf_dyntok_result_destroy(res);
    res = NULL;
    if (LMF_CHECK_OK(dt_merge(ctx, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, " ?\\w+", &res))) {
      int32_t nm = -1;
      lmf_dyntok_result_sizes(res, NULL, NULL, &nm, NULL);
      LMF_CHECK_EQ_INT(nm, 1);
    }
    lmf_dyntok_result_destroy(res);
    dt_batch_free(&b);
  }
  lmf_vocab_destroy(vocab);
  lmf_context_destroy(ctx);
}

/* The C reference agrees with the spec vectors too (so the real-data comparison stands on it). */
void test_dyntok_reference_on_vectors(void) {
  static const int32_t ms[] = {10, 100};
  lmf_vocab_t *vocab = dt_vocab(t1_names, 24, k_specials);
  dt_batch b;
  lmf_ref_dt_rule *rule = lmf_ref_dt_rule_create(LMF_DYNTOK_PRETOKENS, NULL);
  if (LMF_CHECK(rule != NULL) && vocab && dt_batch_parse(&b, t1_names, 24, t1_seqs, 2)) {
    lmf_ref_dt_result r[2];
    if (LMF_CHECK(lmf_ref_dyntok(vocab, 2, b.offsets, b.ids, NULL, rule, LMF_DYNTOK_PRETOKENS, 2, ms, r))) {
      LMF_CHECK_EQ_INT(r[0].num_merges, 10);
      LMF_CHECK_EQ_INT(r[0].num_tokens, 20);
      LMF_CHECK_EQ_INT(r[1].num_merges, 12);
      LMF_CHECK_EQ_INT(r[1].num_tokens, 18);
      /* Merge 8 is (ĠR, ib) with count 1; merge 9 (ĠRib, onucleoprotein). */
      LMF_CHECK_EQ_INT(r[0].merge_pairs[14], 2);
      LMF_CHECK_EQ_INT(r[0].merge_pairs[15], 3);
      LMF_CHECK_EQ_INT(r[0].merge_counts[7], 1);
      LMF_CHECK_EQ_INT(r[0].merge_counts[6], 2);
      lmf_ref_dt_result_free(&r[0]);
      lmf_ref_dt_result_free(&r[1]);
    }
    dt_batch_free(&b);
  }
  /* The reference's VALID on T5's strings. */
  if (rule) {
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)"  ", 2), 1);
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)"\n\n", 2), 0);
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)" don't", 6), 0);
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)"'s", 2), 1);
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)" caf\xC3", 5), 1);
    LMF_CHECK_EQ_INT(lmf_ref_dt_valid_string(rule, (const uint8_t *)" a1", 3), 0);
    LMF_CHECK_EQ_INT(lmf_ref_dt_utf8_valid((const uint8_t *)"\xC0\x80", 2), 0);  /* overlong */
    LMF_CHECK_EQ_INT(lmf_ref_dt_utf8_valid((const uint8_t *)"\xED\xA0\x80", 3), 0); /* surrogate */
    LMF_CHECK_EQ_INT(lmf_ref_dt_utf8_valid((const uint8_t *)"\xF4\x90\x80\x80", 4), 0);
    LMF_CHECK_EQ_INT(lmf_ref_dt_utf8_valid((const uint8_t *)"\xF0\x9F\x98\x80", 4), 1);
  }
  lmf_ref_dt_rule_destroy(rule);
  lmf_vocab_destroy(vocab);
}

/* UTF-8 edge forms through the public API: an overlong, a surrogate and a too-large code point are
 * not valid UTF-8, so rule 2 makes such pairs valid; a real 4-byte character goes to the pattern. */
void test_dyntok_utf8_rule(void) {
  /* Token strings in GPT-2 form of the bytes: "À" = C0, "Ģ" = 0x80 (byte 128 maps to U+0122). */
  static const char *const names[] = {"Ġx", "À", "Ģ", "ðŁĺ", "Ģ!", "ðŁĺĢ"};
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *vocab = dt_vocab(names, 6, NULL);
  if (ctx && vocab) {
    /* (À, Ģ) = C0 80: an overlong NUL, invalid UTF-8 -> valid pair. */
    static const char *const s1[] = {"À Ģ"};
    /* (ðŁĺ, Ģ) = F0 9F 98 80 = U+1F600 (a symbol, So): one match of " ?[^\s\p{L}\p{N}]+" -> valid. */
    static const char *const s2[] = {"ðŁĺ Ģ"};
    /* (Ġx, ðŁĺ) = " x" + F0 9F 98: partial -> valid. */
    static const char *const s3[] = {"Ġx ðŁĺ"};
    /* (ðŁĺ, Ģ!) = U+1F600 "!": one match of " ?[^\s\p{L}\p{N}]+" -> valid. */
    static const char *const s4[] = {"ðŁĺ Ģ!"};
    /* (Ġx, Ģ!) = " x" 80 "!": invalid UTF-8 -> valid. */
    static const char *const s5[] = {"Ġx Ģ!"};
    /* (Ġx, ðŁĺĢ) = " x" U+1F600: valid UTF-8, two matches -> invalid. */
    static const char *const s6[] = {"Ġx ðŁĺĢ"};
    static const char *const *all[] = {s1, s2, s3, s4, s5, s6};
    static const int want[] = {1, 1, 1, 1, 1, 0};
    for (int i = 0; i < 6; ++i) {
      dt_batch b;
      if (!dt_batch_parse(&b, names, 6, all[i], 1)) continue;
      lmf_dyntok_result_t *res = NULL;
      if (LMF_CHECK_OK(dt_merge(ctx, vocab, &b, 1, LMF_DYNTOK_PRETOKENS, NULL, &res))) {
        int32_t nm = -1;
        lmf_dyntok_result_sizes(res, NULL, NULL, &nm, NULL);
        LMF_CHECK_MSG(nm == want[i], "case %d (%s): %d merges, expected %d", i, all[i][0], nm, want[i]);
      }
      lmf_dyntok_result_destroy(res);
      dt_batch_free(&b);
    }
  }
  lmf_vocab_destroy(vocab);
  lmf_context_destroy(ctx);
}

/* ---- Concurrent calls and the compiled-pattern cache ---------------------------------------------- */

enum { CC_PATTERNS = 12, CC_THREADS = 4, CC_ROUNDS = 3 };

typedef struct cc_shared {
  lmf_context_t *ctx;
  lmf_vocab_t *vocab;
  dt_batch *batch;
  const char *patterns[CC_PATTERNS];
  char *expect[CC_PATTERNS]; /* the reference's merges + outputs */
  int mismatches[CC_THREADS];
  int failures[CC_THREADS];
} cc_shared;

typedef struct cc_arg {
  cc_shared *sh;
  int t;
} cc_arg;

/* Merge pairs, counts and output ids as one string (malloc'd; NULL on no memory). */
static char *cc_render(const int32_t *pairs, const int64_t *counts, int64_t nm, const int32_t *ids,
                       int64_t n) {
  char *out = (char *)malloc((size_t)(n + 3 * nm) * 24 + 16);
  if (!out) return NULL;
  size_t o = 0;
  for (int64_t i = 0; i < 2 * nm; ++i) o += (size_t)sprintf(out + o, "%d ", pairs[i]);
  o += (size_t)sprintf(out + o, "| ");
  for (int64_t i = 0; i < nm; ++i) o += (size_t)sprintf(out + o, "%lld ", (long long)counts[i]);
  o += (size_t)sprintf(out + o, "| ");
  for (int64_t i = 0; i < n; ++i) o += (size_t)sprintf(out + o, "%d ", ids[i]);
  return out;
}

/* One lmfuse call, rendered (NULL on failure). Only raw fields are read: this runs on worker threads,
 * where nothing may report through gtest. */
static char *cc_run(lmf_context_t *ctx, lmf_vocab_t *vocab, const dt_batch *b, const char *pattern) {
  lmf_dyntok_result_t *res = NULL;
  if (dt_merge(ctx, vocab, b, 100, LMF_DYNTOK_PRETOKENS, pattern, &res) != LMF_OK) return NULL;
  const int32_t *ids = NULL, *pairs = NULL;
  const int64_t *counts = NULL;
  int64_t n = 0, nm = 0;
  lmf_dyntok_result_field(res, LMF_DYNTOK_FIELD_IDS, (const void **)&ids, &n, NULL);
  lmf_dyntok_result_field(res, LMF_DYNTOK_FIELD_MERGE_COUNTS, (const void **)&counts, &nm, NULL);
  lmf_dyntok_result_field(res, LMF_DYNTOK_FIELD_MERGE_PAIRS, (const void **)&pairs, NULL, NULL);
  char *out = cc_render(pairs, counts, nm, ids, n);
  lmf_dyntok_result_destroy(res);
  return out;
}

/* The reference's result for a pattern, rendered the same way. */
static char *cc_ref(lmf_vocab_t *vocab, const dt_batch *b, const char *pattern) {
  static const int32_t m = 100;
  lmf_ref_dt_rule *rule = lmf_ref_dt_rule_create(LMF_DYNTOK_PRETOKENS, pattern);
  lmf_ref_dt_result r;
  char *out = NULL;
  if (rule && lmf_ref_dyntok(vocab, b->B, b->offsets, b->ids, NULL, rule, LMF_DYNTOK_PRETOKENS, 1, &m, &r)) {
    out = cc_render(r.merge_pairs, r.merge_counts, r.num_merges, r.ids, r.num_tokens);
    lmf_ref_dt_result_free(&r);
  }
  lmf_ref_dt_rule_destroy(rule);
  return out;
}

#include <pthread.h>

static void *cc_thread(void *p) {
  cc_arg *a = (cc_arg *)p;
  cc_shared *sh = a->sh;
  for (int r = 0; r < CC_ROUNDS; ++r)
    for (int i = 0; i < CC_PATTERNS; ++i) {
      int k = (i * (a->t + 1) + r + a->t) % CC_PATTERNS; /* a different order per thread */
      char *got = cc_run(sh->ctx, sh->vocab, sh->batch, sh->patterns[k]);
      if (!got) ++sh->failures[a->t];
      else if (strcmp(got, sh->expect[k]) != 0) ++sh->mismatches[a->t];
      free(got);
    }
  return NULL;
}

void test_dyntok_concurrent_pattern_cache(void) {
  static char extra[CC_PATTERNS][256];
  cc_shared sh;
  memset(&sh, 0, sizeof sh);
  dt_batch b;
  memset(&b, 0, sizeof b);
  sh.ctx = lt_context(LMF_BACKEND_CPU, 0);
  sh.vocab = dt_vocab(t1_names, 24, k_specials);
  if (sh.ctx && sh.vocab && dt_batch_parse(&b, t1_names, 24, t1_seqs, 2)) {
    sh.batch = &b;
    /* The default; three other patterns; seven that differ from the default only in the longest letter
     * run (K = 2 .. 8 letters: long common prefixes, different results); and the default with an
     * alternative that can never win (it matches at every position): more patterns than the cache
     * holds, and a cache that mixed up patterns would give equal results for different ones. */
    sh.patterns[0] = NULL;
    sh.patterns[1] = "\\w+";
    sh.patterns[2] = "\\S+";
    sh.patterns[3] = "[a-z]+";
    for (int k = 4; k < 11; ++k) {
      snprintf(extra[k], sizeof extra[k],
               "'s|'t|'re|'ve|'m|'ll|'d| ?[\\p{L}\\p{M}]{1,%d}| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
               k - 2);
      sh.patterns[k] = extra[k];
    }
    snprintf(extra[11], sizeof extra[11], "%s|zz", LMF_DYNTOK_DEFAULT_PATTERN);
    sh.patterns[11] = extra[11];
    int ok = 1;
    for (int k = 0; k < CC_PATTERNS && ok; ++k) {
      sh.expect[k] = cc_ref(sh.vocab, &b, sh.patterns[k]);
      ok = LMF_CHECK_MSG(sh.expect[k] != NULL, "reference, pattern %d failed", k);
    }
    /* Sequentially first (fills the cache), then from several threads at once. */
    for (int k = 0; k < CC_PATTERNS && ok; ++k) {
      char *got = cc_run(sh.ctx, sh.vocab, &b, sh.patterns[k]);
      ok = LMF_CHECK_MSG(got != NULL, "pattern %d failed: %s", k, lmf_last_error());
      if (ok) LMF_CHECK_MSG(strcmp(got, sh.expect[k]) == 0, "pattern %d: lmfuse %s, reference %s", k, got,
                            sh.expect[k]);
      free(got);
    }
    if (ok) {
      LMF_CHECK_STR_EQ(sh.expect[11], sh.expect[0]);
      LMF_CHECK_MSG(strcmp(sh.expect[4], sh.expect[0]) != 0 && strcmp(sh.expect[1], sh.expect[0]) != 0,
                    "the patterns do not change the result");
      pthread_t th[CC_THREADS];
      cc_arg args[CC_THREADS];
      int started = 0;
      for (int t = 0; t < CC_THREADS; ++t) {
        args[t].sh = &sh;
        args[t].t = t;
        if (LMF_CHECK(pthread_create(&th[t], NULL, cc_thread, &args[t]) == 0)) ++started;
      }
      for (int t = 0; t < started; ++t) pthread_join(th[t], NULL);
      for (int t = 0; t < started; ++t) {
        LMF_CHECK_EQ_INT(sh.failures[t], 0);
        LMF_CHECK_EQ_INT(sh.mismatches[t], 0);
      }
    }
  }
  for (int k = 0; k < CC_PATTERNS; ++k) free(sh.expect[k]);
  dt_batch_free(&b);
  lmf_vocab_destroy(sh.vocab);
  lmf_context_destroy(sh.ctx);
}

/* ---- Randomized against the reference --------------------------------------------------------------- */

/* Small alphabets make long runs (a a a a), overlapping occurrences, ties everywhere, merged strings
 * that are vocabulary tokens ("aa", "Ġab", duplicates), partial UTF-8 (Ã ©), specials and whitespace;
 * every batch, in every mode, must equal the plain reference for several budgets. */
void test_dyntok_randomized_vs_reference(void) {
  static const char *const names[] = {"a", "b", "Ġa", "Ġb", "aa", "ab", "ba", "Ġab", "aaa", "Ġ", "Ċ", "1",
                                      "2", ".", "<s>", "</s>", "Ã", "©", "ab", "Ġaa", "ĠĠ", "c"};
  enum { NV = 22 };
  static const int32_t ms[] = {0, 1, 3, 7, 20, 1000};
  enum { NMS = 6 };
  /* Token draws favour a, b, Ġa so runs and collisions are common. */
  static const int32_t pool[] = {0, 0, 0, 0, 1, 1, 2, 2, 3, 4, 5, 9, 9, 10, 11, 12, 13, 14, 15, 16, 17, 21,
                                 0, 1, 2, 6, 7, 8, 18, 19, 20};
  const int npool = (int)(sizeof pool / sizeof pool[0]);
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  lmf_vocab_t *vocab = dt_vocab(names, NV, k_specials);
  lmf_ref_dt_rule *rules[3] = {lmf_ref_dt_rule_create(LMF_DYNTOK_PRETOKENS, NULL),
                               lmf_ref_dt_rule_create(LMF_DYNTOK_WORDS, NULL),
                               lmf_ref_dt_rule_create(LMF_DYNTOK_WHITESPACE, NULL)};
  if (!ctx || !vocab || !LMF_CHECK(rules[0] && rules[1] && rules[2])) goto done;
  uint64_t rng = 12345;
  int failures = 0;
  for (int iter = 0; iter < 400 && failures == 0; ++iter) {
    int64_t B = 1 + (int64_t)(lt_next(&rng) % 6);
    int64_t offsets[8];
    int32_t ids[8 * 40], words[8 * 40];
    offsets[0] = 0;
    for (int64_t s = 0; s < B; ++s) {
      int64_t len = (int64_t)(lt_next(&rng) % 40);
      int32_t w = 0;
      for (int64_t i = 0; i < len; ++i) {
        int64_t p = offsets[s] + i;
        /* Repeat the previous token often: runs. */
        if (i > 0 && lt_next(&rng) % 3 == 0) ids[p] = ids[p - 1];
        else ids[p] = pool[lt_next(&rng) % (uint64_t)npool];
        if (lt_next(&rng) % 4 == 0) ++w;
        words[p] = lt_next(&rng) % 10 == 0 ? -1 : w;
      }
      offsets[s + 1] = offsets[s] + len;
    }
    dt_batch b = {B, offsets, ids, words};
    for (int mode = 0; mode < 3; ++mode) {
      lmf_ref_dt_result ref[NMS];
      if (!LMF_CHECK(lmf_ref_dyntok(vocab, B, offsets, ids, words, rules[mode], mode, NMS, ms, ref))) {
        ++failures;
        break;
      }
      for (int i = 0; i < NMS; ++i) {
        char what[96];
        snprintf(what, sizeof what, "random batch %d, mode %d, m = %d", iter, mode, ms[i]);
        lmf_dyntok_result_t *res = NULL;
        dt_view w;
        if (!LMF_CHECK_OK(dt_merge(ctx, vocab, &b, ms[i], mode, NULL, &res)) ||
            !dt_view_get(&w, res, vocab, offsets) ||
            !dt_check_same_as_ref(&w, &ref[i], what))
          ++failures;
        lmf_dyntok_result_destroy(res);
        lmf_ref_dt_result_free(&ref[i]);
      }
    }
  }
done:
  for (int i = 0; i < 3; ++i) lmf_ref_dt_rule_destroy(rules[i]);
  lmf_vocab_destroy(vocab);
  lmf_context_destroy(ctx);
}
