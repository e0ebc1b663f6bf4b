/* The CPU backend of lmf_logits_* (host/logits_backend.h).
 *
 * Structure. Every row (combine) or sequence (verify) is a task; a task walks through phases, each a
 * pass over the row's vocabulary in fixed blocks of BLK tokens (block_step) followed by a small serial
 * step (merge_step) that combines the blocks' partial results in block order and picks the next
 * phase. When there are at least as many tasks as threads, each thread runs whole tasks; otherwise
 * (small B) all tasks run in lock step and the blocks of each phase are shared out over all threads,
 * so one row uses every thread. Either way every reduction is computed per block and merged in block
 * order, so the results do not depend on the thread count. The per-element arithmetic (s(v), masks,
 * GeDi, Gumbel keys) is kernels/common/logits_math.h, shared with the CUDA backend.
 *
 * Scratch per task in flight: the row's scores Y (s, then s / T), token masses W, D (the nucleus
 * model's x, then GeDi's logP(desired | v)), the blocks' partials, up to CAP filter candidates, and
 * the row's sparse entries sorted by id.
 *
 * Filters without full sorts. The nucleus, GeDi's class filter, top-k and top-p all keep (or remove) a
 * prefix of the tokens in a total order (value, then token id: lmf_lg_ord_*), the shortest prefix whose
 * mass reaches a target (top-k: unit masses); ties in value go by ascending id. For the descending
 * orders (nucleus, top-k, top-p) one vectorised pass computes the masses and the mass and count of
 * four windows below the maximum (2, 4, 8, 16 nats); the smallest window reaching the target with at
 * most CAP tokens gives the candidates, which are sorted and walked. Failing that, a histogram of the
 * window (64 bins, then 256 sub-bins of the crossing bin) isolates at most CAP candidates; failing
 * that (ties), or for GeDi's ascending order, a bisection on the 64-bit order, one vectorised
 * counting pass per step. When the survivors of a top-k / top-p cut are all candidates ("list mode",
 * combine only), min-p, the LSE and the sample are computed on that list, with no further passes.
 *
 * Sampling: Gumbel noise is generated only for tokens that can still win: a token needs
 * s/T + LMF_LG_GUMBEL_MAX >= the best key so far, and then a Philox word high enough for its noise to
 * reach it (gumbel_table); the logs are computed only for those. The result is the exact argmax.
 *
 * Semantics decided here where the spec and the header leave a gap (the CUDA backend must match):
 *  - Vocabularies: every model is seen on the V_out output columns. A dense model with V_k > V_out is
 *    truncated (its extra columns are never read); columns V_k <= v < V_out are -inf. So every
 *    softmax / LSE (nucleus, GeDi, draft q) is over the first min(V_k, V_out) columns.
 *  - Sparse rows: z(v) = the listed value, or sparse_fill for an unlisted v < min(V_k, V_out), -inf
 *    beyond. An id outside [0, min(V_k, V_out)) or listed twice in a row: LMF_ROW_BAD_INDEX.
 *  - row_index[b] < 0: LMF_ROW_BAD_INDEX (an index past the caller's rows cannot be detected).
 *  - "Inputs the row uses": models with c != 0 in this row (coeff_rows[b] when given), the
 *    plausibility, nucleus, GeDi and draft models, the bias row. A NaN or +inf there, a non-finite
 *    coeff_rows[b], a negative or non-finite temperature_rows[b], non-finite GeDi L_pos / L_neg or a
 *    negative gedi_n: LMF_ROW_NONFINITE. So is an overflow: s(v) or s(v) / T reaching +inf or NaN from
 *    finite inputs. Models with c = 0 and no other role are not read at all.
 *  - -inf: in a c != 0 model, or in the bias, the token is -inf (masked). GeDi: logP(desired | v) =
 *    -inf (both class logits -inf, or P = 0) gives -inf whatever the sign of omega. A plausibility or
 *    nucleus model, or a GeDi class model, whose row is all -inf masks every token (ALL_MASKED);
 *    plausibility never keeps a token whose x_m is -inf; nucleus_p = 1 keeps exactly the tokens with
 *    x_m > -inf.
 *  - Mask order: plausibility and nucleus (on the models' own x), then GeDi's class filter on
 *    softmax(s) of the survivors; then T; top-k; top-p (on the renormalised survivors); min-p.
 *    GeDi's filter compares the P(desired | v) that enters s (class_bias included) with
 *    target_p' = sigmoid(logit(target_p) + class_bias), in the log domain, and walks ties in
 *    P(desired | v) by ascending token id. gedi_logp_desired reports that same (biased) logP.
 *  - Greedy (T = 0): the token is the argmax of s (ties: lowest id); filters and outputs use T = 1.
 *  - Masses for the cut searches are e^(y - y_max) in fp32 (lmf_lg_exp_neg), summed in double per block
 *    (16 lanes in a fixed order, the same on every ISA) and merged in block order; "mass >= p"
 *    compares with p times the total mass, the candidates' masses being added in the walk's order.
 *    Where top-p follows no top-k, the total comes from the combine pass (per block sum of
 *    e^(y - block max): fp32 within the CUDA threads' 8-token groups, the groups in double; rescaled
 *    in double; capped at the sum of the masses, which rounding may leave below it), whichever way
 *    the cut is found, and so does the LSE when every finite token survives.
 *    (Summation orders differ between paths: a boundary within ~1e-16 of p may fall either way; the
 *    path never depends on the thread count.)
 *  - Gumbel noise: see logits_math.h; U's fp32 evaluation is clamped below 1. Batches whose best
 *    possible key (their max y + LMF_LG_GUMBEL_MAX) is below the best key so far, and tokens whose
 *    Philox word is too low for their noise to reach it, skip the logs; the result is the exact
 *    argmax either way.
 *  - Failed rows: token -1, the status, NaN in token_logprob, lse, gedi_logp_desired and in the whole
 *    logprobs row; the GeDi state is left unchanged.
 *  - verify_draft: seeds / offsets are per sequence. Position i (0 .. draft_len - 1): p from row
 *    b * (L + 1) + i after every mask, filter and T; q = softmax(x_draft) of the same row. If
 *    p(d_i) = 0 reject; else if log p(d_i) >= log q(d_i) accept; else accept iff
 *    log U < log p(d_i) - log q(d_i), U from counter (d_i, offset + i, LMF_LG_DOMAIN_ACCEPT). At the
 *    first rejection the correction is the Gumbel-max (offset + i) of log(p - q) over tokens with
 *    p > q (none in fp32: sampled from p instead). All accepted: the bonus token is sampled from row
 *    b * (L + 1) + L with offset + L. T = 0: accept iff d_i is p's argmax; correction and bonus are the
 *    argmax. A draft token outside [0, V_out), or a failed row reached by the walk, ends the sequence
 *    with that status, accepted = the tokens accepted before it, next_token = -1. Rows after the
 *    first rejection are not computed.
 */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../logits_backend.h"
#include "../../kernels/common/half_convert.h"
#include "../../kernels/common/logits_math.h"
#include "philox_cpu.h"

/* Vector clones chosen at load time by CPU features (not by CPU model, so any AVX-512 machine gets
 * the AVX-512 clone). Both vector levels have FMA, so lmf_lg_exp_neg's fmaf calls become vector FMAs
 * there; the default clone calls libm's fmaf (correctly rounded, slower). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define LMF_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LMF_VECTOR_CLONES
#endif

#define BLK 2048   /* tokens per block: the unit of work and of partial sums */
#define CAP 2048   /* candidates sorted at the end of a cut search */
#define GSUB 512   /* tokens per Gumbel batch */
#define NB1 64     /* first-level histogram bins of a descending cut */
#define NB2 256    /* second-level bins (within one first-level bin) */
#define NWIN 4     /* windows of a descending cut: bins < 4, 8, 16, 32 (2 .. 16 nats below the max) */
#define MAXM LMF_LOGITS_MAX_MODELS
#define ALIGN 64

/* Statistics roles (per-row max and LSE of a model's x). */
enum { ST_PLAUS, ST_NUC, ST_GPOS, ST_GNEG, ST_DRAFT, NST };

enum {
  PH_INIT,      /* serial: read the row's scalars, sort sparse rows */
  PH_STATS,     /* max / LSE of the mask, GeDi and draft models; the nucleus model's x -> D */
  PH_NUC_PREP,  /* nucleus masses and windows */
  PH_SEARCH,    /* one bisection pass of a cut search */
  PH_COLLECT,   /* the last candidates of a cut search */
  PH_COMBINE,   /* s -> Y, plausibility and nucleus masks, GeDi's logP -> D, bias (and / T) */
  PH_GF_PREP,   /* GeDi filter masses */
  PH_TEMP,      /* GeDi filter cut, y = s / T */
  PH_TOPK_PREP, /* unit masses and windows */
  PH_TOPP_PREP, /* top-k cut; masses and windows */
  PH_HIST,      /* the histogram of a descending cut whose windows hold too many tokens */
  PH_FINAL,     /* pending cut, min-p; the LSE of the survivors */
  PH_SAMPLE,    /* Gumbel-max over y */
  PH_RESID,     /* verify: Gumbel-max over log(p - q) */
  PH_OUT,       /* logprobs row; outputs */
  PH_FAIL,      /* NaN logprobs row; failure outputs */
  PH_DONE
};

enum { SR_NUC, SR_GF, SR_TOPK, SR_TOPP };

typedef struct sp_entry {
  int32_t id;
  float z;
} sp_entry;

typedef struct cand {
  uint64_t ord;
  float w;
  int32_t pad;
} cand;

/* One block's partial results of the current phase. */
typedef struct part {
  double sum;    /* masses / exp sums; search: mass with ord <= mid */
  double osum;   /* combine: sum of e^(y - max) over the block */
  int64_t cnt;   /* tokens with mass > 0; search: those in [lo, mid] */
  int64_t cnt2;  /* search: those in (mid, hi] */
  int64_t sel;   /* candidates this block holds in the current interval */
  int64_t off;   /* collect: where they go */
  float max;
  int32_t arg;
  int32_t bad;   /* a NaN / +inf */
  float key;     /* Gumbel: best key and its token */
  int32_t id;
  float smax[NST];
  double ssum[NST];
  double wm[NWIN]; /* windows of a descending cut: mass and count */
  int64_t wc[NWIN];
  double hm[NB2]; /* histogram of a descending cut: mass and count per bin */
  int64_t hc[NB2];
} part;

/* The table of gumbel_word_min_g over needs g in cells of 1/GT_STEP nat from -GT_BASE (each cell's
 * value is that of its lower edge, so it is a lower bound for the whole cell), with one margin valid
 * for every bound up to |bound| <= mbound. */
#define GT_N 176
#define GT_BASE 4.0
#define GT_STEP 8.0
typedef struct gumbel_table {
  uint32_t k[GT_N];
  double mbound; /* |bound| this table's margin covers */
} gumbel_table;

typedef struct search {
  const float *src; /* the values defining the order */
  int desc;         /* 1: descending value, then id; 0: ascending value, then id */
  int kind;         /* SR_* */
  /* Descending cuts measure d = 2 (hmax - y) (monotone in y). hmode 0: candidates by order [lo, hi];
   * 1: window d < hlim; 2: first-level bin j1 of d < hlim (bin = floor(min(d * hs1, 63))); 3: and
   * its second-level bin j2 (floor of 256 (d * hs1 - j1), within [0, 255]). */
  int hmode;
  int level;        /* PH_HIST: the histogram level being built (1 or 2) */
  int j1, j2;
  float hlim, hs1;
  int unit;         /* unit masses (top-k) */
  int wfree;        /* window candidates whose masses are not in W (computed when collected) */
  float hmax;
  double target;
  uint64_t lo, hi, mid; /* bisection: the cut lies in [lo, hi] */
  double flo;       /* mass before the candidates */
  int64_t cnt;      /* candidates (tokens with mass > 0 in [lo, hi] or in the bin) */
} search;

