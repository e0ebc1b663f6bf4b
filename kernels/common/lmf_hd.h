/* Shared by the CPU backend (C99) and CUDA kernels: function qualifiers and IEEE single-precision
 * operations that are never contracted into FMAs, so both backends round identically. The CPU build
 * also compiles with -ffp-contract=off. */
#ifndef LMF_COMMON_HD_H
#define LMF_COMMON_HD_H

#include <stdint.h>

#if defined(__CUDACC__)
#define LMF_HD __host__ __device__ __forceinline__
#else
#define LMF_HD static inline
#endif

#if defined(__CUDA_ARCH__)
#define LMF_FMUL(a, b) __fmul_rn((a), (b))
#define LMF_FADD(a, b) __fadd_rn((a), (b))
#define LMF_FSUB(a, b) __fsub_rn((a), (b))
#define LMF_FDIV(a, b) __fdiv_rn((a), (b))
#define LMF_FSQRT(a) __fsqrt_rn(a)
#define LMF_FFMA(a, b, c) __fmaf_rn((a), (b), (c))
#define LMF_FABS(a) fabsf(a)
#else
#include <math.h>
#define LMF_FMUL(a, b) ((float)(a) * (float)(b))
#define LMF_FADD(a, b) ((float)(a) + (float)(b))
#define LMF_FSUB(a, b) ((float)(a) - (float)(b))
#define LMF_FDIV(a, b) ((float)(a) / (float)(b))
#define LMF_FSQRT(a) sqrtf(a)
#define LMF_FFMA(a, b, c) fmaf((a), (b), (c)) /* fused: one rounding, as on the device */
#define LMF_FABS(a) fabsf(a)
#endif

LMF_HD uint32_t lmf_f32_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  union { float f; uint32_t u; } v;
  v.f = f;
  return v.u;
#endif
}

LMF_HD float lmf_bits_f32(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  union { float f; uint32_t u; } v;
  v.u = u;
  return v.f;
#endif
}

/* The double whose high and low 32-bit words are hi and lo. */
LMF_HD double lmf_f64_of_words(uint32_t hi, uint32_t lo) {
#if defined(__CUDA_ARCH__)
  return __hiloint2double((int)hi, (int)lo);
#else
  union { double d; uint64_t u; } v;
  v.u = ((uint64_t)hi << 32) | lo;
  return v.d;
#endif
}

/* Finite test by bits: immune to -ffast-math and identical on both backends. */
LMF_HD int lmf_isfinite_f32(float f) { return (lmf_f32_bits(f) & 0x7f800000u) != 0x7f800000u; }

#endif
