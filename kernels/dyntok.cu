/* The CUDA backend of batch-level BPE merging (host/dyntok_backend.h has the contract and the exact
 * semantics; specs/dynamic-bpe.md the method).
 *
 * ONE launch per call: a persistent kernel of ONE block (kThreads threads) runs the whole merge loop on
 * the device, with no host round trip per merge; the host uploads the batch once, launches, and copies
 * the compacted result back once (the call is synchronous).
 *
 * ---- Data (N tokens, flat row-major positions 0 .. N-1; B sequences) ---------------------------------
 *   A live token sits at the flat position of the first input token it covers, so positions in
 *   increasing order are output order (row-major) and the tie-break's "first occurrence" is the
 *   smallest position.
 *   tok[p]    int32  its id, -1 once absorbed by its left neighbour (dead).
 *   nxt[p]    int32  the next live position of the same sequence, or ~end (negative) for the last token
 *                    of a sequence, end = the sequence's end (flat). Token p covers p .. end(p) - 1 with
 *                    end(p) = nxt[p] >= 0 ? nxt[p] : ~nxt[p]: spans need no storage.
 *   prv[p]    int32  the previous live position of the sequence, -1 for the first.
 *   okc[p]    int8   cached "the occurrence at p counts" (not special; VALID in the pair modes, equal
 *                    word ids >= 0 in WORDS mode) for the pair (tok[p], tok[nxt[p]]); -1 = recompute. It
 *                    is invalidated exactly where that pair changes: at a merged token and at the token
 *                    left of a merge chain (a merged token keeps its left part's position and word id).
 *   occ[p], start[p]  uint8  per-step marks of the apply phase (below).
 *   text, toff       the bytes of the INPUT tokens, concatenated (toff[i] = offset of input token i,
 *                    int64 [N + 1]). The bytes of any live token are text[toff[p] .. toff[end(p)]), and
 *                    those of the pair at p are text[toff[p] .. toff[end(nxt[p])]): contiguous, so
 *                    VALID, hashing and string comparison never build a string.
 *   pair table       open addressing, linear probing, cap = power of two >= 2 * (N - nonempty
 *                    sequences) (the most adjacent pairs there can be, so probing always ends): key
 *                    uint64 (a << 32 | b), empty = ~0; value two uint32 words, [2s] = 0xFFFFFFFF -
 *                    first position (atomicMax), [2s+1] = count (atomicAdd). Read as one 64-bit number
 *                    (count << 32 | (0xFFFFFFFF - first)) it is the tie-break key: the maximum over the
 *                    table is the most frequent pair and, among those, the one that occurs first. A
 *                    position holds one occurrence, so the maximum is unique and names its first
 *                    position p: the chosen pair is (tok[p], tok[nxt[p]]). used[] lists the slots taken
 *                    this step (so choosing and clearing cost the distinct pairs, not cap).
 *   new tokens       ntab (open addressing, cap >= 2 * max merges, FNV-1a keys like the vocabulary's
 *                    table) -> k; per new token: hash, text offset (of the occurrence that made it: its
 *                    bytes never move) and length.
 *   vocabulary       bytes, offsets, flags and the canonical table of host/vocab.c, uploaded once per
 *                    context and vocabulary (cached by vocab->serial).
 *   classes          the two-level code point class table of kernels/common/pretok_match.h (PRETOKENS),
 *                    uploaded once per context.
 *   The per-position arrays, the pair table and used[] are placed in shared memory, in priority order
 *   (tok, nxt, pair table, okc, used, occ, start, prv), as far as the device's opt-in shared memory per
 *   block allows; the rest stay in global memory (L2-resident). Every access goes through generic
 *   pointers, so there is one code path. 32 x 128 tokens fit entirely on an H100/H200 (about 200 KiB).
 *
 * ---- One step (every phase ends with __syncthreads; control flow around them is block-uniform) -----
 *   count   every live p with a right neighbour q: okc[p] (recomputed if -1: flags; words; or VALID from
 *           the pair's bytes: lmf_pt_valid_default for PRETOKENS, the whitespace rule for WHITESPACE);
 *           if it counts, insert (tok[p], tok[q]) into the pair table (one atomicCAS per probe takes an
 *           empty slot or returns the key there; the thread that takes a slot appends it to used[]),
 *           atomicAdd the count, atomicMax the inverted position.
 *   choose  max over used[] slots of the 64-bit value (warp shuffles, then one warp), clearing those
 *           slots. 0 (no pair counts) or an error flag: stop. Else the winner's first position p gives
 *           a = tok[p], b = tok[nxt[p]] and the count.
 *   resolve (thread 0, overlapping M1) the result id, exactly as lmf_vocab_lookup and the CPU backend:
 *           FNV-1a of the bytes, probe the vocabulary's canonical table (bytes compared on a hit), then
 *           the new-token table, else the next new id. Records (a, b, result, count).
 *   M1      occ[x] = the occurrence at x is of (a, b) and counts.
 *   M1b     start[x] = occ[x] and not occ[prv[x]]: x begins a chain of consecutive occurrences (a == b
 *           runs; for a != b every chain has one occurrence, as they cannot overlap). The token left
 *           of a chain gets okc = -1.
 *   M2      one thread per chain applies it left to right, non-overlapping: merge (x, y = nxt[x]), then
 *           go on at z = nxt[y] only if (y, z) was an occurrence (the chain goes on) and (z, nxt[z]) is
 *           one. So a run of r tokens gets floor(r / 2) merges, left-greedy, exactly the reference's
 *           scan. Chains are disjoint and no thread reads what another writes in this phase.
 *   The loop ends after min(m, N) merges, when nothing counts, or (target_tokens >= 0) once at most
 *   target_tokens tokens are live (s_live, decremented in M2 per merge applied). Then the live tokens
 *   are compacted in position order (block-wide ballot scan) into ids / span starts / span lengths;
 *   the host derives the output offsets from the span starts.
 *
 * ---- Limits --------------------------------------------------------------------------------------
 *   Any N up to LMF_DT_MAX_TOKENS is correct; one block is fast up to a few thousand tokens and slower
 *   (more positions per thread, state in L2) beyond. PRETOKENS runs only with the default pattern
 *   (regex-free matcher, verified against PCRE2 by tests/dyntok/test_pretok_match.c); a job compiled
 *   from another pattern is refused with LMF_ERR_INVALID_ARGUMENT (it needs a CPU context).
 *   Internal invariants (tables never full) are checked on the device; a violation is reported as
 *   LMF_ERR_INTERNAL, never a hang or an out-of-bounds access.
 *
 * ---- Threads -------------------------------------------------------------------------------------
 *   The device caches (vocabulary, class table, workspace, pinned staging buffer, stream) belong to
 *   the context (ctx->cuda_cache, freed by lmf_context_destroy through lmf_cuda_context_release). A
 *   mutex per cache serialises calls on one context, so a context may be used from several threads
 *   (calls on it then run one at a time); different contexts run concurrently.
 */
