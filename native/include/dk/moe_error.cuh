// The MoE routing error word: routing data that lives on the device cannot be checked by the host
// before a launch, so the kernels that read it record the first problem they meet in a small
// device array instead (int[4]: kind, a, b, c) and skip the bad entry. The word is sticky: only
// the first error is kept until the host reads and clears it (CudaBackend.ThrowIfDeviceRoutingError).
#pragma once
#include "dk/common.cuh"

namespace dk {

enum MoeErrorKind : int {
  kMoeErrorNone = 0,
  kMoeErrorExpertId = 1,       // a = flat (token * top_k + slot), b = id, c = experts
  kMoeErrorMaskedOverflow = 2, // a = expert, b = rows routed to it, c = m_max
  kMoeErrorInverseRow = 3,     // a = flat (token * top_k + slot), b = row, c = rows
};

DK_DEVICE void moe_record_error(int* error, int kind, int a, int b, int c)
{
  if (error == nullptr) return;
  if (atomicCAS(error, 0, kind) == 0) {
    error[1] = a;
    error[2] = b;
    error[3] = c;
  }
}

}  // namespace dk
