using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Backends.Cuda;
using DeepKernels.Formats;
using DeepKernels.Ops.GroupedGemm;
using DeepKernels.Ops.MoePermute;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>The CUDA MoE kernels (router, gather/combine, grouped GEMMs) against the CPU backend.</summary>
[Category("Cuda")]
public class CudaMoeTests
{
    // ---- router ----

    private static (int[] Ids, float[] Weights) Route(Backend backend, float[] logits, int t, int e, float[]? bias, MoeRouterConfig config, DType dtype)
    {
        using var l = dtype == DType.Float32
            ? Put(backend, logits, DType.Float32, t, e)
            : Put(backend, logits.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, t, e);
        using var b = bias is null ? null : Put(backend, bias, DType.Float32, e);
        using var ids = backend.Allocate(DType.Int32, t, config.TopK);
        using var w = backend.Allocate(DType.Float32, t, config.TopK);
        MoeRouting.Route(backend, l, b?.View, config, ids, w);
        backend.Synchronize();
        return (backend.Download<int>(ids), backend.Download<float>(w));
    }

    private static void CompareRouting(int t, int e, bool withBias, MoeRouterConfig config, DType dtype, int seed)
    {
        var cuda = CudaTestBackends.Get();
        var rng = new Random(seed);
        var logits = Gaussian(t * e, rng, 2.0);
        var bias = withBias ? Gaussian(e, rng, 0.1) : null;
        var expected = Route(CpuBackend.Default, logits, t, e, bias, config, dtype);
        var actual = Route(cuda, logits, t, e, bias, config, dtype);
        Assert.That(actual.Ids, Is.EqualTo(expected.Ids), "expert ids");
        for (int i = 0; i < expected.Weights.Length; i++)
            Assert.That(actual.Weights[i], Is.EqualTo(expected.Weights[i]).Within(1e-5).Percent, $"weight[{i / config.TopK}, {i % config.TopK}]");
    }

    [TestCase(1)]
    [TestCase(5)]
    [TestCase(37)]
    public void RouterDeepSeekV3MatchesCpu(int tokens) =>
        CompareRouting(tokens, 256, true, MoeRouterConfig.DeepSeekV3, DType.Float32, tokens);

    [Test]
    public void RouterSoftmaxWithoutBiasBf16LogitsMatchesCpu() =>
        CompareRouting(9, 64, false, new MoeRouterConfig { Scoring = MoeScoring.Softmax, NGroup = 4, TopKGroup = 2, TopK = 6, NormTopKProb = false, RoutedScalingFactor = 1.5f }, DType.BFloat16, 3);

    [Test]
    public void RouterHandlesTiesAndNaNLikeCpu()
    {
        var cuda = CudaTestBackends.Get();
        const int e = 512, t = 3;
        var config = new MoeRouterConfig { NGroup = 1, TopKGroup = 1, TopK = 16 };
        var logits = new float[t * e];
        for (int i = 0; i < e; i++) logits[e + i] = i % 3 == 0 ? float.NaN : 1f; // row 1: ties everywhere
        for (int i = 0; i < e; i++) logits[2 * e + i] = (i % 7) - 3f;            // row 2: repeated values
        var expected = Route(CpuBackend.Default, logits, t, e, null, config, DType.Float32);
        var actual = Route(cuda, logits, t, e, null, config, DType.Float32);
        Assert.That(actual.Ids, Is.EqualTo(expected.Ids));
        Assert.That(actual.Weights, Is.EqualTo(expected.Weights).Within(1e-5).Percent);
    }

    // ---- gather / combine ----

    private static int[] RandomIds(int t, int k, int e, Random rng)
    {
        var ids = new int[t * k];
        for (int i = 0; i < t; i++)
        {
            var chosen = Enumerable.Range(0, e).OrderBy(_ => rng.Next()).Take(k).ToArray();
            for (int j = 0; j < k; j++) ids[i * k + j] = j == k - 1 && i % 4 == 1 ? -1 : chosen[j];
        }
        return ids;
    }

