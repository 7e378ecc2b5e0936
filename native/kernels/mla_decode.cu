// Portable (sm_80+) MLA decode over the paged latent cache, split-KV, absorbed (MQA) form:
// semantics of MlaDecode (src/DeepKernels/Ops/MlaDecode) and the CPU backend.
//
// dk_mla_decode_split: one CTA per (schedule chunk, block of 64 query rows). The query rows of a
// sequence are r = s * h_q + h (s_q x h_q of them), so all heads of a KV page are processed
// together and each page is read once per 64 rows. Per KV tile of 32 tokens:
//   * the tile goes to shared memory with 16-byte cp.async (BF16 pages: double-buffered; FP8
//     pages: raw records staged, then dequantized to BF16 in shared memory, c_kv = e4m3 * scale
//     rounded to BF16), tokens outside the chunk are zero-filled and never read;
//   * S = Q K^T with ldmatrix + mma.sync m16n8k16 BF16 -> FP32 (8 warps: 4 row groups x 2 token
//     halves), times softmax_scale, into shared memory;
//   * online softmax in FP32, 4 threads per row: masked keys (past the chunk, or causal: key j is
//     visible to query s when j <= seqlen - s_q + s) get probability 0; P is rounded to BF16;
//   * O (FP32, 64 x 512, 4 row groups x 2 column halves of 256 per warp) is rescaled and
//     O += P V with ldmatrix.trans for V (V = the first 512 key columns).
// It writes the chunk's normalised partial output [chunk, rows, 512] FP32 and its LSE
// [chunk, rows] (natural log; -inf when the chunk has no visible key for that row).
// Launch: grid = (num_chunks, ceil(s_q*h_q / 64), 1), block = (256, 1, 1), dynamic shared memory
// 164096 bytes (needs the opt-in; fits sm_80's 163 KiB and sm_90's 227 KiB).
// chunks: [3, num_chunks] int32 = sequence index, first token, end token of each chunk
// (MlaSchedule.ChunkBatch / ChunkStart / ChunkEnd). q: [b, s_q, h_q, 576] FP32 or BF16 (q_bf16;
// FP32 is rounded to BF16). cache: BF16 records of 1152 bytes or FP8 records of 656 bytes
// (cache_fp8), 16-byte aligned; block_table [b, max_pages]; seqlens [b].
//
// dk_mla_decode_combine: merges a sequence's chunks by their LSEs, lse = ln(sum_c exp(lse_c)),
// out = sum_c exp(lse_c - lse) out_c; a row with no visible key (no chunk, or all -inf) gets
// out = 0 and lse = +inf. Launch: grid = (s_q*h_q, b, 1), block = (128, 1, 1).
// seq_chunk_offsets: [b + 1] (MlaSchedule.SequenceChunkOffsets); output [b, s_q, h_q, 512] FP32
// or BF16 (out_bf16); lse [b, h_q, s_q].
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/cp_async.cuh"
#include "dk/ldmatrix.cuh"
#include "dk/mma.cuh"

namespace {
constexpr int kLat = 512, kDim = 576;
constexpr int kRows = 64;                       // query rows per CTA
constexpr int kTile = 32;                       // KV tokens per tile
constexpr int kStride = kDim * 2 + 16;          // padded BF16 row: ldmatrix rows hit distinct banks
constexpr int kChunksPerRow = kDim * 2 / 16;    // 72 16-byte chunks per BF16 record
constexpr int kFp8Record = 656;
constexpr int kFp8Chunks = kFp8Record / 16;     // 41
constexpr int kSStride = kTile + 1;             // fp32 scores
constexpr int kPStride = kTile * 2 + 16;        // bf16 probabilities, padded (80 bytes)
constexpr int kQBytes = kRows * kStride;        // 74752
constexpr int kKBytes = kTile * kStride;        // 37376 per stage
constexpr int kSBytes = kRows * kSStride * 4;   // 8448
constexpr int kPBytes = kRows * kPStride;       // 5120
constexpr int kStatBytes = kRows * 4 * 4;       // m, l, alpha, limit
static_assert(kQBytes + 2 * kKBytes + kSBytes + kPBytes + kStatBytes == 164096, "dk_mla_decode_split's documented shared memory size");
}  // namespace

