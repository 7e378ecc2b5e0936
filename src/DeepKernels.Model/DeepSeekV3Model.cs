using DeepKernels.Backends;
using DeepKernels.Memory.KvCache;
using DeepKernels.Ops.Mla;
using DeepKernels.Model.Checkpoint;
using DeepKernels.Model.Config;
using DeepKernels.Model.Weights;
using DeepKernels.Ops.MoeRouter;
using DeepKernels.Tensors;

namespace DeepKernels.Model;

/// <summary>
/// A DeepSeek-V3 architecture model loaded on a backend: embedding, per layer RMSNorm -> MLA
/// attention (YaRN RoPE, absorbed decode over a paged latent cache) -> residual -> RMSNorm ->
/// dense MLP or MoE -> residual, final RMSNorm and lm_head. Run it through an
/// <see cref="InferenceSession"/>, which owns the KV cache and the per-step workspace.
/// The graph runs on any backend: on the CPU backend over host spans, on a device backend (CUDA,
/// or its emulator) as backend ops over device tensors (weights uploaded at load; RoPE, weight
/// absorption, residuals and BF16 projections through the RotaryEmbedding, BatchedMatmul and
/// Elementwise ops).
/// </summary>
public sealed class DeepSeekV3Model : IDisposable
{
    private DeepSeekV3Model(DeepSeekV3Config config, Backend backend, ModelWeights weights, string source)
    {
        Config = config;
        Backend = backend;
        Weights = weights;
        Source = source;
        Rope = new YarnRope(config.QkRopeHeadDim, config.RopeTheta, config.RopeScaling?.ToYarnScaling() ?? YarnScaling.None);
        RouterConfig = config.NRoutedExperts == 0 ? null : new MoeRouterConfig
        {
            Scoring = config.ScoringFunc == "softmax" ? MoeScoring.Softmax : MoeScoring.Sigmoid,
            NGroup = config.NGroup,
            TopKGroup = config.TopkGroup,
            TopK = config.NumExpertsPerTok,
            NormTopKProb = config.NormTopkProb,
            RoutedScalingFactor = (float)config.RoutedScalingFactor,
        };
        RouterConfig?.Validate(config.NRoutedExperts);
    }

    /// <summary>The architecture.</summary>
    public DeepSeekV3Config Config { get; }

    /// <summary>Where the weights and caches live.</summary>
    public Backend Backend { get; }

    /// <summary>The loaded weights.</summary>
    public ModelWeights Weights { get; }

    /// <summary>The checkpoint directory the model came from.</summary>
    public string Source { get; }

    /// <summary>RoPE with the config's YaRN settings.</summary>
    public YarnRope Rope { get; }

    /// <summary>The MoE gate configuration (null without routed experts).</summary>
    public MoeRouterConfig? RouterConfig { get; }

    /// <summary>
    /// Loads <c>config.json</c> and the safetensors files of <paramref name="directory"/> onto
    /// <paramref name="backend"/>.
    /// </summary>
    public static DeepSeekV3Model Load(string directory, Backend backend, LoadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(backend);
        var config = DeepSeekV3Config.FromFile(Path.Combine(directory, "config.json"));
        using var checkpoint = CheckpointDirectory.Open(directory);
        var weights = ModelLoader.Load(checkpoint, config, backend, options);
        return new DeepSeekV3Model(config, backend, weights, directory);
    }

    /// <summary>
    /// A session for up to <paramref name="maxSequences"/> sequences of at most
    /// <paramref name="maxTokensPerSequence"/> tokens each (prompt plus generated).
    /// </summary>
    public InferenceSession CreateSession(int maxSequences, int maxTokensPerSequence, int pageSize = LatentCacheFormat.DefaultPageSize, LatentCacheLayout layout = LatentCacheLayout.BFloat16) =>
        new(this, maxSequences, maxTokensPerSequence, pageSize, layout);

    /// <summary>Frees the weights.</summary>
    public void Dispose() => Weights.Dispose();
}
