using System.Runtime.InteropServices;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cuda;

public sealed partial class CudaBackend : IMoePermuteBackend
{
    /// <summary>
    /// Gather (optionally with fused FP8 quantization): <c>dk_moe_gather(input, input_bf16,
    /// inverse, tokens, width, top_k, rows, mode, row_scales, scales_ue8m0, row_count, error,
    /// token_q, token_scales)</c> (native/kernels/moe_permute.cu).
    /// </summary>
    internal const string MoeGatherKernel = "dk_moe_gather";

    /// <summary>
    /// Weighted combine: <c>dk_moe_combine(expert_out, expert_bf16, inverse, weights, shared,
    /// shared_bf16, has_shared, output, out_bf16, tokens, width, top_k, row_count, error)</c>.
    /// </summary>
    internal const string MoeCombineKernel = "dk_moe_combine";

    /// <summary>Per-chunk expert counts: <c>dk_moe_layout_count(ids, n, experts, chunk_counts, chunk_bad)</c> (native/kernels/moe_layout.cu).</summary>
    internal const string MoeLayoutCountKernel = "dk_moe_layout_count";

    /// <summary>
    /// Offsets / masked counts: <c>dk_moe_layout_scan(chunk_counts, chunk_bad, ids, chunks, experts,
    /// alignment, m_max, expert_offsets, masked_m, status, error, shared_masked_m, shared_tokens)</c>.
    /// </summary>
    internal const string MoeLayoutScanKernel = "dk_moe_layout_scan";

    /// <summary>
    /// Stable ranks to rows: <c>dk_moe_layout_scatter(ids, n, top_k, experts, chunk_base,
    /// expert_offsets, m_max, inverse, m_indices, row_tokens)</c>.
    /// </summary>
    internal const string MoeLayoutScatterKernel = "dk_moe_layout_scatter";

    /// <summary>The most experts the device layout builder handles (one scan thread and one shared counter each).</summary>
    public const int MaxLayoutExperts = 512;

    private const int LayoutChunk = 2048;        // ids per count/scatter CTA (moe_layout.cu kChunk)
    private const int ErrorWords = 4;            // kind, a, b, c (dk/moe_error.cuh)
    private const int StatusWords = 2;           // rows used, expected_m of the last build

    private TensorBuffer? _routingError;         // sticky MoE error word, zeroed once, cleared by ThrowIfDeviceRoutingError
    private TensorBuffer? _layoutStatus;
    private TensorBuffer? _layoutScratch;        // chunk_counts [chunks, E] then chunk_bad [chunks]

    /// <summary>
    /// When true, MoE routing data that lives on the device (expert ids, inverse maps) is checked
    /// synchronously: the permutation ops download what they need, throw an
    /// <see cref="ArgumentException"/> before any kernel reads bad data, and the layout builders
    /// return exact counts. A debugging aid: it costs a device-to-host copy and a stream
    /// synchronization per call and breaks CUDA-graph capture. When false (the default), routing
    /// stays on the device: the kernels skip bad entries and record the first one in a sticky
    /// device error word that <see cref="ThrowIfDeviceRoutingError"/> reads.
    /// </summary>
    public bool ValidateDeviceRouting { get; set; }

    /// <summary>
    /// Reads the sticky MoE routing error word (a device-to-host copy, so it synchronizes the
    /// stream), clears it and throws an <see cref="ArgumentException"/> describing the first bad
    /// routing entry any MoE kernel met since the last call: an expert id outside [-1, E), an
    /// expert with more rows than the masked layout's m_max, or an inverse-map row out of range.
    /// Call it where the application synchronizes anyway (after a step), or in tests.
    /// </summary>
    public void ThrowIfDeviceRoutingError()
    {
        ObjectDisposedException.ThrowIf(IsDisposed, this);
        if (_routingError is null) return;
        Span<int> word = stackalloc int[ErrorWords];
        CopyToHost(_routingError.View, MemoryMarshal.AsBytes(word));
        if (word[0] == 0) return;
        ZeroCore(_routingError.View.Data, ErrorWords * sizeof(int));
        throw RoutingError(word);
    }

