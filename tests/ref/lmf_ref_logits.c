/* The double-precision reference of one row of the logit combination (see lmf_ref_logits.h). */
#include "lmf_ref_logits.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lmfuse/logits.h"

double ref_lg_lse(const double *x, int n) {
  double mx = -INFINITY;
  for (int i = 0; i < n; ++i)
    if (x[i] > mx) mx = x[i];
  if (mx == -INFINITY) return -INFINITY;
  double s = 0.0;
  for (int i = 0; i < n; ++i)
    if (x[i] != -INFINITY) s += exp(x[i] - mx);
  return mx + log(s);
}

double ref_lg_softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

void ref_lg_config_default(ref_lg_config *c, int32_t vocab_out) {
  memset(c, 0, sizeof *c);
  c->vocab_out = vocab_out;
  c->plausibility_model = -1;
  c->plausibility_alpha = 0.1;
  c->nucleus_model = -1;
  c->nucleus_p = 1.0;
  c->gedi_pos = -1;
  c->gedi_neg = -1;
  c->omega = 30.0;
  c->logit_scale = 1.0;
  c->filter_p = 0.8;
  c->target_p = 0.8;
  c->temperature = 1.0;
  c->top_p = 1.0;
}

/* x_k(v) in double: dense columns past the model's vocab are -inf, absent sparse tokens the fill. */
static void model_row(const ref_lg_model *m, int32_t V, double *x) {
  if (m->ids) {
    for (int32_t v = 0; v < V; ++v) x[v] = m->fill / m->tau;
    for (int32_t j = 0; j < m->sparse_k; ++j) {
      int32_t id = m->ids[j];
      if (id >= 0 && id < V) x[id] = m->z[j] / m->tau;
    }
    return;
  }
  for (int32_t v = 0; v < V; ++v) x[v] = v < m->vocab ? m->z[v] / m->tau : -INFINITY;
}

static int bad_value(double x) { return isnan(x) || x == INFINITY; }

/* Sort keys: indices ordered by key descending (or ascending), ties by ascending token id. */
static const double *g_key;
static int g_desc;
static int cmp_idx(const void *a, const void *b) {
  int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
  double ki = g_key[i], kj = g_key[j];
  if (ki != kj) return g_desc ? (ki > kj ? -1 : 1) : (ki < kj ? -1 : 1);
  return i < j ? -1 : (i > j);
}
static void sort_idx(int32_t *idx, int n, const double *key, int desc) {
  g_key = key;
  g_desc = desc;
  qsort(idx, (size_t)n, sizeof *idx, cmp_idx);
}

/* Keeps, among alive tokens, the smallest highest-first set of softmax(y) mass >= p. */
static void top_p_mask(const double *y, unsigned char *alive, int32_t V, double p, int32_t *idx, double *tmp) {
  int n = 0;
  for (int32_t v = 0; v < V; ++v) {
    tmp[v] = alive[v] ? y[v] : -INFINITY;
    if (alive[v]) idx[n++] = v;
  }
  double lse = ref_lg_lse(tmp, V);
  sort_idx(idx, n, tmp, 1);
  double cum = 0.0;
  int keep = n;
  for (int i = 0; i < n; ++i) {
    cum += exp(tmp[idx[i]] - lse);
    if (cum >= p) {
      keep = i + 1;
      break;
    }
  }
  for (int i = keep; i < n; ++i) alive[idx[i]] = 0;
}