typedef struct task {
  int64_t task;   /* row (combine) or sequence (verify) */
  int64_t row;    /* the output row being computed */
  int32_t pos;    /* verify: position in the draft */
  int32_t phase;
  int32_t status;
  int32_t greedy;
  int32_t need_dist; /* the filtered distribution is needed (sampling or outputs) */
  int32_t need_lse;  /* its LSE is needed (outputs, verification) */
  int32_t list_mode; /* the survivors are cands[0 .. nlist) (Y is not masked) */
  int64_t nlist;
  int32_t nstat;
  int32_t stat_model[NST]; /* distinct models needing statistics */
  int32_t role_stat[NST];  /* role -> index into stat_model, or -1 */
  int32_t use[MAXM];       /* 1: the model is read for this row */
  int32_t comb[MAXM];      /* 1: the model is summed into s for this row */
  int64_t in_row[MAXM];
  float w[MAXM];
  sp_entry *sp[MAXM];
  int32_t sp_n[MAXM];
  float T, Teff;
  int32_t fuse_T;          /* the combine pass also divides by T */
  int32_t w_valid;         /* W holds e^(y - ymax) for every token of Y */
  int32_t want_sum;        /* the combine pass also sums e^(y - ymax) (top-p target, or the LSE) */
  int32_t wfree_try;       /* top-p may try a window without the masses of every token */
  int32_t topp_total;      /* top-p's target is top_p times `total` (at most the masses' sum) */
  double total;            /* that sum */
  uint64_t seed, offset, goff;
  float smax[NST], slse[NST];
  float plaus_thr;
  int32_t nuc_search;
  uint64_t nuc_cut;
  float gL_pos, gL_neg, gt;
  int32_t gf_on;
  uint64_t gf_cut;
  float ymax;
  int32_t yarg;
  int64_t nfin;
  int32_t cut_on; /* a descending-order cut on Y is pending */
  uint64_t cut;
  float lse;
  int32_t token;
  float best;
  gumbel_table gtab;
  search s;
  /* scratch */
  float *Y, *W, *D;
  part *parts;
  cand *cands, *cand_tmp;
  sp_entry *sparse;
} task;

typedef struct layout {
  int64_t V, nblk, ncap;
  size_t vbytes, dbytes, pbytes, cbytes, sbytes, slot;
} layout;

static int num_threads(const struct lmf_context *ctx) {
  return ctx->cpu_threads > 0 ? ctx->cpu_threads : omp_get_max_threads();
}

static size_t round_up(size_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

static int job_needs_d(const lmf_lg_job *job) {
  return job->nucleus_model >= 0 || job->gedi_pos_model >= 0;
}

/* SIZE_MAX on overflow. */
static size_t make_layout(const lmf_lg_job *job, layout *L) {
  L->V = job->vocab_out;
  L->nblk = (L->V + BLK - 1) / BLK;
  L->vbytes = round_up((size_t)L->V * sizeof(float));
  L->dbytes = job_needs_d(job) ? L->vbytes : 0;
  L->pbytes = round_up((size_t)L->nblk * sizeof(part));
  L->ncap = L->V < CAP ? L->V : CAP;
  L->cbytes = round_up((size_t)L->ncap * sizeof(cand)); /* candidates; as much sort scratch */
  uint64_t sp = 0;
  for (int k = 0; k < job->num_models; ++k)
    if (job->models[k].sparse_index) sp += (uint64_t)job->models[k].sparse_k;
  L->sbytes = round_up((size_t)sp * sizeof(sp_entry));
  uint64_t slot = (uint64_t)round_up(sizeof(task)) + 2u * L->vbytes + L->dbytes + L->pbytes +
                  2u * L->cbytes + L->sbytes;
  if (slot > (uint64_t)SIZE_MAX / 4) return SIZE_MAX;
  L->slot = (size_t)slot;
  return L->slot;
}

size_t lmf_cpu_logits_workspace(const struct lmf_context *ctx, const lmf_lg_job *job) {
  layout L;
  if (make_layout(job, &L) == SIZE_MAX) return SIZE_MAX;
  int64_t slots = num_threads(ctx);
  if (slots > job->num_rows) slots = job->num_rows;
  if (slots < 1) slots = 1;
  if ((uint64_t)slots > ((uint64_t)SIZE_MAX / 2) / L.slot) return SIZE_MAX;
  return (size_t)slots * L.slot + ALIGN;
}

/* ---- Philox word 0 for arbitrary token ids (the Gumbel and acceptance counters) ---------------- */

static void philox_ids_portable(uint64_t seed, uint64_t offset, uint32_t domain, const uint32_t *ids,
                                int n, uint32_t *out) {
  for (int k = 0; k < n; ++k) out[k] = lmf_lg_word(seed, offset, ids[k], domain);
}

#if defined(__GNUC__) && defined(__x86_64__)
LMF_AVX2 static void philox_ids_avx2(uint64_t seed, uint64_t offset, uint32_t domain, const uint32_t *ids,
                                     int n, uint32_t *out) {
  const __m256i m0 = _mm256_set1_epi32((int)LMF_PHILOX_M0), m1 = _mm256_set1_epi32((int)LMF_PHILOX_M1);
  int k = 0;
  for (; k + 8 <= n; k += 8) {
    __m256i x = _mm256_loadu_si256((const __m256i *)(ids + k));
    __m256i y = _mm256_set1_epi32((int)(uint32_t)offset), z = _mm256_set1_epi32((int)(uint32_t)(offset >> 32));
    __m256i w = _mm256_set1_epi32((int)domain);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 9; ++r) {
      __m256i hi0, hi1;
      __m256i lo0 = lmf_mulhilo8(x, m0, &hi0);
      __m256i lo1 = lmf_mulhilo8(z, m1, &hi1);
      x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), _mm256_set1_epi32((int)k0));
      y = lo1;
      z = _mm256_xor_si256(_mm256_xor_si256(hi0, w), _mm256_set1_epi32((int)k1));
      w = lo0;
      k0 += LMF_PHILOX_W0;
      k1 += LMF_PHILOX_W1;
    }
    __m256i hi1; /* round 10: word 0 only */
    (void)lmf_mulhilo8(z, m1, &hi1);
    x = _mm256_xor_si256(_mm256_xor_si256(hi1, y), _mm256_set1_epi32((int)k0));
    _mm256_storeu_si256((__m256i *)(out + k), x);
  }
  philox_ids_portable(seed, offset, domain, ids + k, n - k, out + k);
}

LMF_AVX512 static void philox_ids_avx512(uint64_t seed, uint64_t offset, uint32_t domain,
                                         const uint32_t *ids, int n, uint32_t *out) {
  const __m512i m0 = _mm512_set1_epi32((int)LMF_PHILOX_M0), m1 = _mm512_set1_epi32((int)LMF_PHILOX_M1);
  int k = 0;
  for (; k < n; k += 16) {
    const int m = n - k < 16 ? n - k : 16;
    const __mmask16 mask = (__mmask16)((1u << m) - 1u);
    __m512i x = _mm512_maskz_loadu_epi32(mask, ids + k);
    __m512i y = _mm512_set1_epi32((int)(uint32_t)offset), z = _mm512_set1_epi32((int)(uint32_t)(offset >> 32));
    __m512i w = _mm512_set1_epi32((int)domain);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int r = 0; r < 9; ++r) {
      __m512i hi0, hi1;
      __m512i lo0 = lmf_mulhilo16(x, m0, &hi0);
      __m512i lo1 = lmf_mulhilo16(z, m1, &hi1);
      x = _mm512_ternarylogic_epi32(hi1, y, _mm512_set1_epi32((int)k0), 0x96);
      y = lo1;
      z = _mm512_ternarylogic_epi32(hi0, w, _mm512_set1_epi32((int)k1), 0x96);
      w = lo0;
      k0 += LMF_PHILOX_W0;
      k1 += LMF_PHILOX_W1;
    }
    __m512i hi1; /* round 10: word 0 only */
    (void)lmf_mulhilo16(z, m1, &hi1);
    x = _mm512_ternarylogic_epi32(hi1, y, _mm512_set1_epi32((int)k0), 0x96);
    _mm512_mask_storeu_epi32(out + k, mask, x);
  }
}

static void philox_ids(uint64_t seed, uint64_t offset, uint32_t domain, const uint32_t *ids, int n,
                       uint32_t *out) {
  if (__builtin_cpu_supports("avx512f")) philox_ids_avx512(seed, offset, domain, ids, n, out);
  else if (__builtin_cpu_supports("avx2")) philox_ids_avx2(seed, offset, domain, ids, n, out);
  else philox_ids_portable(seed, offset, domain, ids, n, out);
}
#else
static void philox_ids(uint64_t seed, uint64_t offset, uint32_t domain, const uint32_t *ids, int n,
                       uint32_t *out) {
  philox_ids_portable(seed, offset, domain, ids, n, out);
}
#endif

/* ---- Reading inputs --------------------------------------------------------------------------- */

static float load_one(const void *p, int32_t dtype, int64_t i) {
  switch (dtype) {
    case LMF_DTYPE_F16: return lmf_f16_to_f32(((const uint16_t *)p)[i]);
    case LMF_DTYPE_BF16: return lmf_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
  }
}

static const void *row_ptr(const lmf_lg_model *m, int64_t r) {
  return (const char *)m->logits + r * m->row_stride * (int64_t)lmf_dtype_size(m->dtype);
}

static int64_t model_lim(const lmf_lg_job *job, const lmf_lg_model *m) {
  return m->vocab < job->vocab_out ? m->vocab : job->vocab_out;
}

/* Columns of model k that block [v0, v0 + n) has (the rest are -inf). */
static int cols_in_block(const lmf_lg_job *job, int k, int64_t v0, int n) {
  int64_t lim = model_lim(job, &job->models[k]);
  return lim - v0 >= n ? n : (lim - v0 > 0 ? (int)(lim - v0) : 0);
}

LMF_VECTOR_CLONES
static void cvt_block(const void *src, int32_t dtype, int n, float *out) {
  if (dtype == LMF_DTYPE_F32) {
    memcpy(out, src, (size_t)n * sizeof(float));
  } else if (dtype == LMF_DTYPE_BF16) {
    const uint16_t *h = (const uint16_t *)src;
    for (int i = 0; i < n; ++i) out[i] = lmf_bf16_to_f32(h[i]);
  } else {
    const uint16_t *h = (const uint16_t *)src;
    for (int i = 0; i < n; ++i) out[i] = lmf_f16_to_f32(h[i]);
  }
}

/* Raw z of model k for tokens v0 .. v0 + n - 1 of the task's row. */
static void load_z(const lmf_lg_job *job, const task *t, int k, int64_t v0, int n, float *out) {
  const lmf_lg_model *m = &job->models[k];
  const int nv = cols_in_block(job, k, v0, n);
  if (m->sparse_index) {
    float f = m->sparse_fill;
    for (int i = 0; i < nv; ++i) out[i] = f;
    const sp_entry *e = t->sp[k];
    int32_t cnt = t->sp_n[k], a = 0, b = cnt;
    while (a < b) { /* first entry with id >= v0 */
      int32_t mid = a + (b - a) / 2;
      if (e[mid].id < v0) a = mid + 1;
      else b = mid;
    }
    for (int32_t j = a; j < cnt && e[j].id < v0 + nv; ++j) out[e[j].id - v0] = e[j].z;
  } else if (nv > 0) {
    const char *base = (const char *)row_ptr(m, t->in_row[k]);
    cvt_block(base + v0 * (int64_t)lmf_dtype_size(m->dtype), m->dtype, nv, out);
  }
  for (int i = nv; i < n; ++i) out[i] = lmf_lg_ninf();
}

/* z of model k at one token. */
static float z_at(const lmf_lg_job *job, const task *t, int k, int64_t v) {
  const lmf_lg_model *m = &job->models[k];
  if (v < 0 || v >= model_lim(job, m)) return lmf_lg_ninf();
  if (m->sparse_index) {
    const sp_entry *e = t->sp[k];
    int32_t a = 0, b = t->sp_n[k];
    while (a < b) {
      int32_t mid = a + (b - a) / 2;
      if (e[mid].id < v) a = mid + 1;
      else b = mid;
    }
    return (a < t->sp_n[k] && e[a].id == v) ? e[a].z : m->sparse_fill;
  }
  return load_one(row_ptr(m, t->in_row[k]), m->dtype, v);
}

/* ---- Vectorisable block loops ------------------------------------------------------------------ */

