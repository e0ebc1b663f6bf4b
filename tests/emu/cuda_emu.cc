/* The CPU emulator of the CUDA execution model, runtime side (device side: cuda_emu.h; what it checks:
 * README.md). Each thread of a block is a fiber on one OS thread. A fiber runs until it reaches
 * __syncthreads, a warp intrinsic or its end; the last lane to reach a warp intrinsic completes its
 * group, and the scheduler releases the barrier. The blocks of a grid run one after another, so a
 * kernel whose blocks wait for each other (a spin on another block's flag) hangs. A cooperative launch
 * (cudaLaunchAttributeCooperative) has every block's threads at once: each block runs until all its
 * threads wait at grid_sync or have exited, then the next block, and the scheduler releases the grid
 * barrier when every thread of the grid waits there.
 *
 * Also the cudart calls the library and its tests make (memory, streams, capture into graphs,
 * attributes), as host memory and immediate execution: one device of LMF_EMU_SMS multiprocessors
 * (default 4), compute capability 8.0. LMF_EMU_REVERSE=1 runs blocks and threads last first. Calls
 * that would break a global-mode stream capture on a device (cudaMalloc, cudaMemcpy, synchronisation)
 * break it here too. */
#include <cuda_runtime_api.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_emu.h"

/* AddressSanitizer follows the stack switches when told (the sanitizer build runs these tests too):
 * each switch announces the stack it goes to, and each resumed context finishes the switch. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

/* ThreadSanitizer (LMF_EMU_TSAN builds, where the kernels are compiled with -fsanitize=thread and this
 * file is not): see "Races" below. */
#if defined(LMF_EMU_TSAN)
#include <sanitizer/tsan_interface.h>
#define EMU_TSAN 1
extern "C" void AnnotateIgnoreWritesBegin(const char *file, int line);
extern "C" void AnnotateIgnoreWritesEnd(const char *file, int line);
#else
#define EMU_TSAN 0
#endif

/* ---- Fibers ---------------------------------------------------------------------------------------
 * emu_switch(save, to): pushes the callee-saved registers on the current stack, stores its pointer in
 * *save, and resumes the stack `to` (System V x86-64). The fibers share the OS thread's floating-point
 * environment (MXCSR, x87 control word), which nothing here changes. */
