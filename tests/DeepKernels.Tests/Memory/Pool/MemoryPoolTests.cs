using DeepKernels.Cuda;
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
        var driver = new FakeDriver();
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
            Assert.That(driver.Allocations, Is.EqualTo(2));
            Assert.That(driver.Streams.Distinct(), Is.EqualTo(new nint[] { 42 }));
        }
        Assert.That(driver.Live, Is.Zero, "every block is freed on dispose");
    }

    /// <summary>Records AllocateAsync/FreeAsync; everything else is unused here.</summary>
    private sealed class FakeDriver : ICudaDriver
    {
        private ulong _next = 0x1000_0000;
        public int Allocations { get; private set; }
        public int Live { get; private set; }
        public List<nint> Streams { get; } = [];
        public ulong AllocateAsync(nuint bytes, nint stream) { Allocations++; Live++; Streams.Add(stream); ulong p = _next; _next += (bytes + 255) / 256 * 256; return p; }
        public void FreeAsync(ulong pointer, nint stream) { Live--; Streams.Add(stream); }
        public string Name => "fake";
        public CudaProbeResult Probe() => throw new NotSupportedException();
        public int DeviceCount => 0;
        public CudaDeviceInfo GetDeviceInfo(int ordinal) => throw new NotSupportedException();
        public nint RetainPrimaryContext(int ordinal) => throw new NotSupportedException();
        public void ReleasePrimaryContext(int ordinal) => throw new NotSupportedException();
        public void SetCurrentContext(nint context) => throw new NotSupportedException();
        public nint LoadModule(ReadOnlySpan<byte> image) => throw new NotSupportedException();
        public void UnloadModule(nint module) => throw new NotSupportedException();
        public nint GetFunction(nint module, string name) => throw new NotSupportedException();
        public int GetFunctionAttribute(nint function, CudaFunctionAttribute attribute) => throw new NotSupportedException();
        public void SetFunctionAttribute(nint function, CudaFunctionAttribute attribute, int value) => throw new NotSupportedException();
        public int MaxActiveBlocksPerMultiprocessor(nint function, int blockSize, nuint dynamicSharedBytes) => throw new NotSupportedException();
        public ulong Allocate(nuint bytes) => throw new NotSupportedException();
        public void Free(ulong pointer) => throw new NotSupportedException();
        public nint AllocateHost(nuint bytes) => throw new NotSupportedException();
        public void FreeHost(nint pointer) => throw new NotSupportedException();
        public void CopyHostToDevice(ulong destination, nint source, nuint bytes, nint stream) => throw new NotSupportedException();
        public void CopyDeviceToHost(nint destination, ulong source, nuint bytes, nint stream) => throw new NotSupportedException();
        public void CopyDeviceToDevice(ulong destination, ulong source, nuint bytes, nint stream) => throw new NotSupportedException();
        public void Memset(ulong destination, byte value, nuint bytes, nint stream) => throw new NotSupportedException();
        public nint CreateStream() => throw new NotSupportedException();
        public void DestroyStream(nint stream) => throw new NotSupportedException();
        public void SynchronizeStream(nint stream) => throw new NotSupportedException();
        public nint CreateEvent() => throw new NotSupportedException();
        public void DestroyEvent(nint evt) => throw new NotSupportedException();
        public void RecordEvent(nint evt, nint stream) => throw new NotSupportedException();
        public void SynchronizeEvent(nint evt) => throw new NotSupportedException();
        public float ElapsedMilliseconds(nint start, nint end) => throw new NotSupportedException();
        public unsafe void LaunchKernel(nint function, Dim3 grid, Dim3 block, uint dynamicSharedBytes, nint stream, void** arguments, Dim3 cluster) => throw new NotSupportedException();
    }
}
