using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>
    /// The Hopper FP8 GEMM (TMA, wgmma, warp specialisation, persistent tiles):
    /// <c>dk_fp8_gemm_sm90(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b,
    /// const void* sa, const void* sb, void* d, int m, int n, int k, int sa_ue8m0, int sb_ue8m0,
    /// int out_bf16, int accumulate)</c> (native/kernels/fp8_gemm_sm90.cu). Built only for sm_90a
    /// (nvcc 12.3 and newer) and into the kernel emulator.
    /// </summary>
    internal const string Fp8GemmSm90Kernel = "dk_fp8_gemm_sm90";

    /// <summary>
    /// Selects the CUDA FP8 GEMM kernel: <c>sm90</c> (the Hopper kernel; on the emulator this is the
    /// only way to run it), <c>portable</c> (the sm_80 kernel everywhere), or unset/<c>auto</c>
    /// (the Hopper kernel on a CC 9.0 device whose fatbin holds it for sm_90a, else the portable one).
    /// </summary>
    internal const string GemmKernelEnvironmentVariable = "DEEPKERNELS_GEMM_KERNEL";

    /// <summary>Threads per CTA of the Hopper GEMM: one producer and two consumer warp groups.</summary>
    internal const int GemmSm90Threads = 384;

    /// <summary>Dynamic shared memory of the Hopper GEMM: 4 stages of two 128x128 FP8 tiles plus 1 KiB of alignment slack.</summary>
    internal const uint GemmSm90SharedBytes = 4 * 2 * 128 * 128 + 1024;

    /// <summary>Whether the FP8 GEMM on this backend runs the Hopper kernel (see <see cref="GemmKernelEnvironmentVariable"/>).</summary>
    internal bool UsesSm90Gemm => SelectsSm90Gemm(Environment.GetEnvironmentVariable(GemmKernelEnvironmentVariable), HasNativeSm90Gemm);

    /// <summary>The kernel choice for a <see cref="GemmKernelEnvironmentVariable"/> value and whether the device runs the sm_90a kernel natively.</summary>
    internal static bool SelectsSm90Gemm(string? setting, bool nativeSm90)
    {
        string? choice = setting?.Trim().ToLowerInvariant();
        return choice switch
        {
            "sm90" => true,
            "portable" => false,
            null or "" or "auto" => nativeSm90,
            _ => throw new InvalidOperationException($"{GemmKernelEnvironmentVariable}='{setting}' is not one of: sm90, portable, auto (or unset)."),
        };
    }

    /// <summary>A CC 9.0 device (not the emulator) with the Hopper GEMM built for sm_90a in the fatbin.</summary>
    internal bool HasNativeSm90Gemm =>
        Driver is not EmulatorDriver && Device.ComputeCapability == 90 &&
        _image.Report?.ArchsOf(Fp8GemmSm90Kernel).Contains("sm_90a") == true;

    /// <summary>
    /// Runs the Hopper kernel. Needs the emulator or a CC 9.0 device whose fatbin holds it for
    /// sm_90a (else <see cref="NotSupportedException"/>), K a multiple of 16 and 16-byte aligned FP8
    /// operands (TMA: global strides multiples of 16 bytes), checked before encoding the tensor maps.
    /// </summary>
    internal void Fp8GemmSm90(in Fp8GemmArgs args)
    {
        if (Driver is not EmulatorDriver && !HasNativeSm90Gemm)
            throw new NotSupportedException($"The Hopper FP8 GEMM needs a CC 9.0 device and a fatbin built for sm_90a (nvcc >= 12.3); this is {Device.Name} (CC {Device.ComputeCapabilityMajor}.{Device.ComputeCapabilityMinor}).");
        CheckGemmAlignment(args.K, "K", "Hopper FP8 GEMM", (args.A, "a"), (args.B, "b"));
        byte[] mapA = EncodeOperandMap(args.A, args.M, args.K);
        byte[] mapB = EncodeOperandMap(args.B, args.N, args.K);
        long tiles = (long)((args.M + GemmTile - 1) / GemmTile) * ((args.N + GemmTile - 1) / GemmTile);
        uint grid = (uint)Math.Max(1, Math.Min(tiles, Math.Max(1, Device.MultiprocessorCount)));
        int saUe8m0 = args.AScales.DType == DType.UE8M0 ? 1 : 0, sbUe8m0 = args.BScales.DType == DType.UE8M0 ? 1 : 0;
        LaunchKernel(Fp8GemmSm90Kernel, new Dim3(grid), new Dim3(GemmSm90Threads), GemmSm90SharedBytes,
            KernelArg.Struct(mapA), KernelArg.Struct(mapB),
            KernelArg.Pointer(args.AScales), KernelArg.Pointer(args.BScales), KernelArg.Pointer(args.D),
            args.M, args.N, args.K, saUe8m0, sbUe8m0, args.D.DType == DType.BFloat16 ? 1 : 0, args.Options.Accumulate ? 1 : 0);
    }

    /// <summary>A [rows, k] E4M3 operand as a 2-D tensor map: 128x128-byte boxes, 128-byte swizzle.</summary>
    private byte[] EncodeOperandMap(TensorView operand, int rows, int k)
    {
        _context.MakeCurrent();
        return Driver.EncodeTensorMapTiled(1, (ulong)operand.Data, [(ulong)k, (ulong)rows], [(ulong)k], [(uint)GemmTile, (uint)GemmTile], 128);
    }
}
