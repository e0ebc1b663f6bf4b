/* lmfuse-bench mezo: perturb, the fused step and a whole 2-pass MeZO step over ~1e8 parameters in
 * ~100 tensors, fp32 and bf16, Gaussian and Rademacher; beside a same-run copy of the same bytes (the
 * floor) and the MeZO repository's 4-pass PyTorch step (bench/python/mezo_torch_ref.py). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_device.h"
#include "bench_families.h"
#include "bench_util.h"
#include "lmfuse/mezo.h"

typedef struct mezo_case {
  lmf_mezo_plan_t *plan;
  bench_dev *dev;
  uint64_t seed;
  float eps;
  int sign;
} mezo_case;

static void check(lmf_status_t st) {
  if (st != LMF_OK) {
    fprintf(stderr, "lmfuse-bench: %s\n", lmf_last_error());
    exit(2);
  }
}

/* One perturbation pass; alternates +eps / -eps so the parameters stay put. */
static void run_perturb(void *p) {
  mezo_case *c = (mezo_case *)p;
  check(lmf_mezo_perturb(c->plan, c->seed, (float)c->sign * c->eps, c->dev->stream));
  c->sign = -c->sign;
}

/* The fused pass: restore + decay + update + the next step's perturbation. */
static void run_fused(void *p) {
  mezo_case *c = (mezo_case *)p;
  lmf_mezo_step_args_t a;
  lmf_mezo_step_args_init(&a, sizeof a);
  a.seed = c->seed;
  a.grad = 0.5f;
  a.lr = 1e-6f;
  a.weight_decay = 0.01f;
  a.perturb_next = 1;
  a.next_seed = c->seed + 1;
  a.next_scale = c->eps;
  check(lmf_mezo_step(c->plan, &a, c->dev->stream));
  c->seed++;
}

/* A whole MeZO step in the 2-pass schedule: -2 eps, then the fused pass (losses not included). */
static void run_step(void *p) {
  mezo_case *c = (mezo_case *)p;
  check(lmf_mezo_perturb(c->plan, c->seed, -2.0f * c->eps, c->dev->stream));
  run_fused(p);
}

/* ~N(0, 0.02^2) parameters, split into `tensors` tensors of uneven sizes at 256-byte offsets. */
static void *make_params(bench_dev *d, int64_t numel, int tensors, int32_t dtype, lmf_mezo_tensor_t *t) {
  size_t es = lmf_dtype_size(dtype);
  int64_t weights = 0;
  for (int i = 0; i < tensors; ++i) weights += 1 + (i * 7) % 5;
  int64_t left = numel;
  size_t offset = 0;
  for (int i = 0; i < tensors; ++i) {
    int64_t n = i == tensors - 1 ? left : numel * (1 + (i * 7) % 5) / weights;
    left -= n;
    memset(&t[i], 0, sizeof t[i]);
    t[i].numel = n;
    t[i].uid = (uint32_t)i;
    t[i].dtype = dtype;
    t[i].weight_decay = i % 4 != 3; /* every fourth tensor plays a bias / layer norm */
    t[i].global_offset = (int64_t)offset; /* placeholder: the byte offset, fixed below */
    offset += ((size_t)n * es + 255) & ~(size_t)255;
  }
  char *base = (char *)bdev_alloc(d, offset);
  size_t chunk = (size_t)1 << 24;
  float *f = (float *)malloc(chunk * sizeof(float));
  void *h = malloc(chunk * es);
  uint64_t s = 0x9e3779b97f4a7c15ull;
  for (int i = 0; i < tensors; ++i) {
    size_t byte_off = (size_t)t[i].global_offset;
    t[i].data = base + byte_off;
    t[i].global_offset = 0;
    for (int64_t b = 0; b < t[i].numel; b += (int64_t)chunk) {
      int64_t n = t[i].numel - b < (int64_t)chunk ? t[i].numel - b : (int64_t)chunk;
      for (int64_t k = 0; k < n; ++k) { /* a cheap normal: sum of 4 uniforms, rescaled */
        double u = 0;
        for (int r = 0; r < 4; ++r) {
          s ^= s << 13, s ^= s >> 7, s ^= s << 17;
          u += (double)(s >> 11) * 0x1.0p-53;
        }
        f[k] = (float)((u - 2.0) * 1.7320508 * 0.02);
      }
      lmf_convert_host(h, dtype, f, LMF_DTYPE_F32, n);
      bdev_upload(d, (char *)t[i].data + (size_t)b * es, h, (size_t)n * es);
    }
  }
  free(f);
  free(h);
  return base;
}

static cJSON *row(const char *op, const char *dtype, const char *dist, const bench_opts *o, double ms,
                  double bytes, double copy_gbs, const char *device) {
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "family", "mezo");
  cJSON_AddStringToObject(r, "op", op);
  cJSON_AddStringToObject(r, "dtype", dtype);
  cJSON_AddStringToObject(r, "dist", dist);
  cJSON_AddNumberToObject(r, "numel", (double)o->numel);
  cJSON_AddNumberToObject(r, "tensors", o->tensors);
  cJSON_AddNumberToObject(r, "ms", ms);
  cJSON_AddNumberToObject(r, "gbps", bytes / (ms * 1e6));
  cJSON_AddNumberToObject(r, "copy_gbps", copy_gbs);
  cJSON_AddNumberToObject(r, "pct_of_copy", 100.0 * bytes / (ms * 1e6) / copy_gbs);
  cJSON_AddStringToObject(r, "device", device);
  return r;
}

