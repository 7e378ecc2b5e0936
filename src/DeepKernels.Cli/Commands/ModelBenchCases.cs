using System.Globalization;
using DeepKernels.Diagnostics.Benchmarking;
using DeepKernels.Model;
using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `model-decode` bench cases (issue 7): one decode step of the built-in tiny DeepSeek-V3 model
/// for a batch of 1, 8 or 64 sequences, each holding a 4-token prompt; tokens/s = batch / step
/// time. They live in the CLI because the model library sits above DeepKernels (whose
/// <see cref="OpBenchRegistry"/> cannot see it). Bytes: the active weights one step reads
/// (FP8 projections, router, shared and top-k experts of each token, BF16 lm_head) plus the
/// latent cache read; FLOPs: 2 per active parameter per token. Then the CUDA-only "v3-4layer"
/// family: DeepSeek-V3 at real widths cut to 4 layers on a synthetic 17 GB checkpoint, reporting
/// tok/s, ms per layer (step / 4) and the share of HBM bandwidth (see <see cref="V3Case"/>).
/// </summary>
internal static class ModelBenchCases
{
    /// <summary>Sequences get a fresh 4-token prompt after this many decoded tokens, so the cache never fills.</summary>
    private const int MaxDecodedTokens = 256;

    /// <summary>
    /// DeepSeek-V3's own configuration (hidden 7168, 128 heads, q_lora 1536, kv_lora 512, 256
    /// routed experts of width 2048, top-8 in 4 of 8 groups, vocab 129280) cut to its first 4
    /// layers: first_k_dense_replace stays 3, so layers 0-2 are dense (intermediate 18432) and
    /// layer 3 is MoE, exactly the real model's first four layers; no MTP layer. (58 of V3's 61
    /// layers are MoE, so 1 dense + 3 MoE would weigh a whole-model step more faithfully, but
    /// needs a 40 GB checkpoint instead of 17 GB; the per-layer figure reported is step / 4.)
    /// </summary>
    internal static DeepSeekV3Config V3FourLayerConfig { get; } = DeepSeekV3Reference.Config with
    {
        NumHiddenLayers = 4,
        NumNextnPredictLayers = 0,
        SourceName = "deepseek-v3 4-layer",
    };

    /// <summary>
    /// The cases, CPU (the target) and CUDA (so the bundle's trace covers the model's glue
    /// kernels), then the CUDA-only DeepSeek-V3 4-layer family last (slowest: a 17 GB checkpoint).
    /// </summary>
    public static IReadOnlyList<OpBenchCase> All { get; } =
        [.. new[] { 1, 8, 64 }.Select(b => Case(b, BenchTargets.Cpu, "")), Case(1, BenchTargets.Cuda, ""),
         .. new[] { 1, 8, 64 }.Select(b => V3Case(b, V3FourLayerConfig, null, allowEmulator: false))];

    /// <summary>Device memory the V3 cases want beyond the weights (cache, workspace, logits).</summary>
    private const long DeviceHeadroomBytes = 4L << 30;

    /// <summary>
    /// A CUDA-only decode case of a large configuration (the V3 family; tests pass a scaled-down
    /// config, a private cache root and <paramref name="allowEmulator"/>). The checkpoint comes
    /// from <see cref="SyntheticCheckpoint"/> (written once into the cache, progress on stderr).
    /// Bytes per step: see <see cref="DecodeStepBytes"/>; FLOPs: 2 per active parameter per token.
    /// </summary>
    internal static OpBenchCase V3Case(int batch, DeepSeekV3Config config, string? cacheRoot, bool allowEmulator)
    {
        double active = config.ActiveParametersPerToken();
        string name = ReferenceEquals(config, V3FourLayerConfig) ? "v3-4layer" : config.SourceName ?? "custom";
        return new OpBenchCase("model-decode", $"model-decode {name} batch={batch}",
            new Dictionary<string, long>
            {
                ["batch"] = batch, ["layers"] = config.NumHiddenLayers, ["hidden"] = config.HiddenSize,
                ["experts"] = config.NRoutedExperts, ["context"] = MeanContext,
            },
            2.0 * active * batch, DecodeStepBytes(config, batch, MeanContext), MathPrecision.Fp8, BenchTargets.Cuda,
            backend => PrepareLarge(backend, batch, config, cacheRoot, allowEmulator))
        {
            TokensPerRun = batch,
            LayersPerRun = config.NumHiddenLayers,
            // Writing the checkpoint (first run) and loading it dominate; the steps themselves are milliseconds.
            EstimatedSeconds = () => SyntheticCheckpoint.IsCached(config, TinyPreset.DefaultSeed, cacheRoot) ? 90 : 240,
        };
    }

