/* Internal to liblmfuse: a small reader of the safetensors format.
 *
 * A file is: an 8-byte little-endian unsigned header length N, N bytes of JSON (an object mapping each
 * tensor name to {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, plus an optional
 * "__metadata__" object of strings), then the data section; offsets are relative to its start (byte
 * 8 + N). lmf_st_open reads and checks the header only: N within the file, the JSON, every entry's
 * fields and types, end - begin = numel * dtype size, and the range within the file. Tensor data is
 * read on demand, converted to fp32. */
#ifndef LMF_HOST_SAFETENSORS_H
#define LMF_HOST_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LMF_ST_MAX_DIMS 8
/* The format's own limit on the header length (100 MB). */
#define LMF_ST_MAX_HEADER 100000000ull

typedef struct lmf_st_tensor {
  char *name;
  char dtype_name[12];   /* as written: "F32", "BF16", "I64", ... */
  int32_t dtype;         /* LMF_DTYPE_F32/F16/BF16, or -1 for any other (readable only as bytes) */
  int32_t ndim;
  int64_t shape[LMF_ST_MAX_DIMS];
  int64_t numel;
  uint64_t begin, end;   /* byte range within the data section */
} lmf_st_tensor;

typedef struct lmf_st_file {
  FILE *f;
  char *path;
  uint64_t file_size;
  uint64_t data_start;   /* 8 + N */
  size_t count;
  lmf_st_tensor *tensors;
} lmf_st_file;

/* Opens and checks a file; on failure nothing stays open or allocated. fn names the API call. */
lmf_status_t lmf_st_open(lmf_st_file *st, const char *path, const char *fn);
/* Closes and frees; a zeroed or already closed struct is fine. */
void lmf_st_close(lmf_st_file *st);
/* The tensor of that name, or NULL. */
const lmf_st_tensor *lmf_st_find(const lmf_st_file *st, const char *name);
/* Reads tensor t (F32, F16 or BF16) converted to fp32 into dst (t->numel floats). */
lmf_status_t lmf_st_read_f32(lmf_st_file *st, const lmf_st_tensor *t, float *dst, const char *fn);

#ifdef __cplusplus
}
#endif

#endif
