/*
 * A plain reference of batch-level BPE merging (specs/dynamic-bpe.md, "Reference algorithm"), written
 * straight from the spec's pseudo-code for the tests to compare lmfuse against: every step recounts
 * every adjacent pair of every sequence into an insertion-ordered table, takes the first entry with the
 * largest count, and rewrites every sequence left to right. Tokens are ids whose bytes come from the
 * vocabulary (public API only) or from the new tokens made so far; a merged byte string is the
 * vocabulary's token (lmf_vocab_find) or an earlier new token with the same bytes (linear search), else
 * a new one. VALID is evaluated with PCRE2 (interpreted, no JIT) and a hand-written UTF-8 decoder,
 * memoised per pair of ids.
 */
#ifndef LMF_TESTS_REF_DYNTOK_H
#define LMF_TESTS_REF_DYNTOK_H

#include <stdint.h>

#include "lmfuse/dyntok.h"
#include "lmfuse/vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The same arrays as the lmfuse result fields (include/lmfuse/dyntok.h). */
typedef struct lmf_ref_dt_result {
  int64_t num_seqs;
  int64_t num_tokens;
  int32_t num_merges;
  int32_t num_new;
  int64_t *offsets;        /* [B + 1] */
  int32_t *ids;            /* [num_tokens] */
  int64_t *span_start;     /* [num_tokens] */
  int32_t *span_len;       /* [num_tokens] */
  int32_t *merge_pairs;    /* [2 * num_merges] */
  int32_t *merge_results;  /* [num_merges] */
  int64_t *merge_counts;   /* [num_merges] */
  int64_t *new_offsets;    /* [num_new + 1] */
  uint8_t *new_bytes;
  int64_t *decomp_offsets; /* [num_new + 1] */
  int32_t *decomp;
} lmf_ref_dt_result;

/* A compiled boundary rule (pattern used only in LMF_DYNTOK_PRETOKENS; NULL = the default). NULL if
 * the pattern does not compile. */
typedef struct lmf_ref_dt_rule lmf_ref_dt_rule;
lmf_ref_dt_rule *lmf_ref_dt_rule_create(int32_t boundary, const char *pattern);
void lmf_ref_dt_rule_destroy(lmf_ref_dt_rule *rule);

/* VALID as a predicate on the byte string t = bytes(a) + bytes(b) of two non-special tokens, in the
 * rule's pair mode (PRETOKENS or WHITESPACE). 1 / 0, or -1 on a regex engine error. */
int lmf_ref_dt_valid_string(lmf_ref_dt_rule *rule, const uint8_t *t, int64_t len);
/* 1 if t is valid UTF-8 (RFC 3629). */
int lmf_ref_dt_utf8_valid(const uint8_t *t, int64_t len);
/* The pattern's successive matches over t (a regex engine's findall: each search starts where the last
 * match ended; an empty match advances by one character). Writes match i as [starts[i], ends[i]) for
 * i < max and returns the number of matches, or -1 on error. Bytes no match covers are not reported. */
int64_t lmf_ref_dt_findall(lmf_ref_dt_rule *rule, const uint8_t *t, int64_t len, int64_t *starts,
                           int64_t *ends, int64_t max);

/* Runs the reference on a batch (offsets [B + 1], ids, word_ids for WORDS mode) with the largest
 * budget in ms[0 .. n_ms-1] and stores into out[i] the state after min(ms[i], merges done) merges (the
 * loop is the same for every budget, so a smaller budget's result is a prefix of the run). Returns 1 on
 * success, 0 on failure (a bad pattern, no memory). */
int lmf_ref_dyntok(const lmf_vocab_t *vocab, int64_t num_seqs, const int64_t *offsets, const int32_t *ids,
                   const int32_t *word_ids, lmf_ref_dt_rule *rule, int32_t boundary, int n_ms,
                   const int32_t *ms, lmf_ref_dt_result *out);
void lmf_ref_dt_result_free(lmf_ref_dt_result *r);

#ifdef __cplusplus
}
#endif

#endif
