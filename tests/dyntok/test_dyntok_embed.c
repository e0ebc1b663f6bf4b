/* lmf_dyntok_embed / lmf_dyntok_pipeline and target_reduction, on the real multilingual data with the
 * real vocabularies (random source embeddings at a small width, generated here).
 *
 *   - m = 0: the outputs are exactly the model's embedding lookup of the padded batch, bit for bit,
 *     for every language, both paddings and f32 / f16 / bf16 sources and outputs;
 *   - FVT: new rows equal lmf_fvt_predict on the result's decompositions, bit for bit; e_out too;
 *   - hypernetwork (a small random one built with lmf_hypernet_create): new rows, e_out and biases
 *     equal a separate lmf_hypernet_predict on lmf_hypernet_surface_forms of the new tokens; a tied one
 *     with a language embedding;
 *   - the cache: a second call reuses every row and gives the same bits; a cache too small for the
 *     batch gives the same bits too;
 *   - the one-call pipeline equals merge + embed, sized from the input;
 *   - target_reduction: the stop rule, its relation to max_merges, the first config layout;
 *   - every bad input: a status, a message naming the argument, nothing written, the cache unchanged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dt_common.h"
#include "../hypernet/hn_common.h"
#include "lmf_check.h"
#include "lmf_test_util.h"
#include "lmfuse/dyntok.h"
#include "lmfuse/hypernet.h"

enum { D = 16, BATCH = 32 };

typedef struct fx {
  lmf_context_t *ctx;
  lmf_vocab_t *v;
  int32_t V;
  dt_corpus c;
  float *ein, *eout; /* [V][D] */
  void *ein16, *eout16; /* the same in a 16-bit dtype (fx_source) */
  int32_t dt16;
} fx;

static int fx_init(fx *f, const char *name, int threads) {
  memset(f, 0, sizeof *f);
  f->ctx = lt_context(LMF_BACKEND_CPU, threads);
  f->v = dt_load_vocab(name);
  if (!f->ctx || !f->v || !dt_corpus_load(&f->c, name, BATCH)) return 0;
  lmf_vocab_size(f->v, &f->V);
  f->ein = hn_source(f->V, D, 101);
  f->eout = hn_source(f->V, D, 102);
  f->ein16 = lt_malloc((size_t)f->V * D * 2);
  f->eout16 = lt_malloc((size_t)f->V * D * 2);
  return f->ein && f->eout && f->ein16 && f->eout16;
}

static void fx_free(fx *f) {
  if (f->c.num_langs) dt_corpus_free(&f->c);
  free(f->ein);
  free(f->eout);
  free(f->ein16);
  free(f->eout16);
  lmf_vocab_destroy(f->v);
  lmf_context_destroy(f->ctx);
  memset(f, 0, sizeof *f);
}

/* The source matrices in dtype dt (f32: the originals). */
static int fx_source(fx *f, int32_t dt, const void **in, const void **out) {
  if (dt == LMF_DTYPE_F32) {
    *in = f->ein;
    *out = f->eout;
    return 1;
  }
  if (f->dt16 != dt) {
    if (!lt_convert(f->ein16, dt, f->ein, LMF_DTYPE_F32, (int64_t)f->V * D) ||
        !lt_convert(f->eout16, dt, f->eout, LMF_DTYPE_F32, (int64_t)f->V * D))
      return 0;
    f->dt16 = dt;
  }
  *in = f->ein16;
  *out = f->eout16;
  return 1;
}

/* Output buffers for B x L cells and num_new new tokens, poisoned. */
typedef struct outs {
  int64_t B, L;
  int32_t nn;
  int32_t dt;
  void *emb, *new_out;
  int32_t *mask, *ids, *ss, *sl;
  float *bias;
  int64_t max_len;
} outs;

static int outs_alloc(outs *o, int64_t B, int64_t L, int32_t nn, int32_t dt) {
  memset(o, 0, sizeof *o);
  o->B = B, o->L = L, o->nn = nn, o->dt = dt;
  const size_t cells = (size_t)(B * L) + 1, es = lmf_dtype_size(dt);
  o->emb = lt_malloc(cells * D * es);
  o->new_out = lt_malloc(((size_t)nn + 1) * D * es);
  o->mask = (int32_t *)lt_malloc(cells * 4);
  o->ids = (int32_t *)lt_malloc(cells * 4);
  o->ss = (int32_t *)lt_malloc(cells * 4);
  o->sl = (int32_t *)lt_malloc(cells * 4);
  o->bias = (float *)lt_malloc(((size_t)nn + 1) * 4);
  if (!o->emb || !o->new_out || !o->mask || !o->ids || !o->ss || !o->sl || !o->bias) return 0;
  memset(o->emb, 0xA5, cells * D * es);
  memset(o->new_out, 0xA5, ((size_t)nn + 1) * D * es);
  memset(o->mask, 0xA5, cells * 4);
  memset(o->ids, 0xA5, cells * 4);
  memset(o->ss, 0xA5, cells * 4);
  memset(o->sl, 0xA5, cells * 4);
  memset(o->bias, 0xA5, ((size_t)nn + 1) * 4);
  o->max_len = -77;
  return 1;
}

static void outs_free(outs *o) {
  free(o->emb);
  free(o->new_out);
  free(o->mask);
  free(o->ids);
  free(o->ss);
  free(o->sl);
  free(o->bias);
  memset(o, 0, sizeof *o);
}

static void set_outs(lmf_dyntok_embed_args_t *a, outs *o, int with_new) {
  a->out_dtype = o->dt;
  a->seq_len = o->L;
  a->out_embeds = o->emb;
  a->out_mask = o->mask;
  a->out_ids = o->ids;
  a->out_span_start = o->ss;
  a->out_span_len = o->sl;
  a->out_max_len = &o->max_len;
  a->out_new_out = with_new ? o->new_out : NULL;
  a->out_new_bias = with_new ? o->bias : NULL;
}

/* Expected bytes of one row: src (dtype sdt) converted to dt. */
static void want_row(void *dst, int32_t dt, const void *src, int32_t sdt) {
  if (dt == sdt) memcpy(dst, src, D * lmf_dtype_size(dt));
  else lmf_convert_host(dst, dt, src, sdt, D);
}

/* Checks every cell against the result: ids, mask, spans, base rows from E_in (in source dtype sdt),
 * new rows from want_new (f32 [num_new][D]), padding (pad_id's row or zeros). */