/* Sums and maxima. No `omp simd` here: GCC 12 spills omp-simd reduction arrays with 64-byte-aligned
 * moves in AVX-512 clones without realigning the stack. Float maxima are integer maxima of
 * order-preserving keys, sums are in double with GCC vector extensions in a fixed lane order (16
 * lanes), so every ISA clone gives the same bits. */
typedef float lmf_v8f __attribute__((vector_size(32)));
typedef double lmf_v8d __attribute__((vector_size(64)));
typedef float lmf_v16f __attribute__((vector_size(64)));
typedef int32_t lmf_v16i __attribute__((vector_size(64)));

/* sum of a[0 .. n) in double: 16 lanes (lane j takes i % 16 == j), then lanes in order, then the tail. */
static double vsum(const float *a, int n) {
  lmf_v8d acc0 = {0, 0, 0, 0, 0, 0, 0, 0}, acc1 = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    lmf_v8f lo, hi;
    memcpy(&lo, a + i, sizeof lo);
    memcpy(&hi, a + i + 8, sizeof hi);
    acc0 += __builtin_convertvector(lo, lmf_v8d);
    acc1 += __builtin_convertvector(hi, lmf_v8d);
  }
  double s = 0.0;
  for (int j = 0; j < 8; ++j) s += acc0[j];
  for (int j = 0; j < 8; ++j) s += acc1[j];
  for (; i < n; ++i) s += (double)a[i];
  return s;
}

/* A float's bits as a signed integer with the floats' order (-0 just below +0). */
static inline __attribute__((always_inline)) int32_t fkey_s(float f) {
  const int32_t b = (int32_t)lmf_f32_bits(f);
  return b ^ ((b >> 31) & 0x7fffffff);
}
static inline __attribute__((always_inline)) float fkey_s_inv(int32_t k) {
  return lmf_bits_f32((uint32_t)(k ^ ((k >> 31) & 0x7fffffff)));
}


LMF_VECTOR_CLONES
static int any_bad(const float *x, int n) {
  int bad = 0;
  for (int i = 0; i < n; ++i) bad |= lmf_lg_is_bad(x[i]);
  return bad;
}

LMF_VECTOR_CLONES
static void scale_block(float *x, float tau, int n) {
  if (tau == 1.0f) return;
  for (int i = 0; i < n; ++i) x[i] = lmf_lg_scale_x(x[i], tau);
}

LMF_VECTOR_CLONES
static void term_block(float *y, float w, const float *x, int n, int first) {
  if (first)
    for (int i = 0; i < n; ++i) y[i] = lmf_lg_term(0.0f, w, x[i]);
  else
    for (int i = 0; i < n; ++i) y[i] = lmf_lg_term(y[i], w, x[i]);
}

/* A dense model's term straight from its dtype: y = term(y, w, z) for the first nv tokens, -inf for
 * the rest; returns 1 if a NaN / +inf was read. */
static inline __attribute__((always_inline)) int comb_dense_impl(float *y, float w, const void *src,
                                                                 const int dtype, int nv, int n,
                                                                 const int first) {
  int bad = 0;
  for (int i = 0; i < nv; ++i) {
    float x = dtype == LMF_DTYPE_F32    ? ((const float *)src)[i]
              : dtype == LMF_DTYPE_BF16 ? lmf_bf16_to_f32(((const uint16_t *)src)[i])
                                        : lmf_f16_to_f32(((const uint16_t *)src)[i]);
    bad |= lmf_lg_is_bad(x);
    y[i] = lmf_lg_term(first ? 0.0f : y[i], w, x);
  }
  for (int i = nv; i < n; ++i) y[i] = lmf_lg_ninf();
  return bad;
}

LMF_VECTOR_CLONES
static int comb_dense(float *y, float w, const void *src, int32_t dtype, int nv, int n, int first) {
  if (dtype == LMF_DTYPE_BF16)
    return first ? comb_dense_impl(y, w, src, LMF_DTYPE_BF16, nv, n, 1)
                 : comb_dense_impl(y, w, src, LMF_DTYPE_BF16, nv, n, 0);
  if (dtype == LMF_DTYPE_F16)
    return first ? comb_dense_impl(y, w, src, LMF_DTYPE_F16, nv, n, 1)
                 : comb_dense_impl(y, w, src, LMF_DTYPE_F16, nv, n, 0);
  return first ? comb_dense_impl(y, w, src, LMF_DTYPE_F32, nv, n, 1)
               : comb_dense_impl(y, w, src, LMF_DTYPE_F32, nv, n, 0);
}

LMF_VECTOR_CLONES
static float max_block(const float *x, int n) {
  int32_t m = fkey_s(lmf_lg_ninf());
  for (int i = 0; i < n; ++i) {
    const int32_t k = fkey_s(x[i]);
    m = k > m ? k : m;
  }
  return fkey_s_inv(m);
}

/* Indices i of the non-zero mask bytes, in order (mask has n bytes, padded to a multiple of 8 with
 * zeros); returns their number. Fast when few are set. */
static int mask_indices(const uint8_t *mask, int n, int32_t *idx) {
  int c = 0;
  for (int i = 0; i < n; i += 8) {
    uint64_t w;
    memcpy(&w, mask + i, 8);
    while (w) {
      int b = __builtin_ctzll(w) >> 3;
      idx[c++] = i + b;
      w &= ~((uint64_t)0xff << (8 * b));
    }
  }
  return c;
}

/* The first index of v in x (0 if absent): chunks are tested with a vectorised compare first. */
LMF_VECTOR_CLONES
static int32_t first_index(const float *x, int n, float v) {
  for (int c = 0; c < n; c += 64) {
    const int m = n - c < 64 ? n - c : 64;
    int any = 0;
    for (int i = 0; i < m; ++i) any |= x[c + i] == v;
    if (!any) continue;
    for (int i = 0; i < m; ++i)
      if (x[c + i] == v) return c + i;
  }
  return 0;
}

/* The end of the combine / temperature passes: optional y /= T; NaN / +inf check; finite count;
 * maximum and its first index. */
LMF_VECTOR_CLONES
static int64_t finish_block(float *y, int n, float T, int *bad, float *max, int32_t *arg) {
  int b = 0, c = 0;
  int32_t m = fkey_s(lmf_lg_ninf());
  if (T != 1.0f)
    for (int i = 0; i < n; ++i) y[i] = LMF_FDIV(y[i], T);
  for (int i = 0; i < n; ++i) {
    const float v = y[i];
    const int32_t k = fkey_s(v);
    b |= lmf_lg_is_bad(v);
    c += !lmf_lg_is_ninf(v);
    m = k > m ? k : m;
  }
  *bad = b;
  *max = fkey_s_inv(m);
  *arg = first_index(y, n, *max);
  return c;
}

/* sum of e^(x - m) in double; the fp32 masses go to wout (scratch if NULL); counts those > 0. */
LMF_VECTOR_CLONES
static double exp_sum(const float *x, int n, float m, float *wout, int64_t *cnt) {
  float tmp[BLK];
  float *w = wout ? wout : tmp;
  int c = 0;
  for (int i = 0; i < n; ++i) w[i] = lmf_lg_exp_neg(LMF_FSUB(x[i], m));
  for (int i = 0; i < n; ++i) c += w[i] > 0.0f;
  if (cnt) *cnt = c;
  return vsum(w, n);
}

/* The exp-sum the CUDA backend's chunks also form: e^(x - m) added in fp32 within each group of
 * LMF_LG_GROUP tokens (lmf_lg_group_add), the groups in double (lane j takes groups g % 8 == j, then
 * the lanes in order). x starts a block, so its groups are the CUDA threads'. */
LMF_VECTOR_CLONES
static double exp_sum_groups(const float *x, int n, float m) {
  float w[BLK];
  for (int i = 0; i < n; ++i) w[i] = lmf_lg_exp_neg(LMF_FSUB(x[i], m));
  const int ng = (n + LMF_LG_GROUP - 1) / LMF_LG_GROUP;
  for (int i = n; i < ng * LMF_LG_GROUP; ++i) w[i] = 0.0f; /* past the vocabulary's end: mass 0 */
  double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int g = 0; g < ng; ++g) {
    float s = 0.0f;
    for (int q = 0; q < LMF_LG_GROUP; ++q) s = lmf_lg_group_add(s, w[g * LMF_LG_GROUP + q]);
    lane[g % 8] += (double)s;
  }
  double t = 0.0;
  for (int j = 0; j < 8; ++j) t += lane[j];
  return t;
}

/* sum of w over the finite y, in double; counts them. */
LMF_VECTOR_CLONES
static double masked_sum(const float *y, const float *w, int n, int64_t *cnt) {
  float tmp[BLK];
  int c = 0;
  for (int i = 0; i < n; ++i) tmp[i] = lmf_lg_is_ninf(y[i]) ? 0.0f : w[i];
  for (int i = 0; i < n; ++i) c += tmp[i] > 0.0f;
  *cnt = c;
  return vsum(tmp, n);
}

/* 1 where the descending order of (x, id) is <= cut. */
#define LMF_DESC_LE(x, id, ck, ci)                                                                \
  ((~lmf_lg_fkey(x) < (ck)) | ((~lmf_lg_fkey(x) == (ck)) & ((id) <= (ci))))

/* Keeps y where its descending order is <= cut (ties in y by ascending id). */
LMF_VECTOR_CLONES
static void apply_desc_cut(float *y, int64_t v0, int n, uint64_t cut) {
  const uint32_t ck = (uint32_t)(cut >> 32), ci = (uint32_t)cut;
  for (int i = 0; i < n; ++i) {
    uint32_t id = (uint32_t)(v0 + i);
    y[i] = LMF_DESC_LE(y[i], id, ck, ci) ? y[i] : lmf_lg_ninf();
  }
}

/* Min-p: keeps y with y - ymax >= log(min_p). */
LMF_VECTOR_CLONES
static void apply_min_p(float *y, int n, float ymax, float lm) {
  for (int i = 0; i < n; ++i) y[i] = LMF_FSUB(y[i], ymax) >= lm ? y[i] : lmf_lg_ninf();
}

/* Plausibility: keeps y where x >= thr and x > -inf. */
LMF_VECTOR_CLONES
static void apply_plaus(float *y, const float *x, int n, float thr) {
  for (int i = 0; i < n; ++i) y[i] = (x[i] >= thr && !lmf_lg_is_ninf(x[i])) ? y[i] : lmf_lg_ninf();
}

/* Nucleus: keeps y where the model's x is in the nucleus (descending order <= cut) and > -inf. */
LMF_VECTOR_CLONES
static void apply_nucleus(float *y, const float *x, int64_t v0, int n, int use_cut, uint64_t cut) {
  const uint32_t ck = (uint32_t)(cut >> 32), ci = (uint32_t)cut;
  if (use_cut)
    for (int i = 0; i < n; ++i) {
      uint32_t id = (uint32_t)(v0 + i);
      int keep = LMF_DESC_LE(x[i], id, ck, ci) & !lmf_lg_is_ninf(x[i]);
      y[i] = keep ? y[i] : lmf_lg_ninf();
    }
  else
    for (int i = 0; i < n; ++i) y[i] = lmf_lg_is_ninf(x[i]) ? lmf_lg_ninf() : y[i];
}

/* GeDi's class filter: removes tokens before the cut (ascending d, then id) with d < log target. */
LMF_VECTOR_CLONES
static void apply_gedi_cut(float *y, const float *d, int64_t v0, int n, uint64_t cut, float lt) {
  const uint32_t ck = (uint32_t)(cut >> 32), ci = (uint32_t)cut;
  for (int i = 0; i < n; ++i) {
    uint32_t kk = lmf_lg_fkey(d[i]), id = (uint32_t)(v0 + i);
    int before = (kk < ck) | ((kk == ck) & (id < ci));
    y[i] = (before & (d[i] < lt)) ? lmf_lg_ninf() : y[i];
  }
}

LMF_VECTOR_CLONES
static void gedi_block(float *d, const float *xp, const float *xn, int n, float lse_p, float lse_n,
                       float Lp, float Ln, float t, float scale, float bp, float bn) {
  for (int i = 0; i < n; ++i) d[i] = lmf_lg_gedi_logp(xp[i], xn[i], lse_p, lse_n, Lp, Ln, t, scale, bp, bn);
}

