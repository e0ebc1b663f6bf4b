/*
 * Shared helpers of the hypernet cases (tests/hypernet/): the test's OWN ZeTT name table (written from
 * the released module, independent of the library's), random weights scaled like a trained network,
 * a small safetensors writer (so bad files can be crafted), config.json text, temporary directories,
 * and comparison against the double reference.
 */
#ifndef LMF_TESTS_HYPERNET_COMMON_H
#define LMF_TESTS_HYPERNET_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "lmf_ref_hypernet.h"
#include "lmfuse/hypernet.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hn_tensor {
  char name[128];
  int32_t ndim;
  int64_t shape[2];
  int64_t numel;
  float *data;
  int32_t dtype; /* the dtype it is saved / passed as (values already rounded to it) */
} hn_tensor;

typedef struct hn_weights {
  lmf_hypernet_config_t cfg;
  hn_tensor *t;
  size_t n;
} hn_weights;

/* Test configurations: the XLM-R hypernet's shape in full (the vocabulary, which is not a parameter,
 * reduced to `vocab0`), and a reduced-width Mistral-like one (separate output embeddings, 522 extra
 * rows, no language embedding). */
lmf_hypernet_config_t hn_config_xlmr(int32_t vocab0);
lmf_hypernet_config_t hn_config_mistral_small(void);
/* 1 if every field is equal (reports the first difference). */
int hn_config_eq(const lmf_hypernet_config_t *a, const lmf_hypernet_config_t *b);

/* The names and shapes of cfg (the test's own table) with random weights; 0 after reporting on
 * failure. dtype: LMF_DTYPE_F32/F16/BF16 for every tensor, or -1 to cycle through the three. */
int hn_weights_make(hn_weights *w, const lmf_hypernet_config_t *cfg, uint64_t seed, int32_t dtype);
/* The same names and shapes without data (data NULL). */
int hn_weights_table(hn_weights *w, const lmf_hypernet_config_t *cfg);
void hn_weights_free(hn_weights *w);
hn_tensor *hn_weights_find(const hn_weights *w, const char *name);
int64_t hn_weights_numel(const hn_weights *w);
/* For lmf_ref_hypernet. */
const float *hn_lookup(void *weights, const char *name);
lmf_ref_hn_config hn_ref_config(const lmf_hypernet_config_t *cfg);

/* lmf_hypernet_tensor_t records of the weights (data converted to each tensor's dtype); the buffers
 * stay owned by *bufs (hn_tensors_free). */
lmf_hypernet_tensor_t *hn_tensors(const hn_weights *w, void ***bufs);
void hn_tensors_free(lmf_hypernet_tensor_t *t, void **bufs, size_t n);

/* ---- Files ---------------------------------------------------------------------------------------- */

/* A fresh temporary directory (under $TMPDIR or /tmp); 0 after reporting on failure. */
int hn_tmpdir(char *dir, size_t cap);
/* Removes every file in dir, then dir. */
void hn_rmdir(const char *dir);
/* dir + "/" + name into buf. */
const char *hn_path(char *buf, size_t cap, const char *dir, const char *name);

/* config.json of cfg, with ZeTT's field names, plus `extra` (",\"k\": v" pairs, or NULL) before the
 * closing brace. */
int hn_write_config(const char *path, const lmf_hypernet_config_t *cfg, const char *extra);

/* One safetensors entry: data is written as is (nbytes), the header says dtype/shape/offsets. */
typedef struct hn_st_entry {
  const char *name;
  const char *dtype; /* "F32", "F16", "BF16", "I64", ... */
  int32_t ndim;
  int64_t shape[4];
  const void *data;
  size_t nbytes;
} hn_st_entry;

/* Writes a safetensors file. truncate: bytes cut from the end (0: none); header_len: the 8-byte header
 * length to write instead of the real one (-1: the real one). */
int hn_st_write(const char *path, const hn_st_entry *e, size_t n, int64_t truncate, int64_t header_len);
/* A file of raw bytes: an 8-byte length (len(header)), the header text, then `data_bytes` zero bytes. */
int hn_st_write_raw(const char *path, const char *header, size_t data_bytes);

/* Entries for the weights in their dtypes (buffers owned by *bufs; free with hn_tensors_free-like
 * hn_entries_free). */
hn_st_entry *hn_entries(const hn_weights *w, void ***bufs);
void hn_entries_free(hn_st_entry *e, void **bufs, size_t n);

/* Saves w as dir/config.json + dir/model.safetensors. */
int hn_save(const char *dir, const hn_weights *w);

/* ---- Inputs and comparison ---------------------------------------------------------------------- */

/* Source embeddings [rows][n_embd] (std 0.02), one matrix per side. */
float *hn_source(int64_t rows, int64_t n_embd, uint64_t seed);

/* max |got - want| / rms(want) over n values (rms over all of want); reports the worst element when it
 * exceeds tol. Returns 1 if within tol. */
int hn_check_close(const float *got, const double *want, int64_t n, double tol, const char *what, double *err_out);

/* Every element is finite and differs from the poison pattern. */
int hn_all_written(const float *x, int64_t n, const char *what);

#ifdef __cplusplus
}
#endif

#endif