static int check_cells(const fx *f, const dt_view *w, const dt_batch *b, const outs *o, const void *ein, int32_t sdt,
                       const float *want_new, int32_t pad_id, int32_t pad_side, const char *what) {
  const size_t es = lmf_dtype_size(o->dt);
  unsigned char want[D * 4], zero[D * 4];
  memset(zero, 0, sizeof zero);
  int ok = 1;
  for (int64_t s = 0; s < o->B && ok; ++s) {
    const int64_t n = w->offsets[s + 1] - w->offsets[s];
    for (int64_t l = 0; l < o->L && ok; ++l) {
      const int64_t cell = s * o->L + l;
      const int64_t j = pad_side == LMF_DYNTOK_PAD_LEFT ? l - (o->L - n) : l;
      const unsigned char *got = (const unsigned char *)o->emb + (size_t)cell * D * es;
      if (j >= 0 && j < n) {
        const int64_t t = w->offsets[s] + j;
        const int32_t id = w->ids[t];
        ok &= LMF_CHECK_MSG(o->mask[cell] == 1 && o->ids[cell] == id &&
                                o->ss[cell] == (int32_t)(w->span_start[t] - b->offsets[s]) &&
                                o->sl[cell] == w->span_len[t],
                            "%s: seq %lld pos %lld: mask %d id %d (want %d) span %d+%d", what, (long long)s,
                            (long long)l, o->mask[cell], o->ids[cell], id, o->ss[cell], o->sl[cell]);
        if (id < f->V) want_row(want, o->dt, (const char *)ein + (size_t)id * D * lmf_dtype_size(sdt), sdt);
        else want_row(want, o->dt, want_new + (size_t)(id - f->V) * D, LMF_DTYPE_F32);
        ok &= LMF_CHECK_MSG(memcmp(got, want, D * es) == 0, "%s: seq %lld pos %lld (id %d): row differs", what,
                            (long long)s, (long long)l, id);
      } else {
        ok &= LMF_CHECK_MSG(o->mask[cell] == 0 && o->ids[cell] == pad_id && o->ss[cell] == -1 && o->sl[cell] == 0,
                            "%s: seq %lld pos %lld: padding has mask %d id %d span %d+%d", what, (long long)s,
                            (long long)l, o->mask[cell], o->ids[cell], o->ss[cell], o->sl[cell]);
        if (pad_id >= 0) want_row(want, o->dt, (const char *)ein + (size_t)pad_id * D * lmf_dtype_size(sdt), sdt);
        ok &= LMF_CHECK_MSG(memcmp(got, pad_id >= 0 ? want : zero, D * es) == 0, "%s: seq %lld pos %lld: padding row",
                            what, (long long)s, (long long)l);
      }
    }
  }
  return ok;
}

static lmf_dyntok_embed_args_t fvt_args(const void *ein, const void *eout, int32_t sdt, int32_t V) {
  lmf_dyntok_embed_args_t a;
  lmf_dyntok_embed_args_init(&a, sizeof a);
  a.method = LMF_DYNTOK_EMBED_FVT;
  a.n_embd = D;
  a.source_in = ein;
  a.source_out = eout;
  a.source_dtype = sdt;
  a.source_rows = V;
  return a;
}

/* ---- m = 0: exactly the embedding lookup ------------------------------------------------------ */

static void m0_real(const char *name) {
  fx f;
  if (!fx_init(&f, name, 0)) goto done;
  static const int32_t combos[][2] = {{LMF_DTYPE_F32, LMF_DTYPE_F32}, {LMF_DTYPE_BF16, LMF_DTYPE_F32},
                                      {LMF_DTYPE_F16, LMF_DTYPE_F16}, {LMF_DTYPE_F32, LMF_DTYPE_BF16},
                                      {LMF_DTYPE_F32, LMF_DTYPE_F16}, {LMF_DTYPE_BF16, LMF_DTYPE_BF16}};
  int64_t cells = 0;
  for (int L = 0; L < f.c.num_langs; ++L) {
    const dt_batch *b = &f.c.batch[L];
    int64_t Lin = 0;
    for (int64_t s = 0; s < b->B; ++s)
      if (b->offsets[s + 1] - b->offsets[s] > Lin) Lin = b->offsets[s + 1] - b->offsets[s];
    for (int ci = 0; ci < 6; ++ci)
      for (int side = 0; side < 2; ++side) {
        const int32_t sdt = combos[ci][0], odt = combos[ci][1];
        const int32_t pad_id = (ci + side) % 2 ? -1 : 2;
        const void *ein, *eout;
        if (!fx_source(&f, sdt, &ein, &eout)) goto done;
        outs o;
        if (!outs_alloc(&o, b->B, Lin, 0, odt)) goto done;
        lmf_dyntok_embed_args_t a = fvt_args(ein, NULL, sdt, f.V);
        set_outs(&a, &o, 0);
        a.seq_len = 0; /* the pipeline: the longest input sequence */
        a.pad_side = side ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT;
        a.pad_id = pad_id;
        lmf_dyntok_config_t cfg;
        lmf_dyntok_config_init(&cfg, sizeof cfg);
        cfg.max_merges = 0;
        lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
        bt.num_seqs = b->B;
        bt.offsets = b->offsets;
        bt.ids = b->ids;
        lmf_dyntok_result_t *r = NULL;
        dt_view w;
        char what[96];
        snprintf(what, sizeof what, "%s %s %s->%s %s", name, f.c.lang[L], lmf_dtype_name(sdt), lmf_dtype_name(odt),
                 side ? "left" : "right");
        if (LMF_CHECK_OK(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &cfg, &a, &r)) && dt_view_get(&w, r, f.v, b->offsets)) {
          LMF_CHECK_EQ_INT(w.N, b->offsets[b->B]); /* nothing merged */
          LMF_CHECK_EQ_INT(o.max_len, Lin);
          LMF_CHECK_BYTES_EQ(w.ids, b->ids, sizeof(int32_t) * (size_t)w.N, what);
          check_cells(&f, &w, b, &o, ein, sdt, NULL, pad_id, a.pad_side, what);
          cells += b->B * Lin;
        }
        lmf_dyntok_result_destroy(r);
        outs_free(&o);
      }
  }
  lmf_t_note("%s: m = 0 is the embedding lookup for %lld cells (10 languages x 6 dtype pairs x 2 sides)", name,
             (long long)cells);
done:
  fx_free(&f);
}

void test_dt_embed_m0_mistral(void) { m0_real("mistral-7b"); }
void test_dt_embed_m0_gpt4o(void) { m0_real("gpt-4o"); }

/* ---- FVT ---------------------------------------------------------------------------------------- */