#if !defined(__x86_64__)
#error "the CUDA emulator's fibers are written for x86-64"
#endif
extern "C" void emu_switch(void **save, void *to);
asm(R"(
  .text
  .globl emu_switch
  .type emu_switch, @function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_switch, .-emu_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");

namespace emu {
namespace {

[[noreturn]] void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "cuda-emu: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  fflush(stderr);
  abort();
}

constexpr size_t kStack = 256 * 1024; /* per thread; a guard page below each */
constexpr int kMaxThreads = 1024;
/* Each guard page splits the stacks' mapping in two, and a process has at most ~65530 mappings: a
 * cooperative launch of more threads than this has its stacks unguarded. */
constexpr size_t kGuardedStacks = 1024;

enum State { READY, AT_BAR, AT_WARP, AT_GRID, DONE };

/* A stack to switch to: its saved pointer, its bounds and AddressSanitizer's fake stack for it. */
struct Context {
  void *sp = nullptr;
  void *fake = nullptr;
  void *tsan = nullptr; /* ThreadSanitizer's fiber for it (LMF_EMU_TSAN) */
  const void *lo = nullptr;
  size_t size = 0;
};

struct Fiber {
  Context ctx;
  State state;
  uint3 tid;
  const char *site;
  WarpOp op;
  unsigned mask;
  uint64_t value, result;
  int arg, width;
  uint64_t turn; /* LMF_EMU_TSAN: the last turn (Races) it entered */
  uint32_t gen;  /* LMF_EMU_TSAN: the generation of the __syncthreads it waits at */
};

/* A block_local variable: zeroed at its first use in the block, freed with the block. */
struct Local {
  const void *key;
  size_t bytes;
  std::unique_ptr<char[]> mem;
};

/* One block's threads. The block being run is the Grid itself; a cooperative launch parks its other
 * blocks and swaps each in for its turn, so the scheduler's paths are the same for both launches. */
struct Block {
  uint3 bidx;
  std::vector<Fiber> th;
  std::vector<unsigned> ready, at_warp, at_grid, done; /* per warp: its lanes in each state */
  std::vector<Local> locals;
  uint32_t bar_gen = 0; /* __syncthreads released so far (LMF_EMU_TSAN) */
};

struct Grid : Block {
  std::function<void()> body;
  const char *name;
  dim3 grid, block;
  Fiber *cur = nullptr;
  Context sched; /* the launching thread's own stack */
  bool reverse = false; /* LMF_EMU_REVERSE: blocks and threads last first */
  bool coop = false;    /* a cooperative launch: grid_sync allowed */
};

Grid *g_run;          /* the launch being executed */
unsigned long long g_grid_barriers; /* grid_syncs taken (counted in block 0's thread 0) */
char *g_stacks;       /* kMaxThreads stacks, each with a guard page below */
std::recursive_mutex g_lock; /* one launch at a time (the library may be called from several threads) */

void switch_on();

/* ---- Races (LMF_EMU_TSAN) -------------------------------------------------------------------------
 * Each warp of a block is a ThreadSanitizer fiber, switched to without synchronisation, so TSan sees
 * the warps of a block as running at once except where CUDA orders them:
 * - __syncthreads: each thread releases a sync object as it arrives and acquires it as it leaves; one
 *   object per barrier generation (two, alternating), so a warp that leaves late does not also
 *   acquire what the others did after the barrier;
 * - the order of blocks and grid_sync: a "turn" is one block's run (in a cooperative launch, one
 *   block's part of a phase). The scheduler (the launching thread) releases the hub before each turn,
 *   and each thread acquires it at its first run in the turn; threads release the park as they exit
 *   or wait at grid_sync, and the scheduler acquires it after the turn. So every turn happens after
 *   the turns before it and after the host's work before the launch, and the host after the launch
 *   happens after every turn. (On a device the blocks have separate shared memory; here one static.)
 * - atomics: cuda_emu.h makes them real (relaxed) atomics in these builds.
 * So a race TSan reports is two warps of a block touching one address with no __syncthreads between
 * them, at least one a write, not both atomics: compute-sanitizer racecheck's hazard between warps,
 * for global memory too. The lanes of a warp are one TSan thread, so a race inside a warp is not
 * seen (a fiber per thread also would see warp-synchronous code, and cost TSan's vector clocks 32
 * times the width at every synchronisation). */
#if EMU_TSAN
char g_hub, g_park, g_bar_sync[2];
uint64_t g_turn;
std::vector<void *> g_tsan_fibers;

/* ThreadSanitizer's fiber i (created once, reused by every launch): warp i of the launch's threads. */
void *tsan_fiber(size_t i) {
  while (g_tsan_fibers.size() <= i) g_tsan_fibers.push_back(__tsan_create_fiber(0));
  return g_tsan_fibers[i];
}
#endif

/* The scheduler, before a turn and after it. */
void turn_begin() {
#if EMU_TSAN
  ++g_turn;
  __tsan_release(&g_hub);
#endif
}
void turn_end() {
#if EMU_TSAN
  __tsan_acquire(&g_park);
#endif
}

/* The current thread: at each resumption (its first in a turn acquires the hub), and as it parks
 * (exits or waits at grid_sync). */
void tsan_resumed(Fiber *f) {
#if EMU_TSAN
  if (f && f->turn != g_turn) {
    f->turn = g_turn;
    __tsan_acquire(&g_hub);
  }
#else
  (void)f;
#endif
}
void tsan_park() {
#if EMU_TSAN
  __tsan_release(&g_park);
#endif
}

/* Leaves `from` (nullptr: a fiber that has exited, never resumed) for `to`; returns when `from` is
 * resumed (then Grid::cur is it, or nullptr for the scheduler). */
void transfer(Context *from, Context *to, void **save_sp) {
#if EMU_ASAN
  __sanitizer_start_switch_fiber(from ? &from->fake : nullptr, to->lo, to->size);
#endif
#if EMU_TSAN
  __tsan_switch_to_fiber(to->tsan, __tsan_switch_to_fiber_no_sync);
#endif
  emu_switch(save_sp, to->sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(from ? from->fake : nullptr, nullptr, nullptr);
#endif
  if (from != nullptr && g_run != nullptr && g_run->cur != nullptr && &g_run->cur->ctx == from)
    tsan_resumed(g_run->cur);
}

/* Moves the current fiber out of READY (it blocks or exits). */
void leave_ready(State s) {
  Grid &g = *g_run;
  Fiber &f = *g.cur;
  const int i = (int)(&f - g.th.data());
  f.state = s;
  g.ready[i >> 5] &= ~(1u << (i & 31));
  if (s == AT_WARP) g.at_warp[i >> 5] |= 1u << (i & 31);
  if (s == AT_GRID) g.at_grid[i >> 5] |= 1u << (i & 31);
  if (s == DONE) g.done[i >> 5] |= 1u << (i & 31);
}

void fiber_main() {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, nullptr, nullptr);
#endif
  Grid &g = *g_run;
  tsan_resumed(g.cur);
  g.body();
  tsan_park();
  leave_ready(DONE);
  switch_on();
  die("a finished fiber was resumed");
}

/* n stacks of kStack bytes, each above a page that is a guard while there are few enough. */
char *map_stacks(size_t n) {
  const size_t bytes = n * (kStack + 4096);
  void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) die("cannot map %zu fiber stacks", n);
  char *s = static_cast<char *>(m);
  if (n <= kGuardedStacks)
    for (size_t i = 0; i < n; ++i) mprotect(s + i * (kStack + 4096), 4096, PROT_NONE);
  return s;
}

void unmap_stacks(char *s, size_t n) {
#if EMU_ASAN
  /* The frames a fiber never returned from (its exit path) stay poisoned; a later mapping there must
   * not inherit that. They lie at each stack's top. */
  for (size_t i = 0; i < n; ++i) __asan_unpoison_memory_region(s + (i + 1) * (kStack + 4096) - 16384, 16384);
#endif
  munmap(s, n * (kStack + 4096));
}

/* Fiber i's stack in `stacks` (map_stacks), ready to enter fiber_main. */
Context fresh_stack(char *stacks, size_t i) {
  Context c;
  c.lo = stacks + i * (kStack + 4096) + 4096;
  /* Staggered by 64-byte lines, so that the stacks' hot tops do not all fall into the same cache sets. */
  char *top = stacks + (i + 1) * (kStack + 4096) - (i % 61) * 64;
  c.size = (size_t)(top - static_cast<const char *>(c.lo));
  void **sp = reinterpret_cast<void **>(top);
  *--sp = nullptr;                                   /* fiber_main's frame: (rsp + 8) % 16 == 0 on entry */
  *--sp = reinterpret_cast<void *>(&fiber_main);     /* emu_switch's ret */
  for (int r = 0; r < 6; ++r) *--sp = nullptr;       /* rbp rbx r12 .. r15 */
  c.sp = sp;
  return c;
}


const char *state_name(State s) {
  return s == READY     ? "ready"
         : s == AT_BAR  ? "at __syncthreads"
         : s == AT_WARP ? "at a warp intrinsic"
         : s == AT_GRID ? "at grid_sync"
                        : "exited";
}

[[noreturn]] void die_block(const char *why) {
  Grid &g = *g_run;
  fprintf(stderr, "cuda-emu: %s in %s, block (%u, %u, %u) of (%u, %u, %u) x (%u, %u, %u):\n", why, g.name,
          g.bidx.x, g.bidx.y, g.bidx.z, g.grid.x, g.grid.y, g.grid.z, g.block.x, g.block.y, g.block.z);
  int shown = 0;
  for (size_t i = 0; i < g.th.size() && shown < 24; ++i) {
    const Fiber &f = g.th[i];
    if (f.state == DONE) continue;
    fprintf(stderr, "  thread %zu (warp %zu lane %zu): %s %s mask %08x\n", i, i / 32, i % 32, state_name(f.state),
            f.site ? f.site : "", f.state == AT_WARP ? f.mask : 0u);
    ++shown;
  }
  die("%s", why);
}

/* The results of one complete warp group (lanes `mask` of warp w, all at the same intrinsic); its
 * lanes become ready. */
void warp_results(Fiber *w, int nlanes, unsigned mask) {
  const Fiber &f0 = w[__builtin_ctz(mask)];
  unsigned ballot = 0;
  uint32_t red = f0.op == W_REDUCE_MAX_S ? 0x80000000u : 0u; /* __reduce_*_sync's result */
  for (int l = 0; l < nlanes; ++l) {
    if (!((mask >> l) & 1u)) continue;
    const uint32_t x = (uint32_t)w[l].value;
    if (w[l].value) ballot |= 1u << l;
    if (f0.op == W_REDUCE_ADD) red += x;
    else if (f0.op == W_REDUCE_MAX_U) red = x > red ? x : red;
    else if (f0.op == W_REDUCE_MAX_S) red = (int32_t)x > (int32_t)red ? x : red;
  }
  for (int lane = 0; lane < nlanes; ++lane) {
    if (!((mask >> lane) & 1u)) continue;
    Fiber &f = w[lane];
    const int width = f.width, seg = lane & ~(width - 1);
    auto from = [&](int src) -> uint64_t {
      if (src < 0 || src >= nlanes || !((mask >> src) & 1u)) die_block("a shuffle reads a lane outside its mask");
      return w[src].value;
    };
    uint64_t r = 0;
    switch (f0.op) {
      case W_SYNC:
        break;
      case W_SHFL_IDX:
        r = from(seg + (f.arg & (width - 1)));
        break;
      case W_SHFL_UP:
        r = lane - f.arg < seg ? f.value : from(lane - f.arg);
        break;
      case W_SHFL_DOWN:
        r = lane + f.arg >= seg + width ? f.value : from(lane + f.arg);
        break;
      case W_SHFL_XOR: {
        const int src = lane ^ f.arg;
        r = (src & ~(width - 1)) > seg ? f.value : from(src);
        break;
      }
      case W_BALLOT:
        r = ballot;
        break;
      case W_ANY:
        r = ballot != 0;
        break;
      case W_ALL:
        r = ballot == mask;
        break;
      case W_MATCH_ANY:
        for (int l = 0; l < nlanes; ++l)
          if (((mask >> l) & 1u) && w[l].value == f.value) r |= 1ull << l;
        break;
      case W_REDUCE_ADD:
      case W_REDUCE_MAX_S:
      case W_REDUCE_MAX_U:
        r = red;
        break;
    }
    f.result = r;
    f.state = READY;
  }
}

/* Completes the group of lane `lane` of warp wi if all its lanes have arrived at the same intrinsic. */
bool try_group(Grid &g, int wi, int lane) {
  Fiber *w = &g.th[(size_t)wi * 32];
  const int nlanes = (int)g.th.size() - wi * 32 < 32 ? (int)g.th.size() - wi * 32 : 32;
  const Fiber &f = w[lane];
  const unsigned m = f.mask;
  if (nlanes < 32 && (m >> nlanes)) die_block("a warp intrinsic's mask names a lane the block does not have");
  if (m & g.done[wi]) die_block("a warp intrinsic's mask names an exited lane");
  if ((g.at_warp[wi] & m) != m) return false;
  for (unsigned o = m; o; o &= o - 1) {
    const Fiber &h = w[__builtin_ctz(o)];
    if (h.mask != m || h.op != f.op || h.width != f.width) return false;
  }
  warp_results(w, nlanes, m);
  g.at_warp[wi] &= ~m;
  g.ready[wi] |= m;
  return true;
}

/* The ready thread to run after thread i (-1: at the start of a round): the next ready lane of i's warp
 * (wrapping round), else the first ready lane of the next warp with one; -1 if none. In thread order,
 * or in reverse with LMF_EMU_REVERSE=1, which flips which side of a missing barrier runs first. Warp by
 * warp keeps 32 stacks in cache; lanes become ready only through their own warp or the scheduler. */
int next_ready(const Grid &g, int i) {
  const int nw = (int)g.ready.size();
  if (!g.reverse) {
    int wi = i < 0 ? 0 : i >> 5;
    if (i >= 0) {
      const unsigned after = g.ready[wi] & ~((2u << (i & 31)) - 1u);
      if (after) return wi * 32 + __builtin_ctz(after);
    }
    for (; wi < nw && !g.ready[wi]; ++wi) {
    }
    return wi < nw ? wi * 32 + __builtin_ctz(g.ready[wi]) : -1;
  }
  int wi = i < 0 ? nw - 1 : i >> 5;
  if (i >= 0) {
    const unsigned before = g.ready[wi] & ((1u << (i & 31)) - 1u);
    if (before) return wi * 32 + 31 - __builtin_clz(before);
  }
  for (; wi >= 0 && !g.ready[wi]; --wi) {
  }
  return wi >= 0 ? wi * 32 + 31 - __builtin_clz(g.ready[wi]) : -1;
}

/* Leaves the current fiber (blocked or exited) for the next ready one, or for the scheduler at the
 * end of the round. */
void switch_on() {
  Grid &g = *g_run;
  Fiber *const from = g.cur;
  const int k = next_ready(g, (int)(from - g.th.data()));
  Fiber *const next = k < 0 ? nullptr : &g.th[k];
  if (next == from) return;
  g.cur = next;
  if (next) threadIdx = next->tid;
  transfer(from->state == DONE ? nullptr : &from->ctx, next ? &next->ctx : &g.sched, &from->ctx.sp);
}

/* Releases __syncthreads when every live thread waits there; true if it did. Exited threads with
 * others still at the barrier break CUDA's rule (the barrier must be reached by the whole block). */
bool release_barrier() {
  Grid &g = *g_run;
  int at = 0, done = 0;
  const char *site = nullptr;
  for (const Fiber &f : g.th) {
    if (f.state == AT_BAR) {
      if (site && site != f.site && strcmp(site, f.site) != 0) die_block("threads wait at different __syncthreads");
      site = f.site;
      ++at;
    } else if (f.state == DONE) {
      ++done;
    }
  }
  if (at == 0 || at + done != (int)g.th.size()) return false;
  if (done) die_block("__syncthreads is waited at after some threads of the block exited");
  ++g.bar_gen;
  for (size_t t = 0; t < g.th.size(); ++t) {
    g.th[t].state = READY;
    g.ready[t >> 5] |= 1u << (t & 31);
  }
  return true;
}

/* Block b's threads (b.th sized to the block) all ready, on stacks first.. of `stacks`. */
void init_block(Block &b, dim3 block, char *stacks, size_t first) {
  const int nw = (int)(b.th.size() + 31) / 32;
  b.ready.assign(nw, 0u);
  b.at_warp.assign(nw, 0u);
  b.at_grid.assign(nw, 0u);
  b.done.assign(nw, 0u);
  b.locals.clear();
  b.bar_gen = 0;
  int i = 0;
  for (uint32_t z = 0; z < block.z; ++z)
    for (uint32_t y = 0; y < block.y; ++y)
      for (uint32_t x = 0; x < block.x; ++x, ++i) {
        Fiber &f = b.th[i];
        f = Fiber{};
        f.tid = make_uint3(x, y, z);
        f.state = READY;
        f.ctx = fresh_stack(stacks, first + (size_t)i);
#if EMU_TSAN
        f.ctx.tsan = tsan_fiber(first / b.th.size() * (size_t)nw + (size_t)(i >> 5)); /* one per warp */
#endif
        b.ready[i >> 5] |= 1u << (i & 31);
      }
}

/* Runs the block in the Grid until each of its threads has exited or (cooperative launch) waits at
 * grid_sync. */
void run_rounds() {
  Grid &g = *g_run;
  const int n = (int)g.th.size(), nw = (n + 31) / 32;
  for (;;) {
    const int first = next_ready(g, -1);
    if (first >= 0) { /* a round: warp by warp, each to where it waits (switch_on) */
      g.cur = &g.th[first];
      threadIdx = g.cur->tid;
      transfer(&g.sched, &g.cur->ctx, &g.sched.sp);
      continue;
    }
    if (release_barrier()) continue;
    bool parked = true, at_grid = false;
    for (int w = 0; w < nw; ++w) {
      parked &= (g.done[w] | g.at_grid[w]) == (w == nw - 1 && n % 32 ? (1u << (n % 32)) - 1u : ~0u);
      at_grid |= g.at_grid[w] != 0;
    }
    if (parked) return;
    if (at_grid)
      die_block("deadlock: threads of the block wait at grid_sync, others at __syncthreads or a warp intrinsic");
    die_block("deadlock: no barrier or warp group can complete");
  }
}

void run_block() {
  init_block(*g_run, g_run->block, g_stacks, 0);
  turn_begin();
  run_rounds();
  turn_end();
}

void swap_in(Grid &g, Block &b) {
  std::swap(static_cast<Block &>(g), b);
  blockIdx = g.bidx;
}

/* Aborts naming block b (of the parked blocks of a cooperative launch). */
[[noreturn]] void die_parked(Grid &g, Block &b, const char *why) {
  swap_in(g, b);
  die_block(why);
}

/* After a phase of a cooperative launch (each thread exited or waits at grid_sync): releases the grid
 * barrier; false when every thread has exited. On a device the barrier is never released if a thread
 * of the grid exited before it, or if threads wait at different grid_syncs. */
bool release_grid(Grid &g, std::vector<Block> &blocks) {
  const char *site = nullptr;
  Block *waits = nullptr, *exited = nullptr;
  char why[512];
  for (Block &b : blocks)
    for (const Fiber &f : b.th) {
      if (f.state != AT_GRID) {
        exited = exited ? exited : &b;
        continue;
      }
      if (site && site != f.site && strcmp(site, f.site) != 0) {
        snprintf(why, sizeof why, "threads of the grid wait at different grid_syncs (block (%u, %u, %u) at %s)",
                 waits->bidx.x, waits->bidx.y, waits->bidx.z, site);
        die_parked(g, b, why);
      }
      site = f.site;
      waits = waits ? waits : &b;
    }
  if (!waits) return false;
  if (exited) {
    snprintf(why, sizeof why,
             "deadlock: grid_sync is waited at (block (%u, %u, %u) at %s) after some threads of the grid exited",
             waits->bidx.x, waits->bidx.y, waits->bidx.z, site);
    die_parked(g, *exited, why);
  }
  for (Block &b : blocks) {
    for (size_t t = 0; t < b.th.size(); ++t) {
      b.th[t].state = READY;
      b.ready[t >> 5] |= 1u << (t & 31);
    }
    b.at_grid.assign(b.at_grid.size(), 0u);
  }
  return true;
}

/* A cooperative launch: every block's threads at once, on stacks of their own. Each phase runs the
 * blocks in turn (last first with LMF_EMU_REVERSE=1) to grid_sync or their end. */
void run_cooperative(Grid &g, uint64_t nblocks) {
  const size_t nt = g.th.size(), nstacks = (size_t)nblocks * nt;
  char *stacks = map_stacks(nstacks);
  std::vector<Block> blocks(nblocks);
  for (uint64_t k = 0; k < nblocks; ++k) {
    Block &b = blocks[k];
    b.bidx = make_uint3((unsigned)(k % g.grid.x), (unsigned)(k / g.grid.x % g.grid.y),
                        (unsigned)(k / g.grid.x / g.grid.y));
    b.th.resize(nt);
    init_block(b, g.block, stacks, (size_t)k * nt);
  }
  g.th.clear();
  do {
    for (uint64_t i = 0; i < nblocks; ++i) {
      Block &b = blocks[g.reverse ? nblocks - 1 - i : i];
      swap_in(g, b);
      turn_begin();
      run_rounds();
      turn_end();
      std::swap(static_cast<Block &>(g), b);
    }
  } while (release_grid(g, blocks));
  blocks.clear();
  unmap_stacks(stacks, nstacks);
}

}  // namespace

