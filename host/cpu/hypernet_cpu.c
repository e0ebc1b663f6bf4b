/*
 * The ZeTT hypernetwork forward pass and FVT on the CPU (fp32, OpenMP).
 *
 * Tokens are processed in chunks of at most ~512 positions. Per chunk:
 *   1. rows: for each token, position 0 plus every non-pad position (plus the language position);
 *      pad positions are never computed: their keys are masked and nothing else reads them. A token
 *      whose every position is pad (and has no language position) keeps all L positions and attends
 *      uniformly (the reference's additive finfo.min mask makes every score equal);
 *   2. the input projection (rescale, Linear n_in -> H, ProjectorBlock) once per distinct id, or read
 *      from the caller's cache;
 *   3. embeddings (+ type[0] + pos[l], LayerNorm 1e-5); the encoder layers; in the last layer only the
 *      position-0 rows go past keys and values;
 *   4. the heads on the pooled rows.
 *
 * GEMMs: C[M][N] = A[M][K] W^T + bias with W packed at load time in panels of 32 columns (lmf_hn_pack).
 * A is packed per call in slivers of 8 rows; an 8 x 32 micro-kernel (AVX-512 + FMA: 16 accumulators;
 * AVX2 + FMA: four 4 x 16 passes; plain C otherwise, chosen at run time) runs over the whole K with the
 * panel in L2. Tiles (panel, block of up to 128 rows), panel-major, are handed out to the threads.
 *
 * The GELUs: with AVX-512, vector versions (exp by range reduction, a degree-7 polynomial and scalef;
 * tanh(u) = 1 - 2 / (e^2u + 1); erf by Abramowitz-Stegun 7.1.26, |error| < 1.5e-7); otherwise libm's
 * tanhf / erff. Either way the GELU's error stays within a few fp32 ulp of its output.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define LMF_HN_X86 1
#endif

#include "../../kernels/common/half_convert.h"
#include "../hypernet_internal.h"

#define NR LMF_HN_NR
#define MR 8
#define SLIVERS_PER_BLOCK 16 /* 128 rows of A per tile */
#define LN_EPS_BLOCK 1e-6f   /* ProjectorBlock */
#define LN_EPS_ROBERTA 1e-5f /* RoBERTa embeddings and layers */
#define ROW_CAP 512          /* positions per chunk (at least one token's) */
#define PAR_GEMM_MACS (1 << 20) /* GEMMs smaller than this run on one thread */
#define PAR_ELEMS (1 << 15)     /* element-wise passes smaller than this run on one thread */

static int threads_of(const struct lmf_context *ctx) {
  return ctx && ctx->cpu_threads > 0 ? ctx->cpu_threads : omp_get_max_threads();
}

/* ---- Packing ----------------------------------------------------------------------------------- */

void lmf_hn_pack(lmf_hn_mat *m, const float *w) {
  const int64_t K = m->k, N = m->n;
#pragma omp parallel for schedule(static) if ((int64_t)m->npanels * K * NR >= PAR_ELEMS)
  for (int32_t p = 0; p < m->npanels; ++p) {
    float *dst = m->p + (size_t)p * (size_t)K * NR;
    for (int64_t k = 0; k < K; ++k)
      for (int j = 0; j < NR; ++j) {
        int64_t n = (int64_t)p * NR + j;
        dst[k * NR + j] = n < N ? w[n * K + k] : 0.0f;
      }
  }
}

/* ---- Micro-kernels: C[8][32] (ldc) = bias[32] + sum_k a[k][0..7] x b[k][0..31] ----------------------- */

typedef void (*kern_fn)(int64_t K, const float *a, const float *b, const float *bias, float *c, int64_t ldc);

