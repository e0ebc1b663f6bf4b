// How many kernels one decoding step launches (label cuda-emu): the launch count is what a B = 1 step
// pays on a device (each launch costs microseconds), so the plans docs/logits.md describes are pinned
// here, counted by the CPU emulator of CUDA. B = 1, V = 128256, K = 3, T 0.8, top-p 0.9 (the bench's
// step); tokens only, with each row's LSE and the token's log-prob, or (the one-launch step) with the
// log-prob rows too; and that step's grid-wide barriers, which cost a B = 1 step like launches do.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <vector>

#include "lg_common.h"
#include "lmf_test_util.h"

extern "C" unsigned long long lmf_emu_launches(void);
extern "C" unsigned long long lmf_emu_grid_barriers(void);
extern "C" unsigned long long lmf_emu_take_max_blocks(void);

namespace {

enum Path { SEPARATE, LIST, COOP, AUTO };
/* What the step writes beside the tokens: nothing, each row's LSE and the token's log-prob, or those
 * and the log-prob rows. */
enum Outs { TOKENS, WITH_LSE, WITH_LOGPROBS };

/* Kernel launches of one lmf_logits_combine call (the copies around it launch none) on a path: the
 * separate kernels, list mode, the one-launch step (LMF_LOGITS_COOP=1, where the grid fits), or the
 * library's choice (both variables unset); and in *barriers the grid-wide barriers its cooperative
 * launches took. */
unsigned long long launches_per_step(Path path, Outs outs, unsigned long long *barriers = nullptr,
                                     int32_t top_k = 0) {
  if (path == AUTO) unsetenv("LMF_LOGITS_LIST");
  else setenv("LMF_LOGITS_LIST", path == LIST ? "1" : "0", 1);
  if (path == AUTO) unsetenv("LMF_LOGITS_COOP");
  else setenv("LMF_LOGITS_COOP", path == COOP ? "1" : "0", 1);
  const int32_t B = 1, V = 128256;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CUDA, 0);
  if (!ctx) {
    ADD_FAILURE() << "no emulated CUDA context";
    return 0;
  }
  std::vector<float> z((size_t)B * V);
  uint64_t s = 5;
  lg_models ms;
  lg_models_init(&ms);
  static const int32_t dtypes[3] = {LMF_DTYPE_BF16, LMF_DTYPE_F16, LMF_DTYPE_F32};
  static const float coeff[3] = {1.0f, 1.0f, -1.0f};
  for (int k = 0; k < 3; ++k) {
    for (float &v : z) v = (float)(2.0 * lt_normal(&s));
    lg_models_add(&ms, dtypes[k], z.data(), B, V, coeff[k]);
  }
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  p.top_k = top_k;
  const uint64_t seed = 11;
  p.seeds = &seed;
  lg_out out;
  EXPECT_TRUE(lg_out_alloc(&out, B, V, V, 0));
  if (outs != WITH_LOGPROBS) out.o.logprobs = nullptr;
  if (outs == TOKENS) out.o.lse = out.o.token_logprob = nullptr;
  const unsigned long long before = lmf_emu_launches(), bar_before = lmf_emu_grid_barriers();
  EXPECT_EQ(lg_combine(ctx, ms.m, ms.K, &p, &out), LMF_OK);
  const unsigned long long n = lmf_emu_launches() - before;
  if (barriers) *barriers = lmf_emu_grid_barriers() - bar_before;
  lg_out_free(&out);
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
  unsetenv("LMF_LOGITS_LIST");
  unsetenv("LMF_LOGITS_COOP");
  return n;
}

int sms() {
  const char *e = getenv("LMF_EMU_SMS");
  return e ? atoi(e) : 4;
}

/* Without list mode: init, combine, merge, 4 x (histogram, merge) and the tie pass and cut for
 * top-p, sample, outputs; the LSE adds its pass and merge. */
TEST(LogitsCudaEmu, LaunchesPerStepSeparateKernels) {
  EXPECT_EQ(launches_per_step(SEPARATE, TOKENS), 15ull);
  EXPECT_EQ(launches_per_step(SEPARATE, WITH_LSE), 17ull);
}

/* List mode. At one chunk per block (132 SMs): init, combine (merge folded in), window (the last
 * block of the row does the list cut, the LSE, the sample and the outputs). At 4 chunks per block
 * (4 SMs) the combine pass fills the lists: init, combine (merge folded in), and with top-p alone
 * k_listcut_flat (the list cut of the combine's lists with the outputs, and the flat rows' bins and
 * pick). With top-k 40 too, a window pass per cut at 132 SMs; at 4, each cut takes the list cut of
 * the combine's lists (the second finds none left: the first cut took them), the second combine
 * pass of the rows it leaves (window classification), window, list cut: 10. */
