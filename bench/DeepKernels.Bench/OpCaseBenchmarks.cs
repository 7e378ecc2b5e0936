using BenchmarkDotNet.Attributes;
using DeepKernels.Backends;
using DeepKernels.Backends.Cpu;
using DeepKernels.Bench.Infrastructure;
using DeepKernels.Diagnostics.Benchmarking;

namespace DeepKernels.Bench;

/// <summary>
/// Every op that has no suite of its own (weight quantization and dequantization, activation
/// dequantization, MoE router, permutation and combine, RMSNorm, SiLU-and-mul, embedding, latent
/// cache write) on the CPU backend, at the anchor shapes `deepkernels bench` times: the cases,
/// their inputs and their FLOP and byte counts come from <see cref="OpBenchRegistry"/>, so the two
/// harnesses measure the same thing. The ops in <see cref="OwnSuites"/> have deeper suites beside
/// this one.
/// </summary>
[BenchmarkCategory("Ops", "Cpu")]
public class OpCaseBenchmarks : IThroughputBenchmark
{
    /// <summary>Ops measured by suites of their own (activation quantization, GEMM, MoE, MLA).</summary>
    public static readonly IReadOnlySet<string> OwnSuites = new HashSet<string>(StringComparer.Ordinal)
    {
        "act-quant", "gemm", "grouped-gemm", "moe-layer", "mla-decode",
    };

    private Backend _backend = null!;
    private IOpBenchInstance _instance = null!;

    /// <summary>The CPU cases of every other op, by name.</summary>
    public static IEnumerable<string> Cases() =>
        OpBenchRegistry.All.Where(c => !OwnSuites.Contains(c.Op) && c.RunsOn("cpu") && !c.FullGridOnly).Select(c => c.Name);

    /// <summary>The case, e.g. "rmsnorm T=128 H=7168".</summary>
    [ParamsSource(nameof(Cases))]
    public string Case { get; set; } = "rmsnorm T=1 H=7168";

    private OpBenchCase Selected => OpBenchRegistry.All.Single(c => c.Name == Case);

    /// <inheritdoc />
    public double Flops => Selected.Flops;

    /// <inheritdoc />
    public double Bytes => Selected.Bytes;

    /// <summary>Allocates and fills the case's inputs once.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _backend = new CpuBackend();
        _instance = Selected.Prepare(_backend);
    }

    /// <summary>One run of the op.</summary>
    [Benchmark]
    public void Run() => _instance.Run();

    /// <summary>Releases the inputs.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _instance.Dispose();
        _backend.Dispose();
    }
}
