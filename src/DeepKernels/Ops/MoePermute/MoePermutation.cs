using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MoePermute;

/// <summary>
/// Token permutation for grouped expert GEMMs, and the weighted combine back to tokens.
/// <para><b>Contiguous layout</b> (prefill): the T*k routed rows are grouped by expert; expert
/// e's segment starts at <c>expertOffsets[e]</c> and is padded to a multiple of the alignment
/// (default 128, the GEMM's M tile); experts with no tokens get an empty segment. Per row:
/// <c>mIndices</c> (expert id, -1 on padding and unused rows) and <c>rowTokens</c> (source
/// token, -1 likewise). Within a segment rows follow (token, slot) order.</para>
/// <para><b>Masked layout</b> (decode, fixed shapes for CUDA graphs): [E, m_max, K]; expert e
/// uses rows [0, masked_m[e]) of its slab. <c>expected_m</c> is a hint for kernel tiling: the
/// mean row count over experts that have rows, rounded up, in [1, m_max].</para>
/// <para>Both produce the inverse map [T, k]: the row of each (token, slot), -1 for a slot whose
/// expert id is -1 (a dropped slot). Gather writes each token's row to its rows; rows the map
/// does not name (padding) are left untouched, and the grouped GEMM skips them. Combine:
/// out[t] = sum_j w[t,j] * expertOut[row(t,j)] in FP32, slot order, then + shared[t].</para>
/// </summary>
public static class MoePermutation
{
    /// <summary>The default segment alignment, the grouped GEMM's M tile.</summary>
    public const int DefaultAlignment = 128;

    /// <summary>
    /// Rows a contiguous layout may need for <paramref name="tokens"/> x <paramref name="topK"/>
    /// routed rows over <paramref name="numExperts"/> experts: T*k plus up to alignment-1 padding
    /// rows for each expert that can have tokens. Size <c>mIndices</c>/<c>rowTokens</c> by this.
    /// </summary>
    public static int ContiguousCapacity(int tokens, int topK, int numExperts, int alignment = DefaultAlignment)
    {
        Guard.NonNegative(tokens, nameof(tokens));
        Guard.Positive(topK, nameof(topK));
        Guard.Positive(numExperts, nameof(numExperts));
        Guard.Positive(alignment, nameof(alignment));
        long routed = (long)tokens * topK;
        long capacity = routed + Math.Min(numExperts, routed) * (alignment - 1);
        return checked((int)capacity);
    }

    /// <summary>
    /// Builds the contiguous layout from expert ids [T, k] (values in [-1, E)). Writes
    /// <paramref name="expertOffsets"/> [E + 1] (segment starts, last = rows used),
    /// <paramref name="mIndices"/> and <paramref name="rowTokens"/> (length &gt;=
    /// <see cref="ContiguousCapacity"/>; rows past the used ones are -1) and
    /// <paramref name="inverse"/> [T, k]. Returns the rows used.
    /// </summary>
    public static int BuildContiguous(ReadOnlySpan<int> expertIds, int topK, int numExperts, int alignment, Span<int> expertOffsets, Span<int> mIndices, Span<int> rowTokens, Span<int> inverse)
    {
        int tokens = CheckIds(expertIds, topK, numExperts);
        Guard.Positive(alignment, nameof(alignment));
        Guard.Length(expertOffsets.Length, numExperts + 1L, nameof(expertOffsets));
        int capacity = ContiguousCapacity(tokens, topK, numExperts, alignment);
        Guard.AtLeast(mIndices.Length, capacity, nameof(mIndices));
        Guard.Length(rowTokens.Length, mIndices.Length, nameof(rowTokens));
        Guard.Length(inverse.Length, expertIds.Length, nameof(inverse));
        return MoePermutationCore.BuildContiguous(expertIds, topK, numExperts, alignment, expertOffsets, mIndices, rowTokens, inverse);
    }

    /// <summary>
    /// Builds the masked layout from expert ids [T, k]: <paramref name="maskedM"/> [E] rows per
    /// expert, <paramref name="rowTokens"/> [E * mMax] (-1 past masked_m) and
    /// <paramref name="inverse"/> [T, k] (row = e * mMax + position). Throws, before writing
    /// anything, when an expert gets more than <paramref name="mMax"/> rows. Returns expected_m.
    /// </summary>
    public static int BuildMasked(ReadOnlySpan<int> expertIds, int topK, int numExperts, int mMax, Span<int> maskedM, Span<int> rowTokens, Span<int> inverse)
    {
        CheckIds(expertIds, topK, numExperts);
        Guard.Positive(mMax, nameof(mMax));
        Guard.Length(maskedM.Length, numExperts, nameof(maskedM));
        Guard.Length(rowTokens.Length, (long)numExperts * mMax, nameof(rowTokens));
        Guard.Length(inverse.Length, expertIds.Length, nameof(inverse));
        CheckMaskedCapacity(expertIds, numExperts, mMax);
        return MoePermutationCore.BuildMasked(expertIds, topK, numExperts, mMax, maskedM, rowTokens, inverse);
    }

