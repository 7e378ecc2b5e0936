using DeepKernels.Backends.Cpu;
using DeepKernels.Formats;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Mla;

public class PagedLatentCacheTests
{
    private static float[] RandomLatents(int tokens, int seed)
    {
        var rng = new Random(seed);
        var x = new float[tokens * 576];
        for (int i = 0; i < x.Length; i++) x[i] = (float)((rng.NextDouble() - 0.5) * 4);
        return x;
    }

    [Test]
    public void ByteLayoutSizes()
    {
        Assert.That(LatentCacheFormat.BFloat16BytesPerToken, Is.EqualTo(1152));
        Assert.That(LatentCacheFormat.Fp8BytesPerToken, Is.EqualTo(656));
        Assert.That((LatentCacheFormat.Fp8ScalesOffset, LatentCacheFormat.Fp8RopeOffset), Is.EqualTo((512, 528)));
        using var cache = new PagedLatentCache(CpuBackend.Default, 3, 32, LatentCacheLayout.Fp8);
        Assert.That(cache.Storage.Shape, Is.EqualTo(new long[] { 3, 32, 656 }));
        using var bf = new PagedLatentCache(CpuBackend.Default, 3, 32);
        Assert.That(bf.Storage.Shape, Is.EqualTo(new long[] { 3, 32, 576 }));
        Assert.That(bf.Storage.DType, Is.EqualTo(DType.BFloat16));
    }

