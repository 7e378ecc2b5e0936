// Hopper (sm_90a) FP8 block-scaled GEMM: D[m, n] = A[m, k] * B[n, k]^T with DeepSeek-V3
// promotion, the same numerics as the portable dk_fp8_gemm (fp8_gemm.cu).
//
// Design (one CTA = 3 warp groups, 384 threads, persistent over 128 x 128 output tiles):
//  * Warp group 0 is the producer: after setmaxnreg.dec one thread TMA-loads, for every tile and
//    every 128-wide K block (one scale block), the A box [128 rows x 128 bytes] and the B box
//    [128 rows x 128 bytes] (128-byte swizzle) into a kStages-deep ring, completing on the
//    stage's "full" mbarrier (arrive.expect_tx). It reuses a stage once every consumer warp has
//    arrived on its "empty" mbarrier.
//  * Warp groups 1 and 2 are the consumers (setmaxnreg.inc): each owns 64 rows of the tile and
//    runs four wgmma m64n128k32 E4M3 steps per K block into FP32 partials, then promotes them:
//    acc += partial * sa[row, kb] * sb[n / 128, kb] (FP32 accumulators in registers).
//  * Tiles are scheduled by blockIdx stride (grid = min(tiles, SMs)).
//  * Tails: M and N past the end, and K past the end inside the last K block, arrive as zeros by
//    TMA out-of-bounds fill; the epilogue stores only rows < m and columns < n.
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
#include "dk/convert.cuh"
#include "dk/gemm_tile.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"
#include "dk/wgmma.cuh"

#if defined(DK_EMULATOR) || DK_HAS_SM90A
namespace fp8_gemm_sm90 {

constexpr int kBlockM = 128;
constexpr int kBlockN = 128;
constexpr int kBlockK = 128;
constexpr int kStages = 4;
constexpr int kConsumers = 2;                       // consumer warp groups, 64 rows each
constexpr int kThreads = 128 * (1 + kConsumers);
constexpr int kTileABytes = kBlockM * kBlockK;
constexpr int kTileBBytes = kBlockN * kBlockK;
constexpr int kStageBytes = kTileABytes + kTileBBytes;
constexpr int kSharedBytes = kStages * kStageBytes + 1024;  // + slack to align the ring to 1024 bytes
constexpr int kAcc = kBlockN / 2;                   // accumulators per thread for m64n128

DK_DEVICE unsigned char* align_1024(unsigned char* p)
{
#if defined(DK_EMULATOR)
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return p + ((1024 - (a & 1023)) & 1023);
#else
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
  return p + ((1024 - (a & 1023)) & 1023);
#endif
}

}  // namespace fp8_gemm_sm90
#endif

