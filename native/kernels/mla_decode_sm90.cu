// Hopper (sm_90a) MLA decode over the paged latent cache: the same work items, semantics and
// partial outputs as dk_mla_decode_split (mla_decode.cu), so dk_mla_decode_combine merges them.
//
// Design (one CTA = 3 warp groups, 384 threads, per (schedule chunk, block of 64 query rows)):
//  * Warp group 0 is the producer (setmaxnreg.dec): one thread walks the chunk in 64-token KV
//    tiles aligned to absolute positions (chunks are page-aligned, pages are powers of two, so a
//    tile is one part of a page or whole pages) and TMA-loads each tile's pages into a ring of
//    shared-memory stages, completing on the stage's "full" mbarrier (arrive.expect_tx). Pages
//    at or past the chunk's end are never loaded (their block-table entries may be anything).
//    - BF16 cache: a 2-D tensor map over [slots, 576] BF16 with 64 x min(P, 64) boxes and the
//      128-byte swizzle; a tile is 9 column blocks of [64 tokens x 128 bytes] (8 KiB each), the
//      layout wgmma reads as is. Two stages.
//    - FP8 cache: a 2-D tensor map over the raw 656-byte records ([slots, 164] 4-byte words, no
//      swizzle), one raw stage; the consumers dequantize it (e4m3 x the FP32 scale of its
//      128-group, rounded to BF16; RoPE copied) into one BF16 tile in the same swizzled layout
//      and release the raw stage at once, so the next load overlaps this tile's math.
//  * Warp groups 1 and 2 are the consumers (setmaxnreg.inc); group c owns output columns
//    [256c, 256c + 256) and tokens [32c, 32c + 32) of each tile. Each computes its half of
//    S = Q K^T (64 rows x 32 tokens: 36 wgmma m64n32k16 steps over the 576 dims, Q and K from
//    shared memory), so the QK work is split, not repeated. Online softmax in FP32 in registers
//    (4 threads per row, shuffles within the group); the groups exchange only the per-row tile
//    maximum through shared memory (one named barrier), so both apply the same running maximum
//    and rescale factor; each keeps the row sum of its own tokens, added once at the end. P is
//    rounded to BF16 and written to a shared [64 x 64] tile (K-major, 128-byte swizzle); after a
//    second named barrier each group runs O += P V over all 64 tokens (wgmma m64n256k16, A = P
//    from shared memory, B = V = the first 512 dims of the same KV tile read MN-major, i.e. a
//    transposed B, so the latent rows are read once for both K and V).
//    The next tile's maximum exchange also orders the P tile's reuse after both groups' P V
//    wgmmas completed (each waits for them, wait_group 0, before arriving there).
//  * Tokens of a tile outside [chunk start, end) are masked in S by select (so NaN bytes in
//    unused cache slots never reach the maximum) and their V rows are zeroed before P V (0 x NaN
//    would be NaN): in the BF16 path each consumer group zeroes only its own 256 V columns (no
//    write-write overlap; the other group's S of such rows is masked anyway); the FP8
//    dequantization writes zeros for them.
//  * Causal (s_q > 1): query row r = s * h_q + h sees key j when j <= seqlen - s_q + s.
// Registers per consumer thread: O 128 + S 16 FP32 plus addressing, within the 232 that
// setmaxnreg grants (2 x 128 x 232 + 128 x 40 = 64512 of 65536).
//
// Launch: grid = (num_chunks, ceil(s_q*h_q / 64), 1), block = (384, 1, 1), dynamic shared memory
// kSmemBytes = 230400 (Q tile + two BF16 stages + the P tile + 1 KiB alignment slack; needs the
// opt-in; with the 1 KiB of static row statistics and barriers it fits sm_90's 227 KiB).
// kv_map: BF16 cache: element 2 bytes, dims {576, slots}, stride 1152, box {64, min(P, 64)},
// 128-byte swizzle; FP8 cache (cache_fp8 = 1): element 4 bytes, dims {164, slots}, stride 656,
// box {164, min(P, 64)}, no swizzle. The other parameters are those of dk_mla_decode_split.
// Only compiled into the fatbin for sm_90a (nvcc >= 12.3) and into the emulator; other archs get
// a body that traps.
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"
#include "dk/wgmma.cuh"

