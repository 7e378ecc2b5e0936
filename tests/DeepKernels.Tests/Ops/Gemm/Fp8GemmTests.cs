using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Ops.Gemm;

/// <summary>Quantized GEMM inputs plus their float64 dequantized values.</summary>
internal sealed class GemmInputs
{
    public required int M, N, K;
    public required Float8E4M3[] A, B;
    public required float[] SA, SB;
    public required double[] DeqA, DeqB;

    public static GemmInputs Create(int m, int n, int k, int seed, ScaleFormat format = ScaleFormat.Float32)
    {
        var rng = new Random(seed);
        // Magnitudes vary per 128-group (A) and per 128x128 block (B), so wrong scale indexing shows.
        var a = new float[m * k];
        for (int i = 0; i < m; i++)
            for (int g = 0; g * 128 < k; g++)
            {
                double mag = Math.Pow(10, rng.NextDouble() * 3 - 2);
                for (int j = g * 128; j < Math.Min(k, g * 128 + 128); j++) a[i * k + j] = (float)((rng.NextDouble() * 2 - 1) * mag);
            }
        var blockMag = new double[(n + 127) / 128, (k + 127) / 128];
        for (int i = 0; i < blockMag.GetLength(0); i++)
            for (int j = 0; j < blockMag.GetLength(1); j++) blockMag[i, j] = Math.Pow(10, rng.NextDouble() * 3 - 2);
        var b = new float[n * k];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++) b[i * k + j] = (float)((rng.NextDouble() * 2 - 1) * blockMag[i / 128, j / 128]);
        int kb = (k + 127) / 128;
        var qa = new Float8E4M3[a.Length];
        var sa = new float[m * kb];
        ActivationQuantization.Quantize(a, k, qa, sa, format);
        var qb = new Float8E4M3[b.Length];
        var sb = new float[(n + 127) / 128 * kb];
        WeightQuantization.Quantize(b, n, k, qb, sb, format);
        var deqA = new double[a.Length];
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) deqA[i * k + j] = qa[i * k + j].ToSingle() * (double)sa[i * kb + j / 128];
        var deqB = new double[b.Length];
        for (int i = 0; i < n; i++)
            for (int j = 0; j < k; j++) deqB[i * k + j] = qb[i * k + j].ToSingle() * (double)sb[i / 128 * kb + j / 128];
        return new GemmInputs { M = m, N = n, K = k, A = qa, B = qb, SA = sa, SB = sb, DeqA = deqA, DeqB = deqB };
    }

    /// <summary>Reference D in float64 and, per element, sum |a*b| (for an FP32 error bound).</summary>
    public (double[] D, double[] AbsSum) Reference()
    {
        var d = new double[M * N];
        var abs = new double[M * N];
        Parallel.For(0, M, i =>
        {
            for (int j = 0; j < N; j++)
            {
                double s = 0, sa = 0;
                for (int t = 0; t < K; t++)
                {
                    double p = DeqA[i * K + t] * DeqB[j * K + t];
                    s += p;
                    sa += Math.Abs(p);
                }
                d[i * N + j] = s;
                abs[i * N + j] = sa;
            }
        });
        return (d, abs);
    }

    public static double CalcDiff(IReadOnlyList<double> x, IReadOnlyList<double> y)
    {
        double xy = 0, xx = 0;
        for (int i = 0; i < x.Count; i++) { xy += x[i] * y[i]; xx += x[i] * x[i] + y[i] * y[i]; }
        return 1 - 2 * xy / xx;
    }
}

public class Fp8GemmTests
{
    private static void AssertClose(double[] expected, double[] absSum, IReadOnlyList<double> actual, bool bf16)
    {
        double diff = GemmInputs.CalcDiff(expected, actual);
        Assert.That(diff, Is.LessThan(1e-3), "calc_diff");
        Assert.That(diff, Is.LessThan(bf16 ? 1e-4 : 1e-9), "calc_diff (tight)");
        for (int i = 0; i < expected.Length; i++)
        {
            // FP32 accumulation bound, plus half a bfloat16 ULP for a BF16 output.
            double tol = 2e-5 * absSum[i] + 1e-30 + (bf16 ? Math.Abs(expected[i]) / 256 : 0);
            if (Math.Abs(actual[i] - expected[i]) > tol)
                Assert.Fail($"D flat index {i}: expected {expected[i]}, got {actual[i]} (tol {tol})");
        }
    }

