/* Version, status strings, the thread-local last error, dtypes, host conversions, contexts. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lmf_check.h"
#include "lmf_ref.h"
#include "lmf_test_util.h"

void test_version(void) {
  LMF_CHECK_EQ_INT(lmf_version(), LMF_VERSION_NUMBER);
  LMF_CHECK_EQ_INT(LMF_VERSION_NUMBER,
                   LMF_VERSION_MAJOR * 10000 + LMF_VERSION_MINOR * 100 + LMF_VERSION_PATCH);
  char want[64];
  snprintf(want, sizeof want, "%d.%d.%d", LMF_VERSION_MAJOR, LMF_VERSION_MINOR, LMF_VERSION_PATCH);
  const char *got = lmf_version_string();
  LMF_REQUIRE(got != NULL);
  LMF_CHECK_STR_EQ(got, want);
}

static const char *const k_status_names[] = {
    "LMF_OK",           "LMF_ERR_INVALID_ARGUMENT", "LMF_ERR_NULL_POINTER", "LMF_ERR_UNSUPPORTED_DTYPE",
    "LMF_ERR_INVALID_SIZE", "LMF_ERR_STRUCT_SIZE",  "LMF_ERR_OVERLAP",      "LMF_ERR_OUT_OF_MEMORY",
    "LMF_ERR_NO_DEVICE", "LMF_ERR_NOT_COMPILED",    "LMF_ERR_CUDA",         "LMF_ERR_INVALID_STATE",
    "LMF_ERR_CALLBACK", "LMF_ERR_NONFINITE",        "LMF_ERR_IO",           "LMF_ERR_PARSE",
    "LMF_ERR_INTERNAL"};

void test_status_string(void) {
  const int n = (int)(sizeof k_status_names / sizeof k_status_names[0]);
  for (int s = 0; s < n; ++s) {
    const char *str = lmf_status_string((lmf_status_t)s);
    if (!LMF_CHECK_MSG(str != NULL, "lmf_status_string(%d) is NULL", s)) continue;
    size_t len = strlen(k_status_names[s]);
    /* "LMF_ERR_NULL_POINTER: ..." : the name, then a separator (not a longer name's prefix). */
    LMF_CHECK_MSG(strncmp(str, k_status_names[s], len) == 0 && (str[len] == ':' || str[len] == '\0'),
                  "lmf_status_string(%d) = \"%s\" does not start with %s", s, str, k_status_names[s]);
    for (int t = 0; t < s; ++t)
      LMF_CHECK_MSG(strcmp(str, lmf_status_string((lmf_status_t)t)) != 0,
                    "statuses %d and %d have the same string", s, t);
  }
  const int unknown[] = {-1, 17, 100, 0x7fffffff, (int)0x80000000u};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i) {
    const char *str = lmf_status_string((lmf_status_t)unknown[i]);
    if (LMF_CHECK_MSG(str != NULL, "lmf_status_string(%d) is NULL", unknown[i]))
      LMF_CHECK_MSG(str[0] != '\0', "lmf_status_string(%d) is empty", unknown[i]);
  }
}

typedef struct thread_result {
  char seen_before[256];
  char seen_after[256];
  lmf_status_t st;
} thread_result;

static void *other_thread(void *arg) {
  thread_result *r = (thread_result *)arg;
  snprintf(r->seen_before, sizeof r->seen_before, "%s", lmf_last_error());
  r->st = lmf_convert_host(NULL, LMF_DTYPE_F32, NULL, LMF_DTYPE_F32, 1);
  snprintf(r->seen_after, sizeof r->seen_after, "%s", lmf_last_error());
  return NULL;
}

