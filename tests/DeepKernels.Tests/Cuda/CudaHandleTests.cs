using DeepKernels.Cuda;
using DeepKernels.Cuda.Handles;

namespace DeepKernels.Tests.Cuda;

public class CudaHandleTests
{
    [Test]
    public void DisposingDeviceMemoryTwiceFreesOnce()
    {
        using var driver = new FakeCudaDriver();
        using var context = new CudaPrimaryContextHandle(driver, 0);
        var memory = new CudaDeviceMemory(context, 256);
        Assert.That(driver.LiveAllocations, Is.EqualTo(1));
        memory.Dispose();
        memory.Dispose();
        Assert.That(driver.CallCount("free"), Is.EqualTo(1));
        Assert.That(driver.LiveAllocations, Is.EqualTo(0));
        Assert.That(memory.IsClosed, Is.True);
    }

    [Test]
    public void ContextIsReleasedOnlyAfterItsLastResource()
    {
        using var driver = new FakeCudaDriver();
        var context = new CudaPrimaryContextHandle(driver, 0);
        var stream = new CudaStreamHandle(context);
        var pooled = new CudaDeviceMemory(context, 64, stream);
        var evt = new CudaEventHandle(context);
        context.Dispose();
        context.Dispose();
        Assert.That(driver.CallCount("release"), Is.EqualTo(0), "resources still hold the context");
        stream.Dispose();
        Assert.That(driver.CallCount("destroyStream"), Is.EqualTo(0), "pooled memory still holds the stream it frees on");
        pooled.Dispose();
        Assert.That(driver.CallCount("freeAsync"), Is.EqualTo(1));
        Assert.That(driver.CallCount("destroyStream"), Is.EqualTo(1), "a stream handle of value 0 is still released");
        Assert.That(driver.CallCount("release"), Is.EqualTo(0));
        evt.Dispose();
        evt.Dispose();
        Assert.That(driver.CallCount("destroyEvent"), Is.EqualTo(1));
        Assert.That(driver.CallCount("release"), Is.EqualTo(1));
    }

    [Test]
    public void ReleasingAfterTheDriverIsGoneDoesNotThrow()
    {
        using var driver = new FakeCudaDriver();
        var context = new CudaPrimaryContextHandle(driver, 0);
        var memory = new CudaDeviceMemory(context, 16);
        var host = new CudaPinnedHostMemory(context, 16);
        var module = new CudaModuleHandle(context, [1, 2, 3]);
        driver.Broken = true;
        Assert.DoesNotThrow(() =>
        {
            memory.Dispose();
            host.Dispose();
            module.Dispose();
            context.Dispose();
        });
        Assert.That(memory.IsClosed && host.IsClosed && module.IsClosed && context.IsClosed, Is.True);
        driver.Broken = false;
    }

    [Test]
    public void FailedAllocationLeavesNoReferenceOnTheContext()
    {
        using var driver = new FakeCudaDriver { PoolSupported = false };
        var context = new CudaPrimaryContextHandle(driver, 0);
        var stream = new CudaStreamHandle(context);
        Assert.Throws<CudaException>(() => _ = new CudaDeviceMemory(context, 16, stream));
        stream.Dispose();
        context.Dispose();
        Assert.That(driver.CallCount("destroyStream"), Is.EqualTo(1));
        Assert.That(driver.CallCount("release"), Is.EqualTo(1));
    }

    [Test]
    public void PinnedHostMemoryIsWritable()
    {
        using var driver = new FakeCudaDriver();
        using var context = new CudaPrimaryContextHandle(driver, 0);
        using var host = new CudaPinnedHostMemory(context, 8);
        host.AsSpan().Fill(7);
        Assert.That(host.AsSpan().ToArray(), Is.All.EqualTo((byte)7));
        host.Dispose();
        Assert.Throws<ObjectDisposedException>(() => host.AsSpan());
    }
}
