/*
 * lmfuse hypernet: embeddings for new tokens, predicted by a ZeTT hypernetwork (Minixhofer et al.,
 * "Zero-Shot Tokenizer Transfer", 2024; the released PyTorch module hf_hypernet/modeling_hypernet.py),
 * and the FVT baseline (the mean of the decomposition's source embeddings).
 * Semantics, the tensor-name table and examples: docs/hypernet.md; the spec: specs/hypernetwork.md.
 *
 * Forward pass (fp32), for surface forms S int32 [U][L] (ids of the ORIGINAL vocabulary, already
 * decomposed, truncated and right-padded with pad_token_id) and source embeddings E_src [V0][n_in]
 * (n_in = 2 n_embd, [E_in | E_out], with separate output embeddings, else n_embd):
 *
 *   x    = S >= V0 ? fallback[S - V0] : in_scaler(E_src[S])       (in_scaler: w * x + b, if rescaling)
 *   x    = ProjectorBlock(Linear(n_in -> H)(x))       ProjectorBlock(x) = LN_1e-6(x + gelu_tanh(
 *                                                        Dense2(gelu_tanh(Dense1(x)))))   H -> I -> H
 *   h    = LN_1e-5((x + type[0]) + pos[l])            position l = 0 .. L-1
 *   [language embedding: one more position L holding lang[lang_index], never masked, whose type and
 *    position embeddings cancel]
 *   h    = num_layers post-LN RoBERTa layers over h: multi-head attention (keys where S == pad_token_id
 *          are masked; a row whose every key is masked attends uniformly, as the reference's additive
 *          finfo.min mask does) -> + h -> LN_1e-5 -> Linear H->I, erf GELU, Linear I->H -> + -> LN_1e-5
 *   p    = h[:, 0]
 *   e_in  = scaler(Linear(H -> n_embd)(ProjectorBlock_a(p)))
 *   e_out = out_scaler(Linear(H -> n_embd)(ProjectorBlock_b(p)))        separate output embeddings only
 *   bias  = Linear(H -> 1)(p)                                           0 when predict_bias is off
 * (single_head: one head Linear(H -> n_in) whose first n_embd columns are e_in, the rest e_out.)
 *
 * Exact savings, the results unchanged: the input projection (the first two lines) depends only on the
 * id and is computed once per distinct id in a call (and, with a caller cache, once per id across
 * calls); padded positions are never computed, since nothing reads them (only their masked keys would
 * be, and those get weight 0); in the last layer only position 0 runs past the attention's keys and
 * values.
 *
 * Weights are loaded from the released format (config.json + model.safetensors, tensors named as the
 * PyTorch module's state_dict, F32/F16/BF16, converted to fp32) or copied from caller memory. Either
 * way every tensor is checked (missing, unexpected, wrong shape, unsupported dtype, truncated data),
 * and on any failure nothing is created. A hypernet is immutable after creation: concurrent
 * lmf_hypernet_predict calls on one hypernet are safe if they use different workspaces and caches.
 *
 * Backends: the CPU backend (OpenMP; cache-blocked GEMMs with AVX-512 / AVX2 micro-kernels chosen at
 * run time, plain C otherwise), and the CUDA backend on a CUDA context: the weights are uploaded once
 * as fp32 (lmf_hypernet_load / _create synchronize), the GEMMs run through cuBLAS (fp32, or TF32 with
 * args->allow_tf32), everything else in lmfuse's kernels, with the same savings as on the CPU;
 * lmf_hypernet_predict enqueues on `stream` and returns, allocating nothing on the device and never
 * synchronizing. Results agree with the CPU backend within 5e-5 of the outputs' RMS in fp32 (GEMM
 * summation order), about 1e-2 in TF32; copied rows are exact. FVT on CUDA
 * (lmf_fvt_predict) gives the CPU's results bit for bit.
 * Memory: host memory on a CPU context. On a CUDA context: source_in / source_out, out_in / out_out /
 * out_bias, input_cache and the workspace are device memory of the context's device (managed memory
 * works too); surface_forms, copy_ids and input_cache_valid are host memory: the host reads the ids to
 * plan the call (which rows and which distinct ids to compute). Each is checked
 * (cudaPointerGetAttributes) before anything is read. lmf_hypernet_create's tensors may be host or
 * device memory (told apart the same way; device tensors are converted on the device).
 */
