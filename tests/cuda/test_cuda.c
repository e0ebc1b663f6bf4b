/* CUDA backend cases (label cuda): the CUDA backend against the CPU backend, bit for bit. Every case is
 * reported SKIPPED when no CUDA device is usable or the build has no CUDA backend. Device memory comes
 * from the test helpers (cudaMalloc through cuda_runtime_api.h in a CUDA build). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(LMF_HAVE_CUDA)
#include <cuda_runtime_api.h>
#endif

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

/* ---- A plan's worth of tensors on one backend ------------------------------------------------------ */

enum { MAXT = 8 };

typedef struct tspec {
  int64_t numel;
  int64_t goff;
  int32_t dtype;
  int master;
  int decay;
  int shift; /* the data (and master) pointer sits this many elements into its allocation */
} tspec;

typedef struct world {
  lmf_context_t *ctx;
  int n;
  const tspec *ts;
  void *base[MAXT];
  float *mbase[MAXT];
  lmf_mezo_plan_t *plan;
} world;

static size_t data_bytes(const tspec *t) { return (size_t)t->numel * lmf_dtype_size(t->dtype); }

static size_t world_bytes(const tspec *ts, int n) {
  size_t b = 0;
  for (int k = 0; k < n; ++k) b += data_bytes(&ts[k]) + (ts[k].master ? (size_t)ts[k].numel * 4 : 0);
  return b;
}

static void *data_of(const world *w, int k) {
  return (char *)w->base[k] + (size_t)w->ts[k].shift * lmf_dtype_size(w->ts[k].dtype);
}

static float *master_of(const world *w, int k) { return w->mbase[k] ? w->mbase[k] + w->ts[k].shift : NULL; }

/* The same initial values on any backend: normal(0, 0.05) per tensor, 16-bit tensors rounded. */
static int world_init(world *w, lmf_context_t *ctx, const tspec *ts, int n, int32_t dist, int32_t rounding) {
  memset(w, 0, sizeof *w);
  w->ctx = ctx;
  w->n = n;
  w->ts = ts;
  int ok = 1;
  lmf_mezo_tensor_t t[MAXT];
  for (int k = 0; k < n && ok; ++k) {
    const size_t es = lmf_dtype_size(ts[k].dtype);
    const int64_t total = ts[k].numel + ts[k].shift;
    float *init = (float *)lt_malloc((size_t)total * 4);
    void *host = lt_malloc((size_t)total * es);
    w->base[k] = lt_alloc(ctx, (size_t)total * es);
    if (ts[k].master) w->mbase[k] = (float *)lt_alloc(ctx, (size_t)total * 4);
    ok = init && host && w->base[k] && (!ts[k].master || w->mbase[k]);
    if (ok) {
      lt_fill_normal(init, total, 0.0, 0.05, 1000 + (uint64_t)k);
      ok = lt_convert(host, ts[k].dtype, init, LMF_DTYPE_F32, total) &&
           lt_upload(ctx, w->base[k], host, (size_t)total * es) &&
           (!ts[k].master || lt_upload(ctx, w->mbase[k], init, (size_t)total * 4));
    }
    free(init);
    free(host);
    if (ok) t[k] = lt_tensor(data_of(w, k), master_of(w, k), ts[k].numel, ts[k].goff, 100 + (uint32_t)k,
                             ts[k].dtype, ts[k].decay);
  }
  if (!ok) return 0;
  lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
  cfg.dist = dist;
  cfg.rounding = rounding;
  return LMF_CHECK_OK(lmf_mezo_plan_create(&w->plan, ctx, t, (size_t)n, &cfg));
}

/* Every data and master byte, concatenated, on the host. */
static int world_download(world *w, unsigned char *out) {
  size_t off = 0;
  for (int k = 0; k < w->n; ++k) {
    size_t b = data_bytes(&w->ts[k]);
    if (!lt_download(w->ctx, out + off, data_of(w, k), b)) return 0;
    off += b;
    if (w->ts[k].master) {
      if (!lt_download(w->ctx, out + off, master_of(w, k), (size_t)w->ts[k].numel * 4)) return 0;
      off += (size_t)w->ts[k].numel * 4;
    }
  }
  return 1;
}

