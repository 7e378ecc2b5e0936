using DeepKernels.Model.Config;
using DeepKernels.Model.Presets;

namespace DeepKernels.Tests.Model;

public class DeepSeekV3ConfigTests
{
    // The published DeepSeek-V3 config.json (every field), built into the library.
    internal const string V3Json = DeepSeekV3Reference.ConfigJson;

    // DeepSeek-V2-Lite style: softmax scoring, no q_lora, no quantization.
    private const string V2LiteJson = """
    {
      "architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2",
      "vocab_size": 102400, "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
      "num_hidden_layers": 27, "first_k_dense_replace": 1, "moe_layer_freq": 1,
      "num_attention_heads": 16, "num_key_value_heads": 16,
      "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "n_group": 1, "topk_group": 1,
      "topk_method": "greedy", "scoring_func": "softmax", "norm_topk_prob": false, "routed_scaling_factor": 1.0,
      "q_lora_rank": null, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
      "hidden_act": "silu", "max_position_embeddings": 163840, "rope_theta": 10000,
      "rope_scaling": { "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
        "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707 },
      "rms_norm_eps": 1e-06, "tie_word_embeddings": false, "bos_token_id": 100000, "eos_token_id": 100001,
      "torch_dtype": "bfloat16"
    }
    """;

    [Test]
    public void ParsesEveryV3Field()
    {
        var c = DeepSeekV3Config.Parse(V3Json, "v3.json");
        Assert.That(c.Architectures, Is.EqualTo(new[] { "DeepseekV3ForCausalLM" }));
        Assert.That((c.ModelType, c.VocabSize, c.HiddenSize, c.IntermediateSize, c.MoeIntermediateSize), Is.EqualTo(("deepseek_v3", 129280, 7168, 18432, 2048)));
        Assert.That((c.NumHiddenLayers, c.FirstKDenseReplace, c.MoeLayerFreq, c.NumAttentionHeads, c.NumKeyValueHeads), Is.EqualTo((61, 3, 1, 128, 128)));
        Assert.That((c.NRoutedExperts, c.NSharedExperts, c.NumExpertsPerTok, c.NGroup, c.TopkGroup), Is.EqualTo((256, 1, 8, 8, 4)));
        Assert.That((c.TopkMethod, c.ScoringFunc, c.NormTopkProb, c.RoutedScalingFactor), Is.EqualTo(("noaux_tc", "sigmoid", true, 2.5)));
        Assert.That((c.QLoraRank, c.KvLoraRank, c.QkNopeHeadDim, c.QkRopeHeadDim, c.VHeadDim), Is.EqualTo(((int?)1536, 512, 128, 64, 128)));
        Assert.That((c.HiddenAct, c.MaxPositionEmbeddings, c.RopeTheta, c.RmsNormEps), Is.EqualTo(("silu", 163840, 10000.0, 1e-6)));
        Assert.That(c.RopeScaling, Is.EqualTo(new RopeScalingConfig { Type = "yarn", Factor = 40, OriginalMaxPositionEmbeddings = 4096, BetaFast = 32, BetaSlow = 1, MScale = 1, MScaleAllDim = 1 }));
        Assert.That((c.NumNextnPredictLayers, c.TieWordEmbeddings, c.BosTokenId, c.TorchDtype), Is.EqualTo((1, false, 0, "bfloat16")));
        Assert.That(c.EosTokenIds, Is.EqualTo(new[] { 1 }));
        Assert.That(c.QuantizationConfig, Is.Not.Null);
        Assert.That((c.QuantizationConfig!.QuantMethod, c.QuantizationConfig.Format, c.QuantizationConfig.ActivationScheme), Is.EqualTo(("fp8", "e4m3", "dynamic")));
        Assert.That(c.QuantizationConfig.WeightBlockSize, Is.EqualTo(new[] { 128, 128 }));
    }

    [Test]
    public void DerivedValuesMatchTheReferenceFacts()
    {
        var c = DeepSeekV3Config.Parse(V3Json);
        Assert.That(c.QkHeadDim, Is.EqualTo(192));
        Assert.That(c.LatentCacheDim, Is.EqualTo(576));
        Assert.That(c.MhaCacheValuesPerToken, Is.EqualTo(32768));
        // DESIGN.md: 192^-0.5 * (0.1*ln(40)+1)^2 = 0.1352338
        Assert.That(c.SoftmaxScale, Is.EqualTo(Math.Pow(192, -0.5) * Math.Pow(0.1 * Math.Log(40) + 1, 2)).Within(1e-12));
        Assert.That(c.SoftmaxScale, Is.EqualTo(0.1352338).Within(1e-6));
        Assert.That(c.IsMoeLayer(2), Is.False);
        Assert.That(c.IsMoeLayer(3), Is.True);
        Assert.That(c.IsMoeLayer(60), Is.True);
    }

