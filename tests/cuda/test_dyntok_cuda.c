/* The CUDA backend of batch-level BPE merging against the CPU backend (label cuda): every case runs the
 * same lmf_dyntok_merge call on a CPU context and on a CUDA context and compares every field of the two
 * results (sizes, merge list, offsets, ids, spans, new tokens' bytes and decompositions) through the
 * public accessors. Cases: the spec's vectors T1-T9 and the hand-worked mode cases, the real
 * multilingual data with both real tokenizers in all three boundary modes and m in {0, 10, 200,
 * 100000}, 32 x 128-token batches (with a timing note, never asserted), batches too large for shared
 * memory, long runs, random batches, vocabulary caching across calls, and a custom pattern (refused on
 * CUDA with LMF_ERR_INVALID_ARGUMENT). Every case is reported SKIPPED without a usable CUDA device. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../dyntok/dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

static const char *const k_specials[] = {"<s>", "</s>", NULL};
static const char *const k_mode_name[] = {"pretokens", "words", "whitespace"};

typedef struct both {
  lmf_context_t *cpu;
  lmf_context_t *cuda;
} both;

static int both_open(both *b) {
  b->cpu = lt_context(LMF_BACKEND_CPU, 0);
  b->cuda = lt_context(LMF_BACKEND_CUDA, 0);
  return b->cpu && b->cuda;
}

static void both_close(both *b) {
  lmf_context_destroy(b->cpu);
  lmf_context_destroy(b->cuda);
  memset(b, 0, sizeof *b);
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* On a mismatch: both merge lists (rendered, truncated) in the test's output. */
static void note_merges(const lmf_vocab_t *vocab, const dt_view *gpu, const dt_view *cpu, const char *what) {
  char *g = dt_render_merges(vocab, gpu);
  char *c = dt_render_merges(vocab, cpu);
  lmf_t_note("%s: CUDA %d merges, %lld tokens, %d new; CPU %d merges, %lld tokens, %d new", what,
             gpu->num_merges, (long long)gpu->N, gpu->num_new, cpu->num_merges, (long long)cpu->N,
             cpu->num_new);
  lmf_t_note("%s: CUDA merges: %.1500s", what, g ? g : "?");
  lmf_t_note("%s: CPU merges:  %.1500s", what, c ? c : "?");
  free(g);
  free(c);
}

/* One batch on both backends; every field equal. expect_merges (may be NULL): the merge list as the
 * spec writes it. *merges_out (may be NULL) gets the CUDA result's merge count. 1 if all is well. */
static int compare_run(both *bk, const lmf_vocab_t *vocab, const dt_batch *b, int32_t m, int32_t boundary,
                       const char *pattern, const char *what, const char *expect_merges,
                       int32_t *merges_out) {
  lmf_dyntok_result_t *rc = NULL, *rg = NULL;
  int ok = LMF_CHECK_MSG(dt_merge(bk->cpu, vocab, b, m, boundary, pattern, &rc) == LMF_OK,
                         "%s: the CPU merge failed: %s", what, lmf_last_error());
  ok = ok && LMF_CHECK_MSG(dt_merge(bk->cuda, vocab, b, m, boundary, pattern, &rg) == LMF_OK,
                           "%s: the CUDA merge failed: %s", what, lmf_last_error());
  dt_view wc, wg;
  ok = ok && dt_view_get(&wc, rc, vocab, b->offsets);
  ok = ok && dt_view_get(&wg, rg, vocab, b->offsets);
  if (ok && !dt_check_same(&wg, &wc, what)) {
    note_merges(vocab, &wg, &wc, what);
    ok = 0;
  }
  if (ok && expect_merges) {
    char *got = dt_render_merges(vocab, &wg);
    ok = LMF_CHECK_MSG(got && strcmp(got, expect_merges) == 0, "%s: CUDA merges %s, expected %s", what,
                       got ? got : "?", expect_merges);
    free(got);
  }
  if (ok && merges_out) *merges_out = wg.num_merges;
  lmf_dyntok_result_destroy(rc);
  lmf_dyntok_result_destroy(rg);
  return ok;
}

