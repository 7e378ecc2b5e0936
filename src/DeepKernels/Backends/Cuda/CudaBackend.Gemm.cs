using System.Runtime.InteropServices;
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
    /// int sb_ue8m0, int out_bf16, int accumulate, int k_blocks_per_split, float* workspace)</c>
    /// (native/kernels/fp8_gemm.cu); grid.z = K splits.
    /// </summary>
    internal const string Fp8GemmKernel = "dk_fp8_gemm";

    /// <summary>Split-K reduction: <c>dk_fp8_gemm_reduce(const float* workspace, int splits, void* d, int m, int n, int out_bf16, int accumulate)</c>.</summary>
    internal const string Fp8GemmReduceKernel = "dk_fp8_gemm_reduce";

    /// <summary>Most K splits of one GEMM.</summary>
    internal const int GemmMaxSplits = 16;

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
        if (UsesSm90Gemm)
        {
            Fp8GemmSm90(args);
            return;
        }
        CheckGemmAlignment(args.K, "K", "FP8 GEMM", (args.A, "a"), (args.B, "b"));
        int kBlocks = Fp8Gemm.BlockCount(args.K);
        int saUe8m0 = args.AScales.DType == DType.UE8M0 ? 1 : 0, sbUe8m0 = args.BScales.DType == DType.UE8M0 ? 1 : 0;
        int outBf16 = args.D.DType == DType.BFloat16 ? 1 : 0;
        int saSize = args.AScales.DType.SizeInBytes(), dSize = args.D.DType.SizeInBytes();
        uint colTiles = (uint)((args.N + GemmTile - 1) / GemmTile);
        int accumulate = args.Options.Accumulate ? 1 : 0;
        for (int row0 = 0; row0 < args.M; row0 += GemmMaxRowsPerLaunch)
        {
            int rows = Math.Min(GemmMaxRowsPerLaunch, args.M - row0);
            uint rowTiles = (uint)((rows + GemmTile - 1) / GemmTile);
            var (splits, perSplit) = GemmSplitK(rowTiles * (long)colTiles, kBlocks, Device.MultiprocessorCount);
            var a = KernelArg.Pointer(args.A.Data + (nint)row0 * args.K);
            var sa = KernelArg.Pointer(args.AScales.Data + (nint)row0 * kBlocks * saSize);
            var d = KernelArg.Pointer(args.D.Data + (nint)row0 * args.N * dSize);
            if (splits == 1)
            {
                LaunchKernel(Fp8GemmKernel, new Dim3(colTiles, rowTiles), new Dim3(GemmThreads), GemmSharedBytes,
                    a, sa, KernelArg.Pointer(args.B), KernelArg.Pointer(args.BScales), d,
                    rows, args.N, args.K, saUe8m0, sbUe8m0, outBf16, accumulate, kBlocks, KernelArg.Pointer(0));
                continue;
            }
            lock (_scratchLock)
            {
                long count = (long)rows * args.N;
                nint workspace = Scratch("gemm.workspace", splits * count * sizeof(float));
                LaunchKernel(Fp8GemmKernel, new Dim3(colTiles, rowTiles, (uint)splits), new Dim3(GemmThreads), GemmSharedBytes,
                    a, sa, KernelArg.Pointer(args.B), KernelArg.Pointer(args.BScales), d,
                    rows, args.N, args.K, saUe8m0, sbUe8m0, outBf16, accumulate, perSplit, KernelArg.Pointer(workspace));
                LaunchKernel(Fp8GemmReduceKernel, new Dim3((uint)((count + 255) / 256)), new Dim3(256), 0,
                    KernelArg.Pointer(workspace), splits, d, rows, args.N, outBf16, accumulate);
            }
        }
    }

    // ---- per-op device scratch, reused across calls ----

    private readonly object _scratchLock = new();
    private readonly Dictionary<string, TensorBuffer> _scratch = new(StringComparer.Ordinal);

    /// <summary>
    /// A device buffer of at least <paramref name="bytes"/> bytes for <paramref name="purpose"/>,
    /// kept and reused by later calls so that steady-state ops allocate nothing. All work is
    /// ordered on this backend's one stream, so a later call's writes land after the earlier
    /// call's kernels have read it. Callers hold <c>_scratchLock</c> from here until their
    /// launches are queued. A buffer that has to grow is released after the queued work.
    /// </summary>
    private nint Scratch(string purpose, long bytes)
    {
        bytes = Math.Max(bytes, 256);
        if (_scratch.TryGetValue(purpose, out var buffer))
        {
            if (buffer.View.ByteCount >= bytes) return buffer.View.Data;
            bytes = Math.Max(bytes, buffer.View.ByteCount * 2);
            _scratch.Remove(purpose);
            ReleaseAfterQueuedWork([buffer]);
        }
        buffer = Allocate(DType.UInt8, bytes);
        _scratch[purpose] = buffer;
        return buffer.View.Data;
    }

    /// <summary>Copies host ints into the scratch buffer of <paramref name="purpose"/> and returns them as an Int32 device tensor.</summary>
    private TensorView ScratchInts(string purpose, ReadOnlySpan<int> values)
    {
        var view = new TensorView(Scratch(purpose, (long)values.Length * sizeof(int)), DType.Int32, MemoryLocation.Device, values.Length);
        CopyFromHost(MemoryMarshal.AsBytes(values), view);
        return view;
    }

    /// <summary>
    /// K splits for a GEMM of <paramref name="tiles"/> output tiles and <paramref name="kBlocks"/>
    /// 128-wide K blocks on <paramref name="multiprocessors"/> SMs: none while the tiles fill the
    /// device; otherwise enough splits to fill it, each at least two K blocks, at most
    /// <see cref="GemmMaxSplits"/>. Decode shapes (M &lt;= 16, e.g. N = 2112, K = 7168: 17 tiles)
    /// would otherwise leave most SMs idle.
    /// </summary>
    internal static (int Splits, int BlocksPerSplit) GemmSplitK(long tiles, int kBlocks, int multiprocessors)
    {
        if (tiles >= multiprocessors || kBlocks < 4) return (1, kBlocks);
        long wanted = (multiprocessors + tiles - 1) / tiles;
        int splits = (int)Math.Min(Math.Min(wanted, kBlocks / 2), GemmMaxSplits);
        if (splits <= 1) return (1, kBlocks);
        int perSplit = (kBlocks + splits - 1) / splits;
        return ((kBlocks + perSplit - 1) / perSplit, perSplit);
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
