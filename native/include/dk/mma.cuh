// mma.sync (sm_80+) warp-level matrix multiply-accumulate, D = A * B + C with FP32 accumulators.
//
// m16n8k16 with BF16 or F16 inputs, A row-major 16x16, B column-major 16x8 (i.e. B[k][n] with k
// contiguous per column), C/D 16x8 FP32. With g = lane / 4 and t = lane % 4, lane l holds:
//   A: a[0] = (g,   2t..2t+1)   a[1] = (g+8, 2t..2t+1)   a[2] = (g, 2t+8..2t+9)   a[3] = (g+8, 2t+8..2t+9)
//   B: b[0] = (k = 2t..2t+1, n = g)   b[1] = (k = 2t+8..2t+9, n = g)
//   C/D: c[0], c[1] = (g, 2t), (g, 2t+1);  c[2], c[3] = (g+8, 2t), (g+8, 2t+1)
// Each 32-bit register holds two 16-bit elements, the lower column (or k) in the low half.
// Emulator twin: a warp rendezvous; the last lane assembles A, B and C from every lane's
// fragments, computes each D element as C + sum(A*B) in double rounded once to FP32, and
// scatters D back (products of 16-bit floats are exact; the hardware's FP32 accumulation order
// is not specified, so results can differ from the GPU in the last bits).
#pragma once
#include "dk/common.cuh"
#include "dk/convert.cuh"

namespace dk {

#if defined(DK_EMULATOR)
namespace emu {
struct MmaLane {
  const uint32_t* a;
  const uint32_t* b;
  const float* c;
  float* d;
};
inline double half_value(uint16_t bits, bool is_bf16) { return is_bf16 ? static_cast<double>(bf16_to_f32(bits)) : static_cast<double>(f16_to_f32(bits)); }
inline uint16_t half_of(uint32_t reg, int j) { return static_cast<uint16_t>(j == 0 ? reg & 0xFFFFu : reg >> 16); }

template <bool IsBf16>
inline void mma_m16n8k16_compute(void* const* lanes, unsigned, void*)
{
  double A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const auto* f = static_cast<const MmaLane*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int r = 0; r < 4; ++r)
      for (int j = 0; j < 2; ++j) A[g + 8 * (r & 1)][2 * t + j + 8 * (r >> 1)] = half_value(half_of(f->a[r], j), IsBf16);
    for (int r = 0; r < 2; ++r)
      for (int j = 0; j < 2; ++j) B[2 * t + j + 8 * r][g] = half_value(half_of(f->b[r], j), IsBf16);
    for (int i = 0; i < 4; ++i) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = static_cast<double>(f->c[i]);
  }
  for (int l = 0; l < 32; ++l) {
    const auto* f = static_cast<const MmaLane*>(lanes[l]);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
      double acc = C[row][col];
      for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];
      f->d[i] = static_cast<float>(acc);
    }
  }
}
}  // namespace emu
#define DK_MMA_SITE , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_MMA_SITE
#endif

// d = a * b + c, BF16 inputs (d may alias c).
DK_DEVICE void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4] DK_MMA_SITE)
{
#if defined(DK_EMULATOR)
  emu::MmaLane lane{a, b, c, d};
  ::dkemu::warp_collective(0xFFFFFFFFu, "mma.m16n8k16.bf16", &lane, &emu::mma_m16n8k16_compute<true>, nullptr, dk_file, dk_line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// d = a * b + c, F16 inputs (d may alias c).
DK_DEVICE void mma_m16n8k16_f16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4] DK_MMA_SITE)
{
#if defined(DK_EMULATOR)
  emu::MmaLane lane{a, b, c, d};
  ::dkemu::warp_collective(0xFFFFFFFFu, "mma.m16n8k16.f16", &lane, &emu::mma_m16n8k16_compute<false>, nullptr, dk_file, dk_line);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

}  // namespace dk
#undef DK_MMA_SITE
