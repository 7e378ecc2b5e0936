// Hopper (sm_90a) FP8 block-scaled GEMM: D[m, n] = A[m, k] * B[n, k]^T with DeepSeek-V3
// promotion, the same numerics as the portable dk_fp8_gemm (fp8_gemm.cu).
//
// Design: dk/gemm_sm90.cuh (one producer warp group with TMA and an mbarrier ring, two consumer
// warp groups with wgmma m64n128k32 E4M3 and promotion per 128-K block, register epilogue), here
// with the dense schedule: 128 x 128 tiles by blockIdx stride (grid = min(tiles, SMs)).
// Tails: M and N past the end, and K past the end inside the last K block, arrive as zeros by
// TMA out-of-bounds fill; the epilogue stores only rows < m and columns < n.
//
// Launch: grid = (min(tiles, SMs), 1, 1), block = (384, 1, 1), dynamic shared memory =
//         kSharedBytes (4 stages x 32 KiB + 1 KiB for 1024-byte alignment; needs the opt-in).
// map_a: 2-D tensor map over a [m, k] E4M3 (dims {k, m}, row stride k bytes, box {128, 128},
//        128-byte swizzle); map_b: the same over b [n, k].
// sa: [m, ceil(k/128)] FP32 or UE8M0 (sa_ue8m0); sb: [ceil(n/128), ceil(k/128)] FP32 or UE8M0
// (sb_ue8m0); d: [m, n] FP32 or BF16 (out_bf16, round to nearest even); accumulate = 1 adds into
// an existing FP32 d.
// Alignment rules (TMA: global strides multiples of 16 bytes, base 16-byte aligned): k % 16 == 0,
// a and b 16-byte aligned (their rows then are too); m, n >= 1 arbitrary. The host
// (CudaBackend.GemmSm90.cs) checks these before encoding the tensor maps.
// Only compiled into the fatbin for sm_90a (nvcc >= 12.3) and into the emulator; other archs get
// a body that traps.
#include "dk/common.cuh"
#include "dk/gemm_sm90.cuh"

extern "C" __global__ void __launch_bounds__(384, 1)
dk_fp8_gemm_sm90(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, const void* sa, const void* sb, void* d,
                 int m, int n, int k, int sa_ue8m0, int sb_ue8m0, int out_bf16, int accumulate)
{
#if defined(DK_EMULATOR) || DK_HAS_SM90A
  DK_DYNAMIC_SHARED(unsigned char, smem_raw);
  __shared__ __align__(8) uint64_t full_bar[dk::sm90::kStages];
  __shared__ __align__(8) uint64_t empty_bar[dk::sm90::kStages];
  dk::sm90::run(dk::sm90::DenseSchedule(m, n, k), smem_raw, full_bar, empty_bar, &map_a, &map_b, sa, sa_ue8m0, sb, sb_ue8m0, d, n, k, out_bf16,
                accumulate);
#else
  (void)sa, (void)sb, (void)d, (void)m, (void)n, (void)k, (void)sa_ue8m0, (void)sb_ue8m0, (void)out_bf16, (void)accumulate;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}
