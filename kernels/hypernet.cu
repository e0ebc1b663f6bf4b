/* The ZeTT hypernetwork on CUDA (host/hypernet_internal.h; docs/hypernet.md, "CUDA backend").
 *
 * Creation (lmf_cuda_hn_build): one device allocation holds every weight in fp32, matrices row-major
 * [N][K] as PyTorch stores them, each at a 256-byte boundary; each layer's query, key and value weights
 * form one [3H][H] matrix (biases one [3H] vector) so that a layer runs one GEMM for the three. Host
 * tensors are converted on the host and copied; device tensors given to lmf_hypernet_create (told apart
 * by cudaPointerGetAttributes) are converted on the device. Creation is synchronous.
 *
 * lmf_hypernet_predict (lmf_cuda_hn_predict) enqueues everything on the caller's stream, with the
 * caller's workspace, and returns: no device allocation, no host synchronisation. The host plans each
 * chunk of up to kRowCap positions exactly as the CPU backend does (host/cpu/hypernet_cpu.c): the rows
 * of a token are its non-pad positions, position 0 and the language position (a token with every
 * position padded and no language position keeps all L and attends uniformly); the input projection
 * runs once per distinct id of the chunk not already in the caller's cache. The plan reaches the device
 * as kernel parameters (k_upload, up to 30 KiB a launch): a pageable cudaMemcpyAsync may synchronise
 * with the stream, parameters never do. Per chunk:
 *   1. input projections: k_gather (source row from E_in | E_out with the in-scaler, or a fallback row)
 *      -> GEMM n_in->H -> k_bias_act -> GEMM H->I -> k_bias_act(tanh GELU) -> GEMM I->H -> k_add_ln
 *      (bias, tanh GELU, + x, LayerNorm 1e-6) into the chunk's projection rows and the cache rows;
 *   2. k_embed: (x + type[0]) + pos[l] (the language row: as the module computes it), LayerNorm 1e-5;
 *   3. layers: one GEMM for Q, K and V (N = 3H) -> k_attn (biases added as it loads, padded keys
 *      masked, all-masked tokens uniform) -> GEMM O -> k_add_ln -> GEMM H->I -> k_bias_act(erf GELU)
 *      -> GEMM I->H -> k_add_ln. The last layer runs the K/V GEMM (N = 2H) over every row, then only
 *      position 0 of each token (k_pool) goes through Q, attention, O and the FFN;
 *   4. the heads on the pooled rows, and k_output (head biases, scalers, copy_ids rows, the bias head).
 * Tokens copied without a bias output skip the network (k_copy_rows, after the chunks).
 *
 * GEMMs (cublasGemmEx: fp32 compute, or TF32 with args->allow_tf32). Every Linear is
 * C[M][N] = A[M][K] W^T with A row-major (row stride lda), W [N][K] row-major (PyTorch's layout,
 * leading dimension K) and C row-major (row stride ldc). cuBLAS is column-major, and a row-major
 * X[r][c] with row stride ld is the column-major matrix X^T with leading dimension ld. So the call
 * computes C^T (N x M, ldc) = W (N x K) . A^T (K x M): the column-major view of W is W^T (K x N, ld K),
 * transposed (OP_T); the view of A is A^T (K x M, ld lda), as is (OP_N):
 *     cublasGemmEx(OP_T, OP_N, m = N, n = M, k = K, W, lda = K, A, ldb = lda, C, ldc = ldc).
 * beta = 0 (C is never read); each bias is added by the kernel that next reads C.
 *
 * Element-wise arithmetic follows the CPU backend's expressions operation for operation (compiled with
 * --fmad=false): LayerNorm statistics in double, GELUs from tanhf / erff, the softmax as max, then exp
 * and sum, in the CPU's order. Results differ from the CPU backend by the GEMMs' summation order (and
 * CUDA's tanhf / erff / expf, within 2 ulp): within 5e-5 of the outputs' RMS in fp32. Copied rows are
 * bit for bit the source rows.
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mutex>
#include <new>

#include "../kernels/common/half_convert.h"
#include "hypernet_internal.h"

#include "cuda_check.cuh"

namespace {

constexpr int64_t kRowCap = 4096;                       /* positions per chunk (at least one token's) */
constexpr size_t kCublasWorkspace = (size_t)32 << 20;  /* cuBLAS's recommendation for sm_90 */
constexpr int kThreads = 256;                           /* every kernel's block */
constexpr int kAttnWarps = kThreads / 32;               /* one (token, head) per warp */
constexpr int kAttnPerLane = 8;                         /* head dims a lane accumulates per pass */
constexpr int kAttnDims = 32 * kAttnPerLane;            /* head dims one attention pass covers */
constexpr int kParamInts = 7680;                        /* ints a parameter block carries */
constexpr int32_t kKeyBit = 1 << 30;                    /* row_meta: the row is a key */
constexpr int32_t kPosMask = (1 << 21) - 1;             /* row_meta: its position (< 2^20) */
constexpr float kEpsBlock = 1e-6f;                      /* ProjectorBlock LayerNorm */
constexpr float kEpsRoberta = 1e-5f;                    /* RoBERTa LayerNorms */

/* Kernel parameters are copied into the launch when it is enqueued: up to 32,764 bytes on sm_70 and
 * newer (CUDA 12.1+). */
struct ParamBlock {
  int32_t v[kParamInts];
};
static_assert(sizeof(ParamBlock) + 128 <= 32764, "kernel parameter space");

enum { ACT_NONE = 0, ACT_GELU_TANH = 1, ACT_GELU_ERF = 2 };

/* ---- Device helpers ------------------------------------------------------------------------------ */

/* gelu_tanh / gelu_erf of host/cpu/hypernet_cpu.c, the same expressions. */
__device__ __forceinline__ float gelu_tanh(float x) {
  const float k0 = 0.7978845608028654f; /* sqrt(2 / pi) */
  const float inner = k0 * (x + 0.044715f * (x * x * x));
  return 0.5f * x * (1.0f + tanhf(inner));
}

__device__ __forceinline__ float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f)); }

template <int ACT>
__device__ __forceinline__ float activate(float v) {
  return ACT == ACT_GELU_TANH ? gelu_tanh(v) : ACT == ACT_GELU_ERF ? gelu_erf(v) : v;
}

/* Element i of a source matrix as fp32 (the CPU's load_src: the same conversions, the same bits). */
template <int DT>
__device__ __forceinline__ float src_at(const void *p, int64_t i) {
  if (DT == LMF_DTYPE_F32) return static_cast<const float *>(p)[i];
  const uint16_t h = static_cast<const uint16_t *>(p)[i];
  return DT == LMF_DTYPE_F16 ? lmf_f16_to_f32(h) : lmf_bf16_to_f32(h);
}

/* The block's sum of v, the same value in every thread (a fixed order). sh: kThreads / 32 doubles. */
__device__ __forceinline__ double block_sum(double v, double *sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads(); /* the previous call's readers are done with sh */
  if ((threadIdx.x & 31) == 0) sh[threadIdx.x >> 5] = v;
  __syncthreads();
  double t = 0.0;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) t += sh[w];
  return t;
}

/* The second half of the CPU's layer_norm_row: row[0 .. n) holds the input (each thread reads back
 * only the elements it wrote), sum the thread's part of its sum. Writes LN(row) * w + b to out, and
 * to out2 when not NULL (out may be row). */
__device__ __forceinline__ void ln_finish(const float *row, int32_t n, double sum, const float *w, const float *b,
                                          float eps, float *out, float *out2, double *sh) {
  const double mean = block_sum(sum, sh) / (double)n;
  double var = 0.0;
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const double d = (double)row[j] - mean;
    var += d * d;
  }
  var = block_sum(var, sh);
  const float meanf = (float)mean;
  const float rstd = (float)(1.0 / sqrt(var / (double)n + (double)eps));
  for (int j = threadIdx.x; j < n; j += kThreads) {
    const float y = (row[j] - meanf) * rstd * w[j] + b[j];
    out[j] = y;
    if (out2) out2[j] = y;
  }
}

/* ---- Kernels ------------------------------------------------------------------------------------- */