#if defined(DK_EMULATOR) || DK_HAS_SM90A
namespace mla_decode_sm90 {

constexpr int kLatent = 512, kHeadDim = 576;
constexpr int kQueryRows = 64;                           // query rows per CTA (one wgmma M)
constexpr int kKvTile = 64;                           // KV tokens per tile
constexpr int kColBlocks = kHeadDim / 64;               // 9 swizzle atoms of 64 BF16 per row
constexpr int kBlockBytes = kKvTile * 128;            // one column block of a tile: 8 KiB
constexpr int kTileBytes = kColBlocks * kBlockBytes;  // 73728 (also the Q tile)
constexpr int kRecordFp8 = 656;
constexpr int kRing = 2;                          // BF16 ring; FP8 uses one raw stage + one BF16 tile
constexpr int kPBytes = kQueryRows * kKvTile * 2;     // P tile, 128-byte rows
constexpr int kSmemBytes = kTileBytes + kRing * kTileBytes + kPBytes + 1024;
static_assert(kSmemBytes == 230400, "dk_mla_decode_sm90's documented shared memory size");
static_assert(kKvTile * kRecordFp8 <= kTileBytes, "the FP8 raw stage fits behind the BF16 tile");

DK_DEVICE unsigned char* align_smem_1024(unsigned char* p)
{
#if defined(DK_EMULATOR)
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
#else
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
  return p + ((1024 - (a & 1023)) & 1023);
}

// Byte offset of 16-byte chunk `ch` (0..71) of row `r` in a swizzled [64 x 576] BF16 tile.
DK_DEVICE int tile_chunk(int r, int ch) { return (ch >> 3) * kBlockBytes + r * 128 + (((ch & 7) ^ (r & 7)) << 4); }

}  // namespace mla_decode_sm90
#endif

