/* lmf_fvt_predict and lmf_dyntok_embed / lmf_dyntok_pipeline on a CUDA context against the CPU backend
 * (label cuda). The same calls run on a CPU context (host buffers) and on a CUDA context (device
 * buffers) and every output is compared:
 *   - FVT: bit for bit in every source dtype (the same fp32 sums in the same order, no FMA), with empty
 *     decompositions, out-of-range ids (unk), copy_ids, untied E_out and a decomposition longer than one
 *     launch's parameter block (split over launches);
 *   - the pipeline: m = 0 (the embedding lookup) and FVT bit for bit; a small random hypernetwork within
 *     the hypernet CUDA tests' tolerance (5e-5 of the RMS in fp32; bf16 outputs: one bf16 rounding more,
 *     so 2^-7 of the value on top); both pad sides, pad_id -1 and a pad row, f32 / bf16 outputs, the
 *     int32 outputs in device and in host memory, and the embedding cache (a second call served from it).
 * Every case is reported SKIPPED when no CUDA device is usable or the build has no CUDA backend. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../dyntok/dt_common.h"
#include "../hypernet/hn_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/hypernet.h"

#define TOL 5e-5

enum { D = 16, BATCH = 16 };

static const int32_t kDtypes[3] = {LMF_DTYPE_F32, LMF_DTYPE_F16, LMF_DTYPE_BF16};

/* Source matrices [rows][stride] in every dtype, on the host and on the device. */
typedef struct sources {
  int64_t rows, stride;
  void *h[3][2]; /* [dtype][in, out] */
  void *d[3][2];
} sources;

static int sources_make(sources *s, lmf_context_t *cuda, int64_t rows, int64_t stride, uint64_t seed) {
  memset(s, 0, sizeof *s);
  s->rows = rows, s->stride = stride;
  const int64_t n = rows * stride;
  for (int side = 0; side < 2; ++side) {
    float *f = hn_source(rows, stride, seed + (uint64_t)side);
    if (!f) return 0;
    s->h[0][side] = f;
    for (int k = 1; k < 3; ++k) {
      s->h[k][side] = lt_malloc((size_t)n * 2);
      if (!s->h[k][side] || !lt_convert(s->h[k][side], kDtypes[k], f, LMF_DTYPE_F32, n)) return 0;
    }
    for (int k = 0; k < 3; ++k) {
      const size_t bytes = (size_t)n * lmf_dtype_size(kDtypes[k]);
      s->d[k][side] = lt_alloc(cuda, bytes);
      if (!s->d[k][side] || !lt_upload(cuda, s->d[k][side], s->h[k][side], bytes)) return 0;
    }
  }
  return 1;
}

static void sources_free(sources *s, lmf_context_t *cuda) {
  for (int k = 0; k < 3; ++k)
    for (int side = 0; side < 2; ++side) {
      free(s->h[k][side]);
      if (cuda) lt_free(cuda, s->d[k][side]);
    }
  memset(s, 0, sizeof *s);
}

/* ---- FVT ------------------------------------------------------------------------------------------ */

