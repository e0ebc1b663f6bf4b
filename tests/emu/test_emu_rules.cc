// The CPU emulator of CUDA itself (label cuda-emu): its intrinsics give CUDA's results, and a kernel
// that breaks CUDA's rules (a barrier not reached by the whole block, a warp intrinsic with a bad mask,
// a deadlock) aborts with a message instead of passing. Compiled like the emulated kernels: as C++
// with cuda_emu.h force-included, so the kernels below are written exactly as for nvcc.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <vector>

namespace {

/* coop: a cooperative launch (with programmatic stream serialization too, which the emulator ignores). */
cudaError_t run(void (*k)(int *, int), unsigned blocks, unsigned threads, int *out, int arg, bool coop = false) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(blocks);
  cfg.blockDim = dim3(threads);
  cudaLaunchAttribute attrs[2] = {};
  attrs[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attrs[0].val.programmaticStreamSerializationAllowed = 1;
  attrs[1].id = cudaLaunchAttributeCooperative;
  attrs[1].val.cooperative = 1;
  cfg.attrs = attrs;
  cfg.numAttrs = coop ? 2 : 0;
  return cudaLaunchKernelEx(&cfg, k, out, arg);
}

std::vector<int> device_run(void (*k)(int *, int), unsigned blocks, unsigned threads, size_t n, int arg = 0,
                            bool coop = false) {
  int *d = nullptr;
  EXPECT_EQ(cudaMalloc(reinterpret_cast<void **>(&d), n * sizeof(int)), cudaSuccess);
  EXPECT_EQ(cudaMemset(d, 0, n * sizeof(int)), cudaSuccess);
  EXPECT_EQ(run(k, blocks, threads, d, arg, coop), cudaSuccess);
  std::vector<int> h(n);
  EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(d);
  return h;
}

/* ---- Kernels, written as for nvcc ---------------------------------------------------------------- */

__global__ void k_warp_ops(int *out, int) {
  const int lane = threadIdx.x & 31, t = threadIdx.x;
  int s = lane + 1;
  for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  int scan = lane + 1;
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, scan, o);
    if (lane >= o) scan += v;
  }
  const int bcast = __shfl_sync(0xffffffffu, lane * 10, 7);
  const int seg = __shfl_sync(0xffffffffu, lane, 2, 8); /* lane 2 of each group of 8 */
  const int down = __shfl_down_sync(0xffffffffu, lane, 3);
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  const int any = __any_sync(0xffffffffu, lane == 31), none = __any_sync(0xffffffffu, lane > 99);
  const unsigned match = __match_any_sync(0xffffffffu, lane / 4);
  out[t * 8 + 0] = s;
  out[t * 8 + 1] = scan;
  out[t * 8 + 2] = bcast;
  out[t * 8 + 3] = seg;
  out[t * 8 + 4] = down;
  out[t * 8 + 5] = (int)ballot;
  out[t * 8 + 6] = any * 2 + none;
  out[t * 8 + 7] = (int)match;
}

/* __reduce_*_sync: a sum, a signed and an unsigned max over the warp, and a sum over half a warp. */
__global__ void k_warp_reduce(int *out, int) {
  const int lane = threadIdx.x & 31, t = threadIdx.x;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[t * 4 + 0] = (int)__reduce_add_sync(0xffffffffu, (unsigned)(lane + 1));
  out[t * 4 + 1] = __reduce_max_sync(0xffffffffu, lane == 3 ? 2 : lane - 40); /* signed: 2 */
  out[t * 4 + 2] = (int)__reduce_max_sync(0xffffffffu, lane == 5 ? 0xfffffff0u : (unsigned)lane);
  out[t * 4 + 3] = __reduce_add_sync(half, lane);
}

/* The block's sum of v (warp shuffles, then the warps' sums from part[]), in thread 0; 0 elsewhere. */
__device__ int block_sum_at_0(int v, int *part) {
  for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
  __syncthreads();
  int s = 0;
  if (threadIdx.x == 0)
    for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
  return s;
}

