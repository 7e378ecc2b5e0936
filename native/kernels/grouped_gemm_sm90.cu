// Hopper (sm_90a) grouped FP8 block-scaled GEMMs for MoE experts: the dense Hopper kernel's
// building blocks (dk/gemm_sm90.cuh: TMA + mbarrier ring, warp-specialised wgmma E4M3 with
// promotion per 128-K block, register epilogue) with grouped tile schedules. Same numerics as
// dk_fp8_gemm_sm90 and the portable grouped kernels (grouped_gemm.cu).
//
// Weights b [groups, n, k] E4M3 are one 2-D tensor map over [groups * n, k] (map_b; box
// {128, 128}, 128-byte swizzle): expert e's tile at column n0 is the box at row e * n + n0. When n
// is not a multiple of 128 the last box of an expert also holds the next expert's first rows;
// they only feed output columns >= n, which the epilogue never stores. sb: [groups, ceil(n/128),
// ceil(k/128)] FP32 or UE8M0. Rows that belong to no expert are never stored: their D rows are left
// untouched, as on the CPU backend and in the portable kernels.
//
// dk_grouped_gemm_contiguous_sm90: a [m, k] (map_a over [m, k]), sa [m, ceil(k/128)], d [m, n];
// m_indices[m] gives each row's expert (-1 or any id outside [0, groups) = padding). The
// persistent schedule walks the 128 x 128 tiles of [m, n] by blockIdx stride; the first warp of
// every role reduces the tile's 128 expert ids (min and max over ids above the last one done), so
// a tile of one expert (segments aligned to 128, as MoePermute lays them out) is one work item,
// an all-padding tile (trailing tiles when m is an upper bound) costs one warp reduction and no
// load, and a tile mixing experts (any other row order) runs once per expert present, storing
// only that expert's rows.
//
// dk_grouped_gemm_masked_sm90: a [groups, m_max, k] (map_a over [groups * m_max, k]),
// sa [groups, m_max, ceil(k/128)], d [groups, m_max, n]; expert g computes its first masked_m[g]
// rows (clamped to [0, m_max]). The persistent schedule numbers only the tiles that exist,
// (expert, m-tile, n-tile) in order, and CTAs stride over them: an expert with no tokens costs a
// read of its count. A box may hold the next expert's rows past masked_m; they are not stored.
//
// Launch (both): grid = (min(SMs, upper bound of tiles), 1, 1), block = 384, dynamic shared memory
// = dk::sm90::kSharedBytes (needs the opt-in). Alignment rules as for the dense Hopper kernel:
// k % 16 == 0, a and b 16-byte aligned; groups * n and the rows of a below 2^31 (TMA coordinates).
// The host (CudaBackend.GroupedGemmSm90.cs) checks them before encoding the tensor maps.
// Only compiled into the fatbin for sm_90a (nvcc >= 12.3) and into the emulator; other archs get a
// body that traps.
#include "dk/common.cuh"
#include "dk/gemm_sm90.cuh"

#if defined(DK_EMULATOR) || DK_HAS_SM90A
namespace grouped_gemm_sm90 {

using dk::sm90::kBlockK;
using dk::sm90::kBlockM;
using dk::sm90::kBlockN;
using dk::sm90::Tile;

constexpr int kNoExpert = 0x7FFFFFFF;

// Contiguous layout: tiles of [m, n] by blockIdx stride, one work item per expert in a tile.
// next() must be called by all 32 lanes of a warp together (it reduces over the warp).
struct ContiguousSchedule {
  const int* m_indices;
  int m, n, groups, n_tiles, nb, k_blocks, tiles, cur, prev;

  DK_DEVICE ContiguousSchedule(const int* m_indices_, int m_, int n_, int k, int groups_)
      : m_indices(m_indices_), m(m_), n(n_), groups(groups_)
  {
    n_tiles = (n + kBlockN - 1) / kBlockN;
    nb = n_tiles;
    k_blocks = (k + kBlockK - 1) / kBlockK;
    tiles = ((m + kBlockM - 1) / kBlockM) * n_tiles;
    cur = blockIdx.x;
    prev = -1;  // the tile's experts are visited in increasing order; -1: none done yet
  }

