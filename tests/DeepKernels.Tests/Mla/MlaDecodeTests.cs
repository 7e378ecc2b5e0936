using DeepKernels.Backends.Cpu;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.MlaDecode;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Mla;

public class MlaDecodeTests
{
    private const int D = 576, Lat = 512;
    private const float Scale = 0.1352338f;

    private sealed record Setup(PagedLatentCache Cache, int[] Seqs, int[] Table, int MaxPages, int[] Lens, List<float[]> Kv) : IDisposable
    {
        public void Dispose() => Cache.Dispose();
    }

    /// <summary>A cache whose every byte starts as NaN, pages handed out in random order, random latents.</summary>
    private static Setup Build(int[] lens, int pageSize, LatentCacheLayout layout, int seed, int extraPages = 3)
    {
        var rng = new Random(seed);
        int pages = extraPages;
        foreach (int l in lens) pages += (l + pageSize - 1) / pageSize;
        var cache = new PagedLatentCache(CpuBackend.Default, pages, pageSize, layout);
        MlaReference.Bytes(cache.Storage).Fill(0xFF); // NaN as BF16, as E4M3 and as FP32 scale
        MlaReference.ScrambleFreeList(cache.Allocator, rng);
        var seqs = new int[lens.Length];
        for (int b = 0; b < lens.Length; b++)
        {
            seqs[b] = cache.Allocator.CreateSequence();
            // Two appends so the second starts mid-page.
            int first = lens[b] / 3;
            cache.Append(seqs[b], MlaReference.Random(first * D, rng));
            cache.Append(seqs[b], MlaReference.Random((lens[b] - first) * D, rng));
        }
        int maxPages = cache.Allocator.MaxPages(seqs) + 1;
        var table = new int[lens.Length * maxPages];
        var got = new int[lens.Length];
        cache.Allocator.ExportBlockTable(seqs, maxPages, table, got);
        Assert.That(got, Is.EqualTo(lens));
        var kv = seqs.Select(cache.ReadLatents).ToList();
        return new Setup(cache, seqs, table, maxPages, lens, kv);
    }

    private static (float[] Out, float[] Lse) Run(Setup s, float[] q, int sQ, int hQ, bool causal, MlaSchedule? schedule = null)
    {
        int b = s.Lens.Length;
        var output = new float[b * sQ * hQ * Lat];
        var lse = new float[b * hQ * sQ];
        output.AsSpan().Fill(float.NaN);
        MlaDecode.Run(s.Cache, q, b, sQ, hQ, s.Table, s.Lens, Scale, causal, output, lse, schedule);
        return (output, lse);
    }

    private static void CheckAgainstReference(Setup s, int sQ, int hQ, bool causal, int seed, MlaSchedule? schedule = null)
    {
        var q = MlaReference.Random(s.Lens.Length * sQ * hQ * D, new Random(seed));
        var (output, lse) = Run(s, q, sQ, hQ, causal, schedule);
        var (refOut, refLse) = MlaReference.Decode(q, s.Lens.Length, sQ, hQ, s.Kv, s.Lens, Scale, causal);
        MlaReference.AssertClose(output, refOut, "out");
        MlaReference.AssertClose(lse, refLse, "lse");
    }

    [TestCase(LatentCacheLayout.BFloat16, 64)]
    [TestCase(LatentCacheLayout.Fp8, 64)]
    [TestCase(LatentCacheLayout.BFloat16, 16)]
    [TestCase(LatentCacheLayout.Fp8, 256)]
    public void VariableLengthsMatchFloat64Reference(LatentCacheLayout layout, int pageSize)
    {
        using var s = Build([0, 1, pageSize - 1, pageSize, pageSize + 1, 2 * pageSize, 300, 0], pageSize, layout, 11);
        CheckAgainstReference(s, 1, 4, false, 12);
    }

    [Test]
    public void EmptySequenceGivesZeroOutAndInfiniteLse()
    {
        using var s = Build([0, 5], 64, LatentCacheLayout.BFloat16, 3);
        var q = MlaReference.Random(2 * 3 * D, new Random(4));
        var (output, lse) = Run(s, q, 1, 3, false);
        Assert.That(output.AsSpan(0, 3 * Lat).ToArray(), Is.All.EqualTo(0f));
        Assert.That(lse.AsSpan(0, 3).ToArray(), Is.All.EqualTo(float.PositiveInfinity));
        Assert.That(lse.AsSpan(3, 3).ToArray(), Is.All.Matches<float>(float.IsFinite));
    }

    [Test]
    public void LongSequenceMatchesReference()
    {
        using var s = Build([4096, 77], 64, LatentCacheLayout.BFloat16, 21);
        CheckAgainstReference(s, 1, 2, false, 22);
    }

    [TestCase(LatentCacheLayout.BFloat16)]
    [TestCase(LatentCacheLayout.Fp8)]
    public void CausalMultiTokenQueriesMatchReference(LatentCacheLayout layout)
    {
        using var s = Build([1, 2, 3, 64, 65, 129, 200], 64, layout, 31);
        CheckAgainstReference(s, 2, 16, true, 32);
        // Causal masking matters: without it the first query of each row sees one more key.
        var q = MlaReference.Random(s.Lens.Length * 2 * 16 * D, new Random(32));
        var (causalOut, _) = Run(s, q, 2, 16, true);
        var (fullOut, _) = Run(s, q, 2, 16, false);
        Assert.That(causalOut, Is.Not.EqualTo(fullOut));
    }

