/* MeZO passes on CUDA (host/mezo_backend.h): one persistent launch per pass over the plan's chunk table.
 * All element arithmetic, z and rounding come from kernels/common, so results match the CPU backend
 * bit for bit (this file must be compiled with --fmad=false). */
#include <cuda_runtime.h>

#include <atomic>

#include "lmfuse/mezo.h"
#include "mezo_backend.h"

#include "cuda_check.cuh"

namespace {

constexpr int kBlock = 256;
/* 16-byte vectors each thread loads before the first use (memory-level parallelism vs registers). */
#ifndef LMF_MEZO_UNROLL_F32
#define LMF_MEZO_UNROLL_F32 2
#endif
#ifndef LMF_MEZO_UNROLL_16
#define LMF_MEZO_UNROLL_16 1
#endif
#ifndef LMF_MEZO_PASS_TILE
#define LMF_MEZO_PASS_TILE 16384
#endif
/* Resident blocks per SM the register allocation must allow: Rademacher passes are memory-bound
 * (occupancy hides latency), Gaussian ones arithmetic-bound (registers avoid spills). */
#ifndef LMF_MEZO_MIN_BLOCKS_GAUSS
#define LMF_MEZO_MIN_BLOCKS_GAUSS 3
#endif
#ifndef LMF_MEZO_MIN_BLOCKS_RAD
#define LMF_MEZO_MIN_BLOCKS_RAD 4
#endif
constexpr int kMaxSplitLog = 4; /* a chunk splits into at most 16 work items (4096 elements) */
constexpr int kMaxCachedDevices = 64;
static_assert(sizeof(((lmf_mezo_multi_pass *)0)->seeds) == LMF_MEZO_MAX_SEEDS * sizeof(uint64_t) &&
                  LMF_MEZO_MAX_SEEDS <= kBlock,
              "one thread loads each seed of a multi pass");

/* ---- Element helpers --------------------------------------------------------------------------- */

template <int DT>
__device__ __forceinline__ float half_to_f32(uint32_t h) {
  return DT == LMF_DTYPE_F16 ? lmf_f16_to_f32((uint16_t)h) : lmf_bf16_to_f32((uint16_t)h);
}

/* stochastic == 0 ignores r and rounds to nearest even. */
template <int DT>
__device__ __forceinline__ uint32_t f32_to_half(float x, int stochastic, uint32_t r) {
  return DT == LMF_DTYPE_F16 ? lmf_f32_to_f16_impl(x, stochastic, r)
                             : lmf_f32_to_bf16_impl(x, stochastic, r);
}

__device__ __forceinline__ uint32_t word_of(const lmf_u32x4 &w, int q) {
  return q == 0 ? w.x : q == 1 ? w.y : q == 2 ? w.z : w.w;
}

/* Rounds one group's four values to 16 bits; the stochastic bits are keyed by the group index. */
template <int DT, class Op>
__device__ __forceinline__ void round_group(const Op &op, const float x[4], uint32_t h[4], uint64_t g,
                                            uint32_t uid) {
  if (op.stochastic) {
    const lmf_u32x4 r = lmf_z_words(op.round_seed, uid, op.round_domain, g);
#pragma unroll
    for (int q = 0; q < 4; ++q) h[q] = f32_to_half<DT>(x[q], 1, word_of(r, q));
  } else {
#pragma unroll
    for (int q = 0; q < 4; ++q) h[q] = f32_to_half<DT>(x[q], 0, 0u);
  }
}

__device__ __forceinline__ float4 arr_to_f4(const float x[4]) { return make_float4(x[0], x[1], x[2], x[3]); }

template <int DT>
__device__ __forceinline__ void unpack8(const uint4 v, float a[4], float b[4]) {
  a[0] = half_to_f32<DT>(v.x & 0xffffu);
  a[1] = half_to_f32<DT>(v.x >> 16);
  a[2] = half_to_f32<DT>(v.y & 0xffffu);
  a[3] = half_to_f32<DT>(v.y >> 16);
  b[0] = half_to_f32<DT>(v.z & 0xffffu);
  b[1] = half_to_f32<DT>(v.z >> 16);
  b[2] = half_to_f32<DT>(v.w & 0xffffu);
  b[3] = half_to_f32<DT>(v.w >> 16);
}

__device__ __forceinline__ uint4 pack8(const uint32_t a[4], const uint32_t b[4]) {
  return make_uint4(a[0] | (a[1] << 16), a[2] | (a[3] << 16), b[0] | (b[1] << 16), b[2] | (b[3] << 16));
}

/* ---- Sources of z ------------------------------------------------------------------------------ */

/* Rademacher z comes 128 elements per Philox output (one bit each). A block fills the words of one tile
 * of elements into shared memory, then every thread reads its elements' bits from there. Passes use
 * big tiles (few barriers); multi passes small ones (up to 64 seeds' words). */
static_assert(LMF_RADEMACHER_GROUP == 128, "the quad -> word arithmetic assumes 32 quads per Philox output");
/* A tile at any offset spans at most tile/128 + 1 groups of 4 words. */
constexpr int tile_words(int tile) { return 4 * (tile / 128 + 1); }
constexpr int kPassTile = LMF_MEZO_PASS_TILE;
constexpr int kPassTileWords = tile_words(kPassTile);
constexpr int kMultiTile = 4096;
constexpr int kMultiTileWords = tile_words(kMultiTile);

/* z of the four elements 4g .. 4g+3 (g: global quad index). */
template <int DIST>
struct ZSrc;

template <>
struct ZSrc<0> {
  uint64_t seed;
  __device__ __forceinline__ void quad(uint64_t g, uint32_t uid, float z[4]) const {
    lmf_gauss_group(seed, uid, g, z);
  }
};

template <>
struct ZSrc<1> {
  const uint32_t *words; /* shared memory: words[k] is word (wbase + k) of this seed's stream */
  int64_t wbase;
  __device__ __forceinline__ void quad(uint64_t g, uint32_t, float z[4]) const {
    const uint32_t w = words[(int)((int64_t)(g >> 3) - wbase)];
    const uint32_t sh = ((uint32_t)g & 7u) << 2;
#pragma unroll
    for (int q = 0; q < 4; ++q) z[q] = lmf_rademacher_bit(w, sh + (uint32_t)q);
  }
};

/* Rademacher Philox groups (128 elements each) covering local elements [tb, te) of t. */
__device__ __forceinline__ int64_t tile_group0(const lmf_mezo_tdesc &t, int64_t tb) {
  return (t.goff + tb) >> 7;
}
__device__ __forceinline__ int tile_ngroups(const lmf_mezo_tdesc &t, int64_t tb, int64_t te) {
  return (int)(((t.goff + te - 1) >> 7) - ((t.goff + tb) >> 7) + 1);
}

__device__ __forceinline__ void fill_words(uint32_t *words, int k, uint64_t seed, uint32_t uid,
                                           uint64_t group) {
  const lmf_u32x4 r = lmf_z_words(seed, uid, LMF_DOMAIN_Z, group);
  reinterpret_cast<uint4 *>(words)[k] = make_uint4(r.x, r.y, r.z, r.w);
}

/* ---- The per-quad operations ------------------------------------------------------------------- */

/* One lmf_mezo_pass. DIST is compile-time so the Rademacher kernels carry no Box-Muller code;
 * NEED_B = the pass uses z_b at all. Semantics: host/cpu/mezo_cpu.c pass_chunk. */
template <int DIST, bool NEED_B>
struct PassOp {
  static constexpr bool kTiled = DIST == 1;
  static constexpr int kTile = kPassTile;
  static_assert(kTile % 8 == 0, "tiles keep 16-byte vector alignment");
  ZSrc<DIST> za, zb;
  uint64_t seed_a, seed_b, round_seed;
  uint32_t *words_a, *words_b;
  float add_a, add_b, m_off, decay, step;
  uint32_t flags, round_domain;
  int need_za, need_zb, master_za, master_zb, write_master, stochastic;

