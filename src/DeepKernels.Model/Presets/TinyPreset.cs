using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using DeepKernels.Formats;
using DeepKernels.Model.Checkpoint;
using DeepKernels.Model.Config;
using DeepKernels.Model.Generation;
using DeepKernels.Model.Tokenization;
using DeepKernels.Ops.Quantize;
using DeepKernels.Tensors;

namespace DeepKernels.Model.Presets;

/// <summary>
/// The built-in tiny DeepSeek-V3-architecture model that <c>deepkernels run</c> uses when no
/// checkpoint is given. It keeps the real MLA dims (kv_lora_rank 512, RoPE 64, nope 128,
/// v_head 128) and V3's YaRN settings, with small 128-multiple widths:
/// <list type="bullet">
/// <item>hidden 512, 4 heads, q_lora_rank 256, vocab 2048, rms_norm_eps 1e-6;</item>
/// <item>4 layers: layer 0 dense (intermediate 1024), layers 1-3 MoE;</item>
/// <item>MoE: 16 routed experts in 4 groups, top-4 experts from the best 2 groups, sigmoid
/// scoring with correction bias (noaux_tc), normalised, scaled by 2.5, 1 shared expert,
/// expert width 256;</item>
/// <item>one multi-token-prediction layer (index 4) stored in the checkpoint and skipped at load.</item>
/// </list>
/// Weights are drawn from <see cref="DeterministicRandom"/> with <see cref="DefaultSeed"/>
/// (uniform, standard deviation 1/sqrt(fan_in) for projections) and written once as a real FP8
/// checkpoint (E4M3 projections and experts with F32 weight_scale_inv per 128x128 block; BF16
/// embeddings, norms, lm_head and router gate; F32 gate bias) into
/// <c>~/.cache/deepkernels/tiny-v3-&lt;hash&gt;</c> (or <c>$DEEPKERNELS_CACHE</c>), from where it is
/// loaded by the same loader as any checkpoint. About 31 MB. Next to it a byte-level BPE
/// <c>tokenizer.json</c> from <see cref="TinyTokenizer"/> (BOS / EOS at the config's ids), written
/// also into older cached directories that lack it.
/// </summary>
public static class TinyPreset
{
    /// <summary>Seed of the preset's weights.</summary>
    public const ulong DefaultSeed = 20241226;

    /// <summary>Bump when the generator changes so cached checkpoints are rebuilt.</summary>
    private const int GeneratorVersion = 1;

    /// <summary>The preset's architecture.</summary>
    public static DeepSeekV3Config Config { get; } = new()
    {
        SourceName = "tiny preset",
        VocabSize = 2048,
        HiddenSize = 512,
        IntermediateSize = 1024,
        MoeIntermediateSize = 256,
        NumHiddenLayers = 4,
        FirstKDenseReplace = 1,
        MoeLayerFreq = 1,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 4,
        NRoutedExperts = 16,
        NSharedExperts = 1,
        NumExpertsPerTok = 4,
        NGroup = 4,
        TopkGroup = 2,
        TopkMethod = "noaux_tc",
        ScoringFunc = "sigmoid",
        NormTopkProb = true,
        RoutedScalingFactor = 2.5,
        QLoraRank = 256,
        KvLoraRank = 512,
        QkNopeHeadDim = 128,
        QkRopeHeadDim = 64,
        VHeadDim = 128,
        MaxPositionEmbeddings = 8192,
        RopeTheta = 10000,
        RopeScaling = new RopeScalingConfig { Factor = 40, OriginalMaxPositionEmbeddings = 4096, BetaFast = 32, BetaSlow = 1, MScale = 1, MScaleAllDim = 1 },
        RmsNormEps = 1e-6,
        NumNextnPredictLayers = 1,
        BosTokenId = 0,
        EosTokenIds = [1],
        QuantizationConfig = new QuantizationConfig(),
    };