void test_dt_embed_fvt(void) {
  fx f;
  if (!fx_init(&f, "mistral-7b", 0)) goto done;
  for (int L = 0; L < f.c.num_langs; L += 3) {
    const dt_batch *b = &f.c.batch[L];
    lmf_dyntok_result_t *r = NULL;
    dt_view w;
    if (!LMF_CHECK_OK(dt_merge(f.ctx, f.v, b, 150, LMF_DYNTOK_PRETOKENS, NULL, &r)) || !dt_view_get(&w, r, f.v, b->offsets)) {
      lmf_dyntok_result_destroy(r);
      continue;
    }
    int64_t Bq = 0, Lq = 0;
    int32_t nq = 0;
    LMF_CHECK_OK(lmf_dyntok_embed_shape(r, &Bq, &Lq, &nq));
    LMF_CHECK(Bq == BATCH && nq == w.num_new && nq > 0);
    /* The reference rows: lmf_fvt_predict on every new token's decomposition. */
    float *wi = (float *)lt_malloc(sizeof(float) * (size_t)nq * D + 4);
    float *wo = (float *)lt_malloc(sizeof(float) * (size_t)nq * D + 4);
    lmf_fvt_args_t fa = LMF_FVT_ARGS_INIT;
    fa.num_tokens = nq;
    fa.offsets = w.decomp_offsets;
    fa.ids = w.decomp;
    fa.source_in = f.ein;
    fa.source_out = f.eout;
    fa.n_embd = D;
    fa.source_rows = f.V;
    fa.unk_id = 0;
    fa.out_in = wi;
    fa.out_out = wo;
    for (int side = 0; side < 2 && wi && wo; ++side) {
      if (!LMF_CHECK_OK(lmf_fvt_predict(f.ctx, &fa, NULL))) break;
      outs o;
      if (!outs_alloc(&o, Bq, Lq + 3 * side, nq, LMF_DTYPE_F32)) break;
      lmf_dyntok_embed_args_t a = fvt_args(f.ein, f.eout, LMF_DTYPE_F32, f.V);
      set_outs(&a, &o, 1);
      a.pad_side = side ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT;
      if (side == 0) a.seq_len = 0; /* lmf_dyntok_embed: the longest merged sequence */
      if (LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r, &a))) {
        check_cells(&f, &w, b, &o, f.ein, LMF_DTYPE_F32, wi, -1, a.pad_side, "fvt");
        LMF_CHECK_BYTES_EQ(o.new_out, wo, sizeof(float) * (size_t)nq * D, "fvt e_out");
        for (int32_t k = 0; k < nq; ++k) LMF_CHECK(o.bias[k] == 0.0f);
        LMF_CHECK_EQ_INT(o.max_len, Lq);
      }
      outs_free(&o);
    }
    free(wi);
    free(wo);
    lmf_dyntok_result_destroy(r);
  }
done:
  fx_free(&f);
}

/* ---- Hypernetwork --------------------------------------------------------------------------------- */

static lmf_hypernet_config_t small_config(int32_t V0, int separate, int lang) {
  lmf_hypernet_config_t c = LMF_HYPERNET_CONFIG_INIT;
  c.num_layers = 2;
  c.hidden_size = 32;
  c.intermediate_size = 64;
  c.num_heads = 2;
  c.n_embd = D;
  c.surface_maxlen = 7;
  c.pad_token_id = separate ? 2 : 1;
  c.original_vocab_size = V0;
  c.n_extra_tokens = 8;
  c.separate_out_embeddings = separate;
  c.rescale_embeddings = 1;
  c.predict_bias = 1;
  c.embed_lang_id = lang;
  c.n_langs = lang ? 3 : 0;
  return c;
}

static lmf_hypernet_t *small_hypernet(lmf_context_t *ctx, const lmf_hypernet_config_t *cfg, uint64_t seed) {
  hn_weights w;
  if (!hn_weights_make(&w, cfg, seed, LMF_DTYPE_F32)) return NULL;
  void **bufs = NULL;
  lmf_hypernet_tensor_t *t = hn_tensors(&w, &bufs);
  lmf_hypernet_t *h = NULL;
  if (t) LMF_CHECK_OK(lmf_hypernet_create(&h, ctx, cfg, t, w.n));
  hn_tensors_free(t, bufs, w.n);
  hn_weights_free(&w);
  return h;
}

/* Predicts all new tokens of w separately: surface forms, then lmf_hypernet_predict. */
static int separate_predict(const fx *f, const lmf_hypernet_t *h, const lmf_hypernet_config_t *cfg, const dt_view *w,
                            int32_t lang, float *e_in, float *e_out, float *bias) {
  const int64_t U = w->num_new;
  int32_t *S = (int32_t *)lt_malloc(sizeof(int32_t) * (size_t)(U * 7 + 1));
  if (!S) return 0;
  lmf_hypernet_surface_args_t sa = LMF_HYPERNET_SURFACE_ARGS_INIT;
  sa.num_tokens = U;
  sa.num_new = w->num_new;
  sa.new_offsets = w->new_offsets;
  sa.new_bytes = w->new_bytes;
  sa.surface_len = 7;
  sa.pad_id = cfg->pad_token_id;
  sa.original_vocab_size = cfg->original_vocab_size;
  sa.out_forms = S;
  int ok = LMF_CHECK_OK(lmf_hypernet_surface_forms(f->v, &sa));
  if (ok) {
    lmf_hypernet_args_t ha = LMF_HYPERNET_ARGS_INIT;
    ha.num_tokens = U;
    ha.surface_len = 7;
    ha.surface_forms = S;
    ha.source_in = f->ein;
    ha.source_out = cfg->separate_out_embeddings ? f->eout : NULL;
    ha.source_rows = f->V;
    ha.lang_index = lang;
    ha.out_in = e_in;
    ha.out_out = e_out;
    ha.out_bias = bias;
    ok = LMF_CHECK_OK(lmf_hypernet_predict(h, &ha, NULL, 0, NULL));
  }
  free(S);
  return ok;
}

