// Per-token-group FP8 activation quantization (1x128 groups along K).
//
// Launch: grid = (ceil(k/128), m, 1), block = (128, 1, 1), no dynamic shared memory.
// One CTA per 1x128 group, one thread per element. For each group:
//   amax  = max |x| over the finite elements (NaN/inf ignored; a partial last group counts its
//           missing elements as zero),
//   scale = max(amax, 1e-4) / 448 (IEEE division); with UE8M0 scales it is rounded up to a power
//           of two and stored as its biased exponent byte,
//   q     = E4M3(x / scale), round to nearest even, saturating; NaN -> 0x7F|sign.
// Bit-identical to ActivationQuantization.Quantize on the CPU (src/DeepKernels/Ops/Quantize).
// x: [m, k] float or bf16 (x_is_bf16); q: [m, k] E4M3 bytes; scales: [m, ceil(k/128)] row-major,
// float or UE8M0 bytes (scales_ue8m0).
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"

extern "C" __global__ void __launch_bounds__(128)
dk_quantize_act_fp8(const void* x, int x_is_bf16, unsigned char* q, void* scales, int scales_ue8m0, int m, int k)
{
  __shared__ float warp_amax[4];
  const int group = blockIdx.x;
  const int row = blockIdx.y;
  const int t = threadIdx.x;
  const int groups = (k + 127) / 128;
  const int col = group * 128 + t;
  const bool inside = col < k && row < m;
  const long long idx = static_cast<long long>(row) * k + col;

  float v = 0.0f;
  if (inside) {
    v = x_is_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(x)[idx]) : static_cast<const float*>(x)[idx];
  }
  float a = fabsf(v);
  if (!(a <= 3.40282347e38f)) a = 0.0f;  // NaN and infinities do not count
  a = dk::warp_reduce_max(a);
  if ((t & 31) == 0) warp_amax[t >> 5] = a;
  __syncthreads();
  const float amax = fmaxf(fmaxf(warp_amax[0], warp_amax[1]), fmaxf(warp_amax[2], warp_amax[3]));

  float scale = fmaxf(amax, 1e-4f) / 448.0f;
  const long long sidx = static_cast<long long>(row) * groups + group;
  if (scales_ue8m0) {
    const uint32_t e = dk::ue8m0_round_up(scale);
    scale = dk::ue8m0_to_f32(e);
    if (t == 0 && row < m) static_cast<unsigned char*>(scales)[sidx] = static_cast<unsigned char>(e);
  } else if (t == 0 && row < m) {
    static_cast<float*>(scales)[sidx] = scale;
  }
  if (inside) q[idx] = dk::f32_to_e4m3_sat(v / scale);
}
