using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;

namespace DeepKernels.Ops.Mla;

/// <summary>
/// An FP8 block-scaled projection weight as stored in a DeepSeek-V3 checkpoint: E4M3 [N, K]
/// row-major and <c>weight_scale_inv</c> [ceil(N/128), ceil(K/128)] (dequant = fp8 * scale_inv).
/// </summary>
public sealed record Fp8Weight(Float8E4M3[] Weight, float[] ScaleInv)
{
    /// <summary>Quantizes an FP32 [rows, cols] weight per 128x128 block.</summary>
    public static Fp8Weight Quantize(ReadOnlySpan<float> weight, int rows, int cols)
    {
        var q = new Float8E4M3[weight.Length];
        var s = new float[WeightQuantization.BlockCount(rows) * WeightQuantization.BlockCount(cols)];
        WeightQuantization.Quantize(weight, rows, cols, q, s);
        return new Fp8Weight(q, s);
    }

    /// <summary>The FP32 weight fp8 * scale_inv.</summary>
    public float[] Dequantize(int rows, int cols)
    {
        var w = new float[Weight.Length];
        WeightQuantization.Dequantize(Weight, ScaleInv, rows, cols, w);
        return w;
    }
}

/// <summary>
/// One MLA layer's weights, row-major [out, in], named as in the Hugging Face checkpoint
/// (<c>self_attn.q_a_proj.weight</c> ...). The four big projections come either as FP32
/// (dequantized; plain FP32 matmul) or as FP8 block-scaled (<c>...Fp8</c> properties; the
/// activations are then quantized per 1x128 group and <see cref="Gemm.Fp8Gemm"/> runs, as in
/// DeepSeek-V3 inference). When both are given the FP8 form is used. kv_b_proj is FP32, since
/// absorption splits it into W_UK and W_UV (dequantize it from the checkpoint).
/// </summary>
public sealed class MlaWeights
{
    /// <summary>q_a_proj [q_lora, hidden] (null when <see cref="MlaConfig.QLoraRank"/> is 0).</summary>
    public float[]? QAProj { get; init; }

    /// <summary>q_a_layernorm [q_lora] (null when QLoraRank is 0).</summary>
    public float[]? QANorm { get; init; }

    /// <summary>q_b_proj [h * 192, q_lora], or q_proj [h * 192, hidden] when QLoraRank is 0.</summary>
    public float[]? QBProj { get; init; }

    /// <summary>kv_a_proj_with_mqa [512 + 64, hidden].</summary>
    public float[]? KvAProj { get; init; }

    /// <summary>kv_a_layernorm [512].</summary>
    public required float[] KvANorm { get; init; }

    /// <summary>kv_b_proj [h * (nope + v), 512].</summary>
    public required float[] KvBProj { get; init; }

    /// <summary>o_proj [hidden, h * v].</summary>
    public float[]? OProj { get; init; }

    /// <summary>FP8 q_a_proj (used instead of <see cref="QAProj"/> when set).</summary>
    public Fp8Weight? QAProjFp8 { get; init; }

    /// <summary>FP8 q_b_proj / q_proj (used instead of <see cref="QBProj"/> when set).</summary>
    public Fp8Weight? QBProjFp8 { get; init; }

    /// <summary>FP8 kv_a_proj_with_mqa (used instead of <see cref="KvAProj"/> when set).</summary>
    public Fp8Weight? KvAProjFp8 { get; init; }

    /// <summary>FP8 o_proj (used instead of <see cref="OProj"/> when set).</summary>
    public Fp8Weight? OProjFp8 { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first weight whose size does not fit <paramref name="c"/>.</summary>
    public void Validate(MlaConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        int h = c.NumHeads;
        if (c.QLoraRank > 0)
        {
            CheckProjection(QAProj, QAProjFp8, c.QLoraRank, c.HiddenSize, nameof(QAProj));
            Check(QANorm, c.QLoraRank, nameof(QANorm));
            CheckProjection(QBProj, QBProjFp8, h * c.QHeadDim, c.QLoraRank, nameof(QBProj));
        }
        else
        {
            CheckProjection(QBProj, QBProjFp8, h * c.QHeadDim, c.HiddenSize, nameof(QBProj));
        }
        CheckProjection(KvAProj, KvAProjFp8, c.KvLoraRank + c.QkRopeHeadDim, c.HiddenSize, nameof(KvAProj));
        Check(KvANorm, c.KvLoraRank, nameof(KvANorm));
        Check(KvBProj, h * (c.QkNopeHeadDim + c.VHeadDim) * c.KvLoraRank, nameof(KvBProj));
        CheckProjection(OProj, OProjFp8, c.HiddenSize, h * c.VHeadDim, nameof(OProj));
    }

    /// <summary>A copy whose four big projections are FP8 block-quantized from the FP32 ones (for tests and experiments).</summary>
    public MlaWeights WithFp8Projections(MlaConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        Validate(c);
        int h = c.NumHeads;
        int qbIn = c.QLoraRank > 0 ? c.QLoraRank : c.HiddenSize;
        return new MlaWeights
        {
            QANorm = QANorm,
            KvANorm = KvANorm,
            KvBProj = KvBProj,
            QAProjFp8 = QAProjFp8 ?? (c.QLoraRank > 0 ? Fp8Weight.Quantize(QAProj, c.QLoraRank, c.HiddenSize) : null),
            QBProjFp8 = QBProjFp8 ?? Fp8Weight.Quantize(QBProj, h * c.QHeadDim, qbIn),
            KvAProjFp8 = KvAProjFp8 ?? Fp8Weight.Quantize(KvAProj, c.KvLoraRank + c.QkRopeHeadDim, c.HiddenSize),
            OProjFp8 = OProjFp8 ?? Fp8Weight.Quantize(OProj, c.HiddenSize, h * c.VHeadDim),
        };
    }

    private static void CheckProjection(float[]? w, Fp8Weight? w8, int rows, int cols, string name)
    {
        if (w8 is null)
        {
            Check(w, (long)rows * cols, name);
            return;
        }
        if (w8.Weight.Length != (long)rows * cols)
            throw new ArgumentException($"Expected FP8 weight {name} with {(long)rows * cols} values, got {w8.Weight.Length}.", name);
        long blocks = (long)WeightQuantization.BlockCount(rows) * WeightQuantization.BlockCount(cols);
        if (w8.ScaleInv.Length != blocks)
            throw new ArgumentException($"Expected {name} scale_inv with {blocks} values ([{WeightQuantization.BlockCount(rows)}, {WeightQuantization.BlockCount(cols)}]), got {w8.ScaleInv.Length}.", name);
    }

    private static void Check(float[]? w, long expected, string name)
    {
        if (w is null) throw new ArgumentException($"Expected weight {name} with {expected} values, got none.", name);
        if (w.Length != expected) throw new ArgumentException($"Expected weight {name} with {expected} values, got {w.Length}.", name);
    }
}
