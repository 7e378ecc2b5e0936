using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Moe;

public class MoeRouterTests
{
    private static float Sigmoid(float x) => 1f / (1f + MathF.Exp(-x));

    private static (int[] Ids, float[] Weights) Route(float[] logits, int e, float[]? bias, MoeRouterConfig config)
    {
        int t = logits.Length / e;
        var ids = new int[t * config.TopK];
        var w = new float[t * config.TopK];
        MoeRouting.Route(logits, e, bias ?? [], config, ids, w);
        return (ids, w);
    }

    // Plain reference: sorts instead of inserting. Scores are computed in float exactly as the
    // contract states them, so near-ties cannot flip between reference and implementation.
    private static (int[] Ids, double[] Weights) Reference(float[] logits, int e, float[]? bias, MoeRouterConfig c)
    {
        int t = logits.Length / e, k = c.TopK, per = e / c.NGroup;
        var ids = new int[t * k];
        var weights = new double[t * k];
        for (int tok = 0; tok < t; tok++)
        {
            var row = logits.Skip(tok * e).Take(e).ToArray();
            float[] s;
            if (c.Scoring == MoeScoring.Sigmoid) s = row.Select(Sigmoid).ToArray();
            else
            {
                double max = row.Max();
                var ex = row.Select(x => Math.Exp(x - max)).ToArray();
                s = ex.Select(v => (float)(v / ex.Sum())).ToArray();
            }
            var choice = s.Select((v, i) => bias is null ? v : v + bias[i]).ToArray();
            bool useMax = c.GroupScore == MoeGroupScore.Max || (c.GroupScore == MoeGroupScore.Auto && c.Scoring == MoeScoring.Softmax && bias is null);
            var groupScores = Enumerable.Range(0, c.NGroup).Select(g =>
            {
                var top = choice.Skip(g * per).Take(per).OrderByDescending(v => v).ToArray();
                return useMax || per == 1 ? top[0] : top[0] + top[1];
            }).ToArray();
            var kept = Enumerable.Range(0, c.NGroup).OrderByDescending(g => groupScores[g]).ThenBy(g => g).Take(c.TopKGroup).ToHashSet();
            var chosen = Enumerable.Range(0, e).Where(i => kept.Contains(i / per)).OrderByDescending(i => choice[i]).ThenBy(i => i).Take(k).ToArray();
            double sum = chosen.Sum(i => (double)s[i]);
            for (int j = 0; j < k; j++)
            {
                ids[tok * k + j] = chosen[j];
                weights[tok * k + j] = (c.NormTopKProb ? s[chosen[j]] / (sum + 1e-20) : s[chosen[j]]) * c.RoutedScalingFactor;
            }
        }
        return (ids, weights);
    }

    [Test]
    public void BiasChangesChoiceButNotWeights()
    {
        float[] logits = [0f, 1f, 2f, 3f];
        var config = new MoeRouterConfig { TopK = 2, NormTopKProb = false, RoutedScalingFactor = 2f };
        var (ids, w) = Route(logits, 4, null, config);
        Assert.That(ids, Is.EqualTo(new[] { 3, 2 }));
        Assert.That(w, Is.EqualTo(new[] { 2 * Sigmoid(3), 2 * Sigmoid(2) }).Within(1e-6));

        var (bIds, bW) = Route(logits, 4, [10f, 0f, 0f, 0f], config);
        Assert.That(bIds, Is.EqualTo(new[] { 0, 3 }), "the bias lifts expert 0 into the top 2");
        Assert.That(bW, Is.EqualTo(new[] { 2 * Sigmoid(0), 2 * Sigmoid(3) }).Within(1e-6), "weights ignore the bias");
    }