void test_last_error(void) {
  lmf_clear_error();
  LMF_REQUIRE(lmf_last_error() != NULL);
  LMF_CHECK_STR_EQ(lmf_last_error(), "");
  LMF_CHECK_FAIL(lmf_context_create(NULL, NULL), LMF_ERR_NULL_POINTER, "out");
  char mine[256];
  snprintf(mine, sizeof mine, "%s", lmf_last_error());
  /* Successful calls leave the message alone; clearing forgets it. */
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_F16), 2);
  LMF_CHECK_STR_EQ(lmf_last_error(), mine);

  /* The message is thread-local: another thread starts empty and its failure does not show here. */
  thread_result r;
  memset(&r, 0, sizeof r);
  pthread_t th;
  LMF_REQUIRE(pthread_create(&th, NULL, other_thread, &r) == 0);
  pthread_join(th, NULL);
  LMF_CHECK_STR_EQ(r.seen_before, "");
  LMF_CHECK_EQ_INT(r.st, LMF_ERR_NULL_POINTER);
  LMF_CHECK(r.seen_after[0] != '\0');
  LMF_CHECK_STR_EQ(lmf_last_error(), mine);

  lmf_clear_error();
  LMF_CHECK_STR_EQ(lmf_last_error(), "");
}

void test_dtype_size_name(void) {
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_F32), 4);
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_F16), 2);
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_BF16), 2);
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_I32), 4);
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_I64), 8);
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_F32), "f32");
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_F16), "f16");
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_BF16), "bf16");
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_I32), "i32");
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_I64), "i64");
  LMF_CHECK_EQ_INT(lmf_dtype_size(LMF_DTYPE_U8), 1);
  LMF_CHECK_STR_EQ(lmf_dtype_name(LMF_DTYPE_U8), "u8");
  const int32_t unknown[] = {-1, 6, 7, 100, INT32_MIN, INT32_MAX};
  for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; ++i) {
    LMF_CHECK_EQ_INT(lmf_dtype_size(unknown[i]), 0);
    LMF_CHECK_STR_EQ(lmf_dtype_name(unknown[i]), "unknown");
  }
}

/* Every 16-bit pattern decodes exactly (f16/bf16 -> f32 -> same bits, NaN stays NaN). */
static void check_all_patterns(int32_t dtype) {
  enum { N = 65536 };
  uint16_t *in = (uint16_t *)lt_malloc(N * 2), *back = (uint16_t *)lt_malloc(N * 2);
  float *f = (float *)lt_malloc(N * 4);
  if (!in || !back || !f) goto done;
  for (int i = 0; i < N; ++i) in[i] = (uint16_t)i;
  lt_poison_f32(f, N);
  if (!lt_convert(f, LMF_DTYPE_F32, in, dtype, N)) goto done;
  if (!lt_convert(back, dtype, f, LMF_DTYPE_F32, N)) goto done;
  int bad_decode = 0, bad_back = 0;
  for (int i = 0; i < N; ++i) {
    double want = ref_decode16((uint16_t)i, dtype);
    int ok = isnan(want) ? isnan(f[i]) : ((double)f[i] == want && !signbit(f[i]) == !signbit(want));
    if (!ok && bad_decode++ < 5)
      LMF_CHECK_MSG(0, "%s 0x%04x -> f32 %.9g, expected %.9g", lmf_dtype_name(dtype), i, f[i], want);
    int rt = isnan(want) ? (ref_decode16(back[i], dtype) != ref_decode16(back[i], dtype) &&
                            (back[i] & 0x8000u) == (i & 0x8000u))
                         : back[i] == (uint16_t)i;
    if (!rt && bad_back++ < 5)
      LMF_CHECK_MSG(0, "%s 0x%04x -> f32 -> 0x%04x", lmf_dtype_name(dtype), i, back[i]);
  }
  LMF_CHECK_EQ_INT(bad_decode, 0);
  LMF_CHECK_EQ_INT(bad_back, 0);
done:
  free(in);
  free(back);
  free(f);
}