#include <cuda_runtime.h>

#include <mutex>
#include <new>
#include <stdlib.h>
#include <string.h>

#include "dyntok_backend.h"
#include "kernels/common/mix64.h"
#include "kernels/common/pretok_match.h"
#include "pretok_classes.h"

namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr unsigned long long kEmptyKey = ~0ull;
constexpr size_t kAlign = 256;  /* global sub-arrays */
constexpr size_t kSmemAlign = 16;
constexpr int kHeaderWords = 8; /* int32 words at the start of the output region */

/* Device error bits (header word 0). */
enum {
  kErrPairTable = 1,  /* no free slot in the pair table */
  kErrUsedList = 2,   /* more distinct pairs than adjacent positions */
  kErrNewTable = 4,   /* no free slot in the new-token table */
  kErrNewCount = 8,   /* more new tokens than merges */
  kErrVocabProbe = 16 /* the vocabulary's table has no empty slot */
};

/* Arrays that may live in shared memory, in placement priority order. */
enum { kArrTok = 0, kArrNxt, kArrTable, kArrOkc, kArrUsed, kArrOcc, kArrStart, kArrPrv, kNumArr };

struct DtParams {
  int32_t n;          /* tokens */
  int32_t max_merges; /* min(m, N) */
  int32_t target;     /* job->target_tokens: stop once at most this many tokens are live; -1: none */
  int32_t V;          /* vocabulary size */
  int32_t mode;       /* lmf_dyntok_boundary_t */
  uint32_t pmask;     /* pair table capacity - 1 */
  uint32_t used_cap;  /* capacity of used[] (adjacent positions, >= 1) */
  uint32_t nmask;     /* new-token table capacity - 1 */
  int32_t new_cap;    /* new tokens at most (= max_merges) */
  uint64_t vmask;     /* vocabulary table capacity - 1 (when vcap > 0) */
  int64_t vcap;       /* vocabulary table capacity; 0: no table (every lookup misses) */

  /* Global memory; tok/nxt/prv hold the initial state (uploaded) and are the working copies of arrays
   * not placed in shared memory. */
  int32_t *g_tok, *g_nxt, *g_prv;
  int8_t *g_okc;
  uint8_t *g_occ, *g_start;
  unsigned long long *g_pkey;
  uint32_t *g_pval; /* [2 * cap] */
  uint32_t *g_used;
  const int32_t *words; /* WORDS mode */
  const int64_t *toff;  /* [N + 1] */
  const uint8_t *text;

  const uint8_t *vbytes;
  const int64_t *voff;
  const uint8_t *vflags;
  const int32_t *vtable;
  const uint16_t *stage1; /* PRETOKENS */
  const uint8_t *stage2;

  int32_t *ntab;  /* [nmask + 1] */
  uint64_t *nhash; /* [new_cap] */
  int64_t *noff, *nlen;

  int32_t *out_hdr; /* [kHeaderWords]: error bits, merges, output tokens, new tokens */
  int32_t *out_ma, *out_mb, *out_mc, *out_mcnt; /* [max_merges] */
  int32_t *out_ids, *out_start, *out_len;       /* [N] */

  int64_t smem_off[kNumArr]; /* byte offset in dynamic shared memory, or -1: global */
};

/* ---- Device helpers -------------------------------------------------------------------------------- */

template <class T>
__device__ __forceinline__ T *placed(unsigned char *smem, int64_t off, T *global) {
  return off >= 0 ? reinterpret_cast<T *>(smem + off) : global;
}

__device__ __forceinline__ unsigned long long warp_max(unsigned long long v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const unsigned long long w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

__device__ __forceinline__ int bytes_equal(const uint8_t *x, const uint8_t *y, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] != y[i]) return 0;
  return 1;
}

__device__ __forceinline__ int32_t end_of(int32_t nx) { return nx >= 0 ? nx : ~nx; }

