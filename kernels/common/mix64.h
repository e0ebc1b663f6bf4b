/* A 64-bit finaliser (MurmurHash3's fmix64) for open-addressing tables on both backends: spreads a
 * packed key such as (a << 32 | b) over every bit before it is masked to a slot. */
#ifndef LMF_KERNELS_COMMON_MIX64_H
#define LMF_KERNELS_COMMON_MIX64_H

#include <stdint.h>

#include "lmf_hd.h"

LMF_HD uint64_t lmf_mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

#endif