/* f32 -> 16 bits against ref_round on random values and on every kind of edge. */
static void check_rounding(int32_t dtype) {
  enum { N = 200000 };
  float *x = (float *)lt_malloc(N * 4);
  uint16_t *h = (uint16_t *)lt_malloc(N * 2);
  if (!x || !h) goto done;
  uint64_t s = 42 + (uint64_t)dtype;
  for (int i = 0; i < N; ++i) {
    uint32_t bits = (uint32_t)lt_next(&s);
    if (i % 4 == 1) bits = (bits & 0x807fffffu) | ((uint32_t)(100 + i % 60) << 23); /* near 1 */
    if (i % 4 == 2) bits = (bits & 0xffff0000u) | 0x8000u;                        /* bf16 ties */
    if (i % 4 == 3) bits = (bits & 0xffffe000u) | 0x1000u;                        /* f16 ties */
    x[i] = lt_bits_f32(bits);
  }
  if (!lt_convert(h, dtype, x, LMF_DTYPE_F32, N)) goto done;
  int bad = 0;
  for (int i = 0; i < N; ++i) {
    double want = ref_round((double)x[i], dtype);
    double got = ref_decode16(h[i], dtype);
    int ok = isnan(want) ? isnan(got) : (got == want && !signbit(got) == !signbit(want));
    if (!ok && bad++ < 5)
      LMF_CHECK_MSG(0, "%s(%a) = %a (0x%04x), expected %a", lmf_dtype_name(dtype), (double)x[i], got, h[i],
                    want);
  }
  LMF_CHECK_EQ_INT(bad, 0);
done:
  free(x);
  free(h);
}

/* One conversion of a single value, as 16-bit bits. */
static uint16_t to16(float v, int32_t dtype) {
  uint16_t h = 0xdead;
  lt_convert(&h, dtype, &v, LMF_DTYPE_F32, 1);
  return h;
}

void test_convert_host(void) {
  check_all_patterns(LMF_DTYPE_F16);
  check_all_patterns(LMF_DTYPE_BF16);
  check_rounding(LMF_DTYPE_F16);
  check_rounding(LMF_DTYPE_BF16);

  /* Round to nearest, ties to even, at the published points. bf16 near 1: spacing 2^-7. */
  LMF_CHECK_EQ_U64(to16(1.0f + 0x1p-8f, LMF_DTYPE_BF16), 0x3f80);          /* tie -> even (1.0) */
  LMF_CHECK_EQ_U64(to16(1.0f + 3 * 0x1p-8f, LMF_DTYPE_BF16), 0x3f82);      /* tie -> even (up) */
  LMF_CHECK_EQ_U64(to16(1.0f + 0x1p-8f + 0x1p-20f, LMF_DTYPE_BF16), 0x3f81); /* above the tie */
  LMF_CHECK_EQ_U64(to16(-(1.0f + 0x1p-8f), LMF_DTYPE_BF16), 0xbf80);
  LMF_CHECK_EQ_U64(to16(3.4028235e38f, LMF_DTYPE_BF16), 0x7f80);           /* FLT_MAX -> inf */
  LMF_CHECK_EQ_U64(to16(-0.0f, LMF_DTYPE_BF16), 0x8000);
  LMF_CHECK_EQ_U64(to16(lt_bits_f32(0x00000001u), LMF_DTYPE_BF16), 0x0000); /* below half a subnormal */
  /* f16 near 1: spacing 2^-10. */
  LMF_CHECK_EQ_U64(to16(1.0f + 0x1p-11f, LMF_DTYPE_F16), 0x3c00);
  LMF_CHECK_EQ_U64(to16(1.0f + 3 * 0x1p-11f, LMF_DTYPE_F16), 0x3c02);
  LMF_CHECK_EQ_U64(to16(65504.0f, LMF_DTYPE_F16), 0x7bff);
  LMF_CHECK_EQ_U64(to16(65519.996f, LMF_DTYPE_F16), 0x7bff);               /* below the tie */
  LMF_CHECK_EQ_U64(to16(65520.0f, LMF_DTYPE_F16), 0x7c00);                 /* tie -> even = inf */
  LMF_CHECK_EQ_U64(to16(-1e6f, LMF_DTYPE_F16), 0xfc00);
  LMF_CHECK_EQ_U64(to16(0x1p-24f, LMF_DTYPE_F16), 0x0001);                 /* smallest subnormal */
  LMF_CHECK_EQ_U64(to16(0x1p-25f, LMF_DTYPE_F16), 0x0000);                 /* tie -> even (0) */
  LMF_CHECK_EQ_U64(to16(3 * 0x1p-25f, LMF_DTYPE_F16), 0x0002);             /* tie -> even (2) */
  LMF_CHECK_EQ_U64(to16(0x1p-14f - 0x1p-25f, LMF_DTYPE_F16), 0x0400);      /* rounds up to normal */
  LMF_CHECK_EQ_U64(to16(-0.0f, LMF_DTYPE_F16), 0x8000);
  {
    uint16_t hn = to16(NAN, LMF_DTYPE_F16), bn = to16(NAN, LMF_DTYPE_BF16);
    LMF_CHECK_MSG((hn & 0x7c00u) == 0x7c00u && (hn & 0x3ffu), "f16(NaN) = 0x%04x", hn);
    LMF_CHECK_MSG((bn & 0x7f80u) == 0x7f80u && (bn & 0x7fu), "bf16(NaN) = 0x%04x", bn);
    /* A signalling-looking NaN whose payload sits only in the dropped bits must stay NaN. */
    uint16_t bl = to16(lt_bits_f32(0x7f800001u), LMF_DTYPE_BF16);
    LMF_CHECK_MSG((bl & 0x7f80u) == 0x7f80u && (bl & 0x7fu), "bf16(0x7f800001) = 0x%04x", bl);
    uint16_t hl = to16(lt_bits_f32(0x7f800001u), LMF_DTYPE_F16);
    LMF_CHECK_MSG((hl & 0x7c00u) == 0x7c00u && (hl & 0x3ffu), "f16(0x7f800001) = 0x%04x", hl);
  }
  /* f32 -> f32 copies; 16 -> 16 goes through f32 exactly. */
  {
    float a[3] = {1.5f, -0.0f, 1e-40f}, b[3] = {0, 0, 0};
    LMF_CHECK_OK(lmf_convert_host(b, LMF_DTYPE_F32, a, LMF_DTYPE_F32, 3));
    LMF_CHECK_BYTES_EQ(a, b, sizeof a, "f32 -> f32");
    uint16_t hb[2] = {0x3c01, 0x7bff}, bb[2] = {0, 0}; /* f16 1+2^-10 -> bf16 rounds to 1.0; 65504 */
    LMF_CHECK_OK(lmf_convert_host(bb, LMF_DTYPE_BF16, hb, LMF_DTYPE_F16, 2));
    LMF_CHECK_EQ_U64(bb[0], 0x3f80);
    LMF_CHECK_EQ_U64(bb[1], 0x4780); /* 65504 = 0x1.ffcp15 rounds to 2^16 in bf16 */
  }
  /* n = 0 is a no-op. */
  {
    uint16_t h = 0x1234;
    float f = 1.0f;
    LMF_CHECK_OK(lmf_convert_host(&h, LMF_DTYPE_F16, &f, LMF_DTYPE_F32, 0));
    LMF_CHECK_EQ_U64(h, 0x1234);
  }
}

