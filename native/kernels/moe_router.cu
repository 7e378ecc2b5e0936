// DeepSeek MoE gate (router): expert ids and weights per token, with the semantics of the CPU
// MoeRouterCore (src/DeepKernels/Ops/MoeRouter): scores s = sigmoid(logit) or softmax(logits);
// choice = s + bias (NaN -> -inf); groups ranked by the sum of their top-2 choices (or their max,
// group_score_max = 1), the top topk_group kept (ties to the lower group); top-k experts of the
// kept groups by choice (ties to the lower index); weights = s at the chosen experts (NaN -> 0),
// normalised by their sum (+1e-20) when norm_topk_prob, times routed_scaling_factor.
//
// Launch: grid = (ceil(tokens/4), 1, 1), block = (128, 1, 1): one warp per token, no dynamic
// shared memory. Limits: experts <= 512 (16 per lane), top_k <= 16.
// logits: [tokens, experts] FP32 or BF16 (logits_bf16); bias: [experts] FP32 or null (has_bias);
// ids: [tokens, top_k] int32; weights: [tokens, top_k] FP32. scoring: 0 sigmoid, 1 softmax.
#include "dk/common.cuh"
#include "dk/convert.cuh"

namespace {
constexpr int kMaxExperts = 512;
constexpr int kPerLane = kMaxExperts / 32;
constexpr int kWarps = 4;

DK_DEVICE bool better(float s, int i, float best_s, int best_i) { return s > best_s || (s == best_s && i < best_i); }
}  // namespace

extern "C" __global__ void __launch_bounds__(128)
dk_moe_router(const void* logits, int logits_bf16, const float* bias, int has_bias, int* ids, float* weights, int tokens, int experts,
              int n_group, int topk_group, int top_k, int scoring, int group_score_max, int norm_topk_prob, float routed_scaling_factor)
{
  __shared__ float s_score[kWarps][kMaxExperts];
  __shared__ float s_choice[kWarps][kMaxExperts];
  __shared__ unsigned char s_keep[kWarps][kMaxExperts];  // per group
  __shared__ int s_ids[kWarps][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int token = blockIdx.x * kWarps + warp;
  if (token >= tokens) return;  // whole warps leave together; no block barrier below
  float* score = s_score[warp];
  float* choice = s_choice[warp];
  const long long row = static_cast<long long>(token) * experts;

  // Scores.
  float x[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    float v = 0.0f;
    if (e < experts) v = logits_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(logits)[row + e]) : static_cast<const float*>(logits)[row + e];
    x[j] = v;
  }
  if (scoring == 0) {
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j < experts) score[lane + 32 * j] = 1.0f / (1.0f + expf(-x[j]));
  } else {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j < experts && x[j] > mx) mx = x[j];
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, o));
    double sum = 0.0;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e >= experts) continue;
      float v;
      if (mx == -INFINITY) v = 0.0f;
      else if (mx == INFINITY) v = x[j] == INFINITY ? 1.0f : 0.0f;
      else v = x[j] != x[j] ? 0.0f : expf(x[j] - mx);
      score[e] = v;
      sum += v;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, o);
    const float inv = mx == -INFINITY ? 0.0f : static_cast<float>(1.0 / sum);
#pragma unroll
    for (int j = 0; j < kPerLane; ++j)
      if (lane + 32 * j < experts) score[lane + 32 * j] *= inv;
  }
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    if (e >= experts) continue;
    const float c = has_bias ? score[e] + bias[e] : score[e];
    choice[e] = c != c ? -INFINITY : c;
  }
  __syncwarp();

  // Groups: lane 0 ranks them (n_group is small), the same insertion order as the CPU.
  unsigned char* keep = s_keep[warp];
  const int per_group = experts / n_group;
  if (lane == 0) {
    if (topk_group >= n_group) {
      for (int g = 0; g < n_group; ++g) keep[g] = 1;
    } else {
      for (int g = 0; g < n_group; ++g) keep[g] = 0;
      for (int r = 0; r < topk_group; ++r) {
        float best_s = 0.0f;
        int best_g = -1;
        for (int g = 0; g < n_group; ++g) {
          if (keep[g]) continue;
          float first = -INFINITY, second = -INFINITY;
          for (int i = g * per_group; i < (g + 1) * per_group; ++i) {
            const float c = choice[i];
            if (c > first) { second = first; first = c; }
            else if (c > second) second = c;
          }
          const float gs = (group_score_max || per_group == 1) ? first : first + second;
          if (best_g < 0 || better(gs, g, best_s, best_g)) { best_s = gs; best_g = g; }
        }
        keep[best_g] = 1;
      }
    }
  }
  __syncwarp();

  // Top-k experts of the kept groups: k rounds of a warp argmax (ties to the lower index).
  unsigned taken = 0;  // bit j: expert lane + 32 j is not a candidate
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    if (e >= experts || !keep[e / per_group]) taken |= 1u << j;
  }
  for (int r = 0; r < top_k; ++r) {
    float best_s = 0.0f;
    int best_i = 0x7FFFFFFF;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = lane + 32 * j;
      if (!(taken >> j & 1u) && (best_i == 0x7FFFFFFF || better(choice[e], e, best_s, best_i))) { best_s = choice[e]; best_i = e; }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float os = __shfl_xor_sync(0xFFFFFFFFu, best_s, o);
      const int oi = __shfl_xor_sync(0xFFFFFFFFu, best_i, o);
      if (oi != 0x7FFFFFFF && (best_i == 0x7FFFFFFF || better(os, oi, best_s, best_i))) { best_s = os; best_i = oi; }
    }
    if ((best_i & 31) == lane) taken |= 1u << (best_i >> 5);  // best_i < experts: k <= kept experts
    if (lane == 0) s_ids[warp][r] = best_i;
  }
  __syncwarp();

  if (lane == 0) {
    const long long out = static_cast<long long>(token) * top_k;
    double sum = 0.0;
    for (int r = 0; r < top_k; ++r) {
      const float v = score[s_ids[warp][r]];
      sum += v != v ? 0.0f : v;
    }
    const float denominator = static_cast<float>(sum) + 1e-20f;
    for (int r = 0; r < top_k; ++r) {
      float v = score[s_ids[warp][r]];
      if (v != v) v = 0.0f;
      ids[out + r] = s_ids[warp][r];
      weights[out + r] = norm_topk_prob ? v / denominator * routed_scaling_factor : v * routed_scaling_factor;
    }
  }
}
