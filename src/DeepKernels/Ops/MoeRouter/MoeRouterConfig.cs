namespace DeepKernels.Ops.MoeRouter;

/// <summary>How router logits become expert scores.</summary>
public enum MoeScoring
{
    /// <summary>s = sigmoid(logit) per expert (DeepSeek-V3, <c>scoring_func = "sigmoid"</c>).</summary>
    Sigmoid,

    /// <summary>s = softmax(logits) over all experts of a token (DeepSeek-V2, <c>scoring_func = "softmax"</c>).</summary>
    Softmax,
}

/// <summary>How a group of experts is scored when choosing the top groups.</summary>
public enum MoeGroupScore
{
    /// <summary>
    /// <see cref="Top2Sum"/>, except <see cref="Max"/> for <see cref="MoeScoring.Softmax"/>
    /// without a correction bias (what DeepSeek-V2's <c>group_limited_greedy</c> does).
    /// </summary>
    Auto,

    /// <summary>Sum of the two largest choice scores in the group (DeepSeek-V3 <c>noaux_tc</c>).</summary>
    Top2Sum,

    /// <summary>Largest choice score in the group (DeepSeek-V2).</summary>
    Max,
}

/// <summary>
/// Configuration of the DeepSeek MoE gate: scoring, group-limited top-k, normalisation and
/// scaling. The number of experts comes from the logits' shape; <see cref="Validate"/> checks
/// the config against it.
/// </summary>
public sealed record MoeRouterConfig
{
    /// <summary>Largest expert count any backend supports (the CUDA kernel keeps a token's scores on chip).</summary>
    public const int MaxExperts = 512;

    /// <summary>Largest top-k any backend supports.</summary>
    public const int MaxTopK = 16;

    /// <summary>Scoring function; sigmoid by default (DeepSeek-V3).</summary>
    public MoeScoring Scoring { get; init; } = MoeScoring.Sigmoid;

    /// <summary>How groups are ranked; <see cref="MoeGroupScore.Auto"/> by default.</summary>
    public MoeGroupScore GroupScore { get; init; } = MoeGroupScore.Auto;

    /// <summary>Number of expert groups (<c>n_group</c>); the experts split into equal contiguous groups.</summary>
    public int NGroup { get; init; } = 1;

    /// <summary>Groups kept per token (<c>topk_group</c>).</summary>
    public int TopKGroup { get; init; } = 1;

    /// <summary>Experts chosen per token (<c>num_experts_per_tok</c>).</summary>
    public int TopK { get; init; } = 1;

    /// <summary>Whether the chosen weights are normalised to sum to one (<c>norm_topk_prob</c>).</summary>
    public bool NormTopKProb { get; init; } = true;

    /// <summary>Factor applied to every weight after normalisation (<c>routed_scaling_factor</c>).</summary>
    public float RoutedScalingFactor { get; init; } = 1f;

    /// <summary>DeepSeek-V3's gate: sigmoid, 8 groups keep 4, top-8, normalised, scaled by 2.5.</summary>
    public static MoeRouterConfig DeepSeekV3 { get; } = new()
    {
        Scoring = MoeScoring.Sigmoid,
        NGroup = 8,
        TopKGroup = 4,
        TopK = 8,
        NormTopKProb = true,
        RoutedScalingFactor = 2.5f,
    };

    /// <summary>The group score actually used, resolving <see cref="MoeGroupScore.Auto"/>.</summary>
    public MoeGroupScore EffectiveGroupScore(bool hasBias) => GroupScore switch
    {
        MoeGroupScore.Auto => Scoring == MoeScoring.Softmax && !hasBias ? MoeGroupScore.Max : MoeGroupScore.Top2Sum,
        _ => GroupScore,
    };

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> naming the field when the config cannot route
    /// <paramref name="numExperts"/> experts: 1 &lt;= E &lt;= 512, E divisible by n_group,
    /// 1 &lt;= topk_group &lt;= n_group, 1 &lt;= k &lt;= min(E, 16), k &lt;= topk_group * E / n_group,
    /// and a finite positive scaling factor.
    /// </summary>
    public void Validate(int numExperts)
    {
        if (numExperts < 1 || numExperts > MaxExperts)
            throw new ArgumentOutOfRangeException(nameof(numExperts), numExperts, $"Expected 1 <= experts <= {MaxExperts}, got {numExperts}.");
        if (!Enum.IsDefined(Scoring))
            throw Invalid(nameof(Scoring), $"Expected {nameof(Scoring)} to be Sigmoid or Softmax, got {Scoring}.");
        if (!Enum.IsDefined(GroupScore))
            throw Invalid(nameof(GroupScore), $"Expected {nameof(GroupScore)} to be Auto, Top2Sum or Max, got {GroupScore}.");
        if (NGroup < 1)
            throw Invalid(nameof(NGroup), $"Expected {nameof(NGroup)} >= 1, got {NGroup}.");
        if (numExperts % NGroup != 0)
            throw Invalid(nameof(NGroup), $"Expected the expert count {numExperts} to be divisible by {nameof(NGroup)} = {NGroup}.");
        if (TopKGroup < 1 || TopKGroup > NGroup)
            throw Invalid(nameof(TopKGroup), $"Expected 1 <= {nameof(TopKGroup)} <= {nameof(NGroup)} = {NGroup}, got {TopKGroup}.");
        if (TopK < 1 || TopK > numExperts)
            throw Invalid(nameof(TopK), $"Expected 1 <= {nameof(TopK)} <= experts = {numExperts}, got {TopK}.");
        if (TopK > MaxTopK)
            throw Invalid(nameof(TopK), $"Expected {nameof(TopK)} <= {MaxTopK}, got {TopK}.");
        int reachable = TopKGroup * (numExperts / NGroup);
        if (TopK > reachable)
            throw Invalid(nameof(TopK), $"Expected {nameof(TopK)} <= {nameof(TopKGroup)} * experts per group = {reachable}, got {TopK}.");
        if (!float.IsFinite(RoutedScalingFactor) || RoutedScalingFactor <= 0)
            throw Invalid(nameof(RoutedScalingFactor), $"Expected a finite {nameof(RoutedScalingFactor)} > 0, got {RoutedScalingFactor}.");
    }

    // A field of this record, not a method parameter, is what is wrong: name it.
    private static ArgumentException Invalid(string field, string message) => new(message, field);
}
