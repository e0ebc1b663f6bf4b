/* The hypernetwork's CUDA backend against its CPU backend (label cuda). The same weights are built on a
 * CPU context and on a CUDA context; the same calls run on both (host buffers on the CPU, device buffers
 * on CUDA) and every output is compared. Every case is reported SKIPPED when no CUDA device is usable or
 * the build has no CUDA backend.
 *
 * Tolerances (max |CUDA - CPU| / RMS of the CPU outputs):
 *   fp32  5e-5. Both backends compute the same fp32 expressions but sum the GEMMs in different orders
 *         (cuBLAS vs the CPU's packed micro-kernels) and use different tanhf / erff / expf (a few ulp
 *         each). Against the double reference each is within 2e-6 .. 8e-6 of the RMS
 *         (tests/hypernet/test_hypernet_forward.c), so they differ by at most about 1.6e-5; 5e-5 keeps a
 *         3x margin and stays 4x below what a wrong GELU or LayerNorm eps does (>= 2e-4, test_hn_sensitivity).
 *   TF32  3e-2 (and 2e-2 for the RMS of the error). TF32 keeps 10 of the 23 mantissa bits of every
 *         GEMM input. Emulated on the CPU (the PyTorch reference with every Linear's inputs rounded, at
 *         these shapes): max error 3.5e-3 .. 4e-3 of the RMS and RMS error 6e-4 .. 1.3e-3 with inputs
 *         rounded to nearest; 8e-3 .. 1.3e-2 and 1.9e-3 .. 7.5e-3 if they were truncated. The bounds
 *         leave 2x over the truncated case.
 * Copied rows (copy_ids) are bit for bit the source rows on both backends. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(LMF_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "../hypernet/hn_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

#define TOL 5e-5
#define TOL_TF32 3e-2
#define TOL_TF32_RMS 2e-2

/* How the CUDA hypernetwork is built. */
enum { FROM_HOST = 0, FROM_FILE = 1, FROM_DEVICE = 2 };

/* One configuration on both backends, with source embeddings in every dtype on both sides. */
typedef struct pair {
  lmf_context_t *cpu, *cuda;
  hn_weights w;
  lmf_hypernet_t *hc, *hg;
  int64_t rows, E;
  int sep;
  void *src_h[3][2]; /* [dtype: f32, f16, bf16][in, out], host */
  void *src_d[3][2]; /* the same on the device */
  float *cat_h, *cat_d; /* [rows][2E] = [E_in | E_out] (separate output embeddings) */
} pair;

static int dt_index(int32_t dt) { return dt == LMF_DTYPE_F16 ? 1 : dt == LMF_DTYPE_BF16 ? 2 : 0; }

/* Builds a CUDA hypernetwork from w: host pointers, a saved file, or every tensor uploaded first. */
static int build_cuda(lmf_context_t *ctx, const hn_weights *w, int how, lmf_hypernet_t **out) {
  *out = NULL;
  if (how == FROM_FILE) {
    char dir[512];
    if (!hn_tmpdir(dir, sizeof dir)) return 0;
    int ok = hn_save(dir, w) && LMF_CHECK_OK(lmf_hypernet_load(out, ctx, dir));
    hn_rmdir(dir);
    return ok;
  }
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = hn_tensors(w, &bufs);
  if (!t) return 0;
  void **dev = NULL;
  int ok = 1;
  if (how == FROM_DEVICE) {
    dev = (void **)calloc(w->n, sizeof *dev);
    ok = dev != NULL;
    for (size_t i = 0; ok && i < w->n; ++i) {
      const size_t bytes = (size_t)w->t[i].numel * lmf_dtype_size(t[i].dtype);
      dev[i] = lt_alloc(ctx, bytes);
      ok = dev[i] && lt_upload(ctx, dev[i], t[i].data, bytes);
      t[i].data = dev[i];
    }
  }
  if (ok) ok = LMF_CHECK_OK(lmf_hypernet_create(out, ctx, &w->cfg, t, w->n));
  if (dev) {
    for (size_t i = 0; i < w->n; ++i) lt_free(ctx, dev[i]);
    free(dev);
  }
  hn_tensors_free(t, bufs, w->n);
  return ok;
}

