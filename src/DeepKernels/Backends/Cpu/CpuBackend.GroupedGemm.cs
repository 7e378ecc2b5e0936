using System.Buffers;
using DeepKernels.Formats;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IGroupedGemmBackend
{
    unsafe void IGroupedGemmBackend.GroupedGemm(in GroupedGemmArgs args)
    {
        // UE8M0 scales are widened to FP32 once (exact: powers of two).
        float[]? aWide = args.AScales.DType == DType.UE8M0 ? Widen(args.AScales) : null;
        float[]? bWide = args.BScales.DType == DType.UE8M0 ? Widen(args.BScales) : null;
        try
        {
            fixed (float* pa = aWide)
            fixed (float* pb = bWide)
            {
                var problem = new Fp8GroupedProblem(
                    args.A.Data, aWide is null ? args.AScales.Data : (nint)pa,
                    args.MIndices?.Data ?? 0, args.MaskedM?.Data ?? 0, args.Rows, args.MMax, args.Groups, args.N, args.K,
                    args.B.Data, bWide is null ? args.BScales.Data : (nint)pb,
                    args.D.Data, args.D.DType == DType.BFloat16);
                Fp8BlockKernel.Run(problem, ParallelOptions);
            }
        }
        finally
        {
            if (aWide is not null) ArrayPool<float>.Shared.Return(aWide);
            if (bWide is not null) ArrayPool<float>.Shared.Return(bWide);
        }
    }

    private static float[] Widen(TensorView ue8m0)
    {
        var bytes = ue8m0.AsSpan<byte>();
        float[] result = ArrayPool<float>.Shared.Rent(bytes.Length);
        for (int i = 0; i < bytes.Length; i++)
        {
            float s = UE8M0.ToSingle(bytes[i]);
            if (!float.IsFinite(s) || s <= 0) throw new ArgumentException($"Expected finite UE8M0 scales, got code 0xFF at {i}.", nameof(ue8m0));
            result[i] = s;
        }
        return result;
    }
}
