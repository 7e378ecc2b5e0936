namespace DeepKernels.Ops.MoeLayer;

/// <summary>
/// Shapes of a DeepSeek MoE feed-forward layer: E routed experts of width
/// <see cref="Intermediate"/> chosen k per token, plus an optional shared expert of width
/// <see cref="SharedIntermediate"/> (n_shared_experts * moe_intermediate_size).
/// </summary>
public sealed record MoeLayerConfig
{
    /// <summary>Model width (<c>hidden_size</c>), the K of gate_up and the N of down.</summary>
    public required int Hidden { get; init; }

    /// <summary>Routed expert width (<c>moe_intermediate_size</c>).</summary>
    public required int Intermediate { get; init; }

    /// <summary>Routed experts (<c>n_routed_experts</c>).</summary>
    public required int NumExperts { get; init; }

    /// <summary>Experts per token (<c>num_experts_per_tok</c>).</summary>
    public required int TopK { get; init; }

    /// <summary>Shared expert width; 0 means no shared expert.</summary>
    public int SharedIntermediate { get; init; }

    /// <summary>
    /// Segment alignment of the contiguous layout; 0 picks the backend's preference (1 on the
    /// CPU, which skips nothing and needs no padding; 128 for GPU kernels).
    /// </summary>
    public int Alignment { get; init; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the field that is out of range.</summary>
    public void Validate()
    {
        Check(Hidden > 0, nameof(Hidden), $"Expected {nameof(Hidden)} > 0, got {Hidden}.");
        Check(Intermediate > 0, nameof(Intermediate), $"Expected {nameof(Intermediate)} > 0, got {Intermediate}.");
        Check(NumExperts > 0, nameof(NumExperts), $"Expected {nameof(NumExperts)} > 0, got {NumExperts}.");
        Check(TopK > 0 && TopK <= NumExperts, nameof(TopK), $"Expected 1 <= {nameof(TopK)} <= {nameof(NumExperts)} = {NumExperts}, got {TopK}.");
        Check(SharedIntermediate >= 0, nameof(SharedIntermediate), $"Expected {nameof(SharedIntermediate)} >= 0, got {SharedIntermediate}.");
        Check(Alignment >= 0, nameof(Alignment), $"Expected {nameof(Alignment)} >= 0 (0 = backend default), got {Alignment}.");
    }

    private static void Check(bool ok, string field, string message)
    {
        if (!ok) throw new ArgumentException(message, field);
    }
}