static int pair_init(pair *p, const lmf_hypernet_config_t *c, uint64_t seed, int32_t wdtype, int how) {
  memset(p, 0, sizeof *p);
  p->cpu = lt_context(LMF_BACKEND_CPU, 0);
  p->cuda = lt_context(LMF_BACKEND_CUDA, 0);
  if (!p->cpu || !p->cuda) return 0;
  if (!hn_weights_make(&p->w, c, seed, wdtype)) return 0;
  p->rows = c->original_vocab_size;
  p->E = c->n_embd;
  p->sep = c->separate_out_embeddings;
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = hn_tensors(&p->w, &bufs);
  if (!t) return 0;
  int ok = LMF_CHECK_OK(lmf_hypernet_create(&p->hc, p->cpu, c, t, p->w.n));
  hn_tensors_free(t, bufs, p->w.n);
  if (!ok || !build_cuda(p->cuda, &p->w, how, &p->hg)) return 0;
  const int64_t n = p->rows * p->E;
  static const int32_t dts[3] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};
  for (int side = 0; side < 1 + p->sep; ++side) {
    float *f = hn_source(p->rows, p->E, seed + 11 + (uint64_t)side);
    if (!f) return 0;
    p->src_h[0][side] = f;
    for (int d = 1; d < 3; ++d) {
      p->src_h[d][side] = lt_malloc((size_t)n * 2);
      if (!p->src_h[d][side] || !lt_convert(p->src_h[d][side], dts[d], f, LMF_DTYPE_F32, n)) return 0;
    }
    for (int d = 0; d < 3; ++d) {
      const size_t bytes = (size_t)n * lmf_dtype_size(dts[d]);
      p->src_d[d][side] = lt_alloc(p->cuda, bytes);
      if (!p->src_d[d][side] || !lt_upload(p->cuda, p->src_d[d][side], p->src_h[d][side], bytes)) return 0;
    }
  }
  if (p->sep) {
    p->cat_h = (float *)lt_malloc((size_t)(2 * n) * sizeof(float));
    p->cat_d = (float *)lt_alloc(p->cuda, (size_t)(2 * n) * sizeof(float));
    if (!p->cat_h || !p->cat_d) return 0;
    for (int64_t r = 0; r < p->rows; ++r) {
      memcpy(p->cat_h + r * 2 * p->E, (float *)p->src_h[0][0] + r * p->E, (size_t)p->E * sizeof(float));
      memcpy(p->cat_h + r * 2 * p->E + p->E, (float *)p->src_h[0][1] + r * p->E, (size_t)p->E * sizeof(float));
    }
    if (!lt_upload(p->cuda, p->cat_d, p->cat_h, (size_t)(2 * n) * sizeof(float))) return 0;
  }
  return 1;
}

static void pair_free(pair *p) {
  lmf_hypernet_destroy(p->hc);
  lmf_hypernet_destroy(p->hg);
  for (int d = 0; d < 3; ++d)
    for (int s = 0; s < 2; ++s) {
      free(p->src_h[d][s]);
      if (p->cuda) lt_free(p->cuda, p->src_d[d][s]);
    }
  free(p->cat_h);
  if (p->cuda) lt_free(p->cuda, p->cat_d);
  hn_weights_free(&p->w);
  lmf_context_destroy(p->cpu);
  lmf_context_destroy(p->cuda);
  memset(p, 0, sizeof *p);
}

/* One call's inputs. */
typedef struct call {
  const int32_t *S;
  int64_t U;
  int32_t L;
  int32_t lang;
  const int32_t *copy;
  int bias;       /* ask for the bias output */
  int tf32;       /* CUDA: allow_tf32 */
  int32_t dtype;  /* source dtype */
  int strided;    /* [E_in | E_out] rows (separate output embeddings, f32) */
} call;

typedef struct outs {
  float *in, *out, *bias;
} outs;

static int outs_alloc(outs *o, int64_t U, int64_t E) {
  o->in = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  o->out = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  o->bias = (float *)lt_malloc((size_t)U * sizeof(float));
  return o->in && o->out && o->bias;
}

static void outs_free(outs *o) {
  free(o->in);
  free(o->out);
  free(o->bias);
  memset(o, 0, sizeof *o);
}

static lmf_hypernet_args_t args_of(const pair *p, const call *c, int dev) {
  lmf_hypernet_args_t a = LMF_HYPERNET_ARGS_INIT;
  const int d = dt_index(c->dtype);
  a.num_tokens = c->U;
  a.surface_len = c->L;
  a.surface_forms = c->S;
  a.source_dtype = c->dtype;
  a.source_rows = p->rows;
  a.lang_index = c->lang;
  a.copy_ids = c->copy;
  a.allow_tf32 = dev ? c->tf32 : 0;
  if (c->strided) {
    const float *cat = dev ? p->cat_d : p->cat_h;
    a.source_in = cat;
    a.source_out = cat + p->E;
    a.source_row_stride = 2 * p->E;
    a.source_dtype = LMF_DTYPE_F32;
  } else {
    a.source_in = dev ? p->src_d[d][0] : p->src_h[d][0];
    a.source_out = p->sep ? (dev ? p->src_d[d][1] : p->src_h[d][1]) : NULL;
  }
  return a;
}