static void world_free(world *w) {
  lmf_mezo_plan_destroy(w->plan);
  for (int k = 0; k < w->n; ++k) {
    lt_free(w->ctx, w->base[k]);
    lt_free(w->ctx, w->mbase[k]);
  }
  memset(w, 0, sizeof *w);
}

/* Compares the two worlds' bytes; reports which tensor differs first. */
static int worlds_equal(world *a, world *b, const char *what) {
  size_t nb = world_bytes(a->ts, a->n);
  unsigned char *x = (unsigned char *)lt_malloc(nb), *y = (unsigned char *)lt_malloc(nb);
  int ok = 0;
  if (x && y && world_download(a, x) && world_download(b, y)) {
    ok = 1;
    size_t off = 0;
    for (int k = 0; k < a->n && ok; ++k) {
      size_t bytes = data_bytes(&a->ts[k]) + (a->ts[k].master ? (size_t)a->ts[k].numel * 4 : 0);
      if (memcmp(x + off, y + off, bytes) != 0) {
        size_t i = 0;
        while (x[off + i] == y[off + i]) ++i;
        LMF_CHECK_MSG(0, "%s: tensor %d (%s, numel %lld%s) differs CPU vs CUDA, first at byte %zu", what, k,
                      lmf_dtype_name(a->ts[k].dtype), (long long)a->ts[k].numel, a->ts[k].master ? ", master" : "",
                      i);
        ok = 0;
      }
      off += bytes;
    }
  }
  free(x);
  free(y);
  return ok;
}

static lmf_context_t *cuda_context(void) {
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  cfg.backend = LMF_BACKEND_CUDA;
  lmf_context_t *ctx = NULL;
  if (!LMF_CHECK_OK(lmf_context_create(&ctx, &cfg))) return NULL;
  return ctx;
}

/* ---- cases ----------------------------------------------------------------------------------------------- */

void test_cuda_context(void) {
  REQUIRE_CUDA();
  lmf_context_t *ctx = cuda_context();
  LMF_REQUIRE(ctx != NULL);
  int32_t b = -1;
  LMF_CHECK_OK(lmf_context_backend(ctx, &b));
  LMF_CHECK_EQ_INT(b, LMF_BACKEND_CUDA);
  LMF_CHECK_OK(lmf_stream_synchronize(ctx, NULL));
  lmf_context_destroy(ctx);
  lmf_context_t *a = NULL;
  LMF_REQUIRE_OK(lmf_context_create(&a, NULL));
  LMF_CHECK_OK(lmf_context_backend(a, &b));
  LMF_CHECK_EQ_INT(b, LMF_BACKEND_CUDA); /* AUTO picks CUDA when a device is usable */
  lmf_context_destroy(a);
  lmf_context_config_t cfg = LMF_CONTEXT_CONFIG_INIT;
  cfg.backend = LMF_BACKEND_CUDA;
  cfg.device = lmf_cuda_device_count();
  lmf_context_t *out = (lmf_context_t *)(uintptr_t)0x5e57;
  LMF_CHECK_FAIL(lmf_context_create(&out, &cfg), LMF_ERR_NO_DEVICE, "device");
  LMF_CHECK(out == (lmf_context_t *)(uintptr_t)0x5e57);
}

/* Philox on the GPU, through fill_z: Rademacher values equal the signs of the CPU's exported Philox words
 * (themselves checked against the published known answers), Gaussian values equal the CPU's fill_z bit
 * for bit and the double Box-Muller within 1e-6; every element is written and nothing past the window
 * (the device buffer is poisoned with NaN first). Keys include the spec's known-answer keys. */