    [Test]
    public void RoundTripsThroughJson()
    {
        var c = DeepSeekV3Config.Parse(V3Json, "x");
        var again = DeepSeekV3Config.Parse(c.ToJson(), "x");
        Assert.That(again with { Architectures = c.Architectures, EosTokenIds = c.EosTokenIds, QuantizationConfig = c.QuantizationConfig }, Is.EqualTo(c));
        Assert.That(again.QuantizationConfig!.WeightBlockSize, Is.EqualTo(c.QuantizationConfig!.WeightBlockSize));
    }

    [Test]
    public void AcceptsV2LiteStyle()
    {
        var c = DeepSeekV3Config.Parse(V2LiteJson);
        Assert.That(c.QLoraRank, Is.Null);
        Assert.That(c.ScoringFunc, Is.EqualTo("softmax"));
        Assert.That(c.IsFp8, Is.False);
        Assert.That(c.NSharedExperts, Is.EqualTo(2));
        Assert.That(c.IsMoeLayer(0), Is.False);
        Assert.That(c.IsMoeLayer(1), Is.True);
        double m = 0.1 * 0.707 * Math.Log(40) + 1;
        Assert.That(c.SoftmaxScale, Is.EqualTo(m * m / Math.Sqrt(192)).Within(1e-12));
    }

    [TestCase("\"kv_lora_rank\": 512", "\"kv_lora_rank\": 256", "kv_lora_rank", "512")]
    [TestCase("\"qk_rope_head_dim\": 64", "\"qk_rope_head_dim\": 32", "qk_rope_head_dim", "64")]
    [TestCase("\"n_group\": 8", "\"n_group\": 7", "n_group", "divisible")]
    [TestCase("\"topk_group\": 4", "\"topk_group\": 9", "topk_group", "n_group = 8")]
    [TestCase("\"num_experts_per_tok\": 8", "\"num_experts_per_tok\": 200", "num_experts_per_tok", "128")]
    [TestCase("\"scoring_func\": \"sigmoid\"", "\"scoring_func\": \"relu\"", "scoring_func", "relu")]
    [TestCase("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act", "gelu")]
    [TestCase("\"hidden_size\": 7168", "\"hidden_size\": \"big\"", "hidden_size", "integer")]
    [TestCase("\"hidden_size\": 7168,", "", "hidden_size", "missing")]
    [TestCase("\"first_k_dense_replace\": 3", "\"first_k_dense_replace\": 62", "first_k_dense_replace", "61")]
    [TestCase("\"weight_block_size\": [128, 128]", "\"weight_block_size\": [64, 64]", "quantization_config.weight_block_size", "64")]
    [TestCase("\"fmt\": \"e4m3\"", "\"fmt\": \"e5m2\"", "quantization_config.fmt", "e5m2")]
    [TestCase("\"type\": \"yarn\"", "\"type\": \"dynamic\"", "rope_scaling.type", "dynamic")]
    [TestCase("\"rms_norm_eps\": 1e-06", "\"rms_norm_eps\": 0", "rms_norm_eps", "> 0")]
    [TestCase("\"eos_token_id\": 1", "\"eos_token_id\": 129280", "eos_token_id", "129280")]
    [TestCase("\"model_type\": \"deepseek_v3\"", "\"model_type\": \"llama\"", "model_type", "llama")]
    public void RejectsBadFieldsWithClearMessages(string from, string to, string field, string mentions)
    {
        Assert.That(V3Json, Does.Contain(from));
        var e = Assert.Throws<ModelConfigException>(() => DeepSeekV3Config.Parse(V3Json.Replace(from, to, StringComparison.Ordinal), "bad.json"))!;
        Assert.That(e.Field, Is.EqualTo(field));
        Assert.That(e.Message, Does.StartWith("bad.json: '" + field + "'"));
        Assert.That(e.Message, Does.Contain(mentions));
    }

    [Test]
    public void RejectsInvalidJson()
    {
        var e = Assert.Throws<ModelConfigException>(() => DeepSeekV3Config.Parse("{ \"vocab_size\": ", "broken.json"))!;
        Assert.That(e.Message, Does.Contain("broken.json").And.Contain("JSON"));
    }

    [Test]
    public void MissingFileIsFileNotFound()
    {
        Assert.Throws<FileNotFoundException>(() => DeepSeekV3Config.FromFile(Path.Combine(Path.GetTempPath(), "no-such-dir-dk", "config.json")));
    }
}