static int run_cpu(const pair *p, const call *c, outs *o) {
  lmf_hypernet_args_t a = args_of(p, c, 0);
  lt_poison_f32(o->in, c->U * p->E);
  lt_poison_f32(o->out, c->U * p->E);
  lt_poison_f32(o->bias, c->U);
  a.out_in = o->in;
  a.out_out = p->sep ? o->out : NULL;
  a.out_bias = c->bias ? o->bias : NULL;
  return LMF_CHECK_OK(lmf_hypernet_predict(p->hc, &a, NULL, 0, NULL));
}

/* The call on the CUDA hypernet h, with device outputs (poisoned first), an exact-size workspace and,
 * optionally, a device input cache with host flags; the outputs come back into o. */
static int run_cuda_on(const pair *p, lmf_hypernet_t *h, const call *c, outs *o, float *cache_d, uint8_t *valid,
                       lmf_stream_t stream) {
  lmf_context_t *ctx = p->cuda;
  const size_t eb = (size_t)(c->U * p->E) * sizeof(float), bb = (size_t)c->U * sizeof(float);
  lmf_hypernet_args_t a = args_of(p, c, 1);
  float *di = (float *)lt_alloc(ctx, eb), *dout = (float *)lt_alloc(ctx, eb), *db = (float *)lt_alloc(ctx, bb);
  void *ws = NULL;
  int ok = di && dout && db && lt_memset(ctx, di, 0xff, eb) && lt_memset(ctx, dout, 0xff, eb) &&
           lt_memset(ctx, db, 0xff, bb);
  a.out_in = di;
  a.out_out = p->sep ? dout : NULL;
  a.out_bias = c->bias ? db : NULL;
  a.input_cache = cache_d;
  a.input_cache_valid = cache_d ? valid : NULL;
  size_t bytes = 0;
  if (ok) ok = LMF_CHECK_OK(lmf_hypernet_workspace_size(h, &a, &bytes));
  if (ok && bytes > 0) ok = (ws = lt_alloc(ctx, bytes)) != NULL;
  if (ok) ok = LMF_CHECK_OK(lmf_hypernet_predict(h, &a, ws, bytes, stream));
  if (ok) ok = LMF_CHECK_OK(lmf_stream_synchronize(ctx, stream));
  if (ok) ok = lt_download(ctx, o->in, di, eb) && lt_download(ctx, o->out, dout, eb) && lt_download(ctx, o->bias, db, bb);
  lt_free(ctx, ws);
  lt_free(ctx, di);
  lt_free(ctx, dout);
  lt_free(ctx, db);
  return ok;
}

static int run_cuda(const pair *p, const call *c, outs *o) { return run_cuda_on(p, p->hg, c, o, NULL, NULL, NULL); }

/* max |got - want| / rms(want) and rms(got - want) / rms(want). */
static void rel_err(const float *got, const float *want, int64_t n, double *max_rel, double *rms_rel) {
  double ss = 0.0, se = 0.0, worst = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = (double)got[i] - (double)want[i];
    ss += (double)want[i] * want[i];
    se += d * d;
    if (fabs(d) > worst || d != d) worst = d != d ? INFINITY : fabs(d);
  }
  const double rms = sqrt(ss / (double)(n > 0 ? n : 1));
  *max_rel = rms > 0 ? worst / rms : worst;
  *rms_rel = rms > 0 ? sqrt(se / (double)(n > 0 ? n : 1)) / rms : sqrt(se);
}

/* Compares the CUDA outputs g with the CPU outputs w of call c: tolerance by precision, copied rows
 * bit for bit, no bias head -> exact zeros, every element written. */
