/* z for MeZO: a pure function of (seed, tensor uid, global element index, distribution).
 *
 * Philox4x32-10, key = (low32(seed), high32(seed)).
 * Gaussian: counter = (low32(i/4), high32(i/4), uid, domain); element i takes word i%4: Box-Muller on
 * (w0,w1) -> elements 4k, 4k+1 and (w2,w3) -> 4k+2, 4k+3 (cos for the even element, sin for the odd).
 * Rademacher needs one bit, not 32, so it takes all 128: element i is -1 when bit i%32 of word
 * (i%128)/32 of the output for counter (low32(i/128), high32(i/128), uid, domain) is set, else +1.
 * log, sin and cos are computed here with +, -, *, / and sqrt only (each correctly rounded on both
 * backends, never contracted), so CPU and GPU give the same bits. */
#ifndef LMF_COMMON_ZGEN_H
#define LMF_COMMON_ZGEN_H

#include "lmf_hd.h"
#include "philox.h"

enum {
  LMF_DOMAIN_Z = 0x5a000000u,      /* perturbation directions */
  LMF_DOMAIN_ROUND = 0x52000000u   /* stochastic-rounding bits; low 24 bits: the pass nonce */
};

/* Natural log of u in (0, 1], about 2 ulp. */
LMF_HD float lmf_log_unit(float u) {
  uint32_t b = lmf_f32_bits(u);
  int e = (int)(b >> 23) - 127;
  float m = lmf_bits_f32((b & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
  int big = m > 1.41421356f;
  m = big ? LMF_FMUL(m, 0.5f) : m; /* [0.707, 1.414] */
  e += big;
  float s = LMF_FDIV(LMF_FSUB(m, 1.0f), LMF_FADD(m, 1.0f)); /* |s| <= 0.1716 */
  float s2 = LMF_FMUL(s, s);
  float p = LMF_FADD(1.0f / 9.0f, LMF_FMUL(s2, 1.0f / 11.0f));
  p = LMF_FADD(1.0f / 7.0f, LMF_FMUL(s2, p));
  p = LMF_FADD(1.0f / 5.0f, LMF_FMUL(s2, p));
  p = LMF_FADD(1.0f / 3.0f, LMF_FMUL(s2, p));
  float s2x = LMF_FADD(s, s);
  float logm = LMF_FADD(s2x, LMF_FMUL(s2x, LMF_FMUL(s2, p)));
  float fe = (float)e;
  /* ln 2 split: hi has 16 significant bits so fe * hi is exact for |e| < 256. */
  return LMF_FADD(LMF_FMUL(fe, 0.693145752f), LMF_FADD(LMF_FMUL(fe, 1.42860677e-06f), logm));
}

/* (cos, sin) of 2 pi u for u in [0, 1). */
LMF_HD void lmf_sincos_2pi_unit(float u, float *c_out, float *s_out) {
  float t = LMF_FMUL(u, 4.0f); /* exact */
  int q = (int)t;
  float f = LMF_FSUB(t, (float)q); /* exact, [0, 1) */
  int up = f > 0.5f;
  f = up ? LMF_FSUB(f, 1.0f) : f; /* exact, [-0.5, 0.5] */
  q = (q + up) & 3;
  float a = LMF_FMUL(f, 1.57079632679f); /* [-pi/4, pi/4] */
  float a2 = LMF_FMUL(a, a);
  float sp = LMF_FADD(-1.0f / 5040.0f, LMF_FMUL(a2, 1.0f / 362880.0f));
  sp = LMF_FADD(1.0f / 120.0f, LMF_FMUL(a2, sp));
  sp = LMF_FADD(-1.0f / 6.0f, LMF_FMUL(a2, sp));
  float sn = LMF_FADD(a, LMF_FMUL(LMF_FMUL(a, a2), sp));
  float cp = LMF_FADD(-1.0f / 720.0f, LMF_FMUL(a2, 1.0f / 40320.0f));
  cp = LMF_FADD(1.0f / 24.0f, LMF_FMUL(a2, cp));
  cp = LMF_FADD(-0.5f, LMF_FMUL(a2, cp));
  float cs = LMF_FADD(1.0f, LMF_FMUL(a2, cp));
  /* Rotate by q quarter turns: swap for odd q, then flip signs by bit (branch-free, vectorisable).
   * q: 0 (cs, sn)  1 (-sn, cs)  2 (-cs, -sn)  3 (sn, -cs) */
  uint32_t odd = (uint32_t)q & 1u;
  float a0 = odd ? sn : cs;
  float b0 = odd ? cs : sn;
  uint32_t cflip = (((uint32_t)q + 1u) & 2u) << 30;
  uint32_t sflip = ((uint32_t)q & 2u) << 30;
  *c_out = lmf_bits_f32(lmf_f32_bits(a0) ^ cflip);
  *s_out = lmf_bits_f32(lmf_f32_bits(b0) ^ sflip);
}

/* Two standard normals from two 32-bit words. */
LMF_HD void lmf_box_muller(uint32_t w0, uint32_t w1, float *z0, float *z1) {
  float u1 = LMF_FMUL((float)(int32_t)((w0 >> 8) + 1u), 5.9604644775390625e-08f); /* (0, 1] */
  float u2 = LMF_FMUL((float)(int32_t)(w1 >> 8), 5.9604644775390625e-08f); /* [0, 1) */
  float r = LMF_FSQRT(LMF_FMUL(-2.0f, lmf_log_unit(u1)));
  float c, s;
  lmf_sincos_2pi_unit(u2, &c, &s);
  *z0 = LMF_FMUL(r, c);
  *z1 = LMF_FMUL(r, s);
}

/* +1 or -1 from bit `b` of a word: 1.0f with that bit as the sign. */
LMF_HD float lmf_rademacher_bit(uint32_t w, uint32_t b) {
  return lmf_bits_f32(0x3f800000u | (((w >> b) & 1u) << 31));
}

/* Rademacher elements per Philox output. */
#define LMF_RADEMACHER_GROUP 128

/* Raw Philox words of group g (= element index / 4). */
LMF_HD lmf_u32x4 lmf_z_words(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t group) {
  lmf_u32x4 c;
  c.x = (uint32_t)group;
  c.y = (uint32_t)(group >> 32);
  c.z = uid;
  c.w = domain;
  return lmf_philox4x32_10_impl(c, (uint32_t)seed, (uint32_t)(seed >> 32));
}

/* The four Gaussian z values of group g, elements 4g .. 4g+3. */
LMF_HD void lmf_gauss_group(uint64_t seed, uint32_t uid, uint64_t group, float z[4]) {
  lmf_u32x4 w = lmf_z_words(seed, uid, LMF_DOMAIN_Z, group);
  lmf_box_muller(w.x, w.y, &z[0], &z[1]);
  lmf_box_muller(w.z, w.w, &z[2], &z[3]);
}

/* z of one element with global index i: the slow path, for odd offsets and tests. dist: 0 Gaussian,
 * 1 Rademacher. */
LMF_HD float lmf_z_at(uint64_t seed, uint32_t uid, uint64_t i, int dist) {
  if (dist == 1) {
    lmf_u32x4 w = lmf_z_words(seed, uid, LMF_DOMAIN_Z, i / LMF_RADEMACHER_GROUP);
    uint32_t q = (uint32_t)(i % LMF_RADEMACHER_GROUP);
    uint32_t word = q < 64 ? (q < 32 ? w.x : w.y) : (q < 96 ? w.z : w.w);
    return lmf_rademacher_bit(word, q & 31u);
  }
  float z[4];
  lmf_gauss_group(seed, uid, i / 4, z);
  return z[i % 4];
}

#endif