/* A vector: names (GPT-2 strings), sequences, m, mode, word ids (WORDS) and the expected merges. */
static int vector_case(both *bk, const char *const *names, int n, const char *const *seqs, int B, int32_t m,
                       int32_t boundary, const int32_t *words, const char *expect, const char *what) {
  lmf_vocab_t *vocab = dt_vocab(names, n, k_specials);
  dt_batch b;
  memset(&b, 0, sizeof b);
  int ok = vocab != NULL && dt_batch_parse(&b, names, n, seqs, B);
  if (ok && words) {
    const int64_t N = b.offsets[B];
    b.word_ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(N + 1));
    ok = b.word_ids != NULL;
    if (ok) memcpy(b.word_ids, words, sizeof(int32_t) * (size_t)N);
  }
  ok = ok && compare_run(bk, vocab, &b, m, boundary, NULL, what, expect, NULL);
  dt_batch_free(&b);
  lmf_vocab_destroy(vocab);
  return ok;
}

/* ---- The spec's vectors and the hand-worked cases of the CPU suite -------------------------------- */

static const char *const t1_names[] = {
    "<s>", "</s>", "ĠR", "ib", "on", "uc", "le", "op", "rote", "in", "Ġparticles", "Ġreg", "ulate", "Ġm", "R",
    "NA", "Ġstability", ".", "Ġis", "Ġmod", "ulated", "Ġby", "Ġrib", "Ġfactors"};
static const char *const t1_seqs[] = {
    "<s> ĠR ib on uc le op rote in Ġparticles Ġreg ulate Ġm R NA Ġstability . </s>",
    "<s> Ġm R NA Ġstability Ġis Ġmod ulated Ġby Ġrib on uc le op rote in Ġfactors . </s>"};

static const char *const t5_names[] = {"Ġ", "Ġa", "b", "Ġ1", "2", "'", "s", "a", "Ã", "©", "Ġcaf", "Ċ",
                                       "Ġb", ".", "1", "Ġdon", "'t", "<s>", "ĠR", "</s>"};

