using DeepKernels.Model.Config;

namespace DeepKernels.Model.Presets;

/// <summary>
/// DeepSeek-V3's published architecture (the model fields of its config.json), for benchmarks and
/// tests that need the real widths without the checkpoint at hand.
/// </summary>
public static class DeepSeekV3Reference
{
    /// <summary>The config.json text.</summary>
    public const string ConfigJson = """
        {
          "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
          "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
          "num_hidden_layers": 61, "first_k_dense_replace": 3, "moe_layer_freq": 1,
          "num_attention_heads": 128, "num_key_value_heads": 128,
          "n_routed_experts": 256, "n_shared_experts": 1, "num_experts_per_tok": 8, "n_group": 8, "topk_group": 4,
          "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true, "routed_scaling_factor": 2.5,
          "q_lora_rank": 1536, "kv_lora_rank": 512, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
          "hidden_act": "silu", "max_position_embeddings": 163840, "rope_theta": 10000,
          "rope_scaling": { "type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
            "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0 },
          "rms_norm_eps": 1e-06, "num_nextn_predict_layers": 1, "tie_word_embeddings": false,
          "bos_token_id": 0, "eos_token_id": 1, "torch_dtype": "bfloat16",
          "quantization_config": { "quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [128, 128], "activation_scheme": "dynamic" }
        }
        """;

    /// <summary>The parsed configuration (61 layers, 256 routed experts, MLA 512 + 64).</summary>
    public static DeepSeekV3Config Config { get; } = DeepSeekV3Config.Parse(ConfigJson, "DeepSeek-V3 config.json (built in)");
}
