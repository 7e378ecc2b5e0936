// cp.async (sm_80+): asynchronous global -> shared copies in commit groups.
// Emulator twin: the copy is recorded at issue and lands only at the matching wait; until then
// the destination reads as 0xFF bytes (NaN), so a missing wait breaks results visibly.
#pragma once
#include "dk/common.cuh"

#if defined(DK_EMULATOR)
#define DK_SITE_PARAMS , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_SITE_PARAMS
#endif

namespace dk {

// Copies Bytes (4, 8 or 16; both addresses aligned to Bytes) from global to shared memory.
template <int Bytes>
DK_DEVICE void cp_async(void* smem_dst, const void* gmem_src DK_SITE_PARAMS)
{
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(DK_EMULATOR)
  ::dkemu::cp_async(smem_dst, gmem_src, Bytes, Bytes, dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (Bytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem_src) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(s), "l"(gmem_src), "n"(Bytes) : "memory");
#endif
}

// Copies the first src_bytes (0..Bytes) and zero-fills the rest of the Bytes destination: the
// way to load a tile edge without reading past the end of the source.
template <int Bytes>
DK_DEVICE void cp_async_zfill(void* smem_dst, const void* gmem_src, int src_bytes DK_SITE_PARAMS)
{
  static_assert(Bytes == 4 || Bytes == 8 || Bytes == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(DK_EMULATOR)
  ::dkemu::cp_async(smem_dst, gmem_src, Bytes, static_cast<unsigned>(src_bytes), dk_file, dk_line);
#else
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  if constexpr (Bytes == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem_src), "r"(src_bytes) : "memory");
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(s), "l"(gmem_src), "n"(Bytes), "r"(src_bytes) : "memory");
#endif
}

// Closes the current group of cp.async operations of this thread.
DK_DEVICE void cp_async_commit()
{
#if defined(DK_EMULATOR)
  ::dkemu::cp_async_commit();
#else
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
DK_DEVICE void cp_async_wait()
{
#if defined(DK_EMULATOR)
  ::dkemu::cp_async_wait(N);
#else
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// Waits for every cp.async of this thread, committed or not.
DK_DEVICE void cp_async_wait_all()
{
#if defined(DK_EMULATOR)
  ::dkemu::cp_async_commit();
  ::dkemu::cp_async_wait(0);
#else
  asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

}  // namespace dk