    [Test]
    public void ExpertOutsideTopGroupsIsNeverChosenAndTiesGoLow()
    {
        // Groups of 2: g0 = {5, -10} has the best single expert but a weak top-2 sum.
        float[] logits = [5f, -10f, 1f, 1f, 0.9f, 0.9f, -5f, -5f];
        var config = new MoeRouterConfig { NGroup = 4, TopKGroup = 2, TopK = 3, NormTopKProb = true };
        var (ids, w) = Route(logits, 8, null, config);
        Assert.That(ids, Is.EqualTo(new[] { 2, 3, 4 }));
        double sum = 2 * Sigmoid(1) + Sigmoid(0.9f);
        Assert.That(w, Is.EqualTo(new[] { Sigmoid(1) / sum, Sigmoid(1) / sum, Sigmoid(0.9f) / sum }).Within(1e-6));
    }

    [Test]
    public void AllEqualLogitsPickLowestGroupsAndExperts()
    {
        var config = new MoeRouterConfig { NGroup = 4, TopKGroup = 2, TopK = 4, RoutedScalingFactor = 1f };
        var (ids, w) = Route(new float[16], 16, null, config);
        Assert.That(ids, Is.EqualTo(new[] { 0, 1, 2, 3 }));
        Assert.That(w, Is.All.EqualTo(0.25f).Within(1e-7));
    }

    [Test]
    public void GroupTieGoesToLowerGroup()
    {
        // g1 and g2 tie exactly; k = 1 from one kept group must come from g1.
        float[] logits = [-3f, -3f, 2f, 1f, 2f, 1f, -4f, -4f];
        var config = new MoeRouterConfig { NGroup = 4, TopKGroup = 1, TopK = 2 };
        var (ids, _) = Route(logits, 8, null, config);
        Assert.That(ids, Is.EqualTo(new[] { 2, 3 }));
    }

    [Test]
    public void SoftmaxScoringUsesGroupMaxWithoutBias()
    {
        // g0 = {3, -10} has the max; g1 = {2.8, 2.8} has the larger top-2 sum.
        float[] logits = [3f, -10f, 2.8f, 2.8f];
        double z = Math.Exp(3) + Math.Exp(-10) + 2 * Math.Exp(2.8);
        var auto = new MoeRouterConfig { Scoring = MoeScoring.Softmax, NGroup = 2, TopKGroup = 1, TopK = 1, NormTopKProb = false };
        var (ids, w) = Route(logits, 4, null, auto);
        Assert.That(ids, Is.EqualTo(new[] { 0 }));
        Assert.That(w[0], Is.EqualTo(Math.Exp(3) / z).Within(1e-6), "V2: softmax probability, not renormalised");

        var (sumIds, sumW) = Route(logits, 4, null, auto with { GroupScore = MoeGroupScore.Top2Sum });
        Assert.That(sumIds, Is.EqualTo(new[] { 2 }));
        Assert.That(sumW[0], Is.EqualTo(Math.Exp(2.8) / z).Within(1e-6));

        var (biasIds, _) = Route(logits, 4, [0f, 0f, 0f, 0f], auto);
        Assert.That(biasIds, Is.EqualTo(new[] { 2 }), "with a bias Auto means top-2 sum");
    }

    [Test]
    public void NormalisationOnAndOff()
    {
        float[] logits = [0.5f, -1f, 2f, 0f, 1f, -2f];
        var on = new MoeRouterConfig { TopK = 3, NormTopKProb = true, RoutedScalingFactor = 2.5f };
        var (ids, w) = Route(logits, 6, null, on);
        Assert.That(ids, Is.EqualTo(new[] { 2, 4, 0 }));
        Assert.That(w.Sum(), Is.EqualTo(2.5f).Within(1e-5));
        double sum = Sigmoid(2) + Sigmoid(1) + Sigmoid(0.5f);
        Assert.That(w[1], Is.EqualTo(2.5 * Sigmoid(1) / sum).Within(1e-6));

        var (_, raw) = Route(logits, 6, null, on with { NormTopKProb = false, RoutedScalingFactor = 1f });
        Assert.That(raw, Is.EqualTo(new[] { Sigmoid(2), Sigmoid(1), Sigmoid(0.5f) }).Within(1e-7));
    }