static void hypernet_case(const char *name, int separate, int lang) {
  fx f;
  lmf_hypernet_t *h = NULL;
  if (!fx_init(&f, name, 0)) goto done;
  const lmf_hypernet_config_t cfg = small_config(f.V, separate, lang);
  h = small_hypernet(f.ctx, &cfg, 7);
  if (!h) goto done;
  int64_t total_new = 0;
  for (int L = 1; L < f.c.num_langs; L += 4) {
    const dt_batch *b = &f.c.batch[L];
    lmf_dyntok_result_t *r = NULL;
    dt_view w;
    if (!LMF_CHECK_OK(dt_merge(f.ctx, f.v, b, 120, LMF_DYNTOK_PRETOKENS, NULL, &r)) || !dt_view_get(&w, r, f.v, b->offsets)) {
      lmf_dyntok_result_destroy(r);
      continue;
    }
    const int32_t nq = w.num_new;
    total_new += nq;
    float *wi = (float *)lt_malloc(sizeof(float) * (size_t)nq * D + 4);
    float *wo = (float *)lt_malloc(sizeof(float) * (size_t)nq * D + 4);
    float *wb = (float *)lt_malloc(sizeof(float) * (size_t)nq + 4);
    outs o;
    int64_t Lq = 0;
    lmf_dyntok_embed_shape(r, NULL, &Lq, NULL);
    if (wi && wo && wb && separate_predict(&f, h, &cfg, &w, lang ? 1 : -1, wi, separate ? wo : NULL, wb) &&
        outs_alloc(&o, w.B, Lq, nq, LMF_DTYPE_F32)) {
      lmf_dyntok_embed_args_t a;
      lmf_dyntok_embed_args_init(&a, sizeof a);
      a.hypernet = h;
      a.lang_index = lang ? 1 : -1;
      a.n_embd = D;
      a.source_in = f.ein;
      a.source_out = separate ? f.eout : NULL;
      a.source_rows = f.V;
      set_outs(&a, &o, 1);
      if (!separate) a.out_new_out = NULL;
      a.pad_side = L % 2 ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT;
      if (LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r, &a))) {
        check_cells(&f, &w, b, &o, f.ein, LMF_DTYPE_F32, wi, -1, a.pad_side, name);
        if (separate) LMF_CHECK_BYTES_EQ(o.new_out, wo, sizeof(float) * (size_t)nq * D, "hypernet e_out");
        LMF_CHECK_BYTES_EQ(o.bias, wb, sizeof(float) * (size_t)nq, "hypernet bias");
      }
      /* Without the new-token outputs only the tokens the output holds are predicted: same rows. */
      outs o2;
      if (outs_alloc(&o2, w.B, Lq, nq, LMF_DTYPE_F32)) {
        set_outs(&a, &o2, 0);
        if (LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r, &a)))
          LMF_CHECK_BYTES_EQ(o2.emb, o.emb, sizeof(float) * (size_t)(w.B * Lq) * D, "only the used new tokens");
        outs_free(&o2);
      }
      outs_free(&o);
    }
    free(wi);
    free(wo);
    free(wb);
    lmf_dyntok_result_destroy(r);
  }
  LMF_CHECK(total_new > 100);
done:
  lmf_hypernet_destroy(h);
  fx_free(&f);
}

void test_dt_embed_hypernet_mistral(void) { hypernet_case("mistral-7b", 1, 0); }
void test_dt_embed_hypernet_gpt4o_tied_lang(void) { hypernet_case("gpt-4o", 0, 1); }

/* ---- Cache ------------------------------------------------------------------------------------------ */

void test_dt_embed_cache_reuse(void) {
  fx f;
  lmf_hypernet_t *h = NULL;
  lmf_embed_cache_t *big = NULL, *tiny = NULL;
  lmf_dyntok_result_t *r[2] = {NULL, NULL};
  outs ref[2], o;
  memset(ref, 0, sizeof ref);
  memset(&o, 0, sizeof o);
  if (!fx_init(&f, "mistral-7b", 0)) goto done;
  const lmf_hypernet_config_t cfg = small_config(f.V, 1, 0);
  h = small_hypernet(f.ctx, &cfg, 11);
  lmf_embed_cache_config_t cc = LMF_EMBED_CACHE_CONFIG_INIT;
  cc.n_embd = D;
  cc.with_out = 1;
  if (!h || !LMF_CHECK_OK(lmf_embed_cache_create(&big, &cc))) goto done;
  cc.capacity = 10;
  if (!LMF_CHECK_OK(lmf_embed_cache_create(&tiny, &cc))) goto done;
  int64_t Lq[2];
  int32_t nq[2];
  /* Two batches (en, de): the references, without a cache. */
  for (int i = 0; i < 2; ++i) {
    if (!LMF_CHECK_OK(dt_merge(f.ctx, f.v, &f.c.batch[i], 150, LMF_DYNTOK_PRETOKENS, NULL, &r[i]))) goto done;
    lmf_dyntok_embed_shape(r[i], NULL, &Lq[i], &nq[i]);
    if (!outs_alloc(&ref[i], BATCH, Lq[i], nq[i], LMF_DTYPE_BF16)) goto done;
  }
  lmf_dyntok_embed_args_t a;
  lmf_dyntok_embed_args_init(&a, sizeof a);
  a.hypernet = h;
  a.n_embd = D;
  a.source_in = f.ein;
  a.source_out = f.eout;
  a.source_rows = f.V;
  for (int i = 0; i < 2; ++i) {
    set_outs(&a, &ref[i], 1);
    if (!LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r[i], &a))) goto done;
  }
  /* With the big cache: A (all misses), A again (all hits), B, A: the same bits every time. */
  static const int order[4] = {0, 0, 1, 0};
  int64_t hits_before = 0, misses_before = 0;
  for (int step = 0; step < 4; ++step) {
    for (int which = 0; which < 2; ++which) {
      lmf_embed_cache_t *c = which ? tiny : big;
      const int i = order[step];
      if (!outs_alloc(&o, BATCH, Lq[i], nq[i], LMF_DTYPE_BF16)) goto done;
      set_outs(&a, &o, 1);
      a.cache = c;
      int64_t h0 = 0, m0 = 0;
      lmf_embed_cache_stats(c, NULL, NULL, &h0, &m0, NULL, NULL);
      if (LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r[i], &a))) {
        char what[64];
        snprintf(what, sizeof what, "step %d, %s cache", step, which ? "tiny" : "big");
        LMF_CHECK_BYTES_EQ(o.emb, ref[i].emb, (size_t)(BATCH * Lq[i]) * D * 2, what);
        LMF_CHECK_BYTES_EQ(o.new_out, ref[i].new_out, (size_t)nq[i] * D * 2, what);
        LMF_CHECK_BYTES_EQ(o.bias, ref[i].bias, (size_t)nq[i] * 4, what);
        int64_t h1 = 0, m1 = 0, rows = 0, pinned = 0, dropped = 0;
        lmf_embed_cache_stats(c, &rows, &pinned, &h1, &m1, NULL, &dropped);
        if (which == 0 && step == 1) { /* the same batch again: every row from the cache */
          LMF_CHECK_EQ_INT(h1 - h0, nq[i]);
          LMF_CHECK_EQ_INT(m1 - m0, 0);
        }
        if (which == 0 && step == 0) {
          LMF_CHECK_EQ_INT(m1 - m0, nq[i]);
          LMF_CHECK_EQ_INT(rows, nq[i]);
          LMF_CHECK_EQ_INT(pinned, nq[i]);
          hits_before = h1, misses_before = m1;
        }
        if (which == 1) {
          LMF_CHECK_EQ_INT(rows, 10);
          LMF_CHECK(dropped > 0); /* the batch has more new tokens than the capacity */
        }
      }
      outs_free(&o);
    }
  }
  (void)hits_before;
  (void)misses_before;
  /* The cache's shape must match the call's. */
  {
    lmf_embed_cache_t *narrow = NULL;
    cc.with_out = 0;
    if (LMF_CHECK_OK(lmf_embed_cache_create(&narrow, &cc))) {
      a.cache = narrow;
      if (outs_alloc(&o, BATCH, Lq[0], nq[0], LMF_DTYPE_BF16)) {
        set_outs(&a, &o, 1);
        LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, f.v, r[0], &a), LMF_ERR_INVALID_ARGUMENT, "cache");
        outs_free(&o);
      }
      lmf_embed_cache_destroy(narrow);
    }
  }