void test_cuda_dyntok_spec_vectors(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  /* T1, m = 10 and m = 100 (early stop after 12). */
  vector_case(&bk, t1_names, 24, t1_seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL,
              "(on,uc,2) (onuc,le,2) (onucle,op,2) (onucleop,rote,2) (onucleoprote,in,2) (Ġm,R,2) "
              "(ĠmR,NA,2) (ĠR,ib,1) (ĠRib,onucleoprotein,1) (Ġreg,ulate,1)",
              "T1 m=10");
  vector_case(&bk, t1_names, 24, t1_seqs, 2, 100, LMF_DYNTOK_PRETOKENS, NULL,
              "(on,uc,2) (onuc,le,2) (onucle,op,2) (onucleop,rote,2) (onucleoprote,in,2) (Ġm,R,2) "
              "(ĠmR,NA,2) (ĠR,ib,1) (ĠRib,onucleoprotein,1) (Ġreg,ulate,1) (Ġmod,ulated,1) "
              "(Ġrib,onucleoprotein,1)",
              "T1 m=100");
  /* T2: overlapping runs. */
  {
    static const char *const names[] = {"Ġa", "a"};
    static const char *const seqs[] = {"Ġa a a a a"};
    vector_case(&bk, names, 2, seqs, 1, 3, LMF_DYNTOK_PRETOKENS, NULL, "(a,a,3) (Ġa,aa,1) (Ġaaa,aa,1)",
                "T2 m=3");
    vector_case(&bk, names, 2, seqs, 1, 1, LMF_DYNTOK_PRETOKENS, NULL, "(a,a,3)", "T2 m=1");
    static const char *const names2[] = {"Ġx", "a", "Ġy"};
    static const char *const seqs2[] = {"Ġx a a a Ġy a a a a a a a", "a a"};
    vector_case(&bk, names2, 3, seqs2, 2, 2, LMF_DYNTOK_PRETOKENS, NULL, "(a,a,9) (aa,a,2)", "T2 runs");
    vector_case(&bk, names2, 3, seqs2, 2, 100, LMF_DYNTOK_PRETOKENS, NULL, NULL, "T2 runs m=100");
  }
  /* T3: tie-break by first occurrence. */
  {
    static const char *const names[] = {"Ġc", "d", "Ġx", "y"};
    static const char *const seqs[] = {"Ġx y Ġc d", "Ġc d Ġx y"};
    vector_case(&bk, names, 4, seqs, 2, 1, LMF_DYNTOK_PRETOKENS, NULL, "(Ġx,y,2)", "T3");
  }
  /* T4: whitespace. */
  {
    static const char *const names[] = {"Ġ", "Ġa", "Ċ", "x"};
    static const char *const seqs[] = {"Ġ Ġ Ġ Ġa", "Ċ Ċ x"};
    vector_case(&bk, names, 4, seqs, 2, 4, LMF_DYNTOK_PRETOKENS, NULL, "(Ġ,Ġ,2) (ĠĠ,Ġ,1)", "T4");
  }
  /* T5: validity, one pair per batch. */
  {
    static const char *const valid[][2] = {{"Ġ", "Ġ"}, {"Ġa", "b"}, {"Ġ1", "2"}, {"'", "s"},
                                           {"Ġ", "a"}, {"Ã", "©"}, {"Ġcaf", "Ã"}};
    static const char *const invalid[][2] = {{"Ċ", "Ċ"},    {"Ġ", "Ġa"},   {"Ġa", "Ġb"},
                                             {"Ġa", "."},   {"Ġa", "1"},   {"Ġdon", "'t"},
                                             {"<s>", "ĠR"}, {".", "</s>"}, {"</s>", "</s>"}};
    lmf_vocab_t *vocab = dt_vocab(t5_names, 20, k_specials);
    for (int pass = 0; vocab && pass < 2; ++pass) {
      const size_t cnt = pass ? sizeof invalid / sizeof invalid[0] : sizeof valid / sizeof valid[0];
      for (size_t i = 0; i < cnt; ++i) {
        const char *a = pass ? invalid[i][0] : valid[i][0], *b2 = pass ? invalid[i][1] : valid[i][1];
        char seq[64], what[96];
        snprintf(seq, sizeof seq, "%s %s", a, b2);
        snprintf(what, sizeof what, "T5 (%s,%s)", a, b2);
        const char *seqs[] = {seq};
        dt_batch bt;
        int32_t nm = -1;
        if (dt_batch_parse(&bt, t5_names, 20, seqs, 1) &&
            compare_run(&bk, vocab, &bt, 1, LMF_DYNTOK_PRETOKENS, NULL, what, NULL, &nm))
          LMF_CHECK_MSG(nm == (pass ? 0 : 1), "%s: %d merges on CUDA", what, nm);
        dt_batch_free(&bt);
      }
    }
    lmf_vocab_destroy(vocab);
  }
  /* T6: string identity. */
  {
    static const char *const names[] = {"Ġa", "bc", "d", "Ġab", "c", "e"};
    static const char *const seqs[] = {"Ġa bc d", "Ġab c d", "Ġab c e", "Ġa bc e", "Ġab c d"};
    vector_case(&bk, names, 6, seqs, 5, 6, LMF_DYNTOK_PRETOKENS, NULL,
                "(Ġab,c,3) (Ġa,bc,2) (Ġabc,d,3) (Ġabc,e,2)", "T6");
  }
  /* T7: specials, in every mode. */
  {
    static const char *const names[] = {"<s>", "</s>", "Ġa", "b"};
    static const char *const seqs[] = {"<s> Ġa b </s>"};
    vector_case(&bk, names, 4, seqs, 1, 10, LMF_DYNTOK_PRETOKENS, NULL, "(Ġa,b,1)", "T7");
    static const char *const seqs2[] = {"<s> <s> Ġa b </s> </s>"};
    static const int32_t words[] = {0, 0, 0, 0, 0, 0};
    vector_case(&bk, names, 4, seqs2, 1, 10, LMF_DYNTOK_WORDS, words, "(Ġa,b,1)", "T7 words");
    vector_case(&bk, names, 4, seqs2, 1, 10, LMF_DYNTOK_WHITESPACE, NULL, "(Ġa,b,1)", "T7 whitespace");
  }
  /* T8: digits vs letters. */
  {
    static const char *const names[] = {"Ġa", "1", "2", "Ġ1", "3"};
    static const char *const seqs[] = {"Ġa 1 2", "Ġ1 2 3"};
    vector_case(&bk, names, 5, seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL, "(1,2,1) (Ġ1,2,1) (Ġ12,3,1)", "T8");
  }
  /* T9: partial UTF-8. */
  {
    static const char *const names[] = {"Ġcaf", "Ã", "©", "s"};
    static const char *const seqs[] = {"Ġcaf Ã ©", "Ġcaf Ã © s"};
    vector_case(&bk, names, 4, seqs, 2, 10, LMF_DYNTOK_PRETOKENS, NULL,
                "(Ġcaf,Ã,2) (ĠcafÃ,©,2) (ĠcafÃ©,s,1)", "T9");
  }
  /* WORDS: per-occurrence validity and the tie-break on the first counting occurrence. */
  {
    static const char *const names[] = {"a", "b", "c", "d"};
    static const char *const seqs[] = {"a b c d", "b c b c d d"};
    static const int32_t words[] = {0, 0, 1, 1, 5, 5, 6, 6, 7, -1};
    vector_case(&bk, names, 4, seqs, 2, 10, LMF_DYNTOK_WORDS, words, "(b,c,2) (a,b,1) (c,d,1)", "words");
    static const char *const seqs2[] = {"a b c d a b"};
    static const int32_t words2[] = {0, 1, 2, 2, 3, 3};
    vector_case(&bk, names, 4, seqs2, 1, 1, LMF_DYNTOK_WORDS, words2, "(c,d,1)", "words tie-break");
    /* A run cut by word boundaries: a a | a a a | a (words 0 0 1 1 1 2). */
    static const char *const seqs3[] = {"a a a a a a"};
    static const int32_t words3[] = {0, 0, 1, 1, 1, 2};
    vector_case(&bk, names, 4, seqs3, 1, 10, LMF_DYNTOK_WORDS, words3, NULL, "words cut run");
  }
  /* WHITESPACE vs PRETOKENS on one batch. */
  {
    static const char *const names[] = {"Ġa", "b", ".", "Ġ", "Ċ", "1", "x"};
    static const char *const seqs[] = {"Ġa b . 1 Ġ Ġ Ċ x"};
    vector_case(&bk, names, 7, seqs, 1, 10, LMF_DYNTOK_WHITESPACE, NULL,
                "(Ġa,b,1) (Ġab,.,1) (Ġab.,1,1) (Ċ,x,1)", "whitespace");
    vector_case(&bk, names, 7, seqs, 1, 10, LMF_DYNTOK_PRETOKENS, NULL, "(Ġa,b,1) (Ġ,Ġ,1) (ĠĠ,Ċ,1)",
                "whitespace as pretokens");
  }
  /* Identity with the base vocabulary (two ids share "ab": the smaller is canonical). */
  {
    static const char *const names[] = {"a", "b", "x", "ab", "ab", "abx"};
    static const char *const seqs[] = {"a b x", "a b", "ab x"};
    vector_case(&bk, names, 6, seqs, 3, 10, LMF_DYNTOK_PRETOKENS, NULL, "(a,b,2) (ab,x,2)", "identity");
  }
  /* Edge shapes: empty sequences, m = 0, no tokens at all. */
  {
    static const char *const names[] = {"Ġa", "b"};
    static const char *const seqs[] = {"", "Ġa b", "", "b", "Ġa b Ġa"};
    vector_case(&bk, names, 2, seqs, 5, 5, LMF_DYNTOK_PRETOKENS, NULL, "(Ġa,b,2)", "edge shapes");
    vector_case(&bk, names, 2, seqs, 5, 0, LMF_DYNTOK_PRETOKENS, NULL, "", "edge shapes m=0");
    static const char *const none[] = {"", ""};
    vector_case(&bk, names, 2, none, 2, 10, LMF_DYNTOK_PRETOKENS, NULL, "", "no tokens");
  }
  /* UTF-8 edge forms (rule 2). */
  {
    static const char *const names[] = {"Ġx", "À", "Ģ", "ðŁĺ", "Ģ!"};
    static const char *const seqs[] = {"À Ģ", "ðŁĺ Ģ", "Ġx ðŁĺ", "ðŁĺ Ģ!", "Ġx Ģ!"};
    for (int i = 0; i < 5; ++i) {
      char what[32];
      snprintf(what, sizeof what, "utf8 case %d", i);
      vector_case(&bk, names, 5, &seqs[i], 1, 1, LMF_DYNTOK_PRETOKENS, NULL, NULL, what);
    }
  }
  both_close(&bk);
}