/* Whether the occurrence at p (right neighbour q, tokens a, b) counts. */
__device__ __noinline__ int dt_counts(const DtParams &P, const int32_t *nxt, int32_t p, int32_t q,
                                      int32_t a, int32_t b) {
  if (a < P.V && (P.vflags[a] & LMF_TOKEN_SPECIAL)) return 0;
  if (b < P.V && (P.vflags[b] & LMF_TOKEN_SPECIAL)) return 0;
  if (P.mode == LMF_DYNTOK_WORDS) {
    const int32_t w = P.words[p];
    return w >= 0 && w == P.words[q];
  }
  const int64_t s0 = P.toff[p];
  const int64_t len = P.toff[end_of(nxt[q])] - s0;
  const uint8_t *t = P.text + s0;
  if (len <= 0) return 0; /* two non-special tokens have bytes; never taken */
  if (P.mode == LMF_DYNTOK_PRETOKENS) {
    const lmf_pt_table tab = {P.stage1, P.stage2};
    return lmf_pt_valid_default(&tab, t, len);
  }
  for (int64_t i = 1; i < len; ++i) {
    const uint8_t c = t[i];
    if (c == 0x20 || (c >= 0x09 && c <= 0x0D)) return 0;
  }
  return 1;
}

/* The id of the token made by merging the pair at p (right neighbour q): the canonical vocabulary
 * token with its bytes, else an earlier new token with its bytes, else the next new id. Thread 0. */
__device__ __noinline__ int32_t dt_resolve(const DtParams &P, const int32_t *nxt, int32_t p, int32_t q,
                                           int32_t *num_new, int *err) {
  const int64_t s0 = P.toff[p];
  const int64_t len = P.toff[end_of(nxt[q])] - s0;
  const uint8_t *t = P.text + s0;
  uint64_t h = LMF_FNV_OFFSET;
  for (int64_t i = 0; i < len; ++i) {
    h ^= t[i];
    h *= LMF_FNV_PRIME;
  }
  /* lmf_vocab_lookup: the same table, the same probe sequence. */
  if (P.vcap > 0 && len > 0) {
    uint64_t slot = h & P.vmask;
    int64_t probe = 0;
    for (; probe < P.vcap; ++probe) {
      const int32_t id = P.vtable[slot];
      if (id < 0) break;
      const int64_t o = P.voff[id];
      if (P.voff[id + 1] - o == len && bytes_equal(P.vbytes + o, t, len)) return id;
      slot = (slot + 1) & P.vmask;
    }
    if (probe == P.vcap) {
      *err |= kErrVocabProbe;
      return -1;
    }
  }
  uint32_t slot = (uint32_t)h & P.nmask;
  for (uint64_t probe = 0; probe <= (uint64_t)P.nmask; ++probe) {
    const int32_t k = P.ntab[slot];
    if (k < 0) {
      if (*num_new >= P.new_cap) {
        *err |= kErrNewCount;
        return -1;
      }
      const int32_t kn = (*num_new)++;
      P.nhash[kn] = h;
      P.noff[kn] = s0;
      P.nlen[kn] = len;
      P.ntab[slot] = kn;
      return P.V + kn;
    }
    if (P.nhash[k] == h && P.nlen[k] == len && bytes_equal(P.text + P.noff[k], t, len)) return P.V + k;
    slot = (slot + 1) & P.nmask;
  }
  *err |= kErrNewTable;
  return -1;
}