void grid_sync(const char *site) {
  if (!g_run) die("grid_sync outside a kernel (%s)", site);
  g_run->cur->site = site;
  if (!g_run->coop) die_block("grid_sync in a launch that is not cooperative");
  const uint3 b = g_run->bidx, t = g_run->cur->tid;
  if ((b.x | b.y | b.z | t.x | t.y | t.z) == 0u) ++g_grid_barriers; /* every block takes each one */
  tsan_park();
  leave_ready(AT_GRID);
  switch_on();
}

void *block_local(const void *key, size_t bytes) {
  if (!g_run) die("block_local outside a kernel");
  Grid &g = *g_run;
  for (Local &l : g.locals)
    if (l.key == key) {
      if (l.bytes != bytes) die_block("block_local is asked for one key with two sizes");
      return l.mem.get();
    }
#if EMU_TSAN
  /* Zeroed storage, as a fresh block's would be: not a write of the thread that happens to ask first. */
  AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
#endif
  g.locals.push_back(Local{key, bytes, std::unique_ptr<char[]>(new char[bytes ? bytes : 1]())});
#if EMU_TSAN
  AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
#endif
  return g.locals.back().mem.get();
}

void syncthreads(const char *site) {
  Fiber &f = *g_run->cur;
  f.site = site;
#if EMU_TSAN
  f.gen = g_run->bar_gen;
  __tsan_release(&g_bar_sync[f.gen & 1u]);
#endif
  leave_ready(AT_BAR);
  switch_on();
#if EMU_TSAN
  __tsan_acquire(&g_bar_sync[f.gen & 1u]);
#endif
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char *site) {
  Grid &g = *g_run;
  Fiber &f = *g.cur;
  const int i = (int)(&f - g.th.data()), lane = i & 31;
  if (!((mask >> lane) & 1u)) die_block("a lane calls a warp intrinsic whose mask leaves it out");
  if (width < 1 || width > 32 || (width & (width - 1))) die_block("a shuffle's width is not a power of 2 <= 32");
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.site = site;
  leave_ready(AT_WARP);
  /* The last lane to arrive completes the group and runs on; the others wait their turn. */
  if (!try_group(g, i >> 5, lane)) switch_on();
  return f.result;
}

