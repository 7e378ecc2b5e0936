using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Bench.Infrastructure;

/// <summary>What a throughput column shows.</summary>
public enum ThroughputKind
{
    /// <summary>GFLOP/s.</summary>
    Gflops,
    /// <summary>GB/s.</summary>
    GBps,
    /// <summary>GFLOP/s as a percentage of the measured FMA peak.</summary>
    PercentFmaPeak,
    /// <summary>GB/s as a percentage of the measured copy bandwidth.</summary>
    PercentCopyBandwidth,
}

/// <summary>
/// A BenchmarkDotNet column computed from the mean time and an <see cref="IThroughputBenchmark"/>'s
/// FLOPs and bytes. Percentages use <see cref="CpuMachineLimits.Current"/>, measured once in the
/// host process after the benchmarks ran (so nothing competes with the measurement).
/// </summary>
public sealed class ThroughputColumn(ThroughputKind kind) : IColumn
{
    /// <summary>All four columns.</summary>
    public static IColumn[] All { get; } = Enum.GetValues<ThroughputKind>().Select(k => (IColumn)new ThroughputColumn(k)).ToArray();

    /// <inheritdoc />
    public string Id => "DeepKernels." + kind;

    /// <inheritdoc />
    public string ColumnName => kind switch
    {
        ThroughputKind.Gflops => "GFLOP/s",
        ThroughputKind.GBps => "GB/s",
        ThroughputKind.PercentFmaPeak => "%FMA-peak",
        _ => "%copy-BW",
    };

    /// <inheritdoc />
    public bool AlwaysShow => true;

    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;

    /// <inheritdoc />
    public int PriorityInCategory => (int)kind;

    /// <inheritdoc />
    public bool IsNumeric => true;

    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;

    /// <inheritdoc />
    public string Legend => kind switch
    {
        ThroughputKind.Gflops => "Floating-point operations per second (10^9), from the mean time",
        ThroughputKind.GBps => "Bytes moved per second (10^9), from the mean time",
        ThroughputKind.PercentFmaPeak => $"GFLOP/s as % of this machine's FP32 FMA peak measured in this run ({CpuMachineLimits.Current.FmaPeakGflops:F1} GFLOP/s, {CpuMachineLimits.Current.Threads} threads, {CpuMachineLimits.Current.VectorBits}-bit)",
        _ => $"GB/s as % of this machine's multi-threaded copy bandwidth measured in this run ({CpuMachineLimits.Current.CopyBandwidthGBps:F1} GB/s, read+write)",
    };

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        ArgumentNullException.ThrowIfNull(summary);
        double? value = Compute(summary, benchmarkCase);
        return value is null ? "-" : value.Value.ToString(kind >= ThroughputKind.PercentFmaPeak ? "F1" : "F2", CultureInfo.InvariantCulture);
    }

    /// <summary>The column's number for one case, or null when the case has no result or no FLOP/byte counts.</summary>
    public double? Compute(Summary summary, BenchmarkCase benchmarkCase)
    {
        ArgumentNullException.ThrowIfNull(summary);
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        var counts = ThroughputCounts.For(benchmarkCase);
        if (meanNs is not > 0 || counts is null) return null;
        double perSecond = 1e9 / meanNs.Value;
        double gflops = counts.Value.Flops * perSecond / 1e9;
        double gbps = counts.Value.Bytes * perSecond / 1e9;
        return kind switch
        {
            ThroughputKind.Gflops => gflops,
            ThroughputKind.GBps => gbps,
            ThroughputKind.PercentFmaPeak => 100 * gflops / CpuMachineLimits.Current.FmaPeakGflops,
            _ => 100 * gbps / CpuMachineLimits.Current.CopyBandwidthGBps,
        };
    }

    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => summary?.BenchmarksCases.Any(c => typeof(IThroughputBenchmark).IsAssignableFrom(c.Descriptor.Type)) == true;

    /// <inheritdoc />
    public override string ToString() => ColumnName;
}

/// <summary>Reads FLOPs and bytes from a fresh benchmark instance carrying the case's parameters.</summary>
internal static class ThroughputCounts
{
    public static (double Flops, double Bytes)? For(BenchmarkCase benchmarkCase)
    {
        var type = benchmarkCase.Descriptor.Type;
        if (!typeof(IThroughputBenchmark).IsAssignableFrom(type)) return null;
        var instance = (IThroughputBenchmark)Activator.CreateInstance(type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
        {
            var property = type.GetProperty(p.Name);
            if (property?.CanWrite == true) { property.SetValue(instance, p.Value); continue; }
            type.GetField(p.Name)?.SetValue(instance, p.Value);
        }
        return (instance.Flops, instance.Bytes);
    }
}