    [Test]
    public void NaNLogitsAreNeverPreferredAndAllNaNRowGivesZeroWeights()
    {
        var config = new MoeRouterConfig { NGroup = 2, TopKGroup = 1, TopK = 2 };
        float[] logits = [float.NaN, 1f, -1f, float.NaN, /* all NaN */ float.NaN, float.NaN, float.NaN, float.NaN];
        var (ids, w) = Route(logits, 4, null, config);
        // Token 0: g0 = {NaN, 1} top-2 sum is -inf; g1 = {-1, NaN} too; tie -> g0; then 1 before the NaN.
        Assert.That(ids.AsSpan(0, 2).ToArray(), Is.EqualTo(new[] { 1, 0 }));
        Assert.That(w[0], Is.EqualTo(1f).Within(1e-6));
        Assert.That(w[1], Is.EqualTo(0f));
        Assert.That(ids.AsSpan(2, 2).ToArray(), Is.EqualTo(new[] { 0, 1 }));
        Assert.That(w.AsSpan(2, 2).ToArray(), Is.EqualTo(new[] { 0f, 0f }));

        var (sIds, sW) = Route(logits, 4, null, new MoeRouterConfig { Scoring = MoeScoring.Softmax, TopK = 2 });
        Assert.That(sIds.AsSpan(0, 2).ToArray(), Is.EqualTo(new[] { 1, 2 }));
        Assert.That(sW.All(float.IsFinite));
        Assert.That(sW.AsSpan(2, 2).ToArray(), Is.EqualTo(new[] { 0f, 0f }));
    }

    [TestCase(1)]
    [TestCase(5)]
    [TestCase(300)]
    public void RandomDeepSeekV3CasesMatchReference(int tokens)
    {
        const int e = 256;
        var rng = new Random(tokens);
        var logits = Enumerable.Range(0, tokens * e).Select(_ => (float)(rng.NextDouble() * 8 - 4)).ToArray();
        var bias = Enumerable.Range(0, e).Select(_ => (float)(rng.NextDouble() * 0.2 - 0.1)).ToArray();
        var config = MoeRouterConfig.DeepSeekV3;
        var (refIds, refW) = Reference(logits, e, bias, config);
        var (ids, w) = Route(logits, e, bias, config);
        Assert.That(ids, Is.EqualTo(refIds));
        Assert.That(w, Is.EqualTo(refW).Within(1e-5));

        // Backend API (parallel over tokens at T = 300) gives the same bits as the span API.
        var backend = new CpuBackend();
        using var logitsBuf = backend.Upload<float>(logits, DType.Float32, tokens, e);
        using var biasBuf = backend.Upload<float>(bias, DType.Float32, e);
        using var idsBuf = backend.Allocate(DType.Int32, tokens, 8);
        using var wBuf = backend.Allocate(DType.Float32, tokens, 8);
        MoeRouting.Route(backend, logitsBuf, biasBuf.View, config, idsBuf, wBuf);
        Assert.That(backend.Download<int>(idsBuf), Is.EqualTo(ids));
        Assert.That(backend.Download<float>(wBuf), Is.EqualTo(w));

        // Without bias and with softmax too.
        var v2 = config with { Scoring = MoeScoring.Softmax, NormTopKProb = false, RoutedScalingFactor = 1f };
        var (refIds2, refW2) = Reference(logits, e, null, v2);
        var (ids2, w2) = Route(logits, e, null, v2);
        Assert.That(ids2, Is.EqualTo(refIds2));
        Assert.That(w2, Is.EqualTo(refW2).Within(1e-6));
    }