__global__ void __launch_bounds__(kThreads, 1) dt_merge_kernel(const __grid_constant__ DtParams P) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ unsigned long long s_warp[kWarps];
  __shared__ int32_t s_wsum[kWarps];
  __shared__ unsigned long long s_best;
  __shared__ unsigned int s_nused;
  __shared__ int s_err;
  __shared__ int s_stop;
  __shared__ int32_t s_c;
  __shared__ int32_t s_live; /* live tokens (for P.target) */

  const int tid = threadIdx.x;
  const int lane = tid & 31;
  const int warp = tid >> 5;
  const int32_t n = P.n;
  const uint64_t pcap = (uint64_t)P.pmask + 1;

  int32_t *const tok = placed(smem, P.smem_off[kArrTok], P.g_tok);
  int32_t *const nxt = placed(smem, P.smem_off[kArrNxt], P.g_nxt);
  int32_t *const prv = placed(smem, P.smem_off[kArrPrv], P.g_prv);
  int8_t *const okc = placed(smem, P.smem_off[kArrOkc], P.g_okc);
  uint8_t *const occ = placed(smem, P.smem_off[kArrOcc], P.g_occ);
  uint8_t *const start = placed(smem, P.smem_off[kArrStart], P.g_start);
  unsigned long long *const pkey = placed(smem, P.smem_off[kArrTable], P.g_pkey);
  uint32_t *const pval =
      P.smem_off[kArrTable] >= 0
          ? reinterpret_cast<uint32_t *>(smem + P.smem_off[kArrTable] + pcap * sizeof(unsigned long long))
          : P.g_pval;
  uint32_t *const used = placed(smem, P.smem_off[kArrUsed], P.g_used);

  /* ---- Initial state. */
  if (tid == 0) {
    s_nused = 0;
    s_err = 0;
    s_stop = 0;
    s_best = 0;
    s_c = -1;
    s_live = n;
  }
  for (int64_t i = tid; i < n; i += kThreads) {
    if (tok != P.g_tok) tok[i] = P.g_tok[i];
    if (nxt != P.g_nxt) nxt[i] = P.g_nxt[i];
    if (prv != P.g_prv) prv[i] = P.g_prv[i];
    okc[i] = -1;
    occ[i] = 0;
    start[i] = 0;
  }
  for (uint64_t s = tid; s < pcap; s += kThreads) {
    pkey[s] = kEmptyKey;
    pval[2 * s] = 0;
    pval[2 * s + 1] = 0;
  }
  for (uint64_t s = tid; s <= (uint64_t)P.nmask; s += kThreads) P.ntab[s] = -1;
  __syncthreads();

  int32_t num_merges = 0; /* block-uniform */
  int32_t num_new = 0;    /* thread 0's */
  /* s_live changes only in M2 (atomics) and is read here after M2's barrier: block-uniform. */
  while (num_merges < P.max_merges && (P.target < 0 || s_live > P.target)) {
    /* ---- Count. */
    for (int64_t i = tid; i < n; i += kThreads) {
      const int32_t p = (int32_t)i;
      const int32_t a = tok[p];
      if (a < 0) continue;
      const int32_t q = nxt[p];
      if (q < 0) continue;
      const int32_t b = tok[q];
      int ok = okc[p];
      if (ok < 0) {
        ok = dt_counts(P, nxt, p, q, a, b);
        okc[p] = (int8_t)ok;
      }
      if (!ok) continue;
      const unsigned long long key = ((unsigned long long)(uint32_t)a << 32) | (uint32_t)b;
      uint32_t slot = (uint32_t)lmf_mix64(key) & P.pmask;
      int found = 0;
      for (uint64_t probe = 0; probe < pcap; ++probe) {
        /* One atomic per probe: it takes an empty slot or returns the key already there. */
        const unsigned long long k = atomicCAS(&pkey[slot], kEmptyKey, key);
        if (k == kEmptyKey) { /* this thread took the slot */
          const unsigned int u = atomicAdd(&s_nused, 1u);
          if (u < P.used_cap) used[u] = slot;
          else atomicOr(&s_err, kErrUsedList);
          found = 1;
          break;
        }
        if (k == key) {
          found = 1;
          break;
        }
        slot = (slot + 1) & P.pmask;
      }
      if (!found) {
        atomicOr(&s_err, kErrPairTable);
        continue;
      }
      atomicAdd(&pval[2 * (size_t)slot + 1], 1u);
      atomicMax(&pval[2 * (size_t)slot], 0xFFFFFFFFu - (uint32_t)p);
    }
    __syncthreads();

    /* ---- Choose (and clear the table for the next step). */
    {
      unsigned long long best = 0;
      const unsigned int nu = s_nused < P.used_cap ? s_nused : P.used_cap;
      for (unsigned int i = tid; i < nu; i += kThreads) {
        const size_t s = used[i];
        const unsigned long long v = ((unsigned long long)pval[2 * s + 1] << 32) | pval[2 * s];
        best = v > best ? v : best;
        pval[2 * s] = 0;
        pval[2 * s + 1] = 0;
        pkey[s] = kEmptyKey;
      }
      best = warp_max(best);
      if (lane == 0) s_warp[warp] = best;
      __syncthreads();
      if (warp == 0) {
        unsigned long long v = lane < kWarps ? s_warp[lane] : 0ull;
        v = warp_max(v);
        if (lane == 0) {
          s_best = v;
          s_nused = 0;
          s_stop = v == 0 || s_err != 0;
        }
      }
      __syncthreads();
    }
    if (s_stop) break; /* block-uniform: written before the barrier above, next written after others */

    const unsigned long long best = s_best;
    const int32_t p0 = (int32_t)(0xFFFFFFFFu - (uint32_t)best);
    const int32_t q0 = nxt[p0];
    const int32_t a = tok[p0];
    const int32_t b = tok[q0];

    /* ---- Resolve (thread 0) while the others mark. */
    if (tid == 0) {
      int err = 0;
      const int32_t c = dt_resolve(P, nxt, p0, q0, &num_new, &err);
      if (err) atomicOr(&s_err, err);
      s_c = c;
      P.out_ma[num_merges] = a;
      P.out_mb[num_merges] = b;
      P.out_mc[num_merges] = c;
      P.out_mcnt[num_merges] = (int32_t)(best >> 32);
    }

    /* ---- M1: occurrences of (a, b) that count. */
    for (int64_t i = tid; i < n; i += kThreads) {
      const int32_t x = (int32_t)i;
      uint8_t o = 0;
      if (tok[x] == a) {
        const int32_t y = nxt[x];
        o = y >= 0 && tok[y] == b && okc[x] == 1;
      }
      occ[x] = o;
    }
    __syncthreads();

    /* ---- M1b: chain starts; the token left of a chain will see a new right neighbour. */
    for (int64_t i = tid; i < n; i += kThreads) {
      const int32_t x = (int32_t)i;
      if (!occ[x]) continue;
      const int32_t L = prv[x];
      if (L < 0 || !occ[L]) {
        start[x] = 1;
        if (L >= 0) okc[L] = -1;
      }
    }
    __syncthreads();

    /* ---- M2: each chain, left to right, non-overlapping. */
    const int32_t c = s_c;
    int32_t applied = 0;
    for (int64_t i = tid; i < n; i += kThreads) {
      int32_t x = (int32_t)i;
      if (!start[x]) continue;
      start[x] = 0;
      for (;;) {
        ++applied;
        const int32_t y = nxt[x];
        const int32_t z = nxt[y];
        const int goes_on = occ[y]; /* (y, z) is an occurrence: then z >= 0 */
        tok[x] = c;
        tok[y] = -1;
        nxt[x] = z;
        okc[x] = -1;
        if (z >= 0) prv[z] = x;
        if (!goes_on || !occ[z]) break;
        x = z;
      }
    }
    if (applied) atomicSub(&s_live, applied);
    __syncthreads();
    ++num_merges;
  }

  /* ---- Compaction of the live tokens, in position order. */
  int32_t base = 0;
  for (int64_t c0 = 0; c0 < n; c0 += kThreads) {
    const int64_t i = c0 + tid;
    const int live = i < n && tok[i] >= 0;
    const unsigned int ballot = __ballot_sync(0xffffffffu, live);
    const int32_t in_warp = __popc(ballot & ((1u << lane) - 1u));
    if (lane == 0) s_wsum[warp] = __popc(ballot);
    __syncthreads();
    if (warp == 0) {
      int32_t v = lane < kWarps ? s_wsum[lane] : 0;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const int32_t u = __shfl_up_sync(0xffffffffu, v, o);
        if (lane >= o) v += u;
      }
      if (lane < kWarps) s_wsum[lane] = v; /* inclusive */
    }
    __syncthreads();
    if (live) {
      const int32_t j = base + (warp ? s_wsum[warp - 1] : 0) + in_warp;
      const int32_t p = (int32_t)i;
      P.out_ids[j] = tok[p];
      P.out_start[j] = p;
      P.out_len[j] = end_of(nxt[p]) - p;
    }
    base += s_wsum[kWarps - 1];
    __syncthreads(); /* s_wsum is rewritten next round */
  }
  if (tid == 0) {
    P.out_hdr[0] = s_err;
    P.out_hdr[1] = num_merges;
    P.out_hdr[2] = base;
    P.out_hdr[3] = num_new;
  }
}

