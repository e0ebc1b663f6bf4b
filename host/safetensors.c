/* A small safetensors reader (see safetensors.h): header checks up front, tensor data on demand,
 * F32 / F16 / BF16 converted to fp32 (little-endian files on a little-endian host). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "../kernels/common/half_convert.h"
#include "safetensors.h"

static int32_t dtype_of(const char *s, size_t *elem_bytes) {
  static const struct { const char *name; int32_t dtype; size_t bytes; } k[] = {
      {"F32", LMF_DTYPE_F32, 4}, {"F16", LMF_DTYPE_F16, 2}, {"BF16", LMF_DTYPE_BF16, 2},
      {"F64", -1, 8},  {"I64", -1, 8},  {"U64", -1, 8},  {"I32", -1, 4}, {"U32", -1, 4},
      {"I16", -1, 2},  {"U16", -1, 2},  {"I8", -1, 1},   {"U8", -1, 1},  {"BOOL", -1, 1},
      {"F8_E4M3", -1, 1}, {"F8_E5M2", -1, 1}};
  for (size_t i = 0; i < sizeof k / sizeof k[0]; ++i)
    if (strcmp(s, k[i].name) == 0) {
      *elem_bytes = k[i].bytes;
      return k[i].dtype;
    }
  *elem_bytes = 0;
  return -2; /* unknown */
}

/* A JSON number that is a non-negative integer below 2^53 (exact in a double). */
static int json_u53(const cJSON *v, uint64_t *out) {
  if (!cJSON_IsNumber(v)) return 0;
  double d = v->valuedouble;
  if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return 0;
  *out = (uint64_t)d;
  return 1;
}

void lmf_st_close(lmf_st_file *st) {
  if (!st) return;
  if (st->f) fclose(st->f);
  for (size_t i = 0; i < st->count; ++i) free(st->tensors[i].name);
  free(st->tensors);
  free(st->path);
  memset(st, 0, sizeof *st);
}

static lmf_status_t parse_entry(const cJSON *item, lmf_st_tensor *t, uint64_t data_bytes, const char *fn,
                                const char *path) {
  const char *name = item->string;
  if (!cJSON_IsObject(item))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: the header entry of tensor '%s' is not an object", fn, path,
                    name);
  const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
  const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
  const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
  if (!cJSON_IsString(dt))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s' has no \"dtype\" string", fn, path, name);
  size_t eb = 0;
  int32_t dtype = dtype_of(dt->valuestring, &eb);
  if (dtype == -2)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s' has unknown dtype \"%.20s\"", fn, path, name,
                    dt->valuestring);
  snprintf(t->dtype_name, sizeof t->dtype_name, "%s", dt->valuestring);
  t->dtype = dtype;
  if (!cJSON_IsArray(shape))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s' has no \"shape\" array", fn, path, name);
  int nd = cJSON_GetArraySize(shape);
  if (nd > LMF_ST_MAX_DIMS)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s' has %d dimensions (at most %d)", fn, path, name,
                    nd, LMF_ST_MAX_DIMS);
  t->ndim = nd;
  uint64_t numel = 1;
  int overflow = 0;
  for (int d = 0; d < nd; ++d) {
    uint64_t v;
    if (!json_u53(cJSON_GetArrayItem(shape, d), &v))
      return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s': shape[%d] is not a non-negative integer", fn,
                      path, name, d);
    t->shape[d] = (int64_t)v;
    if (v != 0 && numel > (UINT64_C(1) << 53) / v) overflow = 1;
    numel *= v;
  }
  if (overflow || numel > (UINT64_C(1) << 53) / 8)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s': the shape's element count overflows", fn, path,
                    name);
  t->numel = (int64_t)numel;
  uint64_t b, e;
  if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_u53(cJSON_GetArrayItem(offs, 0), &b) ||
      !json_u53(cJSON_GetArrayItem(offs, 1), &e))
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s': \"data_offsets\" must be [begin, end] integers",
                    fn, path, name);
  if (e < b)
    return lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                    fn, path, name, (unsigned long long)b, (unsigned long long)e);
  if (e - b != numel * eb)
    return lmf_fail(LMF_ERR_PARSE,
                    "%s: %s: tensor '%s' (%s, %llu elements) needs %llu bytes but data_offsets [%llu, %llu] "
                    "span %llu",
                    fn, path, name, t->dtype_name, (unsigned long long)numel,
                    (unsigned long long)(numel * eb), (unsigned long long)b, (unsigned long long)e,
                    (unsigned long long)(e - b));
  if (e > data_bytes)
    return lmf_fail(LMF_ERR_IO,
                    "%s: %s is truncated: tensor '%s' ends at data byte %llu but the file holds %llu data "
                    "bytes",
                    fn, path, name, (unsigned long long)e, (unsigned long long)data_bytes);
  t->begin = b;
  t->end = e;
  return LMF_OK;
}