/* log(p - q) of the speculative residual; x holds the draft model's x and is overwritten. */
LMF_VECTOR_CLONES
static void resid_block(float *x, const float *y, int n, float lse, float lse_d) {
  for (int i = 0; i < n; ++i) {
    float lp = lmf_lg_is_ninf(y[i]) ? lmf_lg_ninf() : LMF_FSUB(y[i], lse);
    float lq = lmf_lg_is_ninf(x[i]) ? lmf_lg_ninf() : LMF_FSUB(x[i], lse_d);
    x[i] = lmf_lg_log_residual(lp, lq);
  }
}

LMF_VECTOR_CLONES
static void logprobs_block(float *o, const float *y, int n, float lse) {
  for (int i = 0; i < n; ++i) o[i] = lmf_lg_is_ninf(y[i]) ? lmf_lg_ninf() : LMF_FSUB(y[i], lse);
}

/* Masses (unit: 1 per finite y; else e^(y - max)) into w; their total (double) and count, and the
 * mass (fp32, 16 lanes: it only chooses a window, the sorted walk decides) and count in each window
 * (bins < 4 << k, i.e. 2 (max - y) < 4 << k). */
LMF_VECTOR_CLONES
static void mass_windows(part *p, const float *y, int n, float hmax, int unit, float *w) {
  if (unit)
    for (int i = 0; i < n; ++i) w[i] = lmf_lg_is_ninf(y[i]) ? 0.0f : 1.0f;
  else
    for (int i = 0; i < n; ++i) w[i] = lmf_lg_exp_neg(LMF_FSUB(y[i], hmax));
  const lmf_v16f zero = {0}, two = zero + 2.0f, hm = zero + hmax;
  lmf_v16f m0 = zero, m1 = zero, m2 = zero, m3 = zero;
  lmf_v16i c = {0}, c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
  int i = 0;
  for (; i + 16 <= n; i += 16) {
    lmf_v16f wv, yv;
    memcpy(&wv, w + i, sizeof wv);
    memcpy(&yv, y + i, sizeof yv);
    const lmf_v16f d = (hm - yv) * two; /* d = 2 (max - y), as desc_bins; -inf y: +inf */
    const lmf_v16i pos = wv > zero, wb = (lmf_v16i)wv;
    const lmf_v16i i0 = pos & (d < zero + 4.0f), i1 = pos & (d < zero + 8.0f);
    const lmf_v16i i2 = pos & (d < zero + 16.0f), i3 = pos & (d < zero + 32.0f);
    c -= pos;
    c0 -= i0;
    c1 -= i1;
    c2 -= i2;
    c3 -= i3;
    m0 += (lmf_v16f)(wb & i0);
    m1 += (lmf_v16f)(wb & i1);
    m2 += (lmf_v16f)(wb & i2);
    m3 += (lmf_v16f)(wb & i3);
  }
  int64_t cc = 0, cw[NWIN] = {0, 0, 0, 0};
  double mw[NWIN] = {0, 0, 0, 0};
  for (int j = 0; j < 16; ++j) {
    cc += c[j];
    cw[0] += c0[j];
    cw[1] += c1[j];
    cw[2] += c2[j];
    cw[3] += c3[j];
    mw[0] += m0[j];
    mw[1] += m1[j];
    mw[2] += m2[j];
    mw[3] += m3[j];
  }
  for (; i < n; ++i) {
    if (!(w[i] > 0.0f)) continue;
    const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f);
    ++cc;
    for (int k = 0; k < NWIN; ++k)
      if (d < (float)(4 << k)) {
        ++cw[k];
        mw[k] += w[i];
      }
  }
  p->sum = vsum(w, n);
  p->cnt = cc;
  p->sel = cc;
  for (int k = 0; k < NWIN; ++k) {
    p->wm[k] = mw[k];
    p->wc[k] = cw[k];
  }
}

/* The bins of a descending cut (see search.hmode) and the tokens a histogram level counts. */
static inline __attribute__((always_inline)) int desc_b1(float u1) {
  return (int)(u1 < 63.0f ? u1 : 63.0f);
}
static inline __attribute__((always_inline)) int desc_b2(float u1, int j1) {
  float u2 = LMF_FMUL(LMF_FSUB(u1, (float)j1), 256.0f);
  u2 = u2 < 255.0f ? u2 : 255.0f;
  return (int)(u2 > 0.0f ? u2 : 0.0f);
}

/* Membership (mask) and bin of each token of a descending cut. mode 1: collect window d < lim;
 * 2: level-1 histogram (bin b1, tokens with d < lim); 3: level-2 histogram (bin b2, tokens of level-1
 * bin j1); 4: collect level-1 bin j1; 5: collect level-2 bin j2 of level-1 bin j1. */
LMF_VECTOR_CLONES
static void desc_bins(const float *y, const float *w, int n, const search *s, int mode, uint8_t *bin,
                      uint8_t *mask) {
  const float hmax = s->hmax, hs1 = s->hs1, lim = s->hlim;
  const int j1 = s->j1, j2 = s->j2;
  switch (mode) {
    case 1:
      for (int i = 0; i < n; ++i)
        mask[i] = (uint8_t)((w[i] > 0.0f) & (LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f) < lim));
      break;
    case 2:
      for (int i = 0; i < n; ++i) {
        const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f);
        bin[i] = (uint8_t)desc_b1(LMF_FMUL(d, hs1));
        mask[i] = (uint8_t)((w[i] > 0.0f) & (d < lim));
      }
      break;
    case 3:
      for (int i = 0; i < n; ++i) {
        const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f), u1 = LMF_FMUL(d, hs1);
        bin[i] = (uint8_t)desc_b2(u1, j1);
        mask[i] = (uint8_t)((w[i] > 0.0f) & (d < lim) & (desc_b1(u1) == j1));
      }
      break;
    case 4:
      for (int i = 0; i < n; ++i) {
        const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f), u1 = LMF_FMUL(d, hs1);
        mask[i] = (uint8_t)((w[i] > 0.0f) & (d < lim) & (desc_b1(u1) == j1));
      }
      break;
    default:
      for (int i = 0; i < n; ++i) {
        const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f), u1 = LMF_FMUL(d, hs1);
        mask[i] = (uint8_t)((w[i] > 0.0f) & (d < lim) & (desc_b1(u1) == j1) & (desc_b2(u1, j1) == j2));
      }
      break;
  }
  for (int i = n; i < ((n + 7) & ~7); ++i) mask[i] = 0;
}

/* Counts of the windows d < 4 << k (d = 2 (hmax - y); -inf y: never). */
LMF_VECTOR_CLONES
static void window_counts(part *p, const float *y, int n, float hmax) {
  int c0 = 0, c1 = 0, c2 = 0, c3 = 0;
  for (int i = 0; i < n; ++i) {
    const float d = LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f);
    c0 += d < 4.0f;
    c1 += d < 8.0f;
    c2 += d < 16.0f;
    c3 += d < 32.0f;
  }
  p->wc[0] = c0;
  p->wc[1] = c1;
  p->wc[2] = c2;
  p->wc[3] = c3;
}

/* The tokens of window d < lim (mask zero-padded to a multiple of 8). */
LMF_VECTOR_CLONES
static void window_mask(const float *y, int n, float hmax, float lim, uint8_t *mask) {
  for (int i = 0; i < n; ++i) mask[i] = (uint8_t)(LMF_FMUL(LMF_FSUB(hmax, y[i]), 2.0f) < lim);
  for (int i = n; i < ((n + 7) & ~7); ++i) mask[i] = 0;
}

/* One histogram level of a descending cut over the masses w. */
static void hist_block(part *p, const float *y, const float *w, int n, const search *s) {
  uint8_t bin[BLK], mask[BLK + 8];
  int32_t idx[BLK];
  desc_bins(y, w, n, s, s->level == 1 ? 2 : 3, bin, mask);
  const int nb = s->level == 1 ? NB1 : NB2;
  for (int j = 0; j < nb; ++j) {
    p->hm[j] = 0.0;
    p->hc[j] = 0;
  }
  const int c = mask_indices(mask, n, idx);
  for (int k = 0; k < c; ++k) {
    const int i = idx[k];
    p->hm[bin[i]] += (double)w[i];
    p->hc[bin[i]] += 1;
  }
}

/* Collect masks (zero-padded to a multiple of 8 bytes): tokens with order in [lo, hi] (bisection);
 * the descending-cut modes use desc_bins. */
LMF_VECTOR_CLONES
static void collect_mask_ord(const float *src, const float *w, int64_t v0, int n, int desc, uint64_t lo,
                             uint64_t hi, uint8_t *mask) {
  const uint32_t lk = (uint32_t)(lo >> 32), li = (uint32_t)lo;
  const uint32_t hk = (uint32_t)(hi >> 32), hi_ = (uint32_t)hi;
  const uint32_t flip = desc ? 0xffffffffu : 0u;
  for (int i = 0; i < n; ++i) {
    uint32_t k = lmf_lg_fkey(src[i]) ^ flip, id = (uint32_t)(v0 + i);
    int ge_lo = (k > lk) | ((k == lk) & (id >= li));
    int le_hi = (k < hk) | ((k == hk) & (id <= hi_));
    mask[i] = (uint8_t)((w[i] > 0.0f) & ge_lo & le_hi);
  }
  for (int i = n; i < ((n + 7) & ~7); ++i) mask[i] = 0;
}

/* One bisection pass: mass with ord <= mid, counts of tokens with mass in [lo, mid] and (mid, hi]. */
LMF_VECTOR_CLONES
static void search_block(const float *src, const float *w, int64_t v0, int n, int desc, uint64_t lo,
                         uint64_t mid, uint64_t hi, double *fmid, int64_t *clo, int64_t *chi) {
  const uint32_t lk = (uint32_t)(lo >> 32), li = (uint32_t)lo;
  const uint32_t mk = (uint32_t)(mid >> 32), mi = (uint32_t)mid;
  const uint32_t hk = (uint32_t)(hi >> 32), hi_ = (uint32_t)hi;
  const uint32_t flip = desc ? 0xffffffffu : 0u;
  float t[BLK];
  int ca = 0, cb = 0;
  for (int i = 0; i < n; ++i) {
    const uint32_t k = lmf_lg_fkey(src[i]) ^ flip, id = (uint32_t)(v0 + i);
    const int le_mid = (k < mk) | ((k == mk) & (id <= mi));
    const int ge_lo = (k > lk) | ((k == lk) & (id >= li));
    const int le_hi = (k < hk) | ((k == hk) & (id <= hi_));
    const int pos = w[i] > 0.0f;
    t[i] = le_mid ? w[i] : 0.0f;
    ca += pos & ge_lo & le_mid;
    cb += pos & !le_mid & le_hi;
  }
  *fmid = vsum(t, n);
  *clo = ca;
  *chi = cb;
}

/* Tokens of a Gumbel batch that can reach `bound`: finite y with FADD(y, LMF_LG_GUMBEL_MAX) >= bound,
 * compacted in order into ids (id0 + i) and yv; returns their number. */
static int gumbel_select_portable(const float *y, int n, float bound, uint32_t id0, uint32_t *ids,
                                  float *yv) {
  int c = 0;
  for (int i = 0; i < n; ++i) {
    ids[c] = id0 + (uint32_t)i;
    yv[c] = y[i];
    c += (LMF_FADD(y[i], LMF_LG_GUMBEL_MAX) >= bound) & !lmf_lg_is_ninf(y[i]);
  }
  return c;
}

#if defined(__GNUC__) && defined(__x86_64__)
LMF_AVX512 static int gumbel_select_avx512(const float *y, int n, float bound, uint32_t id0, uint32_t *ids,
                                           float *yv) {
  const __m512 gmax = _mm512_set1_ps(LMF_LG_GUMBEL_MAX), b = _mm512_set1_ps(bound);
  const __m512 ninf = _mm512_set1_ps(lmf_lg_ninf());
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int c = 0;
  for (int i = 0; i < n; i += 16) {
    const int m = n - i < 16 ? n - i : 16;
    const __mmask16 valid = (__mmask16)((1u << m) - 1u);
    __m512 v = _mm512_maskz_loadu_ps(valid, y + i);
    __mmask16 k = _mm512_mask_cmp_ps_mask(valid, _mm512_add_ps(v, gmax), b, _CMP_GE_OQ);
    k = _mm512_mask_cmp_ps_mask(k, v, ninf, _CMP_NEQ_UQ);
    __m512i id = _mm512_add_epi32(_mm512_set1_epi32((int)(id0 + (uint32_t)i)), lane);
    _mm512_mask_compressstoreu_epi32(ids + c, k, id);
    _mm512_mask_compressstoreu_ps(yv + c, k, v);
    c += __builtin_popcount((unsigned)k);
  }
  return c;
}