/* ---- Host side ----------------------------------------------------------------------------------- */

const char *const kFn = "lmf_dyntok_merge";

struct DtCache {
  std::mutex mu;
  int device = -1;
  cudaStream_t stream = nullptr;
  int smem_budget = -1; /* dynamic shared memory a launch may use; -1: not queried yet */

  uint64_t vocab_serial = 0; /* 0: nothing cached */
  int32_t vocab_size = 0;
  int64_t vtable_cap = 0;
  uint8_t *d_vbytes = nullptr;
  int64_t *d_voff = nullptr;
  uint8_t *d_vflags = nullptr;
  int32_t *d_vtable = nullptr;

  uint16_t *d_stage1 = nullptr;
  uint8_t *d_stage2 = nullptr;

  unsigned char *d_ws = nullptr;
  size_t ws_cap = 0;
  unsigned char *h_stage = nullptr; /* pinned */
  size_t stage_cap = 0;
};

std::mutex g_cache_create_mu;

lmf_status_t cuda_error(lmf_status_t st, const char *call, int device, cudaError_t e) {
  (void)cudaGetLastError();
  if (e == cudaErrorMemoryAllocation) st = LMF_ERR_OUT_OF_MEMORY;
  return lmf_fail(st, "%s: %s failed on device %d: %s (%s)", kFn, call, device, cudaGetErrorString(e),
                  cudaGetErrorName(e));
}

#define DT_CUDA(call)                                                               \
  do {                                                                              \
    const cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) return cuda_error(LMF_ERR_CUDA, #call, C->device, e_);   \
  } while (0)

void free_vocab(DtCache *C) {
  cudaFree(C->d_vbytes);
  cudaFree(C->d_voff);
  cudaFree(C->d_vflags);
  cudaFree(C->d_vtable);
  C->d_vbytes = nullptr;
  C->d_voff = nullptr;
  C->d_vflags = nullptr;
  C->d_vtable = nullptr;
  C->vocab_serial = 0;
  C->vocab_size = 0;
  C->vtable_cap = 0;
}

/* Uploads the vocabulary unless it is the cached one (same serial; serial 0 is never cached). */
lmf_status_t ensure_vocab(DtCache *C, const struct lmf_vocab *v) {
  if (v->serial != 0 && C->vocab_serial == v->serial) return LMF_OK;
  free_vocab(C);
  const int64_t nbytes = v->offsets[v->size];
  const int64_t tcap = v->table ? v->table_cap : 0;
  DT_CUDA(cudaMalloc(&C->d_vbytes, (size_t)nbytes + 1));
  DT_CUDA(cudaMalloc(&C->d_voff, sizeof(int64_t) * ((size_t)v->size + 1)));
  DT_CUDA(cudaMalloc(&C->d_vflags, (size_t)v->size + 1));
  DT_CUDA(cudaMalloc(&C->d_vtable, sizeof(int32_t) * ((size_t)tcap + 1)));
  if (nbytes > 0) DT_CUDA(cudaMemcpy(C->d_vbytes, v->bytes, (size_t)nbytes, cudaMemcpyHostToDevice));
  DT_CUDA(cudaMemcpy(C->d_voff, v->offsets, sizeof(int64_t) * ((size_t)v->size + 1),
                     cudaMemcpyHostToDevice));
  DT_CUDA(cudaMemcpy(C->d_vflags, v->flags, (size_t)v->size, cudaMemcpyHostToDevice));
  if (tcap > 0)
    DT_CUDA(cudaMemcpy(C->d_vtable, v->table, sizeof(int32_t) * (size_t)tcap, cudaMemcpyHostToDevice));
  C->vocab_serial = v->serial;
  C->vocab_size = v->size;
  C->vtable_cap = tcap;
  return LMF_OK;
}

lmf_status_t ensure_classes(DtCache *C) {
  if (C->d_stage1) return LMF_OK;
  const lmf_pt_host_table *t = NULL;
  lmf_status_t st = lmf_pt_table_get(&t);
  if (st != LMF_OK) return st;
  uint16_t *s1 = nullptr;
  uint8_t *s2 = nullptr;
  cudaError_t e = cudaMalloc(&s1, sizeof t->stage1);
  if (e == cudaSuccess) e = cudaMalloc(&s2, (size_t)t->blocks * 256 + 1);
  if (e == cudaSuccess) e = cudaMemcpy(s1, t->stage1, sizeof t->stage1, cudaMemcpyHostToDevice);
  if (e == cudaSuccess) e = cudaMemcpy(s2, t->stage2, (size_t)t->blocks * 256, cudaMemcpyHostToDevice);
  if (e != cudaSuccess) {
    cudaFree(s1);
    cudaFree(s2);
    return cuda_error(LMF_ERR_CUDA, "uploading the code point class table", C->device, e);
  }
  C->d_stage1 = s1;
  C->d_stage2 = s2;
  return LMF_OK;
}