  /* Rademacher: the words of z_a / z_b for local elements [tb, te) of t, as far as t needs them. */
  __device__ __forceinline__ void prepare(const lmf_mezo_tdesc &t, int64_t tb, int64_t te) {
    if constexpr (DIST == 1) {
      const bool m = t.master != nullptr;
      const int na = m ? master_za : need_za;
      const int nb = NEED_B && (m ? master_zb : need_zb);
      const int64_t g0 = tile_group0(t, tb);
      const int ng = tile_ngroups(t, tb, te);
      __syncthreads(); /* the previous tile's readers are done */
      for (int k = (int)threadIdx.x; k < 2 * ng; k += kBlock) {
        const bool is_b = k >= ng;
        const int gi = is_b ? k - ng : k;
        if (is_b ? nb : na)
          fill_words(is_b ? words_b : words_a, gi, is_b ? seed_b : seed_a, t.uid, (uint64_t)(g0 + gi));
      }
      __syncthreads();
      za.wbase = g0 * 4;
      zb.wbase = g0 * 4;
    } else {
      (void)t, (void)tb, (void)te;
    }
  }

  /* x = lmf_mezo_elem(...) for a quad, with the flags a compile-time constant. */
  template <uint32_t F>
  __device__ __forceinline__ void elem4(float x[4], const float a[4], const float b[4], int dec) const {
#pragma unroll
    for (int q = 0; q < 4; ++q) x[q] = lmf_mezo_elem(x[q], a[q], b[q], F, add_a, add_b, decay, step, dec);
  }

