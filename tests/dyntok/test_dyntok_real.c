/* Batch merging on the real data: data/multilingual/{mistral-7b,gpt-4o}.jsonl (10 languages x 300 lines,
 * tokenized by the real tokenizers) with the real vocabularies (data/tokenizers/<name>/tokenizer.json
 * through lmf_vocab_load_json), one batch of the first 32 lines per language.
 *
 *   - lmfuse equals the plain C reference (tests/ref/lmf_ref_dyntok.c) field for field, for m = 0, 10,
 *     50, 200 and 100000 (word level), in PRETOKENS mode (the default pattern, and GPT-4o's own Split
 *     regex on the GPT-4o data), WORDS mode and WHITESPACE mode.
 *   - Invariants: every output token's bytes are the bytes of the input tokens its span covers (so each
 *     sequence's bytes are preserved); every merged token is VALID as a string (its last merge joined a
 *     valid pair: it crosses no boundary as the reference defines one); m = 0 is the identity; lengths
 *     are non-increasing in m and the merge list of a smaller m is a prefix of a larger one's; results
 *     are identical with 1, 2 and 4 CPU threads.
 *   - Word level (m = 100000), what is asserted and why:
 *       S1. the loop stopped early (merges < m);
 *       S2. no two adjacent output tokens form a VALID pair (the definition of "stopped");
 *       S3. PRETOKENS, count vs pre-tokens: let F be the pattern's successive matches over the
 *           sequence's bytes (findall). If (i) every input token lies inside one match of F, (ii) every
 *           concatenation of >= 2 consecutive input tokens inside one match is VALID, and (iii) no
 *           concatenation of a token-aligned suffix of a match with a token-aligned prefix of the next
 *           match is VALID, then the output tokens are exactly the matches of F (same byte ranges, so
 *           as many tokens as matches). Proof: by (iii) the first token to straddle two matches would
 *           join such a suffix and prefix, so none is ever made; at S2's fixed point two adjacent tokens
 *           inside one match would be VALID by (ii). The test checks (i)-(iii) per sequence, asserts the
 *           equality where they hold, and asserts that they hold for most sequences (so the check is
 *           not vacuous). Where they fail (tokens that straddle F's matches, e.g. SentencePiece pieces;
 *           partial UTF-8, which rule 2 lets merge across a boundary), only S1, S2 hold.
 *       S3'. WORDS: the output is one token per maximal run of equal word ids >= 0 (ids < 0 alone).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dt_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

enum { BATCH = 32, WORD_LEVEL = 100000 };

static const int32_t k_ms[] = {0, 10, 50, 200, WORD_LEVEL};
enum { NUM_MS = 5 };

typedef struct env {
  const char *name;
  lmf_context_t *ctx;
  lmf_vocab_t *vocab;
  dt_corpus corpus;
  int32_t V;
} env;

static int env_init(env *e, const char *name) {
  memset(e, 0, sizeof *e);
  e->name = name;
  e->ctx = lt_context(LMF_BACKEND_CPU, 0);
  e->vocab = dt_load_vocab(name);
  if (!e->ctx || !e->vocab) return 0;
  if (!LMF_CHECK_OK(lmf_vocab_size(e->vocab, &e->V))) return 0;
  if (!dt_corpus_load(&e->corpus, name, BATCH)) return 0;
  return LMF_CHECK_EQ_INT(e->corpus.num_langs, 10);
}

static void env_free(env *e) {
  dt_corpus_free(&e->corpus);
  lmf_vocab_destroy(e->vocab);
  lmf_context_destroy(e->ctx);
}

/* The bytes of input tokens ids[lo .. hi) concatenated into a malloc'd buffer; token k starts at
 * starts[k - lo] (starts[hi - lo] = total). */
