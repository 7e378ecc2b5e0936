using System.Diagnostics;
using DeepKernels.Backends.Cuda;
using DeepKernels.Model;
using DeepKernels.Model.Generation;
using DeepKernels.Model.Presets;
using DeepKernels.Tests.Cuda;
using static DeepKernels.Tests.Cuda.Kernels.KernelTestData;

namespace DeepKernels.Tests.Model;

/// <summary>
/// The tiny model on the CUDA backend (the emulator when no GPU is present) against the same
/// checkpoint on the CPU backend: one prefill step with two prompts of different lengths, then
/// batched decode steps fed with the same (CPU-greedy) tokens on both sides.
/// </summary>
[Category("Cuda")]
public class CudaModelTests
{
    /// <summary>
    /// Both backends run the same numerics: FP8 activation quantization (1x128 groups, FP32
    /// scales), the same BF16 cache rounding, RoPE, and in MLA the same BF16 rounding of q, of the
    /// softmax probabilities P and of dequantized FP8 pages (the CPU backend mirrors the CUDA
    /// kernels' tensor-core inputs). They differ only in FP32 summation order (~1e-7 relative),
    /// which now and then moves a value across an E4M3 rounding boundary. Without such a flip the
    /// logits agree to ~1e-12 (measured); 1e-6 still fails on any real fault.
    /// </summary>
    private const double ExactBound = 1e-6;

    /// <summary>
    /// One flipped E4M3 code moves one activation by one ulp (2^-3 relative), ~1e-4 calc_diff on
    /// one layer's logits (measured 1.2e-4 on one dense layer). 1e-3 leaves room for a few flips;
    /// a wrong query (absorption, RoPE position, head order) moves the attention weights and the
    /// logits by far more.
    /// </summary>
    private const double OneLayerMultiKeyBound = 1e-3;

    /// <summary>
    /// On the whole tiny model a flip in an early layer can move a router score across the top-k
    /// margin of a later MoE layer, which changes that token's experts and its logits by calc_diff
    /// ~1e-3..1e-1 (measured 5e-2 once in 8 comparisons). So each comparison must stay under this
    /// loose bound (the test reports how many met <see cref="ExactBound"/>: 4 of 8 on the emulator);
    /// the tight multi-key check is <see cref="OneLayerMultiKeyBound"/> on one layer.
    /// </summary>
    private const double FullModelFlipBound = 0.3;