    /// <summary>Copies each token row of <paramref name="input"/> [T, width] to its rows of <paramref name="rows"/> [R, width].</summary>
    public static void Gather<T>(ReadOnlySpan<T> input, int width, ReadOnlySpan<int> inverse, int topK, Span<T> rows) where T : unmanaged
    {
        int tokens = CheckGather(input.Length, width, inverse, topK, rows.Length);
        for (int t = 0; t < tokens; t++)
            MoePermutationCore.GatherToken(input.Slice(t * width, width), inverse.Slice(t * topK, topK), rows, width);
    }

    /// <summary>
    /// Gather with FP8 activation quantization fused in: each token is quantized once per 1x128
    /// group (exactly as <see cref="ActivationQuantization"/>) and its codes and scales copied to
    /// its rows. <paramref name="rowScales"/> is [R, ceil(width/128)].
    /// </summary>
    public static void GatherQuantize(ReadOnlySpan<float> input, int width, ReadOnlySpan<int> inverse, int topK, Span<Float8E4M3> rows, Span<float> rowScales, ScaleFormat format = ScaleFormat.Float32)
    {
        int tokens = CheckGather(input.Length, width, inverse, topK, rows.Length);
        Guard.Length(rowScales.Length, (long)(rows.Length / width) * ActivationQuantization.GroupCount(width), nameof(rowScales));
        for (int t = 0; t < tokens; t++)
            MoePermutationCore.GatherQuantizeToken(input.Slice(t * width, width), inverse.Slice(t * topK, topK), rows, rowScales, width, format);
    }

    /// <summary>
    /// output[t] = sum_j weights[t, j] * expertOut[inverse[t, j]] (+ shared[t] when
    /// <paramref name="shared"/> is not empty). <paramref name="expertOut"/> is [R, width].
    /// </summary>
    public static void Combine(ReadOnlySpan<float> expertOut, int width, ReadOnlySpan<int> inverse, ReadOnlySpan<float> weights, int topK, ReadOnlySpan<float> shared, Span<float> output)
    {
        Guard.Positive(width, nameof(width));
        Guard.Positive(topK, nameof(topK));
        if (expertOut.Length % width != 0)
            throw new ArgumentException($"Expected {nameof(expertOut)} length to be a multiple of width = {width}, got {expertOut.Length}.", nameof(expertOut));
        if (inverse.Length % topK != 0)
            throw new ArgumentException($"Expected {nameof(inverse)} length to be a multiple of topK = {topK}, got {inverse.Length}.", nameof(inverse));
        int tokens = inverse.Length / topK;
        Guard.Length(weights.Length, inverse.Length, nameof(weights));
        Guard.Length(output.Length, (long)tokens * width, nameof(output));
        if (!shared.IsEmpty) Guard.Length(shared.Length, (long)tokens * width, nameof(shared));
        MoePermutationCore.CheckInverse(inverse, topK, expertOut.Length / width, nameof(inverse));
        for (int t = 0; t < tokens; t++)
        {
            MoePermutationCore.CombineToken(expertOut, width, inverse.Slice(t * topK, topK), weights.Slice(t * topK, topK),
                shared.IsEmpty ? default : shared.Slice(t * width, width), output.Slice(t * width, width));
        }
    }

    private static int CheckIds(ReadOnlySpan<int> expertIds, int topK, int numExperts)
    {
        Guard.Positive(topK, nameof(topK));
        Guard.Positive(numExperts, nameof(numExperts));
        if (expertIds.Length % topK != 0)
            throw new ArgumentException($"Expected {nameof(expertIds)} length to be a multiple of topK = {topK}, got {expertIds.Length}.", nameof(expertIds));
        MoePermutationCore.CheckExpertIds(expertIds, topK, numExperts, nameof(expertIds));
        return expertIds.Length / topK;
    }

