namespace DeepKernels.Bench.Infrastructure;

/// <summary>
/// Implemented by a benchmark class whose columns should show GFLOP/s, GB/s and the percentage
/// of this machine's measured limits. The columns create an instance, set its [Params] values
/// and read these two properties, so they must depend only on the parameters (not on [GlobalSetup]).
/// One benchmark method invocation is one run of the op (use OperationsPerInvoke otherwise).
/// </summary>
public interface IThroughputBenchmark
{
    /// <summary>Floating-point operations per run (a fused multiply-add counts as 2).</summary>
    double Flops { get; }

    /// <summary>Bytes moved per run by the formulas in DESIGN.md (inputs read once, outputs written once).</summary>
    double Bytes { get; }
}