void test_convert_host_bad_input(void) {
  float src[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  uint16_t dst[8] = {0};
  lt_snapshot snap;
  lt_snap_init(&snap);
  lt_snap_add(&snap, src, sizeof src);
  lt_snap_add(&snap, dst, sizeof dst);
  LMF_CHECK_FAIL(lmf_convert_host(NULL, LMF_DTYPE_F16, src, LMF_DTYPE_F32, 8), LMF_ERR_NULL_POINTER, "dst");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_F16, NULL, LMF_DTYPE_F32, 8), LMF_ERR_NULL_POINTER, "src");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_I32, src, LMF_DTYPE_F32, 8), LMF_ERR_UNSUPPORTED_DTYPE,
                 "dtype");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_F16, src, LMF_DTYPE_I64, 8), LMF_ERR_UNSUPPORTED_DTYPE,
                 "dtype");
  LMF_CHECK_FAIL(lmf_convert_host(dst, 99, src, LMF_DTYPE_F32, 8), LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_F16, src, -1, 8), LMF_ERR_UNSUPPORTED_DTYPE, "dtype");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_F16, src, LMF_DTYPE_F32, -1), LMF_ERR_INVALID_SIZE, "n");
  LMF_CHECK_FAIL(lmf_convert_host(dst, LMF_DTYPE_F16, src, LMF_DTYPE_F32, INT64_MAX), LMF_ERR_INVALID_SIZE,
                 "n");
  /* Overlap: dst inside src's bytes. */
  LMF_CHECK_FAIL(lmf_convert_host((char *)src + 4, LMF_DTYPE_F16, src, LMF_DTYPE_F32, 4), LMF_ERR_OVERLAP,
                 "overlap");
  LMF_CHECK_FAIL(lmf_convert_host(src, LMF_DTYPE_F32, src, LMF_DTYPE_F32, 8), LMF_ERR_OVERLAP, "overlap");
  LT_SNAP_CHECK(&snap, "lmf_convert_host bad input");
  lt_snap_free(&snap);
}