/* ---- Streams and capture ------------------------------------------------------------------------ */

namespace {
struct Capture {
  bool on = false, global = false, broken = false;
  std::vector<std::function<void()>> work;
};
}  // namespace

}  // namespace emu

struct CUstream_st {
  emu::Capture cap;
};
struct CUgraph_st {
  std::vector<std::function<void()>> work;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> work;
};

namespace emu {
namespace {

cudaError_t g_sticky = cudaSuccess; /* the last error, as cudaGetLastError returns and clears it */
std::vector<cudaStream_t> g_capturing;
std::map<uintptr_t, size_t> g_allocs; /* device allocations: base -> bytes */
unsigned long long g_launches;          /* kernels run (a replayed graph's count each time) */
unsigned long long g_max_blocks;        /* the largest plain (not cooperative) grid run since asked */

cudaError_t fail(cudaError_t e) {
  g_sticky = e;
  return e;
}

/* A call a global-mode capture forbids (synchronous copies, allocation, synchronisation): it breaks
 * every such capture and fails, as on a device. */
bool capture_forbids() {
  bool hit = false;
  for (cudaStream_t s : g_capturing)
    if (s->cap.global) s->cap.broken = hit = true;
  return hit;
}

/* Runs `work` now, or records it when its stream is capturing. */
cudaError_t enqueue(cudaStream_t stream, std::function<void()> work) {
  if (stream && stream->cap.on) {
    stream->cap.work.push_back(std::move(work));
    return cudaSuccess;
  }
  work();
  return cudaSuccess;
}

int sms() {
  const char *e = getenv("LMF_EMU_SMS");
  const int v = e ? atoi(e) : 4;
  return v > 0 ? v : 4;
}

/* A kernel's resident blocks per SM: kCoopBlocksPerSm, or with LMF_EMU_OCC=mixed 1 .. kCoopBlocksPerSm
 * by kernel (the order of first asking), as a device's registers make them differ: the host then sizes
 * each kernel's grid differently within one step (kernels/logits.cu, chunk_gx). */
int blocks_per_sm(const void *func) {
  const char *e = getenv("LMF_EMU_OCC");
  if (!e || strcmp(e, "mixed") != 0) return kCoopBlocksPerSm;
  std::lock_guard<std::recursive_mutex> hold(g_lock);
  static std::map<const void *, int> seen;
  const auto it = seen.emplace(func, 1 + (int)(seen.size() % kCoopBlocksPerSm)).first;
  return it->second;
}

bool reverse_order() {
  const char *e = getenv("LMF_EMU_REVERSE");
  return e && e[0] == '1';
}

bool known_device_range(const void *p, size_t bytes) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto it = g_allocs.upper_bound(a);
  if (it == g_allocs.begin()) return false;
  --it;
  return a >= it->first && a + bytes <= it->first + it->second;
}

}  // namespace

