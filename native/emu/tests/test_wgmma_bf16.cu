// Test kernels for the BF16 wgmma twins (emulator library only): A from shared memory with a
// K-major B, and A from registers with an MN-major (transposed) B, both over TMA-loaded tiles
// with the 128-byte swizzle.
#include "dk/common.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"
#include "dk/wgmma.cuh"
#include "tma_boxes.cuh"

// One warpgroup: A [64 x 64] and B [32 x 64] BF16 (K-major, 128-byte rows) arrive by TMA
// (boxes {64, 64} and {64, 32}); four wgmma m64n32k16 steps accumulate D = A * B^T; thread t
// stores its 16 accumulators to out[t * 16 ..].
extern "C" __global__ void dk_test_wgmma_bf16_ss(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, float* out)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  unsigned char* tile_a = smem;
  unsigned char* tile_b = smem + 64 * 128;
  __shared__ __align__(8) uint64_t bar;
  const int t = threadIdx.x;
  const dk_test::TmaBox boxes[2] = {{tile_a, &map_a, 0, 0}, {tile_b, &map_b, 0, 0}};
  dk_test::tma_load_boxes(&bar, (64 + 32) * 128, boxes, 2);
  dk::mbarrier_wait_parity(&bar, 0);
  float d[16];
  dk::wgmma_fence();
  for (int k = 0; k < 4; ++k) {
    const uint64_t da = dk::make_smem_desc(tile_a + 32 * k, 128, 0, 1024);
    const uint64_t db = dk::make_smem_desc(tile_b + 32 * k, 128, 0, 1024);
    dk::wgmma_m64k16_bf16_ss<32, 0>(d, da, db, k > 0);
  }
  dk::wgmma_commit_group();
  dk::wgmma_wait_group<0>();
  for (int i = 0; i < 16; ++i) out[t * 16 + i] = d[i];
}

// One warpgroup: A [64 x 32] BF16 row-major in global memory goes to registers in the wgmma
// fragment layout; B is stored [K = 32][N = 128] BF16 (N contiguous) and arrives by two TMA boxes
// {64, 32} (columns 0-63, 64-127: two 128-byte swizzle atoms 4 KiB apart); two wgmma m64n128k16
// steps with the transposed (MN-major) B accumulate D = A * B; thread t stores its 64
// accumulators to out[t * 64 ..].
extern "C" __global__ void dk_test_wgmma_bf16_rs_mn(const uint16_t* a, const __grid_constant__ CUtensorMap map_b, float* out)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ __align__(8) uint64_t bar;
  const int t = threadIdx.x;
  const dk_test::TmaBox boxes[2] = {{smem, &map_b, 0, 0}, {smem + 32 * 128, &map_b, 64, 0}};
  dk_test::tma_load_boxes(&bar, 2 * 32 * 128, boxes, 2);
  dk::mbarrier_wait_parity(&bar, 0);
  const int w = t / 32, g = (t % 32) / 4, q = t % 4;
  auto pair = [&](int row, int col) {
    return static_cast<uint32_t>(a[row * 32 + col]) | (static_cast<uint32_t>(a[row * 32 + col + 1]) << 16);
  };
  float d[64];
  dk::wgmma_fence();
  for (int k = 0; k < 2; ++k) {
    const int r = 16 * w + g, c = 16 * k + 2 * q;
    const uint32_t frag[4] = {pair(r, c), pair(r + 8, c), pair(r, c + 8), pair(r + 8, c + 8)};
    const uint64_t db = dk::make_smem_desc(smem + k * 2048, 128, 32 * 128, 1024);
    dk::wgmma_m64k16_bf16_rs<128, 1>(d, frag, db, k > 0);
  }
  dk::wgmma_commit_group();
  dk::wgmma_wait_group<0>();
  for (int i = 0; i < 64; ++i) out[t * 64 + i] = d[i];
}
