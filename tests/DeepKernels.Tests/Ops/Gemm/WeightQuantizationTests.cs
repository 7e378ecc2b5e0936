using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Ops.Gemm;

public class WeightQuantizationTests
{
    private static float[] RandomWeights(int rows, int cols, int seed)
    {
        var rng = new Random(seed);
        var w = new float[rows * cols];
        for (int i = 0; i < w.Length; i++) w[i] = (float)((rng.NextDouble() - 0.5) * Math.Pow(10, rng.Next(-3, 2)));
        return w;
    }

    // Half the E4M3 spacing at |v| (2^-9 spacing for subnormals).
    private static double HalfUlp(double v) =>
        (Math.Abs(v) < 1.0 / 64 ? 1.0 / 512 : Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(v))) - 3)) / 2;

    [TestCase(128, 128)]
    [TestCase(200, 300)]
    [TestCase(1, 7)]
    [TestCase(130, 520)]
    public void RoundTripWithinHalfAnUlpTimesTheScale(int rows, int cols)
    {
        var w = RandomWeights(rows, cols, rows * 31 + cols);
        if (rows > 130) for (int c = 128; c < 256; c++) for (int r = 128; r < rows; r++) w[r * cols + c] = 0; // an all-zero partial block
        int rb = (rows + 127) / 128, cb = (cols + 127) / 128;
        var q = new Float8E4M3[w.Length];
        var s = new float[rb * cb];
        WeightQuantization.Quantize(w, rows, cols, q, s);
        // Reference scales from a float64 amax over each (zero-padded) block.
        for (int i = 0; i < rb; i++)
            for (int j = 0; j < cb; j++)
            {
                double amax = 0;
                for (int r = i * 128; r < Math.Min(rows, i * 128 + 128); r++)
                    for (int c = j * 128; c < Math.Min(cols, j * 128 + 128); c++) amax = Math.Max(amax, Math.Abs((double)w[r * cols + c]));
                Assert.That((double)s[i * cb + j], Is.EqualTo((double)(float)(Math.Max(amax, 1e-4f) / 448.0)), $"scale [{i},{j}]");
            }
        var back = new float[w.Length];
        WeightQuantization.Dequantize(q, s, rows, cols, back);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
            {
                double scale = s[r / 128 * cb + c / 128];
                double target = w[r * cols + c] / scale;
                Assert.That(Math.Abs(target), Is.LessThanOrEqualTo(448 * (1 + 1e-6)));
                double err = Math.Abs(back[r * cols + c] - (double)w[r * cols + c]);
                Assert.That(err, Is.LessThanOrEqualTo(HalfUlp(target) * scale * (1 + 1e-6) + 1e-12), $"[{r},{c}] = {w[r * cols + c]}");
                Assert.That((double)back[r * cols + c], Is.EqualTo(q[r * cols + c].ToSingle() * (double)scale).Within(Math.Abs(back[r * cols + c]) * 1e-7));
            }
    }

    [Test]
    public void Ue8m0ScalesArePowersOfTwoAtOrAboveTheFloatScale()
    {
        var w = RandomWeights(150, 260, 3);
        var q = new Float8E4M3[w.Length];
        var q32 = new Float8E4M3[w.Length];
        var s = new float[2 * 3];
        var s32 = new float[2 * 3];
        WeightQuantization.Quantize(w, 150, 260, q, s, ScaleFormat.UE8M0);
        WeightQuantization.Quantize(w, 150, 260, q32, s32);
        for (int i = 0; i < s.Length; i++)
        {
            Assert.That(float.Log2(s[i]), Is.EqualTo(MathF.Round(float.Log2(s[i]))), $"scale {i}");
            Assert.That(s[i], Is.GreaterThanOrEqualTo(s32[i]));
            Assert.That(s[i], Is.LessThan(s32[i] * 2));
        }
        var back = new float[w.Length];
        WeightQuantization.Dequantize(q, s, 150, 260, back);
        for (int i = 0; i < w.Length; i++)
        {
            double scale = s[i / 260 / 128 * 3 + i % 260 / 128];
            Assert.That(Math.Abs(back[i] - (double)w[i]), Is.LessThanOrEqualTo(HalfUlp(w[i] / scale) * scale * (1 + 1e-6)));
        }
    }

    [Test]
    public void DequantizeToBFloat16RoundsTheFloatResult()
    {
        var w = RandomWeights(64, 200, 5);
        var q = new Float8E4M3[w.Length];
        var s = new float[2];
        WeightQuantization.Quantize(w, 64, 200, q, s);
        var f = new float[w.Length];
        var b = new BFloat16[w.Length];
        WeightQuantization.Dequantize(q, s, 64, 200, f);
        WeightQuantization.Dequantize(q, s, 64, 200, b);
        for (int i = 0; i < w.Length; i++) Assert.That(b[i].RawValue, Is.EqualTo(BFloat16.ToRaw(f[i])));
    }

    [Test]
    public void NaNStaysNaNAndInfinitySaturates()
    {
        var w = new float[128];
        w[0] = 2f; w[1] = float.NaN; w[2] = float.NegativeInfinity;
        var q = new Float8E4M3[128];
        var s = new float[1];
        WeightQuantization.Quantize(w, 1, 128, q, s);
        Assert.That(s[0], Is.EqualTo(2f / 448));
        Assert.That(q[0].ToSingle(), Is.EqualTo(448f));
        Assert.That(q[1].IsNaN);
        Assert.That(q[2].ToSingle(), Is.EqualTo(-448f));
    }

    [Test]
    public void BadArgumentsAreRejected()
    {
        var ex = Assert.Throws<ArgumentException>(() => WeightQuantization.Quantize(new float[200 * 300], 200, 300, new Float8E4M3[200 * 300], new float[5]));
        Assert.That(ex!.Message, Does.Contain("scales").And.Contain("6").And.Contain("5"));
        Assert.Throws<ArgumentOutOfRangeException>(() => WeightQuantization.Quantize([], 0, 5, [], []));
        Assert.Throws<ArgumentException>(() => WeightQuantization.Quantize(new float[10], 2, 6, new Float8E4M3[10], new float[1]));
        var nanScale = Assert.Throws<ArgumentException>(() => WeightQuantization.Dequantize(new Float8E4M3[4], [float.NaN], 2, 2, new float[4]));
        Assert.That(nanScale!.Message, Does.Contain("scaleInv[0]"));
        Assert.Throws<ArgumentException>(() => WeightQuantization.Dequantize(new Float8E4M3[4], [0f], 2, 2, new float[4]));
        Assert.Throws<ArgumentException>(() => ActivationDequantization.Dequantize(new Float8E4M3[4], [1f], 2, new float[4]));
    }

    [TestCase(DType.Float32, DType.Float32)]
    [TestCase(DType.BFloat16, DType.UE8M0)]
    public void TensorApiOnCpuMatchesSpanApi(DType inputType, DType scaleType)
    {
        using var backend = new CpuBackend();
        const int n = 200, k = 300;
        var w = RandomWeights(n, k, 9);
        if (inputType == DType.BFloat16) w = w.Select(v => BFloat16.ToSingle(BFloat16.ToRaw(v))).ToArray();
        using var input = inputType == DType.Float32
            ? backend.Upload<float>(w, DType.Float32, n, k)
            : backend.Upload<ushort>(w.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, n, k);
        using var q = backend.Allocate(DType.Float8E4M3, n, k);
        using var s = backend.Allocate(scaleType, 2, 3);
        WeightQuantization.Quantize(backend, input, q, s);
        var format = scaleType == DType.UE8M0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        var q2 = new Float8E4M3[n * k];
        var s2 = new float[6];
        WeightQuantization.Quantize(w, n, k, q2, s2, format);
        Assert.That(backend.Download<byte>(q), Is.EqualTo(q2.Select(v => v.RawValue).ToArray()));
        float[] scales = scaleType == DType.UE8M0 ? backend.Download<byte>(s).Select(UE8M0.ToSingle).ToArray() : backend.Download<float>(s);
        Assert.That(scales, Is.EqualTo(s2));

        using var deq = backend.Allocate(DType.Float32, n, k);
        WeightQuantization.Dequantize(backend, q, s, deq);
        var expected = new float[n * k];
        WeightQuantization.Dequantize(q2, s2, n, k, expected);
        Assert.That(backend.Download<float>(deq), Is.EqualTo(expected));
        using var deqBf = backend.Allocate(DType.BFloat16, n, k);
        WeightQuantization.Dequantize(backend, q, s, deqBf);
        Assert.That(backend.Download<ushort>(deqBf), Is.EqualTo(expected.Select(BFloat16.ToRaw).ToArray()));
    }

    [Test]
    public void TensorApiRejectsWrongShapesAndBadScales()
    {
        using var backend = new CpuBackend();
        using var q = backend.Allocate(DType.Float8E4M3, 200, 300);
        using var wrong = backend.Allocate(DType.Float32, 2, 2);
        using var output = backend.Allocate(DType.Float32, 200, 300);
        var ex = Assert.Throws<ArgumentException>(() => WeightQuantization.Dequantize(backend, q, wrong, output));
        Assert.That(ex!.ParamName, Is.EqualTo("scaleInv"));
        Assert.That(ex.Message, Does.Contain("[2, 3]"));
        using var ue = backend.Upload<byte>(new byte[] { 127, 127, 0xFF, 127, 127, 127 }, DType.UE8M0, 2, 3);
        var nan = Assert.Throws<ArgumentException>(() => WeightQuantization.Dequantize(backend, q, ue, output));
        Assert.That(nan!.Message, Does.Contain("scaleInv[2]"));
        using var i32 = backend.Allocate(DType.Int32, 200, 300);
        using var s = backend.Allocate(DType.Float32, 2, 3);
        Assert.Throws<ArgumentException>(() => WeightQuantization.Quantize(backend, i32, q, s));
    }

    [Test]
    public void ActivationDequantizationInvertsActivationQuantization([Values(DType.Float32, DType.UE8M0)] DType scaleType)
    {
        using var backend = new CpuBackend();
        const int m = 3, k = 300;
        var x = RandomWeights(m, k, 11);
        var q = new Float8E4M3[m * k];
        var s = new float[m * 3];
        var format = scaleType == DType.UE8M0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        ActivationQuantization.Quantize(x, k, q, s, format);
        var back = new float[m * k];
        ActivationDequantization.Dequantize(q, s, k, back);
        for (int i = 0; i < x.Length; i++)
        {
            double scale = s[i / k * 3 + i % k / 128];
            Assert.That(Math.Abs(back[i] - (double)x[i]), Is.LessThanOrEqualTo(HalfUlp(x[i] / scale) * scale * (1 + 1e-6)), $"element {i}");
        }
        using var qt = backend.Upload<byte>(q.Select(v => v.RawValue).ToArray(), DType.Float8E4M3, m, k);
        using var st = scaleType == DType.UE8M0
            ? backend.Upload<byte>(s.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, m, 3)
            : backend.Upload<float>(s, DType.Float32, m, 3);
        using var output = backend.Allocate(DType.BFloat16, m, k);
        ActivationDequantization.Dequantize(backend, qt, st, output);
        Assert.That(backend.Download<ushort>(output), Is.EqualTo(back.Select(BFloat16.ToRaw).ToArray()));
    }
}
