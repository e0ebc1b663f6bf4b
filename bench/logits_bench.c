/* lmfuse-bench logits: one fused combine + sample step over B rows of K models' logits, for the
 * issue's grid of B, V, K (and K = 3 with GeDi), fp32 and bf16; beside the same-run copy of the bytes
 * the step must read (the floor) and the unfused PyTorch step (bench/python/logits_torch_ref.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_device.h"
#include "bench_families.h"
#include "bench_util.h"
#include "lmfuse/logits.h"

typedef struct logits_case {
  bench_dev *dev;
  lmf_logits_model_t models[3];
  int num_models;
  lmf_logits_params_t params;
  lmf_logits_outputs_t out;
  void *ws;
  size_t ws_bytes;
  uint64_t *offsets; /* bumped every call, as a decoding loop would */
  int ok;
} logits_case;

static void run_combine(void *p) {
  logits_case *c = (logits_case *)p;
  lmf_status_t st = lmf_logits_combine(c->dev->ctx, c->models, (size_t)c->num_models, &c->params,
                                       &c->out, c->ws, c->ws_bytes, c->dev->stream);
  if (st != LMF_OK && c->ok) {
    fprintf(stderr, "lmfuse-bench: %s\n", lmf_last_error());
    c->ok = 0;
  }
}

/* Logits ~ 2 N(0, 1) for `rows` x `vocab`, in dtype, in backend memory. */
static void *make_logits(bench_dev *d, int rows, int vocab, int32_t dtype, uint64_t seed) {
  size_t n = (size_t)rows * (size_t)vocab, es = lmf_dtype_size(dtype);
  float *f = (float *)malloc(n * sizeof(float));
  void *h = malloc(n * es);
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    double u = 0;
    for (int r = 0; r < 4; ++r) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      u += (double)(s >> 11) * 0x1.0p-53;
    }
    f[i] = (float)((u - 2.0) * 1.7320508 * 2.0);
  }
  lmf_convert_host(h, dtype, f, LMF_DTYPE_F32, (int64_t)n);
  void *dptr = bdev_alloc(d, n * es);
  bdev_upload(d, dptr, h, n * es);
  free(f);
  free(h);
  return dptr;
}

static void *upload_copy(bench_dev *d, const void *src, size_t bytes) {
  void *p = bdev_alloc(d, bytes);
  bdev_upload(d, p, src, bytes);
  return p;
}

static double peer_us(const bench_opts *o, int batch, int vocab, int models, int gedi, const char *dtype,
                      int cuda) {
  if (!o->peer) return NAN;
  char args[512];
  snprintf(args, sizeof args,
           "--batch %d --vocab %d --models %d %s --dtype %s --device %s --repeats %d --warmup %d", batch,
           vocab, models, gedi ? "--gedi" : "", dtype, cuda ? "cuda" : "cpu", cuda ? 50 : 3, cuda ? 5 : 1);
  cJSON *j = bench_run_peer("logits_torch_ref.py", args);
  if (!j) return NAN;
  cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "us_per_step");
  double us = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  cJSON_Delete(j);
  return us;
}