static int compare(const pair *p, const call *c, const outs *g, const outs *w, const char *what) {
  const int64_t U = c->U, E = p->E;
  const double tol = c->tf32 ? TOL_TF32 : TOL;
  int ok = 1;
  char m[192];
  snprintf(m, sizeof m, "%s: CUDA e_in", what);
  ok &= hn_all_written(g->in, U * E, m);
  if (p->sep) {
    snprintf(m, sizeof m, "%s: CUDA e_out", what);
    ok &= hn_all_written(g->out, U * E, m);
  }
  if (c->bias) {
    snprintf(m, sizeof m, "%s: CUDA bias", what);
    ok &= hn_all_written(g->bias, U, m);
  }
  if (!ok) return 0;
  /* Compare the predicted tokens only (copied rows are checked bit for bit below). */
  double e[3][2] = {{0, 0}, {0, 0}, {0, 0}};
  float *gi = (float *)lt_malloc((size_t)(U * E) * sizeof(float)), *wi = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  float *go = (float *)lt_malloc((size_t)(U * E) * sizeof(float)), *wo = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  if (!gi || !wi || !go || !wo) ok = 0;
  int64_t np = 0;
  for (int64_t u = 0; ok && u < U; ++u) {
    const int32_t cp = c->copy ? c->copy[u] : -1;
    if (cp >= 0) {
      snprintf(m, sizeof m, "%s: copied token %lld e_in", what, (long long)u);
      ok &= LMF_CHECK_BYTES_EQ(g->in + u * E, w->in + u * E, (size_t)E * sizeof(float), m);
      if (p->sep) {
        snprintf(m, sizeof m, "%s: copied token %lld e_out", what, (long long)u);
        ok &= LMF_CHECK_BYTES_EQ(g->out + u * E, w->out + u * E, (size_t)E * sizeof(float), m);
      }
      continue;
    }
    memcpy(gi + np * E, g->in + u * E, (size_t)E * sizeof(float));
    memcpy(wi + np * E, w->in + u * E, (size_t)E * sizeof(float));
    memcpy(go + np * E, g->out + u * E, (size_t)E * sizeof(float));
    memcpy(wo + np * E, w->out + u * E, (size_t)E * sizeof(float));
    ++np;
  }
  if (ok && np > 0) {
    rel_err(gi, wi, np * E, &e[0][0], &e[0][1]);
    if (p->sep) rel_err(go, wo, np * E, &e[1][0], &e[1][1]);
  }
  const int predicts_bias = p->w.cfg.predict_bias;
  if (ok && c->bias) {
    if (predicts_bias) {
      rel_err(g->bias, w->bias, U, &e[2][0], &e[2][1]);
    } else {
      for (int64_t u = 0; u < U; ++u) ok &= LMF_CHECK_EQ_INT(lt_f32_bits(g->bias[u]), 0);
    }
  }
  static const char *names[3] = {"e_in", "e_out", "bias"};
  for (int k = 0; ok && k < 3; ++k) {
    if ((k == 1 && !p->sep) || (k == 2 && (!c->bias || !predicts_bias))) continue;
    ok &= LMF_CHECK_MSG(e[k][0] <= tol, "%s: %s differs from the CPU by %.3e of its RMS (tolerance %.0e)", what,
                        names[k], e[k][0], tol);
    if (c->tf32)
      ok &= LMF_CHECK_MSG(e[k][1] <= TOL_TF32_RMS, "%s: %s RMS error %.3e of the RMS (tolerance %.0e)", what,
                          names[k], e[k][1], TOL_TF32_RMS);
  }
  lmf_t_note("%s: CUDA vs CPU, max error / RMS: e_in %.2e, e_out %.2e, bias %.2e (RMS error %.2e, %.2e, %.2e)",
             what, e[0][0], e[1][0], e[2][0], e[0][1], e[1][1], e[2][1]);
  free(gi);
  free(wi);
  free(go);
  free(wo);
  return ok;
}

/* Both backends, then compare. */
static int parity(const pair *p, const call *c, const char *what) {
  outs g, w;
  memset(&g, 0, sizeof g);
  memset(&w, 0, sizeof w);
  int ok = outs_alloc(&g, c->U, p->E) && outs_alloc(&w, c->U, p->E) && run_cpu(p, c, &w) && run_cuda(p, c, &g) &&
           compare(p, c, &g, &w, what);
  outs_free(&g);
  outs_free(&w);
  return ok;
}

/* A deterministic id in [lo, hi) that is not `avoid`. */
static int32_t pick(uint64_t *st, int32_t lo, int32_t hi, int32_t avoid) {
  for (;;) {
    int32_t v = lo + (int32_t)(lt_next(st) % (uint64_t)(hi - lo));
    if (v != avoid) return v;
  }
}

/* U tokens of L ids covering every path: lengths 1 .. L, pads inside, position 0 padded before real
 * ids, fallback ids (first and last row), rows of pad only, repeated ids, special tokens [id, pad, ...]
 * copied (copy[u] = id), the rest -1. */
