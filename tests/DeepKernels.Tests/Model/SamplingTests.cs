using DeepKernels.Model.Generation;

namespace DeepKernels.Tests.Model;

public class SamplingTests
{
    [Test]
    public void GreedyIsArgMaxWithTiesToTheLowerIndex()
    {
        Assert.That(TokenSampler.ArgMax([0f, 3f, 1f, 3f]), Is.EqualTo(1));
        Assert.That(TokenSampler.ArgMax([float.NaN, -5f, -5f]), Is.EqualTo(1));
        Assert.That(TokenSampler.ArgMax([float.NegativeInfinity, float.NegativeInfinity]), Is.EqualTo(0));
        var s = new TokenSampler(SamplingOptions.Greedy());
        Assert.That(s.Sample([1f, 2f, 7f, 7f, 0f]), Is.EqualTo(2));
    }

    [Test]
    public void TopPKeepsTheSmallestSetReachingP()
    {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits are ln p)
        float[] logits = [MathF.Log(0.125f), MathF.Log(0.5f), MathF.Log(0.125f), MathF.Log(0.25f)];
        Assert.That(TokenSampler.Nucleus(logits, 1.0, 0.5), Is.EqualTo(new[] { 1 }));
        Assert.That(TokenSampler.Nucleus(logits, 1.0, 0.6), Is.EqualTo(new[] { 1, 3 }));
        Assert.That(TokenSampler.Nucleus(logits, 1.0, 0.75), Is.EqualTo(new[] { 1, 3 }));
        Assert.That(TokenSampler.Nucleus(logits, 1.0, 0.8), Is.EqualTo(new[] { 1, 3, 0 }), "equal probabilities are ordered by id");
        Assert.That(TokenSampler.Nucleus(logits, 1.0, 1.0).Length, Is.EqualTo(4));
        // A sampler with top-p 0.6 never emits ids outside {1, 3}, and emits both.
        var sampler = new TokenSampler(new SamplingOptions { Temperature = 1, TopP = 0.6, Seed = 3 });
        var seen = new HashSet<int>();
        for (int i = 0; i < 400; i++) seen.Add(sampler.Sample(logits));
        Assert.That(seen.OrderBy(x => x), Is.EqualTo(new[] { 1, 3 }));
    }

    [Test]
    public void SamplingFollowsTheSoftmaxAtTheTemperature()
    {
        float[] logits = [0f, 1f, 2f];
        const double t = 0.7;
        var sampler = new TokenSampler(new SamplingOptions { Temperature = t, Seed = 11 });
        var counts = new int[3];
        const int n = 20000;
        for (int i = 0; i < n; i++) counts[sampler.Sample(logits)]++;
        double z = logits.Sum(l => Math.Exp(l / t));
        for (int i = 0; i < 3; i++)
        {
            double p = Math.Exp(logits[i] / t) / z;
            double sigma = Math.Sqrt(p * (1 - p) / n);
            Assert.That(counts[i] / (double)n, Is.EqualTo(p).Within(5 * sigma), $"token {i}");
        }
    }

    [Test]
    public void SameSeedSameTokensDifferentSeedOrStreamDifferentTokens()
    {
        var rng = new Random(1);
        var rows = Enumerable.Range(0, 64).Select(_ => Enumerable.Range(0, 100).Select(_ => (float)rng.NextDouble() * 4).ToArray()).ToArray();
        int[] Run(ulong seed, ulong stream)
        {
            var s = new TokenSampler(new SamplingOptions { Temperature = 1.0, TopP = 0.9, Seed = seed }, stream);
            return rows.Select(r => s.Sample(r)).ToArray();
        }
        Assert.That(Run(5, 0), Is.EqualTo(Run(5, 0)));
        Assert.That(Run(5, 0), Is.Not.EqualTo(Run(6, 0)));
        Assert.That(Run(5, 0), Is.Not.EqualTo(Run(5, 1)));
        // The generator's stream is pinned by our code: the first draws of seed 42 never change.
        var r = new DeterministicRandom(42);
        var first = new[] { r.NextUInt64(), r.NextUInt64() };
        var again = new DeterministicRandom(42);
        Assert.That(new[] { again.NextUInt64(), again.NextUInt64() }, Is.EqualTo(first));
    }

    [Test]
    public void BadOptionsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSampler(new SamplingOptions { Temperature = -1 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSampler(new SamplingOptions { TopP = 0 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSampler(new SamplingOptions { TopP = 1.5 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => new TokenSampler(new SamplingOptions { Temperature = double.NaN }));
        var s = new TokenSampler(new SamplingOptions { Temperature = 1 });
        Assert.Throws<ArgumentException>(() => s.Sample([float.NaN, float.NaN]));
    }
}
