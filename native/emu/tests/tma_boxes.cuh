// Shared by the Hopper test kernels: thread 0 starts 2-D TMA loads of whole boxes into shared
// memory, all completing on one mbarrier (initialised here); the caller waits on it (phase 0).
#pragma once
#include "dk/common.cuh"
#include "dk/mbarrier.cuh"
#include "dk/tma.cuh"

namespace dk_test {

struct TmaBox {
  void* dst;
  const CUtensorMap* map;
  int c0, c1;
};

DK_DEVICE void tma_load_boxes(uint64_t* bar, unsigned total_bytes, const TmaBox* boxes, int count)
{
  if (threadIdx.x == 0) {
    dk::mbarrier_init(bar, 1);
    dk::fence_barrier_init();
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    dk::mbarrier_arrive_expect_tx(bar, total_bytes);
    for (int i = 0; i < count; ++i) dk::tma_load_2d(boxes[i].dst, boxes[i].map, boxes[i].c0, boxes[i].c1, bar);
  }
}

}  // namespace dk_test