void test_cuda_philox_via_fill_z(void) {
  REQUIRE_CUDA();
  enum { G = 64 };
  const int64_t N = ((int64_t)1 << 22) + 3;
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  float *d = NULL, *h = (float *)lt_malloc((size_t)(N + 2 * G) * 4), *c = (float *)lt_malloc((size_t)N * 4);
  if (!gpu || !cpu || !h || !c) goto done;
  d = (float *)lt_alloc(gpu, (size_t)(N + 2 * G) * 4);
  if (!d) goto done;
  const struct {
    uint64_t seed;
    uint32_t uid;
    int64_t off;
    int64_t n;
  } cs[] = {{0, 0, 0, N},
            {0xffffffffffffffffull, 0xffffffffu, 1, 40003},
            {0x299f31d0a4093822ull, 7, 3, 40003},
            {0x1234, 7, ((int64_t)1 << 34) + 5, 40003},
            {42, 1, ((int64_t)1 << 40) - 17, 1},
            {43, 2, 127, 129}};
  for (size_t k = 0; k < sizeof cs / sizeof cs[0]; ++k) {
    for (int dist = 0; dist < 2; ++dist) {
      const int64_t n = cs[k].n;
      if (!lt_memset(gpu, d, 0xff, (size_t)(N + 2 * G) * 4)) goto done;
      if (!LMF_CHECK_OK(lmf_mezo_fill_z(gpu, dist, cs[k].seed, cs[k].uid, cs[k].off, n, d + G, NULL))) continue;
      if (!lt_download(gpu, h, d, (size_t)(n + 2 * G) * 4)) goto done;
      LMF_CHECK_MSG(lt_count_nonfinite(h, G) == G && lt_count_nonfinite(h + G + n, G) == G,
                    "case %zu: fill_z wrote outside its window", k);
      LMF_CHECK_MSG(lt_count_nonfinite(h + G, n) == 0, "case %zu dist %d: unwritten or non-finite elements", k, dist);
      lt_poison_f32(c, n);
      if (!LMF_CHECK_OK(lmf_mezo_fill_z(cpu, dist, cs[k].seed, cs[k].uid, cs[k].off, n, c, NULL))) continue;
      LMF_CHECK_MSG(memcmp(h + G, c, (size_t)n * 4) == 0, "case %zu dist %d: CUDA fill_z differs from the CPU's", k,
                    dist);
      int bad = 0;
      const int64_t check = n < 50000 ? n : 50000;
      for (int64_t i = 0; i < check; ++i) {
        double r, want = ref_z(dist, cs[k].seed, cs[k].uid, (uint64_t)(cs[k].off + i), &r);
        int ok = dist ? (double)h[G + i] == want : fabs(h[G + i] - want) <= 1e-6 * (r > 1 ? r : 1);
        if (!ok && bad++ < 3)
          LMF_CHECK_MSG(0, "case %zu dist %d element %lld: %.9g vs reference %.9g", k, dist, (long long)i,
                        (double)h[G + i], want);
      }
      LMF_CHECK_EQ_INT(bad, 0);
    }
  }
done:
  lt_free(gpu, d);
  free(h);
  free(c);
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
}

/* Several chunks, odd sizes, odd offsets, misaligned pointers, every dtype, masters. */
static const tspec k_mixed[] = {
    {300001, 0, LMF_DTYPE_F32, 0, 1, 0},  {70001, 1, LMF_DTYPE_F32, 0, 0, 1},  {100003, 0, LMF_DTYPE_BF16, 0, 0, 0},
    {65537, 5, LMF_DTYPE_F16, 0, 1, 3},   {50001, 0, LMF_DTYPE_BF16, 1, 1, 0}, {7, 2, LMF_DTYPE_F16, 1, 0, 1},
    {5, 3, LMF_DTYPE_F32, 0, 1, 0},       {131072, 4, LMF_DTYPE_BF16, 0, 1, 0}};
enum { NMIXED = sizeof k_mixed / sizeof k_mixed[0] };

/* Every pass on the mixed plan, CPU vs CUDA after each one, for both distributions and both rounding
 * modes. */
