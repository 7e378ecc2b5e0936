namespace DeepKernels.Ops.Mla;

/// <summary>
/// One MLA layer's weights as FP32 (dequantized) row-major [out, in] matrices, named as in the
/// Hugging Face checkpoint (<c>self_attn.q_a_proj.weight</c> ...).
/// </summary>
public sealed class MlaWeights
{
    /// <summary>q_a_proj [q_lora, hidden] (null when <see cref="MlaConfig.QLoraRank"/> is 0).</summary>
    public float[]? QAProj { get; init; }

    /// <summary>q_a_layernorm [q_lora] (null when QLoraRank is 0).</summary>
    public float[]? QANorm { get; init; }

    /// <summary>q_b_proj [h * 192, q_lora], or q_proj [h * 192, hidden] when QLoraRank is 0.</summary>
    public required float[] QBProj { get; init; }

    /// <summary>kv_a_proj_with_mqa [512 + 64, hidden].</summary>
    public required float[] KvAProj { get; init; }

    /// <summary>kv_a_layernorm [512].</summary>
    public required float[] KvANorm { get; init; }

    /// <summary>kv_b_proj [h * (nope + v), 512].</summary>
    public required float[] KvBProj { get; init; }

    /// <summary>o_proj [hidden, h * v].</summary>
    public required float[] OProj { get; init; }

    /// <summary>Throws <see cref="ArgumentException"/> naming the first weight whose size does not fit <paramref name="c"/>.</summary>
    public void Validate(MlaConfig c)
    {
        ArgumentNullException.ThrowIfNull(c);
        long h = c.NumHeads;
        if (c.QLoraRank > 0)
        {
            Check(QAProj, (long)c.QLoraRank * c.HiddenSize, nameof(QAProj));
            Check(QANorm, c.QLoraRank, nameof(QANorm));
            Check(QBProj, h * c.QHeadDim * c.QLoraRank, nameof(QBProj));
        }
        else
        {
            Check(QBProj, h * c.QHeadDim * c.HiddenSize, nameof(QBProj));
        }
        Check(KvAProj, (long)(c.KvLoraRank + c.QkRopeHeadDim) * c.HiddenSize, nameof(KvAProj));
        Check(KvANorm, c.KvLoraRank, nameof(KvANorm));
        Check(KvBProj, h * (c.QkNopeHeadDim + c.VHeadDim) * c.KvLoraRank, nameof(KvBProj));
        Check(OProj, (long)c.HiddenSize * h * c.VHeadDim, nameof(OProj));
    }

    private static void Check(float[]? w, long expected, string name)
    {
        if (w is null) throw new ArgumentException($"Expected weight {name} with {expected} values, got none.", name);
        if (w.Length != expected) throw new ArgumentException($"Expected weight {name} with {expected} values, got {w.Length}.", name);
    }
}