static int gumbel_select(const float *y, int n, float bound, uint32_t id0, uint32_t *ids, float *yv) {
  if (__builtin_cpu_supports("avx512f")) return gumbel_select_avx512(y, n, bound, id0, ids, yv);
  return gumbel_select_portable(y, n, bound, id0, ids, yv);
}
#else
static int gumbel_select(const float *y, int n, float bound, uint32_t id0, uint32_t *ids, float *yv) {
  return gumbel_select_portable(y, n, bound, id0, ids, yv);
}
#endif

/* A lower bound on w >> 8 for a token needing noise >= g: a token below it has U < u* with
 * G(u*) = g - margin, so its fp32 noise (within 1e-5 of the exact -log(-log U)) keeps its key strictly
 * below the bound (the margin, at least 1e-3 plus 1e-6 |bound|, covers the rounding of FADD). */
static uint32_t gumbel_word_min_g(double g) {
  if (!(g > -3.5)) return 0;
  double kf = floor(exp(-exp(-g)) * 16777216.0) - 1.0;
  return kf <= 0.0 ? 0u : (uint32_t)kf;
}

static double gumbel_margin(float bound) { return 1e-3 + 1e-6 * fabs((double)bound); }

static void make_gumbel_table(gumbel_table *tab, double mbound) {
  const double margin = 1e-3 + 1e-6 * mbound;
  tab->mbound = mbound;
  for (int q = 0; q < GT_N; ++q) tab->k[q] = gumbel_word_min_g((double)q / GT_STEP - GT_BASE - margin);
}

/* The candidates whose word can carry their key to `bound` (table cell rounded down: conservative,
 * the float cell index is within 1e-3 of the exact one for |bound| <= 1000); returns their indices. */
LMF_VECTOR_CLONES
static void gumbel_pass_mask(const float *restrict yv, const uint32_t *restrict wv, int c, float bound,
                             const uint32_t *restrict tabk, int32_t *restrict ok) {
  int32_t qi[GSUB];
  for (int j = 0; j < c; ++j) { /* ok: 2 the key may reach bound whatever the word, 1 by the table */
    const float q = (bound - yv[j] + (float)GT_BASE) * (float)GT_STEP - 0.01f;
    float qc = q > 0.0f ? q : 0.0f;
    qc = qc < (float)(GT_N - 1) ? qc : (float)(GT_N - 1);
    qi[j] = (int32_t)qc;
    ok[j] = q < 0.0f ? 2 : (q < (float)GT_N ? 1 : 0);
  }
  for (int j = 0; j < c; ++j) {
    const uint32_t km = tabk[qi[j]];
    ok[j] = (ok[j] == 2) | ((ok[j] == 1) & ((wv[j] >> 8) >= km));
  }
}

static int gumbel_pass(const float *yv, const uint32_t *wv, int c, float bound, const uint32_t *tabk,
                       int32_t *pass) {
  int32_t ok[GSUB];
  gumbel_pass_mask(yv, wv, c, bound, tabk, ok);
  int np = 0;
  for (int j = 0; j < c; ++j)
    if (ok[j]) pass[np++] = j;
  return np;
}

/* Gumbel-max over the finite sc[0 .. n) (tokens v0 + i), starting from the best key best_in of an
 * other token: the block's best key and token (-1: none reaches best_in). */
static void gumbel_block(const float *sc, int64_t v0, int n, uint64_t seed, uint64_t goff, float best_in,
                         const gumbel_table *tab, float *key_out, int32_t *id_out) {
  uint32_t ids[GSUB], wv[GSUB];
  int32_t pass[GSUB];
  float yv[GSUB];
  float bkey = lmf_lg_ninf();
  int32_t bid = -1;
  for (int s0 = 0; s0 < n; s0 += GSUB) {
    const int m = n - s0 < GSUB ? n - s0 : GSUB;
    const float bound = (bid >= 0 && bkey > best_in) ? bkey : best_in;
    const float *ys = sc + s0;
    const float mx = max_block(ys, m);
    if (lmf_lg_is_ninf(mx) || LMF_FADD(mx, LMF_LG_GUMBEL_MAX) < bound) continue;
    const int c = gumbel_select(ys, m, bound, (uint32_t)(v0 + s0), ids, yv);
    philox_ids(seed, goff, LMF_LG_DOMAIN_GUMBEL, ids, c, wv);
    const int use_tab = !lmf_lg_is_ninf(bound) && fabs((double)bound) <= tab->mbound;
    int np;
    if (use_tab) {
      np = gumbel_pass(yv, wv, c, bound, tab->k, pass);
    } else {
      const uint32_t kb = lmf_lg_is_ninf(bound) ? 0u
                          : gumbel_word_min_g((double)bound - (double)mx - gumbel_margin(bound));
      np = 0;
      for (int j = 0; j < c; ++j)
        if ((wv[j] >> 8) >= kb) pass[np++] = j;
    }
    for (int q = 0; q < np; ++q) {
      const int j = pass[q];
      const float key = lmf_lg_gumbel_key(yv[j], lmf_lg_gumbel_from_word(wv[j]));
      if (bid < 0 || key > bkey) {
        bkey = key;
        bid = (int32_t)ids[j];
      }
    }
  }
  *key_out = bkey;
  *id_out = bid;
}

/* ---- Task setup ----------------------------------------------------------------------------------- */

/* Sorts a sparse row's entries by id in place (heapsort: no allocation, O(n log n)). */
static void sp_sift(sp_entry *e, int32_t root, int32_t n) {
  for (;;) {
    int32_t c = 2 * root + 1;
    if (c >= n) return;
    if (c + 1 < n && e[c + 1].id > e[c].id) ++c;
    if (e[root].id >= e[c].id) return;
    sp_entry x = e[root];
    e[root] = e[c];
    e[c] = x;
    root = c;
  }
}

static void sort_sparse(sp_entry *e, int32_t n) {
  for (int32_t i = n / 2 - 1; i >= 0; --i) sp_sift(e, i, n);
  for (int32_t end = n - 1; end > 0; --end) {
    sp_entry x = e[0];
    e[0] = e[end];
    e[end] = x;
    sp_sift(e, 0, end);
  }
}

static int cand_cmp(const void *a, const void *b) {
  uint64_t x = ((const cand *)a)->ord, y = ((const cand *)b)->ord;
  return (x > y) - (x < y);
}

/* Sorts candidates by ord: qsort when few (under 1 KiB: glibc sorts that on the stack), else an LSD
 * radix sort on the bytes that differ (tmp has room for n). */
static void sort_cands(cand *c, cand *tmp, int64_t n) {
  if (n < 64) {
    qsort(c, (size_t)n, sizeof(cand), cand_cmp);
    return;
  }
  uint64_t all_or = 0, all_and = ~(uint64_t)0;
  for (int64_t i = 0; i < n; ++i) {
    all_or |= c[i].ord;
    all_and &= c[i].ord;
  }
  const uint64_t differ = all_or ^ all_and;
  cand *src = c, *dst = tmp;
  for (int shift = 0; shift < 64; shift += 8) {
    if (!((differ >> shift) & 0xffu)) continue;
    int64_t cnt[257];
    memset(cnt, 0, sizeof cnt);
    for (int64_t i = 0; i < n; ++i) cnt[((src[i].ord >> shift) & 0xffu) + 1]++;
    for (int d = 0; d < 256; ++d) cnt[d + 1] += cnt[d];
    for (int64_t i = 0; i < n; ++i) dst[cnt[(src[i].ord >> shift) & 0xffu]++] = src[i];
    cand *x = src;
    src = dst;
    dst = x;
  }
  if (src != c) memcpy(c, src, (size_t)n * sizeof(cand));
}

static void fail(task *t, int32_t status) {
  t->status = status;
  t->phase = PH_FAIL;
}

static int is_verify(const lmf_lg_job *job) { return job->mode == LMF_LG_MODE_VERIFY; }

static int gedi_filter_on(const lmf_lg_job *job) {
  return job->gedi_pos_model >= 0 && job->gedi_filter_p > 0.0f;
}

/* Starts (or, in verify, advances to) output row t->row. */
static void row_init(const lmf_lg_job *job, task *t) {
  const int64_t b = t->row;
  t->status = LMF_ROW_OK;
  t->cut_on = 0;
  t->gf_on = 0;
  t->nuc_search = 0;
  t->w_valid = 0;
  t->token = -1;
  sp_entry *spfree = t->sparse;
  int bad_index = 0, bad = 0;
  /* Temperature and noise. */
  float T = job->temperature_rows ? job->temperature_rows[b] : job->temperature;
  if (!lmf_isfinite_f32(T) || T < 0.0f) bad = 1;
  t->T = T;
  t->greedy = T == 0.0f;
  t->Teff = t->greedy ? 1.0f : T;
  t->fuse_T = !gedi_filter_on(job);
  const int64_t sidx = is_verify(job) ? t->task : b;
  t->seed = 0;
  t->offset = 0;
  if (!t->greedy) {
    t->seed = job->seeds ? job->seeds[sidx] : 0;
    t->offset = job->offsets ? job->offsets[sidx] : 0;
  }
  t->goff = t->offset + (uint64_t)t->pos;
  t->need_lse = is_verify(job) || job->token_logprob || job->lse || job->logprobs;
  t->need_dist = !t->greedy || (!is_verify(job) && t->need_lse);
  t->wfree_try = 0;
  t->topp_total = 0;
  t->want_sum = t->fuse_T && t->need_dist && job->top_k == 0 &&
                (job->top_p < 1.0f || (t->need_lse && job->min_p <= 0.0f));
  t->list_mode = 0;
  /* Models. */
  for (int k = 0; k < job->num_models; ++k) {
    const lmf_lg_model *m = &job->models[k];
    t->use[k] = 0;
    t->comb[k] = 0;
    t->sp_n[k] = 0;
    if (!m->roles) continue;
    if (m->roles & LMF_LG_ROLE_COMBINE) {
      float c = m->coeff_rows ? m->coeff_rows[b] : m->coeff;
      if (!lmf_isfinite_f32(c)) bad = 1;
      else if (c != 0.0f) {
        t->comb[k] = 1;
        t->w[k] = lmf_lg_weight(c, m->temperature);
      }
    }
    t->use[k] = t->comb[k] || (m->roles & ~(uint32_t)LMF_LG_ROLE_COMBINE);
    if (!t->use[k]) continue;
    int64_t r = m->row_index ? (int64_t)m->row_index[b] : b;
    if (r < 0) {
      bad_index = 1;
      continue;
    }
    t->in_row[k] = r;
    if (m->sparse_index) {
      const int32_t *ids = m->sparse_index + r * m->row_stride;
      const void *vals = row_ptr(m, r);
      const int64_t lim = model_lim(job, m);
      sp_entry *e = spfree;
      for (int32_t j = 0; j < m->sparse_k; ++j) {
        e[j].id = ids[j];
        e[j].z = load_one(vals, m->dtype, j);
        if (ids[j] < 0 || ids[j] >= lim) bad_index = 1;
        bad |= lmf_lg_is_bad(e[j].z);
      }
      sort_sparse(e, m->sparse_k);
      for (int32_t j = 1; j < m->sparse_k; ++j)
        if (e[j].id == e[j - 1].id) bad_index = 1;
      t->sp[k] = e;
      t->sp_n[k] = m->sparse_k;
      spfree += m->sparse_k;
    }
  }
  /* Statistics roles: distinct models. */
  const int32_t role_model[NST] = {job->plaus_model, job->nucleus_model, job->gedi_pos_model,
                                   job->gedi_neg_model, is_verify(job) ? job->draft_model : -1};
  t->nstat = 0;
  for (int r = 0; r < NST; ++r) {
    t->role_stat[r] = -1;
    if (role_model[r] < 0) continue;
    int j = 0;
    while (j < t->nstat && t->stat_model[j] != role_model[r]) ++j;
    if (j == t->nstat) t->stat_model[t->nstat++] = role_model[r];
    t->role_stat[r] = j;
  }
  /* GeDi state. */
  if (job->gedi_pos_model >= 0) {
    t->gL_pos = job->gedi_L_pos[b];
    t->gL_neg = job->gedi_L_neg[b];
    int32_t n = job->gedi_n[b];
    if (!lmf_isfinite_f32(t->gL_pos) || !lmf_isfinite_f32(t->gL_neg) || n < 0) bad = 1;
    t->gt = (float)((int64_t)n + 1);
  }
  if (bad_index) {
    fail(t, LMF_ROW_BAD_INDEX);
  } else if (bad) {
    fail(t, LMF_ROW_NONFINITE);
  } else {
    t->phase = t->nstat > 0 ? PH_STATS : PH_COMBINE;
  }
}

