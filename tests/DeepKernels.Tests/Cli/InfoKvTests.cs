using DeepKernels.Cli;

namespace DeepKernels.Tests.Cli;

public class InfoKvTests
{
    // The reference DeepSeek-V3 config (shared/reference) with 4 layers.
    private const string V3ConfigWithFourLayers = """
{
  "architectures": ["DeepseekV3ForCausalLM"],
  "model_type": "deepseek_v3",
  "vocab_size": 129280,
  "hidden_size": 7168,
  "intermediate_size": 18432,
  "moe_intermediate_size": 2048,
  "num_hidden_layers": 4,
  "first_k_dense_replace": 3,
  "moe_layer_freq": 1,
  "num_attention_heads": 128,
  "num_key_value_heads": 128,
  "n_routed_experts": 256,
  "n_shared_experts": 1,
  "num_experts_per_tok": 8,
  "n_group": 8,
  "topk_group": 4,
  "topk_method": "noaux_tc",
  "scoring_func": "sigmoid",
  "norm_topk_prob": true,
  "routed_scaling_factor": 2.5,
  "q_lora_rank": 1536,
  "kv_lora_rank": 512,
  "qk_nope_head_dim": 128,
  "qk_rope_head_dim": 64,
  "v_head_dim": 128,
  "hidden_act": "silu",
  "max_position_embeddings": 163840,
  "rope_theta": 10000,
  "rope_scaling": {
    "type": "yarn",
    "factor": 40,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0
  },
  "rms_norm_eps": 1e-06,
  "num_nextn_predict_layers": 1,
  "tie_word_embeddings": false,
  "bos_token_id": 0,
  "eos_token_id": 1,
  "torch_dtype": "bfloat16",
  "quantization_config": {
    "quant_method": "fp8",
    "fmt": "e4m3",
    "weight_block_size": [128, 128],
    "activation_scheme": "dynamic"
  }
}
""";

    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = Program.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Test]
    public void KvReportShowsMlaAndMhaForDeepSeekV3()
    {
        var (code, output, _) = Run("info", "--kv", "--tokens", "1000");
        Assert.That(code, Is.EqualTo(0));
        // 576 BF16 values = 1152 B per token and layer; FP8 pages 512 + 16 + 128 = 656 B;
        // MHA with 128 heads of K 128 + V 128 in BF16 = 65536 B.
        Assert.That(output, Does.Contain("61 layers, 1000 tokens"));
        Assert.That(output, Does.Contain(" 1152 ").And.Contain(" 656 ").And.Contain(" 65536 "));
        Assert.That(output, Does.Contain("56.89x"), "MHA/MLA ratio 65536/1152");
    }

    [Test]
    public void KvReportReadsAConfigFile()
    {
        string dir = Directory.CreateTempSubdirectory("dk-kv-").FullName;
        try
        {
            string json = V3ConfigWithFourLayers;
            string path = Path.Combine(dir, "config.json");
            File.WriteAllText(path, json);
            var (code, output, _) = Run("info", "--kv", "--config", path, "--tokens", "10");
            Assert.That(code, Is.EqualTo(0));
            Assert.That(output, Does.Contain("4 layers, 10 tokens"));
            Assert.That(output, Does.Contain(" 4608 "), "1152 B x 4 layers per token");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Test]
    public void ConfigWithoutKvIsAUsageError()
    {
        var (code, _, err) = Run("info", "--config", "x.json");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("--kv"));
    }
}
