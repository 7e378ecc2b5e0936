using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend
{
    /// <summary>
    /// The Hopper MLA decode split kernel (TMA page loads, wgmma, a producer and two consumer warp
    /// groups each owning 256 output columns and half of each KV tile's scores): <c>dk_mla_decode_sm90(const __grid_constant__ CUtensorMap kv_map,
    /// q, q_bf16, cache_fp8, page_size, block_table, max_pages, seqlens, chunks, num_chunks,
    /// softmax_scale, causal, s_q, h_q, out_partial, lse_partial)</c> (native/kernels/mla_decode_sm90.cu).
    /// Writes the same partial outputs as <see cref="MlaDecodeSplitKernel"/>, merged by
    /// <see cref="MlaDecodeCombineKernel"/>. Built only for sm_90a (nvcc 12.3 and newer) and into
    /// the kernel emulator.
    /// </summary>
    internal const string MlaDecodeSm90Kernel = "dk_mla_decode_sm90";

    /// <summary>
    /// Selects the CUDA MLA decode kernel: <c>sm90</c> (the Hopper kernel; on the emulator this is the
    /// only way to run it), <c>portable</c> (the sm_80 kernel everywhere), or unset/<c>auto</c>
    /// (the Hopper kernel on a CC 9.0 device whose fatbin holds it for sm_90a, else the portable one).
    /// </summary>
    internal const string MlaKernelEnvironmentVariable = "DEEPKERNELS_MLA_KERNEL";

    /// <summary>Threads per CTA of the Hopper MLA kernel: one producer and two consumer warp groups.</summary>
    internal const int MlaSm90Threads = 384;

    /// <summary>Dynamic shared memory of the Hopper MLA kernel: the Q tile, two BF16 KV stages of 64 x 576, the 64 x 64 BF16 P tile, 1 KiB alignment slack.</summary>
    internal const uint MlaSm90SharedBytes = 3 * 64 * 576 * 2 + 64 * 64 * 2 + 1024;

    /// <summary>KV tokens per tile of the Hopper MLA kernel (a TMA box has at most this many rows).</summary>
    private const int MlaSm90Tile = 64;

    /// <summary>
    /// A per-flow override of <see cref="MlaKernelEnvironmentVariable"/> (tests force a kernel
    /// without touching the process environment); null defers to the environment.
    /// </summary>
    internal static readonly AsyncLocal<string?> MlaKernelOverride = new();

    /// <summary>Whether MLA decode on this backend runs the Hopper kernel (see <see cref="MlaKernelEnvironmentVariable"/>).</summary>
    internal bool UsesSm90Mla =>
        SelectsSm90Mla(MlaKernelOverride.Value ?? Environment.GetEnvironmentVariable(MlaKernelEnvironmentVariable), HasNativeSm90Mla);

    /// <summary>The kernel choice for a <see cref="MlaKernelEnvironmentVariable"/> value and whether the device runs the sm_90a kernel natively.</summary>
    internal static bool SelectsSm90Mla(string? setting, bool nativeSm90)
    {
        string? choice = setting?.Trim().ToLowerInvariant();
        return choice switch
        {
            "sm90" => true,
            "portable" => false,
            null or "" or "auto" => nativeSm90,
            _ => throw new InvalidOperationException($"{MlaKernelEnvironmentVariable}='{setting}' is not one of: sm90, portable, auto (or unset)."),
        };
    }

    /// <summary>A CC 9.0 device (not the emulator) with the Hopper MLA kernel built for sm_90a in the fatbin.</summary>
    internal bool HasNativeSm90Mla =>
        Driver is not EmulatorDriver && Device.ComputeCapability == 90 &&
        _image.Report?.ArchsOf(MlaDecodeSm90Kernel).Contains("sm_90a") == true;

    /// <summary>
    /// Launches the Hopper split kernel over every chunk (same grid and outputs as the portable
    /// one). Needs the emulator or a CC 9.0 device whose fatbin holds it for sm_90a, else
    /// <see cref="NotSupportedException"/>; the cache must be 16-byte aligned (TMA), checked by the caller.
    /// </summary>
    private void LaunchMlaSm90(in MlaDecodeArgs a, TensorView seqlenView, TensorView chunkView, int chunks, nint partialOut, nint partialLse)
    {
        if (Driver is not EmulatorDriver && !HasNativeSm90Mla)
            throw new NotSupportedException($"The Hopper MLA decode needs a CC 9.0 device and a fatbin built for sm_90a (nvcc >= 12.3); this is {Device.Name} (CC {Device.ComputeCapabilityMajor}.{Device.ComputeCapabilityMinor}).");
        bool fp8 = a.Layout == LatentCacheLayout.Fp8;
        int record = LatentCacheFormat.BytesPerToken(a.Layout);
        ulong slots = (ulong)(a.Cache.ByteCount / record);
        uint boxRows = (uint)Math.Min(a.PageSize, MlaSm90Tile);
        _context.MakeCurrent();
        // BF16: [slots, 576] BF16 in 64-column (128-byte, swizzled) boxes; FP8: whole 656-byte records as 164 words.
        byte[] map = fp8
            ? Driver.EncodeTensorMapTiled(4, (ulong)a.Cache.Data, [(ulong)(record / 4), slots], [(ulong)record], [(uint)(record / 4), boxRows], 0)
            : Driver.EncodeTensorMapTiled(2, (ulong)a.Cache.Data, [(ulong)LatentCacheFormat.HeadDim, slots], [(ulong)record], [64u, boxRows], 128);
        int rows = a.SQ * a.HQ;
        LaunchKernel(MlaDecodeSm90Kernel, new Dim3((uint)chunks, (uint)((rows + MlaRowsPerCta - 1) / MlaRowsPerCta)), new Dim3(MlaSm90Threads), MlaSm90SharedBytes,
            KernelArg.Struct(map), KernelArg.Pointer(a.Q), a.Q.DType == DType.BFloat16 ? 1 : 0,
            fp8 ? 1 : 0, a.PageSize, KernelArg.Pointer(a.BlockTable), a.MaxPages,
            KernelArg.Pointer(seqlenView), KernelArg.Pointer(chunkView), chunks,
            a.SoftmaxScale, a.Causal ? 1 : 0, a.SQ, a.HQ,
            KernelArg.Pointer(partialOut), KernelArg.Pointer(partialLse));
    }
}
