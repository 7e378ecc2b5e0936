using DeepKernels.Diagnostics;
using DeepKernels.Memory.KvCache;
using DeepKernels.Model.Config;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels info`: runtime, CPU features, CUDA state, devices and the kernels built.
/// `--kv [--config config.json] [--tokens N]` adds the KV-cache memory report (MLA vs MHA).
/// </summary>
internal sealed class InfoCommand : ICliCommand
{
    public string Name => "info";

    public string Summary => "Show the runtime, CPU SIMD features, CUDA probe, devices and built kernels (--json; --kv [--config FILE] [--tokens N]).";

    public int Run(CliArguments args, TextWriter output)
    {
        bool json = args.Flag("json");
        bool kv = args.Flag("kv");
        string? configPath = args.String("config");
        int tokens = args.Int("tokens", 32768, min: 1);
        args.EnsureAllUsed();
        if (!kv && configPath is not null) throw new CliUsageException("--config is only used with --kv.");
        var report = SystemReport.Collect();
        if (json) output.WriteLine(report.ToJson());
        else report.WriteText(output);
        if (kv)
        {
            var memory = KvReportFor(configPath);
            output.WriteLine();
            output.WriteLine(configPath is null ? "DeepSeek-V3 671B (61 layers, 128 heads):" : $"{configPath}:");
            output.Write(memory.Format(tokens));
        }
        return 0;
    }

    private static KvMemoryReport KvReportFor(string? configPath)
    {
        if (configPath is null) return KvMemoryReport.DeepSeekV3;
        var c = DeepSeekV3Config.FromFile(configPath);
        return new KvMemoryReport(c.NumAttentionHeads, c.NumHiddenLayers, c.KvLoraRank, c.QkNopeHeadDim, c.QkRopeHeadDim, c.VHeadDim);
    }
}