TEST(LogitsCudaEmu, LaunchesPerStepListMode) {
  EXPECT_EQ(launches_per_step(LIST, TOKENS), 3ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(launches_per_step(LIST, WITH_LSE), 3ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(launches_per_step(LIST, TOKENS, nullptr, 40), sms() >= 32 ? 4ull : 10ull)
      << "LMF_EMU_SMS " << sms();
}

/* LMF_LOGITS_COOP=1: one cooperative launch (k_coop) where the row's 63 chunk blocks fit the device at
 * once (the emulator holds 4 blocks per SM: from 16 SMs), else the separate kernels. Its grid-wide
 * barriers: two without log-prob rows (the row's last block cuts the crossing bin after a ticket),
 * four with them (every block needs the cut and the LSE). */
TEST(LogitsCudaEmu, LaunchesPerStepOneLaunch) {
  const bool fits = 63 <= 4 * sms();
  unsigned long long bar[3] = {0, 0, 0};
  EXPECT_EQ(launches_per_step(COOP, TOKENS, &bar[0]), fits ? 1ull : 15ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(launches_per_step(COOP, WITH_LSE, &bar[1]), fits ? 1ull : 17ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(launches_per_step(COOP, WITH_LOGPROBS, &bar[2]), fits ? 1ull : 18ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(bar[0], fits ? 2ull : 0ull);
  EXPECT_EQ(bar[1], fits ? 2ull : 0ull);
  EXPECT_EQ(bar[2], fits ? 4ull : 0ull);
}

/* The library's choice (neither variable set): the one launch where the row's 63 chunk blocks fit the
 * device at once (from 16 SMs), else, at 4 SMs, list mode, whose combine pass walks 4 chunks a block
 * and fills the lists (lstream): the separate kernels' 15 launches nowhere at B = 1. With top-k (no
 * one launch), list mode only where its combine fills the lists (4 SMs), the separate kernels where
 * each combine block has one chunk (132 SMs: list mode's window pass would be 3 launches there). */
TEST(LogitsCudaEmu, LaunchesPerStepLibraryChoice) {
  const bool fits = 63 <= 4 * sms();
  unsigned long long bar = 0;
  EXPECT_EQ(launches_per_step(AUTO, TOKENS, &bar), fits ? 1ull : 3ull) << "LMF_EMU_SMS " << sms();
  EXPECT_EQ(bar, fits ? 2ull : 0ull);
  EXPECT_EQ(launches_per_step(AUTO, WITH_LSE), fits ? 1ull : 3ull) << "LMF_EMU_SMS " << sms();
  const int gx = 4 * sms() < 63 ? 4 * sms() : 63;  /* the combine's blocks a row (4 an SM) */
  const bool streams = (63 + gx - 1) / gx >= 4;    /* its chunks a block: list mode's lists fill */
  EXPECT_EQ(launches_per_step(AUTO, TOKENS, nullptr, 40),
            launches_per_step(streams ? LIST : SEPARATE, TOKENS, nullptr, 40))
      << "LMF_EMU_SMS " << sms();
  EXPECT_NE(launches_per_step(LIST, TOKENS, nullptr, 40), launches_per_step(SEPARATE, TOKENS, nullptr, 40));
}

/* The separate kernels' grids fill one wave (chunk_gx in kernels/logits.cu): at B = 3 with 16 chunks a
 * row, on 4 SMs of 4 blocks each (16 places), every chunk kernel takes 5 blocks a row, 15 in all; the
 * earlier rule, ceil(16 / 3) = 6 a row, made 18: a second wave of 2 blocks, each with a full block's
 * chunks. On more SMs the row's 16 chunks cap the grid (48 blocks). */
TEST(LogitsCudaEmu, ChunkGridsFillOneWave) {
  setenv("LMF_LOGITS_LIST", "0", 1);
  setenv("LMF_LOGITS_COOP", "0", 1);
  const int32_t B = 3, V = 16 * 2048;
  lmf_context_t *ctx = lt_context(LMF_BACKEND_CUDA, 0);
  ASSERT_NE(ctx, nullptr);
  std::vector<float> z((size_t)B * V);
  uint64_t s = 7;
  for (float &v : z) v = (float)(2.0 * lt_normal(&s));
  lg_models ms;
  lg_models_init(&ms);
  lg_models_add(&ms, LMF_DTYPE_F32, z.data(), B, V, 1.0f);
  lmf_logits_params_t p;
  lg_params(&p, B);
  p.temperature = 0.8f;
  p.top_p = 0.9f;
  const uint64_t seeds[B] = {1, 2, 3};
  p.seeds = seeds;
  lg_out out;
  ASSERT_TRUE(lg_out_alloc(&out, B, V, V, 0));
  out.o.logprobs = nullptr;
  (void)lmf_emu_take_max_blocks();
  EXPECT_EQ(lg_combine(ctx, ms.m, ms.K, &p, &out), LMF_OK);
  const unsigned long long most = lmf_emu_take_max_blocks();
  const unsigned long long places = 4ull * (unsigned long long)sms(), all = (unsigned long long)B * 16ull;
  EXPECT_LE(most, places) << "a grid past one wave, LMF_EMU_SMS " << sms();
  if (all <= places) EXPECT_EQ(most, all) << "LMF_EMU_SMS " << sms();
  else EXPECT_GT(most, places - (unsigned long long)B) << "a wave left emptier than B - 1 places";
  lg_out_free(&out);
  lg_models_free(&ms);
  lmf_context_destroy(ctx);
  unsetenv("LMF_LOGITS_LIST");
  unsetenv("LMF_LOGITS_COOP");
}

}  // namespace
