/* FVT (lmf_fvt_predict) and the last step of lmf_dyntok_embed / lmf_dyntok_pipeline on CUDA
 * (host/hypernet_internal.h; host/hypernet.c and host/dyntok_embed.c do the checks and the planning).
 *
 * lmf_cuda_fvt_predict enqueues on the caller's stream and returns: no device allocation, no host
 * synchronisation. The host plans: each token becomes an entry (its row, a flag word and its id list,
 * ids outside [0, source_rows) already replaced by unk_id, a copied or empty token as one COPY id), and
 * entries are packed into parameter blocks (about 30 KiB of ints) passed to k_fvt by value, as
 * kernels/hypernet.cu's k_upload does: kernel parameters are copied when the launch is enqueued, so the
 * caller may reuse its host arrays at once and no pageable cudaMemcpyAsync (which may synchronise) is
 * needed. A decomposition too long for one block is split over consecutive launches on the stream: the
 * first part starts from 0, the later ones add to the partial sums in out (stream order), the last one
 * divides. Each element is summed in fp32 in decomposition order from 0.0f, then divided by (float)n,
 * exactly the CPU's expressions (host/cpu/hypernet_cpu.c; the build uses --fmad=false and IEEE
 * division), so the results are the CPU's bit for bit; copied rows are the source rows converted by the
 * same functions (kernels/common/half_convert.h).
 *
 * lmf_cuda_embed_gather writes rows of inputs_embeds (or of the new tokens' e_out) from a source
 * matrix, from f32 predictions, or zeros, converting with round-to-nearest-even (a plain copy when the
 * dtypes match): one block per row, threads across the row.
 */
#include <cuda_runtime.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/common/half_convert.h"
#include "hypernet_internal.h"

#include "cuda_check.cuh"