static uint8_t *concat_tokens(const lmf_vocab_t *vocab, const int32_t *ids, int64_t lo, int64_t hi,
                              int64_t *starts, int64_t *total) {
  int64_t n = 0;
  for (int64_t k = lo; k < hi; ++k) {
    int64_t len = 0;
    const uint8_t *b = NULL;
    lmf_vocab_token_bytes(vocab, ids[k], &b, &len);
    n += len;
  }
  uint8_t *buf = (uint8_t *)malloc((size_t)n + 1);
  if (!buf) return NULL;
  int64_t o = 0;
  for (int64_t k = lo; k < hi; ++k) {
    int64_t len = 0;
    const uint8_t *b = NULL;
    lmf_vocab_token_bytes(vocab, ids[k], &b, &len);
    if (starts) starts[k - lo] = o;
    memcpy(buf + o, b, (size_t)len);
    o += len;
  }
  if (starts) starts[hi - lo] = o;
  *total = n;
  return buf;
}

static int run_merge(env *e, lmf_context_t *ctx, const dt_batch *b, int32_t m, int32_t boundary,
                     const char *pattern, lmf_dyntok_result_t **res, dt_view *w) {
  *res = NULL;
  if (!LMF_CHECK_OK(dt_merge(ctx ? ctx : e->ctx, e->vocab, b, m, boundary, pattern, res))) return 0;
  return dt_view_get(w, *res, e->vocab, b->offsets);
}

/* ---- lmfuse == the reference ------------------------------------------------------------------- */

/* Word ids from the whitespace split of each sequence's bytes: a token's word is the one its first
 * non-whitespace byte (not 0x09-0x0D, 0x20) belongs to; a token of whitespace only gets -1. */
static int32_t *whitespace_words(const lmf_vocab_t *vocab, const dt_batch *b) {
  int32_t *w = (int32_t *)malloc(sizeof(int32_t) * (size_t)(b->offsets[b->B] + 1));
  if (!w) return NULL;
  for (int64_t s = 0; s < b->B; ++s) {
    int32_t word = -1;
    int prev_ws = 1;
    for (int64_t k = b->offsets[s]; k < b->offsets[s + 1]; ++k) {
      const uint8_t *t = NULL;
      int64_t len = 0;
      lmf_vocab_token_bytes(vocab, b->ids[k], &t, &len);
      int32_t mine = -1;
      for (int64_t i = 0; i < len; ++i) {
        int ws = t[i] == ' ' || (t[i] >= 0x09 && t[i] <= 0x0D);
        if (!ws && prev_ws) ++word;
        if (!ws && mine < 0) mine = word;
        prev_ws = ws;
      }
      w[k] = mine;
    }
  }
  return w;
}

static void compare_with_reference(const char *name, int32_t boundary, int own_pattern) {
  env e;
  if (env_init(&e, name)) {
    const char *pattern = NULL;
    if (own_pattern) {
      LMF_CHECK_OK(lmf_vocab_pretokenizer_pattern(e.vocab, &pattern));
      if (!LMF_CHECK_MSG(pattern != NULL, "%s declares no Split pattern", name)) goto done;
    }
    lmf_ref_dt_rule *rule = lmf_ref_dt_rule_create(boundary, pattern);
    if (!LMF_CHECK(rule != NULL)) goto done;
    int64_t total_in = 0, total_word = 0;
    for (int L = 0; L < e.corpus.num_langs; ++L) {
      dt_batch *b = &e.corpus.batch[L];
      if (boundary == LMF_DYNTOK_WORDS) {
        free(b->word_ids);
        b->word_ids = whitespace_words(e.vocab, b);
        if (!LMF_CHECK(b->word_ids != NULL)) break;
      }
      lmf_ref_dt_result ref[NUM_MS];
      if (!LMF_CHECK(lmf_ref_dyntok(e.vocab, b->B, b->offsets, b->ids, b->word_ids, rule, boundary, NUM_MS,
                                    k_ms, ref)))
        break;
      for (int i = 0; i < NUM_MS; ++i) {
        lmf_dyntok_result_t *res;
        dt_view w;
        char what[96];
        snprintf(what, sizeof what, "%s %s mode %d%s m = %d", name, e.corpus.lang[L], boundary,
                 own_pattern ? " (own pattern)" : "", k_ms[i]);
        if (run_merge(&e, NULL, b, k_ms[i], boundary, pattern, &res, &w))
          dt_check_same_as_ref(&w, &ref[i], what);
        lmf_dyntok_result_destroy(res);
      }
      total_in += b->offsets[b->B];
      total_word += ref[NUM_MS - 1].num_tokens;
      lmf_t_note("%s %s: %lld tokens; m=10: %lld, m=200: %lld (%d merges), word level: %lld (%d merges)", name,
                 e.corpus.lang[L], (long long)b->offsets[b->B], (long long)ref[1].num_tokens,
                 (long long)ref[3].num_tokens, ref[3].num_merges, (long long)ref[4].num_tokens,
                 ref[4].num_merges);
      for (int i = 0; i < NUM_MS; ++i) lmf_ref_dt_result_free(&ref[i]);
    }
    lmf_t_note("%s mode %d: %lld -> %lld tokens at word level", name, boundary, (long long)total_in,
               (long long)total_word);
    lmf_ref_dt_rule_destroy(rule);
  }
done:
  env_free(&e);
}

