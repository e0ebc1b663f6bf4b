/* Versioning, status names and the thread-local last-error message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

#define LMF_STR2(x) #x
#define LMF_STR(x) LMF_STR2(x)

static _Thread_local char lmf_error_message[512];

unsigned lmf_version(void) { return LMF_VERSION_NUMBER; }

const char *lmf_version_string(void) {
  return LMF_STR(LMF_VERSION_MAJOR) "." LMF_STR(LMF_VERSION_MINOR) "." LMF_STR(LMF_VERSION_PATCH);
}

const char *lmf_status_string(lmf_status_t status) {
  switch (status) {
    case LMF_OK: return "LMF_OK: success";
    case LMF_ERR_INVALID_ARGUMENT: return "LMF_ERR_INVALID_ARGUMENT: a value is out of its range";
    case LMF_ERR_NULL_POINTER: return "LMF_ERR_NULL_POINTER: a required pointer is NULL";
    case LMF_ERR_UNSUPPORTED_DTYPE: return "LMF_ERR_UNSUPPORTED_DTYPE: unknown or unsupported dtype";
    case LMF_ERR_INVALID_SIZE: return "LMF_ERR_INVALID_SIZE: a size is zero, negative or overflows";
    case LMF_ERR_STRUCT_SIZE: return "LMF_ERR_STRUCT_SIZE: unknown struct_size or version";
    case LMF_ERR_OVERLAP: return "LMF_ERR_OVERLAP: buffers that must be disjoint overlap";
    case LMF_ERR_OUT_OF_MEMORY: return "LMF_ERR_OUT_OF_MEMORY: an allocation failed";
    case LMF_ERR_NO_DEVICE: return "LMF_ERR_NO_DEVICE: no usable CUDA device or driver";
    case LMF_ERR_NOT_COMPILED: return "LMF_ERR_NOT_COMPILED: not built into this library";
    case LMF_ERR_CUDA: return "LMF_ERR_CUDA: a CUDA call failed";
    case LMF_ERR_INVALID_STATE: return "LMF_ERR_INVALID_STATE: the object's state does not allow this";
    case LMF_ERR_CALLBACK: return "LMF_ERR_CALLBACK: a user callback failed";
    case LMF_ERR_NONFINITE: return "LMF_ERR_NONFINITE: a value is NaN or infinite";
    case LMF_ERR_IO: return "LMF_ERR_IO: a file could not be read";
    case LMF_ERR_PARSE: return "LMF_ERR_PARSE: malformed input";
    case LMF_ERR_INTERNAL: return "LMF_ERR_INTERNAL: internal error";
  }
  return "unknown lmf_status_t value";
}

const char *lmf_last_error(void) { return lmf_error_message; }

void lmf_clear_error(void) { lmf_error_message[0] = '\0'; }

lmf_status_t lmf_fail(lmf_status_t status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(lmf_error_message, sizeof lmf_error_message, fmt, ap);
  va_end(ap);
  return status;
}

size_t lmf_struct_size_of(const void *ptr) {
  size_t s;
  memcpy(&s, ptr, sizeof s);
  return s;
}

lmf_status_t lmf_check_struct(const void *ptr, size_t min_size, size_t max_size, uint32_t max_version,
                              const char *what) {
  if (!ptr) return lmf_fail(LMF_ERR_NULL_POINTER, "%s is NULL", what);
  size_t size = lmf_struct_size_of(ptr);
  if (size < min_size || size > max_size)
    return lmf_fail(LMF_ERR_STRUCT_SIZE,
                    "%s->struct_size is %zu; this library takes %zu to %zu (use the _INIT macro or "
                    "_init function)",
                    what, size, min_size, max_size);
  uint32_t version;
  memcpy(&version, (const char *)ptr + sizeof(size_t), sizeof version);
  if (version < 1 || version > max_version)
    return lmf_fail(LMF_ERR_STRUCT_SIZE, "%s->version is %u; this library knows versions 1 to %u", what,
                    version, max_version);
  return LMF_OK;
}

lmf_status_t lmf_init_struct(void *dst, size_t caller_size, const void *defaults, size_t lib_size,
                             const char *what) {
  if (!dst) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: the struct pointer is NULL", what);
  /* Version 1 of every struct is its current size; later versions only append. */
  if (caller_size < lib_size || caller_size > lib_size)
    return lmf_fail(LMF_ERR_STRUCT_SIZE, "%s: struct_size is %zu; this library's struct has %zu bytes "
                    "(pass sizeof of the struct)", what, caller_size, lib_size);
  memcpy(dst, defaults, caller_size);
  memcpy(dst, &caller_size, sizeof caller_size);
  return LMF_OK;
}
