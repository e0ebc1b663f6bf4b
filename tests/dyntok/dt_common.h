/*
 * Shared helpers of the dyntok cases (tests/dyntok/): small vocabularies written in GPT-2 byte-level
 * form, batches written as token strings, a checked view of a result's arrays, rendering back to token
 * strings (to compare against the spec's vectors as written), the comparison with the C reference
 * (tests/ref/lmf_ref_dyntok.h), and the real data (data/tokenizers, data/multilingual).
 */
#ifndef LMF_TESTS_DYNTOK_COMMON_H
#define LMF_TESTS_DYNTOK_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "lmf_check.h"
#include "lmf_ref_dyntok.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/vocab.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- GPT-2 byte-level strings ------------------------------------------------------------------ */

/* The raw bytes a GPT-2 byte-level token string stands for ("Ġ" = 0x20, "Ċ" = 0x0A, "Ã" = 0xC3, ...).
 * Returns the length written to out (at most cap), or -1 if a character is not in the map. */
int64_t dt_gpt2_decode(const char *s, uint8_t *out, int64_t cap);
/* Appends the GPT-2 form of bytes to out (NUL-terminated, truncated to cap). */
void dt_gpt2_encode(const uint8_t *b, int64_t n, char *out, size_t cap);

/* ---- Small vocabularies and batches ------------------------------------------------------------- */

/* A vocabulary (lmf_vocab_create, format RAW) whose token i has the bytes of GPT-2 string names[i];
 * names listed in `specials` (NULL-terminated, may be NULL) are special and keep their literal bytes.
 * NULL after reporting on failure. */
lmf_vocab_t *dt_vocab(const char *const *names, int n, const char *const *specials);
/* The id of a token string in names[0 .. n), or -1 after reporting. */
int32_t dt_id(const char *const *names, int n, const char *tok);

typedef struct dt_batch {
  int64_t B;
  int64_t *offsets; /* [B + 1] */
  int32_t *ids;
  int32_t *word_ids; /* NULL unless set */
} dt_batch;

/* Sequences written as space-separated token strings of names[]. 0 after reporting on failure. */
int dt_batch_parse(dt_batch *b, const char *const *names, int n, const char *const *seqs, int64_t B);
void dt_batch_free(dt_batch *b);

/* lmf_dyntok_merge with a batch and the config fields; the config struct is filled by
 * lmf_dyntok_config_init. */
lmf_status_t dt_merge(lmf_context_t *ctx, const lmf_vocab_t *vocab, const dt_batch *b, int32_t m,
                      int32_t boundary, const char *pattern, lmf_dyntok_result_t **out);

/* ---- Results ------------------------------------------------------------------------------------ */

/* A result's arrays, through lmf_dyntok_result_sizes/_field (dtypes and counts checked). */
typedef struct dt_view {
  int64_t B, N;
  int32_t num_merges, num_new;
  const int64_t *offsets;
  const int32_t *ids;
  const int64_t *span_start;
  const int32_t *span_len;
  const int32_t *merge_pairs;
  const int32_t *merge_results;
  const int64_t *merge_counts;
  const int64_t *new_offsets;
  const uint8_t *new_bytes;
  const int64_t *decomp_offsets;
  const int32_t *decomp;
  int32_t V; /* the vocabulary's size */
} dt_view;

/* Fetches every field and checks its dtype and count, and the result's structure: offsets from 0 to
 * N, non-decreasing; spans >= 1 tiling each sequence's input positions in order (given the input
 * offsets); ids in [0, V + num_new). 0 after reporting on failure. */
int dt_view_get(dt_view *w, const lmf_dyntok_result_t *r, const lmf_vocab_t *vocab,
                const int64_t *in_offsets);

/* The bytes of an output id (vocabulary or new token). */
const uint8_t *dt_bytes(const lmf_vocab_t *vocab, const dt_view *w, int32_t id, int64_t *len);
/* Output sequence s as space-separated GPT-2 strings (special tokens literally). malloc'd. */
char *dt_render_seq(const lmf_vocab_t *vocab, const dt_view *w, int64_t s);
/* The merge list as "(a,b,count) (a,b,count) ..." in GPT-2 strings. malloc'd. */
char *dt_render_merges(const lmf_vocab_t *vocab, const dt_view *w);

/* Every field of the result equals the reference's. `what` names the case in messages. */
int dt_check_same_as_ref(const dt_view *w, const lmf_ref_dt_result *ref, const char *what);
/* Every field of two results is equal. */
int dt_check_same(const dt_view *x, const dt_view *y, const char *what);

/* ---- Real data ---------------------------------------------------------------------------------- */

enum { DT_MAX_LANGS = 16 };

/* The first `batch` lines of each language of data/multilingual/<name>.jsonl, in order of first
 * appearance, as one batch per language. */
typedef struct dt_corpus {
  int num_langs;
  char lang[DT_MAX_LANGS][8];
  dt_batch batch[DT_MAX_LANGS];
  char **text[DT_MAX_LANGS]; /* [B] the lines' "text" */
} dt_corpus;

/* 0 after reporting on failure. */
int dt_corpus_load(dt_corpus *c, const char *name, int batch);
void dt_corpus_free(dt_corpus *c);
/* data/tokenizers/<name>/tokenizer.json through lmf_vocab_load_json; NULL after reporting. */
lmf_vocab_t *dt_load_vocab(const char *name);

#ifdef __cplusplus
}
#endif

#endif
