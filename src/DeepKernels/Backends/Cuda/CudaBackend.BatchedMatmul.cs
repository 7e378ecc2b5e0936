using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Matmul;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IBatchedMatmulBackend
{
    /// <summary>The kernel: <c>dk_batched_matmul(a, b, b_bf16, c, m, n, k, accumulate, 9 strides)</c> (native/kernels/model_glue.cu).</summary>
    internal const string BatchedMatmulKernel = "dk_batched_matmul";

    /// <summary>Output tile edge of the batched matmul (block = 16 x 16 threads).</summary>
    internal const int BatchedMatmulTile = 16;

    void IBatchedMatmulBackend.BatchedMatmul(in BatchedMatmulArgs args)
    {
        var a = args;
        var grid = new Dim3((uint)((a.N + BatchedMatmulTile - 1) / BatchedMatmulTile), (uint)((a.M + BatchedMatmulTile - 1) / BatchedMatmulTile), (uint)a.Batch);
        LaunchKernel(BatchedMatmulKernel, grid, new Dim3(BatchedMatmulTile, BatchedMatmulTile), 0,
            KernelArg.Pointer(a.A), KernelArg.Pointer(a.B), a.B.DType == DType.BFloat16 ? 1 : 0, KernelArg.Pointer(a.C),
            a.M, a.N, a.K, a.Accumulate ? 1 : 0,
            KernelArg.Int64(a.A.Stride(0)), KernelArg.Int64(a.A.Stride(1)), KernelArg.Int64(a.A.Stride(2)),
            KernelArg.Int64(a.B.Stride(0)), KernelArg.Int64(a.B.Stride(1)), KernelArg.Int64(a.B.Stride(2)),
            KernelArg.Int64(a.C.Stride(0)), KernelArg.Int64(a.C.Stride(1)), KernelArg.Int64(a.C.Stride(2)));
    }
}