#ifndef LMFUSE_HYPERNET_H
#define LMFUSE_HYPERNET_H

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Configuration (the ZeTT config.json fields) ------------------------------------------------ */

#define LMF_HYPERNET_CONFIG_VERSION 1u

/* Rows of the RoBERTa position table (roberta-base's max_position_embeddings), the default of
 * lmf_hypernet_config_t.max_position_embeddings. */
#define LMF_HYPERNET_DEFAULT_MAX_POSITIONS 514

typedef struct lmf_hypernet_config {
  size_t struct_size;              /* sizeof(lmf_hypernet_config_t) */
  uint32_t version;                /* LMF_HYPERNET_CONFIG_VERSION */
  int32_t num_layers;              /* hn_n_layers, 1 .. 64; default 3 */
  int32_t hidden_size;             /* hn_hidden_size H >= 1; no default (0 must be set) */
  int32_t intermediate_size;       /* hn_intermediate_size I >= 1; no default (0 must be set) */
  int32_t num_heads;               /* hn_num_attention_heads, dividing H; 0 (default): H / 64, as the
                                      module does when the field is null */
  int32_t n_embd;                  /* the model's embedding width >= 1; default 768 */
  int32_t surface_maxlen;          /* hn_surface_maxlen; default 16. Informational: the decomposer
                                      truncates to it; lmf_hypernet_predict takes any L that fits */
  int32_t pad_token_id;            /* pad id of S, in [0, V0); default -1 (must be set) */
  int32_t original_vocab_size;     /* V0 >= 1: ids >= V0 index the fallback rows; default 0 (unset) */
  int32_t n_extra_tokens;          /* hn_n_extra_tokens >= 0; max(1, this) fallback rows; default 0 */
  int32_t separate_out_embeddings; /* 1: untied model, n_in = 2 n_embd, e_out predicted; default 0 */
  int32_t rescale_embeddings;      /* hn_rescale_embeddings: in_scaler / scaler / out_scaler; default 0 */
  int32_t predict_bias;            /* hn_predict_bias: bias_projection; default 1 */
  int32_t single_head;             /* hn_single_head: one output head H -> n_in; default 0 */
  int32_t embed_lang_id;           /* hn_embed_lang_id: language embedding position; default 0 */
  int32_t n_langs;                 /* rows of lang_embeddings (>= 1 with embed_lang_id); default 0 */
  int32_t max_position_embeddings; /* rows of model.embeddings.position_embeddings; default 514. Not read
                                      from config.json, whose field of that name is the downstream
                                      model's */
} lmf_hypernet_config_t;

#define LMF_HYPERNET_CONFIG_INIT                                                                  \
  { sizeof(lmf_hypernet_config_t), LMF_HYPERNET_CONFIG_VERSION, 3, 0, 0, 0, 768, 16, -1, 0, 0, 0, 0, \
    1, 0, 0, 0, LMF_HYPERNET_DEFAULT_MAX_POSITIONS }

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_hypernet_config_init(lmf_hypernet_config_t *config, size_t struct_size);

