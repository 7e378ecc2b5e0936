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
//
// BF16 (m64nNk16, N = 16..256, FP32 accumulate): D[64 x N] (+)= A[64 x 16] * B[16 x N] with A
// from shared memory (K-major descriptor, wgmma_m64k16_bf16_ss) or from registers
// (wgmma_m64k16_bf16_rs), B from shared memory, K-major (TransB = 0: B stored [N][K], as the E4M3
// form) or MN-major (TransB = 1: B stored [K][N], e.g. V rows read as they sit in a KV tile).
// MN-major element (n, k) with E-byte elements (PTX "MN-major" canonical layouts):
//   no swizzle:       start + (n*E/16)*SBO + (k/8)*LBO + (k%8)*16 + (n*E)%16
//   swizzle S bytes:  start + (n*E/S)*LBO + (k/8)*SBO + (k%8)*S + (n*E)%S, then the same XOR
// (LBO: stride between S-byte atoms along N; SBO: stride between 8-row groups along K).
// Register A fragment (4 x b32 of packed BF16 pairs, low half first), thread t as above:
//   a[0] = A[16w+g][2q, 2q+1], a[1] = A[16w+g+8][2q, 2q+1], a[2] = A[16w+g][2q+8, 2q+9],
//   a[3] = A[16w+g+8][2q+8, 2q+9] — the same rows/columns as the accumulator pairs d[4j..4j+3]
//   of j = 2k, 2k+1, so an FP32 accumulator tile converts to the A operand of the next product.
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

