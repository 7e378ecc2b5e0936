using System.Buffers;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IFp8GemmBackend
{
    unsafe void IFp8GemmBackend.Fp8Gemm(in Fp8GemmArgs args)
    {
        // UE8M0 scales are widened to FP32 once per call into pooled arrays (exact: powers of
        // two); FP32 scales are read in place. Fp8Gemm.Run has already validated them.
        float[]? sa = RentWidenedScales(args.AScales);
        float[]? sb = RentWidenedScales(args.BScales);
        try
        {
            int kBlocks = Fp8Gemm.BlockCount(args.K);
            fixed (float* psa = sa)
            fixed (float* psb = sb)
            {
                var problem = new Fp8GemmProblem
                {
                    A = (byte*)args.A.Data, Lda = args.K,
                    ScaleA = psa != null ? psa : (float*)args.AScales.Data, ScaleAStride = kBlocks,
                    B = (byte*)args.B.Data, Ldb = args.K,
                    ScaleB = psb != null ? psb : (float*)args.BScales.Data, ScaleBStride = kBlocks,
                    D = (void*)args.D.Data, Ldd = args.N,
                    OutputBFloat16 = args.D.DType == DType.BFloat16, Accumulate = args.Options.Accumulate,
                    M = args.M, N = args.N, K = args.K,
                };
                Fp8GemmKernel.Run(problem, 0, args.M, ParallelOptions);
            }
        }
        finally
        {
            if (sa is not null) ArrayPool<float>.Shared.Return(sa);
            if (sb is not null) ArrayPool<float>.Shared.Return(sb);
        }
    }

    /// <summary>
    /// For a UE8M0 scale tensor, a pooled array (return it to <see cref="ArrayPool{T}.Shared"/>)
    /// holding its FP32 values; null for FP32 scales, which the kernels read in place. Code 0xFF
    /// (NaN) is rejected.
    /// </summary>
    internal static float[]? RentWidenedScales(TensorView scales)
    {
        if (scales.DType != DType.UE8M0) return null;
        var codes = scales.AsSpan<byte>();
        float[] result = ArrayPool<float>.Shared.Rent(codes.Length);
        for (int i = 0; i < codes.Length; i++)
        {
            if (codes[i] == 0xFF)
            {
                ArrayPool<float>.Shared.Return(result);
                throw new ArgumentException($"Expected finite UE8M0 scales, got code 0xFF (NaN) at {i}.", nameof(scales));
            }
            result[i] = UE8M0.ToSingle(codes[i]);
        }
        return result;
    }
}
