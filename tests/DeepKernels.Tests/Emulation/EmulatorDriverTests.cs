using System.Diagnostics;
using DeepKernels.Cuda;
using DeepKernels.Backends;
using DeepKernels.Cuda.Emulation;
using DeepKernels.Diagnostics;

namespace DeepKernels.Tests.Emulation;

/// <summary>The driver-API surface of the emulator: probing, launch validation, memory, streams and events.</summary>
public class EmulatorDriverTests : EmulatorTestBase
{
    [Test]
    public void ProbeReportsOneReadyEmulatedDevice()
    {
        var probe = Driver.Probe();
        Assert.That(probe.Status, Is.EqualTo(CudaStatus.Ready), probe.Reason);
        Assert.That(Driver.Name, Is.EqualTo("cuda-emu"));
        Assert.That(probe.Devices, Has.Count.EqualTo(1));
        var device = Driver.GetDeviceInfo(0);
        Assert.That(device.ComputeCapability, Is.EqualTo(90));
        Assert.That(device.MaxSharedMemoryPerBlockOptin, Is.EqualTo(232448));
        Assert.That(Driver.KernelNames, Does.Contain("dk_quantize_act_fp8").And.Contain("dk_dequantize_weight_fp8").And.Contain("dk_test_mma_m16n8k16"));
        Assert.That(() => Driver.GetDeviceInfo(1), Throws.TypeOf<CudaException>());
    }

    [Test]
    public void UnknownKernelIsNotFound()
    {
        var e = Assert.Throws<CudaException>(() => Driver.GetFunction(Module, "dk_no_such_kernel"))!;
        Assert.That(e.Code, Is.EqualTo(500));
        Assert.That(e.ErrorName, Is.EqualTo("CUDA_ERROR_NOT_FOUND"));
        Assert.That(e.Message, Does.Contain("dk_no_such_kernel"));
    }

    [Test]
    public void ParametersComeFromTheCompiledSignature()
    {
        var parameters = Driver.GetParameters(Function("dk_quantize_act_fp8"));
        Assert.That(parameters.Select(p => p.Name), Is.EqualTo(new[] { "x", "x_is_bf16", "q", "scales", "scales_ue8m0", "m", "k" }));
        Assert.That(parameters.Select(p => p.Size), Is.EqualTo(new[] { 8, 4, 8, 8, 4, 4, 4 }));
        Assert.That(parameters[2].Type, Is.EqualTo("unsigned char*"));
    }

    [Test]
    public void WrongArgumentCountOrSizeIsRejectedBeforeRunning()
    {
        ulong p = Alloc(128 * 4);
        var e = ExpectFailure(() => Launch("dk_test_write_range", new Dim3(1), new Dim3(128), new KernelArgs().Ptr(p)));
        Assert.That(e.Code, Is.EqualTo(1));
        Assert.That(e.Message, Does.Contain("dk_test_write_range expects 2 arguments (float* p, int count), got 1"));
        e = ExpectFailure(() => Launch("dk_test_write_range", new Dim3(1), new Dim3(128), new KernelArgs().Ptr(p).Long(3)));
        Assert.That(e.Message, Does.Contain("argument 1 (int count) is 4 bytes, got 8"));
    }

    [TestCase(1025u, 1u, 1u)]
    [TestCase(32u, 32u, 2u)]
    [TestCase(1u, 1u, 65u)]
    [TestCase(0u, 1u, 1u)]
    public void InvalidBlockShapesAreRejected(uint x, uint y, uint z)
    {
        ulong p = Alloc(4);
        var e = ExpectFailure(() => Launch("dk_test_write_range", new Dim3(1), new Dim3(x, y, z), new KernelArgs().Ptr(p).Int(0)));
        Assert.That(e.Code, Is.EqualTo(1));
        Assert.That(e.Message, Does.Contain("dk_test_write_range"));
    }