static void make_forms(const lmf_hypernet_config_t *c, int64_t U, int32_t L, uint64_t seed, int32_t *S, int32_t *copy) {
  const int32_t pad = c->pad_token_id, V0 = c->original_vocab_size;
  const int32_t nfb = c->n_extra_tokens > 1 ? c->n_extra_tokens : 1;
  uint64_t st = seed;
  for (int64_t u = 0; u < U; ++u) {
    int32_t *s = S + u * L;
    copy[u] = -1;
    for (int32_t l = 0; l < L; ++l) s[l] = pad;
    const int kind = (int)(u % 11);
    if (kind == 5) { /* special */
      s[0] = pick(&st, 0, V0, pad);
      copy[u] = s[0];
      continue;
    }
    if (kind == 7) continue; /* all pad */
    const int32_t len = 1 + (int32_t)(lt_next(&st) % (uint64_t)L);
    for (int32_t l = 0; l < len; ++l) {
      const uint64_t r = lt_next(&st) % 20;
      s[l] = r == 0 ? V0 + (int32_t)(lt_next(&st) % (uint64_t)nfb) : r == 1 ? V0 : r == 2 ? V0 + nfb - 1
                                                                                       : pick(&st, 0, V0, pad);
      if (l > 0 && l + 1 < len && lt_next(&st) % 7 == 0) s[l] = pad; /* a pad inside */
    }
    if (kind == 3 && L > 2) s[0] = pad;             /* position 0 padded, keys after it */
    if (kind == 9 && len > 1) s[len - 1] = s[0];    /* a repeated id */
  }
}

/* ---- Cases ----------------------------------------------------------------------------------------- */

/* The XLM-R hypernet's shape in full (H 768, I 1536, 12 heads, 161 fallback rows, 26 languages,
 * rescaling, bias), weights in mixed F32/F16/BF16 loaded from a file: f32 / f16 / bf16 sources, a batch
 * of 1,200 tokens (more than one 4,096-row chunk), and TF32. */
void test_cuda_hn_xlmr(void) {
  REQUIRE_CUDA();
  pair p;
  memset(&p, 0, sizeof p);
  lmf_hypernet_config_t c = hn_config_xlmr(1000);
  enum { U = 1200, L = 7 };
  int32_t *S = (int32_t *)lt_malloc(U * L * sizeof(int32_t)), *cp = (int32_t *)lt_malloc(U * sizeof(int32_t));
  if (!S || !cp || !pair_init(&p, &c, 31, -1, FROM_FILE)) goto done;
  make_forms(&c, U, L, 5, S, cp);
  {
    call k = {S, 64, L, 4, cp, 1, 0, LMF_DTYPE_F32, 0};
    parity(&p, &k, "XLM-R, 64 tokens, f32 source");
    k.dtype = LMF_DTYPE_F16;
    parity(&p, &k, "XLM-R, f16 source");
    k.dtype = LMF_DTYPE_BF16;
    k.lang = 25;
    parity(&p, &k, "XLM-R, bf16 source, last language");
    k.dtype = LMF_DTYPE_F32;
    k.lang = 4;
    k.U = U;
    parity(&p, &k, "XLM-R, 1200 tokens (two chunks)");
    k.tf32 = 1;
    parity(&p, &k, "XLM-R, 1200 tokens, TF32");
  }
done:
  pair_free(&p);
  free(S);
  free(cp);
}

/* A Mistral-like hypernet at reduced width (separate output embeddings, n_in = 2 n_embd, 522 fallback
 * rows, no language: all-pad rows attend uniformly), built three ways on the device (host pointers,
 * device pointers, a file): the three give the same bits, and the CPU's results. Strided [E_in | E_out]
 * sources, copies with and without the bias output, TF32. */