/* Parses a ZeTT config.json held in memory (`length` bytes; need not be NUL-terminated) into *config,
 * which must have a valid struct_size/version (lmf_hypernet_config_init): every field is first reset
 * to its default, then set from the JSON. Fields read: hn_n_layers, hn_hidden_size,
 * hn_intermediate_size, hn_num_attention_heads (null: 0), n_embd, hn_surface_maxlen, pad_token_id,
 * original_vocab_size, hn_n_extra_tokens, separate_out_embeddings, hn_rescale_embeddings,
 * hn_predict_bias, hn_single_head, hn_embed_lang_id, n_langs. Variants the released module cannot run
 * are refused (LMF_ERR_INVALID_ARGUMENT, naming the field): hn_embed_using_source_embeddings false or
 * absent, hn_model_type other than "roberta", hn_concat_last_hidden_state, hn_embed_target_priors or
 * hn_add_inter_token_attention true. Other fields are ignored. The result is checked as by
 * lmf_hypernet_config_check. Malformed JSON or a field of the wrong JSON type is LMF_ERR_PARSE. On
 * failure *config is unchanged. */
LMF_API lmf_status_t lmf_hypernet_config_from_json(lmf_hypernet_config_t *config, const char *json,
                                                   size_t length);
/* The same from a file (LMF_ERR_IO when it cannot be read). */
LMF_API lmf_status_t lmf_hypernet_config_from_file(lmf_hypernet_config_t *config, const char *path);

/* Checks a configuration: sizes positive and within int32 products, heads dividing H, pad id in
 * [0, V0), n_langs with embed_lang_id, flags 0 or 1. The message names the field. */
LMF_API lmf_status_t lmf_hypernet_config_check(const lmf_hypernet_config_t *config);

/* Number of parameters of the architecture (the sum of the element counts of every tensor of the
 * name table, the unused word_embeddings included, as the released checkpoints hold them). Allocates
 * no weights: 677,740,545 for the Mistral-7B hypernet, 20,634,625 for the XLM-R one. */
LMF_API lmf_status_t lmf_hypernet_param_count(const lmf_hypernet_config_t *config, int64_t *count);

/* The tensor-name table of a configuration (docs/hypernet.md): *count entries, in a fixed order. */
LMF_API lmf_status_t lmf_hypernet_tensor_count(const lmf_hypernet_config_t *config, size_t *count);
/* Entry `index` of the table: its name (NUL-terminated, truncated to name_capacity - 1 bytes; 128 bytes
 * always suffice), its PyTorch shape (*ndim <= 4 dimensions in shape[0 .. ndim-1]) and *required (0
 * only for model.embeddings.word_embeddings.weight, which the forward pass never reads). Any output
 * pointer may be NULL. */
LMF_API lmf_status_t lmf_hypernet_tensor_info(const lmf_hypernet_config_t *config, size_t index,
                                             char *name, size_t name_capacity, int32_t *ndim,
                                             int64_t shape[4], int32_t *required);

/* ---- Hypernetworks ----------------------------------------------------------------------------- */

typedef struct lmf_hypernet lmf_hypernet_t;

/* One tensor given by pointer to lmf_hypernet_create. A fixed-size record. */
typedef struct lmf_hypernet_tensor {
  const char *name;  /* the ZeTT (PyTorch state_dict) name, e.g. "input_projection.0.weight" */
  const void *data;  /* contiguous, row-major; host memory (CPU context), host or device memory (CUDA
                        context: device tensors must be ready, e.g. their stream synchronized) */
  int32_t dtype;     /* LMF_DTYPE_F32, LMF_DTYPE_F16 or LMF_DTYPE_BF16 */
  int32_t ndim;      /* 1 .. 4 */
  int64_t shape[4];  /* the first ndim entries; must equal the table's shape */
} lmf_hypernet_tensor_t;

