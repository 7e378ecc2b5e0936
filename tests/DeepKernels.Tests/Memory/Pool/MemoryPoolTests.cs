using DeepKernels.Tests.Cuda;
using DeepKernels.Memory.Pool;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Memory.Pool;

public class MemoryPoolTests
{
    [TestCase(1, 256)]
    [TestCase(256, 256)]
    [TestCase(257, 512)]
    [TestCase(1 << 20, 1 << 20)]
    [TestCase((1 << 20) + 1, (1 << 20) + (1 << 18))]
    [TestCase(3_000_000, 3_145_728)]
    public void SizeClassesRoundUpWithBoundedWaste(long request, long expected)
    {
        Assert.That(MemoryPool.SizeClass(request), Is.EqualTo(expected));
        Assert.That(MemoryPool.SizeClass(expected), Is.EqualTo(expected), "classes are fixed points");
    }

    [Test]
    public void ReturnedBlocksAreReusedAndStatisticsAddUp()
    {
        using var pool = MemoryPool.CreateHost();
        nint a = pool.Rent(1000);
        nint b = pool.Rent(5000);
        Assert.That((long)a % 64, Is.EqualTo(0L));
        var s = pool.Statistics;
        Assert.That((s.AllocationCount, s.BytesInUse, s.BytesReserved, s.RentCount), Is.EqualTo((2L, 1024L + 8192L, 1024L + 8192L, 2L)));
        pool.Return(a);
        nint c = pool.Rent(700); // same class as 1000
        Assert.That(c, Is.EqualTo(a));
        s = pool.Statistics;
        Assert.That(s.AllocationCount, Is.EqualTo(2));
        Assert.That(s.PeakBytesInUse, Is.EqualTo(1024 + 8192));
        pool.Return(b);
        pool.Return(c);
        Assert.That(pool.Statistics.BytesInUse, Is.Zero);
        var e = Assert.Throws<InvalidOperationException>(() => pool.Return(c))!;
        Assert.That(e.Message, Does.Contain("double return"));
        pool.Trim();
        Assert.That((pool.Statistics.BytesReserved, pool.Statistics.ReleaseCount), Is.EqualTo((0L, 2L)));
    }

    [Test]
    public void ArenaStopsAllocatingAfterTheFirstStep()
    {
        using var pool = MemoryPool.CreateHost();
        using var arena = new WorkspaceArena(pool);
        var counts = new List<long>();
        for (int step = 0; step < 32; step++)
        {
            arena.Reset();
            // A step with several temporaries of varying size, like a decode step.
            for (int i = 0; i < 10; i++)
            {
                var t = arena.Take(DType.Float32, 4, 100 + i * 37);
                Assert.That((long)t.Data % 64, Is.EqualTo(0L));
                t.AsSpan<float>().Fill(step);
            }
            arena.TakeSpan<float>(5000).Fill(1);
            counts.Add(pool.Statistics.AllocationCount);
        }
        // Step 0 overflows into several blocks; the reset before step 1 folds them into one.
        Assert.That(counts[1], Is.GreaterThan(counts[0]));
        Assert.That(counts.Skip(1).Distinct().Count(), Is.EqualTo(1), string.Join(",", counts));
        Assert.That(arena.PeakStepBytes, Is.LessThanOrEqualTo(arena.CapacityBytes));
        Assert.That(arena.ResetCount, Is.EqualTo(32));
    }

    [Test]
    public void ArenaMemoryIsDistinctWithinAStep()
    {
        using var pool = MemoryPool.CreateHost();
        using var arena = new WorkspaceArena(pool, 1 << 12);
        var a = arena.TakeSpan<int>(100);
        var b = arena.TakeSpan<int>(2000); // overflows the initial block
        a.Fill(1);
        b.Fill(2);
        Assert.That(a.ToArray().All(v => v == 1), Is.True);
        Assert.That(a.Overlaps(b), Is.False);
    }

    [Test]
    public void DeviceArenaGoesThroughTheStreamOrderedAllocator()
    {
        using var driver = new FakeCudaDriver();
        using (var pool = new MemoryPool(new CudaStreamOrderedSource(driver, stream: 42)))
        using (var arena = new WorkspaceArena(pool))
        {
            for (int step = 0; step < 8; step++)
            {
                arena.Reset();
                var t = arena.Take(DType.BFloat16, 64, 576);
                Assert.That(t.Location, Is.EqualTo(MemoryLocation.Device));
                arena.Take(10_000);
            }
            Assert.Throws<InvalidOperationException>(() => arena.TakeSpan<float>(4));
            // Step 0 rents two overflow blocks; the folded block after it reuses the larger one from the pool cache.
            Assert.That(driver.CallCount("allocAsync"), Is.EqualTo(2));
            Assert.That(driver.AsyncStreams.Distinct(), Is.EqualTo(new nint[] { 42 }));
        }
        Assert.That(driver.LiveAllocations, Is.Zero, "every block is freed on dispose");
    }
}