void test_dyntok_real_ref_mistral(void) { compare_with_reference("mistral-7b", LMF_DYNTOK_PRETOKENS, 0); }
void test_dyntok_real_ref_gpt4o(void) { compare_with_reference("gpt-4o", LMF_DYNTOK_PRETOKENS, 0); }
void test_dyntok_real_ref_gpt4o_own_pattern(void) {
  compare_with_reference("gpt-4o", LMF_DYNTOK_PRETOKENS, 1);
}
void test_dyntok_real_ref_words_mistral(void) { compare_with_reference("mistral-7b", LMF_DYNTOK_WORDS, 0); }
void test_dyntok_real_ref_words_gpt4o(void) { compare_with_reference("gpt-4o", LMF_DYNTOK_WORDS, 0); }
void test_dyntok_real_ref_whitespace_mistral(void) {
  compare_with_reference("mistral-7b", LMF_DYNTOK_WHITESPACE, 0);
}
void test_dyntok_real_ref_whitespace_gpt4o(void) {
  compare_with_reference("gpt-4o", LMF_DYNTOK_WHITESPACE, 0);
}

/* ---- Invariants --------------------------------------------------------------------------------- */

/* Every output token's bytes are its span's input bytes; merged tokens are VALID strings (PRETOKENS /
 * WHITESPACE), or lie in one word (WORDS). */
static void check_tokens(env *e, const dt_batch *b, const dt_view *w, lmf_ref_dt_rule *rule, int32_t boundary,
                         const char *what) {
  int bad = 0;
  for (int64_t j = 0; j < w->N && bad < 5; ++j) {
    int64_t len, in_len;
    const uint8_t *t = dt_bytes(e->vocab, w, w->ids[j], &len);
    uint8_t *in = concat_tokens(e->vocab, b->ids, w->span_start[j], w->span_start[j] + w->span_len[j], NULL,
                                &in_len);
    if (!LMF_CHECK(in != NULL)) return;
    if (!LMF_CHECK_MSG(len == in_len && memcmp(t, in, (size_t)len) == 0,
                       "%s: output token %lld (id %d) does not hold its span's bytes", what, (long long)j,
                       w->ids[j]))
      ++bad;
    free(in);
    if (w->span_len[j] < 2) continue;
    if (boundary == LMF_DYNTOK_WORDS) {
      for (int64_t k = w->span_start[j]; k < w->span_start[j] + w->span_len[j]; ++k)
        if (!LMF_CHECK_MSG(b->word_ids[k] >= 0 && b->word_ids[k] == b->word_ids[w->span_start[j]],
                           "%s: output token %lld spans several words", what, (long long)j)) {
          ++bad;
          break;
        }
    } else if (!LMF_CHECK_MSG(lmf_ref_dt_valid_string(rule, t, len) == 1,
                              "%s: merged output token %lld is not VALID", what, (long long)j)) {
      ++bad;
    }
  }
}