/* dst[0 .. n) = the parameter block's ints. */
__global__ void __launch_bounds__(kThreads) k_upload(const ParamBlock p, int32_t *dst, int32_t n) {
  for (int i = threadIdx.x; i < n; i += kThreads) dst[i] = p.v[i];
}

/* dst[i] = src[i] as fp32 (creation from 16-bit device tensors). */
template <int DT>
__global__ void __launch_bounds__(kThreads) k_convert(const uint16_t *src, float *dst, int64_t n) {
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < n; i += (int64_t)gridDim.x * kThreads)
    dst[i] = DT == LMF_DTYPE_F16 ? lmf_f16_to_f32(src[i]) : lmf_bf16_to_f32(src[i]);
}

struct GatherArgs {
  const int32_t *ids;    /* [rows] ids to project */
  int64_t rows;
  int32_t V0, E, n_in;
  int64_t stride;        /* source row stride (elements) */
  const void *src_in, *src_out;
  const float *fallback; /* [n_fallback][n_in] */
  const float *isw, *isb;/* in-scaler [n_in], or NULL */
  float *X;              /* [rows][n_in] */
};

/* X[i] = ids[i] >= V0 ? fallback[ids[i] - V0] : in_scaler(E_in[ids[i]] | E_out[ids[i]]). */
template <int DT>
__global__ void __launch_bounds__(kThreads) k_gather(const GatherArgs g) {
  for (int64_t i = blockIdx.x; i < g.rows; i += gridDim.x) {
    const int32_t id = g.ids[i];
    float *x = g.X + i * g.n_in;
    if (id >= g.V0) {
      const float *f = g.fallback + (int64_t)(id - g.V0) * g.n_in;
      for (int j = threadIdx.x; j < g.n_in; j += kThreads) x[j] = f[j];
      continue;
    }
    const int64_t o = (int64_t)id * g.stride;
    for (int j = threadIdx.x; j < g.n_in; j += kThreads) {
      float v = j < g.E ? src_at<DT>(g.src_in, o + j) : src_at<DT>(g.src_out, o + (j - g.E));
      if (g.isw) v = g.isw[j] * v + g.isb[j];
      x[j] = v;
    }
  }
}

/* x[r][j] = act(x[r][j] + b[j]) over rows x n (row stride ld). */
template <int ACT>
__global__ void __launch_bounds__(kThreads) k_bias_act(float *x, int64_t ld, int64_t rows, const float *b,
                                                       int32_t n) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float *xr = x + r * ld;
    for (int j = threadIdx.x; j < n; j += kThreads) xr[j] = activate<ACT>(xr[j] + b[j]);
  }
}

struct AddLnArgs {
  float *a;                  /* [rows][n] a GEMM's output (row stride n); left holding the LN input */
  const float *bias;         /* [n] that GEMM's bias */
  const float *res;          /* [rows][n] the residual (may be out) */
  const float *w, *b;        /* LayerNorm */
  float eps;
  int32_t n;
  int64_t rows;
  float *out;                /* [rows][n] */
  float *out2;               /* optional: row r also to out2 + out2_rows[r] * n (the input cache) */
  const int32_t *out2_rows;
};

/* out[r] = LN(act(a[r] + bias) + res[r]): the CPU's add_layer_norm after its GEMM (and, with
 * ACT_GELU_TANH, the GELU of a ProjectorBlock). */
template <int ACT>
__global__ void __launch_bounds__(kThreads) k_add_ln(const AddLnArgs p) {
  __shared__ double sh[kThreads / 32];
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    float *ar = p.a + r * p.n;
    const float *rr = p.res + r * p.n;
    double s = 0.0;
    for (int j = threadIdx.x; j < p.n; j += kThreads) {
      const float v = activate<ACT>(ar[j] + p.bias[j]) + rr[j];
      ar[j] = v;
      s += (double)v;
    }
    ln_finish(ar, p.n, s, p.w, p.b, p.eps, p.out + r * p.n,
              p.out2 ? p.out2 + (int64_t)p.out2_rows[r] * p.n : nullptr, sh);
  }
}

struct EmbedArgs {
  const int32_t *row_src;  /* >= 0: projection row; <= -2: cache row -2 - code; -1: the language row */
  const int32_t *row_meta; /* position | kKeyBit */
  int64_t rows;
  const float *proj;       /* [computed ids][H] */
  const float *cache;      /* the caller's input cache, or NULL */
  const float *lang;       /* lang[lang_index], or NULL */
  const float *type, *pos, *w, *b;
  int32_t H;
  float *out;              /* [rows][H] */
};

/* out[r] = LN_1e-5((x + type[0]) + pos[l]); the language row as the module computes it:
 * ((lang - (type[0] + pos[L])) + type[0]) + pos[L]. */
__global__ void __launch_bounds__(kThreads) k_embed(const EmbedArgs p) {
  __shared__ double sh[kThreads / 32];
  const int64_t H = p.H;
  for (int64_t r = blockIdx.x; r < p.rows; r += gridDim.x) {
    const int32_t code = p.row_src[r];
    const float *pos = p.pos + (int64_t)(p.row_meta[r] & kPosMask) * H;
    const float *x = code >= 0 ? p.proj + (int64_t)code * H : code <= -2 ? p.cache + (-2 - (int64_t)code) * H : nullptr;
    float *o = p.out + r * H;
    double s = 0.0;
    for (int j = threadIdx.x; j < p.H; j += kThreads) {
      const float v = x ? (x[j] + p.type[j]) + pos[j] : ((p.lang[j] - (p.type[j] + pos[j])) + p.type[j]) + pos[j];
      o[j] = v;
      s += (double)v;
    }
    ln_finish(o, p.H, s, p.w, p.b, kEpsRoberta, o, nullptr, sh);
  }
}

struct AttnArgs {
  const float *qkv;          /* [rows][3H]: the chunk's raw Q | K | V GEMM outputs (Q unused when qp) */
  const float *qp;           /* last layer: [T][H] raw queries of position 0; else NULL */
  const float *bias;         /* [3H] query, key and value biases */
  const int32_t *tok_start;  /* [T + 1] */
  const int32_t *tok_masked; /* [T] every key masked: uniform weights */
  const int32_t *row_meta;   /* [rows] kKeyBit: a key */
  float *out;                /* [rows][H] (or [T][H] with qp) */
  int32_t T, heads, d, H;
};

/* One warp's dot product q . k over the head's d dims (every lane gets the same value). */
__device__ __forceinline__ float warp_dot(const float *q, const float *bq, const float *k, const float *bk,
                                          int32_t d, int lane) {
  float s = 0.0f;
  for (int x = lane; x < d; x += 32) s += (q[x] + bq[x]) * (k[x] + bk[x]);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  return s;
}

/* Multi-head attention of short sequences: one warp per (token, head) runs the token's queries (all
 * its rows, or position 0 in the last layer) over its rows, as the CPU's attend(): scores
 * (q . k) / sqrt(d) over the keys, max, then exp(s - max) summed in key order, the weighted values
 * scaled by 1 / sum; a token whose every key is masked averages its values. Scores are recomputed
 * rather than stored, so any sequence length works. */
