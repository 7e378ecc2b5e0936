// Block-scaled FP8 weight quantization for the GEMM's B operand (WeightQuantization.Quantize on
// the CPU, bit for bit): one scale per 128x128 block, scale = max(amax, 1e-4) / 448 with amax
// over the block's finite values (a partial edge block counts only its existing elements); with
// UE8M0 scales it is rounded up to a power of two and stored as its exponent byte. Codes are
// E4M3(w / scale), round to nearest even, saturating; NaN -> 0x7F|sign.
//
// Launch: grid = (ceil(k/128), ceil(n/128), 1), block = (256, 1, 1), no dynamic shared memory.
// CTA (bx, by) owns the block of rows by*128.. and columns bx*128..; thread t covers column
// t % 128 of rows t / 128, t / 128 + 2, ... (two passes: amax, then quantize).
// w: [n, k] FP32 or BF16 (w_bf16); q: [n, k] E4M3; scales: [ceil(n/128), ceil(k/128)] FP32 or
// UE8M0 bytes (scales_ue8m0).
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"

extern "C" __global__ void __launch_bounds__(256)
dk_fp8_quantize_weight_blocks(const void* w, int w_bf16, unsigned char* q, void* scales, int scales_ue8m0, int n, int k)
{
  __shared__ float warp_amax[8];
  const int c = blockIdx.x * 128 + (threadIdx.x & 127);
  const int r0 = blockIdx.y * 128;
  const int rows = min(128, n - r0);
  const bool col_ok = c < k;
  auto value = [&](int r) -> float {
    const long long i = static_cast<long long>(r0 + r) * k + c;
    return w_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(w)[i]) : static_cast<const float*>(w)[i];
  };
  float amax = 0.0f;
  if (col_ok) {
    for (int r = threadIdx.x >> 7; r < rows; r += 2) {
      const float a = fabsf(value(r));
      if (a <= 3.40282347e38f) amax = fmaxf(amax, a);  // NaN and infinities do not count
    }
  }
  amax = dk::warp_reduce_max(amax);
  if ((threadIdx.x & 31) == 0) warp_amax[threadIdx.x >> 5] = amax;
  __syncthreads();
  float block_amax = warp_amax[0];
  for (int i = 1; i < 8; ++i) block_amax = fmaxf(block_amax, warp_amax[i]);
  float scale = fmaxf(block_amax, 1e-4f) / 448.0f;
  const long long s = static_cast<long long>(blockIdx.y) * gridDim.x + blockIdx.x;
  if (scales_ue8m0) {
    const uint32_t e = dk::ue8m0_round_up(scale);
    scale = dk::ue8m0_to_f32(e);
    if (threadIdx.x == 0) static_cast<unsigned char*>(scales)[s] = static_cast<unsigned char>(e);
  } else if (threadIdx.x == 0) {
    static_cast<float*>(scales)[s] = scale;
  }
  if (!col_ok) return;
  for (int r = threadIdx.x >> 7; r < rows; r += 2) q[static_cast<long long>(r0 + r) * k + c] = dk::f32_to_e4m3_sat(value(r) / scale);
}