    private static ArgumentException RoutingError(ReadOnlySpan<int> word)
    {
        var (message, parameter) = word[0] switch
        {
            1 => ($"Expected expert ids in [-1, {word[3]}), got {word[2]} at flat index {word[1]} (the MoE kernels skipped it; detected on the device).", "expertIds"),
            2 => ($"Expected at most mMax = {word[3]} rows per expert in the masked layout, but expert {word[1]} gets {word[2]} (rows past mMax were dropped; detected on the device).", "mMax"),
            3 => ($"Expected inverse entries in [-1, {word[3]}), got {word[2]} at flat index {word[1]} (skipped; detected on the device).", "inverse"),
            _ => ($"Unknown MoE routing error {word[0]} ({word[1]}, {word[2]}, {word[3]}).", "expertIds"),
        };
        return new ArgumentException(message, parameter);
    }

    private TensorView RoutingErrorWord()
    {
        if (_routingError is null)
        {
            var buffer = Allocate(DType.Int32, ErrorWords);
            ZeroCore(buffer.View.Data, ErrorWords * sizeof(int));
            _routingError = buffer;
        }
        return _routingError.View;
    }

    private TensorView LayoutStatus() => (_layoutStatus ??= Allocate(DType.Int32, StatusWords)).View;

    /// <summary>Int32 elements of the layout builder's scratch for up to <paramref name="tokens"/> x <paramref name="topK"/> ids.</summary>
    internal static long LayoutScratchLength(int tokens, int topK, int experts) =>
        ((long)tokens * topK + LayoutChunk - 1) / LayoutChunk * (experts + 1);

    private TensorView LayoutScratch(int chunks, int experts, TensorView? provided)
    {
        long needed = (long)chunks * (experts + 1);
        if (provided is TensorView p && p.ElementCount >= needed) return p;
        if (_layoutScratch is null || _layoutScratch.View.ElementCount < needed)
        {
            // Grows to the largest call seen (warm-up); never freed per call.
            _layoutScratch?.Dispose();
            _layoutScratch = null;
            _layoutScratch = Allocate(DType.Int32, Math.Max(needed, 4096));
        }
        return _layoutScratch.View;
    }

    private void FillMinusOne(TensorView view)
    {
        if (view.ByteCount == 0) return;
        _context.MakeCurrent();
        Driver.Memset((ulong)view.Data, 0xFF, (nuint)view.ByteCount, Stream);
    }

    /// <summary>
    /// Rows a contiguous layout built on the device hands to the GEMMs: the host cannot know the
    /// exact count without a synchronization, so it uses <see cref="MoePermutation.ContiguousCapacity"/>
    /// rounded down to the alignment, which bounds it (the used rows are a multiple of the
    /// alignment and at most the capacity). Rows past the used ones have m_index -1, so the
    /// grouped GEMM skips their tiles and the SiLU kernel their rows.
    /// </summary>
    internal static int DeviceContiguousRows(int tokens, int topK, int experts, int alignment)
    {
        int capacity = MoePermutation.ContiguousCapacity(tokens, topK, experts, alignment);
        return capacity - capacity % alignment;
    }

    private void CheckLayoutLimits(int experts, int tokens, int topK)
    {
        if (experts > MaxLayoutExperts)
            throw new ArgumentException($"The CUDA MoE layout builder handles at most {MaxLayoutExperts} experts, got {experts}.", nameof(experts));
        long n = (long)tokens * topK;
        if ((n + LayoutChunk - 1) / LayoutChunk > int.MaxValue)
            throw new ArgumentException($"Too many routed rows for the CUDA MoE layout builder: {n}.", nameof(tokens));
    }