void test_backend_available(void) {
  LMF_CHECK_EQ_INT(lmf_backend_available(LMF_BACKEND_CPU), 1);
  LMF_CHECK_EQ_INT(lmf_backend_available(LMF_BACKEND_AUTO), 1);
  LMF_CHECK_EQ_INT(lmf_backend_available(-1), 0);
  LMF_CHECK_EQ_INT(lmf_backend_available(3), 0);
  LMF_CHECK_EQ_INT(lmf_backend_available(1000), 0);
  int count = lmf_cuda_device_count();
  LMF_CHECK(count >= 0);
  LMF_CHECK_EQ_INT(lmf_backend_available(LMF_BACKEND_CUDA), count > 0);
#if !defined(LMF_HAVE_CUDA)
  LMF_CHECK_EQ_INT(count, 0);
#endif
}

void test_context_defaults(void) {
  lmf_context_config_t a = LMF_CONTEXT_CONFIG_INIT, b;
  memset(&b, 0xab, sizeof b);
  LMF_CHECK_OK(lmf_context_config_init(&b, sizeof b));
  LMF_CHECK_EQ_INT(b.struct_size, sizeof(lmf_context_config_t));
  LMF_CHECK_EQ_INT(b.version, LMF_CONTEXT_CONFIG_VERSION);
  LMF_CHECK_EQ_INT(b.backend, a.backend);
  LMF_CHECK_EQ_INT(b.backend, LMF_BACKEND_AUTO);
  LMF_CHECK_EQ_INT(b.device, 0);
  LMF_CHECK_EQ_INT(b.cpu_threads, 0);
  LMF_CHECK_EQ_INT(a.struct_size, sizeof(lmf_context_config_t));
  LMF_CHECK_EQ_INT(a.version, LMF_CONTEXT_CONFIG_VERSION);

  /* NULL config: AUTO, which runs on CUDA exactly when a device is usable. */
  lmf_context_t *ctx = NULL;
  LMF_REQUIRE_OK(lmf_context_create(&ctx, NULL));
  int32_t backend = -1;
  LMF_CHECK_OK(lmf_context_backend(ctx, &backend));
  LMF_CHECK_EQ_INT(backend, lmf_backend_available(LMF_BACKEND_CUDA) ? LMF_BACKEND_CUDA : LMF_BACKEND_CPU);
  LMF_CHECK_OK(lmf_stream_synchronize(ctx, NULL));
  lmf_context_destroy(ctx);
  lmf_context_destroy(NULL); /* no-op */

  /* Explicit CPU, with threads. */
  lmf_context_config_t c = LMF_CONTEXT_CONFIG_INIT;
  c.backend = LMF_BACKEND_CPU;
  c.cpu_threads = 3;
  ctx = NULL;
  LMF_REQUIRE_OK(lmf_context_create(&ctx, &c));
  LMF_CHECK_OK(lmf_context_backend(ctx, &backend));
  LMF_CHECK_EQ_INT(backend, LMF_BACKEND_CPU);
  LMF_CHECK_OK(lmf_stream_synchronize(ctx, NULL));
  lmf_context_destroy(ctx);

  /* struct_size below version 1's size (lmfuse.h: "at least the size of version 1") is rejected, even
   * when the missing fields would have defaults. */
  lmf_context_config_t old;
  memset(&old, 0x7f, sizeof old);
  old.struct_size = offsetof(lmf_context_config_t, cpu_threads);
  old.version = LMF_CONTEXT_CONFIG_VERSION;
  old.backend = LMF_BACKEND_CPU;
  old.device = 0;
  lmf_context_t *const sentinel = (lmf_context_t *)(uintptr_t)0x5e57;
  ctx = sentinel;
  LMF_CHECK_FAIL(lmf_context_create(&ctx, &old), LMF_ERR_STRUCT_SIZE, "struct_size");
  LMF_CHECK(ctx == sentinel);
}