lmf_status_t lmf_st_open(lmf_st_file *st, const char *path, const char *fn) {
  lmf_st_file s;
  memset(&s, 0, sizeof s);
  memset(st, 0, sizeof *st);
  s.f = fopen(path, "rb");
  if (!s.f) return lmf_fail(LMF_ERR_IO, "%s: cannot open %s: %s", fn, path, strerror(errno));
  lmf_status_t st_ = LMF_OK;
  cJSON *root = NULL;
  char *hdr = NULL;
  struct stat sb;
  if (fstat(fileno(s.f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
    st_ = lmf_fail(LMF_ERR_IO, "%s: %s is not a regular file", fn, path);
    goto fail;
  }
  s.file_size = (uint64_t)sb.st_size;
  s.path = (char *)malloc(strlen(path) + 1);
  if (!s.path) {
    st_ = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    goto fail;
  }
  strcpy(s.path, path);
  unsigned char len8[8];
  if (s.file_size < 8 || fread(len8, 1, 8, s.f) != 8) {
    st_ = lmf_fail(LMF_ERR_IO, "%s: %s is truncated: %llu bytes, shorter than the 8-byte header length",
                   fn, path, (unsigned long long)s.file_size);
    goto fail;
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len8[i];
  if (n > s.file_size - 8) {
    st_ = lmf_fail(LMF_ERR_IO, "%s: %s is truncated: its header length is %llu bytes but only %llu follow",
                   fn, path, (unsigned long long)n, (unsigned long long)(s.file_size - 8));
    goto fail;
  }
  if (n < 2 || n > LMF_ST_MAX_HEADER) {
    st_ = lmf_fail(LMF_ERR_PARSE, "%s: %s: header length %llu is not a safetensors header (2 .. %llu)", fn,
                   path, (unsigned long long)n, (unsigned long long)LMF_ST_MAX_HEADER);
    goto fail;
  }
  hdr = (char *)malloc((size_t)n + 1);
  if (!hdr) {
    st_ = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory for a %llu-byte header", fn,
                   (unsigned long long)n);
    goto fail;
  }
  if (fread(hdr, 1, (size_t)n, s.f) != (size_t)n) {
    st_ = lmf_fail(LMF_ERR_IO, "%s: cannot read the header of %s", fn, path);
    goto fail;
  }
  hdr[n] = '\0';
  s.data_start = 8 + n;
  const char *end = NULL;
  root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
  if (!root || !cJSON_IsObject(root)) {
    size_t at = (root || !end) ? 0 : (size_t)(end - hdr);
    if (!root && cJSON_GetErrorPtr()) at = (size_t)(cJSON_GetErrorPtr() - hdr);
    st_ = lmf_fail(LMF_ERR_PARSE, "%s: %s: the header is not a JSON object (error near byte %zu)", fn, path,
                   at);
    goto fail;
  }
  /* Trailing bytes may only be spaces (the format pads the header with them). */
  for (const char *p = end; p && p < hdr + n; ++p)
    if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
      st_ = lmf_fail(LMF_ERR_PARSE, "%s: %s: unexpected bytes after the header's JSON object (byte %zu)", fn,
                     path, (size_t)(p - hdr));
      goto fail;
    }
  size_t cnt = 0;
  for (const cJSON *it = root->child; it; it = it->next)
    if (strcmp(it->string, "__metadata__") != 0) ++cnt;
  s.tensors = (lmf_st_tensor *)calloc(cnt ? cnt : 1, sizeof *s.tensors);
  if (!s.tensors) {
    st_ = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
    goto fail;
  }
  const uint64_t data_bytes = s.file_size - s.data_start;
  for (const cJSON *it = root->child; it; it = it->next) {
    if (strcmp(it->string, "__metadata__") == 0) {
      if (!cJSON_IsObject(it)) {
        st_ = lmf_fail(LMF_ERR_PARSE, "%s: %s: \"__metadata__\" is not an object", fn, path);
        goto fail;
      }
      continue;
    }
    lmf_st_tensor *t = &s.tensors[s.count];
    size_t nl = strlen(it->string);
    t->name = (char *)malloc(nl + 1);
    if (!t->name) {
      st_ = lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
      goto fail;
    }
    memcpy(t->name, it->string, nl + 1);
    ++s.count;
    for (size_t j = 0; j + 1 < s.count; ++j)
      if (strcmp(s.tensors[j].name, t->name) == 0) {
        st_ = lmf_fail(LMF_ERR_PARSE, "%s: %s: tensor '%s' appears twice in the header", fn, path, t->name);
        goto fail;
      }
    st_ = parse_entry(it, t, data_bytes, fn, path);
    if (st_ != LMF_OK) goto fail;
  }
  cJSON_Delete(root);
  free(hdr);
  *st = s;
  return LMF_OK;
fail:
  cJSON_Delete(root);
  free(hdr);
  lmf_st_close(&s);
  return st_;
}

const lmf_st_tensor *lmf_st_find(const lmf_st_file *st, const char *name) {
  for (size_t i = 0; i < st->count; ++i)
    if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
  return NULL;
}

lmf_status_t lmf_st_read_f32(lmf_st_file *st, const lmf_st_tensor *t, float *dst, const char *fn) {
  if (t->dtype != LMF_DTYPE_F32 && t->dtype != LMF_DTYPE_F16 && t->dtype != LMF_DTYPE_BF16)
    return lmf_fail(LMF_ERR_UNSUPPORTED_DTYPE, "%s: %s: tensor '%s' is %s; only F32, F16 and BF16 are read",
                    fn, st->path, t->name, t->dtype_name);
  if (fseeko(st->f, (off_t)(st->data_start + t->begin), SEEK_SET) != 0)
    return lmf_fail(LMF_ERR_IO, "%s: %s: cannot seek to tensor '%s'", fn, st->path, t->name);
  const size_t n = (size_t)t->numel;
  if (t->dtype == LMF_DTYPE_F32) {
    if (fread(dst, 4, n, st->f) != n)
      return lmf_fail(LMF_ERR_IO, "%s: %s: reading tensor '%s' failed (the file shrank?)", fn, st->path,
                      t->name);
    return LMF_OK;
  }
  /* 16-bit: read in blocks into a small buffer, convert. */
  uint16_t buf[4096];
  size_t done = 0;
  while (done < n) {
    size_t m = n - done < 4096 ? n - done : 4096;
    if (fread(buf, 2, m, st->f) != m)
      return lmf_fail(LMF_ERR_IO, "%s: %s: reading tensor '%s' failed (the file shrank?)", fn, st->path,
                      t->name);
    if (t->dtype == LMF_DTYPE_F16)
      for (size_t i = 0; i < m; ++i) dst[done + i] = lmf_f16_to_f32(buf[i]);
    else
      for (size_t i = 0; i < m; ++i) dst[done + i] = lmf_bf16_to_f32(buf[i]);
    done += m;
  }
  return LMF_OK;
}