__global__ void k_block_sum(int *out, int) {
  __shared__ int part[8];
  const int s = block_sum_at_0((int)(blockIdx.x * 1000 + threadIdx.x), part);
  if (threadIdx.x == 0) out[blockIdx.x] = s;
  __syncthreads(); /* part is reused by the next block only after every warp has read it */
}

/* The last block to finish writes how many blocks it saw finish before it (a cross-block protocol). */
__global__ void k_last_block(int *out, int) {
  __shared__ bool last;
  if (threadIdx.x == 0) {
    __threadfence();
    last = atomicAdd(reinterpret_cast<unsigned *>(out), 1u) == gridDim.x - 1;
  }
  __syncthreads();
  if (last && threadIdx.x == 0) out[1] = (int)blockIdx.x + 1;
}

/* A race: thread 0 writes `flag`, the others read it with no barrier between. */
__global__ void k_missing_barrier(int *out, int) {
  __shared__ int flag;
  if (threadIdx.x == 0) flag = 7;
  out[threadIdx.x] = flag;
  __syncthreads();
  if (threadIdx.x == 0) flag = 0;
}

__global__ void k_half_barrier(int *out, int) {
  if (threadIdx.x < 32) __syncthreads(); /* not reached by the whole block */
  out[threadIdx.x] = 1;
}

__global__ void k_two_barriers(int *out, int) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void k_early_exit(int *out, int) {
  if (threadIdx.x >= 32) return;
  __syncthreads(); /* the rest of the block has exited */
  out[threadIdx.x] = 1;
}

__global__ void k_half_warp_shuffle(int *out, int) {
  int v = (int)threadIdx.x;
  if ((threadIdx.x & 31) < 16) v = __shfl_xor_sync(0xffffffffu, v, 1); /* the mask names lanes 16..31 */
  out[threadIdx.x] = v;
}

__global__ void k_mask_leaves_caller(int *out, int) {
  out[threadIdx.x] = __shfl_sync(0x0000ffffu, (int)threadIdx.x, 0); /* lanes 16..31 call it too */
}

__global__ void k_partial_masks(int *out, int) {
  const int lane = threadIdx.x & 31;
  const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
  out[threadIdx.x] = __shfl_xor_sync(half, lane, 1) + (int)__ballot_sync(half, lane & 1);
}

/* ---- Cooperative kernels (grid_sync, block_local: what this_grid().sync() and __shared__ state that
 * outlives it become in the emulator) ----------------------------------------------------------------- */

/* Each block writes its values, the grid syncs, then each thread sums every block's value of its
 * neighbour thread: out[gridDim.x * 64 ..] holds the sums (blockDim.x == 64). */
__global__ void k_coop_exchange(int *out, int) {
  const int t = (int)threadIdx.x, b = (int)blockIdx.x, nb = (int)gridDim.x;
  out[b * 64 + t] = b * 1000 + t;
  ::emu::grid_sync(EMU_SITE);
  int s = 0;
  for (int k = 0; k < nb; ++k) s += out[k * 64 + (t + 1) % 64];
  out[nb * 64 + b * 64 + t] = s;
}

/* block_local: zeroed, one per block, kept across grid_sync while the other blocks run. out[b * 64 + t]:
 * what thread t found in its slot first (0), then its neighbour's slot after the grid sync. */
__global__ void k_block_local(int *out, int) {
  static int key;
  int *mine = static_cast<int *>(::emu::block_local(&key, 64 * sizeof(int)));
  const int t = (int)threadIdx.x, b = (int)blockIdx.x, nb = (int)gridDim.x;
  out[b * 64 + t] = mine[t];
  mine[t] = b * 100 + t;
  ::emu::grid_sync(EMU_SITE);
  out[b * 64 + t] += mine[(t + 1) % 64];
  ::emu::grid_sync(EMU_SITE);
  out[nb * 64 + b * 64 + t] = static_cast<int *>(::emu::block_local(&key, 64 * sizeof(int))) == mine;
}

/* Rounds of: a block sum (shuffles, __syncthreads) of the other blocks' last results, then grid_sync.
 * out[0 .. 2 * gridDim.x): the results, double-buffered; out[2 * gridDim.x + b]: block b's running
 * total, kept in block_local across the grid syncs. */
