// The CUDA built-ins for kernel sources compiled with the host C++ compiler (DK_EMULATOR).
// Included by dk/common.cuh; kernels never include it directly. Each CTA runs on one OS thread
// as one fiber per CUDA thread (see native/emu/src/runtime.cpp):
//  * threadIdx/blockIdx/blockDim/gridDim read the running fiber's and CTA's state;
//  * static `__shared__` variables are `static thread_local`: one OS thread runs one CTA at a
//    time, so all fibers of a CTA see the same variable and no two CTAs share it at once;
//  * dynamic shared memory is a per-CTA buffer (use DK_DYNAMIC_SHARED from dk/common.cuh);
//  * barriers and warp collectives are rendezvous points where the fiber yields.
#pragma once
#ifndef DK_EMULATOR
#error "cuda_emu.h is for emulator builds (DK_EMULATOR) only"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __shared__ static thread_local
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__

struct uint3 { unsigned int x, y, z; };
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

#define DKEMU_VEC2(name, T, align) struct __attribute__((aligned(align))) name { T x, y; }; \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define DKEMU_VEC4(name, T, align) struct __attribute__((aligned(align))) name { T x, y, z, w; }; \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
DKEMU_VEC2(float2, float, 8)
DKEMU_VEC4(float4, float, 16)
DKEMU_VEC2(int2, int, 8)
DKEMU_VEC4(int4, int, 16)
DKEMU_VEC2(uint2, unsigned int, 8)
DKEMU_VEC4(uint4, unsigned int, 16)
DKEMU_VEC2(double2, double, 16)
DKEMU_VEC2(short2, short, 4)
DKEMU_VEC2(ushort2, unsigned short, 4)
DKEMU_VEC4(char4, signed char, 4)
DKEMU_VEC4(uchar4, unsigned char, 4)
#undef DKEMU_VEC2
#undef DKEMU_VEC4

// The TMA descriptor type of <cuda.h> (128 opaque bytes, 64-byte aligned); the emulator's TMA
// twins define its contents.
struct __attribute__((aligned(64))) CUtensorMap { unsigned long long opaque[16]; };

