// ldmatrix (sm_75+): a warp loads one, two or four 8x8 matrices of 16-bit elements from shared
// memory into the mma fragment layout. Lanes 8i..8i+7 give the row addresses (16 bytes each,
// 16-byte aligned) of matrix i. Lane l receives, in register i, elements (l/4, 2*(l%4)) and
// (l/4, 2*(l%4)+1) of matrix i (low half first); with .trans, elements (2*(l%4), l/4) and
// (2*(l%4)+1, l/4). All 32 lanes must execute it together.
// Emulator twin: a warp rendezvous; the last lane to arrive gathers the rows for everyone.
#pragma once
#include "dk/common.cuh"

namespace dk {

#if defined(DK_EMULATOR)
namespace emu {
struct LdmatrixLane {
  const unsigned char* row;
  uint32_t* out;
};
template <int Count, bool Trans>
inline void ldmatrix_compute(void* const* lanes, unsigned, void*)
{
  for (int l = 0; l < 32; ++l) {
    auto* me = static_cast<LdmatrixLane*>(lanes[l]);
    for (int i = 0; i < Count; ++i) {
      uint16_t v[2];
      for (int j = 0; j < 2; ++j) {
        const int r = Trans ? 2 * (l % 4) + j : l / 4;
        const int c = Trans ? l / 4 : 2 * (l % 4) + j;
        const unsigned char* row = static_cast<LdmatrixLane*>(lanes[i * 8 + r])->row;
        memcpy(&v[j], row + 2 * c, 2);
      }
      me->out[i] = static_cast<uint32_t>(v[0]) | (static_cast<uint32_t>(v[1]) << 16);
    }
  }
}
template <int Count, bool Trans>
inline void ldmatrix(uint32_t* out, const void* row, const char* file, int line)
{
  if ((reinterpret_cast<uintptr_t>(row) & 15u) != 0 && ::dkemu::tls_thread->lane < 8u * Count)
    ::dkemu::fail(716, "ldmatrix (%s:%d): row address %p is not 16-byte aligned", file, line, row);
  LdmatrixLane lane{static_cast<const unsigned char*>(row), out};
  ::dkemu::warp_collective(0xFFFFFFFFu, Trans ? "ldmatrix.trans" : "ldmatrix", &lane, &ldmatrix_compute<Count, Trans>, nullptr, file, line);
}
}  // namespace emu
#define DK_LDSM_SITE , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_LDSM_SITE
#endif

DK_DEVICE void ldmatrix_x1(uint32_t& r0, const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<1, false>(&r0, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(s));
#endif
}

DK_DEVICE void ldmatrix_x2(uint32_t (&r)[2], const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<2, false>(r, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
#endif
}

DK_DEVICE void ldmatrix_x4(uint32_t (&r)[4], const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<4, false>(r, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#endif
}

DK_DEVICE void ldmatrix_x1_trans(uint32_t& r0, const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<1, true>(&r0, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x1.trans.shared.b16 {%0}, [%1];\n" : "=r"(r0) : "r"(s));
#endif
}

DK_DEVICE void ldmatrix_x2_trans(uint32_t (&r)[2], const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<2, true>(r, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(s));
#endif
}

DK_DEVICE void ldmatrix_x4_trans(uint32_t (&r)[4], const void* smem_row DK_LDSM_SITE)
{
#if defined(DK_EMULATOR)
  emu::ldmatrix<4, true>(r, smem_row, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(s));
#endif
}

}  // namespace dk
#undef DK_LDSM_SITE
