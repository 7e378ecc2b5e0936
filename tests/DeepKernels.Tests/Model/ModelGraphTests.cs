using DeepKernels.Model;
using DeepKernels.Model.Generation;
using DeepKernels.Model.Presets;

namespace DeepKernels.Tests.Model;

/// <summary>The model graph on the tiny preset, CPU backend.</summary>
public class ModelGraphTests
{
    private static float[] Logits(InferenceSession session, int sequence, int[] tokens)
    {
        var logits = new float[session.Model.Config.VocabSize];
        session.Forward([sequence], [tokens], logits);
        return logits;
    }

    [TestCase(false)]
    [TestCase(true)]
    public void OneDecoderLayerMatchesAFloat64Reference(bool moe)
    {
        using var model = TinyModelFixture.OneLayer(moe);
        Assert.That(model.Weights.Layers[0].Moe is not null, Is.EqualTo(moe));
        int[] prompt = [3, 1500, 77, 901, 12];
        using var session = model.CreateSession(1, 16);
        int seq = session.CreateSequence();
        var actual = Logits(session, seq, prompt);
        var expected = new ModelReference(model).LastLogits(prompt);
        double diff = ModelReference.CalcDiff(actual, expected);
        // DESIGN.md's closeness bound for FP8 GEMM chains. Measured: ~1.3e-4 (dense) and ~2.4e-4 (MoE) although the
        // reference mirrors the FP8 activation and BF16 cache roundings; the source of that residual is not yet found.
        Assert.That(diff, Is.LessThan(1e-3), $"calc_diff = {diff:E3}");
        Assert.That(TokenSampler.ArgMax(actual), Is.EqualTo(Array.IndexOf(expected, expected.Max())));
    }

    [Test]
    public void DecodingWithTheCacheMatchesRecomputingTheFullSequence()
    {
        var model = TinyModelFixture.Model;
        int[] tokens = [5, 900, 33, 2047, 64, 1024, 7, 300, 1999, 42];
        using var session = model.CreateSession(8, 32);
        // Incremental: prefill 4 tokens, then one token per step.
        int inc = session.CreateSequence();
        var stepLogits = new List<float[]> { Logits(session, inc, tokens[..4]) };
        for (int t = 4; t < tokens.Length; t++) stepLogits.Add(Logits(session, inc, [tokens[t]]));
        Assert.That(session.Length(inc), Is.EqualTo(tokens.Length));
        // Full recomputation of a few prefixes in fresh sequences.
        foreach (int len in new[] { 4, 7, tokens.Length })
        {
            int fresh = session.CreateSequence();
            var full = Logits(session, fresh, tokens[..len]);
            var incremental = stepLogits[len - 4];
            double diff = ModelReference.CalcDiff(incremental, full.Select(v => (double)v).ToArray());
            Assert.That(diff, Is.LessThan(1e-7), $"prefix {len}: calc_diff = {diff:E3}");
            for (int i = 0; i < full.Length; i++)
                Assert.That(incremental[i], Is.EqualTo(full[i]).Within(1e-3 + 1e-3 * Math.Abs(full[i])), $"prefix {len}, logit {i}");
            session.FreeSequence(fresh);
        }
    }

    [Test]
    public void TheMtpLayerIsRecognisedAndSkipped()
    {
        var model = TinyModelFixture.Model;
        Assert.That(model.Weights.Layers, Has.Count.EqualTo(TinyPreset.Config.NumHiddenLayers));
        Assert.That(model.Weights.SkippedMtpTensors, Is.EqualTo(4), "enorm, hnorm, eh_proj and its scale");
        Assert.That(model.Weights.Bytes, Is.LessThan(model.Weights.Bf16Bytes * 0.6));
    }

    [Test]
    public void SameSeedGivesTheSameTokens()
    {
        var model = TinyModelFixture.Model;
        var options = new SamplingOptions { Temperature = 0.8, TopP = 0.9, Seed = 7, MaxNewTokens = 6 };
        int[][] prompts = [[1, 2, 3, 4]];
        var a = Generator.Generate(model, prompts, options);
        var b = Generator.Generate(model, prompts, options);
        var other = Generator.Generate(model, prompts, options with { Seed = 8 });
        Assert.That(a.Tokens[0], Is.EqualTo(b.Tokens[0]));
        Assert.That(a.Tokens[0], Has.Length.EqualTo(6));
        Assert.That(other.Tokens[0], Is.Not.EqualTo(a.Tokens[0]));
    }

    [TestCase(0.0)]
    [TestCase(1.0)]
    public void ABatchOfPromptsEqualsEachPromptAlone(double temperature)
    {
        var model = TinyModelFixture.Model;
        var options = new SamplingOptions { Temperature = temperature, TopP = 0.95, Seed = 3, MaxNewTokens = 5 };
        int[][] prompts = [[10, 20, 30, 40, 50, 60, 70], [999], [5, 6, 7]];
        var batch = Generator.Generate(model, prompts, options);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = Generator.Generate(model, [prompts[i]], options, streams: [(ulong)i]);
            Assert.That(batch.Tokens[i], Is.EqualTo(alone.Tokens[0]), $"prompt {i}");
        }
    }

    [Test]
    public void GenerationStopsAtEndOfSequence()
    {
        var model = TinyModelFixture.Model;
        int[][] prompts = [[8, 9, 10]];
        var free = Generator.Generate(model, prompts, SamplingOptions.Greedy(4));
        int stopAt = free.Tokens[0][1];
        var stopped = Generator.Generate(model, prompts, SamplingOptions.Greedy(4) with { EosTokenIds = [stopAt] });
        Assert.That(stopped.Tokens[0], Is.EqualTo(free.Tokens[0][..(Array.IndexOf(free.Tokens[0], stopAt) + 1)]));
        Assert.That(stopped.FinishReasons[0], Is.EqualTo(FinishReason.EndOfSequence));
        Assert.That(free.FinishReasons[0], Is.EqualTo(FinishReason.Length));
    }

    [Test]
    public void PoolAllocationCountStaysFlatOver32DecodeSteps()
    {
        var model = TinyModelFixture.Model;
        var result = Generator.Generate(model, [[1, 2, 3], [4, 5]], SamplingOptions.Greedy(33));
        Assert.That(result.DecodeSteps, Is.EqualTo(32));
        var counts = result.PoolAllocationsPerStep;
        Assert.That(counts, Has.Count.EqualTo(32));
        Assert.That(counts.Distinct().Count(), Is.EqualTo(1), $"allocation counts per step: {string.Join(",", counts)}");
    }

    [Test]
    public void BadRequestsAreRejectedBeforeTouchingTheCache()
    {
        var model = TinyModelFixture.Model;
        using var session = model.CreateSession(1, 8);
        int seq = session.CreateSequence();
        var logits = new float[model.Config.VocabSize];
        Assert.Throws<ArgumentOutOfRangeException>(() => session.Forward([seq], [[model.Config.VocabSize]], logits));
        Assert.Throws<ArgumentException>(() => session.Forward([seq], [new int[9]], logits));
        Assert.Throws<ArgumentException>(() => session.Forward([seq], [[1]], new float[3]));
        Assert.That(session.Length(seq), Is.Zero);
        Assert.Throws<ArgumentException>(() => Generator.Generate(model, [[]], SamplingOptions.Greedy()));
    }
}
