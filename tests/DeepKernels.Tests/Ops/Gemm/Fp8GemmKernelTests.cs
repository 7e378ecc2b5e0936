using System.Runtime.InteropServices;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.Gemm;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Ops.Gemm;

/// <summary>
/// The CPU FP8 GEMM kernel's paths: the decode path (B decoded in registers, up to 8 A rows in
/// 4x2 / 2x4 / 1x4 tiles, one A row in 1x8 tiles), the tile path (decoded FP32 tiles, 9+ rows), NaN blocks, K and N
/// tails, row passes, and the portable path, against a float64 reference and against each other
/// bit for bit.
/// </summary>
public class Fp8GemmKernelTests
{
    private const byte PosNaN = 0x7F, NegNaN = 0xFF;

    /// <summary>Codes that cycle through all 254 finite E4M3 codes (subnormals, +-0, +-448).</summary>
    private static byte[] FiniteCodes(int count, int seed)
    {
        var finite = Enumerable.Range(0, 256).Where(c => (c & 0x7F) != 0x7F).Select(c => (byte)c).ToArray();
        var rng = new Random(seed);
        var codes = new byte[count];
        for (int i = 0; i < count; i++)
        {
            if (i % finite.Length == 0) rng.Shuffle(finite);
            codes[i] = finite[i % finite.Length];
        }
        return codes;
    }