lmf_status_t ensure_buffers(DtCache *C, size_t ws_bytes, size_t stage_bytes) {
  if (ws_bytes > C->ws_cap) {
    cudaFree(C->d_ws);
    C->d_ws = nullptr;
    C->ws_cap = 0;
    DT_CUDA(cudaMalloc(&C->d_ws, ws_bytes));
    C->ws_cap = ws_bytes;
  }
  if (stage_bytes > C->stage_cap) {
    cudaFreeHost(C->h_stage);
    C->h_stage = nullptr;
    C->stage_cap = 0;
    DT_CUDA(cudaMallocHost(&C->h_stage, stage_bytes));
    C->stage_cap = stage_bytes;
  }
  return LMF_OK;
}

/* Once per cache: the stream, and the dynamic shared memory a launch may use. */
lmf_status_t ensure_device_setup(DtCache *C) {
  if (!C->stream) DT_CUDA(cudaStreamCreateWithFlags(&C->stream, cudaStreamNonBlocking));
  if (C->smem_budget < 0) {
    int optin = 0;
    DT_CUDA(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, C->device));
    cudaFuncAttributes fa;
    DT_CUDA(cudaFuncGetAttributes(&fa, dt_merge_kernel));
    if (fa.maxThreadsPerBlock < kThreads)
      return lmf_fail(LMF_ERR_CUDA, "%s: the merge kernel cannot run %d threads per block on device %d "
                      "(at most %d with its %d registers)", kFn, kThreads, C->device,
                      fa.maxThreadsPerBlock, fa.numRegs);
    int budget = optin - (int)fa.sharedSizeBytes;
    if (budget < 0) budget = 0;
    if (budget > 0)
      DT_CUDA(cudaFuncSetAttribute(dt_merge_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, budget));
    C->smem_budget = budget;
  }
  return LMF_OK;
}

size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Bump allocation of sub-arrays in one buffer. */
struct Bump {
  size_t cur = 0;
  size_t take(size_t bytes) {
    cur = align_up(cur, kAlign);
    const size_t o = cur;
    cur += bytes;
    return o;
  }
};

uint64_t pow2_at_least(uint64_t x) {
  uint64_t c = 2;
  while (c < x) c <<= 1;
  return c;
}

lmf_status_t refuse_custom_pattern(const lmf_dt_job *job) {
  if (job->boundary != LMF_DYNTOK_PRETOKENS) return LMF_OK;
  const char *pat = lmf_dt_valid_pattern(job->valid);
  if (pat && strcmp(pat, LMF_DYNTOK_DEFAULT_PATTERN) != 0)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT,
                    "%s: config->pattern is a custom pre-tokenizer pattern; the CUDA backend evaluates "
                    "only the default pattern (LMF_DYNTOK_DEFAULT_PATTERN) on the device: use a CPU "
                    "context for a custom pattern", kFn);
  return LMF_OK;
}

/* The result of a batch without tokens. */
lmf_status_t empty_result(const lmf_dt_job *job, struct lmf_dyntok_result **out) {
  struct lmf_dyntok_result *r = lmf_dt_result_alloc(job->num_seqs, 0, 0);
  if (!r) return LMF_ERR_OUT_OF_MEMORY;
  for (int64_t s = 0; s <= job->num_seqs; ++s) r->offsets[s] = 0;
  *out = r;
  return LMF_OK;
}

lmf_status_t get_cache(const struct lmf_context *ctx, DtCache **out) {
  std::lock_guard<std::mutex> lock(g_cache_create_mu);
  /* The context object is never const itself (lmf_context_create mallocs it); the cache pointer is
   * the one field a backend sets after creation. */
  struct lmf_context *mctx = const_cast<struct lmf_context *>(ctx);
  if (!mctx->cuda_cache) {
    DtCache *c = new (std::nothrow) DtCache;
    if (!c) return lmf_fail(LMF_ERR_OUT_OF_MEMORY, "%s: out of host memory (CUDA cache)", kFn);
    c->device = ctx->device;
    mctx->cuda_cache = c;
  }
  *out = static_cast<DtCache *>(mctx->cuda_cache);
  return LMF_OK;
}