namespace {

constexpr int kThreads = 256;                  /* every kernel's block */
constexpr int kParamInts = 7680;               /* ints a parameter block carries */
constexpr int kMetaInts = 4;                   /* per entry: row (lo, hi), flags, divisor bits */

enum { FVT_FIRST = 1, FVT_LAST = 2, FVT_COPY = 4 };

/* Kernel parameters are copied into the launch when it is enqueued: up to 32,764 bytes on sm_70 and
 * newer (CUDA 12.1+). Layout: v[0] = entries ne; entry e's meta at v[1 + 4e .. 1 + 4e + 4); the start
 * of entry e's ids at v[1 + 4 ne + e] (e = 0 .. ne: the last is the end); the ids after that. */
struct ParamBlock {
  int32_t v[kParamInts];
};

struct FvtArgs {
  const void *src_in, *src_out; /* src_out may be NULL */
  float *out_in, *out_out;
  int64_t stride; /* source row stride (elements) */
  int32_t E;
};
static_assert(sizeof(ParamBlock) + sizeof(FvtArgs) + 64 <= 32764, "kernel parameter space");

/* Element i of a source matrix as fp32 (the CPU's load_src: the same conversions, the same bits). */
template <int DT>
__device__ __forceinline__ float src_at(const void *p, int64_t i) {
  if (DT == LMF_DTYPE_F32) return static_cast<const float *>(p)[i];
  const uint16_t h = static_cast<const uint16_t *>(p)[i];
  return DT == LMF_DTYPE_F16 ? lmf_f16_to_f32(h) : lmf_bf16_to_f32(h);
}

/* One side (E_in -> out_in, or E_out -> out_out) of entry e's row. */
template <int DT>
__device__ __forceinline__ void fvt_side(const ParamBlock &pb, int32_t i0, int32_t i1, int32_t flags, float fn,
                                         const void *src, float *o, int64_t stride, int32_t E) {
  for (int j = threadIdx.x; j < E; j += kThreads) {
    if (flags & FVT_COPY) {
      o[j] = src_at<DT>(src, (int64_t)pb.v[i0] * stride + j);
      continue;
    }
    float acc = (flags & FVT_FIRST) ? 0.0f : o[j];
    for (int32_t i = i0; i < i1; ++i) acc += src_at<DT>(src, (int64_t)pb.v[i] * stride + j);
    if (flags & FVT_LAST) acc = acc / fn;
    o[j] = acc;
  }
}

/* One block per entry of the parameter block (kThreads threads). __maxnreg__ rather than
 * __launch_bounds__: with a 30 KiB parameter block ptxas for sm_80 otherwise caps the kernel at 32
 * registers and spills. */
template <int DT>
__global__ void __maxnreg__(64) k_fvt(const ParamBlock pb, const FvtArgs a) {
  const int32_t ne = pb.v[0];
  for (int32_t e = blockIdx.x; e < ne; e += gridDim.x) {
    const int32_t m = 1 + kMetaInts * e;
    const int64_t u = (int64_t)(((uint64_t)(uint32_t)pb.v[m + 1] << 32) | (uint64_t)(uint32_t)pb.v[m]);
    const int32_t flags = pb.v[m + 2];
    const float fn = __int_as_float(pb.v[m + 3]);
    const int32_t i0 = pb.v[1 + kMetaInts * ne + e], i1 = pb.v[2 + kMetaInts * ne + e];
    fvt_side<DT>(pb, i0, i1, flags, fn, a.src_in, a.out_in + u * a.E, a.stride, a.E);
    if (a.src_out) fvt_side<DT>(pb, i0, i1, flags, fn, a.src_out, a.out_out + u * a.E, a.stride, a.E);
  }
}

/* out element as fp32 -> ODT (round to nearest even). */
template <int ODT>
__device__ __forceinline__ void put_out(void *out, int64_t i, float x) {
  if (ODT == LMF_DTYPE_F32)
    static_cast<float *>(out)[i] = x;
  else if (ODT == LMF_DTYPE_F16)
    static_cast<uint16_t *>(out)[i] = lmf_f32_to_f16(x);
  else
    static_cast<uint16_t *>(out)[i] = lmf_f32_to_bf16(x);
}

/* Rows of out from the source (SDT), the predictions (f32) or zeros: host/dyntok_embed.c's put_row. */
template <int SDT, int ODT>
__global__ void __launch_bounds__(kThreads) k_embed_gather(const lmf_embed_gather g) {
  const int32_t E = g.n_embd;
  for (int64_t r = blockIdx.x; r < g.rows; r += gridDim.x) {
    const int32_t code = g.codes ? g.codes[r] : (int32_t)(-2 - r);
    const int64_t o = r * E;
    if (code == -1) {
      for (int j = threadIdx.x; j < E; j += kThreads) {
        if (ODT == LMF_DTYPE_F32)
          static_cast<float *>(g.out)[o + j] = 0.0f;
        else
          static_cast<uint16_t *>(g.out)[o + j] = 0;
      }
    } else if (code >= 0) {
      const int64_t s = (int64_t)code * g.source_row_stride;
      for (int j = threadIdx.x; j < E; j += kThreads) {
        if (SDT == ODT) { /* a plain copy, bit for bit */
          if (ODT == LMF_DTYPE_F32)
            static_cast<float *>(g.out)[o + j] = static_cast<const float *>(g.source)[s + j];
          else
            static_cast<uint16_t *>(g.out)[o + j] = static_cast<const uint16_t *>(g.source)[s + j];
        } else {
          put_out<ODT>(g.out, o + j, src_at<SDT>(g.source, s + j));
        }
      }
    } else {
      const float *p = g.preds + (int64_t)(-2 - (int64_t)code) * E;
      for (int j = threadIdx.x; j < E; j += kThreads) put_out<ODT>(g.out, o + j, p[j]);
    }
  }
}

/* ---- Host helpers ---------------------------------------------------------------------------------- */

lmf_status_t launch_fvt(const ParamBlock *pb, const FvtArgs &fa, int32_t dtype, cudaStream_t s, int device,
                        const char *fn) {
  const unsigned grid = grid_for(pb->v[0]);
  switch (dtype) {
    case LMF_DTYPE_F16: k_fvt<LMF_DTYPE_F16><<<grid, kThreads, 0, s>>>(*pb, fa); break;
    case LMF_DTYPE_BF16: k_fvt<LMF_DTYPE_BF16><<<grid, kThreads, 0, s>>>(*pb, fa); break;
    default: k_fvt<LMF_DTYPE_F32><<<grid, kThreads, 0, s>>>(*pb, fa); break;
  }
  return launched(fn, "k_fvt", device);
}

template <int SDT>
void gather_launch(const lmf_embed_gather &g, unsigned grid, cudaStream_t s) {
  switch (g.out_dtype) {
    case LMF_DTYPE_F16: k_embed_gather<SDT, LMF_DTYPE_F16><<<grid, kThreads, 0, s>>>(g); break;
    case LMF_DTYPE_BF16: k_embed_gather<SDT, LMF_DTYPE_BF16><<<grid, kThreads, 0, s>>>(g); break;
    default: k_embed_gather<SDT, LMF_DTYPE_F32><<<grid, kThreads, 0, s>>>(g); break;
  }
}

}  // namespace