static void kern_c(int64_t K, const float *a, const float *b, const float *bias, float *c, int64_t ldc) {
  float acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = bias[j];
  for (int64_t k = 0; k < K; ++k) {
    const float *bk = b + k * NR;
    for (int i = 0; i < MR; ++i) {
      const float ai = a[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bk[j];
    }
  }
  for (int i = 0; i < MR; ++i) memcpy(c + i * ldc, acc[i], sizeof acc[i]);
}

#ifdef LMF_HN_X86
__attribute__((target("avx512f,fma"))) static void kern_avx512(int64_t K, const float *a, const float *b,
                                                               const float *bias, float *c, int64_t ldc) {
  const __m512 z0 = _mm512_loadu_ps(bias), z1 = _mm512_loadu_ps(bias + 16);
  __m512 c00 = z0, c01 = z1, c10 = z0, c11 = z1, c20 = z0, c21 = z1, c30 = z0, c31 = z1;
  __m512 c40 = z0, c41 = z1, c50 = z0, c51 = z1, c60 = z0, c61 = z1, c70 = z0, c71 = z1;
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_load_ps(b + k * NR), b1 = _mm512_load_ps(b + k * NR + 16);
    const float *ak = a + k * MR;
    __m512 x;
    x = _mm512_set1_ps(ak[0]); c00 = _mm512_fmadd_ps(x, b0, c00); c01 = _mm512_fmadd_ps(x, b1, c01);
    x = _mm512_set1_ps(ak[1]); c10 = _mm512_fmadd_ps(x, b0, c10); c11 = _mm512_fmadd_ps(x, b1, c11);
    x = _mm512_set1_ps(ak[2]); c20 = _mm512_fmadd_ps(x, b0, c20); c21 = _mm512_fmadd_ps(x, b1, c21);
    x = _mm512_set1_ps(ak[3]); c30 = _mm512_fmadd_ps(x, b0, c30); c31 = _mm512_fmadd_ps(x, b1, c31);
    x = _mm512_set1_ps(ak[4]); c40 = _mm512_fmadd_ps(x, b0, c40); c41 = _mm512_fmadd_ps(x, b1, c41);
    x = _mm512_set1_ps(ak[5]); c50 = _mm512_fmadd_ps(x, b0, c50); c51 = _mm512_fmadd_ps(x, b1, c51);
    x = _mm512_set1_ps(ak[6]); c60 = _mm512_fmadd_ps(x, b0, c60); c61 = _mm512_fmadd_ps(x, b1, c61);
    x = _mm512_set1_ps(ak[7]); c70 = _mm512_fmadd_ps(x, b0, c70); c71 = _mm512_fmadd_ps(x, b1, c71);
  }
  _mm512_storeu_ps(c + 0 * ldc, c00); _mm512_storeu_ps(c + 0 * ldc + 16, c01);
  _mm512_storeu_ps(c + 1 * ldc, c10); _mm512_storeu_ps(c + 1 * ldc + 16, c11);
  _mm512_storeu_ps(c + 2 * ldc, c20); _mm512_storeu_ps(c + 2 * ldc + 16, c21);
  _mm512_storeu_ps(c + 3 * ldc, c30); _mm512_storeu_ps(c + 3 * ldc + 16, c31);
  _mm512_storeu_ps(c + 4 * ldc, c40); _mm512_storeu_ps(c + 4 * ldc + 16, c41);
  _mm512_storeu_ps(c + 5 * ldc, c50); _mm512_storeu_ps(c + 5 * ldc + 16, c51);
  _mm512_storeu_ps(c + 6 * ldc, c60); _mm512_storeu_ps(c + 6 * ldc + 16, c61);
  _mm512_storeu_ps(c + 7 * ldc, c70); _mm512_storeu_ps(c + 7 * ldc + 16, c71);
}

/* AVX2: the 8 x 32 tile as four passes of 4 rows x 16 columns (8 accumulators each). */
__attribute__((target("avx2,fma"))) static void kern_avx2(int64_t K, const float *a, const float *b,
                                                          const float *bias, float *c, int64_t ldc) {
  for (int rh = 0; rh < 2; ++rh)
    for (int ch = 0; ch < 2; ++ch) {
      const float *bb = b + ch * 16;
      const __m256 z0 = _mm256_loadu_ps(bias + ch * 16), z1 = _mm256_loadu_ps(bias + ch * 16 + 8);
      __m256 c00 = z0, c01 = z1, c10 = z0, c11 = z1, c20 = z0, c21 = z1, c30 = z0, c31 = z1;
      for (int64_t k = 0; k < K; ++k) {
        const __m256 b0 = _mm256_load_ps(bb + k * NR), b1 = _mm256_load_ps(bb + k * NR + 8);
        const float *ak = a + k * MR + rh * 4;
        __m256 x;
        x = _mm256_set1_ps(ak[0]); c00 = _mm256_fmadd_ps(x, b0, c00); c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_set1_ps(ak[1]); c10 = _mm256_fmadd_ps(x, b0, c10); c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_set1_ps(ak[2]); c20 = _mm256_fmadd_ps(x, b0, c20); c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_set1_ps(ak[3]); c30 = _mm256_fmadd_ps(x, b0, c30); c31 = _mm256_fmadd_ps(x, b1, c31);
      }
      float *cc = c + (int64_t)(rh * 4) * ldc + ch * 16;
      _mm256_storeu_ps(cc + 0 * ldc, c00); _mm256_storeu_ps(cc + 0 * ldc + 8, c01);
      _mm256_storeu_ps(cc + 1 * ldc, c10); _mm256_storeu_ps(cc + 1 * ldc + 8, c11);
      _mm256_storeu_ps(cc + 2 * ldc, c20); _mm256_storeu_ps(cc + 2 * ldc + 8, c21);
      _mm256_storeu_ps(cc + 3 * ldc, c30); _mm256_storeu_ps(cc + 3 * ldc + 8, c31);
    }
}
#endif

/* The best kernel this CPU runs. LMF_HYPERNET_KERNEL=c / avx2 (environment) caps the choice, so the
 * tests cover every path on any machine. */
