using System.Text.Json;
using System.Text.Json.Serialization;

namespace DeepKernels.Diagnostics.Benchmarking;

// JSON written by `deepkernels bench --json FILE` and read by `deepkernels plot` and the GPU
// bundle's report (schema "deepkernels-bench/1"; camelCase; units in the names):
// {
//   "schema": "deepkernels-bench/1",
//   "createdUtc": "2026-11-29T09:00:00Z",
//   "backend": "cpu" | "cuda" | "cuda-emu",
//   "available": true,                    // false: backend could not be created; see "reason"
//   "reason": null | "why it is unavailable",
//   "timing": "stopwatch" | "cuda-events", "warmup": 3, "repeats": 10,
//   "machine": { "name": "NVIDIA H200" | "CPU: 2 cores", "computeCapability": 90 | null,
//                "peakSource": "datasheet" | "measured" | "none", "note": "..." },
//   "limits": { "memoryGBps": 4800.0 | null,
//               "computeGflops": { "fp8": 1979000.0, "bf16": 989000.0, "fp32": null } },
//   "results": [ { "op": "act-quant", "name": "act-quant M=128 K=7168", "shape": { "M": 128, "K": 7168 },
//                  "precision": "fp32", "flops": 1835008, "bytes": 4616192, "arithmeticIntensity": 0.397,
//                  "medianMs": 0.12, "minMs": 0.11, "maxMs": 0.2, "samplesMs": [ ... ],
//                  "gflops": 15.3, "gbps": 38.4,
//                  "percentComputePeak": 0.1 | null, "percentMemoryPeak": 10.2 | null,
//                  "variant": "portable" | "sm90" | null, "tokensPerSecond": 812.5 | null,
//                  "msPerLayer": 0.21 | null,          // model decode: median ms / decoder layers
//                  "kernels": [ "dk_quantize_act_fp8" ] } ],   // CUDA kernels launched (CUDA backends)
//   "skipped": [ { "name": "gemm M=1 N=2112 K=7168", "reason": "Backend 'cuda' does not implement FP8 GEMM." } ]
// }

/// <summary>The ceilings a run is compared with: memory bandwidth and compute per precision.</summary>
/// <param name="MemoryGBps">Memory bandwidth in GB/s (datasheet HBM, or measured CPU copy bandwidth); null when unknown.</param>
/// <param name="ComputeGflops">Compute peak in GFLOP/s per precision name (fp8, bf16, fp32); null entries are unknown.</param>
public sealed record BenchLimits(double? MemoryGBps, IReadOnlyDictionary<string, double?> ComputeGflops)
{
    /// <summary>Ceilings from a device's datasheet entry (no FP32 CUDA-core figure: elementwise ops get no compute percentage).</summary>
    public static BenchLimits FromDevice(DevicePeak peak)
    {
        ArgumentNullException.ThrowIfNull(peak);
        return new(peak.MemoryTBps * 1000, new Dictionary<string, double?>
        {
            ["fp8"] = peak.Fp8Tflops * 1000,
            ["bf16"] = peak.Bf16Tflops * 1000,
            ["fp32"] = null,
        });
    }

    /// <summary>Ceilings measured on this CPU: copy bandwidth, and the FP32 FMA peak for every precision (the CPU computes FP8/BF16 in FP32).</summary>
    public static BenchLimits FromCpu(CpuMachineLimits limits)
    {
        ArgumentNullException.ThrowIfNull(limits);
        return new(limits.CopyBandwidthGBps, new Dictionary<string, double?>
        {
            ["fp8"] = limits.FmaPeakGflops,
            ["bf16"] = limits.FmaPeakGflops,
            ["fp32"] = limits.FmaPeakGflops,
        });
    }

    /// <summary>No known ceilings.</summary>
    public static BenchLimits None { get; } = new(null, new Dictionary<string, double?>());

    /// <summary>The compute ceiling for a precision, or null.</summary>
    public double? Compute(MathPrecision precision) =>
        ComputeGflops.TryGetValue(BenchReport.PrecisionName(precision), out var v) ? v : null;
}

/// <summary>What a run was measured on.</summary>
/// <param name="Name">Device or CPU description.</param>
/// <param name="ComputeCapability">CUDA compute capability (90 for sm_90), null on CPU.</param>
/// <param name="PeakSource">"datasheet", "measured" or "none".</param>
/// <param name="Note">Where the ceilings come from.</param>
public sealed record BenchMachine(string Name, int? ComputeCapability, string PeakSource, string Note);

/// <summary>One measured case.</summary>
public sealed record BenchCaseResult(
    string Op,
    string Name,
    IReadOnlyDictionary<string, long> Shape,
    string Precision,
    double Flops,
    double Bytes,
    double ArithmeticIntensity,
    double MedianMs,
    double MinMs,
    double MaxMs,
    IReadOnlyList<double> SamplesMs,
    double Gflops,
    double GBps,
    double? PercentComputePeak,
    double? PercentMemoryPeak)
{
    /// <summary>The pinned kernel variant ("portable", "sm90"), or null.</summary>
    public string? Variant { get; init; }

    /// <summary>Tokens per second (model decode), or null for op cases.</summary>
    public double? TokensPerSecond { get; init; }

    /// <summary>Median milliseconds per decoder layer (model decode: step time / layers), or null.</summary>
    public double? MsPerLayer { get; init; }

    /// <summary>CUDA kernels the case launched (traced on CUDA backends; empty on the CPU).</summary>
    public IReadOnlyList<string> Kernels { get; init; } = [];
}

/// <summary>A case that was not run, and why.</summary>
/// <param name="Name">Case name.</param>
/// <param name="Reason">Why it did not run.</param>
public sealed record BenchSkip(string Name, string Reason);

/// <summary>A whole `deepkernels bench` run (see the schema comment at the top of this file).</summary>
public sealed record BenchReport(
    string Schema,
    DateTime CreatedUtc,
    string Backend,
    bool Available,
    string? Reason,
    string Timing,
    int Warmup,
    int Repeats,
    BenchMachine Machine,
    BenchLimits Limits,
    IReadOnlyList<BenchCaseResult> Results)
{
    /// <summary>Cases that could not run on this backend (e.g. an op without a kernel yet), with the reason.</summary>
    public IReadOnlyList<BenchSkip> Skipped { get; init; } = [];

    /// <summary>The schema identifier written into every report.</summary>
    public const string SchemaId = "deepkernels-bench/1";

    /// <summary>Serializer settings shared by writer and reader.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.CamelCase,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    /// <summary>The report as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>Reads a report; throws <see cref="InvalidDataException"/> for malformed or foreign JSON.</summary>
    public static BenchReport FromJson(string json)
    {
        BenchReport? report;
        try
        {
            report = JsonSerializer.Deserialize<BenchReport>(json, JsonOptions);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"Not a benchmark report: {e.Message}", e);
        }
        if (report is null || report.Schema != SchemaId)
            throw new InvalidDataException($"Expected a benchmark report with schema '{SchemaId}', got '{report?.Schema ?? "null"}'.");
        if (report.Results is null || report.Limits is null || report.Machine is null)
            throw new InvalidDataException("Benchmark report is missing 'results', 'limits' or 'machine'.");
        return report;
    }

    /// <summary>Lower-case precision names used in reports.</summary>
    public static string PrecisionName(MathPrecision precision) => precision switch
    {
        MathPrecision.Fp8 => "fp8",
        MathPrecision.Bf16 => "bf16",
        _ => "fp32",
    };
}