/* Loads a released hypernetwork directory: dir/config.json and dir/model.safetensors. */
LMF_API lmf_status_t lmf_hypernet_load(lmf_hypernet_t **out, lmf_context_t *ctx, const char *dir);
/* The same from explicit paths. config.json may also hold "langs" (an array of language codes, for
 * lmf_hypernet_lang_index). Every tensor of the table must be present in the safetensors file
 * (except the unused word embeddings), with the table's shape and dtype F32, F16 or BF16; the
 * buffers model.embeddings.position_ids / token_type_ids (written by older transformers) are ignored;
 * any other tensor is an error (a checkpoint of another configuration). Statuses: LMF_ERR_IO (a file
 * cannot be opened or is shorter than its header says), LMF_ERR_PARSE (bad header or config JSON, a
 * tensor whose byte range does not match its shape), LMF_ERR_INVALID_ARGUMENT (a missing, unexpected
 * or mis-shaped tensor), LMF_ERR_UNSUPPORTED_DTYPE, and on a CUDA context LMF_ERR_OUT_OF_MEMORY /
 * LMF_ERR_CUDA (the device copy); the message names the file and the tensor. On failure *out is
 * untouched and nothing stays allocated. */
LMF_API lmf_status_t lmf_hypernet_load_files(lmf_hypernet_t **out, lmf_context_t *ctx,
                                             const char *config_path, const char *weights_path);
/* Builds a hypernetwork from caller memory: the tensors (any order, each name once) are checked as
 * the loader checks a file's, then converted to fp32 and copied, so the caller's memory may be freed
 * afterwards. On a CUDA context each tensor may be host or device memory (of the context's device);
 * the copy is made before the call returns. */
LMF_API lmf_status_t lmf_hypernet_create(lmf_hypernet_t **out, lmf_context_t *ctx,
                                         const lmf_hypernet_config_t *config,
                                         const lmf_hypernet_tensor_t *tensors, size_t num_tensors);
/* NULL is a no-op. The context must outlive the hypernetwork. */
LMF_API void lmf_hypernet_destroy(lmf_hypernet_t *hypernet);

/* Copies the hypernetwork's configuration (num_heads resolved) into *config (struct_size set). */
LMF_API lmf_status_t lmf_hypernet_get_config(const lmf_hypernet_t *hypernet,
                                             lmf_hypernet_config_t *config);
/* Index of language code `lang` in config.json's "langs" (the lang_index of lmf_hypernet_args_t).
 * LMF_ERR_INVALID_STATE when the hypernetwork has no language list, LMF_ERR_INVALID_ARGUMENT when the
 * code is not in it. */
LMF_API lmf_status_t lmf_hypernet_lang_index(const lmf_hypernet_t *hypernet, const char *lang,
                                             int32_t *index);

#define LMF_HYPERNET_ARGS_VERSION 1u

/* One prediction call. Source rows: row r of E_in is source_in + r * source_row_stride elements (the
 * first n_embd used), of E_out likewise from source_out; a concatenated [V0][2 n_embd] matrix is
 * source_in = E, source_out = E + n_embd, source_row_stride = 2 n_embd. */
typedef struct lmf_hypernet_args {
  size_t struct_size;            /* sizeof(lmf_hypernet_args_t) */
  uint32_t version;              /* LMF_HYPERNET_ARGS_VERSION */
  int64_t num_tokens;            /* U >= 0 (0: nothing to do) */
  int32_t surface_len;           /* L >= 1, L + embed_lang_id <= max_position_embeddings */
  const int32_t *surface_forms;  /* [U][L] ids in [0, V0 + fallback rows) */
  const void *source_in;         /* E_in rows [source_rows] */
  const void *source_out;        /* E_out rows: required with separate_out_embeddings, else NULL */
  int32_t source_dtype;          /* LMF_DTYPE_F32, F16 or BF16 (both matrices) */
  int64_t source_rows;           /* rows readable, >= V0 */
  int64_t source_row_stride;     /* elements between rows, >= n_embd; 0: n_embd */
  int32_t lang_index;            /* with embed_lang_id: in [0, n_langs); else ignored */
  const int32_t *copy_ids;       /* optional [U]: -1 predicts; an id in [0, V0) copies that source row
                                    to e_in (and e_out) instead: special tokens. The bias is still
                                    predicted (as ZeTT's transfer script keeps it) */
  float *input_cache;            /* optional [V0 + fallback rows][H]: input projections by id, read
                                    where input_cache_valid[id] is 1, else computed, written and
                                    flagged. Valid for one (hypernet, E_src) pair: clear the flags when
                                    either changes. CUDA: device memory; a flag is set once the row's
                                    write is enqueued, so calls sharing a cache use one stream (or
                                    order theirs) */
  uint8_t *input_cache_valid;    /* [V0 + fallback rows], required with input_cache; host memory */
  float *out_in;                 /* [U][n_embd] e_in, required */
  float *out_out;                /* [U][n_embd] e_out: optional, only with separate_out_embeddings */
  float *out_bias;               /* optional [U]; 0 when the hypernet does not predict a bias */
  int32_t allow_tf32;            /* CUDA: 1 lets cuBLAS run the GEMMs in TF32 (inputs rounded to 10-bit
                                    mantissas, fp32 accumulation): several times faster, outputs within
                                    about 1e-2 of their RMS of the fp32 ones (docs/hypernet.md, "CUDA
                                    backend"); 0 (default): fp32 GEMMs. Ignored on the CPU */
} lmf_hypernet_args_t;