cudaError_t launch(const char *name, dim3 grid, dim3 block, size_t dynamic_smem, cudaStream_t stream,
                   const std::function<void()> &body, bool cooperative) {
  std::lock_guard<std::recursive_mutex> hold(g_lock);
  const uint64_t nthreads = (uint64_t)block.x * block.y * block.z;
  if (nthreads == 0 || nthreads > (uint64_t)kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
      grid.y > 65535 || grid.z > 65535)
    return fail(cudaErrorInvalidConfiguration);
  if (dynamic_smem > 0) return fail(cudaErrorNotSupported); /* no dynamic shared memory here */
  const uint64_t nblocks = (uint64_t)grid.x * grid.y * grid.z;
  /* A cooperative grid must be resident at once (cudaOccupancyMaxActiveBlocksPerMultiprocessor). */
  if (cooperative && nblocks > (uint64_t)sms() * kCoopBlocksPerSm) return fail(cudaErrorCooperativeLaunchTooLarge);
  return enqueue(stream, [=] {
    std::lock_guard<std::recursive_mutex> hold2(g_lock);
    if (!g_stacks) g_stacks = map_stacks(kMaxThreads);
    Grid g;
    pthread_attr_t at;
    if (pthread_getattr_np(pthread_self(), &at) == 0) {
      void *lo = nullptr;
      size_t size = 0;
      pthread_attr_getstack(&at, &lo, &size);
      g.sched.lo = lo;
      g.sched.size = size;
      pthread_attr_destroy(&at);
    }
#if EMU_TSAN
    g.sched.tsan = __tsan_get_current_fiber();
#endif
    g.body = body;
    g.name = name;
    g.grid = grid;
    g.block = block;
    g.th.resize(nthreads);
    g.coop = cooperative;
    ++g_launches;
    if (!cooperative && nblocks > g_max_blocks) g_max_blocks = nblocks;
    Grid *outer = g_run;
    if (outer) die("a kernel launched from inside a kernel");
    g_run = &g;
    gridDim = grid;
    blockDim = block;
    /* In order, or last block first (LMF_EMU_REVERSE=1): a protocol between blocks ("the last block
     * of a row to finish merges") must not depend on which block that is. The threads of a block then
     * run last first too (next_ready). */
    const bool reverse = g.reverse = reverse_order();
    if (cooperative) run_cooperative(g, nblocks);
    else
      for (uint64_t b = 0; b < nblocks; ++b) {
        const uint64_t k = reverse ? nblocks - 1 - b : b;
        g.bidx = blockIdx = make_uint3((unsigned)(k % grid.x), (unsigned)(k / grid.x % grid.y),
                                       (unsigned)(k / grid.x / grid.y));
        run_block();
      }
    g_run = nullptr;
  });
}

}  // namespace emu

