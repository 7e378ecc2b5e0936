namespace DeepKernels.Diagnostics.Profiling;

/// <summary>How the backend launches a kernel: threads per block and dynamic shared memory.</summary>
/// <param name="Kernel">The <c>extern "C"</c> kernel name.</param>
/// <param name="BlockSize">Threads per block.</param>
/// <param name="DynamicSharedBytes">Dynamic shared memory per block in bytes.</param>
public sealed record KernelLaunchConfig(string Kernel, int BlockSize, int DynamicSharedBytes);

/// <summary>
/// The launch configurations of the kernels DeepKernels ships, as the CUDA backend uses them;
/// keep in step with Backends/Cuda when a kernel's launch changes.
/// </summary>
public static class KernelLaunchConfigs
{
    /// <summary>Every known configuration.</summary>
    public static IReadOnlyList<KernelLaunchConfig> All { get; } =
    [
        new("dk_quantize_act_fp8", 128, 0),
        new("dk_dequantize_weight_fp8", 128, 0),
        // 3 stages x (16 KiB A + 16 KiB B) tiles.
        new("dk_fp8_gemm", 256, 98304),
        new("dk_fp8_gemm_reduce", 256, 0),
        // Hopper: producer + 2 consumer warp groups; 4 stages x 32 KiB + 1 KiB alignment slack.
        new("dk_fp8_gemm_sm90", 384, 4 * 32768 + 1024),
        new("dk_fp8_quantize_weight_blocks", 256, 0),
        new("dk_grouped_gemm_contiguous", 256, 98304),
        new("dk_grouped_gemm_masked", 256, 98304),
        // Hopper grouped GEMMs: the dense Hopper kernel's warp groups and stage ring.
        new("dk_grouped_gemm_contiguous_sm90", 384, 4 * 32768 + 1024),
        new("dk_grouped_gemm_masked_sm90", 384, 4 * 32768 + 1024),
        new("dk_mla_decode_split", 256, 164096),
        // Hopper: producer + 2 consumer warp groups; Q tile + 2 BF16 KV stages (72 KiB each) + P tile (8 KiB) + 1 KiB alignment slack.
        new("dk_mla_decode_sm90", 384, 3 * 73728 + 8192 + 1024),
        new("dk_mla_decode_combine", 128, 0),
        new("dk_mla_cache_write", 128, 0),
        new("dk_moe_router", 128, 0),
        new("dk_moe_gather", 128, 0),
        new("dk_moe_combine", 256, 0),
        // Device-side MoE layout builder: chunks of 2048 ids; the scan is one CTA of 512 (one thread per expert).
        new("dk_moe_layout_count", 256, 0),
        new("dk_moe_layout_scan", 512, 0),
        new("dk_moe_layout_scatter", 256, 0),
        new("dk_silu_mul_quant_fp8", 128, 0),
        new("dk_rms_norm", 256, 0),
        new("dk_silu_and_mul", 256, 0),
        new("dk_embedding_lookup", 256, 0),
        // Model-graph glue (model_glue.cu): 16 x 16 output tile, one block per row, 256-wide rows.
        new("dk_batched_matmul", 256, 0),
        new("dk_rope", 128, 0),
        new("dk_add_2d", 256, 0),
    ];

    /// <summary>The configuration of a kernel, or null when it is not in the table.</summary>
    public static KernelLaunchConfig? Find(string kernel) =>
        All.FirstOrDefault(c => string.Equals(c.Kernel, kernel, StringComparison.Ordinal));
}