extern "C" {

lmf_status_t lmf_cuda_locate(const lmf_context_t *ctx, const void *p, const char *name, int want,
                             int *on_device, const char *fn) {
  if (on_device) *on_device = 0;
  if (!p) return LMF_OK;
  const int device = ctx->device;
  lmf_status_t st = set_device(device, fn);
  if (st != LMF_OK) return st;
  cudaPointerAttributes at;
  const cudaError_t e = cudaPointerGetAttributes(&at, p);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return lmf_fail(LMF_ERR_CUDA, "%s: cudaPointerGetAttributes(%s) failed on device %d: %s (%s)", fn, name,
                    device, cudaGetErrorString(e), cudaGetErrorName(e));
  }
  const int is_dev = at.type == cudaMemoryTypeDevice;
  if (is_dev && at.device != device && want != LMF_MEM_HOST)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: %s is memory of device %d; this context runs on device %d", fn,
                    name, at.device, device);
  if (want == LMF_MEM_HOST) {
    if (is_dev)
      return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                      "%s: %s is device memory; on a CUDA context the host reads it to plan the call: pass host "
                      "memory",
                      fn, name);
    return LMF_OK;
  }
  if (want == LMF_MEM_DEVICE) {
    if (is_dev || at.type == cudaMemoryTypeManaged) return LMF_OK;
    if (at.type == cudaMemoryTypeHost && at.devicePointer == p) return LMF_OK; /* mapped pinned memory */
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: %s is host memory; on a CUDA context it must be device memory of device %d (or managed "
                    "memory)",
                    fn, name, device);
  }
  if (on_device) *on_device = is_dev || at.type == cudaMemoryTypeManaged;
  return LMF_OK;
}