__global__ void __launch_bounds__(kThreads) k_attn(const AttnArgs p) {
  const int lane = threadIdx.x & 31;
  const int64_t pairs = (int64_t)p.T * p.heads;
  const int32_t H = p.H, d = p.d;
  const int64_t ld = 3 * (int64_t)H;
  const float scale = 1.0f / sqrtf((float)d);
  for (int64_t pair = (int64_t)blockIdx.x * kAttnWarps + (threadIdx.x >> 5); pair < pairs;
       pair += (int64_t)gridDim.x * kAttnWarps) {
    const int32_t t = (int32_t)(pair / p.heads), hd = (int32_t)(pair % p.heads);
    const int32_t r0 = p.tok_start[t], n = p.tok_start[t + 1] - r0;
    const bool masked = p.tok_masked[t] != 0;
    const int32_t c0 = hd * d;
    const float *bq = p.bias + c0, *bk = p.bias + H + c0, *bv = p.bias + 2 * H + c0;
    const float *kbase = p.qkv + (int64_t)r0 * ld + H + c0, *vbase = p.qkv + (int64_t)r0 * ld + 2 * H + c0;
    const int32_t nq = p.qp ? 1 : n;
    for (int32_t i = 0; i < nq; ++i) {
      const float *q = p.qp ? p.qp + (int64_t)t * H + c0 : p.qkv + (int64_t)(r0 + i) * ld + c0;
      float *o = p.out + (int64_t)(p.qp ? t : r0 + i) * H + c0;
      for (int32_t x0 = 0; x0 < d; x0 += kAttnDims) {
        float acc[kAttnPerLane];
#pragma unroll
        for (int c = 0; c < kAttnPerLane; ++c) acc[c] = 0.0f;
        float inv;
        if (masked) {
          for (int32_t j = 0; j < n; ++j) {
            const float *v = vbase + (int64_t)j * ld;
#pragma unroll
            for (int c = 0; c < kAttnPerLane; ++c) {
              const int x = x0 + lane + 32 * c;
              if (x < d) acc[c] += v[x] + bv[x];
            }
          }
          inv = 1.0f / (float)n;
        } else {
          float m = -INFINITY;
          for (int32_t j = 0; j < n; ++j) {
            if (!(p.row_meta[r0 + j] & kKeyBit)) continue;
            const float s = warp_dot(q, bq, kbase + (int64_t)j * ld, bk, d, lane) * scale;
            if (s > m) m = s;
          }
          float sum = 0.0f;
          for (int32_t j = 0; j < n; ++j) {
            if (!(p.row_meta[r0 + j] & kKeyBit)) continue;
            const float s = warp_dot(q, bq, kbase + (int64_t)j * ld, bk, d, lane) * scale;
            const float e = expf(s - m);
            sum += e;
            const float *v = vbase + (int64_t)j * ld;
#pragma unroll
            for (int c = 0; c < kAttnPerLane; ++c) {
              const int x = x0 + lane + 32 * c;
              if (x < d) acc[c] += e * (v[x] + bv[x]);
            }
          }
          inv = 1.0f / sum;
        }
#pragma unroll
        for (int c = 0; c < kAttnPerLane; ++c) {
          const int x = x0 + lane + 32 * c;
          if (x < d) o[x] = acc[c] * inv;
        }
      }
    }
  }
}

/* dst[t] = src[tok_start[t]]: the rows of position 0. */
__global__ void __launch_bounds__(kThreads) k_pool(const float *src, const int32_t *tok_start, int64_t T,
                                                   int32_t H, float *dst) {
  for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
    const float *s = src + (int64_t)tok_start[t] * H;
    float *o = dst + t * H;
    for (int j = threadIdx.x; j < H; j += kThreads) o[j] = s[j];
  }
}

struct OutArgs {
  const float *y;      /* [T][ldy] the input head's GEMM output */
  int32_t ldy;
  const float *hb;     /* [ldy] its bias */
  const float *yo;     /* [T][E] the output head's GEMM output (separate heads), or NULL */
  const float *ob;     /* [E] its bias */
  const float *sw, *sb, *osw, *osb; /* scaler, out_scaler (rescaling), or NULL */
  const float *pool;   /* [T][H] pooled rows */
  const float *bw, *bb;/* bias head, or NULL */
  int32_t H, E;
  int64_t T;
  const int32_t *tok_u;    /* [T][2] token index (low, high 32 bits) */
  const int32_t *tok_copy; /* [T] copy id or -1 */
  const void *src_in, *src_out;
  int64_t stride;
  float *out_in, *out_out, *out_bias;
};

/* The outputs of each token of the chunk, as the CPU's last loop. */
template <int DT>
__global__ void __launch_bounds__(kThreads) k_output(const OutArgs p) {
  __shared__ double sh[kThreads / 32];
  const int32_t E = p.E;
  for (int64_t t = blockIdx.x; t < p.T; t += gridDim.x) {
    const int64_t u = (int64_t)(uint32_t)p.tok_u[2 * t] | ((int64_t)p.tok_u[2 * t + 1] << 32);
    const int32_t cp = p.tok_copy[t];
    const float *y = p.y + t * p.ldy;
    float *oi = p.out_in + u * E;
    for (int j = threadIdx.x; j < E; j += kThreads) {
      float v;
      if (cp >= 0) {
        v = src_at<DT>(p.src_in, (int64_t)cp * p.stride + j);
      } else {
        v = y[j] + p.hb[j];
        if (p.sw) v = p.sw[j] * v + p.sb[j];
      }
      oi[j] = v;
    }
    if (p.out_out) {
      const float *yo = p.yo ? p.yo + t * E : y + E;
      const float *ob = p.yo ? p.ob : p.hb + E;
      float *oo = p.out_out + u * E;
      for (int j = threadIdx.x; j < E; j += kThreads) {
        float v;
        if (cp >= 0) {
          v = src_at<DT>(p.src_out, (int64_t)cp * p.stride + j);
        } else {
          v = yo[j] + ob[j];
          if (p.osw) v = p.osw[j] * v + p.osb[j];
        }
        oo[j] = v;
      }
    }
    if (p.out_bias) {
      if (p.bw) { /* block-uniform */
        const float *pr = p.pool + t * p.H;
        double s = 0.0;
        for (int j = threadIdx.x; j < p.H; j += kThreads) s += (double)(pr[j] * p.bw[j]);
        s = block_sum(s, sh);
        if (threadIdx.x == 0) p.out_bias[u] = (float)s + p.bb[0];
      } else if (threadIdx.x == 0) {
        p.out_bias[u] = 0.0f;
      }
    }
  }
}

struct CopyArgs {
  const void *src_in, *src_out;
  int64_t stride;
  int32_t E;
  int32_t count;    /* triples in the block */
  float *out_in, *out_out;
};

/* Copied tokens that skip the network: triples (token low, token high, copy id) in the block. */
template <int DT>
__global__ void __launch_bounds__(kThreads) k_copy_rows(const ParamBlock pb, const CopyArgs p) {
  for (int i = blockIdx.x; i < p.count; i += gridDim.x) {
    const int64_t u = (int64_t)(uint32_t)pb.v[3 * i] | ((int64_t)pb.v[3 * i + 1] << 32);
    const int64_t o = (int64_t)pb.v[3 * i + 2] * p.stride;
    for (int j = threadIdx.x; j < p.E; j += kThreads) {
      p.out_in[u * p.E + j] = src_at<DT>(p.src_in, o + j);
      if (p.out_out) p.out_out[u * p.E + j] = src_at<DT>(p.src_out, o + j);
    }
  }
}

/* ---- Host helpers ---------------------------------------------------------------------------------- */

#define HN_TRY(expr)                 \
  do {                               \
    const lmf_status_t st_ = (expr); \
    if (st_ != LMF_OK) return st_;   \
  } while (0)

lmf_status_t blas_fail(const char *fn, const char *call, int device, cublasStatus_t s) {
  return lmf_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? LMF_ERR_OUT_OF_MEMORY : LMF_ERR_CUDA,
                  "%s: %s failed on device %d: %s (%s)", fn, call, device, cublasGetStatusString(s),
                  cublasGetStatusName(s));
}

/* ---- The context's cuBLAS handles ------------------------------------------------------------------ */

/* A pool: a call takes a handle for itself (its stream, workspace and math mode) and gives it back, so
 * concurrent calls never share one. Handles are made on first need and live until the context goes. */
struct HandleNode {
  cublasHandle_t handle;
  HandleNode *next;
};

struct HnCache {
  std::mutex mu;
  HandleNode *free_list = nullptr;
  int device = 0;
};

std::mutex g_cache_create_mu;

