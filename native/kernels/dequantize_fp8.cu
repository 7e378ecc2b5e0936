// Block-scaled FP8 weight dequantization: out[n, k] = e4m3(w[n, k]) * scale_inv[n/128, k/128].
//
// Launch: grid = (ceil(k/512), n, 1), block = (128, 1, 1), no dynamic shared memory.
// Each thread converts 4 consecutive elements of one row (thread t of CTA (bx, r) owns columns
// bx*512 + 4t .. +3); tails past k are skipped. Every element of a 128-column block reads the same
// scale_inv, which stays in L1.
// w: [n, k] E4M3 bytes; scale_inv: [ceil(n/128), ceil(k/128)] float (DeepSeek-V3's
// `weight_scale_inv`); out: [n, k] float or bf16 (out_is_bf16; bf16 rounds to nearest even).
#include "dk/common.cuh"
#include "dk/convert.cuh"

extern "C" __global__ void __launch_bounds__(128)
dk_dequantize_weight_fp8(const unsigned char* w, const float* scale_inv, void* out, int out_is_bf16, int n, int k)
{
  const int row = blockIdx.y;
  if (row >= n) return;
  const int kb_count = (k + 127) / 128;
  const int col0 = blockIdx.x * 512 + threadIdx.x * 4;
  const float* srow = scale_inv + static_cast<long long>(row / 128) * kb_count;
  const long long base = static_cast<long long>(row) * k;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int col = col0 + j;
    if (col >= k) break;
    const float v = dk::e4m3_to_f32(w[base + col]) * __ldg(srow + col / 128);
    if (out_is_bf16) static_cast<uint16_t*>(out)[base + col] = dk::f32_to_bf16_rn(v);
    else static_cast<float*>(out)[base + col] = v;
  }
}