    /// <summary>Mean cached positions a decode step attends to: the 4-token prompt plus half of the decoded tokens.</summary>
    internal const int MeanContext = 4 + MaxDecodedTokens / 2;

    /// <summary>
    /// Bytes one decode step of <paramref name="batch"/> tokens reads at least: every attention
    /// and dense-MLP weight (FP8, 1 byte) with its F32 128x128 block scales, per MoE layer the
    /// shared expert, the BF16 router gate and the routed experts the batch touches (expected
    /// distinct experts under uniform top-k routing: E(1 - (1 - k/E)^batch), which is k for one
    /// token and tends to E), the BF16 lm_head, plus the BF16 latent cache of
    /// <paramref name="context"/> positions per sequence and layer.
    /// </summary>
    internal static double DecodeStepBytes(DeepSeekV3Config config, int batch, int context)
    {
        double h = config.HiddenSize, heads = config.NumAttentionHeads;
        double q = config.QLoraRank is { } ql ? ql * h + heads * config.QkHeadDim * ql : heads * config.QkHeadDim * h;
        double attention = q + config.LatentCacheDim * h + heads * (config.QkNopeHeadDim + config.VHeadDim) * config.KvLoraRank + h * heads * config.VHeadDim;
        double fp8 = 0, bf16 = config.VocabSize * h;
        for (int l = 0; l < config.NumHiddenLayers; l++)
        {
            fp8 += attention;
            if (config.IsMoeLayer(l))
            {
                double e = config.NRoutedExperts, k = config.NumExpertsPerTok;
                double touched = e * (1 - Math.Pow(1 - k / e, batch));
                fp8 += (touched + config.NSharedExperts) * 3.0 * config.MoeIntermediateSize * h;
                bf16 += e * h;
            }
            else fp8 += 3.0 * config.IntermediateSize * h;
        }
        double scales = fp8 / (128.0 * 128.0) * 4;
        double cache = (double)batch * context * config.NumHiddenLayers * config.LatentCacheDim * 2;
        return fp8 + scales + 2 * bf16 + cache;
    }

