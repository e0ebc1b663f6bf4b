/* The hypernetwork forward pass against the double reference, and its exact properties.
 *
 * Tolerance. The library computes in fp32 (unit roundoff u = 6e-8) with FMA-based GEMMs; the reference
 * in double. Each output goes through ~12 dot products of length <= 1536 (XLM-R) in sequence, each
 * relative error ~ sqrt(K) u ~ 2e-6 for random-sign terms, plus the LayerNorms (which renormalise, so
 * errors do not compound beyond a small factor) and fp32 erf/tanh/exp (a few ulp). Measured errors are
 * 2e-6 .. 8e-6 of the outputs' RMS; the tolerance, 5e-5 of the RMS, leaves a margin of 6x or more
 * while staying far below what a wrong formula gives: swapping the GELU variants or the
 * LayerNorm eps values moves the outputs by 1e-4 .. 1e-2 of their RMS here (test_hn_sensitivity checks
 * that each swap exceeds 4x the tolerance). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hn_common.h"
#include "hn_run.h"
#include "lmf_check.h"
#include "lmf_test_util.h"

#define TOL 5e-5

/* A deterministic id in [lo, hi) that is not `avoid`. */
static int32_t pick(uint64_t *st, int32_t lo, int32_t hi, int32_t avoid) {
  for (;;) {
    int32_t v = lo + (int32_t)(lt_next(st) % (uint64_t)(hi - lo));
    if (v != avoid) return v;
  }
}

/* Eight tokens exercising every path: lengths 1 and 7, pad in the middle, fallback ids (first and
 * last fallback row), a special token (copied), an all-pad row, repeated ids. copy_ids gets -1 except
 * for the special token (id `special`). */
static void make_inputs(const lmf_hypernet_config_t *c, int32_t *S, int32_t *copy_ids, int32_t special) {
  const int32_t L = 7, pad = c->pad_token_id, V0 = c->original_vocab_size;
  const int32_t nfb = c->n_extra_tokens > 1 ? c->n_extra_tokens : 1;
  uint64_t st = 99;
  for (int i = 0; i < 8 * L; ++i) S[i] = pad;
  for (int u = 0; u < 8; ++u) copy_ids[u] = -1;
  S[0 * L + 0] = pick(&st, 3, V0, pad); /* length 1 */
  for (int l = 0; l < L; ++l) S[1 * L + l] = pick(&st, 3, V0, pad); /* length 7 */
  S[2 * L + 0] = pick(&st, 3, V0, pad); /* pad in the middle */
  S[2 * L + 2] = pick(&st, 3, V0, pad);
  S[2 * L + 3] = pick(&st, 3, V0, pad);
  S[3 * L + 0] = V0 + 5 % nfb; /* fallback rows */
  S[3 * L + 1] = pick(&st, 3, V0, pad);
  S[4 * L + 0] = V0 + nfb - 1;
  S[4 * L + 1] = V0;
  S[5 * L + 0] = special; /* a special token: [id, pad, ...], copied */
  copy_ids[5] = special;
  /* token 6: all pad */
  S[7 * L + 0] = S[7 * L + 1] = pick(&st, 3, V0, pad); /* repeated ids */
  S[7 * L + 2] = S[1 * L + 3];
}

typedef struct outs {
  float *in, *out, *bias;
  double *rin, *rout, *rbias;
} outs;

static int outs_alloc(outs *o, int64_t U, int64_t E) {
  memset(o, 0, sizeof *o);
  o->in = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  o->out = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  o->bias = (float *)lt_malloc((size_t)U * sizeof(float));
  o->rin = (double *)lt_malloc((size_t)(U * E) * sizeof(double));
  o->rout = (double *)lt_malloc((size_t)(U * E) * sizeof(double));
  o->rbias = (double *)lt_malloc((size_t)U * sizeof(double));
  if (!o->in || !o->out || !o->bias || !o->rin || !o->rout || !o->rbias) return 0;
  lt_poison_f32(o->in, U * E);
  lt_poison_f32(o->out, U * E);
  lt_poison_f32(o->bias, U);
  return 1;
}

