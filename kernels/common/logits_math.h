/* The per-element arithmetic of lmf_logits_*, shared by the CPU backend (C99) and the CUDA kernels, so
 * both compute the combined score s(v), the masks' comparisons, the GeDi posterior and the Gumbel keys
 * with the same fp32 operations in the same order (no FMA contraction; the explicit fused multiply-adds,
 * LMF_FFMA, round once on both: fmaf on the CPU). A token sampled on one backend is then the token
 * sampled on the other, whatever the thread or block layout.
 *
 * Conventions:
 *   x_k(v) = z_k(v) / tau_k                                   lmf_lg_scale_x
 *   s(v)   = fold over the row's models k in index order of    lmf_lg_term(acc, c_k / tau_k, z_k(v))
 *            (acc + w z rounded once),
 *            starting from acc = 0; then lmf_lg_term(acc, omega, logP(desired | v)) (GeDi), then
 *            lmf_lg_term(acc, 1, bias(v)). A -inf input gives -inf whatever the sign of its weight.
 *   Gumbel noise of token v in a row with (seed, offset): word 0 of Philox4x32-10 with key
 *   (low32(seed), high32(seed)) and counter (v, low32(offset), high32(offset), LMF_LG_DOMAIN_GUMBEL);
 *   U = ((w >> 8) + 0.5) * 2^-24 in fp32 (clamped below 1); G = -log(-log U) with lmf_log_unit.
 *   The sampled token is the argmax of lmf_lg_gumbel_key(s(v) / T, G(v)) over the survivors, ties to the
 *   lowest token id.
 */
#ifndef LMF_COMMON_LOGITS_MATH_H
#define LMF_COMMON_LOGITS_MATH_H

#include "lmf_hd.h"
#include "philox.h"
#include "zgen.h" /* lmf_log_unit */

enum {
  LMF_LG_DOMAIN_GUMBEL = 0x47000000u, /* counter word 3 of the sampling noise */
  LMF_LG_DOMAIN_ACCEPT = 0x41000000u  /* counter word 3 of speculative acceptance uniforms */
};

/* An upper bound of every Gumbel value lmf_lg_gumbel_from_word can return (the largest is about
 * 16.64): a token with FADD(s/T, LMF_LG_GUMBEL_MAX) below the best key so far cannot win. */
#define LMF_LG_GUMBEL_MAX 17.0f

#define LMF_LG_NINF_BITS 0xff800000u

LMF_HD float lmf_lg_ninf(void) { return lmf_bits_f32(LMF_LG_NINF_BITS); }

/* 1 for -inf. */
LMF_HD int lmf_lg_is_ninf(float x) { return lmf_f32_bits(x) == LMF_LG_NINF_BITS; }

/* 1 for NaN or +inf: the values that make a row LMF_ROW_NONFINITE. */
LMF_HD int lmf_lg_is_bad(float x) {
  uint32_t b = lmf_f32_bits(x);
  return ((b & 0x7fffffffu) > 0x7f800000u) | (b == 0x7f800000u);
}

/* One step of the combination: acc + w * x with one rounding (a fused multiply-add: one instruction a
 * model and token on the device, fmaf on the CPU), except that x = -inf gives -inf whatever the sign
 * of w. */
LMF_HD float lmf_lg_term(float acc, float w, float x) {
  float t = LMF_FFMA(w, x, acc);
  return lmf_lg_is_ninf(x) ? lmf_lg_ninf() : t;
}

/* The weight of model k's raw logits in s: c_k / tau_k, one fp32 rounding. */
LMF_HD float lmf_lg_weight(float coeff, float tau) { return LMF_FDIV(coeff, tau); }

/* Division by a divisor fixed ahead (a row's temperature), with LMF_FDIV's bits: r = RN(1 / b) once,
 * then per dividend one product and two FMAs. q = RN(a r) is within an ulp of a / b, e = a - q b is
 * exact (one FMA), and RN(q + r e) = RN(a / b) (Markstein's correction, the fast path of the device's
 * own division). |b| in [2^-30, 2^30] and |a| in [2^-60, 2^60] keep q, e and the result normal;
 * other dividends (zeros, infinities, NaN, extremes) and divisors take LMF_FDIV. tests/logits checks it
 * against a / b: every dividend of a range for several divisors, random pairs and the edges. */
