/* FVT: the mean of the decomposition's source embeddings, against the double reference; copies, the
 * UNK fallbacks, 16-bit sources, strided rows, input and output sides; bad inputs. */
#include <stdlib.h>
#include <string.h>

#include "hn_common.h"
#include "lmf_check.h"
#include "lmf_ref_hypernet.h"
#include "lmf_test_util.h"
#include "lmfuse/hypernet.h"

enum { ROWS = 50, N = 16, STRIDE = 20, U = 7 };

/* Tolerance: a mean of <= 4 fp32 rows summed in fp32: a few ulp (1e-6 relative to the rms). */
#define FVT_TOL 1e-6

void test_hn_fvt(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  float *ein = hn_source(ROWS, STRIDE, 31), *eout = hn_source(ROWS, STRIDE, 32);
  void *h_in = lt_malloc(ROWS * STRIDE * 2), *h_out = lt_malloc(ROWS * STRIDE * 2);
  static const int64_t offsets[U + 1] = {0, 3, 4, 4, 7, 8, 12, 13};
  static const int32_t ids[13] = {3, 7, 9, /**/ 5, /* empty */ 2, 999, -4, /* copied */ 40, 1, 1, 1, 1, 6};
  static const int32_t copy_ids[U] = {-1, -1, -1, -1, 11, -1, -1};
  const int32_t unk = 17;
  float oi[U * N], oo[U * N];
  double ri[U * N], ro[U * N];
  if (!ctx || !ein || !eout || !h_in || !h_out) goto done;
  for (int d = 0; d < 3; ++d) {
    const int32_t dt = d == 0 ? LMF_DTYPE_F32 : d == 1 ? LMF_DTYPE_F16 : LMF_DTYPE_BF16;
    const void *si = ein, *so = eout;
    if (dt != LMF_DTYPE_F32) { /* round the f32 copy to what the 16-bit source holds, for the reference */
      if (!lt_convert(h_in, dt, ein, LMF_DTYPE_F32, ROWS * STRIDE) || !lt_convert(h_out, dt, eout, LMF_DTYPE_F32, ROWS * STRIDE) ||
          !lt_convert(ein, LMF_DTYPE_F32, h_in, dt, ROWS * STRIDE) || !lt_convert(eout, LMF_DTYPE_F32, h_out, dt, ROWS * STRIDE))
        goto done;
      si = h_in;
      so = h_out;
    }
    lmf_fvt_args_t a = LMF_FVT_ARGS_INIT;
    a.num_tokens = U;
    a.offsets = offsets;
    a.ids = ids;
    a.copy_ids = copy_ids;
    a.source_in = si;
    a.source_out = so;
    a.source_dtype = dt;
    a.n_embd = N;
    a.source_rows = ROWS;
    a.source_row_stride = STRIDE;
    a.unk_id = unk;
    a.out_in = oi;
    a.out_out = oo;
    lt_poison_f32(oi, U * N);
    lt_poison_f32(oo, U * N);
    if (!LMF_CHECK_OK(lmf_fvt_predict(ctx, &a, NULL))) continue;
    hn_all_written(oi, U * N, "fvt e_in");
    hn_all_written(oo, U * N, "fvt e_out");
    lmf_ref_fvt(offsets, ids, copy_ids, U, ein, ROWS, N, STRIDE, unk, ri);
    lmf_ref_fvt(offsets, ids, copy_ids, U, eout, ROWS, N, STRIDE, unk, ro);
    hn_check_close(oi, ri, U * N, FVT_TOL, "fvt e_in", NULL);
    hn_check_close(oo, ro, U * N, FVT_TOL, "fvt e_out", NULL);
    /* exact rows: one id, the empty decomposition (unk), the copy */
    LMF_CHECK_BYTES_EQ(oi + 1 * N, ein + 5 * STRIDE, N * sizeof(float), "single id");
    LMF_CHECK_BYTES_EQ(oi + 2 * N, ein + unk * STRIDE, N * sizeof(float), "empty -> unk");
    LMF_CHECK_BYTES_EQ(oo + 4 * N, eout + 11 * STRIDE, N * sizeof(float), "copy (e_out)");
    /* the mean of four equal rows is that row */
    LMF_CHECK_BYTES_EQ(oi + 5 * N, ein + 1 * STRIDE, N * sizeof(float), "mean of equal rows");
    /* input side only */
    a.source_out = NULL;
    a.out_out = NULL;
    lt_poison_f32(oo, U * N);
    if (LMF_CHECK_OK(lmf_fvt_predict(ctx, &a, NULL))) LMF_CHECK_EQ_INT(lt_count_nonfinite(oo, U * N), U * N);
  }
  /* Bad inputs: a status, a message naming the argument, nothing written. */
  {
    lmf_fvt_args_t a = LMF_FVT_ARGS_INIT;
    a.num_tokens = U;
    a.offsets = offsets;
    a.ids = ids;
    a.source_in = ein;
    a.n_embd = N;
    a.source_rows = ROWS;
    a.unk_id = unk;
    a.out_in = oi;
    lt_poison_f32(oi, U * N);
    lmf_fvt_args_t b;
    int64_t bad_off[U + 1];
    memcpy(bad_off, offsets, sizeof bad_off);
    bad_off[3] = 1;
    int64_t bad_off0[U + 1];
    memcpy(bad_off0, offsets, sizeof bad_off0);
    bad_off0[0] = 1;
    int32_t bad_copy[U] = {-1, -1, -1, ROWS, -1, -1, -1};
#define FVT_BAD(field, value, status, needle) \
  b = a;                                      \
  b.field = value;                            \
  LMF_CHECK_FAIL(lmf_fvt_predict(ctx, &b, NULL), status, needle)
    FVT_BAD(num_tokens, -1, LMF_ERR_INVALID_SIZE, "num_tokens");
    FVT_BAD(offsets, NULL, LMF_ERR_NULL_POINTER, "offsets");
    FVT_BAD(offsets, bad_off, LMF_ERR_INVALID_ARGUMENT, "offsets");
    FVT_BAD(offsets, bad_off0, LMF_ERR_INVALID_ARGUMENT, "offsets[0]");
    FVT_BAD(ids, NULL, LMF_ERR_NULL_POINTER, "ids");
    FVT_BAD(copy_ids, bad_copy, LMF_ERR_INVALID_ARGUMENT, "copy_ids[3]");
    FVT_BAD(source_in, NULL, LMF_ERR_NULL_POINTER, "source_in");
    FVT_BAD(source_out, eout, LMF_ERR_NULL_POINTER, "out_out");
    FVT_BAD(out_out, oo, LMF_ERR_INVALID_ARGUMENT, "out_out");
    FVT_BAD(source_dtype, LMF_DTYPE_I32, LMF_ERR_UNSUPPORTED_DTYPE, "source_dtype");
    FVT_BAD(n_embd, 0, LMF_ERR_INVALID_SIZE, "n_embd");
    FVT_BAD(source_rows, 0, LMF_ERR_INVALID_SIZE, "source_rows");
    FVT_BAD(source_row_stride, N - 1, LMF_ERR_INVALID_ARGUMENT, "source_row_stride");
    FVT_BAD(unk_id, ROWS, LMF_ERR_INVALID_ARGUMENT, "unk_id");
    FVT_BAD(unk_id, -1, LMF_ERR_INVALID_ARGUMENT, "unk_id");
    FVT_BAD(out_in, NULL, LMF_ERR_NULL_POINTER, "out_in");
    FVT_BAD(out_in, ein, LMF_ERR_OVERLAP, "overlap");
    FVT_BAD(struct_size, 3, LMF_ERR_STRUCT_SIZE, "struct_size");
#undef FVT_BAD
    LMF_CHECK_FAIL(lmf_fvt_predict(ctx, NULL, NULL), LMF_ERR_NULL_POINTER, "args");
    LMF_CHECK_FAIL(lmf_fvt_predict(NULL, &a, NULL), LMF_ERR_NULL_POINTER, "ctx");
    LMF_CHECK_EQ_INT(lt_count_nonfinite(oi, U * N), U * N);
    LMF_CHECK_FAIL(lmf_fvt_args_init(&a, 5), LMF_ERR_STRUCT_SIZE, NULL);
  }
done:
  free(ein);
  free(eout);
  free(h_in);
  free(h_out);
  lmf_context_destroy(ctx);
}
