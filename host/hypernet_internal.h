/* Internal to liblmfuse: the hypernetwork object, its tensor-name table, the loader entry points and
 * the CPU backend of lmf_hypernet_predict / lmf_fvt_predict. */
#ifndef LMF_HOST_HYPERNET_INTERNAL_H
#define LMF_HOST_HYPERNET_INTERNAL_H

#include "internal.h"
#include "lmfuse/hypernet.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GEMM weights packed in panels of LMF_HN_NR output columns: element (k, n) of W^T, i.e. W[n][k] of a
 * PyTorch Linear weight [N][K], lives at p[(n / NR) * K * NR + k * NR + n % NR]; columns past N are 0. */
#define LMF_HN_NR 32

typedef struct lmf_hn_mat {
  int32_t n, k, npanels; /* output columns N, inputs K, ceil(N / NR) */
  float *p;              /* npanels * K * NR floats, 64-byte aligned */
} lmf_hn_mat;

/* Linear layer: packed weight + bias [N]. */
typedef struct lmf_hn_linear {
  lmf_hn_mat w;
  float *b;
} lmf_hn_linear;

/* ZeTT ProjectorBlock: LN_1e-6(x + gelu_tanh(dense2(gelu_tanh(dense1(x))))). */
typedef struct lmf_hn_projector {
  lmf_hn_linear dense1, dense2;
  float *ln_w, *ln_b;
} lmf_hn_projector;

typedef struct lmf_hn_layer {
  lmf_hn_linear q, k, v, o, ffn1, ffn2;
  float *ln1_w, *ln1_b, *ln2_w, *ln2_b;
} lmf_hn_layer;

struct lmf_hypernet {
  const struct lmf_context *ctx;
  lmf_hypernet_config_t cfg;  /* checked, num_heads resolved */
  int32_t n_in;               /* n_embd or 2 n_embd */
  int32_t n_fallback;         /* max(1, n_extra_tokens) */
  int32_t n_head_out;         /* columns of the e_in head: n_in with single_head, else n_embd */
  float *arena;               /* every fp32 weight below lives here */
  size_t arena_floats;

  float *in_scale_w, *in_scale_b;   /* [n_in] (rescale_embeddings) */
  float *scale_w, *scale_b;         /* [n_embd] */
  float *out_scale_w, *out_scale_b; /* [n_embd] (rescale + separate) */
  float *fallback;                  /* [n_fallback][n_in] */
  lmf_hn_linear in_linear;          /* n_in -> H */
  lmf_hn_projector in_block;
  float *pos;                       /* [max_position_embeddings][H] */
  float *type;                      /* [1][H] */
  float *emb_ln_w, *emb_ln_b;
  lmf_hn_layer *layers;             /* [num_layers] */
  lmf_hn_projector head_block;      /* output_projection.0 */
  lmf_hn_linear head_linear;        /* output_projection.1: H -> n_head_out */
  lmf_hn_projector out_block;       /* output_projection_out.0 (separate, not single head) */
  lmf_hn_linear out_linear;         /* output_projection_out.1 */
  float *bias_w, *bias_b;           /* [H], [1] (predict_bias) */
  float *lang;                      /* [n_langs][H] (embed_lang_id) */

  char **langs;                     /* config.json "langs", or NULL */
  int32_t num_langs_named;

  /* A CUDA context's hypernet (kernels/hypernet.cu): every weight pointer above is device memory, the
   * matrices unpacked (row-major [N][K] as PyTorch holds them; lmf_hn_mat.p, n, k; npanels unused),
   * each layer's query, key and value weights one [3H][H] matrix (q.w.p; k.w.p = q.w.p + H*H, v.w.p =
   * q.w.p + 2*H*H) and their biases one [3H] vector (q.b; k.b = q.b + H, v.b = q.b + 2*H). `arena`
   * is NULL and `dev` owns the device allocation. NULL on a CPU context. */
  void *dev;
};

/* ---- The tensor-name table (hypernet.c) --------------------------------------------------------- */

enum { LMF_HN_KIND_MATRIX = 0, LMF_HN_KIND_VECTOR = 1, LMF_HN_KIND_UNUSED = 2 };

