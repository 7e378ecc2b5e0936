// Grouped FP8 block-scaled GEMMs for MoE experts, built on the dense GEMM's tile
// (dk/gemm_tile.cuh): same numerics, same alignment rules (k % 16 == 0, 16-byte aligned
// operands). b: [groups, n, k] E4M3; sb: [groups, ceil(n/128), ceil(k/128)] FP32 or UE8M0.
// Rows that belong to no expert (padding) are neither loaded nor stored: their D rows are left
// untouched, as on the CPU backend.
//
// dk_grouped_gemm_contiguous: a [m, k], sa [m, ceil(k/128)], d [m, n]; m_indices[m] gives each
// row's expert (-1 = padding). Launch: grid = (ceil(n/128), ceil(m/128), 1), block = 256, dynamic
// shared memory 98304. A tile whose rows all belong to one expert (segments aligned to 128, as
// MoePermute produces) runs once; a tile spanning several experts runs once per expert present,
// storing only that expert's rows, so any row order is correct. All-padding tiles exit at once.
//
// dk_grouped_gemm_masked: a [groups, m_max, k], sa [groups, m_max, ceil(k/128)],
// d [groups, m_max, n]; expert g computes its first masked_m[g] rows. Launch: grid =
// (ceil(n/128), ceil(m_max/128), groups), block = 256, dynamic shared memory 98304. CTAs past an
// expert's count exit at once, so experts with no tokens cost one empty CTA per tile.
#include "dk/common.cuh"
#include "dk/gemm_tile.cuh"

namespace {
// The tile as a real call: the contiguous kernel's expert loop then adds no live registers to the
// tile's own budget (inlined, the two together spill at sm_80).
__device__ __noinline__ void gemm_tile_call(dk::gemm::Fp8GemmProblem p, int m0, int n0, unsigned char* smem)
{
  dk::gemm::fp8_gemm_tile(p, m0, n0, smem);
}

DK_DEVICE const void* scale_block(const void* sb, int ue8m0, long long index)
{
  return static_cast<const unsigned char*>(sb) + index * (ue8m0 ? 1 : 4);
}
}  // namespace

extern "C" __global__ void __launch_bounds__(256, 1)
dk_grouped_gemm_contiguous(const unsigned char* a, const void* sa, const int* m_indices, const unsigned char* b, const void* sb, void* d,
                           int m, int n, int k, int groups, int sa_ue8m0, int sb_ue8m0, int out_bf16)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ int s_experts[dk::gemm::kBlockM];
  __shared__ int s_count;
  const int m0 = blockIdx.y * dk::gemm::kBlockM;
  const int n0 = blockIdx.x * dk::gemm::kBlockN;
  if (threadIdx.x == 0) {
    // Distinct experts of this tile in order of first appearance (one for aligned segments).
    int count = 0;
    const int rows = min(dk::gemm::kBlockM, m - m0);
    for (int r = 0; r < rows; ++r) {
      const int e = m_indices[m0 + r];
      if (e < 0 || e >= groups) continue;
      bool seen = false;
      for (int i = count - 1; i >= 0 && !seen; --i) seen = s_experts[i] == e;
      if (!seen) s_experts[count++] = e;
    }
    s_count = count;
  }
  __syncthreads();
  const int count = s_count;
  const int kb_count = (k + 127) / 128, nb_count = (n + 127) / 128;
  for (int i = 0; i < count; ++i) {
    const int e = s_experts[i];
    dk::gemm::Fp8GemmProblem p;
    p.a = a;
    p.lda = k;
    p.rows = m;
    p.sa = sa;
    p.sa_stride = kb_count;
    p.sa_ue8m0 = sa_ue8m0;
    p.b = b + static_cast<long long>(e) * n * k;
    p.sb = scale_block(sb, sb_ue8m0, static_cast<long long>(e) * nb_count * kb_count);
    p.sb_ue8m0 = sb_ue8m0;
    p.d = d;
    p.ldd = n;
    p.n = n;
    p.k = k;
    p.out_bf16 = out_bf16;
    p.accumulate = 0;
    p.row_expert = m_indices;
    p.expert = e;
    p.kb_begin = 0;
    p.kb_end = kb_count;
    gemm_tile_call(p, m0, n0, smem);
  }
}

extern "C" __global__ void __launch_bounds__(256, 1)
dk_grouped_gemm_masked(const unsigned char* a, const void* sa, const int* masked_m, const unsigned char* b, const void* sb, void* d,
                       int m_max, int n, int k, int groups, int sa_ue8m0, int sb_ue8m0, int out_bf16)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  const int g = blockIdx.z;
  if (g >= groups) return;
  const int rows = min(max(masked_m[g], 0), m_max);
  const int m0 = blockIdx.y * dk::gemm::kBlockM;
  if (m0 >= rows) return;
  const int kb_count = (k + 127) / 128, nb_count = (n + 127) / 128;
  dk::gemm::Fp8GemmProblem p;
  p.a = a + static_cast<long long>(g) * m_max * k;
  p.lda = k;
  p.rows = rows;
  p.sa = scale_block(sa, sa_ue8m0, static_cast<long long>(g) * m_max * kb_count);
  p.sa_stride = kb_count;
  p.sa_ue8m0 = sa_ue8m0;
  p.b = b + static_cast<long long>(g) * n * k;
  p.sb = scale_block(sb, sb_ue8m0, static_cast<long long>(g) * nb_count * kb_count);
  p.sb_ue8m0 = sb_ue8m0;
  p.d = static_cast<unsigned char*>(d) + static_cast<long long>(g) * m_max * n * (out_bf16 ? 2 : 4);
  p.ldd = n;
  p.n = n;
  p.k = k;
  p.out_bf16 = out_bf16;
  p.accumulate = 0;
  p.row_expert = nullptr;
  p.expert = 0;
  p.kb_begin = 0;
  p.kb_end = kb_count;
  dk::gemm::fp8_gemm_tile(p, m0, blockIdx.x * dk::gemm::kBlockN, smem);
}