static void task_start(const lmf_lg_job *job, task *t, int64_t i) {
  t->task = i;
  t->pos = 0;
  t->row = is_verify(job) ? i * ((int64_t)job->draft_len + 1) : i;
  t->seed = 0;
  t->offset = 0;
  t->phase = PH_INIT;
}

/* ---- Phases: block work -------------------------------------------------------------------------- */

static void block_step(const lmf_lg_job *job, task *t, int64_t blk) {
  const int64_t V = job->vocab_out;
  const int64_t v0 = blk * BLK;
  const int n = (int)(V - v0 < BLK ? V - v0 : BLK);
  part *p = &t->parts[blk];
  float tmp[BLK], tmp2[BLK];
  float *y = t->Y + v0;
  switch (t->phase) {
    case PH_STATS: {
      p->bad = 0;
      for (int j = 0; j < t->nstat; ++j) {
        int k = t->stat_model[j];
        const lmf_lg_model *m = &job->models[k];
        float *x = (t->role_stat[ST_NUC] == j) ? t->D + v0 : tmp;
        load_z(job, t, k, v0, n, x);
        p->bad |= any_bad(x, n);
        scale_block(x, m->temperature, n);
        float mx = max_block(x, n);
        p->smax[j] = mx;
        p->ssum[j] = lmf_lg_is_ninf(mx) ? 0.0 : exp_sum_groups(x, n, mx);
      }
      break;
    }
    case PH_NUC_PREP: mass_windows(p, t->D + v0, n, t->smax[ST_NUC], 0, t->W + v0); break;
    case PH_TOPK_PREP: mass_windows(p, y, n, t->ymax, 1, t->W + v0); break;
    case PH_TOPP_PREP:
      if (t->wfree_try) {
        window_counts(p, y, n, t->ymax);
        break;
      }
      if (t->cut_on) apply_desc_cut(y, v0, n, t->cut);
      mass_windows(p, y, n, t->ymax, 0, t->W + v0);
      break;
    case PH_HIST: hist_block(p, t->s.src + v0, t->W + v0, n, &t->s); break;
    case PH_GF_PREP:
      p->sum = exp_sum(y, n, t->ymax, t->W + v0, &p->cnt);
      p->sel = p->cnt;
      break;
    case PH_SEARCH:
      search_block(t->s.src + v0, t->W + v0, v0, n, t->s.desc, t->s.lo, t->s.mid, t->s.hi, &p->sum,
                   &p->cnt, &p->cnt2);
      break;
    case PH_COLLECT: {
      uint8_t mask[BLK + 8];
      int32_t idx[BLK];
      const float *src = t->s.src + v0, *w = t->W + v0;
      uint8_t bin[BLK];
      if (t->s.wfree) window_mask(src, n, t->s.hmax, t->s.hlim, mask);
      else if (t->s.hmode > 0) desc_bins(src, w, n, &t->s, t->s.hmode == 1 ? 1 : t->s.hmode + 2, bin, mask);
      else collect_mask_ord(src, w, v0, n, t->s.desc, t->s.lo, t->s.hi, mask);
      const int c = mask_indices(mask, n, idx);
      cand *cd = t->cands + p->off;
      for (int j = 0; j < c; ++j) {
        const int i = idx[j];
        cd[j].ord = t->s.desc ? lmf_lg_ord_desc(src[i], (uint32_t)(v0 + i))
                              : lmf_lg_ord_asc(src[i], (uint32_t)(v0 + i));
        cd[j].w = t->s.wfree ? lmf_lg_exp_neg(LMF_FSUB(src[i], t->s.hmax)) : w[i];
        cd[j].pad = 0;
      }
      break;
    }
    case PH_COMBINE: {
      int bad = 0, first = 1;
      for (int k = 0; k < job->num_models; ++k) {
        if (!t->comb[k]) continue;
        const lmf_lg_model *m = &job->models[k];
        if (m->sparse_index) {
          load_z(job, t, k, v0, n, tmp);
          bad |= any_bad(tmp, n);
          term_block(y, t->w[k], tmp, n, first);
        } else {
          const char *src = (const char *)row_ptr(m, t->in_row[k]) + v0 * (int64_t)lmf_dtype_size(m->dtype);
          bad |= comb_dense(y, t->w[k], src, m->dtype, cols_in_block(job, k, v0, n), n, first);
        }
        first = 0;
      }
      if (first)
        for (int i = 0; i < n; ++i) y[i] = 0.0f;
      if (t->role_stat[ST_PLAUS] >= 0) {
        load_z(job, t, job->plaus_model, v0, n, tmp);
        scale_block(tmp, job->models[job->plaus_model].temperature, n);
        apply_plaus(y, tmp, n, t->plaus_thr);
      }
      if (t->role_stat[ST_NUC] >= 0) apply_nucleus(y, t->D + v0, v0, n, t->nuc_search, t->nuc_cut);
      if (job->gedi_pos_model >= 0) {
        load_z(job, t, job->gedi_pos_model, v0, n, tmp);
        scale_block(tmp, job->models[job->gedi_pos_model].temperature, n);
        load_z(job, t, job->gedi_neg_model, v0, n, tmp2);
        scale_block(tmp2, job->models[job->gedi_neg_model].temperature, n);
        float *d = t->D + v0;
        gedi_block(d, tmp, tmp2, n, t->slse[ST_GPOS], t->slse[ST_GNEG], t->gL_pos, t->gL_neg, t->gt,
                   job->gedi_logit_scale, job->gedi_bias_pos, job->gedi_bias_neg);
        if (job->gedi_omega != 0.0f) term_block(y, job->gedi_omega, d, n, 0);
      }
      if (job->bias) {
        const float *bias = job->bias + t->row * job->bias_row_stride + v0;
        bad |= any_bad(bias, n);
        term_block(y, 1.0f, bias, n, 0);
      }
      int b2;
      p->cnt = finish_block(y, n, t->fuse_T ? t->Teff : 1.0f, &b2, &p->max, &p->arg);
      p->bad = bad | b2;
      if (t->want_sum) p->osum = lmf_lg_is_ninf(p->max) ? 0.0 : exp_sum_groups(y, n, p->max);
      break;
    }
    case PH_TEMP: {
      if (t->gf_on) apply_gedi_cut(y, t->D + v0, v0, n, t->gf_cut, job->gedi_log_target);
      int b2;
      p->cnt = finish_block(y, n, t->Teff, &b2, &p->max, &p->arg);
      p->bad = b2;
      break;
    }
    case PH_FINAL: {
      if (t->cut_on) apply_desc_cut(y, v0, n, t->cut);
      if (job->min_p > 0.0f) apply_min_p(y, n, t->ymax, job->log_min_p);
      p->sum = t->w_valid ? masked_sum(y, t->W + v0, n, &p->cnt) : exp_sum(y, n, t->ymax, NULL, &p->cnt);
      break;
    }
    case PH_SAMPLE:
      gumbel_block(y, v0, n, t->seed, t->goff, t->best, &t->gtab, &p->key, &p->id);
      break;
    case PH_RESID: {
      load_z(job, t, job->draft_model, v0, n, tmp);
      scale_block(tmp, job->models[job->draft_model].temperature, n);
      resid_block(tmp, y, n, t->lse, t->slse[ST_DRAFT]);
      gumbel_block(tmp, v0, n, t->seed, t->goff, lmf_lg_ninf(), &t->gtab, &p->key, &p->id);
      break;
    }
    case PH_OUT:
    case PH_FAIL: {
      if (is_verify(job) || !job->logprobs) break;
      float *o = job->logprobs + t->row * job->logprobs_row_stride + v0;
      if (t->phase == PH_FAIL || t->list_mode) { /* list mode: -inf here, the survivors at the end */
        const float f = t->phase == PH_FAIL ? lmf_bits_f32(0x7fc00000u) : lmf_lg_ninf();
        for (int i = 0; i < n; ++i) o[i] = f;
      } else {
        logprobs_block(o, y, n, t->lse);
      }
      break;
    }
    default: break;
  }
}

static int has_block_work(const lmf_lg_job *job, int phase) {
  switch (phase) {
    case PH_INIT:
    case PH_DONE: return 0;
    case PH_OUT:
    case PH_FAIL: return !is_verify(job) && job->logprobs != NULL;
    default: return 1;
  }
}

/* ---- Phases: merges --------------------------------------------------------------------------------- */

static void set_offsets(task *t, int64_t nblk) {
  int64_t off = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    t->parts[b].off = off;
    off += t->parts[b].sel;
  }
}

/* A bisection search over the whole order (parts[].sel: each block's tokens with mass > 0). */
static void start_search(task *t, int kind, const float *src, int desc, double target, int64_t nblk) {
  search *s = &t->s;
  s->kind = kind;
  s->src = src;
  s->desc = desc;
  s->hmode = 0;
  s->wfree = 0;
  s->target = target;
  s->lo = 0;
  s->hi = UINT64_MAX;
  s->flo = 0.0;
  s->cnt = 0;
  for (int64_t b = 0; b < nblk; ++b) s->cnt += t->parts[b].sel;
  s->mid = s->lo + (s->hi - s->lo) / 2;
  t->phase = s->cnt <= CAP ? PH_COLLECT : PH_SEARCH;
  if (t->phase == PH_COLLECT) set_offsets(t, nblk);
}

/* A descending cut (src values below hmax, masses in W), after the windows pass: the smallest
 * window whose mass reaches the target, if it holds at most CAP tokens, gives the candidates; else
 * all tokens if there are at most CAP; else a histogram of the smallest window holding the target
 * mass (or of everything). The target: frac (unit masses), or frac times `total` where that is not
 * negative (top-p from the combine pass's total, at most the masses' sum), else times the masses'
 * sum. */
static void start_desc_search(task *t, int kind, const float *src, float hmax, double frac, int unit,
                              double total, int64_t nblk) {
  double tot = 0.0, wm[NWIN] = {0.0, 0.0, 0.0, 0.0};
  int64_t cnt = 0, wc[NWIN] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nblk; ++b) {
    tot += t->parts[b].sum;
    cnt += t->parts[b].cnt;
    for (int k = 0; k < NWIN; ++k) {
      wm[k] += t->parts[b].wm[k];
      wc[k] += t->parts[b].wc[k];
    }
  }
  search *s = &t->s;
  s->kind = kind;
  s->src = src;
  s->desc = 1;
  s->unit = unit;
  s->hmax = hmax;
  s->target = unit ? frac : frac * (total >= 0.0 ? total : tot);
  if (!unit && s->target > tot) s->target = tot; /* the combine's total, rounded above the masses' */
  s->flo = 0.0;
  s->hmode = 0;
  s->wfree = 0;
  s->hlim = lmf_bits_f32(0x7f800000u);
  s->hs1 = 1.0f;
  for (int k = NWIN - 1; k >= 0; --k)
    if (wm[k] >= s->target) {
      s->hlim = (float)(4 << k);
      s->hs1 = 64.0f / s->hlim;
    }
  for (int k = 0; k < NWIN; ++k)
    if (wm[k] >= s->target && wc[k] <= CAP) {
      s->hmode = 1;
      s->hlim = (float)(4 << k);
      s->cnt = wc[k];
      for (int64_t b = 0; b < nblk; ++b) t->parts[b].sel = t->parts[b].wc[k];
      set_offsets(t, nblk);
      t->phase = PH_COLLECT;
      return;
    }
  if (cnt <= CAP) {
    start_search(t, kind, src, 1, s->target, nblk);
    return;
  }
  s->level = 1;
  t->phase = PH_HIST;
}

