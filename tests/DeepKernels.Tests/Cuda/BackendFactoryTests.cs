using DeepKernels.Backends;
using DeepKernels.Cuda;
using DeepKernels.Cuda.Emulation;

namespace DeepKernels.Tests.Cuda;

public class BackendFactoryTests
{
    [Test]
    public void CudaThrowsWithTheProbeReasonWhenNotReady()
    {
        var probe = RealCudaDriver.Default.Probe();
        if (probe.IsReady) Assert.Ignore("a CUDA device is ready here");
        var e = Assert.Throws<InvalidOperationException>(() => BackendFactory.Create("cuda"));
        Assert.That(e!.Message, Does.Contain(probe.Reason));
    }

    [Test]
    public void AutoPicksCudaOnlyWhenTheProbeIsReady()
    {
        bool ready = RealCudaDriver.Default.Probe().IsReady;
        using var backend = BackendFactory.Create("auto");
        Assert.That(backend.Name, Is.EqualTo(ready ? "cuda" : "cpu"), "auto never picks the emulator");
    }

    [Test]
    public void CudaEmuIsTheEmulatorWhenBuilt()
    {
        if (!EmulatorDriver.TryLoad(out _, out string why))
        {
            var e = Assert.Throws<InvalidOperationException>(() => BackendFactory.Create("cuda-emu"));
            Assert.That(e!.Message, Does.Contain(why));
            return;
        }
        using var backend = BackendFactory.Create("CUDA-EMU");
        Assert.That(backend.Name, Is.EqualTo("cuda-emu"));
        Assert.That(backend.MemoryLocation, Is.EqualTo(DeepKernels.Tensors.MemoryLocation.Device));
    }

    [Test]
    public void UnknownNameListsTheChoices()
    {
        var e = Assert.Throws<ArgumentException>(() => BackendFactory.Create("gpu"));
        Assert.That(e!.Message, Does.Contain("'gpu'").And.Contain("auto, cpu, cuda, cuda-emu"));
    }
}