#define LMF_HYPERNET_ARGS_INIT                                                                    \
  { sizeof(lmf_hypernet_args_t), LMF_HYPERNET_ARGS_VERSION, 0, 0, NULL, NULL, NULL, LMF_DTYPE_F32, 0, \
    0, -1, NULL, NULL, NULL, NULL, NULL, NULL, 0 }

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_hypernet_args_init(lmf_hypernet_args_t *args, size_t struct_size);

/* Bytes of workspace lmf_hypernet_predict needs for args (only num_tokens and surface_len are read;
 * tokens are processed in chunks, so it grows with U only up to about 512 positions on the CPU). On a
 * CUDA context: device bytes, for chunks of up to 4096 positions plus 32 MiB for cuBLAS (about 700 MB
 * at the Mistral-7B hypernet's widths, 160 MB at XLM-R's, for large U). */
LMF_API lmf_status_t lmf_hypernet_workspace_size(const lmf_hypernet_t *hypernet,
                                                 const lmf_hypernet_args_t *args, size_t *bytes);

/* Predicts e_in (and e_out, bias) for every token. Checks every argument first (ids, copy ids, sizes,
 * overlapping outputs, and on CUDA where each pointer lives); on a bad argument nothing is written.
 * workspace: at least lmf_hypernet_workspace_size bytes, 64-byte aligned, or NULL with workspace_bytes
 * 0 to let the CPU backend allocate (and free) it itself; a CUDA context needs it (device memory). On
 * the CPU the call returns when done (the stream is ignored); on CUDA it enqueues on `stream` and
 * returns: the host-side arrays may be reused at once, the device ones once the stream is done. */
LMF_API lmf_status_t lmf_hypernet_predict(const lmf_hypernet_t *hypernet,
                                          const lmf_hypernet_args_t *args, void *workspace,
                                          size_t workspace_bytes, lmf_stream_t stream);

/* ---- FVT: the mean of the decomposition's source embeddings ------------------------------------- */

#define LMF_FVT_ARGS_VERSION 1u

/* Token u's decomposition is ids[offsets[u] .. offsets[u+1]) (the layout of lmf_dyntok's DECOMP
 * fields). e_in[u] = mean of E_in over it (e_out likewise from E_out), summed in fp32 in order, then
 * divided by the count. An id outside [0, source_rows) counts as unk_id; an empty decomposition gives
 * the unk_id row. copy_ids[u] >= 0 (a token already in the source vocabulary) copies that row. */
