/* fp16 / bf16 <-> fp32, round to nearest even or stochastic, shared by both backends. Written with
 * integer operations only, so every backend gives the same bits. */
#ifndef LMF_COMMON_HALF_CONVERT_H
#define LMF_COMMON_HALF_CONVERT_H

#include "lmf_hd.h"

LMF_HD float lmf_bf16_to_f32(uint16_t h) { return lmf_bits_f32((uint32_t)h << 16); }

/* Rounds away the low 16 bits. rnd: 0 for round to nearest even; otherwise stochastic rounding with
 * the 16 random bits in rnd's low half (round up with probability dropped / 2^16). */
LMF_HD uint16_t lmf_f32_to_bf16_impl(float f, int stochastic, uint32_t rnd) {
  uint32_t b = lmf_f32_bits(f);
  if ((b & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((b >> 16) | 0x0040u); /* NaN stays NaN */
  uint32_t add = stochastic ? (rnd & 0xffffu) : (0x7fffu + ((b >> 16) & 1u));
  if ((b & 0x7f800000u) == 0x7f800000u) add = 0; /* infinity */
  return (uint16_t)((b + add) >> 16);
}

LMF_HD uint16_t lmf_f32_to_bf16(float f) { return lmf_f32_to_bf16_impl(f, 0, 0); }

LMF_HD float lmf_f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  if (exp == 0x1fu) return lmf_bits_f32(sign | 0x7f800000u | (man << 13)); /* inf / NaN */
  if (exp == 0) {
    if (man == 0) return lmf_bits_f32(sign);
    /* subnormal: man * 2^-24, exact in fp32 */
    float v = LMF_FMUL((float)man, 5.9604644775390625e-08f);
    return sign ? -v : v;
  }
  return lmf_bits_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

/* fp32 -> fp16. The kept significand is the top bits of the 24-bit significand; `shift` bits are
 * dropped (13 for normal results, more for subnormal ones). Nearest-even rounds up past the half way
 * point; stochastic rounds up when a uniform number below 2^shift is under the dropped bits. */
LMF_HD uint16_t lmf_f32_to_f16_impl(float f, int stochastic, uint32_t rnd) {
  uint32_t b = lmf_f32_bits(f);
  uint16_t sign = (uint16_t)((b >> 16) & 0x8000u);
  uint32_t absb = b & 0x7fffffffu;
  if (absb > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((absb >> 13) & 0x3ffu)); /* NaN */
  if (absb >= 0x47800000u) { /* >= 65536: beyond rounding range -> inf (or NaN handled above) */
    if (!stochastic || absb == 0x7f800000u) return (uint16_t)(sign | 0x7c00u);
  }
  int e = (int)(absb >> 23) - 127;
  if (e < -25) { /* below half the smallest subnormal: rounds to 0 under RNE */
    if (!stochastic || absb == 0) return sign;
  }
  uint32_t sig = (absb & 0x7fffffu) | (absb >= 0x00800000u ? 0x800000u : 0u); /* 24-bit */
  int shift = (e >= -14) ? 13 : (13 + (-14 - e)); /* fp16 subnormals drop more */
  if (shift >= 32) return sign; /* below 2^-32: rounds to 0 (stochastic: probability < 2^-8) */
  uint32_t kept = sig >> shift;
  uint32_t mask = (1u << shift) - 1u;
  uint32_t dropped = sig & mask;
  uint32_t half = 1u << (shift - 1);
  uint32_t up = stochastic ? (uint32_t)((rnd & mask) < dropped)
                           : (uint32_t)(dropped > half || (dropped == half && (kept & 1u)));
  kept += up;
  /* Compose: for normals, exponent field is e + 15 and kept carries the implicit bit at 1<<10;
   * adding the carry into the exponent field handles rounding up to the next binade or to inf. */
  uint32_t h;
  if (e >= -14)
    h = ((uint32_t)(e + 14) << 10) + kept; /* kept includes 1<<10: (e+15-1)<<10 + kept */
  else
    h = kept; /* subnormal; a carry into 1<<10 becomes the smallest normal, correctly */
  if (h >= 0x7c00u) h = 0x7c00u;
  return (uint16_t)(sign | h);
}

LMF_HD uint16_t lmf_f32_to_f16(float f) { return lmf_f32_to_f16_impl(f, 0, 0); }

#endif