done:
  for (int i = 0; i < 2; ++i) {
    outs_free(&ref[i]);
    lmf_dyntok_result_destroy(r[i]);
  }
  lmf_embed_cache_destroy(big);
  lmf_embed_cache_destroy(tiny);
  lmf_hypernet_destroy(h);
  fx_free(&f);
}

/* ---- The one-call pipeline ---------------------------------------------------------------------- */

void test_dt_embed_pipeline_equals_two_calls(void) {
  fx f;
  lmf_hypernet_t *h = NULL;
  if (!fx_init(&f, "gpt-4o", 2)) goto done;
  const lmf_hypernet_config_t cfg = small_config(f.V, 1, 0);
  h = small_hypernet(f.ctx, &cfg, 5);
  if (!h) goto done;
  const dt_batch *b = &f.c.batch[6];
  int64_t Lin = 0;
  for (int64_t s = 0; s < b->B; ++s)
    if (b->offsets[s + 1] - b->offsets[s] > Lin) Lin = b->offsets[s + 1] - b->offsets[s];
  lmf_dyntok_config_t dc = LMF_DYNTOK_CONFIG_INIT;
  dc.max_merges = 200;
  lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
  bt.num_seqs = b->B;
  bt.offsets = b->offsets;
  bt.ids = b->ids;
  for (int side = 0; side < 2; ++side) {
    lmf_dyntok_result_t *r1 = NULL, *r2 = NULL;
    outs o1, o2;
    memset(&o1, 0, sizeof o1);
    memset(&o2, 0, sizeof o2);
    lmf_dyntok_embed_args_t a;
    lmf_dyntok_embed_args_init(&a, sizeof a);
    a.hypernet = h;
    a.n_embd = D;
    a.source_in = f.ein;
    a.source_out = f.eout;
    a.source_rows = f.V;
    a.pad_side = side ? LMF_DYNTOK_PAD_LEFT : LMF_DYNTOK_PAD_RIGHT;
    a.pad_id = 5;
    int32_t nq = 0;
    int64_t Lq = 0;
    if (LMF_CHECK_OK(lmf_dyntok_merge(f.ctx, f.v, &bt, &dc, &r1))) {
      lmf_dyntok_embed_shape(r1, NULL, &Lq, &nq);
      if (outs_alloc(&o1, b->B, Lq, nq, LMF_DTYPE_F16) && outs_alloc(&o2, b->B, Lin, nq, LMF_DTYPE_F16)) {
        set_outs(&a, &o1, 1);
        LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r1, &a));
        set_outs(&a, &o2, 1);
        a.seq_len = 0;
        if (LMF_CHECK_OK(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &dc, &a, &r2))) {
          LMF_CHECK_EQ_INT(o2.max_len, Lq);
          LMF_CHECK(Lq < Lin);
          dt_view w1, w2;
          if (dt_view_get(&w1, r1, f.v, b->offsets) && dt_view_get(&w2, r2, f.v, b->offsets))
            dt_check_same(&w1, &w2, "pipeline result");
          /* o2 is [B][Lin]; its Lq columns (the first ones, or the last ones with left padding) are o1. */
          const int64_t c0 = side ? Lin - Lq : 0;
          for (int64_t s = 0; s < b->B; ++s) {
            LMF_CHECK_BYTES_EQ((char *)o2.emb + (size_t)(s * Lin + c0) * D * 2, (char *)o1.emb + (size_t)(s * Lq) * D * 2,
                               (size_t)Lq * D * 2, "pipeline rows");
            LMF_CHECK_BYTES_EQ(o2.mask + s * Lin + c0, o1.mask + s * Lq, (size_t)Lq * 4, "pipeline mask");
            LMF_CHECK_BYTES_EQ(o2.ids + s * Lin + c0, o1.ids + s * Lq, (size_t)Lq * 4, "pipeline ids");
            for (int64_t l = 0; l < Lin - Lq; ++l) LMF_CHECK_EQ_INT(o2.mask[s * Lin + (side ? l : Lq + l)], 0);
          }
          LMF_CHECK_BYTES_EQ(o2.new_out, o1.new_out, (size_t)nq * D * 2, "pipeline e_out");
        }
      }
    }
    /* result = NULL: the pipeline destroys it. */
    outs_free(&o2);
    if (outs_alloc(&o2, b->B, Lin, nq, LMF_DTYPE_F16)) {
      set_outs(&a, &o2, 0);
      a.seq_len = 0;
      LMF_CHECK_OK(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &dc, &a, NULL));
      LMF_CHECK_EQ_INT(o2.max_len, Lq);
    }
    outs_free(&o1);
    outs_free(&o2);
    lmf_dyntok_result_destroy(r1);
    lmf_dyntok_result_destroy(r2);
  }
done:
  lmf_hypernet_destroy(h);
  fx_free(&f);
}

/* ---- target_reduction ----------------------------------------------------------------------------- */

static lmf_status_t merge_cfg(const fx *f, const dt_batch *b, int32_t m, float r, lmf_dyntok_result_t **out) {
  lmf_dyntok_config_t c = LMF_DYNTOK_CONFIG_INIT;
  c.max_merges = m;
  c.target_reduction = r;
  lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
  bt.num_seqs = b->B;
  bt.offsets = b->offsets;
  bt.ids = b->ids;
  return lmf_dyntok_merge(f->ctx, f->v, &bt, &c, out);
}