typedef struct lmf_hn_entry {
  char name[128];
  int32_t ndim;
  int64_t shape[4];
  int64_t numel;
  int32_t kind;     /* MATRIX: a Linear weight [N][K], packed; VECTOR: copied as is; UNUSED: checked only */
  int32_t required;
  lmf_hn_mat *mat;  /* MATRIX: where it goes (inside the hypernet being built) */
  float **vec;      /* VECTOR: the pointer to set */
} lmf_hn_entry;

/* Builds the table of `cfg` (checked) for the hypernet `h` (NULL: the pointers stay NULL, for
 * counting). *entries is malloc'd. */
lmf_status_t lmf_hn_table(const lmf_hypernet_config_t *cfg, struct lmf_hypernet *h,
                          lmf_hn_entry **entries, size_t *count, const char *fn);

/* Checks a config struct from the caller and copies it, defaults past its struct_size, num_heads
 * resolved. */
lmf_status_t lmf_hn_config_normalize(const lmf_hypernet_config_t *in, lmf_hypernet_config_t *out,
                                     const char *fn);

/* Where tensor data comes from while a hypernet is built. */
typedef struct lmf_hn_source {
  /* Finds `name`: 1 and its dtype/shape, or 0 when absent. */
  int (*find)(void *self, const char *name, int32_t *dtype, int32_t *ndim, int64_t shape[4],
              void **handle);
  /* Number of tensors the source holds and the name of tensor i (for the unexpected-name check). */
  size_t (*count)(void *self);
  const char *(*name_at)(void *self, size_t i);
  /* Converts numel elements of the tensor to fp32 at dst. */
  lmf_status_t (*read)(void *self, void *handle, float *dst, int64_t numel, const char *fn);
  /* Optional: the source's own name of a found tensor's dtype (for messages), or NULL. */
  const char *(*dtype_name)(void *self, void *handle);
  const char *what; /* "safetensors file X" / "tensors" for messages */
  void *self;
  /* Optional: the found tensor's data exactly as the caller gave it (lmf_hypernet_create) and its dtype,
   * or NULL when the source has none (a file). The CUDA backend converts device memory on the device
   * and reads host memory through `read`. */
  const void *(*raw)(void *self, void *handle, int32_t *dtype);
} lmf_hn_source;

/* Builds a hypernetwork from a checked config and a source (hypernet.c): checks every tensor of the
 * table and every name of the source, then allocates, converts and packs. On failure *out is untouched
 * and nothing stays allocated. */
lmf_status_t lmf_hn_build(struct lmf_hypernet **out, const lmf_context_t *ctx,
                          const lmf_hypernet_config_t *cfg, const lmf_hn_source *src, const char *fn);

/* config.json parsing (hypernet_load.c): config + optional "langs" (malloc'd, or NULL). */
lmf_status_t lmf_hn_parse_config(const char *json, size_t length, lmf_hypernet_config_t *cfg,
                                 char ***langs, int32_t *num_langs, const char *fn, const char *what);

void lmf_hn_free_langs(char **langs, int32_t n);

/* ---- CPU backend (cpu/hypernet_cpu.c) ----------------------------------------------------------- */

/* Packs W [N][K] (row-major, fp32) into m (m->p allocated by the caller: npanels * K * NR floats). */
void lmf_hn_pack(lmf_hn_mat *m, const float *w);

/* Workspace bytes of one predict call with these sizes. 0 on overflow (never for valid sizes). */
size_t lmf_cpu_hypernet_workspace(const struct lmf_hypernet *h, int64_t num_tokens, int32_t surface_len);

/* Runs a checked call. workspace holds lmf_cpu_hypernet_workspace() bytes. */
lmf_status_t lmf_cpu_hypernet_predict(const struct lmf_hypernet *h, const lmf_hypernet_args_t *args,
                                      void *workspace);

/* Runs a checked FVT call. */
lmf_status_t lmf_cpu_fvt_predict(const lmf_context_t *ctx, const lmf_fvt_args_t *args);

/* ---- CUDA backend (kernels/hypernet.cu; host/cuda_stub.c in a CPU-only build) ------------------- */

/* lmf_hn_build on a CUDA context, after every tensor was checked: lays the weights out in one device
 * allocation (see `dev` above), sets every entry's pointer (e[i].mat->p / *e[i].vec) and matrix sizes,
 * converts and uploads every present tensor (handles[i]; NULL: absent), and sets h->dev. Synchronous.
 * On failure nothing stays allocated on the device and h->dev stays NULL. */
