/* Philox4x32-10 and z: known answers, an independent Philox, z against a double-precision Box-Muller. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

/* Spec test vector 1: the published Philox4x32-10 known answers, bit-exact. */
void test_spec01_philox_known_answers(void) {
  static const uint32_t ctr[3][4] = {{0, 0, 0, 0},
                                     {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
                                     {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u}};
  static const uint32_t key[3][2] = {{0, 0}, {0xffffffffu, 0xffffffffu}, {0xa4093822u, 0x299f31d0u}};
  static const uint32_t want[3][4] = {{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u},
                                      {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu},
                                      {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}};
  for (int v = 0; v < 3; ++v) {
    uint32_t out[4] = {0, 0, 0, 0}, ref[4] = {0, 0, 0, 0};
    lmf_philox4x32_10(ctr[v], key[v], out);
    ref_philox4x32_10(ctr[v], key[v], ref);
    for (int k = 0; k < 4; ++k) {
      LMF_CHECK_MSG(out[k] == want[v][k], "vector %d word %d: lmf_philox4x32_10 gives 0x%08x, expected 0x%08x",
                    v, k, out[k], want[v][k]);
      LMF_CHECK_MSG(ref[k] == want[v][k], "vector %d word %d: the test's reference Philox gives 0x%08x", v, k,
                    ref[k]);
    }
  }
  /* NULL arguments are ignored (no status to return), and out is not written. */
  uint32_t out[4] = {1, 2, 3, 4};
  lmf_philox4x32_10(NULL, key[0], out);
  lmf_philox4x32_10(ctr[0], NULL, out);
  LMF_CHECK(out[0] == 1 && out[1] == 2 && out[2] == 3 && out[3] == 4);
  lmf_philox4x32_10(ctr[0], key[0], NULL);
}

/* The exported Philox equals an independent implementation on random counters and keys. */
void test_philox_matches_reference(void) {
  uint64_t s = 7;
  int bad = 0;
  for (int i = 0; i < 100000; ++i) {
    uint32_t c[4], k[2], a[4], b[4];
    for (int j = 0; j < 4; ++j) c[j] = (uint32_t)lt_next(&s);
    k[0] = (uint32_t)lt_next(&s);
    k[1] = (uint32_t)lt_next(&s);
    lmf_philox4x32_10(c, k, a);
    ref_philox4x32_10(c, k, b);
    if (memcmp(a, b, sizeof a) != 0 && bad++ < 3)
      LMF_CHECK_MSG(0, "counter %08x %08x %08x %08x key %08x %08x: %08x vs reference %08x", c[0], c[1], c[2],
                    c[3], k[0], k[1], a[0], b[0]);
  }
  LMF_CHECK_EQ_INT(bad, 0);
}

/* z from lmf_mezo_fill_z against z computed in double from the exported Philox words:
 * Gaussian within 1e-6 relative (measured against the Box-Muller radius r, which bounds |z|, and at
 * least 1), Rademacher exactly +-1 with the documented bit. Covers 64-bit seeds, element offsets that
 * are not multiples of 4, and indices past 2^34 (counter word 1 nonzero). */
void test_fill_z_matches_double_reference(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  enum { N = 40003 };
  float *z = (float *)lt_malloc(N * sizeof(float));
  const struct {
    uint64_t seed;
    uint32_t uid;
    int64_t offset;
  } cases[] = {{0, 0, 0},
               {0x1234, 7, 1},
               {0xffffffffffffffffull, 0xffffffffu, 3},
               {0x299f31d0a4093822ull, 5, ((int64_t)1 << 34) + 5},
               {42, 1, ((int64_t)1 << 40) - 17}};
  double worst = 0.0;
  for (size_t c = 0; z && c < sizeof cases / sizeof cases[0]; ++c) {
    for (int dist = 0; dist < 2; ++dist) {
      lt_poison_f32(z, N);
      if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, dist, cases[c].seed, cases[c].uid, cases[c].offset, N, z, NULL)))
        continue;
      int bad = 0;
      for (int64_t i = 0; i < N; ++i) {
        double r = 0.0;
        double want = ref_z(dist, cases[c].seed, cases[c].uid, (uint64_t)(cases[c].offset + i), &r);
        double err = fabs((double)z[i] - want);
        double scale = r > 1.0 ? r : 1.0;
        int ok;
        if (dist == LMF_MEZO_RADEMACHER) {
          ok = (double)z[i] == want; /* also rejects NaN (unwritten) */
        } else {
          ok = err <= 1e-6 * scale;
          if (err / scale > worst) worst = err / scale;
        }
        if (!ok && bad++ < 3)
          LMF_CHECK_MSG(0, "%s case %zu element %lld: z = %.9g, double reference %.9g",
                        dist ? "Rademacher" : "Gaussian", c, (long long)i, (double)z[i], want);
      }
      LMF_CHECK_EQ_INT(bad, 0);
    }
  }
  lmf_t_note("Gaussian z: worst |z - z_double| / max(r, 1) = %.3g", worst);
  free(z);
  lmf_context_destroy(ctx);
}

/* fill_z writes exactly n elements: the guard elements around the window keep their poison, and a
 * window of any length and alignment equals the same slice of a longer fill (bit-identical). */
void test_fill_z_windows(void) {
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  enum { N = 3000, G = 8 };
  float *whole = (float *)lt_malloc(N * sizeof(float));
  float *win = (float *)lt_malloc((N + 2 * G) * sizeof(float));
  for (int dist = 0; whole && win && dist < 2; ++dist) {
    lt_poison_f32(whole, N);
    if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, dist, 99, 3, 1000, N, whole, NULL))) break;
    LMF_CHECK_EQ_INT(lt_count_nonfinite(whole, N), 0);
    const int64_t starts[] = {0, 1, 2, 3, 4, 5, 127, 128, 129, 255, 256, 257, 1001};
    const int64_t lens[] = {1, 2, 3, 4, 5, 7, 8, 9, 31, 255, 256, 257, 1000};
    for (size_t a = 0; a < sizeof starts / sizeof starts[0]; ++a) {
      for (size_t b = 0; b < sizeof lens / sizeof lens[0]; ++b) {
        int64_t st = starts[a], n = lens[b];
        lt_poison_f32(win, N + 2 * G);
        if (!LMF_CHECK_OK(lmf_mezo_fill_z(ctx, dist, 99, 3, 1000 + st, n, win + G, NULL))) continue;
        LMF_CHECK_MSG(lt_count_nonfinite(win, G) == G && lt_count_nonfinite(win + G + n, G) == G,
                      "fill_z (start %lld, n %lld) wrote outside its window", (long long)st, (long long)n);
        LMF_CHECK_MSG(memcmp(win + G, whole + st, (size_t)n * sizeof(float)) == 0,
                      "dist %d window start %lld n %lld differs from the whole fill", dist, (long long)st,
                      (long long)n);
      }
    }
  }
  free(whole);
  free(win);
  lmf_context_destroy(ctx);
}
