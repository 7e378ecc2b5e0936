using DeepKernels.Cli.Commands;
using DeepKernels.Diagnostics.Benchmarking;
using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;
using DeepKernels.Tests.Cuda;

namespace DeepKernels.Tests.Diagnostics;

/// <summary>The DeepSeek-V3 4-layer `model-decode` family (issue 7): listing, byte formula, and the same path end to end on a scaled config.</summary>
public class V3DecodeBenchTests
{
    private static readonly string[] V3Names = ["model-decode v3-4layer batch=1", "model-decode v3-4layer batch=8", "model-decode v3-4layer batch=64"];

    [Test]
    public void V3CasesUseTheRealConfigCutToFourLayersAndRunOnCudaOnly()
    {
        var c = ModelBenchCases.V3FourLayerConfig;
        Assert.That((c.HiddenSize, c.NumHiddenLayers, c.FirstKDenseReplace, c.NumNextnPredictLayers), Is.EqualTo((7168, 4, 3, 0)));
        Assert.That((c.NRoutedExperts, c.NumExpertsPerTok, c.NSharedExperts, c.NGroup, c.TopkGroup, c.MoeIntermediateSize, c.IntermediateSize), Is.EqualTo((256, 8, 1, 8, 4, 2048, 18432)));
        Assert.That((c.NumAttentionHeads, c.QLoraRank, c.KvLoraRank, c.QkNopeHeadDim, c.QkRopeHeadDim, c.VHeadDim, c.VocabSize), Is.EqualTo((128, (int?)1536, 512, 128, 64, 128, 129280)));
        Assert.That(Enumerable.Range(0, 4).Select(c.IsMoeLayer), Is.EqualTo(new[] { false, false, false, true }));
        // Checkpoint: 256 x 3 x 2048 x 7168 FP8 expert bytes (11.3 GB), 3 dense layers, BF16 embeddings and lm_head.
        Assert.That(SyntheticCheckpoint.DataBytes(c) / 1e9, Is.InRange(16.0, 17.5));

        var cases = BenchCommand.Registry.Where(x => x.Name.Contains("v3-4layer", StringComparison.Ordinal)).ToList();
        Assert.That(cases.Select(x => x.Name), Is.EqualTo(V3Names));
        Assert.That(cases.Select(x => x.Shape["batch"]), Is.EqualTo(new long[] { 1, 8, 64 }));
        foreach (var x in cases)
        {
            Assert.That((x.Op, x.Targets, x.RunsOn("cpu"), x.RunsOn("cuda"), x.Variant), Is.EqualTo(("model-decode", BenchTargets.Cuda, false, true, (string?)null)), x.Name);
            Assert.That((x.Shape["hidden"], x.Shape["experts"], x.Shape["layers"], x.LayersPerRun), Is.EqualTo((7168L, 256L, 4L, (int?)4)), x.Name);
        }
        // Last in the registry, and never the smallest model-decode case (the budget order runs those first).
        Assert.That(BenchCommand.Registry.TakeLast(3).Select(x => x.Name), Is.EqualTo(V3Names));
        var smallest = BenchCommand.Registry.Where(x => x.Op == "model-decode" && x.RunsOn("cuda")).MinBy(x => x.Bytes)!;
        Assert.That(smallest.Name, Does.Contain("tiny"));
        // A slow case: the budget logic is told it needs minutes.
        Assert.That(cases[0].EstimatedSeconds!(), Is.GreaterThanOrEqualTo(90));
        // Batch 1 reads about 4.3 GB per step (attention, 3 dense MLPs, 9 experts, BF16 lm_head).
        Assert.That(cases[0].Bytes / 1e9, Is.InRange(4.0, 4.6));
    }

