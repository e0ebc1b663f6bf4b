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

static inline const uint8_t *lmf_vocab_tok(const struct lmf_vocab *v, int32_t id, int64_t *len) {
  *len = v->offsets[id + 1] - v->offsets[id];
  return v->bytes + v->offsets[id];
}

#ifdef __cplusplus
}
#endif

#endif