lmf_status_t get_cache(const struct lmf_context *ctx, HnCache **out, const char *fn) {
  std::lock_guard<std::mutex> lock(g_cache_create_mu);
  /* The context object itself is never const (lmf_context_create mallocs it); the cache pointers are
   * the fields a backend sets after creation. */
  struct lmf_context *mctx = const_cast<struct lmf_context *>(ctx);
  if (!mctx->cuda_hypernet_cache) {
    HnCache *c = new (std::nothrow) HnCache;
    if (!c) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (cuBLAS handle cache)", fn);
    c->device = ctx->device;
    mctx->cuda_hypernet_cache = c;
  }
  *out = static_cast<HnCache *>(mctx->cuda_hypernet_cache);
  return LMF_OK;
}

/* A handle held by one call; given back by the destructor. */
struct Lease {
  HnCache *cache = nullptr;
  HandleNode *node = nullptr;
  Lease() = default;
  Lease(const Lease &) = delete;
  Lease &operator=(const Lease &) = delete;
  ~Lease() {
    if (!node) return;
    std::lock_guard<std::mutex> lock(cache->mu);
    node->next = cache->free_list;
    cache->free_list = node;
  }
};

/* The current device must be the context's. */
lmf_status_t acquire(const struct lmf_context *ctx, Lease *l, const char *fn) {
  HN_TRY(get_cache(ctx, &l->cache, fn));
  {
    std::lock_guard<std::mutex> lock(l->cache->mu);
    if (l->cache->free_list) {
      l->node = l->cache->free_list;
      l->cache->free_list = l->node->next;
      return LMF_OK;
    }
  }
  HandleNode *nd = new (std::nothrow) HandleNode;
  if (!nd) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (cuBLAS handle)", fn);
  cublasStatus_t s = cublasCreate(&nd->handle);
  if (s != CUBLAS_STATUS_SUCCESS) {
    delete nd;
    return blas_fail(fn, "cublasCreate", ctx->device, s);
  }
  s = cublasSetPointerMode(nd->handle, CUBLAS_POINTER_MODE_HOST);
  if (s != CUBLAS_STATUS_SUCCESS) {
    (void)cublasDestroy(nd->handle);
    delete nd;
    return blas_fail(fn, "cublasSetPointerMode", ctx->device, s);
  }
  nd->next = nullptr;
  l->node = nd;
  return LMF_OK;
}

/* ---- Device weights -------------------------------------------------------------------------------- */

struct HnDev {
  float *arena;
  size_t floats;
};

size_t round64(size_t n) { return (n + 63) & ~(size_t)63; } /* floats: 256-byte boundaries */

/* If entry x is a query/key/value weight or bias of some layer: its layer, part (0 q, 1 k, 2 v) and
 * whether it is the bias. */
bool qkv_part(const struct lmf_hypernet *h, const lmf_hn_entry &x, int32_t *layer, int *part, bool *bias) {
  for (int32_t l = 0; l < h->cfg.num_layers; ++l) {
    lmf_hn_layer *ly = &h->layers[l];
    const lmf_hn_linear *lin[3] = {&ly->q, &ly->k, &ly->v};
    for (int j = 0; j < 3; ++j) {
      if (x.kind == LMF_HN_KIND_MATRIX && x.mat == &lin[j]->w) {
        *layer = l, *part = j, *bias = false;
        return true;
      }
      if (x.kind == LMF_HN_KIND_VECTOR && x.vec == &lin[j]->b) {
        *layer = l, *part = j, *bias = true;
        return true;
      }
    }
  }
  return false;
}

/* ---- Workspace layout ------------------------------------------------------------------------------ */

struct Layout {
  int64_t rcap, tcap, hcap;  /* rows and tokens per chunk, hash slots (host) */
  size_t plan_ints;          /* the plan region (device) and host buffer */
  size_t o_cublas, o_plan, o_a, o_p, o_h, o_c, o_t1, o_t2, o_ti; /* bytes from the 256-aligned base */
  size_t total;              /* bytes the caller provides (base alignment included) */
};

bool mul_size(size_t a, size_t b, size_t *out) {
  if (a != 0 && b > SIZE_MAX / a) return false;
  *out = a * b;
  return true;
}

/* Reserves `bytes` at a 256-byte boundary. */
bool reserve(size_t *off, size_t bytes, size_t *at) {
  if (bytes > SIZE_MAX - 255) return false;
  const size_t b = (bytes + 255) & ~(size_t)255;
  if (*off > SIZE_MAX - b) return false;
  *at = *off;
  *off += b;
  return true;
}

/* Chunk capacities as the CPU backend's layout(), with kRowCap positions. Regions (floats):
 *   A  max(rcap n_in, rcap 3H, tcap (n_head_out [+ E])): gathered source rows; Q|K|V; head outputs
 *   P  rcap H: computed input projections; the last layer's queries
 *   Hs rcap H: hidden rows; the input head's block output
 *   C  rcap H: attention output; the output head's block output
 *   T1 rcap H, T2 rcap H: GEMM outputs before their LayerNorm; pooled rows (T2)
 *   TI rcap I: intermediate activations
 * plus the plan (ints: computed ids, row codes, row meta, token starts, masked, copy ids, indices) and
 * 32 MiB for cuBLAS. */
bool make_layout(const struct lmf_hypernet *h, int64_t U, int32_t L, Layout *lo) {
  const lmf_hypernet_config_t &c = h->cfg;
  const int64_t per_tok = (int64_t)L + c.embed_lang_id;
  const int64_t all = U > INT64_MAX / per_tok ? INT64_MAX : U * per_tok;
  int64_t rcap = all < kRowCap ? all : kRowCap;
  if (rcap < per_tok) rcap = per_tok;
  const int64_t tcap = U < rcap ? U : rcap;
  int64_t hcap = 16;
  while (hcap < 2 * rcap) hcap *= 2;
  lo->rcap = rcap;
  lo->tcap = tcap;
  lo->hcap = hcap;
  const size_t H = (size_t)c.hidden_size, I = (size_t)c.intermediate_size, E = (size_t)c.n_embd;
  const size_t n_in = (size_t)h->n_in, nho = (size_t)h->n_head_out;
  const bool sep_head = c.separate_out_embeddings && !c.single_head;
  size_t a1, a2, a3, fh, fi;
  if (!mul_size((size_t)rcap, n_in, &a1) || !mul_size((size_t)rcap, 3 * H, &a2) ||
      !mul_size((size_t)tcap, nho + (sep_head ? E : 0), &a3) || !mul_size((size_t)rcap, H, &fh) ||
      !mul_size((size_t)rcap, I, &fi))
    return false;
  size_t fa = a1 > a2 ? a1 : a2;
  if (a3 > fa) fa = a3;
  lo->plan_ints = 3 * (size_t)rcap + 5 * (size_t)tcap + 1;
  size_t ba, bh, bi, bp, off = 0;
  if (!mul_size(fa, 4, &ba) || !mul_size(fh, 4, &bh) || !mul_size(fi, 4, &bi) || !mul_size(lo->plan_ints, 4, &bp))
    return false;
  if (!reserve(&off, kCublasWorkspace, &lo->o_cublas) || !reserve(&off, bp, &lo->o_plan) ||
      !reserve(&off, ba, &lo->o_a) || !reserve(&off, bh, &lo->o_p) || !reserve(&off, bh, &lo->o_h) ||
      !reserve(&off, bh, &lo->o_c) || !reserve(&off, bh, &lo->o_t1) || !reserve(&off, bh, &lo->o_t2) ||
      !reserve(&off, bi, &lo->o_ti))
    return false;
  if (off > SIZE_MAX - 256) return false;
  lo->total = off + 256;
  return true;
}

/* ---- One call -------------------------------------------------------------------------------------- */

