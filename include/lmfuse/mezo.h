/*
 * lmfuse MeZO: in-place zeroth-order fine-tuning (Malladi et al., 2023), with z regenerated from a
 * seed on every pass and never stored.
 *
 * The reference step, for one seed s and perturbation size eps:
 *   theta += eps z(s); L+ = loss      theta -= 2 eps z(s); L- = loss      theta += eps z(s)
 *   g = (L+ - L-) / (2 eps);          theta -= lr (g z(s) + wd theta)    (wd only on decay tensors)
 *
 * Building blocks, each ONE pass (one multi-tensor launch on CUDA) over every tensor of a plan:
 *   lmf_mezo_perturb      theta += scale z(seed)
 *   lmf_mezo_step         restore whatever perturbation the plan carries + weight decay + update,
 *                         optionally + the next step's perturbation (the 2-pass-per-step schedule)
 *   lmf_mezo_update_multi theta = theta (1 - lr wd) - lr sum_j c_j z(s_j)   (n-SPSA, per-rank seeds)
 *   lmf_mezo_restore      undo the current perturbation (before evaluation or checkpointing)
 * and lmf_mezo_train_step, which runs a whole step around the caller's loss callback.
 *
 * z is a pure function of (seed, tensor uid, global element index i): Philox4x32-10 keyed by the seed
 * (key = low, high 32 bits), domain word 0x5a000000.
 *   Gaussian: counter = (low32(i/4), high32(i/4), uid, domain); words (w0,w1) and (w2,w3) of the output
 *   feed Box-Muller (cos for the even element, sin for the odd one) through lmfuse's own log/sin/cos,
 *   so CPU and GPU agree bit for bit.
 *   Rademacher: counter = (low32(i/128), high32(i/128), uid, domain); the element is -1 if bit i%32 of
 *   word (i%128)/32 is set, else +1 (exactly). One Philox output serves 128 elements.
 * z is therefore identical on every pass, backend, launch geometry, sharding (pass the shard's
 * global_offset) and tensor order. docs/mezo.md gives the full definition.
 *
 * Arithmetic is fp32 with one rounding per stored value. Precision modes for 16-bit parameters:
 *   - plain (round to nearest even): each pass rounds to 16 bits, so restore is not exact;
 *   - stochastic rounding (config.rounding = LMF_ROUND_STOCHASTIC): unbiased, random bits from a
 *     separate Philox domain, fresh per pass;
 *   - an fp32 master copy (tensor.master != NULL): the master holds the parameters and is never
 *     perturbed; every pass writes the 16-bit working copy as round(master + offset z), so restore is
 *     exact and updates accumulate in fp32.
 *
 * The plan remembers, on the host, the perturbation it currently carries (seed and total offset), so a
 * step restores exactly what was added. A plan is not thread-safe: serialise the calls on one plan. All calls enqueue on `stream` (CUDA) and return; none syncs the
 * host, allocates, or frees. Pointers are device pointers on a CUDA context and host pointers on a CPU
 * context.
 */
#ifndef LMFUSE_MEZO_H
#define LMFUSE_MEZO_H

#include "lmfuse/lmfuse.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum lmf_mezo_dist {
  LMF_MEZO_GAUSSIAN = 0,  /* z ~ N(0, 1) */
  LMF_MEZO_RADEMACHER = 1 /* z = +-1 with probability 1/2 each */
} lmf_mezo_dist_t;

typedef enum lmf_rounding {
  LMF_ROUND_NEAREST = 0,   /* round to nearest, ties to even */
  LMF_ROUND_STOCHASTIC = 1 /* round up with probability (x - down) / (up - down) */
} lmf_rounding_t;

/* Most seeds one lmf_mezo_update_multi call takes. */
#define LMF_MEZO_MAX_SEEDS 64

/* One parameter tensor (or one shard of it). A fixed-size record: the reserved field must be 0. */
typedef struct lmf_mezo_tensor {
  void *data;            /* the parameters, `numel` elements of `dtype`, contiguous */
  float *master;         /* optional fp32 master copy of the same `numel` elements, or NULL */
  int64_t numel;         /* elements in this tensor or shard, >= 1 */
  int64_t global_offset; /* index of data[0] within the logical tensor (0 unless sharded), >= 0 */
  uint32_t uid;          /* stable id of the logical tensor: keys z together with the index */
  int32_t dtype;         /* LMF_DTYPE_F32, LMF_DTYPE_F16 or LMF_DTYPE_BF16 */
  int32_t weight_decay;  /* 1: weight decay applies; 0: it does not (biases, layer norms) */
  int32_t reserved;      /* must be 0 */
} lmf_mezo_tensor_t;