  __device__ __forceinline__ void nonmaster(float x[4], uint64_t g, uint32_t uid, int dec) const {
    float a[4] = {0.0f, 0.0f, 0.0f, 0.0f}, b[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (need_za) za.quad(g, uid, a);
    if (NEED_B && need_zb) zb.quad(g, uid, b);
    /* One uniform branch per quad rather than one per flag test per element. */
    constexpr uint32_t A = LMF_PASS_ADD_A, U = LMF_PASS_UPDATE, B = LMF_PASS_ADD_B;
    switch (flags & (A | U | (NEED_B ? B : 0u))) {
      case A: elem4<A>(x, a, b, dec); break;
      case U: elem4<U>(x, a, b, dec); break;
      case A | U: elem4<A | U>(x, a, b, dec); break;
      default:
        if constexpr (NEED_B) {
          switch (flags & (A | U | B)) {
            case B: elem4<B>(x, a, b, dec); break;
            case A | B: elem4<A | B>(x, a, b, dec); break;
            case U | B: elem4<U | B>(x, a, b, dec); break;
            case A | U | B: elem4<A | U | B>(x, a, b, dec); break;
            default: break;
          }
        }
        break;
    }
  }

  __device__ __forceinline__ bool writes_master() const { return write_master != 0; }

  /* m: master values in, updated values out (stored only if writes_master()); w: the working values.
   * lmf_mezo_master_elem reads only UPDATE of the flags, lmf_mezo_working_from_master only MASTER_B. */
  __device__ __forceinline__ void master(float m[4], float w[4], uint64_t g, uint32_t uid, int dec) const {
    if (flags & LMF_PASS_UPDATE) {
      float a[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      if (master_za) za.quad(g, uid, a);
#pragma unroll
      for (int q = 0; q < 4; ++q) m[q] = lmf_mezo_master_elem(m[q], a[q], LMF_PASS_UPDATE, decay, step, dec);
    }
    if (NEED_B && master_zb) {
      float b[4];
      zb.quad(g, uid, b);
#pragma unroll
      for (int q = 0; q < 4; ++q) w[q] = lmf_mezo_working_from_master(m[q], b[q], LMF_PASS_MASTER_B, m_off);
    } else {
#pragma unroll
      for (int q = 0; q < 4; ++q) w[q] = m[q];
    }
  }
};

/* One lmf_mezo_multi_pass: steps (lr * c_j), seeds and (Rademacher) words live in shared memory. */
template <int DIST>
struct MultiOp {
  static constexpr bool kTiled = DIST == 1;
  static constexpr int kTile = kMultiTile;
  static_assert(kTile % 8 == 0, "tiles keep 16-byte vector alignment");
  const float *steps;
  const uint64_t *seeds;
  uint32_t *words; /* Rademacher: kMultiTileWords per seed */
  int64_t wbase;
  int n;
  float decay;
  uint64_t round_seed;
  uint32_t round_domain;
  int stochastic;

  __device__ __forceinline__ void prepare(const lmf_mezo_tdesc &t, int64_t tb, int64_t te) {
    if constexpr (DIST == 1) {
      const int64_t g0 = tile_group0(t, tb);
      const int ng = tile_ngroups(t, tb, te);
      __syncthreads();
      for (int k = (int)threadIdx.x; k < n * ng; k += kBlock) {
        const int j = k / ng, gi = k - j * ng;
        if (steps[j] != 0.0f)
          fill_words(words + j * kMultiTileWords, gi, seeds[j], t.uid, (uint64_t)(g0 + gi));
      }
      __syncthreads();
      wbase = g0 * 4;
    } else {
      (void)t, (void)tb, (void)te;
    }
  }

  __device__ __forceinline__ void apply(float x[4], uint64_t g, uint32_t uid, int dec) const {
    if (dec) {
#pragma unroll
      for (int q = 0; q < 4; ++q) x[q] = LMF_FMUL(x[q], decay);
    }
    for (int j = 0; j < n; ++j) {
      const float s = steps[j];
      if (s != 0.0f) {
        float z[4];
        if constexpr (DIST == 1) {
          ZSrc<1> src{words + j * kMultiTileWords, wbase};
          src.quad(g, uid, z);
        } else {
          ZSrc<0> src{seeds[j]};
          src.quad(g, uid, z);
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) x[q] = LMF_FSUB(x[q], LMF_FMUL(s, z[q]));
      }
    }
  }
  __device__ __forceinline__ void nonmaster(float x[4], uint64_t g, uint32_t uid, int dec) const {
    apply(x, g, uid, dec);
  }
  __device__ __forceinline__ bool writes_master() const { return true; }
  __device__ __forceinline__ void master(float m[4], float w[4], uint64_t g, uint32_t uid, int dec) const {
    apply(m, g, uid, dec);
#pragma unroll
    for (int q = 0; q < 4; ++q) w[q] = m[q];
  }
};

/* ---- Ranges of one tensor ---------------------------------------------------------------------- */

/* Any alignment: one thread per quad (4 elements sharing a Gaussian Philox output), elements [b, e) of
 * the quad only. */
template <int DT, bool MASTER, class Op>
__device__ __forceinline__ void run_scalar(const Op &op, const lmf_mezo_tdesc &t, int64_t b, int64_t e) {
  const int64_t gfirst = (t.goff + b) >> 2;
  const int64_t ngroups = ((t.goff + e - 1) >> 2) - gfirst + 1;
  for (int64_t k = threadIdx.x; k < ngroups; k += kBlock) {
    const uint64_t g = (uint64_t)(gfirst + k);
    const int64_t base = (gfirst + k) * 4 - t.goff; /* local index of the quad's element 0 */
    bool in[4];
    float x[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t j = base + q;
      in[q] = j >= b && j < e;
      x[q] = 0.0f;
      if (in[q]) {
        if (MASTER)
          x[q] = t.master[j];
        else if (DT == LMF_DTYPE_F32)
          x[q] = static_cast<const float *>(t.data)[j];
        else
          x[q] = half_to_f32<DT>(static_cast<const uint16_t *>(t.data)[j]);
      }
    }
    float w[4];
    if (MASTER) {
      op.master(x, w, g, t.uid, t.decay);
      if (op.writes_master()) {
#pragma unroll
        for (int q = 0; q < 4; ++q)
          if (in[q]) t.master[base + q] = x[q];
      }
    } else {
      op.nonmaster(x, g, t.uid, t.decay);
#pragma unroll
      for (int q = 0; q < 4; ++q) w[q] = x[q];
    }
    if (DT == LMF_DTYPE_F32) {
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (in[q]) static_cast<float *>(t.data)[base + q] = w[q];
    } else {
      uint32_t h[4];
      if (MASTER) {
#pragma unroll
        for (int q = 0; q < 4; ++q) h[q] = f32_to_half<DT>(w[q], 0, 0u); /* working copies: nearest */
      } else {
        round_group<DT>(op, w, h, g, t.uid);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q)
        if (in[q]) static_cast<uint16_t *>(t.data)[base + q] = (uint16_t)h[q];
    }
  }
}

/* 16-byte aligned data (and master) with goff % 4 == 0: `nvec` vectors from local element b (b % 8 == 0).
 * f32: a float4 = one quad; 16-bit: a uint4 = 8 elements = two quads (plus two master float4s).
 * Each thread loads a batch of kUnroll vectors before computing any. (Staging the next batch in shared
 * memory with cp.async was measured: no faster for 16-bit data, slower for 16-bit + master.) */
template <int DT, bool MASTER>
struct VecShape {
  static constexpr bool kHalf = DT != LMF_DTYPE_F32;
  static constexpr int kUnroll =
      !kHalf ? LMF_MEZO_UNROLL_F32 : MASTER ? (LMF_MEZO_UNROLL_16 + 1) / 2 : LMF_MEZO_UNROLL_16;
  static constexpr int kLoads = kHalf && MASTER ? 2 : 1; /* 16-byte loads per vector */
};

/* Address of the l-th 16-byte load of vector i. */
template <int DT, bool MASTER>
__device__ __forceinline__ const uint4 *vec_src(const lmf_mezo_tdesc &t, int64_t b, int i, int l) {
  if (MASTER) return reinterpret_cast<const uint4 *>(t.master + b) + (VecShape<DT, MASTER>::kLoads * i + l);
  if (DT == LMF_DTYPE_F32) return reinterpret_cast<const uint4 *>(static_cast<const float *>(t.data) + b) + i;
  return reinterpret_cast<const uint4 *>(static_cast<const uint16_t *>(t.data) + b) + i;
}

/* Computes and stores vector i from its loads v[0 .. kLoads). */
template <int DT, bool MASTER, class Op>
__device__ __forceinline__ void vec_compute(const Op &op, const lmf_mezo_tdesc &t, int64_t b, int i,
                                            uint64_t g0, const uint4 *v) {
  const uint32_t uid = t.uid;
  const int dec = t.decay;
  if constexpr (DT == LMF_DTYPE_F32) {
    float4 *d = reinterpret_cast<float4 *>(static_cast<float *>(t.data) + b);
    const uint64_t g = g0 + (uint64_t)i;
    float x[4] = {__uint_as_float(v[0].x), __uint_as_float(v[0].y), __uint_as_float(v[0].z),
                  __uint_as_float(v[0].w)};
    if (MASTER) {
      float w[4];
      op.master(x, w, g, uid, dec);
      if (op.writes_master()) reinterpret_cast<float4 *>(t.master + b)[i] = arr_to_f4(x);
      d[i] = arr_to_f4(w);
    } else {
      op.nonmaster(x, g, uid, dec);
      d[i] = arr_to_f4(x);
    }
  } else {
    uint4 *d = reinterpret_cast<uint4 *>(static_cast<uint16_t *>(t.data) + b);
    const uint64_t g = g0 + 2 * (uint64_t)i;
    float xa[4], xb[4];
    uint32_t ha[4], hb[4];
    if constexpr (MASTER) {
      float4 *mp = reinterpret_cast<float4 *>(t.master + b);
      float wa[4], wb[4];
      xa[0] = __uint_as_float(v[0].x), xa[1] = __uint_as_float(v[0].y);
      xa[2] = __uint_as_float(v[0].z), xa[3] = __uint_as_float(v[0].w);
      xb[0] = __uint_as_float(v[1].x), xb[1] = __uint_as_float(v[1].y);
      xb[2] = __uint_as_float(v[1].z), xb[3] = __uint_as_float(v[1].w);
      op.master(xa, wa, g, uid, dec);
      op.master(xb, wb, g + 1, uid, dec);
      if (op.writes_master()) {
        mp[2 * i] = arr_to_f4(xa);
        mp[2 * i + 1] = arr_to_f4(xb);
      }
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        ha[q] = f32_to_half<DT>(wa[q], 0, 0u); /* working copies: nearest */
        hb[q] = f32_to_half<DT>(wb[q], 0, 0u);
      }
    } else {
      unpack8<DT>(v[0], xa, xb);
      op.nonmaster(xa, g, uid, dec);
      op.nonmaster(xb, g + 1, uid, dec);
      round_group<DT>(op, xa, ha, g, uid);
      round_group<DT>(op, xb, hb, g + 1, uid);
    }
    d[i] = pack8(ha, hb);
  }
}

template <int DT, bool MASTER, class Op>
__device__ __forceinline__ void run_vec(const Op &op, const lmf_mezo_tdesc &t, int64_t b, int nvec) {
  using Shape = VecShape<DT, MASTER>;
  constexpr int kUnroll = Shape::kUnroll, kLoads = Shape::kLoads;
  const uint64_t g0 = (uint64_t)((t.goff + b) >> 2);
  const int tid = (int)threadIdx.x;
  for (int i0 = tid; i0 < nvec; i0 += kBlock * kUnroll) {
    uint4 v[kUnroll][kLoads];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * kBlock;
      if (i < nvec) {
#pragma unroll
        for (int l = 0; l < kLoads; ++l) v[u][l] = *vec_src<DT, MASTER>(t, b, i, l);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int i = i0 + u * kBlock;
      if (i < nvec) vec_compute<DT, MASTER>(op, t, b, i, g0, v[u]);
    }
  }
}

template <int DT, bool MASTER, class Op>
__device__ __forceinline__ void run_span(const Op &op, const lmf_mezo_tdesc &t, int64_t b, int64_t e) {
  if (t.vec_ok) {
    constexpr int kElems = DT == LMF_DTYPE_F32 ? 4 : 8;
    const int nvec = (int)((e - b) / kElems); /* e - b <= LMF_MEZO_CHUNK_ELEMS */
    if (nvec > 0) run_vec<DT, MASTER>(op, t, b, nvec);
    b += (int64_t)nvec * kElems;
    if (b < e) run_scalar<DT, MASTER>(op, t, b, e);
  } else {
    run_scalar<DT, MASTER>(op, t, b, e);
  }
}

/* Rademacher ops refill their shared words once per tile; Gaussian ones run the whole range. */
template <int DT, bool MASTER, class Op>
__device__ __forceinline__ void run_range(Op &op, const lmf_mezo_tdesc &t, int64_t b, int64_t e) {
  if constexpr (Op::kTiled) {
    for (int64_t tb = b; tb < e; tb += Op::kTile) {
      const int64_t te = e - tb < Op::kTile ? e : tb + Op::kTile;
      op.prepare(t, tb, te);
      run_span<DT, MASTER>(op, t, tb, te);
    }
  } else {
    run_span<DT, MASTER>(op, t, b, e);
  }
}

/* The persistent loop: work item w is part (w mod 2^split_log) of chunk (w >> split_log). Everything
 * that branches here (empty part, dtype, master) is uniform within a block, as the tiles' barriers need. */
template <class Op>
__device__ __forceinline__ void run_items(Op &op, const lmf_mezo_tdesc *__restrict__ tensors,
                                          const lmf_mezo_chunk *__restrict__ chunks, int64_t num_work,
                                          int split_log) {
  const int64_t part_len = LMF_MEZO_CHUNK_ELEMS >> split_log;
  const int64_t part_mask = ((int64_t)1 << split_log) - 1;
  for (int64_t w = blockIdx.x; w < num_work; w += gridDim.x) {
    const lmf_mezo_chunk c = chunks[w >> split_log];
    const int64_t b = c.begin + (w & part_mask) * part_len;
    if (b >= c.end) continue;
    const int64_t e = b + part_len < c.end ? b + part_len : c.end;
    const lmf_mezo_tdesc t = tensors[c.tensor];
    const bool m = t.master != nullptr;
    switch (t.dtype) {
      case LMF_DTYPE_F32:
        if (m) run_range<LMF_DTYPE_F32, true>(op, t, b, e);
        else run_range<LMF_DTYPE_F32, false>(op, t, b, e);
        break;
      case LMF_DTYPE_F16:
        if (m) run_range<LMF_DTYPE_F16, true>(op, t, b, e);
        else run_range<LMF_DTYPE_F16, false>(op, t, b, e);
        break;
      case LMF_DTYPE_BF16:
        if (m) run_range<LMF_DTYPE_BF16, true>(op, t, b, e);
        else run_range<LMF_DTYPE_BF16, false>(op, t, b, e);
        break;
      default: break; /* validated on the host */
    }
  }
}

/* ---- Kernels ----------------------------------------------------------------------------------- */

template <int DIST>
constexpr int min_blocks() { return DIST == 1 ? LMF_MEZO_MIN_BLOCKS_RAD : LMF_MEZO_MIN_BLOCKS_GAUSS; }

template <int DIST, bool NEED_B>
__global__ void __launch_bounds__(kBlock, min_blocks<DIST>())
    mezo_pass_kernel(const lmf_mezo_tdesc *__restrict__ tensors, const lmf_mezo_chunk *__restrict__ chunks,
                     int64_t num_work, int split_log, lmf_mezo_pass p, const float *grad_ptr,
                     int32_t *skipped_ptr) {
  __shared__ __align__(16) uint32_t words[DIST == 1 ? 2 * kPassTileWords : 4];
  uint32_t flags = p.flags;
  float step = 0.0f;
  int skipped = 0;
  if (flags & LMF_PASS_UPDATE) {
    step = LMF_FMUL(p.lr, grad_ptr ? *grad_ptr : p.grad);
    if (!lmf_isfinite_f32(step)) { /* g non-finite, or lr * g overflows */
      flags &= ~(uint32_t)LMF_PASS_UPDATE;
      step = 0.0f;
      skipped = 1;
    }
  }
  if (skipped_ptr && blockIdx.x == 0 && threadIdx.x == 0) *skipped_ptr = skipped;

  PassOp<DIST, NEED_B> op;
  if constexpr (DIST == 1) {
    op.za = ZSrc<1>{words, 0};
    op.zb = ZSrc<1>{words + kPassTileWords, 0};
  } else {
    op.za = ZSrc<0>{p.seed_a};
    op.zb = ZSrc<0>{p.seed_b};
  }
  op.seed_a = p.seed_a;
  op.seed_b = p.seed_b;
  op.round_seed = p.seed_a;
  op.words_a = words;
  op.words_b = words + (DIST == 1 ? kPassTileWords : 0);
  op.add_a = p.add_a;
  op.add_b = p.add_b;
  op.m_off = p.m_off;
  op.decay = p.decay;
  op.step = step;
  op.flags = flags;
  op.round_domain = (uint32_t)LMF_DOMAIN_ROUND | (p.nonce & 0xffffffu);
  op.need_za = lmf_pass_needs_za(flags, step);
  op.need_zb = (flags & LMF_PASS_ADD_B) != 0;
  op.master_za = (flags & LMF_PASS_UPDATE) && step != 0.0f;
  op.master_zb = (flags & LMF_PASS_MASTER_B) != 0;
  op.write_master = (flags & LMF_PASS_UPDATE) && (flags & LMF_PASS_WRITE_MASTER);
  op.stochastic = p.stochastic != 0;
  run_items(op, tensors, chunks, num_work, split_log);
}

/* Only the skipped flag, for a plan without chunks. */
__global__ void mezo_pass_skipped_kernel(const float *grad_ptr, float lr, uint32_t flags,
                                         int32_t *skipped_ptr) {
  *skipped_ptr = ((flags & LMF_PASS_UPDATE) && !lmf_isfinite_f32(LMF_FMUL(lr, *grad_ptr))) ? 1 : 0;
}

template <int DIST>
__global__ void __launch_bounds__(kBlock, min_blocks<DIST>())
    mezo_multi_kernel(const lmf_mezo_tdesc *__restrict__ tensors, const lmf_mezo_chunk *__restrict__ chunks,
                      int64_t num_work, int split_log, const __grid_constant__ lmf_mezo_multi_pass m,
                      const float *coeffs_ptr, int32_t *skipped_ptr) {
  __shared__ float steps[LMF_MEZO_MAX_SEEDS];
  __shared__ uint64_t seeds[LMF_MEZO_MAX_SEEDS];
  __shared__ __align__(16) uint32_t words[DIST == 1 ? LMF_MEZO_MAX_SEEDS * kMultiTileWords : 4];
  const int n = m.num_seeds;
  int bad = 0;
  if ((int)threadIdx.x < n) {
    const float st = LMF_FMUL(m.lr, coeffs_ptr ? coeffs_ptr[threadIdx.x] : m.coeffs[threadIdx.x]);
    bad = !lmf_isfinite_f32(st); /* c non-finite, or lr * c overflows */
    steps[threadIdx.x] = st;
    seeds[threadIdx.x] = m.seeds[threadIdx.x];
  }
  bad = __syncthreads_or(bad);
  if (skipped_ptr && blockIdx.x == 0 && threadIdx.x == 0) *skipped_ptr = bad ? 1 : 0;
  if (bad) return;

  MultiOp<DIST> op;
  op.steps = steps;
  op.seeds = seeds;
  op.words = words;
  op.wbase = 0;
  op.n = n;
  op.decay = m.decay;
  op.round_seed = m.seeds[0];
  op.round_domain = (uint32_t)LMF_DOMAIN_ROUND | (m.nonce & 0xffffffu);
  op.stochastic = m.stochastic != 0;
  run_items(op, tensors, chunks, num_work, split_log);
}

__global__ void mezo_multi_skipped_kernel(const float *coeffs_ptr, float lr, int n, int32_t *skipped_ptr) {
  int bad = 0;
  for (int j = 0; j < n; ++j) bad |= !lmf_isfinite_f32(LMF_FMUL(lr, coeffs_ptr[j]));
  *skipped_ptr = bad;
}

/* One thread per quad; a Rademacher quad's four bits sit in one word of its group's Philox output. */
template <int DIST>
__global__ void __launch_bounds__(kBlock) mezo_fill_z_kernel(uint64_t seed, uint32_t uid, int64_t goff,
                                                             int64_t n, float *out) {
  const int64_t g0 = goff >> 2;
  const int64_t ngroups = ((goff + n - 1) >> 2) - g0 + 1;
  const int64_t stride = (int64_t)gridDim.x * kBlock;
  for (int64_t k = (int64_t)blockIdx.x * kBlock + threadIdx.x; k < ngroups; k += stride) {
    const uint64_t g = (uint64_t)(g0 + k);
    float z[4];
    if constexpr (DIST == 1) {
      const lmf_u32x4 r = lmf_z_words(seed, uid, LMF_DOMAIN_Z, g >> 5);
      const uint32_t wi = (uint32_t)(g >> 3) & 3u;
      const uint32_t w = wi == 0 ? r.x : wi == 1 ? r.y : wi == 2 ? r.z : r.w;
      const uint32_t sh = ((uint32_t)g & 7u) << 2;
#pragma unroll
      for (int q = 0; q < 4; ++q) z[q] = lmf_rademacher_bit(w, sh + (uint32_t)q);
    } else {
      lmf_gauss_group(seed, uid, g, z);
    }
    const int64_t base = (g0 + k) * 4 - goff;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t j = base + q;
      if (j >= 0 && j < n) out[j] = z[q];
    }
  }
}

/* ---- Host side --------------------------------------------------------------------------------- */

/* Resident blocks per SM of `kernel`, cached by the caller per kernel and device. */
template <class K>
lmf_status_t blocks_per_sm(K kernel, std::atomic<int> *cache, int device, const char *fn, int *out) {
  if (device >= 0 && device < kMaxCachedDevices) {
    const int c = cache[device].load(std::memory_order_relaxed);
    if (c > 0) {
      *out = c;
      return LMF_OK;
    }
  }
  int c = 0;
  const cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&c, kernel, kBlock, 0);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return lmf_fail(LMF_ERR_CUDA, "%s: cudaOccupancyMaxActiveBlocksPerMultiprocessor failed on device %d: %s",
                    fn, device, cudaGetErrorString(e));
  }
  if (c < 1) c = 1;
  if (device >= 0 && device < kMaxCachedDevices) cache[device].store(c, std::memory_order_relaxed);
  *out = c;
  return LMF_OK;
}