extern "C" __global__ void __launch_bounds__(256, 1)
dk_mla_decode_split(const void* q, int q_bf16, const unsigned char* cache, int cache_fp8, int page_size, const int* block_table,
                    int max_pages, const int* seqlens, const int* chunks, int num_chunks, float softmax_scale, int causal, int s_q, int h_q,
                    float* out_partial, float* lse_partial)
{
  DK_DYNAMIC_SHARED(unsigned char, smem);
  unsigned char* sq = smem;
  unsigned char* sk0 = sq + kQBytes;
  unsigned char* sk1 = sk0 + kKBytes;
  float* ss = reinterpret_cast<float*>(sk1 + kKBytes);
  unsigned char* sp = reinterpret_cast<unsigned char*>(ss) + kSBytes;
  float* s_m = reinterpret_cast<float*>(sp + kPBytes);
  float* s_l = s_m + kRows;
  float* s_alpha = s_l + kRows;
  int* s_limit = reinterpret_cast<int*>(s_alpha + kRows);

  const int chunk = blockIdx.x;
  if (chunk >= num_chunks) return;
  const int b = chunks[chunk], t0 = chunks[num_chunks + chunk], t1 = chunks[2 * num_chunks + chunk];
  const int rows = s_q * h_q;
  const int r0 = blockIdx.y * kRows;
  const int seqlen = seqlens[b];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;

  // Query rows -> shared BF16, and per-row state.
  const long long q_base = static_cast<long long>(b) * rows * kDim;
  if (q_bf16) {
    for (int idx = tid; idx < kRows * kChunksPerRow; idx += 256) {
      const int r = idx / kChunksPerRow, c = idx % kChunksPerRow;
      const bool ok = r0 + r < rows;
      const unsigned char* src = ok ? static_cast<const unsigned char*>(q) + (q_base + static_cast<long long>(r0 + r) * kDim) * 2 + c * 16
                                    : static_cast<const unsigned char*>(q);
      dk::cp_async_zfill<16>(sq + r * kStride + c * 16, src, ok ? 16 : 0);
    }
  } else {
    for (int idx = tid; idx < kRows * (kDim / 2); idx += 256) {
      const int r = idx / (kDim / 2), c = idx % (kDim / 2);
      float2 v = make_float2(0.0f, 0.0f);
      if (r0 + r < rows) v = *reinterpret_cast<const float2*>(static_cast<const float*>(q) + q_base + static_cast<long long>(r0 + r) * kDim + 2 * c);
      *reinterpret_cast<uint32_t*>(sq + r * kStride + c * 4) = dk::f32x2_to_bf16x2_rn(v.y, v.x);
    }
  }
  int max_limit = -1;
  for (int r = 0; r < kRows; ++r) {
    const int row = r0 + r;
    const int limit = row >= rows ? -1 : (causal ? seqlen - s_q + row / h_q : seqlen - 1);
    max_limit = max(max_limit, limit);
    if (tid == r) {
      s_limit[r] = limit;
      s_m[r] = -INFINITY;
      s_l[r] = 0.0f;
    }
  }
  const int end = min(t1, max_limit + 1);  // keys no row can see are never read

  auto load_tile = [&](int pos0, unsigned char* dst) {
    if (!cache_fp8) {
      for (int idx = tid; idx < kTile * kChunksPerRow; idx += 256) {
        const int j = idx / kChunksPerRow, c = idx % kChunksPerRow;
        const int pos = pos0 + j;
        const bool ok = pos < end;
        const unsigned char* src = cache;
        if (ok) {
          const long long page = block_table[static_cast<long long>(b) * max_pages + pos / page_size];
          src = cache + (page * page_size + pos % page_size) * (kDim * 2) + c * 16;
        }
        dk::cp_async_zfill<16>(dst + j * kStride + c * 16, src, ok ? 16 : 0);
      }
    } else {
      for (int idx = tid; idx < kTile * kFp8Chunks; idx += 256) {
        const int j = idx / kFp8Chunks, c = idx % kFp8Chunks;
        const int pos = pos0 + j;
        const bool ok = pos < end;
        const unsigned char* src = cache;
        if (ok) {
          const long long page = block_table[static_cast<long long>(b) * max_pages + pos / page_size];
          src = cache + (page * page_size + pos % page_size) * kFp8Record + c * 16;
        }
        dk::cp_async_zfill<16>(dst + j * kFp8Record + c * 16, src, ok ? 16 : 0);
      }
    }
    dk::cp_async_commit();
  };

  float o[32][4];
#pragma unroll
  for (int j = 0; j < 32; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[j][e] = 0.0f;

  const int wr = (warp & 3) * 16;  // this warp's 16 query rows (QK and PV)
  const int wt = (warp >> 2) * 16; // its 16 tokens of the tile in QK
  const int wc = (warp >> 2) * 256; // its 256 output columns in PV

  if (t0 < end) load_tile(t0, cache_fp8 ? sk1 : sk0);
  int stage = 0;
  for (int pos0 = t0; pos0 < end; pos0 += kTile) {
    dk::cp_async_wait_all();
    __syncthreads();  // the tile (and Q) landed; the previous tile's buffers are free
    unsigned char* sk;
    if (cache_fp8) {
      // Dequantize the staged records (in sk1) into BF16 rows in sk0.
      sk = sk0;
      for (int idx = tid; idx < kTile * (kDim / 2); idx += 256) {
        const int j = idx / (kDim / 2), c = idx % (kDim / 2);
        const unsigned char* rec = sk1 + j * kFp8Record;
        uint32_t packed;
        if (c < kLat / 2) {
          const float scale = *reinterpret_cast<const float*>(rec + kLat + (2 * c / 128) * 4);
          const float lo = dk::e4m3_to_f32(rec[2 * c]) * scale, hi = dk::e4m3_to_f32(rec[2 * c + 1]) * scale;
          packed = dk::f32x2_to_bf16x2_rn(hi, lo);
        } else {
          packed = *reinterpret_cast<const uint32_t*>(rec + kLat + 16 + (c - kLat / 2) * 4);
        }
        *reinterpret_cast<uint32_t*>(sk + j * kStride + c * 4) = packed;
      }
      __syncthreads();
      if (pos0 + kTile < end) load_tile(pos0 + kTile, sk1);
    } else {
      sk = stage ? sk1 : sk0;
      if (pos0 + kTile < end) load_tile(pos0 + kTile, stage ? sk0 : sk1);
      stage ^= 1;
    }

    // S = Q K^T: this warp's 16 rows x 16 tokens over 576.
    {
      float acc[2][4];
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[n][e] = 0.0f;
      const unsigned char* a_row = sq + (wr + (lane & 15)) * kStride + (lane >> 4) * 16;
      const unsigned char* b_row = sk + (wt + (lane & 7) + ((lane >> 4) << 3)) * kStride + ((lane >> 3) & 1) * 16;
#pragma unroll 4
      for (int kk = 0; kk < kDim / 16; ++kk) {
        uint32_t af[4], bf[4];
        dk::ldmatrix_x4(af, a_row + kk * 32);
        dk::ldmatrix_x4(bf, b_row + kk * 32);
        const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
        dk::mma_m16n8k16_bf16(acc[0], af, b0, acc[0]);
        dk::mma_m16n8k16_bf16(acc[1], af, b1, acc[1]);
      }
#pragma unroll
      for (int n = 0; n < 2; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) ss[(wr + g + 8 * (e >> 1)) * kSStride + wt + n * 8 + 2 * t + (e & 1)] = acc[n][e] * softmax_scale;
    }
    __syncthreads();

    // Online softmax: 4 threads per row, 8 tokens each.
    {
      const int r = tid >> 2, part = tid & 3;
      const int limit = s_limit[r];
      float sv[8];
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int col = part * 8 + j, pos = pos0 + col;
        const bool visible = pos < end && pos <= limit;
        sv[j] = visible ? ss[r * kSStride + col] : -INFINITY;
        mx = fmaxf(mx, sv[j]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xFFFFFFFFu, mx, 2));
      const float m_old = s_m[r];
      const float m_new = fmaxf(m_old, mx);
      float sum = 0.0f;
      uint32_t* prow = reinterpret_cast<uint32_t*>(sp + r * kPStride + part * 16);
#pragma unroll
      for (int j = 0; j < 8; j += 2) {
        const float p0 = m_new == -INFINITY || sv[j] == -INFINITY ? 0.0f : expf(sv[j] - m_new);
        const float p1 = m_new == -INFINITY || sv[j + 1] == -INFINITY ? 0.0f : expf(sv[j + 1] - m_new);
        sum += p0 + p1;
        prow[j / 2] = dk::f32x2_to_bf16x2_rn(p1, p0);
      }
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 1);
      sum += __shfl_xor_sync(0xFFFFFFFFu, sum, 2);
      const float alpha = m_new == -INFINITY ? 1.0f : expf(m_old - m_new);  // 0 when m_old = -inf
      __syncwarp();
      if (part == 0) {
        s_alpha[r] = alpha;
        s_m[r] = m_new;
        s_l[r] = s_l[r] * alpha + sum;
      }
    }
    __syncthreads();

    // O = alpha * O + P V: this warp's 16 rows x 256 columns.
    {
      const float a_lo = s_alpha[wr + g], a_hi = s_alpha[wr + g + 8];
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        o[j][0] *= a_lo;
        o[j][1] *= a_lo;
        o[j][2] *= a_hi;
        o[j][3] *= a_hi;
      }
#pragma unroll
      for (int kk = 0; kk < kTile / 16; ++kk) {
        uint32_t pf[4];
        dk::ldmatrix_x4(pf, sp + (wr + (lane & 15)) * kPStride + kk * 32 + (lane >> 4) * 16);
        const int mi = lane >> 3;
        const unsigned char* v_row = sk + (kk * 16 + (lane & 7) + ((mi & 1) << 3)) * kStride + (wc + ((mi >> 1) << 3)) * 2;
#pragma unroll
        for (int n = 0; n < 16; ++n) {
          uint32_t vf[4];
          dk::ldmatrix_x4_trans(vf, v_row + n * 32);
          const uint32_t b0[2] = {vf[0], vf[1]}, b1[2] = {vf[2], vf[3]};
          dk::mma_m16n8k16_bf16(o[2 * n], pf, b0, o[2 * n]);
          dk::mma_m16n8k16_bf16(o[2 * n + 1], pf, b1, o[2 * n + 1]);
        }
      }
    }
  }
  dk::cp_async_wait_all();
  __syncthreads();

  // Normalised partial output and LSE of this chunk.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = wr + g + 8 * h;
    const int row = r0 + r;
    if (row >= rows) continue;
    const float l = s_l[r];
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    float* dst = out_partial + (static_cast<long long>(chunk) * rows + row) * kLat + wc;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const float2 v = make_float2(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
      *reinterpret_cast<float2*>(dst + j * 8 + 2 * t) = v;
    }
    if (wc == 0 && t == 0) lse_partial[static_cast<long long>(chunk) * rows + row] = l == 0.0f ? -INFINITY : s_m[r] + logf(l);
  }
}