    [Test]
    public void StepBytesMatchAHandCount()
    {
        // h 512, 4 heads, q_lora 256, kv_lora 512 + rope 64, nope/v 128; layer 0 dense (1024), layer 1 MoE (16 x 256, top 4, 1 shared); vocab 2048.
        var config = TinyPreset.Config with { NumHiddenLayers = 2, NumNextnPredictLayers = 0 };
        const double attention = 256 * 512 + 4 * 192 * 256 + 576 * 512 + 4 * 256 * 512 + 512 * 512; // 1,409,024
        const double dense = 3 * 1024 * 512;
        const double expert = 3 * 256 * 512;
        const double bf16 = 2 * (2048 * 512 + 16 * 512); // lm_head + router gate
        double Expected(double touched, int batch, int context)
        {
            double fp8 = 2 * attention + dense + (touched + 1) * expert;
            return fp8 + fp8 / 16384 * 4 + bf16 + batch * context * 2 * 576 * 2;
        }
        Assert.That(ModelBenchCases.DecodeStepBytes(config, 1, 10), Is.EqualTo(Expected(4, 1, 10)).Within(1e-9).Percent);
        Assert.That(ModelBenchCases.DecodeStepBytes(config, 1, 10), Is.EqualTo(8_495_120).Within(1e-9).Percent);
        // Two tokens touch 16 (1 - (12/16)^2) = 7 distinct experts on average.
        Assert.That(ModelBenchCases.DecodeStepBytes(config, 2, 10), Is.EqualTo(Expected(7, 2, 10)).Within(1e-9).Percent);
        Assert.That(ModelBenchCases.DecodeStepBytes(config, 1000, 0), Is.EqualTo(Expected(16, 1000, 0)).Within(1e-6).Percent);
    }

    [Test]
    [Category("Cuda")]
    public void ScaledConfigRunsThroughTheSameCasePathOnTheCudaBackend()
    {
        var cuda = CudaTestBackends.Get();
        var config = TinyPreset.Config with
        {
            NumHiddenLayers = 2, FirstKDenseReplace = 1, NumNextnPredictLayers = 0, NRoutedExperts = 8, NGroup = 2, TopkGroup = 1,
            NumExpertsPerTok = 2, VocabSize = 512, SourceName = "v3-scaled",
        };
        string root = Path.Combine(Path.GetTempPath(), "dk-v3bench-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var benchCase = ModelBenchCases.V3Case(2, config, root, allowEmulator: true);
            Assert.That(benchCase.Name, Is.EqualTo("model-decode v3-scaled batch=2"));
            var target = CudaBenchBinding.TryGetTarget(cuda)!;
            using var timer = new CudaEventTimer(target.Driver, target.Stream, 0);
            var r = BenchRunner.Run(benchCase, cuda, timer, BenchLimits.FromDevice(DevicePeaks.H200), warmup: 0, repeats: 2);
            Assert.That(SyntheticCheckpoint.IsCached(config, TinyPreset.DefaultSeed, root), Is.True);
            Assert.That(r.TokensPerSecond, Is.EqualTo(2 / (r.MedianMs / 1e3)).Within(1e-9).Percent);
            Assert.That(r.MsPerLayer, Is.EqualTo(r.MedianMs / 2).Within(1e-9).Percent);
            Assert.That(r.Bytes, Is.EqualTo(ModelBenchCases.DecodeStepBytes(config, 2, ModelBenchCases.MeanContext)));
            Assert.That(r.PercentMemoryPeak, Is.EqualTo(100 * r.GBps / (DevicePeaks.H200.MemoryTBps * 1000)).Within(1e-6).Percent);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    [Category("Cuda")]
    [Explicit("Real V3 widths (hidden 7168, 128 heads, 16 of the experts, vocab 2048): ~1 GB checkpoint; on the emulator the 4-token prefill alone took over 9 minutes on 2 loaded cores, so run it by hand on a GPU.")]
    public void RealWidthsRunOnTheCudaBackend()
    {
        var cuda = CudaTestBackends.Get();
        var config = ModelBenchCases.V3FourLayerConfig with { NumHiddenLayers = 2, FirstKDenseReplace = 1, NRoutedExperts = 16, VocabSize = 2048, SourceName = "v3-real-widths", IntermediateSize = 2048 };
        string root = Path.Combine(Path.GetTempPath(), "dk-v3bench-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            using var instance = ModelBenchCases.V3Case(1, config, root, allowEmulator: true).Prepare(cuda);
            TestContext.Out.WriteLine($"prepared (checkpoint, load, prefill) in {clock.Elapsed.TotalSeconds:F1} s");
            clock.Restart();
            instance.Run();
            cuda.Synchronize();
            TestContext.Out.WriteLine($"one decode step in {clock.Elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void TheRealV3CaseIsSkippedCleanlyOffARealGpu()
    {
        // Any backend but the real driver (here the CPU) is refused before the 17 GB checkpoint is touched.
        using var cpu = new DeepKernels.Backends.Cpu.CpuBackend();
        var benchCase = BenchCommand.Registry.First(x => x.Name == V3Names[0]);
        var e = Assert.Throws<NotSupportedException>(() => benchCase.Prepare(cpu))!;
        Assert.That(e.Message, Does.Contain("real GPU only"));
    }
}
