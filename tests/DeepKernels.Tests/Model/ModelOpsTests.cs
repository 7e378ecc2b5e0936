using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Mla;
using DeepKernels.Model.Config;
using DeepKernels.Ops.Activation;
using DeepKernels.Ops.Embedding;
using DeepKernels.Ops.Norm;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Model;

/// <summary>RMSNorm, SiLU-and-mul, embedding lookup and YaRN RoPE against float64 references.</summary>
public class ModelOpsTests
{
    private static float[] Random(int n, int seed, double scale = 1)
    {
        var rng = new Random(seed);
        var x = new float[n];
        for (int i = 0; i < n; i++) x[i] = (float)((rng.NextDouble() * 2 - 1) * scale);
        return x;
    }

    [TestCase(1, 128, true)]
    [TestCase(5, 1000, false)]
    [TestCase(9, 7168, true)]
    public void RmsNormMatchesFloat64(int rows, int h, bool bf16Weight)
    {
        var x = Random(rows * h, 1, 3);
        var wf = Random(h, 2);
        var wb = wf.Select(v => (BFloat16)v).ToArray();
        float eps = 1e-6f;
        var expected = new double[rows * h];
        for (int r = 0; r < rows; r++)
        {
            double ss = 0;
            for (int i = 0; i < h; i++) ss += (double)x[r * h + i] * x[r * h + i];
            double inv = 1 / Math.Sqrt(ss / h + eps);
            for (int i = 0; i < h; i++) expected[r * h + i] = x[r * h + i] * inv * (bf16Weight ? (double)(float)wb[i] : wf[i]);
        }
        var span = new float[rows * h];
        if (bf16Weight) RmsNorm.Apply(x, wb, eps, span); else RmsNorm.Apply(x, wf, eps, span);
        using var backend = new CpuBackend();
        using var input = backend.Upload<float>(x, DType.Float32, rows, h);
        using var weight = bf16Weight ? backend.Upload<BFloat16>(wb, DType.BFloat16, h) : backend.Upload<float>(wf, DType.Float32, h);
        RmsNorm.Apply(backend, input, weight, eps, input); // in place
        var viaBackend = backend.Download<float>(input);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.That(span[i], Is.EqualTo(expected[i]).Within(1e-5 + 1e-5 * Math.Abs(expected[i])), $"span [{i}]");
            Assert.That(viaBackend[i], Is.EqualTo(expected[i]).Within(1e-5 + 1e-5 * Math.Abs(expected[i])), $"backend [{i}]");
        }
    }

    [Test]
    public void RmsNormRejectsBadArguments()
    {
        using var backend = new CpuBackend();
        using var x = backend.Allocate(DType.Float32, 2, 8);
        using var w = backend.Allocate(DType.Float32, 7);
        var e = Assert.Throws<ArgumentException>(() => RmsNorm.Apply(backend, x, w, 1e-6f, x))!;
        Assert.That(e.ParamName, Is.EqualTo("weight"));
        using var w8 = backend.Allocate(DType.Float32, 8);
        Assert.Throws<ArgumentOutOfRangeException>(() => RmsNorm.Apply(backend, x, w8, 0f, x));
        Assert.Throws<ArgumentException>(() => RmsNorm.Apply(new float[10], new float[4], 1e-6f, new float[10]));
    }

    [TestCase(1, 256)]
    [TestCase(3, 1000)]
    public void SiluAndMulMatchesFloat64(int rows, int inter)
    {
        var gu = Random(rows * 2 * inter, 3, 6);
        var expected = new double[rows * inter];
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < inter; i++)
            {
                double g = gu[r * 2 * inter + i], u = gu[r * 2 * inter + inter + i];
                expected[r * inter + i] = g / (1 + Math.Exp(-g)) * u;
            }
        var fused = new float[rows * inter];
        SiluAndMul.ApplyFused(gu, inter, fused);
        using var backend = new CpuBackend();
        using var input = backend.Upload<float>(gu, DType.Float32, rows, 2 * inter);
        using var output = backend.Allocate(DType.Float32, rows, inter);
        SiluAndMul.Apply(backend, input, output);
        var viaBackend = backend.Download<float>(output);
        var separate = new float[inter];
        SiluAndMul.Apply(gu.AsSpan(0, inter), gu.AsSpan(inter, inter), separate);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.That(fused[i], Is.EqualTo(expected[i]).Within(1e-5 + 1e-5 * Math.Abs(expected[i])));
            Assert.That(viaBackend[i], Is.EqualTo(expected[i]).Within(1e-5 + 1e-5 * Math.Abs(expected[i])));
            if (i < inter) Assert.That(separate[i], Is.EqualTo(expected[i]).Within(1e-5 + 1e-5 * Math.Abs(expected[i])));
        }
        using var odd = backend.Allocate(DType.Float32, rows, 3);
        Assert.Throws<ArgumentException>(() => SiluAndMul.Apply(backend, odd, output));
    }

    [Test]
    public void EmbeddingGathersExactRowsAndValidatesIds()
    {
        const int vocab = 50, h = 133;
        var table = Random(vocab * h, 4).Select(v => (BFloat16)v).ToArray();
        int[] ids = [0, 49, 7, 7];
        var span = new float[ids.Length * h];
        EmbeddingLookup.Gather(table, h, ids, span);
        using var backend = new CpuBackend();
        using var t = backend.Upload<BFloat16>(table, DType.BFloat16, vocab, h);
        using var o = backend.Allocate(DType.Float32, ids.Length, h);
        EmbeddingLookup.Gather(backend, t, ids, o);
        var viaBackend = backend.Download<float>(o);
        for (int k = 0; k < ids.Length; k++)
            for (int i = 0; i < h; i++)
            {
                float expected = (float)table[ids[k] * h + i];
                Assert.That(span[k * h + i], Is.EqualTo(expected));
                Assert.That(viaBackend[k * h + i], Is.EqualTo(expected));
            }
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingLookup.Gather(backend, t, [1, 50, 2, 3], o))!;
        Assert.That(e.Message, Does.Contain("ids[1] = 50"));
        Assert.Throws<ArgumentOutOfRangeException>(() => EmbeddingLookup.Gather(table, h, [-1], new float[h]));
    }

    [Test]
    public void YarnFrequenciesFollowTheRampAndPlainRopeIsUnchanged()
    {
        var scaling = new RopeScalingConfig { Factor = 40, OriginalMaxPositionEmbeddings = 4096, BetaFast = 32, BetaSlow = 1, MScale = 1, MScaleAllDim = 1 };
        var yarn = new YarnRope(64, 10000, scaling.ToYarnScaling());
        var plain = new YarnRope(64, 10000, YarnScaling.None);
        // Correction dims for V3: low = floor(64*ln(4096/(32*2pi))/(2 ln 1e4)) = 10, high = ceil(... beta 1 ...) = 23.
        double Corr(double rot) => 64 * Math.Log(4096 / (rot * 2 * Math.PI)) / (2 * Math.Log(10000));
        double low = Math.Floor(Corr(32)), high = Math.Ceiling(Corr(1));
        Assert.That((low, high), Is.EqualTo((10.0, 23.0)));
        for (int i = 0; i < 32; i++)
        {
            double f = Math.Pow(10000, -2.0 * i / 64);
            Assert.That(plain.InverseFrequencies[i], Is.EqualTo(f).Within(1e-15));
            double ramp = Math.Clamp((i - low) / (high - low), 0, 1);
            double expected = f / 40 * ramp + f * (1 - ramp);
            Assert.That(yarn.InverseFrequencies[i], Is.EqualTo(expected).Within(1e-15), $"pair {i}");
        }
        Assert.That(yarn.InverseFrequencies[0], Is.EqualTo(1.0));
        Assert.That(yarn.InverseFrequencies[31], Is.EqualTo(Math.Pow(10000, -62.0 / 64) / 40).Within(1e-15));
        Assert.That(yarn.Magnitude, Is.EqualTo(1.0));

        // Rotation preserves each pair's norm and a relative-position property: <R(p)q, R(p+d)k> depends on d only.
        var cos = new float[32]; var sin = new float[32];
        var q = Random(64, 5); var k = Random(64, 6);
        double Dot(int pq, int pk)
        {
            var a = (float[])q.Clone(); var b = (float[])k.Clone();
            yarn.CosSin(pq, cos, sin); YarnRope.Apply(a, cos, sin);
            yarn.CosSin(pk, cos, sin); YarnRope.Apply(b, cos, sin);
            double s = 0;
            for (int i = 0; i < 64; i++) s += (double)a[i] * b[i];
            return s;
        }
        Assert.That(Dot(100, 103), Is.EqualTo(Dot(7, 10)).Within(1e-4));
        Assert.That(Dot(0, 0), Is.Not.EqualTo(Dot(0, 5)).Within(1e-6));
    }
}