static int run_one(bench_dev *d, const bench_opts *o, int B, int V, int K, int gedi, int32_t dt) {
  logits_case c;
  memset(&c, 0, sizeof c);
  c.dev = &d[0];
  c.ok = 1;
  c.num_models = K;
  const float coeffs[3] = {1.0f, 1.0f, -1.0f}; /* EFT up-scaling / proxy-tuning */
  void *bufs[3] = {NULL, NULL, NULL};
  for (int k = 0; k < K; ++k) {
    bufs[k] = make_logits(d, B, V, dt, (uint64_t)(k + 1));
    lmf_logits_model_t *m = &c.models[k];
    memset(m, 0, sizeof *m);
    m->logits = bufs[k];
    m->row_stride = V;
    m->dtype = dt;
    m->vocab = V;
    m->coeff = gedi && k > 0 ? 0.0f : coeffs[k];
    m->temperature = 1.0f;
  }
  lmf_logits_params_init(&c.params, sizeof c.params);
  c.params.num_rows = B;
  c.params.vocab_out = V;
  c.params.temperature = 0.8f;
  c.params.top_p = 0.9f;
  c.params.top_k = 0;
  c.params.plausibility_model = -1;
  c.params.nucleus_model = -1;
  c.params.gedi_pos_model = -1;
  c.params.gedi_neg_model = -1;
  uint64_t *seeds = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)B);
  uint64_t *offs = (uint64_t *)calloc((size_t)B, sizeof(uint64_t));
  float *zeros = (float *)calloc((size_t)B, sizeof(float));
  int32_t *izeros = (int32_t *)calloc((size_t)B, sizeof(int32_t));
  for (int b = 0; b < B; ++b) seeds[b] = 1000 + (uint64_t)b;
  c.params.seeds = (const uint64_t *)upload_copy(d, seeds, sizeof(uint64_t) * (size_t)B);
  c.params.offsets = (const uint64_t *)upload_copy(d, offs, sizeof(uint64_t) * (size_t)B);
  void *gstate[3] = {NULL, NULL, NULL};
  if (gedi) {
    c.params.gedi_pos_model = 1;
    c.params.gedi_neg_model = 2;
    c.params.gedi_omega = 30.0f;
    c.params.gedi_logit_scale = 1.0f;
    c.params.gedi_filter_p = 0.8f;
    c.params.gedi_target_p = 0.8f;
    gstate[0] = upload_copy(d, zeros, sizeof(float) * (size_t)B);
    gstate[1] = upload_copy(d, zeros, sizeof(float) * (size_t)B);
    gstate[2] = upload_copy(d, izeros, sizeof(int32_t) * (size_t)B);
    c.params.gedi_L_pos = (float *)gstate[0];
    c.params.gedi_L_neg = (float *)gstate[1];
    c.params.gedi_n = (int32_t *)gstate[2];
  }
  lmf_logits_outputs_init(&c.out, sizeof c.out);
  c.out.tokens = (int32_t *)bdev_alloc(d, sizeof(int32_t) * (size_t)B);
  c.out.status = (int32_t *)bdev_alloc(d, sizeof(int32_t) * (size_t)B);
  if (lmf_logits_workspace_size(d->ctx, c.models, (size_t)K, &c.params, &c.ws_bytes) != LMF_OK) {
    fprintf(stderr, "lmfuse-bench: %s\n", lmf_last_error());
    return 1;
  }
  c.ws = c.ws_bytes ? bdev_alloc(d, c.ws_bytes) : NULL;

  bdev_busy(d, o->busy_ms);
  double us = 1e3 * bdev_time_ms(d, run_combine, &c, o->warmup, o->repeats);
  bdev_busy(d, o->busy_ms);
  double graph_us = 1e3 * bdev_time_graph_ms(d, run_combine, &c, o->warmup, o->repeats); /* NAN on the CPU */
  size_t in_bytes = (size_t)K * (size_t)B * (size_t)V * lmf_dtype_size(dt);
  double copy = bdev_copy_gbs(d, in_bytes, 1, o->repeats); /* read + write of the input bytes */
  double floor_us = (double)in_bytes / (copy * 0.5 * 1e3);  /* reading them once at that rate */
  const char *dn = lmf_dtype_name(dt);
  /* The peer runs for K = 3 (the bar); K = 1 is lmfuse alone. */
  double torch_us = K == 3 ? peer_us(o, B, V, K, gedi, dn, d->cuda) : NAN;
  char peer_col[32] = "", sp_col[32] = "";
  if (!isnan(torch_us)) {
    snprintf(peer_col, sizeof peer_col, "%.1f", torch_us);
    snprintf(sp_col, sizeof sp_col, "%.1fx", torch_us / us);
  }
  char graph_col[32] = "-";
  if (!isnan(graph_us)) snprintf(graph_col, sizeof graph_col, "%.1f", graph_us);
  printf("%5d %7d %-7s %-5s %10.1f %10s %10.1f %6.1f %12s %8s\n", B, V, gedi ? "3+GeDi" : (K == 1 ? "1" : "3"),
         dn, us, graph_col, floor_us, 100.0 * floor_us / us, peer_col, sp_col);
  fflush(stdout);
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "family", "logits");
  cJSON_AddNumberToObject(r, "batch", B);
  cJSON_AddNumberToObject(r, "vocab", V);
  cJSON_AddNumberToObject(r, "models", K);
  cJSON_AddBoolToObject(r, "gedi", gedi);
  cJSON_AddStringToObject(r, "dtype", dn);
  cJSON_AddNumberToObject(r, "us", us);
  if (!isnan(graph_us)) cJSON_AddNumberToObject(r, "graph_us", graph_us);
  cJSON_AddNumberToObject(r, "floor_us", floor_us);
  cJSON_AddNumberToObject(r, "busy_ms", o->busy_ms);
  cJSON_AddNumberToObject(r, "pct_of_floor", 100.0 * floor_us / us);
  cJSON_AddNumberToObject(r, "copy_gbps", copy);
  if (!isnan(torch_us)) {
    cJSON_AddNumberToObject(r, "torch_us", torch_us);
    cJSON_AddNumberToObject(r, "speedup_vs_torch", torch_us / us);
  }
  cJSON_AddStringToObject(r, "device", d->name);
  bench_record(r);

  bdev_free(d, c.ws);
  bdev_free(d, c.out.tokens);
  bdev_free(d, c.out.status);
  for (int i = 0; i < 3; ++i) bdev_free(d, gstate[i]);
  bdev_free(d, (void *)c.params.seeds);
  bdev_free(d, (void *)c.params.offsets);
  for (int k = 0; k < K; ++k) bdev_free(d, bufs[k]);
  free(seeds);
  free(offs);
  free(zeros);
  free(izeros);
  return c.ok ? 0 : 1;
}