lmf_status_t run_locked(DtCache *C, const lmf_dt_job *job, struct lmf_dyntok_result **out) {
  {
    const cudaError_t e = cudaSetDevice(C->device);
    if (e != cudaSuccess) return cuda_error(LMF_ERR_CUDA, "cudaSetDevice", C->device, e);
  }
  lmf_status_t st = ensure_device_setup(C);
  if (st != LMF_OK) return st;
  const struct lmf_vocab *voc = job->vocab;
  st = ensure_vocab(C, voc);
  if (st != LMF_OK) return st;
  const int pretokens = job->boundary == LMF_DYNTOK_PRETOKENS;
  if (pretokens) {
    st = ensure_classes(C);
    if (st != LMF_OK) return st;
  }

  /* ---- Sizes. */
  const int64_t B = job->num_seqs;
  const int32_t n = (int32_t)job->num_tokens;
  const int32_t mcap = job->max_merges < n ? job->max_merges : n;
  int64_t nonempty = 0;
  for (int64_t s = 0; s < B; ++s) nonempty += job->offsets[s + 1] > job->offsets[s];
  const uint64_t used_cap = (uint64_t)(n - nonempty > 1 ? n - nonempty : 1);
  const uint64_t pcap = pow2_at_least(2 * used_cap);
  const uint64_t ncap = pow2_at_least(2 * (uint64_t)(mcap > 1 ? mcap : 1));
  int64_t text_bytes = 0;
  for (int32_t i = 0; i < n; ++i) {
    const int32_t id = job->ids[i];
    text_bytes += voc->offsets[id + 1] - voc->offsets[id];
  }
  const int words = job->boundary == LMF_DYNTOK_WORDS;
  const size_t nn = (size_t)n;
  const size_t mm = (size_t)(mcap > 0 ? mcap : 1);

  /* ---- Layout: input (uploaded), work, output (downloaded). */
  Bump L;
  const size_t o_tok = L.take(4 * nn), o_nxt = L.take(4 * nn), o_prv = L.take(4 * nn);
  const size_t o_words = L.take(words ? 4 * nn : 0);
  const size_t o_toff = L.take(8 * (nn + 1));
  const size_t o_text = L.take((size_t)text_bytes + 1);
  const size_t in_bytes = L.cur;
  const size_t o_okc = L.take(nn), o_occ = L.take(nn), o_start = L.take(nn);
  const size_t o_pkey = L.take(8 * pcap), o_pval = L.take(8 * pcap), o_used = L.take(4 * used_cap);
  const size_t o_ntab = L.take(4 * ncap), o_nhash = L.take(8 * mm), o_noff = L.take(8 * mm),
               o_nlen = L.take(8 * mm);
  const size_t o_out = L.take(0);
  Bump O; /* relative to o_out */
  const size_t r_hdr = O.take(4 * kHeaderWords), r_ma = O.take(4 * mm), r_mb = O.take(4 * mm),
               r_mc = O.take(4 * mm), r_mcnt = O.take(4 * mm), r_ids = O.take(4 * nn),
               r_start = O.take(4 * nn), r_len = O.take(4 * nn);
  const size_t out_bytes = O.cur;
  const size_t ws_bytes = o_out + out_bytes;
  st = ensure_buffers(C, ws_bytes, in_bytes > out_bytes ? in_bytes : out_bytes);
  if (st != LMF_OK) return st;

  /* ---- The input region, in the pinned staging buffer. */
  unsigned char *h = C->h_stage;
  int32_t *h_tok = (int32_t *)(h + o_tok), *h_nxt = (int32_t *)(h + o_nxt), *h_prv = (int32_t *)(h + o_prv);
  memcpy(h_tok, job->ids, 4 * nn);
  for (int64_t s = 0; s < B; ++s) {
    const int32_t lo = (int32_t)job->offsets[s], hi = (int32_t)job->offsets[s + 1];
    for (int32_t p = lo; p < hi; ++p) {
      h_nxt[p] = p + 1 < hi ? p + 1 : ~hi;
      h_prv[p] = p > lo ? p - 1 : -1;
    }
  }
  if (words) memcpy(h + o_words, job->word_ids, 4 * nn);
  int64_t *h_toff = (int64_t *)(h + o_toff);
  uint8_t *h_text = h + o_text;
  h_toff[0] = 0;
  for (int32_t i = 0; i < n; ++i) {
    int64_t len;
    const uint8_t *b = lmf_vocab_tok(voc, job->ids[i], &len);
    if (len > 0) memcpy(h_text + h_toff[i], b, (size_t)len);
    h_toff[i + 1] = h_toff[i] + len;
  }

  /* ---- Parameters and shared-memory placement. */
  unsigned char *d = C->d_ws;
  DtParams P;
  memset(&P, 0, sizeof P);
  P.n = n;
  P.max_merges = mcap;
  P.target = job->target_tokens;
  P.V = voc->size;
  P.mode = job->boundary;
  P.pmask = (uint32_t)(pcap - 1);
  P.used_cap = (uint32_t)used_cap;
  P.nmask = (uint32_t)(ncap - 1);
  P.new_cap = mcap;
  P.vcap = C->vtable_cap;
  P.vmask = C->vtable_cap > 0 ? (uint64_t)C->vtable_cap - 1 : 0;
  P.g_tok = (int32_t *)(d + o_tok);
  P.g_nxt = (int32_t *)(d + o_nxt);
  P.g_prv = (int32_t *)(d + o_prv);
  P.g_okc = (int8_t *)(d + o_okc);
  P.g_occ = d + o_occ;
  P.g_start = d + o_start;
  P.g_pkey = (unsigned long long *)(d + o_pkey);
  P.g_pval = (uint32_t *)(d + o_pval);
  P.g_used = (uint32_t *)(d + o_used);
  P.words = words ? (const int32_t *)(d + o_words) : nullptr;
  P.toff = (const int64_t *)(d + o_toff);
  P.text = d + o_text;
  P.vbytes = C->d_vbytes;
  P.voff = C->d_voff;
  P.vflags = C->d_vflags;
  P.vtable = C->d_vtable;
  P.stage1 = pretokens ? C->d_stage1 : nullptr;
  P.stage2 = pretokens ? C->d_stage2 : nullptr;
  P.ntab = (int32_t *)(d + o_ntab);
  P.nhash = (uint64_t *)(d + o_nhash);
  P.noff = (int64_t *)(d + o_noff);
  P.nlen = (int64_t *)(d + o_nlen);
  unsigned char *dout = d + o_out;
  P.out_hdr = (int32_t *)(dout + r_hdr);
  P.out_ma = (int32_t *)(dout + r_ma);
  P.out_mb = (int32_t *)(dout + r_mb);
  P.out_mc = (int32_t *)(dout + r_mc);
  P.out_mcnt = (int32_t *)(dout + r_mcnt);
  P.out_ids = (int32_t *)(dout + r_ids);
  P.out_start = (int32_t *)(dout + r_start);
  P.out_len = (int32_t *)(dout + r_len);
  const uint64_t arr_bytes[kNumArr] = {4 * (uint64_t)nn, 4 * (uint64_t)nn, 16 * pcap, (uint64_t)nn,
                                       4 * used_cap,     (uint64_t)nn,     (uint64_t)nn, 4 * (uint64_t)nn};
  uint64_t smem = 0;
  for (int k = 0; k < kNumArr; ++k) {
    const uint64_t sz = align_up(arr_bytes[k], kSmemAlign);
    if (smem + sz <= (uint64_t)C->smem_budget) {
      P.smem_off[k] = (int64_t)smem;
      smem += sz;
    } else {
      P.smem_off[k] = -1;
    }
  }

  /* ---- Upload, run, download. */
  DT_CUDA(cudaMemcpyAsync(d, h, in_bytes, cudaMemcpyHostToDevice, C->stream));
  dt_merge_kernel<<<1, kThreads, (size_t)smem, C->stream>>>(P);
  DT_CUDA(cudaGetLastError());
  DT_CUDA(cudaMemcpyAsync(h, dout, out_bytes, cudaMemcpyDeviceToHost, C->stream));
  DT_CUDA(cudaStreamSynchronize(C->stream));

  /* ---- The result. */
  const int32_t *hdr = (const int32_t *)(h + r_hdr);
  const int32_t err = hdr[0], nmerge = hdr[1], ntok = hdr[2], nnew = hdr[3];
  if (err != 0 || nmerge < 0 || nmerge > mcap || ntok < 0 || ntok > n || nnew < 0 || nnew > nmerge)
    return lmf_fail(LMF_ERR_INTERNAL, "%s: the CUDA merge kernel reports an inconsistency (error bits "
                    "0x%x, %d merges, %d tokens, %d new tokens)", kFn, (unsigned)err, nmerge, ntok, nnew);
  const int32_t *ids = (const int32_t *)(h + r_ids), *sst = (const int32_t *)(h + r_start),
                *sln = (const int32_t *)(h + r_len);
  const int32_t *ma = (const int32_t *)(h + r_ma), *mb = (const int32_t *)(h + r_mb),
                *mc = (const int32_t *)(h + r_mc), *mcnt = (const int32_t *)(h + r_mcnt);
  struct lmf_dyntok_result *r = lmf_dt_result_alloc(B, ntok, nmerge);
  if (!r) return LMF_ERR_OUT_OF_MEMORY;
  for (int32_t j = 0; j < ntok; ++j) {
    r->ids[j] = ids[j];
    r->span_start[j] = sst[j];
    r->span_len[j] = sln[j];
  }
  for (int32_t k = 0; k < nmerge; ++k) {
    r->merge_pairs[2 * (int64_t)k] = ma[k];
    r->merge_pairs[2 * (int64_t)k + 1] = mb[k];
    r->merge_results[k] = mc[k];
    r->merge_counts[k] = mcnt[k];
  }
  /* Output offsets from the span starts (in position order, so per sequence in order). */
  int64_t j = 0;
  r->offsets[0] = 0;
  for (int64_t s = 0; s < B; ++s) {
    const int64_t hi = job->offsets[s + 1];
    while (j < ntok && r->span_start[j] < hi) ++j;
    r->offsets[s + 1] = j;
  }
  if (j != ntok) {
    lmf_dyntok_result_destroy(r);
    return lmf_fail(LMF_ERR_INTERNAL, "%s: the CUDA merge kernel's output spans are out of order", kFn);
  }
  *out = r;
  return LMF_OK;
}

