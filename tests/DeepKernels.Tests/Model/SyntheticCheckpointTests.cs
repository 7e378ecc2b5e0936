using System.Diagnostics;
using System.Security.Cryptography;
using DeepKernels.Formats;
using DeepKernels.Model;
using DeepKernels.Model.Checkpoint;
using DeepKernels.Model.Presets;
using DeepKernels.Tensors;

namespace DeepKernels.Tests.Model;

public class SyntheticCheckpointTests
{
    private static readonly DeepKernels.Model.Config.DeepSeekV3Config Small = TinyPreset.Config with
    {
        NumHiddenLayers = 2, FirstKDenseReplace = 1, NumNextnPredictLayers = 0, NRoutedExperts = 8, NGroup = 2, TopkGroup = 1,
        NumExpertsPerTok = 2, VocabSize = 512, SourceName = "synthetic-small",
    };

    [Test]
    public void WritesTheTinyPresetsTensorsWithTheRightStatisticsAndNoNaNCodes()
    {
        string root = Path.Combine(Path.GetTempPath(), "dk-synth-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            string dir = SyntheticCheckpoint.EnsureCheckpoint(out bool created, Small, 7, root);
            Assert.That(created, Is.True);
            Assert.That(Path.GetFileName(dir), Does.StartWith("synth-v3-"));
            using var ckpt = CheckpointDirectory.Open(dir);
            var names = TinyPreset.BuildCheckpoint(Small, 7).Names.ToList();
            Assert.That(ckpt.Names.Order(StringComparer.Ordinal), Is.EqualTo(names.Order(StringComparer.Ordinal)));
            Assert.That(new FileInfo(Path.Combine(dir, "model.safetensors")).Length, Is.GreaterThan(SyntheticCheckpoint.DataBytes(Small)));

            // An expert's down_proj [512, 256]: dequantized std 1/sqrt(256), mean ~0, no NaN code.
            var w = ckpt.Get("model.layers.1.mlp.experts.5.down_proj.weight");
            var codes = CheckpointDirectory.Bytes(w).ToArray();
            var scales = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(CheckpointDirectory.Bytes(ckpt.Get("model.layers.1.mlp.experts.5.down_proj.weight_scale_inv"))).ToArray();
            Assert.That(codes, Has.None.Matches<byte>(b => (b & 0x7F) == 0x7F));
            Assert.That(scales, Has.Length.EqualTo(4 * 2).And.All.EqualTo(scales[0]));
            double sum = 0, sq = 0;
            foreach (byte b in codes)
            {
                double v = Float8E4M3.ToSingle(b) * scales[0];
                sum += v;
                sq += v * v;
            }
            double mean = sum / codes.Length, std = Math.Sqrt(sq / codes.Length - mean * mean);
            Assert.That(std, Is.EqualTo(1 / Math.Sqrt(256)).Within(3).Percent);
            Assert.That(Math.Abs(mean), Is.LessThan(0.05 * std));
            // The uniform table maps onto ~80 distinct E4M3 codes (coarse near +-448), both signs.
            Assert.That(codes.Distinct().Count(), Is.GreaterThan(64));
            Assert.That(codes.Count(b => b >= 0x80), Is.InRange(codes.Length * 0.45, codes.Length * 0.55));

            // The same seed gives the same file; another seed another one.
            string again = Path.Combine(root, "again");
            Directory.CreateDirectory(again);
            SyntheticCheckpoint.Write(again, Small, 7);
            Assert.That(Hash(Path.Combine(again, "model.safetensors")), Is.EqualTo(Hash(Path.Combine(dir, "model.safetensors"))));
            Assert.That(SyntheticCheckpoint.DirectoryName(Small, 8), Is.Not.EqualTo(Path.GetFileName(dir)));
            Assert.That(SyntheticCheckpoint.EnsureCheckpoint(out bool second, Small, 7, root), Is.EqualTo(dir));
            Assert.That(second, Is.False);
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    public void ItsModelGivesFiniteLogitsOfOrderOne()
    {
        string root = Path.Combine(Path.GetTempPath(), "dk-synth-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            using var model = DeepSeekV3Model.Load(SyntheticCheckpoint.EnsureCheckpoint(out _, Small, 3, root), TinyModelFixture.Backend);
            using var session = model.CreateSession(1, 16);
            int seq = session.CreateSequence();
            var logits = new float[Small.VocabSize];
            session.Forward([seq], [[1, 2, 3, 4]], logits);
            session.Forward([seq], [[5]], logits);
            Assert.That(logits, Has.All.Matches<float>(float.IsFinite));
            double rms = Math.Sqrt(logits.Sum(v => (double)v * v) / logits.Length);
            Assert.That(rms, Is.InRange(0.05, 20), "activations stay O(1) through the layers");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    [Test]
    [Explicit("Measures generation speed at real V3 widths (writes ~0.6 GB); run by hand.")]
    public void MeasureGenerationSpeed()
    {
        // One MoE layer at real widths with 8 experts (plus the 129280 x 7168 embeddings and lm_head).
        var config = DeepKernels.Cli.Commands.ModelBenchCases.V3FourLayerConfig with { NumHiddenLayers = 1, FirstKDenseReplace = 0, NRoutedExperts = 8, NGroup = 1, TopkGroup = 1, NumExpertsPerTok = 8 };
        string root = Path.Combine(Path.GetTempPath(), "dk-synth-speed-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            foreach (var c in new[] { config with { VocabSize = 1024 }, config })
            {
                long bytes = SyntheticCheckpoint.DataBytes(c);
                var clock = Stopwatch.StartNew();
                var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
                SyntheticCheckpoint.EnsureCheckpoint(out _, c, 1, root);
                double fast = clock.Elapsed.TotalSeconds, cpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu0).TotalSeconds;
                TestContext.Out.WriteLine($"synthetic vocab {c.VocabSize}: {bytes / 1e9:F2} GB in {fast:F1} s wall, {cpu:F1} s CPU = {bytes / 1e9 / cpu:F2} GB per CPU-second, on {Environment.ProcessorCount} cores");
                Directory.Delete(root, recursive: true);
            }
            var tinyConfig = config with { VocabSize = 512 };
            var sw = Stopwatch.StartNew();
            var tcpu0 = Process.GetCurrentProcess().TotalProcessorTime;
            // The tiny preset's generator on the MoE layer's experts only (8 x 3 x 2048 x 7168).
            var writer = TinyPreset.BuildCheckpoint(tinyConfig, 1);
            double tiny = sw.Elapsed.TotalSeconds;
            TestContext.Out.WriteLine($"tiny preset generator: {writer.DataBytes / 1e9:F2} GB in memory in {tiny:F1} s = {writer.DataBytes / 1e9 / tiny:F3} GB/s (single thread), {(Process.GetCurrentProcess().TotalProcessorTime - tcpu0).TotalSeconds:F1} s CPU");
        }
        finally
        {
            if (Directory.Exists(root)) Directory.Delete(root, recursive: true);
        }
    }

    private static string Hash(string path)
    {
        using var s = File.OpenRead(path);
        return Convert.ToHexString(SHA256.HashData(s));
    }
}
