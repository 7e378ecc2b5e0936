// Building blocks of the Hopper (sm_90a) FP8 block-scaled GEMMs, shared by the dense kernel
// (fp8_gemm_sm90.cu) and the grouped MoE kernels (grouped_gemm_sm90.cu). Not a PTX wrapper: the
// instructions come from dk/tma.cuh, dk/mbarrier.cuh and dk/wgmma.cuh.
//
// One CTA = 3 warp groups (384 threads), persistent over 128 x 128 output tiles:
//  * Warp group 0 is the producer. Its first warp walks the tile schedule (all 32 lanes, so a
//    schedule may use warp collectives); lane 0 TMA-loads, for every tile and every 128-wide K
//    block (one scale block), the A box [128 rows x 128 bytes] and the B box [128 rows x 128
//    bytes] (128-byte swizzle) into a kStages-deep ring, completing on the stage's "full"
//    mbarrier (arrive.expect_tx). A stage is reused once every consumer warp has arrived on its
//    "empty" mbarrier. The other producer warps leave at once.
//  * Warp groups 1 and 2 are the consumers: each owns 64 rows of the tile and runs four wgmma
//    m64n128k32 E4M3 steps per K block into FP32 partials, then promotes them (DeepSeek-V3):
//    acc += partial * sa[row, kb] * sb[n / 128, kb], FP32 accumulators in registers.
//  * The epilogue stores straight from registers: rows the tile says exist (and, for the
//    contiguous grouped layout, that belong to the tile's expert), columns < n.
// Every role walks the same schedule (a pure function of the launch and of read-only global
// data), so producer and consumers agree on the sequence of work items and on the ring position
// without talking to each other beyond the mbarriers.
// Tails: rows and columns past a tensor map's end, and K past the end inside the last K block,
// arrive as zeros (TMA out-of-bounds fill). Rows of a box that belong to a neighbouring problem
// (the next expert's weights in a [G*N, K] map, the next group's activations) are loaded but
// never stored: D[r, c] depends only on A row r and B row c.
#pragma once
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/gemm_tile.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"
#include "dk/wgmma.cuh"

#if defined(DK_EMULATOR) || DK_HAS_SM90A
namespace dk {
namespace sm90 {

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
#else
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
  return p + ((1024 - (a & 1023)) & 1023);
}

// One unit of work: a 128 x 128 output tile of one problem (the dense GEMM, or one expert).
struct Tile {
  int a_row;              // A tensor-map row of the box's first row
  int b_row;              // B tensor-map row of the box's first row
  int n0;                 // first output column (a multiple of 128)
  int rows;               // rows of the tile that exist: scales are read and D stored below this
  long long sa_row;       // sa row of the tile's first row (row stride: k_blocks scales)
  long long sb_index;     // sb index of (n0 / 128, kb = 0) for this problem
  long long d_row;        // D row of the tile's first row (row stride: n)
  const int* row_expert;  // optional: store only rows r with row_expert[r] == expert
  int expert;
};

// The stage ring in shared memory and this thread's position in it (`it` counts K blocks over
// every tile so far; all roles advance it identically).
struct Pipeline {
  unsigned char* smem;  // kStages x (A tile, B tile), 1024-byte aligned
  uint64_t* full;       // kStages: TMA bytes landed
  uint64_t* empty;      // kStages: every consumer warp is done with the stage
  unsigned it;
};

// Thread 0 initialises the barriers; the caller then runs __syncthreads (the last CTA-wide
// barrier: the roles never meet again).
DK_DEVICE void init_barriers(uint64_t* full, uint64_t* empty)
{
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);
      mbarrier_init(&empty[s], kConsumers * 4);  // lane 0 of every consumer warp
    }
    fence_barrier_init();
  }
}

