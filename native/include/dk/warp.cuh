// Warp-level reductions built on shuffles (all 32 lanes must take part).
#pragma once
#include "dk/common.cuh"

namespace dk {

DK_DEVICE float warp_reduce_max(float v)
{
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xFFFFFFFFu, v, offset));
  return v;
}

DK_DEVICE float warp_reduce_sum(float v)
{
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xFFFFFFFFu, v, offset);
  return v;
}

}  // namespace dk
