using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Activation;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : ISiluAndMulBackend
{
    /// <summary>The kernel: <c>dk_silu_and_mul(const float* gate_up, float* out, int rows, int inter)</c>.</summary>
    internal const string SiluAndMulKernel = "dk_silu_and_mul";

    void ISiluAndMulBackend.SiluAndMul(in SiluAndMulArgs args)
    {
        // grid = (column blocks of 256, rows); grid.y is limited to 65535, so long batches take several launches.
        int inter = args.Intermediate;
        uint columnBlocks = (uint)((inter + NormActThreads - 1) / NormActThreads);
        for (int row0 = 0; row0 < args.Rows; row0 += MaxRowsPerLaunch)
        {
            int rows = Math.Min(MaxRowsPerLaunch, args.Rows - row0);
            LaunchKernel(SiluAndMulKernel, new Dim3(columnBlocks, (uint)rows), new Dim3(NormActThreads), 0,
                KernelArg.Pointer(args.GateUp.Data + (nint)row0 * 2 * inter * sizeof(float)),
                KernelArg.Pointer(args.Output.Data + (nint)row0 * inter * sizeof(float)),
                rows,
                inter);
        }
    }
}