#define LMF_MEZO_CONFIG_VERSION 1u

typedef struct lmf_mezo_config {
  size_t struct_size; /* sizeof(lmf_mezo_config_t) */
  uint32_t version;   /* LMF_MEZO_CONFIG_VERSION */
  int32_t dist;       /* lmf_mezo_dist_t; default LMF_MEZO_GAUSSIAN */
  int32_t rounding;   /* lmf_rounding_t for 16-bit tensors without a master; default NEAREST */
} lmf_mezo_config_t;

#define LMF_MEZO_CONFIG_INIT \
  { sizeof(lmf_mezo_config_t), LMF_MEZO_CONFIG_VERSION, LMF_MEZO_GAUSSIAN, LMF_ROUND_NEAREST }

typedef struct lmf_mezo_plan lmf_mezo_plan_t;

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_mezo_config_init(lmf_mezo_config_t *config, size_t struct_size);

/* Builds a plan over `num_tensors` tensors (0 is allowed: every pass is then a no-op). Checks every
 * descriptor (NULL data, numel < 1, offsets that overflow, unknown dtype, a master on an fp32 tensor is
 * allowed but pointless, overlapping tensors or masters) and copies the table to the backend once. The
 * tensors' memory stays the caller's and must outlive the plan. config may be NULL for defaults. */
LMF_API lmf_status_t lmf_mezo_plan_create(lmf_mezo_plan_t **out, lmf_context_t *ctx,
                                          const lmf_mezo_tensor_t *tensors, size_t num_tensors,
                                          const lmf_mezo_config_t *config);
/* NULL is a no-op. Waits for nothing: the caller must not destroy a plan with passes in flight. */
LMF_API void lmf_mezo_plan_destroy(lmf_mezo_plan_t *plan);
/* Total elements over all tensors of the plan. */
LMF_API lmf_status_t lmf_mezo_plan_numel(const lmf_mezo_plan_t *plan, int64_t *numel);
/* The perturbation the plan carries now: *seed and *offset (0 when unperturbed). */
LMF_API lmf_status_t lmf_mezo_plan_perturbation(const lmf_mezo_plan_t *plan, uint64_t *seed,
                                                float *offset);

/* theta += scale z(seed). For tensors with a master the master is untouched and the working copy
 * becomes round(master + offset z(seed)), offset being the plan's running total. If the plan already
 * carries a perturbation under another seed, fails with LMF_ERR_INVALID_STATE. */
LMF_API lmf_status_t lmf_mezo_perturb(lmf_mezo_plan_t *plan, uint64_t seed, float scale,
                                      lmf_stream_t stream);
/* Removes the plan's current perturbation (a no-op if it carries none). */
LMF_API lmf_status_t lmf_mezo_restore(lmf_mezo_plan_t *plan, lmf_stream_t stream);

#define LMF_MEZO_STEP_ARGS_VERSION 1u

/* One fused pass: restore + weight decay + update [+ next perturbation].
 *   x  = theta - offset z(seed)                 restore (offset: what the plan carries under `seed`)
 *   x  = x * (1 - lr wd)                        decay tensors only; the factor is computed once in fp32
 *   x  = x - (lr g) z(seed)                     the update
 *   x  = x + next_scale z(next_seed)            if perturb_next
 *   theta = round(x)                            (master mode: master = x before the next term)
 * If g is not finite the update and decay are skipped (restore and next perturbation still happen) and
 * *skipped_ptr, if given, is set to 1 (else 0). */
typedef struct lmf_mezo_step_args {
  size_t struct_size;     /* sizeof(lmf_mezo_step_args_t) */
  uint32_t version;       /* LMF_MEZO_STEP_ARGS_VERSION */
  uint64_t seed;          /* seed of z_t; must match the plan's seed if it is perturbed */
  float grad;             /* projected gradient g, used when grad_ptr is NULL */
  float lr;               /* learning rate, finite */
  float weight_decay;     /* finite, >= 0 */
  int32_t perturb_next;   /* 1: add next_scale z(next_seed) in the same pass */
  uint64_t next_seed;
  float next_scale;
  const float *grad_ptr;  /* optional: g in backend memory (device memory on CUDA): no host sync */
  int32_t *skipped_ptr;   /* optional: 1 if the update was skipped; host memory when grad_ptr is NULL,
                             else the same kind of memory as grad_ptr */
} lmf_mezo_step_args_t;

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_mezo_step_args_init(lmf_mezo_step_args_t *args, size_t struct_size);
LMF_API lmf_status_t lmf_mezo_step(lmf_mezo_plan_t *plan, const lmf_mezo_step_args_t *args,
                                   lmf_stream_t stream);

