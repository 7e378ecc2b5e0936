// wgmma (sm_90a): warpgroup (4 warps, 128 threads) matrix multiply-accumulate from shared memory.
// D[64 x N] (+)= A[64 x 32] * B[N x 32]^T with E4M3 inputs and FP32 accumulators, A and B
// K-major in shared memory, addressed by matrix descriptors (PTX ISA "Matrix Descriptor"):
//   bits 0-13 start address >> 4, 16-29 leading byte offset >> 4, 32-45 stride byte offset >> 4,
//   62-63 swizzle (0 none, 1 = 128B, 2 = 64B, 3 = 32B).
// K-major element (row r, k byte) of a descriptor:
//   no swizzle:       start + (r/8)*SBO + (k/16)*LBO + (r%8)*16 + k%16   (8x16-byte core matrices)
//   swizzle S bytes:  start + (r/8)*SBO + (r%8)*S + k, then 16-byte chunk bits [4:4+log2(S/16))
//                     XOR address bits [7:...] (the TMA swizzle, so a TMA-loaded tile is read as is)
// Accumulators: thread t of the warpgroup (warp w = t/32, g = lane/4, q = lane%4) holds, for
// j = 0..N/8-1: d[4j] = D[16w+g][8j+2q], d[4j+1] = D[16w+g][8j+2q+1], d[4j+2] = D[16w+g+8][8j+2q],
// d[4j+3] = D[16w+g+8][8j+2q+1].
// Emulator twin: a 128-thread rendezvous; the last thread decodes A and B through the descriptors
// (offsets into the CTA's dynamic shared memory) and updates every thread's accumulators with
// each dot product summed in double and rounded once (the hardware's reduced-precision FP8
// accumulation is not modelled). fence/commit/wait are no-ops there.
#pragma once
#include "dk/common.cuh"
#include "dk/convert.cuh"

#if defined(DK_EMULATOR)
#define DK_WGMMA_SITE , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_WGMMA_SITE
#endif

namespace dk {

// Builds a shared-memory matrix descriptor; swizzle_bytes is 0, 32, 64 or 128.
DK_DEVICE uint64_t make_smem_desc(const void* smem, unsigned swizzle_bytes, unsigned leading_bytes, unsigned stride_bytes)
{
#if defined(DK_EMULATOR)
  const uint64_t addr = ::dkemu::shared_offset(smem, "wgmma matrix descriptor");
#else
  const uint64_t addr = static_cast<uint64_t>(__cvta_generic_to_shared(smem));
#endif
  const uint64_t mode = swizzle_bytes == 128 ? 1 : swizzle_bytes == 64 ? 2 : swizzle_bytes == 32 ? 3 : 0;
  return ((addr >> 4) & 0x3FFFull) | (((static_cast<uint64_t>(leading_bytes) >> 4) & 0x3FFFull) << 16) |
         (((static_cast<uint64_t>(stride_bytes) >> 4) & 0x3FFFull) << 32) | (mode << 62);
}

DK_DEVICE void wgmma_fence()
{
#if !defined(DK_EMULATOR) && DK_HAS_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

DK_DEVICE void wgmma_commit_group()
{
#if !defined(DK_EMULATOR) && DK_HAS_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N>
DK_DEVICE void wgmma_wait_group()
{
#if !defined(DK_EMULATOR) && DK_HAS_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

#if defined(DK_EMULATOR)
namespace emu {
struct WgmmaLane {
  uint64_t desc_a, desc_b;
  float* d;
  int scale_d;
};
// Byte offset (in dynamic shared memory) of K-major element (r, k) under a descriptor.
inline unsigned desc_offset(uint64_t desc, unsigned r, unsigned k)
{
  const unsigned start = static_cast<unsigned>(desc & 0x3FFFull) << 4;
  const unsigned lbo = static_cast<unsigned>((desc >> 16) & 0x3FFFull) << 4;
  const unsigned sbo = static_cast<unsigned>((desc >> 32) & 0x3FFFull) << 4;
  const unsigned mode = static_cast<unsigned>(desc >> 62);
  if (mode == 0) return start + (r / 8) * sbo + (k / 16) * lbo + (r % 8) * 16 + k % 16;
  const unsigned span = mode == 1 ? 128u : mode == 2 ? 64u : 32u;
  const unsigned bits = mode == 1 ? 3u : mode == 2 ? 2u : 1u;
  const unsigned lin = start + (r / 8) * sbo + (r % 8) * span + k;
  return lin ^ (((lin >> 7) & ((1u << bits) - 1u)) << 4);
}
template <int N>
inline void wgmma_e4m3_compute(void* const* lanes, unsigned, void*)
{
  const auto* t0 = static_cast<const WgmmaLane*>(lanes[0]);
  for (int t = 1; t < 128; ++t) {
    const auto* o = static_cast<const WgmmaLane*>(lanes[t]);
    if (o->desc_a != t0->desc_a || o->desc_b != t0->desc_b || o->scale_d != t0->scale_d)
      ::dkemu::fail(719, "wgmma: the threads of a warpgroup passed different descriptors or scale-d");
  }
  static thread_local double a[64][32], b[N][32];
  for (unsigned r = 0; r < 64; ++r)
    for (unsigned k = 0; k < 32; ++k)
      a[r][k] = e4m3_to_f32(*static_cast<const uint8_t*>(::dkemu::shared_pointer(desc_offset(t0->desc_a, r, k))));
  for (unsigned r = 0; r < static_cast<unsigned>(N); ++r)
    for (unsigned k = 0; k < 32; ++k)
      b[r][k] = e4m3_to_f32(*static_cast<const uint8_t*>(::dkemu::shared_pointer(desc_offset(t0->desc_b, r, k))));
  for (int t = 0; t < 128; ++t) {
    auto* me = static_cast<WgmmaLane*>(lanes[t]);
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    for (int j = 0; j < N / 8; ++j)
      for (int i = 0; i < 4; ++i) {
        const int row = 16 * w + g + 8 * (i >> 1), col = 8 * j + 2 * q + (i & 1);
        double acc = 0;
        for (int k = 0; k < 32; ++k) acc += a[row][k] * b[col][k];
        float& d = me->d[4 * j + i];
        d = me->scale_d ? static_cast<float>(static_cast<double>(d) + acc) : static_cast<float>(acc);
      }
  }
}
}  // namespace emu
#endif

// D (+)= A * B^T for one k32 step; scale_d = 0 overwrites D. All 128 threads of the warpgroup
// call it with the same descriptors. N is 16, 32, 64 or 128.
template <int N>
DK_DEVICE void wgmma_m64k32_e4m3(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d DK_WGMMA_SITE)
{
  static_assert(N == 16 || N == 32 || N == 64 || N == 128, "wgmma_m64k32_e4m3: N must be 16, 32, 64 or 128");
#if defined(DK_EMULATOR)
  emu::WgmmaLane lane{desc_a, desc_b, d, scale_d};
  const unsigned first = (::dkemu::tls_thread->warp / 4) * 128;
  ::dkemu::group_collective(first, 128, "wgmma.m64nNk32.e4m3", &lane, &emu::wgmma_e4m3_compute<N>, nullptr, dk_file, dk_line);
#elif DK_HAS_SM90A
  if constexpr (N == 16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  }
  else if constexpr (N == 32) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  }
  else if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  }
  else if constexpr (N == 128) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d));
  }
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}

}  // namespace dk
