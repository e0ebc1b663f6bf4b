/* The MeZO passes: check arguments, turn the call into one lmf_mezo_pass, track the perturbation the
 * plan carries, run the pass on the plan's backend. */
#include <string.h>

#include "mezo_plan.h"

static lmf_mezo_pass base_pass(lmf_mezo_plan_t *plan) {
  lmf_mezo_pass p;
  memset(&p, 0, sizeof p);
  p.dist = plan->dist;
  p.stochastic = plan->rounding == LMF_ROUND_STOCHASTIC;
  p.decay = 1.0f;
  p.nonce = plan->nonce & 0xffffffu;
  return p;
}

/* A pass that sets the plan's perturbation to `offset` z(seed) from its current `cur`. */
static lmf_status_t perturb_to(lmf_mezo_plan_t *plan, uint64_t seed, float delta, float offset,
                               lmf_stream_t stream) {
  lmf_mezo_pass p = base_pass(plan);
  p.seed_a = seed;
  p.add_a = delta; /* non-master: in place */
  p.seed_b = seed;
  p.m_off = offset; /* master: absolute */
  p.flags = LMF_PASS_ADD_A | (offset != 0.0f ? LMF_PASS_MASTER_B : 0u);
  lmf_status_t st = lmf_mezo_run_pass(plan, &p, NULL, NULL, stream);
  if (st != LMF_OK) return st;
  plan->nonce++;
  plan->pert_seed = offset != 0.0f ? seed : 0;
  plan->pert_offset = offset;
  return LMF_OK;
}

lmf_status_t lmf_mezo_perturb(lmf_mezo_plan_t *plan, uint64_t seed, float scale, lmf_stream_t stream) {
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_perturb: plan is NULL");
  if (!lmf_isfinite_f32(scale))
    return lmf_fail(LMF_ERR_NONFINITE, "lmf_mezo_perturb: scale is not finite");
  if (plan->pert_offset != 0.0f && plan->pert_seed != seed)
    return lmf_fail(LMF_ERR_INVALID_STATE,
                    "lmf_mezo_perturb: the plan carries a perturbation under seed %llu; restore it "
                    "(lmf_mezo_restore or lmf_mezo_step) before perturbing with seed %llu",
                    (unsigned long long)plan->pert_seed, (unsigned long long)seed);
  if (scale == 0.0f) return LMF_OK;
  float offset = (float)((double)plan->pert_offset + (double)scale);
  if (!lmf_isfinite_f32(offset))
    return lmf_fail(LMF_ERR_NONFINITE, "lmf_mezo_perturb: the total offset overflows");
  return perturb_to(plan, seed, scale, offset, stream);
}

lmf_status_t lmf_mezo_restore(lmf_mezo_plan_t *plan, lmf_stream_t stream) {
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_restore: plan is NULL");
  if (plan->pert_offset == 0.0f) return LMF_OK;
  return perturb_to(plan, plan->pert_seed, -plan->pert_offset, 0.0f, stream);
}

lmf_status_t lmf_mezo_step_args_init(lmf_mezo_step_args_t *args, size_t struct_size) {
  lmf_mezo_step_args_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_MEZO_STEP_ARGS_VERSION;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_mezo_step_args_init");
}

static lmf_status_t check_lr_wd(const char *fn, float lr, float wd) {
  if (!lmf_isfinite_f32(lr)) return lmf_fail(LMF_ERR_NONFINITE, "%s: lr is not finite", fn);
  if (!lmf_isfinite_f32(wd) || wd < 0.0f)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: weight_decay must be finite and >= 0", fn);
  if (!lmf_isfinite_f32(1.0f - lr * wd))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: the decay factor 1 - lr * weight_decay overflows", fn);
  return LMF_OK;
}

lmf_status_t lmf_mezo_step(lmf_mezo_plan_t *plan, const lmf_mezo_step_args_t *args, lmf_stream_t stream) {
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "lmf_mezo_step: plan is NULL");
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_mezo_step_args_t), sizeof(lmf_mezo_step_args_t),
                                     LMF_MEZO_STEP_ARGS_VERSION, "lmf_mezo_step: args");
  if (st != LMF_OK) return st;
  lmf_mezo_step_args_t a = *args;
  st = check_lr_wd("lmf_mezo_step", a.lr, a.weight_decay);
  if (st != LMF_OK) return st;
  if (a.perturb_next != 0 && a.perturb_next != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "lmf_mezo_step: perturb_next is %d, must be 0 or 1",
                    a.perturb_next);
  if (a.perturb_next && !lmf_isfinite_f32(a.next_scale))
    return lmf_fail(LMF_ERR_NONFINITE, "lmf_mezo_step: next_scale is not finite");
  if (plan->pert_offset != 0.0f && plan->pert_seed != a.seed)
    return lmf_fail(LMF_ERR_INVALID_STATE,
                    "lmf_mezo_step: args->seed is %llu but the plan carries a perturbation under seed "
                    "%llu", (unsigned long long)a.seed, (unsigned long long)plan->pert_seed);

  lmf_mezo_pass p = base_pass(plan);
  p.seed_a = a.seed;
  p.flags = LMF_PASS_UPDATE | LMF_PASS_WRITE_MASTER;
  if (plan->pert_offset != 0.0f) {
    p.flags |= LMF_PASS_ADD_A;
    p.add_a = -plan->pert_offset;
  }
  p.lr = a.lr;
  p.grad = a.grad;
  p.decay = 1.0f - a.lr * a.weight_decay; /* one fp32 rounding of each product, as documented */
  float next = a.perturb_next ? a.next_scale : 0.0f;
  if (next != 0.0f) {
    p.flags |= LMF_PASS_ADD_B | LMF_PASS_MASTER_B;
    p.seed_b = a.next_seed;
    p.add_b = next;
    p.m_off = next;
  }
  st = lmf_mezo_run_pass(plan, &p, a.grad_ptr, a.skipped_ptr, stream);
  if (st != LMF_OK) return st;
  plan->nonce++;
  plan->pert_seed = next != 0.0f ? a.next_seed : 0;
  plan->pert_offset = next;
  return LMF_OK;
}

