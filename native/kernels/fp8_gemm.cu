// Portable (sm_80+) FP8 block-scaled GEMM: D[m, n] = A[m, k] * B[n, k]^T with DeepSeek-V3
// promotion (see dk/gemm_tile.cuh for the tile design).
//
// Launch: grid = (ceil(n/128), ceil(m/128), 1), block = (256, 1, 1),
//         dynamic shared memory = 98304 bytes (3 stages x (16 KiB A + 16 KiB B); needs the opt-in).
// a: [m, k] E4M3; sa: [m, ceil(k/128)] FP32 or UE8M0 (sa_ue8m0); b: [n, k] E4M3;
// sb: [ceil(n/128), ceil(k/128)] FP32 or UE8M0 (sb_ue8m0); d: [m, n] FP32 or BF16 (out_bf16,
// round to nearest even); accumulate = 1 adds into an existing FP32 d.
// Alignment rules: k % 16 == 0; a and b 16-byte aligned (rows are then 16-byte aligned too);
// m, n >= 1 arbitrary. The host (CudaBackend.Gemm.cs) checks these before launching.
#include "dk/common.cuh"
#include "dk/gemm_tile.cuh"

extern "C" __global__ void __launch_bounds__(256, 1)
dk_fp8_gemm(const unsigned char* a, const void* sa, const unsigned char* b, const void* sb, void* d, int m, int n, int k,
            int sa_ue8m0, int sb_ue8m0, int out_bf16, int accumulate)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  dk::gemm::Fp8GemmProblem p;
  p.a = a;
  p.lda = k;
  p.rows = m;
  p.sa = sa;
  p.sa_stride = (k + 127) / 128;
  p.sa_ue8m0 = sa_ue8m0;
  p.b = b;
  p.sb = sb;
  p.sb_ue8m0 = sb_ue8m0;
  p.d = d;
  p.ldd = n;
  p.n = n;
  p.k = k;
  p.out_bf16 = out_bf16;
  p.accumulate = accumulate;
  p.row_expert = nullptr;
  p.expert = 0;
  dk::gemm::fp8_gemm_tile(p, blockIdx.y * dk::gemm::kBlockM, blockIdx.x * dk::gemm::kBlockN, smem);
}