using emu::fail;

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

/* ---- The cudart API ----------------------------------------------------------------------------- */

extern "C" {

/* For tests/emu/test_emu_launches.cc: the kernels run so far. */
unsigned long long lmf_emu_launches(void) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  return emu::g_launches;
}

/* The most thread blocks of any plain launch since the last call (then reset). */
unsigned long long lmf_emu_take_max_blocks(void) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  const unsigned long long n = emu::g_max_blocks;
  emu::g_max_blocks = 0;
  return n;
}

/* The grid-wide barriers cooperative launches have taken so far (each counted once). */
unsigned long long lmf_emu_grid_barriers(void) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  return emu::g_grid_barriers;
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = emu::g_sticky;
  emu::g_sticky = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::g_sticky; }
const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorStreamCaptureInvalidated: return "cudaErrorStreamCaptureInvalidated";
    case cudaErrorCooperativeLaunchTooLarge: return "cudaErrorCooperativeLaunchTooLarge";
    default: return "cudaErrorUnknown";
  }
}
const char *cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cudaError_t cudaGetDeviceCount(int *n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice); }
cudaError_t cudaGetDevice(int *d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, enum cudaDeviceAttr a, int device) {
  if (device != 0) return fail(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu::sms(); return cudaSuccess;
    case cudaDevAttrComputeCapabilityMajor: *v = 8; return cudaSuccess;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 0; return cudaSuccess;
    case cudaDevAttrCooperativeLaunch: *v = 1; return cudaSuccess;
    default: return fail(cudaErrorInvalidValue);
  }
}
cudaError_t cudaFuncGetAttributes(struct cudaFuncAttributes *a, const void *func) {
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  memset(a, 0, sizeof *a);
  a->binaryVersion = 80; /* no sm_90 paths: PDL is not emulated */
  a->ptxVersion = 80;
  a->maxThreadsPerBlock = emu::kMaxThreads;
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void *func, enum cudaFuncAttribute attr, int value) {
  (void)func; (void)attr; (void)value;
  return fail(cudaErrorNotSupported);
}
/* Every kernel fits kCoopBlocksPerSm blocks of any size per multiprocessor (the emulator's bound on a
 * cooperative grid), or with LMF_EMU_OCC=mixed 1 to kCoopBlocksPerSm by kernel (blocks_per_sm); shared
 * memory and registers are not modelled. */
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *func, int block_size,
                                                                   size_t dynamic_smem, unsigned flags) {
  (void)dynamic_smem; (void)flags;
  if (!func) return fail(cudaErrorInvalidDeviceFunction);
  if (!n || block_size <= 0 || block_size > emu::kMaxThreads) return fail(cudaErrorInvalidValue);
  *n = emu::blocks_per_sm(func);
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *func, int block_size,
                                                          size_t dynamic_smem) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, func, block_size, dynamic_smem,
                                                                cudaOccupancyDefault);
}

