/* The CPU emulator of the CUDA execution model, device side: force-included (-include) before a
 * kernels/ .cu file that is compiled as plain C++ (g++ -x c++) for the emulated CUDA tests (label
 * cuda-emu). It lets a machine without a GPU run the real kernels' logic: every thread of a block is
 * a fiber, __syncthreads and the warp intrinsics are scheduling points with their CUDA rules checked
 * (a barrier some threads never reach, a warp intrinsic whose mask names a lane that does not take
 * part, ... abort with the kernel's name), blocks run one after another, "device" memory is host
 * memory. A cooperative launch (cudaLaunchAttributeCooperative) has all its blocks at once and a grid
 * barrier, emu::grid_sync; its blocks interleave at that barrier, so state that must outlive it goes in
 * emu::block_local storage, not __shared__. It checks the kernels' control flow, indexing, barriers
 * and cross-block protocols, not their memory ordering, timing or speed. tests/emu/README.md says what
 * it does and does not cover.
 *
 * The runtime side (fibers, scheduling, the cudart calls the library makes) is tests/emu/cuda_emu.cc.
 * Device code sees __CUDA_ARCH__ undefined, so the kernels' shared headers take their host paths
 * (the CPU backend's arithmetic) and sm_90-only bodies (griddepcontrol) compile away. */
#ifndef LMF_TESTS_EMU_CUDA_EMU_H
#define LMF_TESTS_EMU_CUDA_EMU_H

#include <cuda_runtime.h> /* host types: dim3, uint2, float4, cudaLaunchConfig_t, ... */

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

/* cooperative_groups.h needs nvcc; only sm_90 bodies use it, and they compile away here. */
#define _COOPERATIVE_GROUPS_H_

#undef __global__
#undef __device__
#undef __host__
#undef __forceinline__
#undef __launch_bounds__
#undef __maxnreg__
#undef __grid_constant__
#undef __shared__
#undef __restrict__
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __maxnreg__(...)
#define __grid_constant__
/* One copy per kernel function: blocks run one after another on one OS thread, so a function-local
 * static is exactly the block's shared memory (zeroed once, not poisoned per block). Not across a
 * cooperative launch's grid_sync, where the other blocks run: emu::block_local is per block. */
#define __shared__ static
#define __restrict__ __restrict

namespace emu {

void syncthreads(const char *site);

/* A cooperative launch's grid may have at most this many blocks per multiprocessor (LMF_EMU_SMS), of
 * any size: cudaOccupancyMaxActiveBlocksPerMultiprocessor's answer. */
constexpr int kCoopBlocksPerSm = 4;
/* this_grid().sync(): blocks the thread until every thread of every block of the launch waits here
 * (at the same site). Only in a cooperative launch. */
void grid_sync(const char *site);
/* Storage private to the current block of the current launch, one per key (a distinct address per
 * variable): zeroed at its first use, the same pointer for every thread of the block for the whole
 * launch (across grid_sync), freed when the launch ends (a plain launch: when the block ends). */
void *block_local(const void *key, size_t bytes);

enum WarpOp {
  W_SYNC, W_SHFL_IDX, W_SHFL_UP, W_SHFL_DOWN, W_SHFL_XOR, W_BALLOT, W_ANY, W_ALL, W_MATCH_ANY,
  W_REDUCE_ADD, W_REDUCE_MAX_S, W_REDUCE_MAX_U /* __reduce_*_sync on 32-bit values */
};
/* Blocks the lane until every lane of `mask` has reached a warp intrinsic of the same kind and mask,
 * then returns this lane's result (a shuffled value, a ballot, ...). */
uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char *site);

/* Runs body on every thread of grid x block (blocks in order; cooperative: all at once, in phases
 * between grid_syncs); aborts with `name` on a CUDA rule broken. Returns the error a launch of this
 * shape would give (cudaErrorInvalidConfiguration, cudaErrorCooperativeLaunchTooLarge, ...). */
cudaError_t launch(const char *name, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream,
                   const std::function<void()> &body, bool cooperative = false);