    private static void CheckMaskedCapacity(ReadOnlySpan<int> expertIds, int numExperts, int mMax)
    {
        Span<int> counts = numExperts <= 1024 ? stackalloc int[numExperts] : new int[numExperts];
        MoePermutationCore.Count(expertIds, counts);
        for (int e = 0; e < numExperts; e++)
            if (counts[e] > mMax)
                throw new ArgumentException($"Expected at most mMax = {mMax} rows per expert in the masked layout, but expert {e} gets {counts[e]}.", nameof(mMax));
    }

    private static int CheckGather(int inputLength, int width, ReadOnlySpan<int> inverse, int topK, int rowsLength)
    {
        Guard.Positive(width, nameof(width));
        Guard.Positive(topK, nameof(topK));
        if (inverse.Length % topK != 0)
            throw new ArgumentException($"Expected {nameof(inverse)} length to be a multiple of topK = {topK}, got {inverse.Length}.", nameof(inverse));
        int tokens = inverse.Length / topK;
        Guard.Length(inputLength, (long)tokens * width, nameof(inputLength));
        if (rowsLength % width != 0)
            throw new ArgumentException($"Expected rows length to be a multiple of width = {width}, got {rowsLength}.", nameof(rowsLength));
        MoePermutationCore.CheckInverse(inverse, topK, rowsLength / width, nameof(inverse));
        return tokens;
    }

    // ---- Backend API ----

