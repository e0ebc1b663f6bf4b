/* The per-element arithmetic of every MeZO pass, shared by the CPU backend and the CUDA kernels so
 * both round identically (fp32, no FMA contraction, one rounding per stored value). */
#ifndef LMF_COMMON_MEZO_MATH_H
#define LMF_COMMON_MEZO_MATH_H

#include "half_convert.h"
#include "zgen.h"

/* Flags of a pass. */
enum {
  LMF_PASS_ADD_A = 1u,    /* non-master: x += add_a z_a           (perturb, or restore in a step) */
  LMF_PASS_UPDATE = 2u,   /* x = x * decay (decay tensors) - step z_a     (master: on the master) */
  LMF_PASS_ADD_B = 4u,    /* non-master: x += add_b z_b           (the next step's perturbation) */
  LMF_PASS_MASTER_B = 8u, /* master: working = round(master + m_off z_b) instead of round(master) */
  LMF_PASS_WRITE_MASTER = 16u /* the pass changes master copies (an update) */
};

/* Everything a pass needs besides the tensors; built on the host, passed by value to kernels. */
typedef struct lmf_mezo_pass {
  uint64_t seed_a;  /* z_a: the perturbation being added, restored, and stepped along */
  uint64_t seed_b;  /* z_b: the next perturbation (non-master) / the working-copy offset (master) */
  float add_a;
  float add_b;
  float m_off;
  float lr;         /* step = lr * g, computed where g is read (host value or device scalar) */
  float grad;       /* g when no grad pointer is given */
  float decay;      /* 1 - lr wd, rounded once on the host */
  uint32_t flags;
  uint32_t nonce;   /* stochastic-rounding pass nonce (low 24 bits) */
  int32_t dist;     /* 0 Gaussian, 1 Rademacher */
  int32_t stochastic; /* 1: stochastic rounding of 16-bit tensors without a master */
} lmf_mezo_pass;

/* The arithmetic on one non-master element. step is lr * g (0 when the update is skipped). */
LMF_HD float lmf_mezo_elem(float x, float za, float zb, uint32_t flags, float add_a, float add_b,
                           float decay, float step, int decay_tensor) {
  if (flags & LMF_PASS_ADD_A) x = LMF_FADD(x, LMF_FMUL(add_a, za));
  if (flags & LMF_PASS_UPDATE) {
    if (decay_tensor) x = LMF_FMUL(x, decay);
    if (step != 0.0f) x = LMF_FSUB(x, LMF_FMUL(step, za));
  }
  if (flags & LMF_PASS_ADD_B) x = LMF_FADD(x, LMF_FMUL(add_b, zb));
  return x;
}

/* The update of one master element (restore is never needed: masters are never perturbed). */
LMF_HD float lmf_mezo_master_elem(float m, float za, uint32_t flags, float decay, float step,
                                  int decay_tensor) {
  if (flags & LMF_PASS_UPDATE) {
    if (decay_tensor) m = LMF_FMUL(m, decay);
    if (step != 0.0f) m = LMF_FSUB(m, LMF_FMUL(step, za));
  }
  return m;
}

/* The working copy written from a (possibly updated) master. */
LMF_HD float lmf_mezo_working_from_master(float m, float zb, uint32_t flags, float m_off) {
  return (flags & LMF_PASS_MASTER_B) ? LMF_FADD(m, LMF_FMUL(m_off, zb)) : m;
}

/* Does this pass need z_a / z_b for non-master and master tensors? */
LMF_HD int lmf_pass_needs_za(uint32_t flags, float step) {
  return (flags & LMF_PASS_ADD_A) || ((flags & LMF_PASS_UPDATE) && step != 0.0f);
}

#endif