    [TestCase(1, 256, 7168)]
    [TestCase(7, 256, 7168)]
    [TestCase(1, 200, 300)]
    [TestCase(7, 200, 300)]
    [TestCase(64, 200, 300)]
    [TestCase(129, 200, 300)]
    [TestCase(1, 130, 520)]
    [TestCase(7, 130, 520)]
    [TestCase(64, 130, 520)]
    [TestCase(129, 130, 520)]
    [TestCase(1, 384, 1536)]
    [TestCase(64, 384, 1536)]
    [TestCase(3, 17, 5)]
    public void SpanApiMatchesFloat64Reference(int m, int n, int k)
    {
        var g = GemmInputs.Create(m, n, k, m * 7919 + n * 31 + k);
        var (expected, absSum) = g.Reference();
        var d = new float[m * n];
        Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, m, n, k);
        AssertClose(expected, absSum, d.Select(v => (double)v).ToArray(), bf16: false);
        var dbf = new BFloat16[m * n];
        Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, dbf, m, n, k);
        AssertClose(expected, absSum, dbf.Select(v => (double)v.ToSingle()).ToArray(), bf16: true);
        for (int i = 0; i < d.Length; i++) Assert.That(dbf[i].RawValue, Is.EqualTo(BFloat16.ToRaw(d[i])), "BF16 = rounded FP32 result");
    }

    [TestCase(7, 200, 300)]
    [TestCase(129, 130, 520)]
    public void AccumulateAddsToExistingOutput(int m, int n, int k)
    {
        var g = GemmInputs.Create(m, n, k, 42);
        var (expected, absSum) = g.Reference();
        var rng = new Random(1);
        var d0 = Enumerable.Range(0, m * n).Select(_ => (float)(rng.NextDouble() * 4 - 2)).ToArray();
        var d = (float[])d0.Clone();
        Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, m, n, k, new Fp8GemmOptions { Accumulate = true });
        var want = expected.Select((v, i) => v + d0[i]).ToArray();
        var bound = absSum.Select((v, i) => v + Math.Abs(d0[i])).ToArray();
        AssertClose(want, bound, d.Select(v => (double)v).ToArray(), bf16: false);
    }

    [TestCase(DType.Float32, DType.Float32, false)]
    [TestCase(DType.UE8M0, DType.BFloat16, false)]
    [TestCase(DType.UE8M0, DType.Float32, true)]
    public void TensorApiOnCpuBackend(DType scaleType, DType outType, bool accumulate)
    {
        const int m = 9, n = 260, k = 640;
        var format = scaleType == DType.UE8M0 ? ScaleFormat.UE8M0 : ScaleFormat.Float32;
        var g = GemmInputs.Create(m, n, k, 5, format);
        var (expected, absSum) = g.Reference();
        using var backend = new CpuBackend();
        using var a = backend.Upload<byte>(g.A.Select(v => v.RawValue).ToArray(), DType.Float8E4M3, m, k);
        using var b = backend.Upload<byte>(g.B.Select(v => v.RawValue).ToArray(), DType.Float8E4M3, n, k);
        using var sa = scaleType == DType.UE8M0 ? backend.Upload<byte>(g.SA.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, m, 5) : backend.Upload<float>(g.SA, DType.Float32, m, 5);
        using var sb = scaleType == DType.UE8M0 ? backend.Upload<byte>(g.SB.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, 3, 5) : backend.Upload<float>(g.SB, DType.Float32, 3, 5);
        using var d = backend.Allocate(outType, m, n);
        var d0 = Enumerable.Range(0, m * n).Select(i => (float)Math.Sin(i)).ToArray();
        if (accumulate) backend.CopyFromHost(System.Runtime.InteropServices.MemoryMarshal.AsBytes(d0.AsSpan()), d);
        Fp8Gemm.Run(backend, a, sa, b, sb, d, new Fp8GemmOptions { Accumulate = accumulate });
        double[] actual = outType == DType.BFloat16
            ? backend.Download<ushort>(d).Select(v => (double)BFloat16.ToSingle(v)).ToArray()
            : backend.Download<float>(d).Select(v => (double)v).ToArray();
        if (accumulate) expected = expected.Select((v, i) => v + d0[i]).ToArray();
        AssertClose(expected, absSum.Select((v, i) => v + 1).ToArray(), actual, outType == DType.BFloat16);
    }

    [TestCase(1)]
    [TestCase(5)]
    public void NaNCodesPropagateToTheirRowAndColumnOnly(int m)
    {
        var g = GemmInputs.Create(m, 140, 300, 3);
        var (expected, absSum) = g.Reference();
        g.B[3 * 300 + 10] = Float8E4M3.NaN;    // column 3 (full K block)
        g.B[131 * 300 + 290] = Float8E4M3.NaN; // column 131 (partial K block)
        if (m > 2) g.A[2 * 300 + 5] = Float8E4M3.NaN; // row 2
        var d = new float[m * 140];
        Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, m, 140, 300);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < 140; j++)
            {
                bool nan = (i == 2 && m > 2) || j == 3 || j == 131;
                Assert.That(float.IsNaN(d[i * 140 + j]), Is.EqualTo(nan), $"D[{i},{j}]");
                if (!nan) Assert.That((double)d[i * 140 + j], Is.EqualTo(expected[i * 140 + j]).Within(2e-5 * absSum[i * 140 + j]));
            }
    }

    [Test]
    public void EveryFiniteCodeIncludingSubnormalsDecodesExactly()
    {
        // Uniform random codes (1/16 of them subnormal) exercise the exact decode path of B.
        const int m = 5, n = 20, k = 384;
        var rng = new Random(12);
        Float8E4M3 Code() { byte c; do c = (byte)rng.Next(256); while ((c & 0x7F) == 0x7F); return Float8E4M3.FromRaw(c); }
        var a = Enumerable.Range(0, m * k).Select(_ => Code()).ToArray();
        var b = Enumerable.Range(0, n * k).Select(_ => Code()).ToArray();
        var sa = Enumerable.Range(0, m * 3).Select(i => 0.5f + i).ToArray();
        var sb = new[] { 0.25f, 2f, 1f };
        var d = new float[m * n];
        Fp8Gemm.Run(a, sa, b, sb, d, m, n, k);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double expected = 0, bound = 0;
                for (int t = 0; t < k; t++)
                {
                    double p = (double)a[i * k + t].ToSingle() * sa[i * 3 + t / 128] * b[j * k + t].ToSingle() * sb[t / 128];
                    expected += p;
                    bound += Math.Abs(p);
                }
                Assert.That((double)d[i * n + j], Is.EqualTo(expected).Within(2e-5 * bound), $"D[{i},{j}]");
            }
    }

    [Test]
    public unsafe void KernelRowRangeIsTheGroupedGemmBuildingBlock()
    {
        const int m = 11, n = 150, k = 260;
        var g = GemmInputs.Create(m, n, k, 8);
        var full = new float[m * n];
        Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, full, m, n, k);
        var part = Enumerable.Repeat(-7f, m * n).ToArray();
        fixed (Float8E4M3* pa = g.A)
        fixed (Float8E4M3* pb = g.B)
        fixed (float* psa = g.SA)
        fixed (float* psb = g.SB)
        fixed (float* pd = part)
        {
            var p = new Fp8GemmProblem
            {
                A = (byte*)pa, Lda = k, ScaleA = psa, ScaleAStride = 3, B = (byte*)pb, Ldb = k, ScaleB = psb, ScaleBStride = 3,
                D = pd, Ldd = n, M = m, N = n, K = k,
            };
            Fp8GemmKernel.Run(p, 3, 8, options: null);
        }
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                Assert.That(part[i * n + j], Is.EqualTo(i is >= 3 and < 8 ? full[i * n + j] : -7f), $"D[{i},{j}]");
    }

    [Test]
    public unsafe void PortableFallbackMatchesFloat64Reference()
    {
        const int m = 3, n = 140, k = 300;
        var g = GemmInputs.Create(m, n, k, 21);
        var (expected, absSum) = g.Reference();
        var d = new float[m * n];
        fixed (Float8E4M3* pa = g.A)
        fixed (Float8E4M3* pb = g.B)
        fixed (float* psa = g.SA)
        fixed (float* psb = g.SB)
        fixed (float* pd = d)
        {
            var p = new Fp8GemmProblem
            {
                A = (byte*)pa, Lda = k, ScaleA = psa, ScaleAStride = 3, B = (byte*)pb, Ldb = k, ScaleB = psb, ScaleBStride = 3,
                D = pd, Ldd = n, M = m, N = n, K = k,
            };
            Fp8GemmKernel.RunPortable(p, 0, m);
        }
        AssertClose(expected, absSum, d.Select(v => (double)v).ToArray(), bf16: false);
    }

    [Test]
    public void SpanApiRejectsBadInput()
    {
        var g = GemmInputs.Create(2, 130, 300, 1);
        var d = new float[2 * 130];
        var ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA.AsSpan(1).ToArray(), g.B, g.SB, d, 2, 130, 300));
        Assert.That(ex!.ParamName, Is.EqualTo("aScales"));
        Assert.That(ex.Message, Does.Contain("6").And.Contain("5"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, new float[5], d, 2, 130, 300));
        Assert.That(ex!.ParamName, Is.EqualTo("bScales"));
        var badScale = (float[])g.SB.Clone();
        badScale[4] = float.PositiveInfinity;
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, badScale, d, 2, 130, 300));
        Assert.That(ex!.Message, Does.Contain("bScales[4]"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, 0, 130, 300));
        Assert.Throws<ArgumentOutOfRangeException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, 2, -1, 300));
        Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, d, 2, 130, 299));
        Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, new float[5], 2, 130, 300));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(g.A, g.SA, g.B, g.SB, new BFloat16[2 * 130], 2, 130, 300, new Fp8GemmOptions { Accumulate = true }));
        Assert.That(ex!.Message, Does.Contain("Float32"));
    }

    [Test]
    public void TensorApiRejectsBadInputBeforeRunning()
    {
        using var backend = new CpuBackend();
        using var a = backend.Allocate(DType.Float8E4M3, 4, 256);
        using var b = backend.Allocate(DType.Float8E4M3, 130, 256);
        using var bWrongK = backend.Allocate(DType.Float8E4M3, 130, 200);
        using var sa = backend.Upload<float>(Enumerable.Repeat(1f, 8).ToArray(), DType.Float32, 4, 2);
        using var sb = backend.Upload<float>(Enumerable.Repeat(1f, 4).ToArray(), DType.Float32, 2, 2);
        using var sbBad = backend.Upload<float>(new[] { 1f, 1f, float.NaN, 1f }, DType.Float32, 2, 2);
        using var sbWrong = backend.Allocate(DType.Float32, 1, 2);
        using var d = backend.Allocate(DType.Float32, 4, 130);
        using var dBf = backend.Allocate(DType.BFloat16, 4, 130);
        using var dInt = backend.Allocate(DType.Int32, 4, 130);

        var ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, a, sa, bWrongK, sb, d));
        Assert.That(ex!.Message, Does.Contain("mismatched K"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, a, sa, b, sbWrong, d));
        Assert.That(ex!.ParamName, Is.EqualTo("bScales"));
        Assert.That(ex.Message, Does.Contain("[2, 2]"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, a, sa, b, sbBad, d));
        Assert.That(ex!.Message, Does.Contain("bScales[2]"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, a, sa, b, sb, dInt));
        Assert.That(ex!.ParamName, Is.EqualTo("d"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, a, sa, b, sb, dBf, new Fp8GemmOptions { Accumulate = true }));
        Assert.That(ex!.ParamName, Is.EqualTo("d"));
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, sa, sa, b, sb, d));
        Assert.That(ex!.ParamName, Is.EqualTo("a"));
        var onDevice = new TensorView(a.View.Data, DType.Float8E4M3, MemoryLocation.Device, 4, 256);
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, onDevice, sa, b, sb, d));
        Assert.That(ex!.Message, Does.Contain("Host"));
        var strided = new TensorView(a.View.Data, DType.Float8E4M3, MemoryLocation.Host, [4, 128], [256, 1]);
        using var sa1 = backend.Upload<float>(Enumerable.Repeat(1f, 4).ToArray(), DType.Float32, 4, 1);
        using var b128 = backend.Allocate(DType.Float8E4M3, 130, 128);
        using var sb1 = backend.Upload<float>(Enumerable.Repeat(1f, 2).ToArray(), DType.Float32, 2, 1);
        ex = Assert.Throws<ArgumentException>(() => Fp8Gemm.Run(backend, strided, sa1, b128, sb1, d));
        Assert.That(ex!.Message, Does.Contain("contiguous"));
        var empty = new TensorView(a.View.Data, DType.Float8E4M3, MemoryLocation.Host, 0, 256);
        Assert.Throws<ArgumentOutOfRangeException>(() => Fp8Gemm.Run(backend, empty, sa, b, sb, d));
    }
}
