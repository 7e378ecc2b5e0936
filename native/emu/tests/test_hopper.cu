// Test kernels for the Hopper wrapper twins (emulator library only): TMA loads through a tensor
// map completing on an mbarrier, wgmma over TMA-loaded swizzled tiles, named barriers.
#include "dk/common.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"
#include "dk/wgmma.cuh"
#include "tma_boxes.cuh"

// 128 threads: TMA-loads the box at (c0, c1) of a 2-D tensor map into dynamic shared memory
// (completing on an mbarrier), waits for it unless skip_wait, and copies the raw shared bytes
// (box_bytes, in their swizzled positions) to out.
extern "C" __global__ void dk_test_tma_load(const __grid_constant__ CUtensorMap map, int c0, int c1, int box_bytes, unsigned char* out, int skip_wait)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  __shared__ __align__(8) uint64_t bar;
  const dk_test::TmaBox box{smem, &map, c0, c1};
  dk_test::tma_load_boxes(&bar, static_cast<unsigned>(box_bytes), &box, 1);
  if (!skip_wait) dk::mbarrier_wait_parity(&bar, 0);
  for (int i = threadIdx.x; i < box_bytes; i += blockDim.x) out[i] = smem[i];
}

// One warpgroup: A [64 x 128] and B [32 x 128] E4M3 (K-major, row pitch 128 bytes) arrive by TMA
// with the 128-byte swizzle; four wgmma m64n32k32 steps accumulate D = A * B^T; thread t stores
// its 16 accumulators to out[t * 16 ..].
extern "C" __global__ void dk_test_wgmma_e4m3(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, float* out)
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
    dk::wgmma_m64k32_e4m3<32>(d, da, db, k > 0);
  }
  dk::wgmma_commit_group();
  dk::wgmma_wait_group<0>();
  for (int i = 0; i < 16; ++i) out[t * 16 + i] = d[i];
}

// 256 threads in two warpgroups, each with its own named barrier: thread t writes in[t] to
// shared memory, syncs its group only, and reads the value of the thread 64 places further on
// within its group.
extern "C" __global__ void dk_test_named_barrier(const int* in, int* out)
{
  __shared__ int values[256];
  const int t = threadIdx.x, group = t / 128;
  values[t] = in[t];
  dk::named_barrier_sync(1 + group, 128);
  out[t] = values[group * 128 + (t % 128 + 64) % 128];
}
