// MoE expert activation: h = SiLU(gate) * up, re-quantized to FP8 for the down projection.
//
// dk_silu_mul_quant_fp8: gate_up [rows, 2*inter] (FP32, or BF16 with gu_bf16) holds the grouped
// gate_up GEMM output, gate in columns [0, inter), up in [inter, 2*inter). Per element, in FP32
// and in the CPU backend's order (CpuBackend.MoeLayer.SiluMulQuantize):
//   u = up * g;  s = (float)(1 / (1 + exp(-g)) in FP64);  h = s * u
// then h is quantized per 1x128 group exactly like dk_quantize_act_fp8 (amax over finite values,
// scale = max(amax, 1e-4) / 448, E4M3 RNE saturating, NaN stays NaN) into q [rows, inter] and
// FP32 scales [rows, ceil(inter/128)]. Rows whose m_indices entry is -1 (padding rows of the
// contiguous layout) are skipped and their outputs left untouched; m_indices may be null.
// Launch: grid = (ceil(inter/128), rows, 1), block = (128, 1, 1), no dynamic shared memory.
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"

namespace moe_activation {
DK_DEVICE float load_value(const void* p, long long i, int bf16)
{
  return bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}
}  // namespace moe_activation

extern "C" __global__ void __launch_bounds__(128)
dk_silu_mul_quant_fp8(const void* gate_up, int gu_bf16, const int* m_indices, unsigned char* q, float* scales, int rows, int inter)
{
  __shared__ float warp_amax[4];
  const int group = blockIdx.x;
  const int row = blockIdx.y;
  // The whole CTA leaves together (uniform condition), before any barrier.
  if (row >= rows || (m_indices != nullptr && m_indices[row] < 0)) return;
  const int t = threadIdx.x;
  const int groups = (inter + 127) / 128;
  const int col = group * 128 + t;
  const bool inside = col < inter;
  const long long base = static_cast<long long>(row) * 2 * inter;

  float h = 0.0f;
  if (inside) {
    const float g = moe_activation::load_value(gate_up, base + col, gu_bf16);
    const float up = moe_activation::load_value(gate_up, base + inter + col, gu_bf16);
    const float u = up * g;
    // The sigmoid in FP64, rounded once: the CPU's definition, the same on any device.
    const float s = static_cast<float>(1.0 / (1.0 + exp(-static_cast<double>(g))));
    h = s * u;
  }
  float a = fabsf(h);
  if (!(a <= 3.40282347e38f)) a = 0.0f;  // NaN and infinities do not count
  a = dk::warp_reduce_max(a);
  if ((t & 31) == 0) warp_amax[t >> 5] = a;
  __syncthreads();
  const float amax = fmaxf(fmaxf(warp_amax[0], warp_amax[1]), fmaxf(warp_amax[2], warp_amax[3]));
  const float scale = fmaxf(amax, 1e-4f) / 448.0f;
  if (t == 0) scales[static_cast<long long>(row) * groups + group] = scale;
  if (inside) q[static_cast<long long>(row) * inter + col] = dk::f32_to_e4m3_sat(h / scale);
}
