/* Batched Philox4x32-10 with explicit SIMD: the compiler's own vectorisation of the 32x32->64-bit
 * products spends most of its instructions shuffling, so the multiply-high/low is written out. */
#include "philox_cpu.h"

#include "../../kernels/common/philox.h"

static void rows_portable(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *out) {
  for (int k = 0; k < ng; ++k) {
    uint64_t g = g0 + (uint64_t)k;
    lmf_u32x4 c = {(uint32_t)g, (uint32_t)(g >> 32), uid, domain};
    lmf_u32x4 r = lmf_philox4x32_10_impl(c, (uint32_t)seed, (uint32_t)(seed >> 32));
    out[k] = r.x;
    out[LMF_PHILOX_BATCH + k] = r.y;
    out[2 * LMF_PHILOX_BATCH + k] = r.z;
    out[3 * LMF_PHILOX_BATCH + k] = r.w;
  }
}

#if defined(__GNUC__) && defined(__x86_64__)
LMF_AVX2 static void rows_avx2(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *out) {
  const __m256i m0 = _mm256_set1_epi32((int)LMF_PHILOX_M0), m1 = _mm256_set1_epi32((int)LMF_PHILOX_M1);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  int k = 0;
  for (; k + 8 <= ng; k += 8) {
    uint64_t g = g0 + (uint64_t)k;
    /* low words g+lane; the high word carries when the low word wraps */
    __m256i x = _mm256_add_epi32(_mm256_set1_epi32((int)(uint32_t)g), lane);
    __m256i carry = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32((int)(uint32_t)g), _mm256_set1_epi32((int)0x80000000u)),
                                       _mm256_xor_si256(x, _mm256_set1_epi32((int)0x80000000u)));
    __m256i y = _mm256_sub_epi32(_mm256_set1_epi32((int)(uint32_t)(g >> 32)), carry);
    __m256i z = _mm256_set1_epi32((int)uid), w = _mm256_set1_epi32((int)domain);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      __m256i hi0, hi1;
      __m256i lo0 = lmf_mulhilo8(x, m0, &hi0);
      __m256i lo1 = lmf_mulhilo8(z, m1, &hi1);
      x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), _mm256_set1_epi32((int)k0));
      y = lo1;
      z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), _mm256_set1_epi32((int)k1));
      w = lo0;
      k0 += LMF_PHILOX_W0;
      k1 += LMF_PHILOX_W1;
    }
    _mm256_storeu_si256((__m256i *)(out + k), x);
    _mm256_storeu_si256((__m256i *)(out + LMF_PHILOX_BATCH + k), y);
    _mm256_storeu_si256((__m256i *)(out + 2 * LMF_PHILOX_BATCH + k), z);
    _mm256_storeu_si256((__m256i *)(out + 3 * LMF_PHILOX_BATCH + k), w);
  }
  if (k < ng) {
    uint32_t tmp[4 * LMF_PHILOX_BATCH];
    rows_portable(seed, uid, domain, g0 + (uint64_t)k, ng - k, tmp);
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < ng - k; ++i) out[j * LMF_PHILOX_BATCH + k + i] = tmp[j * LMF_PHILOX_BATCH + i];
  }
}

LMF_AVX512 static void rows_avx512(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *out) {
  const __m512i m0 = _mm512_set1_epi32((int)LMF_PHILOX_M0), m1 = _mm512_set1_epi32((int)LMF_PHILOX_M1);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int k = 0;
  for (; k + 16 <= ng; k += 16) {
    uint64_t g = g0 + (uint64_t)k;
    __m512i base = _mm512_set1_epi32((int)(uint32_t)g);
    __m512i x = _mm512_add_epi32(base, lane);
    __mmask16 carry = _mm512_cmplt_epu32_mask(x, base);
    __m512i y = _mm512_mask_add_epi32(_mm512_set1_epi32((int)(uint32_t)(g >> 32)), carry,
                                      _mm512_set1_epi32((int)(uint32_t)(g >> 32)), _mm512_set1_epi32(1));
    __m512i z = _mm512_set1_epi32((int)uid), w = _mm512_set1_epi32((int)domain);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 10; ++r) {
      __m512i hi0, hi1;
      __m512i lo0 = lmf_mulhilo16(x, m0, &hi0);
      __m512i lo1 = lmf_mulhilo16(z, m1, &hi1);
      x = _mm512_ternarylogic_epi32(hi1, y, _mm512_set1_epi32((int)k0), 0x96); /* a ^ b ^ c */
      y = lo1;
      z = _mm512_ternarylogic_epi32(hi0, w, _mm512_set1_epi32((int)k1), 0x96);
      w = lo0;
      k0 += LMF_PHILOX_W0;
      k1 += LMF_PHILOX_W1;
    }
    _mm512_storeu_si512((void *)(out + k), x);
    _mm512_storeu_si512((void *)(out + LMF_PHILOX_BATCH + k), y);
    _mm512_storeu_si512((void *)(out + 2 * LMF_PHILOX_BATCH + k), z);
    _mm512_storeu_si512((void *)(out + 3 * LMF_PHILOX_BATCH + k), w);
  }
  if (k < ng) rows_avx2(seed, uid, domain, g0 + (uint64_t)k, ng - k, out + k);
}

/* Rounds ng up to whole vectors: the extra lanes cost nothing and the rows have room (see the header). */
static int round_up(int ng, int lanes) {
  int r = (ng + lanes - 1) / lanes * lanes;
  return r <= LMF_PHILOX_BATCH ? r : ng;
}

void lmf_cpu_philox_rows(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *out) {
  if (__builtin_cpu_supports("avx512f") && ng > 8)
    rows_avx512(seed, uid, domain, g0, round_up(ng, 16), out);
  else if (__builtin_cpu_supports("avx2"))
    rows_avx2(seed, uid, domain, g0, round_up(ng, 8), out);
  else
    rows_portable(seed, uid, domain, g0, ng, out);
}
#else
void lmf_cpu_philox_rows(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng, uint32_t *out) {
  rows_portable(seed, uid, domain, g0, ng, out);
}
#endif
