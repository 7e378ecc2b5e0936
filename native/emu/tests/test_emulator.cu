// Test kernels for the emulator itself (emulator library only): warp primitives, barriers with
// predicates, and the fidelity traps (out-of-bounds accesses, barrier divergence, lanes missing
// from a warp collective).
#include "dk/common.cuh"

// 64 threads (two warps); in[t] is an int per thread. out[t * 12 + i]:
//  0 shfl(in, (lane*7)%32)  1 shfl_up(in, 3)  2 shfl_down(in, 5)  3 shfl_xor(in, 9)
//  4 shfl_xor(in, 3, width 8)  5 ballot(in odd)  6 any(in == 42)  7 all(in > 0)
//  8 __reduce_add_sync(in)  9 __activemask()  10 __syncthreads_count(in odd)  11 __syncthreads_or(in == 42)
extern "C" __global__ void dk_test_warp_ops(const int* in, int* out)
{
  const int t = threadIdx.x;
  const int lane = t % 32;
  const int v = in[t];
  int* o = out + t * 12;
  o[0] = __shfl_sync(0xFFFFFFFFu, v, (lane * 7) % 32);
  o[1] = __shfl_up_sync(0xFFFFFFFFu, v, 3);
  o[2] = __shfl_down_sync(0xFFFFFFFFu, v, 5);
  o[3] = __shfl_xor_sync(0xFFFFFFFFu, v, 9);
  o[4] = __shfl_xor_sync(0xFFFFFFFFu, v, 3, 8);
  o[5] = static_cast<int>(__ballot_sync(0xFFFFFFFFu, v & 1));
  o[6] = __any_sync(0xFFFFFFFFu, v == 42);
  o[7] = __all_sync(0xFFFFFFFFu, v > 0);
  o[8] = __reduce_add_sync(0xFFFFFFFFu, v);
  o[9] = static_cast<int>(__activemask());
  o[10] = __syncthreads_count(v & 1);
  o[11] = __syncthreads_or(v == 42);
}

// Thread t writes p[t] = t for t < count (launch with enough threads); count past the
// allocation is an out-of-bounds write.
extern "C" __global__ void dk_test_write_range(float* p, int count)
{
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < count) p[t] = static_cast<float>(t);
}

// Reads p[index] into out[0] (one thread): an out-of-bounds read when index is outside.
extern "C" __global__ void dk_test_read_at(const float* p, long long index, float* out)
{
  out[0] = p[index];
}

// Threads below `exiting` return before the barrier that the others wait at.
extern "C" __global__ void dk_test_divergent_barrier(int* out, int exiting)
{
  const int t = threadIdx.x;
  if (t < exiting) return;
  __syncthreads();
  out[t] = 1;
}

// Odd and even threads wait at two different __syncthreads.
extern "C" __global__ void dk_test_split_barrier(int* out)
{
  const int t = threadIdx.x;
  if (t & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[t] = 1;
}

// Lane 0 leaves before a full-warp shuffle.
extern "C" __global__ void dk_test_missing_lane(int* out)
{
  const int t = threadIdx.x;
  if (t == 0) return;
  out[t] = __shfl_xor_sync(0xFFFFFFFFu, t, 1);
}

// Uses `smem_floats` floats of dynamic shared memory: thread t writes t and reads a neighbour.
extern "C" __global__ void dk_test_dynamic_smem(float* out, int smem_floats)
{
  DK_DYNAMIC_SHARED(float, buf);
  const int t = threadIdx.x;
  for (int i = t; i < smem_floats; i += blockDim.x) buf[i] = static_cast<float>(i + blockIdx.x);
  __syncthreads();
  out[blockIdx.x * blockDim.x + t] = buf[(t + 1) % smem_floats];
}

// Each thread adds 1 to counter[0] and its value to counter[1] with atomics; static shared
// memory accumulates a per-CTA sum that thread 0 adds to counter[2]: checks that static
// __shared__ is per CTA and starts fresh for each.
extern "C" __global__ void dk_test_atomics(int* counter)
{
  __shared__ int cta_sum;
  const int t = threadIdx.x;
  if (t == 0) cta_sum = 0;
  __syncthreads();
  atomicAdd(&counter[0], 1);
  atomicAdd(&counter[1], t);
  atomicAdd(&cta_sum, 1);
  __syncthreads();
  if (t == 0) atomicMax(&counter[2], cta_sum);
}

// DK_ASSERT fails the launch in thread 5 when value == 3.
extern "C" __global__ void dk_test_assert(int value)
{
  DK_ASSERT(value != 3 || threadIdx.x != 5);
}