extern "C" __global__ void __launch_bounds__(128)
dk_mla_decode_combine(const float* out_partial, const float* lse_partial, const int* seq_chunk_offsets, void* output, int out_bf16, float* lse,
                      int batch, int s_q, int h_q)
{
  const int row = blockIdx.x, b = blockIdx.y;
  const int rows = s_q * h_q;
  if (row >= rows || b >= batch) return;
  const int c0 = seq_chunk_offsets[b], c1 = seq_chunk_offsets[b + 1];
  float mx = -INFINITY;
  for (int c = c0; c < c1; ++c) mx = fmaxf(mx, lse_partial[static_cast<long long>(c) * rows + row]);
  float total = INFINITY;
  if (mx != -INFINITY) {
    double sum = 0.0;
    for (int c = c0; c < c1; ++c) sum += exp(static_cast<double>(lse_partial[static_cast<long long>(c) * rows + row] - mx));
    total = mx + static_cast<float>(log(sum));
  }
  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  const int col = threadIdx.x * 4;
  if (mx != -INFINITY) {
    for (int c = c0; c < c1; ++c) {
      const float w = expf(lse_partial[static_cast<long long>(c) * rows + row] - total);
      if (w == 0.0f) continue;
      const float4 v = *reinterpret_cast<const float4*>(out_partial + (static_cast<long long>(c) * rows + row) * kLat + col);
      acc[0] += w * v.x;
      acc[1] += w * v.y;
      acc[2] += w * v.z;
      acc[3] += w * v.w;
    }
  }
  const long long o = (static_cast<long long>(b) * rows + row) * kLat + col;
  if (out_bf16) {
    uint16_t* dst = static_cast<uint16_t*>(output) + o;
    for (int e = 0; e < 4; ++e) dst[e] = dk::f32_to_bf16_rn(acc[e]);
  } else {
    *reinterpret_cast<float4*>(static_cast<float*>(output) + o) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  }
  if (threadIdx.x == 0) {
    const int s = row / h_q, h = row % h_q;
    lse[(static_cast<long long>(b) * h_q + h) * s_q + s] = total;
  }
}