    /// <summary>The default cache root: $DEEPKERNELS_CACHE, else ~/.cache/deepkernels.</summary>
    public static string DefaultCacheRoot =>
        Environment.GetEnvironmentVariable("DEEPKERNELS_CACHE") is { Length: > 0 } env
            ? env
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "deepkernels");

    /// <summary>The directory name for a configuration and seed: tiny-v3-&lt;12 hex of SHA-256&gt;.</summary>
    public static string DirectoryName(DeepSeekV3Config config, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        string key = $"{config.ToJson()}|{seed.ToString(CultureInfo.InvariantCulture)}|{GeneratorVersion.ToString(CultureInfo.InvariantCulture)}";
        return "tiny-v3-" + Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))[..12];
    }

    /// <summary>
    /// Returns the checkpoint directory of the preset (or of <paramref name="config"/>), writing it
    /// first when absent. <paramref name="created"/> says whether it was written now.
    /// </summary>
    public static string EnsureCheckpoint(out bool created, string? cacheRoot = null, DeepSeekV3Config? config = null, ulong seed = DefaultSeed)
    {
        config ??= Config;
        config.Validate();
        string root = cacheRoot ?? DefaultCacheRoot;
        string dir = Path.Combine(root, DirectoryName(config, seed));
        created = false;
        if (File.Exists(Path.Combine(dir, "config.json")) && File.Exists(Path.Combine(dir, "model.safetensors")))
        {
            // Directories cached before the preset had a tokenizer get one (the weights do not change).
            if (!File.Exists(Path.Combine(dir, "tokenizer.json"))) WriteTokenizer(dir, config);
            return dir;
        }
        Directory.CreateDirectory(root);
        created = CheckpointCache.Publish(dir, t => Write(t, config, seed));
        return dir;
    }

    /// <summary>Writes config.json and model.safetensors for <paramref name="config"/> into <paramref name="directory"/>.</summary>
    public static void Write(string directory, DeepSeekV3Config config, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        var writer = BuildCheckpoint(config, seed);
        writer.Save(Path.Combine(directory, "model.safetensors"), new Dictionary<string, string> { ["format"] = "pt", ["generator"] = "deepkernels tiny preset", ["seed"] = seed.ToString(CultureInfo.InvariantCulture) });
        File.WriteAllText(Path.Combine(directory, "config.json"), config.ToJson());
        WriteTokenizer(directory, config);
    }

    /// <summary>
    /// Writes the tiny tokenizer.json for <paramref name="config"/> into <paramref name="directory"/>
    /// when its vocabulary can hold the 256 byte tokens plus distinct BOS and EOS ids.
    /// </summary>
    public static bool WriteTokenizer(string directory, DeepSeekV3Config config)
    {
        ArgumentNullException.ThrowIfNull(config);
        int eos = config.EosTokenIds.Count > 0 ? config.EosTokenIds[0] : -1;
        if (config.VocabSize < 258 || eos < 0 || eos == config.BosTokenId) return false;
        TinyTokenizer.Write(directory, config.VocabSize, config.BosTokenId, eos);
        return true;
    }

    /// <summary>All tensors of the model as a writer (also used by tests to build variants).</summary>
    public static CheckpointWriter BuildCheckpoint(DeepSeekV3Config config, ulong seed)
    {
        ArgumentNullException.ThrowIfNull(config);
        var rng = new DeterministicRandom(seed);
        var w = new CheckpointWriter();
        int h = config.HiddenSize, heads = config.NumAttentionHeads;
        Bf16(w, rng, "model.embed_tokens.weight", 1.0, 0, config.VocabSize, h);
        for (int i = 0; i < config.NumHiddenLayers + config.NumNextnPredictLayers; i++)
        {
            string p = $"model.layers.{i}.";
            if (i >= config.NumHiddenLayers)
            {
                // Multi-token prediction layer: a few of its tensors, enough to be recognised and skipped.
                Bf16(w, rng, p + "enorm.weight", 0.1, 1, h);
                Bf16(w, rng, p + "hnorm.weight", 0.1, 1, h);
                Fp8(w, rng, p + "eh_proj.weight", h, 2 * h);
                continue;
            }
            Bf16(w, rng, p + "input_layernorm.weight", 0.1, 1, h);
            Bf16(w, rng, p + "post_attention_layernorm.weight", 0.1, 1, h);
            string a = p + "self_attn.";
            if (config.QLoraRank is { } ql)
            {
                Fp8(w, rng, a + "q_a_proj.weight", ql, h);
                Bf16(w, rng, a + "q_a_layernorm.weight", 0.1, 1, ql);
                Fp8(w, rng, a + "q_b_proj.weight", heads * config.QkHeadDim, ql);
            }
            else Fp8(w, rng, a + "q_proj.weight", heads * config.QkHeadDim, h);
            Fp8(w, rng, a + "kv_a_proj_with_mqa.weight", config.KvLoraRank + config.QkRopeHeadDim, h);
            Bf16(w, rng, a + "kv_a_layernorm.weight", 0.1, 1, config.KvLoraRank);
            Fp8(w, rng, a + "kv_b_proj.weight", heads * (config.QkNopeHeadDim + config.VHeadDim), config.KvLoraRank);
            Fp8(w, rng, a + "o_proj.weight", h, heads * config.VHeadDim);
            if (config.IsMoeLayer(i))
            {
                Bf16(w, rng, p + "mlp.gate.weight", 1 / Math.Sqrt(h), 0, config.NRoutedExperts, h);
                var bias = new float[config.NRoutedExperts];
                for (int e = 0; e < bias.Length; e++) bias[e] = (float)((rng.NextDouble() * 2 - 1) * 0.1);
                w.Add<float>(p + "mlp.gate.e_score_correction_bias", DType.Float32, [bias.Length], bias);
                for (int e = 0; e < config.NRoutedExperts; e++) Mlp(w, rng, $"{p}mlp.experts.{e}.", config.MoeIntermediateSize, h);
                if (config.NSharedExperts > 0) Mlp(w, rng, p + "mlp.shared_experts.", config.MoeIntermediateSize * config.NSharedExperts, h);
            }
            else Mlp(w, rng, p + "mlp.", config.IntermediateSize, h);
        }
        Bf16(w, rng, "model.norm.weight", 0.1, 1, h);
        if (!config.TieWordEmbeddings) Bf16(w, rng, "lm_head.weight", 1 / Math.Sqrt(h), 0, config.VocabSize, h);
        return w;
    }

    private static void Mlp(CheckpointWriter w, DeterministicRandom rng, string prefix, int inter, int h)
    {
        Fp8(w, rng, prefix + "gate_proj.weight", inter, h);
        Fp8(w, rng, prefix + "up_proj.weight", inter, h);
        Fp8(w, rng, prefix + "down_proj.weight", h, inter);
    }

    // Uniform values with the given standard deviation around `center`.
    private static float[] Uniform(DeterministicRandom rng, long count, double std, double center)
    {
        var v = new float[count];
        double a = std * Math.Sqrt(3);
        for (long i = 0; i < count; i++) v[i] = (float)(center + (rng.NextDouble() * 2 - 1) * a);
        return v;
    }

    private static void Bf16(CheckpointWriter w, DeterministicRandom rng, string name, double std, double center, params long[] shape)
    {
        var v = Uniform(rng, shape.Aggregate(1L, (x, y) => x * y), std, center);
        var b = new BFloat16[v.Length];
        BFloat16.FromSingle(v, b);
        w.Add<BFloat16>(name, DType.BFloat16, shape, b);
    }

    private static void Fp8(CheckpointWriter w, DeterministicRandom rng, string name, int rows, int cols)
    {
        var v = Uniform(rng, (long)rows * cols, 1 / Math.Sqrt(cols), 0);
        var codes = new Float8E4M3[v.Length];
        int rb = WeightQuantization.BlockCount(rows), cb = WeightQuantization.BlockCount(cols);
        var scales = new float[rb * cb];
        WeightQuantization.Quantize(v, rows, cols, codes, scales);
        w.Add<Float8E4M3>(name, DType.Float8E4M3, [rows, cols], codes);
        w.Add<float>(name + "_scale_inv", DType.Float32, [rb, cb], scales);
    }
}