int bench_logits(const bench_opts *o) {
  bench_dev d;
  if (!bdev_open(&d, o->backend, o->threads)) return 1;
  printf("\nlmfuse-bench logits on %s: one combine + top-p 0.9 + sample step, median of %d\n", d.name,
         o->repeats);
  if (d.cuda) /* what a decoding loop that captures its step sees: the launches without the host's cost */
    printf("(graph us: the same step captured once into a CUDA graph and replayed; %%floor is of us)\n");
  if (d.cuda && o->busy_ms > 0)
    printf("(the card kept busy for %d ms before each timing: a decoding loop's clock)\n", o->busy_ms);
  bench_table_header("Logit combination (floor = reading every input logit once at the same-run copy rate)",
                     "    B       V K       dtype        us   graph us   floor us  %floor     torch us  speedup");
  int Bs[4] = {1, 8, 64, 256};
  int Vs[4] = {32000, 128256, 151936, 256000};
  int nb = 4, nv = 4;
  if (o->only_batch) Bs[0] = o->only_batch, nb = 1; /* --batch / --vocab: that size alone */
  if (o->only_vocab) Vs[0] = o->only_vocab, nv = 1;
  const int32_t dts[2] = {LMF_DTYPE_F32, LMF_DTYPE_BF16};
  int rc = 0;
  for (int di = 0; di < 2; ++di)
    for (int vi = 0; vi < nv; ++vi)
      for (int bi = 0; bi < nb; ++bi)
        for (int kc = 0; kc < 3; ++kc) {
          /* --quick: the sizes the bars name (B = 1 and 256 at V = 128256) and the smallest vocabulary. */
          if (o->quick && nb == 4 && (bi != 0 && bi != 3)) continue;
          if (o->quick && nv == 4 && vi > 1) continue;
          /* --models / --dtype: one case of the sweep (what a profiler run wants). */
          if (o->only_models && (kc == 2 || (kc == 0 ? 1 : 3) != o->only_models)) continue;
          if (o->only_dtype && dts[di] != o->only_dtype - 1) continue;
          rc |= run_one(&d, o, Bs[bi], Vs[vi], kc == 0 ? 1 : 3, kc == 2, dts[di]);
        }
  bdev_close(&d);
  return rc;
}
