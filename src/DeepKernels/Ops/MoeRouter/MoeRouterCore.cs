using System.Runtime.CompilerServices;

namespace DeepKernels.Ops.MoeRouter;

/// <summary>
/// The per-token gate computation shared by the span API and the CPU backend. Allocation free:
/// scratch lives on the stack (E &lt;= 512).
/// </summary>
internal static class MoeRouterCore
{
    /// <summary>Routes one token whose logits are already in float.</summary>
    [SkipLocalsInit]
    public static void RouteToken(ReadOnlySpan<float> logits, ReadOnlySpan<float> bias, MoeRouterConfig config, MoeGroupScore groupScore, Span<int> ids, Span<float> weights)
    {
        int e = logits.Length, k = config.TopK;
        Span<float> s = stackalloc float[e];
        Span<float> choice = stackalloc float[e];
        Scores(logits, config.Scoring, s);
        for (int i = 0; i < e; i++)
        {
            float c = bias.IsEmpty ? s[i] : s[i] + bias[i];
            choice[i] = float.IsNaN(c) ? float.NegativeInfinity : c; // NaN never wins a comparison
        }

        // Rank groups, keep the top topk_group (ties to the lower group index).
        int nGroup = config.NGroup, perGroup = e / nGroup;
        Span<bool> keep = stackalloc bool[nGroup];
        keep.Clear();
        if (config.TopKGroup >= nGroup)
            keep.Fill(true);
        else
        {
            Span<float> groupScores = stackalloc float[nGroup];
            for (int g = 0; g < nGroup; g++)
                groupScores[g] = GroupScore(choice.Slice(g * perGroup, perGroup), groupScore);
            Span<int> topGroups = stackalloc int[config.TopKGroup];
            Span<float> topGroupScores = stackalloc float[config.TopKGroup];
            int count = 0;
            for (int g = 0; g < nGroup; g++) Insert(groupScores[g], g, topGroupScores, topGroups, ref count);
            foreach (int g in topGroups) keep[g] = true;
        }

        // Top-k experts of the kept groups by choice score, scanned in index order so ties keep the lower index.
        Span<float> topScores = stackalloc float[k];
        int chosen = 0;
        for (int g = 0; g < nGroup; g++)
        {
            if (!keep[g]) continue;
            for (int i = g * perGroup; i < (g + 1) * perGroup; i++) Insert(choice[i], i, topScores, ids, ref chosen);
        }

        // Weights use the unbiased score; a NaN score contributes weight 0.
        double sum = 0;
        for (int j = 0; j < k; j++)
        {
            float w = s[ids[j]];
            if (float.IsNaN(w)) w = 0;
            weights[j] = w;
            sum += w;
        }
        float scale = config.RoutedScalingFactor;
        if (config.NormTopKProb)
        {
            float denominator = (float)sum + 1e-20f;
            for (int j = 0; j < k; j++) weights[j] = weights[j] / denominator * scale;
        }
        else
        {
            for (int j = 0; j < k; j++) weights[j] *= scale;
        }
    }

    /// <summary>
    /// Expert scores. Sigmoid per element; softmax over the row with NaN logits treated as
    /// -inf. A row with a +inf logit shares probability equally among its +inf entries; a row
    /// with no usable logit (all NaN or -inf) scores 0 everywhere.
    /// </summary>
    public static void Scores(ReadOnlySpan<float> logits, MoeScoring scoring, Span<float> s)
    {
        if (scoring == MoeScoring.Sigmoid)
        {
            for (int i = 0; i < logits.Length; i++) s[i] = 1f / (1f + MathF.Exp(-logits[i]));
            return;
        }
        float max = float.NegativeInfinity;
        foreach (float x in logits)
            if (x > max) max = x;
        if (float.IsNegativeInfinity(max))
        {
            s.Clear();
            return;
        }
        double sum = 0;
        if (float.IsPositiveInfinity(max))
        {
            for (int i = 0; i < logits.Length; i++) { s[i] = float.IsPositiveInfinity(logits[i]) ? 1f : 0f; sum += s[i]; }
        }
        else
        {
            for (int i = 0; i < logits.Length; i++)
            {
                float x = logits[i];
                float v = float.IsNaN(x) ? 0f : MathF.Exp(x - max);
                s[i] = v;
                sum += v;
            }
        }
        float inv = (float)(1.0 / sum);
        for (int i = 0; i < s.Length; i++) s[i] *= inv;
    }

    private static float GroupScore(ReadOnlySpan<float> choice, MoeGroupScore mode)
    {
        float first = float.NegativeInfinity, second = float.NegativeInfinity;
        foreach (float c in choice)
        {
            if (c > first) { second = first; first = c; }
            else if (c > second) second = c;
        }
        if (mode == MoeGroupScore.Max || choice.Length == 1) return first;
        return first + second; // -inf when the group has fewer than two usable scores
    }

    /// <summary>
    /// Inserts (score, index) into a list sorted by descending score. Candidates arrive in
    /// increasing index order, so an equal score is placed after the existing ones: ties keep
    /// the lower index, and -inf candidates still fill free slots.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Insert(float score, int index, Span<float> scores, Span<int> indices, ref int count)
    {
        int capacity = scores.Length;
        if (count == capacity && !(score > scores[capacity - 1])) return;
        int pos = count < capacity ? count++ : capacity - 1;
        while (pos > 0 && score > scores[pos - 1])
        {
            scores[pos] = scores[pos - 1];
            indices[pos] = indices[pos - 1];
            pos--;
        }
        scores[pos] = score;
        indices[pos] = index;
    }
}
