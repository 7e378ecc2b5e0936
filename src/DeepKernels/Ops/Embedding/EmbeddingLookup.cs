using System.Runtime.InteropServices;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Embedding;

/// <summary>
/// Token embedding lookup: out[t, :] = table[ids[t], :] widened to FP32. The table is BFloat16
/// (as checkpoints store it) or Float32. Every id is checked against the vocabulary before any
/// row is copied.
/// </summary>
public static class EmbeddingLookup
{
    /// <summary>Gathers rows of a [vocab, hidden] BF16 table for <paramref name="ids"/> into <paramref name="destination"/> ([ids, hidden]).</summary>
    public static void Gather(ReadOnlySpan<BFloat16> table, int hidden, ReadOnlySpan<int> ids, Span<float> destination)
    {
        int vocab = CheckTable(table.Length, hidden);
        Guard.Length(destination.Length, (long)ids.Length * hidden, nameof(destination));
        CheckIds(ids, vocab);
        for (int t = 0; t < ids.Length; t++)
            BFloat16.ToSingle(table.Slice(ids[t] * hidden, hidden), destination.Slice(t * hidden, hidden));
    }

    /// <summary>As the BF16 overload, for a Float32 table.</summary>
    public static void Gather(ReadOnlySpan<float> table, int hidden, ReadOnlySpan<int> ids, Span<float> destination)
    {
        int vocab = CheckTable(table.Length, hidden);
        Guard.Length(destination.Length, (long)ids.Length * hidden, nameof(destination));
        CheckIds(ids, vocab);
        for (int t = 0; t < ids.Length; t++)
            table.Slice(ids[t] * hidden, hidden).CopyTo(destination.Slice(t * hidden, hidden));
    }

    private static int CheckTable(int table, int hidden)
    {
        Guard.Positive(hidden, nameof(hidden));
        if (table % hidden != 0 || table == 0)
            throw new ArgumentException($"Expected a non-empty table whose length is a multiple of hidden = {hidden}, got {table}.", nameof(table));
        return table / hidden;
    }

    /// <summary>Throws for the first id outside [0, vocab).</summary>
    public static void CheckIds(ReadOnlySpan<int> ids, int vocab)
    {
        for (int i = 0; i < ids.Length; i++)
        {
            if ((uint)ids[i] >= (uint)vocab)
                throw new ArgumentOutOfRangeException(nameof(ids), ids[i], $"Expected token ids in [0, {vocab}), got ids[{i}] = {ids[i]}.");
        }
    }

    /// <summary>
    /// <paramref name="table"/>: BFloat16 or Float32 [V, H]; <paramref name="ids"/>: Int32 [T] in host
    /// memory (ids are validated on the host before the lookup); <paramref name="output"/>: Float32 [T, H].
    /// </summary>
    public static void Gather(Backend backend, TensorView table, ReadOnlySpan<int> ids, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(table, 2, nameof(table));
        Guard.DType(table, DType.BFloat16, DType.Float32, nameof(table));
        long v = table.Dim(0), h = table.Dim(1);
        Guard.Positive(v, "vocab");
        Guard.Positive(h, "hidden");
        Guard.DType(output, DType.Float32, nameof(output));
        Guard.Shape(output, nameof(output), ids.Length, h);
        foreach (var (view, name) in new[] { (table, nameof(table)), (output, nameof(output)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        CheckIds(ids, checked((int)v));
        if (ids.IsEmpty) return;
        var impl = Guard.Implementation<IEmbeddingBackend>(backend, "embedding lookup");
        impl.Gather(new EmbeddingArgs(table, output, (int)h), ids);
    }
}

/// <summary>Validated arguments of <see cref="EmbeddingLookup"/> (ids passed separately as a host span).</summary>
internal readonly record struct EmbeddingArgs(TensorView Table, TensorView Output, int Hidden);

/// <summary>A backend's implementation of the embedding lookup.</summary>
internal interface IEmbeddingBackend
{
    void Gather(in EmbeddingArgs args, ReadOnlySpan<int> ids);
}
