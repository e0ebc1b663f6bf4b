/* The CPU backend of batch-level BPE merging (host/dyntok_backend.h has the semantics).
 *
 * Exact incremental counting instead of a recount per step:
 *   - The batch is one array of positions 0 .. N-1 (flat, row-major). A token lives at the position of
 *     its first input token; tok[p] is its id (-1 once absorbed by its left neighbour), nxt/prv link the
 *     live tokens of a sequence (-1 at the sequence's ends). Output token p covers input positions
 *     p .. nxt[p] - 1 (or the sequence's end), so spans need no storage.
 *   - An occurrence of (a, b) at p means tok[p] = a, tok[nxt[p]] = b. A pair record (open-addressing
 *     table keyed by (a, b)) holds count = the number of occurrences that COUNT (not special; WORDS:
 *     same word id >= 0), which is exactly what a full recount would give, an occurrence list of left
 *     positions (a singly linked list in a node pool; entries go stale when the occurrence disappears
 *     and are checked on use), first = a lower bound on the smallest live position, exact unless the
 *     `dirty` flag is set (the smallest was removed), and valid = VALID in the pair modes: decided when
 *     the record is made if a byte scan can tell (lmf_dt_valid_quick: the whitespace rule; WHITESPACE
 *     mode), else -1 and evaluated lazily, once, through lmf_dt_eval_pair's memo, when the pair reaches
 *     the top of the heap (most pairs never do).
 *   - An indexed binary max-heap holds every pair with count > 0 not known to be invalid, keyed by
 *     (count desc, first asc) packed into one 64-bit key kept in the heap array. Counts in the heap
 *     are exact; firsts are lower bounds, so a key is never worse than the pair's true key. The top is taken only when its first is exact (else first is
 *     recomputed from the list, the pair sifts down, and the top is looked at again), so it is the pair
 *     with the largest count and, among those, the earliest first occurrence: the spec's choice. (A
 *     position holds one occurrence, so two pairs never share an exact first.)
 *   - A position's pair never comes back once gone (tokens only get longer), so lists hold no duplicate
 *     live entries, and a merged token never equals either of its parts.
 *   - Applying (a, b): its live occurrences, sorted by position, left to right; one is skipped if an
 *     earlier application in this step consumed its tokens (runs a a a: left-greedy, non-overlapping).
 *     Each application removes the occurrences (L, a), (a, b), (b, R) and adds (L, ab), (ab, R), so the
 *     overlapping (a, a) occurrences of a run stay counted exactly.
 * Cost: O(N) to build, O(log P) per occurrence change, O(occurrences) per merge, VALID once per pair
 * that reaches the top of the heap. The loop is sequential (each merge depends on the last), so it runs
 * on one thread whatever the context's cpu_threads; results never depend on the thread count.
 */
#include <stdlib.h>
#include <string.h>

#include "../dyntok_backend.h"
#include "kernels/common/mix64.h"

#define FN "lmf_dyntok_merge"

typedef struct rec {
  int32_t a, b;
  int32_t count;
  int32_t first; /* <= the smallest live position; exact unless dirty */
  int32_t head;  /* occurrence list (node index), -1 = empty */
  int32_t hpos;  /* index in the heap, -1 = not in it */
  int8_t valid;  /* -1 unknown, 0, 1 */
  int8_t dirty;
  int16_t pad;
} rec;

