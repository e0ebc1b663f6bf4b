/* lmfuse-bench latency (CUDA builds, on a GPU): the floors under a small-batch step, measured on the
 * card in the same run. A B = 1 logits step moves under a megabyte (0.2 us at HBM rate): its time is
 * launches, grid-wide barriers, dependent memory latencies and the SM clock they run at, not
 * bandwidth. This family measures each of those alone, so a step's time can be read against them
 * (docs/benchmarks.md):
 *   - an empty kernel: one launch from the host, the same replayed from a CUDA graph, and each further
 *     launch of a chain of 10 in one graph (what a step of separate kernels pays per kernel);
 *   - a cooperative launch of G x 256 threads (G = 64, about k_coop's grid at V = 128,256, and one
 *     block per SM) with 0, 1, 2 and 4 grid barriers: each barrier's cost is the slope;
 *   - the last-block ticket (a fence and one atomic per block) at the same grids;
 *   - one thread's dependent loads (a pointer chase) from L2 and from HBM: ns and SM cycles per load;
 *   - the SM clock (clock64 cycles over %globaltimer ns) on an idle card and right after 50 ms of
 *     copies, as a decoding loop's forward pass would leave it;
 *   - instruction fetch: one block per SM running 512 or 2048 steps of straight-line integer code once
 *     (65 and 257 KiB of sm_90 code from nvcc 13.0, 128 bytes a step), against a 128-step loop body
 *     (17 KiB) run once and 16 times. The loop's slope is what a step costs from a warm instruction
 *     cache; what the straight-line code takes beyond that is what fetching code the SM has not
 *     cached costs per launch: the logits kernels' once-per-launch paths are tens of KiB
 *     (docs/logits.md, "Code footprint").
 * Every time is the median of --repeats runs (CUDA events), graph replays where named. */
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern "C" {
#include "bench_device.h"
#include "bench_families.h"
#include "bench_util.h"
}

namespace {

constexpr int kThreads = 256;
constexpr int kChain = 10;          /* empty kernels in the chained graph */
constexpr int kHops = 2000;         /* dependent loads per chase */
constexpr size_t kLine = 256;       /* bytes between chase nodes: every hop a new line */
constexpr size_t kL2Bytes = 1 << 20;     /* chase over 1 MiB: L2-resident once warm */
constexpr size_t kHbmBytes = 256u << 20; /* chase over 256 MiB: past any L2, mostly misses */

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long g;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g));
  return g;
}

__global__ void k_empty() {}

__global__ void __launch_bounds__(kThreads) k_barriers(int n) {
  cooperative_groups::grid_group g = cooperative_groups::this_grid();
  for (int i = 0; i < n; ++i) g.sync();
}

/* The last-block pattern of k_coop's ticket path: every thread fences, thread 0 takes a ticket. */
__global__ void __launch_bounds__(kThreads) k_ticket(unsigned *count) {
  __shared__ bool last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(count, 1u) == gridDim.x - 1;
    if (last) *count = 0u; /* ready for the next replay */
  }
  __syncthreads();
}

/* One thread follows `next` for `hops` loads (from L2: __ldcg), then stores where it ended (so the
 * loads cannot be dropped) and the SM cycles and ns they took. */
__global__ void k_chase(const unsigned *next, unsigned start, int hops, unsigned *end, long long *cyc,
                        unsigned long long *ns) {
  unsigned i = start;
  const long long c0 = clock64();
  const unsigned long long t0 = global_ns();
  for (int k = 0; k < hops; ++k) i = __ldcg(next + i);
  const long long c1 = clock64();
  const unsigned long long t1 = global_ns();
  *end = i;
  *cyc = c1 - c0;
  *ns = t1 - t0;
}

/* An odd multiplier for step i, not affine in i: every step takes its own immediate (with an affine
 * one, nvcc derives each from the last in a register, and a step's code changes with the length). */
__host__ __device__ constexpr unsigned step_const(int i, unsigned salt) {
  return ((((unsigned)i + 1u) * salt) ^ ((((unsigned)i + 1u) * salt) >> 15)) | 1u;
}

/* Steps kFirst .. kFirst + kSteps - 1 of four interleaved integer chains (a multiply-add and a shift
 * each), unrolled. An empty asm every 32 steps keeps the compiler's expression trees shallow (without
 * it, nvcc 13.0's cicc crashes at 512 steps). */
template <int kFirst, int kSteps>
__device__ __forceinline__ void code_steps(unsigned &a, unsigned &b, unsigned &c, unsigned &d) {
#pragma unroll
  for (int i = kFirst; i < kFirst + kSteps; ++i) {
    a = a * step_const(i, 0x9e3779b1u) + (d >> 7);
    b = b * step_const(i, 0x85ebca6bu) + (a >> 9);
    c = c * step_const(i, 0xc2b2ae35u) + (b >> 5);
    d = d * step_const(i, 0x27d4eb2fu) + (c >> 11);
    if (i % 32 == 31) asm volatile("" : "+r"(a), "+r"(b), "+r"(c), "+r"(d));
  }
}

