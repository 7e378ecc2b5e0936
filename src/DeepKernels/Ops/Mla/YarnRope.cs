namespace DeepKernels.Ops.Mla;

/// <summary>
/// YaRN rope scaling parameters (DeepSeek-V3's <c>rope_scaling</c>): factor 40 over
/// original_max_position_embeddings 4096, beta_fast 32, beta_slow 1, mscale 1, mscale_all_dim 1.
/// A factor of 1 turns scaling off (plain RoPE).
/// </summary>
public sealed record YarnScaling(double Factor = 40, int OriginalMaxPositionEmbeddings = 4096, double BetaFast = 32, double BetaSlow = 1,
    double MScale = 1, double MScaleAllDim = 1)
{
    /// <summary>DeepSeek-V3's values.</summary>
    public static YarnScaling DeepSeekV3 { get; } = new();

    /// <summary>No scaling.</summary>
    public static YarnScaling None { get; } = new(Factor: 1);

    /// <summary>YaRN's attention temperature: 0.1 * m * ln(factor) + 1 for factor &gt; 1, else 1.</summary>
    public static double GetMScale(double factor, double m) => factor <= 1 ? 1 : 0.1 * m * Math.Log(factor) + 1;
}

/// <summary>
/// Rotary position embedding of the 64 decoupled RoPE dims, with YaRN frequency interpolation.
/// <para>
/// Frequencies: for pair i of dim/2, extrapolated f_e = theta^(-2i/dim) and interpolated
/// f_i = f_e / factor are blended as f = f_i (1 - m_i) + f_e m_i, where m_i = 1 - ramp(i) and
/// ramp rises linearly from 0 at floor(c(beta_fast)) to 1 at ceil(c(beta_slow)) with
/// c(r) = dim ln(orig_max / (2 pi r)) / (2 ln theta): fast-rotating pairs keep their
/// frequency, slow ones are interpolated. cos and sin are multiplied by
/// mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1 for V3).
/// </para>
/// <para>
/// Layout: DeepSeek rotates interleaved pairs (x[2i], x[2i+1]) by angle pos * f_i, and this
/// implementation keeps that layout in and out (as DeepSeek's reference inference code does,
/// with complex multiplication). The Hugging Face port de-interleaves its output (first all
/// x'[2i], then all x'[2i+1]); that permutation is applied to both q_pe and k_pe, so q·k and
/// therefore attention are identical. Cached k_pe here is interleaved.
/// </para>
/// </summary>
public sealed class YarnRope
{
    private readonly double[] _invFreq;
    private readonly double _mscale;

    /// <summary>Builds the frequencies for a RoPE width of <paramref name="dim"/> (even) and base <paramref name="theta"/>.</summary>
    public YarnRope(int dim, double theta, YarnScaling scaling)
    {
        ArgumentNullException.ThrowIfNull(scaling);
        if (dim <= 0 || dim % 2 != 0) throw new ArgumentOutOfRangeException(nameof(dim), dim, $"Expected an even RoPE width > 0, got {dim}.");
        if (!(theta > 1)) throw new ArgumentOutOfRangeException(nameof(theta), theta, $"Expected a RoPE base > 1, got {theta}.");
        Dim = dim;
        int half = dim / 2;
        _invFreq = new double[half];
        double factor = scaling.Factor;
        double low = 0, high = 0;
        if (factor > 1)
        {
            low = Math.Max(Math.Floor(CorrectionDim(scaling.BetaFast, dim, theta, scaling.OriginalMaxPositionEmbeddings)), 0);
            high = Math.Min(Math.Ceiling(CorrectionDim(scaling.BetaSlow, dim, theta, scaling.OriginalMaxPositionEmbeddings)), dim - 1);
            if (low == high) high += 0.001;
        }
        for (int i = 0; i < half; i++)
        {
            double extra = 1.0 / Math.Pow(theta, 2.0 * i / dim);
            if (factor <= 1)
            {
                _invFreq[i] = extra;
                continue;
            }
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
            double keep = 1 - ramp; // weight of the extrapolated (original) frequency
            _invFreq[i] = extra / factor * (1 - keep) + extra * keep;
        }
        _mscale = YarnScaling.GetMScale(factor, scaling.MScale) / YarnScaling.GetMScale(factor, scaling.MScaleAllDim);
    }

    /// <summary>Rotated width.</summary>
    public int Dim { get; }

    /// <summary>Rotation frequency of pair i (radians per position).</summary>
    public ReadOnlySpan<double> InverseFrequencies => _invFreq;

    /// <summary>Multiplier of cos and sin (YaRN's mscale ratio; 1 for DeepSeek-V3).</summary>
    public double Magnitude => _mscale;

    /// <summary>Fills cos and sin (length dim/2, magnitude included) for <paramref name="position"/>.</summary>
    public void CosSin(long position, Span<float> cos, Span<float> sin)
    {
        if (position < 0) throw new ArgumentOutOfRangeException(nameof(position), position, "Expected a position >= 0.");
        if (cos.Length != Dim / 2 || sin.Length != Dim / 2)
            throw new ArgumentException($"Expected cos and sin of length {Dim / 2}, got {cos.Length} and {sin.Length}.", nameof(cos));
        for (int i = 0; i < cos.Length; i++)
        {
            double angle = position * _invFreq[i];
            cos[i] = (float)(Math.Cos(angle) * _mscale);
            sin[i] = (float)(Math.Sin(angle) * _mscale);
        }
    }

    /// <summary>Rotates the interleaved pairs of <paramref name="x"/> (length 2 * cos.Length) in place with precomputed cos/sin.</summary>
    public static void Apply(Span<float> x, ReadOnlySpan<float> cos, ReadOnlySpan<float> sin)
    {
        if (x.Length != 2 * cos.Length || sin.Length != cos.Length)
            throw new ArgumentException($"Expected x of length 2 * {cos.Length} and sin of length {cos.Length}, got {x.Length} and {sin.Length}.", nameof(x));
        for (int i = 0; i < cos.Length; i++)
        {
            float a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = a * cos[i] - b * sin[i];
            x[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }

    /// <summary>Rotates <paramref name="x"/> (length <see cref="Dim"/>, interleaved pairs) to <paramref name="position"/> in place.</summary>
    public void Apply(Span<float> x, long position)
    {
        if (x.Length != Dim) throw new ArgumentException($"Expected {Dim} values, got {x.Length}.", nameof(x));
        for (int i = 0; i < _invFreq.Length; i++)
        {
            double angle = position * _invFreq[i];
            double c = Math.Cos(angle) * _mscale, s = Math.Sin(angle) * _mscale;
            double a = x[2 * i], b = x[2 * i + 1];
            x[2 * i] = (float)(a * c - b * s);
            x[2 * i + 1] = (float)(a * s + b * c);
        }
    }

    private static double CorrectionDim(double rotations, int dim, double theta, int maxPositions) =>
        dim * Math.Log(maxPositions / (rotations * 2 * Math.PI)) / (2 * Math.Log(theta));
}