void test_cuda_fvt_matches_cpu(void) {
  REQUIRE_CUDA();
  lmf_context_t *cpu = lt_context(LMF_BACKEND_CPU, 0), *cuda = lt_context(LMF_BACKEND_CUDA, 0);
  const int64_t rows = 300, E = 40, stride = 44, U = 200;
  sources src;
  memset(&src, 0, sizeof src);
  int64_t *offs = NULL;
  int32_t *ids = NULL, *copy = NULL;
  float *want[2] = {NULL, NULL}, *got[2] = {NULL, NULL}, *dout[2] = {NULL, NULL};
  if (!LMF_CHECK(cpu && cuda) || !sources_make(&src, cuda, rows, stride, 31)) goto done;
  /* Decompositions: lengths 0 .. 12, token 7 with 20000 ids (longer than a parameter block), some ids
   * out of range (unk), every 9th token copied. */
  offs = (int64_t *)lt_malloc(sizeof(int64_t) * (size_t)(U + 1));
  copy = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)U);
  if (!offs || !copy) goto done;
  uint64_t rng = 99;
  offs[0] = 0;
  for (int64_t u = 0; u < U; ++u) {
    const int64_t len = u == 7 ? 20000 : (int64_t)(lt_next(&rng) % 13);
    offs[u + 1] = offs[u] + len;
    copy[u] = u % 9 == 4 ? (int32_t)(lt_next(&rng) % (uint64_t)rows) : -1;
  }
  ids = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(offs[U] + 1));
  if (!ids) goto done;
  for (int64_t i = 0; i < offs[U]; ++i) {
    const uint64_t x = lt_next(&rng);
    ids[i] = x % 31 == 0 ? (int32_t)rows + 5 : x % 37 == 0 ? -3 : (int32_t)(x % (uint64_t)rows);
  }
  const size_t ob = sizeof(float) * (size_t)(U * E);
  for (int side = 0; side < 2; ++side) {
    want[side] = (float *)lt_malloc(ob);
    got[side] = (float *)lt_malloc(ob);
    dout[side] = (float *)lt_alloc(cuda, ob);
    if (!want[side] || !got[side] || !dout[side]) goto done;
  }
  for (int k = 0; k < 3; ++k)
    for (int untied = 0; untied < 2; ++untied)
      for (int with_copy = 0; with_copy < 2; ++with_copy) {
        lmf_fvt_args_t a = LMF_FVT_ARGS_INIT;
        a.num_tokens = U;
        a.offsets = offs;
        a.ids = ids;
        a.copy_ids = with_copy ? copy : NULL;
        a.source_dtype = kDtypes[k];
        a.n_embd = (int32_t)E;
        a.source_rows = rows;
        a.source_row_stride = stride;
        a.unk_id = 3;
        lmf_fvt_args_t c = a, g = a;
        c.source_in = src.h[k][0];
        c.source_out = untied ? src.h[k][1] : NULL;
        c.out_in = want[0];
        c.out_out = untied ? want[1] : NULL;
        g.source_in = src.d[k][0];
        g.source_out = untied ? src.d[k][1] : NULL;
        g.out_in = dout[0];
        g.out_out = untied ? dout[1] : NULL;
        char what[96];
        snprintf(what, sizeof what, "fvt dtype %d untied %d copy %d", (int)kDtypes[k], untied, with_copy);
        if (!LMF_CHECK_OK(lmf_fvt_predict(cpu, &c, NULL))) continue;
        for (int side = 0; side < 2; ++side) lt_memset(cuda, dout[side], 0xA5, ob);
        if (!LMF_CHECK_OK(lmf_fvt_predict(cuda, &g, NULL)) || !LMF_CHECK_OK(lmf_stream_synchronize(cuda, NULL)))
          continue;
        for (int side = 0; side < 1 + untied; ++side)
          if (lt_download(cuda, got[side], dout[side], ob))
            LMF_CHECK_BYTES_EQ(got[side], want[side], ob, what);
      }
  /* Where the memory lives. */
  {
    lmf_fvt_args_t a = LMF_FVT_ARGS_INIT;
    a.num_tokens = U;
    a.offsets = offs;
    a.ids = ids;
    a.n_embd = (int32_t)E;
    a.source_rows = rows;
    a.source_row_stride = stride;
    a.unk_id = 0;
    a.source_in = src.h[0][0]; /* host memory */
    a.out_in = dout[0];
    LMF_CHECK_FAIL(lmf_fvt_predict(cuda, &a, NULL), LMF_ERR_INVALID_ARGUMENT, "source_in");
    a.source_in = src.d[0][0];
    a.out_in = got[0]; /* host memory */
    LMF_CHECK_FAIL(lmf_fvt_predict(cuda, &a, NULL), LMF_ERR_INVALID_ARGUMENT, "out_in");
    a.out_in = dout[0];
    a.offsets = (const int64_t *)dout[1]; /* device memory the host would read */
    LMF_CHECK_FAIL(lmf_fvt_predict(cuda, &a, NULL), LMF_ERR_INVALID_ARGUMENT, "offsets");
    a.num_tokens = 0; /* nothing to do */
    a.offsets = offs;
    LMF_CHECK_OK(lmf_fvt_predict(cuda, &a, NULL));
  }
