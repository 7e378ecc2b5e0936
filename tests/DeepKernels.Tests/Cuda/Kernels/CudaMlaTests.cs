using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Cuda.Kernels;

/// <summary>The CUDA latent-cache write and split-KV MLA decode against the CPU backend.</summary>
[Category("Cuda")]
public class CudaMlaTests
{
    private const int D = 576, Lat = 512;
    private const float Scale = 0.1352338f;

    /// <summary>
    /// A cache on <paramref name="backend"/> whose bytes start as 0xFF (NaN in every format),
    /// filled by the same appends (two per sequence, so the second starts mid-page) on every
    /// backend: the allocator is deterministic, so page assignment matches too.
    /// </summary>
    internal static (PagedLatentCache Cache, int[] Table, int MaxPages) Build(Backend backend, int[] lens, int pageSize, LatentCacheLayout layout, int seed)
    {
        var rng = new Random(seed);
        int pages = 2;
        foreach (int l in lens) pages += (l + pageSize - 1) / pageSize;
        var cache = new PagedLatentCache(backend, pages, pageSize, layout);
        var poison = new byte[cache.Storage.ByteCount];
        poison.AsSpan().Fill(0xFF);
        backend.CopyFromHost(poison, cache.Storage);
        var seqs = new int[lens.Length];
        for (int b = 0; b < lens.Length; b++) seqs[b] = cache.Allocator.CreateSequence();
        for (int b = lens.Length - 1; b >= 0; b--)
        {
            // Sequences appended in reverse order: their pages are not in batch order.
            int first = lens[b] / 3;
            cache.Append(seqs[b], Gaussian(first * D, rng));
            cache.Append(seqs[b], Gaussian((lens[b] - first) * D, rng));
        }
        int maxPages = cache.Allocator.MaxPages(seqs) + 1;
        var table = new int[lens.Length * maxPages];
        var got = new int[lens.Length];
        cache.Allocator.ExportBlockTable(seqs, maxPages, table, got);
        Assert.That(got, Is.EqualTo(lens));
        return (cache, table, maxPages);
    }

    [TestCase(LatentCacheLayout.BFloat16, 16)]
    [TestCase(LatentCacheLayout.Fp8, 32)]
    public void CacheWriteMatchesCpuBitForBit(LatentCacheLayout layout, int pageSize)
    {
        var cuda = CudaTestBackends.Get();
        int[] lens = [1, 20, 45];
        var (cpuCache, _, _) = Build(CpuBackend.Default, lens, pageSize, layout, 3);
        var (cudaCache, _, _) = Build(cuda, lens, pageSize, layout, 3);
        using (cpuCache)
        using (cudaCache)
        {
            cuda.Synchronize();
            var expected = CpuBackend.Default.Download<byte>(cpuCache.Storage);
            var actual = cuda.Download<byte>(cudaCache.Storage);
            int record = cpuCache.BytesPerToken;
            for (int i = 0; i < expected.Length; i++)
            {
                if (actual[i] != expected[i])
                    Assert.Fail($"slot {i / record}, byte {i % record}: CUDA 0x{actual[i]:x2}, CPU 0x{expected[i]:x2}");
            }
        }
    }

    internal static (float[] Out, float[] Lse) Decode(Backend backend, PagedLatentCache cache, int[] table, int maxPages, int[] lens, float[] q,
        DType qType, int sQ, int hQ, bool causal, DType outType)
    {
        int b = lens.Length;
        using var qv = qType == DType.Float32 ? Put(backend, q, DType.Float32, b, sQ, hQ, D) : Put(backend, q.Select(BFloat16.ToRaw).ToArray(), DType.BFloat16, b, sQ, hQ, D);
        using var tv = Put(backend, table, DType.Int32, b, maxPages);
        using var lv = Put(backend, lens, DType.Int32, b);
        using var output = backend.Allocate(outType, b, sQ, hQ, Lat);
        using var lse = backend.Allocate(DType.Float32, b, hQ, sQ);
        var schedule = MlaDecode.CreateSchedule(backend, lens, cache.PageSize);
        MlaDecode.Run(backend, qv, cache, tv, lv, Scale, causal, output, lse, schedule);
        backend.Synchronize();
        return (ReadFloats(backend, output), backend.Download<float>(lse));
    }

