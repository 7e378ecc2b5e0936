using System.Globalization;
using System.Text.Json;

namespace DeepKernels.Model.Config;

/// <summary>
/// A DeepSeek-V3 (or V2-style) architecture as described by a Hugging Face <c>config.json</c>.
/// Property names follow the JSON fields (snake_case there, PascalCase here). Read one with
/// <see cref="FromFile"/> or <see cref="Parse"/>; both call <see cref="Validate"/>, which rejects
/// anything the kernels cannot run with a <see cref="ModelConfigException"/> naming the field.
/// </summary>
public sealed record DeepSeekV3Config
{
    /// <summary>The MLA kernels' compressed KV width (kv_lora_rank).</summary>
    public const int SupportedKvLoraRank = 512;

    /// <summary>The MLA kernels' RoPE key width (qk_rope_head_dim).</summary>
    public const int SupportedRopeHeadDim = 64;

    /// <summary>Architectures list, e.g. ["DeepseekV3ForCausalLM"].</summary>
    public IReadOnlyList<string> Architectures { get; init; } = ["DeepseekV3ForCausalLM"];

    /// <summary>"deepseek_v3" or "deepseek_v2".</summary>
    public string ModelType { get; init; } = "deepseek_v3";

    /// <summary>Vocabulary size (rows of the embedding and of lm_head).</summary>
    public int VocabSize { get; init; }

    /// <summary>Model width.</summary>
    public int HiddenSize { get; init; }

    /// <summary>Inner width of the dense MLP layers.</summary>
    public int IntermediateSize { get; init; }

    /// <summary>Inner width of each routed and shared expert.</summary>
    public int MoeIntermediateSize { get; init; }

    /// <summary>Decoder layers (the MTP layers come after these and are not counted).</summary>
    public int NumHiddenLayers { get; init; }

    /// <summary>The first this-many layers use a dense MLP instead of MoE.</summary>
    public int FirstKDenseReplace { get; init; }

    /// <summary>Every this-many layers (after the dense ones) is an MoE layer.</summary>
    public int MoeLayerFreq { get; init; } = 1;

    /// <summary>Query heads.</summary>
    public int NumAttentionHeads { get; init; }

    /// <summary>Key/value heads in the decompressed view (equal to the query heads in DeepSeek).</summary>
    public int NumKeyValueHeads { get; init; }

    /// <summary>Routed experts per MoE layer (0 = no MoE).</summary>
    public int NRoutedExperts { get; init; }

    /// <summary>Shared experts per MoE layer (their widths add up: one expert of n*moe_inter).</summary>
    public int NSharedExperts { get; init; }

    /// <summary>Experts chosen per token.</summary>
    public int NumExpertsPerTok { get; init; }

    /// <summary>Expert groups for group-limited routing.</summary>
    public int NGroup { get; init; } = 1;

    /// <summary>Groups kept per token.</summary>
    public int TopkGroup { get; init; } = 1;

    /// <summary>"noaux_tc" (V3), "group_limited_greedy" or "greedy" (V2).</summary>
    public string TopkMethod { get; init; } = "noaux_tc";

    /// <summary>"sigmoid" (V3) or "softmax" (V2).</summary>
    public string ScoringFunc { get; init; } = "sigmoid";

    /// <summary>Whether the chosen experts' weights are normalised to sum to one.</summary>
    public bool NormTopkProb { get; init; } = true;

    /// <summary>Multiplier applied to the routed experts' weights.</summary>
    public double RoutedScalingFactor { get; init; } = 1;

    /// <summary>Query low-rank width; null means queries are projected directly (V2-Lite).</summary>
    public int? QLoraRank { get; init; }

    /// <summary>Compressed KV width (512 for the MLA kernels).</summary>
    public int KvLoraRank { get; init; } = SupportedKvLoraRank;

    /// <summary>Per-head query/key width without RoPE.</summary>
    public int QkNopeHeadDim { get; init; } = 128;

    /// <summary>Per-head query/key RoPE width (64 for the MLA kernels).</summary>
    public int QkRopeHeadDim { get; init; } = SupportedRopeHeadDim;