#define LMF_MEZO_MULTI_ARGS_VERSION 1u

/* theta = theta (1 - lr wd) - lr sum_j c_j z(seeds[j]), in one pass; the plan must be unperturbed.
 * For n-SPSA pass c_j = g_j / n. If any c_j is not finite nothing changes and *skipped_ptr is 1. */
typedef struct lmf_mezo_multi_args {
  size_t struct_size;     /* sizeof(lmf_mezo_multi_args_t) */
  uint32_t version;       /* LMF_MEZO_MULTI_ARGS_VERSION */
  size_t num_seeds;       /* 1 .. LMF_MEZO_MAX_SEEDS */
  const uint64_t *seeds;  /* host array of num_seeds seeds */
  const float *coeffs;    /* host array of num_seeds coefficients, or NULL when coeffs_ptr is given */
  const float *coeffs_ptr;/* optional: coefficients in backend memory (device memory on CUDA) */
  float lr;
  float weight_decay;
  int32_t *skipped_ptr;   /* optional, as in lmf_mezo_step_args_t */
} lmf_mezo_multi_args_t;

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_mezo_multi_args_init(lmf_mezo_multi_args_t *args, size_t struct_size);
LMF_API lmf_status_t lmf_mezo_update_multi(lmf_mezo_plan_t *plan, const lmf_mezo_multi_args_t *args,
                                           lmf_stream_t stream);

/* Writes z(seed, uid, global_offset + k) for k in [0, n) to out (fp32, backend memory): the exact
 * values every pass uses, so callers and tests can check them. */
LMF_API lmf_status_t lmf_mezo_fill_z(lmf_context_t *ctx, int32_t dist, uint64_t seed, uint32_t uid,
                                     int64_t global_offset, int64_t n, float *out,
                                     lmf_stream_t stream);

/* ---- Step driver ------------------------------------------------------------------------------ */

/* Evaluates the model with its parameters as they are now and writes the loss to *loss. Returns 0 on
 * success; anything else aborts the step (the plan is restored, LMF_ERR_CALLBACK is returned). On CUDA
 * the callback must order its work after `stream` (e.g. run on it). */
typedef int (*lmf_mezo_loss_fn)(void *user_data, float *loss);

#define LMF_MEZO_DRIVER_ARGS_VERSION 1u

typedef struct lmf_mezo_driver_args {
  size_t struct_size;   /* sizeof(lmf_mezo_driver_args_t) */
  uint32_t version;     /* LMF_MEZO_DRIVER_ARGS_VERSION */
  uint64_t seed;        /* this step's seed */
  float eps;            /* perturbation size, finite, > 0 */
  float lr;
  float weight_decay;
  int32_t perturb_next; /* 1: fuse the next step's +eps z(next_seed) into this step's update pass,
                           leaving the plan perturbed (2 passes per step); 0: 3 passes per step */
  uint64_t next_seed;
} lmf_mezo_driver_args_t;

typedef struct lmf_mezo_step_result {
  float loss_plus;  /* loss at theta + eps z */
  float loss_minus; /* loss at theta - eps z */
  float grad;       /* (loss_plus - loss_minus) / (2 eps) */
  int32_t skipped;  /* 1 if grad was not finite and the update was skipped */
} lmf_mezo_step_result_t;

/* Defaults into the first struct_size bytes (pass sizeof *ptr); see lmfuse.h. */
LMF_API lmf_status_t lmf_mezo_driver_args_init(lmf_mezo_driver_args_t *args, size_t struct_size);
/* One MeZO step: [perturb +eps unless the plan already carries +eps z(seed)], loss, perturb -2 eps,
 * loss, fused restore + update [+ next perturbation]. result may be NULL. */
LMF_API lmf_status_t lmf_mezo_train_step(lmf_mezo_plan_t *plan, const lmf_mezo_driver_args_t *args,
                                         lmf_mezo_loss_fn loss_fn, void *user_data,
                                         lmf_mezo_step_result_t *result, lmf_stream_t stream);

/* ---- Shared math, exported for tests and bindings --------------------------------------------- */

/* Philox4x32-10: out[0..3] = Philox(counter[0..3], key[0..1]). */
LMF_API void lmf_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

#ifdef __cplusplus
}
#endif

#endif /* LMFUSE_MEZO_H */