    internal static void Compare(int[] lens, int pageSize, LatentCacheLayout layout, int sQ, int hQ, bool causal, DType qType, DType outType, int seed)
    {
        var cuda = CudaTestBackends.Get();
        var (cpuCache, table, maxPages) = Build(CpuBackend.Default, lens, pageSize, layout, seed);
        var (cudaCache, cudaTable, _) = Build(cuda, lens, pageSize, layout, seed);
        using (cpuCache)
        using (cudaCache)
        {
            Assert.That(cudaTable, Is.EqualTo(table), "both caches got the same pages");
            var q = Gaussian(lens.Length * sQ * hQ * D, new Random(seed + 1));
            var expected = Decode(CpuBackend.Default, cpuCache, table, maxPages, lens, q, qType, sQ, hQ, causal, outType);
            var actual = Decode(cuda, cudaCache, table, maxPages, lens, q, qType, sQ, hQ, causal, outType);
            AssertAllFinite(actual.Out, "out");
            // The kernel rounds Q (FP32 input), P and FP8-dequantized K/V to BF16 for the tensor
            // cores; the CPU keeps FP32. A BF16 rounding of q or K moves a logit of these unit
            // Gaussian 576-vectors by ~3e-3 rms (x 0.135 scale), so the LSE bounds are a few of those.
            bool fp8 = layout == LatentCacheLayout.Fp8;
            double outBound = fp8 ? 1e-4 : 2e-5;
            double lseBound = (fp8 ? 3e-2 : 5e-3) + (qType == DType.Float32 ? 3e-2 : 0);
            Assert.That(CalcDiff(actual.Out, expected.Out), Is.LessThan(outBound), "out calc_diff");
            for (int i = 0; i < expected.Lse.Length; i++)
            {
                if (float.IsPositiveInfinity(expected.Lse[i])) Assert.That(actual.Lse[i], Is.EqualTo(float.PositiveInfinity), $"lse[{i}] of a row that sees no key");
                else Assert.That(actual.Lse[i], Is.EqualTo(expected.Lse[i]).Within(lseBound), $"lse[{i}]");
            }
            for (int bi = 0; bi < lens.Length; bi++)
            {
                if (lens[bi] != 0) continue;
                for (int i = 0; i < sQ * hQ * Lat; i++)
                    Assert.That(actual.Out[bi * sQ * hQ * Lat + i], Is.EqualTo(0f), $"out of empty sequence {bi}");
            }
        }
    }

    [Test]
    public void VariableLengthsBf16CacheMatchCpu() =>
        Compare([0, 1, 17, 64, 100], 16, LatentCacheLayout.BFloat16, 1, 3, false, DType.BFloat16, DType.Float32, 31);

    [Test]
    public void CausalMtpManyHeadsMatchCpu() =>
        Compare([5, 40], 32, LatentCacheLayout.BFloat16, 2, 16, true, DType.Float32, DType.BFloat16, 7);

    [Test]
    public void MoreThan64QueryRowsMatchCpu() =>
        Compare([30], 16, LatentCacheLayout.BFloat16, 1, 70, false, DType.BFloat16, DType.Float32, 5);

    [TestCase(16, false)]
    [TestCase(64, true)]
    public void Fp8CacheMatchesCpu(int pageSize, bool causal) =>
        Compare([3, 33, 70], pageSize, LatentCacheLayout.Fp8, causal ? 2 : 1, 4, causal, DType.BFloat16, DType.Float32, pageSize);
}
