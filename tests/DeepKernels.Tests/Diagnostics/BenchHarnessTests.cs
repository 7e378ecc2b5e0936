using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Tests.Diagnostics;

public class BenchHarnessTests
{
    [TestCase("NVIDIA H200", "H200", 1979.0, 989.0, 4.8)]
    [TestCase("NVIDIA H100 80GB HBM3", "H100 80GB HBM3", 1979.0, 989.0, 3.35)]
    [TestCase("NVIDIA H800", "H800", 1979.0, 989.0, 3.35)]
    [TestCase("NVIDIA L40S", "L40S", 733.0, 362.0, 0.864)]
    [TestCase("NVIDIA GeForce RTX 4090", "RTX 4090", 330.3, 165.2, 1.008)]
    public void PeakTableFindsDriverNames(string driverName, string entry, double fp8, double bf16, double hbm)
    {
        var peak = DevicePeaks.Find(driverName);
        Assert.That(peak, Is.Not.Null);
        Assert.That(peak!.Name, Is.EqualTo(entry));
        Assert.That(peak.Fp8Tflops, Is.EqualTo(fp8));
        Assert.That(peak.Bf16Tflops, Is.EqualTo(bf16));
        Assert.That(peak.MemoryTBps, Is.EqualTo(hbm));
    }

    [Test]
    public void A100HasNoFp8CeilingAndUnknownDevicesAreNotGuessed()
    {
        var a100 = DevicePeaks.Find("NVIDIA A100-SXM4-80GB");
        Assert.That(a100, Is.Not.Null);
        Assert.That(a100!.ComputeTflops(MathPrecision.Fp8), Is.Null);
        Assert.That(a100.ComputeTflops(MathPrecision.Bf16), Is.EqualTo(312));
        Assert.That(DevicePeaks.Find("NVIDIA H100 PCIe"), Is.Null);
        Assert.That(DevicePeaks.Find("Tesla T4"), Is.Null);
        Assert.That(DevicePeaks.Find(null), Is.Null);
        Assert.That(BenchLimits.FromDevice(a100).Compute(MathPrecision.Fp8), Is.Null);
    }

    [Test]
    public void MedianOfOddAndEvenCounts()
    {
        Assert.That(BenchStatistics.Median([5, 1, 3]), Is.EqualTo(3));
        Assert.That(BenchStatistics.Median([4, 1, 3, 2]), Is.EqualTo(2.5));
        Assert.Throws<ArgumentException>(() => BenchStatistics.Median([]));
    }

    [Test]
    public void SummaryComputesThroughputAndPercentagesOfH200()
    {
        // A 4096x7168x16384 FP8 GEMM: 2*m*n*k flops, m*k + k*n + 2*m*n bytes, 1 ms median.
        double m = 4096, n = 7168, k = 16384;
        var c = new OpBenchCase("gemm", "g", new Dictionary<string, long>(), 2 * m * n * k, m * k + k * n + 2 * m * n,
            MathPrecision.Fp8, BenchTargets.Cuda, _ => throw new NotSupportedException());
        var r = BenchRunner.Summarize(c, [2.0, 1.0, 0.5], BenchLimits.FromDevice(DevicePeaks.H200));
        Assert.That(r.MedianMs, Is.EqualTo(1.0));
        Assert.That(r.MinMs, Is.EqualTo(0.5));
        Assert.That(r.MaxMs, Is.EqualTo(2.0));
        double gflops = 2 * m * n * k / 1e-3 / 1e9;
        Assert.That(r.Gflops, Is.EqualTo(gflops).Within(1e-9).Percent);
        Assert.That(r.GBps, Is.EqualTo((m * k + k * n + 2 * m * n) / 1e-3 / 1e9).Within(1e-9).Percent);
        Assert.That(r.PercentComputePeak, Is.EqualTo(100 * gflops / 1_979_000).Within(1e-9).Percent);
        Assert.That(r.PercentMemoryPeak, Is.EqualTo(100 * r.GBps / 4800).Within(1e-9).Percent);
        Assert.That(r.ArithmeticIntensity, Is.EqualTo(2 * m * n * k / (m * k + k * n + 2 * m * n)).Within(1e-9).Percent);
        Assert.That(r.Precision, Is.EqualTo("fp8"));
    }