static void outs_free(outs *o) {
  free(o->in);
  free(o->out);
  free(o->bias);
  free(o->rin);
  free(o->rout);
  free(o->rbias);
}

/* Runs the 8-token batch on fx and compares every output with the reference. */
static void check_against_reference(hn_fx *fx, const char *what) {
  const lmf_hypernet_config_t *c = &fx->w.cfg;
  const int64_t U = 8, E = c->n_embd;
  int32_t S[8 * 7], cp[8];
  make_inputs(c, S, cp, 0);
  const int32_t lang = c->embed_lang_id ? 4 : -1;
  outs o;
  if (!outs_alloc(&o, U, E)) goto done;
  float *oo = c->separate_out_embeddings ? o.out : NULL;
  if (!LMF_CHECK_OK(hn_predict(fx, fx->h, S, U, 7, lang, cp, o.in, oo, o.bias))) goto done;
  hn_all_written(o.in, U * E, "e_in");
  if (oo) hn_all_written(oo, U * E, "e_out");
  hn_all_written(o.bias, U, "bias");
  lmf_ref_hn_config rc = hn_ref_config(c);
  if (!hn_reference(fx, &rc, S, U, 7, lang, cp, o.rin, oo ? o.rout : NULL, o.rbias)) goto done;
  double e1 = 0, e2 = 0, e3 = 0;
  char w[128];
  snprintf(w, sizeof w, "%s e_in", what);
  hn_check_close(o.in, o.rin, U * E, TOL, w, &e1);
  if (oo) {
    snprintf(w, sizeof w, "%s e_out", what);
    hn_check_close(oo, o.rout, U * E, TOL, w, &e2);
  }
  snprintf(w, sizeof w, "%s bias", what);
  hn_check_close(o.bias, o.rbias, U, TOL, w, &e3);
  lmf_t_note("%s: max error / rms: e_in %.2e, e_out %.2e, bias %.2e (tolerance %.0e)", what, e1, e2, e3, TOL);
  /* The special token's embeddings are exactly its source rows. */
  LMF_CHECK_BYTES_EQ(o.in + 5 * E, fx->e_in + cp[5] * E, (size_t)E * sizeof(float), "special token e_in");
  if (oo) LMF_CHECK_BYTES_EQ(oo + 5 * E, fx->e_out + cp[5] * E, (size_t)E * sizeof(float), "special token e_out");
done:
  outs_free(&o);
}

/* The XLM-R hypernet's shape in full (H 768, I 1536, 12 heads, 3 layers, 161 fallback rows, 26
 * languages, rescaling, bias), weights in mixed F32/F16/BF16 saved as safetensors and loaded. */
void test_hn_forward_xlmr_full(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_xlmr(1000);
  if (hn_fx_init(&fx, &c, 1, -1, 1, 0)) check_against_reference(&fx, "XLM-R shape");
  hn_fx_free(&fx);
}

/* A Mistral-like hypernet at reduced width: separate output embeddings (n_in = 2 n_embd), 522 fallback
 * rows, no language embedding (so the all-pad row is fully masked: uniform attention). */
void test_hn_forward_mistral_reduced(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  if (hn_fx_init(&fx, &c, 2, LMF_DTYPE_F32, 1, 0)) check_against_reference(&fx, "Mistral reduced");
  hn_fx_free(&fx);
}

/* Every GEMM kernel and GELU path (LMF_HYPERNET_KERNEL caps the library's choice: plain C with libm
 * GELUs, AVX2, the best one) against the reference, with widths that are not multiples of a panel. */
void test_hn_forward_kernels(void) {
  static const char *caps[] = {"c", "avx2", NULL};
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  c.hidden_size = 192; /* not a multiple of the 32-column panels */
  c.intermediate_size = 320;
  c.num_heads = 3;
  c.n_embd = 72;
  if (hn_fx_init(&fx, &c, 21, LMF_DTYPE_F32, 0, 0)) {
    for (int k = 0; k < 3; ++k) {
      if (caps[k])
        setenv("LMF_HYPERNET_KERNEL", caps[k], 1);
      else
        unsetenv("LMF_HYPERNET_KERNEL");
      char what[64];
      snprintf(what, sizeof what, "kernel %s", caps[k] ? caps[k] : "best");
      check_against_reference(&fx, what);
    }
  }
  unsetenv("LMF_HYPERNET_KERNEL");
  hn_fx_free(&fx);
}