__global__ void k_coop_rounds(int *out, int rounds) {
  static int key_part, key_total;
  int *part = static_cast<int *>(::emu::block_local(&key_part, 32 * sizeof(int)));
  int *total = static_cast<int *>(::emu::block_local(&key_total, sizeof(int)));
  const int nb = (int)gridDim.x, b = (int)blockIdx.x;
  for (int r = 0; r < rounds; ++r) {
    const int *in = out + (r & 1) * nb;
    int s = block_sum_at_0(in[(b + 1 + (int)threadIdx.x) % nb] + (int)threadIdx.x, part);
    if (threadIdx.x == 0) {
      s %= 100003;
      out[((r + 1) & 1) * nb + b] = s;
      *total += s;
    }
    ::emu::grid_sync(EMU_SITE);
  }
  if (threadIdx.x == 0) out[2 * nb + b] = *total;
}

std::vector<int> coop_rounds_on_host(int nb, int nt, int rounds) {
  std::vector<int> buf(2 * (size_t)nb + nb, 0);
  for (int r = 0; r < rounds; ++r)
    for (int b = 0; b < nb; ++b) {
      int s = 0;
      for (int t = 0; t < nt; ++t) s += buf[(size_t)(r & 1) * nb + (b + 1 + t) % nb] + t;
      s %= 100003;
      buf[(size_t)((r + 1) & 1) * nb + b] = s;
      buf[2 * (size_t)nb + b] += s;
    }
  return buf;
}

__global__ void k_block_exits_before_grid_sync(int *out, int) {
  if (blockIdx.x == 2) return;
  ::emu::grid_sync(EMU_SITE);
  out[blockIdx.x] = 1;
}

__global__ void k_threads_exit_before_grid_sync(int *out, int) {
  if (threadIdx.x >= 32) return;
  ::emu::grid_sync(EMU_SITE);
  out[blockIdx.x] = 1;
}

__global__ void k_two_grid_syncs(int *out, int) {
  if (blockIdx.x == 1) {
    ::emu::grid_sync(EMU_SITE);
  } else {
    ::emu::grid_sync(EMU_SITE);
  }
  out[blockIdx.x] = 1;
}

__global__ void k_grid_sync_and_barrier(int *out, int) {
  if (threadIdx.x < 32) {
    __syncthreads();
  } else {
    ::emu::grid_sync(EMU_SITE);
  }
  out[threadIdx.x] = 1;
}

/* ---- Cases ---------------------------------------------------------------------------------------- */

TEST(CudaEmu, WarpIntrinsicsGiveCudasResults) {
  const std::vector<int> h = device_run(k_warp_ops, 1, 64, 64 * 8);
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31;
    const int *o = &h[(size_t)t * 8];
    EXPECT_EQ(o[0], 528) << t;                                  /* 1 + .. + 32 */
    EXPECT_EQ(o[1], (lane + 1) * (lane + 2) / 2) << t;          /* inclusive scan */
    EXPECT_EQ(o[2], 70) << t;
    EXPECT_EQ(o[3], (lane & ~7) + 2) << t;
    EXPECT_EQ(o[4], lane + 3 < 32 ? lane + 3 : lane) << t;      /* past the end: its own value */
    EXPECT_EQ((unsigned)o[5], 0x49249249u) << t;                /* lanes 0, 3, 6, .. 30 */
    EXPECT_EQ(o[6], 2) << t;
    EXPECT_EQ((unsigned)o[7], 0xfu << (lane & ~3)) << t;
  }
}

TEST(CudaEmu, WarpReductionsGiveCudasResults) {
  const std::vector<int> h = device_run(k_warp_reduce, 1, 64, 64 * 4);
  for (int t = 0; t < 64; ++t) {
    const int lane = t & 31;
    const int *o = &h[(size_t)t * 4];
    EXPECT_EQ(o[0], 528) << t;
    EXPECT_EQ(o[1], 2) << t;
    EXPECT_EQ((unsigned)o[2], 0xfffffff0u) << t;
    EXPECT_EQ(o[3], lane < 16 ? 120 : 376) << t; /* 0 + .. + 15, 16 + .. + 31 */
  }
}

