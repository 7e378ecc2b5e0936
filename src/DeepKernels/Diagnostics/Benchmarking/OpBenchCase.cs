using DeepKernels.Backends;

namespace DeepKernels.Diagnostics.Benchmarking;

/// <summary>Which backends a benchmark case is meant for (CPU cases use smaller shapes where the full ones do not fit).</summary>
[Flags]
public enum BenchTargets
{
    /// <summary>The CPU backend.</summary>
    Cpu = 1,
    /// <summary>CUDA backends (real driver and emulator).</summary>
    Cuda = 2,
    /// <summary>Every backend.</summary>
    All = Cpu | Cuda,
}

/// <summary>
/// One op at one anchor shape: what it costs (FLOPs, bytes moved, per the formulas in DESIGN.md)
/// and how to set it up on a backend. <see cref="Prepare"/> allocates and fills the inputs once;
/// the returned instance's <see cref="IOpBenchInstance.Run"/> is what gets timed.
/// </summary>
/// <param name="Op">Op name used by <c>--op</c> (e.g. "act-quant").</param>
/// <param name="Name">Unique case label, e.g. "act-quant M=128 K=7168".</param>
/// <param name="Shape">Named sizes (M, N, K, ...), written into reports.</param>
/// <param name="Flops">Floating-point operations per run.</param>
/// <param name="Bytes">Bytes moved per run (compulsory traffic: inputs read once, outputs written once).</param>
/// <param name="Precision">The math precision, which picks the compute ceiling.</param>
/// <param name="Targets">Backends this case runs on.</param>
/// <param name="Prepare">Builds the inputs on a backend.</param>
public sealed record OpBenchCase(
    string Op,
    string Name,
    IReadOnlyDictionary<string, long> Shape,
    double Flops,
    double Bytes,
    MathPrecision Precision,
    BenchTargets Targets,
    Func<Backend, IOpBenchInstance> Prepare)
{
    /// <summary>FLOPs per byte moved.</summary>
    public double ArithmeticIntensity => Bytes > 0 ? Flops / Bytes : 0;

    /// <summary>
    /// The kernel variant a case pins (e.g. "portable" or "sm90" for the dense FP8 GEMM, set through
    /// <c>DEEPKERNELS_GEMM_KERNEL</c> while it runs); null when the backend chooses.
    /// </summary>
    public string? Variant { get; init; }

    /// <summary>Part of the full grid only: <c>deepkernels bench --full</c> runs it, the default set does not.</summary>
    public bool FullGridOnly { get; init; }

    /// <summary>Tokens produced per run (model decode: the batch), which makes the report show tokens/s; null otherwise.</summary>
    public double? TokensPerRun { get; init; }

    /// <summary>Decoder layers one run goes through (model decode), which makes the report show the median time per layer; null otherwise.</summary>
    public int? LayersPerRun { get; init; }

    /// <summary>
    /// Seconds the case needs at least, preparation included (e.g. writing and loading a large
    /// checkpoint), asked just before it would start; under <c>--budget-s</c> a case is skipped
    /// when less time is left. Null: cheap.
    /// </summary>
    public Func<double>? EstimatedSeconds { get; init; }

    /// <summary>Whether the case is meant for a backend of this name (cpu, cuda, cuda-emu).</summary>
    public bool RunsOn(string backendName) =>
        (Targets & (backendName == "cpu" ? BenchTargets.Cpu : BenchTargets.Cuda)) != 0;

    /// <summary>Op and variant, e.g. "gemm/sm90": the unit that gets at least one case when time is short.</summary>
    public string OpVariant => Variant is null ? Op : Op + "/" + Variant;
}

/// <summary>A prepared benchmark: inputs live on the backend; <see cref="Run"/> launches the op once.</summary>
public interface IOpBenchInstance : IDisposable
{
    /// <summary>Runs the op once (asynchronously on CUDA backends; the timer synchronizes).</summary>
    void Run();
}

/// <summary>An <see cref="IOpBenchInstance"/> from a delegate and the buffers it owns.</summary>
public sealed class DelegateBenchInstance(Action run, params IDisposable[] owned) : IOpBenchInstance
{
    /// <inheritdoc />
    public void Run() => run();

    /// <inheritdoc />
    public void Dispose()
    {
        foreach (var d in owned) d.Dispose();
    }
}
