using DeepKernels.Backends;
using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Cuda;

/// <summary>
/// Host-to-device uploads through the pinned staging ring, over the fake driver behind a
/// counting driver that lets the "device" lag behind the host (copies run only when the host
/// waits), so that a staging slot reused before its copy ran would show as wrong bytes.
/// </summary>
public class PinnedStagingTests
{
    private static CudaBackend Create(ICudaDriver driver)
    {
        var image = new KernelImage([0xCA, 0xFE], "test", null, KernelSignatureTable.Parse(KernelReportTests.SignaturesJson), null);
        Assert.That(CudaBackend.TryCreate(driver, 0, image, out var backend, out string reason), Is.True, reason);
        return backend!;
    }

    /// <summary>Deterministic bytes for upload <paramref name="index"/>, distinct from every other upload's.</summary>
    internal static void Fill(Span<byte> bytes, int index)
    {
        uint state = (uint)index * 2654435761u + 12345u;
        for (int i = 0; i < bytes.Length; i++)
        {
            state = state * 1664525u + 1013904223u;
            bytes[i] = (byte)(state >> 24);
        }
    }

    /// <summary>
    /// Uploads <paramref name="sizes"/>.Length buffers from one reused host array (refilled right
    /// after each upload returns), then downloads and compares every byte.
    /// </summary>
    internal static void UploadManyAndCheck(CudaBackend backend, CountingCudaDriver counter, int[] sizes, out int syncsDuringUploads)
    {
        var buffers = new List<TensorBuffer>();
        try
        {
            foreach (int n in sizes) buffers.Add(backend.Allocate(DType.UInt8, n));
            var scratch = new byte[sizes.Max()];
            counter.Reset();
            for (int i = 0; i < sizes.Length; i++)
            {
                Fill(scratch.AsSpan(0, sizes[i]), i);
                backend.CopyFromHost(scratch.AsSpan(0, sizes[i]), buffers[i]);
                // The caller may reuse its span at once: scribble over it.
                scratch.AsSpan().Fill(0xEE);
            }
            syncsDuringUploads = counter.StreamSynchronizations;
            var expected = new byte[scratch.Length];
            for (int i = 0; i < sizes.Length; i++)
            {
                Fill(expected.AsSpan(0, sizes[i]), i);
                byte[] actual = backend.Download<byte>(buffers[i]);
                Assert.That(actual.AsSpan().SequenceEqual(expected.AsSpan(0, sizes[i])), Is.True, $"upload {i} of {sizes[i]} bytes came back different");
            }
        }
        finally
        {
            foreach (var b in buffers) b.Dispose();
        }
    }