// Producer (one thread): the K blocks of one tile into the ring.
DK_DEVICE void produce_tile(Pipeline& pipe, const CUtensorMap* map_a, const CUtensorMap* map_b, const Tile& tile, int k_blocks)
{
  for (int kb = 0; kb < k_blocks; ++kb, ++pipe.it) {
    const unsigned s = pipe.it % kStages;
    if (pipe.it >= static_cast<unsigned>(kStages)) mbarrier_wait_parity(&pipe.empty[s], (pipe.it / kStages - 1) & 1u);
    unsigned char* tile_a = pipe.smem + s * kStageBytes;
    mbarrier_arrive_expect_tx(&pipe.full[s], kStageBytes);
    tma_load_2d(tile_a, map_a, kb * kBlockK, tile.a_row, &pipe.full[s]);
    tma_load_2d(tile_a + kTileABytes, map_b, kb * kBlockK, tile.b_row, &pipe.full[s]);
  }
}

// Consumer warp-group thread `t` (0..127) of consumer `c`: which rows of the tile it owns.
DK_DEVICE int consumer_row0(int c, int t) { return c * 64 + 16 * (t / 32) + (t % 32) / 4; }

// Consumer mainloop: wgmma over every K block of the tile with per-block promotion into acc.
// Rows at or past tile.rows take scale 0 (their A rows are zeros or belong to nobody).
DK_DEVICE void consume_tile(Pipeline& pipe, float (&acc)[kAcc], const Tile& tile, const void* sa, int sa_ue8m0, const void* sb, int sb_ue8m0,
                            int k_blocks, int c, int t)
{
  const int r0 = consumer_row0(c, t), r1 = r0 + 8;
#pragma unroll
  for (int i = 0; i < kAcc; ++i) acc[i] = 0.f;

  for (int kb = 0; kb < k_blocks; ++kb, ++pipe.it) {
    const unsigned s = pipe.it % kStages;
    const float sbv = gemm::load_scale(sb, tile.sb_index + kb, sb_ue8m0);
    const float s0 = r0 < tile.rows ? gemm::load_scale(sa, (tile.sa_row + r0) * k_blocks + kb, sa_ue8m0) * sbv : 0.f;
    const float s1 = r1 < tile.rows ? gemm::load_scale(sa, (tile.sa_row + r1) * k_blocks + kb, sa_ue8m0) * sbv : 0.f;

    mbarrier_wait_parity(&pipe.full[s], (pipe.it / kStages) & 1u);
    const unsigned char* tile_a = pipe.smem + s * kStageBytes + c * 64 * kBlockK;
    const unsigned char* tile_b = pipe.smem + s * kStageBytes + kTileABytes;
    float part[kAcc];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockK / 32; ++kk) {
      // 128-byte rows, 8-row core groups 1024 bytes apart (SBO); the k32 step moves the start.
      const uint64_t da = make_smem_desc(tile_a + 32 * kk, 128, 0, 1024);
      const uint64_t db = make_smem_desc(tile_b + 32 * kk, 128, 0, 1024);
      wgmma_m64k32_e4m3<kBlockN>(part, da, db, kk > 0);
    }
    wgmma_commit_group();
    wgmma_wait_group<0>();
    // The stage is free once every consumer warp has seen its wgmmas complete.
    if (t % 32 == 0) mbarrier_arrive(&pipe.empty[s]);
    // Promotion: accumulators with (i & 2) == 0 are row r0, the others row r1.
#pragma unroll
    for (int i = 0; i < kAcc; ++i) acc[i] += part[i] * ((i & 2) ? s1 : s0);
  }
}