    [TestCase(DType.Float32, DType.Float32)]
    [TestCase(DType.BFloat16, DType.UE8M0)]
    public void GatherWithFusedQuantizationMatchesCpu(DType inputType, DType scaleType)
    {
        var cuda = CudaTestBackends.Get();
        const int t = 6, k = 3, e = 5, width = 300;
        var rng = new Random(17);
        var x = Gaussian(t * width, rng, 3.0);
        x[7] = float.NaN;
        var ids = RandomIds(t, k, e, rng);
        int capacity = MoePermutation.ContiguousCapacity(t, k, e, 16);
        var offsets = new int[e + 1];
        var mIndices = new int[capacity];
        var rowTokens = new int[capacity];
        var inverse = new int[t * k];
        MoePermutation.BuildContiguous(ids, k, e, 16, offsets, mIndices, rowTokens, inverse);
        int groups = (width + 127) / 128;

        (byte[] Rows, byte[] Scales, byte[] Plain) Run(Backend backend)
        {
            using var input = inputType == DType.Float32 ? Put(backend, x, DType.Float32, t, width) : Put(backend, x.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, t, width);
            using var inv = Put(backend, inverse, DType.Int32, t, k);
            using var rows = backend.Allocate(DType.Float8E4M3, capacity, width);
            using var scales = backend.Allocate(scaleType, capacity, groups);
            using var plain = backend.Allocate(inputType, capacity, width);
            backend.Zero(rows);
            backend.Zero(scales);
            backend.Zero(plain);
            MoePermutation.Gather(backend, input, inv, rows, scales);
            MoePermutation.Gather(backend, input, inv, plain);
            backend.Synchronize();
            return (backend.Download<byte>(rows), backend.Download<byte>(scales), backend.Download<byte>(plain));
        }

        var expected = Run(CpuBackend.Default);
        var actual = Run(cuda);
        Assert.That(actual.Rows, Is.EqualTo(expected.Rows), "FP8 rows");
        Assert.That(actual.Scales, Is.EqualTo(expected.Scales), "row scales");
        Assert.That(actual.Plain, Is.EqualTo(expected.Plain), "plain rows");
    }

    [TestCase(true, DType.Float32)]
    [TestCase(false, DType.BFloat16)]
    public void CombineMatchesCpu(bool withShared, DType dtype)
    {
        var cuda = CudaTestBackends.Get();
        const int t = 7, k = 4, e = 6, width = 260;
        var rng = new Random(23);
        var ids = RandomIds(t, k, e, rng);
        var maskedM = new int[e];
        var rowTokens = new int[e * t];
        var inverse = new int[t * k];
        MoePermutation.BuildMasked(ids, k, e, t, maskedM, rowTokens, inverse);
        var expertOut = Gaussian(e * t * width, rng);
        var weights = Gaussian(t * k, rng);
        var shared = Gaussian(t * width, rng);

        float[] Run(Backend backend)
        {
            using var eo = dtype == DType.Float32 ? Put(backend, expertOut, DType.Float32, e * t, width) : Put(backend, expertOut.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, e * t, width);
            using var inv = Put(backend, inverse, DType.Int32, t, k);
            using var w = Put(backend, weights, DType.Float32, t, k);
            using var sh = withShared ? Put(backend, shared, DType.Float32, t, width) : null;
            using var output = backend.Allocate(dtype, t, width);
            MoePermutation.Combine(backend, eo, inv, w, sh?.View, output);
            backend.Synchronize();
            return ReadFloats(backend, output);
        }

        var expected = Run(CpuBackend.Default);
        var actual = Run(cuda);
        Assert.That(actual, Is.EqualTo(expected).Within(dtype == DType.Float32 ? 1e-4 : 0.05)); // BF16: one ulp at |x| < 8
        Assert.That(CalcDiff(actual, expected), Is.LessThan(1e-6));
    }