/* Host memory of one call: the chunk plan and the distinct-id hash. */
struct Scratch {
  int32_t *mem = nullptr;
  ParamBlock *pb = nullptr; /* launch parameters are assembled here (30 KiB: not on the stack) */
  int32_t *plan, *row_id, *row_meta, *row_slot, *tok_start, *tok_masked, *tok_copy, *tok_u;
  int32_t *hkeys, *hvals, *dids, *dcode, *cmp;
  Scratch() = default;
  Scratch(const Scratch &) = delete;
  Scratch &operator=(const Scratch &) = delete;
  ~Scratch() {
    free(mem);
    free(pb);
  }
  lmf_status_t alloc(const Layout &lo, const char *fn) {
    const size_t r = (size_t)lo.rcap, t = (size_t)lo.tcap, hc = (size_t)lo.hcap;
    const size_t ints = lo.plan_ints + 3 * r + (t + 1) + 4 * t + 2 * hc + 3 * r;
    mem = static_cast<int32_t *>(malloc(ints * sizeof(int32_t)));
    pb = static_cast<ParamBlock *>(malloc(sizeof(ParamBlock)));
    if (!mem || !pb)
      return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (%zu bytes of chunk plan)", fn,
                      ints * sizeof(int32_t) + sizeof(ParamBlock));
    int32_t *p = mem;
    plan = p, p += lo.plan_ints;
    row_id = p, p += r;
    row_meta = p, p += r;
    row_slot = p, p += r;
    tok_start = p, p += t + 1;
    tok_masked = p, p += t;
    tok_copy = p, p += t;
    tok_u = p, p += 2 * t;
    hkeys = p, p += hc;
    hvals = p, p += hc;
    dids = p, p += r;
    dcode = p, p += r;
    cmp = p;
    return LMF_OK;
  }
};

struct Run {
  const struct lmf_hypernet *h;
  const lmf_hypernet_args_t *a;
  const char *fn;
  int device;
  cudaStream_t s;
  cublasHandle_t blas;
  cublasComputeType_t compute;
  ParamBlock *pb; /* host: launch parameters */
  /* workspace regions */
  int32_t *plan;
  float *A, *P, *Hs, *C, *T1, *T2, *TI;

  /* C[M][N] (ldc) = A[M][K] (lda) W^T, W [N][K] row-major (see the file comment for the mapping). */
  lmf_status_t gemm(const float *x, int64_t lda, int64_t M, const lmf_hn_mat &w, float *c, int64_t ldc,
                    int32_t n_cols = -1) const {
    if (M <= 0) return LMF_OK;
    const int32_t N = n_cols >= 0 ? n_cols : w.n, K = w.k;
    const float one = 1.0f, zero = 0.0f;
    const cublasStatus_t st = cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, N, (int)M, K, &one, w.p, CUDA_R_32F, K,
                                           x, CUDA_R_32F, (int)lda, &zero, c, CUDA_R_32F, (int)ldc, compute,
                                           CUBLAS_GEMM_DEFAULT);
    if (st != CUBLAS_STATUS_SUCCESS)
      return lmf_fail(LMF_ERR_CUDA, "%s: cublasGemmEx (M %lld, N %d, K %d) failed on device %d: %s (%s)", fn,
                      (long long)M, (int)N, (int)K, device, cublasGetStatusString(st), cublasGetStatusName(st));
    return LMF_OK;
  }

  template <int ACT>
  lmf_status_t bias_act(float *x, int64_t ld, int64_t rows, const float *b, int32_t n) const {
    if (rows <= 0) return LMF_OK;
    k_bias_act<ACT><<<grid_for(rows), kThreads, 0, s>>>(x, ld, rows, b, n);
    return launched(fn, "k_bias_act", device);
  }

  template <int ACT>
  lmf_status_t add_ln(float *x, const float *bias, const float *res, const float *w, const float *b, float eps,
                      int32_t n, int64_t rows, float *out, float *out2 = nullptr,
                      const int32_t *out2_rows = nullptr) const {
    if (rows <= 0) return LMF_OK;
    const AddLnArgs p{x, bias, res, w, b, eps, n, rows, out, out2, out2_rows};
    k_add_ln<ACT><<<grid_for(rows), kThreads, 0, s>>>(p);
    return launched(fn, "k_add_ln", device);
  }

  /* ProjectorBlock over M rows of x (row stride H): out = LN_1e-6(x + gelu_tanh(dense2(gelu_tanh(
   * dense1(x))))), through TI and `tmp` ([M][H]); out2/out2_rows: the cache copy. */
  lmf_status_t projector(const lmf_hn_projector &blk, const float *x, int64_t M, float *tmp, float *out,
                         float *out2 = nullptr, const int32_t *out2_rows = nullptr) const {
    const int32_t H = blk.dense2.w.n, I = blk.dense1.w.n;
    HN_TRY(gemm(x, H, M, blk.dense1.w, TI, I));
    HN_TRY(bias_act<ACT_GELU_TANH>(TI, I, M, blk.dense1.b, I));
    HN_TRY(gemm(TI, I, M, blk.dense2.w, tmp, H));
    return add_ln<ACT_GELU_TANH>(tmp, blk.dense2.b, x, blk.ln_w, blk.ln_b, kEpsBlock, H, M, out, out2, out2_rows);
  }

  /* plan[0 .. n) -> the workspace's plan region, through kernel parameters. */
  lmf_status_t upload(const int32_t *src, size_t n) const {
    for (size_t o = 0; o < n; o += kParamInts) {
      const size_t m = n - o < (size_t)kParamInts ? n - o : (size_t)kParamInts;
      memcpy(pb->v, src + o, m * sizeof(int32_t));
      k_upload<<<1, kThreads, 0, s>>>(*pb, plan + o, (int32_t)m);
      HN_TRY(launched(fn, "k_upload", device));
    }
    return LMF_OK;
  }

  lmf_status_t chunk(Scratch &sc, int64_t R, int64_t T, int64_t D) const;
  lmf_status_t copies() const;
};

lmf_status_t launch_gather(const Run &r, const GatherArgs &g) {
  const unsigned grid = grid_for(g.rows);
  switch (r.a->source_dtype) {
    case LMF_DTYPE_F16: k_gather<LMF_DTYPE_F16><<<grid, kThreads, 0, r.s>>>(g); break;
    case LMF_DTYPE_BF16: k_gather<LMF_DTYPE_BF16><<<grid, kThreads, 0, r.s>>>(g); break;
    default: k_gather<LMF_DTYPE_F32><<<grid, kThreads, 0, r.s>>>(g); break;
  }
  return launched(r.fn, "k_gather", r.device);
}

lmf_status_t launch_output(const Run &r, const OutArgs &p) {
  const unsigned grid = grid_for(p.T);
  switch (r.a->source_dtype) {
    case LMF_DTYPE_F16: k_output<LMF_DTYPE_F16><<<grid, kThreads, 0, r.s>>>(p); break;
    case LMF_DTYPE_BF16: k_output<LMF_DTYPE_BF16><<<grid, kThreads, 0, r.s>>>(p); break;
    default: k_output<LMF_DTYPE_F32><<<grid, kThreads, 0, r.s>>>(p); break;
  }
  return launched(r.fn, "k_output", r.device);
}

/* One chunk: the host plan in sc (R rows, T tokens, D distinct ids, of which the first cmp entries are
 * computed) is packed, uploaded and run. */