void test_context_bad_input(void) {
  lmf_context_t *const sentinel = (lmf_context_t *)(uintptr_t)0x5e57;
  lmf_context_t *out = sentinel;
  lmf_context_config_t c = LMF_CONTEXT_CONFIG_INIT;

  LMF_CHECK_FAIL(lmf_context_create(NULL, &c), LMF_ERR_NULL_POINTER, "out");
  LMF_CHECK_FAIL(lmf_context_config_init(NULL, sizeof(lmf_context_config_t)), LMF_ERR_NULL_POINTER, NULL);
  {
    /* The init function takes exactly this library's struct size and writes nothing otherwise. */
    lmf_context_config_t x, x0;
    memset(&x, 0x3c, sizeof x);
    x0 = x;
    const size_t sizes[3] = {0, sizeof x - 1, sizeof x + 8};
    for (int i = 0; i < 3; ++i) {
      LMF_CHECK_FAIL(lmf_context_config_init(&x, sizes[i]), LMF_ERR_STRUCT_SIZE, "struct_size");
      LMF_CHECK_BYTES_EQ(&x, &x0, sizeof x, "config after a failed init");
    }
  }

  c.struct_size = 0;
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_STRUCT_SIZE, "struct_size");
  c.struct_size = offsetof(lmf_context_config_t, backend); /* too short to hold backend */
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_STRUCT_SIZE, "struct_size");
  c.struct_size = sizeof(lmf_context_config_t) + 8; /* from a newer header */
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_STRUCT_SIZE, "struct_size");
  c.struct_size = sizeof(lmf_context_config_t);
  c.version = 0;
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_STRUCT_SIZE, "version");
  c.version = LMF_CONTEXT_CONFIG_VERSION + 1;
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_STRUCT_SIZE, "version");
  c.version = LMF_CONTEXT_CONFIG_VERSION;

  const int32_t bad_backends[] = {-1, 3, 100};
  for (size_t i = 0; i < 3; ++i) {
    c.backend = bad_backends[i];
    LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_INVALID_ARGUMENT, "backend");
  }
  c.backend = LMF_BACKEND_CPU;
  c.device = -1;
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_INVALID_ARGUMENT, "device");
  c.device = 0;
  c.cpu_threads = -1;
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_INVALID_ARGUMENT, "cpu_threads");
  c.cpu_threads = 0;

  /* CUDA without a device: NO_DEVICE in a CUDA build, NOT_COMPILED in a CPU-only one. With a device,
   * an ordinal past the last device gives NO_DEVICE. */
  c.backend = LMF_BACKEND_CUDA;
  int count = lmf_cuda_device_count();
#if defined(LMF_HAVE_CUDA)
  if (count == 0) LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_NO_DEVICE, "CUDA");
#else
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_NOT_COMPILED, "CUDA");
#endif
  c.device = count; /* one past the last (0 when there is none) */
#if defined(LMF_HAVE_CUDA)
  LMF_CHECK_FAIL(lmf_context_create(&out, &c), LMF_ERR_NO_DEVICE, NULL);
#endif
  LMF_CHECK(out == sentinel);

  int32_t backend = 77;
  LMF_CHECK_FAIL(lmf_context_backend(NULL, &backend), LMF_ERR_NULL_POINTER, "ctx");
  LMF_CHECK_EQ_INT(backend, 77);
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CPU, 0);
  LMF_REQUIRE(ctx != NULL);
  LMF_CHECK_FAIL(lmf_context_backend(ctx, NULL), LMF_ERR_NULL_POINTER, "backend");
  LMF_CHECK_FAIL(lmf_stream_synchronize(NULL, NULL), LMF_ERR_NULL_POINTER, "ctx");
  lmf_context_destroy(ctx);
}