    [Test]
    public void Bf16WriteRoundsEveryValueToNearestEven()
    {
        using var cache = new PagedLatentCache(CpuBackend.Default, 4, 16);
        int s = cache.Allocator.CreateSequence();
        var x = RandomLatents(21, 1);
        cache.Append(s, x.AsSpan(0, 5 * 576));
        cache.Append(s, x.AsSpan(5 * 576));
        var back = cache.ReadLatents(s);
        for (int i = 0; i < x.Length; i++)
        {
            double expected = (double)x[i];
            double ulp = Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(expected))) - 7);
            Assert.That(Math.Abs(back[i] - expected), Is.LessThanOrEqualTo(ulp / 2), $"value {i}");
            Assert.That(back[i], Is.EqualTo(BFloat16.ToSingle(BFloat16.ToRaw(x[i]))));
        }
    }

    [Test]
    public void Fp8WriteMatchesFloat64GroupQuantization()
    {
        using var cache = new PagedLatentCache(CpuBackend.Default, 2, 16, LatentCacheLayout.Fp8);
        int s = cache.Allocator.CreateSequence();
        var x = RandomLatents(20, 2);
        for (int i = 128; i < 256; i++) x[576 + i] = 0; // an all-zero group of token 1 -> scale 1e-4/448
        cache.Append(s, x);
        var back = cache.ReadLatents(s);
        var slot = new int[1];
        for (int t = 0; t < 20; t++)
        {
            cache.Allocator.GetSlots(s, t, slot);
            var rec = cache.Storage.AsSpan<byte>().Slice(slot[0] * 656, 656);
            for (int g = 0; g < 4; g++)
            {
                double amax = 0;
                for (int i = 0; i < 128; i++) amax = Math.Max(amax, Math.Abs((double)x[t * 576 + g * 128 + i]));
                double scale = (float)(Math.Max(amax, 1e-4f) / 448.0);
                float stored = BitConverter.ToSingle(rec.Slice(512 + 4 * g, 4));
                Assert.That((double)stored, Is.EqualTo(scale), $"token {t} group {g} scale");
                for (int i = 0; i < 128; i++)
                {
                    int j = t * 576 + g * 128 + i;
                    double target = x[j] / scale;
                    double spacing = Math.Abs(target) < 1.0 / 64 ? 1.0 / 512 : Math.Pow(2, Math.Floor(Math.Log2(Math.Abs(target))) - 3);
                    Assert.That(Math.Abs(back[j] / scale - target), Is.LessThanOrEqualTo(spacing / 2 * (1 + 1e-6)), $"token {t} value {g * 128 + i}");
                }
            }
            for (int i = 512; i < 576; i++)
                Assert.That(back[t * 576 + i], Is.EqualTo(BFloat16.ToSingle(BFloat16.ToRaw(x[t * 576 + i]))), $"token {t} rope {i}");
        }
    }

    [Test]
    public void ForkCopiesPartialPageAndKeepsBothSequencesIntact()
    {
        foreach (var layout in new[] { LatentCacheLayout.BFloat16, LatentCacheLayout.Fp8 })
        {
            using var cache = new PagedLatentCache(CpuBackend.Default, 8, 16, layout);
            int parent = cache.Allocator.CreateSequence();
            var x = RandomLatents(40, 3);
            cache.Append(parent, x.AsSpan(0, 37 * 576));
            var before = cache.ReadLatents(parent);
            int child = cache.Fork(parent);
            Assert.That(cache.ReadLatents(child), Is.EqualTo(before), $"{layout}: child sees the parent's tokens");
            // The child's divergent tokens must not show up in the parent (its last page is private).
            cache.Append(child, x.AsSpan(37 * 576, 3 * 576));
            cache.Append(parent, RandomLatents(3, 4));
            var parentNow = cache.ReadLatents(parent);
            var childNow = cache.ReadLatents(child);
            Assert.That(parentNow.AsSpan(0, before.Length).ToArray(), Is.EqualTo(before), layout.ToString());
            Assert.That(childNow.AsSpan(0, before.Length).ToArray(), Is.EqualTo(before), layout.ToString());
            Assert.That(childNow.AsSpan(37 * 576).ToArray(), Is.Not.EqualTo(parentNow.AsSpan(37 * 576).ToArray()));
        }
    }

    [Test]
    public void WriteRejectsBadInputBeforeTouchingTheCache()
    {
        using var cache = new PagedLatentCache(CpuBackend.Default, 2, 16);
        int s = cache.Allocator.CreateSequence();
        Assert.Throws<ArgumentException>(() => cache.Append(s, new float[575]));
        Assert.That(cache.Allocator.Length(s), Is.EqualTo(0));
        using var lat = CpuBackend.Default.Allocate(DType.Float32, 1, 576);
        Assert.Throws<ArgumentOutOfRangeException>(() => MlaCacheWrite.Write(CpuBackend.Default, cache, lat, [32]));
        Assert.Throws<ArgumentException>(() => MlaCacheWrite.Write(CpuBackend.Default, cache, lat, [0, 1]));
        using var wrong = CpuBackend.Default.Allocate(DType.Float32, 1, 512);
        Assert.Throws<ArgumentException>(() => MlaCacheWrite.Write(CpuBackend.Default, cache, wrong, [0]));
        Assert.Throws<ArgumentException>(() => _ = new PagedLatentCache(CpuBackend.Default, 2, 24));
    }

    [Test]
    public void ConcurrentAppendsLandInTheirOwnSlots()
    {
        const int sequences = 8, rounds = 12;
        using var cache = new PagedLatentCache(CpuBackend.Default, 64, 16);
        var ids = Enumerable.Range(0, sequences).Select(_ => cache.Allocator.CreateSequence()).ToArray();
        // Token value = 8 * sequence + position / 8: distinct per (sequence, position), checked after BF16 rounding.
        var locks = ids.Select(_ => new object()).ToArray();
        Parallel.For(0, sequences * rounds, new ParallelOptions { MaxDegreeOfParallelism = 4 }, i =>
        {
            int s = i % sequences, n = 1 + i % 3;
            lock (locks[s]) // appends to one sequence are ordered; different sequences race freely
            {
                int start = cache.Allocator.Length(ids[s]);
                var x = new float[n * 576];
                for (int t = 0; t < n; t++) x.AsSpan(t * 576, 576).Fill(s * 8 + (start + t) / 8f);
                Assert.That(cache.Append(ids[s], x), Is.EqualTo(start));
            }
        });
        for (int s = 0; s < sequences; s++)
        {
            var back = cache.ReadLatents(ids[s]);
            for (int t = 0; t < back.Length / 576; t++)
                Assert.That(back[t * 576 + 300], Is.EqualTo(BFloat16.ToSingle(BFloat16.ToRaw(s * 8 + t / 8f))), $"sequence {s} token {t}");
        }
    }
}
