/* Dtype facts and host-side float conversions. */
#include "internal.h"
#include "../kernels/common/half_convert.h"

size_t lmf_dtype_size(int32_t dtype) {
  switch (dtype) {
    case LMF_DTYPE_F32: return 4;
    case LMF_DTYPE_F16: return 2;
    case LMF_DTYPE_BF16: return 2;
    case LMF_DTYPE_I32: return 4;
    case LMF_DTYPE_I64: return 8;
    case LMF_DTYPE_U8: return 1;
    default: return 0;
  }
}

const char *lmf_dtype_name(int32_t dtype) {
  switch (dtype) {
    case LMF_DTYPE_F32: return "f32";
    case LMF_DTYPE_F16: return "f16";
    case LMF_DTYPE_BF16: return "bf16";
    case LMF_DTYPE_I32: return "i32";
    case LMF_DTYPE_I64: return "i64";
    case LMF_DTYPE_U8: return "u8";
    default: return "unknown";
  }
}

int lmf_is_float_dtype(int32_t dtype) {
  return dtype == LMF_DTYPE_F32 || dtype == LMF_DTYPE_F16 || dtype == LMF_DTYPE_BF16;
}

static float load_f(const void *p, int32_t dtype, int64_t i) {
  switch (dtype) {
    case LMF_DTYPE_F16: return lmf_f16_to_f32(((const uint16_t *)p)[i]);
    case LMF_DTYPE_BF16: return lmf_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

lmf_status_t lmf_convert_host(void *dst, int32_t dst_dtype, const void *src, int32_t src_dtype,
                              int64_t n) {
  if (!dst || !src)
    return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_convert_host: %s is NULL", dst ? "src" : "dst");
  if (!lmf_is_float_dtype(dst_dtype) || !lmf_is_float_dtype(src_dtype))
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE,
                    "lmf_convert_host: dtypes %d -> %d; only f32, f16 and bf16 convert", src_dtype,
                    dst_dtype);
  if (n < 0) return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_convert_host: n is %lld", (long long)n);
  size_t ds = lmf_dtype_size(dst_dtype), ss = lmf_dtype_size(src_dtype);
  if ((uint64_t)n > (uint64_t)INT64_MAX / 8)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "lmf_convert_host: n = %lld overflows", (long long)n);
  const char *s0 = (const char *)src, *d0 = (const char *)dst;
  if (n > 0 && s0 < d0 + (size_t)n * ds && d0 < s0 + (size_t)n * ss)
    return lmf_fail(LMF_ERR_OVERLAP, "lmf_convert_host: src and dst overlap");
  for (int64_t i = 0; i < n; ++i) {
    float v = load_f(src, src_dtype, i);
    switch (dst_dtype) {
      case LMF_DTYPE_F16: ((uint16_t *)dst)[i] = lmf_f32_to_f16(v); break;
      case LMF_DTYPE_BF16: ((uint16_t *)dst)[i] = lmf_f32_to_bf16(v); break;
      default: ((float *)dst)[i] = v; break;
    }
  }
  return LMF_OK;
}