namespace dkemu {

// What a kernel can see of the running CUDA thread and CTA (the scheduler owns the rest).
struct ThreadView {
  uint3 thread_idx;
  unsigned lane;
  unsigned warp;
};
struct CtaView {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
  unsigned char* dynamic_smem;
  unsigned dynamic_smem_bytes;
};

extern __thread ThreadView* tls_thread;
extern __thread CtaView* tls_cta;

inline void* dynamic_shared() { return tls_cta->dynamic_smem; }

// Reports a kernel error (the launch fails with `code`, a CUresult value) and never returns.
[[noreturn]] void fail(int code, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Block-wide barrier; `op`: 0 plain, 1 count, 2 and, 3 or of `predicate`.
int barrier(int op, int predicate, const char* file, int line);

// A warp rendezvous: every lane of `mask` deposits `data`; when the last one arrives, `compute`
// runs once with all lanes' pointers (indexed by lane) and then every lane continues.
// `kind` names the operation in diagnostics; lanes that call different kinds with overlapping
// masks are reported as divergence.
using WarpCompute = void (*)(void* const* lane_data, unsigned mask, void* context);
void warp_collective(unsigned mask, const char* kind, void* data, WarpCompute compute, void* context, const char* file, int line);
unsigned active_mask();

// cp.async twins: the copy is recorded now and lands at the matching wait; until then the
// destination holds 0xFF bytes (NaN in every float format), so a missing wait is visible.
void cp_async(void* dst, const void* src, unsigned bytes, unsigned src_bytes, const char* file, int line);
void cp_async_commit();
void cp_async_wait(int pending_groups);

// Warp shuffle core: lane `l` receives the value of lane src[l] (or its own when src[l] is
// outside `mask`). Values are up to 16 bytes.
struct ShuffleLane {
  unsigned char in[16];
  unsigned char out[16];
  int source;
};
void shuffle(unsigned mask, ShuffleLane* lane, unsigned bytes, const char* kind, const char* file, int line);

// ---- Hopper twins (the dk/mbarrier.cuh, dk/tma.cuh and dk/wgmma.cuh wrappers call these) ----

// bar.sync id, count: the first `count` threads to arrive at named barrier `id` continue together.
void named_barrier(unsigned id, unsigned count, const char* file, int line);

// mbarrier objects live in shared memory (8 bytes); the emulator keeps their state per CTA.
void mbar_init(void* bar, unsigned count, const char* file, int line);
void mbar_arrive(void* bar, unsigned expect_tx_bytes, const char* file, int line);
void mbar_expect_tx(void* bar, unsigned bytes, const char* file, int line);
// try_wait.parity: true when the phase with this parity has completed; yields when not.
bool mbar_try_wait_parity(void* bar, unsigned parity, const char* file, int line);
// Blocks until the phase with this parity has completed.
void mbar_wait_parity(void* bar, unsigned parity, const char* file, int line);

// TMA: the emulator's own tensor-map encoding (dkemu_tensor_map_encode) in the 128 bytes of a
// CUtensorMap. Loads land (and complete their bytes on the mbarrier) only when some thread waits
// on that mbarrier or every thread is blocked; until then the destination reads as 0xFF bytes.
void tma_load(void* smem_dst, const void* tensor_map, const int* coords, unsigned rank, void* bar, const char* file, int line);
void tma_store(const void* tensor_map, const int* coords, unsigned rank, const void* smem_src, const char* file, int line);

// A rendezvous of the `count` consecutive threads starting at linear thread `first` (a warpgroup
// for wgmma): `compute` runs once with every participant's data, indexed from `first`.
using GroupCompute = void (*)(void* const* data, unsigned count, void* context);
void group_collective(unsigned first, unsigned count, const char* kind, void* data, GroupCompute compute, void* context,
                      const char* file, int line);

// Shared-memory addresses as wgmma descriptors see them: offsets into the CTA's dynamic shared
// memory (fails for anything else).
unsigned shared_offset(const void* p, const char* what);
void* shared_pointer(unsigned offset);

}  // namespace dkemu

#define threadIdx (::dkemu::tls_thread->thread_idx)
#define blockIdx (::dkemu::tls_cta->block_idx)
#define blockDim (::dkemu::tls_cta->block_dim)
#define gridDim (::dkemu::tls_cta->grid_dim)
#define warpSize 32

// ---- barriers -----------------------------------------------------------------------------
inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) { ::dkemu::barrier(0, 0, file, line); }
inline int __syncthreads_count(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { return ::dkemu::barrier(1, p, file, line); }
inline int __syncthreads_and(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { return ::dkemu::barrier(2, p, file, line); }
inline int __syncthreads_or(int p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) { return ::dkemu::barrier(3, p, file, line); }
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  ::dkemu::warp_collective(mask, "__syncwarp", nullptr, nullptr, nullptr, file, line);
}
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}

// ---- warp primitives ----------------------------------------------------------------------
namespace dkemu {
template <class T>
inline T shfl_impl(unsigned mask, T var, int source, const char* kind, const char* file, int line)
{
  static_assert(sizeof(T) <= 16 && std::is_trivially_copyable<T>::value, "shuffle of an unsupported type");
  ShuffleLane l;
  memcpy(l.in, &var, sizeof(T));
  l.source = source;
  shuffle(mask, &l, sizeof(T), kind, file, line);
  T r;
  memcpy(&r, l.out, sizeof(T));
  return r;
}
}  // namespace dkemu

template <class T>
inline T __shfl_sync(unsigned mask, T var, int src, int width = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  const int lane = static_cast<int>(::dkemu::tls_thread->lane);
  const int source = (lane & ~(width - 1)) + (src & (width - 1));
  return ::dkemu::shfl_impl(mask, var, source, "__shfl_sync", file, line);
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  const int lane = static_cast<int>(::dkemu::tls_thread->lane);
  const int source = (lane & (width - 1)) >= static_cast<int>(delta) ? lane - static_cast<int>(delta) : lane;
  return ::dkemu::shfl_impl(mask, var, source, "__shfl_up_sync", file, line);
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  const int lane = static_cast<int>(::dkemu::tls_thread->lane);
  const int source = (lane & (width - 1)) + static_cast<int>(delta) < width ? lane + static_cast<int>(delta) : lane;
  return ::dkemu::shfl_impl(mask, var, source, "__shfl_down_sync", file, line);
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  const int lane = static_cast<int>(::dkemu::tls_thread->lane);
  int source = lane ^ lane_mask;
  if ((source & ~(width - 1)) != (lane & ~(width - 1))) source = lane;
  return ::dkemu::shfl_impl(mask, var, source, "__shfl_xor_sync", file, line);
}