/* ---- Real data ------------------------------------------------------------------------------------ */

/* Word ids for WORDS mode from the bytes: a word starts at a token beginning with a space (or after a
 * special token, or at a sequence's start); special tokens get -1. */
static int32_t *words_from_bytes(const lmf_vocab_t *vocab, const dt_batch *b) {
  const int64_t N = b->offsets[b->B];
  int32_t *w = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(N + 1));
  if (!w) return NULL;
  int32_t next = 0;
  for (int64_t s = 0; s < b->B; ++s) {
    int32_t cur = -1;
    for (int64_t i = b->offsets[s]; i < b->offsets[s + 1]; ++i) {
      uint32_t flags = 0;
      const uint8_t *bytes = NULL;
      int64_t len = 0;
      lmf_vocab_token_flags(vocab, b->ids[i], &flags);
      lmf_vocab_token_bytes(vocab, b->ids[i], &bytes, &len);
      if (flags & LMF_TOKEN_SPECIAL) {
        w[i] = -1;
        cur = -1;
        continue;
      }
      if (cur < 0 || (len > 0 && bytes[0] == ' ')) cur = next++;
      w[i] = cur;
    }
  }
  return w;
}

static const char *const k_tokenizers[] = {"mistral-7b", "gpt-4o"};

void test_cuda_dyntok_real_data(void) {
  REQUIRE_CUDA();
  static const int32_t ms[] = {0, 10, 200, 100000};
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  for (int t = 0; t < 2; ++t) {
    lmf_vocab_t *vocab = dt_load_vocab(k_tokenizers[t]);
    dt_corpus c;
    if (!vocab || !dt_corpus_load(&c, k_tokenizers[t], 32)) {
      lmf_vocab_destroy(vocab);
      continue;
    }
    int failures = 0;
    for (int L = 0; L < c.num_langs && failures < 3; ++L) {
      dt_batch *b = &c.batch[L];
      b->word_ids = words_from_bytes(vocab, b);
      for (int32_t mode = 0; mode < 3 && failures < 3; ++mode) {
        for (size_t k = 0; k < sizeof ms / sizeof ms[0]; ++k) {
          char what[128];
          snprintf(what, sizeof what, "%s %s %s m=%d", k_tokenizers[t], c.lang[L], k_mode_name[mode], ms[k]);
          if (!compare_run(&bk, vocab, b, ms[k], mode, NULL, what, NULL, NULL)) {
            ++failures;
            break;
          }
        }
      }
    }
    dt_corpus_free(&c);
    lmf_vocab_destroy(vocab);
  }
  both_close(&bk);
}