// Epilogue: each thread owns rows r0 and r0 + 8 and pairs of adjacent columns of every n8 block.
DK_DEVICE void store_tile(const float (&acc)[kAcc], const Tile& tile, void* d, int n, int out_bf16, int accumulate, int c, int t)
{
  const int r0 = consumer_row0(c, t), q = t % 4;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = r0 + 8 * h;
    if (r >= tile.rows) continue;
    if (tile.row_expert != nullptr && __ldg(tile.row_expert + r) != tile.expert) continue;
    const long long base = (tile.d_row + r) * n;
#pragma unroll
    for (int j = 0; j < kBlockN / 8; ++j) {
      const int col = tile.n0 + 8 * j + 2 * q;
      const float v0 = acc[4 * j + 2 * h], v1 = acc[4 * j + 2 * h + 1];
      if (out_bf16) {
        uint16_t* out = static_cast<uint16_t*>(d) + base + col;
        if (col < n) out[0] = f32_to_bf16_rn(v0);
        if (col + 1 < n) out[1] = f32_to_bf16_rn(v1);
      } else {
        float* out = static_cast<float*>(d) + base + col;
        if (col < n) out[0] = accumulate ? out[0] + v0 : v0;
        if (col + 1 < n) out[1] = accumulate ? out[1] + v1 : v1;
      }
    }
  }
}

// The whole persistent kernel body for a schedule. `Schedule` has
// `DK_DEVICE bool next(Tile&)` (called by every thread of the producer's first warp and of the
// consumer warp groups, in warp-uniform control flow) and is constructed identically in all of
// them. `smem_raw` is the dynamic shared memory (kSharedBytes).
template <class Schedule>
DK_DEVICE void run(Schedule schedule, unsigned char* smem_raw, uint64_t* full, uint64_t* empty, const CUtensorMap* map_a, const CUtensorMap* map_b,
                   const void* sa, int sa_ue8m0, const void* sb, int sb_ue8m0, void* d, int n, int k, int out_bf16, int accumulate)
{
  const int tid = threadIdx.x;
  const int group = tid / 128;
  const int k_blocks = (k + kBlockK - 1) / kBlockK;
  Pipeline pipe{align_1024(smem_raw), full, empty, 0u};
  init_barriers(full, empty);
  __syncthreads();

  Tile tile;
  if (group == 0) {
    setmaxnreg_dec<40>();
    if (tid < 32) {
      // The whole first warp walks the schedule (it may use warp collectives); lane 0 loads.
      while (schedule.next(tile)) {
        if (tid == 0) produce_tile(pipe, map_a, map_b, tile, k_blocks);
      }
    }
    return;
  }

  setmaxnreg_inc<232>();
  const int c = group - 1, t = tid % 128;
  while (schedule.next(tile)) {
    float acc[kAcc];
    consume_tile(pipe, acc, tile, sa, sa_ue8m0, sb, sb_ue8m0, k_blocks, c, t);
    store_tile(acc, tile, d, n, out_bf16, accumulate, c, t);
  }
}

// Dense D[m, n]: tiles by blockIdx stride, consecutive tiles share a row band (A reuse in L2).
struct DenseSchedule {
  int m, n_tiles, k_blocks, tiles, next_tile;

  DK_DEVICE DenseSchedule(int m_, int n, int k) : m(m_)
  {
    n_tiles = (n + kBlockN - 1) / kBlockN;
    k_blocks = (k + kBlockK - 1) / kBlockK;
    tiles = ((m + kBlockM - 1) / kBlockM) * n_tiles;
    next_tile = blockIdx.x;
  }

  DK_DEVICE bool next(Tile& tile)
  {
    if (next_tile >= tiles) return false;
    const int m0 = (next_tile / n_tiles) * kBlockM, n0 = (next_tile % n_tiles) * kBlockN;
    next_tile += gridDim.x;
    tile.a_row = m0;
    tile.b_row = n0;
    tile.n0 = n0;
    tile.rows = min(kBlockM, m - m0);
    tile.sa_row = m0;
    tile.sb_index = static_cast<long long>(n0 / kBlockN) * k_blocks;
    tile.d_row = m0;
    tile.row_expert = nullptr;
    tile.expert = 0;
    return true;
  }
};

}  // namespace sm90
}  // namespace dk
#endif