void test_dt_target_reduction(void) {
  fx f;
  if (!fx_init(&f, "mistral-7b", 0)) goto done;
  static const float rs[] = {0.1f, 0.2f, 0.3f, 0.25f, 0.5f, 0.9f};
  for (int L = 0; L < f.c.num_langs; L += 2) {
    const dt_batch *b = &f.c.batch[L];
    const int64_t N = b->offsets[b->B];
    lmf_dyntok_result_t *full = NULL;
    if (!LMF_CHECK_OK(merge_cfg(&f, b, 100000, 0.0f, &full))) continue;
    int64_t Nfull = 0;
    int32_t mfull = 0;
    lmf_dyntok_result_sizes(full, NULL, &Nfull, &mfull, NULL);
    for (size_t k = 0; k < sizeof rs / sizeof rs[0]; ++k) {
      /* T = floor((10^6 - round(10^6 r)) N / 10^6): 0.2 is exactly 20%. */
      const int64_t r6 = (int64_t)((double)rs[k] * 1e6 + 0.5);
      const int64_t T = ((1000000 - r6) * N) / 1000000;
      lmf_dyntok_result_t *r = NULL, *cut = NULL;
      if (!LMF_CHECK_OK(merge_cfg(&f, b, 100000, rs[k], &r))) continue;
      int64_t Nr = 0;
      int32_t mr = 0;
      lmf_dyntok_result_sizes(r, NULL, &Nr, &mr, NULL);
      if (Nfull <= T) {
        LMF_CHECK_MSG(Nr <= T && Nr > 0, "r %.2f: %lld tokens, target %lld", (double)rs[k], (long long)Nr, (long long)T);
        /* It stopped at the first merge that reached T: one merge fewer leaves more than T. */
        if (LMF_CHECK(mr >= 1) && LMF_CHECK_OK(merge_cfg(&f, b, mr - 1, 0.0f, &cut))) {
          int64_t Nc = 0;
          lmf_dyntok_result_sizes(cut, NULL, &Nc, NULL, NULL);
          LMF_CHECK_MSG(Nc > T, "r %.2f: %d merges leave %lld > %lld tokens", (double)rs[k], mr - 1, (long long)Nc,
                        (long long)T);
          lmf_dyntok_result_destroy(cut);
          cut = NULL;
        }
      } else {
        LMF_CHECK_EQ_INT(mr, mfull); /* the target is out of reach: no valid pair left */
      }
      /* The same as max_merges = the merges it did, without a target. */
      if (LMF_CHECK_OK(merge_cfg(&f, b, mr, 0.0f, &cut))) {
        dt_view w1, w2;
        if (dt_view_get(&w1, r, f.v, b->offsets) && dt_view_get(&w2, cut, f.v, b->offsets))
          dt_check_same(&w1, &w2, "target vs max_merges");
      }
      lmf_dyntok_result_destroy(cut);
      /* max_merges still bounds it. */
      lmf_dyntok_result_t *few = NULL;
      if (LMF_CHECK_OK(merge_cfg(&f, b, 3, rs[k], &few))) {
        int32_t mf = 0;
        lmf_dyntok_result_sizes(few, NULL, NULL, &mf, NULL);
        LMF_CHECK(mf <= 3);
      }
      lmf_dyntok_result_destroy(few);
      lmf_dyntok_result_destroy(r);
    }
    /* A target the batch already meets: no merge. */
    lmf_dyntok_result_t *none = NULL;
    if (LMF_CHECK_OK(merge_cfg(&f, b, 100, 1e-7f, &none))) {
      int32_t m0 = -1;
      lmf_dyntok_result_sizes(none, NULL, NULL, &m0, NULL);
      LMF_CHECK_EQ_INT(m0, 0);
    }
    lmf_dyntok_result_destroy(none);
    lmf_dyntok_result_destroy(full);
  }
  /* The CUDA backend's stop rule gives the same results (when a device is present). */
  if (lmf_backend_available(LMF_BACKEND_CUDA)) {
    lmf_context_t *cu = lt_context(LMF_BACKEND_CUDA, 0);
    for (int L = 0; cu && L < f.c.num_langs; L += 3)
      for (size_t k = 0; k < sizeof rs / sizeof rs[0]; ++k) {
        const dt_batch *b = &f.c.batch[L];
        lmf_dyntok_result_t *rc = NULL, *rg = NULL;
        lmf_dyntok_config_t c = LMF_DYNTOK_CONFIG_INIT;
        c.max_merges = 100000;
        c.target_reduction = rs[k];
        lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
        bt.num_seqs = b->B;
        bt.offsets = b->offsets;
        bt.ids = b->ids;
        if (LMF_CHECK_OK(lmf_dyntok_merge(f.ctx, f.v, &bt, &c, &rc)) && LMF_CHECK_OK(lmf_dyntok_merge(cu, f.v, &bt, &c, &rg))) {
          dt_view w1, w2;
          if (dt_view_get(&w1, rc, f.v, b->offsets) && dt_view_get(&w2, rg, f.v, b->offsets))
            dt_check_same(&w1, &w2, "target_reduction: CUDA vs CPU");
        }
        lmf_dyntok_result_destroy(rc);
        lmf_dyntok_result_destroy(rg);
      }
    lmf_context_destroy(cu);
  } else {
    lmf_t_note("no CUDA device: target_reduction on the CUDA backend is compiled, not run, here");
  }
  /* Bad values. */
  {
    const dt_batch *b = &f.c.batch[0];
    lmf_dyntok_result_t *sentinel = (lmf_dyntok_result_t *)(uintptr_t)0x99, *r = sentinel;
    LMF_CHECK_FAIL(merge_cfg(&f, b, 10, -0.1f, &r), LMF_ERR_INVALID_ARGUMENT, "target_reduction");
    LMF_CHECK_FAIL(merge_cfg(&f, b, 10, 1.0f, &r), LMF_ERR_INVALID_ARGUMENT, "target_reduction");
    const float nan = lt_bits_f32(0x7fc00000u);
    LMF_CHECK_FAIL(merge_cfg(&f, b, 10, nan, &r), LMF_ERR_INVALID_ARGUMENT, "target_reduction");
    LMF_CHECK(r == sentinel);
  }
  /* A caller built against the first layout (no target_reduction field) still works. */
  {
    union {
      lmf_dyntok_config_t c;
      unsigned char raw[sizeof(lmf_dyntok_config_t)];
    } u;
    memset(u.raw, 0x7f, sizeof u.raw);
    LMF_CHECK_EQ_INT(LMF_DYNTOK_CONFIG_SIZE_V1, 32);
    if (LMF_CHECK_OK(lmf_dyntok_config_init(&u.c, LMF_DYNTOK_CONFIG_SIZE_V1))) {
      LMF_CHECK_EQ_INT(u.c.struct_size, LMF_DYNTOK_CONFIG_SIZE_V1);
      LMF_CHECK_EQ_INT(u.c.max_merges, 200);
      LMF_CHECK_EQ_INT(u.raw[LMF_DYNTOK_CONFIG_SIZE_V1], 0x7f); /* nothing past its size is written */
      u.c.max_merges = 50;
      const dt_batch *b = &f.c.batch[0];
      lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
      bt.num_seqs = b->B;
      bt.offsets = b->offsets;
      bt.ids = b->ids;
      lmf_dyntok_result_t *r = NULL;
      if (LMF_CHECK_OK(lmf_dyntok_merge(f.ctx, f.v, &bt, &u.c, &r))) { /* the garbage target is not read */
        int32_t m = 0;
        lmf_dyntok_result_sizes(r, NULL, NULL, &m, NULL);
        LMF_CHECK_EQ_INT(m, 50);
      }
      lmf_dyntok_result_destroy(r);
    }
    LMF_CHECK_FAIL(lmf_dyntok_config_init(&u.c, 24), LMF_ERR_STRUCT_SIZE, "struct_size");
  }
done:
  fx_free(&f);
}

/* ---- Bad inputs ------------------------------------------------------------------------------------ */