/* The stream of a language's token ids (its lines concatenated) cut into B sequences of len tokens. */
static int cut_batch(dt_batch *out, const dt_batch *src, int64_t B, int64_t len) {
  memset(out, 0, sizeof *out);
  const int64_t have = src->offsets[src->B];
  if (!LMF_CHECK_MSG(have >= B * len, "only %lld tokens for %lld x %lld", (long long)have, (long long)B,
                     (long long)len))
    return 0;
  out->B = B;
  out->offsets = (int64_t *)lt_malloc(sizeof(int64_t) * (size_t)(B + 1));
  out->ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(B * len));
  if (!out->offsets || !out->ids) return 0;
  for (int64_t s = 0; s <= B; ++s) out->offsets[s] = s * len;
  memcpy(out->ids, src->ids, sizeof(int32_t) * (size_t)(B * len));
  return 1;
}

/* The issue's shape: 32 x 128 tokens, m = 200 (and to saturation), every mode; a note with the CUDA
 * call's time per merge (median of 5 warm calls; informational, never asserted). */
void test_cuda_dyntok_batch_32x128(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  static const char *const langs[] = {"en", "pl", "zh"};
  for (int t = 0; t < 2; ++t) {
    lmf_vocab_t *vocab = dt_load_vocab(k_tokenizers[t]);
    dt_corpus c;
    if (!vocab || !dt_corpus_load(&c, k_tokenizers[t], 300)) {
      lmf_vocab_destroy(vocab);
      continue;
    }
    for (int L = 0; L < c.num_langs; ++L) {
      int wanted = 0;
      for (int k = 0; k < 3; ++k) wanted |= strcmp(c.lang[L], langs[k]) == 0;
      if (!wanted) continue;
      dt_batch b;
      if (!cut_batch(&b, &c.batch[L], 32, 128)) {
        dt_batch_free(&b);
        continue;
      }
      b.word_ids = words_from_bytes(vocab, &b);
      for (int32_t mode = 0; mode < 3; ++mode) {
        char what[128];
        snprintf(what, sizeof what, "32x128 %s %s %s m=200", k_tokenizers[t], c.lang[L], k_mode_name[mode]);
        compare_run(&bk, vocab, &b, 200, mode, NULL, what, NULL, NULL);
        snprintf(what, sizeof what, "32x128 %s %s %s m=100000", k_tokenizers[t], c.lang[L],
                 k_mode_name[mode]);
        compare_run(&bk, vocab, &b, 100000, mode, NULL, what, NULL, NULL);
      }
      /* Timing of the CUDA call alone (PRETOKENS, m = 200), warm. */
      double times[5];
      int32_t nm = 0;
      int ok = 1;
      for (int r = 0; r < 5 && ok; ++r) {
        lmf_dyntok_result_t *res = NULL;
        const double t0 = now_s();
        ok = LMF_CHECK_OK(dt_merge(bk.cuda, vocab, &b, 200, LMF_DYNTOK_PRETOKENS, NULL, &res));
        times[r] = now_s() - t0;
        if (ok) lmf_dyntok_result_sizes(res, NULL, NULL, &nm, NULL);
        lmf_dyntok_result_destroy(res);
      }
      if (ok && nm > 0) {
        for (int i = 0; i < 5; ++i)
          for (int j = i + 1; j < 5; ++j)
            if (times[j] < times[i]) {
              double x = times[i];
              times[i] = times[j];
              times[j] = x;
            }
        lmf_t_note("32x128 %s %s: CUDA lmf_dyntok_merge %.1f us for %d merges = %.2f us per merge "
                   "(median of 5, whole call)", k_tokenizers[t], c.lang[L], times[2] * 1e6, nm,
                   times[2] * 1e6 / nm);
      }
      dt_batch_free(&b);
    }
    dt_corpus_free(&c);
    lmf_vocab_destroy(vocab);
  }
  both_close(&bk);
}

