/*
 * lmfuse vocab: a tokenizer's vocabulary as raw byte strings, for batch-level BPE merging (dyntok.h)
 * and embedding prediction (hypernet.h).
 *
 * Every token id maps to the exact bytes it stands for, whatever the file's text convention:
 *   - byte-level (GPT-2's byte-to-unicode map, as in GPT-4o's and Llama-3's files): "Ġ" is the byte
 *     0x20, "Ċ" 0x0A, and so on for all 256 bytes;
 *   - SentencePiece-style metaspace with byte fallback (as in Mistral's and Llama-2's files): "▁" is a
 *     space and the tokens "<0xNN>" are the single byte NN;
 *   - raw: token strings are their own UTF-8 bytes.
 * Added tokens marked special (e.g. "<s>", "<|endoftext|>") keep their literal text and carry
 * LMF_TOKEN_SPECIAL: they never merge. Ids a file leaves unassigned (holes below the largest id) carry
 * LMF_TOKEN_UNUSED, have no bytes, and are rejected as input.
 *
 * Several ids may share one byte string (Mistral's "<0x41>" and "A"). lmf_vocab_find() returns the
 * canonical one: not special and not unused, preferring a token that is not a byte-fallback token, then
 * the smallest id.
 *
 * A vocabulary is immutable once created and may be shared by any number of threads and calls.
 */
#ifndef LMFUSE_VOCAB_H
#define LMFUSE_VOCAB_H

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct lmf_vocab lmf_vocab_t;

/* How the token strings of a file map to bytes. */
typedef enum lmf_vocab_format {
  LMF_VOCAB_FORMAT_RAW = 0,        /* token strings are their own UTF-8 bytes */
  LMF_VOCAB_FORMAT_BYTE_LEVEL = 1, /* GPT-2 byte-to-unicode map */
  LMF_VOCAB_FORMAT_METASPACE = 2   /* "▁" = space, "<0xNN>" = byte NN */
} lmf_vocab_format_t;

/* Per-token flags (bits). */
typedef enum lmf_token_flag {
  LMF_TOKEN_SPECIAL = 1,       /* an added token marked special: never merged */
  LMF_TOKEN_BYTE_FALLBACK = 2, /* a "<0xNN>" token of a byte-fallback vocabulary */
  LMF_TOKEN_UNUSED = 4         /* no token has this id */
} lmf_token_flag_t;

/* Largest tokenizer.json lmf_vocab_load_json() reads (bytes); a larger file is LMF_ERR_INVALID_SIZE. */
#define LMF_VOCAB_MAX_FILE_BYTES ((int64_t)1 << 30)
/* Largest vocabulary (ids) any constructor accepts. */
#define LMF_VOCAB_MAX_TOKENS (1 << 24)