    /// <summary>
    /// Backend form of <see cref="BuildContiguous(ReadOnlySpan{int}, int, int, int, Span{int}, Span{int}, Span{int}, Span{int})"/>:
    /// Int32 tensors <paramref name="expertIds"/> [T, k], <paramref name="expertOffsets"/> [E + 1],
    /// <paramref name="mIndices"/> and <paramref name="rowTokens"/> [capacity], <paramref name="inverse"/> [T, k].
    /// Returns the rows to hand to the grouped GEMM: on the CPU backend the rows used; on the CUDA
    /// backend the layout is built on the device from device ids (no copy to the host), so it
    /// returns a bound, <see cref="ContiguousCapacity"/> rounded down to the alignment, and rows
    /// past the used ones are padding (m_index -1); <paramref name="expertOffsets"/>[E] holds the
    /// exact count. Device ids outside [-1, E) cannot be checked before the launch there: they are
    /// dropped and reported by <c>CudaBackend.ThrowIfDeviceRoutingError</c> (or at once with
    /// <c>CudaBackend.ValidateDeviceRouting</c>).
    /// </summary>
    public static int BuildContiguous(Backend backend, TensorView expertIds, int numExperts, int alignment, TensorView expertOffsets, TensorView mIndices, TensorView rowTokens, TensorView inverse)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var (tokens, topK) = CheckIdsTensor(backend, expertIds, numExperts);
        Guard.Positive(alignment, nameof(alignment));
        CheckInt32(backend, expertOffsets, nameof(expertOffsets), numExperts + 1L);
        int capacity = ContiguousCapacity(tokens, topK, numExperts, alignment);
        CheckInt32(backend, mIndices, nameof(mIndices), null);
        if (mIndices.ElementCount < capacity)
            throw new ArgumentException($"Expected {nameof(mIndices)} to hold at least {capacity} rows, got {mIndices}.", nameof(mIndices));
        CheckInt32(backend, rowTokens, nameof(rowTokens), null);
        Guard.Shape(rowTokens, nameof(rowTokens), mIndices.Dim(0));
        CheckInt32(backend, inverse, nameof(inverse), null);
        Guard.Shape(inverse, nameof(inverse), tokens, topK);
        var impl = Guard.Implementation<IMoePermuteBackend>(backend, "MoE permutation");
        return impl.BuildContiguous(new MoeContiguousArgs(expertIds, tokens, topK, numExperts, alignment, expertOffsets, mIndices, rowTokens, inverse));
    }

    /// <summary>
    /// Backend form of <see cref="BuildMasked(ReadOnlySpan{int}, int, int, int, Span{int}, Span{int}, Span{int})"/>:
    /// Int32 tensors <paramref name="expertIds"/> [T, k], <paramref name="maskedM"/> [E],
    /// <paramref name="rowTokens"/> [E, m_max] (which gives m_max), <paramref name="inverse"/> [T, k].
    /// Returns expected_m. On the CUDA backend with device ids the layout is built on the device:
    /// the return value is then the hint for evenly spread routing (the exact value is on the
    /// device), and an expert over m_max is clamped to m_max, its extra rows dropped and the
    /// error reported by <c>CudaBackend.ThrowIfDeviceRoutingError</c> (or at once with
    /// <c>CudaBackend.ValidateDeviceRouting</c>); host ids are checked before anything runs.
    /// </summary>
    public static int BuildMasked(Backend backend, TensorView expertIds, int numExperts, TensorView maskedM, TensorView rowTokens, TensorView inverse)
    {
        ArgumentNullException.ThrowIfNull(backend);
        var (tokens, topK) = CheckIdsTensor(backend, expertIds, numExperts);
        CheckInt32(backend, maskedM, nameof(maskedM), numExperts);
        CheckInt32(backend, rowTokens, nameof(rowTokens), null);
        Guard.Rank(rowTokens, 2, nameof(rowTokens));
        if (rowTokens.Dim(0) != numExperts)
            throw new ArgumentException($"Expected {nameof(rowTokens)} of shape [{numExperts}, m_max], got {rowTokens}.", nameof(rowTokens));
        long mMax = rowTokens.Dim(1);
        Guard.Positive(mMax, "m_max");
        CheckInt32(backend, inverse, nameof(inverse), null);
        Guard.Shape(inverse, nameof(inverse), tokens, topK);
        if (expertIds.Location == MemoryLocation.Host) CheckMaskedCapacity(expertIds.AsSpan<int>(), numExperts, (int)mMax);
        var impl = Guard.Implementation<IMoePermuteBackend>(backend, "MoE permutation");
        return impl.BuildMasked(new MoeMaskedArgs(expertIds, tokens, topK, numExperts, (int)mMax, maskedM, rowTokens, inverse));
    }

    /// <summary>
    /// Gathers token rows: <paramref name="input"/> [T, K] Float32/BFloat16 to
    /// <paramref name="rows"/> [R, K] or [E, m_max, K] of the same dtype, or of Float8E4M3 with
    /// <paramref name="rowScales"/> [R, ceil(K/128)] (or [E, m_max, ceil(K/128)]) Float32/UE8M0
    /// to fuse the activation quantization. <paramref name="inverse"/> is Int32 [T, k].
    /// </summary>
    public static void Gather(Backend backend, TensorView input, TensorView inverse, TensorView rows, TensorView? rowScales = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 2, nameof(input));
        Guard.DType(input, DType.Float32, DType.BFloat16, nameof(input));
        long tokens = input.Dim(0), width = input.Dim(1);
        Guard.Positive(width, "K");
        Check(backend, input, nameof(input));
        int topK = CheckInverseTensor(backend, inverse, tokens);
        long r = FlatRows(rows, width, nameof(rows));
        Check(backend, rows, nameof(rows));
        bool quantize = rows.DType == DType.Float8E4M3;
        if (quantize)
        {
            if (rowScales is not TensorView scales)
                throw new ArgumentException($"Expected {nameof(rowScales)} when {nameof(rows)} is Float8E4M3.", nameof(rowScales));
            Guard.DType(scales, DType.Float32, DType.UE8M0, nameof(rowScales));
            if (FlatRows(scales, ActivationQuantization.GroupCount((int)width), nameof(rowScales)) != r)
                throw new ArgumentException($"Expected {nameof(rowScales)} to have {r} rows of {ActivationQuantization.GroupCount((int)width)} scales, got {scales}.", nameof(rowScales));
            Check(backend, scales, nameof(rowScales));
        }
        else
        {
            if (rows.DType != input.DType)
                throw new ArgumentException($"Expected {nameof(rows)} of dtype {input.DType} (or Float8E4M3), got {rows}.", nameof(rows));
            if (rowScales is not null)
                throw new ArgumentException($"Expected no {nameof(rowScales)} for an unquantized gather.", nameof(rowScales));
        }
        if (inverse.Location == MemoryLocation.Host) MoePermutationCore.CheckInverse(inverse.AsSpan<int>(), topK, r, nameof(inverse));
        var impl = Guard.Implementation<IMoePermuteBackend>(backend, "MoE permutation");
        impl.Gather(new MoeGatherArgs(input, (int)tokens, (int)width, inverse, topK, rows, rowScales));
    }

    /// <summary>
    /// Combine on a backend: <paramref name="expertOut"/> [R, N] or [E, m_max, N]
    /// Float32/BFloat16, <paramref name="inverse"/> Int32 [T, k], <paramref name="weights"/>
    /// Float32 [T, k], <paramref name="shared"/> null or [T, N] Float32/BFloat16,
    /// <paramref name="output"/> [T, N] Float32/BFloat16.
    /// </summary>
    public static void Combine(Backend backend, TensorView expertOut, TensorView inverse, TensorView weights, TensorView? shared, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(output, 2, nameof(output));
        Guard.DType(output, DType.Float32, DType.BFloat16, nameof(output));
        long tokens = output.Dim(0), width = output.Dim(1);
        Guard.Positive(width, "N");
        Check(backend, output, nameof(output));
        Guard.DType(expertOut, DType.Float32, DType.BFloat16, nameof(expertOut));
        long r = FlatRows(expertOut, width, nameof(expertOut));
        Check(backend, expertOut, nameof(expertOut));
        int topK = CheckInverseTensor(backend, inverse, tokens);
        Guard.DType(weights, DType.Float32, nameof(weights));
        Guard.Shape(weights, nameof(weights), tokens, topK);
        Check(backend, weights, nameof(weights));
        if (shared is TensorView s)
        {
            Guard.DType(s, DType.Float32, DType.BFloat16, nameof(shared));
            Guard.Shape(s, nameof(shared), tokens, width);
            Check(backend, s, nameof(shared));
        }
        if (inverse.Location == MemoryLocation.Host) MoePermutationCore.CheckInverse(inverse.AsSpan<int>(), topK, r, nameof(inverse));
        var impl = Guard.Implementation<IMoePermuteBackend>(backend, "MoE combine");
        impl.Combine(new MoeCombineArgs(expertOut, (int)width, inverse, weights, topK, shared, output, (int)tokens));
    }

    private static (int Tokens, int TopK) CheckIdsTensor(Backend backend, TensorView expertIds, int numExperts)
    {
        Guard.Positive(numExperts, nameof(numExperts));
        CheckInt32(backend, expertIds, nameof(expertIds), null);
        Guard.Rank(expertIds, 2, nameof(expertIds));
        long tokens = expertIds.Dim(0), topK = expertIds.Dim(1);
        Guard.Positive(topK, "k");
        if (tokens > int.MaxValue / topK) throw new ArgumentException($"Expected fewer routed rows, got {expertIds}.", nameof(expertIds));
        if (expertIds.Location == MemoryLocation.Host)
            MoePermutationCore.CheckExpertIds(expertIds.AsSpan<int>(), (int)topK, numExperts, nameof(expertIds));
        return ((int)tokens, (int)topK);
    }

    private static int CheckInverseTensor(Backend backend, TensorView inverse, long tokens)
    {
        CheckInt32(backend, inverse, nameof(inverse), null);
        Guard.Rank(inverse, 2, nameof(inverse));
        if (inverse.Dim(0) != tokens)
            throw new ArgumentException($"Expected {nameof(inverse)} with {tokens} token rows, got {inverse}.", nameof(inverse));
        Guard.Positive(inverse.Dim(1), "k");
        return (int)inverse.Dim(1);
    }

    private static void CheckInt32(Backend backend, TensorView view, string name, long? length)
    {
        Guard.DType(view, DType.Int32, name);
        if (length is long n) Guard.Shape(view, name, n);
        Check(backend, view, name);
    }

    /// <summary>Rows of a [R, width] or [E, m_max, width] tensor.</summary>
    private static long FlatRows(TensorView view, long width, string name)
    {
        if ((view.Rank != 2 && view.Rank != 3) || view.Dim(-1) != width)
            throw new ArgumentException($"Expected {name} of shape [R, {width}] or [E, m_max, {width}], got {view}.", name);
        return view.ElementCount / width;
    }

    private static void Check(Backend backend, TensorView view, string name)
    {
        Guard.Contiguous(view, name);
        Guard.OnBackend(view, backend, name);
    }
}

internal readonly record struct MoeContiguousArgs(TensorView ExpertIds, int Tokens, int TopK, int Experts, int Alignment, TensorView ExpertOffsets, TensorView MIndices, TensorView RowTokens, TensorView Inverse);

internal readonly record struct MoeMaskedArgs(TensorView ExpertIds, int Tokens, int TopK, int Experts, int MMax, TensorView MaskedM, TensorView RowTokens, TensorView Inverse);

internal readonly record struct MoeGatherArgs(TensorView Input, int Tokens, int Width, TensorView Inverse, int TopK, TensorView Rows, TensorView? RowScales);

internal readonly record struct MoeCombineArgs(TensorView ExpertOut, int Width, TensorView Inverse, TensorView Weights, int TopK, TensorView? Shared, TensorView Output, int Tokens);

/// <summary>A backend's implementation of the MoE permutation and combine.</summary>
internal interface IMoePermuteBackend
{
    int BuildContiguous(in MoeContiguousArgs args);

    int BuildMasked(in MoeMaskedArgs args);

    void Gather(in MoeGatherArgs args);

    void Combine(in MoeCombineArgs args);
}
