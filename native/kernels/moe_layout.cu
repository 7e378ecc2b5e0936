// Device-side MoE layout builder: from expert ids [T, k] (int32, on the device) builds the
// contiguous or the masked layout of MoePermutation without the host seeing the ids, so routing
// needs no device->host copy and no synchronization (CUDA-graph friendly). The result equals
// MoePermutationCore.BuildContiguous / BuildMasked bit for bit: within an expert, rows follow
// ascending flat index i = token * k + slot. Three launches over chunks of kChunk ids:
//
// dk_moe_layout_count: per chunk c, chunk_counts[c, e] = ids of expert e in the chunk (shared
//   atomics: counts do not depend on order) and chunk_bad[c] = the smallest i in the chunk whose
//   id is outside [-1, experts) (INT_MAX if none).
//   Launch: grid = (ceil(n / 2048), 1, 1), block = (256, 1, 1).
// dk_moe_layout_scan: one CTA. Turns chunk_counts into exclusive per-expert chunk bases (in
//   place), then contiguous (expert_offsets != null): expert_offsets[E + 1] from the counts
//   padded to `alignment` (status[0] = rows used), or masked (masked_m != null): masked_m[e] =
//   min(count, m_max) and status[1] = expected_m as MoePermutationCore.ExpectedM. Records in the
//   sticky error word the first bad id (kind 1) or the first expert over m_max (kind 2). Writes
//   shared_tokens to *shared_masked_m when that is not null (the shared expert's masked count, so
//   the MoE layer needs no host upload).
//   Launch: grid = (1, 1, 1), block = (512, 1, 1).
// dk_moe_layout_scatter: per chunk, the stable rank of each id among equal ids (ballot match in
//   the warp, warps in order through a per-expert shared cursor) gives its position; writes
//   inverse[i], and m_indices[row] / row_tokens[row]. Padding rows are not touched: the caller
//   fills m_indices and row_tokens with -1 first (a memset of 0xFF bytes). Masked rows at or past
//   m_max are dropped (inverse -1, error recorded by the scan). Bad ids get inverse -1.
//   Launch: grid = (ceil(n / 2048), 1, 1), block = (256, 1, 1).
#include "dk/common.cuh"
#include "dk/moe_error.cuh"

namespace moe_layout {
constexpr int kThreads = 256;
constexpr int kTiles = 8;
constexpr int kChunk = kThreads * kTiles;  // ids per chunk (and per count/scatter CTA)
constexpr int kMaxExperts = 512;
constexpr int kScanThreads = 512;
constexpr int kNoBad = 0x7fffffff;
constexpr int kKeyBits = 10;               // expert ids < 512, 1023 = no expert
constexpr int kNoKey = (1 << kKeyBits) - 1;
}  // namespace moe_layout

extern "C" __global__ void __launch_bounds__(256)
dk_moe_layout_count(const int* ids, int n, int experts, int* chunk_counts, int* chunk_bad)
{
  using namespace moe_layout;
  __shared__ int s_count[kMaxExperts];
  __shared__ int s_bad;
  for (int e = threadIdx.x; e < experts; e += kThreads) s_count[e] = 0;
  if (threadIdx.x == 0) s_bad = kNoBad;
  __syncthreads();
  const int begin = blockIdx.x * kChunk;
  const int end = min(n, begin + kChunk);
  for (int i = begin + threadIdx.x; i < end; i += kThreads) {
    const int id = ids[i];
    if (id < -1 || id >= experts) atomicMin(&s_bad, i);
    else if (id >= 0) atomicAdd(&s_count[id], 1);
  }
  __syncthreads();
  int* out = chunk_counts + static_cast<long long>(blockIdx.x) * experts;
  for (int e = threadIdx.x; e < experts; e += kThreads) out[e] = s_count[e];
  if (threadIdx.x == 0) chunk_bad[blockIdx.x] = s_bad;
}