static double peer_ms(const bench_opts *o, const char *dtype, int cuda) {
  if (!o->peer) return NAN;
  char args[512];
  snprintf(args, sizeof args, "--numel-total %lld --tensors %d --dtype %s --device %s --repeats %d",
           (long long)o->numel, o->tensors, dtype, cuda ? "cuda" : "cpu", cuda ? 10 : 3);
  cJSON *j = bench_run_peer("mezo_torch_ref.py", args);
  if (!j) return NAN;
  cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "ms_per_step");
  double ms = cJSON_IsNumber(v) ? v->valuedouble : NAN;
  cJSON_Delete(j);
  return ms;
}

int bench_mezo(const bench_opts *o) {
  bench_dev d;
  if (!bdev_open(&d, o->backend, o->threads)) return 1;
  printf("lmfuse-bench mezo on %s: %lld parameters in %d tensors, median of %d\n", d.name,
         (long long)o->numel, o->tensors, o->repeats);
  bench_table_header("MeZO passes (bytes = read + write of the parameters per pass)",
                     "op               dtype  dist        ms/call    GB/s   %copy  torch ms/step  "
                     "speedup  extra MiB");
  const int32_t dtypes[2] = {LMF_DTYPE_F32, LMF_DTYPE_BF16};
  const char *dist_names[2] = {"gaussian", "rademacher"};
  for (int di = 0; di < 2; ++di) {
    int32_t dt = dtypes[di];
    const char *dn = lmf_dtype_name(dt);
    size_t bytes = (size_t)o->numel * lmf_dtype_size(dt);
    double copy = bdev_copy_gbs(&d, bytes, 1, o->repeats);
    printf("%-16s %-6s %-10s %8s %7.1f %6s\n", "copy (floor)", dn, "-", "", copy, "100");
    cJSON *cr = cJSON_CreateObject();
    cJSON_AddStringToObject(cr, "family", "mezo");
    cJSON_AddStringToObject(cr, "op", "copy");
    cJSON_AddStringToObject(cr, "dtype", dn);
    cJSON_AddNumberToObject(cr, "bytes", (double)bytes);
    cJSON_AddNumberToObject(cr, "gbps", copy);
    cJSON_AddStringToObject(cr, "device", d.name);
    bench_record(cr);

    lmf_mezo_tensor_t *t = (lmf_mezo_tensor_t *)calloc((size_t)o->tensors, sizeof *t);
    void *base = make_params(&d, o->numel, o->tensors, dt, t);
    double torch_ms = peer_ms(o, dn, d.cuda);
    for (int dist = 0; dist < 2; ++dist) {
      lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
      cfg.dist = dist;
      mezo_case c = {NULL, &d, 1000, 1e-3f, 1};
      bdev_sync(&d);
      bdev_mem_reset_peak(&d);
      size_t mem0 = bdev_mem_used(&d);
      check(lmf_mezo_plan_create(&c.plan, d.ctx, t, (size_t)o->tensors, &cfg));
      double ms_p = bdev_time_ms(&d, run_perturb, &c, o->warmup, o->repeats);
      check(lmf_mezo_perturb(c.plan, c.seed, c.eps, d.stream)); /* the fused pass restores +eps */
      double ms_f = bdev_time_ms(&d, run_fused, &c, o->warmup, o->repeats);
      double ms_s = bdev_time_ms(&d, run_step, &c, o->warmup, o->repeats);
      check(lmf_mezo_restore(c.plan, d.stream));
      bdev_sync(&d);
      double extra = (double)(bdev_mem_used(&d) - mem0);
      lmf_mezo_plan_destroy(c.plan);
      const char *ops[3] = {"perturb", "fused_step", "mezo_step_2pass"};
      double ms[3] = {ms_p, ms_f, ms_s};
      double passes[3] = {1, 1, 2};
      for (int k = 0; k < 3; ++k) {
        double b = 2.0 * (double)bytes * passes[k];
        cJSON *r = row(ops[k], dn, dist_names[dist], o, ms[k], b, copy, d.name);
        cJSON_AddNumberToObject(r, "extra_mem_bytes", extra);
        int vs_peer = k == 2 && dist == 0 && !isnan(torch_ms);
        if (vs_peer) {
          cJSON_AddNumberToObject(r, "torch_ms_per_step", torch_ms);
          cJSON_AddNumberToObject(r, "speedup_vs_torch", torch_ms / ms[k]);
        }
        bench_record(r);
        char peer_col[32] = "", sp_col[32] = "";
        if (vs_peer) {
          snprintf(peer_col, sizeof peer_col, "%.2f", torch_ms);
          snprintf(sp_col, sizeof sp_col, "%.1fx", torch_ms / ms[k]);
        }
        printf("%-16s %-6s %-10s %9.3f %7.1f %6.1f %14s %8s %10.2f\n", ops[k], dn, dist_names[dist],
               ms[k], b / (ms[k] * 1e6), 100.0 * b / (ms[k] * 1e6) / copy, peer_col, sp_col,
               extra / 1048576.0);
      }
    }
    bdev_free(&d, base);
    free(t);
  }
  printf("\nextra MiB: growth of %s over the passes, beyond the parameters.\n",
         d.cuda ? "device memory in use" : "peak RSS");
  if (o->peer) printf("torch ms/step: the MeZO repository's 4-pass step with torch.normal, same run.\n");
  bdev_close(&d);
  return 0;
}
