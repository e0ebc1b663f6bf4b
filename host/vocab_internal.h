/* Internal to liblmfuse: the vocabulary object (include/lmfuse/vocab.h), as dyntok and hypernet read it.
 * Built by host/vocab.c (plain arrays) and host/vocab_json.c (tokenizer.json); immutable afterwards. */
#ifndef LMF_HOST_VOCAB_INTERNAL_H
#define LMF_HOST_VOCAB_INTERNAL_H

#include "internal.h"
#include "lmfuse/vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

struct lmf_vocab {
  int32_t size;        /* ids 0 .. size-1 (holes flagged LMF_TOKEN_UNUSED) */
  int32_t format;      /* lmf_vocab_format_t */
  uint8_t *bytes;      /* all tokens' raw bytes */
  int64_t *offsets;    /* [size + 1] */
  uint8_t *flags;      /* [size] lmf_token_flag_t bits */
  int32_t num_merges;
  int32_t *merges;     /* [3 * num_merges]: left, right, result per rank */
  char *pattern;       /* the file's Split regex, or NULL */
  /* Open-addressing table from byte string to canonical id (non-special tokens only). */
  int32_t *table;      /* [table_cap] ids, -1 = empty */
  int64_t table_cap;   /* power of two */
  uint64_t serial;     /* unique per vocabulary made in this process, never 0 (device caches key on it:
                          a new vocabulary at a freed one's address is still a different one) */
  /* BPE encoding tables (host/vocab_bpe.c): built on first use and published atomically, so the
   * vocabulary stays shareable across threads; NULL until then (the constructors calloc the struct).
   * Freed by lmf_vocab_destroy. */
  struct lmf_vocab_bpe *bpe;
};

/* The next vocabulary serial (thread-safe). */
uint64_t lmf_vocab_next_serial(void);

/* 64-bit FNV-1a of a byte string (the key of the tables above and of dyntok's new-token table). */
uint64_t lmf_bytes_hash(const uint8_t *bytes, int64_t len);
/* FNV-1a is a running hash: lmf_bytes_hash(a+b) ==
 * lmf_bytes_hash_continue(lmf_bytes_hash(a), b), and lmf_bytes_hash(x) ==
 * lmf_bytes_hash_continue(LMF_FNV_OFFSET, x). Lets a concatenation be looked up without building it. */
#define LMF_FNV_OFFSET 0xcbf29ce484222325ull
#define LMF_FNV_PRIME 0x100000001b3ull
uint64_t lmf_bytes_hash_continue(uint64_t hash, const uint8_t *bytes, int64_t len);

/* For the constructors (host/vocab.c, host/vocab_json.c): fills v->table/v->table_cap from size, bytes,
 * offsets and flags. LMF_ERR_OUT_OF_MEMORY (message names fn) leaves v->table NULL. */
lmf_status_t lmf_vocab_build_table(struct lmf_vocab *v, const char *fn);

/* The canonical non-special id for bytes[0 .. len), or -1. */
int32_t lmf_vocab_lookup(const struct lmf_vocab *vocab, const uint8_t *bytes, int64_t len);

/* ---- BPE encoding with the vocabulary's merges (host/vocab_bpe.c) ---------------------------------- */

typedef struct lmf_vocab_bpe lmf_vocab_bpe;

/* The vocabulary's BPE tables (pair -> rank, initial symbols), built on first use; thread-safe. NULL on
 * out of memory (lmf_fail is set, the message prefixed with fn). */
const lmf_vocab_bpe *lmf_vocab_bpe_get(const struct lmf_vocab *vocab, const char *fn);
void lmf_vocab_bpe_free(struct lmf_vocab_bpe *tables);

/* Growable scratch of lmf_vocab_bpe_run (zero-initialise; free with lmf_vocab_bpe_scratch_free). */
typedef struct lmf_vocab_bpe_scratch {
  void *buf;
  size_t cap;
} lmf_vocab_bpe_scratch;
void lmf_vocab_bpe_scratch_free(lmf_vocab_bpe_scratch *s);

/* BPE-encodes bytes[0 .. len) (len <= INT32_MAX) into out[0 .. *n), *n <= len (include/lmfuse/vocab.h,
 * lmf_vocab_bpe_encode, has the semantics). LMF_ERR_INVALID_ARGUMENT (a byte with no initial symbol) or
 * LMF_ERR_OUT_OF_MEMORY, the message prefixed with fn; out may then be partly written. */
lmf_status_t lmf_vocab_bpe_run(const struct lmf_vocab *vocab, const lmf_vocab_bpe *tables,
                               const uint8_t *bytes, int64_t len, int32_t *out, int64_t *n,
                               lmf_vocab_bpe_scratch *scratch, const char *fn);

static inline const uint8_t *lmf_vocab_tok(const struct lmf_vocab *v, int32_t id, int64_t *len) {
  *len = v->offsets[id + 1] - v->offsets[id];
  return v->bytes + v->offsets[id];
}

#ifdef __cplusplus
}
#endif

#endif
