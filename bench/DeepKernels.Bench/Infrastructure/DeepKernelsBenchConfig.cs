using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;

namespace DeepKernels.Bench.Infrastructure;

/// <summary>
/// The suite-wide configuration: a short job that fits a 2-core machine (1 launch, 2 warm-ups,
/// 6 iterations), the throughput columns, memory diagnoser, and JSON + GitHub Markdown exporters
/// (BenchmarkDotNet.Artifacts/results). Override from the command line as usual
/// (e.g. <c>--job default</c>, <c>--inProcess</c>, <c>--filter '*ActivationQuantization*'</c>).
/// </summary>
public sealed class DeepKernelsBenchConfig : ManualConfig
{
    /// <summary>Builds the configuration.</summary>
    public DeepKernelsBenchConfig()
    {
        AddJob(Job.Default.WithLaunchCount(1).WithWarmupCount(2).WithIterationCount(6).WithId("Short2Core"));
        AddColumnProvider(DefaultColumnProviders.Instance);
        AddColumn(ThroughputColumn.All);
        AddColumn(TokensPerSecondColumn.Instance);
        AddDiagnoser(MemoryDiagnoser.Default);
        AddExporter(JsonExporter.Full, MarkdownExporter.GitHub);
        AddLogger(ConsoleLogger.Default);
        WithOptions(ConfigOptions.JoinSummary);
    }
}