int32_t ref_lg_row(const ref_lg_model *m, int K, const ref_lg_config *c, ref_lg_result *r) {
  const int32_t V = c->vocab_out;
  double *x = (double *)malloc(sizeof(double) * (size_t)V * (size_t)K);
  double *s = (double *)malloc(sizeof(double) * (size_t)V);
  double *y = (double *)malloc(sizeof(double) * (size_t)V);
  double *tmp = (double *)malloc(sizeof(double) * (size_t)V);
  double *lpd = (double *)malloc(sizeof(double) * (size_t)V);
  int32_t *idx = (int32_t *)malloc(sizeof(int32_t) * (size_t)V);
  unsigned char *alive = (unsigned char *)malloc((size_t)V);
  for (int32_t v = 0; v < V; ++v) s[v] = lpd[v] = NAN;
  r->status = LMF_ROW_OK;
  r->argmax = -1;
  r->lse = -INFINITY;
  r->survivors = 0;
  r->L_pos_next = c->L_pos;
  r->L_neg_next = c->L_neg;
  int gedi = c->gedi_pos >= 0;

  /* Which models the row reads, their rows, and the status checks. */
  for (int k = 0; k < K; ++k) {
    model_row(&m[k], V, x + (size_t)k * V);
    int used = m[k].coeff != 0.0 || k == c->plausibility_model || k == c->nucleus_model ||
               (gedi && (k == c->gedi_pos || k == c->gedi_neg));
    if (m[k].ids) {
      for (int32_t j = 0; j < m[k].sparse_k; ++j)
        if (m[k].ids[j] < 0 || m[k].ids[j] >= V) r->status = LMF_ROW_BAD_INDEX;
    }
    if (!used) continue;
    const double *xk = x + (size_t)k * V;
    for (int32_t v = 0; v < V; ++v)
      if (bad_value(xk[v]) && r->status == LMF_ROW_OK) r->status = LMF_ROW_NONFINITE;
  }
  if (c->bias)
    for (int32_t v = 0; v < V; ++v)
      if (bad_value(c->bias[v]) && r->status == LMF_ROW_OK) r->status = LMF_ROW_NONFINITE;
  if (r->status != LMF_ROW_OK) goto done;

  /* s(v) = sum_k c_k x_k(v) (+ omega logP) (+ bias). */
  for (int32_t v = 0; v < V; ++v) {
    double acc = 0.0;
    int neg_inf = 0;
    for (int k = 0; k < K; ++k) {
      if (m[k].coeff == 0.0) continue;
      double xv = x[(size_t)k * V + v];
      if (xv == -INFINITY) neg_inf = 1;
      else acc += m[k].coeff * xv;
    }
    s[v] = neg_inf ? -INFINITY : acc;
  }
  if (gedi) {
    const double *xp = x + (size_t)c->gedi_pos * V, *xn = x + (size_t)c->gedi_neg * V;
    double lp = ref_lg_lse(xp, V), ln = ref_lg_lse(xn, V);
    double t = (double)c->n + 1.0;
    for (int32_t v = 0; v < V; ++v) {
      double l_pos = c->logit_scale * (c->L_pos + (xp[v] - lp)) / t + c->bias_pos + c->class_bias;
      double l_neg = c->logit_scale * (c->L_neg + (xn[v] - ln)) / t + c->bias_neg;
      double d;
      if (l_pos == -INFINITY) d = -INFINITY;
      else if (l_neg == -INFINITY) d = 0.0;
      else d = -ref_lg_softplus(l_neg - l_pos);
      lpd[v] = d;
      s[v] = (d == -INFINITY) ? -INFINITY : s[v] + c->omega * d;
    }
  }
  if (c->bias)
    for (int32_t v = 0; v < V; ++v) s[v] += c->bias[v];
  for (int32_t v = 0; v < V; ++v) alive[v] = s[v] != -INFINITY;

  /* Masks. */
  if (c->plausibility_model >= 0) {
    const double *xm = x + (size_t)c->plausibility_model * V;
    double mx = -INFINITY;
    for (int32_t v = 0; v < V; ++v)
      if (xm[v] > mx) mx = xm[v];
    double thr = mx + log(c->plausibility_alpha);
    for (int32_t v = 0; v < V; ++v)
      if (!(xm[v] >= thr)) alive[v] = 0;
  }
  if (c->nucleus_model >= 0 && c->nucleus_p < 1.0) {
    unsigned char *nuc = (unsigned char *)malloc((size_t)V);
    const double *xm = x + (size_t)c->nucleus_model * V;
    for (int32_t v = 0; v < V; ++v) nuc[v] = xm[v] != -INFINITY;
    top_p_mask(xm, nuc, V, c->nucleus_p, idx, tmp);
    for (int32_t v = 0; v < V; ++v)
      if (!nuc[v]) alive[v] = 0;
    free(nuc);
  }
  if (gedi && c->filter_p > 0.0) {
    int n = 0;
    for (int32_t v = 0; v < V; ++v) {
      tmp[v] = alive[v] ? s[v] : -INFINITY;
      if (alive[v]) idx[n++] = v;
    }
    double lse = ref_lg_lse(tmp, V);
    sort_idx(idx, n, lpd, 0); /* ascending desirability, then ascending id */
    /* class_bias moves the target too: target_p' = sigmoid(logit(target_p) + class_bias). */
    double lt = c->target_p >= 1.0 ? INFINITY : log(c->target_p) - log1p(-c->target_p) + c->class_bias;
    double log_target = lt == INFINITY ? 0.0 : -ref_lg_softplus(-lt);
    double cum = 0.0;
    for (int i = 0; i < n; ++i) {
      int32_t v = idx[i];
      cum += exp(tmp[v] - lse);
      if (cum < c->filter_p && lpd[v] < log_target) alive[v] = 0;
    }
  }

  /* Temperature, top-k, top-p, min-p. */
  {
    double T = c->temperature > 0.0 ? c->temperature : 1.0;
    for (int32_t v = 0; v < V; ++v) y[v] = s[v] / T;
    int n = 0;
    for (int32_t v = 0; v < V; ++v)
      if (alive[v]) idx[n++] = v;
    if (c->top_k > 0 && c->top_k < n) {
      sort_idx(idx, n, y, 1);
      for (int i = c->top_k; i < n; ++i) alive[idx[i]] = 0;
    }
    if (c->top_p < 1.0) top_p_mask(y, alive, V, c->top_p, idx, tmp);
    if (c->min_p > 0.0) {
      for (int32_t v = 0; v < V; ++v) tmp[v] = alive[v] ? y[v] : -INFINITY;
      double lse = ref_lg_lse(tmp, V), mx = -INFINITY;
      for (int32_t v = 0; v < V; ++v)
        if (tmp[v] > mx) mx = tmp[v];
      double pmax = exp(mx - lse);
      for (int32_t v = 0; v < V; ++v)
        if (alive[v] && exp(y[v] - lse) < c->min_p * pmax) alive[v] = 0;
    }
    for (int32_t v = 0; v < V; ++v) tmp[v] = alive[v] ? y[v] : -INFINITY;
    r->lse = ref_lg_lse(tmp, V);
    double best = -INFINITY;
    for (int32_t v = 0; v < V; ++v) {
      if (!alive[v]) continue;
      r->survivors++;
      if (r->argmax < 0 || y[v] > best) {
        best = y[v];
        r->argmax = v;
      }
    }
    if (r->survivors == 0) {
      r->status = LMF_ROW_ALL_MASKED;
      r->argmax = -1;
      goto done;
    }
    if (r->logprobs)
      for (int32_t v = 0; v < V; ++v) r->logprobs[v] = alive[v] ? y[v] - r->lse : -INFINITY;
  }
  if (gedi) {
    const double *xp = x + (size_t)c->gedi_pos * V, *xn = x + (size_t)c->gedi_neg * V;
    r->L_pos_next = c->L_pos + (xp[r->argmax] - ref_lg_lse(xp, V));
    r->L_neg_next = c->L_neg + (xn[r->argmax] - ref_lg_lse(xn, V));
  }

done:
  if (r->s) memcpy(r->s, s, sizeof(double) * (size_t)V);
  if (r->logp_desired && gedi) memcpy(r->logp_desired, lpd, sizeof(double) * (size_t)V);
  free(x);
  free(s);
  free(y);
  free(tmp);
  free(lpd);
  free(idx);
  free(alive);
  return r->status;
}