namespace dkemu {
struct VoteLane { int predicate; unsigned result; };
inline void vote_compute(void* const* lanes, unsigned mask, void* op)
{
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((mask >> l & 1u) && static_cast<VoteLane*>(lanes[l])->predicate) ballot |= 1u << l;
  const int kind = static_cast<int>(reinterpret_cast<intptr_t>(op));
  const unsigned r = kind == 0 ? ballot : kind == 1 ? (ballot != 0) : (ballot == mask);
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) static_cast<VoteLane*>(lanes[l])->result = r;
}
template <class T, int Op>
inline void reduce_compute(void* const* lanes, unsigned mask, void*)
{
  T r{};
  bool first = true;
  for (int l = 0; l < 32; ++l) {
    if (!(mask >> l & 1u)) continue;
    const T v = *static_cast<T*>(lanes[l]);
    if (first) { r = v; first = false; }
    else r = Op == 0 ? static_cast<T>(r + v) : Op == 1 ? (v < r ? v : r) : Op == 2 ? (v > r ? v : r) : Op == 3 ? (r & v) : Op == 4 ? (r | v) : (r ^ v);
  }
  for (int l = 0; l < 32; ++l)
    if (mask >> l & 1u) *static_cast<T*>(lanes[l]) = r;
}
}  // namespace dkemu

inline unsigned __ballot_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  ::dkemu::VoteLane v{p, 0};
  ::dkemu::warp_collective(mask, "__ballot_sync", &v, ::dkemu::vote_compute, reinterpret_cast<void*>(0), file, line);
  return v.result;
}
inline int __any_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  ::dkemu::VoteLane v{p, 0};
  ::dkemu::warp_collective(mask, "__any_sync", &v, ::dkemu::vote_compute, reinterpret_cast<void*>(1), file, line);
  return static_cast<int>(v.result);
}
inline int __all_sync(unsigned mask, int p, const char* file = __builtin_FILE(), int line = __builtin_LINE())
{
  ::dkemu::VoteLane v{p, 0};
  ::dkemu::warp_collective(mask, "__all_sync", &v, ::dkemu::vote_compute, reinterpret_cast<void*>(2), file, line);
  return static_cast<int>(v.result);
}
inline unsigned __activemask() { return ::dkemu::active_mask(); }