    // Three launches (count, scan, scatter) and two memsets: the ids never leave the device.
    private void LaunchLayout(TensorView ids, int tokens, int topK, int experts, int alignment, int mMax, TensorView? expertOffsets, TensorView? maskedM,
        TensorView inverse, TensorView? mIndices, TensorView rowTokens, TensorView? sharedMaskedM, int sharedTokens, TensorView? scratchBuffer)
    {
        int n = tokens * topK;
        int chunks = (n + LayoutChunk - 1) / LayoutChunk;
        var scratch = LayoutScratch(chunks, experts, scratchBuffer);
        nint chunkCounts = scratch.Data, chunkBad = scratch.Data + (nint)chunks * experts * sizeof(int);
        var error = RoutingErrorWord();
        var status = LayoutStatus();
        if (mIndices is TensorView mi) FillMinusOne(mi);
        FillMinusOne(rowTokens);
        LaunchKernel(MoeLayoutCountKernel, new Dim3((uint)chunks), new Dim3(256), 0,
            KernelArg.Pointer(ids), n, experts, KernelArg.Pointer(chunkCounts), KernelArg.Pointer(chunkBad));
        LaunchKernel(MoeLayoutScanKernel, new Dim3(1), new Dim3(MaxLayoutExperts), 0,
            KernelArg.Pointer(chunkCounts), KernelArg.Pointer(chunkBad), KernelArg.Pointer(ids), chunks, experts, alignment, mMax,
            KernelArg.Pointer(expertOffsets is TensorView eo ? eo.Data : 0),
            KernelArg.Pointer(maskedM is TensorView mm ? mm.Data : 0),
            KernelArg.Pointer(status), KernelArg.Pointer(error),
            KernelArg.Pointer(sharedMaskedM is TensorView sm ? sm.Data : 0), sharedTokens);
        LaunchKernel(MoeLayoutScatterKernel, new Dim3((uint)chunks), new Dim3(256), 0,
            KernelArg.Pointer(ids), n, topK, experts, KernelArg.Pointer(chunkCounts),
            KernelArg.Pointer(expertOffsets is TensorView eo2 ? eo2.Data : 0), mMax,
            KernelArg.Pointer(inverse),
            KernelArg.Pointer(mIndices is TensorView mi2 ? mi2.Data : 0),
            KernelArg.Pointer(rowTokens));
    }

    /// <summary>Downloads the sticky error word and the status of the last build (validation mode only).</summary>
    private int ValidatedStatus(int index)
    {
        ThrowIfDeviceRoutingError();
        Span<int> status = stackalloc int[StatusWords];
        CopyToHost(LayoutStatus(), MemoryMarshal.AsBytes(status));
        return status[index];
    }

    /// <summary>
    /// Builds the contiguous layout on the device (no copy of the ids to the host), with
    /// <paramref name="scratch"/> (Int32, <see cref="LayoutScratchLength"/>) or else a scratch
    /// buffer this backend keeps and grows. Returns the
    /// rows to process: the exact count with <see cref="ValidateDeviceRouting"/>, else the bound
    /// of <see cref="DeviceContiguousRows"/>; expertOffsets[E] on the device holds the exact count.
    /// </summary>
    internal int BuildContiguousOnDevice(in MoeContiguousArgs a, TensorView? sharedMaskedM, int sharedTokens, TensorView? scratch)
    {
        CheckLayoutLimits(a.Experts, a.Tokens, a.TopK);
        if (a.ExpertIds.Location == MemoryLocation.Host)
            MoePermutationCore.CheckExpertIds(a.ExpertIds.AsSpan<int>(), a.TopK, a.Experts, "expertIds");
        if (a.Tokens == 0)
        {
            FillMinusOne(a.MIndices);
            FillMinusOne(a.RowTokens);
            ZeroCore(a.ExpertOffsets.Data, a.ExpertOffsets.ByteCount);
            return 0;
        }
        LaunchLayout(a.ExpertIds, a.Tokens, a.TopK, a.Experts, a.Alignment, 0, a.ExpertOffsets, null, a.Inverse, a.MIndices, a.RowTokens, sharedMaskedM, sharedTokens, scratch);
        return ValidateDeviceRouting ? ValidatedStatus(0) : DeviceContiguousRows(a.Tokens, a.TopK, a.Experts, a.Alignment);
    }

    int IMoePermuteBackend.BuildContiguous(in MoeContiguousArgs a) => BuildContiguousOnDevice(a, null, 0, null);

    // Returns expected_m: exact with ValidateDeviceRouting, else the hint for evenly spread
    // routing, ceil(T*k / min(E, T*k)) in [1, m_max] (the exact one is on the device only).
    int IMoePermuteBackend.BuildMasked(in MoeMaskedArgs a)
    {
        CheckLayoutLimits(a.Experts, a.Tokens, a.TopK);
        if (a.ExpertIds.Location == MemoryLocation.Host)
            MoePermutationCore.CheckExpertIds(a.ExpertIds.AsSpan<int>(), a.TopK, a.Experts, "expertIds");
        if (a.Tokens == 0)
        {
            FillMinusOne(a.RowTokens);
            ZeroCore(a.MaskedM.Data, a.MaskedM.ByteCount);
            return 1;
        }
        LaunchLayout(a.ExpertIds, a.Tokens, a.TopK, a.Experts, 1, a.MMax, null, a.MaskedM, a.Inverse, null, a.RowTokens, null, 0, null);
        if (ValidateDeviceRouting) return ValidatedStatus(1);
        long routed = (long)a.Tokens * a.TopK;
        long hint = (routed + Math.Min(a.Experts, routed) - 1) / Math.Min(a.Experts, routed);
        return (int)Math.Clamp(hint, 1, Math.Max(1, a.MMax));
    }

