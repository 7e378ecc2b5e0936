using BenchmarkDotNet.Running;
using DeepKernels.Bench.Infrastructure;

namespace DeepKernels.Bench;

/// <summary>
/// BenchmarkDotNet entry: `dotnet run -c Release --project bench/DeepKernels.Bench -- --filter '*'`
/// (or `./build.sh bench dotnet --filter '*'`). Every suite gets <see cref="DeepKernelsBenchConfig"/>.
/// </summary>
public static class Program
{
    /// <summary>Runs the suites selected on the command line.</summary>
    public static void Main(string[] args) =>
        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, new DeepKernelsBenchConfig());
}