typedef struct lmf_fvt_args {
  size_t struct_size;        /* sizeof(lmf_fvt_args_t) */
  uint32_t version;          /* LMF_FVT_ARGS_VERSION */
  int64_t num_tokens;        /* U >= 0 */
  const int64_t *offsets;    /* [U + 1]: offsets[0] = 0, non-decreasing */
  const int32_t *ids;        /* [offsets[U]] */
  const int32_t *copy_ids;   /* optional [U]: -1 averages, else a row in [0, source_rows) */
  const void *source_in;     /* [source_rows] rows of n_embd, at source_row_stride */
  const void *source_out;    /* optional (untied models): E_out, same layout */
  int32_t source_dtype;      /* LMF_DTYPE_F32, F16 or BF16 */
  int32_t n_embd;            /* >= 1 */
  int64_t source_rows;       /* >= 1 */
  int64_t source_row_stride; /* >= n_embd; 0: n_embd */
  int32_t unk_id;            /* in [0, source_rows) */
  float *out_in;             /* [U][n_embd], required */
  float *out_out;            /* [U][n_embd], required with source_out, else NULL */
} lmf_fvt_args_t;

#define LMF_FVT_ARGS_INIT                                                                     \
  { sizeof(lmf_fvt_args_t), LMF_FVT_ARGS_VERSION, 0, NULL, NULL, NULL, NULL, NULL, LMF_DTYPE_F32, 0, 0, \
    0, -1, NULL, NULL }

LMF_API lmf_status_t lmf_fvt_args_init(lmf_fvt_args_t *args, size_t struct_size);

/* Writes the FVT embeddings. Checks every argument first; on a bad argument nothing is written. On the
 * CPU the call returns when done (the stream is ignored). On a CUDA context: offsets, ids and copy_ids
 * are host memory (the host plans the call and may reuse them as soon as it returns); source_in /
 * source_out and out_in / out_out are device memory of the context's device (or managed memory), checked
 * with cudaPointerGetAttributes (a wrong one is LMF_ERR_INVALID_ARGUMENT naming it). The call enqueues
 * on `stream` and returns, allocating nothing: the index lists travel as kernel parameters (about 30 KiB
 * a launch; a decomposition longer than one launch holds is summed over consecutive launches).
 * Results are the CPU backend's bit for bit, in every source dtype (the same fp32 sums in the same
 * order, no FMA). LMF_ERR_CUDA: a launch failed (the message names the kernel). */
LMF_API lmf_status_t lmf_fvt_predict(lmf_context_t *ctx, const lmf_fvt_args_t *args,
                                     lmf_stream_t stream);

/* ---- Surface forms: the hypernetwork's input for a list of tokens ------------------------------ */

/* Token u of a list is an id of a "merged id space": ids below the vocabulary's size are its tokens;
 * id vocab_size + k is the k-th of caller-given byte strings (lmf_dyntok's new tokens: NEW_OFFSETS /
 * NEW_BYTES). Its surface form (ZeTT's get_surface_form_matrix, specs/hypernetwork.md) is the row
 * forms[u][0 .. surface_len):
 *   - a special token: [id, pad_id, pad_id, ...]; copy_ids[u] = id when id < original_vocab_size
 *     (lmf_hypernet_predict then copies its source row), else -1;
 *   - any other token (a new one, or a vocabulary token): the BPE encoding of its bytes with the
 *     vocabulary's merges (lmf_vocab_bpe_encode; for a vocabulary token usually the token itself),
 *     truncated to surface_len ids and right-padded with pad_id; copy_ids[u] = -1. Ids of the
 *     encoding at or above original_vocab_size stay as they are (the hypernetwork reads them as
 *     fallback rows). An empty byte string gives a row of pad_id.
 * lengths[u] is the encoding's length before truncation (1 for a special token), so callers can count
 * truncations (ZeTT's n_truncated). The vocabulary is `struct lmf_vocab` (lmf_vocab_t of vocab.h). */

#define LMF_HYPERNET_SURFACE_ARGS_VERSION 1u