lmf_status_t lmf_cuda_fvt_predict(const lmf_context_t *ctx, const lmf_fvt_args_t *a, lmf_stream_t stream) {
  const char *fn = "lmf_fvt_predict (CUDA)";
  const int64_t U = a->num_tokens;
  if (U <= 0) return LMF_OK;
  const int device = ctx->device;
  lmf_status_t st = set_device(device, fn);
  if (st != LMF_OK) return st;
  ParamBlock *pb = static_cast<ParamBlock *>(malloc(sizeof(ParamBlock))); /* 30 KiB: not on the stack */
  /* The entries of the block being filled: row, flags, divisor, ids [i0, i1) of a->ids or one row. */
  struct Entry {
    int64_t u;
    int32_t flags;
    float fn;
    int64_t i0, i1; /* into a->ids; COPY: i0 = the row */
  };
  constexpr int kMaxEntries = (kParamInts - 2) / (kMetaInts + 2);
  Entry *ent = static_cast<Entry *>(malloc(sizeof(Entry) * kMaxEntries));
  if (!pb || !ent) {
    free(pb);
    free(ent);
    return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (%zu bytes of launch parameters)", fn,
                    sizeof(ParamBlock) + sizeof(Entry) * kMaxEntries);
  }
  FvtArgs fa;
  fa.src_in = a->source_in;
  fa.src_out = a->source_out;
  fa.out_in = a->out_in;
  fa.out_out = a->out_out;
  fa.stride = a->source_row_stride;
  fa.E = a->n_embd;
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  int64_t u = 0, pos = 0; /* the next token, and how much of its decomposition earlier blocks took */
  while (u < U && st == LMF_OK) {
    int32_t ne = 0;
    int64_t nid = 0;
    while (u < U && ne < kMaxEntries) {
      const int32_t cp = a->copy_ids ? a->copy_ids[u] : -1;
      const int64_t b = a->offsets[u], n = a->offsets[u + 1] - b;
      const int64_t used = 2 + (int64_t)(kMetaInts + 1) * (ne + 1) + nid; /* with one more entry */
      if (cp >= 0 || n == 0) {
        if (used + 1 > kParamInts) break;
        ent[ne++] = Entry{u, FVT_COPY, 1.0f, cp >= 0 ? cp : a->unk_id, 0};
        nid += 1;
        ++u;
        continue;
      }
      const int64_t rest = n - pos, room = kParamInts - used;
      if (room < 1 || (rest > room && ne > 0)) break; /* split a token only in a block of its own */
      const int64_t take = rest < room ? rest : room;
      int32_t flags = 0;
      if (pos == 0) flags |= FVT_FIRST;
      if (pos + take == n) flags |= FVT_LAST;
      ent[ne++] = Entry{u, flags, (float)n, b + pos, b + pos + take};
      nid += take;
      pos += take;
      if (pos == n) {
        pos = 0;
        ++u;
      }
    }
    /* Pack: meta, starts, ids (out-of-range ids as unk_id, as the CPU reads them). */
    pb->v[0] = ne;
    int32_t w = 2 + (kMetaInts + 1) * ne;
    for (int32_t e = 0; e < ne; ++e) {
      const Entry &x = ent[e];
      int32_t *m = pb->v + 1 + kMetaInts * e;
      m[0] = (int32_t)(uint32_t)((uint64_t)x.u & 0xffffffffu);
      m[1] = (int32_t)(uint32_t)((uint64_t)x.u >> 32);
      m[2] = x.flags;
      memcpy(&m[3], &x.fn, sizeof(float));
      pb->v[1 + kMetaInts * ne + e] = w;
      if (x.flags & FVT_COPY) {
        pb->v[w++] = (int32_t)x.i0;
      } else {
        for (int64_t i = x.i0; i < x.i1; ++i) {
          const int32_t id = a->ids[i];
          pb->v[w++] = id < 0 || id >= a->source_rows ? a->unk_id : id;
        }
      }
    }
    pb->v[1 + kMetaInts * ne + ne] = w;
    st = launch_fvt(pb, fa, a->source_dtype, s, device, fn);
  }
  free(pb);
  free(ent);
  return st;
}

lmf_status_t lmf_cuda_embed_gather(const lmf_context_t *ctx, const lmf_embed_gather *g, lmf_stream_t stream,
                                   const char *fn) {
  if (g->rows <= 0) return LMF_OK;
  const int device = ctx->device;
  lmf_status_t st = set_device(device, fn);
  if (st != LMF_OK) return st;
  const unsigned grid = grid_for(g->rows);
  const cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (g->source_dtype) {
    case LMF_DTYPE_F16: gather_launch<LMF_DTYPE_F16>(*g, grid, s); break;
    case LMF_DTYPE_BF16: gather_launch<LMF_DTYPE_BF16>(*g, grid, s); break;
    default: gather_launch<LMF_DTYPE_F32>(*g, grid, s); break;
  }
  return launched(fn, "k_embed_gather", device);
}

lmf_status_t lmf_cuda_copy(const lmf_context_t *ctx, void *dst, const void *src, size_t bytes,
                           lmf_stream_t stream, const char *fn) {
  if (bytes == 0) return LMF_OK;
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  const cudaError_t e =
      cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, reinterpret_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return cuda_fail(LMF_ERR_CUDA, fn, "cudaMemcpyAsync", ctx->device, e);
  return LMF_OK;
}

lmf_status_t lmf_cuda_sync(const lmf_context_t *ctx, lmf_stream_t stream, const char *fn) {
  lmf_status_t st = set_device(ctx->device, fn);
  if (st != LMF_OK) return st;
  const cudaError_t e = cudaStreamSynchronize(reinterpret_cast<cudaStream_t>(stream));
  if (e != cudaSuccess) return cuda_fail(LMF_ERR_CUDA, fn, "cudaStreamSynchronize", ctx->device, e);
  return LMF_OK;
}

}  // extern "C"
