/* Double-precision ZeTT hypernetwork and FVT references (see lmf_ref_hypernet.h). */
#include "lmf_ref_hypernet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct ref_ctx {
  const lmf_ref_hn_config *c;
  lmf_ref_hn_lookup get;
  void *user;
  int missing;
} ref_ctx;

static const float *W(ref_ctx *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#include <stdarg.h>
static const float *W(ref_ctx *r, const char *fmt, ...) {
  char name[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name, sizeof name, fmt, ap);
  va_end(ap);
  const float *p = r->get(r->user, name);
  if (!p) {
    fprintf(stderr, "lmf_ref_hypernet: weight %s is missing\n", name);
    r->missing = 1;
  }
  return p;
}

/* y[n] = b[n] + sum_k W[n][k] x[k] (PyTorch Linear). */
static void linear(const double *x, int64_t k, const float *w, const float *b, int64_t n, double *y) {
  for (int64_t i = 0; i < n; ++i) {
    const float *wr = w + i * k;
    double s = 0.0;
    for (int64_t j = 0; j < k; ++j) s += (double)wr[j] * x[j];
    y[i] = s + (double)b[i];
  }
}

static double gelu_tanh(double x) {
  return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static double gelu_erf(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }

static void layer_norm(double *x, int64_t n, const float *w, const float *b, double eps) {
  double m = 0.0, v = 0.0;
  for (int64_t j = 0; j < n; ++j) m += x[j];
  m /= (double)n;
  for (int64_t j = 0; j < n; ++j) v += (x[j] - m) * (x[j] - m);
  v /= (double)n;
  const double rs = 1.0 / sqrt(v + eps);
  for (int64_t j = 0; j < n; ++j) x[j] = (x[j] - m) * rs * (double)w[j] + (double)b[j];
}

/* ProjectorBlock in place on x [H]; t: scratch of I + H. */
static void projector(ref_ctx *r, const char *prefix, double *x, double *t) {
  const lmf_ref_hn_config *c = r->c;
  const int64_t H = c->hidden, I = c->intermediate;
  const float *w1 = W(r, "%s.dense1.weight", prefix), *b1 = W(r, "%s.dense1.bias", prefix);
  const float *w2 = W(r, "%s.dense2.weight", prefix), *b2 = W(r, "%s.dense2.bias", prefix);
  const float *lw = W(r, "%s.ln.weight", prefix), *lb = W(r, "%s.ln.bias", prefix);
  if (r->missing) return;
  double *ti = t, *th = t + I;
  linear(x, H, w1, b1, I, ti);
  for (int64_t j = 0; j < I; ++j) ti[j] = c->block_gelu_erf ? gelu_erf(ti[j]) : gelu_tanh(ti[j]);
  linear(ti, I, w2, b2, H, th);
  for (int64_t j = 0; j < H; ++j) x[j] = x[j] + (c->block_gelu_erf ? gelu_erf(th[j]) : gelu_tanh(th[j]));
  layer_norm(x, H, lw, lb, c->eps_block);
}

int lmf_ref_hypernet(const lmf_ref_hn_config *c, lmf_ref_hn_lookup get, void *user, const int32_t *S, int64_t U,
                     int64_t L, const float *E_in, const float *E_out, int64_t stride, int lang_index,
                     const int32_t *copy_ids, double *out_in, double *out_out, double *out_bias) {
  ref_ctx r = {c, get, user, 0};
  const int64_t H = c->hidden, I = c->intermediate, E = c->n_embd;
  const int64_t n_in = c->separate ? 2 * E : E;
  const int64_t Lt = L + (c->lang ? 1 : 0);
  const int64_t d = H / c->heads;
  const int64_t n_head = c->single_head ? n_in : E;
  double *x = (double *)malloc(sizeof(double) * (size_t)(n_in + H));
  double *h = (double *)malloc(sizeof(double) * (size_t)(Lt * H));
  double *q = (double *)malloc(sizeof(double) * (size_t)(Lt * H));
  double *k = (double *)malloc(sizeof(double) * (size_t)(Lt * H));
  double *v = (double *)malloc(sizeof(double) * (size_t)(Lt * H));
  double *cx = (double *)malloc(sizeof(double) * (size_t)(Lt * H));
  double *t = (double *)malloc(sizeof(double) * (size_t)(I + H + n_in + H));
  double *p = (double *)malloc(sizeof(double) * (size_t)H);
  double *sc = (double *)malloc(sizeof(double) * (size_t)Lt);
  int rc = -1;
  if (!x || !h || !q || !k || !v || !cx || !t || !p || !sc) goto done;

  const float *in_w = W(&r, "input_projection.0.weight"), *in_b = W(&r, "input_projection.0.bias");
  const float *fb = W(&r, "fallback_embeddings.weight");
  const float *pos = W(&r, "model.embeddings.position_embeddings.weight");
  const float *typ = W(&r, "model.embeddings.token_type_embeddings.weight");
  const float *eln_w = W(&r, "model.embeddings.LayerNorm.weight"), *eln_b = W(&r, "model.embeddings.LayerNorm.bias");
  const float *isw = NULL, *isb = NULL, *sw = NULL, *sb = NULL, *osw = NULL, *osb = NULL;
  if (c->rescale) {
    isw = W(&r, "in_scaler.w");
    isb = W(&r, "in_scaler.b");
    sw = W(&r, "scaler.w");
    sb = W(&r, "scaler.b");
    if (c->separate) {
      osw = W(&r, "out_scaler.w");
      osb = W(&r, "out_scaler.b");
    }
  }
  const float *lang = c->lang ? W(&r, "lang_embeddings.weight") : NULL;
  const float *hw = W(&r, "output_projection.1.weight"), *hb = W(&r, "output_projection.1.bias");
  const float *ow = NULL, *ob = NULL;
  if (c->separate && !c->single_head) {
    ow = W(&r, "output_projection_out.1.weight");
    ob = W(&r, "output_projection_out.1.bias");
  }
  const float *bw = c->predict_bias ? W(&r, "bias_projection.weight") : NULL;
  const float *bb = c->predict_bias ? W(&r, "bias_projection.bias") : NULL;
  if (r.missing) goto done;

  for (int64_t u = 0; u < U; ++u) {
    const int32_t *s = S + u * L;
    int any_key = c->lang ? 1 : 0;
    for (int64_t l = 0; l < L; ++l) any_key |= s[l] != c->pad_id;
    /* embeddings of every position */
    for (int64_t l = 0; l < Lt; ++l) {
      double *hr = h + l * H;
      if (l < L) {
        const int32_t id = s[l];
        if (id >= c->vocab0) {
          for (int64_t j = 0; j < n_in; ++j) x[j] = fb[(int64_t)(id - c->vocab0) * n_in + j];
        } else {
          for (int64_t j = 0; j < E; ++j) x[j] = E_in[(int64_t)id * stride + j];
          if (c->separate)
            for (int64_t j = 0; j < E; ++j) x[E + j] = E_out[(int64_t)id * stride + j];
          if (c->rescale)
            for (int64_t j = 0; j < n_in; ++j) x[j] = (double)isw[j] * x[j] + (double)isb[j];
        }
        linear(x, n_in, in_w, in_b, H, hr);
        projector(&r, "input_projection.1", hr, t);
        for (int64_t j = 0; j < H; ++j) hr[j] += (double)typ[j] + (double)pos[l * H + j];
      } else {
        /* the language position: its type and position embeddings cancel */
        for (int64_t j = 0; j < H; ++j) hr[j] = lang[(int64_t)lang_index * H + j];
      }
      layer_norm(hr, H, eln_w, eln_b, c->eps_roberta);
    }
    if (r.missing) goto done;
    /* encoder, every position */
    for (int li = 0; li < c->layers; ++li) {
      const float *qw = W(&r, "model.encoder.layer.%d.attention.self.query.weight", li);
      const float *qb = W(&r, "model.encoder.layer.%d.attention.self.query.bias", li);
      const float *kw = W(&r, "model.encoder.layer.%d.attention.self.key.weight", li);
      const float *kb = W(&r, "model.encoder.layer.%d.attention.self.key.bias", li);
      const float *vw = W(&r, "model.encoder.layer.%d.attention.self.value.weight", li);
      const float *vb = W(&r, "model.encoder.layer.%d.attention.self.value.bias", li);
      const float *aw = W(&r, "model.encoder.layer.%d.attention.output.dense.weight", li);
      const float *ab = W(&r, "model.encoder.layer.%d.attention.output.dense.bias", li);
      const float *l1w = W(&r, "model.encoder.layer.%d.attention.output.LayerNorm.weight", li);
      const float *l1b = W(&r, "model.encoder.layer.%d.attention.output.LayerNorm.bias", li);
      const float *fw1 = W(&r, "model.encoder.layer.%d.intermediate.dense.weight", li);
      const float *fb1 = W(&r, "model.encoder.layer.%d.intermediate.dense.bias", li);
      const float *fw2 = W(&r, "model.encoder.layer.%d.output.dense.weight", li);
      const float *fb2 = W(&r, "model.encoder.layer.%d.output.dense.bias", li);
      const float *l2w = W(&r, "model.encoder.layer.%d.output.LayerNorm.weight", li);
      const float *l2b = W(&r, "model.encoder.layer.%d.output.LayerNorm.bias", li);
      if (r.missing) goto done;
      for (int64_t l = 0; l < Lt; ++l) {
        linear(h + l * H, H, qw, qb, H, q + l * H);
        linear(h + l * H, H, kw, kb, H, k + l * H);
        linear(h + l * H, H, vw, vb, H, v + l * H);
      }
      for (int64_t l = 0; l < Lt; ++l)
        for (int hd = 0; hd < c->heads; ++hd) {
          const int64_t o = hd * d;
          double mx = -INFINITY;
          for (int64_t j = 0; j < Lt; ++j) {
            const int key = j >= L || s[j] != c->pad_id;
            if (any_key && !key) {
              sc[j] = -INFINITY;
              continue;
            }
            double z = 0.0;
            for (int64_t e = 0; e < d; ++e) z += q[l * H + o + e] * k[j * H + o + e];
            sc[j] = any_key ? z / sqrt((double)d) : 0.0; /* all masked: equal scores */
            if (sc[j] > mx) mx = sc[j];
          }
          double sum = 0.0;
          for (int64_t j = 0; j < Lt; ++j) {
            sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx);
            sum += sc[j];
          }
          for (int64_t e = 0; e < d; ++e) {
            double a = 0.0;
            for (int64_t j = 0; j < Lt; ++j) a += sc[j] * v[j * H + o + e];
            cx[l * H + o + e] = a / sum;
          }
        }
      for (int64_t l = 0; l < Lt; ++l) {
        double *hr = h + l * H;
        double *tt = t;
        linear(cx + l * H, H, aw, ab, H, tt);
        for (int64_t j = 0; j < H; ++j) hr[j] += tt[j];
        layer_norm(hr, H, l1w, l1b, c->eps_roberta);
        double *ti = t, *th = t + I;
        linear(hr, H, fw1, fb1, I, ti);
        for (int64_t j = 0; j < I; ++j) ti[j] = c->layer_gelu_tanh ? gelu_tanh(ti[j]) : gelu_erf(ti[j]);
        linear(ti, I, fw2, fb2, H, th);
        for (int64_t j = 0; j < H; ++j) hr[j] += th[j];
        layer_norm(hr, H, l2w, l2b, c->eps_roberta);
      }
    }
    /* heads on position 0 */
    double *y = t + I + H; /* n_in */
    for (int64_t j = 0; j < H; ++j) p[j] = h[j];
    memcpy(x, p, sizeof(double) * (size_t)H);
    projector(&r, "output_projection.0", x, t);
    linear(x, H, hw, hb, n_head, y);
    const int32_t cp = copy_ids ? copy_ids[u] : -1;
    for (int64_t j = 0; j < E; ++j) {
      double e = y[j];
      if (c->rescale) e = (double)sw[j] * e + (double)sb[j];
      out_in[u * E + j] = cp >= 0 ? (double)E_in[(int64_t)cp * stride + j] : e;
    }
    if (c->separate && out_out) {
      double *yo = y;
      if (!c->single_head) {
        memcpy(x, p, sizeof(double) * (size_t)H);
        projector(&r, "output_projection_out.0", x, t);
        linear(x, H, ow, ob, E, y);
      } else {
        yo = y + E;
      }
      for (int64_t j = 0; j < E; ++j) {
        double e = yo[j];
        if (c->rescale) e = (double)osw[j] * e + (double)osb[j];
        out_out[u * E + j] = cp >= 0 ? (double)E_out[(int64_t)cp * stride + j] : e;
      }
    }
    if (out_bias) {
      double b = 0.0;
      if (c->predict_bias) {
        for (int64_t j = 0; j < H; ++j) b += (double)bw[j] * p[j];
        b += bb[0];
      }
      out_bias[u] = b;
    }
    if (r.missing) goto done;
  }
  rc = 0;
done:
  free(x);
  free(h);
  free(q);
  free(k);
  free(v);
  free(cx);
  free(t);
  free(p);
  free(sc);
  return rc;
}

void lmf_ref_fvt(const int64_t *offsets, const int32_t *ids, const int32_t *copy_ids, int64_t U, const float *E,
                 int64_t rows, int64_t n, int64_t stride, int32_t unk, double *out) {
  for (int64_t u = 0; u < U; ++u) {
    double *o = out + u * n;
    const int64_t b = offsets[u], m = offsets[u + 1] - b;
    const int32_t cp = copy_ids ? copy_ids[u] : -1;
    if (cp >= 0 || m == 0) {
      const int64_t row = cp >= 0 ? cp : unk;
      for (int64_t j = 0; j < n; ++j) o[j] = E[row * stride + j];
      continue;
    }
    for (int64_t j = 0; j < n; ++j) o[j] = 0.0;
    for (int64_t i = 0; i < m; ++i) {
      int64_t id = ids[b + i];
      if (id < 0 || id >= rows) id = unk;
      for (int64_t j = 0; j < n; ++j) o[j] += E[id * stride + j];
    }
    for (int64_t j = 0; j < n; ++j) o[j] /= (double)m;
  }
}