    [TestCase(1, new[] { 1, 70, 200 })]
    [TestCase(16, new[] { 1, 70, 200 })]
    [TestCase(128, new[] { 5, 70 })]
    public void HeadCountsMatchReference(int hQ, int[] lens)
    {
        using var s = Build(lens, 64, LatentCacheLayout.BFloat16, 40 + hQ);
        CheckAgainstReference(s, 1, hQ, false, 41 + hQ);
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(16)]
    public void SplitKvCombineMatchesReference(int workers)
    {
        int[] lens = [700, 1, 0, 64, 333];
        using var s = Build(lens, 32, LatentCacheLayout.BFloat16, 50);
        var schedule = MlaSchedule.Create(lens, 32, workers);
        if (workers == 16) Assert.That(schedule.NumChunks, Is.GreaterThan(lens.Length), "expected split sequences");
        CheckAgainstReference(s, 2, 4, true, 51, schedule);
    }

    [Test]
    public void Bf16QueryAndOutputPaths()
    {
        int[] lens = [90, 3];
        using var s = Build(lens, 64, LatentCacheLayout.BFloat16, 60);
        var be = CpuBackend.Default;
        int hQ = 8;
        var qf = MlaReference.Random(2 * hQ * D, new Random(61));
        var qb = qf.Select(v => DeepKernels.Formats.BFloat16.ToRaw(v)).ToArray();
        var qRounded = qb.Select(DeepKernels.Formats.BFloat16.ToSingle).ToArray();
        using var qt = be.Upload<ushort>(qb, DType.BFloat16, 2, 1, hQ, D);
        using var table = be.Upload<int>(s.Table, DType.Int32, 2, s.MaxPages);
        using var seqlens = be.Upload<int>(lens, DType.Int32, 2);
        using var output = be.Allocate(DType.BFloat16, 2, 1, hQ, Lat);
        using var lse = be.Allocate(DType.Float32, 2, hQ, 1);
        MlaDecode.Run(be, qt, s.Cache, table, seqlens, Scale, false, output, lse, sequenceIds: s.Seqs);
        var (refOut, refLse) = MlaReference.Decode(qRounded, 2, 1, hQ, s.Kv, lens, Scale, false);
        var got = be.Download<ushort>(output).Select(DeepKernels.Formats.BFloat16.ToSingle).ToArray();
        MlaReference.AssertClose(got, refOut, "bf16 out");
        MlaReference.AssertClose(be.Download<float>(lse), refLse, "lse");
    }

    [Test]
    public void Fp8PagesAgreeWithBf16PagesWithinFp8Error()
    {
        int[] lens = [1, 64, 257, 600];
        var rng = new Random(70);
        using var bf = new PagedLatentCache(CpuBackend.Default, 20, 64, LatentCacheLayout.BFloat16);
        using var f8 = new PagedLatentCache(CpuBackend.Default, 20, 64, LatentCacheLayout.Fp8);
        var seqs = new int[lens.Length];
        for (int b = 0; b < lens.Length; b++)
        {
            var x = MlaReference.Random(lens[b] * D, rng);
            seqs[b] = bf.Allocator.CreateSequence();
            Assert.That(f8.Allocator.CreateSequence(), Is.EqualTo(seqs[b]));
            bf.Append(seqs[b], x);
            f8.Append(seqs[b], x);
        }
        int maxPages = bf.Allocator.MaxPages(seqs);
        var table = new int[lens.Length * maxPages];
        var got = new int[lens.Length];
        bf.Allocator.ExportBlockTable(seqs, maxPages, table, got);
        int hQ = 16;
        var q = MlaReference.Random(lens.Length * hQ * D, rng);
        var outBf = new float[lens.Length * hQ * Lat];
        var outF8 = new float[outBf.Length];
        var lseBf = new float[lens.Length * hQ];
        var lseF8 = new float[lseBf.Length];
        MlaDecode.Run(bf, q, lens.Length, 1, hQ, table, lens, Scale, false, outBf, lseBf);
        MlaDecode.Run(f8, q, lens.Length, 1, hQ, table, lens, Scale, false, outF8, lseF8);
        double diff = MlaReference.CalcDiff(outF8.Select(v => (double)v).ToArray(), outBf.Select(v => (double)v).ToArray());
        Assert.That(diff, Is.LessThan(2e-3), "FP8 pages vs BF16 pages");
        Assert.That(diff, Is.GreaterThan(0), "FP8 pages are really quantized");
        for (int i = 0; i < lseBf.Length; i++) Assert.That(lseF8[i], Is.EqualTo(lseBf[i]).Within(0.05), $"lse {i}");
    }