#define DKEMU_REDUCE(fn, T, op)                                                                  \
  inline T fn(unsigned mask, T v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) \
  {                                                                                              \
    ::dkemu::warp_collective(mask, #fn, &v, ::dkemu::reduce_compute<T, op>, nullptr, file, line); \
    return v;                                                                                    \
  }
DKEMU_REDUCE(__reduce_add_sync, unsigned, 0)
DKEMU_REDUCE(__reduce_add_sync, int, 0)
DKEMU_REDUCE(__reduce_min_sync, unsigned, 1)
DKEMU_REDUCE(__reduce_min_sync, int, 1)
DKEMU_REDUCE(__reduce_max_sync, unsigned, 2)
DKEMU_REDUCE(__reduce_max_sync, int, 2)
DKEMU_REDUCE(__reduce_and_sync, unsigned, 3)
DKEMU_REDUCE(__reduce_or_sync, unsigned, 4)
DKEMU_REDUCE(__reduce_xor_sync, unsigned, 5)
#undef DKEMU_REDUCE

// ---- atomics (sequentially consistent host atomics) ----------------------------------------
template <class T> inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }
template <class T> inline T atomicCAS(T* p, T expected, T desired)
{
  __atomic_compare_exchange_n(p, &expected, desired, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return expected;
}
template <class T> inline T atomicMax(T* p, T v)
{
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
template <class T> inline T atomicMin(T* p, T v)
{
  T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (v < old && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}
namespace dkemu {
template <class T, class U>
inline T atomic_float_add(T* p, T v)
{
  U old = __atomic_load_n(reinterpret_cast<U*>(p), __ATOMIC_SEQ_CST);
  for (;;) {
    T f;
    memcpy(&f, &old, sizeof f);
    f += v;
    U n;
    memcpy(&n, &f, sizeof n);
    if (__atomic_compare_exchange_n(reinterpret_cast<U*>(p), &old, n, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
      memcpy(&f, &old, sizeof f);
      return f;
    }
  }
}
}  // namespace dkemu
template <> inline float atomicAdd<float>(float* p, float v) { return ::dkemu::atomic_float_add<float, uint32_t>(p, v); }
template <> inline double atomicAdd<double>(double* p, double v) { return ::dkemu::atomic_float_add<double, uint64_t>(p, v); }
inline unsigned atomicInc(unsigned* p, unsigned limit)
{
  unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (!__atomic_compare_exchange_n(p, &old, old >= limit ? 0u : old + 1u, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
  return old;
}

// ---- loads, intrinsics and math ------------------------------------------------------------
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

inline float __int_as_float(int v) { float f; memcpy(&f, &v, 4); return f; }
inline int __float_as_int(float f) { int v; memcpy(&v, &f, 4); return v; }
inline float __uint_as_float(unsigned v) { float f; memcpy(&f, &v, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned v; memcpy(&v, &f, 4); return v; }
inline double __longlong_as_double(long long v) { double d; memcpy(&d, &v, 8); return d; }
inline long long __double_as_longlong(double d) { long long v; memcpy(&v, &d, 8); return v; }

inline float __fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __expf(float a) { return expf(a); }
inline float __exp2f(float a) { return exp2f(a); }
inline float __logf(float a) { return logf(a); }
inline float __log2f(float a) { return log2f(a); }
inline float __sinf(float a) { return sinf(a); }
inline float __cosf(float a) { return cosf(a); }
inline float __powf(float a, float b) { return powf(a, b); }
inline float rsqrtf(float a) { return 1.0f / sqrtf(a); }
inline float __saturatef(float a) { return a != a ? 0.0f : (a < 0.0f ? 0.0f : (a > 1.0f ? 1.0f : a)); }
inline int __float2int_rn(float a) { return static_cast<int>(nearbyintf(a)); }
inline int __float2int_rz(float a) { return static_cast<int>(a); }
inline int __float2int_rd(float a) { return static_cast<int>(floorf(a)); }
inline int __float2int_ru(float a) { return static_cast<int>(ceilf(a)); }
inline float __int2float_rn(int a) { return static_cast<float>(a); }

inline int __popc(unsigned v) { return __builtin_popcount(v); }
inline int __popcll(unsigned long long v) { return __builtin_popcountll(v); }
inline int __clz(int v) { return v == 0 ? 32 : __builtin_clz(static_cast<unsigned>(v)); }
inline int __clzll(long long v) { return v == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(v)); }
inline int __ffs(int v) { return __builtin_ffs(v); }
inline int __ffsll(long long v) { return __builtin_ffsll(v); }
inline unsigned __brev(unsigned v)
{
  v = ((v >> 1) & 0x55555555u) | ((v & 0x55555555u) << 1);
  v = ((v >> 2) & 0x33333333u) | ((v & 0x33333333u) << 2);
  v = ((v >> 4) & 0x0F0F0F0Fu) | ((v & 0x0F0F0F0Fu) << 4);
  v = ((v >> 8) & 0x00FF00FFu) | ((v & 0x00FF00FFu) << 8);
  return (v >> 16) | (v << 16);
}
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s)
{
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (((s >> (4 * i)) & 7u) * 8)) & 0xFFu) << (8 * i);
  return r;
}
inline unsigned __umulhi(unsigned a, unsigned b) { return static_cast<unsigned>((static_cast<unsigned long long>(a) * b) >> 32); }
inline int __mul24(int a, int b) { return a * b; }
namespace dkemu { long long clock_ticks(); }
inline long long clock64() { return ::dkemu::clock_ticks(); }

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