/* Top-p from the combine pass's total: the largest window with at most CAP tokens gives candidates
 * whose masses are computed when collected; if their mass falls short of the target, or every window
 * is too large, the full pass with masses runs instead. */
static void start_window_search(const lmf_lg_job *job, task *t, int64_t nblk) {
  int64_t wc[NWIN] = {0, 0, 0, 0};
  for (int64_t b = 0; b < nblk; ++b)
    for (int k = 0; k < NWIN; ++k) wc[k] += t->parts[b].wc[k];
  int kw = -1;
  for (int k = 0; k < NWIN; ++k)
    if (wc[k] <= CAP) kw = k;
  if (kw < 0) {
    t->wfree_try = 0;
    t->phase = PH_TOPP_PREP;
    return;
  }
  search *s = &t->s;
  s->kind = SR_TOPP;
  s->src = t->Y;
  s->desc = 1;
  s->unit = 0;
  s->hmax = t->ymax;
  s->target = (double)job->top_p * t->total;
  s->flo = 0.0;
  s->hmode = 1;
  s->wfree = 1;
  s->hlim = (float)(4 << kw);
  s->cnt = wc[kw];
  for (int64_t b = 0; b < nblk; ++b) t->parts[b].sel = t->parts[b].wc[kw];
  set_offsets(t, nblk);
  t->phase = PH_COLLECT;
}

/* The whole-order bisection, when the histograms cannot isolate CAP candidates (ties). */
static void fallback_search(task *t, int64_t nblk) {
  for (int64_t b = 0; b < nblk; ++b) t->parts[b].sel = t->parts[b].cnt;
  start_search(t, t->s.kind, t->s.src, 1, t->s.target, nblk);
}

/* After a histogram pass: the bin where the mass (from the top) reaches the target; its tokens are
 * the candidates if at most CAP, else the next level (or the bisection). */
static void start_hist_search(task *t, int64_t nblk) {
  search *s = &t->s;
  const int nb = s->level == 1 ? NB1 : NB2;
  double H[NB2];
  int64_t C[NB2];
  for (int j = 0; j < nb; ++j) {
    H[j] = 0.0;
    C[j] = 0;
  }
  for (int64_t b = 0; b < nblk; ++b)
    for (int j = 0; j < nb; ++j) {
      H[j] += t->parts[b].hm[j];
      C[j] += t->parts[b].hc[j];
    }
  double cum = s->level == 1 ? 0.0 : s->flo;
  int bin = -1, last = -1;
  for (int j = 0; j < nb; ++j) {
    if (C[j] > 0) last = j;
    if (C[j] > 0 && cum + H[j] >= s->target) {
      bin = j;
      break;
    }
    cum += H[j];
  }
  if (bin < 0) {
    if (s->level == 1 || last < 0) { /* the window's mass was short of the target (rounding) */
      fallback_search(t, nblk);
      return;
    }
    bin = last; /* level 2: the level-1 bin reached the target; rounding in its split */
    cum = s->flo;
    for (int j = 0; j < bin; ++j) cum += H[j];
  }
  s->flo = cum;
  if (s->level == 1) s->j1 = bin;
  else s->j2 = bin;
  if (C[bin] <= CAP) {
    s->hmode = s->level + 1;
    s->cnt = C[bin];
    for (int64_t b = 0; b < nblk; ++b) t->parts[b].sel = t->parts[b].hc[bin];
    set_offsets(t, nblk);
    t->phase = PH_COLLECT;
  } else if (s->level == 1) {
    s->level = 2;
    t->phase = PH_HIST;
  } else {
    s->flo = 0.0;
    fallback_search(t, nblk);
  }
}

static void after_temp(const lmf_lg_job *job, task *t);
static void after_final(const lmf_lg_job *job, task *t);
static void list_finish(const lmf_lg_job *job, task *t);
static void list_top_p(const lmf_lg_job *job, task *t);

/* Gumbel-max over Y, starting from the argmax's key (every bound it meets is within
 * [y_max - 3, y_max + 17]). */
static void start_sample(task *t) {
  t->phase = PH_SAMPLE;
  t->best = lmf_lg_gumbel_key(t->Y[t->yarg], lmf_lg_gumbel(t->seed, t->goff, (uint32_t)t->yarg));
  make_gumbel_table(&t->gtab, fabs((double)t->ymax) + 20.0);
}

/* List mode (combine only): the survivors of the last cut are cands[0 .. nlist), in descending order.
 * Min-p keeps a prefix of them; the LSE sums their masses in that order; the token is the argmax (T =
 * 0) or the Gumbel-max over the list (ties to the lowest id), exactly the token the full passes give.
 * Y stays unmasked: PH_OUT writes the logprobs row from the list. */
static void list_finish(const lmf_lg_job *job, task *t) {
  cand *c = t->cands;
  int64_t n = t->nlist;
  if (job->min_p > 0.0f) {
    int64_t m = 0;
    while (m < n && LMF_FSUB(t->Y[(uint32_t)c[m].ord], t->ymax) >= job->log_min_p) ++m;
    n = m;
  }
  double S = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float y = t->Y[(uint32_t)c[i].ord];
    S += (double)(t->s.unit ? lmf_lg_exp_neg(LMF_FSUB(y, t->ymax)) : c[i].w);
  }
  t->lse = (float)((double)t->ymax + log(S));
  t->nlist = n;
  t->list_mode = 1;
  t->cut_on = 0;
  t->w_valid = 0;
  if (t->greedy) {
    t->token = t->yarg;
  } else {
    uint32_t ids[256], w[256];
    float bkey = lmf_lg_ninf();
    int32_t bid = -1;
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
      const int m = n - i0 < 256 ? (int)(n - i0) : 256;
      for (int j = 0; j < m; ++j) ids[j] = (uint32_t)c[i0 + j].ord;
      philox_ids(t->seed, t->goff, LMF_LG_DOMAIN_GUMBEL, ids, m, w);
      for (int j = 0; j < m; ++j) {
        const float key = lmf_lg_gumbel_key(t->Y[ids[j]], lmf_lg_gumbel_from_word(w[j]));
        if (bid < 0 || key > bkey || (key == bkey && (int32_t)ids[j] < bid)) {
          bkey = key;
          bid = (int32_t)ids[j];
        }
      }
    }
    t->token = bid;
  }
  t->phase = PH_OUT;
}

/* Top-p on the top-k list (cands[0 .. nlist), descending): masses e^(y - ymax) into the list, the
 * shortest prefix whose mass reaches top_p times the list's total. */
static void list_top_p(const lmf_lg_job *job, task *t) {
  cand *c = t->cands;
  const int64_t n = t->nlist;
  double tot = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    c[i].w = lmf_lg_exp_neg(LMF_FSUB(t->Y[(uint32_t)c[i].ord], t->ymax));
    tot += (double)c[i].w;
  }
  const double target = (double)job->top_p * tot;
  double cum = 0.0;
  int64_t m = n;
  for (int64_t i = 0; i < n; ++i) {
    cum += (double)c[i].w;
    if (cum >= target) {
      m = i + 1;
      break;
    }
  }
  t->nlist = m;
  t->s.unit = 0; /* the list now holds masses */
}

static void search_done(const lmf_lg_job *job, task *t, uint64_t cut) {
  switch (t->s.kind) {
    case SR_NUC:
      t->nuc_search = 1;
      t->nuc_cut = cut;
      t->phase = PH_COMBINE;
      break;
    case SR_GF:
      t->gf_on = 1;
      t->gf_cut = cut;
      t->phase = PH_TEMP;
      break;
    case SR_TOPK:
      t->cut_on = 1;
      t->cut = cut;
      if (t->nlist >= 0 && !is_verify(job)) {
        if (job->top_p < 1.0f) list_top_p(job, t);
        list_finish(job, t);
      } else {
        t->wfree_try = 0; /* the combine pass's total is not the top-k survivors' */
        t->topp_total = 0;
        t->phase = job->top_p < 1.0f ? PH_TOPP_PREP : PH_FINAL;
      }
      break;
    default: /* SR_TOPP: W holds e^(y - ymax) of every token, unless the masses were computed for the
                window only */
      t->cut_on = 1;
      t->cut = cut;
      t->w_valid = !t->s.wfree;
      if (t->nlist >= 0 && !is_verify(job)) list_finish(job, t);
      else t->phase = PH_FINAL;
      break;
  }
}

static void after_combine(const lmf_lg_job *job, task *t) {
  if (gedi_filter_on(job)) t->phase = PH_GF_PREP;
  else after_temp(job, t); /* the combine pass divided by T */
}

static void after_temp(const lmf_lg_job *job, task *t) {
  if (!t->need_dist) after_final(job, t); /* greedy, no distribution outputs: the argmax is final */
  else if (job->top_k > 0 && t->nfin > job->top_k) t->phase = PH_TOPK_PREP;
  else if (job->top_p < 1.0f) {
    t->wfree_try = t->want_sum;
    t->topp_total = t->want_sum;
    t->phase = PH_TOPP_PREP;
  } else if (!t->need_lse && job->min_p <= 0.0f) {
    after_final(job, t); /* sampling needs no LSE */
  } else if (t->want_sum && job->min_p <= 0.0f) {
    t->lse = (float)((double)t->ymax + log(t->total)); /* every finite token survives */
    after_final(job, t);
  } else {
    t->phase = PH_FINAL;
  }
}

static void max_merge(task *t, int64_t nblk) {
  int bad = 0;
  float mx = lmf_lg_ninf();
  int32_t arg = 0;
  int64_t cnt = 0;
  for (int64_t b = 0; b < nblk; ++b) {
    const part *p = &t->parts[b];
    bad |= p->bad;
    cnt += p->cnt;
    if (p->max > mx) {
      mx = p->max;
      arg = (int32_t)(b * BLK + p->arg);
    }
  }
  t->ymax = mx;
  t->yarg = arg;
  t->nfin = cnt;
  if (bad) fail(t, LMF_ROW_NONFINITE);
  else if (cnt == 0) fail(t, LMF_ROW_ALL_MASKED);
}

static void finish_outputs(const lmf_lg_job *job, task *t);

