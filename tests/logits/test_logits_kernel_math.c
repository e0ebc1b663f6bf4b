/* The CUDA kernels' arithmetic shortcuts (kernels/common/logits_math.h) against the plain operations the
 * CPU backend uses: a shortcut that changed one bit would change a token. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernels/common/logits_math.h"
#include "lmf_check.h"

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float float_of(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint64_t next_u64(uint64_t *s) { /* xorshift64 */
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* lmf_lg_div(d, a) has a / b's bits (NaN: a NaN); counts the dividends that took the fast path. */
static int div_matches(float a, float b, long long *fast) {
  const lmf_lg_divisor d = lmf_lg_divisor_of(b);
  const float got = lmf_lg_div(d, a), want = a / b;
  if (d.fast && lmf_lg_div_fast_ok(a)) ++*fast;
  if (isnan(want)) return isnan(got);
  return bits_of(got) == bits_of(want);
}

/* The row temperature's division (lmf_lg_div): every dividend exponent of the fast path's range with
 * 4096 significands each, both signs, for temperatures that are common, that have all-ones
 * significands, and that sit at the range's ends; random pairs; and the values that must take the
 * plain division (zeros, infinities, NaN, subnormals, extremes, divisors out of range). An exhaustive
 * run over every dividend in [2^-60, 2^60] of both signs for b = 0.8, 0.7, 1.3, 1 - 2^-24, 2 - 2^-23,
 * 0x1.555554p-2, 5e-9 and 1e8 (16 billion divisions) found no difference when the shortcut was added. */
void test_logits_div_by_matches_division(void) {
  static const float divisors[] = {0.8f,    0.7f,           1.3f,           0.5f,
                                   1.0f,    0x1.fffffep-1f, 0x1.fffffep+0f, 0x1.555554p-2f,
                                   3.0f,    7.0f,           0x1p-30f,       0x1.000002p-30f,
                                   0x1p30f, 0x1.fffffep29f, 1e-3f,          -0.8f,
                                   -1.7f,   123.456f,       5e-9f,          1e8f};
  long long fast = 0, n = 0;
  int bad = 0;
  for (size_t i = 0; i < sizeof divisors / sizeof divisors[0]; ++i) {
    const float b = divisors[i];
    for (uint32_t e = 67; e <= 187 && bad < 5; ++e) /* |a| in [2^-60, 2^61) */
      for (uint32_t m = 0; m < (1u << 23); m += 2047u)
        for (uint32_t s = 0; s < 2; ++s) {
          const float a = float_of((s << 31) | (e << 23) | m);
          ++n;
          if (!div_matches(a, b, &fast)) {
            LMF_CHECK_MSG(0, "lmf_lg_div(%a / %a) = %a, a / b = %a", (double)a, (double)b,
                          (double)lmf_lg_div(lmf_lg_divisor_of(b), a), (double)(a / b));
            ++bad;
          }
        }
  }
  uint64_t rs = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < 2000000 && bad < 5; ++i) {
    const uint64_t r = next_u64(&rs);
    const float a = float_of((uint32_t)r); /* any float */
    const float mag = ldexpf(1.0f + (float)((r >> 40) & 0xffffffu) * 0x1p-24f, (int)((r >> 33) % 60) - 30);
    const float b = (r >> 32) & 1u ? -mag : mag; /* a divisor in [2^-30, 2^30) */
    ++n;
    if (!div_matches(a, b, &fast)) {
      LMF_CHECK_MSG(0, "random pair: lmf_lg_div(%a / %a) differs from a / b", (double)a, (double)b);
      ++bad;
    }
  }
  static const float edges[] = {0.0f,      -0.0f,          INFINITY,        -INFINITY, NAN,
                                0x1p-149f, -0x1p-126f,     0x1.fffffep127f, 0x1p-60f,  0x1.fffffep-61f,
                                0x1p60f,   0x1.000002p60f, -0x1p60f,        1.0f,      -2.5f};
  static const float edge_divisors[] = {0.8f,   0x1p-30f,  0x1.fffffep-31f, 0x1p30f,  0x1.000002p30f,
                                        1e-38f, 0x1p-149f, 1e38f,           INFINITY, -INFINITY,
                                        NAN,    0.0f,      -0.0f,           -3.0f};
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; ++i)
    for (size_t k = 0; k < sizeof edge_divisors / sizeof edge_divisors[0]; ++k) {
      ++n;
      LMF_CHECK_MSG(div_matches(edges[i], edge_divisors[k], &fast), "lmf_lg_div(%a / %a) differs from a / b",
                    (double)edges[i], (double)edge_divisors[k]);
    }
  /* The shortcut itself was exercised, not only the plain division it falls back to. */
  LMF_CHECK_MSG(fast > n / 2, "only %lld of %lld divisions took the fast path", fast, n);
  LMF_CHECK(!lmf_lg_divisor_of(0x1.fffffep-31f).fast && !lmf_lg_divisor_of(INFINITY).fast);
  LMF_CHECK(!lmf_lg_div_fast_ok(0.0f) && !lmf_lg_div_fast_ok(INFINITY) && !lmf_lg_div_fast_ok(NAN));
}

