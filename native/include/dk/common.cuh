// Shared definitions for every DeepKernels kernel source. The same .cu files compile with nvcc
// (device code) and, with DK_EMULATOR defined, with the host C++ compiler against the kernel
// emulator (native/emu), which supplies the CUDA built-ins.
#pragma once

#if defined(DK_EMULATOR)
#include "dkemu/cuda_emu.h"
#endif

#include <stdint.h>

// Wrapper functions are small and always inlined.
#define DK_DEVICE __device__ __forceinline__

// Dynamic shared memory (`extern __shared__`). Use this macro instead of declaring the array:
// under the emulator it is the per-CTA buffer sized by the launch.
#if defined(DK_EMULATOR)
#define DK_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::dkemu::dynamic_shared())
#else
#define DK_DYNAMIC_SHARED(T, name)                                  \
  extern __shared__ __align__(128) unsigned char dk_dynamic_smem_[]; \
  T* name = reinterpret_cast<T*>(dk_dynamic_smem_)
#endif

// Device-side assertion. On a GPU a failed assert() traps the kernel; in the emulator it fails
// the launch (CUDA_ERROR_ASSERT, 710) with the condition and location instead of aborting the
// host process.
#if defined(DK_EMULATOR)
#define DK_ASSERT(cond) \
  ((cond) ? (void)0 : ::dkemu::fail(710, "assertion failed: %s (%s:%d)", #cond, __FILE__, __LINE__))
#else
#define DK_ASSERT(cond) assert(cond)
#include <assert.h>
#endif

// True when compiling device code for an arch with the sm_90a-only features (wgmma, setmaxnreg).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define DK_HAS_SM90A 1
#else
#define DK_HAS_SM90A 0
#endif