extern "C" __global__ void __launch_bounds__(384, 1)
dk_mla_decode_sm90(const __grid_constant__ CUtensorMap kv_map, const void* q, int q_bf16, int cache_fp8, int page_size, const int* block_table,
                   int max_pages, const int* seqlens, const int* chunks, int num_chunks, float softmax_scale, int causal, int s_q, int h_q,
                   float* out_partial, float* lse_partial)
{
#if defined(DK_EMULATOR) || DK_HAS_SM90A
  using namespace mla_decode_sm90;
  DK_DYNAMIC_SHARED(unsigned char, smem_raw);
  unsigned char* smem = align_smem_1024(smem_raw);
  unsigned char* sq = smem;
  unsigned char* ring = smem + kTileBytes;
  unsigned char* sp = smem + (1 + kRing) * kTileBytes;  // P tile [64 x 64] BF16
  __shared__ __align__(8) uint64_t full_bar[kRing];
  __shared__ __align__(8) uint64_t empty_bar[kRing];
  __shared__ float red_max[2][kQueryRows];  // per-group row maxima of the current tile
  __shared__ float red_l[2][kQueryRows];    // per-group row sums at the end

  const int chunk = blockIdx.x;
  if (chunk >= num_chunks) return;  // uniform across the CTA
  const int b = chunks[chunk], t0 = chunks[num_chunks + chunk], t1 = chunks[2 * num_chunks + chunk];
  const int rows = s_q * h_q;
  const int r0 = blockIdx.y * kQueryRows;
  const int seqlen = seqlens[b];
  const int tid = threadIdx.x, group = tid / 128;
  const int stages = cache_fp8 ? 1 : kRing;

  int max_limit = -1;
  for (int r = 0; r < kQueryRows && r0 + r < rows; ++r)
    max_limit = max(max_limit, causal ? seqlen - s_q + (r0 + r) / h_q : seqlen - 1);
  const int end = min(t1, max_limit + 1);  // keys no row can see are never read
  const int base = t0 - t0 % kKvTile;
  const int tiles = end > t0 ? (end - base + kKvTile - 1) / kKvTile : 0;
  const int box_rows = min(page_size, kKvTile);

  if (tid == 0) {
    for (int s = 0; s < kRing; ++s) {
      dk::mbarrier_init(&full_bar[s], 1);
      dk::mbarrier_init(&empty_bar[s], 8);  // lane 0 of every consumer warp
    }
    dk::fence_barrier_init();
  }
  __syncthreads();  // the last CTA-wide barrier: the roles below never meet again

  if (group == 0) {
    dk::setmaxnreg_dec<40>();
    if (tid == 0) {
      for (int i = 0; i < tiles; ++i) {
        const int s = i % stages;
        if (i >= stages) dk::mbarrier_wait_parity(&empty_bar[s], static_cast<unsigned>(i / stages - 1) & 1u);
        const int pos0 = base + i * kKvTile;
        const int boxes = (min(end, pos0 + kKvTile) - pos0 + box_rows - 1) / box_rows;
        const unsigned box_bytes = cache_fp8 ? box_rows * kRecordFp8 : box_rows * 128 * kColBlocks;
        dk::mbarrier_arrive_expect_tx(&full_bar[s], boxes * box_bytes);
        unsigned char* stage = cache_fp8 ? ring + kTileBytes : ring + s * kTileBytes;
        for (int k = 0; k < boxes; ++k) {
          const int pos = pos0 + k * box_rows;
          const int page = block_table[static_cast<long long>(b) * max_pages + pos / page_size];
          const int slot = page * page_size + pos % page_size;
          if (cache_fp8) {
            dk::tma_load_2d(stage + k * box_rows * kRecordFp8, &kv_map, 0, slot, &full_bar[s]);
          } else {
            for (int cb = 0; cb < kColBlocks; ++cb)
              dk::tma_load_2d(stage + cb * kBlockBytes + k * box_rows * 128, &kv_map, cb * 64, slot, &full_bar[s]);
          }
        }
      }
    }
    return;
  }

  // Consumers.
  dk::setmaxnreg_inc<232>();
  const int c = group - 1;           // output columns [256c, 256c + 256)
  const int ct = tid - 128;          // 0..255 over both consumer groups
  const int t = tid % 128;
  const int w = t / 32, g = (t % 32) / 4, qd = t % 4;

  // Q rows -> shared BF16 in the swizzled layout (rows past the end are zeros).
  const long long q_base = static_cast<long long>(b) * rows * kHeadDim;
  for (int idx = ct; idx < kQueryRows * (kHeadDim / 8); idx += 256) {
    const int r = idx / (kHeadDim / 8), ch = idx % (kHeadDim / 8);
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (r0 + r < rows) {
      const long long e = q_base + static_cast<long long>(r0 + r) * kHeadDim + ch * 8;
      if (q_bf16) {
        v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(q) + e);
      } else {
        const float4 lo = *reinterpret_cast<const float4*>(static_cast<const float*>(q) + e);
        const float4 hi = *reinterpret_cast<const float4*>(static_cast<const float*>(q) + e + 4);
        v = make_uint4(dk::f32x2_to_bf16x2_rn(lo.y, lo.x), dk::f32x2_to_bf16x2_rn(lo.w, lo.z), dk::f32x2_to_bf16x2_rn(hi.y, hi.x),
                       dk::f32x2_to_bf16x2_rn(hi.w, hi.z));
      }
    }
    *reinterpret_cast<uint4*>(sq + tile_chunk(r, ch)) = v;
  }
  dk::fence_proxy_async();
  dk::named_barrier_sync(1, 256);

  // This thread's two rows of the tile (accumulator rows 16w + g and + 8) and their visibility.
  const int row_lo = 16 * w + g, row_hi = row_lo + 8;
  const int lim_lo = r0 + row_lo < rows ? (causal ? seqlen - s_q + (r0 + row_lo) / h_q : seqlen - 1) : -1;
  const int lim_hi = r0 + row_hi < rows ? (causal ? seqlen - s_q + (r0 + row_hi) / h_q : seqlen - 1) : -1;
  float m_lo = -INFINITY, m_hi = -INFINITY, l_lo = 0.0f, l_hi = 0.0f;
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;

  for (int i = 0; i < tiles; ++i) {
    const int s = i % stages;
    const unsigned parity = static_cast<unsigned>(i / stages) & 1u;
    const int pos0 = base + i * kKvTile;
    unsigned char* kv;
    if (cache_fp8) {
      kv = ring;
      const unsigned char* raw = ring + kTileBytes;
      dk::named_barrier_sync(1, 256);  // both groups are done with the previous BF16 tile
      dk::mbarrier_wait_parity(&full_bar[0], parity);
      for (int idx = ct; idx < kKvTile * (kHeadDim / 8); idx += 256) {
        const int j = idx / (kHeadDim / 8), ch = idx % (kHeadDim / 8);
        const int pos = pos0 + j;
        uint4 v = make_uint4(0u, 0u, 0u, 0u);
        if (pos >= t0 && pos < end) {
          const unsigned char* rec = raw + j * kRecordFp8;
          if (ch < kLatent / 8) {
            const float scale = *reinterpret_cast<const float*>(rec + kLatent + (ch / 16) * 4);
            const uint2 e = *reinterpret_cast<const uint2*>(rec + ch * 8);
            uint32_t packed[4];
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              const uint32_t pair = (k < 2 ? e.x : e.y) >> (16 * (k & 1));
              packed[k] = dk::f32x2_to_bf16x2_rn(dk::e4m3_to_f32(static_cast<uint8_t>(pair >> 8)) * scale,
                                                 dk::e4m3_to_f32(static_cast<uint8_t>(pair & 0xFFu)) * scale);
            }
            v = make_uint4(packed[0], packed[1], packed[2], packed[3]);
          } else {
            v = *reinterpret_cast<const uint4*>(rec + kLatent + 16 + (ch - kLatent / 8) * 16);
          }
        }
        *reinterpret_cast<uint4*>(kv + tile_chunk(j, ch)) = v;
      }
      __syncwarp();
      if (t % 32 == 0) dk::mbarrier_arrive(&empty_bar[0]);  // the raw stage is read: load the next one
      dk::fence_proxy_async();
      dk::named_barrier_sync(1, 256);  // the BF16 tile is complete
    } else {
      kv = ring + s * kTileBytes;
      dk::mbarrier_wait_parity(&full_bar[s], parity);
      if (pos0 < t0 || pos0 + kKvTile > end) {
        // Zero this group's V columns of the tile's tokens outside the chunk.
        for (int idx = t; idx < kKvTile * 32; idx += 128) {
          const int j = idx / 32, ch = 32 * c + idx % 32;
          const int pos = pos0 + j;
          if (pos < t0 || pos >= end) *reinterpret_cast<uint4*>(kv + tile_chunk(j, ch)) = make_uint4(0u, 0u, 0u, 0u);
        }
        dk::fence_proxy_async();
        dk::named_barrier_sync(2 + c, 128);
      }
    }

    // S = Q K^T over the 576 dims for this group's 32 tokens of the tile: 9 column blocks x 4
    // k16 steps (32 bytes each); the group's K rows start 32 rows (4 KiB) into each block.
    float sacc[16];
    dk::wgmma_fence();