static kern_fn pick_kernel(void) {
  const char *cap = getenv("LMF_HYPERNET_KERNEL");
  if (cap && strcmp(cap, "c") == 0) return kern_c;
#ifdef LMF_HN_X86
  __builtin_cpu_init();
  if (cap && strcmp(cap, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? kern_avx2 : kern_c;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return kern_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kern_avx2;
#endif
  return kern_c;
}

/* ---- GEMM --------------------------------------------------------------------------------------- */

typedef struct run_ctx {
  int nt;          /* OpenMP threads */
  int vec512;      /* AVX-512 element-wise code */
  kern_fn kern;
  float *apack;    /* ceil(ROW_CAP-ish / 8) * 8 * Kmax floats */
} run_ctx;

/* C[M][N] (ldc) = A[M][K] (lda) x W^T + bias (NULL: 0). */
static void gemm(const run_ctx *rc, const float *A, int64_t lda, int64_t M, const lmf_hn_mat *W, const float *bias,
                 float *C, int64_t ldc) {
  if (M <= 0) return;
  const int64_t K = W->k, N = W->n;
  const int64_t nsl = (M + MR - 1) / MR;
  const int64_t nmb = (nsl + SLIVERS_PER_BLOCK - 1) / SLIVERS_PER_BLOCK;
  const int64_t tiles = nmb * W->npanels;
  float *ap = rc->apack;
  const kern_fn kern = rc->kern;
  /* Threads only pay off past ~1M multiply-adds (and keep a small call off busy cores). */
  const int par = rc->nt > 1 && M * N * K >= PAR_GEMM_MACS;
#pragma omp parallel num_threads(rc->nt) if (par)
  {
#pragma omp for schedule(static)
    for (int64_t s = 0; s < nsl; ++s) {
      float *d = ap + s * K * MR;
      const int64_t r0 = s * MR;
      if (r0 + MR <= M) {
        for (int64_t k = 0; k < K; ++k)
          for (int i = 0; i < MR; ++i) d[k * MR + i] = A[(r0 + i) * lda + k];
      } else {
        for (int64_t k = 0; k < K; ++k)
          for (int i = 0; i < MR; ++i) d[k * MR + i] = r0 + i < M ? A[(r0 + i) * lda + k] : 0.0f;
      }
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tiles; ++t) {
      const int64_t p = t / nmb, mb = t % nmb; /* panel-major: a thread keeps its panel in L2 */
      const int64_t c0 = p * NR, nc = N - c0 < NR ? N - c0 : NR;
      float bias32[NR];
      for (int j = 0; j < NR; ++j) bias32[j] = (bias && j < nc) ? bias[c0 + j] : 0.0f;
      const float *bp = W->p + p * K * NR;
      const int64_t s_end = (mb + 1) * SLIVERS_PER_BLOCK < nsl ? (mb + 1) * SLIVERS_PER_BLOCK : nsl;
      for (int64_t s = mb * SLIVERS_PER_BLOCK; s < s_end; ++s) {
        const int64_t r0 = s * MR, nr = M - r0 < MR ? M - r0 : MR;
        if (nr == MR && nc == NR) {
          kern(K, ap + s * K * MR, bp, bias32, C + r0 * ldc + c0, ldc);
        } else {
          float tmp[MR * NR];
          kern(K, ap + s * K * MR, bp, bias32, tmp, NR);
          for (int64_t i = 0; i < nr; ++i) memcpy(C + (r0 + i) * ldc + c0, tmp + i * NR, (size_t)nc * sizeof(float));
        }
      }
    }
  }
}

/* ---- Element-wise pieces ------------------------------------------------------------------------- */

static inline float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f; /* sqrt(2 / pi) */
  float inner = k0 * (x + 0.044715f * (x * x * x));
  return 0.5f * x * (1.0f + tanhf(inner));
}

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

#ifdef LMF_HN_X86
/* e^x for x in [-88, 88] (clamped): x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-7 Taylor
 * polynomial (relative error < 1e-8 before rounding), times 2^n by scalef. */
__attribute__((target("avx512f,fma"))) static inline __m512 exp512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

__attribute__((target("avx512f,fma"))) static inline __m512 gelu_tanh16(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 inner = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f),
                                     _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
  const __m512 e = exp512(_mm512_add_ps(inner, inner));
  const __m512 t = _mm512_sub_ps(_mm512_set1_ps(1.0f),
                                 _mm512_div_ps(_mm512_set1_ps(2.0f), _mm512_add_ps(e, _mm512_set1_ps(1.0f))));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), t));
}

__attribute__((target("avx512f,fma"))) static inline __m512 gelu_erf16(__m512 x) {
  const __m512 z = _mm512_mul_ps(x, _mm512_set1_ps(0.7071067811865476f));
  const __m512 a = _mm512_abs_ps(z);
  const __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(_mm512_set1_ps(0.3275911f), a,
                                                                       _mm512_set1_ps(1.0f)));
  __m512 p = _mm512_set1_ps(1.061405429f);
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.453152027f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.421413741f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.284496736f));
  p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.254829592f));
  p = _mm512_mul_ps(p, t);
  const __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(a, a)));
  __m512 erf_abs = _mm512_fnmadd_ps(p, e, _mm512_set1_ps(1.0f));
  /* erf(z) carries z's sign */
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32((int)0x80000000u));
  const __m512 erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), x), _mm512_add_ps(_mm512_set1_ps(1.0f), erf));
}

__attribute__((target("avx512f,fma"))) static void gelu_row_avx512(float *x, int64_t n, int erf) {
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    const __m512 v = _mm512_loadu_ps(x + j);
    _mm512_storeu_ps(x + j, erf ? gelu_erf16(v) : gelu_tanh16(v));
  }
  if (j < n) {
    const __mmask16 m = (__mmask16)((1u << (n - j)) - 1u);
    const __m512 v = _mm512_maskz_loadu_ps(m, x + j);
    _mm512_mask_storeu_ps(x + j, m, erf ? gelu_erf16(v) : gelu_tanh16(v));
  }
}
#endif