/* Variants: one head for both embeddings; tied, no rescaling, no bias, no fallback rows, 1 layer,
 * default heads (H / 64). */
void test_hn_forward_variants(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  c.single_head = 1;
  if (hn_fx_init(&fx, &c, 3, LMF_DTYPE_BF16, 0, 0)) check_against_reference(&fx, "single head");
  hn_fx_free(&fx);

  /* n_embd wider than the hidden size (the head outputs outgrow the hidden-size buffers) */
  c = hn_config_mistral_small();
  c.hidden_size = 64;
  c.intermediate_size = 96;
  c.num_heads = 2;
  c.n_embd = 160;
  if (hn_fx_init(&fx, &c, 7, LMF_DTYPE_F32, 0, 0)) check_against_reference(&fx, "n_embd > hidden");
  hn_fx_free(&fx);

  c = hn_config_mistral_small();
  c.separate_out_embeddings = 0;
  c.rescale_embeddings = 0;
  c.predict_bias = 0;
  c.n_extra_tokens = 0;
  c.num_layers = 1;
  c.num_heads = 0;
  if (hn_fx_init(&fx, &c, 4, LMF_DTYPE_F16, 0, 0)) {
    check_against_reference(&fx, "tied, plain, 1 layer");
    float bias[8];
    int32_t S[8 * 7], cp[8];
    float *ei = (float *)lt_malloc(8 * (size_t)c.n_embd * sizeof(float));
    make_inputs(&c, S, cp, 0);
    if (ei && LMF_CHECK_OK(hn_predict(&fx, fx.h, S, 8, 7, -1, NULL, ei, NULL, bias)))
      for (int u = 0; u < 8; ++u) LMF_CHECK_EQ_INT(lt_f32_bits(bias[u]), 0); /* no bias head: 0 */
    free(ei);
  }
  hn_fx_free(&fx);
}

/* The tolerance separates the right architecture from near-miss ones: each swapped GELU or LayerNorm
 * eps moves the reference by more than 4x the tolerance, while the right reference is within it. The
 * embeddings' LayerNorm only feels its eps when its input is small: here the input projection's LN
 * scale and the position/type embeddings are shrunk so that it is. */
