namespace DeepKernels.Model.Config;

/// <summary>
/// The <c>rope_scaling</c> block of a DeepSeek config (YaRN). DeepSeek-V3 uses factor 40 over an
/// original context of 4096, beta_fast 32, beta_slow 1, mscale = mscale_all_dim = 1.
/// </summary>
public sealed record RopeScalingConfig
{
    /// <summary>Scaling type; only "yarn" is supported (V2 configs spell it the same).</summary>
    public string Type { get; init; } = "yarn";

    /// <summary>Context extension factor (>= 1).</summary>
    public double Factor { get; init; } = 1;

    /// <summary>The context length the model was pre-trained with.</summary>
    public int OriginalMaxPositionEmbeddings { get; init; } = 4096;

    /// <summary>YaRN: rotations above which frequencies are kept (high-frequency end).</summary>
    public double BetaFast { get; init; } = 32;

    /// <summary>YaRN: rotations below which frequencies are fully interpolated.</summary>
    public double BetaSlow { get; init; } = 1;

    /// <summary>YaRN attention temperature coefficient.</summary>
    public double MScale { get; init; } = 1;

    /// <summary>YaRN temperature coefficient applied to all dims (enters the softmax scale squared).</summary>
    public double MScaleAllDim { get; init; }

    /// <summary>The library's YaRN parameters for this config (no scaling when the factor is 1 or less).</summary>
    public DeepKernels.Ops.Mla.YarnScaling ToYarnScaling() =>
        Factor <= 1 ? DeepKernels.Ops.Mla.YarnScaling.None
            : new DeepKernels.Ops.Mla.YarnScaling(Factor, OriginalMaxPositionEmbeddings, BetaFast, BetaSlow, MScale, MScaleAllDim);

    /// <summary>YaRN's magnitude correction: 0.1 * m * ln(factor) + 1 (1 when factor &lt;= 1).</summary>
    public static double YarnMScale(double factor, double m) => factor <= 1 ? 1.0 : 0.1 * m * Math.Log(factor) + 1.0;
}
