// mbarrier (shared-memory transaction barriers), named barriers and the Hopper fences.
// An mbarrier counts arrivals (and, on sm_90, transaction bytes from TMA); a phase completes when
// all expected arrivals and bytes are in, and waiters test the phase's parity.
// Emulator twins keep each mbarrier's state per CTA; waits block the fiber until the phase flips.
#pragma once
#include "dk/common.cuh"

#if defined(DK_EMULATOR)
#define DK_MBAR_SITE , const char* dk_file = __builtin_FILE(), int dk_line = __builtin_LINE()
#else
#define DK_MBAR_SITE
#endif

namespace dk {

#if !defined(DK_EMULATOR)
DK_DEVICE unsigned smem_u32(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
#endif

// Initialises the barrier for `count` arrivals per phase (one thread, then a __syncthreads or
// fence before others use it).
DK_DEVICE void mbarrier_init(uint64_t* bar, unsigned count DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  ::dkemu::mbar_init(bar, count, dk_file, dk_line);
#else
  asm volatile("mbarrier.init.shared.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#endif
}

// One arrival; returns the barrier state token (unused by the emulator).
DK_DEVICE uint64_t mbarrier_arrive(uint64_t* bar DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  ::dkemu::mbar_arrive(bar, 0, dk_file, dk_line);
  return 0;
#else
  uint64_t state;
  asm volatile("mbarrier.arrive.shared.b64 %0, [%1];\n" : "=l"(state) : "r"(smem_u32(bar)) : "memory");
  return state;
#endif
}

// One arrival that also expects `bytes` more transaction bytes in this phase (sm_90).
DK_DEVICE void mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  ::dkemu::mbar_arrive(bar, bytes, dk_file, dk_line);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#else
  (void)bar;
  (void)bytes;
  __trap();  // needs sm_90 and CUDA 12
#endif
}

// Non-blocking test of the phase with parity `parity` (true once it has completed).
DK_DEVICE bool mbarrier_try_wait_parity(uint64_t* bar, unsigned parity DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  return ::dkemu::mbar_try_wait_parity(bar, parity, dk_file, dk_line);
#else
  unsigned done;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
#else
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.test_wait.parity.shared.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
      : "=r"(done)
      : "r"(smem_u32(bar)), "r"(parity)
      : "memory");
#endif
  return done != 0;
#endif
}

// Waits for the phase with parity `parity` to complete.
DK_DEVICE void mbarrier_wait_parity(uint64_t* bar, unsigned parity DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  ::dkemu::mbar_wait_parity(bar, parity, dk_file, dk_line);
#else
  while (!mbarrier_try_wait_parity(bar, parity)) {
  }
#endif
}

// bar.sync id, count: a barrier for `count` threads (a multiple of 32), e.g. one warp group.
DK_DEVICE void named_barrier_sync(unsigned id, unsigned count DK_MBAR_SITE)
{
#if defined(DK_EMULATOR)
  ::dkemu::named_barrier(id, count, dk_file, dk_line);
#else
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
#endif
}

// Orders this thread's generic-proxy shared-memory writes before later async-proxy (TMA,
// wgmma) accesses. The emulator has one proxy: a no-op.
DK_DEVICE void fence_proxy_async()
{
#if !defined(DK_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Makes mbarrier initialisation visible to the async proxy and the cluster (sm_90).
DK_DEVICE void fence_barrier_init()
{
#if !defined(DK_EMULATOR) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && __CUDACC_VER_MAJOR__ >= 12
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

// setmaxnreg (sm_90a): re-balances registers between warp groups. A no-op in the emulator.
template <int Registers>
DK_DEVICE void setmaxnreg_inc()
{
#if !defined(DK_EMULATOR) && DK_HAS_SM90A
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Registers));
#endif
}
template <int Registers>
DK_DEVICE void setmaxnreg_dec()
{
#if !defined(DK_EMULATOR) && DK_HAS_SM90A
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Registers));
#endif
}

}  // namespace dk