static void merge_step(const lmf_lg_job *job, task *t) {
  const int64_t nblk = ((int64_t)job->vocab_out + BLK - 1) / BLK; /* 64-bit: vocab_out may be near 2^31 */
  part *P = t->parts;
  switch (t->phase) {
    case PH_INIT: row_init(job, t); break;
    case PH_STATS: {
      int bad = 0;
      for (int64_t b = 0; b < nblk; ++b) bad |= P[b].bad;
      float smax[NST], slse[NST];
      for (int j = 0; j < t->nstat; ++j) {
        float M = lmf_lg_ninf();
        for (int64_t b = 0; b < nblk; ++b) M = P[b].smax[j] > M ? P[b].smax[j] : M;
        double S = 0.0;
        if (!lmf_lg_is_ninf(M))
          for (int64_t b = 0; b < nblk; ++b)
            if (!lmf_lg_is_ninf(P[b].smax[j])) S += P[b].ssum[j] * exp((double)P[b].smax[j] - (double)M);
        smax[j] = M;
        slse[j] = lmf_lg_is_ninf(M) ? M : (float)((double)M + log(S));
      }
      for (int r = 0; r < NST; ++r) {
        if (t->role_stat[r] < 0) continue;
        t->smax[r] = smax[t->role_stat[r]];
        t->slse[r] = slse[t->role_stat[r]];
      }
      if (bad) {
        fail(t, LMF_ROW_NONFINITE);
        break;
      }
      int all_masked = 0;
      for (int r = ST_PLAUS; r <= ST_GNEG; ++r)
        if (t->role_stat[r] >= 0 && lmf_lg_is_ninf(t->smax[r])) all_masked = 1;
      if (all_masked) {
        fail(t, LMF_ROW_ALL_MASKED);
        break;
      }
      if (t->role_stat[ST_PLAUS] >= 0) t->plaus_thr = LMF_FADD(t->smax[ST_PLAUS], job->plaus_log_alpha);
      if (t->role_stat[ST_NUC] >= 0 && job->nucleus_p < 1.0f) t->phase = PH_NUC_PREP;
      else t->phase = PH_COMBINE;
      break;
    }
    case PH_NUC_PREP:
      start_desc_search(t, SR_NUC, t->D, t->smax[ST_NUC], (double)job->nucleus_p, 0, -1.0, nblk);
      break;
    case PH_TOPK_PREP:
      t->cut_on = 0;
      start_desc_search(t, SR_TOPK, t->Y, t->ymax, (double)job->top_k, 1, -1.0, nblk);
      break;
    case PH_TOPP_PREP:
      if (t->wfree_try) {
        start_window_search(job, t, nblk);
        break;
      }
      t->cut_on = 0;
      start_desc_search(t, SR_TOPP, t->Y, t->ymax, (double)job->top_p, 0, t->topp_total ? t->total : -1.0,
                        nblk);
      break;
    case PH_HIST: start_hist_search(t, nblk); break;
    case PH_GF_PREP: {
      double tot = 0.0;
      for (int64_t b = 0; b < nblk; ++b) tot += P[b].sum;
      start_search(t, SR_GF, t->D, 0, (double)job->gedi_filter_p * tot, nblk);
      break;
    }
    case PH_SEARCH: {
      search *s = &t->s;
      double F = 0.0;
      int64_t clo = 0, chi = 0;
      for (int64_t b = 0; b < nblk; ++b) {
        F += P[b].sum;
        clo += P[b].cnt;
        chi += P[b].cnt2;
      }
      if (F >= s->target) {
        s->hi = s->mid;
        s->cnt = clo;
        for (int64_t b = 0; b < nblk; ++b) P[b].sel = P[b].cnt;
      } else {
        s->lo = s->mid + 1;
        s->flo = F;
        s->cnt = chi;
        for (int64_t b = 0; b < nblk; ++b) P[b].sel = P[b].cnt2;
      }
      if (s->lo >= s->hi) {
        search_done(job, t, s->lo);
      } else if (s->cnt <= CAP) {
        set_offsets(t, nblk);
        t->phase = PH_COLLECT;
      } else {
        s->mid = s->lo + (s->hi - s->lo) / 2;
      }
      break;
    }
    case PH_COLLECT: {
      search *s = &t->s;
      int64_t n = s->cnt;
      sort_cands(t->cands, t->cand_tmp, n);
      double cum = s->flo;
      uint64_t cut = n > 0 ? t->cands[n - 1].ord : s->hi;
      int64_t ncut = n;
      for (int64_t i = 0; i < n; ++i) {
        cum += (double)t->cands[i].w;
        if (cum >= s->target) {
          cut = t->cands[i].ord;
          ncut = i + 1;
          break;
        }
      }
      /* Every survivor of a top-k / top-p cut is a candidate when the candidates start at the top. */
      if (cum < s->target && s->wfree) { /* the window holds less than the target mass */
        t->wfree_try = 0;
        t->phase = PH_TOPP_PREP;
        break;
      }
      if (cum < s->target && s->hmode == 1) {
        /* a window whose fp32 mass only seemed to reach the target: histogram everything */
        s->hlim = lmf_bits_f32(0x7f800000u);
        s->hs1 = 1.0f;
        s->level = 1;
        t->phase = PH_HIST;
        break;
      }
      /* Every survivor of a descending cut is a candidate when nothing with mass comes before them. */
      t->nlist = (s->desc && s->flo == 0.0) ? ncut : -1;
      search_done(job, t, cut);
      break;
    }
    case PH_COMBINE:
      max_merge(t, nblk);
      if (t->phase == PH_FAIL) break;
      if (t->fuse_T && !lmf_isfinite_f32(t->ymax)) {
        fail(t, LMF_ROW_NONFINITE);
        break;
      }
      if (t->want_sum) {
        double S = 0.0;
        for (int64_t b = 0; b < nblk; ++b)
          if (!lmf_lg_is_ninf(P[b].max)) S += P[b].osum * exp((double)P[b].max - (double)t->ymax);
        t->total = S;
      }
      after_combine(job, t);
      break;
    case PH_TEMP:
      max_merge(t, nblk);
      if (t->phase == PH_FAIL) break;
      if (lmf_isfinite_f32(t->ymax)) after_temp(job, t);
      else fail(t, LMF_ROW_NONFINITE);
      break;
    case PH_FINAL: {
      t->cut_on = 0;
      t->w_valid = 0;
      double S = 0.0;
      for (int64_t b = 0; b < nblk; ++b) S += P[b].sum;
      t->lse = (float)((double)t->ymax + log(S));
      after_final(job, t);
      break;
    }
    case PH_SAMPLE:
    case PH_RESID: {
      float bk = lmf_lg_ninf();
      int32_t bid = -1;
      for (int64_t b = 0; b < nblk; ++b)
        if (P[b].id >= 0 && (bid < 0 || P[b].key > bk)) {
          bk = P[b].key;
          bid = P[b].id;
        }
      if (bid < 0 && t->phase == PH_RESID) { /* no token with p > q in fp32: sample from p */
        start_sample(t);
        break;
      }
      t->token = bid >= 0 ? bid : t->yarg;
      t->phase = PH_OUT;
      break;
    }
    case PH_OUT:
    case PH_FAIL: finish_outputs(job, t); break;
    default: break;
  }
}

static void after_final(const lmf_lg_job *job, task *t) {
  if (!is_verify(job) || t->pos == job->draft_len) { /* sample */
    if (t->greedy) {
      t->token = t->yarg;
      t->phase = PH_OUT;
    } else {
      start_sample(t);
    }
    return;
  }
  /* verify: position pos < draft_len */
  const int32_t d = job->draft_tokens[t->task * job->draft_len + t->pos];
  if (d < 0 || d >= job->vocab_out) {
    fail(t, LMF_ROW_BAD_INDEX);
    return;
  }
  int accept;
  if (t->greedy) {
    accept = d == t->yarg;
  } else {
    const float yd = t->Y[d];
    const float lp = lmf_lg_is_ninf(yd) ? yd : LMF_FSUB(yd, t->lse);
    const lmf_lg_model *m = &job->models[job->draft_model];
    const float xd = lmf_lg_scale_x(z_at(job, t, job->draft_model, d), m->temperature);
    const float lq = lmf_lg_is_ninf(xd) ? xd : LMF_FSUB(xd, t->slse[ST_DRAFT]);
    if (lmf_lg_is_ninf(lp)) {
      accept = 0;
    } else if (lp >= lq) {
      accept = 1;
    } else {
      const uint32_t w = lmf_lg_word(t->seed, t->goff, (uint32_t)d, LMF_LG_DOMAIN_ACCEPT);
      accept = lmf_log_unit(lmf_lg_uniform(w)) < LMF_FSUB(lp, lq);
    }
  }
  if (accept) {
    t->pos += 1;
    t->row += 1;
    t->phase = PH_INIT;
  } else if (t->greedy) {
    t->token = t->yarg;
    t->phase = PH_OUT;
  } else {
    t->phase = PH_RESID;
    make_gumbel_table(&t->gtab, 1000.0);
  }
}

static void finish_outputs(const lmf_lg_job *job, task *t) {
  const int ok = t->phase == PH_OUT;
  const float nan = lmf_bits_f32(0x7fc00000u);
  if (is_verify(job)) {
    const int64_t s = t->task;
    job->accepted[s] = t->pos;
    job->next_token[s] = ok ? t->token : -1;
    if (job->seq_status) job->seq_status[s] = ok ? LMF_ROW_OK : t->status;
    t->phase = PH_DONE;
    return;
  }
  const int64_t b = t->row;
  if (ok && t->list_mode && job->logprobs) {
    float *o = job->logprobs + b * job->logprobs_row_stride;
    for (int64_t i = 0; i < t->nlist; ++i) {
      const uint32_t id = (uint32_t)t->cands[i].ord;
      o[id] = LMF_FSUB(t->Y[id], t->lse);
    }
  }
  job->tokens[b] = ok ? t->token : -1;
  if (job->status) job->status[b] = ok ? LMF_ROW_OK : t->status;
  if (job->lse) job->lse[b] = ok ? t->lse : nan;
  if (job->token_logprob) job->token_logprob[b] = ok ? LMF_FSUB(t->Y[t->token], t->lse) : nan;
  if (job->gedi_pos_model >= 0) {
    if (ok) {
      const int32_t y = t->token;
      const float xp = lmf_lg_scale_x(z_at(job, t, job->gedi_pos_model, y),
                                      job->models[job->gedi_pos_model].temperature);
      const float xn = lmf_lg_scale_x(z_at(job, t, job->gedi_neg_model, y),
                                      job->models[job->gedi_neg_model].temperature);
      job->gedi_L_pos[b] = lmf_lg_gedi_update(t->gL_pos, xp, t->slse[ST_GPOS]);
      job->gedi_L_neg[b] = lmf_lg_gedi_update(t->gL_neg, xn, t->slse[ST_GNEG]);
      job->gedi_n[b] += 1;
    }
    if (job->gedi_logp_desired) job->gedi_logp_desired[b] = ok ? t->D[t->token] : nan;
  }
  t->phase = PH_DONE;
}

/* ---- Execution -------------------------------------------------------------------------------------- */

static task *slot_ptr(const layout *L, char *base, int64_t i) {
  return (task *)(base + (size_t)i * L->slot);
}

/* Points slot i's scratch pointers at its buffers. */
static task *slot_bind(const layout *L, char *base, int64_t i) {
  char *s = base + (size_t)i * L->slot;
  task *t = (task *)s;
  s += round_up(sizeof(task));
  t->Y = (float *)s;
  s += L->vbytes;
  t->W = (float *)s;
  s += L->vbytes;
  t->D = L->dbytes ? (float *)s : NULL;
  s += L->dbytes;
  t->parts = (part *)s;
  s += L->pbytes;
  t->cands = (cand *)s;
  s += L->cbytes;
  t->cand_tmp = (cand *)s;
  s += L->cbytes;
  t->sparse = (sp_entry *)s;
  return t;
}

lmf_status_t lmf_cpu_logits_run(const struct lmf_context *ctx, const lmf_lg_job *job, void *workspace,
                                size_t workspace_bytes) {
  layout L;
  make_layout(job, &L);
  (void)workspace_bytes;
  char *base = (char *)workspace;
  base += (ALIGN - (uintptr_t)base % ALIGN) % ALIGN;
  const int nt = num_threads(ctx);
  const int64_t ntasks = is_verify(job) ? job->num_seqs : job->num_rows;
  const int64_t nblk = L.nblk;
  if (ntasks >= nt || nt == 1) {
    /* Whole tasks per thread. */
#pragma omp parallel num_threads(nt)
    {
      task *t = slot_bind(&L, base, omp_get_thread_num());
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < ntasks; ++i) {
        task_start(job, t, i);
        while (t->phase != PH_DONE) {
          if (has_block_work(job, t->phase))
            for (int64_t b = 0; b < nblk; ++b) block_step(job, t, b);
          merge_step(job, t);
        }
      }
    }
    return LMF_OK;
  }
  /* Fewer tasks than threads: every task in flight, the blocks of each phase shared out over all
   * threads; one thread merges. Two barriers per phase. */
  for (int64_t i = 0; i < ntasks; ++i) task_start(job, slot_bind(&L, base, i), i);
  int active = 1;
#pragma omp parallel num_threads(nt)
  {
    for (;;) {
#pragma omp single
      {
        active = 0;
        for (int64_t i = 0; i < ntasks; ++i) {
          task *t = slot_ptr(&L, base, i);
          while (t->phase != PH_DONE) { /* merges until a phase with block work */
            merge_step(job, t);
            if (has_block_work(job, t->phase)) break;
          }
          active |= t->phase != PH_DONE;
        }
      }
      if (!active) break;
      const int64_t items = ntasks * nblk;
#pragma omp for schedule(static)
      for (int64_t it = 0; it < items; ++it) {
        task *t = slot_ptr(&L, base, it / nblk);
        if (t->phase != PH_DONE) block_step(job, t, it % nblk);
      }
    }
  }
  return LMF_OK;
}
