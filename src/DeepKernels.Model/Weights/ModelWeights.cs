using DeepKernels.Backends;

namespace DeepKernels.Model.Weights;

/// <summary>MLA attention weights of one layer (checkpoint names under <c>self_attn.</c>).</summary>
public sealed class AttentionWeights : IDisposable
{
    /// <summary>q_a_proj [q_lora, H], or null without q_lora (then <see cref="QProj"/> is set).</summary>
    public Fp8Linear? QAProj { get; init; }

    /// <summary>q_a_layernorm [q_lora] BF16.</summary>
    public TensorBuffer? QANorm { get; init; }

    /// <summary>q_b_proj [heads*192, q_lora].</summary>
    public Fp8Linear? QBProj { get; init; }

    /// <summary>q_proj [heads*192, H] (V2-Lite style, no q_lora).</summary>
    public Fp8Linear? QProj { get; init; }

    /// <summary>kv_a_proj_with_mqa [512+64, H].</summary>
    public required Fp8Linear KvAProj { get; init; }

    /// <summary>kv_a_layernorm [512] BF16.</summary>
    public required TensorBuffer KvANorm { get; init; }

    /// <summary>kv_b_proj [heads*(128+128), 512].</summary>
    public required Fp8Linear KvBProj { get; init; }

    /// <summary>o_proj [H, heads*128].</summary>
    public required Fp8Linear OProj { get; init; }

    /// <summary>Dequantized W_UK per head, [heads, nope, 512] (absorbed into q).</summary>
    public required float[] WUk { get; init; }

    /// <summary>Dequantized W_UV per head, [heads, v_head, 512] (applied to the latent output).</summary>
    public required float[] WUv { get; init; }

    internal IEnumerable<Fp8Linear> Linears => new[] { QAProj, QBProj, QProj, KvAProj, KvBProj, OProj }.Where(l => l is not null)!;

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var l in Linears) l.Dispose();
        QANorm?.Dispose();
        KvANorm.Dispose();
    }
}

/// <summary>A SiLU-gated MLP: down(SiLU(gate(x)) * up(x)) (dense layers, experts, the shared expert).</summary>
public sealed class MlpWeights(Fp8Linear gate, Fp8Linear up, Fp8Linear down) : IDisposable
{
    /// <summary>gate_proj [I, H].</summary>
    public Fp8Linear Gate { get; } = gate;

    /// <summary>up_proj [I, H].</summary>
    public Fp8Linear Up { get; } = up;

    /// <summary>down_proj [H, I].</summary>
    public Fp8Linear Down { get; } = down;

    /// <summary>Inner width I.</summary>
    public int Intermediate => Gate.OutFeatures;

    /// <summary>Bytes of all three projections.</summary>
    public long Bytes => Gate.Bytes + Up.Bytes + Down.Bytes;

    /// <summary>Parameters of all three projections.</summary>
    public long Parameters => Gate.Parameters + Up.Parameters + Down.Parameters;

    /// <inheritdoc />
    public void Dispose()
    {
        Gate.Dispose();
        Up.Dispose();
        Down.Dispose();
    }
}

/// <summary>MoE weights of one layer: router gate (BF16), correction bias (F32), experts and shared expert.</summary>
public sealed class MoeWeights : IDisposable
{
    /// <summary>mlp.gate.weight [E, H] BF16.</summary>
    public required Bf16Linear Gate { get; init; }

    /// <summary>mlp.gate.e_score_correction_bias [E] (empty when the checkpoint has none, as in V2).</summary>
    public required float[] CorrectionBias { get; init; }

    /// <summary>mlp.experts.E.*.</summary>
    public required IReadOnlyList<MlpWeights> Experts { get; init; }

    /// <summary>mlp.shared_experts.* (null without shared experts).</summary>
    public MlpWeights? Shared { get; init; }

    /// <summary>
    /// The experts stacked for the fused MoE layer op (gate and up rows of each expert side by
    /// side, [E, 2I, H]); <see cref="Experts"/> and <see cref="Shared"/> are then views into it.
    /// Null when the widths are not multiples of 128 (then experts run one by one).
    /// </summary>
    public DeepKernels.Ops.MoeLayer.MoeLayerWeights? Layer { get; init; }

    /// <summary>Buffers behind <see cref="Layer"/>.</summary>
    public IReadOnlyList<TensorBuffer> StackedBuffers { get; init; } = [];

    /// <inheritdoc />
    public void Dispose()
    {
        Gate.Dispose();
        foreach (var e in Experts) e.Dispose();
        Shared?.Dispose();
        foreach (var b in StackedBuffers) b.Dispose();
    }
}

/// <summary>One decoder layer.</summary>
public sealed class LayerWeights : IDisposable
{
    /// <summary>Layer index.</summary>
    public required int Index { get; init; }

    /// <summary>input_layernorm [H] BF16.</summary>
    public required TensorBuffer InputNorm { get; init; }

    /// <summary>post_attention_layernorm [H] BF16.</summary>
    public required TensorBuffer PostAttentionNorm { get; init; }

    /// <summary>Attention.</summary>
    public required AttentionWeights Attention { get; init; }

    /// <summary>Dense MLP (the first first_k_dense_replace layers), else null.</summary>
    public MlpWeights? Dense { get; init; }

    /// <summary>MoE block, else null.</summary>
    public MoeWeights? Moe { get; init; }

    /// <inheritdoc />
    public void Dispose()
    {
        InputNorm.Dispose();
        PostAttentionNorm.Dispose();
        Attention.Dispose();
        Dense?.Dispose();
        Moe?.Dispose();
    }
}

/// <summary>All weights of a model, resident on one backend.</summary>
public sealed class ModelWeights : IDisposable
{
    /// <summary>embed_tokens [V, H] BF16.</summary>
    public required TensorBuffer Embedding { get; init; }

    /// <summary>Decoder layers (the MTP layer is not loaded).</summary>
    public required IReadOnlyList<LayerWeights> Layers { get; init; }

    /// <summary>model.norm [H] BF16.</summary>
    public required TensorBuffer FinalNorm { get; init; }

    /// <summary>lm_head in BF16 (computed in FP32), unless quantized at load.</summary>
    public Bf16Linear? LmHead { get; init; }

    /// <summary>lm_head quantized to FP8 at load (when asked).</summary>
    public Fp8Linear? LmHeadFp8 { get; init; }

    /// <summary>Bytes of all weights as loaded.</summary>
    public long Bytes { get; init; }

    /// <summary>Bytes the same weights take in BF16 (2 per parameter).</summary>
    public long Bf16Bytes { get; init; }

    /// <summary>Bytes read per decoded token: attention, dense MLPs, shared experts, top-k experts (average expert size), norms, router, lm_head, one embedding row.</summary>
    public long ActiveBytesPerToken { get; init; }

    /// <summary>Checkpoint tensors recognised as the multi-token-prediction layer and skipped.</summary>
    public int SkippedMtpTensors { get; init; }

    /// <inheritdoc />
    public void Dispose()
    {
        Embedding.Dispose();
        foreach (var l in Layers) l.Dispose();
        FinalNorm.Dispose();
        LmHead?.Dispose();
        LmHeadFp8?.Dispose();
    }
}