lmf_status_t lmf_mezo_multi_args_init(lmf_mezo_multi_args_t *args, size_t struct_size) {
  lmf_mezo_multi_args_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_MEZO_MULTI_ARGS_VERSION;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_mezo_multi_args_init");
}

lmf_status_t lmf_mezo_update_multi(lmf_mezo_plan_t *plan, const lmf_mezo_multi_args_t *args,
                                   lmf_stream_t stream) {
  const char *fn = "lmf_mezo_update_multi";
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: plan is NULL", fn);
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_mezo_multi_args_t), sizeof(lmf_mezo_multi_args_t),
                                     LMF_MEZO_MULTI_ARGS_VERSION, "lmf_mezo_update_multi: args");
  if (st != LMF_OK) return st;
  if (args->num_seeds < 1 || args->num_seeds > LMF_MEZO_MAX_SEEDS)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: num_seeds is %zu, must be 1 to %d", fn, args->num_seeds,
                    LMF_MEZO_MAX_SEEDS);
  if (!args->seeds) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: seeds is NULL", fn);
  if (!args->coeffs && !args->coeffs_ptr)
    return lmf_fail(LMF_ERR_NULL_POINTER, "%s: both coeffs and coeffs_ptr are NULL", fn);
  st = check_lr_wd(fn, args->lr, args->weight_decay);
  if (st != LMF_OK) return st;
  if (plan->pert_offset != 0.0f)
    return lmf_fail(LMF_ERR_INVALID_STATE, "%s: the plan is perturbed (seed %llu); restore it first", fn,
                    (unsigned long long)plan->pert_seed);
  lmf_mezo_multi_pass m;
  memset(&m, 0, sizeof m);
  m.num_seeds = (int32_t)args->num_seeds;
  m.dist = plan->dist;
  m.lr = args->lr;
  m.decay = 1.0f - args->lr * args->weight_decay;
  m.nonce = plan->nonce & 0xffffffu;
  m.stochastic = plan->rounding == LMF_ROUND_STOCHASTIC;
  for (size_t j = 0; j < args->num_seeds; ++j) {
    m.seeds[j] = args->seeds[j];
    m.coeffs[j] = args->coeffs_ptr ? 0.0f : args->coeffs[j];
  }
  if (plan->ctx->backend == LMF_BACKEND_CUDA)
    st = lmf_cuda_mezo_multi(plan->ctx, plan->d_tensors, plan->d_chunks, plan->num_chunks, &m,
                             args->coeffs_ptr, args->skipped_ptr, stream);
  else
    st = lmf_cpu_mezo_multi(plan->ctx, plan->tensors, plan->chunks, plan->num_chunks, &m,
                            args->coeffs_ptr, args->skipped_ptr);
  if (st == LMF_OK) plan->nonce++;
  return st;
}

lmf_status_t lmf_mezo_fill_z(lmf_context_t *ctx, int32_t dist, uint64_t seed, uint32_t uid,
                             int64_t global_offset, int64_t n, float *out, lmf_stream_t stream) {
  const char *fn = "lmf_mezo_fill_z";
  if (!ctx) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: ctx is NULL", fn);
  if (!out) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: out is NULL", fn);
  if (dist != LMF_MEZO_GAUSSIAN && dist != LMF_MEZO_RADEMACHER)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: dist is %d; use LMF_MEZO_GAUSSIAN (0) or "
                    "LMF_MEZO_RADEMACHER (1)", fn, dist);
  if (n < 1 || n > (INT64_MAX >> 3))
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: n is %lld, must be >= 1 and fit the address space", fn,
                    (long long)n);
  if (global_offset < 0 || global_offset > (INT64_MAX >> 2) - n)
    return lmf_fail(LMF_ERR_INVALID_SIZE, "%s: global_offset %lld is negative or overflows with n", fn,
                    (long long)global_offset);
  if (ctx->backend == LMF_BACKEND_CUDA)
    return lmf_cuda_mezo_fill_z(ctx, dist, seed, uid, global_offset, n, out, stream);
  return lmf_cpu_mezo_fill_z(ctx, dist, seed, uid, global_offset, n, out);
}

void lmf_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]) {
  if (!counter || !key || !out) return;
  lmf_u32x4 c = {counter[0], counter[1], counter[2], counter[3]};
  lmf_u32x4 r = lmf_philox4x32_10_impl(c, key[0], key[1]);
  out[0] = r.x;
  out[1] = r.y;
  out[2] = r.z;
  out[3] = r.w;
}