    [Test]
    public void CudaModelLogitsMatchTheCpuModel()
    {
        // The same emulator or GPU behind a driver that counts transfers, so that the test also
        // sees what a decode step reads back from the device.
        var shared = CudaTestBackends.Get();
        CountingCudaDriver? counter = null;
        CudaBackend? counted = null;
        if (!(shared.Driver is DeepKernels.Cuda.Emulation.EmulatorDriver && shared.UsesSm90Gemm))
        {
            // Uploads run lazily (as on a busy GPU), so a staging slot reused too early would show in the logits.
            counter = new CountingCudaDriver(shared.Driver) { DeferHostToDeviceCopies = true };
            Assert.That(CudaBackend.TryCreate(counter, 0, out counted, out string reason), Is.True, reason);
        }
        using var ownedBackend = counted;
        var cuda = counted ?? shared;
        var cpuModel = TinyModelFixture.Model;
        var clock = Stopwatch.StartNew();
        using var gpuModel = DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _, TinyModelFixture.CacheRoot), cuda);
        int vocab = cpuModel.Config.VocabSize;
        int[][] prompts = [[5], [300, 1999, 42]];
        using var cpu = cpuModel.CreateSession(2, 16);
        using var gpu = gpuModel.CreateSession(2, 16);
        int[] cpuSeqs = [cpu.CreateSequence(), cpu.CreateSequence()];
        int[] gpuSeqs = [gpu.CreateSequence(), gpu.CreateSequence()];
        var cpuLogits = new float[2 * vocab];
        var gpuLogits = new float[2 * vocab];
        const int decodeSteps = 3;
        long[] allocations = new long[decodeSteps];
        var report = new List<string>();
        int exact = 0, compared = 0;
        IReadOnlyList<int[]> tokens = prompts;
        for (int step = 0; step <= decodeSteps; step++)
        {
            cpu.Forward(cpuSeqs, tokens, cpuLogits);
            counter?.Reset();
            gpu.Forward(gpuSeqs, tokens, gpuLogits);
            if (counter is not null && step > 0)
            {
                // A decode step uploads ids, positions, slots and block tables and reads back only
                // the logits: no layer (attention tables, MoE routing) waits on the device.
                Assert.That(counter.DeviceToHostCopies, Is.EqualTo(1), $"decode step {step}: device-to-host copies (only the logits expected)");
                // Uploads go through the pinned staging ring: the only wait is the logits download.
                Assert.That(counter.StreamSynchronizations, Is.EqualTo(1), $"decode step {step}: stream synchronizations (only the logits download expected)");
                Assert.That(counter.EventSynchronizations, Is.Zero, $"decode step {step}: staging ring waits (the ring should not wrap within a step)");
                report.Add($"step {step}: {counter.HostToDeviceCopies} uploads, {counter.StreamSynchronizations} syncs, {counter.EventSynchronizations} event waits, {counter.Launches} launches");
            }
            AssertAllFinite(gpuLogits, $"step {step} CUDA logits");
            for (int i = 0; i < 2; i++)
            {
                var c = cpuLogits.AsSpan(i * vocab, vocab);
                var g = gpuLogits.AsSpan(i * vocab, vocab);
                double diff = CalcDiff(g, c);
                report.Add($"step {step} seq {i}: calc_diff {diff:E2}");
                // A one-token sequence runs the least code (softmax over one key is exactly 1):
                // held to the exact bound; longer ones may carry a flip (see the bounds above).
                bool singleKey = cpu.Length(cpuSeqs[i]) == 1;
                Assert.That(diff, Is.LessThan(singleKey ? ExactBound : FullModelFlipBound), $"step {step} ({(step == 0 ? "prefill" : "decode")}), sequence {i} ({cpu.Length(cpuSeqs[i])} keys): calc_diff = {diff:E3}");
                if (diff < ExactBound) exact++;
                compared++;
            }
            if (step > 0) allocations[step - 1] = gpu.DevicePoolStatistics!.Value.AllocationCount;
            // Feed both sessions the CPU's greedy tokens so that they stay on the same sequence.
            tokens = [[TokenSampler.ArgMax(cpuLogits.AsSpan(0, vocab))], [TokenSampler.ArgMax(cpuLogits.AsSpan(vocab, vocab))]];
        }
        report.Add($"{exact} of {compared} comparisons within {ExactBound:E0}");
        Assert.That(gpu.Length(gpuSeqs[0]), Is.EqualTo(prompts[0].Length + decodeSteps));
        // After the first decode step the device workspace pool allocates nothing more.
        Assert.That(allocations, Is.All.EqualTo(allocations[0]), $"device pool allocation counts per decode step: {string.Join(", ", allocations)}");
        TestContext.Out.WriteLine($"{cuda.Name}: {string.Join("; ", report)}; {clock.Elapsed.TotalSeconds:F1} s");
    }

    [Test]
    public void OneDenseLayerOnCudaMatchesCpuOverSeveralKeys()
    {
        var cuda = CudaTestBackends.Get();
        using var cpuModel = TinyModelFixture.OneLayer(moe: false);
        var config = TinyPreset.Config with { NumHiddenLayers = 1, FirstKDenseReplace = 1, NumNextnPredictLayers = 0, SourceName = "one-layer" };
        using var gpuModel = DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _, TinyModelFixture.CacheRoot, config, 5), cuda);
        int vocab = cpuModel.Config.VocabSize;
        using var cpu = cpuModel.CreateSession(2, 16);
        using var gpu = gpuModel.CreateSession(2, 16);
        int[] cpuSeqs = [cpu.CreateSequence(), cpu.CreateSequence()];
        int[] gpuSeqs = [gpu.CreateSequence(), gpu.CreateSequence()];
        var cpuLogits = new float[2 * vocab];
        var gpuLogits = new float[2 * vocab];
        IReadOnlyList<int[]> tokens = [[17, 1200], [5, 900, 33, 2047, 64]];
        var report = new List<string>();
        for (int step = 0; step < 3; step++)
        {
            cpu.Forward(cpuSeqs, tokens, cpuLogits);
            gpu.Forward(gpuSeqs, tokens, gpuLogits);
            for (int i = 0; i < 2; i++)
            {
                double diff = CalcDiff(gpuLogits.AsSpan(i * vocab, vocab), cpuLogits.AsSpan(i * vocab, vocab));
                report.Add($"step {step} seq {i} ({cpu.Length(cpuSeqs[i])} keys): {diff:E2}");
                Assert.That(diff, Is.LessThan(OneLayerMultiKeyBound), $"step {step}, sequence {i} ({cpu.Length(cpuSeqs[i])} keys): calc_diff = {diff:E3}");
            }
            tokens = [[TokenSampler.ArgMax(cpuLogits.AsSpan(0, vocab))], [TokenSampler.ArgMax(cpuLogits.AsSpan(vocab, vocab))]];
        }
        TestContext.Out.WriteLine(string.Join("; ", report));
    }
}