    private static IOpBenchInstance PrepareLarge(Backends.Backend backend, int batch, DeepSeekV3Config config, string? cacheRoot, bool allowEmulator)
    {
        if (!allowEmulator && backend.Name != "cuda")
            throw new NotSupportedException($"'{config.SourceName}' runs on a real GPU only (backend '{backend.Name}' would take hours).");
        long weights = SyntheticCheckpoint.DataBytes(config);
        if (CudaBenchBinding.TryGetTarget(backend) is { } target && target.Device.TotalMemoryBytes < weights + DeviceHeadroomBytes)
            throw new NotSupportedException(string.Create(CultureInfo.InvariantCulture,
                $"'{config.SourceName}' needs about {(weights + DeviceHeadroomBytes) / 1e9:F1} GB of device memory; {target.Device.Name} has {target.Device.TotalMemoryBytes / 1e9:F1} GB."));
        string root = cacheRoot ?? TinyPreset.DefaultCacheRoot;
        if (!SyntheticCheckpoint.IsCached(config, TinyPreset.DefaultSeed, root))
        {
            Directory.CreateDirectory(root);
            long free = new DriveInfo(Path.GetFullPath(root)).AvailableFreeSpace;
            if (free < weights + (1L << 30))
                throw new NotSupportedException(string.Create(CultureInfo.InvariantCulture,
                    $"'{config.SourceName}' needs a {weights / 1e9:F1} GB checkpoint in {root}, which has {free / 1e9:F1} GB free (set DEEPKERNELS_CACHE elsewhere)."));
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Writing the synthetic '{config.SourceName}' checkpoint ({weights / 1e9:F1} GB) into {root} (once)..."));
        }
        var clock = System.Diagnostics.Stopwatch.StartNew();
        string dir = SyntheticCheckpoint.EnsureCheckpoint(out bool created, config, TinyPreset.DefaultSeed, root, Console.Error.WriteLine);
        if (created) Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Checkpoint written in {clock.Elapsed.TotalSeconds:F1} s: {dir}"));
        clock.Restart();
        var model = DeepSeekV3Model.Load(dir, backend);
        Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture, $"'{config.SourceName}' loaded in {clock.Elapsed.TotalSeconds:F1} s."));
        return Start(model, batch);
    }

    private static OpBenchCase Case(int batch, BenchTargets targets, string suffix)
    {
        var c = TinyPreset.Config;
        double active = c.ActiveParametersPerToken();
        double bytes = active + (double)c.VocabSize * c.HiddenSize // lm_head is BF16: one more byte per weight
            + (double)batch * 4 * c.NumHiddenLayers * c.LatentCacheDim * 2;
        return new OpBenchCase("model-decode", $"model-decode tiny batch={batch}{suffix}",
            new Dictionary<string, long> { ["batch"] = batch, ["layers"] = c.NumHiddenLayers, ["hidden"] = c.HiddenSize },
            2.0 * active * batch, bytes, MathPrecision.Fp8, targets, backend => Prepare(backend, batch))
        {
            TokensPerRun = batch,
        };
    }

    private static IOpBenchInstance Prepare(Backends.Backend backend, int batch)
    {
        return Start(DeepSeekV3Model.Load(TinyPreset.EnsureCheckpoint(out _), backend), batch);
    }

    // A session of `batch` sequences, prefilled; the instance owns session and model.
    private static IOpBenchInstance Start(DeepSeekV3Model model, int batch)
    {
        InferenceSession? session = null;
        try
        {
            session = model.CreateSession(batch, MaxDecodedTokens + 8);
            var state = new DecodeState(session, batch, model.Config.VocabSize);
            state.Prefill();
            return new DelegateBenchInstance(state.Step, session, model);
        }
        catch
        {
            session?.Dispose();
            model.Dispose();
            throw;
        }
    }

    private sealed class DecodeState(InferenceSession session, int batch, int vocab)
    {
        private readonly List<int> _sequences = [];
        private readonly int[][] _next = Enumerable.Range(0, batch).Select(i => new[] { (i * 37 + 5) % vocab }).ToArray();
        private readonly float[] _logits = new float[batch * vocab];
        private int _decoded;

        public void Prefill()
        {
            foreach (int s in _sequences) session.FreeSequence(s);
            _sequences.Clear();
            for (int i = 0; i < batch; i++) _sequences.Add(session.CreateSequence());
            session.Forward(_sequences, Enumerable.Range(0, batch).Select(i => new[] { 1, 2 + i % 7, 3, 4 }).ToArray(), _logits);
            _decoded = 0;
        }

        // One decode step; a rare re-prefill (every 256 steps) lands in one sample, which the median ignores.
        public void Step()
        {
            if (_decoded >= MaxDecodedTokens) Prefill();
            session.Forward(_sequences, _next, _logits);
            _decoded++;
        }
    }
}
