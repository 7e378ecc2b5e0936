using BenchmarkDotNet.Running;

namespace DeepKernels.Bench;

/// <summary>BenchmarkDotNet entry: `dotnet run -c Release --project bench/DeepKernels.Bench -- --filter '*'`.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