    [Test]
    public void LayoutsBuiltOnTheCudaBackendMatchCpu()
    {
        var cuda = CudaTestBackends.Get();
        const int t = 9, k = 3, e = 5, align = 8;
        var ids = RandomIds(t, k, e, new Random(4));
        int capacity = MoePermutation.ContiguousCapacity(t, k, e, align);

        (int Used, int[] Offsets, int[] MIndices, int[] RowTokens, int[] Inverse) Build(Backend backend)
        {
            using var idsView = Put(backend, ids, DType.Int32, t, k);
            using var offsets = backend.Allocate(DType.Int32, e + 1);
            using var mIndices = backend.Allocate(DType.Int32, capacity);
            using var rowTokens = backend.Allocate(DType.Int32, capacity);
            using var inverse = backend.Allocate(DType.Int32, t, k);
            int used = MoePermutation.BuildContiguous(backend, idsView, e, align, offsets, mIndices, rowTokens, inverse);
            return (used, backend.Download<int>(offsets), backend.Download<int>(mIndices), backend.Download<int>(rowTokens), backend.Download<int>(inverse));
        }

        var expected = Build(CpuBackend.Default);
        var actual = Build(cuda);
        // Built on the device, the host gets a bound (multiple of the alignment) instead of the exact count.
        Assert.That(actual.Used, Is.EqualTo(CudaBackend.DeviceContiguousRows(t, k, e, align)).And.GreaterThanOrEqualTo(expected.Used));
        Assert.That(actual.Offsets, Is.EqualTo(expected.Offsets));
        Assert.That(actual.MIndices, Is.EqualTo(expected.MIndices));
        Assert.That(actual.RowTokens, Is.EqualTo(expected.RowTokens));
        Assert.That(actual.Inverse, Is.EqualTo(expected.Inverse));
    }

    [Test]
    public void GatherRejectsAnOutOfRangeDeviceInverseMap()
    {
        var cuda = CudaTestBackends.Get();
        cuda.ThrowIfDeviceRoutingError();
        using var input = Put(cuda, Enumerable.Repeat(1f, 256).ToArray(), DType.Float32, 2, 128);
        using var inv = Put(cuda, new[] { 0, 1, 2, 9 }, DType.Int32, 2, 2);
        using var rows = Put(cuda, Enumerable.Repeat(-3f, 512).ToArray(), DType.Float32, 4, 128);
        // Default: the map stays on the device; the kernel skips the bad entry and records it.
        MoePermutation.Gather(cuda, input, inv, rows);
        var written = cuda.Download<float>(rows);
        Assert.That(written.Take(384), Is.All.EqualTo(1f), "rows 0..2 written");
        Assert.That(written.Skip(384), Is.All.EqualTo(-3f), "row 3 is named by no valid entry");
        var recorded = Assert.Throws<ArgumentException>(cuda.ThrowIfDeviceRoutingError);
        Assert.That(recorded!.Message, Does.Contain("inverse").And.Contain("got 9 at flat index 3"));
        // Validation mode: the map is downloaded and checked before the launch.
        cuda.ValidateDeviceRouting = true;
        try
        {
            var ex = Assert.Throws<ArgumentException>(() => MoePermutation.Gather(cuda, input, inv, rows));
            Assert.That(ex!.Message, Does.Contain("inverse").And.Contain("9"));
        }
        finally
        {
            cuda.ValidateDeviceRouting = false;
        }
    }

    // ---- grouped GEMM ----

    private static float[] RunContiguous(Backend backend, byte[] a, float[] sa, int[] mIndices, byte[] b, float[] sb, int g, int m, int n, int k, DType output)
    {
        int kb = (k + 127) / 128, nb = (n + 127) / 128;
        using var av = Put(backend, a, DType.Float8E4M3, m, k);
        using var sav = Put(backend, sa, DType.Float32, m, kb);
        using var mi = Put(backend, mIndices, DType.Int32, m);
        using var bv = Put(backend, b, DType.Float8E4M3, g, n, k);
        using var sbv = Put(backend, sb, DType.Float32, g, nb, kb);
        using var d = output == DType.Float32 ? Put(backend, Enumerable.Repeat(-7f, m * n).ToArray(), DType.Float32, m, n)
                                              : Put(backend, Enumerable.Repeat(BFloat16.ToRaw(-7f), m * n).ToArray(), DType.BFloat16, m, n);
        GroupedFp8Gemm.Contiguous(backend, av, sav, mi, bv, sbv, d);
        backend.Synchronize();
        return ReadFloats(backend, d);
    }