typedef struct lmf_lg_divisor {
  float b, r;
  int fast; /* b in the range where the fast path holds */
} lmf_lg_divisor;

LMF_HD lmf_lg_divisor lmf_lg_divisor_of(float b) {
  lmf_lg_divisor d;
  const float m = LMF_FABS(b);
  d.b = b;
  d.r = LMF_FDIV(1.0f, b);
  d.fast = m >= 0x1p-30f && m <= 0x1p30f;
  return d;
}

/* Whether a takes the fast path (with a divisor whose fast is set). */
LMF_HD int lmf_lg_div_fast_ok(float a) {
  const float m = LMF_FABS(a);
  return m >= 0x1p-60f && m <= 0x1p60f;
}

/* a / b where d.fast and lmf_lg_div_fast_ok(a) hold. */
LMF_HD float lmf_lg_div_fast(lmf_lg_divisor d, float a) {
  const float q = LMF_FMUL(a, d.r);
  return LMF_FFMA(d.r, LMF_FFMA(-q, d.b, a), q);
}

/* a / b, LMF_FDIV's bits. */
LMF_HD float lmf_lg_div(lmf_lg_divisor d, float a) {
  return d.fast && lmf_lg_div_fast_ok(a) ? lmf_lg_div_fast(d, a) : LMF_FDIV(a, d.b);
}

/* x = z / tau (masks, GeDi, the draft model). */
LMF_HD float lmf_lg_scale_x(float z, float tau) { return LMF_FDIV(z, tau); }

/* e^x for x <= 0 (larger x are treated as 0; x < -87, -inf and NaN give 0): within 0.89 ulp on
 * [-87, 0] (every float there checked), with +, -, *, fused multiply-adds (one rounding on both
 * backends: fmaf) and bit operations only, so both backends give the same bits. The FMAs halve the
 * polynomial's instructions on the device (a combine pass spends an exp per token). */
LMF_HD float lmf_lg_exp_nonpos(float x);
LMF_HD float lmf_lg_exp_neg(float x) { return lmf_lg_exp_nonpos(x > 0.0f ? 0.0f : x); }

/* lmf_lg_exp_neg for x <= 0, -inf or NaN (a chunk's masses: x = y - its max), without the clamp of a
 * positive x: the same bits, one instruction a token fewer. */
LMF_HD float lmf_lg_exp_nonpos(float x) {
  int under = !(x >= -87.0f); /* also NaN */
  x = under ? -87.0f : x;
  /* n = x log2(e) rounded to the nearest integer, in [-126, 0], as t - 1.5 * 2^23 (one FMA: the
   * product is not rounded first). */
  float t = LMF_FFMA(x, 1.44269504088896341f, 12582912.0f);
  float n = LMF_FSUB(t, 12582912.0f);
  /* ln 2 split: hi has 16 significant bits, so n * hi is exact; |r| <= ln 2 / 2. */
  float r = LMF_FFMA(-n, 1.428606765330187e-06f, LMF_FFMA(-n, 0.693145751953125f, x));
  /* e^r by a degree-6 polynomial 1 + r + c2 r^2 + ... + c6 r^6, its coefficients fitted for the least
   * largest relative error on [-ln 2 / 2, ln 2 / 2] (scripts/fit_exp_poly.py; 3.1e-9 before the
   * coefficients' and the evaluation's roundings; a Taylor polynomial needs degree 7 for that). */
  float p = LMF_FFMA(r, 0x1.6a23d0p-10f, 0x1.123a20p-7f);
  p = LMF_FFMA(r, p, 0x1.5558f2p-5f);
  p = LMF_FFMA(r, p, 0x1.555492p-3f);
  p = LMF_FFMA(r, p, 0x1.fffffcp-2f);
  p = LMF_FFMA(r, p, 1.0f);
  p = LMF_FFMA(r, p, 1.0f);
  /* 2^n from t = n + 1.5 * 2^23, whose bits are 0x4b400000 + n: (n + 127) << 23 = (bits(t) + 127) << 23
   * (0x4b400000 << 23 vanishes), with no float-to-integer conversion (a slow pipe on the device). */
  float scale = lmf_bits_f32((lmf_f32_bits(t) + 127u) << 23);
  float e = LMF_FMUL(p, scale);
  return under ? 0.0f : e;
}

