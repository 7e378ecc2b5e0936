// Writes new MLA latents into the paged latent cache (layouts in
// src/DeepKernels/Memory/KvCache/LatentCacheLayout.cs), bit-identical to the CPU LatentRecord.Encode.
//
// Launch: grid = (n, 1, 1), block = (128, 1, 1), no dynamic shared memory. CTA i writes latent i
// ([576] FP32 or BF16, latents_bf16) into the token record at slots[i] (slot = page * page_size +
// offset; records are contiguous, so the byte offset is slot * bytes per token).
//  * BF16 layout (fp8 = 0): 576 BF16 values, 1152 bytes, rounded to nearest even.
//  * FP8 layout (fp8 = 1): 656 bytes = 512 E4M3 c_kv | 4 FP32 scales | 64 BF16 k_pe. Each 128-value
//    group: amax over finite values, scale = max(amax, 1e-4) / 448, code = E4M3(x / scale) RNE,
//    saturating (as dk_quantize_act_fp8).
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"

extern "C" __global__ void __launch_bounds__(128)
dk_mla_cache_write(const void* latents, int latents_bf16, const int* slots, unsigned char* cache, int fp8, int n)
{
  constexpr int kLatent = 512, kRope = 64, kDim = 576;
  __shared__ float warp_amax[4];
  const int i = blockIdx.x;
  if (i >= n) return;
  const int t = threadIdx.x;
  const long long src = static_cast<long long>(i) * kDim;
  auto value = [&](int j) -> float {
    return latents_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(latents)[src + j]) : static_cast<const float*>(latents)[src + j];
  };
  const long long slot = slots[i];
  if (!fp8) {
    uint16_t* record = reinterpret_cast<uint16_t*>(cache + slot * (kDim * 2));
    for (int j = t; j < kDim; j += 128) record[j] = dk::f32_to_bf16_rn(value(j));
    return;
  }
  unsigned char* record = cache + slot * 656;
  float* scales = reinterpret_cast<float*>(record + kLatent);
  uint16_t* rope = reinterpret_cast<uint16_t*>(record + kLatent + 16);
  for (int g = 0; g < kLatent / 128; ++g) {
    const float v = value(g * 128 + t);
    float a = fabsf(v);
    if (!(a <= 3.40282347e38f)) a = 0.0f;  // NaN and infinities do not count
    a = dk::warp_reduce_max(a);
    if ((t & 31) == 0) warp_amax[t >> 5] = a;
    __syncthreads();
    const float amax = fmaxf(fmaxf(warp_amax[0], warp_amax[1]), fmaxf(warp_amax[2], warp_amax[3]));
    __syncthreads();  // warp_amax is reused by the next group
    const float scale = fmaxf(amax, 1e-4f) / 448.0f;
    if (t == 0) scales[g] = scale;
    record[g * 128 + t] = dk::f32_to_e4m3_sat(v / scale);
  }
  if (t < kRope) rope[t] = dk::f32_to_bf16_rn(value(kLatent + t));
}
