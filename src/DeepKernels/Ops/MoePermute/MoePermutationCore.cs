using System.Buffers;
using System.Numerics.Tensors;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Ops.MoePermute;

/// <summary>Allocation-free building blocks of the permutation, shared by the span API and the CPU backend.</summary>
internal static class MoePermutationCore
{
    /// <summary>Throws unless every id is in [-1, E); reports the first bad (token, slot).</summary>
    public static void CheckExpertIds(ReadOnlySpan<int> expertIds, int topK, int numExperts, string name)
    {
        for (int i = 0; i < expertIds.Length; i++)
        {
            int id = expertIds[i];
            if (id < -1 || id >= numExperts)
                throw new ArgumentException($"Expected {name}[{i / topK}, {i % topK}] in [-1, {numExperts}), got {id}.", name);
        }
    }

    /// <summary>Throws unless every inverse-map entry is -1 or a row in [0, rows).</summary>
    public static void CheckInverse(ReadOnlySpan<int> inverse, int topK, long rows, string name)
    {
        for (int i = 0; i < inverse.Length; i++)
        {
            int r = inverse[i];
            if (r < -1 || r >= rows)
                throw new ArgumentException($"Expected {name}[{i / topK}, {i % topK}] in [-1, {rows}), got {r}.", name);
        }
    }

    /// <summary>Tokens routed to each expert (ids of -1 are not counted).</summary>
    public static void Count(ReadOnlySpan<int> expertIds, Span<int> counts)
    {
        counts.Clear();
        foreach (int id in expertIds)
            if (id >= 0) counts[id]++;
    }

    public static int BuildContiguous(ReadOnlySpan<int> expertIds, int topK, int numExperts, int alignment, Span<int> expertOffsets, Span<int> mIndices, Span<int> rowTokens, Span<int> inverse)
    {
        int[] rented = ArrayPool<int>.Shared.Rent(numExperts);
        try
        {
            var cursor = rented.AsSpan(0, numExperts);
            Count(expertIds, cursor);
            int row = 0;
            for (int e = 0; e < numExperts; e++)
            {
                int count = cursor[e];
                expertOffsets[e] = row;
                cursor[e] = row;
                row += (count + alignment - 1) / alignment * alignment;
            }
            expertOffsets[numExperts] = row;
            mIndices.Fill(-1);
            rowTokens.Fill(-1);
            // Within an expert, rows follow (token, slot) order: deterministic and cache friendly for the gather.
            for (int i = 0; i < expertIds.Length; i++)
            {
                int id = expertIds[i];
                if (id < 0) { inverse[i] = -1; continue; }
                int r = cursor[id]++;
                inverse[i] = r;
                mIndices[r] = id;
                rowTokens[r] = i / topK;
            }
            return row;
        }
        finally
        {
            ArrayPool<int>.Shared.Return(rented);
        }
    }

    /// <summary>Fills the masked layout; the caller has checked every count &lt;= mMax. Returns expected_m.</summary>
    public static int BuildMasked(ReadOnlySpan<int> expertIds, int topK, int numExperts, int mMax, Span<int> maskedM, Span<int> rowTokens, Span<int> inverse)
    {
        maskedM.Clear();
        rowTokens.Fill(-1);
        for (int i = 0; i < expertIds.Length; i++)
        {
            int id = expertIds[i];
            if (id < 0) { inverse[i] = -1; continue; }
            int r = id * mMax + maskedM[id]++;
            inverse[i] = r;
            rowTokens[r] = i / topK;
        }
        return ExpectedM(maskedM, mMax);
    }

    /// <summary>Mean rows over the experts that have any, rounded up, in [1, mMax]: the work per active expert.</summary>
    public static int ExpectedM(ReadOnlySpan<int> counts, int mMax)
    {
        long total = 0;
        int active = 0;
        foreach (int c in counts)
        {
            total += c;
            if (c > 0) active++;
        }
        if (active == 0) return 1;
        return (int)Math.Clamp((total + active - 1) / active, 1, Math.Max(1, mMax));
    }

    /// <summary>Copies token t's row into every row it was routed to.</summary>
    public static void GatherToken<T>(ReadOnlySpan<T> source, ReadOnlySpan<int> rowsOfToken, Span<T> destination, int width)
    {
        foreach (int r in rowsOfToken)
            if (r >= 0) source.CopyTo(destination.Slice(r * width, width));
    }

    /// <summary>
    /// Quantizes token t's row once (1x128 groups, as <see cref="ActivationQuantization"/>) into
    /// its first destination row and copies the codes and scales to its other rows: same result
    /// as quantizing every gathered row, k times less work.
    /// </summary>
    public static void GatherQuantizeToken(ReadOnlySpan<float> source, ReadOnlySpan<int> rowsOfToken, Span<Float8E4M3> destination, Span<float> scales, int width, ScaleFormat format)
    {
        int groups = ActivationQuantization.GroupCount(width);
        int first = -1;
        foreach (int r in rowsOfToken)
        {
            if (r < 0) continue;
            if (first < 0)
            {
                first = r;
                var q = destination.Slice(r * width, width);
                var s = scales.Slice(r * groups, groups);
                for (int g = 0; g < groups; g++)
                {
                    int start = g * ActivationQuantization.GroupSize;
                    int length = Math.Min(ActivationQuantization.GroupSize, width - start);
                    s[g] = ActivationQuantization.QuantizeGroup(source.Slice(start, length), q.Slice(start, length), format);
                }
                continue;
            }
            destination.Slice(first * width, width).CopyTo(destination.Slice(r * width, width));
            scales.Slice(first * groups, groups).CopyTo(scales.Slice(r * groups, groups));
        }
    }

    /// <summary>
    /// out = sum_j w[j] * rows[r_j] (+ shared), accumulated in FP32 in slot order j = 0..k-1,
    /// then the shared expert added; slots with row -1 are skipped.
    /// </summary>
    public static void CombineToken(ReadOnlySpan<float> expertOut, int width, ReadOnlySpan<int> rowsOfToken, ReadOnlySpan<float> weights, ReadOnlySpan<float> shared, Span<float> output)
    {
        output.Clear();
        for (int j = 0; j < rowsOfToken.Length; j++)
        {
            int r = rowsOfToken[j];
            if (r < 0) continue;
            TensorPrimitives.MultiplyAdd(expertOut.Slice(r * width, width), weights[j], output, output);
        }
        if (!shared.IsEmpty) TensorPrimitives.Add(output, shared, output);
    }
}