void test_cuda_hn_mistral_reduced(void) {
  REQUIRE_CUDA();
  pair p;
  memset(&p, 0, sizeof p);
  lmf_hypernet_t *hd = NULL, *hf = NULL;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  enum { U = 300, L = 7 };
  int32_t *S = (int32_t *)lt_malloc(U * L * sizeof(int32_t)), *cp = (int32_t *)lt_malloc(U * sizeof(int32_t));
  outs a, b;
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  if (!S || !cp || !outs_alloc(&a, U, c.n_embd) || !outs_alloc(&b, U, c.n_embd)) goto done;
  if (!pair_init(&p, &c, 32, LMF_DTYPE_F32, FROM_HOST)) goto done;
  make_forms(&c, U, L, 6, S, cp);
  {
    call k = {S, U, L, -1, cp, 1, 0, LMF_DTYPE_F32, 0};
    parity(&p, &k, "Mistral reduced, from host pointers");
    /* The same weights from device pointers (f32 copied, and bf16 converted on the device) and from a
     * file: the same bits as from host pointers. */
    if (!build_cuda(p.cuda, &p.w, FROM_DEVICE, &hd) || !build_cuda(p.cuda, &p.w, FROM_FILE, &hf)) goto done;
    if (run_cuda(&p, &k, &a) && run_cuda_on(&p, hd, &k, &b, NULL, NULL, NULL)) {
      LMF_CHECK_BYTES_EQ(a.in, b.in, (size_t)(U * c.n_embd) * sizeof(float), "device-pointer build, e_in");
      LMF_CHECK_BYTES_EQ(a.out, b.out, (size_t)(U * c.n_embd) * sizeof(float), "device-pointer build, e_out");
      LMF_CHECK_BYTES_EQ(a.bias, b.bias, (size_t)U * sizeof(float), "device-pointer build, bias");
    }
    if (run_cuda_on(&p, hf, &k, &b, NULL, NULL, NULL)) {
      LMF_CHECK_BYTES_EQ(a.in, b.in, (size_t)(U * c.n_embd) * sizeof(float), "file build, e_in");
      LMF_CHECK_BYTES_EQ(a.out, b.out, (size_t)(U * c.n_embd) * sizeof(float), "file build, e_out");
    }
    k.strided = 1;
    parity(&p, &k, "Mistral reduced, [E_in | E_out] rows");
    if (run_cuda(&p, &k, &b)) /* the same values at another stride: the same bits */
      LMF_CHECK_BYTES_EQ(a.in, b.in, (size_t)(U * c.n_embd) * sizeof(float), "strided source, e_in");
    k.strided = 0;
    k.bias = 0;
    parity(&p, &k, "Mistral reduced, copies without the bias output");
    k.copy = NULL;
    k.bias = 1;
    parity(&p, &k, "Mistral reduced, no copy_ids");
    k.copy = cp;
    k.tf32 = 1;
    parity(&p, &k, "Mistral reduced, TF32");
  }
  /* Weights given as bf16 device tensors (converted on the device) against the CPU. */
  lmf_hypernet_destroy(hd);
  lmf_hypernet_destroy(hf);
  hd = hf = NULL;
  pair_free(&p);
  if (!pair_init(&p, &c, 33, LMF_DTYPE_BF16, FROM_DEVICE)) goto done;
  {
    call k = {S, U, L, -1, cp, 1, 0, LMF_DTYPE_BF16, 0};
    parity(&p, &k, "Mistral reduced, bf16 weights from device pointers");
  }
done:
  lmf_hypernet_destroy(hd);
  lmf_hypernet_destroy(hf);
  outs_free(&a);
  outs_free(&b);
  pair_free(&p);
  free(S);
  free(cp);
}

/* Variants: one head for both embeddings; n_embd wider than H; tied, no rescaling, no bias, one layer,
 * one fallback row; head widths not a multiple of 32 (40) and past one attention pass (288); surface
 * lengths 1 and 16 (past the usual 8) and a language position with L = 12. */
void test_cuda_hn_variants(void) {
  REQUIRE_CUDA();
  enum { U = 120 };
  int32_t *S = (int32_t *)lt_malloc(U * 16 * sizeof(int32_t)), *cp = (int32_t *)lt_malloc(U * sizeof(int32_t));
  if (!S || !cp) goto done;
  for (int v = 0; v < 6; ++v) {
    lmf_hypernet_config_t c = hn_config_mistral_small();
    int32_t L = 7, lang = -1;
    const char *what = "";
    switch (v) {
      case 0: c.single_head = 1; what = "single head"; break;
      case 1: c.hidden_size = 64; c.intermediate_size = 96; c.num_heads = 2; c.n_embd = 160; what = "n_embd > H"; break;
      case 2:
        c.separate_out_embeddings = 0; c.rescale_embeddings = 0; c.predict_bias = 0; c.n_extra_tokens = 0;
        c.num_layers = 1; c.num_heads = 0; what = "tied, plain, 1 layer"; break;
      case 3: c.hidden_size = 120; c.intermediate_size = 200; c.num_heads = 3; c.n_embd = 72; L = 16;
        what = "head width 40, L = 16"; break;
      case 4: c.hidden_size = 288; c.intermediate_size = 320; c.num_heads = 1; L = 1; what = "head width 288, L = 1"; break;
      default:
        c = hn_config_xlmr(500); c.hidden_size = 192; c.intermediate_size = 256; c.num_heads = 3; c.n_embd = 96;
        L = 12; lang = 7; what = "language position, L = 12"; break;
    }
    pair p;
    memset(&p, 0, sizeof p);
    if (pair_init(&p, &c, 40 + (uint64_t)v, v == 2 ? LMF_DTYPE_F16 : LMF_DTYPE_F32, FROM_HOST)) {
      make_forms(&c, U, L, 70 + (uint64_t)v, S, cp);
      call k = {S, U, L, lang, cp, 1, 0, LMF_DTYPE_F32, 0};
      parity(&p, &k, what);
    }
    pair_free(&p);
  }
done:
  free(S);
  free(cp);
}