/* Batches beyond shared memory (the pair table and per-position state partly or wholly in global
 * memory): whole languages (300 lines) and two languages together. */
void test_cuda_dyntok_large_batches(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  for (int t = 0; t < 2; ++t) {
    lmf_vocab_t *vocab = dt_load_vocab(k_tokenizers[t]);
    dt_corpus c;
    if (!vocab || !dt_corpus_load(&c, k_tokenizers[t], 300)) {
      lmf_vocab_destroy(vocab);
      continue;
    }
    int zh = -1, pl = -1, en = -1;
    for (int L = 0; L < c.num_langs; ++L) {
      if (!strcmp(c.lang[L], "zh")) zh = L;
      if (!strcmp(c.lang[L], "pl")) pl = L;
      if (!strcmp(c.lang[L], "en")) en = L;
    }
    if (LMF_CHECK(zh >= 0 && pl >= 0 && en >= 0)) {
      char what[128];
      /* One language: 300 sequences. */
      dt_batch *b = &c.batch[en];
      b->word_ids = words_from_bytes(vocab, b);
      for (int32_t mode = 0; mode < 3; ++mode) {
        snprintf(what, sizeof what, "large %s en x300 %s m=400", k_tokenizers[t], k_mode_name[mode]);
        compare_run(&bk, vocab, b, 400, mode, NULL, what, NULL, NULL);
      }
      /* zh + pl: 600 sequences, tens of thousands of tokens. */
      dt_batch j;
      memset(&j, 0, sizeof j);
      const int64_t nz = c.batch[zh].offsets[300], np = c.batch[pl].offsets[300];
      j.B = 600;
      j.offsets = (int64_t *)lt_malloc(sizeof(int64_t) * 601);
      j.ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(nz + np));
      if (j.offsets && j.ids) {
        memcpy(j.ids, c.batch[zh].ids, sizeof(int32_t) * (size_t)nz);
        memcpy(j.ids + nz, c.batch[pl].ids, sizeof(int32_t) * (size_t)np);
        for (int s = 0; s <= 300; ++s) j.offsets[s] = c.batch[zh].offsets[s];
        for (int s = 1; s <= 300; ++s) j.offsets[300 + s] = nz + c.batch[pl].offsets[s];
        snprintf(what, sizeof what, "large %s zh+pl (%lld tokens) m=300", k_tokenizers[t],
                 (long long)(nz + np));
        compare_run(&bk, vocab, &j, 300, LMF_DYNTOK_PRETOKENS, NULL, what, NULL, NULL);
        snprintf(what, sizeof what, "large %s zh+pl whitespace m=100", k_tokenizers[t]);
        compare_run(&bk, vocab, &j, 100, LMF_DYNTOK_WHITESPACE, NULL, what, NULL, NULL);
      }
      dt_batch_free(&j);
    }
    dt_corpus_free(&c);
    lmf_vocab_destroy(vocab);
  }
  both_close(&bk);
}