    [Test]
    public void BFloat16LogitsMatchFloatLogits()
    {
        const int e = 64, t = 70;
        var rng = new Random(3);
        var bf = Enumerable.Range(0, t * e).Select(_ => (BFloat16)(float)(rng.NextDouble() * 6 - 3)).ToArray();
        var asFloat = bf.Select(v => v.ToSingle()).ToArray();
        var config = new MoeRouterConfig { NGroup = 4, TopKGroup = 2, TopK = 6 };
        var (ids, w) = Route(asFloat, e, null, config);
        var bIds = new int[t * 6];
        var bW = new float[t * 6];
        MoeRouting.Route(bf, e, [], config, bIds, bW);
        Assert.That(bIds, Is.EqualTo(ids));
        Assert.That(bW, Is.EqualTo(w));

        var backend = new CpuBackend();
        using var logitsBuf = backend.Upload<BFloat16>(bf, DType.BFloat16, t, e);
        using var idsBuf = backend.Allocate(DType.Int32, t, 6);
        using var wBuf = backend.Allocate(DType.Float32, t, 6);
        MoeRouting.Route(backend, logitsBuf, null, config, idsBuf, wBuf);
        Assert.That(backend.Download<int>(idsBuf), Is.EqualTo(ids));
        Assert.That(backend.Download<float>(wBuf), Is.EqualTo(w));
    }

    private static IEnumerable<TestCaseData> BadConfigs()
    {
        yield return new TestCaseData(16, new MoeRouterConfig { TopK = 17 }, "TopK").SetName("k > E");
        yield return new TestCaseData(32, new MoeRouterConfig { TopK = 17 }, "TopK").SetName("k > 16");
        yield return new TestCaseData(16, new MoeRouterConfig { NGroup = 4, TopKGroup = 5 }, "TopKGroup").SetName("topk_group > n_group");
        yield return new TestCaseData(18, new MoeRouterConfig { NGroup = 4 }, "NGroup").SetName("E not divisible by n_group");
        yield return new TestCaseData(16, new MoeRouterConfig { NGroup = 4, TopKGroup = 1, TopK = 5 }, "TopK").SetName("k beyond kept groups");
        yield return new TestCaseData(1024, new MoeRouterConfig(), "numExperts").SetName("E > 512");
        yield return new TestCaseData(16, new MoeRouterConfig { RoutedScalingFactor = float.NaN }, "RoutedScalingFactor").SetName("NaN scaling");
    }

    [TestCaseSource(nameof(BadConfigs))]
    public void BadConfigThrowsBeforeWriting(int e, MoeRouterConfig config, string param)
    {
        var ids = new int[config.TopK];
        ids.AsSpan().Fill(-7);
        var ex = Assert.Throws(Is.InstanceOf<ArgumentException>(), () => MoeRouting.Route(new float[e], e, [], config, ids, new float[config.TopK]));
        Assert.That(((ArgumentException)ex!).ParamName, Is.EqualTo(param));
        Assert.That(ids, Is.All.EqualTo(-7));
    }

    [Test]
    public void BadTensorsThrow()
    {
        var backend = new CpuBackend();
        var config = new MoeRouterConfig { TopK = 2 };
        using var logits = backend.Allocate(DType.Float32, 3, 8);
        backend.Zero(logits);
        using var ids = backend.Allocate(DType.Int32, 3, 2);
        using var w = backend.Allocate(DType.Float32, 3, 2);
        using var shortIds = backend.Allocate(DType.Int32, 3, 3);
        using var badBias = backend.Upload<float>([0, 0, 0, float.PositiveInfinity, 0, 0, 0, 0], DType.Float32, 8);
        using var int64Ids = backend.Allocate(DType.Int64, 3, 2);
        Assert.Throws<ArgumentException>(() => MoeRouting.Route(backend, logits, null, config, shortIds, w));
        Assert.Throws<ArgumentException>(() => MoeRouting.Route(backend, logits, null, config, int64Ids, w));
        Assert.Throws<ArgumentException>(() => MoeRouting.Route(backend, logits, badBias.View, config, ids, w));
        Assert.Throws<ArgumentException>(() => MoeRouting.Route(new float[8], 8, [0f, 1f], config, new int[2], new float[2]));
        Assert.Throws<ArgumentException>(() => MoeRouting.Route(new float[9], 8, [], config, new int[2], new float[2]));
    }
}