    [Test]
    public void StopwatchTimerWarmsUpAndBatchesShortBodies()
    {
        int calls = 0;
        var timer = new StopwatchTimer { MinSampleMilliseconds = 0, MinWarmupMilliseconds = 0 };
        double[] samples = timer.Time(() => calls++, warmup: 2, repeats: 5);
        // 2 warm-up + 1 calibration + 5 samples of one run each (no batching with a 0 ms target).
        Assert.That(calls, Is.EqualTo(8));
        Assert.That(samples, Has.Length.EqualTo(5));
        Assert.That(samples, Has.All.GreaterThanOrEqualTo(0));

        // By default warm-up also lasts a minimum time (for the tiered JIT), unless none is asked for.
        calls = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        new StopwatchTimer { MinSampleMilliseconds = 0, MinWarmupMilliseconds = 50 }.Time(() => calls++, warmup: 1, repeats: 1);
        Assert.That(clock.Elapsed.TotalMilliseconds, Is.GreaterThanOrEqualTo(50));
        Assert.That(calls, Is.GreaterThan(3));
        calls = 0;
        new StopwatchTimer { MinSampleMilliseconds = 0, MinWarmupMilliseconds = 10_000 }.Time(() => calls++, warmup: 0, repeats: 1);
        Assert.That(calls, Is.EqualTo(2), "warmup 0: calibration and one sample only");

        calls = 0;
        samples = new StopwatchTimer { MinSampleMilliseconds = 2 }.Time(() => calls++, 0, 3);
        Assert.That(calls, Is.GreaterThan(4), "a near-empty body must be repeated within each sample");
    }

    [Test]
    public void CudaEventTimerFlushesL2OutsideTheTimedRegion()
    {
        var driver = new RecordingCudaDriver(0.5f, 0.25f);
        const long l2 = 50L << 20;
        var launches = new List<int>();
        double[] samples;
        using (var timer = new CudaEventTimer(driver, stream: 7, l2CacheBytes: l2))
        {
            Assert.That(timer.FlushBytes, Is.EqualTo(2 * l2));
            samples = timer.Time(() => { launches.Add(driver.Calls.Count); driver.Calls.Add("launch"); }, warmup: 1, repeats: 2);
        }
        Assert.That(samples, Is.EqualTo(new[] { 0.5, 0.25 }));
        Assert.That(driver.Allocations.Single().Bytes, Is.EqualTo((nuint)(2 * l2)));
        string[] expected =
        [
            "alloc", "event", "event",
            "launch", "sync 7",
            $"memset {2 * l2} on 7", "record on 7", "launch", "record on 7", "wait-event", "elapsed",
            $"memset {2 * l2} on 7", "record on 7", "launch", "record on 7", "wait-event", "elapsed",
            "destroy-event", "destroy-event", "free",
        ];
        Assert.That(driver.Calls, Is.EqualTo(expected));
        Assert.That(driver.Freed.Single(), Is.EqualTo(driver.Allocations.Single().Pointer));
    }

    [Test]
    public void CpuLimitsAreMeasuredAndPlausible()
    {
        var limits = CpuMachineLimits.Measure(copyBytesPerThread: 8L << 20, threads: 1);
        Assert.That(limits.CopyBandwidthGBps, Is.GreaterThan(0.1).And.LessThan(10_000));
        Assert.That(limits.FmaPeakGflops, Is.GreaterThan(0.5).And.LessThan(100_000));
        Assert.That(limits.Threads, Is.EqualTo(1));
        Assert.That(limits.VectorBits, Is.AnyOf(128, 256, 512));
        Assert.Throws<ArgumentOutOfRangeException>(() => CpuMachineLimits.Measure(copyBytesPerThread: 10));
    }

