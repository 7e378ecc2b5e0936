using DeepKernels.Backends.Cuda;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Kernels;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Cuda;

/// <summary>The CUDA backend's bookkeeping (memory, copies, launch checks) over a fake driver.</summary>
public class CudaBackendCoreTests
{
    private static KernelImage Image() =>
        new([0xCA, 0xFE], "test", null, KernelSignatureTable.Parse(KernelReportTests.SignaturesJson), null);

    private static CudaBackend Create(FakeCudaDriver driver)
    {
        Assert.That(CudaBackend.TryCreate(driver, 0, Image(), out var backend, out string reason), Is.True, reason);
        return backend!;
    }

    [Test]
    public void UploadDownloadAndZeroRoundTrip()
    {
        using var driver = new FakeCudaDriver();
        using (var backend = Create(driver))
        {
            Assert.That(backend.Name, Is.EqualTo("fake"));
            Assert.That(backend.MemoryLocation, Is.EqualTo(MemoryLocation.Device));
            float[] data = [1, 2, 3, -4.5f, float.NaN];
            using var t = backend.Upload<float>(data, DType.Float32, 5);
            Assert.That(backend.Download<float>(t), Is.EqualTo(data));
            using var copy = backend.Allocate(DType.Float32, 5);
            backend.CopyDeviceToDevice(t, copy);
            Assert.That(backend.Download<float>(copy), Is.EqualTo(data));
            backend.Zero(t);
            Assert.That(backend.Download<float>(t), Is.All.EqualTo(0f));
            Assert.That(backend.UsesMemoryPool, Is.True);
            Assert.That(driver.CallCount("allocAsync"), Is.EqualTo(2));
        }
        Assert.That(driver.LiveAllocations, Is.EqualTo(0));
        Assert.That(driver.CallCount("release"), Is.EqualTo(1));
        Assert.That(driver.CallCount("unloadModule"), Is.EqualTo(1));
    }

    [Test]
    public void FallsBackToPlainAllocationsWithoutAPool()
    {
        using var driver = new FakeCudaDriver { PoolSupported = false };
        using var backend = Create(driver);
        using var t = backend.Upload<int>([1, 2, 3], DType.Int32, 3);
        Assert.That(backend.Download<int>(t), Is.EqualTo(new[] { 1, 2, 3 }));
        Assert.That(backend.UsesMemoryPool, Is.False);
        Assert.That(driver.CallCount("alloc"), Is.EqualTo(1));
    }

    [Test]
    public void BufferOutlivingTheBackendIsFreedSafely()
    {
        using var driver = new FakeCudaDriver();
        var backend = Create(driver);
        var t = backend.Allocate(DType.Float32, 4);
        backend.Dispose();
        Assert.That(driver.CallCount("release"), Is.EqualTo(0), "the buffer still holds the context");
        t.Dispose();
        t.Dispose();
        Assert.That(driver.LiveAllocations, Is.EqualTo(0));
        Assert.That(driver.CallCount("release"), Is.EqualTo(1));
    }

    [Test]
    public void EventsTimeOnTheStream()
    {
        using var driver = new FakeCudaDriver();
        using var backend = Create(driver);
        using var a = backend.CreateEvent();
        using var b = backend.CreateEvent();
        backend.Record(a);
        backend.Record(b);
        Assert.That(backend.ElapsedMilliseconds(a, b), Is.EqualTo(1.5f));
        Assert.That(driver.CallCount("recordEvent"), Is.EqualTo(2));
    }

    [Test]
    public void LaunchPassesArgumentsAndCachesTheFunction()
    {
        using var driver = new FakeCudaDriver { LaunchArgumentCount = 3 };
        using var backend = Create(driver);
        backend.LaunchKernel("dk_scale", new Dim3(4), new Dim3(256), 0, KernelArg.Pointer(0x1234ul), 2.5f, KernelArg.Int64(-7));
        backend.LaunchKernel("dk_scale", new Dim3(4), new Dim3(256), 0, KernelArg.Pointer(0x1234ul), 2.5f, KernelArg.Int64(-7));
        Assert.That(driver.CallCount("getFunction"), Is.EqualTo(1));
        Assert.That(driver.Launches, Has.Count.EqualTo(2));
        var args = driver.Launches[0].Args;
        Assert.That(args[0], Is.EqualTo(0x1234ul));
        Assert.That(BitConverter.UInt32BitsToSingle((uint)args[1]), Is.EqualTo(2.5f));
        Assert.That((long)args[2], Is.EqualTo(-7));
        Assert.That(driver.Launches[0].Grid, Is.EqualTo(new Dim3(4)));
        Assert.That(driver.Launches[0].Block, Is.EqualTo(new Dim3(256)));
    }