done:
  for (int side = 0; side < 2; ++side) {
    free(want[side]);
    free(got[side]);
    if (cuda) lt_free(cuda, dout[side]);
  }
  free(offs);
  free(ids);
  free(copy);
  sources_free(&src, cuda);
  lmf_context_destroy(cpu);
  lmf_context_destroy(cuda);
}

/* ---- The pipeline --------------------------------------------------------------------------------- */

typedef struct env {
  lmf_context_t *cpu, *cuda;
  lmf_vocab_t *v;
  int32_t V;
  dt_corpus c;
  sources src;
  lmf_hypernet_config_t hcfg;
  lmf_hypernet_t *hc, *hg; /* the same random hypernetwork on each context */
} env;

static lmf_hypernet_t *make_hypernet(lmf_context_t *ctx, const hn_weights *w) {
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = hn_tensors(w, &bufs);
  lmf_hypernet_t *h = NULL;
  if (t) LMF_CHECK_OK(lmf_hypernet_create(&h, ctx, &w->cfg, t, w->n));
  hn_tensors_free(t, bufs, w->n);
  return h;
}

static int env_init(env *e) {
  memset(e, 0, sizeof *e);
  e->cpu = lt_context(LMF_BACKEND_CPU, 0);
  e->cuda = lt_context(LMF_BACKEND_CUDA, 0);
  e->v = dt_load_vocab("mistral-7b");
  if (!e->cpu || !e->cuda || !e->v || !dt_corpus_load(&e->c, "mistral-7b", BATCH)) return 0;
  lmf_vocab_size(e->v, &e->V);
  if (!sources_make(&e->src, e->cuda, e->V, D, 101)) return 0;
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_heads = 2;
  c.n_embd = D;
  c.surface_maxlen = 7;
  c.pad_token_id = 2;
  c.original_vocab_size = e->V;
  c.n_extra_tokens = 8;
  c.separate_out_embeddings = 1;
  c.rescale_embeddings = 1;
  c.predict_bias = 1;
  e->hcfg = c;
  hn_weights w;
  if (!hn_weights_make(&w, &c, 7, LMF_DTYPE_F32)) return 0;
  e->hc = make_hypernet(e->cpu, &w);
  e->hg = make_hypernet(e->cuda, &w);
  hn_weights_free(&w);
  return e->hc && e->hg;
}

static void env_free(env *e) {
  lmf_hypernet_destroy(e->hc);
  lmf_hypernet_destroy(e->hg);
  sources_free(&e->src, e->cuda);
  if (e->c.num_langs) dt_corpus_free(&e->c);
  lmf_vocab_destroy(e->v);
  lmf_context_destroy(e->cpu);
  lmf_context_destroy(e->cuda);
  memset(e, 0, sizeof *e);
}

typedef struct ecase {
  int32_t method, m, src_dtype, out_dtype, pad_side, pad_id;
  int with_new;     /* out_new_out / out_new_bias */
  int small_device; /* the int32 outputs in device memory (else host memory) */
  int cached;       /* through a cache, called twice (the second call hits) */
} ecase;

/* got (dtype dt, n elements) against want: bit for bit (exact), or within TOL of want's RMS (plus one
 * 16-bit rounding of the value for 16-bit outputs). */
static int compare_rows(const void *got, const void *want, int64_t n, int32_t dt, int exact, const char *what) {
  const size_t bytes = (size_t)n * lmf_dtype_size(dt);
  if (exact) return LMF_CHECK_BYTES_EQ(got, want, bytes, what);
  float *g = (float *)lt_malloc(sizeof(float) * (size_t)n + 4), *w = (float *)lt_malloc(sizeof(float) * (size_t)n + 4);
  int ok = g && w && lt_convert(g, LMF_DTYPE_F32, got, dt, n) && lt_convert(w, LMF_DTYPE_F32, want, dt, n);
  if (ok) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (double)w[i] * w[i];
    const double rms = sqrt(ss / (double)(n > 0 ? n : 1));
    const double rel = dt == LMF_DTYPE_F32 ? 0.0 : dt == LMF_DTYPE_BF16 ? 1.0 / 128 : 1.0 / 1024;
    for (int64_t i = 0; i < n && ok; ++i) {
      const double d = fabs((double)g[i] - (double)w[i]);
      ok &= LMF_CHECK_MSG(d <= TOL * rms + rel * fabs((double)w[i]) && isfinite(g[i]),
                          "%s: element %lld is %.9g on CUDA, %.9g on the CPU (RMS %.3g)", what, (long long)i,
                          (double)g[i], (double)w[i], rms);
    }
  }
  free(g);
  free(w);
  return ok;
}

