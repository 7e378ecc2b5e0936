using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Moe.MoeTestData;

namespace DeepKernels.Tests.Moe;

public class GroupedGemmTests
{
    private const float Sentinel = -12345f;

    private static (Float8E4M3[] B, float[] BScales, double[] BRef) Weights(int groups, int n, int k, int seed, bool ue8m0 = false)
    {
        var w = Random(groups * n * k, seed, 0.5);
        var (b, bs) = QuantizeWeights(w, groups, n, k, ue8m0);
        return (b, bs, DequantizeWeights(b, bs, groups, n, k));
    }

    // Contiguous: (tokens, k, experts, N, K). Segments >= 32 rows take the blocked prefill path, shorter ones the decode path.
    [TestCase(100, 2, 4, 320, 300)]
    [TestCase(7, 2, 4, 256, 512)]
    [TestCase(1, 1, 3, 130, 128)]
    [TestCase(160, 1, 2, 200, 260)]
    public void ContiguousMatchesPerExpertDenseReference(int tokens, int topK, int groups, int n, int k)
    {
        var rng = new Random(tokens + n);
        // Expert 'groups - 1' never gets a token: it must cost nothing and write nothing.
        var ids = Enumerable.Range(0, tokens * topK).Select(i => i % topK == 0 ? rng.Next(groups - 1) : (rng.Next(groups - 1) + 1) % (groups - 1)).ToArray();
        if (groups == 2) ids = Enumerable.Repeat(0, tokens * topK).ToArray();
        int capacity = MoePermutation.ContiguousCapacity(tokens, topK, groups, 32);
        var mIndices = new int[capacity];
        var rowTokens = new int[capacity];
        MoePermutation.BuildContiguous(ids, topK, groups, 32, new int[groups + 1], mIndices, rowTokens, new int[ids.Length]);

        var x = Random(capacity * k, seed: 7, scale: 3);
        var (a, aScales) = QuantizeActivations(x, k);
        var aRef = DequantizeActivations(a, aScales, k);
        var (b, bScales, bRef) = Weights(groups, n, k, 9);
        var d = Enumerable.Repeat(Sentinel, capacity * n).ToArray();
        GroupedFp8Gemm.Contiguous(a, aScales, mIndices, b, bScales, groups, n, k, d);

        var got = new List<double>();
        var expected = new List<double>();
        for (int r = 0; r < capacity; r++)
        {
            if (mIndices[r] < 0)
            {
                Assert.That(d.Skip(r * n).Take(n), Is.All.EqualTo(Sentinel), $"padding row {r} untouched");
                continue;
            }
            var y = MatVec(aRef.AsSpan(r * k, k), bRef, mIndices[r], n, k);
            expected.AddRange(y);
            got.AddRange(d.Skip(r * n).Take(n).Select(v => (double)v));
        }
        double diff = CalcDiff(got, expected);
        Assert.That(diff, Is.LessThan(1e-6), "FP32 accumulation of exact FP8 products");
        for (int i = 0; i < got.Count; i++)
            Assert.That(got[i], Is.EqualTo(expected[i]).Within(1e-4 * (1 + Math.Abs(expected[i]))), $"element {i}");
    }

    [Test]
    public void MaskedMatchesPerExpertDenseReferenceAndLeavesOtherRows()
    {
        const int groups = 4, mMax = 48, n = 200, k = 260;
        int[] maskedM = [0, 5, 48, 33];
        var x = Random(groups * mMax * k, seed: 3, scale: 2);
        var (a, aScales) = QuantizeActivations(x, k);
        for (int i = 0; i < mMax * 2; i++) aScales[i] = float.NaN; // expert 0's unused rows: never read or checked
        var aRef = DequantizeActivations(a, aScales, k);
        var (b, bScales, bRef) = Weights(groups, n, k, 4);
        var d = Enumerable.Repeat(Sentinel, groups * mMax * n).ToArray();
        GroupedFp8Gemm.Masked(a, aScales, maskedM, mMax, b, bScales, n, k, d);
        for (int g = 0; g < groups; g++)
        {
            var got = new List<double>();
            var expected = new List<double>();
            for (int m = 0; m < mMax; m++)
            {
                int r = g * mMax + m;
                if (m >= maskedM[g])
                {
                    Assert.That(d.Skip(r * n).Take(n), Is.All.EqualTo(Sentinel), $"row {m} of expert {g} untouched");
                    continue;
                }
                expected.AddRange(MatVec(aRef.AsSpan(r * k, k), bRef, g, n, k));
                got.AddRange(d.Skip(r * n).Take(n).Select(v => (double)v));
            }
            if (got.Count > 0) Assert.That(CalcDiff(got, expected), Is.LessThan(1e-6), $"expert {g}");
        }
    }