    void IMoePermuteBackend.Gather(in MoeGatherArgs a) => LaunchGather(a, null, null);

    /// <summary>
    /// The gather; with <paramref name="tokenQ"/> [T, width] and <paramref name="tokenScales"/>
    /// [T, ceil(width/128)] (quantizing gather only, scales in the row scales' format) each
    /// token's own FP8 codes and scales are written as well, in the same pass.
    /// </summary>
    internal void LaunchGather(in MoeGatherArgs a, TensorView? tokenQ, TensorView? tokenScales)
    {
        if (a.Tokens == 0) return;
        long rowCount = a.Rows.ElementCount / a.Width;
        if (ValidateDeviceRouting) CheckDeviceInverse(a.Inverse, a.TopK, rowCount);
        bool quantize = a.Rows.DType == DType.Float8E4M3;
        var scales = a.RowScales;
        int groups = ActivationQuantization.GroupCount(a.Width);
        if (groups > 65535)
            throw new ArgumentException($"The CUDA gather handles rows of at most {65535 * 128} values (grid.y), got width {a.Width}.", nameof(a));
        LaunchKernel(MoeGatherKernel, new Dim3((uint)a.Tokens, (uint)groups), new Dim3(128), 0,
            KernelArg.Pointer(a.Input),
            a.Input.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(a.Inverse),
            a.Tokens, a.Width, a.TopK,
            KernelArg.Pointer(a.Rows),
            quantize ? 1 : 0,
            KernelArg.Pointer(quantize && scales is TensorView s ? s.Data : 0),
            quantize && scales is TensorView u && u.DType == DType.UE8M0 ? 1 : 0,
            (int)Math.Min(rowCount, int.MaxValue),
            KernelArg.Pointer(RoutingErrorWord()),
            KernelArg.Pointer(quantize && tokenQ is TensorView tq ? tq.Data : 0),
            KernelArg.Pointer(quantize && tokenScales is TensorView ts ? ts.Data : 0));
    }

    void IMoePermuteBackend.Combine(in MoeCombineArgs a)
    {
        if (a.Tokens == 0) return;
        long rowCount = a.ExpertOut.ElementCount / a.Width;
        if (ValidateDeviceRouting) CheckDeviceInverse(a.Inverse, a.TopK, rowCount);
        uint columnBlocks = (uint)((a.Width + 255) / 256);
        if (columnBlocks > 65535)
            throw new ArgumentException($"The CUDA combine handles rows of at most {65535 * 256} values (grid.y), got width {a.Width}.", nameof(a));
        LaunchKernel(MoeCombineKernel, new Dim3((uint)a.Tokens, columnBlocks), new Dim3(256), 0,
            KernelArg.Pointer(a.ExpertOut),
            a.ExpertOut.DType == DType.BFloat16 ? 1 : 0,
            KernelArg.Pointer(a.Inverse),
            KernelArg.Pointer(a.Weights),
            KernelArg.Pointer(a.Shared is TensorView s ? s.Data : 0),
            a.Shared is TensorView sb && sb.DType == DType.BFloat16 ? 1 : 0,
            a.Shared is null ? 0 : 1,
            KernelArg.Pointer(a.Output),
            a.Output.DType == DType.BFloat16 ? 1 : 0,
            a.Tokens, a.Width, a.TopK,
            (int)Math.Min(rowCount, int.MaxValue),
            KernelArg.Pointer(RoutingErrorWord()));
    }

    // Validation mode only: a device map is read back so a bad row is an ArgumentException
    // before the launch (by default the kernels skip it and record it in the error word).
    private void CheckDeviceInverse(TensorView inverse, int topK, long rows)
    {
        if (inverse.Location == MemoryLocation.Host) return; // the op has checked it
        MoePermutationCore.CheckInverse(Download<int>(inverse), topK, rows, "inverse");
    }
}
