/* Internal to liblmfuse: what the dyntok host layer (host/dyntok.c) asks of a backend, and the VALID
 * predicate every backend shares (host/dyntok_valid.c).
 *
 * The host layer checks every argument (ids in range and used, offsets, sizes, mode, word ids), compiles
 * the pre-tokenizer pattern (LMF_DYNTOK_PRETOKENS), and hands the backend one lmf_dt_job by pointer.
 * Every pointer in the job is HOST memory (the public API takes host inputs on every backend; a CUDA
 * backend uploads what it needs). The backend runs the whole merge loop and fills a result allocated
 * with lmf_dt_result_alloc(): the merged sequences (OFFSETS, IDS), the spans (SPAN_START, SPAN_LEN)
 * and the merge list (MERGE_PAIRS, MERGE_RESULTS, MERGE_COUNTS). The host layer then derives the new
 * tokens' bytes and decompositions from the merge list (lmf_dt_result_finish(), the same code for every
 * backend) and hands the result to the caller. A backend fails only on its own resources (memory, a
 * CUDA error) or on a regex engine error (e.g. a custom pattern hitting PCRE2's match limit).
 *
 * Semantics every backend implements, bit for bit (specs/dynamic-bpe.md, include/lmfuse/dyntok.h):
 *   - Identity. An input token is its id as given. The token a merge of (a, b) produces has the bytes
 *     t = bytes(a) + bytes(b); its id is lmf_vocab_lookup(vocab, t) if that is >= 0 (the canonical
 *     non-special vocabulary token with those bytes), else the id of the earlier new token with those
 *     bytes, else the next new id (vocab->size + number of new tokens so far).
 *   - A pair occurrence at output position p of sequence s is (tok[p], tok[p+1]); it COUNTS iff neither
 *     token is special and it is VALID: in the pair modes (PRETOKENS, WHITESPACE) VALID depends on the
 *     two ids only (lmf_dt_eval_pair); in WORDS mode iff word[p] == word[p+1] >= 0, where a merged
 *     token keeps the (shared) word id of its parts.
 *   - Each step: count[pair] = number of counting occurrences over the whole batch (overlapping ones
 *     too). No pair with count >= 1: stop. Else choose the pair with the largest count; ties: the one
 *     whose first counting occurrence comes first in row-major order (sequence, then position). Apply
 *     it in every sequence left to right: scanning p = 0, 1, ..., an occurrence of the chosen pair that
 *     counts is replaced by the merged token and the scan goes on after it (non-overlapping).
 *   - Merge k is recorded as (a, b), result id, count. Output token j of sequence s covers the input
 *     positions span_start[j] .. span_start[j] + span_len[j] - 1 (flat, i.e. offsets[s] + position).
 */
#ifndef LMF_HOST_DYNTOK_BACKEND_H
#define LMF_HOST_DYNTOK_BACKEND_H

#include "internal.h"
#include "lmfuse/dyntok.h"
#include "vocab_internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- VALID (host/dyntok_valid.c) --------------------------------------------------------------- */

/* The boundary rule of a call: the mode and, for LMF_DYNTOK_PRETOKENS, the compiled pattern (PCRE2,
 * UTF + UCP, JIT-compiled when the platform allows, else interpreted). Immutable once created: any
 * number of threads may share one (each with its own lmf_dt_eval). */
typedef struct lmf_dt_valid lmf_dt_valid;

/* Compiles `pattern` (NULL: LMF_DYNTOK_DEFAULT_PATTERN) for PRETOKENS; the other modes compile
 * nothing. A pattern that does not compile is LMF_ERR_INVALID_ARGUMENT; the message, prefixed with
 * `fn`, gives PCRE2's error text and the offset in the pattern. *out is set only on success. Compiled
 * patterns are cached for the process (a few, by their text), so a repeated pattern costs a lookup. */
lmf_status_t lmf_dt_valid_create(lmf_dt_valid **out, int32_t boundary, const char *pattern,
                                 const char *fn);
void lmf_dt_valid_destroy(lmf_dt_valid *v);
/* The pattern a PRETOKENS rule was created from: NULL for the default (config->pattern == NULL), else
 * the caller's string (valid during the call that created the rule); NULL in the other modes. For a
 * backend that evaluates only some patterns itself (the CUDA backend: the default one). */
const char *lmf_dt_valid_pattern(const lmf_dt_valid *v);

/* One thread's evaluator: PCRE2 match data, scratch for t, and the memo (a, b) -> VALID. Not
 * thread-safe; create one per thread. */
typedef struct lmf_dt_eval lmf_dt_eval;

/* NULL on out of memory (lmf_fail is set). */
lmf_dt_eval *lmf_dt_eval_create(const lmf_dt_valid *v, const struct lmf_vocab *vocab);
void lmf_dt_eval_destroy(lmf_dt_eval *e);

/* VALID of the byte string t = bytes(a) + bytes(b) of two non-special tokens in a pair mode, without
 * memo: 1 valid, 0 not, -1 on a regex engine error (lmf_fail is set: LMF_ERR_INVALID_ARGUMENT naming
 * PCRE2's error). PRETOKENS: space-like = 0x20, 0x09, 0x0A; a space-like byte after the first byte makes
 * t invalid unless t is all space-like and not exactly "\n\n" (then valid, no regex); else t that is
 * not valid UTF-8 (RFC 3629: no overlong forms, no surrogates, <= U+10FFFF) is valid; else valid iff
 * the pattern's first match at offset 0 spans all of t. WHITESPACE: no byte 0x09-0x0D or 0x20 after the
 * first byte. Not for WORDS mode (returns -1). */
