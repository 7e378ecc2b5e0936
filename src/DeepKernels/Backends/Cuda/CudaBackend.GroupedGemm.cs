using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IGroupedGemmBackend
{
    /// <summary>
    /// Contiguous grouped GEMM: <c>dk_grouped_gemm_contiguous(a, sa, m_indices, b, sb, d, m, n, k,
    /// groups, sa_ue8m0, sb_ue8m0, out_bf16)</c> (native/kernels/grouped_gemm.cu).
    /// </summary>
    internal const string GroupedGemmContiguousKernel = "dk_grouped_gemm_contiguous";

    /// <summary>
    /// Masked grouped GEMM: <c>dk_grouped_gemm_masked(a, sa, masked_m, b, sb, d, m_max, n, k,
    /// groups, sa_ue8m0, sb_ue8m0, out_bf16)</c>.
    /// </summary>
    internal const string GroupedGemmMaskedKernel = "dk_grouped_gemm_masked";

    /// <summary>
    /// Picks the kernel as the dense GEMM does (<see cref="GemmKernelEnvironmentVariable"/>): the
    /// Hopper kernels when selected and the shape fits their TMA coordinates, else the portable ones.
    /// </summary>
    void IGroupedGemmBackend.GroupedGemm(in GroupedGemmArgs args)
    {
        if (UsesSm90Gemm && GroupedGemmSm90Unsupported(args) is null)
            GroupedGemmSm90(args);
        else
            GroupedGemmPortable(args);
    }

    /// <summary>The portable (sm_80+) grouped kernels: one CTA per 128x128 tile of every expert.</summary>
    internal void GroupedGemmPortable(in GroupedGemmArgs args)
    {
        CheckGemmAlignment(args.K, "K", "grouped FP8 GEMM", (args.A, "a"), (args.B, "b"));
        int kBlocks = (args.K + GroupedFp8Gemm.BlockSize - 1) / GroupedFp8Gemm.BlockSize;
        int saUe8m0 = args.AScales.DType == DType.UE8M0 ? 1 : 0, sbUe8m0 = args.BScales.DType == DType.UE8M0 ? 1 : 0;
        int outBf16 = args.D.DType == DType.BFloat16 ? 1 : 0;
        int saSize = args.AScales.DType.SizeInBytes(), dSize = args.D.DType.SizeInBytes();
        uint colTiles = (uint)((args.N + GemmTile - 1) / GemmTile);

        if (args.MIndices is TensorView mIndices)
        {
            // Row tiles of 128; a tile holding several experts' rows runs once per expert present.
            for (int row0 = 0; row0 < args.Rows; row0 += GemmMaxRowsPerLaunch)
            {
                int rows = Math.Min(GemmMaxRowsPerLaunch, args.Rows - row0);
                LaunchKernel(GroupedGemmContiguousKernel, new Dim3(colTiles, (uint)((rows + GemmTile - 1) / GemmTile)), new Dim3(GemmThreads), GemmSharedBytes,
                    KernelArg.Pointer(args.A.Data + (nint)row0 * args.K),
                    KernelArg.Pointer(args.AScales.Data + (nint)row0 * kBlocks * saSize),
                    KernelArg.Pointer(mIndices.Data + (nint)row0 * sizeof(int)),
                    KernelArg.Pointer(args.B),
                    KernelArg.Pointer(args.BScales),
                    KernelArg.Pointer(args.D.Data + (nint)row0 * args.N * dSize),
                    rows, args.N, args.K, args.Groups, saUe8m0, sbUe8m0, outBf16);
            }
            return;
        }

        var maskedM = args.MaskedM ?? throw new ArgumentException("Expected either m_indices or masked_m.", nameof(args));
        if (args.Groups > 65535)
            throw new ArgumentException($"The CUDA masked grouped GEMM runs at most 65535 groups per launch (grid.z), got {args.Groups}.", nameof(args));
        long rowTiles = ((long)args.MMax + GemmTile - 1) / GemmTile;
        if (rowTiles > 65535)
            throw new ArgumentException($"The CUDA masked grouped GEMM needs m_max <= {65535 * GemmTile} (grid.y), got {args.MMax}.", nameof(args));
        LaunchKernel(GroupedGemmMaskedKernel, new Dim3(colTiles, (uint)rowTiles, (uint)args.Groups), new Dim3(GemmThreads), GemmSharedBytes,
            KernelArg.Pointer(args.A), KernelArg.Pointer(args.AScales), KernelArg.Pointer(maskedM), KernelArg.Pointer(args.B), KernelArg.Pointer(args.BScales),
            KernelArg.Pointer(args.D), args.MMax, args.N, args.K, args.Groups, saUe8m0, sbUe8m0, outBf16);
    }
}
