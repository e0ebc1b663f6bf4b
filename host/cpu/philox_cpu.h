/* Batched Philox4x32-10 for the CPU backend: SIMD versions (AVX-512, AVX2) chosen at run time, and the
 * portable one. All give exactly lmf_philox4x32_10_impl's words. */
#ifndef LMF_CPU_PHILOX_CPU_H
#define LMF_CPU_PHILOX_CPU_H

#include <stdint.h>

/* Groups one call produces at most, and the stride between its four output rows. */
#define LMF_PHILOX_BATCH 80

/* out[j * LMF_PHILOX_BATCH + k] = word j of Philox(counter = (g0 + k (64-bit), uid, domain),
 * key = seed) for k in [0, ng), ng <= LMF_PHILOX_BATCH. The SIMD paths may also fill the rows past ng,
 * up to a whole vector (never past LMF_PHILOX_BATCH): rows must have LMF_PHILOX_BATCH entries. */
void lmf_cpu_philox_rows(uint64_t seed, uint32_t uid, uint32_t domain, uint64_t g0, int ng,
                         uint32_t *out);

#endif
