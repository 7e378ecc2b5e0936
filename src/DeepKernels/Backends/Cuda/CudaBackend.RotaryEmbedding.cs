using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Rope;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IRotaryEmbeddingBackend
{
    /// <summary>The kernel: <c>dk_rope(in, out, pos, cos, sin, rows, heads, half, si_t, si_h, so_t, so_h)</c> (native/kernels/model_glue.cu).</summary>
    internal const string RopeKernel = "dk_rope";

    /// <summary>Threads per block of the RoPE kernel (one block per row).</summary>
    internal const int RopeThreads = 128;

    void IRotaryEmbeddingBackend.RotaryEmbedding(in RotaryEmbeddingArgs args, ReadOnlySpan<int> positions)
    {
        // RotaryEmbedding.Apply has checked every position against the table on the host; they
        // travel in a reused scratch buffer, copied in stream order before the launch.
        lock (_scratchLock)
        {
            var devicePositions = ScratchInts("rope.positions", positions);
            LaunchKernel(RopeKernel, new Dim3((uint)args.Rows), new Dim3(RopeThreads), 0,
                KernelArg.Pointer(args.Input), KernelArg.Pointer(args.Output), KernelArg.Pointer(devicePositions),
                KernelArg.Pointer(args.Cos), KernelArg.Pointer(args.Sin),
                args.Rows, args.Heads, args.Half,
                KernelArg.Int64(args.Input.Stride(0)), KernelArg.Int64(args.Input.Stride(1)),
                KernelArg.Int64(args.Output.Stride(0)), KernelArg.Int64(args.Output.Stride(1)));
        }
    }
}