/* S2: no adjacent output pair is VALID. */
static void check_no_valid_pair(env *e, const dt_batch *b, const dt_view *w, lmf_ref_dt_rule *rule,
                                int32_t boundary, const char *what) {
  for (int64_t s = 0; s < w->B; ++s) {
    for (int64_t j = w->offsets[s]; j + 1 < w->offsets[s + 1]; ++j) {
      int v;
      if (boundary == LMF_DYNTOK_WORDS) {
        int32_t x = b->word_ids[w->span_start[j]], y = b->word_ids[w->span_start[j + 1]];
        v = x >= 0 && x == y;
      } else {
        int64_t la, lb;
        const uint8_t *ta = dt_bytes(e->vocab, w, w->ids[j], &la);
        const uint8_t *tb = dt_bytes(e->vocab, w, w->ids[j + 1], &lb);
        uint8_t *t = (uint8_t *)malloc((size_t)(la + lb + 1));
        if (!LMF_CHECK(t != NULL)) return;
        memcpy(t, ta, (size_t)la);
        memcpy(t + la, tb, (size_t)lb);
        v = lmf_ref_dt_valid_string(rule, t, la + lb);
        free(t);
      }
      if (!LMF_CHECK_MSG(v == 0, "%s: seq %lld: output tokens %lld and %lld still form a VALID pair", what,
                         (long long)s, (long long)j, (long long)(j + 1)))
        return;
    }
  }
}

/* S3 (PRETOKENS): returns 1 if sequence s meets (i)-(iii) (and then checks the output tokens are F's
 * matches), 0 if not, -1 on failure. */
static int check_pretoken_level(env *e, const dt_batch *b, const dt_view *w, lmf_ref_dt_rule *rule, int64_t s,
                                const char *what) {
  int64_t lo = b->offsets[s], hi = b->offsets[s + 1], n = hi - lo, total = 0;
  if (n == 0) return 1;
  int64_t *tb = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n + 1));
  int64_t *fs = (int64_t *)malloc(sizeof(int64_t) * (size_t)(4 * n + 64));
  int64_t *fe = (int64_t *)malloc(sizeof(int64_t) * (size_t)(4 * n + 64));
  int64_t *seg = (int64_t *)malloc(sizeof(int64_t) * (size_t)(n + 1));
  uint8_t *t = concat_tokens(e->vocab, b->ids, lo, hi, tb, &total);
  int result = -1;
  if (!LMF_CHECK(tb && fs && fe && seg && t)) goto done;
  int64_t nf = lmf_ref_dt_findall(rule, t, total, fs, fe, 4 * n + 64);
  if (!LMF_CHECK(nf >= 0 && nf <= 4 * n + 64)) goto done;
  result = 0;
  /* F covers the bytes without gaps (else it is not a segmentation: not qualified). */
  for (int64_t f = 0; f < nf; ++f)
    if (fs[f] != (f ? fe[f - 1] : 0)) goto done;
  if (nf == 0 || fe[nf - 1] != total) goto done;
  /* (i) Each input token inside one match. */
  for (int64_t k = 0, f = 0; k < n; ++k) {
    while (f < nf && fe[f] <= tb[k]) ++f;
    if (f == nf || tb[k + 1] > fe[f]) goto done;
    seg[k] = f;
  }
  /* Matches hold whole tokens, so each match starts at a token start. (ii) and (iii). */
  for (int64_t k0 = 0; k0 < n;) {
    int64_t k1 = k0;
    while (k1 + 1 < n && seg[k1 + 1] == seg[k0]) ++k1;
    for (int64_t i = k0; i <= k1; ++i)
      for (int64_t j = i + 1; j <= k1; ++j)
        if (lmf_ref_dt_valid_string(rule, t + tb[i], tb[j + 1] - tb[i]) != 1) goto done;
    if (k1 + 1 < n) {
      int64_t k2 = k1 + 1;
      while (k2 + 1 < n && seg[k2 + 1] == seg[k1 + 1]) ++k2;
      for (int64_t i = k0; i <= k1; ++i)
        for (int64_t j = k1 + 1; j <= k2; ++j)
          if (lmf_ref_dt_valid_string(rule, t + tb[i], tb[j + 1] - tb[i]) != 0) goto done;
    }
    k0 = k1 + 1;
  }
  result = 1;
  /* Then the output tokens are F's matches. */
  if (!LMF_CHECK_MSG(w->offsets[s + 1] - w->offsets[s] == nf,
                     "%s: seq %lld: %lld output tokens at word level, %lld pre-tokens", what, (long long)s,
                     (long long)(w->offsets[s + 1] - w->offsets[s]), (long long)nf))
    goto done;
  for (int64_t j = w->offsets[s], f = 0; j < w->offsets[s + 1]; ++j, ++f) {
    int64_t a = tb[w->span_start[j] - lo], z = tb[w->span_start[j] - lo + w->span_len[j]];
    if (!LMF_CHECK_MSG(a == fs[f] && z == fe[f], "%s: seq %lld: output token %lld is bytes [%lld, %lld), "
                       "pre-token %lld is [%lld, %lld)", what, (long long)s, (long long)j, (long long)a,
                       (long long)z, (long long)f, (long long)fs[f], (long long)fe[f]))
      break;
  }