cudaError_t cudaMalloc(void **p, size_t bytes) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (emu::capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  /* Exactly `bytes` (256-byte aligned, as cudaMalloc's): under AddressSanitizer a kernel's access past
   * the end is reported, as compute-sanitizer's memcheck would on a device. */
  void *m = nullptr;
  if (posix_memalign(&m, 256, bytes ? bytes : 1) != 0) return fail(cudaErrorMemoryAllocation);
  memset(m, 0xA5, bytes); /* device memory starts as garbage */
  emu::g_allocs[reinterpret_cast<uintptr_t>(m)] = bytes;
  *p = m;
  return cudaSuccess;
}
cudaError_t cudaFree(void *p) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (!p) return cudaSuccess;
  auto it = emu::g_allocs.find(reinterpret_cast<uintptr_t>(p));
  if (it == emu::g_allocs.end()) return fail(cudaErrorInvalidValue);
  emu::g_allocs.erase(it);
  free(p);
  return cudaSuccess;
}
cudaError_t cudaPointerGetAttributes(struct cudaPointerAttributes *a, const void *p) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  memset(a, 0, sizeof *a);
  const bool dev = emu::known_device_range(p, 1);
  a->type = dev ? cudaMemoryTypeDevice : cudaMemoryTypeUnregistered;
  a->device = 0;
  a->devicePointer = dev ? const_cast<void *>(p) : nullptr;
  a->hostPointer = dev ? nullptr : const_cast<void *>(p);
  return cudaSuccess;
}

