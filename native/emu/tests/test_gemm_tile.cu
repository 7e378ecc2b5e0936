// A small BF16 GEMM (emulator test kernel; also compiled by nvcc in the wrapper check) that uses
// the wrappers together the way the real GEMM kernels do: cp.async (with zero fill at the edges)
// into shared memory, ldmatrix x4 into mma fragments, mma.sync m16n8k16 with FP32 accumulators.
//
// D[M, N] = A[M, K] * B[N, K]^T, A and B row-major BF16 (K contiguous), D FP32; K % 32 == 0.
// Launch: grid = (ceil(N/128), ceil(M/128)), block = 128 (4 warps, 2 x 2, each a 64 x 64 sub-tile).
#include "dk/common.cuh"
#include "dk/cp_async.cuh"
#include "dk/ldmatrix.cuh"
#include "dk/mma.cuh"

namespace test_gemm_tile {
constexpr int kTile = 128, kStepK = 32;

// Stages rows [row0, row0 + 128) x k [k0, k0 + 32) of a [rows, K] BF16 matrix: 512 chunks of 16
// bytes, 4 per thread; rows past the end are zero-filled.
DK_DEVICE void stage(uint16_t (*dst)[kStepK], const uint16_t* src, int rows, int K, int row0, int k0, int t)
{
  for (int c = t; c < kTile * 4; c += 128) {
    const int r = c / 4, kc = (c % 4) * 8;
    const bool inside = row0 + r < rows;
    const uint16_t* from = inside ? src + static_cast<long long>(row0 + r) * K + k0 + kc : src;
    dk::cp_async_zfill<16>(&dst[r][kc], from, inside ? 16 : 0);
  }
}
}  // namespace test_gemm_tile

extern "C" __global__ void __launch_bounds__(128)
dk_test_gemm_bf16_tile(const unsigned short* a, const unsigned short* b, float* d, int m, int n, int k)
{
  using namespace test_gemm_tile;
  __shared__ __align__(16) uint16_t sa[kTile][kStepK];
  __shared__ __align__(16) uint16_t sb[kTile][kStepK];
  const int t = threadIdx.x, lane = t % 32, warp = t / 32;
  const int wm = (warp / 2) * 64, wn = (warp % 2) * 64;
  const int m0 = blockIdx.y * kTile, n0 = blockIdx.x * kTile;
  float acc[4][8][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j)
      for (int c = 0; c < 4; ++c) acc[i][j][c] = 0.0f;

  for (int k0 = 0; k0 < k; k0 += kStepK) {
    stage(sa, a, m, k, m0, k0, t);
    stage(sb, b, n, k, n0, k0, t);
    dk::cp_async_commit();
    dk::cp_async_wait<0>();
    __syncthreads();
    for (int kk = 0; kk < kStepK; kk += 16) {
      uint32_t fa[4][4], fb[8][2];
      for (int i = 0; i < 4; ++i) dk::ldmatrix_x4(fa[i], &sa[wm + i * 16 + lane % 16][kk + (lane / 16) * 8]);
      for (int j = 0; j < 8; j += 2) {
        uint32_t r[4];
        dk::ldmatrix_x4(r, &sb[wn + j * 8 + (lane / 16) * 8 + lane % 8][kk + ((lane / 8) % 2) * 8]);
        fb[j][0] = r[0];
        fb[j][1] = r[1];
        fb[j + 1][0] = r[2];
        fb[j + 1][1] = r[3];
      }
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 8; ++j) dk::mma_m16n8k16_bf16(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }

  const int g = lane / 4, q = lane % 4;
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 8; ++j)
      for (int c = 0; c < 4; ++c) {
        const int row = m0 + wm + i * 16 + g + 8 * (c >> 1), col = n0 + wn + j * 8 + 2 * q + (c & 1);
        if (row < m && col < n) d[static_cast<long long>(row) * n + col] = acc[i][j][c];
      }
}