lmf_status_t Run::chunk(Scratch &sc, int64_t R, int64_t T, int64_t D) const {
  const lmf_hypernet_config_t &cfg = h->cfg;
  const int32_t H = cfg.hidden_size, I = cfg.intermediate_size, E = cfg.n_embd, n_in = h->n_in;
  const int32_t heads = cfg.num_heads, NL = cfg.num_layers;
  const uint8_t *valid = a->input_cache_valid;

  /* Distinct ids: cached ones are read from the cache, the others computed (in order of first use). */
  int64_t Dc = 0;
  for (int64_t d = 0; d < D; ++d) {
    const int32_t id = sc.dids[d];
    if (a->input_cache && valid[id]) {
      sc.dcode[d] = -2 - id;
    } else {
      sc.dcode[d] = (int32_t)Dc;
      sc.cmp[Dc++] = id;
    }
  }
  /* Packed plan: [cmp Dc][row_src R][row_meta R][tok_start T+1][tok_masked T][tok_copy T][tok_u 2T]. */
  int32_t *pl = sc.plan;
  size_t o = 0;
  const size_t o_cmp = o;
  for (int64_t i = 0; i < Dc; ++i) pl[o++] = sc.cmp[i];
  const size_t o_src = o;
  for (int64_t r = 0; r < R; ++r) pl[o++] = sc.row_slot[r] >= 0 ? sc.dcode[sc.row_slot[r]] : -1;
  const size_t o_meta = o;
  for (int64_t r = 0; r < R; ++r) pl[o++] = sc.row_meta[r];
  const size_t o_tstart = o;
  for (int64_t t = 0; t <= T; ++t) pl[o++] = sc.tok_start[t];
  const size_t o_tmask = o;
  for (int64_t t = 0; t < T; ++t) pl[o++] = sc.tok_masked[t];
  const size_t o_tcopy = o;
  for (int64_t t = 0; t < T; ++t) pl[o++] = sc.tok_copy[t];
  const size_t o_tu = o;
  for (int64_t t = 0; t < 2 * T; ++t) pl[o++] = sc.tok_u[t];
  HN_TRY(upload(pl, o));
  const int32_t *d_cmp = plan + o_cmp, *d_src = plan + o_src, *d_meta = plan + o_meta;
  const int32_t *d_tstart = plan + o_tstart, *d_tmask = plan + o_tmask, *d_tcopy = plan + o_tcopy;
  const int32_t *d_tu = plan + o_tu;

  /* 1. Input projections of the ids to compute: X in A, then T1 -> TI -> T2 -> P (and the cache). */
  if (Dc > 0) {
    const GatherArgs g{d_cmp, Dc, cfg.original_vocab_size, E, n_in, a->source_row_stride, a->source_in,
                       a->source_out, h->fallback, cfg.rescale_embeddings ? h->in_scale_w : nullptr,
                       cfg.rescale_embeddings ? h->in_scale_b : nullptr, A};
    HN_TRY(launch_gather(*this, g));
    HN_TRY(gemm(A, n_in, Dc, h->in_linear.w, T1, H));
    HN_TRY(bias_act<ACT_NONE>(T1, H, Dc, h->in_linear.b, H));
    HN_TRY(projector(h->in_block, T1, Dc, T2, P, a->input_cache, d_cmp));
    if (a->input_cache) /* enqueued: later chunks and calls on this stream read the rows */
      for (int64_t i = 0; i < Dc; ++i) a->input_cache_valid[sc.cmp[i]] = 1;
  }

  /* 2. Embeddings of every row. */
  {
    const EmbedArgs e{d_src, d_meta, R, P, a->input_cache,
                      cfg.embed_lang_id ? h->lang + (int64_t)a->lang_index * H : nullptr,
                      h->type, h->pos, h->emb_ln_w, h->emb_ln_b, H, Hs};
    k_embed<<<grid_for(R), kThreads, 0, s>>>(e);
    HN_TRY(launched(fn, "k_embed", device));
  }

  /* 3. Encoder layers. */
  const unsigned attn_grid = grid_for((T * heads + kAttnWarps - 1) / kAttnWarps);
  for (int32_t li = 0; li < NL; ++li) {
    const lmf_hn_layer &ly = h->layers[li];
    if (li < NL - 1) {
      HN_TRY(gemm(Hs, H, R, ly.q.w, A, 3 * (int64_t)H, 3 * H)); /* W_qkv [3H][H] */
      const AttnArgs at{A, nullptr, ly.q.b, d_tstart, d_tmask, d_meta, C, (int32_t)T, heads, H / heads, H};
      k_attn<<<attn_grid, kThreads, 0, s>>>(at);
      HN_TRY(launched(fn, "k_attn", device));
      HN_TRY(gemm(C, H, R, ly.o.w, T1, H));
      HN_TRY(add_ln<ACT_NONE>(T1, ly.o.b, Hs, ly.ln1_w, ly.ln1_b, kEpsRoberta, H, R, Hs));
      HN_TRY(gemm(Hs, H, R, ly.ffn1.w, TI, I));
      HN_TRY(bias_act<ACT_GELU_ERF>(TI, I, R, ly.ffn1.b, I));
      HN_TRY(gemm(TI, I, R, ly.ffn2.w, T1, H));
      HN_TRY(add_ln<ACT_NONE>(T1, ly.ffn2.b, Hs, ly.ln2_w, ly.ln2_b, kEpsRoberta, H, R, Hs));
    } else {
      /* Keys and values of every row (W_kv = rows H .. 3H of W_qkv) into A's columns H .. 3H. */
      lmf_hn_mat wkv = ly.q.w;
      wkv.p = ly.q.w.p + (int64_t)H * H;
      HN_TRY(gemm(Hs, H, R, wkv, A + H, 3 * (int64_t)H, 2 * H));
      k_pool<<<grid_for(T), kThreads, 0, s>>>(Hs, d_tstart, T, H, T2);
      HN_TRY(launched(fn, "k_pool", device));
      HN_TRY(gemm(T2, H, T, ly.q.w, P, H, H)); /* the queries of position 0 (W_q: the first H rows) */
      const AttnArgs at{A, P, ly.q.b, d_tstart, d_tmask, d_meta, C, (int32_t)T, heads, H / heads, H};
      k_attn<<<attn_grid, kThreads, 0, s>>>(at);
      HN_TRY(launched(fn, "k_attn", device));
      HN_TRY(gemm(C, H, T, ly.o.w, T1, H));
      HN_TRY(add_ln<ACT_NONE>(T1, ly.o.b, T2, ly.ln1_w, ly.ln1_b, kEpsRoberta, H, T, T2));
      HN_TRY(gemm(T2, H, T, ly.ffn1.w, TI, I));
      HN_TRY(bias_act<ACT_GELU_ERF>(TI, I, T, ly.ffn1.b, I));
      HN_TRY(gemm(TI, I, T, ly.ffn2.w, T1, H));
      HN_TRY(add_ln<ACT_NONE>(T1, ly.ffn2.b, T2, ly.ln2_w, ly.ln2_b, kEpsRoberta, H, T, T2));
    }
  }

  /* 4. Heads on the pooled rows T2: the input head's block into Hs, its Linear into A; the output
   * head's block into C, its Linear after the input head's rows. */
  const bool sep_head = cfg.separate_out_embeddings && !cfg.single_head;
  const int32_t nho = h->n_head_out;
  HN_TRY(projector(h->head_block, T2, T, T1, Hs));
  HN_TRY(gemm(Hs, H, T, h->head_linear.w, A, nho));
  float *yout = A + T * (int64_t)nho;
  if (sep_head) {
    HN_TRY(projector(h->out_block, T2, T, T1, C));
    HN_TRY(gemm(C, H, T, h->out_linear.w, yout, E));
  }
  const bool rescale = cfg.rescale_embeddings != 0;
  const OutArgs op{A, nho, h->head_linear.b, sep_head ? yout : nullptr, sep_head ? h->out_linear.b : nullptr,
                   rescale ? h->scale_w : nullptr, rescale ? h->scale_b : nullptr,
                   rescale && cfg.separate_out_embeddings ? h->out_scale_w : nullptr,
                   rescale && cfg.separate_out_embeddings ? h->out_scale_b : nullptr, T2,
                   cfg.predict_bias ? h->bias_w : nullptr, cfg.predict_bias ? h->bias_b : nullptr, H, E, T,
                   d_tu, d_tcopy, a->source_in, a->source_out, a->source_row_stride, a->out_in, a->out_out,
                   a->out_bias};
  return launch_output(*this, op);
}

/* Copied tokens without a bias output: no forward pass, only their rows. */
lmf_status_t Run::copies() const {
  const int64_t U = a->num_tokens;
  const int per = kParamInts / 3;
  ParamBlock &pbr = *pb;
  int count = 0;
  for (int64_t u = 0; u <= U; ++u) {
    const bool take = u < U && a->copy_ids[u] >= 0;
    if (take) {
      pbr.v[3 * count] = (int32_t)(uint32_t)((uint64_t)u & 0xffffffffu);
      pbr.v[3 * count + 1] = (int32_t)((uint64_t)u >> 32);
      pbr.v[3 * count + 2] = a->copy_ids[u];
      ++count;
    }
    if (count == per || (u == U && count > 0)) {
      const CopyArgs p{a->source_in, a->source_out, a->source_row_stride, h->cfg.n_embd, count, a->out_in,
                       a->out_out};
      switch (a->source_dtype) {
        case LMF_DTYPE_F16: k_copy_rows<LMF_DTYPE_F16><<<grid_for(count), kThreads, 0, s>>>(pbr, p); break;
        case LMF_DTYPE_BF16: k_copy_rows<LMF_DTYPE_BF16><<<grid_for(count), kThreads, 0, s>>>(pbr, p); break;
        default: k_copy_rows<LMF_DTYPE_F32><<<grid_for(count), kThreads, 0, s>>>(pbr, p); break;
      }
      HN_TRY(launched(fn, "k_copy_rows", device));
      count = 0;
    }
  }
  return LMF_OK;
}