/* x = gelu(x) over rows x n; erf: exact (erf) GELU, else the tanh one. */
static void apply_gelu(const run_ctx *rc, float *x, int64_t rows, int64_t n, int erf) {
#pragma omp parallel for num_threads(rc->nt) schedule(static) if (rows * n >= PAR_ELEMS)
  for (int64_t r = 0; r < rows; ++r) {
    float *xr = x + r * n;
#ifdef LMF_HN_X86
    if (rc->vec512) {
      gelu_row_avx512(xr, n, erf);
      continue;
    }
#endif
    if (erf)
      for (int64_t j = 0; j < n; ++j) xr[j] = gelu_erf(xr[j]);
    else
      for (int64_t j = 0; j < n; ++j) xr[j] = gelu_tanh(xr[j]);
  }
}

static void apply_gelu_tanh(const run_ctx *rc, float *x, int64_t rows, int64_t n) { apply_gelu(rc, x, rows, n, 0); }

static void apply_gelu_erf(const run_ctx *rc, float *x, int64_t rows, int64_t n) { apply_gelu(rc, x, rows, n, 1); }

/* y = LN(x) * w + b over one row of n (mean and variance accumulated in double). y may be x. */
static void layer_norm_row(const float *x, float *y, int64_t n, const float *w, const float *b, float eps) {
  double s = 0.0;
  for (int64_t j = 0; j < n; ++j) s += x[j];
  const double mean = s / (double)n;
  double v = 0.0;
  for (int64_t j = 0; j < n; ++j) {
    double d = x[j] - mean;
    v += d * d;
  }
  const float meanf = (float)mean;
  const float rstd = (float)(1.0 / sqrt(v / (double)n + (double)eps));
  for (int64_t j = 0; j < n; ++j) y[j] = (x[j] - meanf) * rstd * w[j] + b[j];
}

/* out[r] = LN(a[r] + res[r]) for every row (out may be a or res). */
static void add_layer_norm(const run_ctx *rc, float *a, const float *res, float *out, int64_t rows, int64_t n,
                           const float *w, const float *b, float eps) {
#pragma omp parallel for num_threads(rc->nt) schedule(static) if (rows * n >= PAR_ELEMS)
  for (int64_t r = 0; r < rows; ++r) {
    float *ar = a + r * n;
    const float *rr = res + r * n;
    for (int64_t j = 0; j < n; ++j) ar[j] = ar[j] + rr[j];
    layer_norm_row(ar, out + r * n, n, w, b, eps);
  }
}

/* ProjectorBlock over M rows of H: out = LN_1e-6(x + gelu_tanh(dense2(gelu_tanh(dense1(x))))).
 * tI: M x I, tH: M x H scratch; out may be x. */
static void projector(const run_ctx *rc, const lmf_hn_projector *pb, const float *x, int64_t M, float *tI, float *tH,
                      float *out) {
  const int64_t H = pb->dense2.w.n, I = pb->dense1.w.n;
  gemm(rc, x, H, M, &pb->dense1.w, pb->dense1.b, tI, I);
  apply_gelu_tanh(rc, tI, M, I);
  gemm(rc, tI, I, M, &pb->dense2.w, pb->dense2.b, tH, H);
  apply_gelu_tanh(rc, tH, M, H);
  add_layer_norm(rc, tH, x, out, M, H, pb->ln_w, pb->ln_b, LN_EPS_BLOCK);
}