TEST(CudaEmu, PartialMasksAreSeparateGroups) {
  const std::vector<int> h = device_run(k_partial_masks, 1, 32, 32);
  for (int lane = 0; lane < 32; ++lane) {
    const unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    EXPECT_EQ(h[lane], (lane ^ 1) + (int)(0xaaaaaaaau & half)) << lane;
  }
}

TEST(CudaEmu, SharedMemoryAndBarriersPerBlock) {
  const std::vector<int> h = device_run(k_block_sum, 3, 256, 3);
  for (int b = 0; b < 3; ++b) EXPECT_EQ(h[b], 256 * 1000 * b + 255 * 256 / 2) << b;
}

TEST(CudaEmu, LastBlockProtocolInEitherOrder) {
  const std::vector<int> fwd = device_run(k_last_block, 5, 64, 2);
  EXPECT_EQ(fwd[0], 5);
  EXPECT_EQ(fwd[1], 5); /* block 4 finishes last */
  setenv("LMF_EMU_REVERSE", "1", 1);
  const std::vector<int> rev = device_run(k_last_block, 5, 64, 2);
  unsetenv("LMF_EMU_REVERSE");
  EXPECT_EQ(rev[0], 5);
  EXPECT_EQ(rev[1], 1); /* block 0 finishes last */
}

TEST(CudaEmu, ReverseOrderFlipsAMissingBarrier) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a planted race: under ThreadSanitizer, CudaEmuTsanDeathTest.MissingBarrierIsARace";
#endif
  const std::vector<int> fwd = device_run(k_missing_barrier, 1, 64, 64);
  setenv("LMF_EMU_REVERSE", "1", 1);
  const std::vector<int> rev = device_run(k_missing_barrier, 1, 64, 64);
  unsetenv("LMF_EMU_REVERSE");
  EXPECT_EQ(fwd[63], 7); /* thread 0 ran first */
  EXPECT_EQ(rev[63], 0); /* thread 63 ran first: the race shows as a different result */
  EXPECT_EQ(rev[0], 7);
}

TEST(CudaEmu, BadLaunchConfigurationFails) {
  int *d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&d), 64), cudaSuccess);
  EXPECT_EQ(run(k_block_sum, 1, 2048, d, 0), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaErrorInvalidConfiguration);
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  cudaFree(d);
}

TEST(CudaEmu, CaptureReplaysAndRefusesUnsafeCalls) {
  int *d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&d), 3 * sizeof(int)), cudaSuccess);
  cudaStream_t s = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaMemset(d, 0, 3 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(3);
  cfg.blockDim = dim3(64);
  cfg.stream = s;
  ASSERT_EQ(cudaMemsetAsync(d, 0xff, 3 * sizeof(int), s), cudaSuccess);
  ASSERT_EQ(cudaLaunchKernelEx(&cfg, k_block_sum, d, 0), cudaSuccess);
  cudaGraph_t g = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(s, &g), cudaSuccess);
  int h[3] = {-1, -1, -1};
  ASSERT_EQ(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h[0], 0); /* the memset and the kernel were captured, not run */
  cudaGraphExec_t ge = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&ge, g, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(ge, s), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h[2], 64 * 1000 * 2 + 63 * 64 / 2);
  /* A synchronous copy during a global capture breaks it. */
  ASSERT_EQ(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost), cudaErrorStreamCaptureUnsupported);
  cudaGraph_t broken = nullptr;
  EXPECT_EQ(cudaStreamEndCapture(s, &broken), cudaErrorStreamCaptureInvalidated);
  EXPECT_EQ(broken, nullptr);
  (void)cudaGetLastError();
  cudaGraphExecDestroy(ge);
  cudaGraphDestroy(g);
  cudaStreamDestroy(s);
  cudaFree(d);
}

TEST(CudaEmu, CopiesOutsideAnAllocationFail) {
  int *d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&d), 16), cudaSuccess);
  int h[8] = {0};
  EXPECT_EQ(cudaMemcpy(h, d, 32, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d + 2, h, 16, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(d, h, 16, cudaMemcpyHostToDevice), cudaSuccess);
  (void)cudaGetLastError();
  cudaFree(d);
}