typedef struct state {
  const lmf_dt_job *job;
  const struct lmf_vocab *voc;
  int32_t V;
  int32_t words; /* WORDS mode */
  const int32_t *w;
  int32_t n;
  int32_t *tok, *nxt, *prv;

  /* Pair records and their table. */
  rec *recs;
  int32_t nrec, rec_cap;
  int32_t *table; /* rec index, -1 = empty */
  int64_t table_cap;

  /* Occurrence list nodes. */
  int32_t *node_pos, *node_next;
  int32_t nnode, node_cap;

  /* Heap of (key, rec); key = count << 32 | (INT32_MAX - first): larger is better. */
  struct hent {
    uint64_t key;
    int32_t rec;
    int32_t pad;
  } *heap;
  int32_t nheap;

  /* New tokens: bytes (arena) and a table bytes -> index. */
  uint8_t *nb;
  int64_t nb_len, nb_cap;
  int64_t *nb_off; /* [num_new + 1] */
  uint64_t *nb_hash;
  int32_t num_new, new_cap;
  int32_t *ntable; /* new-token index, -1 = empty */
  int64_t ntable_cap;

  /* Merges. */
  int32_t *m_pairs, *m_res;
  int64_t *m_count;
  int32_t nmerge;

  /* Scratch. */
  int32_t *occ; /* positions of one merge */

  lmf_dt_eval *eval;
  int oom;
} state;

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }

static const uint8_t *tok_bytes(const state *S, int32_t id, int64_t *len) {
  if (id < S->V) return lmf_vocab_tok(S->voc, id, len);
  int32_t k = id - S->V;
  *len = S->nb_off[k + 1] - S->nb_off[k];
  return S->nb + S->nb_off[k];
}

static int is_special(const state *S, int32_t id) {
  return id < S->V && (S->voc->flags[id] & LMF_TOKEN_SPECIAL);
}

/* Whether the occurrence at p (right neighbour q) counts. */
static int counts_at(const state *S, int32_t p, int32_t q) {
  if (is_special(S, S->tok[p]) || is_special(S, S->tok[q])) return 0;
  if (S->words) return S->w[p] >= 0 && S->w[p] == S->w[q];
  return 1;
}

/* ---- Heap ---------------------------------------------------------------------------------------- */

static uint64_t rec_key(const rec *R) {
  return ((uint64_t)(uint32_t)R->count << 32) | (uint32_t)(INT32_MAX - R->first);
}

/* Equal keys (possible only while a first is a stale lower bound) go either way: the top is taken only
 * with an exact first, and exact keys are unique, so the choice never depends on the heap's order. */
static void heap_set(state *S, int32_t i, struct hent e) {
  S->heap[i] = e;
  S->recs[e.rec].hpos = i;
}

static void sift_up(state *S, int32_t i) {
  struct hent e = S->heap[i];
  while (i > 0) {
    int32_t parent = (i - 1) / 2;
    if (S->heap[parent].key >= e.key) break;
    heap_set(S, i, S->heap[parent]);
    i = parent;
  }
  heap_set(S, i, e);
}

static void sift_down(state *S, int32_t i) {
  struct hent e = S->heap[i];
  const int32_t n = S->nheap;
  for (;;) {
    int32_t c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && S->heap[c + 1].key > S->heap[c].key) ++c;
    if (S->heap[c].key <= e.key) break;
    heap_set(S, i, S->heap[c]);
    i = c;
  }
  heap_set(S, i, e);
}

static void heap_push(state *S, int32_t r) {
  int32_t i = S->nheap++;
  struct hent e = {rec_key(&S->recs[r]), r, 0};
  heap_set(S, i, e);
  sift_up(S, i);
}

static void heap_remove(state *S, int32_t r) {
  int32_t i = S->recs[r].hpos;
  S->recs[r].hpos = -1;
  struct hent last = S->heap[--S->nheap];
  if (i == S->nheap) return;
  heap_set(S, i, last);
  if (i > 0 && S->heap[(i - 1) / 2].key < last.key) sift_up(S, i);
  else sift_down(S, i);
}

/* The record's key got better (up) or worse (down). */
static void heap_rekey_up(state *S, int32_t r) {
  int32_t i = S->recs[r].hpos;
  S->heap[i].key = rec_key(&S->recs[r]);
  sift_up(S, i);
}
static void heap_rekey_down(state *S, int32_t r) {
  int32_t i = S->recs[r].hpos;
  S->heap[i].key = rec_key(&S->recs[r]);
  sift_down(S, i);
}

