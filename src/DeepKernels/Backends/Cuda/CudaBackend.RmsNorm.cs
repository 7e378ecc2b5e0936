using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IRmsNormBackend
{
    /// <summary>The kernel: <c>dk_rms_norm(const float* x, const void* w, int w_is_bf16, float* y, int rows, int h, float eps)</c>.</summary>
    internal const string RmsNormKernel = "dk_rms_norm";

    /// <summary>Threads per CTA of the norm/activation/embedding kernels (native/kernels/norm_act.cu).</summary>
    internal const int NormActThreads = 256;

    void IRmsNormBackend.RmsNorm(in RmsNormArgs args)
    {
        // One CTA per row (grid.x allows 2^31 - 1 rows, more than an int row count can reach).
        LaunchKernel(RmsNormKernel, new Dim3((uint)args.Rows), new Dim3(NormActThreads), 0,
            KernelArg.Pointer(args.Input),
            KernelArg.Pointer(args.Weight),
            args.Weight.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(args.Output),
            args.Rows,
            args.Hidden,
            args.Epsilon);
    }
}