    [TestCase(true, DType.Float32)]
    [TestCase(false, DType.BFloat16)]
    public void GroupedContiguousMatchesCpu(bool aligned, DType output)
    {
        var cuda = CudaTestBackends.Get();
        const int g = 4, n = 136, k = 272;
        var rng = new Random(aligned ? 1 : 2);
        int[] mIndices;
        if (aligned)
        {
            // MoePermute's layout: segments aligned to 128, expert 2 empty, padding rows -1.
            int[] counts = [5, 130, 0, 1];
            var list = new List<int>();
            for (int e = 0; e < g; e++)
            {
                for (int i = 0; i < counts[e]; i++) list.Add(e);
                while (list.Count % 128 != 0 && counts[e] > 0) list.Add(-1);
            }
            mIndices = [.. list];
        }
        else
        {
            // Any row order: tiles mixing experts and padding.
            mIndices = Enumerable.Range(0, 150).Select(_ => rng.Next(-1, g)).ToArray();
        }
        int m = mIndices.Length, kb = (k + 127) / 128, nb = (n + 127) / 128;
        var a = Fp8Codes(m * k, rng);
        var sa = Scales(m * kb, rng);
        var b = Fp8Codes(g * n * k, rng);
        var sb = Scales(g * nb * kb, rng);
        var expected = RunContiguous(CpuBackend.Default, a, sa, mIndices, b, sb, g, m, n, k, output);
        var actual = RunContiguous(cuda, a, sa, mIndices, b, sb, g, m, n, k, output);
        for (int r = 0; r < m; r++)
        {
            if (mIndices[r] >= 0) continue;
            for (int c = 0; c < n; c++)
                if (actual[r * n + c] != -7f) Assert.Fail($"padding row {r} was written (column {c}: {actual[r * n + c]})");
        }
        Assert.That(CalcDiff(actual, expected), Is.LessThan(output == DType.Float32 ? 1e-6 : 1e-4));
    }

    [Test]
    public void GroupedMaskedMatchesCpu()
    {
        var cuda = CudaTestBackends.Get();
        const int g = 3, mMax = 136, n = 72, k = 160;
        int[] maskedM = [5, 0, 136];
        var rng = new Random(8);
        int kb = (k + 127) / 128, nb = (n + 127) / 128;
        var a = Fp8Codes(g * mMax * k, rng);
        var sa = Scales(g * mMax * kb, rng);
        var b = Fp8Codes(g * n * k, rng);
        var sb = Scales(g * nb * kb, rng);

        float[] Run(Backend backend)
        {
            using var av = Put(backend, a, DType.Float8E4M3, g, mMax, k);
            using var sav = Put(backend, sa, DType.Float32, g, mMax, kb);
            using var mm = Put(backend, maskedM, DType.Int32, g);
            using var bv = Put(backend, b, DType.Float8E4M3, g, n, k);
            using var sbv = Put(backend, sb, DType.Float32, g, nb, kb);
            using var d = Put(backend, Enumerable.Repeat(-7f, g * mMax * n).ToArray(), DType.Float32, g, mMax, n);
            GroupedFp8Gemm.Masked(backend, av, sav, mm, bv, sbv, d, expectedM: 47);
            backend.Synchronize();
            return ReadFloats(backend, d);
        }

        var expected = Run(CpuBackend.Default);
        var actual = Run(cuda);
        for (int e = 0; e < g; e++)
            for (int r = maskedM[e]; r < mMax; r++)
                Assert.That(actual[(e * mMax + r) * n], Is.EqualTo(-7f), $"row {r} of expert {e} is past masked_m and must stay untouched");
        Assert.That(CalcDiff(actual, expected), Is.LessThan(1e-6));
    }
}