/* ---- Runs, random batches -------------------------------------------------------------------------- */

/* Long runs of one token (a == b merges, left-greedy chains), in one sequence and across several, with
 * string identity against base tokens ("aa", "aaaa"). */
void test_cuda_dyntok_long_runs(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  static const char *const names[] = {"Ġa", "a", "aa", "aaaa", "b", "<s>"};
  lmf_vocab_t *vocab = dt_vocab(names, 6, k_specials);
  static const int64_t lens[] = {5000, 4097, 1023, 2, 3};
  for (size_t k = 0; vocab && k < sizeof lens / sizeof lens[0]; ++k) {
    const int64_t len = lens[k];
    dt_batch b;
    memset(&b, 0, sizeof b);
    b.B = 3;
    b.offsets = (int64_t *)lt_malloc(sizeof(int64_t) * 4);
    b.ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(3 * len + 8));
    b.word_ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(3 * len + 8));
    if (!b.offsets || !b.ids || !b.word_ids) {
      dt_batch_free(&b);
      break;
    }
    /* seq 0: Ġa a a ... a; seq 1: a run broken by b every 7 tokens and a special; seq 2: a ... a. */
    int64_t n = 0;
    b.offsets[0] = 0;
    b.ids[n++] = 0;
    for (int64_t i = 1; i < len; ++i) b.ids[n++] = 1;
    b.offsets[1] = n;
    for (int64_t i = 0; i < len; ++i) b.ids[n++] = i % 7 == 6 ? 4 : i % 50 == 25 ? 5 : 1;
    b.offsets[2] = n;
    for (int64_t i = 0; i < len; ++i) b.ids[n++] = 1;
    b.offsets[3] = n;
    for (int64_t i = 0; i < n; ++i) b.word_ids[i] = (int32_t)(i / 13); /* words cut the runs */
    static const int32_t ms[] = {1, 3, 40, 100000};
    for (size_t j = 0; j < sizeof ms / sizeof ms[0]; ++j)
      for (int32_t mode = 0; mode < 3; ++mode) {
        char what[96];
        snprintf(what, sizeof what, "runs len=%lld %s m=%d", (long long)len, k_mode_name[mode], ms[j]);
        compare_run(&bk, vocab, &b, ms[j], mode, NULL, what, NULL, NULL);
      }
    dt_batch_free(&b);
  }
  lmf_vocab_destroy(vocab);
  both_close(&bk);
}

/* Random batches over a small vocabulary with multi-byte tokens, whitespace, digits, punctuation,
 * partial UTF-8 and specials, in every mode and several budgets. */
void test_cuda_dyntok_random_batches(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  static const char *const names[] = {"a",  "b",  "c",  "Ġ",   "Ċ",   "1",  "2",  ".",  "'",  "s",
                                      "Ġa", "ab", "bc", "aa",  "Ġab", "Ã",  "©",  "ĉ",  "<s>", "</s>",
                                      "Ġ1", "ĠĠ", "abc", "'s", "Ġb"};
  const int nv = (int)(sizeof names / sizeof names[0]);
  lmf_vocab_t *vocab = dt_vocab(names, nv, k_specials);
  /* Skewed: the first tokens are much more frequent, so pairs and runs repeat. */
  uint64_t rng = 0x5eedULL;
  for (int trial = 0; vocab && trial < 60; ++trial) {
    const int64_t B = 1 + (int64_t)(lt_next(&rng) % 12);
    dt_batch b;
    memset(&b, 0, sizeof b);
    b.B = B;
    b.offsets = (int64_t *)lt_malloc(sizeof(int64_t) * (size_t)(B + 1));
    b.ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(B * 400 + 1));
    b.word_ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(B * 400 + 1));
    if (!b.offsets || !b.ids || !b.word_ids) {
      dt_batch_free(&b);
      break;
    }
    int64_t n = 0;
    int32_t word = 0;
    b.offsets[0] = 0;
    for (int64_t s = 0; s < B; ++s) {
      const int64_t len = (int64_t)(lt_next(&rng) % (trial % 3 == 0 ? 400 : 60));
      for (int64_t i = 0; i < len; ++i) {
        const double u = lt_uniform(&rng);
        const int id = (int)(u * u * u * nv);
        b.ids[n] = id < nv ? id : nv - 1;
        if (lt_next(&rng) % 4 == 0) ++word;
        b.word_ids[n] = lt_next(&rng) % 17 == 0 ? -1 : word;
        ++n;
      }
      b.offsets[s + 1] = n;
    }
    static const int32_t ms[] = {0, 1, 7, 60, 100000};
    const int32_t m = ms[lt_next(&rng) % 5];
    for (int32_t mode = 0; mode < 3; ++mode) {
      char what[96];
      snprintf(what, sizeof what, "random trial %d (%lld tokens) %s m=%d", trial, (long long)n,
               k_mode_name[mode], m);
      compare_run(&bk, vocab, &b, m, mode, NULL, what, NULL, NULL);
    }
    dt_batch_free(&b);
  }
  lmf_vocab_destroy(vocab);
  both_close(&bk);
}

