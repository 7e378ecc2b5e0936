// Portable (sm_80+) FP8 block-scaled GEMM: D[m, n] = A[m, k] * B[n, k]^T with DeepSeek-V3
// promotion (see dk/gemm_tile.cuh for the tile design).
//
// dk_fp8_gemm launch: grid = (ceil(n/128), ceil(m/128), splits), block = (256, 1, 1),
// dynamic shared memory = 98304 bytes (3 stages x (16 KiB A + 16 KiB B); needs the opt-in).
// a: [m, k] E4M3; sa: [m, ceil(k/128)] FP32 or UE8M0 (sa_ue8m0); b: [n, k] E4M3;
// sb: [ceil(n/128), ceil(k/128)] FP32 or UE8M0 (sb_ue8m0); d: [m, n] FP32 or BF16 (out_bf16,
// round to nearest even); accumulate = 1 adds into an existing FP32 d.
// Split-K (decode shapes with few output tiles): with splits = gridDim.z > 1, CTA z sums the K
// blocks [z * k_blocks_per_split, (z + 1) * k_blocks_per_split) into workspace[z] ([m, n] FP32,
// plain stores) and dk_fp8_gemm_reduce then adds the splits in order (deterministic) into d.
// With splits = 1, k_blocks_per_split and workspace are ignored.
// Alignment rules: k % 16 == 0; a and b 16-byte aligned (rows are then 16-byte aligned too);
// m, n >= 1 arbitrary. The host (CudaBackend.Gemm.cs) checks these before launching.
//
// dk_fp8_gemm_reduce launch: grid = (ceil(m*n/256), 1, 1), block = (256, 1, 1).
#include "dk/common.cuh"
#include "dk/gemm_tile.cuh"

extern "C" __global__ void __launch_bounds__(256, 1)
dk_fp8_gemm(const unsigned char* a, const void* sa, const unsigned char* b, const void* sb, void* d, int m, int n, int k,
            int sa_ue8m0, int sb_ue8m0, int out_bf16, int accumulate, int k_blocks_per_split, float* workspace)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  const int num_kb = (k + 127) / 128;
  dk::gemm::Fp8GemmProblem p;
  p.a = a;
  p.lda = k;
  p.rows = m;
  p.sa = sa;
  p.sa_stride = num_kb;
  p.sa_ue8m0 = sa_ue8m0;
  p.b = b;
  p.sb = sb;
  p.sb_ue8m0 = sb_ue8m0;
  p.ldd = n;
  p.n = n;
  p.k = k;
  p.row_expert = nullptr;
  p.expert = 0;
  if (gridDim.z == 1) {
    p.d = d;
    p.out_bf16 = out_bf16;
    p.accumulate = accumulate;
    p.kb_begin = 0;
    p.kb_end = num_kb;
  } else {
    p.d = workspace + static_cast<long long>(blockIdx.z) * m * n;
    p.out_bf16 = 0;
    p.accumulate = 0;
    p.kb_begin = min(num_kb, static_cast<int>(blockIdx.z) * k_blocks_per_split);
    p.kb_end = min(num_kb, p.kb_begin + k_blocks_per_split);
  }
  dk::gemm::fp8_gemm_tile(p, blockIdx.y * dk::gemm::kBlockM, blockIdx.x * dk::gemm::kBlockN, smem);
}

extern "C" __global__ void __launch_bounds__(256)
dk_fp8_gemm_reduce(const float* workspace, int splits, void* d, int m, int n, int out_bf16, int accumulate)
{
  const long long count = static_cast<long long>(m) * n;
  const long long i = static_cast<long long>(blockIdx.x) * 256 + threadIdx.x;
  if (i >= count) return;
  float v = 0.0f;
  for (int z = 0; z < splits; ++z) v += workspace[z * count + i];
  if (out_bf16) {
    static_cast<uint16_t*>(d)[i] = dk::f32_to_bf16_rn(v);
  } else {
    float* dst = static_cast<float*>(d) + i;
    *dst = accumulate ? *dst + v : v;
  }
}