/* Loads a HuggingFace tokenizer.json (model type BPE): model.vocab, model.merges (either "a b" strings
 * or ["a", "b"] pairs), added_tokens, and the pre-tokenizer's Split regex if it has one.
 *
 * Byte convention, detected from the file (Sequences searched recursively): a ByteLevel pre-tokenizer
 * or decoder: byte-level; a Metaspace pre-tokenizer or decoder, a normalizer that replaces " " with R
 * or a decoder that replaces R with " ": metaspace with replacement R (usually "▁"); both: LMF_ERR_PARSE;
 * neither: raw.
 * Byte fallback: on when model.byte_fallback is true or the decoder has a ByteFallback step, unless the
 * file is byte-level. Then (and only then) a model token spelled exactly "<0xNN>" (two hex digits, either
 * case) is the single byte NN and carries LMF_TOKEN_BYTE_FALLBACK; otherwise it is its literal text.
 * Model tokens: byte-level maps each character back through GPT-2's table (a character outside it is
 * LMF_ERR_PARSE naming the token); metaspace turns each R into a space; raw keeps the UTF-8 text.
 * Added tokens: HF matches their content literally against the input, so their bytes are the content's
 * UTF-8 bytes, whatever the convention; "special": true adds LMF_TOKEN_SPECIAL. (One exception: a
 * non-special added token with "normalized": true, in a file whose normalizer writes " " as R, stands
 * for its content with each R read as a space.) An added token whose id model.vocab also has must have
 * the same content. Ids that no entry names are holes (LMF_TOKEN_UNUSED).
 * Merges: a, b and the string a+b must all be in model.vocab, none special, and bytes(a+b) must equal
 * bytes(a) followed by bytes(b); the merge's result is the id of the string a+b.
 * The pre-tokenizer pattern is the first Split pre-tokenizer's {"Regex": ...} pattern; a {"String": ...}
 * pattern, or a ByteLevel pre-tokenizer's built-in regex, is not reported.
 * Refused with LMF_ERR_PARSE: a model.type other than "BPE" (a missing type is read as BPE when "merges"
 * is present), a non-empty continuing_subword_prefix or end_of_word_suffix, ids that are not integers in
 * 0 .. LMF_VOCAB_MAX_TOKENS-1, an id or a token string used twice in model.vocab, an empty token string.
 * A missing, truncated, malformed or oversized file gives LMF_ERR_IO, LMF_ERR_PARSE or
 * LMF_ERR_INVALID_SIZE (the size is checked before reading) with a message naming what is wrong (e.g. the
 * token or merge index); *out is set only on success. */
LMF_API lmf_status_t lmf_vocab_load_json(lmf_vocab_t **out, const char *path);
/* The same from a tokenizer.json already in memory (len bytes; no terminating NUL needed). */
LMF_API lmf_status_t lmf_vocab_parse_json(lmf_vocab_t **out, const char *json, size_t len);

#define LMF_VOCAB_ARRAYS_VERSION 1u

/* A vocabulary from plain arrays, for callers without a tokenizer.json. Ids are 0 .. num_tokens-1. */
typedef struct lmf_vocab_arrays {
  size_t struct_size;            /* sizeof(lmf_vocab_arrays_t) */
  uint32_t version;              /* LMF_VOCAB_ARRAYS_VERSION */
  int32_t num_tokens;            /* 1 .. LMF_VOCAB_MAX_TOKENS */
  const uint8_t *bytes;          /* every token's raw bytes, concatenated (NULL only if all are empty) */
  const int64_t *offsets;        /* [num_tokens + 1]: token i is bytes[offsets[i] .. offsets[i+1]);
                                    offsets[0] = 0, non-decreasing; an empty token must be special or
                                    unused */
  const uint8_t *flags;          /* [num_tokens] lmf_token_flag_t bits, or NULL for none. An
                                    LMF_TOKEN_UNUSED id has no bytes and no other flag; an
                                    LMF_TOKEN_BYTE_FALLBACK token is exactly one byte, not special */
  int32_t num_merges;            /* 0 .. LMF_VOCAB_MAX_TOKENS */
  const int32_t *merges;         /* [2 * num_merges]: (left, right) ids in priority order (rank 0
                                    first), neither special nor unused; each concatenation must itself
                                    be a token, and its canonical id (lmf_vocab_find) is the merge's
                                    result. NULL if 0 */
  const char *pretokenizer_pattern; /* optional NUL-terminated regex (kept, not compiled); NULL: none */
} lmf_vocab_arrays_t;

#define LMF_VOCAB_ARRAYS_INIT \
  { sizeof(lmf_vocab_arrays_t), LMF_VOCAB_ARRAYS_VERSION, 0, NULL, NULL, NULL, 0, NULL, NULL }

LMF_API lmf_status_t lmf_vocab_arrays_init(lmf_vocab_arrays_t *arrays, size_t struct_size);
/* Builds a vocabulary (format RAW) from arrays; the arrays are copied. */
LMF_API lmf_status_t lmf_vocab_create(lmf_vocab_t **out, const lmf_vocab_arrays_t *arrays);
/* NULL is a no-op. */
LMF_API void lmf_vocab_destroy(lmf_vocab_t *vocab);