void test_hn_sensitivity(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  if (!hn_fx_init(&fx, &c, 5, LMF_DTYPE_F32, 0, 0)) goto done;
  {
    static const char *shrink[] = {"input_projection.1.ln.weight", "input_projection.1.ln.bias",
                                   "model.embeddings.position_embeddings.weight",
                                   "model.embeddings.token_type_embeddings.weight"};
    for (size_t i = 0; i < 4; ++i) {
      hn_tensor *t = hn_weights_find(&fx.w, shrink[i]);
      if (!LMF_CHECK(t != NULL)) goto done;
      for (int64_t j = 0; j < t->numel; ++j) t->data[j] *= 0.01f;
    }
    lmf_hypernet_destroy(fx.h);
    fx.h = NULL;
    void **bufs = NULL;
    lmf_hypernet_tensor_t *tt = hn_tensors(&fx.w, &bufs);
    if (!tt) goto done;
    int ok = LMF_CHECK_OK(lmf_hypernet_create(&fx.h, fx.ctx, &c, tt, fx.w.n));
    hn_tensors_free(tt, bufs, fx.w.n);
    if (!ok) goto done;
  }
  {
    const int64_t U = 8, E = c.n_embd;
    int32_t S[8 * 7], cp[8];
    make_inputs(&c, S, cp, 0);
    for (int u = 0; u < 8; ++u) cp[u] = -1;
    outs o;
    if (outs_alloc(&o, U, E) && LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, 7, -1, NULL, o.in, o.out, o.bias))) {
      lmf_ref_hn_config rc = hn_ref_config(&c);
      double err;
      if (hn_reference(&fx, &rc, S, U, 7, -1, NULL, o.rin, o.rout, o.rbias))
        hn_check_close(o.in, o.rin, U * E, TOL, "right reference", &err);
      const char *names[4] = {"erf GELU in the projector blocks", "tanh GELU in the RoBERTa layers",
                              "projector LayerNorm eps 1e-5", "RoBERTa LayerNorm eps 1e-6"};
      for (int v = 0; v < 4; ++v) {
        lmf_ref_hn_config wrong = hn_ref_config(&c);
        if (v == 0) wrong.block_gelu_erf = 1;
        if (v == 1) wrong.layer_gelu_tanh = 1;
        if (v == 2) wrong.eps_block = 1e-5;
        if (v == 3) wrong.eps_roberta = 1e-6;
        if (!hn_reference(&fx, &wrong, S, U, 7, -1, NULL, o.rin, o.rout, o.rbias)) break;
        double ss = 0, worst = 0;
        for (int64_t i = 0; i < U * E; ++i) ss += o.rin[i] * o.rin[i];
        for (int64_t i = 0; i < U * E; ++i) {
          double d = fabs(o.in[i] - o.rin[i]);
          if (d > worst) worst = d;
        }
        double rel = worst / sqrt(ss / (double)(U * E));
        lmf_t_note("%s: the library differs by %.2e of the rms", names[v], rel);
        LMF_CHECK_MSG(rel > 4 * TOL, "a reference with %s is within %.2e of the library: the tolerance %.0e "
                      "cannot tell the variants apart", names[v], rel, TOL);
      }
    }
    outs_free(&o);
  }
done:
  hn_fx_free(&fx);
}

/* Exact properties (bit for bit): padded positions do not matter; L = 1 equals L = 7 padded; tokens
 * made of fallback ids do not read the source embeddings; the result of a token does not depend on
 * its batch (chunking, other tokens) or the thread count; copied tokens are their source rows and
 * keep their predicted bias. */