typedef struct lmf_hypernet_surface_args {
  size_t struct_size;           /* sizeof(lmf_hypernet_surface_args_t) */
  uint32_t version;             /* LMF_HYPERNET_SURFACE_ARGS_VERSION */
  int64_t num_tokens;           /* U >= 0 */
  const int32_t *ids;           /* [U] ids in [0, vocab_size + num_new) (vocabulary ids: not unused); or
                                   NULL: token u is byte string u (then U <= num_new) */
  int64_t num_new;              /* byte strings given, >= 0 */
  const int64_t *new_offsets;   /* [num_new + 1]: string k is new_bytes[new_offsets[k] .. [k+1]);
                                   new_offsets[0] = 0, non-decreasing; NULL only if num_new = 0 */
  const uint8_t *new_bytes;     /* NULL only if new_offsets[num_new] = 0 */
  int32_t surface_len;          /* L >= 1 (the hypernetwork's surface_maxlen); no default */
  int32_t pad_id;               /* >= 0 (the hypernetwork's pad_token_id); default -1 (must be set) */
  int32_t original_vocab_size;  /* V0 >= 0 (the hypernetwork's): decides copy_ids; 0 (default): the
                                   vocabulary's size */
  int32_t *out_forms;           /* [U][L], required */
  int32_t *out_copy_ids;        /* [U], optional */
  int32_t *out_lengths;         /* [U], optional */
} lmf_hypernet_surface_args_t;

#define LMF_HYPERNET_SURFACE_ARGS_INIT                                                           \
  { sizeof(lmf_hypernet_surface_args_t), LMF_HYPERNET_SURFACE_ARGS_VERSION, 0, NULL, 0, NULL, NULL, 0, \
    -1, 0, NULL, NULL, NULL }

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_hypernet_surface_args_init(lmf_hypernet_surface_args_t *args,
                                                    size_t struct_size);

struct lmf_vocab; /* lmf_vocab_t of lmfuse/vocab.h */

/* Writes the surface forms (host memory; no context needed). Checks every argument first (ids,
 * offsets, sizes, overlapping outputs) and encodes every token into private memory before writing:
 * on failure nothing is written. Statuses: LMF_ERR_NULL_POINTER, LMF_ERR_STRUCT_SIZE,
 * LMF_ERR_INVALID_SIZE (U < 0, surface_len < 1, num_new < 0, sizes that overflow, ids NULL with U >
 * num_new), LMF_ERR_INVALID_ARGUMENT (an id out of range or unused, bad offsets, pad_id < 0, a byte
 * the vocabulary cannot start BPE from: see lmf_vocab_bpe_encode), LMF_ERR_OVERLAP,
 * LMF_ERR_OUT_OF_MEMORY. The message names the argument (and the token index). */
LMF_API lmf_status_t lmf_hypernet_surface_forms(const struct lmf_vocab *vocab,
                                                const lmf_hypernet_surface_args_t *args);

/* ---- An embedding cache for predicted rows ------------------------------------------------------ */

/* Predicted embeddings keyed by the token's bytes: e_in [n_embd], optionally e_out [n_embd], and a
 * bias, for reuse across batches (the hypernetwork costs about half a model forward per token).
 * Capacity is a hard bound in rows; rows are allocated as they are first needed.
 *
 * Batches and pinning: lmf_embed_cache_begin_batch() starts a batch. Every row the batch looks up with
 * a hit, or inserts, is pinned: it is never evicted while the batch lasts, i.e. until the next
 * begin_batch (which unpins everything; calling it after the last batch releases the pins). When an
 * insert finds the cache full it evicts the least recently used unpinned row; when every row is pinned
 * by the current batch the new row is not stored (*stored = 0): the batch holds more distinct tokens
 * than the capacity, and the rows it already holds stay. Capacity 0: nothing is ever stored.
 *
 * A cache is valid for one predictor (hypernetwork, source embeddings, language): clear it when any
 * of them changes. Thread safety: a cache is NOT thread-safe; calls on one cache must not overlap
 * (give each thread or pipeline its own cache, or serialise the calls). */