    [Test]
    public void SmallUploadsDoNotSynchronizeTheStream()
    {
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake) { DeferHostToDeviceCopies = true };
        using var backend = Create(counter);
        int[] sizes = [.. Enumerable.Range(0, 27).Select(i => 4 + 36 * i)];
        UploadManyAndCheck(backend, counter, sizes, out int syncs);
        Assert.That(syncs, Is.Zero, "stream synchronizations during 27 small uploads");
        Assert.That(counter.HostToDeviceCopies, Is.EqualTo(27));
        Assert.That(counter.EventRecords, Is.EqualTo(27), "one event guards each staged slot");
        Assert.That(backend.Staging.EventWaits, Is.Zero, "the 4 MiB ring never wraps here");
        Assert.That(fake.CallCount("allocHost"), Is.EqualTo(1), "one pinned buffer, allocated on first use");
    }

    [Test]
    public void WrapAroundWaitsOnEventsAndNeverCorruptsData()
    {
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake) { DeferHostToDeviceCopies = true };
        using var backend = Create(counter);
        backend.ResizeStaging(64 << 10);
        var rng = new Random(7);
        // ~1.6 MB through a 64 KiB ring: about 25 wraps, sizes up to the 16 KiB staging limit.
        int[] sizes = [.. Enumerable.Range(0, 200).Select(_ => rng.Next(1, (16 << 10) + 1))];
        sizes[0] = 16 << 10;
        sizes[1] = 1;
        UploadManyAndCheck(backend, counter, sizes, out int syncs);
        Assert.That(sizes.Sum(), Is.GreaterThan(20 * backend.Staging.Capacity));
        Assert.That(syncs, Is.Zero, "stream synchronizations during the uploads");
        Assert.That(backend.Staging.StagedCopies, Is.EqualTo(sizes.Length), "every upload was staged");
        Assert.That(backend.Staging.EventWaits, Is.GreaterThan(20), "the ring waits on events when it wraps onto copies in flight");
        Assert.That(counter.EventSynchronizations, Is.EqualTo(backend.Staging.EventWaits));
        Assert.That(fake.CallCount("allocHost"), Is.EqualTo(1), "no pinned allocation per copy");
    }

    [Test]
    public void MoreCopiesInFlightThanEventsWaitForTheOldest()
    {
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake) { DeferHostToDeviceCopies = true };
        using var backend = Create(counter);
        int count = PinnedStagingRing.MaxInFlight + 50;
        UploadManyAndCheck(backend, counter, [.. Enumerable.Repeat(12, count)], out int syncs);
        Assert.That(syncs, Is.Zero);
        Assert.That(backend.Staging.EventWaits, Is.EqualTo(50));
        Assert.That(fake.CallCount("createEvent"), Is.EqualTo(PinnedStagingRing.MaxInFlight), "events are reused, never more than the cap");
    }

    [Test]
    public void LargeUploadTakesTheSynchronousPath()
    {
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake) { DeferHostToDeviceCopies = true };
        using var backend = Create(counter);
        backend.ResizeStaging(64 << 10);
        int small = 100, large = backend.Staging.MaxStagedBytes + 1;
        UploadManyAndCheck(backend, counter, [small, large, small], out int syncs);
        Assert.That(syncs, Is.EqualTo(1), "only the upload larger than the staging limit synchronizes");
        Assert.That(backend.Staging.StagedCopies, Is.EqualTo(2));
        Assert.That(backend.Staging.EventWaits, Is.Zero);
        // The downloads synchronized the stream, so no slot is still guarded.
        Assert.That(backend.Staging.InFlight, Is.Zero);
    }

    [Test]
    public void PinnedMemoryAndEventsAreFreedOnDispose()
    {
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake);
        using (var idle = Create(counter))
        {
            using var t = idle.Allocate(DType.Float32, 4);
        }
        Assert.That(counter.HostAllocations, Is.Zero, "a backend that uploads nothing pins nothing");
        var backend = Create(counter);
        using (var t = backend.Upload<float>([1, 2, 3], DType.Float32, 3))
        {
            backend.ResizeStaging(1 << 10);
            backend.CopyFromHost(new byte[12], t);
            Assert.That(backend.Download<float>(t), Is.All.EqualTo(0f));
        }
        Assert.That(counter.HostAllocations, Is.EqualTo(2));
        Assert.That(counter.HostFrees, Is.EqualTo(1), "the replaced ring freed its buffer");
        backend.Dispose();
        Assert.That(counter.HostFrees, Is.EqualTo(2));
        Assert.That(fake.CallCount("freeHost"), Is.EqualTo(2));
        Assert.That(fake.CallCount("destroyEvent"), Is.EqualTo(fake.CallCount("createEvent")).And.GreaterThan(0));
        Assert.That(fake.CallCount("release"), Is.EqualTo(2), "both backends released the context");
    }

    [Test]
    public unsafe void LaggingDriverExposesASourceReusedTooEarly()
    {
        // The harness itself: a direct async copy from memory rewritten before the host waits
        // delivers the rewritten bytes, which is what the ring's event guard prevents.
        using var fake = new FakeCudaDriver();
        var counter = new CountingCudaDriver(fake) { DeferHostToDeviceCopies = true };
        ulong device = counter.Allocate(4);
        var host = new byte[] { 1, 2, 3, 4 };
        fixed (byte* p = host)
        {
            counter.CopyHostToDevice(device, (nint)p, 4, 0);
            host[0] = 99;
            counter.SynchronizeStream(0);
        }
        var back = new byte[4];
        fixed (byte* p = back) counter.CopyDeviceToHost((nint)p, device, 4, 0);
        counter.Free(device);
        Assert.That(back, Is.EqualTo(new byte[] { 99, 2, 3, 4 }));
    }
}

/// <summary>The staging ring on the test CUDA backend's driver (the GPU or the kernel emulator).</summary>
[Category("Cuda")]
public class CudaPinnedStagingTests
{
    [Test]
    public void ManyUploadsThroughASmallRingMatchByteForByte()
    {
        var shared = CudaTestBackends.Get();
        var counter = new CountingCudaDriver(shared.Driver) { DeferHostToDeviceCopies = true };
        Assert.That(CudaBackend.TryCreate(counter, 0, out var created, out string reason), Is.True, reason);
        using var backend = created!;
        backend.ResizeStaging(256 << 10);
        var rng = new Random(11);
        int[] sizes = [.. Enumerable.Range(0, 120).Select(_ => rng.Next(1, (64 << 10) + 1)), 300 << 10, 17];
        PinnedStagingTests.UploadManyAndCheck(backend, counter, sizes, out int syncs);
        Assert.That(syncs, Is.EqualTo(1), "only the 300 KiB upload (over the 64 KiB staging limit) synchronizes");
        Assert.That(backend.Staging.EventWaits, Is.GreaterThan(0), "the ring wrapped onto copies in flight");
        Assert.That(counter.HostAllocations, Is.EqualTo(1));
    }
}
