/* lmfuse-bench: microbenchmarks of lmfuse on the default backend (the GPU if there is one, else the
 * CPU), each beside its same-run floor and peer. Prints a table, then JSON lines. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_families.h"
#include "bench_util.h"
#include "lmfuse/lmfuse.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: lmfuse-bench [mezo|logits|dyntok|hypernet|all|latency] [options]\n"
          "  (latency: a GPU's launch, barrier and load-latency floors; CUDA builds, not in all)\n"
          "  --backend auto|cpu|cuda   default auto: the GPU if present, else the CPU\n"
          "  --numel N                 MeZO parameters (default 1e8)\n"
          "  --tensors T               tensors they are split into (default 100)\n"
          "  --repeats R               timed repetitions, median reported (default 5 CPU, 20 GPU)\n"
          "  --warmup W                untimed runs first (default 1)\n"
          "  --threads N               CPU threads (default: OpenMP's)\n"
          "  --no-peer                 skip the same-run PyTorch peers\n"
          "  --quick                   logits: only the bars' sizes (B 1 and 256, V 32000 and 128256)\n"
          "  --batch B, --vocab V      logits: only this batch size / vocabulary (any value >= 1)\n"
          "  --models K, --dtype D     logits: only the cases of K = 1 or 3 models (no GeDi), of\n"
          "                            dtype f32 or bf16\n"
          "  --busy-ms N               logits, GPU: keep the card busy N ms before timing each case\n"
          "                            (its clock then is a decoding loop's, not an idle card's)\n");
}

int main(int argc, char **argv) {
  bench_opts o = {100000000, 100, 0, 1, 1, LMF_BACKEND_AUTO, 0, 0, 0, 0, 0, 0, 0};
  const char *family = "all";
  for (int i = 1; i < argc; ++i) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--no-peer")) {
      o.peer = 0;
    } else if (!strcmp(a, "--quick")) {
      o.quick = 1;
    } else if (a[0] == '-' && !v) {
      fprintf(stderr, "lmfuse-bench: %s needs a value\n", a);
      return 2;
    } else if (!strcmp(a, "--numel")) {
      o.numel = (int64_t)strtod(v, NULL), ++i;
    } else if (!strcmp(a, "--tensors")) {
      o.tensors = atoi(v), ++i;
    } else if (!strcmp(a, "--repeats")) {
      o.repeats = atoi(v), ++i;
    } else if (!strcmp(a, "--warmup")) {
      o.warmup = atoi(v), ++i;
    } else if (!strcmp(a, "--batch")) {
      o.only_batch = atoi(v) > 0 ? atoi(v) : -1, ++i;
    } else if (!strcmp(a, "--vocab")) {
      o.only_vocab = atoi(v) > 0 ? atoi(v) : -1, ++i;
    } else if (!strcmp(a, "--models")) {
      o.only_models = atoi(v) == 1 || atoi(v) == 3 ? atoi(v) : -1, ++i;
    } else if (!strcmp(a, "--dtype")) {
      o.only_dtype = !strcmp(v, "f32") ? 1 + LMF_DTYPE_F32 : !strcmp(v, "bf16") ? 1 + LMF_DTYPE_BF16 : -1, ++i;
    } else if (!strcmp(a, "--busy-ms")) {
      o.busy_ms = atoi(v), ++i;
    } else if (!strcmp(a, "--threads")) {
      o.threads = atoi(v), ++i;
    } else if (!strcmp(a, "--backend")) {
      o.backend = !strcmp(v, "cpu") ? LMF_BACKEND_CPU : !strcmp(v, "cuda") ? LMF_BACKEND_CUDA
                                                                            : LMF_BACKEND_AUTO;
      ++i;
    } else if (a[0] != '-') {
      family = a;
    } else {
      fprintf(stderr, "lmfuse-bench: unknown option %s\n", a);
      usage(stderr);
      return 2;
    }
  }
  if (o.only_batch < 0 || o.only_vocab < 0) {
    fprintf(stderr, "lmfuse-bench: --batch and --vocab need a value >= 1\n");
    return 2;
  }
  if (o.only_models < 0 || o.only_dtype < 0) {
    fprintf(stderr, "lmfuse-bench: --models takes 1 or 3, --dtype f32 or bf16\n");
    return 2;
  }
  if (o.numel < o.tensors || o.tensors < 1 || o.warmup < 0) {
    fprintf(stderr, "lmfuse-bench: need numel >= tensors >= 1 and warmup >= 0\n");
    return 2;
  }
  if (o.repeats <= 0) o.repeats = lmf_backend_available(LMF_BACKEND_CUDA) && o.backend != LMF_BACKEND_CPU ? 20 : 5;
  printf("lmfuse %s\n", lmf_version_string());
  int rc = 0;
  int all = !strcmp(family, "all");
  int known = all || !strcmp(family, "mezo") || !strcmp(family, "logits") ||
              !strcmp(family, "dyntok") || !strcmp(family, "hypernet") || !strcmp(family, "latency");
  if (!known) {
    fprintf(stderr, "lmfuse-bench: unknown family '%s'\n", family);
    usage(stderr);
    return 2;
  }
  if (all || !strcmp(family, "mezo")) rc |= bench_mezo(&o);
  if (all || !strcmp(family, "logits")) rc |= bench_logits(&o);
  if (all || !strcmp(family, "dyntok")) rc |= bench_dyntok(&o);
  if (all || !strcmp(family, "hypernet")) rc |= bench_hypernet(&o);
  if (!strcmp(family, "latency")) {
#if defined(LMF_HAVE_CUDA)
    rc |= bench_latency(&o);
#else
    fprintf(stderr, "lmfuse-bench: latency needs a CUDA build (this one has the CPU backend only)\n");
    rc = 1;
#endif
  }
  bench_print_json_lines();
  return rc;
}
