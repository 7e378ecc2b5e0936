namespace DeepKernels.Ops.Mla;

/// <summary>
/// Shape of one MLA attention layer. Defaults are DeepSeek-V3's (see <see cref="DeepSeekV3"/>);
/// the latent width is fixed at 512 and the RoPE width at 64 by the cache format.
/// </summary>
public sealed record MlaConfig
{
    /// <summary>Model width (7168 for V3).</summary>
    public int HiddenSize { get; init; } = 7168;

    /// <summary>Attention heads (128 for V3).</summary>
    public int NumHeads { get; init; } = 128;

    /// <summary>Query low-rank width (1536 for V3); 0 means a direct q_proj (V2-Lite style).</summary>
    public int QLoraRank { get; init; } = 1536;

    /// <summary>Latent KV width (512; the cache format requires 512).</summary>
    public int KvLoraRank { get; init; } = 512;

    /// <summary>Per-head non-rotary query/key width (128).</summary>
    public int QkNopeHeadDim { get; init; } = 128;

    /// <summary>Per-head rotary query/key width (64; the cache format requires 64).</summary>
    public int QkRopeHeadDim { get; init; } = 64;

    /// <summary>Per-head value width (128).</summary>
    public int VHeadDim { get; init; } = 128;

    /// <summary>RMSNorm epsilon (1e-6).</summary>
    public float RmsNormEps { get; init; } = 1e-6f;

    /// <summary>RoPE base (10000).</summary>
    public double RopeTheta { get; init; } = 10000;

    /// <summary>YaRN scaling (factor 40 over 4096 for V3); <see cref="YarnScaling.None"/> for plain RoPE.</summary>
    public YarnScaling RopeScaling { get; init; } = YarnScaling.DeepSeekV3;

    /// <summary>DeepSeek-V3 (671B) attention.</summary>
    public static MlaConfig DeepSeekV3 { get; } = new();

    /// <summary>Query/key head width: nope + rope (192).</summary>
    public int QHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    /// <summary>
    /// softmax scale = (nope + rope)^-0.5 * mscale(factor, mscale_all_dim)^2;
    /// for V3: 192^-0.5 * (0.1 ln 40 + 1)^2 = 0.1352338.
    /// </summary>
    public float SoftmaxScale
    {
        get
        {
            double m = YarnScaling.GetMScale(RopeScaling.Factor, RopeScaling.MScaleAllDim);
            return (float)(1 / Math.Sqrt(QHeadDim) * m * m);
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> for shapes the MLA kernels do not support.</summary>
    public void Validate()
    {
        Guard.Positive(HiddenSize, nameof(HiddenSize));
        Guard.Positive(NumHeads, nameof(NumHeads));
        Guard.NonNegative(QLoraRank, nameof(QLoraRank));
        Guard.Positive(QkNopeHeadDim, nameof(QkNopeHeadDim));
        Guard.Positive(VHeadDim, nameof(VHeadDim));
        if (KvLoraRank != 512) throw new ArgumentException($"Expected KvLoraRank 512 (the latent cache width), got {KvLoraRank}.", nameof(KvLoraRank));
        if (QkRopeHeadDim != 64) throw new ArgumentException($"Expected QkRopeHeadDim 64 (the cache's RoPE width), got {QkRopeHeadDim}.", nameof(QkRopeHeadDim));
    }
}