void test_hn_exact_properties(void) {
  hn_fx fx, fx1;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  memset(&fx1, 0, sizeof fx1);
  const int64_t E = c.n_embd;
  const int32_t pad = c.pad_token_id, V0 = c.original_vocab_size;
  enum { U = 200, L = 7 };
  int32_t *S = (int32_t *)lt_malloc(U * L * sizeof(int32_t));
  float *a_in = (float *)lt_malloc((size_t)(U * E) * sizeof(float)), *a_out = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  float *b_in = (float *)lt_malloc((size_t)(U * E) * sizeof(float)), *b_out = (float *)lt_malloc((size_t)(U * E) * sizeof(float));
  float a_b[U], b_b[U];
  if (!S || !a_in || !a_out || !b_in || !b_out) goto done;
  if (!hn_fx_init(&fx, &c, 6, LMF_DTYPE_F32, 0, 0)) goto done;
  /* 200 tokens of random lengths 1..7 (some pads inside), a few fallback ids: more than one chunk. */
  uint64_t st = 7;
  for (int u = 0; u < U; ++u) {
    int len = 1 + (int)(lt_next(&st) % L);
    for (int l = 0; l < L; ++l) {
      int32_t id = pad;
      if (l < len) id = lt_next(&st) % 10 == 0 ? V0 + (int32_t)(lt_next(&st) % 522) : pick(&st, 0, V0, pad);
      if (l > 0 && l < len && lt_next(&st) % 9 == 0) id = pad;
      S[u * L + l] = id;
    }
  }
  if (!LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, L, -1, NULL, a_in, a_out, a_b))) goto done;
  /* One token at a time. */
  for (int u = 0; u < U; ++u)
    if (!LMF_CHECK_OK(hn_predict(&fx, fx.h, S + u * L, 1, L, -1, NULL, b_in + u * E, b_out + u * E, b_b + u))) goto done;
  LMF_CHECK_BYTES_EQ(a_in, b_in, (size_t)(U * E) * sizeof(float), "e_in, batch of 200 vs one at a time");
  LMF_CHECK_BYTES_EQ(a_out, b_out, (size_t)(U * E) * sizeof(float), "e_out, batch of 200 vs one at a time");
  LMF_CHECK_BYTES_EQ(a_b, b_b, sizeof a_b, "bias, batch of 200 vs one at a time");
  /* One thread. */
  if (!hn_fx_init(&fx1, &c, 6, LMF_DTYPE_F32, 0, 1)) goto done;
  if (LMF_CHECK_OK(hn_predict(&fx1, fx1.h, S, U, L, -1, NULL, b_in, b_out, b_b))) {
    LMF_CHECK_BYTES_EQ(a_in, b_in, (size_t)(U * E) * sizeof(float), "e_in, 1 thread vs default");
    LMF_CHECK_BYTES_EQ(a_b, b_b, sizeof a_b, "bias, 1 thread vs default");
  }
  /* The pad row of the source embeddings is never read for tokens with a non-pad id. */
  for (int64_t j = 0; j < E; ++j) {
    fx.e_in[(int64_t)pad * E + j] += 1.0f;
    fx.e_out[(int64_t)pad * E + j] -= 1.0f;
  }
  if (LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, L, -1, NULL, b_in, b_out, b_b))) {
    LMF_CHECK_BYTES_EQ(a_in, b_in, (size_t)(U * E) * sizeof(float), "e_in after changing the pad row");
    LMF_CHECK_BYTES_EQ(a_b, b_b, sizeof a_b, "bias after changing the pad row");
  }
  /* [a] with L = 1 equals [a, pad x 6] with L = 7 (no language position here). */
  {
    int32_t one = S[0], seven[7];
    for (int l = 0; l < 7; ++l) seven[l] = l == 0 ? one : pad;
    float x1[128], x7[128], o1[128], o7[128], bb1, bb7;
    if (LMF_CHECK_OK(hn_predict(&fx, fx.h, &one, 1, 1, -1, NULL, x1, o1, &bb1)) &&
        LMF_CHECK_OK(hn_predict(&fx, fx.h, seven, 1, 7, -1, NULL, x7, o7, &bb7))) {
      LMF_CHECK_BYTES_EQ(x1, x7, sizeof x1, "e_in, L = 1 vs L = 7 padded");
      LMF_CHECK_BYTES_EQ(o1, o7, sizeof o1, "e_out, L = 1 vs L = 7 padded");
      LMF_CHECK_EQ_INT(lt_f32_bits(bb1), lt_f32_bits(bb7));
    }
  }
  /* Tokens made only of fallback ids do not depend on the source embeddings at all. */
  {
    int32_t F[2 * 7];
    for (int l = 0; l < 7; ++l) F[l] = F[7 + l] = pad;
    F[0] = V0 + 3;
    F[7] = V0 + 100;
    F[8] = V0 + 521;
    float x[2 * 128], y[2 * 128], ox[2 * 128], oy[2 * 128], bx[2], by[2];
    if (LMF_CHECK_OK(hn_predict(&fx, fx.h, F, 2, 7, -1, NULL, x, ox, bx))) {
      float *keep_in = fx.e_in, *keep_out = fx.e_out;
      fx.e_in = hn_source(fx.rows, E, 1234);
      fx.e_out = hn_source(fx.rows, E, 4321);
      if (fx.e_in && fx.e_out && LMF_CHECK_OK(hn_predict(&fx, fx.h, F, 2, 7, -1, NULL, y, oy, by))) {
        LMF_CHECK_BYTES_EQ(x, y, sizeof x, "fallback-only tokens, other source embeddings");
        LMF_CHECK_BYTES_EQ(ox, oy, sizeof ox, "fallback-only tokens, other source embeddings (e_out)");
      }
      free(fx.e_in);
      free(fx.e_out);
      fx.e_in = keep_in;
      fx.e_out = keep_out;
    }
  }
  /* Copied tokens: exactly the source rows; their bias is the predicted one; the other tokens do not
   * change; without a bias output the copies are still made. */
  {
    int32_t cp[U];
    for (int u = 0; u < U; ++u) cp[u] = u % 5 == 0 ? u % V0 : -1;
    if (LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, L, -1, NULL, a_in, a_out, a_b)) &&
        LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, L, -1, cp, b_in, b_out, b_b))) {
      for (int u = 0; u < U; ++u) {
        if (cp[u] >= 0) {
          LMF_CHECK_BYTES_EQ(b_in + u * E, fx.e_in + (int64_t)cp[u] * E, (size_t)E * sizeof(float), "copied e_in");
          LMF_CHECK_BYTES_EQ(b_out + u * E, fx.e_out + (int64_t)cp[u] * E, (size_t)E * sizeof(float), "copied e_out");
        } else {
          LMF_CHECK_BYTES_EQ(b_in + u * E, a_in + u * E, (size_t)E * sizeof(float), "predicted e_in beside copies");
        }
      }
      LMF_CHECK_BYTES_EQ(a_b, b_b, sizeof a_b, "bias of copied tokens is still predicted");
      lt_poison_f32(b_in, U * E);
      lt_poison_f32(b_out, U * E);
      if (LMF_CHECK_OK(hn_predict(&fx, fx.h, S, U, L, -1, cp, b_in, b_out, NULL))) {
        for (int u = 0; u < U; ++u)
          if (cp[u] >= 0)
            LMF_CHECK_BYTES_EQ(b_in + u * E, fx.e_in + (int64_t)cp[u] * E, (size_t)E * sizeof(float), "copy, no bias");
          else
            LMF_CHECK_BYTES_EQ(b_in + u * E, a_in + u * E, (size_t)E * sizeof(float), "predicted, no bias");
      }
    }
  }