/* kParts x 128 steps of straight-line code (parts of at most 512 steps: nvcc unrolls no more in one
 * loop), run reps times; the result is stored where it can never match. */
template <int kParts>
__global__ void __launch_bounds__(kThreads) k_code(unsigned seed, int reps, unsigned *sink) {
  unsigned a = seed ^ threadIdx.x, b = a * 3u + 1u, c = a * 5u + 2u, d = a * 7u + 3u;
  for (int r = 0; r < reps; ++r) {
    if (kParts == 1) code_steps<0, 128>(a, b, c, d);
    if (kParts >= 4) code_steps<0, 512>(a, b, c, d);
    if (kParts >= 16) {
      code_steps<512, 512>(a, b, c, d);
      code_steps<1024, 512>(a, b, c, d);
      code_steps<1536, 512>(a, b, c, d);
    }
  }
  if ((a ^ b ^ c ^ d) == 0x5eedf00du && seed == 0u) *sink = a; /* never: keeps the chains live */
}

/* Spins ~spin_ns on one SM: its clock is cycles / ns. */
__global__ void k_clock(unsigned long long spin_ns, long long *cyc, unsigned long long *ns) {
  const long long c0 = clock64();
  const unsigned long long t0 = global_ns();
  unsigned long long t = t0;
  while (t - t0 < spin_ns) t = global_ns();
  *cyc = clock64() - c0;
  *ns = t - t0;
}

struct Launch {
  cudaStream_t s;
  int grid, n;
  unsigned *count;
  void (*code)(unsigned, int, unsigned *); /* enq_code's kernel, run n times per thread */
};

void enq_empty(void *p) {
  const Launch *l = static_cast<const Launch *>(p);
  k_empty<<<1, 32, 0, l->s>>>();
}
void enq_chain(void *p) {
  const Launch *l = static_cast<const Launch *>(p);
  for (int i = 0; i < kChain; ++i) k_empty<<<1, 32, 0, l->s>>>();
}
void enq_barriers(void *p) {
  const Launch *l = static_cast<const Launch *>(p);
  cudaLaunchAttribute at = {};
  at.id = cudaLaunchAttributeCooperative;
  at.val.cooperative = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3((unsigned)l->grid);
  cfg.blockDim = dim3(kThreads);
  cfg.stream = l->s;
  cfg.attrs = &at;
  cfg.numAttrs = 1;
  BENCH_CUDA_CHECK(cudaLaunchKernelEx(&cfg, k_barriers, l->n));
}
void enq_code(void *p) {
  const Launch *l = static_cast<const Launch *>(p);
  l->code<<<l->grid, kThreads, 0, l->s>>>(0x1234567u, l->n, l->count);
}
void enq_ticket(void *p) {
  const Launch *l = static_cast<const Launch *>(p);
  k_ticket<<<l->grid, kThreads, 0, l->s>>>(l->count);
}