/* Whether a copy's device side lies inside one allocation (the emulator's memcheck of copies). */
static bool copy_in_range(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  const bool dst_dev = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_dev = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  return !bytes || ((!dst_dev || emu::known_device_range(dst, bytes)) && (!src_dev || emu::known_device_range(src, bytes)));
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (emu::capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  if (!copy_in_range(dst, src, bytes, kind)) return fail(cudaErrorInvalidValue);
  if (bytes) memmove(dst, src, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  /* Checked now: a captured copy runs at replay, when there is no caller to tell. */
  if (!copy_in_range(dst, src, bytes, kind)) return fail(cudaErrorInvalidValue);
  return emu::enqueue(stream, [=] {
    if (bytes) memmove(dst, src, bytes);
  });
}
cudaError_t cudaMemset(void *p, int v, size_t bytes) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (emu::capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  if (bytes && !emu::known_device_range(p, bytes)) return fail(cudaErrorInvalidValue);
  memset(p, v, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t bytes, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (bytes && !emu::known_device_range(p, bytes)) return fail(cudaErrorInvalidValue);
  return emu::enqueue(stream, [=] { memset(p, v, bytes); });
}

cudaError_t cudaDeviceSynchronize(void) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (emu::capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags) {
  (void)flags;
  *s = new CUstream_st();
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t *s) { return cudaStreamCreateWithFlags(s, 0); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if ((s && s->cap.on) || emu::capture_forbids()) return fail(cudaErrorStreamCaptureUnsupported);
  return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, enum cudaStreamCaptureMode mode) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (!s || s->cap.on) return fail(cudaErrorInvalidValue);
  s->cap = emu::Capture{};
  s->cap.on = true;
  s->cap.global = mode == cudaStreamCaptureModeGlobal;
  emu::g_capturing.push_back(s);
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *graph) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (!s || !s->cap.on) return fail(cudaErrorInvalidValue);
  for (size_t i = 0; i < emu::g_capturing.size(); ++i)
    if (emu::g_capturing[i] == s) emu::g_capturing.erase(emu::g_capturing.begin() + (long)i);
  const bool broken = s->cap.broken;
  std::vector<std::function<void()>> work = std::move(s->cap.work);
  s->cap = emu::Capture{};
  if (broken) {
    *graph = nullptr;
    return fail(cudaErrorStreamCaptureInvalidated);
  }
  *graph = new CUgraph_st{std::move(work)};
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t graph, unsigned long long flags) {
  (void)flags;
  if (!graph) return fail(cudaErrorInvalidValue);
  *exec = new CUgraphExec_st{graph->work};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> hold(emu::g_lock);
  if (!exec) return fail(cudaErrorInvalidValue);
  for (const auto &w : exec->work) emu::enqueue(stream, w);
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}

}  // extern "C"
