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

#include "lmfuse/hypernet.h"
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
  size_t struct_size;  /* sizeof(lmf_dyntok_config_t), or LMF_DYNTOK_CONFIG_SIZE_V1 (the struct without
                          target_reduction, which then takes its default) */
  uint32_t version;    /* LMF_DYNTOK_CONFIG_VERSION */
  int32_t max_merges;  /* m >= 0; default 200 */
  int32_t boundary;    /* lmf_dyntok_boundary_t; default LMF_DYNTOK_PRETOKENS */
  const char *pattern; /* PRETOKENS: NUL-terminated UTF-8 PCRE2 pattern; NULL: the default; ignored
                          (not compiled) in the other modes */
  float target_reduction; /* 0 (default): off, merge up to max_merges times. In (0, 1): also stop as
                             soon as the batch holds at most T = floor((10^6 - round(10^6 r)) N / 10^6)
                             tokens (N = input tokens; r is read to 6 decimals, in integers, so 0.2
                             means exactly 20%); the loop still stops at max_merges merges or when no
                             valid pair is left, whichever comes first. Checked before every merge:
                             a batch already at or below T gets no merge. Same on every backend. */
} lmf_dyntok_config_t;

/* struct_size of the first layout of lmf_dyntok_config_t (up to and including pattern). */
#define LMF_DYNTOK_CONFIG_SIZE_V1 (offsetof(lmf_dyntok_config_t, pattern) + sizeof(const char *))

#define LMF_DYNTOK_CONFIG_INIT \
  { sizeof(lmf_dyntok_config_t), LMF_DYNTOK_CONFIG_VERSION, 200, LMF_DYNTOK_PRETOKENS, NULL, 0.0f }

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
 * 0 or not monotone, m < 0, target_reduction not 0 or in (0, 1), an unknown boundary mode, a pattern
 * that fails to compile: the message gives PCRE2's error and the offset; a custom pattern on a CUDA
 * context), LMF_ERR_INVALID_SIZE (B < 1; more than 2^29 - 1 tokens or sequences),
 * LMF_ERR_STRUCT_SIZE, LMF_ERR_OUT_OF_MEMORY,
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

/* ---- From a merged batch to inputs_embeds ------------------------------------------------------ */

/* lmf_dyntok_embed turns a merge result into what a model's forward takes (specs/dynamic-bpe.md,
 * specs/hypernetwork.md):
 *   inputs_embeds [B][L][n_embd]  in out_dtype: a token of the vocabulary gets its row of E_in exactly
 *                                 (converted to out_dtype: bit for bit when the dtypes match); a new
 *                                 token gets the hypernetwork's prediction for its surface form
 *                                 (lmf_hypernet_surface_forms + lmf_hypernet_predict, e_in), or FVT's
 *                                 mean of the E_in rows of its decomposition (lmf_fvt_predict on the
 *                                 result's DECOMP fields);
 *   attention_mask [B][L]         int32, 1 on tokens, 0 on padding;
 *   ids [B][L]                    int32, the merged ids (vocabulary ids for tokens left alone, vocab
 *                                 size + k for new token k), pad_id on padding;
 *   span_start, span_len [B][L]   int32, the input positions a token covers, counted from the start of
 *                                 its sequence (span_start = -1, span_len = 0 on padding);
 *   new-token e_out [num_new][n_embd] (out_dtype) and bias [num_new] (float): for decoder models
 *                                 scoring the new tokens (the hypernetwork's e_out and bias; FVT: the
 *                                 mean of E_out rows, bias 0).
 * L >= the longest merged sequence (lmf_dyntok_embed_shape); sequences are padded on the right or on
 * the left up to L. Padding rows: zeros when pad_id = -1, else the E_in row of pad_id (what an
 * embedding lookup of ids padded with pad_id gives). With max_merges = 0 the call is exactly the
 * model's embedding lookup of the padded batch.
 *
 * Only the new tokens the output holds are predicted (all num_new of them when out_new_out or
 * out_new_bias is asked for). With a cache (lmf_embed_cache_t, rows of n_embd, with_out set exactly
 * when e_out is predicted: a hypernetwork with separate output embeddings, or FVT with source_out)
 * the call is one batch: rows found by bytes are reused, the others predicted and stored, and every row
 * of the call stays pinned until the cache's next batch. A cache hit gives the same bits as predicting
 * again.
 *
 * Memory. On a CPU context everything is host memory. On a CUDA context (ctx of the merge, and the
 * hypernetwork's context must be a CUDA context of the same device): the merge result is host memory
 * (as lmf_dyntok_merge returns it); source_in / source_out, out_embeds, out_new_out and out_new_bias are
 * device memory of the context's device (or managed memory); out_mask, out_ids, out_span_start and
 * out_span_len may each be host or device memory; out_max_len, and hn_input_cache_valid, are host
 * memory (hn_input_cache device memory, as lmf_hypernet_predict takes them). Where each pointer lives is
 * checked (cudaPointerGetAttributes) with the other arguments: a wrong one is LMF_ERR_INVALID_ARGUMENT
 * naming it. The CUDA call is synchronous, for convenience: it allocates its scratch on the device
 * (cudaMalloc: the new tokens' predictions, the hypernetwork's workspace, one int32 per output cell),
 * builds surface forms or decompositions on the host, predicts on the device (lmf_hypernet_predict /
 * lmf_fvt_predict), writes inputs_embeds with one gather kernel, all on the legacy default stream, then
 * synchronises that stream and frees the scratch before returning. With a cache, predicted rows are
 * copied to the host cache and cached rows up to the device. Outputs are the CPU backend's: bit for bit
 * for base tokens, padding, the int32 outputs and FVT rows; a hypernetwork's rows within its CUDA
 * tolerance (hypernet.h). A CUDA call that fails once the outputs are being written (LMF_ERR_CUDA) may
 * leave them partly written. */

