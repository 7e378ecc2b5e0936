// Test kernels for the PTX wrapper twins (emulator library only; also compiled by nvcc into a
// throwaway cubin so the inline PTX of every wrapper is checked by ptxas). Each one runs the
// wrapper on data laid out by the test, which checks the result against the PTX ISA tables.
#include "dk/common.cuh"
#include "dk/convert.cuh"
#include "dk/cp_async.cuh"
#include "dk/ldmatrix.cuh"
#include "dk/mma.cuh"

// One warp: lane l loads its fragments a[l][0..3], b[l][0..1], c[l][0..3], runs mma.sync
// m16n8k16 (is_f16 ? F16 : BF16) and stores d[l][0..3].
extern "C" __global__ void dk_test_mma_m16n8k16(const unsigned* a, const unsigned* b, const float* c, float* d, int is_f16)
{
  const int l = threadIdx.x;
  const uint32_t fa[4] = {a[l * 4 + 0], a[l * 4 + 1], a[l * 4 + 2], a[l * 4 + 3]};
  const uint32_t fb[2] = {b[l * 2 + 0], b[l * 2 + 1]};
  float acc[4] = {c[l * 4 + 0], c[l * 4 + 1], c[l * 4 + 2], c[l * 4 + 3]};
  if (is_f16) dk::mma_m16n8k16_f16(acc, fa, fb, acc);
  else dk::mma_m16n8k16_bf16(acc, fa, fb, acc);
  for (int i = 0; i < 4; ++i) d[l * 4 + i] = acc[i];
}

// One warp: copies 4 matrices of 8x8 16-bit elements (src[m][r][c]) to shared memory with row r
// of matrix m at slot (m * 8 + r) * 5 % 32 (so row addresses are not simply consecutive), then
// ldmatrix x{count} (trans when trans != 0); lane l stores its registers to out[l][0..count).
extern "C" __global__ void dk_test_ldmatrix(const unsigned short* src, unsigned* out, int count, int trans)
{
  __shared__ __align__(16) unsigned short tile[32 * 8];
  const int l = threadIdx.x;
  const int slot = (l * 5) % 32;
  for (int c = 0; c < 8; ++c) tile[slot * 8 + c] = src[l * 8 + c];
  __syncwarp();
  const void* row = &tile[slot * 8];
  uint32_t r[4] = {0, 0, 0, 0};
  if (count == 1) {
    if (trans) dk::ldmatrix_x1_trans(r[0], row);
    else dk::ldmatrix_x1(r[0], row);
  } else if (count == 2) {
    uint32_t q[2];
    if (trans) dk::ldmatrix_x2_trans(q, row);
    else dk::ldmatrix_x2(q, row);
    r[0] = q[0];
    r[1] = q[1];
  } else {
    if (trans) dk::ldmatrix_x4_trans(r, row);
    else dk::ldmatrix_x4(r, row);
  }
  for (int i = 0; i < count; ++i) out[l * count + i] = r[i];
}

// The conversion wrappers over n inputs: f32 pairs -> e4m3x2 and bf16x2; e4m3 codes (low byte
// of codes[i]) -> f16 and bf16 and f32.
extern "C" __global__ void dk_test_convert(const float* x, int n, unsigned short* e4m3x2, unsigned* bf16x2, const unsigned short* codes,
                                           unsigned* f16x2_out, unsigned* bf16x2_out, float* f32_out)
{
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float hi = x[i], lo = x[(i + 1) % n];
  e4m3x2[i] = dk::f32x2_to_e4m3x2_sat(hi, lo);
  bf16x2[i] = dk::f32x2_to_bf16x2_rn(hi, lo);
  const uint16_t pair = codes[i];
  f16x2_out[i] = dk::e4m3x2_to_f16x2(pair);
  bf16x2_out[i] = dk::e4m3x2_to_bf16x2(pair);
  f32_out[i] = dk::e4m3_to_f32(static_cast<uint8_t>(pair & 0xFFu));
}

// 128 threads stage src[0..1024) (floats) into shared memory with 16-byte cp.async in two
// commit groups (first half, second half), then wait as `mode` says:
//   0: wait_group 0 (both land)   1: wait_group 1 (only the first group lands)   2: no wait.
// After a barrier each thread copies shared words (t*8 .. t*8+7) rotated by 64 to dst, so it
// reads what other threads staged.
extern "C" __global__ void dk_test_cp_async(const float* src, float* dst, int mode)
{
  __shared__ __align__(16) float stage[1024];
  const int t = threadIdx.x;
  dk::cp_async<16>(&stage[t * 4], &src[t * 4]);
  dk::cp_async_commit();
  dk::cp_async<16>(&stage[512 + t * 4], &src[512 + t * 4]);
  dk::cp_async_commit();
  if (mode == 0) dk::cp_async_wait<0>();
  else if (mode == 1) dk::cp_async_wait<1>();
  __syncthreads();
  for (int j = 0; j < 8; ++j) {
    const int w = t * 8 + j;
    dst[w] = stage[(w + 64) % 1024];
  }
}

// cp.async with zero fill: thread t copies min(16, max(0, n_bytes - 16t)) bytes of src and
// zero-fills the rest; the 16-byte chunks are written to dst (128 threads, 2048 bytes).
extern "C" __global__ void dk_test_cp_async_zfill(const unsigned char* src, unsigned char* dst, int n_bytes)
{
  __shared__ __align__(16) unsigned char stage[2048];
  const int t = threadIdx.x;
  int valid = n_bytes - 16 * t;
  valid = valid < 0 ? 0 : (valid > 16 ? 16 : valid);
  // Clamp the source address for fully-masked chunks, as real kernels must.
  const unsigned char* from = valid > 0 ? src + 16 * t : src;
  dk::cp_async_zfill<16>(&stage[16 * t], from, valid);
  dk::cp_async_wait_all();
  __syncthreads();
  for (int j = 0; j < 16; ++j) dst[16 * t + j] = stage[16 * t + j];
}
