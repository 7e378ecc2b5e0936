// The portable (sm_80+) FP8 block-scaled GEMM tile, shared by the dense GEMM (fp8_gemm.cu) and
// the grouped MoE GEMMs (grouped_gemm.cu). Not a PTX wrapper: it calls dk/cp_async.cuh and
// dk/mma.cuh for the instructions.
//
// One CTA of 256 threads (8 warps as 2 x 4) computes a 128 x 128 tile of D = A * B^T:
//  * A [rows, K] and B [N, K] are E4M3 bytes, K-contiguous. Each 128-wide K block (one scale
//    block) of both operands goes to shared memory with 16-byte cp.async in a 3-stage pipeline
//    (96 KiB); edges are zero-filled, never read past the end.
//  * Tiles are stored 128 bytes per row with the 16-byte chunks XOR-swizzled by (row & 3) << 1,
//    so the 8-byte fragment loads below hit 32 distinct banks per phase.
//  * sm_80 has no FP8 mma: fragments are loaded as raw bytes and widened in registers to F16 by
//    a shift (an E4M3 code shifted into an F16's exponent/mantissa field is exactly value * 2^-8,
//    subnormals included; NaN codes are mapped to an F16 NaN, so NaN propagates as on the CPU).
//    mma.sync m16n8k16 F16 -> FP32 then accumulates exact products value_a * value_b * 2^-16.
//  * K order inside a 32-wide step is permuted identically for A and B (lane t owns bytes
//    8t..8t+7 of each row: bytes 0-3 feed the first k16 mma, 4-7 the second), which lets one
//    8-byte load feed two mmas; a dot product does not care about the order of its terms.
//  * Promotion (DeepSeek-V3): the FP32 partial sum of each 128-wide K block is multiplied by
//    sa[row, kb] * sb[n / 128, kb] * 2^16 and added to FP32 accumulators.
// Split-K: a tile sums only K blocks [kb_begin, kb_end); the caller reduces the partial tiles.
// Alignment rules (checked by the host before launch): K % 16 == 0, lda % 16 == 0 and every
// operand base 16-byte aligned (cp.async moves 16-byte chunks). M and N are arbitrary.
#pragma once
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/cp_async.cuh"
#include "dk/mma.cuh"