    [Test]
    public void DynamicSharedMemoryOverTheLimitIsRejected()
    {
        ulong p = Alloc(64 * 4);
        nint f = Function("dk_test_dynamic_smem");
        var args = new KernelArgs().Ptr(p).Int(16);
        var e = ExpectFailure(() => args.Launch(Driver, f, new Dim3(1), new Dim3(64), 64 * 1024));
        Assert.That(e.Code, Is.EqualTo(1));
        Assert.That(e.Message, Does.Contain("exceed the kernel's limit of 49152 bytes"));
        Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, 100 * 1024);
        Assert.That(Driver.GetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes), Is.EqualTo(100 * 1024));
        args.Launch(Driver, f, new Dim3(1), new Dim3(64), 64 * 1024);
        e = ExpectFailure(() => args.Launch(Driver, f, new Dim3(1), new Dim3(64), 240 * 1024));
        Assert.That(e.Message, Does.Contain("device limit of 232448 bytes"));
        Assert.That(() => Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, 300 * 1024), Throws.TypeOf<CudaException>());
        Driver.SetFunctionAttribute(f, CudaFunctionAttribute.MaxDynamicSharedSizeBytes, 48 * 1024);
    }

    [Test]
    public void UncheckedLaunchThroughTheInterfaceRuns()
    {
        ulong p = Alloc(32 * 4);
        ICudaDriver driver = Driver;
        new KernelArgs().Ptr(p).Int(32).LaunchUnchecked(driver, Function("dk_test_write_range"), new Dim3(1), new Dim3(32));
        Assert.That(Download<float>(p, 32)[31], Is.EqualTo(31f));
    }

    [Test]
    public unsafe void ClustersAreNotEmulated()
    {
        ulong p = Alloc(4);
        long count = 0;
        void** args = stackalloc void*[2];
        args[0] = &p;
        args[1] = &count;
        var e = Assert.Throws<CudaException>(() => Driver.LaunchKernel(Function("dk_test_write_range"), new Dim3(2), new Dim3(1), 0, 0, args, new Dim3(2)))!;
        Assert.That(e.Code, Is.EqualTo(801));
    }

    [Test]
    public unsafe void CopiesOutsideAnAllocationAreRejected()
    {
        ulong p = Alloc(100);
        var host = new byte[200];
        fixed (byte* pinned = host)
        {
            nint h = (nint)pinned;
            var e = Assert.Throws<CudaException>(() => Driver.CopyHostToDevice(p, h, 101, 0))!;
            Assert.That(e.Code, Is.EqualTo(1));
            Assert.That(e.Message, Does.Contain("not inside one device allocation"));
            Assert.Throws<CudaException>(() => Driver.CopyDeviceToHost(h, p + 50, 51, 0));
            Driver.CopyDeviceToHost(h, p + 50, 50, 0);
        }
        Assert.Throws<CudaException>(() => Driver.Memset(p + 1, 0, 100, 0));
    }

    [Test]
    public void DoubleFreeIsRejected()
    {
        ulong p = Driver.Allocate(64);
        Driver.Free(p);
        var e = Assert.Throws<CudaException>(() => Driver.Free(p))!;
        Assert.That(e.Message, Does.Contain("not a live device allocation"));
        Assert.Throws<CudaException>(() => Driver.Allocate(0));
    }

    [Test]
    public void StreamsAndEventsRunInOrderAndTime()
    {
        nint stream = Driver.CreateStream();
        nint start = Driver.CreateEvent(), end = Driver.CreateEvent();
        Assert.Throws<CudaException>(() => Driver.ElapsedMilliseconds(start, end));
        Driver.RecordEvent(start, stream);
        var sw = Stopwatch.StartNew();
        while (sw.ElapsedMilliseconds < 5) { }
        ulong p = Driver.AllocateAsync(16, stream);
        Driver.Memset(p, 0x3F, 16, stream);
        Driver.RecordEvent(end, stream);
        Driver.SynchronizeEvent(end);
        Driver.SynchronizeStream(stream);
        Assert.That(Driver.ElapsedMilliseconds(start, end), Is.GreaterThanOrEqualTo(4f));
        Assert.That(Download<byte>(p, 16), Is.All.EqualTo((byte)0x3F));
        Driver.FreeAsync(p, stream);
        Driver.DestroyEvent(start);
        Driver.DestroyEvent(end);
        Driver.DestroyStream(stream);
        Assert.Throws<CudaException>(() => Driver.SynchronizeStream(stream));
    }

    [Test]
    public void TheEmulatorIsABackendByNameOnly()
    {
        using (var emulated = BackendFactory.Create("cuda-emu"))
            Assert.That(emulated.Name, Is.EqualTo("cuda-emu"));
        Assert.That(BackendFactory.Names, Does.Contain("cuda-emu"));
        using var auto = BackendFactory.Create("auto");
        Assert.That(auto.Name, Is.Not.EqualTo("cuda-emu"), "auto never falls back to the emulator");
        var report = SystemReport.Collect();
        Assert.That(report.Backends.Select(b => (b.Name, b.Available)), Does.Contain(("cuda-emu", true)));
    }
}