/* The input cache on the device (rows) with host flags: the same results as without it, flags set for
 * exactly the ids used, valid rows trusted; then a user stream. */
void test_cuda_hn_cache_and_stream(void) {
  REQUIRE_CUDA();
  pair p;
  memset(&p, 0, sizeof p);
  lmf_hypernet_config_t c = hn_config_mistral_small();
  enum { U = 96, L = 7 };
  const int64_t H = c.hidden_size, E = c.n_embd, n_ids = c.original_vocab_size + c.n_extra_tokens;
  int32_t S[U * L], cp[U];
  uint8_t *valid = (uint8_t *)lt_malloc((size_t)n_ids);
  float *cache = NULL, *zero = NULL;
  outs ref, x;
  memset(&ref, 0, sizeof ref);
  memset(&x, 0, sizeof x);
  if (!valid || !outs_alloc(&ref, U, E) || !outs_alloc(&x, U, E)) goto done;
  if (!pair_init(&p, &c, 50, LMF_DTYPE_F32, FROM_HOST)) goto done;
  make_forms(&c, U, L, 9, S, cp);
  cache = (float *)lt_alloc(p.cuda, (size_t)(n_ids * H) * sizeof(float));
  zero = (float *)lt_malloc((size_t)H * sizeof(float));
  if (!cache || !zero) goto done;
  {
    call k = {S, U, L, -1, cp, 1, 0, LMF_DTYPE_F32, 0};
    if (!run_cuda(&p, &k, &ref)) goto done;
    memset(valid, 0, (size_t)n_ids);
    for (int pass = 0; pass < 2; ++pass) {
      if (!run_cuda_on(&p, p.hg, &k, &x, cache, valid, NULL)) goto done;
      LMF_CHECK_BYTES_EQ(x.in, ref.in, (size_t)(U * E) * sizeof(float), pass ? "e_in, cache filled" : "e_in, empty cache");
      LMF_CHECK_BYTES_EQ(x.out, ref.out, (size_t)(U * E) * sizeof(float), "e_out with the cache");
      LMF_CHECK_BYTES_EQ(x.bias, ref.bias, (size_t)U * sizeof(float), "bias with the cache");
    }
    int64_t flagged = 0, used = 0;
    for (int64_t id = 0; id < n_ids; ++id) {
      int in_s = 0;
      for (int64_t u = 0; u < U; ++u) {
        if (cp[u] >= 0) continue; /* a special token is copied, but its row still runs (bias) */
        for (int l = 0; l < L; ++l) in_s |= S[u * L + l] == id && (l == 0 || S[u * L + l] != c.pad_token_id);
      }
      for (int64_t u = 0; u < U; ++u)
        if (cp[u] >= 0) in_s |= S[u * L] == id;
      used += in_s;
      flagged += valid[id];
      if (!LMF_CHECK_MSG(valid[id] == in_s, "input_cache_valid[%lld] is %d; the id is %sused", (long long)id,
                         (int)valid[id], in_s ? "" : "not "))
        break;
    }
    LMF_CHECK_EQ_INT(flagged, used);
    /* A valid row is trusted: zero one, a token using it changes. */
    int64_t u1 = 0;
    while (u1 < U && (cp[u1] >= 0 || S[u1 * L] == c.pad_token_id)) ++u1;
    for (int64_t j = 0; j < H; ++j) zero[j] = 0.0f;
    if (u1 < U && lt_upload(p.cuda, cache + (int64_t)S[u1 * L] * H, zero, (size_t)H * sizeof(float)) &&
        run_cuda_on(&p, p.hg, &k, &x, cache, valid, NULL))
      LMF_CHECK(memcmp(x.in + u1 * E, ref.in + u1 * E, (size_t)E * sizeof(float)) != 0);
#if defined(LMF_HAVE_CUDA)
    /* A user stream: the call enqueues there; the results are the same. */
    cudaStream_t s = NULL;
    if (LMF_CHECK_MSG(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess, "cudaStreamCreate")) {
      if (run_cuda_on(&p, p.hg, &k, &x, NULL, NULL, (lmf_stream_t)s))
        LMF_CHECK_BYTES_EQ(x.in, ref.in, (size_t)(U * E) * sizeof(float), "e_in on a user stream");
      cudaStreamDestroy(s);
    }
#endif
  }
done:
  free(valid);
  free(zero);
  if (p.cuda) lt_free(p.cuda, cache);
  outs_free(&ref);
  outs_free(&x);
  pair_free(&p);
}