/* Whether cfg asks for a cooperative launch (its other attributes are ignored). */
inline bool is_cooperative(const cudaLaunchConfig_t *cfg) {
  bool on = false;
  for (unsigned i = 0; i < cfg->numAttrs; ++i)
    if (cfg->attrs[i].id == cudaLaunchAttributeCooperative) on = cfg->attrs[i].val.cooperative != 0;
  return on;
}

template <class T>
uint64_t bits_of(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "warp intrinsics move <= 8 bytes");
  uint64_t u = 0;
  memcpy(&u, &v, sizeof v);
  return u;
}
template <class T>
T of_bits(uint64_t u) {
  T v;
  memcpy(&v, &u, sizeof v);
  return v;
}

/* cudaLaunchKernelEx with the kernel's parameters copied into the work, as a launch does (a captured
 * launch replays them). */
template <class... P, class... A>
cudaError_t launch_kernel_ex(const cudaLaunchConfig_t *cfg, void (*kernel)(P...), A &&...args) {
  std::tuple<std::decay_t<P>...> params(std::forward<A>(args)...);
  return launch("a kernel", cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes, cfg->stream,
                [kernel, params] { std::apply(kernel, params); }, is_cooperative(cfg));
}

}  // namespace emu

#define cudaLaunchKernelEx(cfg, kernel, ...) ::emu::launch_kernel_ex((cfg), (kernel), __VA_ARGS__)

/* The built-in coordinates: globals the scheduler sets before it resumes a fiber (one OS thread). */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

/* cuda_runtime.h declares these templates for nvcc only (its cudaOccupancyMaxActiveBlocksPerMultiprocessor
 * template is for every compiler). */
template <class T>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, T *f) {
  return cudaFuncGetAttributes(a, reinterpret_cast<const void *>(f));
}
template <class T>
cudaError_t cudaFuncSetAttribute(T *f, cudaFuncAttribute attr, int value) {
  return cudaFuncSetAttribute(reinterpret_cast<const void *>(f), attr, value);
}

#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define EMU_SITE __FILE__ ":" EMU_STR(__LINE__)

#define __syncthreads() ::emu::syncthreads(EMU_SITE)
#define __syncwarp(...) ((void)::emu::warp_op(::emu::W_SYNC, emu_mask_or_all(__VA_ARGS__), 0, 0, 32, EMU_SITE))
static inline unsigned emu_mask_or_all(unsigned m = 0xffffffffu) { return m; }

#define __shfl_sync(m, v, ...) emu_shfl(::emu::W_SHFL_IDX, (m), (v), EMU_SITE, __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) emu_shfl(::emu::W_SHFL_UP, (m), (v), EMU_SITE, __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) emu_shfl(::emu::W_SHFL_DOWN, (m), (v), EMU_SITE, __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) emu_shfl(::emu::W_SHFL_XOR, (m), (v), EMU_SITE, __VA_ARGS__)
template <class T>
static inline T emu_shfl(::emu::WarpOp op, unsigned mask, T v, const char *site, int arg, int width = 32) {
  return ::emu::of_bits<T>(::emu::warp_op(op, mask, ::emu::bits_of(v), arg, width, site));
}

/* __reduce_add_sync / __reduce_max_sync (sm_80+): int or unsigned, the max signed or not by the type. */
#define __reduce_add_sync(m, v) emu_reduce(::emu::W_REDUCE_ADD, (m), (v), EMU_SITE)
#define __reduce_max_sync(m, v) emu_reduce(::emu::W_REDUCE_MAX_U, (m), (v), EMU_SITE)
template <class T>
static inline T emu_reduce(::emu::WarpOp op, unsigned mask, T v, const char *site) {
  static_assert(sizeof(T) == 4 && std::is_integral<T>::value, "__reduce_*_sync take 32-bit integers");
  if (op == ::emu::W_REDUCE_MAX_U && std::is_signed<T>::value) op = ::emu::W_REDUCE_MAX_S;
  return (T)(uint32_t)::emu::warp_op(op, mask, (uint32_t)v, 0, 32, site);
}

