namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>
/// Dense peak throughputs of one GPU model, used to express measured figures as a percentage of
/// what the hardware can do. Values are the vendor datasheet numbers for dense math (no 2:4
/// sparsity), in TFLOP/s and TB/s (10^12).
/// </summary>
/// <param name="Name">Short device name, e.g. "H200".</param>
/// <param name="Fp8Tflops">Dense FP8 tensor-core peak; null when the device has no FP8 tensor cores.</param>
/// <param name="Bf16Tflops">Dense BF16 tensor-core peak.</param>
/// <param name="MemoryTBps">Peak DRAM (HBM/GDDR) bandwidth.</param>
/// <param name="Note">Where the figures come from and any caveat.</param>
public sealed record DevicePeak(string Name, double? Fp8Tflops, double Bf16Tflops, double MemoryTBps, string Note)
{
    /// <summary>The compute peak for a math precision, or null when the device has none.</summary>
    public double? ComputeTflops(MathPrecision precision) => precision switch
    {
        MathPrecision.Fp8 => Fp8Tflops,
        MathPrecision.Bf16 => Bf16Tflops,
        _ => null,
    };
}

/// <summary>The tensor-core precision an op's FLOPs run at, which picks the compute ceiling.</summary>
public enum MathPrecision
{
    /// <summary>FP8 inputs, FP32 accumulation (GEMMs).</summary>
    Fp8,
    /// <summary>BF16 inputs, FP32 accumulation (MLA decode).</summary>
    Bf16,
    /// <summary>Plain FP32 CUDA-core / SIMD arithmetic (elementwise ops).</summary>
    Fp32,
}

/// <summary>
/// Peak table keyed by device name. All figures are NVIDIA datasheet dense numbers
/// (H200/H100/H800: Hopper SXM datasheets; A100 80GB SXM datasheet; L40S and GeForce RTX 4090
/// (Ada whitepaper) datasheets).
/// </summary>
public static class DevicePeaks
{
    /// <summary>Every device in the table, most specific names first (matching is by substring).</summary>
    public static IReadOnlyList<DevicePeak> All { get; } =
    [
        new("H200", 1979, 989, 4.8, "NVIDIA H200 SXM datasheet, dense"),
        new("H100 SXM", 1979, 989, 3.35, "NVIDIA H100 SXM datasheet, dense"),
        new("H800", 1979, 989, 3.35, "NVIDIA H800 SXM (H100 SXM compute, same HBM3), dense"),
        // cuDeviceGetName reports "NVIDIA H100 80GB HBM3" for the SXM part.
        new("H100 80GB HBM3", 1979, 989, 3.35, "NVIDIA H100 SXM datasheet, dense"),
        // Ampere has no FP8 tensor cores: no FP8 ceiling (INT8 dense would be 624 TOPS).
        new("A100", null, 312, 2.0, "NVIDIA A100 80GB SXM datasheet, dense; no FP8 (INT8 dense 624 TOPS not used)"),
        new("L40S", 733, 362, 0.864, "NVIDIA L40S datasheet, dense"),
        // The 660.6 TFLOP/s FP8 figure needs FP16 accumulation; our kernels accumulate in FP32,
        // for which GeForce Ada runs at half rate: 330.3 dense. BF16 with FP32 accumulation: 165.2.
        new("RTX 4090", 330.3, 165.2, 1.008, "GeForce RTX 4090 (Ada whitepaper), dense with FP32 accumulation (FP8 660.6 is FP16-accumulate)"),
    ];

    /// <summary>The H200 entry, the project's reference device.</summary>
    public static DevicePeak H200 => All[0];

    /// <summary>
    /// Finds the entry for a driver-reported device name ("NVIDIA H200", "NVIDIA H100 80GB HBM3",
    /// "NVIDIA GeForce RTX 4090", ...) by case-insensitive substring; null when the device is unknown.
    /// </summary>
    public static DevicePeak? Find(string? deviceName)
    {
        if (string.IsNullOrWhiteSpace(deviceName)) return null;
        foreach (var peak in All)
            if (deviceName.Contains(peak.Name, StringComparison.OrdinalIgnoreCase)) return peak;
        // "H100" alone (PCIe or NVL) has other figures; do not guess.
        return null;
    }
}
