using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.Mla;

namespace DeepKernels.Tests.Mla;

public class MlaAttentionTests
{
    private static readonly MlaConfig Small = new() { HiddenSize = 64, NumHeads = 4, QLoraRank = 32 };

    private static float[] W(int n, int fanIn, Random rng) => MlaReference.Random(n, rng, Math.Sqrt(3.0 / fanIn));

    private static MlaWeights RandomWeights(MlaConfig c, Random rng) => new()
    {
        QAProj = W(c.QLoraRank * c.HiddenSize, c.HiddenSize, rng),
        QANorm = MlaReference.Random(c.QLoraRank, rng, 0.5).Select(x => x + 1).ToArray(),
        QBProj = W(c.NumHeads * c.QHeadDim * c.QLoraRank, c.QLoraRank, rng),
        KvAProj = W(576 * c.HiddenSize, c.HiddenSize, rng),
        KvANorm = MlaReference.Random(512, rng, 0.5).Select(x => x + 1).ToArray(),
        KvBProj = W(c.NumHeads * 256 * 512, 512, rng),
        OProj = W(c.HiddenSize * c.NumHeads * 128, c.NumHeads * 128, rng),
    };

    // ---- float64 reference, written from the DeepSeek-V3 definitions ----

    private static double[] Linear(double[] x, float[]? w, int n, int k)
    {
        var y = new double[n];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++) y[i] += w![i * k + j] * x[j];
        return y;
    }

    private static void Rms(Span<double> x, float[] w, double eps)
    {
        double ms = 0;
        foreach (double v in x) ms += v * v;
        double inv = 1 / Math.Sqrt(ms / x.Length + eps);
        for (int i = 0; i < x.Length; i++) x[i] = x[i] * inv * w[i];
    }

    /// <summary>YaRN inverse frequencies for V3 (dim 64, theta 1e4, factor 40, orig 4096, beta 32/1).</summary>
    private static double[] YarnInvFreq()
    {
        static double Corr(double rot) => 64 * Math.Log(4096 / (rot * 2 * Math.PI)) / (2 * Math.Log(10000));
        double low = Math.Max(Math.Floor(Corr(32)), 0), high = Math.Min(Math.Ceiling(Corr(1)), 63);
        var f = new double[32];
        for (int i = 0; i < 32; i++)
        {
            double extra = Math.Pow(10000, -2.0 * i / 64), inter = extra / 40;
            double mask = 1 - Math.Clamp((i - low) / (high - low), 0, 1);
            f[i] = inter * (1 - mask) + extra * mask;
        }
        return f;
    }

    /// <summary>The Hugging Face layout: de-interleave the pairs, then rotate_half. Differs from ours by a permutation.</summary>
    private static double[] RopeHf(ReadOnlySpan<double> x, int pos)
    {
        var f = YarnInvFreq();
        var y = new double[64];
        for (int i = 0; i < 32; i++)
        {
            double c = Math.Cos(pos * f[i]), s = Math.Sin(pos * f[i]);
            y[i] = x[2 * i] * c - x[2 * i + 1] * s;
            y[32 + i] = x[2 * i + 1] * c + x[2 * i] * s;
        }
        return y;
    }

    private sealed class RefSeq
    {
        public readonly List<double[]> CKv = [];
        public readonly List<double[]> KPe = [];
    }

    private static double Bf(double v) => BFloat16.ToSingle(BFloat16.ToRaw((float)v));

    /// <summary>Reference decode step: new tokens of each sequence, attention over history (causal), output projection.</summary>
    private static double[] ReferenceStep(MlaConfig c, MlaWeights w, List<RefSeq> seqs, float[] hidden, int sQ)
    {
        int h = c.NumHeads, H = c.HiddenSize;
        double scale = Math.Pow(192, -0.5) * Math.Pow(0.1 * Math.Log(40) + 1, 2);
        var y = new double[seqs.Count * sQ * H];
        var qs = new List<(int B, int Pos, double[] Q)>();
        for (int b = 0; b < seqs.Count; b++)
        {
            for (int s = 0; s < sQ; s++)
            {
                var x = hidden.AsSpan((b * sQ + s) * H, H).ToArray().Select(v => (double)v).ToArray();
                var qa = Linear(x, w.QAProj!, c.QLoraRank, H);
                Rms(qa, w.QANorm!, c.RmsNormEps);
                var q = Linear(qa, w.QBProj, h * 192, c.QLoraRank);
                var kv = Linear(x, w.KvAProj, 576, H);
                Rms(kv.AsSpan(0, 512), w.KvANorm, c.RmsNormEps);
                int pos = seqs[b].CKv.Count;
                seqs[b].CKv.Add(kv[..512].Select(Bf).ToArray());
                seqs[b].KPe.Add(RopeHf(kv.AsSpan(512), pos).Select(Bf).ToArray());
                qs.Add((b, pos, q));
            }
        }
        for (int i = 0; i < qs.Count; i++)
        {
            var (b, pos, q) = qs[i];
            var seq = seqs[b];
            var attn = new double[h * 128];
            for (int head = 0; head < h; head++)
            {
                var qPe = RopeHf(q.AsSpan(head * 192 + 128, 64), pos);
                int wk = head * 256 * 512, wv = wk + 128 * 512;
                var scores = new double[pos + 1];
                var vals = new double[pos + 1][];
                for (int t = 0; t <= pos; t++)
                {
                    double dot = 0;
                    vals[t] = new double[128];
                    for (int d = 0; d < 128; d++)
                    {
                        double k = 0, v = 0;
                        for (int e = 0; e < 512; e++)
                        {
                            k += w.KvBProj[wk + d * 512 + e] * seq.CKv[t][e];
                            v += w.KvBProj[wv + d * 512 + e] * seq.CKv[t][e];
                        }
                        dot += q[head * 192 + d] * k;
                        vals[t][d] = v;
                    }
                    for (int d = 0; d < 64; d++) dot += qPe[d] * seq.KPe[t][d];
                    scores[t] = dot * scale;
                }
                double max = scores.Max(), sum = scores.Sum(z => Math.Exp(z - max));
                for (int t = 0; t <= pos; t++)
                    for (int d = 0; d < 128; d++) attn[head * 128 + d] += Math.Exp(scores[t] - max) / sum * vals[t][d];
            }
            Linear(attn, w.OProj!, H, h * 128).CopyTo(y.AsSpan(i * H));
        }
        return y;
    }

    [TestCase(false)]
    [TestCase(true)]
    public void DecodeStepsMatchFloat64MultiHeadAttention(bool fp8Weights)
    {
        var c = Small;
        var rng = new Random(7);
        var w = RandomWeights(c, rng);
        var refWeights = w;
        if (fp8Weights)
        {
            // FP8 block-scaled projections through Fp8Gemm; the reference uses their exact dequantized values.
            w = w.WithFp8Projections(c);
            refWeights = new MlaWeights
            {
                QAProj = w.QAProjFp8!.Dequantize(c.QLoraRank, c.HiddenSize),
                QANorm = w.QANorm,
                QBProj = w.QBProjFp8!.Dequantize(c.NumHeads * c.QHeadDim, c.QLoraRank),
                KvAProj = w.KvAProjFp8!.Dequantize(576, c.HiddenSize),
                KvANorm = w.KvANorm,
                KvBProj = w.KvBProj,
                OProj = w.OProjFp8!.Dequantize(c.HiddenSize, c.NumHeads * 128),
            };
            Assert.That(w.QBProj, Is.Null);
        }
        var layer = new MlaAttention(c, w);
        using var cache = new PagedLatentCache(CpuBackend.Default, 8, 16);
        int[] seqs = [cache.Allocator.CreateSequence(), cache.Allocator.CreateSequence()];
        var refSeqs = new List<RefSeq> { new(), new() };
        foreach (int sQ in new[] { 1, 3, 1, 2 })
        {
            var hidden = MlaReference.Random(seqs.Length * sQ * c.HiddenSize, rng);
            var step = MlaDecodeStep.Begin(cache.Allocator, seqs, sQ, 3);
            var output = new float[hidden.Length];
            layer.Forward(step, cache, hidden, output);
            var expected = ReferenceStep(c, refWeights, refSeqs, hidden, sQ);
            double diff = MlaReference.CalcDiff(output.Select(v => (double)v).ToArray(), expected);
            if (fp8Weights)
            {
                // Activations are quantized to FP8 (per 1x128 group) before each of the four projections,
                // ~3.6% rms relative error each, i.e. a calc_diff of ~6.5e-4 per quantization; three
                // sit in series (x -> q_a -> q_b, attn -> o_proj), so ~2e-3 is expected. A wrong scale or
                // layout would give calc_diff ~ 1.
                Assert.That(diff, Is.LessThan(5e-3), $"s_q = {sQ}");
                Assert.That(diff, Is.GreaterThan(1e-7), "activations really are quantized");
            }
            else
            {
                Assert.That(diff, Is.LessThan(1e-5), $"s_q = {sQ}");
                MlaReference.AssertClose(output, expected, $"step with s_q = {sQ}");
            }
        }
        Assert.That(cache.Allocator.Length(seqs[0]), Is.EqualTo(7));
    }

    [Test]
    public void SoftmaxScaleAndYarnFrequenciesMatchDeepSeekV3()
    {
        Assert.That(MlaConfig.DeepSeekV3.SoftmaxScale, Is.EqualTo(0.1352338f).Within(1e-7));
        Assert.That(new MlaConfig { RopeScaling = YarnScaling.None }.SoftmaxScale, Is.EqualTo((float)Math.Pow(192, -0.5)).Within(1e-8));
        var rope = new YarnRope(64, 10000, YarnScaling.DeepSeekV3);
        var expected = YarnInvFreq();
        for (int i = 0; i < 32; i++) Assert.That(rope.InverseFrequencies[i], Is.EqualTo(expected[i]).Within(1e-15), $"pair {i}");
        Assert.That(rope.InverseFrequencies[0], Is.EqualTo(1.0), "fastest pair is extrapolated");
        Assert.That(rope.InverseFrequencies[31], Is.EqualTo(Math.Pow(10000, -62.0 / 64) / 40).Within(1e-15), "slowest pair is interpolated");
    }

    [Test]
    public void RopeRotatesInterleavedPairsAndPreservesDotProductsUnderShift()
    {
        var rope = new YarnRope(64, 10000, YarnScaling.DeepSeekV3);
        var rng = new Random(5);
        var q = MlaReference.Random(64, rng);
        var k = MlaReference.Random(64, rng);
        double Dot(int pq, int pk)
        {
            var a = (float[])q.Clone();
            var b = (float[])k.Clone();
            rope.Apply(a, pq);
            rope.Apply(b, pk);
            return a.Zip(b, (x, y) => (double)x * y).Sum();
        }
        Assert.That(Dot(1000, 990), Is.EqualTo(Dot(20, 10)).Within(1e-4), "depends on the distance only");
        var x0 = (float[])q.Clone();
        rope.Apply(x0, 7);
        var hf = RopeHf(q.Select(v => (double)v).ToArray(), 7);
        for (int i = 0; i < 32; i++)
        {
            Assert.That(x0[2 * i], Is.EqualTo(hf[i]).Within(1e-5), $"pair {i} first");
            Assert.That(x0[2 * i + 1], Is.EqualTo(hf[32 + i]).Within(1e-5), $"pair {i} second");
        }
    }

    [Test]
    public void WrongWeightShapesAreRejected()
    {
        var w = RandomWeights(Small, new Random(1));
        var bad = new MlaWeights { QAProj = w.QAProj, QANorm = w.QANorm, QBProj = w.QBProj, KvAProj = w.KvAProj, KvANorm = w.KvANorm, KvBProj = w.KvBProj[1..], OProj = w.OProj };
        Assert.That(Assert.Throws<ArgumentException>(() => _ = new MlaAttention(Small, bad))!.Message, Does.Contain("KvBProj"));
        Assert.Throws<ArgumentException>(() => _ = new MlaAttention(Small with { KvLoraRank = 256 }, w));
    }
}