done:
  hn_fx_free(&fx);
  hn_fx_free(&fx1);
  free(S);
  free(a_in);
  free(a_out);
  free(b_in);
  free(b_out);
}

/* The input cache: same results, flags set exactly for the ids used, valid rows are read. An explicit
 * workspace gives the same results as the library's own. f16/bf16 source embeddings equal f32 ones
 * holding the same values; a concatenated [V0][2 n_embd] source equals two matrices. U = 0 is a no-op. */
void test_hn_cache_workspace_sources(void) {
  hn_fx fx;
  lmf_hypernet_config_t c = hn_config_mistral_small();
  const int64_t E = c.n_embd, H = c.hidden_size;
  const int64_t n_ids = c.original_vocab_size + c.n_extra_tokens;
  float *cache = (float *)lt_malloc((size_t)(n_ids * H) * sizeof(float));
  uint8_t *valid = (uint8_t *)lt_malloc((size_t)n_ids);
  float *cat = NULL;
  void *ws = NULL, *half_in = NULL, *half_out = NULL;
  float ref_in[8 * 128], ref_out[8 * 128], ref_b[8], x_in[8 * 128], x_out[8 * 128], x_b[8];
  int32_t S[8 * 7], cp[8];
  if (!cache || !valid || !hn_fx_init(&fx, &c, 8, LMF_DTYPE_F32, 0, 0)) goto done;
  make_inputs(&c, S, cp, 0);
  if (!LMF_CHECK_OK(hn_predict(&fx, fx.h, S, 8, 7, -1, NULL, ref_in, ref_out, ref_b))) goto done;

  lmf_hypernet_args_t a = LMF_HYPERNET_ARGS_INIT;
  a.num_tokens = 8;
  a.surface_len = 7;
  a.surface_forms = S;
  a.source_in = fx.e_in;
  a.source_out = fx.e_out;
  a.source_rows = fx.rows;
  a.out_in = x_in;
  a.out_out = x_out;
  a.out_bias = x_b;
  a.input_cache = cache;
  a.input_cache_valid = valid;
  memset(valid, 0, (size_t)n_ids);
  for (int pass = 0; pass < 2; ++pass) {
    lt_poison_f32(x_in, 8 * E);
    if (!LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, NULL, 0, NULL))) goto done;
    LMF_CHECK_BYTES_EQ(x_in, ref_in, sizeof x_in, pass ? "e_in, cache filled" : "e_in, empty cache");
    LMF_CHECK_BYTES_EQ(x_b, ref_b, sizeof x_b, "bias with the cache");
  }
  int64_t flagged = 0, used = 0;
  for (int64_t id = 0; id < n_ids; ++id) {
    int in_s = 0;
    for (int i = 0; i < 8 * 7; ++i) in_s |= S[i] == id;
    used += in_s;
    flagged += valid[id];
    if (!LMF_CHECK_EQ_INT(valid[id], in_s)) break;
  }
  LMF_CHECK_EQ_INT(flagged, used);
  /* A valid row is trusted: change one, the result changes. */
  for (int64_t j = 0; j < H; ++j) cache[(int64_t)S[7] * H + j] = 0.0f;
  if (LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, NULL, 0, NULL)))
    LMF_CHECK(memcmp(x_in + 1 * E, ref_in + 1 * E, (size_t)E * sizeof(float)) != 0);
  a.input_cache = NULL;
  a.input_cache_valid = NULL;

  /* Explicit workspace. */
  size_t bytes = 0;
  if (!LMF_CHECK_OK(lmf_hypernet_workspace_size(fx.h, &a, &bytes))) goto done;
  LMF_CHECK(bytes > 0);
  if (posix_memalign(&ws, 64, bytes) != 0) ws = NULL;
  if (!LMF_CHECK(ws != NULL)) goto done;
  memset(ws, 0xff, bytes);
  lt_poison_f32(x_in, 8 * E);
  if (LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, ws, bytes, NULL)))
    LMF_CHECK_BYTES_EQ(x_in, ref_in, sizeof x_in, "e_in with a caller workspace");

  /* 16-bit sources vs f32 holding the same values. */
  const int32_t dts[2] = {LMF_DTYPE_F16, LMF_DTYPE_BF16};
  half_in = lt_malloc((size_t)(fx.rows * E) * 2);
  half_out = lt_malloc((size_t)(fx.rows * E) * 2);
  if (!half_in || !half_out) goto done;
  for (int d = 0; d < 2; ++d) {
    if (!lt_convert(half_in, dts[d], fx.e_in, LMF_DTYPE_F32, fx.rows * E) ||
        !lt_convert(half_out, dts[d], fx.e_out, LMF_DTYPE_F32, fx.rows * E))
      goto done;
    lmf_hypernet_args_t b = a;
    b.source_in = half_in;
    b.source_out = half_out;
    b.source_dtype = dts[d];
    if (!LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &b, NULL, 0, NULL))) goto done;
    float *keep_in = fx.e_in, *keep_out = fx.e_out;
    float *r_in = (float *)lt_malloc((size_t)(fx.rows * E) * sizeof(float));
    float *r_out = (float *)lt_malloc((size_t)(fx.rows * E) * sizeof(float));
    if (r_in && r_out && lt_convert(r_in, LMF_DTYPE_F32, half_in, dts[d], fx.rows * E) &&
        lt_convert(r_out, LMF_DTYPE_F32, half_out, dts[d], fx.rows * E)) {
      fx.e_in = r_in;
      fx.e_out = r_out;
      float y_in[8 * 128], y_out[8 * 128], y_b[8];
      if (LMF_CHECK_OK(hn_predict(&fx, fx.h, S, 8, 7, -1, NULL, y_in, y_out, y_b))) {
        LMF_CHECK_BYTES_EQ(x_in, y_in, sizeof x_in, "16-bit source vs the same values in f32");
        LMF_CHECK_BYTES_EQ(x_out, y_out, sizeof x_out, "16-bit source vs the same values in f32 (e_out)");
      }
      fx.e_in = keep_in;
      fx.e_out = keep_out;
    }
    free(r_in);
    free(r_out);
  }
  /* Concatenated [V0][2 n_embd]. */
  cat = (float *)lt_malloc((size_t)(fx.rows * 2 * E) * sizeof(float));
  if (!cat) goto done;
  for (int64_t r = 0; r < fx.rows; ++r) {
    memcpy(cat + r * 2 * E, fx.e_in + r * E, (size_t)E * sizeof(float));
    memcpy(cat + r * 2 * E + E, fx.e_out + r * E, (size_t)E * sizeof(float));
  }
  a.source_in = cat;
  a.source_out = cat + E;
  a.source_row_stride = 2 * E;
  a.source_dtype = LMF_DTYPE_F32;
  if (LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, NULL, 0, NULL))) {
    LMF_CHECK_BYTES_EQ(x_in, ref_in, sizeof x_in, "concatenated source, e_in");
    LMF_CHECK_BYTES_EQ(x_out, ref_out, sizeof x_out, "concatenated source, e_out");
  }
  /* U = 0: nothing is written. */
  lt_poison_f32(x_in, 8 * E);
  a.num_tokens = 0;
  if (LMF_CHECK_OK(lmf_hypernet_predict(fx.h, &a, NULL, 0, NULL))) LMF_CHECK_EQ_INT(lt_count_nonfinite(x_in, 8 * E), 8 * E);