#define __ballot_sync(m, p) ((unsigned)::emu::warp_op(::emu::W_BALLOT, (m), (p) ? 1u : 0u, 0, 32, EMU_SITE))
#define __any_sync(m, p) ((int)::emu::warp_op(::emu::W_ANY, (m), (p) ? 1u : 0u, 0, 32, EMU_SITE))
#define __all_sync(m, p) ((int)::emu::warp_op(::emu::W_ALL, (m), (p) ? 1u : 0u, 0, 32, EMU_SITE))
#define __match_any_sync(m, v) ((unsigned)::emu::warp_op(::emu::W_MATCH_ANY, (m), ::emu::bits_of(v), 0, 32, EMU_SITE))

/* Memory: one OS thread runs every fiber, so plain reads and writes are the atomics and the fences,
 * except under ThreadSanitizer (LMF_EMU_TSAN), which must see the atomics as atomic: there they are
 * relaxed compare-and-swap loops (ordering nothing, like a device's). */
/* atomicX(p, v): *p becomes NEW (of old and v, v converted to *p's type); returns old. */
#if defined(__SANITIZE_THREAD__)
#define EMU_ATOMIC(name, NEW)                                                                    \
  template <class T, class U>                                                                    \
  static inline T name(T *p, U v_) {                                                             \
    const T v = (T)v_;                                                                           \
    T old;                                                                                       \
    __atomic_load(p, &old, __ATOMIC_RELAXED);                                                    \
    for (;;) {                                                                                   \
      T nw = (T)(NEW);                                                                           \
      if (__atomic_compare_exchange(p, &old, &nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) \
        return old;                                                                              \
    }                                                                                            \
  }
#else
#define EMU_ATOMIC(name, NEW)                \
  template <class T, class U>                \
  static inline T name(T *p, U v_) {         \
    const T old = *p, v = (T)v_;             \
    *p = (T)(NEW);                           \
    return old;                              \
  }
#endif
EMU_ATOMIC(atomicAdd, old + v)
EMU_ATOMIC(atomicSub, old - v)
EMU_ATOMIC(atomicExch, v)
EMU_ATOMIC(atomicMax, v > old ? v : old)
EMU_ATOMIC(atomicMin, v < old ? v : old)
EMU_ATOMIC(atomicOr, old | v)
EMU_ATOMIC(atomicAnd, old & v)
#undef EMU_ATOMIC
template <class T, class U, class W>
static inline T atomicCAS(T *p, U cmp, W v) {
#if defined(__SANITIZE_THREAD__)
  T old = (T)cmp, nw = (T)v;
  __atomic_compare_exchange(p, &old, &nw, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED);
  return old;
#else
  const T old = *p;
  if (old == (T)cmp) *p = (T)v;
  return old;
#endif
}
static inline void __threadfence() {}
static inline void __threadfence_block() {}
template <class T>
static inline T __ldcg(const T *p) { return *p; }
template <class T>
static inline T __ldg(const T *p) { return *p; }
template <class T>
static inline T __ldcs(const T *p) { return *p; }
template <class T>
static inline void __stcg(T *p, T v) { *p = v; }
template <class T>
static inline void __stcs(T *p, T v) { *p = v; }

static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
static inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
static inline float __uint_as_float(unsigned u) { return ::emu::of_bits<float>(u); }
static inline unsigned __float_as_uint(float f) { return (unsigned)::emu::bits_of(f); }
static inline float __int_as_float(int i) { return ::emu::of_bits<float>((uint32_t)i); }
static inline int __float_as_int(float f) { return (int)(uint32_t)::emu::bits_of(f); }
static inline double __ull2double_rn(unsigned long long u) { return (double)u; } /* round to nearest */
static inline double __longlong_as_double(long long i) { return ::emu::of_bits<double>((uint64_t)i); }
static inline long long __double_as_longlong(double d) { return (long long)::emu::bits_of(d); }
static inline unsigned long long __double2ull_ru(double d) {
  const double c = ceil(d);
  return c <= 0.0 ? 0ull : c >= 18446744073709551616.0 ? ~0ull : (unsigned long long)c;
}

/* Device code's integer min / max overloads. */
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
static inline float min(float a, float b) { return fminf(a, b); }
static inline float max(float a, float b) { return fmaxf(a, b); }

#endif
