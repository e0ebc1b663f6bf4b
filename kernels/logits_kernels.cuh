/* The separate kernels: thin __global__ wrappers over the bodies, one launch per step stage.
 *
 * Part of kernels/logits.cu's translation unit: included inside its anonymous namespace, in
 * order (each part uses the ones before it); logits.cu's opening comment describes the design. */

/* ---- The separate kernels: one launch per step, for any job on any device ---------------------- */

__global__ void __launch_bounds__(kThreads) k_init(const __grid_constant__ KP p) {
  pdl_enter();
  if (p.lbins && blockIdx.x == 0 && threadIdx.x == 0) *p.lseq = 0u; /* k_listcut_flat's count */
  const int64_t row = (int64_t)blockIdx.x * kWarps + warp_id();
  if (row < p.nrows) b_init(p, row);
}
__global__ void __launch_bounds__(kThreads) k_stats(const __grid_constant__ KP p) {
  pdl_enter();
  b_stats(p, grid_part(p));
}
template <bool GEDI, int MODE>
/* CM_RECWIN keeps the window pass's sums too: 2 blocks per SM. */
__global__ void __launch_bounds__(kThreads, GEDI ? 3 : MODE == CM_RECWIN ? 2 : 4)
    k_combine(const __grid_constant__ KP p) {
  pdl_enter();
  const Part w = grid_part(p);
  b_combine<GEDI, MODE>(p, w);
  /* Every block of the row, whatever its status. With CM_SUP too: at B = 256 a launch is about
   * 4.5 us of the step on an H200 (docs/benchmarks.md, 2026-11-28). The row index is computed again
   * here: w.row kept alive through b_combine's chunk loop cost 18 instructions a chunk there. */
  if ((MODE == CM_PLAIN || MODE == CM_SUP) && p.cfold) combine_done(p, (int64_t)blockIdx.x / p.gx);
}
__global__ void __launch_bounds__(kThreads) k_temp(const __grid_constant__ KP p) {
  pdl_enter();
  b_temp(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_cmerge(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kWarps + warp_id();
  if (row < p.nrows) b_cmerge(p, row, p.level);
}
/* 80 registers: 3 blocks per SM (with __launch_bounds__(256) alone ptxas held it to 64 and spilled). */
__global__ void __maxnreg__(80) k_hist(const __grid_constant__ KP p) {
  pdl_enter();
  b_hist(p, grid_part(p), p.kind, p.level);
}
__global__ void __launch_bounds__(kThreads) k_smerge(const __grid_constant__ KP p) {
  pdl_enter();
  b_smerge(p, blockIdx.x, p.kind, p.level);
}
__global__ void __launch_bounds__(kThreads) k_tie(const __grid_constant__ KP p) {
  pdl_enter();
  b_tie(p, grid_part(p), p.kind);
}
__global__ void __launch_bounds__(kThreads) k_tiecut(const __grid_constant__ KP p) {
  pdl_enter();
  b_tiecut(p, blockIdx.x, p.kind);
}
/* A row's list cut (p.level 1: the combine's lists, KP::lstream; 0: the window's), the general search
 * where the lists cannot decide (binned first: flat rows), and with KP::ltail the rest of the row's
 * step. (k_coop's own bins are block_binned's, so it goes straight to the radix search.) */
__device__ __forceinline__ void row_listcut(const KP &p, int64_t row) {
  const int lc = b_listcut<true>(p, row, p.kind);
  if (lc == LC_MISS) {
    recompute_y(p, row);
    if (!block_binned(p, row, p.kind)) block_search(p, row, p.kind);
  }
  /* A row its combine lists left (LC_SUP_MISS) ends its step later: in the window pass's list cut,
   * or (lbins) in the flat rows' pick (k_listcut_flat). */
  if (p.ltail && lc != LC_SUP_MISS) row_tail(p, row);
}
/* The window pass. LAST: then the last of a row's blocks to finish does row_listcut (one launch per cut
 * instead of two, for small batches, whose window pass is latency-bound: the list cut's registers
 * leave 2 blocks per SM instead of 3, which the pass alone gets in 80). */
template <bool LAST>
__global__ void __maxnreg__(LAST ? 128 : 80) k_window(const __grid_constant__ KP p) {
  pdl_enter();
  const Part w = grid_part(p);
  b_window(p, w, p.kind);
  if (LAST && window_done(p, w.row)) row_listcut(p, w.row);
}
__global__ void __launch_bounds__(kThreads) k_listcut(const __grid_constant__ KP p) {
  pdl_enter();
  row_listcut(p, blockIdx.x);
}
__global__ void __launch_bounds__(kThreads) k_final(const __grid_constant__ KP p) {
  pdl_enter();
  b_final(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_final_merge(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (row < p.nrows) b_final_merge(p, row);
}
__global__ void __launch_bounds__(kThreads) k_sample(const __grid_constant__ KP p) {
  pdl_enter();
  b_sample(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_logprobs(const __grid_constant__ KP p) {
  pdl_enter();
  b_logprobs(p, grid_part(p));
}
__global__ void __launch_bounds__(kThreads) k_outputs(const __grid_constant__ KP p) {
  pdl_enter();
  const int64_t row = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  if (row < p.nrows) b_outputs(p, row);
}
