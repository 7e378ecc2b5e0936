using DeepKernels.Diagnostics;

namespace DeepKernels.Cli.Commands;

/// <summary>`deepkernels info`: runtime, CPU features, CUDA state, devices and the kernels built.</summary>
internal sealed class InfoCommand : ICliCommand
{
    public string Name => "info";

    public string Summary => "Show the runtime, CPU SIMD features, CUDA probe, devices and built kernels (--json).";

    public int Run(CliArguments args, TextWriter output)
    {
        bool json = args.Flag("json");
        args.EnsureAllUsed();
        var report = SystemReport.Collect();
        if (json) output.WriteLine(report.ToJson());
        else report.WriteText(output);
        return 0;
    }
}