    [Test]
    public void LaunchWithWrongArgumentsFailsBeforeAnyNativeCall()
    {
        using var driver = new FakeCudaDriver();
        using var backend = Create(driver);
        var e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 0, KernelArg.Pointer(1ul), 2.5f));
        Assert.That(e!.Message, Does.Contain("dk_scale").And.Contain("expects 3 arguments, got 2"));
        e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 0, KernelArg.Pointer(1ul), 2.5f, 3));
        Assert.That(e!.Message, Does.Contain("argument 2").And.Contain("expects 8 bytes"));
        Assert.That(driver.CallCount("getFunction") + driver.CallCount("launch"), Is.EqualTo(0));
    }

    [TestCase(1025u, 1u, "1025 threads")]
    [TestCase(32u, 33u, "1056 threads")]
    [TestCase(0u, 1u, "0 threads")]
    public void LaunchRejectsBadBlocks(uint x, uint y, string expected)
    {
        using var driver = new FakeCudaDriver();
        using var backend = Create(driver);
        var e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(x, y), 0, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)));
        Assert.That(e!.Message, Does.Contain("dk_scale").And.Contain(expected));
        Assert.That(driver.CallCount("launch"), Is.EqualTo(0));
    }

    [Test]
    public void LaunchRejectsGridOutOfRangeAndBadCluster()
    {
        using var driver = new FakeCudaDriver();
        using var backend = Create(driver);
        Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1, 65536), new Dim3(32), 0, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)));
        Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(0), new Dim3(32), 0, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)));
        var e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(3), new Dim3(32), 0, new Dim3(2), [KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)]));
        Assert.That(e!.Message, Does.Contain("cluster"));
    }

    [Test]
    public void DynamicSharedMemoryAboveTheOptInLimitIsRejected()
    {
        using var driver = new FakeCudaDriver { MaxSharedOptin = 100 * 1024 };
        using var backend = Create(driver);
        var e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 100 * 1024 + 1, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)));
        Assert.That(e!.Message, Does.Contain("opt-in limit of 102400"));
        // Static shared memory (1 KiB in the fake) counts against the limit too.
        e = Assert.Throws<ArgumentException>(() => backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 100 * 1024, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1)));
        Assert.That(e!.Message, Does.Contain("1024 of static"));
        Assert.That(driver.CallCount("launch"), Is.EqualTo(0));
    }

    [Test]
    public void LargeDynamicSharedMemoryOptsInOnce()
    {
        using var driver = new FakeCudaDriver();
        using var backend = Create(driver);
        backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 48 * 1024, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1));
        Assert.That(driver.AttributesSet, Is.Empty, "48 KiB needs no opt-in");
        backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 96 * 1024, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1));
        backend.LaunchKernel("dk_scale", new Dim3(1), new Dim3(32), 64 * 1024, KernelArg.Pointer(1ul), 1f, KernelArg.Int64(1));
        Assert.That(driver.AttributesSet, Has.Count.EqualTo(1));
        Assert.That(driver.AttributesSet[0].Attribute, Is.EqualTo(CudaFunctionAttribute.MaxDynamicSharedSizeBytes));
        Assert.That(driver.AttributesSet[0].Value, Is.EqualTo(96 * 1024));
    }

    [Test]
    public void MissingKernelIsACudaExceptionNamingIt()
    {
        using var driver = new FakeCudaDriver();
        var image = new KernelImage([1], "test", null, KernelSignatureTable.Parse("""{"kernels":[{"name":"missing_kernel","params":[]}]}"""), null);
        Assert.That(CudaBackend.TryCreate(driver, 0, image, out var backend, out _), Is.True);
        using (backend)
        {
            var e = Assert.Throws<CudaException>(() => backend!.LaunchKernel("missing_kernel", new Dim3(1), new Dim3(1), 0));
            Assert.That(e!.ErrorName, Is.EqualTo("CUDA_ERROR_NOT_FOUND"));
        }
    }

    [Test]
    public void TryCreateReportsTheProbeReasonWhenNotReady()
    {
        var driver = new RealCudaDriver(["libdeepkernels-no-such-cuda.so.42"], null);
        Assert.That(CudaBackend.TryCreate(driver, 0, out var backend, out string reason), Is.False);
        Assert.That(backend, Is.Null);
        Assert.That(reason, Does.Contain("missing"));
        var e = Assert.Throws<InvalidOperationException>(() => CudaBackend.Create(driver));
        Assert.That(e!.Message, Does.Contain("libdeepkernels-no-such-cuda.so.42"));
    }

    [Test]
    public void TryCreateRejectsABadOrdinal()
    {
        using var driver = new FakeCudaDriver();
        Assert.That(CudaBackend.TryCreate(driver, 3, Image(), out _, out string reason), Is.False);
        Assert.That(reason, Does.Contain("ordinal 3"));
    }

    [Test]
    public void KernelCompatibilityExplainsMissingKernels()
    {
        var device = new CudaDeviceInfo(0, "NVIDIA H200", 9, 0, 132, 141L << 30, 232448, 60 << 20, 0, 0, 0);
        var none = new KernelImage([], "none", null, null, "no fatbin is embedded");
        var (ready, reason) = KernelCompatibility.Check(none, [device]);
        Assert.That(ready, Is.False);
        Assert.That(reason, Does.Contain("Kernels not built").And.Contain("no fatbin is embedded"));
        var ampereOnly = new KernelImage([1], "embedded", ResourceReport.Parse("""{"archs":["sm_80"],"kernels":[]}"""), null, null);
        (ready, reason) = KernelCompatibility.Check(ampereOnly, [device]);
        Assert.That(ready, Is.False);
        Assert.That(reason, Does.Contain("NVIDIA H200").And.Contain("sm_80"));
        var hopper = new KernelImage([1], "embedded", ResourceReport.Parse("""{"archs":["sm_80","sm_90","compute_90"],"kernels":[]}"""), null, null);
        (ready, reason) = KernelCompatibility.Check(hopper, [device]);
        Assert.That(ready, Is.True);
        Assert.That(reason, Does.Contain("sm_90 SASS"));
    }

    [Test]
    public void ProbeWithMissingFatbinOverrideStillNeverThrows()
    {
        var image = KernelImage.Load("/nonexistent/dir/deepkernels.fatbin");
        Assert.That(image.HasFatbin, Is.False);
        Assert.That(image.Problem, Does.Contain("DEEPKERNELS_FATBIN=/nonexistent/dir/deepkernels.fatbin"));
        var driver = new RealCudaDriver(DeepKernels.Cuda.Interop.CudaLibrary.DefaultCandidates, image);
        Assert.DoesNotThrow(() => driver.Probe());
    }
}