/* ---- Pair records -------------------------------------------------------------------------------- */

/* Doubles an int32 capacity; with N <= LMF_DT_MAX_TOKENS (2^29 - 1) no list needs more than 3N < 2^31
 * entries, and the doubling stops at INT32_MAX. */
static int32_t grow_cap(int32_t cap) {
  int64_t c = 2 * (int64_t)cap;
  return c > INT32_MAX ? INT32_MAX : (int32_t)c;
}

static int table_grow(state *S) {
  int64_t cap = S->table_cap * 2;
  int32_t *t = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap);
  if (!t) return 0;
  memset(t, 0xff, sizeof(int32_t) * (size_t)cap);
  for (int32_t r = 0; r < S->nrec; ++r) {
    int64_t h = (int64_t)(lmf_mix64(pair_key(S->recs[r].a, S->recs[r].b)) & (uint64_t)(cap - 1));
    while (t[h] >= 0) h = (h + 1) & (cap - 1);
    t[h] = r;
  }
  free(S->table);
  S->table = t;
  S->table_cap = cap;
  return 1;
}

/* The record of (a, b), or -1 (create = 0) / a new one (create = 1; -1 and S->oom on no memory). */
static int32_t find_rec(state *S, int32_t a, int32_t b, int create) {
  int64_t h = (int64_t)(lmf_mix64(pair_key(a, b)) & (uint64_t)(S->table_cap - 1));
  for (;;) {
    int32_t r = S->table[h];
    if (r < 0) break;
    if (S->recs[r].a == a && S->recs[r].b == b) return r;
    h = (h + 1) & (S->table_cap - 1);
  }
  if (!create) return -1;
  if (S->nrec == S->rec_cap) {
    int32_t cap = grow_cap(S->rec_cap);
    if (cap == S->rec_cap) return S->oom = 1, -1;
    rec *nr = (rec *)realloc(S->recs, sizeof(rec) * (size_t)cap);
    if (!nr) return S->oom = 1, -1;
    S->recs = nr;
    S->rec_cap = cap;
  }
  int32_t r = S->nrec++;
  rec *R = &S->recs[r];
  R->a = a, R->b = b, R->count = 0, R->first = 0, R->head = -1, R->hpos = -1, R->valid = -1,
  R->dirty = 0, R->pad = 0;
  if (S->words) {
    R->valid = 1;
  } else {
    /* Most invalid pairs (a space inside t) are decided by a byte scan and never enter the heap. */
    int64_t la, lb;
    const uint8_t *ba = tok_bytes(S, a, &la), *bb = tok_bytes(S, b, &lb);
    R->valid = (int8_t)lmf_dt_valid_quick(S->job->valid, ba, la, bb, lb);
  }
  S->table[h] = r;
  if ((int64_t)S->nrec * 2 > S->table_cap && !table_grow(S)) return S->oom = 1, -1;
  return r;
}

static void add_occ(state *S, int32_t p, int in_heap_phase) {
  int32_t a = S->tok[p], b = S->tok[S->nxt[p]];
  int32_t r = find_rec(S, a, b, 1);
  if (r < 0) return;
  if (S->nnode == S->node_cap) {
    int32_t cap = grow_cap(S->node_cap);
    if (cap == S->node_cap) {
      S->oom = 1;
      return;
    }
    int32_t *np = (int32_t *)realloc(S->node_pos, sizeof(int32_t) * (size_t)cap);
    if (!np) {
      S->oom = 1;
      return;
    }
    S->node_pos = np;
    int32_t *nn = (int32_t *)realloc(S->node_next, sizeof(int32_t) * (size_t)cap);
    if (!nn) {
      S->oom = 1;
      return;
    }
    S->node_next = nn;
    S->node_cap = cap;
  }
  rec *R = &S->recs[r];
  int32_t node = S->nnode++;
  S->node_pos[node] = p;
  S->node_next[node] = R->head;
  R->head = node;
  if (R->count++ == 0 || p < R->first) {
    /* A live position below the bound is the exact first. */
    R->first = p;
    R->dirty = 0;
  }
  if (!in_heap_phase || R->valid == 0) return;
  if (R->hpos < 0) heap_push(S, r);
  else heap_rekey_up(S, r);
}