    /// <summary>Per-head value width.</summary>
    public int VHeadDim { get; init; } = 128;

    /// <summary>Activation of the MLPs; only "silu".</summary>
    public string HiddenAct { get; init; } = "silu";

    /// <summary>Longest supported context.</summary>
    public int MaxPositionEmbeddings { get; init; } = 4096;

    /// <summary>RoPE base.</summary>
    public double RopeTheta { get; init; } = 10000;

    /// <summary>YaRN settings, or null for plain RoPE.</summary>
    public RopeScalingConfig? RopeScaling { get; init; }

    /// <summary>RMSNorm epsilon.</summary>
    public double RmsNormEps { get; init; } = 1e-6;

    /// <summary>Multi-token-prediction layers stored after the decoder layers (recognised, skipped).</summary>
    public int NumNextnPredictLayers { get; init; }

    /// <summary>Whether lm_head shares the embedding matrix.</summary>
    public bool TieWordEmbeddings { get; init; }

    /// <summary>Beginning-of-sequence token id.</summary>
    public int BosTokenId { get; init; }

    /// <summary>End-of-sequence token ids (config.json may hold one id or a list).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [1];

    /// <summary>"bfloat16" for DeepSeek checkpoints.</summary>
    public string TorchDtype { get; init; } = "bfloat16";

    /// <summary>FP8 block quantization of the weights, or null for an unquantized checkpoint.</summary>
    public QuantizationConfig? QuantizationConfig { get; init; }

    /// <summary>Where this configuration came from, for messages.</summary>
    public string SourceName { get; init; } = "config";

    /// <summary>Query/key width per head: nope + rope.</summary>
    public int QkHeadDim => QkNopeHeadDim + QkRopeHeadDim;

    /// <summary>Values per token per layer in the latent KV cache: kv_lora_rank + rope (576).</summary>
    public int LatentCacheDim => KvLoraRank + QkRopeHeadDim;

    /// <summary>Values per token per layer a plain MHA cache would hold for the same heads (K and V, 2*h*v_head_dim as in DESIGN.md).</summary>
    public long MhaCacheValuesPerToken => 2L * NumKeyValueHeads * VHeadDim;

    /// <summary>Whether layer <paramref name="layer"/> uses MoE (otherwise the dense MLP).</summary>
    public bool IsMoeLayer(int layer) =>
        NRoutedExperts > 0 && layer >= FirstKDenseReplace && layer % MoeLayerFreq == 0;

    /// <summary>
    /// Parameters one token touches in a forward pass: attention projections, the dense MLP or the
    /// router plus top-k and shared experts of every layer, and lm_head (the MTP layer excluded).
    /// Decode FLOPs are 2 per active parameter per token; at one byte per FP8 weight it is also
    /// the bytes a decode step must read at least once.
    /// </summary>
    public double ActiveParametersPerToken()
    {
        double h = HiddenSize, heads = NumAttentionHeads;
        double q = QLoraRank is { } ql ? ql * h + heads * QkHeadDim * ql : heads * QkHeadDim * h;
        double attention = q + LatentCacheDim * h + heads * (QkNopeHeadDim + VHeadDim) * KvLoraRank + h * heads * VHeadDim;
        double total = VocabSize * h;
        for (int l = 0; l < NumHiddenLayers; l++)
        {
            total += attention;
            total += IsMoeLayer(l)
                ? (NumExpertsPerTok + NSharedExperts) * 3.0 * MoeIntermediateSize * h + NRoutedExperts * h
                : 3.0 * IntermediateSize * h;
        }
        return total;
    }

    /// <summary>
    /// The attention softmax scale: qk_head_dim^-0.5, times YaRN's mscale(factor, mscale_all_dim)^2
    /// when YaRN is on (0.1352338 for DeepSeek-V3).
    /// </summary>
    public double SoftmaxScale
    {
        get
        {
            double scale = 1.0 / Math.Sqrt(QkHeadDim);
            if (RopeScaling is { } r && r.MScaleAllDim != 0)
            {
                double m = RopeScalingConfig.YarnMScale(r.Factor, r.MScaleAllDim);
                scale *= m * m;
            }
            return scale;
        }
    }