typedef enum lmf_dyntok_embed_method {
  LMF_DYNTOK_EMBED_HYPERNET = 0, /* a ZeTT hypernetwork (hypernet.h) */
  LMF_DYNTOK_EMBED_FVT = 1       /* the mean of the decomposition's source rows */
} lmf_dyntok_embed_method_t;

typedef enum lmf_dyntok_pad_side {
  LMF_DYNTOK_PAD_RIGHT = 0, /* tokens at 0 .. n-1, padding after */
  LMF_DYNTOK_PAD_LEFT = 1   /* padding first, tokens at L-n .. L-1 (decoder batches) */
} lmf_dyntok_pad_side_t;

#define LMF_DYNTOK_EMBED_ARGS_VERSION 1u

typedef struct lmf_dyntok_embed_args {
  size_t struct_size;               /* sizeof(lmf_dyntok_embed_args_t) */
  uint32_t version;                 /* LMF_DYNTOK_EMBED_ARGS_VERSION */
  int32_t method;                   /* lmf_dyntok_embed_method_t; default HYPERNET */
  const lmf_hypernet_t *hypernet;   /* HYPERNET: required (its n_embd must be n_embd); FVT: NULL */
  lmf_embed_cache_t *cache;         /* optional: predicted rows across calls (see above) */
  int32_t lang_index;               /* HYPERNET with a language embedding: the language; default -1 */
  int32_t surface_len;              /* HYPERNET: surface form length; 0 (default): the config's
                                       surface_maxlen */
  float *hn_input_cache;            /* HYPERNET, optional: lmf_hypernet_args_t.input_cache */
  uint8_t *hn_input_cache_valid;    /* with hn_input_cache: its flags */
  int32_t fvt_unk_id;               /* FVT: the row for an empty decomposition; default 0 */
  int32_t n_embd;                   /* the model's embedding width >= 1; no default (0 must be set) */
  const void *source_in;            /* E_in: source_rows rows of n_embd at source_row_stride; required */
  const void *source_out;           /* E_out, same layout: models with separate output embeddings
                                       (required by such a hypernetwork; FVT: optional) */
  int64_t source_rows;              /* rows readable: every id used must be below it */
  int64_t source_row_stride;        /* elements between rows, >= n_embd; 0 (default): n_embd */
  int32_t source_dtype;             /* LMF_DTYPE_F32 (default), F16 or BF16 (both matrices) */
  int32_t out_dtype;                /* dtype of out_embeds and out_new_out: F32 (default), F16, BF16 */
  int32_t pad_side;                 /* lmf_dyntok_pad_side_t; default RIGHT */
  int32_t pad_id;                   /* -1 (default): zero rows and id -1 on padding; else in
                                       [0, source_rows): its E_in row and that id */
  int64_t seq_len;                  /* L of the outputs, >= the longest merged sequence; 0 (default):
                                       lmf_dyntok_embed: that longest one; lmf_dyntok_pipeline: the
                                       longest INPUT sequence (always enough) */
  void *out_embeds;                 /* [B][L][n_embd] out_dtype, required */
  int32_t *out_mask;                /* [B][L], optional */
  int32_t *out_ids;                 /* [B][L], optional */
  int32_t *out_span_start;          /* [B][L], optional */
  int32_t *out_span_len;            /* [B][L], optional */
  void *out_new_out;                /* [num_new][n_embd] out_dtype, optional (needs e_out) */
  float *out_new_bias;              /* [num_new], optional */
  int64_t *out_max_len;             /* optional: the longest merged sequence */
} lmf_dyntok_embed_args_t;