static void rem_occ(state *S, int32_t p) {
  int32_t r = find_rec(S, S->tok[p], S->tok[S->nxt[p]], 0);
  if (r < 0) {
    S->oom = 2; /* internal inconsistency */
    return;
  }
  rec *R = &S->recs[r];
  --R->count;
  if (p == R->first) R->dirty = 1;
  if (R->hpos < 0) return;
  if (R->count == 0) heap_remove(S, r);
  else heap_rekey_down(S, r);
}

static int live_occ(const state *S, const rec *R, int32_t p) {
  if (S->tok[p] != R->a) return 0;
  int32_t q = S->nxt[p];
  return q >= 0 && S->tok[q] == R->b && counts_at(S, p, q);
}

/* Drops stale list entries and makes first exact. Returns the number of live ones. */
static int32_t refresh(state *S, int32_t r) {
  rec *R = &S->recs[r];
  int32_t prev = -1, live = 0, first = INT32_MAX;
  for (int32_t nd = R->head; nd >= 0; nd = S->node_next[nd]) {
    int32_t p = S->node_pos[nd];
    if (live_occ(S, R, p)) {
      ++live;
      if (p < first) first = p;
      prev = nd;
    } else if (prev < 0) {
      R->head = S->node_next[nd];
    } else {
      S->node_next[prev] = S->node_next[nd];
    }
  }
  R->first = first;
  R->dirty = 0;
  return live;
}

/* ---- New tokens ---------------------------------------------------------------------------------- */

static int ntable_grow(state *S) {
  int64_t cap = S->ntable_cap * 2;
  int32_t *t = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap);
  if (!t) return 0;
  memset(t, 0xff, sizeof(int32_t) * (size_t)cap);
  for (int32_t k = 0; k < S->num_new; ++k) {
    int64_t h = (int64_t)(S->nb_hash[k] & (uint64_t)(cap - 1));
    while (t[h] >= 0) h = (h + 1) & (cap - 1);
    t[h] = k;
  }
  free(S->ntable);
  S->ntable = t;
  S->ntable_cap = cap;
  return 1;
}

/* The id of the token bytes(a) + bytes(b), creating a new token if needed; -1 on no memory. */
static int32_t merged_id(state *S, int32_t a, int32_t b) {
  int64_t la, lb;
  const uint8_t *ba = tok_bytes(S, a, &la);
  const uint8_t *bb = tok_bytes(S, b, &lb);
  int64_t len = la + lb;
  /* Room in the arena first: ba/bb may point into it. */
  if (S->nb_len + len > S->nb_cap) {
    int64_t cap = S->nb_cap * 2;
    while (cap < S->nb_len + len) cap *= 2;
    uint8_t *nb = (uint8_t *)realloc(S->nb, (size_t)cap);
    if (!nb) return -1;
    if (a >= S->V) ba = nb + (ba - S->nb);
    if (b >= S->V) bb = nb + (bb - S->nb);
    S->nb = nb;
    S->nb_cap = cap;
  }
  uint8_t *t = S->nb + S->nb_len; /* built in place; kept only if new */
  memcpy(t, ba, (size_t)la);
  memcpy(t + la, bb, (size_t)lb);
  int32_t id = lmf_vocab_lookup(S->voc, t, len);
  if (id >= 0) return id;
  uint64_t hash = lmf_bytes_hash(t, len);
  int64_t h = (int64_t)(hash & (uint64_t)(S->ntable_cap - 1));
  for (;;) {
    int32_t k = S->ntable[h];
    if (k < 0) break;
    if (S->nb_hash[k] == hash && S->nb_off[k + 1] - S->nb_off[k] == len &&
        memcmp(S->nb + S->nb_off[k], t, (size_t)len) == 0)
      return S->V + k;
    h = (h + 1) & (S->ntable_cap - 1);
  }
  if (S->num_new == S->new_cap) {
    int32_t cap = grow_cap(S->new_cap);
    if (cap == S->new_cap) return -1;
    int64_t *no = (int64_t *)realloc(S->nb_off, sizeof(int64_t) * (size_t)(cap + 1));
    if (!no) return -1;
    S->nb_off = no;
    uint64_t *nh = (uint64_t *)realloc(S->nb_hash, sizeof(uint64_t) * (size_t)cap);
    if (!nh) return -1;
    S->nb_hash = nh;
    S->new_cap = cap;
  }
  int32_t k = S->num_new++;
  S->nb_hash[k] = hash;
  S->nb_len += len;
  S->nb_off[k + 1] = S->nb_len;
  S->ntable[h] = k;
  if ((int64_t)S->num_new * 2 > S->ntable_cap && !ntable_grow(S)) return -1;
  return S->V + k;
}