    /// <summary>Whether the weights are FP8 block-quantized.</summary>
    public bool IsFp8 => QuantizationConfig is not null;

    /// <summary>Reads and validates a config.json.</summary>
    public static DeepSeekV3Config FromFile(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path)) throw new FileNotFoundException($"Model config not found: {path}", path);
        return Parse(File.ReadAllText(path), path);
    }

    /// <summary>Parses and validates config.json text; <paramref name="sourceName"/> appears in messages.</summary>
    public static DeepSeekV3Config Parse(string json, string sourceName = "config.json")
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
        }
        catch (JsonException e)
        {
            throw new ModelConfigException(sourceName, "(json)", $"not valid JSON: {e.Message}");
        }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelConfigException(sourceName, "(root)", $"expected a JSON object, got {root.ValueKind}.");
            var r = new Reader(root, sourceName);
            string modelType = r.String("model_type", "deepseek_v3");
            bool v2 = modelType == "deepseek_v2";
            int heads = r.Int("num_attention_heads");
            var config = new DeepSeekV3Config
            {
                SourceName = sourceName,
                Architectures = r.StringList("architectures") ?? [v2 ? "DeepseekV2ForCausalLM" : "DeepseekV3ForCausalLM"],
                ModelType = modelType,
                VocabSize = r.Int("vocab_size"),
                HiddenSize = r.Int("hidden_size"),
                IntermediateSize = r.Int("intermediate_size"),
                MoeIntermediateSize = r.Int("moe_intermediate_size", 0),
                NumHiddenLayers = r.Int("num_hidden_layers"),
                FirstKDenseReplace = r.Int("first_k_dense_replace", 0),
                MoeLayerFreq = r.Int("moe_layer_freq", 1),
                NumAttentionHeads = heads,
                NumKeyValueHeads = r.Int("num_key_value_heads", heads),
                NRoutedExperts = r.NullableInt("n_routed_experts") ?? 0,
                NSharedExperts = r.NullableInt("n_shared_experts") ?? 0,
                NumExpertsPerTok = r.NullableInt("num_experts_per_tok") ?? 0,
                NGroup = r.NullableInt("n_group") ?? 1,
                TopkGroup = r.NullableInt("topk_group") ?? 1,
                TopkMethod = r.String("topk_method", v2 ? "greedy" : "noaux_tc"),
                ScoringFunc = r.String("scoring_func", v2 ? "softmax" : "sigmoid"),
                NormTopkProb = r.Bool("norm_topk_prob", !v2),
                RoutedScalingFactor = r.Double("routed_scaling_factor", 1.0),
                QLoraRank = r.NullableInt("q_lora_rank"),
                KvLoraRank = r.Int("kv_lora_rank"),
                QkNopeHeadDim = r.Int("qk_nope_head_dim"),
                QkRopeHeadDim = r.Int("qk_rope_head_dim"),
                VHeadDim = r.Int("v_head_dim"),
                HiddenAct = r.String("hidden_act", "silu"),
                MaxPositionEmbeddings = r.Int("max_position_embeddings", 4096),
                RopeTheta = r.Double("rope_theta", 10000),
                RopeScaling = ReadRopeScaling(root, sourceName),
                RmsNormEps = r.Double("rms_norm_eps", 1e-6),
                NumNextnPredictLayers = r.Int("num_nextn_predict_layers", 0),
                TieWordEmbeddings = r.Bool("tie_word_embeddings", false),
                BosTokenId = r.NullableInt("bos_token_id") ?? 0,
                EosTokenIds = r.IntOrIntList("eos_token_id") ?? [1],
                TorchDtype = r.String("torch_dtype", "bfloat16"),
                QuantizationConfig = ReadQuantization(root, sourceName),
            };
            config.Validate();
            return config;
        }
    }

    private static RopeScalingConfig? ReadRopeScaling(JsonElement root, string source)
    {
        if (!root.TryGetProperty("rope_scaling", out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Object) throw new ModelConfigException(source, "rope_scaling", $"expected an object or null, got {e.ValueKind}.");
        var r = new Reader(e, source, "rope_scaling.");
        string type = r.OptionalString("type") ?? r.String("rope_type", "yarn");
        return new RopeScalingConfig
        {
            Type = type,
            Factor = r.Double("factor", 1),
            OriginalMaxPositionEmbeddings = r.Int("original_max_position_embeddings", 4096),
            BetaFast = r.Double("beta_fast", 32),
            BetaSlow = r.Double("beta_slow", 1),
            MScale = r.Double("mscale", 1),
            MScaleAllDim = r.Double("mscale_all_dim", 0),
        };
    }

    private static QuantizationConfig? ReadQuantization(JsonElement root, string source)
    {
        if (!root.TryGetProperty("quantization_config", out var e) || e.ValueKind == JsonValueKind.Null) return null;
        if (e.ValueKind != JsonValueKind.Object) throw new ModelConfigException(source, "quantization_config", $"expected an object or null, got {e.ValueKind}.");
        var r = new Reader(e, source, "quantization_config.");
        return new QuantizationConfig
        {
            QuantMethod = r.String("quant_method", "fp8"),
            Format = r.String("fmt", "e4m3"),
            WeightBlockSize = r.IntList("weight_block_size") ?? [128, 128],
            ActivationScheme = r.String("activation_scheme", "dynamic"),
        };
    }

    /// <summary>
    /// Checks that the kernels can run this architecture; throws <see cref="ModelConfigException"/>
    /// naming the first offending field and what is expected.
    /// </summary>
    public void Validate()
    {
        string s = SourceName;
        void Positive(long v, string field)
        {
            if (v <= 0) throw new ModelConfigException(s, field, $"expected a value > 0, got {v}.");
        }
        if (ModelType is not ("deepseek_v3" or "deepseek_v2"))
            throw new ModelConfigException(s, "model_type", $"expected 'deepseek_v3' or 'deepseek_v2', got '{ModelType}'.");
        Positive(VocabSize, "vocab_size");
        Positive(HiddenSize, "hidden_size");
        Positive(NumHiddenLayers, "num_hidden_layers");
        Positive(NumAttentionHeads, "num_attention_heads");
        Positive(NumKeyValueHeads, "num_key_value_heads");
        if (NumAttentionHeads % NumKeyValueHeads != 0)
            throw new ModelConfigException(s, "num_key_value_heads", $"expected a divisor of num_attention_heads = {NumAttentionHeads}, got {NumKeyValueHeads}.");
        if (KvLoraRank != SupportedKvLoraRank)
            throw new ModelConfigException(s, "kv_lora_rank", $"the MLA kernels need kv_lora_rank = {SupportedKvLoraRank}, got {KvLoraRank}.");
        if (QkRopeHeadDim != SupportedRopeHeadDim)
            throw new ModelConfigException(s, "qk_rope_head_dim", $"the MLA kernels need qk_rope_head_dim = {SupportedRopeHeadDim}, got {QkRopeHeadDim}.");
        Positive(QkNopeHeadDim, "qk_nope_head_dim");
        Positive(VHeadDim, "v_head_dim");
        if (QLoraRank is { } q) Positive(q, "q_lora_rank");
        if (HiddenAct != "silu") throw new ModelConfigException(s, "hidden_act", $"only 'silu' is supported, got '{HiddenAct}'.");
        if (!(RmsNormEps > 0) || !double.IsFinite(RmsNormEps)) throw new ModelConfigException(s, "rms_norm_eps", $"expected a finite value > 0, got {RmsNormEps.ToString(CultureInfo.InvariantCulture)}.");
        if (!(RopeTheta > 0) || !double.IsFinite(RopeTheta)) throw new ModelConfigException(s, "rope_theta", $"expected a finite value > 0, got {RopeTheta.ToString(CultureInfo.InvariantCulture)}.");
        Positive(MaxPositionEmbeddings, "max_position_embeddings");
        if (FirstKDenseReplace < 0 || FirstKDenseReplace > NumHiddenLayers)
            throw new ModelConfigException(s, "first_k_dense_replace", $"expected a value in [0, num_hidden_layers = {NumHiddenLayers}], got {FirstKDenseReplace}.");
        Positive(MoeLayerFreq, "moe_layer_freq");
        if (NumNextnPredictLayers < 0) throw new ModelConfigException(s, "num_nextn_predict_layers", $"expected a value >= 0, got {NumNextnPredictLayers}.");
        bool anyDense = Enumerable.Range(0, NumHiddenLayers).Any(l => !IsMoeLayer(l));
        if (anyDense) Positive(IntermediateSize, "intermediate_size");
        if (NRoutedExperts < 0) throw new ModelConfigException(s, "n_routed_experts", $"expected a value >= 0, got {NRoutedExperts}.");
        if (NRoutedExperts > 0)
        {
            Positive(MoeIntermediateSize, "moe_intermediate_size");
            Positive(NumExpertsPerTok, "num_experts_per_tok");
            Positive(NGroup, "n_group");
            if (NSharedExperts < 0) throw new ModelConfigException(s, "n_shared_experts", $"expected a value >= 0, got {NSharedExperts}.");
            if (NRoutedExperts % NGroup != 0)
                throw new ModelConfigException(s, "n_group", $"n_routed_experts = {NRoutedExperts} must be divisible by n_group = {NGroup}.");
            if (TopkGroup < 1 || TopkGroup > NGroup)
                throw new ModelConfigException(s, "topk_group", $"expected a value in [1, n_group = {NGroup}], got {TopkGroup}.");
            int reachable = TopkGroup * (NRoutedExperts / NGroup);
            if (NumExpertsPerTok > reachable)
                throw new ModelConfigException(s, "num_experts_per_tok", $"expected at most topk_group * experts per group = {reachable}, got {NumExpertsPerTok}.");
            if (ScoringFunc is not ("sigmoid" or "softmax"))
                throw new ModelConfigException(s, "scoring_func", $"expected 'sigmoid' or 'softmax', got '{ScoringFunc}'.");
            if (TopkMethod is not ("noaux_tc" or "greedy" or "group_limited_greedy"))
                throw new ModelConfigException(s, "topk_method", $"expected 'noaux_tc', 'group_limited_greedy' or 'greedy', got '{TopkMethod}'.");
            if (!double.IsFinite(RoutedScalingFactor) || RoutedScalingFactor <= 0)
                throw new ModelConfigException(s, "routed_scaling_factor", $"expected a finite value > 0, got {RoutedScalingFactor.ToString(CultureInfo.InvariantCulture)}.");
        }
        if (RopeScaling is { } rs)
        {
            if (rs.Type != "yarn") throw new ModelConfigException(s, "rope_scaling.type", $"only 'yarn' is supported, got '{rs.Type}'.");
            if (!(rs.Factor >= 1) || !double.IsFinite(rs.Factor)) throw new ModelConfigException(s, "rope_scaling.factor", $"expected a finite value >= 1, got {rs.Factor.ToString(CultureInfo.InvariantCulture)}.");
            Positive(rs.OriginalMaxPositionEmbeddings, "rope_scaling.original_max_position_embeddings");
            if (!(rs.BetaFast > rs.BetaSlow) || !(rs.BetaSlow > 0))
                throw new ModelConfigException(s, "rope_scaling.beta_fast", $"expected beta_fast > beta_slow > 0, got {rs.BetaFast.ToString(CultureInfo.InvariantCulture)} and {rs.BetaSlow.ToString(CultureInfo.InvariantCulture)}.");
        }
        if (QuantizationConfig is { } qc)
        {
            if (qc.QuantMethod != "fp8") throw new ModelConfigException(s, "quantization_config.quant_method", $"only 'fp8' is supported, got '{qc.QuantMethod}'.");
            if (qc.Format != "e4m3") throw new ModelConfigException(s, "quantization_config.fmt", $"only 'e4m3' is supported, got '{qc.Format}'.");
            if (qc.WeightBlockSize.Count != 2 || qc.WeightBlockSize[0] != 128 || qc.WeightBlockSize[1] != 128)
                throw new ModelConfigException(s, "quantization_config.weight_block_size", $"only [128, 128] is supported, got [{string.Join(", ", qc.WeightBlockSize)}].");
            if (qc.ActivationScheme != "dynamic") throw new ModelConfigException(s, "quantization_config.activation_scheme", $"only 'dynamic' is supported, got '{qc.ActivationScheme}'.");
        }
        if (BosTokenId < 0 || BosTokenId >= VocabSize)
            throw new ModelConfigException(s, "bos_token_id", $"expected an id in [0, vocab_size = {VocabSize}), got {BosTokenId}.");
        foreach (int eos in EosTokenIds)
        {
            if (eos < 0 || eos >= VocabSize)
                throw new ModelConfigException(s, "eos_token_id", $"expected ids in [0, vocab_size = {VocabSize}), got {eos}.");
        }
    }

    /// <summary>Typed access to JSON fields with messages naming the field.</summary>
    private readonly struct Reader(JsonElement obj, string source, string prefix = "")
    {
        private bool TryGet(string name, out JsonElement e) =>
            obj.TryGetProperty(name, out e) && e.ValueKind != JsonValueKind.Null;

        private ModelConfigException Wrong(string name, string expected, JsonElement e) =>
            new(source, prefix + name, $"expected {expected}, got {e.ValueKind} {Truncate(e.GetRawText())}.");

        private static string Truncate(string s) => s.Length <= 40 ? s : s[..40] + "...";

        public int Int(string name) =>
            NullableInt(name) ?? throw new ModelConfigException(source, prefix + name, "required field is missing.");

        public int Int(string name, int fallback) => NullableInt(name) ?? fallback;

        public int? NullableInt(string name)
        {
            if (!TryGet(name, out var e)) return null;
            if (e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out int v)) return v;
            // Some configs write integral values as 1.0.
            if (e.ValueKind == JsonValueKind.Number && e.TryGetDouble(out double d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
            throw Wrong(name, "an integer", e);
        }

        public double Double(string name, double fallback)
        {
            if (!TryGet(name, out var e)) return fallback;
            if (e.ValueKind == JsonValueKind.Number) return e.GetDouble();
            throw Wrong(name, "a number", e);
        }

        public bool Bool(string name, bool fallback)
        {
            if (!TryGet(name, out var e)) return fallback;
            return e.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw Wrong(name, "true or false", e),
            };
        }

        public string String(string name, string fallback) => OptionalString(name) ?? fallback;

        public string? OptionalString(string name)
        {
            if (!TryGet(name, out var e)) return null;
            if (e.ValueKind == JsonValueKind.String) return e.GetString()!;
            throw Wrong(name, "a string", e);
        }

        public IReadOnlyList<string>? StringList(string name)
        {
            if (!TryGet(name, out var e)) return null;
            if (e.ValueKind != JsonValueKind.Array) throw Wrong(name, "an array of strings", e);
            var list = new List<string>();
            foreach (var item in e.EnumerateArray())
                list.Add(item.ValueKind == JsonValueKind.String ? item.GetString()! : throw Wrong(name, "an array of strings", e));
            return list;
        }

        public IReadOnlyList<int>? IntList(string name)
        {
            if (!TryGet(name, out var e)) return null;
            if (e.ValueKind != JsonValueKind.Array) throw Wrong(name, "an array of integers", e);
            var list = new List<int>();
            foreach (var item in e.EnumerateArray())
                list.Add(item.ValueKind == JsonValueKind.Number && item.TryGetInt32(out int v) ? v : throw Wrong(name, "an array of integers", e));
            return list;
        }

        public IReadOnlyList<int>? IntOrIntList(string name)
        {
            if (!TryGet(name, out var e)) return null;
            if (e.ValueKind == JsonValueKind.Number) return [NullableInt(name)!.Value];
            return IntList(name);
        }
    }

    /// <summary>Writes this configuration as a Hugging Face style config.json.</summary>
    public string ToJson()
    {
        using var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteStartArray("architectures");
            foreach (var a in Architectures) w.WriteStringValue(a);
            w.WriteEndArray();
            w.WriteString("model_type", ModelType);
            w.WriteNumber("vocab_size", VocabSize);
            w.WriteNumber("hidden_size", HiddenSize);
            w.WriteNumber("intermediate_size", IntermediateSize);
            w.WriteNumber("moe_intermediate_size", MoeIntermediateSize);
            w.WriteNumber("num_hidden_layers", NumHiddenLayers);
            w.WriteNumber("first_k_dense_replace", FirstKDenseReplace);
            w.WriteNumber("moe_layer_freq", MoeLayerFreq);
            w.WriteNumber("num_attention_heads", NumAttentionHeads);
            w.WriteNumber("num_key_value_heads", NumKeyValueHeads);
            w.WriteNumber("n_routed_experts", NRoutedExperts);
            w.WriteNumber("n_shared_experts", NSharedExperts);
            w.WriteNumber("num_experts_per_tok", NumExpertsPerTok);
            w.WriteNumber("n_group", NGroup);
            w.WriteNumber("topk_group", TopkGroup);
            w.WriteString("topk_method", TopkMethod);
            w.WriteString("scoring_func", ScoringFunc);
            w.WriteBoolean("norm_topk_prob", NormTopkProb);
            w.WriteNumber("routed_scaling_factor", RoutedScalingFactor);
            if (QLoraRank is { } q) w.WriteNumber("q_lora_rank", q); else w.WriteNull("q_lora_rank");
            w.WriteNumber("kv_lora_rank", KvLoraRank);
            w.WriteNumber("qk_nope_head_dim", QkNopeHeadDim);
            w.WriteNumber("qk_rope_head_dim", QkRopeHeadDim);
            w.WriteNumber("v_head_dim", VHeadDim);
            w.WriteString("hidden_act", HiddenAct);
            w.WriteNumber("max_position_embeddings", MaxPositionEmbeddings);
            w.WriteNumber("rope_theta", RopeTheta);
            if (RopeScaling is { } r)
            {
                w.WriteStartObject("rope_scaling");
                w.WriteString("type", r.Type);
                w.WriteNumber("factor", r.Factor);
                w.WriteNumber("original_max_position_embeddings", r.OriginalMaxPositionEmbeddings);
                w.WriteNumber("beta_fast", r.BetaFast);
                w.WriteNumber("beta_slow", r.BetaSlow);
                w.WriteNumber("mscale", r.MScale);
                w.WriteNumber("mscale_all_dim", r.MScaleAllDim);
                w.WriteEndObject();
            }
            else w.WriteNull("rope_scaling");
            w.WriteNumber("rms_norm_eps", RmsNormEps);
            w.WriteNumber("num_nextn_predict_layers", NumNextnPredictLayers);
            w.WriteBoolean("tie_word_embeddings", TieWordEmbeddings);
            w.WriteNumber("bos_token_id", BosTokenId);
            if (EosTokenIds.Count == 1) w.WriteNumber("eos_token_id", EosTokenIds[0]);
            else
            {
                w.WriteStartArray("eos_token_id");
                foreach (int e in EosTokenIds) w.WriteNumberValue(e);
                w.WriteEndArray();
            }
            w.WriteString("torch_dtype", TorchDtype);
            if (QuantizationConfig is { } qc)
            {
                w.WriteStartObject("quantization_config");
                w.WriteString("quant_method", qc.QuantMethod);
                w.WriteString("fmt", qc.Format);
                w.WriteStartArray("weight_block_size");
                foreach (int b in qc.WeightBlockSize) w.WriteNumberValue(b);
                w.WriteEndArray();
                w.WriteString("activation_scheme", qc.ActivationScheme);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(stream.ToArray());
    }
}