/* A group's exp-sum: the LMF_LG_GROUP masses of tokens 8g .. 8g + 7 of a 2048-token block (a CUDA
 * thread's tokens of a chunk; past the vocabulary's end, mass 0), added in fp32 in token order from 0
 * by s = lmf_lg_group_add(s, w). A block's exp-sum adds its groups' sums in double. Both backends form the same groups in the same order, so
 * their block sums differ only in the order of those double adds; one fp32 add a token, where a
 * double per token cost a conversion (4 integer instructions by the bits) and a double add. */
#define LMF_LG_GROUP 8
LMF_HD float lmf_lg_group_add(float s, float w) { return LMF_FADD(s, w); }

/* log(1 + e) for e in [0, 1]. */
LMF_HD float lmf_lg_log1p_unit(float e) {
  float u = LMF_FADD(1.0f, e);
  float d = LMF_FSUB(u, 1.0f);
  float l = LMF_FMUL(lmf_log_unit(u), LMF_FDIV(e, d == 0.0f ? 1.0f : d));
  return d == 0.0f ? e : l;
}

/* softplus(x) = log(1 + e^x), stably: max(x, 0) + log1p(e^-|x|). +inf -> +inf, -inf -> 0. */
LMF_HD float lmf_lg_softplus(float x) {
  float a = lmf_bits_f32(lmf_f32_bits(x) & 0x7fffffffu);
  float m = x > 0.0f ? x : 0.0f;
  return LMF_FADD(m, lmf_lg_log1p_unit(lmf_lg_exp_neg(-a)));
}

/* GeDi's logP(desired | v) for one token (spec "GeDi"): xp, xn are the desired / undesired class
 * model's x(v), lse_p, lse_n their log-sum-exps over the output vocabulary, L_p, L_n the row's
 * prefix log-likelihoods, t = n + 1, bias_p the desired class's bias plus class_bias. Returns
 * -softplus(l_neg - l_pos); -inf when both class logits are -inf. */
LMF_HD float lmf_lg_gedi_logp(float xp, float xn, float lse_p, float lse_n, float L_p, float L_n,
                              float t, float logit_scale, float bias_p, float bias_n) {
  float gp = LMF_FADD(L_p, LMF_FSUB(xp, lse_p));
  float gn = LMF_FADD(L_n, LMF_FSUB(xn, lse_n));
  float lp = LMF_FADD(LMF_FDIV(LMF_FMUL(logit_scale, gp), t), bias_p);
  float ln = LMF_FADD(LMF_FDIV(LMF_FMUL(logit_scale, gn), t), bias_n);
  float d = -lmf_lg_softplus(LMF_FSUB(ln, lp));
  return (lmf_lg_is_ninf(lp) & lmf_lg_is_ninf(ln)) ? lmf_lg_ninf() : d;
}

/* GeDi's state update term for the chosen token y: g_c(y) - L_c = x_c(y) - LSE(x_c). */
LMF_HD float lmf_lg_gedi_update(float L, float x, float lse) { return LMF_FADD(L, LMF_FSUB(x, lse)); }

/* An unsigned key whose order is the order of the floats (-0 and +0 share one key; NaN never occurs). */
LMF_HD uint32_t lmf_lg_fkey(float f) {
  uint32_t u = lmf_f32_bits(LMF_FADD(f, 0.0f));
  return u ^ ((uint32_t)((int32_t)u >> 31) | 0x80000000u);
}

/* The walk orders of the filters as 64-bit integers (key << 32 | token id), ascending:
 * descending value then ascending id (nucleus, top-k, top-p), or ascending value then ascending id
 * (GeDi's class filter). A filter's cut is the ord of one token; it keeps (or removes) a prefix. */
