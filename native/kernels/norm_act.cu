// The small per-token ops of the model graph: RMSNorm, SiLU-and-mul and the embedding lookup.
// All three follow the CPU backend's arithmetic step for step (src/DeepKernels/Backends/Cpu),
// so they differ from it only where an FP32 reduction order or expf differs.
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"

namespace norm_act {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

}  // namespace norm_act

// RMSNorm: y[r, :] = x[r, :] * (1 / sqrt(sum(x^2) / h + eps)) * w, FP32 in and out, w FP32 or
// BF16 (w_is_bf16). y may alias x (each thread reads its own elements before writing them).
// Launch: grid = (rows, 1, 1), block = (256, 1, 1), no dynamic shared memory. One CTA per row;
// the sum of squares is FP32: per-thread strided partial sums, then a warp butterfly, then the 8
// warp sums added by thread 0 in a fixed order, so the result does not depend on timing.
extern "C" __global__ void __launch_bounds__(256)
dk_rms_norm(const float* x, const void* w, int w_is_bf16, float* y, int rows, int h, float eps)
{
  __shared__ float warp_sum[norm_act::kWarps];
  __shared__ float inv_rms;
  const int row = blockIdx.x;
  const int t = threadIdx.x;
  const bool live = row < rows;
  const float* xr = x + static_cast<long long>(row) * h;
  float* yr = y + static_cast<long long>(row) * h;

  float s = 0.0f;
  if (live) {
    for (int i = t; i < h; i += norm_act::kThreads) {
      const float v = xr[i];
      s += v * v;
    }
  }
  s = dk::warp_reduce_sum(s);
  if ((t & 31) == 0) warp_sum[t >> 5] = s;
  __syncthreads();
  if (t == 0) {
    float total = 0.0f;
    for (int i = 0; i < norm_act::kWarps; i++) total += warp_sum[i];
    const float mean_square = total / static_cast<float>(h);
    inv_rms = 1.0f / sqrtf(mean_square + eps);
  }
  __syncthreads();
  const float inv = inv_rms;
  if (live) {
    for (int i = t; i < h; i += norm_act::kThreads) {
      const float wi = w_is_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(w)[i]) : static_cast<const float*>(w)[i];
      yr[i] = (xr[i] * inv) * wi;
    }
  }
}

// SiLU-and-mul: out[r, j] = (sigmoid(g) * g) * u with g = gate_up[r, j], u = gate_up[r, inter + j],
// sigmoid(g) = 1 / (1 + exp(-g)); FP32 in and out.
// Launch: grid = (ceil(inter / 256), rows, 1), block = (256, 1, 1) (rows per launch <= 65535).
extern "C" __global__ void __launch_bounds__(256)
dk_silu_and_mul(const float* gate_up, float* out, int rows, int inter)
{
  const int row = blockIdx.y;
  const int j = blockIdx.x * norm_act::kThreads + threadIdx.x;
  if (row >= rows || j >= inter) return;
  const float* gr = gate_up + static_cast<long long>(row) * 2 * inter;
  const float g = gr[j];
  const float u = gr[inter + j];
  const float sig = 1.0f / (1.0f + expf(-g));
  out[static_cast<long long>(row) * inter + j] = (sig * g) * u;
}

// Embedding lookup: out[t, :] = table[ids[t], :] widened to FP32; table FP32 or BF16
// (table_is_bf16). The host has checked every id against the vocabulary before the launch.
// Launch: grid = (tokens, 1, 1), block = (256, 1, 1), no dynamic shared memory.
extern "C" __global__ void __launch_bounds__(256)
dk_embedding_lookup(const void* table, int table_is_bf16, const int* ids, float* out, int tokens, int h)
{
  const int tok = blockIdx.x;
  if (tok >= tokens) return;
  const long long src = static_cast<long long>(ids[tok]) * h;
  float* dst = out + static_cast<long long>(tok) * h;
  if (table_is_bf16) {
    const uint16_t* tb = static_cast<const uint16_t*>(table) + src;
    for (int i = threadIdx.x; i < h; i += norm_act::kThreads) dst[i] = dk::bf16_to_f32(tb[i]);
  } else {
    const float* tf = static_cast<const float*>(table) + src;
    for (int i = threadIdx.x; i < h; i += norm_act::kThreads) dst[i] = tf[i];
  }
}
