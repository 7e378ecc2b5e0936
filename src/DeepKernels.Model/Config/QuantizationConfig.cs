namespace DeepKernels.Model.Config;

/// <summary>
/// The <c>quantization_config</c> block: DeepSeek-V3 ships FP8 E4M3 weights with one FP32
/// <c>weight_scale_inv</c> per 128x128 block and quantizes activations dynamically (1x128).
/// </summary>
public sealed record QuantizationConfig
{
    /// <summary>Only "fp8" is supported.</summary>
    public string QuantMethod { get; init; } = "fp8";

    /// <summary>Only "e4m3" is supported.</summary>
    public string Format { get; init; } = "e4m3";

    /// <summary>Weight block size [rows, cols]; only [128, 128] is supported.</summary>
    public IReadOnlyList<int> WeightBlockSize { get; init; } = [128, 128];

    /// <summary>Only "dynamic" (per-token-group scales computed at run time) is supported.</summary>
    public string ActivationScheme { get; init; } = "dynamic";
}