done:
  hn_fx_free(&fx);
  free(cache);
  free(valid);
  free(cat);
  free(ws);
  free(half_in);
  free(half_out);
}

/* The same weights through a safetensors file (F32, F16, BF16 tensors mixed) and by pointer give the
 * same hypernetwork, bit for bit; the config read back is the one saved; lang_index reads "langs". */
void test_hn_safetensors_roundtrip(void) {
  hn_fx fx;
  lmf_hypernet_t *h2 = NULL;
  char dir[512], p1[1024], p2[1024];
  dir[0] = '\0';
  lmf_hypernet_config_t c = hn_config_xlmr(300);
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_heads = 2;
  c.n_embd = 96;
  if (!hn_fx_init(&fx, &c, 9, -1, 0, 0) || !hn_tmpdir(dir, sizeof dir)) goto done;
  if (!hn_save(dir, &fx.w)) goto done;
  /* config.json with a language list, loaded by explicit paths. */
  if (!hn_write_config(hn_path(p1, sizeof p1, dir, "config.json"), &c,
                       ",\n  \"langs\": [\"en\", \"de\", \"fr\", \"zu\"]"))
    goto done;
  if (!LMF_CHECK_OK(lmf_hypernet_load_files(&h2, fx.ctx, p1, hn_path(p2, sizeof p2, dir, "model.safetensors"))))
    goto done;
  lmf_hypernet_config_t got = LMF_HYPERNET_CONFIG_INIT;
  if (LMF_CHECK_OK(lmf_hypernet_get_config(h2, &got))) hn_config_eq(&got, &c);
  int32_t li = -1;
  LMF_CHECK_OK(lmf_hypernet_lang_index(h2, "fr", &li));
  LMF_CHECK_EQ_INT(li, 2);
  LMF_CHECK_FAIL(lmf_hypernet_lang_index(h2, "xx", &li), LMF_ERR_INVALID_ARGUMENT, "xx");
  LMF_CHECK_FAIL(lmf_hypernet_lang_index(fx.h, "en", &li), LMF_ERR_INVALID_STATE, "langs");
  {
    const int64_t E = c.n_embd;
    int32_t S[8 * 7], cp[8];
    make_inputs(&c, S, cp, 0);
    float a[8 * 96], b[8 * 96], ab[8], bb[8];
    if (LMF_CHECK_OK(hn_predict(&fx, fx.h, S, 8, 7, 3, cp, a, NULL, ab)) &&
        LMF_CHECK_OK(hn_predict(&fx, h2, S, 8, 7, 3, cp, b, NULL, bb))) {
      LMF_CHECK_BYTES_EQ(a, b, (size_t)(8 * E) * sizeof(float), "file vs pointers, e_in");
      LMF_CHECK_BYTES_EQ(ab, bb, sizeof ab, "file vs pointers, bias");
    }
  }
done:
  lmf_hypernet_destroy(h2);
  hn_fx_free(&fx);
  if (dir[0]) hn_rmdir(dir);
}