extern "C" __global__ void __launch_bounds__(512)
dk_moe_layout_scan(int* chunk_counts, const int* chunk_bad, const int* ids, int chunks, int experts, int alignment, int m_max,
                   int* expert_offsets, int* masked_m, int* status, int* error, int* shared_masked_m, int shared_tokens)
{
  using namespace moe_layout;
  __shared__ int s_warp[kScanThreads / 32];
  __shared__ int s_active[kScanThreads / 32];
  __shared__ long long s_total[kScanThreads / 32];
  const int e = threadIdx.x;
  const int lane = e & 31, warp = e >> 5;
  int count = 0;
  if (e < experts) {
    // Exclusive base of each chunk within expert e's rows, in chunk order.
    for (int c = 0; c < chunks; ++c) {
      int* p = chunk_counts + static_cast<long long>(c) * experts + e;
      const int v = *p;
      *p = count;
      count += v;
    }
  }
  const bool contiguous = expert_offsets != nullptr;
  int padded = contiguous && count > 0 ? (count + alignment - 1) / alignment * alignment : 0;
  // Block-wide exclusive scan of the padded sizes (warp shuffles, then the warp totals).
  int incl = padded;
  for (int o = 1; o < 32; o <<= 1) {
    const int v = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o) incl += v;
  }
  const int active = __popc(__ballot_sync(0xffffffffu, count > 0));
  long long total = count;
  for (int o = 16; o > 0; o >>= 1) total += __shfl_xor_sync(0xffffffffu, total, o);
  if (lane == 31) s_warp[warp] = incl;
  if (lane == 0) {
    s_active[warp] = active;
    s_total[warp] = total;
  }
  __syncthreads();
  int warp_base = 0;
  for (int w = 0; w < warp; ++w) warp_base += s_warp[w];
  if (contiguous) {
    if (e < experts) expert_offsets[e] = warp_base + incl - padded;
    if (e == experts - 1) {
      expert_offsets[experts] = warp_base + incl;
      if (status != nullptr) status[0] = warp_base + incl;
    }
  } else if (e < experts) {
    masked_m[e] = min(count, m_max);
  }
  if (e == 0) {
    if (!contiguous && status != nullptr) {
      // expected_m: mean rows over experts that have any, rounded up, in [1, m_max].
      long long sum = 0;
      int act = 0;
      for (int w = 0; w < kScanThreads / 32; ++w) {
        sum += s_total[w];
        act += s_active[w];
      }
      long long m = act == 0 ? 1 : (sum + act - 1) / act;
      status[1] = static_cast<int>(max(1LL, min(m, static_cast<long long>(max(1, m_max)))));
    }
    if (shared_masked_m != nullptr) *shared_masked_m = shared_tokens;
    for (int c = 0; c < chunks; ++c) {
      const int bad = chunk_bad[c];
      if (bad != kNoBad) {
        dk::moe_record_error(error, dk::kMoeErrorExpertId, bad, ids[bad], experts);
        break;
      }
    }
  }
  if (!contiguous) {
    // The first expert (lowest id) over m_max; min is order-independent.
    __shared__ int s_first;
    if (e == 0) s_first = kNoBad;
    __syncthreads();
    if (e < experts && count > m_max) atomicMin(&s_first, e);
    __syncthreads();
    if (e == s_first) dk::moe_record_error(error, dk::kMoeErrorMaskedOverflow, e, count, m_max);
  }
}

extern "C" __global__ void __launch_bounds__(256)
dk_moe_layout_scatter(const int* ids, int n, int top_k, int experts, const int* chunk_base, const int* expert_offsets, int m_max, int* inverse,
                      int* m_indices, int* row_tokens)
{
  using namespace moe_layout;
  __shared__ int s_cursor[kMaxExperts];
  const int* base = chunk_base + static_cast<long long>(blockIdx.x) * experts;
  for (int e = threadIdx.x; e < experts; e += kThreads) s_cursor[e] = base[e];
  const bool contiguous = expert_offsets != nullptr;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const unsigned lower = (1u << lane) - 1u;
  for (int tile = 0; tile < kTiles; ++tile) {
    const int i = blockIdx.x * kChunk + tile * kThreads + threadIdx.x;
    const int id = i < n ? ids[i] : -1;
    const bool valid = id >= 0 && id < experts;
    const int key = valid ? id : kNoKey;
    // Lanes holding the same expert: match the key bit by bit with ballots.
    unsigned peers = 0xffffffffu;
    for (int b = 0; b < kKeyBits; ++b) {
      const unsigned bits = __ballot_sync(0xffffffffu, (key >> b) & 1);
      peers &= ((key >> b) & 1) ? bits : ~bits;
    }
    const int rank = __popc(peers & lower);
    const bool last = (peers >> lane) == 1u;  // highest lane of its group
    int pos = 0;
    for (int w = 0; w < kThreads / 32; ++w) {
      __syncthreads();  // the previous warp's cursor updates are visible
      if (warp == w && valid) pos = s_cursor[id] + rank;
      __syncwarp(0xffffffffu);
      if (warp == w && valid && last) s_cursor[id] += rank + 1;
    }
    if (i >= n) continue;
    if (!valid) {
      inverse[i] = -1;
      continue;
    }
    const int token = i / top_k;
    if (contiguous) {
      const int row = expert_offsets[id] + pos;
      inverse[i] = row;
      m_indices[row] = id;
      row_tokens[row] = token;
    } else if (pos < m_max) {
      const int row = id * m_max + pos;
      inverse[i] = row;
      row_tokens[row] = token;
    } else {
      inverse[i] = -1;  // over m_max: dropped, reported by dk_moe_layout_scan
    }
  }
}
