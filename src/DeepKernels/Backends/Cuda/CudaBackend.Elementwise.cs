using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Elementwise;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IElementwiseBackend
{
    /// <summary>The kernel: <c>dk_add_2d(a, b (null = copy), out, rows, cols, 6 strides)</c> (native/kernels/model_glue.cu).</summary>
    internal const string Add2dKernel = "dk_add_2d";

    /// <summary>Threads per block of the 2-D add/copy kernel.</summary>
    internal const int Add2dThreads = 256;

    void IElementwiseBackend.Add(in ElementwiseArgs args)
    {
        var a = args;
        uint columnBlocks = (uint)((a.Cols + Add2dThreads - 1) / Add2dThreads);
        for (int row0 = 0; row0 < a.Rows; row0 += MaxRowsPerLaunch)
        {
            int rows = Math.Min(MaxRowsPerLaunch, a.Rows - row0);
            int bytes = sizeof(float);
            LaunchKernel(Add2dKernel, new Dim3(columnBlocks, (uint)rows), new Dim3(Add2dThreads), 0,
                KernelArg.Pointer(a.A.Data + (nint)(row0 * a.A.Stride(0) * bytes)),
                KernelArg.Pointer(a.B is { } b ? b.Data + (nint)(row0 * b.Stride(0) * bytes) : 0),
                KernelArg.Pointer(a.Output.Data + (nint)(row0 * a.Output.Stride(0) * bytes)),
                rows, a.Cols,
                KernelArg.Int64(a.A.Stride(0)), KernelArg.Int64(a.A.Stride(1)),
                KernelArg.Int64(a.B?.Stride(0) ?? 0), KernelArg.Int64(a.B?.Stride(1) ?? 0),
                KernelArg.Int64(a.Output.Stride(0)), KernelArg.Int64(a.Output.Stride(1)));
        }
    }
}
