/* Batched Philox4x32-10 for the CPU backend: SIMD versions (AVX-512, AVX2) chosen at run time, and the
 * portable one. All give exactly lmf_philox4x32_10_impl's words. */
#ifndef LMF_CPU_PHILOX_CPU_H
#define LMF_CPU_PHILOX_CPU_H

#include <stdint.h>

/* Groups one call produces at most, and the stride between its four output rows. */
#define LMF_PHILOX_BATCH 80

/* out[j * LMF_PHILOX_BATCH + k] = word j of Philox(counter = (g0 + k (64-bit), uid, domain),
 * key = seed) for k in [0, ng), ng <= LMF_PHILOX_BATCH. The SIMD paths may also fill the rows past ng,
 * up to a whole vector (never past LMF_PHILOX_BATCH): rows must have LMF_PHILOX_BATCH entries. */
void lmf_cpu_philox_rows(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng,
                         uint32_t *out);

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define LMF_AVX2 __attribute__((target("avx2")))
#define LMF_AVX512 __attribute__((target("avx512f")))

/* lo and hi 32 bits of a * m for 8 lanes (the Philox round's multiply, written out: the compiler's own
 * vectorisation of 32x32->64-bit products is mostly shuffles). */
LMF_AVX2 static inline __m256i lmf_mulhilo8(__m256i a, __m256i m, __m256i *hi) {
  __m256i even = _mm256_mul_epu32(a, m);
  __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

/* The same for 16 lanes. */
LMF_AVX512 static inline __m512i lmf_mulhilo16(__m512i a, __m512i m, __m512i *hi) {
  __m512i even = _mm512_mul_epu32(a, m);
  __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);
  *hi = _mm512_mask_blend_epi32((__mmask16)0xAAAA, _mm512_srli_epi64(even, 32), odd);
  return _mm512_mask_blend_epi32((__mmask16)0xAAAA, even, _mm512_slli_epi64(odd, 32));
}
#endif

#endif