int lmf_dt_eval_string(lmf_dt_eval *e, const uint8_t *t, int64_t len);

/* The part of VALID a byte scan decides, for backends that want to skip the regex (and the memo) for
 * most pairs: 1 or 0 when t = a_bytes + b_bytes is decided without the pattern (PRETOKENS: t has a
 * space-like byte after its first byte; WHITESPACE: always), -1 when only the pattern can tell. Equal to
 * lmf_dt_eval_string whenever it is not -1. Thread-safe. */
int lmf_dt_valid_quick(const lmf_dt_valid *v, const uint8_t *a_bytes, int64_t a_len, const uint8_t *b_bytes,
                       int64_t b_len);

/* VALID(a, b) in a pair mode, memoised: each distinct (a, b) is evaluated once per evaluator. a and b
 * are ids; ids >= vocab->size are new tokens, whose bytes the caller passes (for vocabulary ids the
 * bytes arguments are ignored and may be NULL). A special token makes the pair invalid. Returns 1, 0, or
 * -1 on error (lmf_fail is set). */
int lmf_dt_eval_pair(lmf_dt_eval *e, int32_t a, const uint8_t *a_bytes, int64_t a_len, int32_t b,
                     const uint8_t *b_bytes, int64_t b_len);

/* The status of the last call that returned -1 (LMF_OK if none did). */
lmf_status_t lmf_dt_eval_error(const lmf_dt_eval *e);

/* ---- The job ---------------------------------------------------------------------------------- */

typedef struct lmf_dt_job {
  const struct lmf_vocab *vocab;  /* ids, bytes, flags (LMF_TOKEN_SPECIAL), lmf_vocab_lookup */
  const lmf_dt_valid *valid;      /* the boundary rule (every mode; a pattern only for PRETOKENS) */
  int64_t num_seqs;               /* B >= 1 */
  int64_t num_tokens;             /* N = offsets[B] <= LMF_DT_MAX_TOKENS */
  const int64_t *offsets;         /* [B + 1], checked: 0, non-decreasing */
  const int32_t *ids;             /* [N], checked: 0 <= id < vocab->size, not unused; NULL iff N = 0 */
  const int32_t *word_ids;        /* [N] in WORDS mode, else NULL */
  int32_t max_merges;             /* m >= 0 */
  int32_t boundary;               /* lmf_dyntok_boundary_t, checked */
  int32_t cpu_threads;            /* the context's (0: default); results never depend on it */
  int32_t target_tokens;          /* >= 0: stop (before a merge) once at most this many tokens are left
                                     (lmf_dyntok_config_t.target_reduction); -1: no target */
} lmf_dt_job;

/* Largest batch a call takes, in tokens and in sequences: positions, the CPU backend's occurrence lists
 * (< 3N entries) and new ids (vocabulary size <= 2^24, plus fewer than N) all fit an int32. */
#define LMF_DT_MAX_TOKENS (((int64_t)1 << 29) - 1)

/* ---- The result (include/lmfuse/dyntok.h's opaque lmf_dyntok_result_t) --------------------------- */

struct lmf_dyntok_result {
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
  int64_t *new_offsets;    /* [num_new + 1]      (filled by lmf_dt_result_finish) */
  uint8_t *new_bytes;      /* [new_offsets[num_new]] */
  int64_t *decomp_offsets; /* [num_new + 1] */
  int32_t *decomp;         /* [decomp_offsets[num_new]] */
};

/* A result with the backend's arrays allocated (contents undefined) and no new tokens yet. NULL on
 * out of memory (lmf_fail is set). Free with lmf_dyntok_result_destroy(). */
struct lmf_dyntok_result *lmf_dt_result_alloc(int64_t num_seqs, int64_t num_tokens, int32_t num_merges);

/* Derives NEW_OFFSETS, NEW_BYTES, DECOMP_OFFSETS and DECOMP from the merge list: a merge whose result is
 * the next new id creates that token with bytes(a) + bytes(b) and decomposition decomp(a) + decomp(b)
 * (a vocabulary id decomposes into itself). Checks the list is consistent (result ids in order, ids in
 * range): LMF_ERR_INTERNAL otherwise. */
lmf_status_t lmf_dt_result_finish(struct lmf_dyntok_result *r, const struct lmf_vocab *vocab);

/* ---- Backends ---------------------------------------------------------------------------------- */

/* The loop of every backend: while merges < max_merges and (target_tokens < 0 or live tokens >
 * target_tokens): choose; stop if no pair counts; apply.
 *
 * CPU (host/cpu/dyntok_cpu.c): incremental pair counts, exact. On success *out is a result the caller
 * finishes (lmf_dt_result_finish) and owns; on failure *out is untouched. A CUDA backend
 * (kernels/dyntok.cu) implements the same contract, below. PCRE2 has no device version: the CUDA
 * backend evaluates VALID on the device with the regex-free matcher of kernels/common/pretok_match.h
 * (checked against PCRE2 by tests/dyntok/test_pretok_match.c), so it takes the default pattern only
 * (lmf_dt_valid_pattern() == NULL) and refuses a custom one. */
lmf_status_t lmf_cpu_dyntok_run(const struct lmf_context *ctx, const lmf_dt_job *job,
                                struct lmf_dyntok_result **out);
/* CUDA (kernels/dyntok.cu; LMF_ERR_NOT_COMPILED from host/cuda_stub.c in a CPU-only build). */
lmf_status_t lmf_cuda_dyntok_run(const struct lmf_context *ctx, const lmf_dt_job *job,
                                 struct lmf_dyntok_result **out);

#ifdef __cplusplus
}
#endif

#endif