/* Bad calls on a CUDA context: the workspace (missing, short, host memory, misaligned, overlapping an
 * output), memory on the wrong side (device ids, host outputs), allow_tf32 not 0/1, FVT. Nothing is
 * written. */
void test_cuda_hn_bad_calls(void) {
  REQUIRE_CUDA();
  pair p;
  memset(&p, 0, sizeof p);
  lmf_hypernet_config_t c = hn_config_mistral_small();
  enum { U = 8, L = 7 };
  const int64_t E = c.n_embd;
  int32_t S[U * L], cp[U];
  float *di = NULL, *dout = NULL, *host_out = NULL;
  int32_t *dS = NULL;
  char *ws = NULL;
  void *hws = NULL;
  if (!pair_init(&p, &c, 60, LMF_DTYPE_F32, FROM_HOST)) goto done;
  make_forms(&c, U, L, 3, S, cp);
  {
    call k = {S, U, L, -1, cp, 0, 0, LMF_DTYPE_F32, 0};
    lmf_hypernet_args_t a = args_of(&p, &k, 1);
    const size_t eb = (size_t)(U * E) * sizeof(float);
    di = (float *)lt_alloc(p.cuda, eb);
    dout = (float *)lt_alloc(p.cuda, eb);
    dS = (int32_t *)lt_alloc(p.cuda, sizeof S);
    host_out = (float *)lt_malloc(eb);
    if (!di || !dout || !dS || !host_out || !lt_memset(p.cuda, di, 0xff, eb) || !lt_memset(p.cuda, dout, 0xff, eb) ||
        !lt_upload(p.cuda, dS, S, sizeof S))
      goto done;
    a.out_in = di;
    a.out_out = dout;
    size_t need = 0;
    if (!LMF_CHECK_OK(lmf_hypernet_workspace_size(p.hg, &a, &need))) goto done;
    LMF_CHECK(need > 0);
    ws = (char *)lt_alloc(p.cuda, need + 64);
    hws = lt_malloc(need);
    if (ws && hws) {
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &a, NULL, 0, NULL), LMF_ERR_NULL_POINTER, "workspace");
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &a, ws, need - 1, NULL), LMF_ERR_INVALID_SIZE, "workspace_bytes");
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &a, hws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "workspace");
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &a, ws + 4, need, NULL), LMF_ERR_INVALID_ARGUMENT, "aligned");
      lmf_hypernet_args_t b = a;
      b.out_in = (float *)ws;
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_OVERLAP, "workspace");
      b = a;
      b.surface_forms = dS;
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "surface_forms");
      b = a;
      b.out_in = host_out;
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "out_in");
      b = a;
      b.source_in = p.src_h[0][0];
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "source_in");
      b = a;
      b.allow_tf32 = 2;
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "allow_tf32");
      b = a;
      S[3] = c.original_vocab_size + c.n_extra_tokens; /* out of range: checked on the host */
      LMF_CHECK_FAIL(lmf_hypernet_predict(p.hg, &b, ws, need, NULL), LMF_ERR_INVALID_ARGUMENT, "surface_forms[0][3]");
      /* Nothing was written. */
      float *back = (float *)lt_malloc(eb);
      if (back && lt_download(p.cuda, back, di, eb)) LMF_CHECK_EQ_INT(lt_count_nonfinite(back, U * E), U * E);
      if (back && lt_download(p.cuda, back, dout, eb)) LMF_CHECK_EQ_INT(lt_count_nonfinite(back, U * E), U * E);
      free(back);
      /* U = 0 needs no workspace. */
      b.num_tokens = 0;
      LMF_CHECK_OK(lmf_hypernet_predict(p.hg, &b, NULL, 0, NULL));
      size_t zero = 1;
      LMF_CHECK_OK(lmf_hypernet_workspace_size(p.hg, &b, &zero));
      LMF_CHECK_EQ_INT(zero, 0);
    }
    /* FVT on CUDA checks its arguments as on the CPU (tests/cuda/test_embed_cuda.c runs it). */
    lmf_fvt_args_t f = LMF_FVT_ARGS_INIT;
    LMF_CHECK_FAIL(lmf_fvt_predict(p.cuda, &f, NULL), LMF_ERR_INVALID_SIZE, "n_embd");
  }
done:
  if (p.cuda) {
    lt_free(p.cuda, di);
    lt_free(p.cuda, dout);
    lt_free(p.cuda, dS);
    lt_free(p.cuda, ws);
  }
  free(host_out);
  free(hws);
  pair_free(&p);
}