    [Test]
    public void RegistryHasActivationQuantizationAnchors()
    {
        var cases = OpBenchRegistry.ForOp("ACT-QUANT");
        Assert.That(cases.Select(c => c.Shape["M"]), Is.EqualTo(new long[] { 1, 128, 4096 }));
        Assert.That(cases.All(c => c.Shape["K"] == 7168));
        var m128 = cases[1];
        Assert.That(m128.Bytes, Is.EqualTo(128.0 * 7168 * 4 + 128.0 * 7168 + 128.0 * 56 * 4));
        Assert.That(OpBenchRegistry.All.Select(c => c.Name).Distinct().Count(), Is.EqualTo(OpBenchRegistry.All.Count), "case names are unique");
        Assert.That(OpBenchRegistry.ForOp("nope"), Is.Empty);
    }

    [Test]
    public void RegistryCoversTheIssuesAnchorShapesWithDesignFormulas()
    {
        var all = OpBenchRegistry.ForOp("gemm").Where(c => c.RunsOn("cuda")).ToList();
        Assert.That(all, Has.Count.EqualTo(2 * 7 * 6), "both kernels (portable, sm90)");
        var gemm = all.Where(c => c.Variant == "portable").ToList();
        Assert.That(gemm, Has.Count.EqualTo(7 * 6), "M in {1,4,16,64,128,512,4096} x six (N, K) pairs");
        var big = gemm.Single(c => c.Shape["M"] == 4096 && c.Shape["N"] == 7168 && c.Shape["K"] == 16384);
        Assert.That(big.Flops, Is.EqualTo(2.0 * 4096 * 7168 * 16384));
        Assert.That(big.Bytes, Is.EqualTo(4096.0 * 16384 + 16384.0 * 7168 + 2.0 * 4096 * 7168));
        Assert.That(big.Precision, Is.EqualTo(MathPrecision.Fp8));

        var grouped = OpBenchRegistry.ForOp("grouped-gemm").Where(c => c.RunsOn("cuda")).ToList();
        Assert.That(grouped.Count(c => c.Name.Contains("masked", StringComparison.Ordinal)), Is.EqualTo(2 * 6), "both kernels");
        Assert.That(grouped.Count(c => c.Name.Contains("contiguous", StringComparison.Ordinal)), Is.EqualTo(2 * 4), "both kernels");

        var mla = OpBenchRegistry.ForOp("mla-decode").Where(c => c.RunsOn("cuda")).ToList();
        Assert.That(mla.Select(c => c.Shape["h_q"]).Distinct(), Is.EquivalentTo(new long[] { 16, 32, 64, 128 }));
        var m = mla.Single(c => c.Name == "mla-decode b=128 seqlen=4096 h_q=128 s_q=1 bf16 portable");
        double total = 128.0 * 4096;
        Assert.That(m.Bytes, Is.EqualTo(total * 1 * 576 * 2 + 128.0 * 1 * 128 * (576 + 512) * 2));
        Assert.That(m.Flops, Is.EqualTo(1 * total * 128 * (576 + 512) * 2));
        Assert.That(OpBenchRegistry.All.Where(c => c.RunsOn("cpu")).Select(c => c.Op).Distinct(), Is.EquivalentTo(OpBenchRegistry.Ops),
            "every op has at least one CPU case");
    }

    [Test]
    public void ReportRoundTripsAndRejectsForeignJson()
    {
        var c = OpBenchRegistry.ForOp("act-quant")[0];
        var result = BenchRunner.Summarize(c, [1.0], BenchLimits.FromCpu(new CpuMachineLimits(10, 100, 2, 256)));
        var report = new BenchReport(BenchReport.SchemaId, DateTime.UtcNow, "cpu", true, null, "stopwatch", 1, 1,
            new BenchMachine("cpu", null, "measured", "n"), BenchLimits.FromCpu(new CpuMachineLimits(10, 100, 2, 256)), [result]);
        var back = BenchReport.FromJson(report.ToJson());
        Assert.That(back.Results.Single().Name, Is.EqualTo(c.Name));
        Assert.That(back.Results.Single().GBps, Is.EqualTo(result.GBps));
        Assert.That(back.Limits.MemoryGBps, Is.EqualTo(10));
        Assert.That(back.Limits.Compute(MathPrecision.Fp32), Is.EqualTo(100));
        Assert.Throws<InvalidDataException>(() => BenchReport.FromJson("{\"schema\":\"other\"}"));
        Assert.Throws<InvalidDataException>(() => BenchReport.FromJson("not json"));
    }
}