    [Test]
    public void BackendApiBFloat16AndUe8m0()
    {
        const int groups = 3, n = 256, k = 384, m = 64;
        var mIndices = Enumerable.Range(0, m).Select(r => r < 40 ? 2 : r < 45 ? -1 : 0).ToArray();
        var x = Random(m * k, 5, 4);
        var (a, aScales) = QuantizeActivations(x, k, ue8m0: true);
        var (b, bScales, _) = Weights(groups, n, k, 6, ue8m0: true);
        var dFloat = new float[m * n];
        GroupedFp8Gemm.Contiguous(a, aScales, mIndices, b, bScales, groups, n, k, dFloat);

        var backend = new CpuBackend();
        using var aBuf = backend.Upload<Float8E4M3>(a, DType.Float8E4M3, m, k);
        using var aS8 = backend.Upload<byte>(aScales.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, m, 3);
        using var mBuf = backend.Upload<int>(mIndices, DType.Int32, m);
        using var bBuf = backend.Upload<Float8E4M3>(b, DType.Float8E4M3, groups, n, k);
        using var bS8 = backend.Upload<byte>(bScales.Select(UE8M0.FromSingleRoundUp).ToArray(), DType.UE8M0, groups, 2, 3);
        using var dBf = backend.Allocate(DType.BFloat16, m, n);
        backend.Zero(dBf);
        GroupedFp8Gemm.Contiguous(backend, aBuf, aS8, mBuf, bBuf, bS8, dBf);
        var bf = backend.Download<ushort>(dBf);
        for (int r = 0; r < m; r++)
            for (int c = 0; c < n; c++)
            {
                ushort expected = mIndices[r] < 0 ? (ushort)0 : BFloat16.ToRaw(dFloat[r * n + c]);
                Assert.That(bf[r * n + c], Is.EqualTo(expected), $"[{r}, {c}]");
            }

        // Masked via the backend: one expert with all rows equals the dense product of those rows.
        using var a3 = backend.Upload<Float8E4M3>(a, DType.Float8E4M3, 1, m, k);
        using var aS3 = backend.Upload<float>(aScales, DType.Float32, 1, m, 3);
        using var mm = backend.Upload<int>([m], DType.Int32, 1);
        using var b1 = backend.Upload<Float8E4M3>(b.AsSpan(0, n * k).ToArray(), DType.Float8E4M3, 1, n, k);
        using var bS1 = backend.Upload<float>(bScales.AsSpan(0, 6).ToArray(), DType.Float32, 1, 2, 3);
        using var d3 = backend.Allocate(DType.Float32, 1, m, n);
        GroupedFp8Gemm.Masked(backend, a3, aS3, mm, b1, bS1, d3, expectedM: m);
        var dense = backend.Download<float>(d3);
        for (int r = 0; r < m; r++)
            if (mIndices[r] == 0) // 64 rows take the blocked path, the 19-row segment the dot path: FP32 rounding differs
                Assert.That(dense.Skip(r * n).Take(n), Is.EqualTo(dFloat.Skip(r * n).Take(n)).Within(1e-3).Percent);
    }

    [Test]
    public void BadInputThrowsBeforeWriting()
    {
        const int groups = 2, n = 128, k = 128, m = 4;
        var (b, bScales, _) = Weights(groups, n, k, 1);
        var (a, aScales) = QuantizeActivations(Random(m * k, 2), k);
        var d = Enumerable.Repeat(Sentinel, m * n).ToArray();
        void Contiguous(int[] mIndices, float[] bs) => GroupedFp8Gemm.Contiguous(a, aScales, mIndices, b, bs, groups, n, k, d);
        Assert.Throws<ArgumentException>(() => Contiguous([0, 1, 2, 0], bScales), "id >= G");
        Assert.Throws<ArgumentException>(() => Contiguous([0, -2, 1, 0], bScales), "id < -1");
        var nanScales = (float[])bScales.Clone();
        nanScales[1] = float.NaN;
        Assert.Throws<ArgumentException>(() => Contiguous([0, 0, 1, 1], nanScales), "NaN weight scale");
        var badA = (float[])aScales.Clone();
        badA[2] = 0;
        Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Contiguous(a, badA, [0, 0, 1, 1], b, bScales, groups, n, k, d), "zero activation scale");
        Assert.DoesNotThrow(() => GroupedFp8Gemm.Contiguous(a, badA, [0, 0, -1, 1], b, bScales, groups, n, k, d), "padding row scales are not read");
        d.AsSpan().Fill(Sentinel);
        var ex = Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Masked(a, aScales, [3, 2], 2, b, bScales, n, k, d));
        Assert.That(ex!.ParamName, Is.EqualTo("maskedM"), "masked_m > m_max");
        Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Masked(a, aScales, [-1, 2], 2, b, bScales, n, k, d));
        Assert.That(d, Is.All.EqualTo(Sentinel));

        var backend = new CpuBackend();
        using var aBuf = backend.Upload<Float8E4M3>(a, DType.Float8E4M3, m, k);
        using var aS = backend.Upload<float>(aScales, DType.Float32, m, 1);
        using var mBuf = backend.Upload<int>([0, 0, 1, 5], DType.Int32, m);
        using var bBuf = backend.Upload<Float8E4M3>(b, DType.Float8E4M3, groups, n, k);
        using var bS = backend.Upload<float>(bScales, DType.Float32, groups, 1, 1);
        using var dBuf = backend.Allocate(DType.Float32, m, n);
        using var dWrong = backend.Allocate(DType.Float32, m, n + 1);
        Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Contiguous(backend, aBuf, aS, mBuf, bBuf, bS, dBuf));
        using var mOk = backend.Upload<int>([0, 0, 1, 1], DType.Int32, m);
        Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Contiguous(backend, aBuf, aS, mOk, bBuf, bS, dWrong));
        Assert.Throws<ArgumentException>(() => GroupedFp8Gemm.Contiguous(backend, aBuf, aS, mOk, bBuf, aS, dBuf), "scale shape");
    }
}