/* One pipeline call on both contexts; every output compared. */
static void run_case(env *e, const dt_batch *b, const ecase *k, const char *what) {
  lmf_dyntok_config_t dc;
  lmf_dyntok_config_init(&dc, sizeof dc);
  dc.max_merges = k->m;
  lmf_dyntok_batch_t bt;
  lmf_dyntok_batch_init(&bt, sizeof bt);
  bt.num_seqs = b->B;
  bt.offsets = b->offsets;
  bt.ids = b->ids;
  /* The shape: the merge is the same on every backend. */
  lmf_dyntok_result_t *r = NULL;
  if (!LMF_CHECK_OK(lmf_dyntok_merge(e->cpu, e->v, &bt, &dc, &r))) return;
  int32_t nn = 0;
  lmf_dyntok_embed_shape(r, NULL, NULL, &nn);
  lmf_dyntok_result_destroy(r);
  int64_t L = 0;
  for (int64_t s = 0; s < b->B; ++s)
    if (b->offsets[s + 1] - b->offsets[s] > L) L = b->offsets[s + 1] - b->offsets[s];
  const size_t cells = (size_t)(b->B * L), es = lmf_dtype_size(k->out_dtype);
  const size_t eb = cells * D * es + 4, nb = ((size_t)nn + 1) * D * es, sb = cells * 4 + 4, bb = ((size_t)nn + 1) * 4;
  const int sk = k->src_dtype == LMF_DTYPE_F16 ? 1 : k->src_dtype == LMF_DTYPE_BF16 ? 2 : 0;
  const int hyper = k->method == LMF_DYNTOK_EMBED_HYPERNET;
  /* Host: the CPU's outputs [0] and the CUDA ones downloaded [1]; device: the CUDA outputs. */
  void *emb[2], *nout[2];
  int32_t *small[2][4];
  float *bias[2];
  int64_t maxlen[2] = {-7, -7};
  void *d_emb = lt_alloc(e->cuda, eb), *d_nout = lt_alloc(e->cuda, nb);
  float *d_bias = (float *)lt_alloc(e->cuda, bb);
  int32_t *d_small[4];
  int ok = d_emb && d_nout && d_bias;
  for (int i = 0; i < 2; ++i) {
    emb[i] = lt_malloc(eb);
    nout[i] = lt_malloc(nb);
    bias[i] = (float *)lt_malloc(bb);
    ok &= emb[i] && nout[i] && bias[i];
    for (int j = 0; j < 4; ++j) {
      small[i][j] = (int32_t *)lt_malloc(sb);
      ok &= small[i][j] != NULL;
    }
  }
  for (int j = 0; j < 4; ++j) {
    d_small[j] = k->small_device ? (int32_t *)lt_alloc(e->cuda, sb) : NULL;
    ok &= !k->small_device || d_small[j];
  }
  lmf_embed_cache_t *cache[2] = {NULL, NULL};
  if (ok && k->cached)
    for (int i = 0; i < 2; ++i) {
      lmf_embed_cache_config_t cc;
      lmf_embed_cache_config_init(&cc, sizeof cc);
      cc.n_embd = D;
      cc.capacity = 100000;
      cc.with_out = 1; /* both methods predict e_out here (untied hypernet; FVT with source_out) */
      ok &= LMF_CHECK_OK(lmf_embed_cache_create(&cache[i], &cc));
    }
  for (int call = 0; ok && call < 1 + k->cached; ++call) {
    for (int i = 0; i < 2; ++i) {
      memset(emb[i], 0xA5, eb);
      memset(nout[i], 0xA5, nb);
      memset(bias[i], 0xA5, bb);
      for (int j = 0; j < 4; ++j) memset(small[i][j], 0xA5, sb);
    }
    lt_memset(e->cuda, d_emb, 0xA5, eb);
    lt_memset(e->cuda, d_nout, 0xA5, nb);
    lt_memset(e->cuda, d_bias, 0xA5, bb);
    for (int j = 0; j < 4; ++j)
      if (d_small[j]) lt_memset(e->cuda, d_small[j], 0xA5, sb);
    for (int i = 0; i < 2 && ok; ++i) {
      const int dev = i == 1;
      lmf_dyntok_embed_args_t a;
      lmf_dyntok_embed_args_init(&a, sizeof a);
      a.method = k->method;
      a.hypernet = hyper ? (dev ? e->hg : e->hc) : NULL;
      a.cache = cache[i];
      a.n_embd = D;
      a.source_in = dev ? e->src.d[sk][0] : e->src.h[sk][0];
      a.source_out = dev ? e->src.d[sk][1] : e->src.h[sk][1];
      a.source_rows = e->V;
      a.source_dtype = k->src_dtype;
      a.out_dtype = k->out_dtype;
      a.pad_side = k->pad_side;
      a.pad_id = k->pad_id;
      a.out_embeds = dev ? d_emb : emb[0];
      int32_t *const *sm = dev && k->small_device ? d_small : small[i];
      a.out_mask = sm[0];
      a.out_ids = sm[1];
      a.out_span_start = sm[2];
      a.out_span_len = sm[3];
      a.out_new_out = k->with_new ? (dev ? d_nout : nout[0]) : NULL;
      a.out_new_bias = k->with_new ? (dev ? d_bias : bias[0]) : NULL;
      a.out_max_len = &maxlen[i];
      ok &= LMF_CHECK_OK(lmf_dyntok_pipeline(dev ? e->cuda : e->cpu, e->v, &bt, &dc, &a, NULL));
    }
    if (!ok) break;
    ok &= lt_download(e->cuda, emb[1], d_emb, eb) && lt_download(e->cuda, nout[1], d_nout, nb) &&
          lt_download(e->cuda, bias[1], d_bias, bb);
    for (int j = 0; j < 4 && ok; ++j)
      if (k->small_device) ok &= lt_download(e->cuda, small[1][j], d_small[j], sb);
    if (!ok) break;
    char w2[160];
    snprintf(w2, sizeof w2, "%s (call %d)", what, call);
    LMF_CHECK_MSG(maxlen[0] == maxlen[1], "%s: out_max_len %lld on CUDA, %lld on the CPU", w2, (long long)maxlen[1],
                  (long long)maxlen[0]);
    for (int j = 0; j < 4; ++j) LMF_CHECK_BYTES_EQ(small[1][j], small[0][j], cells * 4, w2);
    /* Base rows and padding are exact in every case; predicted rows within the tolerance. */
    compare_rows(emb[1], emb[0], (int64_t)cells * D, k->out_dtype, !hyper, w2);
    if (k->with_new) {
      compare_rows(nout[1], nout[0], (int64_t)nn * D, k->out_dtype, !hyper, w2);
      compare_rows(bias[1], bias[0], nn, LMF_DTYPE_F32, !hyper, w2);
    }
    if (hyper) { /* tokens of the vocabulary: their E_in rows, bit for bit */
      for (size_t c = 0; c < cells; ++c)
        if (small[0][1][c] >= 0 && small[0][1][c] < e->V && small[0][0][c] == 1)
          if (!LMF_CHECK_MSG(memcmp((char *)emb[1] + c * D * es, (char *)emb[0] + c * D * es, D * es) == 0,
                             "%s: cell %zu (id %d): a base row differs", w2, c, small[0][1][c]))
            break;
    }
  }
  for (int i = 0; i < 2; ++i) {
    lmf_embed_cache_destroy(cache[i]);
    free(emb[i]);
    free(nout[i]);
    free(bias[i]);
    for (int j = 0; j < 4; ++j) free(small[i][j]);
  }
  for (int j = 0; j < 4; ++j) lt_free(e->cuda, d_small[j]);
  lt_free(e->cuda, d_emb);
  lt_free(e->cuda, d_nout);
  lt_free(e->cuda, d_bias);
}