static inline float load_src(const void *p, int32_t dtype, int64_t i) {
  switch (dtype) {
    case LMF_DTYPE_F16: return lmf_f16_to_f32(((const uint16_t *)p)[i]);
    case LMF_DTYPE_BF16: return lmf_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

/* dst[0..n) = row `row` of a source matrix, as fp32. */
static void source_row(const void *base, int32_t dtype, int64_t stride, int64_t row, int64_t n, float *dst) {
  const int64_t o = row * stride;
  if (dtype == LMF_DTYPE_F32) {
    memcpy(dst, (const float *)base + o, (size_t)n * sizeof(float));
    return;
  }
  for (int64_t j = 0; j < n; ++j) dst[j] = load_src(base, dtype, o + j);
}

/* ---- Workspace ---------------------------------------------------------------------------------- */

typedef struct ws_layout {
  int64_t rcap, tcap, hcap; /* rows per chunk, tokens per chunk, hash slots */
  size_t off_x, off_p, off_h, off_q, off_k, off_v, off_c, off_t1, off_t2, off_i, off_ap; /* floats */
  size_t off_int;                                                                       /* bytes */
  size_t bytes;
} ws_layout;

static size_t al16(size_t n) { return (n + 15) & ~(size_t)15; }

static int layout(const struct lmf_hypernet *h, int64_t U, int32_t L, ws_layout *w) {
  const int64_t per_tok = (int64_t)L + h->cfg.embed_lang_id;
  int64_t all = U * per_tok;
  int64_t rcap = all < ROW_CAP ? all : ROW_CAP;
  if (rcap < per_tok) rcap = per_tok;
  const int64_t tcap = U < rcap ? U : rcap;
  int64_t hcap = 16;
  while (hcap < 2 * rcap) hcap *= 2;
  const int64_t H = h->cfg.hidden_size, I = h->cfg.intermediate_size, n_in = h->n_in;
  int64_t kmax = n_in > H ? n_in : H;
  if (I > kmax) kmax = I;
  const size_t rpad = (size_t)((rcap + MR - 1) / MR * MR);
  size_t o = 0;
  w->off_x = o; o += al16((size_t)rcap * (size_t)n_in);
  w->off_p = o; o += al16((size_t)rcap * (size_t)H);
  w->off_h = o; o += al16((size_t)rcap * (size_t)H);
  w->off_q = o; o += al16((size_t)rcap * (size_t)H);
  w->off_k = o; o += al16((size_t)rcap * (size_t)H);
  w->off_v = o; o += al16((size_t)rcap * (size_t)H);
  w->off_c = o; o += al16((size_t)rcap * (size_t)H);
  w->off_t1 = o; o += al16((size_t)rcap * (size_t)H);
  w->off_t2 = o; o += al16((size_t)rcap * (size_t)H);
  w->off_i = o; o += al16((size_t)rcap * (size_t)I);
  w->off_ap = o; o += al16(rpad * (size_t)kmax);
  w->off_int = o * sizeof(float);
  /* int64 tok_u [tcap]; int32 arrays: row_tok, row_pos, row_id, row_key, row_slot, dids, cmp (rcap
   * each), tok_start (+1), tok_all_masked (tcap each), hash keys + values (hcap each). */
  size_t ints = 7 * (size_t)rcap + 2 * (size_t)tcap + 1 + 2 * (size_t)hcap;
  w->bytes = w->off_int + (size_t)tcap * sizeof(int64_t) + al16(ints) * sizeof(int32_t);
  w->rcap = rcap;
  w->tcap = tcap;
  w->hcap = hcap;
  return 1;
}

size_t lmf_cpu_hypernet_workspace(const struct lmf_hypernet *h, int64_t num_tokens, int32_t surface_len) {
  if (num_tokens <= 0) return 0;
  ws_layout w;
  layout(h, num_tokens, surface_len, &w);
  return w.bytes;
}

/* ---- Attention ------------------------------------------------------------------------------------- */

/* Head hd of one token: q and ctx hold its nq query rows, k and v its n rows (all with row stride H).
 * Keys are the rows whose key flag is set; with all_masked every row gets weight 1 / n. Softmax in two
 * passes (max, then sum and weighted values); scores (q . k) / sqrt(d). */
static void attend(const float *q, const float *k, const float *v, float *ctx, int64_t H, int64_t heads,
                   int64_t n, const int32_t *key, int all_masked, int64_t nq, int64_t hd) {
  const int64_t d = H / heads;
  const float scale = 1.0f / sqrtf((float)d);
  const int64_t c0 = hd * d;
  for (int64_t i = 0; i < nq; ++i) {
    const float *qi = q + i * H + c0;
    float *ci = ctx + i * H + c0;
    for (int64_t x = 0; x < d; ++x) ci[x] = 0.0f;
    if (all_masked) {
      for (int64_t j = 0; j < n; ++j) {
        const float *vj = v + j * H + c0;
        for (int64_t x = 0; x < d; ++x) ci[x] += vj[x];
      }
      const float inv = 1.0f / (float)n;
      for (int64_t x = 0; x < d; ++x) ci[x] *= inv;
      continue;
    }
    float m = -INFINITY;
    for (int64_t j = 0; j < n; ++j) {
      if (!key[j]) continue;
      const float *kj = k + j * H + c0;
      float s = 0.0f;
      for (int64_t x = 0; x < d; ++x) s += qi[x] * kj[x];
      s *= scale;
      if (s > m) m = s;
    }
    float sum = 0.0f;
    for (int64_t j = 0; j < n; ++j) {
      if (!key[j]) continue;
      const float *kj = k + j * H + c0;
      const float *vj = v + j * H + c0;
      float s = 0.0f;
      for (int64_t x = 0; x < d; ++x) s += qi[x] * kj[x];
      s *= scale;
      const float e = expf(s - m);
      sum += e;
      for (int64_t x = 0; x < d; ++x) ci[x] += e * vj[x];
    }
    const float inv = 1.0f / sum;
    for (int64_t x = 0; x < d; ++x) ci[x] *= inv;
  }
}

/* ---- Forward ----------------------------------------------------------------------------------------- */

typedef struct chunk {
  int64_t R, T;          /* rows, tokens */
  int32_t *row_tok, *row_pos, *row_id, *row_key, *row_slot;
  int32_t *dids, *cmp;   /* distinct ids; the ones to compute (indices into dids) */
  int32_t *tok_start;    /* [T + 1] */
  int32_t *tok_all_masked;
  int32_t *hkeys, *hvals;
  int64_t D;             /* distinct ids */
} chunk;

static int32_t slot_of(chunk *c, int64_t hcap, int32_t id) {
  uint32_t hsh = (uint32_t)id * 2654435761u;
  int64_t i = (int64_t)(hsh & (uint32_t)(hcap - 1));
  for (;;) {
    if (c->hkeys[i] == id) return c->hvals[i];
    if (c->hkeys[i] < 0) {
      c->hkeys[i] = id;
      c->hvals[i] = (int32_t)c->D;
      c->dids[c->D] = id;
      return (int32_t)c->D++;
    }
    i = (i + 1) & (hcap - 1);
  }
}

lmf_status_t lmf_cpu_hypernet_predict(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a, void *workspace) {
  const lmf_hypernet_config_t *cfg = &h->cfg;
  const int64_t U = a->num_tokens, L = a->surface_len;
  const int64_t H = cfg->hidden_size, I = cfg->intermediate_size, E = cfg->n_embd, n_in = h->n_in;
  const int64_t heads = cfg->num_heads;
  const int32_t V0 = cfg->original_vocab_size, pad = cfg->pad_token_id;
  const int lang = cfg->embed_lang_id;
  const int need_bias = a->out_bias != NULL;
  const int64_t stride = a->source_row_stride;
  ws_layout w;
  layout(h, U, (int32_t)L, &w);
  float *ws = (float *)workspace;
  float *X = ws + w.off_x, *P = ws + w.off_p, *Hs = ws + w.off_h, *Q = ws + w.off_q, *K = ws + w.off_k;
  float *Vv = ws + w.off_v, *Cx = ws + w.off_c, *T1 = ws + w.off_t1, *T2 = ws + w.off_t2, *TI = ws + w.off_i;
  int64_t *tok_u = (int64_t *)((char *)workspace + w.off_int);
  int32_t *ip = (int32_t *)(tok_u + w.tcap);
  chunk c;
  c.row_tok = ip; ip += w.rcap;
  c.row_pos = ip; ip += w.rcap;
  c.row_id = ip; ip += w.rcap;
  c.row_key = ip; ip += w.rcap;
  c.row_slot = ip; ip += w.rcap;
  c.dids = ip; ip += w.rcap;
  c.cmp = ip; ip += w.rcap;
  c.tok_start = ip; ip += w.tcap + 1;
  c.tok_all_masked = ip; ip += w.tcap;
  c.hkeys = ip; ip += w.hcap;
  c.hvals = ip;

  run_ctx rc;
  rc.nt = threads_of(h->ctx);
  rc.kern = pick_kernel();
#ifdef LMF_HN_X86
  rc.vec512 = rc.kern == kern_avx512;
#else
  rc.vec512 = 0;
#endif
  rc.apack = ws + w.off_ap;

  const int32_t *S = a->surface_forms;
  int64_t u = 0;
  while (u < U) {
    /* ---- 1. rows of this chunk ---- */
    c.R = 0;
    c.T = 0;
    for (; u < U; ++u) {
      /* Tokens copied without a bias to predict need no forward pass. */
      if (a->copy_ids && a->copy_ids[u] >= 0 && !need_bias) continue;
      const int32_t *s = S + u * L;
      int64_t nkeys = 0;
      for (int64_t l = 0; l < L; ++l) nkeys += s[l] != pad;
      const int all_masked = nkeys == 0 && !lang;
      const int64_t need = all_masked ? L : (nkeys + (s[0] == pad) + lang);
      if (c.R + need > w.rcap || c.T == w.tcap) break;
      c.tok_start[c.T] = (int32_t)c.R;
      c.tok_all_masked[c.T] = all_masked;
      for (int64_t l = 0; l < L; ++l) {
        if (!all_masked && l > 0 && s[l] == pad) continue;
        c.row_tok[c.R] = (int32_t)c.T;
        c.row_pos[c.R] = (int32_t)l;
        c.row_id[c.R] = s[l];
        c.row_key[c.R] = all_masked ? 1 : (s[l] != pad);
        ++c.R;
      }
      if (lang) {
        c.row_tok[c.R] = (int32_t)c.T;
        c.row_pos[c.R] = (int32_t)L;
        c.row_id[c.R] = -1;
        c.row_key[c.R] = 1;
        ++c.R;
      }
      tok_u[c.T] = u;
      ++c.T;
    }
    c.tok_start[c.T] = (int32_t)c.R;
    if (c.T == 0) break; /* only copied tokens were left */
    const int64_t R = c.R, T = c.T;

    /* ---- 2. input projections, once per distinct id ---- */
    for (int64_t i = 0; i < w.hcap; ++i) c.hkeys[i] = -1;
    c.D = 0;
    for (int64_t r = 0; r < R; ++r) c.row_slot[r] = c.row_id[r] >= 0 ? slot_of(&c, w.hcap, c.row_id[r]) : -1;
    int64_t ncmp = 0;
    for (int64_t d = 0; d < c.D; ++d) {
      const int32_t id = c.dids[d];
      if (a->input_cache && a->input_cache_valid[id])
        memcpy(P + d * H, a->input_cache + (int64_t)id * H, (size_t)H * sizeof(float));
      else
        c.cmp[ncmp++] = (int32_t)d;
    }
    if (ncmp > 0) {
#pragma omp parallel for num_threads(rc.nt) schedule(static) if (ncmp * n_in >= PAR_ELEMS)
      for (int64_t i = 0; i < ncmp; ++i) {
        const int32_t id = c.dids[c.cmp[i]];
        float *x = X + i * n_in;
        if (id < V0) {
          source_row(a->source_in, a->source_dtype, stride, id, E, x);
          if (a->source_out) source_row(a->source_out, a->source_dtype, stride, id, E, x + E);
          if (cfg->rescale_embeddings)
            for (int64_t j = 0; j < n_in; ++j) x[j] = h->in_scale_w[j] * x[j] + h->in_scale_b[j];
        } else {
          memcpy(x, h->fallback + (int64_t)(id - V0) * n_in, (size_t)n_in * sizeof(float));
        }
      }
      gemm(&rc, X, n_in, ncmp, &h->in_linear.w, h->in_linear.b, T1, H);
      projector(&rc, &h->in_block, T1, ncmp, TI, T2, T1);
      for (int64_t i = 0; i < ncmp; ++i) {
        const int64_t d = c.cmp[i];
        memcpy(P + d * H, T1 + i * H, (size_t)H * sizeof(float));
        if (a->input_cache) {
          const int32_t id = c.dids[d];
          memcpy(a->input_cache + (int64_t)id * H, T1 + i * H, (size_t)H * sizeof(float));
          a->input_cache_valid[id] = 1;
        }
      }
    }

    /* ---- 3. embeddings ---- */
#pragma omp parallel for num_threads(rc.nt) schedule(static) if (R * H >= PAR_ELEMS)
    for (int64_t r = 0; r < R; ++r) {
      float *hr = Hs + r * H;
      const float *pos = h->pos + (int64_t)c.row_pos[r] * H;
      if (c.row_id[r] >= 0) {
        const float *x = P + (int64_t)c.row_slot[r] * H;
        for (int64_t j = 0; j < H; ++j) hr[j] = (x[j] + h->type[j]) + pos[j];
      } else { /* the language position: lang - (type + pos), then + type + pos, as the module does */
        const float *lg = h->lang + (int64_t)a->lang_index * H;
        for (int64_t j = 0; j < H; ++j) hr[j] = ((lg[j] - (h->type[j] + pos[j])) + h->type[j]) + pos[j];
      }
      layer_norm_row(hr, hr, H, h->emb_ln_w, h->emb_ln_b, LN_EPS_ROBERTA);
    }

    /* ---- 4. encoder ---- */
    for (int32_t li = 0; li < cfg->num_layers; ++li) {
      const lmf_hn_layer *ly = &h->layers[li];
      const int last = li == cfg->num_layers - 1;
      gemm(&rc, Hs, H, R, &ly->k.w, ly->k.b, K, H);
      gemm(&rc, Hs, H, R, &ly->v.w, ly->v.b, Vv, H);
      if (!last) {
        gemm(&rc, Hs, H, R, &ly->q.w, ly->q.b, Q, H);
#pragma omp parallel for num_threads(rc.nt) schedule(dynamic, 1) if (R * H >= PAR_ELEMS)
        for (int64_t th = 0; th < T * heads; ++th) {
          const int64_t t = th / heads, hd = th % heads;
          const int64_t r0 = c.tok_start[t], n = c.tok_start[t + 1] - r0;
          attend(Q + r0 * H, K + r0 * H, Vv + r0 * H, Cx + r0 * H, H, heads, n, c.row_key + r0, c.tok_all_masked[t],
                 n, hd);
        }
        gemm(&rc, Cx, H, R, &ly->o.w, ly->o.b, T1, H);
        add_layer_norm(&rc, T1, Hs, Hs, R, H, ly->ln1_w, ly->ln1_b, LN_EPS_ROBERTA);
        gemm(&rc, Hs, H, R, &ly->ffn1.w, ly->ffn1.b, TI, I);
        apply_gelu_erf(&rc, TI, R, I);
        gemm(&rc, TI, I, R, &ly->ffn2.w, ly->ffn2.b, T1, H);
        add_layer_norm(&rc, T1, Hs, Hs, R, H, ly->ln2_w, ly->ln2_b, LN_EPS_ROBERTA);
      } else {
        /* Only position 0 of each token from here on: T2 = its hidden rows. */
        for (int64_t t = 0; t < T; ++t) memcpy(T2 + t * H, Hs + (int64_t)c.tok_start[t] * H, (size_t)H * sizeof(float));
        gemm(&rc, T2, H, T, &ly->q.w, ly->q.b, Q, H);
#pragma omp parallel for num_threads(rc.nt) schedule(dynamic, 1) if (R * H >= PAR_ELEMS)
        for (int64_t th = 0; th < T * heads; ++th) {
          const int64_t t = th / heads, hd = th % heads;
          const int64_t r0 = c.tok_start[t], n = c.tok_start[t + 1] - r0;
          attend(Q + t * H, K + r0 * H, Vv + r0 * H, Cx + t * H, H, heads, n, c.row_key + r0, c.tok_all_masked[t], 1,
                 hd);
        }
        gemm(&rc, Cx, H, T, &ly->o.w, ly->o.b, T1, H);
        add_layer_norm(&rc, T1, T2, T2, T, H, ly->ln1_w, ly->ln1_b, LN_EPS_ROBERTA);
        gemm(&rc, T2, H, T, &ly->ffn1.w, ly->ffn1.b, TI, I);
        apply_gelu_erf(&rc, TI, T, I);
        gemm(&rc, TI, I, T, &ly->ffn2.w, ly->ffn2.b, T1, H);
        add_layer_norm(&rc, T1, T2, T2, T, H, ly->ln2_w, ly->ln2_b, LN_EPS_ROBERTA);
      }
    }
    /* pooled rows p: T2 [T][H] */
    const float *Pool = T2;

    /* ---- 5. heads ---- */
    projector(&rc, &h->head_block, Pool, T, TI, T1, Hs);
    gemm(&rc, Hs, H, T, &h->head_linear.w, h->head_linear.b, X, h->n_head_out);
    const int sep_head = cfg->separate_out_embeddings && !cfg->single_head;
    /* the output head's rows follow the input head's in X (X holds R x 2 n_embd floats here) */
    float *Yout = X + T * h->n_head_out;
    if (sep_head) {
      projector(&rc, &h->out_block, Pool, T, TI, T1, Q);
      gemm(&rc, Q, H, T, &h->out_linear.w, h->out_linear.b, Yout, E);
    }
#pragma omp parallel for num_threads(rc.nt) schedule(static) if (T * E >= PAR_ELEMS)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t uu = tok_u[t];
      const float *y = X + t * h->n_head_out;
      float *oi = a->out_in + uu * E;
      const int32_t cp = a->copy_ids ? a->copy_ids[uu] : -1;
      if (cp >= 0) {
        source_row(a->source_in, a->source_dtype, stride, cp, E, oi);
      } else if (cfg->rescale_embeddings) {
        for (int64_t j = 0; j < E; ++j) oi[j] = h->scale_w[j] * y[j] + h->scale_b[j];
      } else {
        memcpy(oi, y, (size_t)E * sizeof(float));
      }
      if (a->out_out) {
        float *oo = a->out_out + uu * E;
        const float *yo = sep_head ? Yout + t * E : y + E;
        if (cp >= 0) {
          source_row(a->source_out, a->source_dtype, stride, cp, E, oo);
        } else if (cfg->rescale_embeddings) {
          for (int64_t j = 0; j < E; ++j) oo[j] = h->out_scale_w[j] * yo[j] + h->out_scale_b[j];
        } else {
          memcpy(oo, yo, (size_t)E * sizeof(float));
        }
      }
      if (a->out_bias) {
        float b = 0.0f;
        if (cfg->predict_bias) {
          const float *pr = Pool + t * H;
          for (int64_t j = 0; j < H; ++j) b += pr[j] * h->bias_w[j];
          b += h->bias_b[0];
        }
        a->out_bias[uu] = b;
      }
    }
  }
  /* Copied tokens that skipped the forward pass (no bias asked for). */
  if (a->copy_ids && !need_bias) {
#pragma omp parallel for num_threads(rc.nt) schedule(static) if (U * E >= PAR_ELEMS)
    for (int64_t uu = 0; uu < U; ++uu) {
      const int32_t cp = a->copy_ids[uu];
      if (cp < 0) continue;
      source_row(a->source_in, a->source_dtype, stride, cp, E, a->out_in + uu * E);
      if (a->out_out) source_row(a->source_out, a->source_dtype, stride, cp, E, a->out_out + uu * E);
    }
  }
  return LMF_OK;
}

/* ---- FVT --------------------------------------------------------------------------------------------- */

lmf_status_t lmf_cpu_fvt_predict(const lmf_context_t *ctx, const lmf_fvt_args_t *a) {
  const int64_t U = a->num_tokens, E = a->n_embd, stride = a->source_row_stride;
  const int nt = threads_of(ctx);
#pragma omp parallel for num_threads(nt) schedule(static) if (U * E >= PAR_ELEMS)
  for (int64_t u = 0; u < U; ++u) {
    for (int side = 0; side < 2; ++side) {
      const void *src = side == 0 ? a->source_in : a->source_out;
      if (!src) continue;
      float *o = (side == 0 ? a->out_in : a->out_out) + u * E;
      const int32_t cp = a->copy_ids ? a->copy_ids[u] : -1;
      const int64_t b = a->offsets[u], n = a->offsets[u + 1] - b;
      if (cp >= 0 || n == 0) {
        source_row(src, a->source_dtype, stride, cp >= 0 ? cp : a->unk_id, E, o);
        continue;
      }
      for (int64_t j = 0; j < E; ++j) o[j] = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        int64_t id = a->ids[b + i];
        if (id < 0 || id >= a->source_rows) id = a->unk_id;
        const int64_t off = id * stride;
        if (a->source_dtype == LMF_DTYPE_F32) {
          const float *r = (const float *)src + off;
          for (int64_t j = 0; j < E; ++j) o[j] += r[j];
        } else {
          for (int64_t j = 0; j < E; ++j) o[j] += load_src(src, a->source_dtype, off + j);
        }
      }
      const float fn = (float)n;
      for (int64_t j = 0; j < E; ++j) o[j] = o[j] / fn;
    }
  }
  return LMF_OK;
}
