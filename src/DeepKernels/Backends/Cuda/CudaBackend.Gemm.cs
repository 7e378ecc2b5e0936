using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IFp8GemmBackend
{
    /// <summary>
    /// The portable (sm_80+) FP8 GEMM: <c>dk_fp8_gemm(const unsigned char* a, const void* sa,
    /// const unsigned char* b, const void* sb, void* d, int m, int n, int k, int sa_ue8m0,
    /// int sb_ue8m0, int out_bf16, int accumulate)</c> (native/kernels/fp8_gemm.cu).
    /// </summary>
    internal const string Fp8GemmKernel = "dk_fp8_gemm";

    /// <summary>Output tile of the portable GEMM kernels (rows and columns).</summary>
    internal const int GemmTile = 128;

    /// <summary>Threads per CTA of the portable GEMM kernels.</summary>
    internal const int GemmThreads = 256;

    /// <summary>Dynamic shared memory of the portable GEMM kernels: 3 stages of two 128x128 FP8 tiles.</summary>
    internal const uint GemmSharedBytes = 3 * 2 * 128 * 128;

    /// <summary>Rows per launch: grid.y (row tiles) is limited to 65535.</summary>
    internal const int GemmMaxRowsPerLaunch = 65535 * GemmTile;

    void IFp8GemmBackend.Fp8Gemm(in Fp8GemmArgs args)
    {
        CheckGemmAlignment(args.K, "K", "FP8 GEMM", (args.A, "a"), (args.B, "b"));
        int kBlocks = Fp8Gemm.BlockCount(args.K);
        int saUe8m0 = args.AScales.DType == DType.UE8M0 ? 1 : 0, sbUe8m0 = args.BScales.DType == DType.UE8M0 ? 1 : 0;
        int outBf16 = args.D.DType == DType.BFloat16 ? 1 : 0;
        int saSize = args.AScales.DType.SizeInBytes(), dSize = args.D.DType.SizeInBytes();
        uint colTiles = (uint)((args.N + GemmTile - 1) / GemmTile);
        for (int row0 = 0; row0 < args.M; row0 += GemmMaxRowsPerLaunch)
        {
            int rows = Math.Min(GemmMaxRowsPerLaunch, args.M - row0);
            LaunchKernel(Fp8GemmKernel, new Dim3(colTiles, (uint)((rows + GemmTile - 1) / GemmTile)), new Dim3(GemmThreads), GemmSharedBytes,
                KernelArg.Pointer(args.A.Data + (nint)row0 * args.K),
                KernelArg.Pointer(args.AScales.Data + (nint)row0 * kBlocks * saSize),
                KernelArg.Pointer(args.B),
                KernelArg.Pointer(args.BScales),
                KernelArg.Pointer(args.D.Data + (nint)row0 * args.N * dSize),
                rows, args.N, args.K, saUe8m0, sbUe8m0, outBf16, args.Options.Accumulate ? 1 : 0);
        }
    }

    /// <summary>
    /// The portable GEMM kernels copy 16-byte chunks with cp.async: K must be a multiple of 16 and
    /// the FP8 operands 16-byte aligned. Checked before any launch.
    /// </summary>
    internal static void CheckGemmAlignment(int k, string kName, string op, params ReadOnlySpan<(TensorView View, string Name)> operands)
    {
        if (k % 16 != 0)
            throw new ArgumentException($"The CUDA {op} needs {kName} to be a multiple of 16 (rows are copied in 16-byte chunks), got {kName} = {k}.", kName);
        foreach (var (view, name) in operands)
        {
            if (view.Data % 16 != 0)
                throw new ArgumentException($"The CUDA {op} needs {name} 16-byte aligned, got address 0x{view.Data:x} ({view}).", name);
        }
    }
}