/* ---- The loop ------------------------------------------------------------------------------------ */

static int cmp_i32(const void *x, const void *y) {
  int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
  return (a > b) - (a < b);
}

static void free_state(state *S) {
  free(S->tok);
  free(S->nxt);
  free(S->prv);
  free(S->recs);
  free(S->table);
  free(S->node_pos);
  free(S->node_next);
  free(S->heap);
  free(S->nb);
  free(S->nb_off);
  free(S->nb_hash);
  free(S->ntable);
  free(S->m_pairs);
  free(S->m_res);
  free(S->m_count);
  free(S->occ);
  lmf_dt_eval_destroy(S->eval);
}

static lmf_status_t oom_fail(state *S) {
  free_state(S);
  return lmf_fail(LMF_ERR_OUT_OF_MEMORY, FN ": out of host memory (CPU merge state)");
}

static lmf_status_t internal_fail(state *S, const char *what) {
  free_state(S);
  return lmf_fail(LMF_ERR_INTERNAL, FN ": CPU backend inconsistency: %s", what);
}

/* Applies the occurrence at p: (L, a) (a, b) (b, R) -> (L, c) (c, R). */
static void apply_at(state *S, int32_t p, int32_t c) {
  int32_t q = S->nxt[p], L = S->prv[p], R = S->nxt[q];
  int cl = L >= 0 && counts_at(S, L, p);
  int cr = R >= 0 && counts_at(S, q, R);
  if (cl) rem_occ(S, L);
  rem_occ(S, p);
  if (cr) rem_occ(S, q);
  S->tok[p] = c;
  S->tok[q] = -1;
  S->nxt[p] = R;
  if (R >= 0) S->prv[R] = p;
  /* c is not special and keeps p's word id, so (L, c) and (c, R) count exactly when (L, a) and (b, R)
   * did. */
  if (cl) add_occ(S, L, 1);
  if (cr) add_occ(S, p, 1);
}

