// MoE token permutation kernels (semantics of MoePermutation / MoePermutationCore on the CPU).
//
// dk_moe_gather: copies each token row of input [tokens, width] (FP32 or BF16, input_bf16) to
// the rows inverse[t, j] (j < top_k; -1 = dropped slot) of rows [R, width]. mode 0: plain copy in
// the input's dtype; mode 1: FP8 activation quantization fused in, one scale per 1x128 group
// (amax over finite values, scale = max(amax, 1e-4) / 448, UE8M0 rounds it up to a power of two;
// E4M3 RNE saturating: bit-identical to dk_quantize_act_fp8), codes to rows and scales to
// row_scales [R, ceil(width/128)] (FP32, or UE8M0 bytes with scales_ue8m0). Each token is read
// and quantized once, whatever its number of rows. With token_q != null (mode 1 only) the token's
// own codes [tokens, width] and scales [tokens, ceil(width/128)] (same format) are written too:
// the MoE layer's shared expert then needs no separate quantization pass over the input.
// Launch: grid = (tokens, ceil(width/128), 1), block = (128, 1, 1), no dynamic shared memory.
//
// Both kernels take the row count of rows / expert_out (row_count) and skip an inverse entry
// outside [-1, row_count), recording it in the sticky MoE error word (dk/moe_error.cuh, kind 3):
// a device-resident map cannot be checked by the host without a download.
//
// dk_moe_combine: output[t] = sum_j weights[t, j] * expert_out[inverse[t, j]] in FP32 (slot
// order, dropped slots skipped), + shared[t] when has_shared. expert_out, shared and output are
// FP32 or BF16 (their flags; BF16 output rounds to nearest even).
// Launch: grid = (tokens, ceil(width/256), 1), block = (256, 1, 1).
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/warp.cuh"
#include "dk/moe_error.cuh"

namespace {
DK_DEVICE float load_value(const void* p, long long i, int bf16)
{
  return bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}
}  // namespace

extern "C" __global__ void __launch_bounds__(128)
dk_moe_gather(const void* input, int input_bf16, const int* inverse, int tokens, int width, int top_k, void* rows, int mode, void* row_scales,
              int scales_ue8m0, int row_count, int* error, unsigned char* token_q, void* token_scales)
{
  __shared__ float warp_amax[4];
  const int token = blockIdx.x, group = blockIdx.y;
  if (token >= tokens) return;
  const int col = group * 128 + threadIdx.x;
  const bool inside = col < width;
  const long long src = static_cast<long long>(token) * width + col;
  const int* slots = inverse + static_cast<long long>(token) * top_k;
  if (mode == 0) {
    if (!inside) return;
    for (int j = 0; j < top_k; ++j) {
      const int r = slots[j];
      if (r == -1) continue;
      if (r < 0 || r >= row_count) {
        if (threadIdx.x == 0 && group == 0) dk::moe_record_error(error, dk::kMoeErrorInverseRow, token * top_k + j, r, row_count);
        continue;
      }
      const long long dst = static_cast<long long>(r) * width + col;
      if (input_bf16) static_cast<uint16_t*>(rows)[dst] = static_cast<const uint16_t*>(input)[src];
      else static_cast<float*>(rows)[dst] = static_cast<const float*>(input)[src];
    }
    return;
  }
  const float v = inside ? load_value(input, src, input_bf16) : 0.0f;
  float a = fabsf(v);
  if (!(a <= 3.40282347e38f)) a = 0.0f;  // NaN and infinities do not count
  a = dk::warp_reduce_max(a);
  if ((threadIdx.x & 31) == 0) warp_amax[threadIdx.x >> 5] = a;
  __syncthreads();
  const float amax = fmaxf(fmaxf(warp_amax[0], warp_amax[1]), fmaxf(warp_amax[2], warp_amax[3]));
  float scale = fmaxf(amax, 1e-4f) / 448.0f;
  uint32_t e8 = 0;
  if (scales_ue8m0) {
    e8 = dk::ue8m0_round_up(scale);
    scale = dk::ue8m0_to_f32(e8);
  }
  const unsigned char code = dk::f32_to_e4m3_sat(v / scale);
  const int groups = (width + 127) / 128;
  if (token_q != nullptr) {
    if (inside) token_q[src] = code;
    if (threadIdx.x == 0) {
      const long long s = static_cast<long long>(token) * groups + group;
      if (scales_ue8m0) static_cast<unsigned char*>(token_scales)[s] = static_cast<unsigned char>(e8);
      else static_cast<float*>(token_scales)[s] = scale;
    }
  }
  for (int j = 0; j < top_k; ++j) {
    const int r = slots[j];
    if (r == -1) continue;
    if (r < 0 || r >= row_count) {
      if (threadIdx.x == 0 && group == 0) dk::moe_record_error(error, dk::kMoeErrorInverseRow, token * top_k + j, r, row_count);
      continue;
    }
    if (inside) static_cast<unsigned char*>(rows)[static_cast<long long>(r) * width + col] = code;
    if (threadIdx.x == 0) {
      const long long s = static_cast<long long>(r) * groups + group;
      if (scales_ue8m0) static_cast<unsigned char*>(row_scales)[s] = static_cast<unsigned char>(e8);
      else static_cast<float*>(row_scales)[s] = scale;
    }
  }
}

extern "C" __global__ void __launch_bounds__(256)
dk_moe_combine(const void* expert_out, int expert_bf16, const int* inverse, const float* weights, const void* shared, int shared_bf16,
               int has_shared, void* output, int out_bf16, int tokens, int width, int top_k, int row_count, int* error)
{
  const int token = blockIdx.x;
  const int col = blockIdx.y * 256 + threadIdx.x;
  if (token >= tokens || col >= width) return;
  const long long base = static_cast<long long>(token) * top_k;
  float acc = 0.0f;
  for (int j = 0; j < top_k; ++j) {
    const int r = inverse[base + j];
    if (r == -1) continue;
    if (r < 0 || r >= row_count) {
      if (col == 0) dk::moe_record_error(error, dk::kMoeErrorInverseRow, static_cast<int>(base) + j, r, row_count);
      continue;
    }
    acc = fmaf(load_value(expert_out, static_cast<long long>(r) * width + col, expert_bf16), weights[base + j], acc);
  }
  const long long o = static_cast<long long>(token) * width + col;
  if (has_shared) acc += load_value(shared, o, shared_bf16);
  if (out_bf16) static_cast<uint16_t*>(output)[o] = dk::f32_to_bf16_rn(acc);
  else static_cast<float*>(output)[o] = acc;
}
