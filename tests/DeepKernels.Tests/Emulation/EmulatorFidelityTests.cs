using DeepKernels.Cuda;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// The emulator's traps: bugs that a GPU might forgive or hide (out-of-bounds accesses,
/// barrier divergence, lanes missing from a warp collective) fail the launch with the kernel's
/// name, and the emulator keeps working afterwards.
/// </summary>
public class EmulatorFidelityTests : EmulatorTestBase
{
    [Test]
    public void OutOfBoundsWriteIntoGuardPageIsReported()
    {
        ulong p = Alloc(64 * 4); // 256 bytes: the allocation ends exactly at its guard page
        var e = ExpectFailure(() => Launch("dk_test_write_range", new Dim3(1), new Dim3(128), new KernelArgs().Ptr(p).Int(65)));
        Assert.That(e.Code, Is.EqualTo(700));
        Assert.That(e.Message, Does.Contain("dk_test_write_range").And.Contain("past the end of the 256-byte allocation"));
        Assert.That(e.Message, Does.Contain("thread (64,0,0)"));
    }

    [Test]
    public void OutOfBoundsWriteIntoAlignmentSlackIsReported()
    {
        ulong p = Alloc(10 * 4); // 40 bytes: the next 216 bytes are alignment slack before the guard page
        var e = ExpectFailure(() => Launch("dk_test_write_range", new Dim3(1), new Dim3(32), new KernelArgs().Ptr(p).Int(11)));
        Assert.That(e.Code, Is.EqualTo(700));
        Assert.That(e.Message, Does.Contain("dk_test_write_range").And.Contain("out-of-bounds write 0 bytes past the end of the 40-byte allocation"));
        // The in-bounds part was written, and the allocation is usable afterwards.
        Assert.That(Download<float>(p, 10), Is.EqualTo(Enumerable.Range(0, 10).Select(i => (float)i).ToArray()));
    }

    [Test]
    public void OutOfBoundsReadBeforeTheStartIsReported()
    {
        ulong p = Alloc(256), result = Alloc(4);
        var e = ExpectFailure(() => Launch("dk_test_read_at", new Dim3(1), new Dim3(1), new KernelArgs().Ptr(p).Long(-1000).Ptr(result)));
        Assert.That(e.Code, Is.EqualTo(700));
        Assert.That(e.Message, Does.Contain("dk_test_read_at").And.Contain("before the start of the 256-byte allocation"));
    }

    [Test]
    public void InBoundsAccessesStillWorkAfterAFault()
    {
        ulong p = Alloc(256), result = Alloc(4);
        ExpectFailure(() => Launch("dk_test_read_at", new Dim3(1), new Dim3(1), new KernelArgs().Ptr(p).Long(100).Ptr(result)));
        Launch("dk_test_write_range", new Dim3(2), new Dim3(32), new KernelArgs().Ptr(p).Int(64));
        Launch("dk_test_read_at", new Dim3(1), new Dim3(1), new KernelArgs().Ptr(p).Long(63).Ptr(result));
        Assert.That(Download<float>(result, 1)[0], Is.EqualTo(63f));
    }

    [Test]
    public void ThreadsExitingBeforeABarrierAreReportedAsDivergence()
    {
        ulong p = Alloc(64 * 4);
        var e = ExpectFailure(() => Launch("dk_test_divergent_barrier", new Dim3(1), new Dim3(64), new KernelArgs().Ptr(p).Int(5)));
        Assert.That(e.Code, Is.EqualTo(719));
        Assert.That(e.Message, Does.Contain("dk_test_divergent_barrier").And.Contain("barrier divergence").And.Contain("5 thread(s)")
            .And.Contain("59 thread(s) wait at __syncthreads"));
        // No thread exits: the same kernel is fine.
        Launch("dk_test_divergent_barrier", new Dim3(1), new Dim3(64), new KernelArgs().Ptr(p).Int(0));
        Assert.That(Download<int>(p, 64), Is.All.EqualTo(1));
    }

    [Test]
    public void ThreadsWaitingAtDifferentBarriersAreReported()
    {
        ulong p = Alloc(64 * 4);
        var e = ExpectFailure(() => Launch("dk_test_split_barrier", new Dim3(1), new Dim3(64), new KernelArgs().Ptr(p)));
        Assert.That(e.Code, Is.EqualTo(719));
        Assert.That(e.Message, Does.Contain("dk_test_split_barrier").And.Contain("barrier divergence").And.Contain("test_emulator.cu"));
    }

    [Test]
    public void ALaneMissingFromAShuffleIsReported()
    {
        ulong p = Alloc(32 * 4);
        var e = ExpectFailure(() => Launch("dk_test_missing_lane", new Dim3(1), new Dim3(32), new KernelArgs().Ptr(p)));
        Assert.That(e.Code, Is.EqualTo(719));
        Assert.That(e.Message, Does.Contain("dk_test_missing_lane").And.Contain("__shfl_xor_sync").And.Contain("lanes 0x00000001 never arrived"));
    }

    [Test]
    public void FreshDeviceMemoryIsPoisoned()
    {
        ulong p = Alloc(16);
        Assert.That(Download<uint>(p, 4), Is.All.EqualTo(0xFFFFFFFFu), "uninitialised device memory reads as NaN, as garbage would on a GPU");
    }

    [Test]
    public void StaticSharedMemoryIsPerCtaAndAtomicsCount()
    {
        ulong counter = Upload<int>(new int[3]);
        Launch("dk_test_atomics", new Dim3(3), new Dim3(96), new KernelArgs().Ptr(counter));
        Assert.That(Download<int>(counter, 3), Is.EqualTo(new[] { 288, 3 * (95 * 96 / 2), 96 }));
    }

    [Test]
    public void DynamicSharedMemoryIsSizedByTheLaunch()
    {
        const int floats = 300;
        ulong p = Alloc(2 * 64 * 4);
        Launch("dk_test_dynamic_smem", new Dim3(2), new Dim3(64), new KernelArgs().Ptr(p).Int(floats), floats * 4);
        float[] got = Download<float>(p, 128);
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 64; t++)
                Assert.That(got[b * 64 + t], Is.EqualTo((float)((t + 1) % floats + b)));
    }

    [Test]
    public void DeviceAssertionsFailTheLaunch()
    {
        Launch("dk_test_assert", new Dim3(2), new Dim3(32), new KernelArgs().Int(1));
        var e = ExpectFailure(() => Launch("dk_test_assert", new Dim3(2), new Dim3(32), new KernelArgs().Int(3)));
        Assert.That(e.Code, Is.EqualTo(710));
        Assert.That(e.ErrorName, Is.EqualTo("CUDA_ERROR_ASSERT"));
        Assert.That(e.Message, Does.Contain("dk_test_assert").And.Contain("thread (5,0,0)").And.Contain("assertion failed: value != 3"));
    }
}