namespace dk {
namespace gemm {

constexpr int kBlockM = 128;
constexpr int kBlockN = 128;
constexpr int kBlockK = 128;
constexpr int kStages = 3;
constexpr int kThreads = 256;
constexpr int kWarpsN = 4;                     // warps as 2 (M) x 4 (N)
constexpr int kWarpM = 64;                     // rows per warp: 4 m16 tiles
constexpr int kWarpN = 32;                     // columns per warp: 4 n8 tiles
constexpr int kTileBytes = kBlockM * kBlockK;  // one 128 x 128 E4M3 operand tile
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kSharedBytes = kStages * kStageBytes;

// Everything one GEMM tile needs. Row indices are relative to `a`, `sa`, `d` and `row_expert`.
struct Fp8GemmProblem {
  const unsigned char* a;  // [rows, k], row stride lda
  long long lda;
  int rows;                // rows of A/D that exist
  const void* sa;          // [rows, ceil(k/128)] FP32 or UE8M0, row stride sa_stride
  long long sa_stride;
  int sa_ue8m0;
  const unsigned char* b;  // [n, k], row stride k
  const void* sb;          // [ceil(n/128), ceil(k/128)] FP32 or UE8M0
  int sb_ue8m0;
  void* d;                 // [rows, n], row stride ldd; FP32 or BF16
  long long ldd;
  int n;
  int k;
  int out_bf16;
  int accumulate;          // D += A * B^T (FP32 output only)
  const int* row_expert;   // optional: only rows with row_expert[row] == expert are loaded/stored
  int expert;
  int kb_begin;            // the 128-wide K blocks this tile sums: [kb_begin, kb_end) (split-K)
  int kb_end;
};

DK_DEVICE int tile_offset(int row, int chunk) { return row * kBlockK + ((chunk ^ ((row & 3) << 1)) << 4); }

DK_DEVICE float load_scale(const void* p, long long index, int ue8m0)
{
  return ue8m0 ? ue8m0_to_f32(static_cast<const unsigned char*>(p)[index]) : static_cast<const float*>(p)[index];
}

// Bytes 0,1 (high = false) or 2,3 (high = true) of `w` as F16x2 holding each E4M3 value * 2^-8.
// A NaN code (S.1111.111) becomes the F16 NaN 0xFFFF so that NaN inputs give NaN outputs, as on
// the CPU backend.
DK_DEVICE uint32_t e4m3x2_to_f16x2_scaled(uint32_t w, bool high)
{
  const uint32_t r = __byte_perm(w, 0u, high ? 0x3424u : 0x1404u);  // code b at bits 8..15 of its half
  const uint32_t f = (r & 0x80008000u) | ((r >> 1) & 0x3F803F80u);
  const uint32_t t = r & 0x7F007F00u;
#if defined(DK_EMULATOR)
  const uint32_t nan = ((t & 0xFFFFu) == 0x7F00u ? 0xFFFFu : 0u) | ((t >> 16) == 0x7F00u ? 0xFFFF0000u : 0u);
#else
  const uint32_t nan = __vcmpeq2(t, 0x7F007F00u);  // 0xFFFF in each half that holds a NaN code
#endif
  return f | nan;
}

DK_DEVICE bool row_selected(const Fp8GemmProblem& p, int row)
{
  return row < p.rows && (p.row_expert == nullptr || __ldg(p.row_expert + row) == p.expert);
}

// Computes and stores the tile at (m0, n0); n0 must be a multiple of 128. All 256 threads of the
// CTA must call it with the same arguments. `smem` holds kSharedBytes, 16-byte aligned.
DK_DEVICE void fp8_gemm_tile(const Fp8GemmProblem& p, int m0, int n0, unsigned char* smem)
{
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int wm = warp / kWarpsN, wn = warp % kWarpsN;
  const int g = lane >> 2, t = lane & 3;
  const int num_kb = (p.k + kBlockK - 1) / kBlockK;  // scale row stride
  const int kb0 = p.kb_begin, count = p.kb_end - p.kb_begin;

  // Each thread copies 4 chunks of A and 4 of B per stage: rows (tid >> 3) + 32 i, chunk tid & 7.
  const int load_chunk = tid & 7;
  bool a_row_ok[4], b_row_ok[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = (tid >> 3) + 32 * i;
    a_row_ok[i] = row_selected(p, m0 + r);
    b_row_ok[i] = n0 + r < p.n;
  }

  auto load_stage = [&](int stage, int kb) {
    unsigned char* sa_tile = smem + stage * kStageBytes;
    unsigned char* sb_tile = sa_tile + kTileBytes;
    const int kcol = kb * kBlockK + load_chunk * 16;
    const bool k_ok = kcol < p.k;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = (tid >> 3) + 32 * i;
      const bool a_ok = k_ok && a_row_ok[i];
      const unsigned char* a_src = a_ok ? p.a + static_cast<long long>(m0 + r) * p.lda + kcol : p.a;
      cp_async_zfill<16>(sa_tile + tile_offset(r, load_chunk), a_src, a_ok ? 16 : 0);
      const bool b_ok = k_ok && b_row_ok[i];
      const unsigned char* b_src = b_ok ? p.b + static_cast<long long>(n0 + r) * p.k + kcol : p.b;
      cp_async_zfill<16>(sb_tile + tile_offset(r, load_chunk), b_src, b_ok ? 16 : 0);
    }
  };

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < count) load_stage(s, kb0 + s);
    cp_async_commit();
  }

  const long long sb_row = static_cast<long long>(n0 / kBlockN) * num_kb;
  for (int it = 0; it < count; ++it) {
    const int kb = kb0 + it;
    cp_async_wait<kStages - 2>();
    __syncthreads();  // stage `it` visible to all; the stage consumed at it - 1 is free
    {
      const int next = it + kStages - 1;
      if (next < count) load_stage(next % kStages, kb0 + next);
      cp_async_commit();
    }
    const unsigned char* sa_tile = smem + (it % kStages) * kStageBytes;
    const unsigned char* sb_tile = sa_tile + kTileBytes;
    const int ksteps = min(4, (p.k - kb * kBlockK + 31) / 32);

    float part[4][4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) part[i][j][e] = 0.0f;

#pragma unroll
    for (int q = 0; q < 4; ++q) {
      if (q >= ksteps) break;  // uniform across the CTA
      const int chunk = 2 * q + (t >> 1), within = (t & 1) * 8;
      uint2 ar[4][2], br[4];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = wm * kWarpM + i * 16 + g + 8 * h;
          ar[i][h] = *reinterpret_cast<const uint2*>(sa_tile + tile_offset(r, chunk) + within);
        }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = wn * kWarpN + j * 8 + g;
        br[j] = *reinterpret_cast<const uint2*>(sb_tile + tile_offset(r, chunk) + within);
      }
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        uint32_t af[4][4], bf[4][2];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const uint32_t w0 = s ? ar[i][0].y : ar[i][0].x;
          const uint32_t w1 = s ? ar[i][1].y : ar[i][1].x;
          af[i][0] = e4m3x2_to_f16x2_scaled(w0, false);
          af[i][1] = e4m3x2_to_f16x2_scaled(w1, false);
          af[i][2] = e4m3x2_to_f16x2_scaled(w0, true);
          af[i][3] = e4m3x2_to_f16x2_scaled(w1, true);
        }
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const uint32_t w = s ? br[j].y : br[j].x;
          bf[j][0] = e4m3x2_to_f16x2_scaled(w, false);
          bf[j][1] = e4m3x2_to_f16x2_scaled(w, true);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) mma_m16n8k16_f16(part[i][j], af[i], bf[j], part[i][j]);
      }
    }

    // Promotion: 2^16 undoes the two 2^-8 factors of the F16 operands.
    const float sbv = load_scale(p.sb, sb_row + kb, p.sb_ue8m0) * 65536.0f;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = m0 + wm * kWarpM + i * 16 + g + 8 * h;
        const float f = row < p.rows ? load_scale(p.sa, static_cast<long long>(row) * p.sa_stride + kb, p.sa_ue8m0) * sbv : 0.0f;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          acc[i][j][2 * h] = fmaf(part[i][j][2 * h], f, acc[i][j][2 * h]);
          acc[i][j][2 * h + 1] = fmaf(part[i][j][2 * h + 1], f, acc[i][j][2 * h + 1]);
        }
      }
  }
  cp_async_wait<0>();
  __syncthreads();  // shared memory may be reused by the caller's next tile

  // Epilogue: lane owns rows g and g + 8 of each m16 tile, columns 2t and 2t + 1 of each n8 tile.
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = m0 + wm * kWarpM + i * 16 + g + 8 * h;
      if (!row_selected(p, row)) continue;
      const long long base = static_cast<long long>(row) * p.ldd;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int col = n0 + wn * kWarpN + j * 8 + 2 * t + e;
          if (col >= p.n) continue;
          const float v = acc[i][j][2 * h + e];
          if (p.out_bf16) {
            static_cast<uint16_t*>(p.d)[base + col] = f32_to_bf16_rn(v);
          } else {
            float* dst = static_cast<float*>(p.d) + base + col;
            *dst = p.accumulate ? *dst + v : v;
          }
        }
    }
}

}  // namespace gemm
}  // namespace dk
