using DeepKernels.Backends;
using DeepKernels.Formats;
using DeepKernels.Tensors;

namespace DeepKernels.Ops.MoeRouter;

/// <summary>
/// The DeepSeek MoE gate (DESIGN.md "MoE gate"): from router logits [T, E] and an optional
/// FP32 correction bias [E], choose k experts per token and their weights.
/// <list type="number">
/// <item>s = sigmoid(logits), or softmax over the E logits of a token.</item>
/// <item>choice = s + bias (the bias only steers selection).</item>
/// <item>Group score = sum of the two largest choice scores of each of the n_group contiguous
/// groups (or their maximum, see <see cref="MoeGroupScore"/>); the top topk_group groups are kept.</item>
/// <item>The top k experts of the kept groups by choice score, in descending order.</item>
/// <item>weight = s at those experts (no bias), divided by (their sum + 1e-20) when
/// norm_topk_prob, times routed_scaling_factor.</item>
/// </list>
/// Ties go to the lower index everywhere (groups and experts).
/// <para>NaN logits never crash: a NaN choice score ranks as -inf (below every real score, tied
/// with -inf, ties to the lower index) and a NaN s contributes weight 0. A row of all NaN thus
/// picks the lowest-indexed experts of the lowest-indexed groups with weight 0. With softmax
/// scoring NaN logits count as -inf; a row with no finite logit scores 0 everywhere.</para>
/// </summary>
public static class MoeRouting
{
    /// <summary>
    /// Routes <c>T = logits.Length / numExperts</c> tokens. <paramref name="bias"/> may be empty
    /// (no correction bias) or have length E. Writes [T, k] ids and weights.
    /// </summary>
    public static void Route(ReadOnlySpan<float> logits, int numExperts, ReadOnlySpan<float> bias, MoeRouterConfig config, Span<int> expertIds, Span<float> weights)
    {
        int tokens = CheckSpans(logits.Length, numExperts, bias, config, expertIds.Length, weights.Length);
        int k = config.TopK;
        var groupScore = config.EffectiveGroupScore(!bias.IsEmpty);
        for (int t = 0; t < tokens; t++)
            MoeRouterCore.RouteToken(logits.Slice(t * numExperts, numExperts), bias, config, groupScore, expertIds.Slice(t * k, k), weights.Slice(t * k, k));
    }

    /// <summary>Routes BF16 logits (the gate GEMM's usual output); otherwise as the float overload.</summary>
    public static void Route(ReadOnlySpan<BFloat16> logits, int numExperts, ReadOnlySpan<float> bias, MoeRouterConfig config, Span<int> expertIds, Span<float> weights)
    {
        int tokens = CheckSpans(logits.Length, numExperts, bias, config, expertIds.Length, weights.Length);
        int k = config.TopK;
        var groupScore = config.EffectiveGroupScore(!bias.IsEmpty);
        Span<float> row = stackalloc float[numExperts];
        for (int t = 0; t < tokens; t++)
        {
            var source = logits.Slice(t * numExperts, numExperts);
            for (int i = 0; i < numExperts; i++) row[i] = source[i].ToSingle();
            MoeRouterCore.RouteToken(row, bias, config, groupScore, expertIds.Slice(t * k, k), weights.Slice(t * k, k));
        }
    }

    private static int CheckSpans(int logitsLength, int numExperts, ReadOnlySpan<float> bias, MoeRouterConfig config, int idsLength, int weightsLength)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate(numExperts);
        if (logitsLength % numExperts != 0)
            throw new ArgumentException($"Expected logits length to be a multiple of the expert count {numExperts}, got {logitsLength}.", nameof(logitsLength));
        int tokens = logitsLength / numExperts;
        if (!bias.IsEmpty)
        {
            Guard.Length(bias.Length, numExperts, nameof(bias));
            CheckBias(bias);
        }
        Guard.Length(idsLength, (long)tokens * config.TopK, nameof(idsLength));
        Guard.Length(weightsLength, (long)tokens * config.TopK, nameof(weightsLength));
        return tokens;
    }

    private static void CheckBias(ReadOnlySpan<float> bias)
    {
        for (int i = 0; i < bias.Length; i++)
            if (!float.IsFinite(bias[i]))
                throw new ArgumentException($"Expected bias[{i}] to be finite, got {bias[i]}.", nameof(bias));
    }

    /// <summary>
    /// Routes on <paramref name="backend"/>: <paramref name="logits"/> [T, E] Float32 or
    /// BFloat16, <paramref name="bias"/> null or Float32 [E], <paramref name="expertIds"/>
    /// Int32 [T, k], <paramref name="weights"/> Float32 [T, k]. All contiguous, on the backend.
    /// A host-resident bias is checked to be finite before any work.
    /// </summary>
    public static void Route(Backend backend, TensorView logits, TensorView? bias, MoeRouterConfig config, TensorView expertIds, TensorView weights)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(config);
        Guard.Rank(logits, 2, nameof(logits));
        Guard.DType(logits, DType.Float32, DType.BFloat16, nameof(logits));
        long t = logits.Dim(0), e = logits.Dim(1);
        Guard.Positive(t, "T");
        if (e > MoeRouterConfig.MaxExperts)
            throw new ArgumentException($"Expected at most {MoeRouterConfig.MaxExperts} experts, got logits {logits}.", nameof(logits));
        config.Validate((int)e);
        Guard.DType(expertIds, DType.Int32, nameof(expertIds));
        Guard.Shape(expertIds, nameof(expertIds), t, config.TopK);
        Guard.DType(weights, DType.Float32, nameof(weights));
        Guard.Shape(weights, nameof(weights), t, config.TopK);
        Check(backend, logits, nameof(logits));
        Check(backend, expertIds, nameof(expertIds));
        Check(backend, weights, nameof(weights));
        if (bias is TensorView b)
        {
            Guard.DType(b, DType.Float32, nameof(bias));
            Guard.Shape(b, nameof(bias), e);
            Check(backend, b, nameof(bias));
            if (b.Location == MemoryLocation.Host) CheckBias(b.AsSpan<float>());
        }
        var impl = Guard.Implementation<IMoeRouterBackend>(backend, "MoE routing");
        impl.Route(new MoeRouterArgs(logits, bias, config, (int)t, (int)e, expertIds, weights));
    }

    private static void Check(Backend backend, TensorView view, string name)
    {
        Guard.Contiguous(view, name);
        Guard.OnBackend(view, backend, name);
    }
}

/// <summary>Validated arguments of <see cref="MoeRouting"/>; outputs are the last two views.</summary>
internal readonly record struct MoeRouterArgs(TensorView Logits, TensorView? Bias, MoeRouterConfig Config, int Tokens, int Experts, TensorView ExpertIds, TensorView Weights);

/// <summary>A backend's implementation of MoE routing.</summary>
internal interface IMoeRouterBackend
{
    void Route(in MoeRouterArgs args);
}
