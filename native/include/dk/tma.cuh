// TMA (sm_90): bulk tensor copies between global and shared memory described by a tensor map
// (CUtensorMap, 128 bytes, passed to kernels as `const __grid_constant__ CUtensorMap`).
// Loads complete on an mbarrier as transaction bytes (mbarrier_arrive_expect_tx first).
// Emulator twins: the tensor map is the emulator's own encoding (dkemu_tensor_map_encode /
// EmulatorDriver.EncodeTensorMap); a load lands only when a thread waits on its mbarrier (or
// every thread is blocked), the destination reading 0xFF bytes until then; the 32/64/128-byte
// swizzles permute 16-byte chunks by address bits as the hardware does.
#pragma once
#include "dk/common.cuh"

#if !defined(DK_EMULATOR)
#if defined(__CUDACC_VER_MAJOR__) && __CUDACC_VER_MAJOR__ >= 12
#include <cuda.h>
#else
struct __align__(64) CUtensorMap { unsigned long long opaque[16]; };  // CUDA 11 has no TMA
#endif
#endif

#if defined(DK_EMULATOR)
#define DK_TMA_SITE , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_TMA_SITE
#endif

namespace dk {

// Loads the box at (c0, c1) of a 2-D tensor map into shared memory, completing on `bar`.
DK_DEVICE void tma_load_2d(void* smem_dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar DK_TMA_SITE)
{
#if defined(DK_EMULATOR)
  const int coords[2] = {c0, c1};
  ::dkemu::tma_load(smem_dst, map, coords, 2, bar, dk_file, dk_line);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          static_cast<unsigned>(__cvta_generic_to_shared(smem_dst))),
      "l"(map), "r"(static_cast<unsigned>(__cvta_generic_to_shared(bar))), "r"(c0), "r"(c1)
      : "memory");
#else
  (void)smem_dst, (void)map, (void)c0, (void)c1, (void)bar;
  __trap();  // needs sm_90 and CUDA 12
#endif
}

// Stores shared memory to the box at (c0, c1) of a 2-D tensor map (out-of-bounds parts skipped).
DK_DEVICE void tma_store_2d(const CUtensorMap* map, int c0, int c1, const void* smem_src DK_TMA_SITE)
{
#if defined(DK_EMULATOR)
  const int coords[2] = {c0, c1};
  ::dkemu::tma_store(map, coords, 2, smem_src, dk_file, dk_line);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
  asm volatile("cp.async.bulk.tensor.2d.global.shared::cta.bulk_group [%0, {%2, %3}], [%1];\n" ::"l"(map),
               "r"(static_cast<unsigned>(__cvta_generic_to_shared(smem_src))), "r"(c0), "r"(c1)
               : "memory");
  asm volatile("cp.async.bulk.commit_group;\n cp.async.bulk.wait_group.read 0;\n" ::: "memory");
#else
  (void)map, (void)c0, (void)c1, (void)smem_src;
  __trap();
#endif
}

// 128-byte-swizzled TMA boxes (and the wgmma descriptors reading them) need their shared-memory
// destination aligned to 1024 bytes; dynamic shared memory only guarantees 16.
DK_DEVICE unsigned char* align_smem_1024(unsigned char* p)
{
#if defined(DK_EMULATOR)
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
#else
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(p));
#endif
  return p + ((1024 - (a & 1023)) & 1023);
}

}  // namespace dk
