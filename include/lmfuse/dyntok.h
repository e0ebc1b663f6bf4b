/*
 * lmfuse dyntok: batch-level BPE merging ("dynamic tokenization", Feher et al., ACL 2025).
 *
 * A batch already tokenized by a model's tokenizer goes in; inside the batch, the most frequent
 * adjacent pair of tokens is merged into one new, longer token, up to m times, so the sequences get
 * shorter (at most to one token per pre-token, "word level"). Semantics, exactly those of the
 * reference (docs/dyntok.md, specs/dynamic-bpe.md):
 *   - counts are raw, overlapping occurrence counts over the whole batch, rebuilt every step: the pair
 *     (a, a) occurs twice in "a a a";
 *   - the most frequent pair wins; ties go to the pair whose first occurrence comes first in row-major
 *     order (sequence, then position);
 *   - it is applied in every sequence left to right, non-overlapping ("a a a" -> "aa a");
 *   - string identity: a merged byte string that is already a token (of the vocabulary or made by an
 *     earlier merge along another path) is that token, same id; for the vocabulary that is the id
 *     lmf_vocab_find() gives (the canonical non-special one). Input ids are taken as given: two input
 *     ids with the same bytes (a vocabulary's duplicates, e.g. Mistral's "<0x41>" and "A") are
 *     different tokens until merged;
 *   - special tokens never merge; a pair is merged only if it is VALID under the boundary mode;
 *   - the loop stops early when no valid pair is left.
 *
 * Boundary modes (VALID(a, b), t = bytes(a) + bytes(b)):
 *   - LMF_DYNTOK_PRETOKENS (the reference): "space-like" bytes are 0x20, 0x09, 0x0A. If t holds a
 *     space-like byte after its first byte the pair is invalid unless t is all space-like and not
 *     exactly "\n\n" (then it is valid, whatever the pattern); else if t is not valid UTF-8 (RFC 3629)
 *     the pair is valid; else it is valid iff the pre-tokenizer pattern's first match at offset 0 spans
 *     all of t (PCRE2, UTF + UCP). The pattern
 *     is LMF_DYNTOK_DEFAULT_PATTERN unless the config gives another (e.g. a tokenizer.json's own
 *     Split regex, lmf_vocab_pretokenizer_pattern()).
 *   - LMF_DYNTOK_WORDS: the caller gives a word id per input token; a pair is valid iff both tokens
 *     have the same word id (>= 0) and neither is special (per occurrence: the same pair may be valid
 *     in one place and not in another); a merged token keeps the shared word id.
 *   - LMF_DYNTOK_WHITESPACE: t has no whitespace byte (0x09-0x0D, 0x20) after its first byte, and
 *     neither token is special.
 *
 * New tokens get ids vocab_size, vocab_size + 1, ... in the order they are first made. Every output
 * position covers a contiguous span of input positions of its sequence; its bytes are theirs,
 * concatenated.
 *
 * Inputs are host memory on every backend. On a CUDA context the merge loop runs on the device with no
 * host round trip per merge, and the call returns when the result is ready; results are the same bit
 * for bit on every backend and thread count. The CUDA backend evaluates the default pre-tokenizer
 * pattern only (without a regex engine, checked against PCRE2): a custom pattern needs a CPU context.
 * Calls on one CUDA context are serialised (it caches the vocabulary on the device).
 */
#ifndef LMFUSE_DYNTOK_H
#define LMFUSE_DYNTOK_H

#include "lmfuse/lmfuse.h"
#include "lmfuse/vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lmf_dyntok_boundary {
  LMF_DYNTOK_PRETOKENS = 0,  /* the reference: a pre-tokenizer regex decides (default) */
  LMF_DYNTOK_WORDS = 1,      /* caller word ids */
  LMF_DYNTOK_WHITESPACE = 2  /* no whitespace inside a token after its first byte */
} lmf_dyntok_boundary_t;

/* The reference's pre-tokenizer pattern (GPT-2's, with \p{M} kept with letters). */
#define LMF_DYNTOK_DEFAULT_PATTERN \
  "'s|'t|'re|'ve|'m|'ll|'d| ?[\\p{L}\\p{M}]+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

#define LMF_DYNTOK_CONFIG_VERSION 1u

typedef struct lmf_dyntok_config {
  size_t struct_size;  /* sizeof(lmf_dyntok_config_t) */
  uint32_t version;    /* LMF_DYNTOK_CONFIG_VERSION */
  int32_t max_merges;  /* m >= 0; default 200 */
  int32_t boundary;    /* lmf_dyntok_boundary_t; default LMF_DYNTOK_PRETOKENS */
  const char *pattern; /* PRETOKENS: NUL-terminated UTF-8 PCRE2 pattern; NULL: the default; ignored
                          (not compiled) in the other modes */
} lmf_dyntok_config_t;

#define LMF_DYNTOK_CONFIG_INIT \
  { sizeof(lmf_dyntok_config_t), LMF_DYNTOK_CONFIG_VERSION, 200, LMF_DYNTOK_PRETOKENS, NULL }

LMF_API lmf_status_t lmf_dyntok_config_init(lmf_dyntok_config_t *config, size_t struct_size);

#define LMF_DYNTOK_BATCH_VERSION 1u