void test_cuda_embed_lookup_matches_cpu(void) {
  REQUIRE_CUDA();
  env e;
  if (!env_init(&e)) goto done;
  for (int L = 0; L < e.c.num_langs; L += 5)
    for (int v = 0; v < 4; ++v) {
      const ecase k = {LMF_DYNTOK_EMBED_FVT, 0, v & 1 ? LMF_DTYPE_BF16 : LMF_DTYPE_F32,
                       v & 2 ? LMF_DTYPE_BF16 : LMF_DTYPE_F32, v % 3 == 0 ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT,
                       v == 1 ? 2 : -1, 0, v & 1, 0};
      char what[96];
      snprintf(what, sizeof what, "m = 0, %s, variant %d", e.c.lang[L], v);
      run_case(&e, &e.c.batch[L], &k, what);
    }
done:
  env_free(&e);
}

void test_cuda_embed_fvt_matches_cpu(void) {
  REQUIRE_CUDA();
  env e;
  if (!env_init(&e)) goto done;
  for (int L = 1; L < e.c.num_langs; L += 4)
    for (int v = 0; v < 4; ++v) {
      const ecase k = {LMF_DYNTOK_EMBED_FVT, 150, v == 3 ? LMF_DTYPE_BF16 : LMF_DTYPE_F32,
                       v & 1 ? LMF_DTYPE_BF16 : LMF_DTYPE_F32, v & 2 ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT,
                       v == 2 ? 5 : -1, v != 1, v & 1, v == 2};
      char what[96];
      snprintf(what, sizeof what, "FVT, %s, variant %d", e.c.lang[L], v);
      run_case(&e, &e.c.batch[L], &k, what);
    }
done:
  env_free(&e);
}