TEST(CudaEmu, GridSyncSeesEveryBlocksWritesInEitherOrder) {
  for (const char *rev : {"0", "1"}) {
    setenv("LMF_EMU_REVERSE", rev, 1);
    const std::vector<int> h = device_run(k_coop_exchange, 6, 64, 2 * 6 * 64, 0, true);
    for (int b = 0; b < 6; ++b)
      for (int t = 0; t < 64; ++t) EXPECT_EQ(h[6 * 64 + b * 64 + t], 15000 + 6 * ((t + 1) % 64)) << rev << b << t;
  }
  unsetenv("LMF_EMU_REVERSE");
}

TEST(CudaEmu, BlockLocalIsPerBlockAndOutlivesGridSync) {
  for (const char *rev : {"0", "1"}) {
    setenv("LMF_EMU_REVERSE", rev, 1);
    const std::vector<int> h = device_run(k_block_local, 5, 64, 2 * 5 * 64, 0, true);
    for (int b = 0; b < 5; ++b)
      for (int t = 0; t < 64; ++t) {
        EXPECT_EQ(h[b * 64 + t], b * 100 + (t + 1) % 64) << rev << b << t; /* zeroed, then its own block's */
        EXPECT_EQ(h[5 * 64 + b * 64 + t], 1) << rev << b << t;             /* the same pointer each call */
      }
  }
  unsetenv("LMF_EMU_REVERSE");
  /* A plain launch has it per block too (blocks one after another). */
  const std::vector<int> plain = device_run(k_block_sum, 2, 64, 2);
  EXPECT_EQ(plain[1], 64 * 1000 + 63 * 64 / 2);
}

TEST(CudaEmu, BarriersAndShufflesBetweenGridSyncs) {
  const std::vector<int> want = coop_rounds_on_host(6, 128, 5);
  for (const char *rev : {"0", "1"}) {
    setenv("LMF_EMU_REVERSE", rev, 1);
    const std::vector<int> h = device_run(k_coop_rounds, 6, 128, want.size(), 5, true);
    EXPECT_EQ(h, want) << rev;
  }
  unsetenv("LMF_EMU_REVERSE");
}

