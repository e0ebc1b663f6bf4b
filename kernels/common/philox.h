/* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011). */
#ifndef LMF_COMMON_PHILOX_H
#define LMF_COMMON_PHILOX_H

#include "lmf_hd.h"

#define LMF_PHILOX_M0 0xD2511F53u
#define LMF_PHILOX_M1 0xCD9E8D57u
#define LMF_PHILOX_W0 0x9E3779B9u
#define LMF_PHILOX_W1 0xBB67AE85u

typedef struct lmf_u32x4 {
  uint32_t x, y, z, w;
} lmf_u32x4;

LMF_HD uint32_t lmf_mulhilo32(uint32_t a, uint32_t b, uint32_t *hi) {
#if defined(__CUDA_ARCH__)
  *hi = __umulhi(a, b);
  return a * b;
#else
  uint64_t p = (uint64_t)a * (uint64_t)b;
  *hi = (uint32_t)(p >> 32);
  return (uint32_t)p;
#endif
}

LMF_HD lmf_u32x4 lmf_philox_round(lmf_u32x4 c, uint32_t k0, uint32_t k1) {
  uint32_t hi0, hi1;
  uint32_t lo0 = lmf_mulhilo32(LMF_PHILOX_M0, c.x, &hi0);
  uint32_t lo1 = lmf_mulhilo32(LMF_PHILOX_M1, c.z, &hi1);
  lmf_u32x4 r;
  r.x = hi1 ^ c.y ^ k0;
  r.y = lo1;
  r.z = hi0 ^ c.w ^ k1;
  r.w = lo0;
  return r;
}

LMF_HD lmf_u32x4 lmf_philox4x32_10_impl(lmf_u32x4 c, uint32_t k0, uint32_t k1) {
  c = lmf_philox_round(c, k0, k1);
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 1; i < 10; ++i) {
    k0 += LMF_PHILOX_W0;
    k1 += LMF_PHILOX_W1;
    c = lmf_philox_round(c, k0, k1);
  }
  return c;
}

#endif