struct Geometry {
  int grid;
  int split_log;
  int64_t num_work;
};

/* Fills every resident block slot once; small plans split chunks so that they still reach every SM. */
template <class K>
lmf_status_t plan_geometry(K kernel, std::atomic<int> *cache, int device, int64_t num_chunks,
                           const char *fn, Geometry *geo) {
  int sms = 0, bps = 0;
  lmf_status_t st = lmf_cuda_sm_count(device, fn, &sms);
  if (st == LMF_OK) st = blocks_per_sm(kernel, cache, device, fn, &bps);
  if (st != LMF_OK) return st;
  const int64_t slots = (int64_t)sms * bps;
  int split_log = 0;
  while (split_log < kMaxSplitLog && (num_chunks << split_log) < slots) ++split_log;
  geo->split_log = split_log;
  geo->num_work = num_chunks << split_log;
  geo->grid = (int)(geo->num_work < slots ? geo->num_work : slots);
  return LMF_OK;
}

template <int DIST, bool NEED_B>
lmf_status_t launch_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                         const lmf_mezo_chunk *chunks, int64_t num_chunks, const lmf_mezo_pass &p,
                         const float *grad_ptr, int32_t *skipped_ptr, cudaStream_t stream, const char *fn) {
  static std::atomic<int> cache[kMaxCachedDevices];
  Geometry geo;
  const lmf_status_t st =
      plan_geometry(mezo_pass_kernel<DIST, NEED_B>, cache, ctx->device, num_chunks, fn, &geo);
  if (st != LMF_OK) return st;
  mezo_pass_kernel<DIST, NEED_B><<<geo.grid, kBlock, 0, stream>>>(tensors, chunks, geo.num_work,
                                                                  geo.split_log, p, grad_ptr, skipped_ptr);
  return launched(fn, "mezo_pass_kernel", ctx->device);
}