/* lmf_lg_exp_neg: 0 or a normal float in [0, 1] for every input (the fixed-point masses rely on it), within
 * 1 ulp of e^x on [-87, 0] (the largest error over every float there: 1.21 ulp with separate products
 * and sums, 0.94 with its reduction's second step and its degree-7 Taylor polynomial as fused
 * multiply-adds, 0.88 with n rounded from one FMA and the fitted degree-6 polynomial; the bound was
 * 1.25 before). Swept: every float in [-88, -86] (the underflow edge and the n = -126 step) and
 * [-0.5, -0.25] (the n = 0 step), and 2^14 significands of every other exponent, both signs, with the special values. */
static int exp_neg_ok(float x, double *worst) {
  const float e = lmf_lg_exp_neg(x);
  const uint32_t b = bits_of(e);
  if (!(b == 0u || (b >= 0x00800000u && b <= 0x3f800000u))) return 0;
  if (x <= 0.0f && x >= -87.0f) {
    const double want = exp((double)x);
    const double err = fabs((double)e - want) / ldexp(1.0, ilogb(want) - 23);
    if (err > *worst) *worst = err;
    return err <= 1.0;
  }
  return x > 0.0f ? e == 1.0f : e == 0.0f; /* x > 0 counts as 0; below -87, -inf and NaN give 0 */
}

void test_logits_exp_neg_range_and_error(void) {
  double worst = 0.0;
  long long n = 0;
  int bad = 0;
  for (uint32_t u = bits_of(-86.0f); u <= bits_of(-88.0f) && bad < 5; ++u, ++n)
    if (!exp_neg_ok(float_of(u), &worst)) {
      LMF_CHECK_MSG(0, "lmf_lg_exp_neg(%a) = %a", (double)float_of(u), (double)lmf_lg_exp_neg(float_of(u)));
      ++bad;
    }
  for (uint32_t u = bits_of(-0.25f); u <= bits_of(-0.5f) && bad < 5; ++u, ++n) /* n: 0 -> -1 */
    if (!exp_neg_ok(float_of(u), &worst)) {
      LMF_CHECK_MSG(0, "lmf_lg_exp_neg(%a) = %a", (double)float_of(u), (double)lmf_lg_exp_neg(float_of(u)));
      ++bad;
    }
  for (uint32_t s = 0; s < 2; ++s)
    for (uint32_t e = 0; e < 256 && bad < 5; ++e)
      for (uint32_t m = 0; m < (1u << 23); m += 511u, ++n) {
        const float x = float_of((s << 31) | (e << 23) | m);
        if (!exp_neg_ok(x, &worst)) {
          LMF_CHECK_MSG(0, "lmf_lg_exp_neg(%a) = %a", (double)x, (double)lmf_lg_exp_neg(x));
          ++bad;
        }
      }
  static const float special[] = {0.0f, -0.0f, -87.0f, -0x1.5p6f, INFINITY, -INFINITY, NAN, -NAN};
  for (size_t i = 0; i < sizeof special / sizeof special[0]; ++i, ++n)
    LMF_CHECK_MSG(exp_neg_ok(special[i], &worst), "lmf_lg_exp_neg(%a)", (double)special[i]);
  LMF_CHECK_MSG(worst > 0.5 && worst <= 1.0, "worst error %.3f ulp over %lld inputs", worst, n);
}
