/*
 * lmfuse: CUDA kernels behind a stable C ABI for adapting large language models without retraining.
 *
 * This header holds what every family shares: versioning, the error model, the context (which backend
 * runs the work), dtypes and the stream type. It is C99, includes no CUDA header, and is safe to include
 * from C++.
 *
 * Error model (after NCCL and zstd):
 *   - every fallible call returns lmf_status_t; LMF_OK is 0, values are append-only;
 *   - lmf_status_string() names a status and never returns NULL;
 *   - lmf_last_error() returns a thread-local message saying what the last failed call on this thread
 *     objected to, naming the argument;
 *   - a call that fails writes nothing to its outputs and changes no parameter;
 *   - the library never aborts, exits, or prints to stdout.
 *
 * Config structs start with `size_t struct_size` and `uint32_t version`, come with an _INIT macro and
 * an `_init(ptr, sizeof *ptr)` function, and only grow at the end. struct_size must be at least the
 * size of version 1 of the struct and at most this library's size; fields a later version adds past
 * a caller's struct_size take their defaults. The _init functions write exactly the caller's
 * struct_size bytes, so a caller built against an older header is never overrun.
 */
#ifndef LMFUSE_LMFUSE_H
#define LMFUSE_LMFUSE_H

#include <stddef.h>
#include <stdint.h>

#define LMF_VERSION_MAJOR 0
#define LMF_VERSION_MINOR 1
#define LMF_VERSION_PATCH 0
/* MAJOR * 10000 + MINOR * 100 + PATCH, as returned by lmf_version(). */
#define LMF_VERSION_NUMBER (LMF_VERSION_MAJOR * 10000 + LMF_VERSION_MINOR * 100 + LMF_VERSION_PATCH)

#if defined(LMF_STATIC_DEFINE)
#define LMF_API
#elif defined(_WIN32)
#if defined(LMF_BUILDING_LIBRARY)
#define LMF_API __declspec(dllexport)
#else
#define LMF_API __declspec(dllimport)
#endif
#elif defined(__GNUC__)
#define LMF_API __attribute__((visibility("default")))
#else
#define LMF_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. Append-only: a value is never renumbered or reused. */
typedef enum lmf_status {
  LMF_OK = 0,
  LMF_ERR_INVALID_ARGUMENT = 1, /* a value is out of its documented range */
  LMF_ERR_NULL_POINTER = 2,     /* a required pointer is NULL */
  LMF_ERR_UNSUPPORTED_DTYPE = 3,/* unknown dtype, or one this operation does not take */
  LMF_ERR_INVALID_SIZE = 4,     /* a size is zero, negative, or overflows */
  LMF_ERR_STRUCT_SIZE = 5,      /* a config struct's struct_size or version is not one we know */
  LMF_ERR_OVERLAP = 6,          /* buffers that must be disjoint overlap */
  LMF_ERR_OUT_OF_MEMORY = 7,    /* a host or device allocation failed */
  LMF_ERR_NO_DEVICE = 8,        /* CUDA was asked for; no usable device or driver is present */
  LMF_ERR_NOT_COMPILED = 9,     /* the requested backend or feature is not in this build */
  LMF_ERR_CUDA = 10,            /* a CUDA runtime or library call failed; the message names it */
  LMF_ERR_INVALID_STATE = 11,   /* the object is not in a state that allows this call */
  LMF_ERR_CALLBACK = 12,        /* a user callback reported failure */
  LMF_ERR_NONFINITE = 13,       /* a NaN or infinity where a finite value is required */
  LMF_ERR_IO = 14,              /* a file could not be opened or read */
  LMF_ERR_PARSE = 15,           /* a file or string is malformed */
  LMF_ERR_INTERNAL = 16         /* a bug in lmfuse; please report it with the message */
} lmf_status_t;

/* Which backend runs a context's work. */
typedef enum lmf_backend {
  LMF_BACKEND_AUTO = 0, /* CUDA if built in and a device is present, else CPU */
  LMF_BACKEND_CPU = 1,  /* always available */
  LMF_BACKEND_CUDA = 2
} lmf_backend_t;

/* Element types of tensors the caller passes. */
typedef enum lmf_dtype {
  LMF_DTYPE_F32 = 0,
  LMF_DTYPE_F16 = 1,  /* IEEE binary16 */
  LMF_DTYPE_BF16 = 2, /* bfloat16 */
  LMF_DTYPE_I32 = 3,
  LMF_DTYPE_I64 = 4,
  LMF_DTYPE_U8 = 5   /* bytes */
} lmf_dtype_t;

