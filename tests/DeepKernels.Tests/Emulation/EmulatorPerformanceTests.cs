using System.Diagnostics;
using DeepKernels.Cuda;

namespace DeepKernels.Tests.Emulation;

/// <summary>
/// Measures (and prints; never asserts a time) the emulator's launch latency and scheduler
/// throughput on dk_quantize_act_fp8, whose CTAs have 128 threads, a warp reduction and a barrier.
/// </summary>
public class EmulatorPerformanceTests : EmulatorTestBase
{
    [Test]
    public void LaunchLatencyAndSchedulerThroughput()
    {
        const int m = 64, k = 1024;
        var x = new float[m * k];
        for (int i = 0; i < x.Length; i++) x[i] = (i % 97) - 48;
        ulong dx = Upload<float>(x), dq = Alloc(m * k), ds = Alloc(m * 8 * 4);
        var one = new KernelArgs().Ptr(dx).Int(0).Ptr(dq).Ptr(ds).Int(0).Int(1).Int(128);
        var grid = new KernelArgs().Ptr(dx).Int(0).Ptr(dq).Ptr(ds).Int(0).Int(m).Int(k);
        nint f = Function("dk_quantize_act_fp8");
        one.Launch(Driver, f, new Dim3(1), new Dim3(128), 0); // warm-up: fibers and stacks

        const int singleRuns = 100;
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < singleRuns; i++) one.Launch(Driver, f, new Dim3(1), new Dim3(128), 0);
        double singleUs = sw.Elapsed.TotalMicroseconds / singleRuns;

        var before = Driver.Statistics;
        const int gridRuns = 3;
        sw.Restart();
        for (int i = 0; i < gridRuns; i++) grid.Launch(Driver, f, new Dim3(8, m), new Dim3(128), 0);
        double gridMs = sw.Elapsed.TotalMilliseconds / gridRuns;
        var after = Driver.Statistics;
        double switches = after.FiberSwitches - before.FiberSwitches;
        double threads = after.Threads - before.Threads;

        TestContext.Out.WriteLine($"emulator: one 128-thread CTA launch {singleUs:F1} us; grid of {8 * m} CTAs x 128 threads {gridMs:F2} ms " +
            $"({threads / gridRuns / gridMs / 1000:F2} M threads/s, {switches * 1000 / (gridRuns * gridMs) / 1e6:F2} M fiber switches/s)");
        Assert.That(after.Ctas - before.Ctas, Is.EqualTo(gridRuns * 8 * m));
        Assert.That(Download<float>(ds, 1)[0], Is.GreaterThan(0f));
    }
}