done:
  free(tb);
  free(fs);
  free(fe);
  free(seg);
  free(t);
  return result;
}

static void invariants(const char *name, int32_t boundary) {
  env e;
  static const int32_t ms[] = {0, 1, 2, 5, 10, 20, 50, 100, 200, 500, WORD_LEVEL};
  enum { NM = 11 };
  lmf_context_t *ctx_t[3] = {NULL, NULL, NULL};
  lmf_ref_dt_rule *rule = NULL;
  if (!env_init(&e, name)) goto done;
  static const int32_t threads[3] = {1, 2, 4};
  for (int i = 0; i < 3; ++i)
    if (!(ctx_t[i] = lt_context(LMF_BACKEND_CPU, threads[i]))) goto done;
  rule = lmf_ref_dt_rule_create(boundary == LMF_DYNTOK_WORDS ? LMF_DYNTOK_PRETOKENS : boundary, NULL);
  if (!LMF_CHECK(rule != NULL)) goto done;
  int64_t seqs = 0, qualified = 0;
  for (int L = 0; L < e.corpus.num_langs; ++L) {
    dt_batch *b = &e.corpus.batch[L];
    if (boundary == LMF_DYNTOK_WORDS) {
      b->word_ids = whitespace_words(e.vocab, b);
      if (!LMF_CHECK(b->word_ids != NULL)) break;
    }
    /* The input's bytes are the text (GPT-4o), or a space and the text (Mistral's SentencePiece prefix). */
    if (boundary == LMF_DYNTOK_PRETOKENS) {
      for (int64_t s = 0; s < b->B; ++s) {
        int64_t len;
        uint8_t *t = concat_tokens(e.vocab, b->ids, b->offsets[s], b->offsets[s + 1], NULL, &len);
        const char *text = e.corpus.text[L][s];
        int sp = strcmp(name, "mistral-7b") == 0;
        LMF_CHECK_MSG(t && len == (int64_t)strlen(text) + sp && (!sp || t[0] == ' ') &&
                          memcmp(t + sp, text, (size_t)(len - sp)) == 0,
                      "%s %s line %lld: the tokens' bytes are not the text", name, e.corpus.lang[L],
                      (long long)s);
        free(t);
      }
    }
    int64_t prev_n = -1;
    dt_view prev_w;
    lmf_dyntok_result_t *prev = NULL;
    for (int i = 0; i < NM; ++i) {
      char what[96];
      snprintf(what, sizeof what, "%s %s mode %d m = %d", name, e.corpus.lang[L], boundary, ms[i]);
      lmf_dyntok_result_t *res;
      dt_view w;
      if (!run_merge(&e, NULL, b, ms[i], boundary, NULL, &res, &w)) {
        lmf_dyntok_result_destroy(res);
        break;
      }
      check_tokens(&e, b, &w, rule, boundary, what);
      if (ms[i] == 0) {
        /* The identity. */
        LMF_CHECK_EQ_INT(w.num_merges, 0);
        LMF_CHECK_EQ_INT(w.num_new, 0);
        LMF_CHECK_EQ_INT(w.N, b->offsets[b->B]);
        for (int64_t j = 0; j < w.N && j < b->offsets[b->B]; ++j)
          if (!LMF_CHECK_MSG(w.ids[j] == b->ids[j] && w.span_len[j] == 1, "%s: token %lld changed", what,
                             (long long)j))
            break;
      }
      LMF_CHECK_MSG(w.num_merges <= ms[i], "%s: %d merges", what, w.num_merges);
      if (prev) {
        /* Non-increasing length; the smaller budget's merges are a prefix. */
        LMF_CHECK_MSG(w.N <= prev_n, "%s: %lld tokens, more than %lld with a smaller m", what, (long long)w.N,
                      (long long)prev_n);
        LMF_CHECK_MSG(w.num_merges >= prev_w.num_merges &&
                          memcmp(w.merge_pairs, prev_w.merge_pairs,
                                 sizeof(int32_t) * 2 * (size_t)prev_w.num_merges) == 0,
                      "%s: the merges of the smaller m are not a prefix", what);
        /* A smaller budget that stopped early is the same result. */
        if (prev_w.num_merges < ms[i - 1]) dt_check_same(&w, &prev_w, what);
      }
      if (ms[i] == 200 || ms[i] == WORD_LEVEL) {
        /* Thread counts. */
        for (int t = 0; t < 3; ++t) {
          lmf_dyntok_result_t *rt;
          dt_view wt;
          char w2[128];
          snprintf(w2, sizeof w2, "%s, %d threads", what, threads[t]);
          if (run_merge(&e, ctx_t[t], b, ms[i], boundary, NULL, &rt, &wt)) dt_check_same(&wt, &w, w2);
          lmf_dyntok_result_destroy(rt);
        }
      }
      if (ms[i] == WORD_LEVEL) {
        /* S1, S2. */
        LMF_CHECK_MSG(w.num_merges < WORD_LEVEL, "%s: did not stop early", what);
        check_no_valid_pair(&e, b, &w, rule, boundary, what);
        if (boundary == LMF_DYNTOK_PRETOKENS) {
          for (int64_t s = 0; s < b->B; ++s) {
            int q = check_pretoken_level(&e, b, &w, rule, s, what);
            if (q < 0) break;
            qualified += q;
            ++seqs;
          }
        } else if (boundary == LMF_DYNTOK_WORDS) {
          /* S3': one token per maximal run of equal word ids >= 0. */
          int64_t runs = 0;
          for (int64_t s = 0; s < b->B; ++s)
            for (int64_t k = b->offsets[s]; k < b->offsets[s + 1]; ++k)
              runs += !(k > b->offsets[s] && b->word_ids[k] >= 0 && b->word_ids[k] == b->word_ids[k - 1]);
          LMF_CHECK_MSG(w.N == runs, "%s: %lld tokens at word level, %lld word runs", what, (long long)w.N,
                        (long long)runs);
        }
      }
      lmf_dyntok_result_destroy(prev);
      prev = res;
      prev_w = w;
      prev_n = w.N;
    }
    lmf_dyntok_result_destroy(prev);
  }
  if (boundary == LMF_DYNTOK_PRETOKENS) {
    lmf_t_note("%s: %lld of %lld sequences meet (i)-(iii); their word-level tokens are the pre-tokens", name,
               (long long)qualified, (long long)seqs);
    LMF_CHECK_MSG(seqs == 320 && qualified * 2 > seqs, "%s: only %lld of %lld sequences qualify", name,
                  (long long)qualified, (long long)seqs);
  }
done:
  lmf_ref_dt_rule_destroy(rule);
  for (int i = 0; i < 3; ++i) lmf_context_destroy(ctx_t[i]);
  env_free(&e);
}

void test_dyntok_real_invariants_mistral(void) { invariants("mistral-7b", LMF_DYNTOK_PRETOKENS); }
void test_dyntok_real_invariants_gpt4o(void) { invariants("gpt-4o", LMF_DYNTOK_PRETOKENS); }
void test_dyntok_real_invariants_words_mistral(void) { invariants("mistral-7b", LMF_DYNTOK_WORDS); }
void test_dyntok_real_invariants_words_gpt4o(void) { invariants("gpt-4o", LMF_DYNTOK_WORDS); }
void test_dyntok_real_invariants_whitespace_mistral(void) { invariants("mistral-7b", LMF_DYNTOK_WHITESPACE); }
void test_dyntok_real_invariants_whitespace_gpt4o(void) { invariants("gpt-4o", LMF_DYNTOK_WHITESPACE); }
