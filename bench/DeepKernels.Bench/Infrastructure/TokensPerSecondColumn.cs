using System.Globalization;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace DeepKernels.Bench.Infrastructure;

/// <summary>
/// Implemented by a benchmark whose invocation produces tokens (a model decode step): the
/// <see cref="TokensPerSecondColumn"/> shows tokens per second. Like <see cref="IThroughputBenchmark"/>,
/// the count must depend only on the [Params] values.
/// </summary>
public interface ITokenBenchmark
{
    /// <summary>Tokens produced by one benchmark invocation.</summary>
    double TokensPerInvoke { get; }
}

/// <summary>Tokens per second from the mean time of an <see cref="ITokenBenchmark"/>.</summary>
public sealed class TokensPerSecondColumn : IColumn
{
    /// <summary>The single instance.</summary>
    public static TokensPerSecondColumn Instance { get; } = new();

    /// <inheritdoc />
    public string Id => "DeepKernels.TokensPerSecond";

    /// <inheritdoc />
    public string ColumnName => "tok/s";

    /// <inheritdoc />
    public bool AlwaysShow => true;

    /// <inheritdoc />
    public ColumnCategory Category => ColumnCategory.Custom;

    /// <inheritdoc />
    public int PriorityInCategory => 10;

    /// <inheritdoc />
    public bool IsNumeric => true;

    /// <inheritdoc />
    public UnitType UnitType => UnitType.Dimensionless;

    /// <inheritdoc />
    public string Legend => "Tokens generated per second (batch / mean time of one decode step)";

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    /// <inheritdoc />
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        ArgumentNullException.ThrowIfNull(summary);
        ArgumentNullException.ThrowIfNull(benchmarkCase);
        double? meanNs = summary[benchmarkCase]?.ResultStatistics?.Mean;
        if (meanNs is not > 0 || !typeof(ITokenBenchmark).IsAssignableFrom(benchmarkCase.Descriptor.Type)) return "-";
        var instance = (ITokenBenchmark)Activator.CreateInstance(benchmarkCase.Descriptor.Type)!;
        foreach (var p in benchmarkCase.Parameters.Items)
        {
            if (benchmarkCase.Descriptor.Type.GetProperty(p.Name) is { CanWrite: true } property) property.SetValue(instance, p.Value);
        }
        return (instance.TokensPerInvoke * 1e9 / meanNs.Value).ToString("F1", CultureInfo.InvariantCulture);
    }

    /// <inheritdoc />
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    /// <inheritdoc />
    public bool IsAvailable(Summary summary) => summary?.BenchmarksCases.Any(c => typeof(ITokenBenchmark).IsAssignableFrom(c.Descriptor.Type)) == true;

    /// <inheritdoc />
    public override string ToString() => ColumnName;
}