    private static float[] Scales(int count, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)Math.Pow(2, rng.Next(-12, 4)) * (1 + (float)rng.NextDouble())).ToArray();
    }

    /// <summary>Runs the kernel on raw inputs, SIMD (when present) or portable; FP32 or BF16 output.</summary>
    private static unsafe void RunKernel(byte[] a, float[] sa, byte[] b, float[] sb, Span<byte> d, int m, int n, int k,
        bool bf16, bool accumulate, bool portable, int m0 = 0, int m1 = -1, bool parallel = true)
    {
        int kb = Fp8Gemm.BlockCount(k);
        fixed (byte* pa = a)
        fixed (byte* pb = b)
        fixed (float* psa = sa)
        fixed (float* psb = sb)
        fixed (byte* pd = d)
        {
            var p = new Fp8GemmProblem
            {
                A = pa, Lda = k, ScaleA = psa, ScaleAStride = kb, B = pb, Ldb = k, ScaleB = psb, ScaleBStride = kb,
                D = pd, Ldd = n, OutputBFloat16 = bf16, Accumulate = accumulate, M = m, N = n, K = k,
            };
            Fp8GemmKernel.Run(p, m0, m1 < 0 ? m : m1, parallel ? CpuBackend.Default.ParallelOptions : null, portable);
        }
    }

    /// <summary>float64 reference of the dequantized inputs; NaN wherever a NaN code takes part.</summary>
    private static (double[] D, double[] AbsSum) Reference(byte[] a, float[] sa, byte[] b, float[] sb, int m, int n, int k)
    {
        int kb = Fp8Gemm.BlockCount(k);
        var d = new double[m * n];
        var abs = new double[m * n];
        Parallel.For(0, m, i =>
        {
            for (int j = 0; j < n; j++)
            {
                double s = 0, sAbs = 0;
                for (int t = 0; t < k; t++)
                {
                    double p = (double)Float8E4M3.ToSingle(a[i * k + t]) * sa[i * kb + t / 128]
                        * Float8E4M3.ToSingle(b[j * k + t]) * sb[j / 128 * kb + t / 128];
                    s += p;
                    sAbs += Math.Abs(p);
                }
                d[i * n + j] = s;
                abs[i * n + j] = sAbs;
            }
        });
        return (d, abs);
    }

    private static void AssertMatchesReference(double[] expected, double[] absSum, float[] actual, double[]? initial = null)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            double want = expected[i] + (initial?[i] ?? 0);
            if (double.IsNaN(want))
            {
                if (!float.IsNaN(actual[i])) Assert.Fail($"D flat index {i}: expected NaN, got {actual[i]}");
                continue;
            }
            double tol = 2e-5 * (absSum[i] + Math.Abs(initial?[i] ?? 0)) + 1e-30;
            if (!(Math.Abs(actual[i] - want) <= tol)) Assert.Fail($"D flat index {i}: expected {want}, got {actual[i]} (tol {tol})");
        }
    }

    private static void AssertBitwiseEqual(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, string what)
    {
        for (int i = 0; i < expected.Length; i++)
        {
            bool same = float.IsNaN(expected[i]) ? float.IsNaN(actual[i])
                : BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]);
            if (!same) Assert.Fail($"{what}: D flat index {i}: {expected[i]:R} vs {actual[i]:R}");
        }
    }

    /// <summary>
    /// Every M from 1 to 17 (decode-path tiles and leftovers, then the tile path), all 256 codes in A and B,
    /// N and K with tails (K = 389 is no multiple of 8, 16, 32 or 128): SIMD = portable bit for
    /// bit, both within FP32 accumulation error of float64, NaN exactly where a NaN code takes part
    /// (in a full K block and in the partial one, in the fused quads and in a leftover row).
    /// </summary>
    [Test]
    public void EveryMAndAllCodesMatchReferenceAndPortablePath([Range(1, 17)] int m)
    {
        const int n = 150, k = 389;
        int kb = Fp8Gemm.BlockCount(k);
        var a = FiniteCodes(m * k, m);
        var b = FiniteCodes(n * k, 100 + m);
        b[5 * k + 40] = PosNaN;        // column 5: full K block, inside a quad of NaN-free rows' panel
        b[130 * k + 300] = NegNaN;     // column 130: second scale row, full block
        b[147 * k + 388] = PosNaN;     // column 147: the partial K block, in the leftover rows of N
        if (m >= 3) a[(m - 2) * k + 7] = NegNaN; // one A row
        var sa = Scales(m * kb, 1);
        var sb = Scales(Fp8Gemm.BlockCount(n) * kb, 2);
        var (expected, absSum) = Reference(a, sa, b, sb, m, n, k);
        Assert.That(expected.Count(double.IsNaN), Is.EqualTo(m * 3 + (m >= 3 ? n - 3 : 0)), "reference NaN count");

        var simd = new float[m * n];
        var portable = new float[m * n];
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(simd.AsSpan()), m, n, k, bf16: false, accumulate: false, portable: false);
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(portable.AsSpan()), m, n, k, bf16: false, accumulate: false, portable: true);
        AssertMatchesReference(expected, absSum, simd);
        AssertBitwiseEqual(portable, simd, "SIMD vs portable");

        // BF16 output is the rounded FP32 result on both paths.
        var simdBf = new ushort[m * n];
        var portableBf = new ushort[m * n];
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(simdBf.AsSpan()), m, n, k, bf16: true, accumulate: false, portable: false);
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(portableBf.AsSpan()), m, n, k, bf16: true, accumulate: false, portable: true);
        for (int i = 0; i < simd.Length; i++)
        {
            Assert.That(simdBf[i], Is.EqualTo(BFloat16.ToRaw(simd[i])), $"SIMD BF16 at {i}");
            Assert.That(portableBf[i], Is.EqualTo(BFloat16.ToRaw(portable[i])), $"portable BF16 at {i}");
        }
    }

    [TestCase(1, 200, 1000)]
    [TestCase(1, 72, 2304)]
    [TestCase(2, 64, 136)]
    [TestCase(3, 33, 7)]
    [TestCase(6, 129, 1031)]
    [TestCase(16, 16, 128)]
    [TestCase(260, 40, 300)]
    public void AccumulateSimdEqualsPortableAndReference(int m, int n, int k)
    {
        int kb = Fp8Gemm.BlockCount(k);
        var a = FiniteCodes(m * k, 7);
        var b = FiniteCodes(n * k, 8);
        var sa = Scales(m * kb, 3);
        var sb = Scales(Fp8Gemm.BlockCount(n) * kb, 4);
        var (expected, absSum) = Reference(a, sa, b, sb, m, n, k);
        var rng = new Random(9);
        var d0 = Enumerable.Range(0, m * n).Select(_ => (float)(rng.NextDouble() * 100 - 50)).ToArray();
        var simd = (float[])d0.Clone();
        var portable = (float[])d0.Clone();
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(simd.AsSpan()), m, n, k, bf16: false, accumulate: true, portable: false);
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(portable.AsSpan()), m, n, k, bf16: false, accumulate: true, portable: true);
        AssertMatchesReference(expected, absSum, simd, d0.Select(v => (double)v).ToArray());
        AssertBitwiseEqual(portable, simd, "SIMD vs portable (accumulate)");
    }

    /// <summary>Results do not depend on threads or on which row range is computed (the grouped GEMM relies on it).</summary>
    [Test]
    public void RowRangesAndSingleThreadGiveTheSameBits()
    {
        const int m = 19, n = 70, k = 520;
        int kb = Fp8Gemm.BlockCount(k);
        var a = FiniteCodes(m * k, 11);
        var b = FiniteCodes(n * k, 12);
        var sa = Scales(m * kb, 5);
        var sb = Scales(Fp8Gemm.BlockCount(n) * kb, 6);
        var full = new float[m * n];
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(full.AsSpan()), m, n, k, false, false, portable: false);
        var pieces = new float[m * n];
        foreach (var (r0, r1) in new[] { (0, 1), (1, 3), (3, 7), (7, 19) })
            RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(pieces.AsSpan()), m, n, k, false, false, portable: false, r0, r1, parallel: false);
        AssertBitwiseEqual(full, pieces, "full vs row ranges");
    }

    /// <summary>Scales far from 1 (the kernel's internal 2^60 / 2^-120 factors must never overflow or underflow).</summary>
    [TestCase(1)]
    [TestCase(5)]
    public void ExtremeScalesStayExact(int m)
    {
        const int n = 8, k = 256;
        var a = FiniteCodes(m * k, 13);
        var b = FiniteCodes(n * k, 14);
        var sa = Enumerable.Range(0, m * 2).Select(i => i % 2 == 0 ? MathF.Pow(2, 100) : MathF.Pow(2, -100)).ToArray();
        var sb = new[] { MathF.Pow(2, -90), MathF.Pow(2, 95) };
        var (expected, absSum) = Reference(a, sa, b, sb, m, n, k);
        var simd = new float[m * n];
        var portable = new float[m * n];
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(simd.AsSpan()), m, n, k, false, false, portable: false);
        RunKernel(a, sa, b, sb, MemoryMarshal.AsBytes(portable.AsSpan()), m, n, k, false, false, portable: true);
        AssertMatchesReference(expected, absSum, simd);
        AssertBitwiseEqual(portable, simd, "SIMD vs portable");
    }

    /// <summary>UE8M0 scales (widened once per call from pooled memory) give the same bits as the equal FP32 scales.</summary>
    [TestCase(1, false)]
    [TestCase(4, true)]
    [TestCase(17, false)]
    public void Ue8m0ScalesEqualFp32ScalesOnTheBackend(int m, bool bf16)
    {
        const int n = 130, k = 260;
        int kb = Fp8Gemm.BlockCount(k), nb = Fp8Gemm.BlockCount(n);
        var rng = new Random(m);
        var a = FiniteCodes(m * k, 15);
        var b = FiniteCodes(n * k, 16);
        var saCodes = Enumerable.Range(0, m * kb).Select(_ => (byte)rng.Next(110, 140)).ToArray();
        var sbCodes = Enumerable.Range(0, nb * kb).Select(_ => (byte)rng.Next(110, 140)).ToArray();
        using var backend = new CpuBackend();
        var outType = bf16 ? DType.BFloat16 : DType.Float32;
        using var ta = backend.Upload<byte>(a, DType.Float8E4M3, m, k);
        using var tb = backend.Upload<byte>(b, DType.Float8E4M3, n, k);
        using var saU = backend.Upload<byte>(saCodes, DType.UE8M0, m, kb);
        using var sbU = backend.Upload<byte>(sbCodes, DType.UE8M0, nb, kb);
        using var saF = backend.Upload<float>(saCodes.Select(UE8M0.ToSingle).ToArray(), DType.Float32, m, kb);
        using var sbF = backend.Upload<float>(sbCodes.Select(UE8M0.ToSingle).ToArray(), DType.Float32, nb, kb);
        using var dU = backend.Allocate(outType, m, n);
        using var dF = backend.Allocate(outType, m, n);
        Fp8Gemm.Run(backend, ta, saU, tb, sbU, dU);
        Fp8Gemm.Run(backend, ta, saF, tb, sbF, dF);
        Assert.That(backend.Download<byte>(dU), Is.EqualTo(backend.Download<byte>(dF)));
        var (expected, absSum) = Reference(a, saCodes.Select(UE8M0.ToSingle).ToArray(), b, sbCodes.Select(UE8M0.ToSingle).ToArray(), m, n, k);
        float[] actual = bf16 ? backend.Download<ushort>(dU).Select(BFloat16.ToSingle).ToArray() : backend.Download<float>(dU);
        if (bf16) absSum = absSum.Select((v, i) => v + Math.Abs(expected[i]) / 256 / 2e-5).ToArray();
        AssertMatchesReference(expected, absSum, actual);
    }
}