// ---- BF16 twins ----
struct WgmmaBf16Lane {
  uint64_t desc_a, desc_b;
  const uint32_t* a_regs;  // register A (rs form), else null
  float* d;
  int scale_d;
};
// Byte offset of MN-major element (n, k) with `esize`-byte elements under a descriptor.
inline unsigned desc_offset_mn(uint64_t desc, unsigned n, unsigned k, unsigned esize)
{
  const unsigned start = static_cast<unsigned>(desc & 0x3FFFull) << 4;
  const unsigned lbo = static_cast<unsigned>((desc >> 16) & 0x3FFFull) << 4;
  const unsigned sbo = static_cast<unsigned>((desc >> 32) & 0x3FFFull) << 4;
  const unsigned mode = static_cast<unsigned>(desc >> 62);
  const unsigned nb = n * esize;
  if (mode == 0) return start + (nb / 16) * sbo + (k / 8) * lbo + (k % 8) * 16 + nb % 16;
  const unsigned span = mode == 1 ? 128u : mode == 2 ? 64u : 32u;
  const unsigned bits = mode == 1 ? 3u : mode == 2 ? 2u : 1u;
  const unsigned lin = start + (nb / span) * lbo + (k / 8) * sbo + (k % 8) * span + nb % span;
  return lin ^ (((lin >> 7) & ((1u << bits) - 1u)) << 4);
}
inline double bf16_at(unsigned offset)
{
  return bf16_to_f32(*static_cast<const uint16_t*>(::dkemu::shared_pointer(offset)));
}
template <int N, int TransB>
inline void wgmma_bf16_compute(void* const* lanes, unsigned, void*)
{
  const auto* t0 = static_cast<const WgmmaBf16Lane*>(lanes[0]);
  for (int t = 1; t < 128; ++t) {
    const auto* o = static_cast<const WgmmaBf16Lane*>(lanes[t]);
    if (o->desc_a != t0->desc_a || o->desc_b != t0->desc_b || o->scale_d != t0->scale_d || (o->a_regs == nullptr) != (t0->a_regs == nullptr))
      ::dkemu::fail(719, "wgmma bf16: the threads of a warpgroup passed different descriptors, operand kinds or scale-d");
  }
  static thread_local double a[64][16], b[N][16];
  if (t0->a_regs == nullptr) {
    for (unsigned r = 0; r < 64; ++r)
      for (unsigned k = 0; k < 16; ++k) a[r][k] = bf16_at(desc_offset(t0->desc_a, r, 2 * k));
  } else {
    for (int t = 0; t < 128; ++t) {
      const uint32_t* ar = static_cast<const WgmmaBf16Lane*>(lanes[t])->a_regs;
      const int w = t / 32, g = (t % 32) / 4, q = t % 4;
      for (int i = 0; i < 4; ++i) {
        const int row = 16 * w + g + 8 * (i & 1), col = 2 * q + 8 * (i >> 1);
        a[row][col] = bf16_to_f32(static_cast<uint16_t>(ar[i] & 0xFFFFu));
        a[row][col + 1] = bf16_to_f32(static_cast<uint16_t>(ar[i] >> 16));
      }
    }
  }
  for (unsigned n = 0; n < static_cast<unsigned>(N); ++n)
    for (unsigned k = 0; k < 16; ++k) b[n][k] = bf16_at(TransB ? desc_offset_mn(t0->desc_b, n, k, 2) : desc_offset(t0->desc_b, n, 2 * k));
  for (int t = 0; t < 128; ++t) {
    auto* me = static_cast<WgmmaBf16Lane*>(lanes[t]);
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    for (int j = 0; j < N / 8; ++j)
      for (int i = 0; i < 4; ++i) {
        const int row = 16 * w + g + 8 * (i >> 1), col = 8 * j + 2 * q + (i & 1);
        double acc = 0;
        for (int k = 0; k < 16; ++k) acc += a[row][k] * b[col][k];
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

// D (+)= A * B for one k16 step of BF16 with A from shared memory (K-major descriptor). All 128
// threads of the warpgroup call it with the same descriptors; N is 16, 32, 64, 128 or 256;
// TransB selects a MN-major B (see the layout notes above).
template <int N, int TransB>
DK_DEVICE void wgmma_m64k16_bf16_ss(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d DK_WGMMA_SITE)
{
  static_assert(N == 16 || N == 32 || N == 64 || N == 128 || N == 256, "wgmma_m64k16_bf16_ss: N must be 16, 32, 64, 128 or 256");
  static_assert(TransB == 0 || TransB == 1, "wgmma_m64k16_bf16_ss: TransB is 0 or 1");
#if defined(DK_EMULATOR)
  emu::WgmmaBf16Lane lane{desc_a, desc_b, nullptr, d, scale_d};
  const unsigned first = (::dkemu::tls_thread->warp / 4) * 128;
  ::dkemu::group_collective(first, 128, "wgmma.m64nNk16.bf16", &lane, &emu::wgmma_bf16_compute<N, TransB>, nullptr, dk_file, dk_line);
#elif DK_HAS_SM90A
  if constexpr (N == 16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, 0, %11;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 32) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, %19;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, %35;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 128) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, %67;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 256) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, %131;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
#else
  (void)d, (void)desc_a, (void)desc_b, (void)scale_d;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}

// D (+)= A * B for one k16 step of BF16 with A from registers (the fragment table above).
template <int N, int TransB>
DK_DEVICE void wgmma_m64k16_bf16_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b, int scale_d DK_WGMMA_SITE)
{
  static_assert(N == 16 || N == 32 || N == 64 || N == 128 || N == 256, "wgmma_m64k16_bf16_rs: N must be 16, 32, 64, 128 or 256");
  static_assert(TransB == 0 || TransB == 1, "wgmma_m64k16_bf16_rs: TransB is 0 or 1");
#if defined(DK_EMULATOR)
  emu::WgmmaBf16Lane lane{0, desc_b, a, d, scale_d};
  const unsigned first = (::dkemu::tls_thread->warp / 4) * 128;
  ::dkemu::group_collective(first, 128, "wgmma.m64nNk16.bf16", &lane, &emu::wgmma_bf16_compute<N, TransB>, nullptr, dk_file, dk_line);
#elif DK_HAS_SM90A
  if constexpr (N == 16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, %14;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 32) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, %22;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 128) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
  else if constexpr (N == 256) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, {%128, %129, %130, %131}, %132, p, 1, 1, %134;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d), "n"(TransB));
  }
#else
  (void)d, (void)a, (void)desc_b, (void)scale_d;
  __trap();  // needs sm_90a (nvcc >= 12.3)
#endif
}

}  // namespace dk
