using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>
    /// Hopper contiguous grouped GEMM: <c>dk_grouped_gemm_contiguous_sm90(map_a, map_b, sa, sb,
    /// m_indices, d, m, n, k, groups, sa_ue8m0, sb_ue8m0, out_bf16)</c>
    /// (native/kernels/grouped_gemm_sm90.cu). Built only for sm_90a and into the kernel emulator.
    /// </summary>
    internal const string GroupedGemmContiguousSm90Kernel = "dk_grouped_gemm_contiguous_sm90";

    /// <summary>
    /// Hopper masked grouped GEMM: <c>dk_grouped_gemm_masked_sm90(map_a, map_b, sa, sb, masked_m, d,
    /// m_max, n, k, groups, sa_ue8m0, sb_ue8m0, out_bf16)</c>.
    /// </summary>
    internal const string GroupedGemmMaskedSm90Kernel = "dk_grouped_gemm_masked_sm90";

    /// <summary>
    /// Why the Hopper grouped kernels cannot take this shape (null when they can): TMA box
    /// coordinates are 32-bit, so the weight rows G*N and the activation rows must stay below 2^31.
    /// K % 16 and the 16-byte alignment are shared with the portable kernels and checked by both.
    /// </summary>
    internal static string? GroupedGemmSm90Unsupported(in GroupedGemmArgs args)
    {
        if ((long)args.Groups * args.N > int.MaxValue)
            return $"the Hopper grouped FP8 GEMM addresses the weights as one [G*N, K] tensor map with 32-bit row coordinates; G*N = {(long)args.Groups * args.N} is too large";
        if (args.Rows > int.MaxValue - GemmTile)
            return $"the Hopper grouped FP8 GEMM needs fewer than {int.MaxValue - GemmTile} activation rows (32-bit TMA coordinates), got {args.Rows}";
        return null;
    }

    /// <summary>
    /// Runs the Hopper grouped kernels (contiguous or masked, by which of m_indices / masked_m is
    /// set). Needs the emulator or a CC 9.0 device whose fatbin holds them for sm_90a (else
    /// <see cref="NotSupportedException"/>); K a multiple of 16, 16-byte aligned FP8 operands and
    /// <see cref="GroupedGemmSm90Unsupported"/> null (else <see cref="ArgumentException"/>), all
    /// checked before encoding the tensor maps.
    /// </summary>
    internal void GroupedGemmSm90(in GroupedGemmArgs args)
    {
        if (Driver is not EmulatorDriver && !HasNativeSm90Gemm)
            throw new NotSupportedException($"The Hopper grouped FP8 GEMM needs a CC 9.0 device and a fatbin built for sm_90a (nvcc >= 12.3); this is {Device.Name} (CC {Device.ComputeCapabilityMajor}.{Device.ComputeCapabilityMinor}).");
        CheckGemmAlignment(args.K, "K", "Hopper grouped FP8 GEMM", (args.A, "a"), (args.B, "b"));
        if (GroupedGemmSm90Unsupported(args) is string reason)
            throw new ArgumentException($"Unsupported shape: {reason}.", nameof(args));

        int saUe8m0 = args.AScales.DType == DType.UE8M0 ? 1 : 0, sbUe8m0 = args.BScales.DType == DType.UE8M0 ? 1 : 0;
        int outBf16 = args.D.DType == DType.BFloat16 ? 1 : 0;
        long colTiles = (args.N + GemmTile - 1) / GemmTile;
        byte[] mapA = EncodeOperandMap(args.A, args.Rows, args.K);
        byte[] mapB = EncodeOperandMap(args.B, args.Groups * args.N, args.K);
        bool contiguous = args.MIndices is not null;
        // Upper bound of the work: every row tile of every expert (masked) or of [M, N] (contiguous);
        // CTAs beyond the real work find none and leave at once.
        long rowTiles = contiguous ? (args.Rows + GemmTile - 1) / GemmTile : (long)args.Groups * ((args.MMax + GemmTile - 1) / GemmTile);
        uint grid = (uint)Math.Max(1, Math.Min(rowTiles * colTiles, Math.Max(1, Device.MultiprocessorCount)));
        var counts = contiguous ? args.MIndices!.Value : args.MaskedM ?? throw new ArgumentException("Expected either m_indices or masked_m.", nameof(args));
        LaunchKernel(contiguous ? GroupedGemmContiguousSm90Kernel : GroupedGemmMaskedSm90Kernel, new Dim3(grid), new Dim3(GemmSm90Threads), GemmSm90SharedBytes,
            KernelArg.Struct(mapA), KernelArg.Struct(mapB),
            KernelArg.Pointer(args.AScales), KernelArg.Pointer(args.BScales), KernelArg.Pointer(counts), KernelArg.Pointer(args.D),
            contiguous ? args.Rows : args.MMax, args.N, args.K, args.Groups, saUe8m0, sbUe8m0, outBf16);
    }
}