void test_dt_embed_bad_input(void) {
  fx f;
  lmf_hypernet_t *h = NULL, *ht = NULL;
  lmf_dyntok_result_t *r = NULL;
  lmf_embed_cache_t *cache = NULL;
  outs o;
  memset(&o, 0, sizeof o);
  if (!fx_init(&f, "mistral-7b", 0)) goto done;
  const lmf_hypernet_config_t cfg = small_config(f.V, 1, 0), cfgt = small_config(f.V, 0, 1);
  h = small_hypernet(f.ctx, &cfg, 3);
  ht = small_hypernet(f.ctx, &cfgt, 4);
  const dt_batch *b = &f.c.batch[0];
  if (!h || !ht || !LMF_CHECK_OK(dt_merge(f.ctx, f.v, b, 100, LMF_DYNTOK_PRETOKENS, NULL, &r))) goto done;
  lmf_embed_cache_config_t cc = LMF_EMBED_CACHE_CONFIG_INIT;
  cc.n_embd = D;
  cc.with_out = 1;
  if (!LMF_CHECK_OK(lmf_embed_cache_create(&cache, &cc))) goto done;
  int64_t Lq = 0;
  int32_t nq = 0;
  lmf_dyntok_embed_shape(r, NULL, &Lq, &nq);
  if (!outs_alloc(&o, BATCH, Lq, nq, LMF_DTYPE_F32)) goto done;
  lmf_dyntok_embed_args_t good;
  lmf_dyntok_embed_args_init(&good, sizeof good);
  good.hypernet = h;
  good.cache = cache;
  good.n_embd = D;
  good.source_in = f.ein;
  good.source_out = f.eout;
  good.source_rows = f.V;
  set_outs(&good, &o, 1);
  const size_t cells = (size_t)(BATCH * Lq);
  lt_snapshot snap;
  lt_snap_init(&snap);
  lt_snap_add(&snap, o.emb, cells * D * 4);
  lt_snap_add(&snap, o.mask, cells * 4);
  lt_snap_add(&snap, o.ids, cells * 4);
  lt_snap_add(&snap, o.ss, cells * 4);
  lt_snap_add(&snap, o.sl, cells * 4);
  lt_snap_add(&snap, o.new_out, (size_t)nq * D * 4);
  lt_snap_add(&snap, o.bias, (size_t)nq * 4);
  lt_snap_add(&snap, &o.max_len, sizeof o.max_len);
  lmf_dyntok_embed_args_t a;
  float small_src[D * 4];
  int32_t bad_stride_dummy = 0;
  (void)bad_stride_dummy;
#define CHECK_UNCHANGED(what)                                                    \
  do {                                                                           \
    int64_t rows_ = -1;                                                          \
    LT_SNAP_CHECK(&snap, what);                                                  \
    lmf_embed_cache_stats(cache, &rows_, NULL, NULL, NULL, NULL, NULL);           \
    LMF_CHECK_MSG(rows_ == 0, "%s: the cache changed (%lld rows)", what, (long long)rows_); \
  } while (0)
#define BAD(mutate, status, needle)                                        \
  do {                                                                    \
    a = good;                                                             \
    mutate;                                                               \
    LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, f.v, r, &a), status, needle);  \
    CHECK_UNCHANGED(needle);                                              \
  } while (0)
  LMF_CHECK_FAIL(lmf_dyntok_embed(NULL, f.v, r, &good), LMF_ERR_NULL_POINTER, "ctx");
  LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, NULL, r, &good), LMF_ERR_NULL_POINTER, "vocab");
  LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, f.v, NULL, &good), LMF_ERR_NULL_POINTER, "result");
  LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, f.v, r, NULL), LMF_ERR_NULL_POINTER, "args");
  CHECK_UNCHANGED("null pointers");
  BAD(a.struct_size = 16, LMF_ERR_STRUCT_SIZE, "struct_size");
  BAD(a.version = 2, LMF_ERR_STRUCT_SIZE, "version");
  BAD(a.method = 2, LMF_ERR_INVALID_ARGUMENT, "method");
  BAD(a.n_embd = 0, LMF_ERR_INVALID_SIZE, "n_embd");
  BAD(a.n_embd = D + 1, LMF_ERR_INVALID_ARGUMENT, "n_embd");
  BAD(a.source_in = NULL, LMF_ERR_NULL_POINTER, "source_in");
  BAD(a.source_dtype = LMF_DTYPE_I32, LMF_ERR_UNSUPPORTED_DTYPE, "source_dtype");
  BAD(a.out_dtype = LMF_DTYPE_U8, LMF_ERR_UNSUPPORTED_DTYPE, "out_dtype");
  BAD(a.source_rows = 0, LMF_ERR_INVALID_SIZE, "source_rows");
  BAD(a.source_rows = 100, LMF_ERR_INVALID_SIZE, "source_rows"); /* below the hypernetwork's V0 */
  BAD(a.source_row_stride = D - 1, LMF_ERR_INVALID_ARGUMENT, "source_row_stride");
  BAD(a.source_row_stride = INT64_MAX / 4, LMF_ERR_INVALID_SIZE, "overflows");
  BAD(a.pad_side = 2, LMF_ERR_INVALID_ARGUMENT, "pad_side");
  BAD(a.pad_id = -2, LMF_ERR_INVALID_ARGUMENT, "pad_id");
  BAD(a.pad_id = f.V, LMF_ERR_INVALID_ARGUMENT, "pad_id");
  BAD(a.seq_len = -1, LMF_ERR_INVALID_SIZE, "seq_len");
  BAD(a.seq_len = Lq - 1, LMF_ERR_INVALID_SIZE, "seq_len");
  BAD(a.out_embeds = NULL, LMF_ERR_NULL_POINTER, "out_embeds");
  BAD(a.hn_input_cache = (float *)small_src, LMF_ERR_NULL_POINTER, "hn_input_cache_valid");
  BAD(a.hypernet = NULL, LMF_ERR_NULL_POINTER, "hypernet");
  BAD(a.source_out = NULL, LMF_ERR_NULL_POINTER, "source_out");
  BAD((a.hypernet = ht, a.cache = NULL, a.out_new_out = NULL, a.lang_index = 0), LMF_ERR_INVALID_ARGUMENT,
      "source_out"); /* tied hypernetwork */
  BAD((a.hypernet = ht, a.cache = NULL, a.source_out = NULL, a.lang_index = 0), LMF_ERR_INVALID_ARGUMENT,
      "out_new_out");
  BAD((a.hypernet = ht, a.cache = NULL, a.source_out = NULL, a.out_new_out = NULL, a.lang_index = 3),
      LMF_ERR_INVALID_ARGUMENT, "lang_index");
  BAD(a.surface_len = 600, LMF_ERR_INVALID_ARGUMENT, "surface_len");
  BAD(a.surface_len = -1, LMF_ERR_INVALID_ARGUMENT, "surface_len");
  BAD((a.method = LMF_DYNTOK_EMBED_FVT), LMF_ERR_INVALID_ARGUMENT, "hypernet");
  BAD((a.method = LMF_DYNTOK_EMBED_FVT, a.hypernet = NULL, a.fvt_unk_id = -1), LMF_ERR_INVALID_ARGUMENT,
      "fvt_unk_id");
  BAD((a.method = LMF_DYNTOK_EMBED_FVT, a.hypernet = NULL, a.source_out = NULL, a.cache = NULL),
      LMF_ERR_INVALID_ARGUMENT, "out_new_out");
  BAD((a.method = LMF_DYNTOK_EMBED_FVT, a.hypernet = NULL, a.hn_input_cache = (float *)small_src,
       a.hn_input_cache_valid = (uint8_t *)small_src),
      LMF_ERR_INVALID_ARGUMENT, "hn_input_cache");
  BAD((a.method = LMF_DYNTOK_EMBED_FVT, a.hypernet = NULL, a.source_out = NULL, a.out_new_out = NULL),
      LMF_ERR_INVALID_ARGUMENT, "cache"); /* the cache holds e_out, FVT without E_out predicts none */
  /* Against the result: ids below source_rows (a result token, then the decomposition for FVT). */
  {
    int32_t maxid = 0;
    for (int64_t i = 0; i < b->offsets[b->B]; ++i)
      if (b->ids[i] > maxid) maxid = b->ids[i];
    BAD((a.method = LMF_DYNTOK_EMBED_FVT, a.hypernet = NULL, a.source_rows = maxid), LMF_ERR_INVALID_ARGUMENT,
        "source_rows");
  }
  /* Overlaps. */
  BAD(a.out_mask = o.ids, LMF_ERR_OVERLAP, "overlap");
  BAD(a.out_new_bias = (float *)o.emb, LMF_ERR_OVERLAP, "overlap");
  BAD(a.out_span_len = (int32_t *)(void *)f.ein, LMF_ERR_OVERLAP, "overlap");
  BAD(a.out_max_len = (int64_t *)(void *)(o.ss + 1), LMF_ERR_OVERLAP, "overlap");
  /* A result of another vocabulary: ids past this one's. */
  {
    static const char *const names[] = {"a", "b"};
    lmf_vocab_t *tiny = dt_vocab(names, 2, NULL);
    if (tiny) {
      a = good;
      a.method = LMF_DYNTOK_EMBED_FVT;
      a.hypernet = NULL;
      a.cache = NULL;
      LMF_CHECK_FAIL(lmf_dyntok_embed(f.ctx, tiny, r, &a), LMF_ERR_INVALID_ARGUMENT, "another vocabulary");
      CHECK_UNCHANGED("another vocabulary");
      lmf_vocab_destroy(tiny);
    }
  }
  /* A hypernetwork whose fallback rows a surface form exceeds: the predict call's error, nothing
   * written (the failure comes after the checks, from lmf_hypernet_predict). */
  {
    lmf_hypernet_config_t c2 = small_config(1000, 1, 0);
    lmf_hypernet_t *h2 = small_hypernet(f.ctx, &c2, 9);
    if (h2) {
      BAD((a.hypernet = h2, a.cache = NULL), LMF_ERR_INVALID_ARGUMENT, "surface_forms");
      lmf_hypernet_destroy(h2);
    }
  }
  /* The pipeline: its own checks first, then the merge's, then the embedding's. */
  {
    lmf_dyntok_config_t dc = LMF_DYNTOK_CONFIG_INIT;
    lmf_dyntok_batch_t bt = LMF_DYNTOK_BATCH_INIT;
    bt.num_seqs = b->B;
    bt.offsets = b->offsets;
    bt.ids = b->ids;
    lmf_dyntok_result_t *sentinel = (lmf_dyntok_result_t *)(uintptr_t)0x42, *out = sentinel;
    a = good;
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(NULL, f.v, &bt, &dc, &a, &out), LMF_ERR_NULL_POINTER, "ctx");
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, NULL, &bt, &dc, &a, &out), LMF_ERR_NULL_POINTER, "vocab");
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, f.v, NULL, &dc, &a, &out), LMF_ERR_NULL_POINTER, "batch");
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, f.v, &bt, NULL, &a, &out), LMF_ERR_NULL_POINTER, "config");
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &dc, NULL, &out), LMF_ERR_NULL_POINTER, "args");
    a.pad_side = 7;
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &dc, &a, &out), LMF_ERR_INVALID_ARGUMENT, "pad_side");
    a = good;
    dc.max_merges = 100;
    a.seq_len = Lq - 1; /* too short for the merged batch */
    LMF_CHECK_FAIL(lmf_dyntok_pipeline(f.ctx, f.v, &bt, &dc, &a, &out), LMF_ERR_INVALID_SIZE, "seq_len");
    LMF_CHECK(out == sentinel);
    CHECK_UNCHANGED("pipeline");
  }
  /* A CUDA context takes a hypernetwork of a CUDA context (and device memory): this CPU one is refused
   * (tests/cuda/test_embed_cuda.c runs the CUDA pipeline). */
  if (lmf_backend_available(LMF_BACKEND_CUDA)) {
    lmf_context_t *cu = lt_context(LMF_BACKEND_CUDA, 0);
    if (cu) {
      LMF_CHECK_FAIL(lmf_dyntok_embed(cu, f.v, r, &good), LMF_ERR_INVALID_ARGUMENT, "hypernet");
      CHECK_UNCHANGED("cuda");
      lmf_context_destroy(cu);
    }
  } else {
    lmf_t_note("no CUDA device: the CUDA-context path (host memory refused) is not exercised here");
  }
#undef BAD
#undef CHECK_UNCHANGED
  /* The init function and the shape query. */
  LMF_CHECK_FAIL(lmf_dyntok_embed_args_init(NULL, sizeof good), LMF_ERR_NULL_POINTER, NULL);
  LMF_CHECK_FAIL(lmf_dyntok_embed_args_init(&a, sizeof a - 8), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK_FAIL(lmf_dyntok_embed_shape(NULL, NULL, NULL, NULL), LMF_ERR_NULL_POINTER, "result");
  LMF_CHECK_OK(lmf_dyntok_embed_shape(r, NULL, NULL, NULL));
  /* And a good call, after all that, works. */
  if (LMF_CHECK_OK(lmf_dyntok_embed(f.ctx, f.v, r, &good))) {
    LMF_CHECK_EQ_INT(o.max_len, Lq);
    LMF_CHECK_EQ_INT(lt_count_nonfinite((const float *)o.emb, (int64_t)cells * D), 0);
  }
  lt_snap_free(&snap);
done:
  outs_free(&o);
  lmf_embed_cache_destroy(cache);
  lmf_dyntok_result_destroy(r);
  lmf_hypernet_destroy(h);
  lmf_hypernet_destroy(ht);
  fx_free(&f);
}
