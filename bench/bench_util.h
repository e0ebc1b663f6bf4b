/* lmfuse-bench: timing statistics, the table, JSON lines and the same-run PyTorch peers. */
#ifndef LMF_BENCH_UTIL_H
#define LMF_BENCH_UTIL_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

typedef struct bench_opts {
  int64_t numel;   /* parameters (mezo) */
  int tensors;     /* tensors they are split into (mezo) */
  int repeats;     /* timed repetitions; medians are reported */
  int warmup;
  int peer;        /* 1: run the PyTorch peer in the same run */
  int backend;     /* lmf_backend_t */
  int threads;     /* CPU threads, 0 = default */
  int quick;       /* 1: only the sizes the issues' bars name (logits) */
  int only_batch;  /* logits: only this B (0: the sweep's) */
  int only_vocab;  /* logits: only this V (0: the sweep's) */
  int busy_ms;     /* logits, GPU: keep the card busy this long before timing each case (bdev_busy) */
  int only_models; /* logits: only the cases of this many models, 1 or 3 (0: all, GeDi's too) */
  int only_dtype;  /* logits: 1 + the lmf_dtype_t of the only cases run (0: f32 and bf16) */
} bench_opts;

double bench_now_ms(void);
double bench_median(double *v, int n);

/* Peak resident set (VmHWM) in bytes, and a reset of it (Linux clear_refs); 0 if unavailable. */
size_t bench_peak_rss(void);
void bench_reset_peak_rss(void);

/* Runs `python bench/python/<script> <args>` and returns the last JSON object it printed, or NULL
 * (with a note on stderr) if Python, torch or the script are missing. */
cJSON *bench_run_peer(const char *script, const char *args);

/* Prints one table row to stdout and keeps the JSON object for the JSON lines printed at the end. */
void bench_table_header(const char *title, const char *columns);
void bench_record(cJSON *row);
void bench_print_json_lines(void);

#endif