/* A random cycle over the nodes (Sattolo), node i at element i * kLine / 4. */
unsigned *chase_buffer(size_t bytes) {
  const size_t stride = kLine / sizeof(unsigned), nodes = bytes / kLine;
  unsigned *h = static_cast<unsigned *>(calloc(bytes / sizeof(unsigned), sizeof(unsigned)));
  size_t *perm = static_cast<size_t *>(malloc(sizeof(size_t) * nodes));
  if (!h || !perm) {
    fprintf(stderr, "lmfuse-bench latency: out of host memory\n");
    exit(1);
  }
  for (size_t i = 0; i < nodes; ++i) perm[i] = i;
  uint64_t r = 0x9e3779b97f4a7c15ull;
  for (size_t i = nodes - 1; i > 0; --i) {
    r ^= r << 13, r ^= r >> 7, r ^= r << 17;
    const size_t j = (size_t)(r % i);
    const size_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  for (size_t i = 0; i < nodes; ++i) h[perm[i] * stride] = (unsigned)(perm[(i + 1) % nodes] * stride);
  unsigned *d = nullptr;
  BENCH_CUDA_CHECK(cudaMalloc(&d, bytes));
  BENCH_CUDA_CHECK(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
  free(h);
  free(perm);
  return d;
}

struct Probe {
  long long *cyc;
  unsigned long long *ns;
  unsigned *end;
};

/* Median (over repeats) of one chase: ns and cycles per dependent load. `fresh`: each run walks on from
 * where the last one ended, so it meets lines no run has touched (the HBM case: 2000 hops a run over a
 * cycle of 1 Mi nodes); else every run walks the same hops from node 0, L2-resident after the warm-up.
 * (Until 2026-11-28 the HBM case restarted at node 0 too, and measured L2: 288 cycles for both.) */
void chase(cudaStream_t s, const Probe &pr, const unsigned *buf, bool fresh, int repeats, double *ns_per,
           double *cyc_per) {
  double *tn = static_cast<double *>(malloc(sizeof(double) * (size_t)repeats));
  double *tc = static_cast<double *>(malloc(sizeof(double) * (size_t)repeats));
  unsigned at = 0;
  k_chase<<<1, 1, 0, s>>>(buf, 0u, kHops, pr.end, pr.cyc, pr.ns); /* warm: the L2 case's lines */
  if (fresh) BENCH_CUDA_CHECK(cudaMemcpyAsync(&at, pr.end, sizeof at, cudaMemcpyDeviceToHost, s));
  BENCH_CUDA_CHECK(cudaStreamSynchronize(s));
  for (int i = 0; i < repeats; ++i) {
    k_chase<<<1, 1, 0, s>>>(buf, at, kHops, pr.end, pr.cyc, pr.ns);
    long long c = 0;
    unsigned long long n = 0;
    BENCH_CUDA_CHECK(cudaMemcpyAsync(&c, pr.cyc, sizeof c, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA_CHECK(cudaMemcpyAsync(&n, pr.ns, sizeof n, cudaMemcpyDeviceToHost, s));
    if (fresh) BENCH_CUDA_CHECK(cudaMemcpyAsync(&at, pr.end, sizeof at, cudaMemcpyDeviceToHost, s));
    BENCH_CUDA_CHECK(cudaStreamSynchronize(s));
    tn[i] = (double)n / kHops;
    tc[i] = (double)c / kHops;
  }
  *ns_per = bench_median(tn, repeats);
  *cyc_per = bench_median(tc, repeats);
  free(tn);
  free(tc);
}

/* The SM clock in MHz over a 20 us spin. */
double sm_clock_mhz(cudaStream_t s, const Probe &pr) {
  k_clock<<<1, 1, 0, s>>>(20000ull, pr.cyc, pr.ns);
  long long c = 0;
  unsigned long long n = 0;
  BENCH_CUDA_CHECK(cudaMemcpyAsync(&c, pr.cyc, sizeof c, cudaMemcpyDeviceToHost, s));
  BENCH_CUDA_CHECK(cudaMemcpyAsync(&n, pr.ns, sizeof n, cudaMemcpyDeviceToHost, s));
  BENCH_CUDA_CHECK(cudaStreamSynchronize(s));
  return n ? 1e3 * (double)c / (double)n : NAN;
}

void row(const char *what, double call_us, double graph_us, const char *note) {
  char c[32] = "", g[32] = "";
  if (!isnan(call_us)) snprintf(c, sizeof c, "%.2f", call_us);
  if (!isnan(graph_us)) snprintf(g, sizeof g, "%.2f", graph_us);
  printf("%-44s %10s %10s  %s\n", what, c, g, note);
  cJSON *r = cJSON_CreateObject();
  cJSON_AddStringToObject(r, "family", "latency");
  cJSON_AddStringToObject(r, "what", what);
  if (!isnan(call_us)) cJSON_AddNumberToObject(r, "us", call_us);
  if (!isnan(graph_us)) cJSON_AddNumberToObject(r, "graph_us", graph_us);
  if (note[0]) cJSON_AddStringToObject(r, "note", note);
  bench_record(r);
}

}  // namespace

extern "C" int bench_latency(const bench_opts *o) {
  bench_dev d;
  if (!bdev_open(&d, o->backend, o->threads)) return 1;
  if (!d.cuda) {
    fprintf(stderr, "lmfuse-bench latency: needs the CUDA backend and a GPU (this is %s)\n", d.name);
    bdev_close(&d);
    return 1;
  }
  const int R = o->repeats, W = o->warmup > 0 ? o->warmup : 1;
  cudaStream_t s = (cudaStream_t)d.stream;
  int dev = 0, sms = 0, per_sm = 0;
  BENCH_CUDA_CHECK(cudaGetDevice(&dev));
  BENCH_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  BENCH_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_barriers, kThreads, 0));
  Probe pr;
  unsigned *count = nullptr;
  BENCH_CUDA_CHECK(cudaMalloc(&pr.cyc, sizeof(long long)));
  BENCH_CUDA_CHECK(cudaMalloc(&pr.ns, sizeof(unsigned long long)));
  BENCH_CUDA_CHECK(cudaMalloc(&pr.end, sizeof(unsigned)));
  BENCH_CUDA_CHECK(cudaMalloc(&count, sizeof(unsigned)));
  BENCH_CUDA_CHECK(cudaMemset(count, 0, sizeof(unsigned)));

  char title[400];
  snprintf(title, sizeof title, "latency floors on %s, median of %d", d.name, R);
  bench_table_header(title, "what                                          us (call)  us (graph)  note");

  char note[160];
  Launch l = {s, 1, 0, count, nullptr};
  row("empty kernel", 1e3 * bdev_time_ms(&d, enq_empty, &l, W, R), 1e3 * bdev_time_graph_ms(&d, enq_empty, &l, W, R),
      "");
  const double chain = 1e3 * bdev_time_graph_ms(&d, enq_chain, &l, W, R);
  snprintf(note, sizeof note, "%d in one graph: %.2f us", kChain, chain);
  row("each further empty kernel in a graph", NAN, chain / kChain, note);

  const int grids[2] = {64, sms};
  for (int gi = 0; gi < 2; ++gi) {
    l.grid = grids[gi];
    if (l.grid > per_sm * sms) continue; /* not resident at once: no cooperative launch */
    double g[3];
    const int ns[3] = {0, 2, 4};
    for (int k = 0; k < 3; ++k) {
      l.n = ns[k];
      g[k] = 1e3 * bdev_time_graph_ms(&d, enq_barriers, &l, W, R);
    }
    char what[96];
    snprintf(what, sizeof what, "cooperative launch, %d x %d, no barrier", l.grid, kThreads);
    row(what, NAN, g[0], "");
    snprintf(what, sizeof what, "each grid barrier, %d blocks", l.grid);
    snprintf(note, sizeof note, "(4 barriers - 0) / 4; 2 barriers: %.2f us, 4: %.2f us", g[1], g[2]);
    row(what, NAN, (g[2] - g[0]) / 4.0, note);
    snprintf(what, sizeof what, "last-block ticket, %d x %d", l.grid, kThreads);
    row(what, NAN, 1e3 * bdev_time_graph_ms(&d, enq_ticket, &l, W, R), "the whole launch");
  }

  /* Instruction fetch: straight-line code once against a loop body run from a warm cache. */
  {
    struct {
      void (*k)(unsigned, int, unsigned *);
      int steps, reps;
      const char *what;
    } const codes[4] = {{k_code<1>, 128, 1, "128 steps of code once, a block per SM"},
                        {k_code<1>, 128, 16, "the same 128 steps as a loop run 16 times"},
                        {k_code<4>, 512, 1, "512 steps of straight-line code once"},
                        {k_code<16>, 2048, 1, "2048 steps of straight-line code once"}};
    double t[4];
    l.grid = sms;
    for (int i = 0; i < 4; ++i) {
      l.code = codes[i].k;
      l.n = codes[i].reps;
      t[i] = 1e3 * bdev_time_graph_ms(&d, enq_code, &l, W, R);
    }
    const double warm = (t[1] - t[0]) / (15.0 * 128.0); /* us per step from a warm cache */
    for (int i = 0; i < 4; ++i) {
      note[0] = '\0';
      if (i == 1) snprintf(note, sizeof note, "warm: %.2f ns a step", 1e3 * warm);
      if (i >= 2) {
        const double extra = t[i] - t[0] - warm * (codes[i].steps - 128);
        snprintf(note, sizeof note, "%.2f ns a step; beyond warm: %.2f us (%.2f ns a step)",
                 1e3 * (t[i] - t[0]) / (codes[i].steps - 128), extra, 1e3 * extra / (codes[i].steps - 128));
      }
      row(codes[i].what, NAN, t[i], note);
    }
    l.code = nullptr;
  }

  usleep(200000); /* idle the card a moment: the clock an isolated small step meets */
  const double idle_mhz = sm_clock_mhz(s, pr);
  bdev_busy(&d, 50);
  const double busy_mhz = sm_clock_mhz(s, pr);
  snprintf(note, sizeof note, "SM clock %.0f MHz idle, %.0f MHz after 50 ms of copies", idle_mhz, busy_mhz);
  row("SM clock (clock64 / globaltimer, 20 us spin)", NAN, NAN, note);

  const size_t sizes[2] = {kL2Bytes, kHbmBytes};
  const char *names[2] = {"dependent load from L2 (1 MiB chase)", "dependent load from HBM (256 MiB chase)"};
  for (int i = 0; i < 2; ++i) {
    unsigned *buf = chase_buffer(sizes[i]);
    double nsl = 0, cyl = 0;
    bdev_busy(&d, 20);
    chase(s, pr, buf, sizes[i] == kHbmBytes, R, &nsl, &cyl);
    snprintf(note, sizeof note, "%.0f SM cycles per load", cyl);
    row(names[i], nsl / 1e3, NAN, note);
    BENCH_CUDA_CHECK(cudaFree(buf));
  }
  cudaFree(pr.cyc);
  cudaFree(pr.ns);
  cudaFree(pr.end);
  cudaFree(count);
  bdev_close(&d);
  return 0;
}