extern "C" __global__ void __launch_bounds__(384, 1)
dk_fp8_gemm_sm90(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, const void* sa, const void* sb, void* d,
                 int m, int n, int k, int sa_ue8m0, int sb_ue8m0, int out_bf16, int accumulate)
{
#if defined(DK_EMULATOR) || DK_HAS_SM90A
  using namespace fp8_gemm_sm90;
  DK_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* smem = align_1024(smem_raw);
  __shared__ __align__(8) uint64_t full_bar[kStages];
  __shared__ __align__(8) uint64_t empty_bar[kStages];

  const int tid = threadIdx.x;
  const int group = tid / 128;
  const int k_blocks = (k + kBlockK - 1) / kBlockK;
  const int m_tiles = (m + kBlockM - 1) / kBlockM, n_tiles = (n + kBlockN - 1) / kBlockN;
  const int tiles = m_tiles * n_tiles;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      dk::mbarrier_init(&full_bar[s], 1);
      dk::mbarrier_init(&empty_bar[s], kConsumers * 4);  // lane 0 of every consumer warp
    }
    dk::fence_barrier_init();
  }
  __syncthreads();  // the last CTA-wide barrier: the roles below never meet again

  if (group == 0) {
    // Producer: one thread issues every TMA load; the rest of the warp group just leaves.
    dk::setmaxnreg_dec<40>();
    if (tid == 0) {
      unsigned it = 0;
      for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
        const int m0 = (tile / n_tiles) * kBlockM, n0 = (tile % n_tiles) * kBlockN;
        for (int kb = 0; kb < k_blocks; ++kb, ++it) {
          const unsigned s = it % kStages;
          if (it >= static_cast<unsigned>(kStages)) dk::mbarrier_wait_parity(&empty_bar[s], (it / kStages - 1) & 1u);
          unsigned char* tile_a = smem + s * kStageBytes;
          dk::mbarrier_arrive_expect_tx(&full_bar[s], kStageBytes);
          dk::tma_load_2d(tile_a, &map_a, kb * kBlockK, m0, &full_bar[s]);
          dk::tma_load_2d(tile_a + kTileABytes, &map_b, kb * kBlockK, n0, &full_bar[s]);
        }
      }
    }
    return;
  }

  // Consumers.
  dk::setmaxnreg_inc<232>();
  const int c = group - 1;            // which 64-row half of the tile
  const int t = tid % 128;
  const int w = t / 32, g = (t % 32) / 4, q = t % 4;
  unsigned it = 0;
  for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int m0 = (tile / n_tiles) * kBlockM, n0 = (tile % n_tiles) * kBlockN;
    const int row0 = m0 + c * 64 + 16 * w + g, row1 = row0 + 8;
    float acc[kAcc];
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

    for (int kb = 0; kb < k_blocks; ++kb, ++it) {
      const unsigned s = it % kStages;
      // Scales of this K block (rows past m read nothing and contribute zeros anyway).
      const float sbv = dk::gemm::load_scale(sb, static_cast<long long>(n0 / kBlockN) * k_blocks + kb, sb_ue8m0);
      const float s0 = row0 < m ? dk::gemm::load_scale(sa, static_cast<long long>(row0) * k_blocks + kb, sa_ue8m0) * sbv : 0.f;
      const float s1 = row1 < m ? dk::gemm::load_scale(sa, static_cast<long long>(row1) * k_blocks + kb, sa_ue8m0) * sbv : 0.f;

      dk::mbarrier_wait_parity(&full_bar[s], (it / kStages) & 1u);
      const unsigned char* tile_a = smem + s * kStageBytes + c * 64 * kBlockK;
      const unsigned char* tile_b = smem + s * kStageBytes + kTileABytes;
      float part[kAcc];
      dk::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < kBlockK / 32; ++kk) {
        // 128-byte rows, 8-row core groups 1024 bytes apart (SBO); the k32 step moves the start.
        const uint64_t da = dk::make_smem_desc(tile_a + 32 * kk, 128, 0, 1024);
        const uint64_t db = dk::make_smem_desc(tile_b + 32 * kk, 128, 0, 1024);
        dk::wgmma_m64k32_e4m3<kBlockN>(part, da, db, kk > 0);
      }
      dk::wgmma_commit_group();
      dk::wgmma_wait_group<0>();
      // The stage is free once every consumer warp has seen its wgmmas complete.
      if (t % 32 == 0) dk::mbarrier_arrive(&empty_bar[s]);
      // Promotion: thread-owned rows row0 (i & 2 == 0) and row1.
#pragma unroll
      for (int i = 0; i < kAcc; ++i) acc[i] += part[i] * ((i & 2) ? s1 : s0);
    }

    // Epilogue: straight from registers; each thread owns pairs of adjacent columns.
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = h ? row1 : row0;
        const int col = n0 + 8 * j + 2 * q;
        if (row >= m) continue;
        const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
        const long long base = static_cast<long long>(row) * n + col;
        if (out_bf16) {
          uint16_t* out = static_cast<uint16_t*>(d) + base;
          if (col < n) out[0] = dk::f32_to_bf16_rn(v0);
          if (col + 1 < n) out[1] = dk::f32_to_bf16_rn(v1);
        } else {
          float* out = static_cast<float*>(d) + base;
          if (col < n) out[0] = accumulate ? out[0] + v0 : v0;
          if (col + 1 < n) out[1] = accumulate ? out[1] + v1 : v1;
        }
      }
    }
  }
#else
  (void)sa, (void)sb, (void)d, (void)m, (void)n, (void)k, (void)sa_ue8m0, (void)sb_ue8m0, (void)out_bf16, (void)accumulate;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}