template <int DIST>
lmf_status_t launch_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                          const lmf_mezo_chunk *chunks, int64_t num_chunks, const lmf_mezo_multi_pass &m,
                          const float *coeffs_ptr, int32_t *skipped_ptr, cudaStream_t stream,
                          const char *fn) {
  static std::atomic<int> cache[kMaxCachedDevices];
  Geometry geo;
  const lmf_status_t st = plan_geometry(mezo_multi_kernel<DIST>, cache, ctx->device, num_chunks, fn, &geo);
  if (st != LMF_OK) return st;
  mezo_multi_kernel<DIST><<<geo.grid, kBlock, 0, stream>>>(tensors, chunks, geo.num_work, geo.split_log, m,
                                                           coeffs_ptr, skipped_ptr);
  return launched(fn, "mezo_multi_kernel", ctx->device);
}

}  // namespace

extern "C" {

lmf_status_t lmf_cuda_mezo_pass(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                const lmf_mezo_pass *pass, const float *grad_ptr,
                                int32_t *skipped_ptr, lmf_stream_t stream) {
  const char *fn = "lmf_mezo (CUDA pass)";
  const lmf_mezo_pass p = *pass;
  /* Host g: decide and report on the host; the kernel repeats the same test on the same value. */
  if (!grad_ptr && skipped_ptr)
    *skipped_ptr = ((p.flags & LMF_PASS_UPDATE) && !lmf_isfinite_f32(LMF_FMUL(p.lr, p.grad))) ? 1 : 0;
  int32_t *dev_skipped = grad_ptr ? skipped_ptr : nullptr;
  if (num_chunks <= 0 && !dev_skipped) return LMF_OK;
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (num_chunks <= 0) {
    mezo_pass_skipped_kernel<<<1, 1, 0, s>>>(grad_ptr, p.lr, p.flags, dev_skipped);
    return launched(fn, "mezo_pass_skipped_kernel", ctx->device);
  }
  const bool need_b = (p.flags & (LMF_PASS_ADD_B | LMF_PASS_MASTER_B)) != 0;
  if (p.dist == 1)
    return need_b ? launch_pass<1, true>(ctx, tensors, chunks, num_chunks, p, grad_ptr, dev_skipped, s, fn)
                  : launch_pass<1, false>(ctx, tensors, chunks, num_chunks, p, grad_ptr, dev_skipped, s, fn);
  return need_b ? launch_pass<0, true>(ctx, tensors, chunks, num_chunks, p, grad_ptr, dev_skipped, s, fn)
                : launch_pass<0, false>(ctx, tensors, chunks, num_chunks, p, grad_ptr, dev_skipped, s, fn);
}

lmf_status_t lmf_cuda_mezo_multi(const struct lmf_context *ctx, const lmf_mezo_tdesc *tensors,
                                 const lmf_mezo_chunk *chunks, int64_t num_chunks,
                                 const lmf_mezo_multi_pass *pass, const float *coeffs_ptr,
                                 int32_t *skipped_ptr, lmf_stream_t stream) {
  const char *fn = "lmf_mezo_update_multi (CUDA)";
  const int n = pass->num_seeds;
  if (n < 1 || n > LMF_MEZO_MAX_SEEDS)
    return lmf_fail(LMF_ERR_INTERNAL, "%s: num_seeds %d reached the backend", fn, n);
  if (!coeffs_ptr) {
    int bad = 0;
    for (int j = 0; j < n; ++j) bad |= !lmf_isfinite_f32(LMF_FMUL(pass->lr, pass->coeffs[j]));
    if (skipped_ptr) *skipped_ptr = bad;
    if (bad) return LMF_OK; /* nothing changes */
  }
  int32_t *dev_skipped = coeffs_ptr ? skipped_ptr : nullptr;
  if (num_chunks <= 0 && !dev_skipped) return LMF_OK;
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (num_chunks <= 0) {
    mezo_multi_skipped_kernel<<<1, 1, 0, s>>>(coeffs_ptr, pass->lr, n, dev_skipped);
    return launched(fn, "mezo_multi_skipped_kernel", ctx->device);
  }
  if (pass->dist == 1)
    return launch_multi<1>(ctx, tensors, chunks, num_chunks, *pass, coeffs_ptr, dev_skipped, s, fn);
  return launch_multi<0>(ctx, tensors, chunks, num_chunks, *pass, coeffs_ptr, dev_skipped, s, fn);
}

lmf_status_t lmf_cuda_mezo_fill_z(const struct lmf_context *ctx, int32_t dist, uint64_t seed,
                                  uint32_t uid, int64_t goff, int64_t n, float *out,
                                  lmf_stream_t stream) {
  const char *fn = "lmf_mezo_fill_z (CUDA)";
  if (n <= 0) return LMF_OK;
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  int sms = 0;
  st = lmf_cuda_sm_count(ctx->device, fn, &sms);
  if (st != LMF_OK) return st;
  const int64_t ngroups = ((goff + n - 1) >> 2) - (goff >> 2) + 1;
  const int64_t want = (ngroups + kBlock - 1) / kBlock, cap = (int64_t)sms * 8;
  const int grid = (int)(want < cap ? want : cap);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  if (dist == 1)
    mezo_fill_z_kernel<1><<<grid, kBlock, 0, s>>>(seed, uid, goff, n, out);
  else
    mezo_fill_z_kernel<0><<<grid, kBlock, 0, s>>>(seed, uid, goff, n, out);
  return launched(fn, "mezo_fill_z_kernel", ctx->device);
}

}  // extern "C"