/* ---- Caching, patterns ----------------------------------------------------------------------------- */

/* One CUDA context across vocabularies: a vocabulary destroyed and a new one (possibly at the same
 * address) must not be confused by the device cache. */
void test_cuda_dyntok_vocab_cache(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  static const char *const n1[] = {"Ġa", "b", "ab", "c"};
  static const char *const n2[] = {"c", "ab", "b", "Ġa"}; /* same strings, other ids */
  static const char *const s1[] = {"Ġa b c", "Ġa b", "ab c"};
  for (int round = 0; round < 4; ++round) {
    const char *const *names = round % 2 ? n2 : n1;
    lmf_vocab_t *vocab = dt_vocab(names, 4, NULL);
    dt_batch b;
    if (vocab && dt_batch_parse(&b, names, 4, s1, 3)) {
      char what[32];
      snprintf(what, sizeof what, "cache round %d", round);
      compare_run(&bk, vocab, &b, 10, LMF_DYNTOK_PRETOKENS, NULL, what, NULL, NULL);
      dt_batch_free(&b);
    }
    lmf_vocab_destroy(vocab);
  }
  both_close(&bk);
}

/* A custom pre-tokenizer pattern cannot run on the device: LMF_ERR_INVALID_ARGUMENT naming the CPU;
 * the default pattern given explicitly runs; other modes ignore the pattern. */
void test_cuda_dyntok_custom_pattern(void) {
  REQUIRE_CUDA();
  both bk;
  if (!both_open(&bk)) {
    both_close(&bk);
    return;
  }
  static const char *const names[] = {"Ġa", "b"};
  static const char *const seqs[] = {"Ġa b Ġa b"};
  lmf_vocab_t *vocab = dt_vocab(names, 2, NULL);
  dt_batch b;
  if (vocab && dt_batch_parse(&b, names, 2, seqs, 1)) {
    lmf_dyntok_result_t *res = NULL;
    LMF_CHECK_FAIL(dt_merge(bk.cuda, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, " ?\\w+", &res),
                   LMF_ERR_INVALID_ARGUMENT, "CPU");
    LMF_CHECK(res == NULL);
    lmf_dyntok_result_destroy(res);
    res = NULL;
    LMF_CHECK_FAIL(dt_merge(bk.cuda, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, "\\S", &res),
                   LMF_ERR_INVALID_ARGUMENT, "pattern");
    LMF_CHECK(res == NULL);
    lmf_dyntok_result_destroy(res);
    compare_run(&bk, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, LMF_DYNTOK_DEFAULT_PATTERN, "explicit default",
                "(Ġa,b,2)", NULL);
    compare_run(&bk, vocab, &b, 5, LMF_DYNTOK_WHITESPACE, "\\S", "whitespace ignores the pattern",
                "(Ġa,b,2)", NULL);
    /* The context still works after a refused call. */
    compare_run(&bk, vocab, &b, 5, LMF_DYNTOK_PRETOKENS, NULL, "after a refusal", "(Ġa,b,2)", NULL);
    dt_batch_free(&b);
  }
  lmf_vocab_destroy(vocab);
  both_close(&bk);
}