lmf_status_t lmf_cpu_dyntok_run(const struct lmf_context *ctx, const lmf_dt_job *job,
                                struct lmf_dyntok_result **out) {
  (void)ctx;
  state S;
  memset(&S, 0, sizeof S);
  S.job = job;
  S.voc = job->vocab;
  S.V = job->vocab->size;
  S.words = job->boundary == LMF_DYNTOK_WORDS;
  S.w = job->word_ids;
  S.n = (int32_t)job->num_tokens;
  const int32_t n = S.n;
  const int64_t B = job->num_seqs;
  const int32_t mcap = (int32_t)(job->max_merges < n ? job->max_merges : n);

  S.tok = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  S.nxt = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  S.prv = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  S.rec_cap = 1024;
  while (S.rec_cap < n) S.rec_cap *= 2;
  S.recs = (rec *)malloc(sizeof(rec) * (size_t)S.rec_cap);
  S.table_cap = 2 * (int64_t)S.rec_cap;
  S.table = (int32_t *)malloc(sizeof(int32_t) * (size_t)S.table_cap);
  S.node_cap = S.rec_cap;
  S.node_pos = (int32_t *)malloc(sizeof(int32_t) * (size_t)S.node_cap);
  S.node_next = (int32_t *)malloc(sizeof(int32_t) * (size_t)S.node_cap);
  S.heap = (struct hent *)malloc(sizeof *S.heap * (size_t)(n + 1)); /* pairs with count > 0: <= n */
  S.nb_cap = 4096;
  S.nb = (uint8_t *)malloc((size_t)S.nb_cap);
  S.new_cap = 256;
  S.nb_off = (int64_t *)malloc(sizeof(int64_t) * (size_t)(S.new_cap + 1));
  S.nb_hash = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)S.new_cap);
  S.ntable_cap = 2 * (int64_t)S.new_cap;
  S.ntable = (int32_t *)malloc(sizeof(int32_t) * (size_t)S.ntable_cap);
  S.m_pairs = (int32_t *)malloc(sizeof(int32_t) * (size_t)(2 * (int64_t)mcap + 1));
  S.m_res = (int32_t *)malloc(sizeof(int32_t) * (size_t)(mcap + 1));
  S.m_count = (int64_t *)malloc(sizeof(int64_t) * (size_t)(mcap + 1));
  S.occ = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 1));
  if (!S.tok || !S.nxt || !S.prv || !S.recs || !S.table || !S.node_pos || !S.node_next || !S.heap ||
      !S.nb || !S.nb_off || !S.nb_hash || !S.ntable || !S.m_pairs || !S.m_res || !S.m_count || !S.occ)
    return oom_fail(&S);
  memset(S.table, 0xff, sizeof(int32_t) * (size_t)S.table_cap);
  memset(S.ntable, 0xff, sizeof(int32_t) * (size_t)S.ntable_cap);
  S.nb_off[0] = 0;
  if (!S.words) {
    S.eval = lmf_dt_eval_create(job->valid, job->vocab);
    if (!S.eval) return oom_fail(&S);
  }

  /* Build: links, and every counting occurrence. */
  if (n > 0) memcpy(S.tok, job->ids, sizeof(int32_t) * (size_t)n);
  for (int64_t s = 0; s < B; ++s) {
    int32_t lo = (int32_t)job->offsets[s], hi = (int32_t)job->offsets[s + 1];
    for (int32_t p = lo; p < hi; ++p) {
      S.prv[p] = p > lo ? p - 1 : -1;
      S.nxt[p] = p + 1 < hi ? p + 1 : -1;
    }
    for (int32_t p = lo; p + 1 < hi; ++p)
      if (counts_at(&S, p, p + 1)) add_occ(&S, p, 0);
    if (S.oom) return oom_fail(&S);
  }
  for (int32_t r = 0; r < S.nrec; ++r) {
    S.recs[r].hpos = -1;
    if (S.recs[r].count > 0 && S.recs[r].valid != 0) {
      struct hent e = {rec_key(&S.recs[r]), r, 0};
      heap_set(&S, S.nheap++, e);
    }
  }
  for (int32_t i = S.nheap / 2 - 1; i >= 0; --i) sift_down(&S, i);

  int64_t live = n; /* tokens left (target_tokens) */
  while (S.nmerge < job->max_merges && (job->target_tokens < 0 || live > job->target_tokens)) {
    /* Choose. */
    int32_t r = -1;
    while (S.nheap > 0) {
      int32_t top = S.heap[0].rec;
      rec *T = &S.recs[top];
      if (T->dirty) {
        int32_t f = T->first;
        int32_t live = refresh(&S, top);
        if (live != T->count) return internal_fail(&S, "a pair's count differs from its occurrences");
        if (T->first != f) heap_rekey_down(&S, top);
        continue;
      }
      if (T->valid < 0) {
        int64_t la = 0, lb = 0;
        const uint8_t *ba = T->a >= S.V ? tok_bytes(&S, T->a, &la) : NULL;
        const uint8_t *bb = T->b >= S.V ? tok_bytes(&S, T->b, &lb) : NULL;
        int v = lmf_dt_eval_pair(S.eval, T->a, ba, la, T->b, bb, lb);
        if (v < 0) {
          lmf_status_t st = lmf_dt_eval_error(S.eval);
          free_state(&S);
          return st;
        }
        T->valid = (int8_t)v;
      }
      if (!T->valid) {
        heap_remove(&S, top);
        continue;
      }
      r = top;
      break;
    }
    if (r < 0) break; /* no valid pair left */

    /* The occurrences, left to right. */
    const int32_t a = S.recs[r].a, b = S.recs[r].b;
    const int32_t count = S.recs[r].count;
    int32_t nocc = 0;
    for (int32_t nd = S.recs[r].head; nd >= 0; nd = S.node_next[nd]) {
      int32_t p = S.node_pos[nd];
      if (live_occ(&S, &S.recs[r], p)) S.occ[nocc++] = p;
    }
    if (nocc != count) return internal_fail(&S, "the chosen pair's count differs from its occurrences");
    qsort(S.occ, (size_t)nocc, sizeof(int32_t), cmp_i32);
    int32_t c = merged_id(&S, a, b);
    if (c < 0) return oom_fail(&S);
    S.m_pairs[2 * S.nmerge] = a;
    S.m_pairs[2 * S.nmerge + 1] = b;
    S.m_res[S.nmerge] = c;
    S.m_count[S.nmerge] = count;
    ++S.nmerge;
    for (int32_t i = 0; i < nocc; ++i) {
      int32_t p = S.occ[i];
      if (S.tok[p] != a) continue; /* consumed by the application just before (a == b runs) */
      int32_t q = S.nxt[p];
      if (q < 0 || S.tok[q] != b || !counts_at(&S, p, q)) continue;
      apply_at(&S, p, c);
      --live;
      if (S.oom) return S.oom == 2 ? internal_fail(&S, "an occurrence without a record") : oom_fail(&S);
    }
    /* r is recs-index stable (records are never moved by index). */
    if (S.recs[r].count != 0) return internal_fail(&S, "the chosen pair still occurs after its merge");
    S.recs[r].head = -1;
  }

  /* The result. */
  int64_t ntok = 0;
  for (int32_t p = 0; p < n; ++p) ntok += S.tok[p] >= 0;
  struct lmf_dyntok_result *res = lmf_dt_result_alloc(B, ntok, S.nmerge);
  if (!res) {
    free_state(&S);
    return LMF_ERR_OUT_OF_MEMORY;
  }
  int64_t j = 0;
  res->offsets[0] = 0;
  for (int64_t s = 0; s < B; ++s) {
    int32_t lo = (int32_t)job->offsets[s], hi = (int32_t)job->offsets[s + 1];
    if (lo < hi) {
      for (int32_t p = lo; p >= 0; p = S.nxt[p]) {
        res->ids[j] = S.tok[p];
        res->span_start[j] = p;
        res->span_len[j] = (S.nxt[p] >= 0 ? S.nxt[p] : hi) - p;
        ++j;
      }
    }
    res->offsets[s + 1] = j;
  }
  if (S.nmerge > 0) {
    memcpy(res->merge_pairs, S.m_pairs, sizeof(int32_t) * 2 * (size_t)S.nmerge);
    memcpy(res->merge_results, S.m_res, sizeof(int32_t) * (size_t)S.nmerge);
    memcpy(res->merge_counts, S.m_count, sizeof(int64_t) * (size_t)S.nmerge);
  }
  free_state(&S);
  *out = res;
  return LMF_OK;
}
