using System.Numerics.Tensors;
using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Norm;

/// <summary>
/// RMSNorm as DeepSeek uses it: y = x / sqrt(mean(x^2) + eps) * w, per row of length H, with the
/// mean of squares accumulated in FP32 and the weight in BF16 or FP32. In-place use
/// (output = input) is allowed.
/// </summary>
public static class RmsNorm
{
    /// <summary>Normalises each row of <paramref name="input"/> (length a multiple of the weight length) into <paramref name="destination"/>.</summary>
    public static void Apply(ReadOnlySpan<float> input, ReadOnlySpan<float> weight, float epsilon, Span<float> destination)
    {
        int h = Check(input.Length, weight.Length, epsilon, destination.Length);
        for (int r = 0; r < input.Length / h; r++)
            Row(input.Slice(r * h, h), weight, epsilon, destination.Slice(r * h, h));
    }

    /// <summary>As <see cref="Apply(ReadOnlySpan{float}, ReadOnlySpan{float}, float, Span{float})"/> with a bfloat16 weight.</summary>
    public static void Apply(ReadOnlySpan<float> input, ReadOnlySpan<BFloat16> weight, float epsilon, Span<float> destination)
    {
        int h = Check(input.Length, weight.Length, epsilon, destination.Length);
        float[] w = new float[h];
        BFloat16.ToSingle(weight, w);
        for (int r = 0; r < input.Length / h; r++)
            Row(input.Slice(r * h, h), w, epsilon, destination.Slice(r * h, h));
    }

    private static int Check(int input, int weightLength, float epsilon, int destinationLength)
    {
        Guard.Positive(weightLength, "weight length");
        if (input % weightLength != 0)
            throw new ArgumentException($"Expected input length to be a multiple of the weight length {weightLength}, got {input}.", nameof(input));
        Guard.Length(destinationLength, input, "destination");
        if (!(epsilon > 0) || !float.IsFinite(epsilon))
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, $"Expected a finite epsilon > 0, got {epsilon}.");
        return weightLength;
    }

    /// <summary>One row; <paramref name="destination"/> may alias <paramref name="row"/>.</summary>
    internal static void Row(ReadOnlySpan<float> row, ReadOnlySpan<float> weight, float epsilon, Span<float> destination)
    {
        float meanSquare = TensorPrimitives.SumOfSquares(row) / row.Length;
        float inv = 1f / MathF.Sqrt(meanSquare + epsilon);
        TensorPrimitives.Multiply(row, inv, destination);
        TensorPrimitives.Multiply(destination, weight, destination);
    }

    /// <summary>
    /// Normalises the rows of <paramref name="input"/> (Float32 [T, H]) with <paramref name="weight"/>
    /// (BFloat16 or Float32 [H]) into <paramref name="output"/> (Float32 [T, H]; may be the input).
    /// </summary>
    public static void Apply(Backend backend, TensorView input, TensorView weight, float epsilon, TensorView output)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 2, nameof(input));
        Guard.DType(input, DType.Float32, nameof(input));
        long t = input.Dim(0), h = input.Dim(1);
        Guard.Positive(h, "H");
        Guard.Rank(weight, 1, nameof(weight));
        Guard.DType(weight, DType.BFloat16, DType.Float32, nameof(weight));
        Guard.Shape(weight, nameof(weight), h);
        Guard.DType(output, DType.Float32, nameof(output));
        Guard.Shape(output, nameof(output), t, h);
        if (!(epsilon > 0) || !float.IsFinite(epsilon))
            throw new ArgumentOutOfRangeException(nameof(epsilon), epsilon, $"Expected a finite epsilon > 0, got {epsilon}.");
        foreach (var (view, name) in new[] { (input, nameof(input)), (weight, nameof(weight)), (output, nameof(output)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        if (t == 0) return;
        var impl = Guard.Implementation<IRmsNormBackend>(backend, "RMSNorm");
        impl.RmsNorm(new RmsNormArgs(input, weight, output, (int)t, (int)h, epsilon));
    }
}

/// <summary>Validated arguments of <see cref="RmsNorm"/>.</summary>
internal readonly record struct RmsNormArgs(TensorView Input, TensorView Weight, TensorView Output, int Rows, int Hidden, float Epsilon);

/// <summary>A backend's implementation of RMSNorm.</summary>
internal interface IRmsNormBackend
{
    void RmsNorm(in RmsNormArgs args);
}