lmf_status_t lmf_cuda_hn_build(struct lmf_hypernet *h, const lmf_hn_entry *e, size_t n, void *const *handles,
                               const lmf_hn_source *src, const char *fn);
/* Frees h->dev (a no-op when NULL). */
void lmf_cuda_hn_free(struct lmf_hypernet *h);
/* Device workspace bytes of lmf_hypernet_predict with these sizes (0 for num_tokens 0). */
lmf_status_t lmf_cuda_hn_workspace(const struct lmf_hypernet *h, int64_t num_tokens, int32_t surface_len,
                                   size_t *bytes, const char *fn);
/* Checks where the memory of a call lives before anything reads it: surface_forms, copy_ids and
 * input_cache_valid must be readable by the host; source_in/out, out_in/out/bias, input_cache and the
 * workspace by the context's device. */
lmf_status_t lmf_cuda_hn_check_memory(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a,
                                      const void *workspace, const char *fn);
/* Enqueues a checked call (num_tokens >= 1) on `stream`; workspace: lmf_cuda_hn_workspace() bytes of
 * device memory, 64-byte aligned. */
lmf_status_t lmf_cuda_hn_predict(const struct lmf_hypernet *h, const lmf_hypernet_args_t *a, void *workspace,
                                 size_t workspace_bytes, lmf_stream_t stream);

/* ---- FVT and the embedding pipeline on CUDA (kernels/dyntok_embed.cu; host/cuda_stub.c) ---------- */

/* Where a pointer of a CUDA context's call must live (lmf_cuda_locate). */
enum { LMF_MEM_HOST = 0, LMF_MEM_DEVICE = 1, LMF_MEM_ANY = 2 };

/* Checks that p (NULL: nothing to check) is memory `want` allows on ctx's device (cudaPointerGetAttributes):
 * LMF_MEM_HOST: memory the host reads (not device memory); LMF_MEM_DEVICE: device memory of ctx's
 * device, managed memory or mapped pinned host memory; LMF_MEM_ANY: either (device memory of another
 * device is refused). *on_device (may be NULL) = 1 when the host must not write p directly (device or
 * managed memory: copy with lmf_cuda_copy), else 0. The message names `name` and `fn`. */
lmf_status_t lmf_cuda_locate(const lmf_context_t *ctx, const void *p, const char *name, int want,
                             int *on_device, const char *fn);

/* Enqueues a checked FVT call (num_tokens >= 1; offsets, ids, copy_ids host memory; the rest device
 * memory, all located) on `stream`. The index arrays travel as kernel parameters: nothing allocated. */
lmf_status_t lmf_cuda_fvt_predict(const lmf_context_t *ctx, const lmf_fvt_args_t *a, lmf_stream_t stream);

/* One gather of rows into out [rows][n_embd] (out_dtype), all device memory: row r is
 *   codes[r] >= 0:  source row codes[r] (source_dtype, at source_row_stride), converted (a plain copy
 *                   when the dtypes match);
 *   codes[r] == -1: zeros;
 *   codes[r] <= -2: row -2 - codes[r] of preds (f32 [..][n_embd]), converted;
 * codes NULL: row r is preds row r. */
typedef struct lmf_embed_gather {
  int64_t rows;
  int32_t n_embd;
  const int32_t *codes;
  const void *source;
  int64_t source_row_stride;
  int32_t source_dtype;
  const float *preds;
  void *out;
  int32_t out_dtype;
} lmf_embed_gather;

/* Enqueues the gather on `stream` (rows >= 1). */
lmf_status_t lmf_cuda_embed_gather(const lmf_context_t *ctx, const lmf_embed_gather *g, lmf_stream_t stream,
                                   const char *fn);
/* cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, stream) on ctx's device (bytes 0: nothing). */
lmf_status_t lmf_cuda_copy(const lmf_context_t *ctx, void *dst, const void *src, size_t bytes,
                           lmf_stream_t stream, const char *fn);
/* cudaStreamSynchronize(stream) on ctx's device, naming fn. */
lmf_status_t lmf_cuda_sync(const lmf_context_t *ctx, lmf_stream_t stream, const char *fn);

#ifdef __cplusplus
}
#endif

#endif