void test_cuda_embed_hypernet_matches_cpu(void) {
  REQUIRE_CUDA();
  env e;
  if (!env_init(&e)) goto done;
  for (int L = 2; L < e.c.num_langs; L += 5)
    for (int v = 0; v < 4; ++v) {
      const ecase k = {LMF_DYNTOK_EMBED_HYPERNET, 120, LMF_DTYPE_F32, v & 1 ? LMF_DTYPE_BF16 : LMF_DTYPE_F32,
                       v & 2 ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT, v == 1 ? 2 : -1, v != 2, v & 1, v == 3};
      char what[96];
      snprintf(what, sizeof what, "hypernet, %s, variant %d", e.c.lang[L], v);
      run_case(&e, &e.c.batch[L], &k, what);
    }
  /* A hypernetwork of another context kind is refused. */
  {
    lmf_dyntok_embed_args_t a;
    lmf_dyntok_embed_args_init(&a, sizeof a);
    a.hypernet = e.hc;
    a.n_embd = D;
    a.source_in = e.src.d[0][0];
    a.source_out = e.src.d[0][1];
    a.source_rows = e.V;
    a.out_embeds = e.src.d[1][0];
    lmf_dyntok_config_t dc;
    lmf_dyntok_config_init(&dc, sizeof dc);
    lmf_dyntok_batch_t bt;
    lmf_dyntok_batch_init(&bt, sizeof bt);
    bt.num_seqs = e.c.batch[0].B;
    bt.offsets = e.c.batch[0].offsets;
    bt.ids = e.c.batch[0].ids;
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(e.cuda, e.v, &bt, &dc, &a, NULL), LMF_ERR_INVALID_ARGUMENT, "hypernet");
    a.hypernet = e.hg;
    a.source_in = e.src.h[0][0]; /* host memory */
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(e.cuda, e.v, &bt, &dc, &a, NULL), LMF_ERR_INVALID_ARGUMENT, "source_in");
  }
done:
  env_free(&e);
}
