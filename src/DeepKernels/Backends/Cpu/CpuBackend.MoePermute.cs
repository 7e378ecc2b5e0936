using System.Buffers;
using DeepKernels.Formats;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Backends.Cpu;

public sealed partial class CpuBackend : IMoePermuteBackend
{
    int IMoePermuteBackend.BuildContiguous(in MoeContiguousArgs a) =>
        MoePermutationCore.BuildContiguous(a.ExpertIds.AsSpan<int>(), a.TopK, a.Experts, a.Alignment, a.ExpertOffsets.AsSpan<int>(), a.MIndices.AsSpan<int>(), a.RowTokens.AsSpan<int>(), a.Inverse.AsSpan<int>());

    int IMoePermuteBackend.BuildMasked(in MoeMaskedArgs a) =>
        MoePermutationCore.BuildMasked(a.ExpertIds.AsSpan<int>(), a.TopK, a.Experts, a.MMax, a.MaskedM.AsSpan<int>(), a.RowTokens.AsSpan<int>(), a.Inverse.AsSpan<int>());

    void IMoePermuteBackend.Gather(in MoeGatherArgs args)
    {
        var a = args;
        ForTokens(a.Tokens, (long)a.Width * a.TopK, (start, end) =>
        {
            var inverse = a.Inverse.AsSpan<int>();
            if (a.Rows.DType != DType.Float8E4M3)
            {
                for (int t = start; t < end; t++)
                {
                    var rowsOfToken = inverse.Slice(t * a.TopK, a.TopK);
                    if (a.Input.DType == DType.Float32)
                        MoePermutationCore.GatherToken<float>(a.Input.AsSpan<float>().Slice(t * a.Width, a.Width), rowsOfToken, a.Rows.AsSpan<float>(), a.Width);
                    else
                        MoePermutationCore.GatherToken<ushort>(a.Input.AsSpan<ushort>().Slice(t * a.Width, a.Width), rowsOfToken, a.Rows.AsSpan<ushort>(), a.Width);
                }
                return;
            }
            var scales = a.RowScales!.Value;
            bool ue8m0 = scales.DType == DType.UE8M0;
            int groups = ActivationQuantization.GroupCount(a.Width);
            float[] buffer = ArrayPool<float>.Shared.Rent(a.Width + a.TopK * groups);
            try
            {
                var row = buffer.AsSpan(0, a.Width);
                for (int t = start; t < end; t++)
                {
                    var rowsOfToken = inverse.Slice(t * a.TopK, a.TopK);
                    ReadRow(a.Input, t, row);
                    if (!ue8m0)
                    {
                        MoePermutationCore.GatherQuantizeToken(row, rowsOfToken, a.Rows.AsSpan<Float8E4M3>(), scales.AsSpan<float>(), a.Width, ScaleFormat.Float32);
                        continue;
                    }
                    // UE8M0: quantize with power-of-two scales, then store the scale bytes.
                    var q = a.Rows.AsSpan<Float8E4M3>();
                    var s = buffer.AsSpan(a.Width, groups);
                    int first = -1;
                    foreach (int r in rowsOfToken)
                    {
                        if (r < 0) continue;
                        if (first < 0)
                        {
                            first = r;
                            for (int g = 0; g < groups; g++)
                            {
                                int g0 = g * ActivationQuantization.GroupSize, length = Math.Min(ActivationQuantization.GroupSize, a.Width - g0);
                                s[g] = ActivationQuantization.QuantizeGroup(row.Slice(g0, length), q.Slice(r * a.Width + g0, length), ScaleFormat.UE8M0);
                            }
                        }
                        else
                            q.Slice(first * a.Width, a.Width).CopyTo(q.Slice(r * a.Width, a.Width));
                        var bytes = scales.AsSpan<byte>().Slice(r * groups, groups);
                        for (int g = 0; g < groups; g++) bytes[g] = UE8M0.FromSingleRoundUp(s[g]);
                    }
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
    }

    void IMoePermuteBackend.Combine(in MoeCombineArgs args)
    {
        var a = args;
        bool convert = a.ExpertOut.DType != DType.Float32 || a.Output.DType != DType.Float32 || (a.Shared is TensorView sv && sv.DType != DType.Float32);
        ForTokens(a.Tokens, (long)a.Width * a.TopK, (start, end) =>
        {
            var inverse = a.Inverse.AsSpan<int>();
            var weights = a.Weights.AsSpan<float>();
            if (!convert)
            {
                var expertOut = a.ExpertOut.AsSpan<float>();
                var output = a.Output.AsSpan<float>();
                for (int t = start; t < end; t++)
                {
                    ReadOnlySpan<float> shared = a.Shared is TensorView s ? s.AsSpan<float>().Slice(t * a.Width, a.Width) : default;
                    MoePermutationCore.CombineToken(expertOut, a.Width, inverse.Slice(t * a.TopK, a.TopK), weights.Slice(t * a.TopK, a.TopK), shared, output.Slice(t * a.Width, a.Width));
                }
                return;
            }
            // Mixed dtypes: widen each needed row to float, combine, narrow the result.
            float[] buffer = ArrayPool<float>.Shared.Rent(3 * a.Width);
            try
            {
                var acc = buffer.AsSpan(0, a.Width);
                var row = buffer.AsSpan(a.Width, a.Width);
                var sharedRow = buffer.AsSpan(2 * a.Width, a.Width);
                for (int t = start; t < end; t++)
                {
                    acc.Clear();
                    for (int j = 0; j < a.TopK; j++)
                    {
                        int r = inverse[t * a.TopK + j];
                        if (r < 0) continue;
                        ReadRow(a.ExpertOut, r, row);
                        System.Numerics.Tensors.TensorPrimitives.MultiplyAdd(row, weights[t * a.TopK + j], acc, acc);
                    }
                    if (a.Shared is TensorView s)
                    {
                        ReadRow(s, t, sharedRow);
                        System.Numerics.Tensors.TensorPrimitives.Add(acc, sharedRow, acc);
                    }
                    WriteRow(a.Output, t, acc);
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(buffer);
            }
        });
    }

    /// <summary>Runs body over token ranges, in parallel when the work is worth the fan-out.</summary>
    private void ForTokens(int tokens, long workPerToken, Action<int, int> body)
    {
        const long minWorkPerChunk = 1 << 15;
        int chunk = (int)Math.Clamp(minWorkPerChunk / Math.Max(1, workPerToken), 1, Math.Max(1, tokens));
        int chunks = (tokens + chunk - 1) / chunk;
        if (chunks <= 1 || MaxThreads == 1)
        {
            body(0, tokens);
            return;
        }
        chunk = Math.Max(chunk, (tokens + MaxThreads * 4 - 1) / (MaxThreads * 4));
        chunks = (tokens + chunk - 1) / chunk;
        Parallel.For(0, chunks, ParallelOptions, c => body(c * chunk, Math.Min(tokens, (c + 1) * chunk)));
    }

    /// <summary>Row <paramref name="row"/> of a Float32 or BFloat16 tensor (any rank, last dim = width) as floats.</summary>
    internal static void ReadRow(TensorView view, long row, Span<float> destination)
    {
        int width = destination.Length;
        if (view.DType == DType.Float32)
        {
            view.AsSpan<float>().Slice((int)(row * width), width).CopyTo(destination);
            return;
        }
        var source = view.AsSpan<ushort>().Slice((int)(row * width), width);
        for (int i = 0; i < width; i++) destination[i] = BFloat16.ToSingle(source[i]);
    }

    /// <summary>Writes floats into row <paramref name="row"/> of a Float32 or BFloat16 tensor (BF16: round to nearest even).</summary>
    internal static void WriteRow(TensorView view, long row, ReadOnlySpan<float> source)
    {
        int width = source.Length;
        if (view.DType == DType.Float32)
        {
            source.CopyTo(view.AsSpan<float>().Slice((int)(row * width), width));
            return;
        }
        var destination = view.AsSpan<ushort>().Slice((int)(row * width), width);
        for (int i = 0; i < width; i++) destination[i] = BFloat16.ToRaw(source[i]);
    }
}