LMF_HD uint64_t lmf_lg_ord_desc(float f, uint32_t id) {
  return ((uint64_t)(~lmf_lg_fkey(f)) << 32) | (uint64_t)id;
}
LMF_HD uint64_t lmf_lg_ord_asc(float f, uint32_t id) {
  return ((uint64_t)lmf_lg_fkey(f) << 32) | (uint64_t)id;
}

/* Word 0 of Philox4x32-10, key (low32(seed), high32(seed)), counter (v, low32(offset),
 * high32(offset), domain). */
LMF_HD uint32_t lmf_lg_word(uint64_t seed, uint64_t offset, uint32_t v, uint32_t domain) {
  lmf_u32x4 c;
  c.x = v;
  c.y = (uint32_t)offset;
  c.z = (uint32_t)(offset >> 32);
  c.w = domain;
  return lmf_philox4x32_10_impl(c, (uint32_t)seed, (uint32_t)(seed >> 32)).x;
}

/* U = ((w >> 8) + 0.5) * 2^-24 in fp32, in (0, 1). The fp32 sum rounds to nearest even once
 * w >> 8 >= 2^23; the top value would round to 1, so U is clamped to 1 - 2^-24. */
LMF_HD float lmf_lg_uniform(uint32_t w) {
  float u = LMF_FMUL(LMF_FADD((float)(w >> 8), 0.5f), 5.9604644775390625e-08f);
  return u < 1.0f ? u : 0.99999994039535522f;
}

/* G = -log(-log U), about -2.85 .. 16.64. */
LMF_HD float lmf_lg_gumbel_from_word(uint32_t w) {
  float l = -lmf_log_unit(lmf_lg_uniform(w)); /* (0, 17.33] */
  return -lmf_log_unit(l);
}

LMF_HD float lmf_lg_gumbel(uint64_t seed, uint64_t offset, uint32_t v) {
  return lmf_lg_gumbel_from_word(lmf_lg_word(seed, offset, v, LMF_LG_DOMAIN_GUMBEL));
}

/* The Gumbel-max key of a token: y = s / T (already divided), g its noise. */
LMF_HD float lmf_lg_gumbel_key(float y, float g) { return LMF_FADD(y, g); }

/* log(p - q) from lp = log p and lq = log q, for lq < lp: lp + log(1 - e^(lq - lp)); -inf when
 * p <= q in fp32 (the speculative residual max(0, p - q)). */
LMF_HD float lmf_lg_log_residual(float lp, float lq) {
  int pos = lq < lp;
  float e = lmf_lg_exp_neg(pos ? LMF_FSUB(lq, lp) : 0.0f);
  float om = LMF_FSUB(1.0f, e);
  float r = LMF_FADD(lp, lmf_log_unit(om > 0.0f ? om : 1.0f));
  return (pos & (om > 0.0f) & !lmf_lg_is_ninf(lp)) ? r : lmf_lg_ninf();
}

/* Online softmax statistics: m = max, s = sum of e^(x - m). Merging two partial results in fp32
 * (the CUDA backend's block and warp merges); m = -inf means "no finite element". */
typedef struct lmf_lg_ms {
  float m;
  float s;
} lmf_lg_ms;

LMF_HD lmf_lg_ms lmf_lg_ms_merge(lmf_lg_ms a, lmf_lg_ms b) {
  lmf_lg_ms r;
  r.m = a.m > b.m ? a.m : b.m;
  if (lmf_lg_is_ninf(r.m)) {
    r.s = 0.0f;
    return r;
  }
  r.s = LMF_FADD(LMF_FMUL(a.s, lmf_lg_exp_neg(LMF_FSUB(a.m, r.m))),
                 LMF_FMUL(b.s, lmf_lg_exp_neg(LMF_FSUB(b.m, r.m))));
  return r;
}

/* Adds one element to online statistics. */
LMF_HD lmf_lg_ms lmf_lg_ms_add(lmf_lg_ms a, float x) {
  lmf_lg_ms b;
  b.m = x;
  b.s = lmf_lg_is_ninf(x) ? 0.0f : 1.0f;
  return lmf_lg_ms_merge(a, b);
}

#endif
