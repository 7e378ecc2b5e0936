using System.Buffers;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

/// <summary>
/// One grouped FP8 GEMM problem in raw addresses: D[r, :] = A[r, :] * B[g(r)]^T for the rows
/// r that belong to an expert g (contiguous: mIndices[r] &gt;= 0; masked: r within masked_m of its
/// slab). Addresses are nint so the struct can travel into parallel loops.
/// </summary>
internal readonly record struct Fp8GroupedProblem(
    nint A, nint AScales, nint MIndices, nint MaskedM, int Rows, int MMax, int Groups, int N, int K,
    nint B, nint BScales, nint D, bool DIsBFloat16);

/// <summary>
/// The CPU grouped GEMM: each expert segment (a run of rows with one m_index, or the used rows
/// of a masked slab) is one call of the dense FP8 GEMM core (<see cref="Fp8GemmKernel"/>) with
/// that expert's weights, so both GEMMs share numerics and microkernels. Padding rows and
/// experts without rows are never touched; each call spreads its weight panels over threads.
/// </summary>
internal static unsafe class GroupedGemmCpu
{
    public static void Run(in Fp8GroupedProblem p, ParallelOptions options)
    {
        int kBlocks = Fp8Gemm.BlockCount(p.K), nBlocks = Fp8Gemm.BlockCount(p.N);
        if (p.MIndices != 0)
        {
            int* m = (int*)p.MIndices;
            int r = 0;
            while (r < p.Rows)
            {
                int g = m[r], end = r + 1;
                while (end < p.Rows && m[end] == g) end++;
                if (g >= 0) Segment(p, g, r, end, kBlocks, nBlocks, options);
                r = end;
            }
        }
        else
        {
            int* masked = (int*)p.MaskedM;
            for (int g = 0; g < p.Groups; g++)
                if (masked[g] > 0) Segment(p, g, g * p.MMax, g * p.MMax + masked[g], kBlocks, nBlocks, options);
        }
    }

    private static void Segment(in Fp8GroupedProblem p, int g, int m0, int m1, int kBlocks, int nBlocks, ParallelOptions options)
    {
        var dense = new Fp8GemmProblem
        {
            A = (byte*)p.A,
            Lda = p.K,
            ScaleA = (float*)p.AScales,
            ScaleAStride = kBlocks,
            B = (byte*)p.B + (long)g * p.N * p.K,
            Ldb = p.K,
            ScaleB = (float*)p.BScales + (long)g * nBlocks * kBlocks,
            ScaleBStride = kBlocks,
            D = (void*)p.D,
            Ldd = p.N,
            OutputBFloat16 = p.DIsBFloat16,
            Accumulate = false,
            M = p.Rows,
            N = p.N,
            K = p.K,
        };
        Fp8GemmKernel.Run(dense, m0, m1, options);
    }
}

public sealed partial class CpuBackend : IGroupedGemmBackend
{
    unsafe void IGroupedGemmBackend.GroupedGemm(in GroupedGemmArgs args)
    {
        // UE8M0 scales are widened to FP32 once (exact: powers of two).
        float[]? aWide = RentWidenedScales(args.AScales);
        float[]? bWide = RentWidenedScales(args.BScales);
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
                GroupedGemmCpu.Run(problem, ParallelOptions);
            }
        }
        finally
        {
            if (aWide is not null) ArrayPool<float>.Shared.Return(aWide);
            if (bWide is not null) ArrayPool<float>.Shared.Return(bWide);
        }
    }
}