/* A CUDA stream (cudaStream_t), forward-declared so this header needs no CUDA header. NULL is the
 * default stream. CPU contexts ignore it: their calls complete before returning. */
typedef struct CUstream_st *lmf_stream_t;

/* The runtime version: LMF_VERSION_NUMBER of the library actually loaded. */
LMF_API unsigned lmf_version(void);
/* "MAJOR.MINOR.PATCH" of the library actually loaded. */
LMF_API const char *lmf_version_string(void);

/* A static string naming the status ("LMF_ERR_NULL_POINTER: ..."); never NULL, also for unknown values. */
LMF_API const char *lmf_status_string(lmf_status_t status);
/* The message of the last failed call on this thread; "" if none failed yet. Never NULL. The string
 * stays valid until the next lmfuse call on this thread. */
LMF_API const char *lmf_last_error(void);
/* Forgets this thread's last error message. */
LMF_API void lmf_clear_error(void);

/* Bytes per element of a dtype; 0 for an unknown value. */
LMF_API size_t lmf_dtype_size(int32_t dtype);
/* "f32", "f16", "bf16", "i32", "i64", "u8"; "unknown" otherwise. Never NULL. */
LMF_API const char *lmf_dtype_name(int32_t dtype);

/* Converts n elements between float dtypes (f32, f16, bf16) on the host, rounding to nearest even;
 * NaN stays NaN, overflow gives infinity. src and dst must not overlap. */
LMF_API lmf_status_t lmf_convert_host(void *dst, int32_t dst_dtype, const void *src,
                                      int32_t src_dtype, int64_t n);

/* 1 if the backend is compiled in and usable on this machine now (for CUDA: a driver and at least one
 * device), else 0. Never fails. */
LMF_API int lmf_backend_available(int32_t backend);
/* Number of usable CUDA devices: 0 when CUDA is not compiled in or no driver/device is present. */
LMF_API int lmf_cuda_device_count(void);

/* ---- Context ---------------------------------------------------------------------------------- */

typedef struct lmf_context lmf_context_t;

#define LMF_CONTEXT_CONFIG_VERSION 1u

typedef struct lmf_context_config {
  size_t struct_size;  /* sizeof(lmf_context_config_t) as the caller compiled it */
  uint32_t version;    /* LMF_CONTEXT_CONFIG_VERSION */
  int32_t backend;     /* lmf_backend_t; default LMF_BACKEND_AUTO */
  int32_t device;      /* CUDA device ordinal; default 0 */
  int32_t cpu_threads; /* OpenMP threads for the CPU backend; 0 (default) = OpenMP's default */
} lmf_context_config_t;

#define LMF_CONTEXT_CONFIG_INIT \
  { sizeof(lmf_context_config_t), LMF_CONTEXT_CONFIG_VERSION, LMF_BACKEND_AUTO, 0, 0 }

/* Fills the first struct_size bytes of *config with the defaults (as LMF_CONTEXT_CONFIG_INIT) and sets
 * config->struct_size = struct_size. Pass sizeof *config. For callers that cannot use the macro, such as
 * Python's ctypes. */
LMF_API lmf_status_t lmf_context_config_init(lmf_context_config_t *config, size_t struct_size);

/* Creates a context. config may be NULL for the defaults. Asking for LMF_BACKEND_CUDA on a machine with
 * no device gives LMF_ERR_NO_DEVICE (or LMF_ERR_NOT_COMPILED in a CPU-only build); AUTO falls back to
 * the CPU. *out is set only on success. */
LMF_API lmf_status_t lmf_context_create(lmf_context_t **out, const lmf_context_config_t *config);
/* Destroys a context; NULL is a no-op. Objects created from it must be destroyed first. */
LMF_API void lmf_context_destroy(lmf_context_t *ctx);
/* The backend the context actually runs on (never AUTO). */
LMF_API lmf_status_t lmf_context_backend(const lmf_context_t *ctx, int32_t *backend);
/* Waits until all work the context enqueued on `stream` has finished (a no-op on the CPU). */
LMF_API lmf_status_t lmf_stream_synchronize(lmf_context_t *ctx, lmf_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_LMFUSE_H */
