// The small glue ops of the model graph that the big kernels leave over: a strided-batched FP32
// matmul (MLA weight absorption, W_UV, BF16 router gate and lm_head), interleaved RoPE from a
// cos/sin table, and a strided 2-D add/copy (residuals, column slices). Each follows the CPU
// backend's arithmetic (src/DeepKernels/Backends/Cpu) step for step where the order is fixed;
// products and sums are rounded separately (__fmul_rn / __fadd_rn) so nvcc cannot fuse them.
#include "dk/common.cuh"
#include "dk/convert.cuh"

namespace model_glue {

constexpr int kTile = 16;

__device__ __forceinline__ float load_b(const void* b, int b_bf16, long long index)
{
  return b_bf16 ? dk::bf16_to_f32(static_cast<const uint16_t*>(b)[index]) : static_cast<const float*>(b)[index];
}

}  // namespace model_glue

// C[z, i, j] = sum_k A[z, i, k] * B[z, j, k] with every operand addressed by its own element
// strides (so B^T, column slices and per-head batches need no copies). A and C FP32, B FP32 or
// BF16 (b_bf16). FP32 accumulation in ascending k with one fmaf per term. accumulate != 0 adds
// into C. Launch: grid = (ceil(n/16), ceil(m/16), batch), block = (16, 16, 1): each thread owns
// one C element; 16x16 tiles of A and B are staged through shared memory.
extern "C" __global__ void __launch_bounds__(256)
dk_batched_matmul(const float* a, const void* b, int b_bf16, float* c, int m, int n, int k, int accumulate,
                  long long sa_z, long long sa_m, long long sa_k,
                  long long sb_z, long long sb_n, long long sb_k,
                  long long sc_z, long long sc_m, long long sc_n)
{
  __shared__ float ta[model_glue::kTile][model_glue::kTile + 1];
  __shared__ float tb[model_glue::kTile][model_glue::kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int z = blockIdx.z;
  const int row = blockIdx.y * model_glue::kTile + ty;
  const int col = blockIdx.x * model_glue::kTile + tx;
  const int brow = blockIdx.x * model_glue::kTile + ty;  // the B row this thread stages
  const float* az = a + z * sa_z;
  float acc = 0.0f;
  for (int k0 = 0; k0 < k; k0 += model_glue::kTile) {
    const int ka = k0 + tx;
    ta[ty][tx] = (row < m && ka < k) ? az[row * sa_m + ka * sa_k] : 0.0f;
    tb[ty][tx] = (brow < n && ka < k) ? model_glue::load_b(b, b_bf16, z * sb_z + brow * sb_n + ka * sb_k) : 0.0f;
    __syncthreads();
    const int kk = min(model_glue::kTile, k - k0);
    for (int i = 0; i < kk; i++) acc = fmaf(ta[ty][i], tb[tx][i], acc);
    __syncthreads();
  }
  if (row < m && col < n) {
    float* dst = c + z * sc_z + row * sc_m + col * sc_n;
    *dst = accumulate ? __fadd_rn(*dst, acc) : acc;
  }
}

// Interleaved RoPE: for row t, head h, pair i with p = pos[t]:
//   out[t, h, 2i]   = x0 * cos[p, i] - x1 * sin[p, i]
//   out[t, h, 2i+1] = x0 * sin[p, i] + x1 * cos[p, i]
// with x0, x1 = in[t, h, 2i], in[t, h, 2i+1]; strided in/out (out may be in: each thread reads
// its pair before writing it). cos/sin are [positions, half] FP32, positions checked on the host.
// Launch: grid = (rows, 1, 1), block = (128, 1, 1); threads stride over heads * half pairs.
extern "C" __global__ void __launch_bounds__(128)
dk_rope(const float* in, float* out, const int* pos, const float* cos_table, const float* sin_table, int rows, int heads, int half,
        long long si_t, long long si_h, long long so_t, long long so_h)
{
  const int t = blockIdx.x;
  if (t >= rows) return;
  const long long p = pos[t];
  for (int e = threadIdx.x; e < heads * half; e += blockDim.x) {
    const int h = e / half, i = e % half;
    const float* src = in + t * si_t + h * si_h + 2 * i;
    float* dst = out + t * so_t + h * so_h + 2 * i;
    const float c = cos_table[p * half + i], s = sin_table[p * half + i];
    const float x0 = src[0], x1 = src[1];
    dst[0] = __fsub_rn(__fmul_rn(x0, c), __fmul_rn(x1, s));
    dst[1] = __fadd_rn(__fmul_rn(x0, s), __fmul_rn(x1, c));
  }
}

// out[r, j] = a[r, j] + b[r, j] (or a copy of a when b is null), FP32, every operand with its own
// row and column strides. Launch: grid = (ceil(cols / 256), rows, 1), block = (256, 1, 1)
// (rows per launch <= 65535).
extern "C" __global__ void __launch_bounds__(256)
dk_add_2d(const float* a, const float* b, float* out, int rows, int cols,
          long long sa_r, long long sa_c, long long sb_r, long long sb_c, long long so_r, long long so_c)
{
  const int r = blockIdx.y;
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows || j >= cols) return;
  const float x = a[r * sa_r + j * sa_c];
  out[r * so_r + j * so_c] = b ? __fadd_rn(x, b[r * sb_r + j * sb_c]) : x;
}