  DK_DEVICE bool next(Tile& tile)
  {
    const int lane = threadIdx.x % 32;
    while (cur < tiles) {
      const int m0 = (cur / n_tiles) * kBlockM, n0 = (cur % n_tiles) * kBlockN;
      const int rows = min(kBlockM, m - m0);
      int lo = kNoExpert, hi = -1;
#pragma unroll
      for (int i = 0; i < kBlockM / 32; ++i) {
        const int r = lane + 32 * i;
        if (r < rows) {
          const int e = __ldg(m_indices + m0 + r);
          if (e > prev && e < groups) {
            lo = min(lo, e);
            hi = max(hi, e);
          }
        }
      }
      lo = __reduce_min_sync(0xFFFFFFFFu, lo);
      hi = __reduce_max_sync(0xFFFFFFFFu, hi);
      if (lo == kNoExpert || lo == hi) {
        // Last (or no) expert of this tile: move on to this CTA's next tile.
        cur += gridDim.x;
        prev = -1;
        if (lo == kNoExpert) continue;
      } else {
        prev = lo;
      }
      tile.a_row = m0;
      tile.b_row = lo * n + n0;
      tile.n0 = n0;
      tile.rows = rows;
      tile.sa_row = m0;
      tile.sb_index = (static_cast<long long>(lo) * nb + n0 / kBlockN) * k_blocks;
      tile.d_row = m0;
      tile.row_expert = m_indices + m0;
      tile.expert = lo;
      return true;
    }
    return false;
  }
};

// Masked layout: the existing tiles of every expert, numbered (expert, m-tile, n-tile), by
// blockIdx stride. `base` counts the tiles of experts before `g`.
struct MaskedSchedule {
  const int* masked_m;
  int m_max, n, groups, n_tiles, k_blocks, cur, g, base, g_rows, g_tiles;

  DK_DEVICE MaskedSchedule(const int* masked_m_, int m_max_, int n_, int k, int groups_)
      : masked_m(masked_m_), m_max(m_max_), n(n_), groups(groups_)
  {
    n_tiles = (n + kBlockN - 1) / kBlockN;
    k_blocks = (k + kBlockK - 1) / kBlockK;
    cur = blockIdx.x;
    g = -1;
    base = 0;
    g_rows = 0;
    g_tiles = 0;
  }

  DK_DEVICE bool next(Tile& tile)
  {
    while (cur >= base + g_tiles) {
      base += g_tiles;
      if (++g >= groups) return false;
      g_rows = min(max(__ldg(masked_m + g), 0), m_max);
      g_tiles = ((g_rows + kBlockM - 1) / kBlockM) * n_tiles;
    }
    const int local = cur - base;
    cur += gridDim.x;
    const int m0 = (local / n_tiles) * kBlockM, n0 = (local % n_tiles) * kBlockN;
    const long long row0 = static_cast<long long>(g) * m_max + m0;
    tile.a_row = static_cast<int>(row0);
    tile.b_row = g * n + n0;
    tile.n0 = n0;
    tile.rows = min(kBlockM, g_rows - m0);
    tile.sa_row = row0;
    tile.sb_index = (static_cast<long long>(g) * n_tiles + n0 / kBlockN) * k_blocks;
    tile.d_row = row0;
    tile.row_expert = nullptr;
    tile.expert = g;
    return true;
  }
};

}  // namespace grouped_gemm_sm90
#endif

extern "C" __global__ void __launch_bounds__(384, 1)
dk_grouped_gemm_contiguous_sm90(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, const void* sa, const void* sb,
                                const int* m_indices, void* d, int m, int n, int k, int groups, int sa_ue8m0, int sb_ue8m0, int out_bf16)
{
#if defined(DK_EMULATOR) || DK_HAS_SM90A
  DK_DYNAMIC_SHARED(unsigned char, smem_raw);
  __shared__ __align__(8) uint64_t full_bar[dk::sm90::kStages];
  __shared__ __align__(8) uint64_t empty_bar[dk::sm90::kStages];
  dk::sm90::run(grouped_gemm_sm90::ContiguousSchedule(m_indices, m, n, k, groups), smem_raw, full_bar, empty_bar, &map_a, &map_b, sa, sa_ue8m0, sb,
                sb_ue8m0, d, n, k, out_bf16, 0);
#else
  (void)sa, (void)sb, (void)m_indices, (void)d, (void)m, (void)n, (void)k, (void)groups, (void)sa_ue8m0, (void)sb_ue8m0, (void)out_bf16;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}

extern "C" __global__ void __launch_bounds__(384, 1)
dk_grouped_gemm_masked_sm90(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, const void* sa, const void* sb,
                            const int* masked_m, void* d, int m_max, int n, int k, int groups, int sa_ue8m0, int sb_ue8m0, int out_bf16)
{
#if defined(DK_EMULATOR) || DK_HAS_SM90A
  DK_DYNAMIC_SHARED(unsigned char, smem_raw);
  __shared__ __align__(8) uint64_t full_bar[dk::sm90::kStages];
  __shared__ __align__(8) uint64_t empty_bar[dk::sm90::kStages];
  dk::sm90::run(grouped_gemm_sm90::MaskedSchedule(masked_m, m_max, n, k, groups), smem_raw, full_bar, empty_bar, &map_a, &map_b, sa, sa_ue8m0, sb,
                sb_ue8m0, d, n, k, out_bf16, 0);
#else
  (void)sa, (void)sb, (void)masked_m, (void)d, (void)m_max, (void)n, (void)k, (void)groups, (void)sa_ue8m0, (void)sb_ue8m0, (void)out_bf16;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}