#pragma unroll
    for (int cb = 0; cb < kColBlocks; ++cb)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint64_t da = dk::make_smem_desc(sq + cb * kBlockBytes + 32 * kk, 128, 0, 1024);
        const uint64_t db = dk::make_smem_desc(kv + cb * kBlockBytes + c * 32 * 128 + 32 * kk, 128, 0, 1024);
        dk::wgmma_m64k16_bf16_ss<32, 0>(sacc, da, db, (cb | kk) != 0);
      }
    dk::wgmma_commit_group();
    dk::wgmma_wait_group<0>();

    // Online softmax on this thread's two rows (tokens 32c + 8j + 2qd + {0, 1}); the row maximum
    // over the whole tile comes from both groups through shared memory.
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int pos = pos0 + 32 * c + 8 * j + 2 * qd + (e & 1);
        const int lim = (e & 2) ? lim_hi : lim_lo;
        const bool visible = pos >= t0 && pos < end && pos <= lim;
        const float v = visible ? sacc[4 * j + e] * softmax_scale : -INFINITY;
        sacc[4 * j + e] = v;
        if (e & 2) mx_hi = fmaxf(mx_hi, v);
        else mx_lo = fmaxf(mx_lo, v);
      }
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 1));
    mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xFFFFFFFFu, mx_lo, 2));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 1));
    mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xFFFFFFFFu, mx_hi, 2));
    if (qd == 0) {
      red_max[c][row_lo] = mx_lo;
      red_max[c][row_hi] = mx_hi;
    }
    dk::named_barrier_sync(1, 256);  // both halves' maxima are in
    mx_lo = fmaxf(mx_lo, red_max[1 - c][row_lo]);
    mx_hi = fmaxf(mx_hi, red_max[1 - c][row_hi]);
    const float mn_lo = fmaxf(m_lo, mx_lo), mn_hi = fmaxf(m_hi, mx_hi);
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float p[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float mn = (e & 2) ? mn_hi : mn_lo;
        const float v = sacc[4 * j + e];
        p[e] = mn == -INFINITY || v == -INFINITY ? 0.0f : expf(v - mn);
      }
      sum_lo += p[0] + p[1];
      sum_hi += p[2] + p[3];
      // P (BF16) into the shared [64 x 64] tile, K-major with the 128-byte swizzle.
      const int chunk_idx = 4 * c + j;
      *reinterpret_cast<uint32_t*>(sp + row_lo * 128 + ((chunk_idx ^ (row_lo & 7)) << 4) + 4 * qd) = dk::f32x2_to_bf16x2_rn(p[1], p[0]);
      *reinterpret_cast<uint32_t*>(sp + row_hi * 128 + ((chunk_idx ^ (row_hi & 7)) << 4) + 4 * qd) = dk::f32x2_to_bf16x2_rn(p[3], p[2]);
    }
    sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 1);
    sum_lo += __shfl_xor_sync(0xFFFFFFFFu, sum_lo, 2);
    sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 1);
    sum_hi += __shfl_xor_sync(0xFFFFFFFFu, sum_hi, 2);
    const float alpha_lo = mn_lo == -INFINITY ? 1.0f : expf(m_lo - mn_lo);  // 0 when m was -inf
    const float alpha_hi = mn_hi == -INFINITY ? 1.0f : expf(m_hi - mn_hi);
    m_lo = mn_lo;
    m_hi = mn_hi;
    l_lo = l_lo * alpha_lo + sum_lo;  // this group's tokens only; the halves are added at the end
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j] *= alpha_lo;
      o[4 * j + 1] *= alpha_lo;
      o[4 * j + 2] *= alpha_hi;
      o[4 * j + 3] *= alpha_hi;
    }
    dk::fence_proxy_async();
    dk::named_barrier_sync(1, 256);  // P complete

    // O += P V: P from shared memory (tokens 16kk..16kk+15 = 32 bytes of its rows), V = this
    // group's 256 columns, MN-major: 64-column atoms 8 KiB apart (LBO), 8-token row groups
    // 1 KiB apart (SBO).
    dk::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint64_t da = dk::make_smem_desc(sp + 32 * kk, 128, 0, 1024);
      const uint64_t db = dk::make_smem_desc(kv + 4 * c * kBlockBytes + kk * 2048, 128, kBlockBytes, 1024);
      dk::wgmma_m64k16_bf16_ss<256, 1>(o, da, db, 1);
    }
    dk::wgmma_commit_group();
    dk::wgmma_wait_group<0>();
    if (!cache_fp8) {
      __syncwarp();
      if (t % 32 == 0) dk::mbarrier_arrive(&empty_bar[s]);  // this warp is done with the stage
    }
  }

  // The row sums of both token halves, then the normalised partial output (this group's 256
  // columns) and the chunk's LSE. (The maxima already agree: both groups took the same ones.)
  if (qd == 0) {
    red_l[c][row_lo] = l_lo;
    red_l[c][row_hi] = l_hi;
  }
  dk::named_barrier_sync(1, 256);
  l_lo = red_l[0][row_lo] + red_l[1][row_lo];
  l_hi = red_l[0][row_hi] + red_l[1][row_hi];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r0 + (h ? row_hi : row_lo);
    if (row >= rows) continue;
    const float l = h ? l_hi : l_lo, m = h ? m_hi : m_lo;
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    float* dst = out_partial + (static_cast<long long>(chunk) * rows + row) * kLatent + 256 * c + 2 * qd;
#pragma unroll
    for (int j = 0; j < 32; ++j) *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(o[4 * j + 2 * h] * inv, o[4 * j + 2 * h + 1] * inv);
    if (c == 0 && qd == 0) lse_partial[static_cast<long long>(chunk) * rows + row] = l == 0.0f ? -INFINITY : m + logf(l);
  }
#else
  (void)q, (void)q_bf16, (void)cache_fp8, (void)page_size, (void)block_table, (void)max_pages, (void)seqlens, (void)chunks, (void)num_chunks,
      (void)softmax_scale, (void)causal, (void)s_q, (void)h_q, (void)out_partial, (void)lse_partial;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}
