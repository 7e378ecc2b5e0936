using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Ops;

public class ActivationQuantizationTests
{
    // Plain float64 reference of the contract: scale = max(amax, 1e-4)/448 over finite values.
    private static (double[] Dequantized, double[] Scales) Reference(float[] x, int k)
    {
        int rows = x.Length / k, groups = (k + 127) / 128;
        var deq = new double[x.Length];
        var scales = new double[rows * groups];
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < groups; g++)
            {
                double amax = 0;
                for (int i = g * 128; i < Math.Min(k, g * 128 + 128); i++)
                    if (double.IsFinite(x[r * k + i])) amax = Math.Max(amax, Math.Abs((double)x[r * k + i]));
                double scale = (float)(Math.Max(amax, 1e-4f) / 448.0);
                scales[r * groups + g] = scale;
                for (int i = g * 128; i < Math.Min(k, g * 128 + 128); i++)
                    deq[r * k + i] = x[r * k + i] / scale;
            }
        return (deq, scales);
    }

    [TestCase(1, 128)]
    [TestCase(3, 300)]
    [TestCase(2, 7168)]
    [TestCase(5, 1)]
    public void MatchesFloat64Reference(int rows, int k)
    {
        var rng = new Random(rows * 1000 + k);
        var x = new float[rows * k];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 3)));
        if (k > 10) { x[3] = float.NaN; x[5] = 0; }
        if (k >= 300) for (int i = 128; i < 256; i++) x[i] = 0; // an all-zero group
        int groups = ActivationQuantization.GroupCount(k);
        var q = new Float8E4M3[x.Length];
        var s = new float[rows * groups];
        ActivationQuantization.Quantize(x, k, q, s);
        var (scaled, refScales) = Reference(x, k);
        for (int i = 0; i < s.Length; i++) Assert.That((double)s[i], Is.EqualTo(refScales[i]), $"scale {i}");
        for (int i = 0; i < x.Length; i++)
        {
            if (float.IsNaN(x[i])) { Assert.That(q[i].IsNaN, $"element {i} NaN"); continue; }
            double v = q[i].ToSingle(), target = scaled[i];
            Assert.That(Math.Abs(target), Is.LessThanOrEqualTo(448.0 * (1 + 1e-6)));
            // Nearest representable: within half the E4M3 spacing at |target| (2^-9 for subnormals).
            double spacing = Math.Abs(target) < 1.0 / 64 ? 1.0 / 512 : Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(target))) - 3);
            Assert.That(Math.Abs(v - target), Is.LessThanOrEqualTo(spacing / 2 * (1 + 1e-9)), $"element {i}: {x[i]}");
        }
    }

    [Test]
    public void AmaxElementQuantizesToExactly448()
    {
        var x = new float[128];
        x[0] = 3.5f; x[1] = -1.25f;
        var q = new Float8E4M3[128];
        var s = new float[1];
        ActivationQuantization.Quantize(x, 128, q, s);
        Assert.That(q[0].ToSingle(), Is.EqualTo(448f));
        Assert.That(s[0], Is.EqualTo(3.5f / 448f));
    }

    [Test]
    public void AllZeroGroupGetsMinimumScaleAndZeros()
    {
        var q = new Float8E4M3[256];
        var s = new float[2];
        ActivationQuantization.Quantize(new float[256], 256, q, s);
        Assert.That(s, Is.All.EqualTo(1e-4f / 448f));
        Assert.That(q.Select(v => v.RawValue), Is.All.EqualTo((byte)0));
    }

    [Test]
    public void Ue8m0ScalesArePowersOfTwoNotBelowTheFloatScale()
    {
        var x = Enumerable.Range(0, 256).Select(i => (float)Math.Sin(i) * 3).ToArray();
        var q = new Float8E4M3[256];
        var s = new float[2];
        ActivationQuantization.Quantize(x, 256, q, s, ScaleFormat.UE8M0);
        foreach (float scale in s)
        {
            Assert.That(float.Log2(scale), Is.EqualTo(MathF.Round(float.Log2(scale))));
            Assert.That(scale, Is.GreaterThanOrEqualTo(3f / 448f * 0.99f));
        }
    }

    [Test]
    public void BadArgumentsNameTheArgument()
    {
        var ex = Assert.Throws<ArgumentException>(() => ActivationQuantization.Quantize(new float[256], 128, new Float8E4M3[256], new float[3]));
        Assert.That(ex!.Message, Does.Contain("scales").And.Contain("2").And.Contain("3"));
        Assert.Throws<ArgumentOutOfRangeException>(() => ActivationQuantization.Quantize(new float[0], 0, [], []));
        Assert.Throws<ArgumentException>(() => ActivationQuantization.Quantize(new float[10], 3, new Float8E4M3[10], new float[4]));
    }

    [Test]
    public void TensorApiOnCpuBackendMatchesSpanApi([Values(DType.Float32, DType.UE8M0)] DType scaleType)
    {
        using var backend = new CpuBackend();
        const int m = 3, k = 200;
        var x = Enumerable.Range(0, m * k).Select(i => (float)Math.Cos(i * 0.37) * (i % 7)).ToArray();
        using var input = backend.Upload<float>(x, DType.Float32, m, k);
        using var q = backend.Allocate(DType.Float8E4M3, m, k);
        using var s = backend.Allocate(scaleType, m, 2);
        ActivationQuantization.Quantize(backend, input, q, s);
        var format = scaleType == DType.UE8M0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        var q2 = new Float8E4M3[m * k];
        var s2 = new float[m * 2];
        ActivationQuantization.Quantize(x, k, q2, s2, format);
        Assert.That(backend.Download<byte>(q), Is.EqualTo(q2.Select(v => v.RawValue).ToArray()));
        float[] scales = scaleType == DType.UE8M0 ? backend.Download<byte>(s).Select(UE8M0.ToSingle).ToArray() : backend.Download<float>(s);
        Assert.That(scales, Is.EqualTo(s2));
    }

    [Test]
    public void TensorApiRejectsWrongScaleShapeBeforeRunning()
    {
        using var backend = new CpuBackend();
        using var input = backend.Allocate(DType.Float32, 2, 256);
        using var q = backend.Allocate(DType.Float8E4M3, 2, 256);
        using var s = backend.Allocate(DType.Float32, 2, 3);
        var ex = Assert.Throws<ArgumentException>(() => ActivationQuantization.Quantize(backend, input, q, s));
        Assert.That(ex!.ParamName, Is.EqualTo("scales"));
        Assert.That(ex.Message, Does.Contain("[2, 2]").And.Contain("Float32[2, 3]"));
    }
}
