using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.Quantize;

/// <summary>
/// Per-token-group FP8 quantization of activations: each row is cut into groups of
/// <see cref="GroupSize"/> values along K; each group gets scale = max(amax, 1e-4) / 448 and
/// q = E4M3(x / scale) (round to nearest even, saturating). A partial last group is allowed and
/// its missing values count as zero. NaN inputs are ignored by amax and stay NaN; infinities are
/// ignored by amax and saturate to +-448. With <see cref="ScaleFormat.UE8M0"/> the scale is
/// rounded up to a power of two.
/// </summary>
public static class ActivationQuantization
{
    /// <summary>Values per scale group along K.</summary>
    public const int GroupSize = 128;

    /// <summary>Smallest amax used for a scale, so all-zero groups get a finite scale.</summary>
    public const float MinAmax = 1e-4f;

    /// <summary>Number of scale groups for a row of length <paramref name="k"/>.</summary>
    public static int GroupCount(int k) => (k + GroupSize - 1) / GroupSize;

    /// <summary>
    /// Quantizes <paramref name="input"/> (rows of length <paramref name="k"/>) into
    /// <paramref name="output"/> and per-group <paramref name="scales"/> ([rows, ceil(k/128)]).
    /// </summary>
    public static void Quantize(ReadOnlySpan<float> input, int k, Span<Float8E4M3> output, Span<float> scales, ScaleFormat format = ScaleFormat.Float32)
    {
        Guard.Positive(k, nameof(k));
        if (input.Length % k != 0)
            throw new ArgumentException($"Expected {nameof(input)} length to be a multiple of k = {k}, got {input.Length}.", nameof(input));
        int rows = input.Length / k;
        int groups = GroupCount(k);
        Guard.Length(output.Length, input.Length, nameof(output));
        Guard.Length(scales.Length, (long)rows * groups, nameof(scales));
        for (int r = 0; r < rows; r++)
        {
            for (int g = 0; g < groups; g++)
            {
                int start = r * k + g * GroupSize;
                int length = Math.Min(GroupSize, k - g * GroupSize);
                scales[r * groups + g] = QuantizeGroup(input.Slice(start, length), output.Slice(start, length), format);
            }
        }
    }

    /// <summary>Quantizes one group and returns its scale.</summary>
    internal static float QuantizeGroup(ReadOnlySpan<float> group, Span<Float8E4M3> output, ScaleFormat format)
    {
        float scale = ScaleFor(Fp8BlockKernels.AbsMaxFinite(group), format);
        Fp8BlockKernels.QuantizeScaled(group, scale, System.Runtime.InteropServices.MemoryMarshal.AsBytes(output));
        return scale;
    }

    /// <summary>The scale for a group or block with the given absolute maximum.</summary>
    public static float ScaleFor(float amax, ScaleFormat format)
    {
        float scale = MathF.Max(amax, MinAmax) / Float8E4M3.MaxValue;
        return format == ScaleFormat.UE8M0 ? UE8M0.RoundUp(scale) : scale;
    }

    /// <summary>
    /// Quantizes a [M, K] tensor (Float32 or BFloat16) on <paramref name="backend"/> into a
    /// [M, K] Float8E4M3 tensor and a [M, ceil(K/128)] scale tensor (Float32, or UE8M0 bytes).
    /// </summary>
    public static void Quantize(Backend backend, TensorView input, TensorView output, TensorView scales)
    {
        ArgumentNullException.ThrowIfNull(backend);
        Guard.Rank(input, 2, nameof(input));
        Guard.DType(input, DType.Float32, DType.BFloat16, nameof(input));
        long m = input.Dim(0), k = input.Dim(1);
        Guard.Positive(k, "K");
        Guard.Positive(m, "M");
        Guard.DType(output, DType.Float8E4M3, nameof(output));
        Guard.Shape(output, nameof(output), m, k);
        Guard.DType(scales, DType.Float32, DType.UE8M0, nameof(scales));
        Guard.Shape(scales, nameof(scales), m, GroupCount((int)k));
        foreach (var (view, name) in new[] { (input, nameof(input)), (output, nameof(output)), (scales, nameof(scales)) })
        {
            Guard.Contiguous(view, name);
            Guard.OnBackend(view, backend, name);
        }
        var impl = Guard.Implementation<IActivationQuantizationBackend>(backend, "FP8 activation quantization");
        impl.QuantizeActivations(new ActivationQuantizationArgs(input, output, scales, (int)m, (int)k));
    }
}

/// <summary>Validated arguments of <see cref="ActivationQuantization"/>.</summary>
internal readonly record struct ActivationQuantizationArgs(TensorView Input, TensorView Output, TensorView Scales, int M, int K);

/// <summary>A backend's implementation of activation quantization.</summary>
internal interface IActivationQuantizationBackend
{
    void QuantizeActivations(in ActivationQuantizationArgs args);
}