typedef struct lmf_embed_cache lmf_embed_cache_t;

#define LMF_EMBED_CACHE_CONFIG_VERSION 1u
/* Largest capacity (rows) a cache takes. */
#define LMF_EMBED_CACHE_MAX_ROWS ((int64_t)1 << 30)

typedef struct lmf_embed_cache_config {
  size_t struct_size; /* sizeof(lmf_embed_cache_config_t) */
  uint32_t version;   /* LMF_EMBED_CACHE_CONFIG_VERSION */
  int32_t n_embd;     /* row width >= 1; no default (0 must be set) */
  int64_t capacity;   /* rows, 0 .. LMF_EMBED_CACHE_MAX_ROWS; default 5000 (the reference's) */
  int32_t with_out;   /* 1: rows also hold e_out (untied models); default 0 */
} lmf_embed_cache_config_t;

#define LMF_EMBED_CACHE_CONFIG_INIT \
  { sizeof(lmf_embed_cache_config_t), LMF_EMBED_CACHE_CONFIG_VERSION, 0, 5000, 0 }

LMF_API lmf_status_t lmf_embed_cache_config_init(lmf_embed_cache_config_t *config, size_t struct_size);
/* Creates an empty cache; *out is set only on success. */
LMF_API lmf_status_t lmf_embed_cache_create(lmf_embed_cache_t **out,
                                            const lmf_embed_cache_config_t *config);
/* NULL is a no-op. */
LMF_API void lmf_embed_cache_destroy(lmf_embed_cache_t *cache);
/* The cache's configuration (struct_size set to sizeof *config; pass an initialised struct). */
LMF_API lmf_status_t lmf_embed_cache_get_config(const lmf_embed_cache_t *cache,
                                                lmf_embed_cache_config_t *config);
/* Ends the current batch (its rows become evictable) and starts a new one. */
LMF_API lmf_status_t lmf_embed_cache_begin_batch(lmf_embed_cache_t *cache);
/* Looks bytes[0 .. len) (len >= 1) up. A hit copies the row to e_in [n_embd], e_out [n_embd] (only
 * with with_out) and *bias (each may be NULL), makes it the most recently used row and pins it;
 * *hit = 1. A miss writes nothing but *hit = 0. */
LMF_API lmf_status_t lmf_embed_cache_lookup(lmf_embed_cache_t *cache, const uint8_t *bytes, int64_t len,
                                            float *e_in, float *e_out, float *bias, int32_t *hit);
/* Stores a row for bytes[0 .. len): e_in required, e_out required exactly when with_out. A key already
 * present has its row replaced. The row becomes the most recently used and is pinned. *stored (may be
 * NULL) = 1, or 0 when the row could not be stored (capacity 0, or every row pinned). */
LMF_API lmf_status_t lmf_embed_cache_insert(lmf_embed_cache_t *cache, const uint8_t *bytes, int64_t len,
                                            const float *e_in, const float *e_out, float bias,
                                            int32_t *stored);
/* *present = 1 if bytes[0 .. len) has a row; changes nothing (no recency, no pin, no statistics). */
LMF_API lmf_status_t lmf_embed_cache_contains(const lmf_embed_cache_t *cache, const uint8_t *bytes,
                                              int64_t len, int32_t *present);
/* Removes every row (statistics are kept). */
LMF_API lmf_status_t lmf_embed_cache_clear(lmf_embed_cache_t *cache);
/* Counters since creation; each pointer may be NULL. rows: held now; pinned: held and pinned by the
 * current batch; hits / misses: lookups; evictions: rows evicted to make room; dropped: inserts not
 * stored. */
LMF_API lmf_status_t lmf_embed_cache_stats(const lmf_embed_cache_t *cache, int64_t *rows, int64_t *pinned,
                                           int64_t *hits, int64_t *misses, int64_t *evictions,
                                           int64_t *dropped);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_HYPERNET_H */