#undef DT_CUDA

}  // namespace

extern "C" {

lmf_status_t lmf_cuda_dyntok_run(const struct lmf_context *ctx, const lmf_dt_job *job,
                                 struct lmf_dyntok_result **out) {
  try {
    lmf_status_t st = refuse_custom_pattern(job);
    if (st != LMF_OK) return st;
    if (job->num_tokens == 0) return empty_result(job, out);
    DtCache *C = nullptr;
    st = get_cache(ctx, &C);
    if (st != LMF_OK) return st;
    std::lock_guard<std::mutex> lock(C->mu);
    return run_locked(C, job, out);
  } catch (...) {
    return lmf_fail(LMF_ERR_INTERNAL, "%s: unexpected C++ exception in the CUDA backend", kFn);
  }
}

/* Frees what lmf_cuda_dyntok_run cached in a context (kernels/cuda_context.cu calls it when the
 * context is destroyed). */
void lmf_cuda_dyntok_cache_free(const struct lmf_context *ctx, void *cache) {
  DtCache *C = static_cast<DtCache *>(cache);
  if (!C) return;
  if (cudaSetDevice(ctx ? ctx->device : C->device) == cudaSuccess) {
    free_vocab(C);
    cudaFree(C->d_stage1);
    cudaFree(C->d_stage2);
    cudaFree(C->d_ws);
    cudaFreeHost(C->h_stage);
    if (C->stream) cudaStreamDestroy(C->stream);
  }
  (void)cudaGetLastError(); /* a destroy path: nothing to report to */
  delete C;
}

}  // extern "C"
