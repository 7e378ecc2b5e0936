using System.Numerics.Tensors;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// RMSNorm as in DeepSeek-V3: y = x / sqrt(mean(x^2) + eps) * weight, computed in FP32 per row.
/// Internal to the MLA block until a shared norms op exists.
/// </summary>
internal static class RmsNorm
{
    /// <summary>Normalizes each row of length weight.Length of <paramref name="x"/> in place.</summary>
    public static void Apply(Span<float> x, ReadOnlySpan<float> weight, float eps)
    {
        int n = weight.Length;
        Guard.Positive(n, nameof(weight));
        if (x.Length % n != 0)
            throw new ArgumentException($"Expected a multiple of {n} values, got {x.Length}.", nameof(x));
        for (int r = 0; r < x.Length / n; r++) ApplyRow(x.Slice(r * n, n), weight, eps);
    }

    /// <summary>Normalizes the first weight.Length values of each row of width <paramref name="stride"/>.</summary>
    public static void ApplyStrided(Span<float> x, int stride, ReadOnlySpan<float> weight, float eps)
    {
        if (stride < weight.Length || x.Length % stride != 0)
            throw new ArgumentException($"Expected rows of width {stride} >= {weight.Length}, got {x.Length} values.", nameof(x));
        for (int r = 0; r < x.Length / stride; r++) ApplyRow(x.Slice(r * stride, weight.Length), weight, eps);
    }

    private static void ApplyRow(Span<float> row, ReadOnlySpan<float> weight, float eps)
    {
        float meanSquare = TensorPrimitives.SumOfSquares(row) / row.Length;
        float inv = 1f / MathF.Sqrt(meanSquare + eps);
        TensorPrimitives.Multiply(row, inv, row);
        TensorPrimitives.Multiply(row, weight, row);
    }
}
