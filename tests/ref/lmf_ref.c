/* Double-precision references (see lmf_ref.h). */
#include "lmf_ref.h"

#include <math.h>

#include "lmfuse/lmfuse.h"
#include "lmfuse/mezo.h"

void ref_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0;
    uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
    uint32_t n1 = (uint32_t)p1;
    uint32_t n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    uint32_t n3 = (uint32_t)p0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += 0x9E3779B9u; /* golden ratio */
    k1 += 0xBB67AE85u; /* sqrt(3) - 1 */
  }
  out[0] = c0;
  out[1] = c1;
  out[2] = c2;
  out[3] = c3;
}

void ref_z_words(uint64_t seed, uint32_t uid, uint64_t group, uint32_t w[4]) {
  uint32_t ctr[4] = {(uint32_t)group, (uint32_t)(group >> 32), uid, REF_DOMAIN_Z};
  uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
  lmf_philox4x32_10(ctr, key, w);
}

double ref_z(int dist, uint64_t seed, uint32_t uid, uint64_t i, double *r_out) {
  uint32_t w[4];
  if (dist == LMF_MEZO_RADEMACHER) {
    ref_z_words(seed, uid, i / REF_RADEMACHER_GROUP, w);
    uint32_t q = (uint32_t)(i % REF_RADEMACHER_GROUP);
    if (r_out) *r_out = 1.0;
    return ((w[q / 32] >> (q % 32)) & 1u) ? -1.0 : 1.0;
  }
  ref_z_words(seed, uid, i / 4, w);
  int pair = (int)((i % 4) / 2);
  uint32_t w0 = w[2 * pair], w1 = w[2 * pair + 1];
  double u1 = (double)((w0 >> 8) + 1u) * 0x1.0p-24;
  double u2 = (double)(w1 >> 8) * 0x1.0p-24;
  double r = sqrt(-2.0 * log(u1));
  double a = 6.283185307179586476925 * u2;
  if (r_out) *r_out = r;
  return (i % 2 == 0) ? r * cos(a) : r * sin(a);
}

/* Format parameters: significand bits (with the implicit one), smallest normal exponent, largest value. */
static void format_of(int32_t dtype, int *p, int *emin, double *maxv) {
  switch (dtype) {
    case LMF_DTYPE_F16: *p = 11; *emin = -14; *maxv = 65504.0; break;
    case LMF_DTYPE_BF16: *p = 8; *emin = -126; *maxv = ldexp(255.0, 120); break; /* 0x7f7f */
    default: *p = 24; *emin = -126; *maxv = ldexp(16777215.0, 104); break;     /* FLT_MAX */
  }
}

double ref_ulp(double x, int32_t dtype) {
  int p, emin;
  double maxv;
  format_of(dtype, &p, &emin, &maxv);
  int e;
  if (x == 0.0 || !isfinite(x)) return ldexp(1.0, emin - (p - 1));
  frexp(x, &e); /* |x| = m 2^e, m in [0.5, 1): leading bit 2^(e-1) */
  int lead = e - 1 < emin ? emin : e - 1;
  return ldexp(1.0, lead - (p - 1));
}

double ref_round(double x, int32_t dtype) {
  if (isnan(x) || isinf(x) || x == 0.0) return x;
  int p, emin;
  double maxv;
  format_of(dtype, &p, &emin, &maxv);
  double q = ref_ulp(x, dtype);
  /* x / q has at most 53 significant bits and is exact; nearbyint rounds half to even. */
  double r = nearbyint(x / q) * q;
  if (fabs(r) > maxv) return x > 0 ? INFINITY : -INFINITY;
  if (r == 0.0) return x < 0 ? -0.0 : 0.0;
  return r;
}

double ref_decode16(uint16_t bits, int32_t dtype) {
  double sign = (bits & 0x8000u) ? -1.0 : 1.0;
  if (dtype == LMF_DTYPE_BF16) {
    int e = (bits >> 7) & 0xff, m = bits & 0x7f;
    if (e == 0xff) return m ? NAN : sign * INFINITY;
    if (e == 0) return sign * ldexp((double)m, -126 - 7);
    return sign * ldexp((double)(m | 0x80), e - 127 - 7);
  }
  int e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  if (e == 0x1f) return m ? NAN : sign * INFINITY;
  if (e == 0) return sign * ldexp((double)m, -14 - 10);
  return sign * ldexp((double)(m | 0x400), e - 15 - 10);
}

double ref_mezo_elem(double x, double za, double offset, int update, double lr, double g, double wd,
                     int decay, double zb, double next) {
  x = x - offset * za;
  if (update) {
    if (decay) x = x * (1.0 - lr * wd);
    x = x - lr * g * za;
  }
  return x + next * zb;
}
