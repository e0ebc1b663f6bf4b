/* lmf_mezo_train_step: one whole MeZO step around the caller's loss callback. */
#include <string.h>

#include "mezo_plan.h"

lmf_status_t lmf_mezo_driver_args_init(lmf_mezo_driver_args_t *args, size_t struct_size) {
  lmf_mezo_driver_args_t d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.version = LMF_MEZO_DRIVER_ARGS_VERSION;
  d.eps = 1e-3f;
  return lmf_init_struct(args, struct_size, &d, sizeof d, "lmf_mezo_driver_args_init");
}

/* Calls the loss; on failure restores the plan and reports. */
static lmf_status_t eval_loss(lmf_mezo_plan_t *plan, lmf_mezo_loss_fn fn, void *user, float *loss,
                              lmf_stream_t stream) {
  int rc = fn(user, loss);
  if (rc == 0) return LMF_OK;
  lmf_status_t st = lmf_mezo_restore(plan, stream);
  if (st != LMF_OK) return st;
  return lmf_fail(LMF_ERR_CALLBACK, "lmf_mezo_train_step: the loss callback returned %d; parameters "
                  "were restored and not updated", rc);
}

lmf_status_t lmf_mezo_train_step(lmf_mezo_plan_t *plan, const lmf_mezo_driver_args_t *args,
                                 lmf_mezo_loss_fn loss_fn, void *user_data,
                                 lmf_mezo_step_result_t *result, lmf_stream_t stream) {
  const char *fn = "lmf_mezo_train_step";
  if (!plan) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: plan is NULL", fn);
  if (!loss_fn) return lmf_fail(LMF_ERR_NULL_POINTER, "%s: loss_fn is NULL", fn);
  lmf_status_t st = lmf_check_struct(args, sizeof(lmf_mezo_driver_args_t),
                                     sizeof(lmf_mezo_driver_args_t), LMF_MEZO_DRIVER_ARGS_VERSION,
                                     "lmf_mezo_train_step: args");
  if (st != LMF_OK) return st;
  const lmf_mezo_driver_args_t a = *args;
  if (!lmf_isfinite_f32(a.eps) || a.eps <= 0.0f)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: eps must be finite and > 0", fn);
  if (!lmf_isfinite_f32(-2.0f * a.eps))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: -2 * eps overflows", fn);
  if (!lmf_isfinite_f32(a.lr)) return lmf_fail(LMF_ERR_NONFINITE, "%s: lr is not finite", fn);
  if (!lmf_isfinite_f32(a.weight_decay) || a.weight_decay < 0.0f)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: weight_decay must be finite and >= 0", fn);
  if (!lmf_isfinite_f32(1.0f - a.lr * a.weight_decay))
    return lmf_fail(LMF_ERR_NONFINITE, "%s: the decay factor 1 - lr * weight_decay overflows", fn);
  if (a.perturb_next != 0 && a.perturb_next != 1)
    return lmf_fail(LMF_ERR_INVALID_ARGUMENT, "%s: perturb_next is %d, must be 0 or 1", fn,
                    a.perturb_next);
  /* Either unperturbed, or carrying exactly +eps z(seed) from the previous step's fused pass. */
  int carried = plan->pert_offset != 0.0f;
  if (carried && (plan->pert_seed != a.seed || plan->pert_offset != a.eps))
    return lmf_fail(LMF_ERR_INVALID_STATE,
                    "%s: the plan carries %g z(seed %llu), not +eps z(seed %llu)", fn,
                    (double)plan->pert_offset, (unsigned long long)plan->pert_seed,
                    (unsigned long long)a.seed);

  if (!carried) {
    st = lmf_mezo_perturb(plan, a.seed, a.eps, stream);
    if (st != LMF_OK) return st;
  }
  float lp = 0.0f, lm = 0.0f;
  st = eval_loss(plan, loss_fn, user_data, &lp, stream);
  if (st != LMF_OK) return st;
  st = lmf_mezo_perturb(plan, a.seed, -2.0f * a.eps, stream);
  if (st != LMF_OK) return st;
  st = eval_loss(plan, loss_fn, user_data, &lm, stream);
  if (st != LMF_OK) return st;

  float g = (lp - lm) / (2.0f * a.eps);
  lmf_mezo_step_args_t s;
  lmf_mezo_step_args_init(&s, sizeof s);
  s.seed = a.seed;
  s.grad = g;
  s.lr = a.lr;
  s.weight_decay = a.weight_decay;
  s.perturb_next = a.perturb_next;
  s.next_seed = a.next_seed;
  s.next_scale = a.eps;
  int32_t skipped = 0;
  s.skipped_ptr = &skipped; /* g is a host value, so the flag is host memory on every backend */
  st = lmf_mezo_step(plan, &s, stream);
  if (st != LMF_OK) return st;
  if (result) {
    result->loss_plus = lp;
    result->loss_minus = lm;
    result->grad = g;
    result->skipped = skipped;
  }
  return LMF_OK;
}