    [Test]
    public void ScheduleCoversEveryTokenOnceAndBalancesWithinOnePage()
    {
        var rng = new Random(80);
        foreach (int workers in new[] { 1, 2, 3, 7, 64, 132 })
        {
            foreach (int page in new[] { 16, 64 })
            {
                var lens = Enumerable.Range(0, rng.Next(1, 20)).Select(_ => rng.Next(4) == 0 ? 0 : rng.Next(1, 3000)).ToArray();
                var sch = MlaSchedule.Create(lens, page, workers);
                var covered = lens.Select(l => new int[l]).ToArray();
                var workerPages = new long[workers];
                for (int w = 0; w < workers; w++)
                {
                    for (int c = sch.WorkerChunkOffsets[w]; c < sch.WorkerChunkOffsets[w + 1]; c++)
                    {
                        int b = sch.ChunkBatch[c];
                        Assert.That(sch.ChunkStart[c] % page, Is.EqualTo(0));
                        Assert.That(c, Is.InRange(sch.SequenceChunkOffsets[b], sch.SequenceChunkOffsets[b + 1] - 1));
                        for (int t = sch.ChunkStart[c]; t < sch.ChunkEnd[c]; t++) covered[b][t]++;
                        workerPages[w] += (sch.ChunkEnd[c] - sch.ChunkStart[c] + page - 1) / page;
                    }
                }
                for (int b = 0; b < lens.Length; b++)
                    Assert.That(covered[b], Is.All.EqualTo(1), $"sequence {b} (len {lens[b]}), {workers} workers");
                Assert.That(workerPages.Max() - workerPages.Min(), Is.LessThanOrEqualTo(1), $"{workers} workers, page {page}");
                Assert.That(workerPages.Sum(), Is.EqualTo(lens.Sum(l => (l + page - 1) / page)));
            }
        }
    }

    [Test]
    public void BadInputIsRejectedBeforeAnyWork()
    {
        using var s = Build([70, 10], 64, LatentCacheLayout.BFloat16, 90);
        var be = CpuBackend.Default;
        var q = MlaReference.Random(2 * 4 * D, new Random(1));
        var output = new float[2 * 4 * Lat];
        var lse = new float[2 * 4];
        void RunWith(int[] table, int[] lens, int hQ = 4, MlaSchedule? sch = null) =>
            MlaDecode.Run(s.Cache, q.AsSpan(0, 2 * hQ * D), 2, 1, hQ, table, lens, Scale, false, output.AsSpan(0, 2 * hQ * Lat), lse.AsSpan(0, 2 * hQ), sch);

        var bad = (int[])s.Table.Clone();
        bad[0] = s.Cache.NumPages;
        Assert.That(Assert.Throws<ArgumentException>(() => RunWith(bad, s.Lens))!.Message, Does.Contain("blockTable[0, 0]"));
        bad[0] = -5;
        Assert.Throws<ArgumentException>(() => RunWith(bad, s.Lens));
        // A page that no sequence owns.
        int freePage = Enumerable.Range(0, s.Cache.NumPages).First(p => s.Cache.Allocator.ReferenceCount(p) == 0);
        bad = (int[])s.Table.Clone();
        bad[1] = freePage;
        Assert.That(Assert.Throws<ArgumentException>(() => RunWith(bad, s.Lens))!.Message, Does.Contain("free page"));
        // A page owned by another sequence, caught when the sequence ids are given.
        bad = (int[])s.Table.Clone();
        bad[0] = s.Table[s.MaxPages];
        using (var qt = be.Upload<float>(q, DType.Float32, 2, 1, 4, D))
        using (var tt = be.Upload<int>(bad, DType.Int32, 2, s.MaxPages))
        using (var lt = be.Upload<int>(s.Lens, DType.Int32, 2))
        using (var ot = be.Allocate(DType.Float32, 2, 1, 4, Lat))
        using (var et = be.Allocate(DType.Float32, 2, 4, 1))
        {
            var ex = Assert.Throws<ArgumentException>(() => MlaDecode.Run(be, qt, s.Cache, tt, lt, Scale, false, ot, et, sequenceIds: s.Seqs))!;
            Assert.That(ex.Message, Does.Contain("not block 0 of sequence"));
            using var q512 = be.Allocate(DType.Float32, 2, 1, 4, 512);
            Assert.That(Assert.Throws<ArgumentException>(() => MlaDecode.Run(be, q512, s.Cache, tt, lt, Scale, false, ot, et))!.Message, Does.Contain("head dim 576"));
            Assert.Throws<ArgumentOutOfRangeException>(() => MlaDecode.Run(be, qt, s.Cache, tt, lt, float.NaN, false, ot, et));
        }
        // Seqlens beyond the table's capacity.
        Assert.That(Assert.Throws<ArgumentException>(() => RunWith(s.Table, [s.MaxPages * 64 + 1, 10]))!.Message, Does.Contain("columns"));
        Assert.Throws<ArgumentException>(() => RunWith(s.Table, [-1, 10]));
        // A schedule built for other lengths.
        Assert.Throws<ArgumentException>(() => RunWith(s.Table, s.Lens, sch: MlaSchedule.Create([70, 11], 64, 2)));
        Assert.That(output, Is.All.EqualTo(0f), "nothing was written");
    }
}