public class KernelImageOverrideTests
{
    [Test]
    public void FatbinOverrideReadsTheReportsNextToIt()
    {
        string dir = Path.Combine(Path.GetTempPath(), "dk-fatbin-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(dir);
        try
        {
            string fatbin = Path.Combine(dir, "custom.fatbin");
            File.WriteAllBytes(fatbin, [1, 2, 3, 4]);
            File.WriteAllText(Path.Combine(dir, "resource-report.json"), """{"compiler":"nvcc 13.0","archs":["sm_90a"],"kernels":[{"name":"dk_x","arch":"sm_90a"}]}""");
            File.WriteAllText(Path.Combine(dir, "kernel-signatures.json"), """{"kernels":[{"name":"dk_x","params":[]}]}""");
            var image = KernelImage.Load(fatbin);
            Assert.That(image.HasFatbin, Is.True);
            Assert.That(image.Fatbin.ToArray(), Is.EqualTo(new byte[] { 1, 2, 3, 4 }));
            Assert.That(image.Source, Is.EqualTo(fatbin));
            Assert.That(image.Report!.Compiler, Is.EqualTo("nvcc 13.0"));
            Assert.That(image.Report.Archs, Is.EqualTo(new[] { "sm_90a" }));
            Assert.That(image.Signatures!.TryGet("dk_x", out _), Is.True);
            Assert.That(image.Problem, Is.Null);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Test]
    public void OccupancyQueryGoesThroughTheDriver()
    {
        using var driver = new FakeCudaDriver();
        var image = new KernelImage([1], "test", null, KernelSignatureTable.Parse(KernelReportTests.SignaturesJson), null);
        Assert.That(CudaBackend.TryCreate(driver, 0, image, out var backend, out _), Is.True);
        using (backend)
        {
            Assert.That(backend!.MaxActiveBlocksPerMultiprocessor("dk_scale", 256), Is.EqualTo(1));
            Assert.Throws<ArgumentOutOfRangeException>(() => backend.MaxActiveBlocksPerMultiprocessor("dk_scale", 2048));
        }
    }
}