/* A tokenized batch, in host memory, as flat ids plus offsets (CSR). */
typedef struct lmf_dyntok_batch {
  size_t struct_size;      /* sizeof(lmf_dyntok_batch_t) */
  uint32_t version;        /* LMF_DYNTOK_BATCH_VERSION */
  int64_t num_seqs;        /* B >= 1 */
  const int64_t *offsets;  /* [B + 1]: sequence s is ids[offsets[s] .. offsets[s+1]); offsets[0] = 0,
                              non-decreasing (empty sequences are allowed) */
  const int32_t *ids;      /* [offsets[B]] ids of the vocabulary (not unused ones); may be NULL only if
                              offsets[B] = 0 */
  const int32_t *word_ids; /* LMF_DYNTOK_WORDS: [offsets[B]] word id per token (< 0: never merges);
                              ignored (may be NULL) in the other modes */
} lmf_dyntok_batch_t;

#define LMF_DYNTOK_BATCH_INIT { sizeof(lmf_dyntok_batch_t), LMF_DYNTOK_BATCH_VERSION, 0, NULL, NULL, NULL }

LMF_API lmf_status_t lmf_dyntok_batch_init(lmf_dyntok_batch_t *batch, size_t struct_size);

typedef struct lmf_dyntok_result lmf_dyntok_result_t;

/* Merges the batch. ctx, vocab, batch, config and out are required. On success *out holds the result
 * (destroy it with lmf_dyntok_result_destroy); on failure *out is untouched. Statuses:
 * LMF_ERR_NULL_POINTER, LMF_ERR_INVALID_ARGUMENT (an id out of range or unused, offsets not starting at
 * 0 or not monotone, m < 0, an unknown boundary mode, a pattern that fails to compile: the message gives
 * PCRE2's error and the offset), LMF_ERR_INVALID_SIZE (B < 1; more than 2^29 - 1 tokens or
 * sequences; a custom pattern on a CUDA context), LMF_ERR_STRUCT_SIZE, LMF_ERR_OUT_OF_MEMORY,
 * LMF_ERR_CUDA (a CUDA call failed: the message names it). */
LMF_API lmf_status_t lmf_dyntok_merge(lmf_context_t *ctx, const lmf_vocab_t *vocab,
                                      const lmf_dyntok_batch_t *batch,
                                      const lmf_dyntok_config_t *config, lmf_dyntok_result_t **out);
/* NULL is a no-op. */
LMF_API void lmf_dyntok_result_destroy(lmf_dyntok_result_t *result);

/* Sizes of a result: sequences, output tokens (all sequences), merges done, new tokens made. */
LMF_API lmf_status_t lmf_dyntok_result_sizes(const lmf_dyntok_result_t *result, int64_t *num_seqs,
                                             int64_t *num_tokens, int32_t *num_merges,
                                             int32_t *num_new_tokens);

/* The arrays of a result, by field. Each is host memory owned by the result. */
typedef enum lmf_dyntok_field {
  LMF_DYNTOK_FIELD_OFFSETS = 0,       /* int64 [B + 1] into IDS */
  LMF_DYNTOK_FIELD_IDS = 1,           /* int32 [num_tokens] merged ids (>= vocab size: new tokens) */
  LMF_DYNTOK_FIELD_SPAN_START = 2,    /* int64 [num_tokens] flat input position of the first input
                                         token the output token covers */
  LMF_DYNTOK_FIELD_SPAN_LEN = 3,      /* int32 [num_tokens] input tokens it covers (>= 1) */
  LMF_DYNTOK_FIELD_MERGE_PAIRS = 4,   /* int32 [2 * num_merges] (left, right) per merge, in order */
  LMF_DYNTOK_FIELD_MERGE_RESULTS = 5, /* int32 [num_merges] the id each merge produced (the merge that
                                         first produces id vocab_size + k creates new token k) */
  LMF_DYNTOK_FIELD_MERGE_COUNTS = 6,  /* int64 [num_merges] the pair's count when chosen */
  LMF_DYNTOK_FIELD_NEW_OFFSETS = 7,   /* int64 [num_new + 1] into NEW_BYTES */
  LMF_DYNTOK_FIELD_NEW_BYTES = 8,     /* uint8: new token k is its bytes in order of id */
  LMF_DYNTOK_FIELD_DECOMP_OFFSETS = 9,/* int64 [num_new + 1] into DECOMP */
  LMF_DYNTOK_FIELD_DECOMP = 10        /* int32: new token k as the base ids it was merged from: the
                                         concatenation of the decompositions of the pair that created
                                         it (a vocabulary id decomposes into itself) */
} lmf_dyntok_field_t;

/* *data = the field's array, *count = its number of elements (see lmf_dyntok_field_t), *dtype = its
 * lmf_dtype_t (LMF_DTYPE_I32, LMF_DTYPE_I64, or LMF_DTYPE_U8 for NEW_BYTES). data, count and dtype may
 * each be NULL. An unknown field is LMF_ERR_INVALID_ARGUMENT. */
LMF_API lmf_status_t lmf_dyntok_result_field(const lmf_dyntok_result_t *result, int32_t field,
                                             const void **data, int64_t *count, int32_t *dtype);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_DYNTOK_H */