TEST(CudaEmu, CooperativeGridLimitAndOccupancy) {
  int sms = 0, coop = 0, per_sm = 0;
  ASSERT_EQ(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, 0), cudaSuccess);
  EXPECT_EQ(coop, 1);
  ASSERT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_coop_exchange, 64, 0), cudaSuccess);
  EXPECT_EQ(per_sm, 4);
  EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_coop_exchange, 0, 0), cudaErrorInvalidValue);
  EXPECT_EQ(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_coop_exchange, 2048, 0), cudaErrorInvalidValue);
  (void)cudaGetLastError();
  const unsigned most = (unsigned)(sms * 4);
  int *d = nullptr;
  ASSERT_EQ(cudaMalloc(reinterpret_cast<void **>(&d), 2 * (most + 1) * 64 * sizeof(int)), cudaSuccess);
  ASSERT_EQ(cudaMemset(d, 0, 2 * (most + 1) * 64 * sizeof(int)), cudaSuccess);
  EXPECT_EQ(run(k_coop_exchange, most + 1, 64, d, 0, true), cudaErrorCooperativeLaunchTooLarge);
  EXPECT_EQ(cudaGetLastError(), cudaErrorCooperativeLaunchTooLarge);
  int h = -1;
  ASSERT_EQ(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(h, 0); /* nothing ran */
  EXPECT_EQ(run(k_block_sum, most + 1, 64, d, 0), cudaSuccess) << "only a cooperative grid is bounded";
  std::vector<int> all(2 * (size_t)most * 64);
  EXPECT_EQ(run(k_coop_exchange, most, 64, d, 0, true), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(all.data(), d, all.size() * sizeof(int), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_EQ(all[most * 64 + 5], (int)(1000 * most * (most - 1) / 2 + most * 6));
  cudaFree(d);
}

using CudaEmuDeathTest = ::testing::Test;

#if defined(__SANITIZE_THREAD__)
/* LMF_EMU_TSAN: a race is reported and ends the program (so every other case here is also race-free). */
extern "C" const char *__tsan_default_options() { return "halt_on_error=1"; }

/* The missing barrier of ReverseOrderFlipsAMissingBarrier, in either order: thread 0's write of flag
 * and the other threads' reads have no barrier between them. */
TEST(CudaEmuTsanDeathTest, MissingBarrierIsARace) {
  EXPECT_DEATH(device_run(k_missing_barrier, 1, 64, 64), "data race");
  setenv("LMF_EMU_REVERSE", "1", 1);
  EXPECT_DEATH(device_run(k_missing_barrier, 1, 64, 64), "data race");
  unsetenv("LMF_EMU_REVERSE");
}

/* Two warps' writes to one shared word, ordered only by warp intrinsics (which order a warp's own
 * lanes, not another warp's). */
__global__ void k_cross_warp_race(int *out, int) {
  __shared__ int word;
  if ((threadIdx.x & 31) == 0) word = (int)threadIdx.x;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
  __syncthreads();
  if (threadIdx.x == 0) out[0] = word;
}

TEST(CudaEmuTsanDeathTest, WarpIntrinsicsDoNotOrderOtherWarps) {
  EXPECT_DEATH(device_run(k_cross_warp_race, 1, 64, 64), "data race");
}

/* A block's shared memory is its own: the next block's writes to the same word are no race. */
TEST(CudaEmuTsan, BlocksAndBarriersOrderAccesses) {
  const std::vector<int> h = device_run(k_block_sum, 3, 256, 3);
  EXPECT_EQ(h[2], 256 * 1000 * 2 + 255 * 256 / 2);
}
#endif

TEST(CudaEmuDeathTest, BarrierNotReachedByTheBlock) {
  EXPECT_DEATH(device_run(k_half_barrier, 1, 64, 64), "some threads of the block exited");
}

TEST(CudaEmuDeathTest, BarriersAtDifferentLines) {
  EXPECT_DEATH(device_run(k_two_barriers, 1, 64, 64), "different __syncthreads");
}

TEST(CudaEmuDeathTest, BarrierAfterPartOfTheBlockExited) {
  EXPECT_DEATH(device_run(k_early_exit, 1, 64, 64), "some threads of the block exited");
}

TEST(CudaEmuDeathTest, ShuffleWithAbsentLanes) {
  EXPECT_DEATH(device_run(k_half_warp_shuffle, 1, 32, 32), "exited lane|deadlock");
}

TEST(CudaEmuDeathTest, MaskLeavingOutTheCaller) {
  EXPECT_DEATH(device_run(k_mask_leaves_caller, 1, 32, 32), "mask leaves it out");
}

TEST(CudaEmuDeathTest, GridSyncInALaunchThatIsNotCooperative) {
  EXPECT_DEATH(device_run(k_coop_exchange, 2, 64, 4 * 64), "grid_sync in a launch that is not cooperative");
}

TEST(CudaEmuDeathTest, BlockExitsWhileOthersWaitAtGridSync) {
  EXPECT_DEATH(device_run(k_block_exits_before_grid_sync, 4, 64, 4, 0, true), "after some threads of the grid exited");
}

TEST(CudaEmuDeathTest, ThreadsExitWhileTheirBlockWaitsAtGridSync) {
  EXPECT_DEATH(device_run(k_threads_exit_before_grid_sync, 3, 64, 3, 0, true), "after some threads of the grid exited");
}

TEST(CudaEmuDeathTest, GridSyncsAtDifferentLines) {
  EXPECT_DEATH(device_run(k_two_grid_syncs, 3, 64, 3, 0, true), "different grid_syncs");
}

TEST(CudaEmuDeathTest, BlockSplitBetweenBarrierAndGridSync) {
  EXPECT_DEATH(device_run(k_grid_sync_and_barrier, 2, 64, 64, 0, true), "wait at grid_sync, others at __syncthreads");
}

#if defined(__SANITIZE_ADDRESS__)
__global__ void k_write_past(int *out, int n) { out[n - 16 + (int)threadIdx.x] = 1; }

TEST(CudaEmuDeathTest, OutOfBoundsWriteUnderAsan) {
  EXPECT_DEATH(device_run(k_write_past, 1, 32, 16, 16), "heap-buffer-overflow");
}
#endif

}  // namespace
