using DeepKernels.Model.Config;

namespace DeepKernels.Model.Attention;

/// <summary>
/// Rotary position embedding with DeepSeek's YaRN frequency correction. Pairs are interleaved
/// (x[2i], x[2i+1]) and rotated by position * freq[i], as DeepSeek-V3's reference inference code
/// does with complex numbers. With YaRN (factor &gt; 1), frequencies whose wavelength is longer than
/// the original context are divided by the factor, short ones are kept, and a linear ramp
/// between the beta_fast/beta_slow correction dims blends the two; cos/sin are multiplied by
/// mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1 for DeepSeek-V3).
/// </summary>
public sealed class YarnRope
{
    private readonly double[] _inverseFrequencies;

    /// <summary>Builds the frequencies for a RoPE width of <paramref name="dim"/> (even).</summary>
    public YarnRope(int dim, double theta, RopeScalingConfig? scaling)
    {
        if (dim <= 0 || dim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, $"Expected an even RoPE width > 0, got {dim}.");
        if (!(theta > 1)) throw new ArgumentOutOfRangeException(nameof(theta), theta, $"Expected a RoPE base > 1, got {theta}.");
        Dim = dim;
        _inverseFrequencies = new double[dim / 2];
        for (int i = 0; i < dim / 2; i++) _inverseFrequencies[i] = 1.0 / Math.Pow(theta, 2.0 * i / dim);
        Magnitude = 1.0;
        if (scaling is { Factor: > 1 } s)
        {
            double low = Math.Floor(CorrectionDim(s.BetaFast, dim, theta, s.OriginalMaxPositionEmbeddings));
            double high = Math.Ceiling(CorrectionDim(s.BetaSlow, dim, theta, s.OriginalMaxPositionEmbeddings));
            low = Math.Max(low, 0);
            high = Math.Min(high, dim - 1);
            if (high == low) high += 0.001; // avoid a zero-width ramp
            for (int i = 0; i < dim / 2; i++)
            {
                double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
                double keep = 1 - ramp; // 1 for high frequencies (kept), 0 for low ones (interpolated)
                _inverseFrequencies[i] = _inverseFrequencies[i] / s.Factor * (1 - keep) + _inverseFrequencies[i] * keep;
            }
            Magnitude = RopeScalingConfig.YarnMScale(s.Factor, s.MScale) / RopeScalingConfig.YarnMScale(s.Factor, s.MScaleAllDim);
        }
    }

    /// <summary>Builds the RoPE of a model configuration (qk_rope_head_dim, rope_theta, rope_scaling).</summary>
    public static YarnRope For(DeepSeekV3Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        return new YarnRope(config.QkRopeHeadDim, config.RopeTheta, config.RopeScaling);
    }

    /// <summary>RoPE width.</summary>
    public int Dim { get; }

    /// <summary>Multiplier of cos and sin (YaRN's mscale ratio).</summary>
    public double Magnitude { get; }

    /// <summary>The (corrected) inverse frequencies, one per pair.</summary>
    public ReadOnlySpan<double> InverseFrequencies => _inverseFrequencies;

    // The dimension index whose wavelength makes numRotations turns over maxPositions.
    private static double CorrectionDim(double numRotations, int dim, double theta, int maxPositions) =>
        dim * Math.Log(maxPositions / (numRotations * 2 * Math.PI)) / (2 * Math.Log(theta));

    /// <summary>Fills cos and sin (length dim/2) for <paramref name="position"/>.</summary>
    public void CosSin(int position, Span<float> cos, Span<float> sin)
    {
        if (position < 0) throw new ArgumentOutOfRangeException(nameof(position), position, "Expected a position >= 0.");
        if (cos.Length != Dim / 2 || sin.Length != Dim / 2)
            throw new ArgumentException($"Expected cos and sin of length {Dim / 2}, got {cos.Length} and {sin.Length}.", nameof(cos));
        for (int i = 0; i < cos.Length; i++)
        {
            double angle = position * _inverseFrequencies[i];
            cos[i] = (float)(Math.Cos(angle) * Magnitude);
            sin[i] = (float)(Math.Sin(angle) * Magnitude);
        }
    }

    /// <summary>Rotates the interleaved pairs of <paramref name="x"/> (length dim) in place.</summary>
    public static void Apply(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        if (x.Length != 2 * cos.Length || sin.Length != cos.Length)
            throw new ArgumentException($"Expected x of length 2 * {cos.Length}, got {x.Length}.", nameof(x));
        for (int i = 0; i < cos.Length; i++)
        {
            float a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = a * cos[i] - b * sin[i];
            x[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}
