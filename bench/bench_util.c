#define _POSIX_C_SOURCE 200809L
#include "bench_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double bench_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

size_t bench_peak_rss(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  size_t kb = 0;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %zu kB", &kb) == 1) break;
  fclose(f);
  return kb * 1024;
}

void bench_reset_peak_rss(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f) return;
  fputs("5", f);
  fclose(f);
}

static const char *python_exe(void) {
  const char *e = getenv("LMFUSE_PYTHON");
  if (e && *e) return e;
  return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

cJSON *bench_run_peer(const char *script, const char *args) {
  const char *dir = getenv("LMFUSE_BENCH_PYTHON_DIR");
  if (!dir || !*dir) dir = LMF_BENCH_PYTHON_DIR;
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s %s/%s %s", python_exe(), dir, script, args);
  fflush(stdout);
  FILE *p = popen(cmd, "r");
  if (!p) {
    fprintf(stderr, "lmfuse-bench: could not run the peer: %s\n", cmd);
    return NULL;
  }
  char line[4096];
  cJSON *last = NULL;
  while (fgets(line, sizeof line, p)) {
    if (line[0] != '{') continue;
    cJSON *j = cJSON_Parse(line);
    if (j) {
      cJSON_Delete(last);
      last = j;
    }
  }
  int rc = pclose(p);
  if (rc != 0 || !last) {
    fprintf(stderr, "lmfuse-bench: the peer gave no result (exit %d): %s\n", rc, cmd);
    cJSON_Delete(last);
    return NULL;
  }
  return last;
}

static cJSON *rows;

void bench_table_header(const char *title, const char *columns) {
  printf("\n%s\n%s\n", title, columns);
  size_t n = strlen(columns);
  for (size_t i = 0; i < n; ++i) putchar('-');
  putchar('\n');
}

void bench_record(cJSON *row) {
  if (!rows) rows = cJSON_CreateArray();
  cJSON_AddItemToArray(rows, row);
}

void bench_print_json_lines(void) {
  if (!rows) return;
  printf("\n# JSON lines\n");
  cJSON *r;
  cJSON_ArrayForEach(r, rows) {
    char *s = cJSON_PrintUnformatted(r);
    if (s) puts(s);
    free(s);
  }
  cJSON_Delete(rows);
  rows = NULL;
}