/* The CPU backend's slot_of: the slot of id in this chunk's distinct ids. */
int32_t slot_of(Scratch &sc, int64_t hcap, int64_t *D, int32_t id) {
  uint32_t hsh = (uint32_t)id * 2654435761u;
  int64_t i = (int64_t)(hsh & (uint32_t)(hcap - 1));
  for (;;) {
    if (sc.hkeys[i] == id) return sc.hvals[i];
    if (sc.hkeys[i] < 0) {
      sc.hkeys[i] = id;
      sc.hvals[i] = (int32_t)*D;
      sc.dids[*D] = id;
      return (int32_t)(*D)++;
    }
    i = (i + 1) & (hcap - 1);
  }
}

/* Where a pointer of a call lives; device_side: it must be usable by the context's device as is. */
lmf_status_t locate(const void *p, const char *name, bool device_side, int device, const char *fn) {
  if (!p) return LMF_OK;
  cudaPointerAttributes at;
  const cudaError_t e = cudaPointerGetAttributes(&at, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return lmf_fail(LMF_ERR_CUDA, "%s: cudaPointerGetAttributes(%s) failed on device %d: %s (%s)", fn, name,
                    device, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  if (device_side) {
    if (at.type == cudaMemoryTypeDevice) {
      if (at.device != device)
        return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: %s is memory of device %d; this context runs on device %d",
                        fn, name, at.device, device);
      return LMF_OK;
    }
    if (at.type == cudaMemoryTypeManaged) return LMF_OK;
    if (at.type == cudaMemoryTypeHost && at.devicePointer == p) return LMF_OK; /* mapped pinned memory */
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: %s is host memory; on a CUDA context it must be device memory of device %d (or "
                    "managed memory)",
                    fn, name, device);
  }
  if (at.type == cudaMemoryTypeDevice)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: %s is device memory; on a CUDA context the host reads it to plan the call: pass "
                    "host memory",
                    fn, name);
  return LMF_OK;
}

}  // namespace

extern "C" {

/* ---- Creation -------------------------------------------------------------------------------------- */

lmf_status_t lmf_cuda_hn_build(struct lmf_hypernet *h, const lmf_hn_entry *e, size_t n, void *const *handles,
                               const lmf_hn_source *src, const char *fn) {
  const struct lmf_context *ctx = h->ctx;
  const int device = ctx->device;
  HN_TRY(set_device(device, fn));
  const int32_t NL = h->cfg.num_layers;
  const size_t H = (size_t)h->cfg.hidden_size;
  /* Layout: every layer's [3H][H] + [3H] block first, then the other tensors in table order. */
  size_t *off = static_cast<size_t *>(calloc(n + 2 * (size_t)NL, sizeof(size_t)));
  if (!off) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  size_t *lw = off + n, *lb = off + n + NL, total = 0, max_numel = 0;
  for (int32_t l = 0; l < NL; ++l) {
    lw[l] = total;
    total += round64(3 * H * H);
    lb[l] = total;
    total += round64(3 * H);
  }
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind == LMF_HN_KIND_UNUSED) continue;
    if ((size_t)e[i].numel > max_numel) max_numel = (size_t)e[i].numel;
    int32_t l = 0;
    int part = 0;
    bool bias = false;
    if (qkv_part(h, e[i], &l, &part, &bias)) {
      off[i] = bias ? lb[l] + (size_t)part * H : lw[l] + (size_t)part * H * H;
    } else {
      off[i] = total;
      total += round64((size_t)e[i].numel);
    }
  }
  void *mem = nullptr;
  const cudaError_t me = cudaMalloc(&mem, (total ? total : 1) * sizeof(float));
  if (me != cudaSuccess) {
    free(off);
    (void)cudaGetLastError();
    return lmf_fail(me == cudaErrorMemoryAllocation ? LMF_ERR_OUT_OF_MEMORY : LMF_ERR_CUDA,
                    "%s: cudaMalloc of %zu bytes (the fp32 weights) failed on device %d: %s (%s)", fn,
                    total * sizeof(float), device, cudaGetErrorString(me), cudaGetErrorName(me));
  }
  lmf_status_t st = LMF_OK;
  float *arena = static_cast<float *>(mem);
  for (size_t i = 0; i < n; ++i) {
    if (e[i].kind == LMF_HN_KIND_MATRIX) {
      lmf_hn_mat *m = e[i].mat;
      m->n = (int32_t)e[i].shape[0];
      m->k = (int32_t)e[i].shape[1];
      m->npanels = (m->n + LMF_HN_NR - 1) / LMF_HN_NR;
      m->p = arena + off[i];
    } else if (e[i].kind == LMF_HN_KIND_VECTOR) {
      *e[i].vec = arena + off[i];
    }
  }
  /* Convert and copy. Host tensors go through src->read and a synchronous copy; device tensors are
   * copied or converted on the device (the legacy default stream), then waited for. */
  float *tmp = nullptr;
  for (size_t i = 0; i < n && st == LMF_OK; ++i) {
    if (e[i].kind == LMF_HN_KIND_UNUSED || !handles[i]) continue;
    float *dst = e[i].kind == LMF_HN_KIND_MATRIX ? e[i].mat->p : *e[i].vec;
    const size_t numel = (size_t)e[i].numel;
    int32_t dt = LMF_DTYPE_F32;
    const void *raw = src->raw ? src->raw(src->self, handles[i], &dt) : nullptr;
    bool on_device = false;
    if (raw) {
      cudaPointerAttributes at;
      const cudaError_t ce = cudaPointerGetAttributes(&at, raw);
      if (ce != cudaSuccess) {
        (void)cudaGetLastError();
        st = lmf_fail(LMF_ERR_CUDA, "%s: cudaPointerGetAttributes(tensor '%s') failed on device %d: %s", fn,
                      e[i].name, device, cudaGetErrorString(ce));
        break;
      }
      if (at.type == cudaMemoryTypeDevice && at.device != device) {
        st = lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: tensor '%s' is memory of device %d; this context runs on device %d",
                      fn, e[i].name, at.device, device);
        break;
      }
      on_device = at.type == cudaMemoryTypeDevice || at.type == cudaMemoryTypeManaged;
    }
    if (on_device) {
      if (dt == LMF_DTYPE_F32) {
        const cudaError_t ce = cudaMemcpy(dst, raw, numel * sizeof(float), cudaMemcpyDefault);
        if (ce != cudaSuccess) st = cuda_fail(LMF_ERR_CUDA, fn, "cudaMemcpy (device tensor)", device, ce);
      } else {
        const unsigned grid = grid_for((int64_t)((numel + kThreads - 1) / kThreads));
        if (dt == LMF_DTYPE_F16)
          k_convert<LMF_DTYPE_F16><<<grid, kThreads>>>(static_cast<const uint16_t *>(raw), dst, (int64_t)numel);
        else
          k_convert<LMF_DTYPE_BF16><<<grid, kThreads>>>(static_cast<const uint16_t *>(raw), dst, (int64_t)numel);
        st = launched(fn, "k_convert", device);
      }
      continue;
    }
    if (!tmp) {
      tmp = static_cast<float *>(malloc((max_numel ? max_numel : 1) * sizeof(float)));
      if (!tmp) {
        st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (%zu bytes to convert a tensor)", fn,
                      max_numel * sizeof(float));
        break;
      }
    }
    if ((st = src->read(src->self, handles[i], tmp, (int64_t)numel, fn)) != LMF_OK) break;
    const cudaError_t ce = cudaMemcpy(dst, tmp, numel * sizeof(float), cudaMemcpyHostToDevice);
    if (ce != cudaSuccess) st = cuda_fail(LMF_ERR_CUDA, fn, "cudaMemcpy (host to device)", device, ce);
  }
  free(tmp);
  free(off);
  if (st == LMF_OK) {
    const cudaError_t ce = cudaStreamSynchronize(0);
    if (ce != cudaSuccess) st = cuda_fail(LMF_ERR_CUDA, fn, "cudaStreamSynchronize (weights upload)", device, ce);
  }
  HnDev *d = nullptr;
  if (st == LMF_OK) {
    d = new (std::nothrow) HnDev;
    if (!d) st = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
  }
  if (st != LMF_OK) {
    lmf_cuda_free(ctx, arena);
    return st;
  }
  d->arena = arena;
  d->floats = total;
  h->dev = d;
  return LMF_OK;
}

