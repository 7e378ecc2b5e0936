namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>Runs prepared op cases with a timer and turns samples into throughput and % of peak.</summary>
public static class BenchRunner
{
    /// <summary>
    /// Prepares, times and releases one case on <paramref name="backend"/>. With a
    /// <paramref name="trace"/> (the driver under a CUDA backend), the result lists the kernels the case launched.
    /// </summary>
    public static BenchCaseResult Run(OpBenchCase benchCase, Backends.Backend backend, IBenchTimer timer, BenchLimits limits, int warmup, int repeats, KernelTraceDriver? trace = null)
    {
        ArgumentNullException.ThrowIfNull(benchCase);
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(timer);
        ArgumentNullException.ThrowIfNull(limits);
        using var variant = new KernelVariantScope(benchCase.Op, benchCase.Variant);
        trace?.Clear();
        using var instance = benchCase.Prepare(backend);
        backend.Synchronize();
        double[] samples = timer.Time(instance.Run, warmup, repeats);
        backend.Synchronize();
        return Summarize(benchCase, samples, limits) with { Kernels = trace?.Launched ?? [] };
    }

    /// <summary>Throughput, intensity and percentages of the ceilings for measured samples (ms per run).</summary>
    public static BenchCaseResult Summarize(OpBenchCase benchCase, IReadOnlyList<double> samplesMs, BenchLimits limits)
    {
        ArgumentNullException.ThrowIfNull(benchCase);
        ArgumentNullException.ThrowIfNull(samplesMs);
        ArgumentNullException.ThrowIfNull(limits);
        double median = BenchStatistics.Median(samplesMs.ToArray());
        double seconds = median / 1e3;
        double gflops = seconds > 0 ? benchCase.Flops / seconds / 1e9 : 0;
        double gbps = seconds > 0 ? benchCase.Bytes / seconds / 1e9 : 0;
        double? compute = limits.Compute(benchCase.Precision);
        return new BenchCaseResult(
            benchCase.Op, benchCase.Name, benchCase.Shape, BenchReport.PrecisionName(benchCase.Precision),
            benchCase.Flops, benchCase.Bytes, benchCase.ArithmeticIntensity,
            median, samplesMs.Min(), samplesMs.Max(), samplesMs.ToArray(),
            gflops, gbps,
            compute is > 0 ? 100 * gflops / compute.Value : null,
            limits.MemoryGBps is > 0 ? 100 * gbps / limits.MemoryGBps.Value : null)
        {
            Variant = benchCase.Variant,
            TokensPerSecond = benchCase.TokensPerRun is { } tokens && seconds > 0 ? tokens / seconds : null,
            MsPerLayer = benchCase.LayersPerRun is > 0 and { } layers ? median / layers : null,
        };
    }
}

/// <summary>
/// Pins the CUDA kernel of one case (<see cref="OpBenchCase.Variant"/>: "portable" or "sm90")
/// through the variable the CUDA backend reads at every call: <c>DEEPKERNELS_MLA_KERNEL</c> for MLA
/// decode, <c>DEEPKERNELS_GEMM_KERNEL</c> for the dense and grouped FP8 GEMMs. Restores the
/// previous value afterwards.
/// </summary>
internal sealed class KernelVariantScope : IDisposable
{
    /// <summary>The variable that picks the FP8 GEMM kernels (see CudaBackend.GemmSm90.cs).</summary>
    public const string GemmVariable = "DEEPKERNELS_GEMM_KERNEL";

    /// <summary>The variable that picks the MLA decode kernel (see CudaBackend.MlaDecodeSm90.cs).</summary>
    public const string MlaVariable = "DEEPKERNELS_MLA_KERNEL";

    private readonly string? _variable;
    private readonly string? _previous;

    public KernelVariantScope(string op, string? variant)
    {
        if (variant is null) return;
        _variable = VariableFor(op);
        _previous = Environment.GetEnvironmentVariable(_variable);
        Environment.SetEnvironmentVariable(_variable, variant);
    }

    /// <summary>The variable that pins the kernel of <paramref name="op"/>.</summary>
    public static string VariableFor(string op) => op switch
    {
        "mla-decode" => MlaVariable,
        "gemm" or "grouped-gemm" => GemmVariable,
        _ => throw new ArgumentException($"op '{op}' has no kernel variants (expected gemm, grouped-gemm or mla-decode).", nameof(op)),
    };

    public void Dispose()
    {
        if (_variable is not null) Environment.SetEnvironmentVariable(_variable, _previous);
    }
}