/* Number of ids (largest id + 1, holes included). */
LMF_API lmf_status_t lmf_vocab_size(const lmf_vocab_t *vocab, int32_t *size);
/* lmf_vocab_format_t of the source. */
LMF_API lmf_status_t lmf_vocab_format(const lmf_vocab_t *vocab, int32_t *format);
/* A token's raw bytes (valid while the vocabulary lives) and its length (0 for an unused id). */
LMF_API lmf_status_t lmf_vocab_token_bytes(const lmf_vocab_t *vocab, int32_t id, const uint8_t **bytes,
                                           int64_t *len);
/* A token's lmf_token_flag_t bits. */
LMF_API lmf_status_t lmf_vocab_token_flags(const lmf_vocab_t *vocab, int32_t id, uint32_t *flags);
/* The canonical non-special id whose bytes are exactly bytes[0 .. len), or -1 (still LMF_OK; always
 * for len 0, where bytes may be NULL). */
LMF_API lmf_status_t lmf_vocab_find(const lmf_vocab_t *vocab, const uint8_t *bytes, int64_t len,
                                    int32_t *id);
/* Number of BPE merges, and merge `rank` as (left, right, result) ids. */
LMF_API lmf_status_t lmf_vocab_num_merges(const lmf_vocab_t *vocab, int32_t *num_merges);
LMF_API lmf_status_t lmf_vocab_merge(const lmf_vocab_t *vocab, int32_t rank, int32_t *left,
                                     int32_t *right, int32_t *result);
/* The pre-tokenizer regex the file declares (a Split pre-tokenizer's pattern), or NULL if none; valid
 * while the vocabulary lives. */
LMF_API lmf_status_t lmf_vocab_pretokenizer_pattern(const lmf_vocab_t *vocab, const char **pattern);

/* BPE-encodes bytes[0 .. len) with the vocabulary's merges, over the whole string: no pre-tokenizer,
 * no normalizer (the caller applies those, e.g. Mistral's "prepend a space"). The result is what
 * HuggingFace tokenizers' BPE model gives for the string as one word (merge_word + merge_all):
 *   - initial symbols: byte-level vocabularies: one per byte (the token of that single byte);
 *     metaspace vocabularies: one per UTF-8 character (RFC 3629) when a token that is not a
 *     byte-fallback token has exactly its bytes, else the character's bytes as byte-fallback tokens
 *     <0xNN> (a byte not part of a valid character likewise); raw vocabularies: one per byte (the token
 *     of that single byte);
 *   - then, repeatedly, the adjacent pair with the lowest merge rank is merged, leftmost first (a pair
 *     the merge list holds twice has its last rank, as in HF). Specials never take part.
 * The ids go to ids[0 .. *num_ids); *num_ids <= len, so capacity >= len always suffices. ids = NULL with
 * capacity 0 only counts. len 0 gives 0 ids (bytes may then be NULL). The first call for a vocabulary
 * builds its merge table (thread-safe; a vocabulary stays shareable). Statuses:
 * LMF_ERR_NULL_POINTER, LMF_ERR_INVALID_SIZE (len < 0 or > INT32_MAX, capacity < 0, or capacity below
 * the ids the encoding has: the message gives the count), LMF_ERR_OVERLAP (ids overlaps bytes),
 * LMF_ERR_INVALID_ARGUMENT (a byte without an initial symbol: no single-byte token, or no byte-fallback
 * token; the message names the byte and its offset), LMF_ERR_OUT_OF_MEMORY. On failure nothing is
 * written. */
LMF_API lmf_status_t lmf_vocab_bpe_encode(const lmf_vocab_t *vocab, const uint8_t *bytes, int64_t len,
                                          int32_t *ids, int64_t capacity, int64_t *num_ids);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_VOCAB_H */