void test_cuda_passes_match_cpu(void) {
  REQUIRE_CUDA();
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(gpu && cpu);
  for (int dist = 0; dist < 2; ++dist) {
    for (int rounding = 0; rounding < 2; ++rounding) {
      world wc, wg;
      int ok = world_init(&wc, cpu, k_mixed, NMIXED, dist, rounding);
      ok &= world_init(&wg, gpu, k_mixed, NMIXED, dist, rounding);
      if (ok) ok = worlds_equal(&wc, &wg, "initial upload");
      for (int op = 0; ok && op < 8; ++op) {
        world *w2[2] = {&wc, &wg};
        for (int k = 0; k < 2; ++k) {
          lmf_mezo_plan_t *p = w2[k]->plan;
          lmf_mezo_step_args_t st;
          lmf_mezo_step_args_init(&st, sizeof st);
          uint64_t seeds[3] = {11, 12, 0xffffffff00000001ull};
          float coeffs[3] = {0.5f, -1.5f, 2.0f};
          lmf_mezo_multi_args_t m;
          lmf_mezo_multi_args_init(&m, sizeof m);
          m.num_seeds = 3;
          m.seeds = seeds;
          m.coeffs = coeffs;
          m.lr = 1e-3f;
          m.weight_decay = 0.05f;
          switch (op) {
            case 0: LMF_CHECK_OK(lmf_mezo_perturb(p, 7, 1e-3f, NULL)); break;
            case 1: LMF_CHECK_OK(lmf_mezo_perturb(p, 7, -2e-3f, NULL)); break;
            case 2:
              st.seed = 7;
              st.grad = 3.5f;
              st.lr = 1e-3f;
              st.weight_decay = 0.1f;
              st.perturb_next = 1;
              st.next_seed = 8;
              st.next_scale = 1e-3f;
              LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
              break;
            case 3:
              st.seed = 8;
              st.grad = -2.0f;
              st.lr = 2e-3f;
              LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
              break;
            case 4: LMF_CHECK_OK(lmf_mezo_update_multi(p, &m, NULL)); break;
            case 5: LMF_CHECK_OK(lmf_mezo_perturb(p, 9, 5e-3f, NULL)); break;
            case 6: LMF_CHECK_OK(lmf_mezo_restore(p, NULL)); break;
            default:
              st.seed = 10;
              st.grad = NAN; /* skipped: only the next perturbation */
              st.lr = 1e-3f;
              st.perturb_next = 1;
              st.next_seed = 10;
              st.next_scale = -1e-3f;
              LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
          }
        }
        char what[96];
        snprintf(what, sizeof what, "dist %d rounding %d after op %d", dist, rounding, op);
        ok = worlds_equal(&wc, &wg, what);
      }
      world_free(&wc);
      world_free(&wg);
    }
  }
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
}

