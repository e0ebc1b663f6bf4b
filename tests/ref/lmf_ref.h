/*
 * Plain C double-precision references for the tests: an independent Philox4x32-10, z in double from the
 * exported Philox words, rounding to fp16/bf16, ulps, and the MeZO element update in double.
 */
#ifndef LMF_TESTS_REF_H
#define LMF_TESTS_REF_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Philox4x32-10 written from Salmon et al. (SC 2011), independent of lmfuse's implementation. */
void ref_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/* z's definition, as docs/mezo.md ("z: a pure function of ...") states it: the fourth counter word of z's
 * Philox stream is the domain 0x5a000000; a Rademacher element i is -1 if bit i % 32 of word
 * (i % 128) / 32 of the output for counter group i / 128 is set. (include/lmfuse/mezo.h does not give the
 * domain and still describes Rademacher as "the sign of word i%4".) */
#define REF_DOMAIN_Z 0x5a000000u
#define REF_RADEMACHER_GROUP 128

/* The four Philox words of group `group` of z's stream, from the exported lmf_philox4x32_10. */
void ref_z_words(uint64_t seed, uint32_t uid, uint64_t group, uint32_t w[4]);
/* z(seed, uid, i) in double: Gaussian by Box-Muller in double from the exported Philox words
 * (u1 = ((w0 >> 8) + 1) 2^-24, u2 = (w1 >> 8) 2^-24, r = sqrt(-2 ln u1); cos for the even element, sin
 * for the odd one); Rademacher exactly +-1. Also returns r (radius) if r_out is not NULL. */
double ref_z(int dist, uint64_t seed, uint32_t uid, uint64_t i, double *r_out);

/* Rounds x to nearest even in dtype (LMF_DTYPE_F32 / F16 / BF16) with that format's range and
 * subnormals; overflow gives infinity. NaN stays NaN. */
double ref_round(double x, int32_t dtype);
/* The value of 16-bit bits of an f16 / bf16. */
double ref_decode16(uint16_t bits, int32_t dtype);
/* The spacing of dtype's values at |x| (the ulp of the binade holding x; the subnormal spacing below). */
double ref_ulp(double x, int32_t dtype);

/* One non-master MeZO element pass in double (mezo.h, lmf_mezo_step):
 *   x = x - offset za; x = x (1 - lr wd) if decay; x = x - lr g za; x = x + next zb. */
double ref_mezo_elem(double x, double za, double offset, int update, double lr, double g, double wd,
                     int decay, double zb, double next);

#ifdef __cplusplus
}
#endif

#endif