#define LMF_DYNTOK_EMBED_ARGS_INIT                                                                \
  { sizeof(lmf_dyntok_embed_args_t), LMF_DYNTOK_EMBED_ARGS_VERSION, LMF_DYNTOK_EMBED_HYPERNET, NULL, \
    NULL, -1, 0, NULL, NULL, 0, 0, NULL, NULL, 0, 0, LMF_DTYPE_F32, LMF_DTYPE_F32,                 \
    LMF_DYNTOK_PAD_RIGHT, -1, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL }

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_dyntok_embed_args_init(lmf_dyntok_embed_args_t *args, size_t struct_size);

/* The shape to allocate: B, the longest merged sequence (the smallest L), and the new tokens. Any
 * pointer but result may be NULL. */
LMF_API lmf_status_t lmf_dyntok_embed_shape(const lmf_dyntok_result_t *result, int64_t *num_seqs,
                                            int64_t *max_len, int32_t *num_new);

/* Writes the outputs of a merge result (made with this vocabulary). Checks every argument first
 * (against the vocabulary, the result and the hypernetwork: ids below source_rows, sizes, dtypes,
 * strides, overlapping outputs, cache shape), then predicts into private memory, and only then updates
 * the cache and writes the outputs: on failure nothing is written and the cache is unchanged.
 * Statuses: LMF_ERR_NULL_POINTER, LMF_ERR_STRUCT_SIZE, LMF_ERR_INVALID_ARGUMENT, LMF_ERR_INVALID_SIZE
 * (seq_len below the longest sequence, overflowing sizes), LMF_ERR_UNSUPPORTED_DTYPE, LMF_ERR_OVERLAP,
 * LMF_ERR_OUT_OF_MEMORY (host or device), LMF_ERR_CUDA (a CUDA call failed: the message names it), and
 * those of lmf_hypernet_predict / lmf_fvt_predict; the message names the argument. */
LMF_API lmf_status_t lmf_dyntok_embed(lmf_context_t *ctx, const lmf_vocab_t *vocab,
                                      const lmf_dyntok_result_t *result,
                                      const lmf_dyntok_embed_args_t *args);

/* The whole pipeline in one call: lmf_dyntok_merge(ctx, vocab, batch, config) (max_merges and/or
 * target_reduction), then lmf_dyntok_embed with args (seq_len 0: the longest input sequence, so buffers
 * sized from the input always fit; out_max_len tells the L to slice to). *result, if result is not
 * NULL, receives the merge result (destroy it with lmf_dyntok_result_destroy); on failure it is
 * untouched and nothing is written. */
LMF_API lmf_status_t lmf_dyntok_pipeline(lmf_context_t *ctx, const lmf_vocab_t *vocab,
                                         const lmf_dyntok_batch_t *batch,
                                         const lmf_dyntok_config_t *config,
                                         const lmf_dyntok_embed_args_t *args,
                                         lmf_dyntok_result_t **result);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_DYNTOK_H */