void lmf_cuda_hn_free(struct lmf_hypernet *h) {
  if (!h || !h->dev) return;
  HnDev *d = static_cast<HnDev *>(h->dev);
  lmf_cuda_free(h->ctx, d->arena);
  delete d;
  h->dev = nullptr;
}

void lmf_cuda_hypernet_cache_free(const struct lmf_context *ctx, void *cache) {
  (void)ctx;
  HnCache *c = static_cast<HnCache *>(cache);
  if (!c) return;
  if (cudaSetDevice(c->device) != cudaSuccess) (void)cudaGetLastError();
  HandleNode *nd = c->free_list;
  while (nd) {
    HandleNode *next = nd->next;
    (void)cublasDestroy(nd->handle); /* a destroy path: nothing to report to */
    delete nd;
    nd = next;
  }
  delete c;
}

/* ---- Calls ------------------------------------------------------------------------------------------- */

lmf_status_t lmf_cuda_hn_workspace(const struct lmf_hypernet *h, int64_t num_tokens, int32_t surface_len,
                                   size_t *bytes, const char *fn) {
  if (num_tokens <= 0) {
    *bytes = 0;
    return LMF_OK;
  }
  Layout lo;
  if (!make_layout(h, num_tokens, surface_len, &lo))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the CUDA workspace size overflows", fn);
  *bytes = lo.total;
  return LMF_OK;
}

lmf_status_t lmf_cuda_hn_check_memory(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a,
                                      const void *workspace, const char *fn) {
  const int device = h->ctx->device;
  HN_TRY(set_device(device, fn));
  HN_TRY(locate(a->surface_forms, "args->surface_forms", false, device, fn));
  HN_TRY(locate(a->copy_ids, "args->copy_ids", false, device, fn));
  HN_TRY(locate(a->input_cache_valid, "args->input_cache_valid", false, device, fn));
  HN_TRY(locate(a->source_in, "args->source_in", true, device, fn));
  HN_TRY(locate(a->source_out, "args->source_out", true, device, fn));
  HN_TRY(locate(a->input_cache, "args->input_cache", true, device, fn));
  HN_TRY(locate(a->out_in, "args->out_in", true, device, fn));
  HN_TRY(locate(a->out_out, "args->out_out", true, device, fn));
  HN_TRY(locate(a->out_bias, "args->out_bias", true, device, fn));
  return locate(workspace, "workspace", true, device, fn);
}

lmf_status_t lmf_cuda_hn_predict(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream) {
  const char *fn = "lmf_hypernet_predict (CUDA)";
  const lmf_hypernet_config_t &cfg = h->cfg;
  const int64_t U = a->num_tokens, L = a->surface_len;
  if (U <= 0) return LMF_OK;
  Layout lo;
  if (!make_layout(h, U, (int32_t)L, &lo))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: the workspace size overflows", fn);
  if (workspace_bytes < lo.total)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: workspace_bytes is %zu; this call needs %zu", fn, workspace_bytes,
                    lo.total);
  const int device = h->ctx->device;
  HN_TRY(set_device(device, fn));
  Scratch sc;
  HN_TRY(sc.alloc(lo, fn));
  Lease lease;
  HN_TRY(acquire(h->ctx, &lease, fn));

  char *base = static_cast<char *>(workspace);
  base += (256u - (uintptr_t)base % 256u) % 256u;
  Run run;
  run.h = h;
  run.a = a;
  run.fn = fn;
  run.device = device;
  run.s = reinterpret_cast<cudaStream_t>(stream);
  run.blas = lease.node->handle;
  run.compute = a->allow_tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  run.pb = sc.pb;
  run.plan = reinterpret_cast<int32_t *>(base + lo.o_plan);
  run.A = reinterpret_cast<float *>(base + lo.o_a);
  run.P = reinterpret_cast<float *>(base + lo.o_p);
  run.Hs = reinterpret_cast<float *>(base + lo.o_h);
  run.C = reinterpret_cast<float *>(base + lo.o_c);
  run.T1 = reinterpret_cast<float *>(base + lo.o_t1);
  run.T2 = reinterpret_cast<float *>(base + lo.o_t2);
  run.TI = reinterpret_cast<float *>(base + lo.o_ti);
  /* The handle is this call's: its stream, its workspace (cublasSetStream resets it, so after), its
   * math mode. */
  cublasStatus_t bs = cublasSetStream(run.blas, run.s);
  if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(fn, "cublasSetStream", device, bs);
  bs = cublasSetWorkspace(run.blas, base + lo.o_cublas, kCublasWorkspace);
  if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(fn, "cublasSetWorkspace", device, bs);
  bs = cublasSetMathMode(run.blas, a->allow_tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  if (bs != CUBLAS_STATUS_SUCCESS) return blas_fail(fn, "cublasSetMathMode", device, bs);

  const int32_t pad = cfg.pad_token_id;
  const int lang = cfg.embed_lang_id;
  const bool need_bias = a->out_bias != nullptr;
  const int32_t *S = a->surface_forms;
  int64_t u = 0;
  while (u < U) {
    /* Rows of this chunk, as the CPU backend forms them. */
    int64_t R = 0, T = 0;
    for (; u < U; ++u) {
      if (a->copy_ids && a->copy_ids[u] >= 0 && !need_bias) continue; /* copies, after the chunks */
      const int32_t *srow = S + u * L;
      int64_t nkeys = 0;
      for (int64_t l = 0; l < L; ++l) nkeys += srow[l] != pad;
      const bool all_masked = nkeys == 0 && !lang;
      const int64_t need = all_masked ? L : (nkeys + (srow[0] == pad) + lang);
      if (R + need > lo.rcap || T == lo.tcap) break;
      sc.tok_start[T] = (int32_t)R;
      sc.tok_masked[T] = all_masked ? 1 : 0;
      for (int64_t l = 0; l < L; ++l) {
        if (!all_masked && l > 0 && srow[l] == pad) continue;
        sc.row_id[R] = srow[l];
        sc.row_meta[R] = (int32_t)l | ((all_masked || srow[l] != pad) ? kKeyBit : 0);
        ++R;
      }
      if (lang) {
        sc.row_id[R] = -1;
        sc.row_meta[R] = (int32_t)L | kKeyBit;
        ++R;
      }
      sc.tok_u[2 * T] = (int32_t)(uint32_t)((uint64_t)u & 0xffffffffu);
      sc.tok_u[2 * T + 1] = (int32_t)((uint64_t)u >> 32);
      sc.tok_copy[T] = a->copy_ids ? a->copy_ids[u] : -1;
      ++T;
    }
    sc.tok_start[T] = (int32_t)R;
    if (T == 0) break; /* only copied tokens were left */
    /* Distinct ids. */
    for (int64_t i = 0; i < lo.hcap; ++i) sc.hkeys[i] = -1;
    int64_t D = 0;
    for (int64_t r = 0; r < R; ++r) sc.row_slot[r] = sc.row_id[r] >= 0 ? slot_of(sc, lo.hcap, &D, sc.row_id[r]) : -1;
    HN_TRY(run.chunk(sc, R, T, D));
  }
  if (a->copy_ids && !need_bias) HN_TRY(run.copies());
  return LMF_OK;
}

}  // extern "C"