/* The same passes enqueued on a user stream, then lmf_stream_synchronize. */
void test_cuda_user_stream(void) {
  REQUIRE_CUDA();
#if defined(LMF_HAVE_CUDA)
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  cudaStream_t s = NULL;
  LMF_REQUIRE(gpu && cpu);
  LMF_REQUIRE(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
  world wc, wg;
  if (world_init(&wc, cpu, k_mixed, NMIXED, LMF_MEZO_GAUSSIAN, LMF_ROUND_STOCHASTIC) &&
      world_init(&wg, gpu, k_mixed, NMIXED, LMF_MEZO_GAUSSIAN, LMF_ROUND_STOCHASTIC)) {
    lmf_mezo_step_args_t st;
    lmf_mezo_step_args_init(&st, sizeof st);
    st.seed = 3;
    st.grad = 1.25f;
    st.lr = 1e-2f;
    st.perturb_next = 1;
    st.next_seed = 4;
    st.next_scale = 1e-3f;
    lmf_stream_t ls = (lmf_stream_t)s;
    LMF_CHECK_OK(lmf_mezo_perturb(wg.plan, 3, 1e-3f, ls));
    LMF_CHECK_OK(lmf_mezo_step(wg.plan, &st, ls));
    LMF_CHECK_OK(lmf_mezo_restore(wg.plan, ls));
    LMF_CHECK_OK(lmf_stream_synchronize(gpu, ls));
    LMF_CHECK_OK(lmf_mezo_perturb(wc.plan, 3, 1e-3f, NULL));
    LMF_CHECK_OK(lmf_mezo_step(wc.plan, &st, NULL));
    LMF_CHECK_OK(lmf_mezo_restore(wc.plan, NULL));
    worlds_equal(&wc, &wg, "passes on a user stream");
  }
  world_free(&wc);
  world_free(&wg);
  cudaStreamDestroy(s);
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
#endif
}

/* g and the coefficients in device memory (no host sync), skipped flags in device memory; and with g a
 * host value, the skipped flag in host memory. Results equal the CPU's with the same values. */
void test_cuda_device_grad_and_skip_flags(void) {
  REQUIRE_CUDA();
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(gpu && cpu);
  float *dg = (float *)lt_alloc(gpu, 4 * sizeof(float));
  int32_t *dskip = (int32_t *)lt_alloc(gpu, sizeof(int32_t));
  world wc, wg;
  memset(&wc, 0, sizeof wc);
  memset(&wg, 0, sizeof wg);
  if (!dg || !dskip || !world_init(&wc, cpu, k_mixed, NMIXED, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST) ||
      !world_init(&wg, gpu, k_mixed, NMIXED, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST))
    goto done;
  const float gs[3] = {2.5f, NAN, -INFINITY};
  for (int k = 0; k < 3; ++k) {
    float g = gs[k];
    int32_t skip = 7, hskip = 7;
    if (!lt_upload(gpu, dg, &g, sizeof g) || !lt_upload(gpu, dskip, &skip, sizeof skip)) goto done;
    lmf_mezo_step_args_t st;
    lmf_mezo_step_args_init(&st, sizeof st);
    st.seed = 20 + (uint64_t)k;
    st.grad = 99.0f; /* ignored: grad_ptr wins */
    st.grad_ptr = dg;
    st.skipped_ptr = dskip;
    st.lr = 1e-2f;
    st.weight_decay = 0.1f;
    LMF_CHECK_OK(lmf_mezo_perturb(wg.plan, st.seed, 1e-3f, NULL));
    LMF_CHECK_OK(lmf_mezo_step(wg.plan, &st, NULL));
    if (!lt_download(gpu, &skip, dskip, sizeof skip)) goto done;
    LMF_CHECK_EQ_INT(skip, k > 0);
    lmf_mezo_step_args_t sc = st;
    sc.grad_ptr = NULL;
    sc.grad = g;
    sc.skipped_ptr = &hskip;
    LMF_CHECK_OK(lmf_mezo_perturb(wc.plan, st.seed, 1e-3f, NULL));
    LMF_CHECK_OK(lmf_mezo_step(wc.plan, &sc, NULL));
    LMF_CHECK_EQ_INT(hskip, k > 0);
    worlds_equal(&wc, &wg, "step with g in device memory");
    /* Host g on CUDA: the flag is host memory. */
    sc.seed = 30 + (uint64_t)k;
    hskip = 7;
    LMF_CHECK_OK(lmf_mezo_step(wg.plan, &sc, NULL));
    LMF_CHECK_OK(lmf_stream_synchronize(gpu, NULL));
    LMF_CHECK_EQ_INT(hskip, k > 0);
    LMF_CHECK_OK(lmf_mezo_step(wc.plan, &sc, NULL));
    worlds_equal(&wc, &wg, "step with a host g on CUDA");
  }
  /* Multi-seed coefficients in device memory. */
  for (int bad = 0; bad < 2; ++bad) {
    float co[3] = {0.5f, bad ? NAN : -1.0f, 2.0f};
    uint64_t seeds[3] = {40, 41, 42};
    int32_t skip = 7, hskip = 7;
    if (!lt_upload(gpu, dg, co, sizeof co) || !lt_upload(gpu, dskip, &skip, sizeof skip)) goto done;
    lmf_mezo_multi_args_t m;
    lmf_mezo_multi_args_init(&m, sizeof m);
    m.num_seeds = 3;
    m.seeds = seeds;
    m.coeffs_ptr = dg;
    m.lr = 1e-2f;
    m.weight_decay = 0.2f;
    m.skipped_ptr = dskip;
    LMF_CHECK_OK(lmf_mezo_update_multi(wg.plan, &m, NULL));
    if (!lt_download(gpu, &skip, dskip, sizeof skip)) goto done;
    LMF_CHECK_EQ_INT(skip, bad);
    m.coeffs_ptr = NULL;
    m.coeffs = co;
    m.skipped_ptr = &hskip;
    LMF_CHECK_OK(lmf_mezo_update_multi(wc.plan, &m, NULL));
    LMF_CHECK_EQ_INT(hskip, bad);
    worlds_equal(&wc, &wg, "multi with device coefficients");
    /* Host coefficients on CUDA: host flag. */
    hskip = 7;
    LMF_CHECK_OK(lmf_mezo_update_multi(wg.plan, &m, NULL));
    LMF_CHECK_OK(lmf_stream_synchronize(gpu, NULL));
    LMF_CHECK_EQ_INT(hskip, bad);
    LMF_CHECK_OK(lmf_mezo_update_multi(wc.plan, &m, NULL));
    worlds_equal(&wc, &wg, "multi with host coefficients on CUDA");
  }
done:
  world_free(&wc);
  world_free(&wg);
  lt_free(gpu, dg);
  lt_free(gpu, dskip);
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
}

/* Spec vector 4 on the GPU: 100 driver steps (loss computed on the host from the downloaded
 * parameters) give the same parameters and losses on CUDA as on the CPU, twice. */
typedef struct cuda_loss {
  world *w;
  unsigned char *buf;
  float *view;
} cuda_loss;

static int loss_of_world(void *user, float *loss) {
  cuda_loss *c = (cuda_loss *)user;
  if (!world_download(c->w, c->buf)) return 1;
  double s = 0.0;
  size_t off = 0;
  for (int k = 0; k < c->w->n; ++k) {
    const tspec *t = &c->w->ts[k];
    if (lmf_convert_host(c->view, LMF_DTYPE_F32, c->buf + off, t->dtype, t->numel) != LMF_OK) return 2;
    off += data_bytes(t) + (t->master ? (size_t)t->numel * 4 : 0);
    for (int64_t i = 0; i < t->numel; i += 3) s += 0.5 * ((double)c->view[i] - 0.01) * ((double)c->view[i] - 0.01);
  }
  *loss = (float)s;
  return 0;
}

static const tspec k_small[] = {{20001, 0, LMF_DTYPE_F32, 0, 1, 0}, {9999, 3, LMF_DTYPE_BF16, 0, 0, 1},
                                {4097, 0, LMF_DTYPE_F16, 1, 1, 0},  {3, 1, LMF_DTYPE_BF16, 1, 1, 0}};
enum { NSMALL = sizeof k_small / sizeof k_small[0] };

static int run_driver(lmf_context_t *ctx, int32_t rounding, unsigned char *out, float *losses) {
  world w;
  int ok = world_init(&w, ctx, k_small, NSMALL, LMF_MEZO_GAUSSIAN, rounding);
  size_t nb = world_bytes(k_small, NSMALL);
  cuda_loss cl = {&w, (unsigned char *)lt_malloc(nb), (float *)lt_malloc(20001 * 4)};
  ok = ok && cl.buf && cl.view;
  lmf_mezo_driver_args_t a;
  lmf_mezo_driver_args_init(&a, sizeof a);
  a.lr = 1e-4f;
  a.weight_decay = 0.01f;
  uint64_t rng = 5;
  a.seed = lt_next(&rng);
  for (int s = 0; ok && s < 100; ++s) {
    a.perturb_next = s % 3 != 1;
    a.next_seed = lt_next(&rng);
    lmf_mezo_step_result_t r;
    ok = LMF_CHECK_OK(lmf_mezo_train_step(w.plan, &a, loss_of_world, &cl, &r, NULL));
    losses[2 * s] = r.loss_plus;
    losses[2 * s + 1] = r.loss_minus;
    a.seed = a.next_seed;
  }
  ok = ok && LMF_CHECK_OK(lmf_mezo_restore(w.plan, NULL)) && world_download(&w, out);
  free(cl.buf);
  free(cl.view);
  world_free(&w);
  return ok;
}

void test_cuda_train_steps_match_cpu(void) {
  REQUIRE_CUDA();
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(gpu && cpu);
  size_t nb = world_bytes(k_small, NSMALL);
  unsigned char *c = (unsigned char *)lt_malloc(nb), *g1 = (unsigned char *)lt_malloc(nb),
                *g2 = (unsigned char *)lt_malloc(nb);
  float lc[200], l1[200], l2[200];
  for (int rounding = 0; c && g1 && g2 && rounding < 2; ++rounding) {
    if (!run_driver(cpu, rounding, c, lc) || !run_driver(gpu, rounding, g1, l1) || !run_driver(gpu, rounding, g2, l2))
      break;
    LMF_CHECK_BYTES_EQ(g1, g2, nb, "CUDA run twice");
    LMF_CHECK_BYTES_EQ(l1, l2, sizeof l1, "CUDA losses twice");
    LMF_CHECK_BYTES_EQ(c, g1, nb, "CPU vs CUDA after 100 driver steps");
    LMF_CHECK_BYTES_EQ(lc, l1, sizeof lc, "CPU vs CUDA losses");
  }
  free(c);
  free(g1);
  free(g2);
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
}

/* An empty plan on CUDA: passes succeed; a device skipped flag is still written. */
void test_cuda_empty_plan(void) {
  REQUIRE_CUDA();
  lmf_context_t *gpu = cuda_context();
  LMF_REQUIRE(gpu != NULL);
  lmf_mezo_plan_t *p = NULL;
  float *dg = (float *)lt_alloc(gpu, 4);
  int32_t *dskip = (int32_t *)lt_alloc(gpu, 4);
  if (dg && dskip && LMF_CHECK_OK(lmf_mezo_plan_create(&p, gpu, NULL, 0, NULL))) {
    LMF_CHECK_OK(lmf_mezo_perturb(p, 1, 1e-3f, NULL));
    LMF_CHECK_OK(lmf_mezo_restore(p, NULL));
    float g = NAN;
    int32_t skip = 7;
    lt_upload(gpu, dg, &g, 4);
    lt_upload(gpu, dskip, &skip, 4);
    lmf_mezo_step_args_t st;
    lmf_mezo_step_args_init(&st, sizeof st);
    st.seed = 1;
    st.grad_ptr = dg;
    st.skipped_ptr = dskip;
    LMF_CHECK_OK(lmf_mezo_step(p, &st, NULL));
    lt_download(gpu, &skip, dskip, 4);
    LMF_CHECK_EQ_INT(skip, 1);
  }
  lmf_mezo_plan_destroy(p);
  lt_free(gpu, dg);
  lt_free(gpu, dskip);
  lmf_context_destroy(gpu);
}

/* Spec vector 11, on a GPU: a tensor of more than 2^31 elements (64-bit element indexing; byte offsets
 * past 2^32 and, in fp32, past 2^33). Windows at the start, across 2^31, at 2^30 + 17 and at the end are
 * compared after every pass (perturb, fused step, multi-seed update) with a CPU plan whose tensors are
 * those windows at the same global offsets (same uid): fp32 and bf16, both distributions, nearest and
 * (bf16) stochastic rounding. */
void test_cuda_more_than_2e31_elements(void) {
  REQUIRE_CUDA();
#if defined(LMF_HAVE_CUDA)
  enum { W = 4096, NW = 4 };
  const int64_t n = ((int64_t)1 << 31) + W + 5;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess || free_b < (size_t)n * 4 + ((size_t)1 << 30))
    LMF_SKIP("not enough free device memory for 2^31 + 4101 fp32 elements");
  lmf_context_t *gpu = cuda_context(), *cpu = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(gpu && cpu);
  const int64_t starts[NW] = {0, ((int64_t)1 << 31) - W / 2, ((int64_t)1 << 30) + 17, n - W};
  unsigned char *d = (unsigned char *)lt_alloc(gpu, (size_t)n * 4);
  unsigned char *win = (unsigned char *)lt_malloc((size_t)NW * W * 4), *h = (unsigned char *)lt_malloc(W * 4);
  lmf_mezo_plan_t *pg = NULL, *pc = NULL;
  if (!d || !win || !h) goto done;
  for (int v = 0; v < 6; ++v) {
    const int32_t dist = v & 1, rounding = v >= 4, dtype = v < 2 ? LMF_DTYPE_F32 : LMF_DTYPE_BF16;
    const size_t es = lmf_dtype_size(dtype);
    if (!lt_memset(gpu, d, 0, (size_t)n * es)) goto done;
    memset(win, 0, (size_t)NW * W * es);
    lmf_mezo_tensor_t tg = lt_tensor(d, NULL, n, 0, 77, dtype, 1);
    lmf_mezo_tensor_t tc[NW];
    for (int k = 0; k < NW; ++k) tc[k] = lt_tensor(win + (size_t)k * W * es, NULL, W, starts[k], 77, dtype, 1);
    lmf_mezo_config_t cfg = LMF_MEZO_CONFIG_INIT;
    cfg.dist = dist;
    cfg.rounding = rounding;
    if (!LMF_CHECK_OK(lmf_mezo_plan_create(&pg, gpu, &tg, 1, &cfg)) ||
        !LMF_CHECK_OK(lmf_mezo_plan_create(&pc, cpu, tc, NW, &cfg)))
      goto done;
    int64_t numel = 0;
    LMF_CHECK_OK(lmf_mezo_plan_numel(pg, &numel));
    LMF_CHECK_EQ_INT(numel, n);
    for (int op = 0; op < 3; ++op) {
      lmf_mezo_plan_t *pp[2] = {pg, pc};
      for (int k = 0; k < 2; ++k) {
        lmf_mezo_step_args_t st;
        lmf_mezo_step_args_init(&st, sizeof st);
        uint64_t seeds[2] = {0x5eed, 0xabc};
        float coeffs[2] = {0.5f, -0.25f};
        lmf_mezo_multi_args_t m;
        lmf_mezo_multi_args_init(&m, sizeof m);
        m.num_seeds = 2;
        m.seeds = seeds;
        m.coeffs = coeffs;
        m.lr = 0.5f;
        m.weight_decay = 0.1f;
        if (op == 0) {
          LMF_CHECK_OK(lmf_mezo_perturb(pp[k], 0x5eed, 1.0f, NULL));
        } else if (op == 1) {
          st.seed = 0x5eed;
          st.grad = 1.0f;
          st.lr = 0.5f;
          st.weight_decay = 0.2f;
          LMF_CHECK_OK(lmf_mezo_step(pp[k], &st, NULL));
        } else {
          LMF_CHECK_OK(lmf_mezo_update_multi(pp[k], &m, NULL));
        }
      }
      for (int k = 0; k < NW; ++k) {
        if (!lt_download(gpu, h, d + (size_t)starts[k] * es, W * es)) goto done;
        const unsigned char *c = win + (size_t)k * W * es;
        if (memcmp(h, c, W * es) != 0) {
          size_t i = 0;
          while (h[i] == c[i]) ++i;
          LMF_CHECK_MSG(0, "%s dist %d rounding %d op %d: element %lld differs between CUDA and the CPU",
                        lmf_dtype_name(dtype), dist, rounding, op, (long long)(starts[k] + (int64_t)(i / es)));
        }
      }
    }
    /* The windows really hold z-driven values (not the zeros they started from). */
    int nonzero = 0;
    for (size_t i = 0; i < (size_t)NW * W * es; i += es) {
      int any = 0;
      for (size_t b = 0; b < es; ++b) any |= win[i + b];
      nonzero += any != 0;
    }
    LMF_CHECK(nonzero > NW * W / 2);
    lmf_mezo_plan_destroy(pg);
    lmf_mezo_plan_destroy(pc);
    pg = pc = NULL;
  }
done:
  lmf_mezo_plan_destroy(pg);
  lmf_mezo_plan_destroy(pc);
  lt_free(gpu, d);
  free(win);
  free(h);
  lmf_context_destroy(gpu);
  lmf_context_destroy(cpu);
#endif
}
