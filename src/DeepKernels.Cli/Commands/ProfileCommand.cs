using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using DeepKernels.Diagnostics.Profiling;

namespace DeepKernels.Cli.Commands;

/// <summary>
/// `deepkernels profile`: per kernel and arch, registers, static shared memory, stack and spills
/// (from the build's resource report), theoretical occupancy for the kernel's launch
/// configuration (from cuOccupancyMaxActiveBlocksPerMultiprocessor for the device's arch when a
/// GPU is ready, else from the arch tables; each entry's "occupancySource" says which), and the
/// static SASS instruction mix (cuobjdump -sass on the fatbin). <c>--json-out FILE</c> also writes
/// the JSON to FILE, so one run (one disassembly, the slow part) gives both the table and the JSON.
/// <c>--no-sass</c> skips the disassembly (resources and occupancy only).
/// Exit codes: 0 ok, 1 nothing to profile (no report and no fatbin), 2 unknown kernel or arch.
/// </summary>
internal sealed class ProfileCommand : ICliCommand
{
    public string Name => "profile";

    public string Summary => "Kernel resources, occupancy and SASS mix: [--kernel NAME] [--arch sm_90a] [--json] [--json-out FILE] [--report FILE] [--fatbin FILE] [--no-sass].";

    public int Run(CliArguments args, TextWriter output)
    {
        string? kernel = args.String("kernel");
        string? arch = args.String("arch");
        bool json = args.Flag("json");
        string? jsonOut = args.String("json-out");
        bool noSass = args.Flag("no-sass");
        string? report = args.String("report");
        string? fatbin = args.String("fatbin");
        args.EnsureAllUsed();

        KernelProfileReport profile;
        try
        {
            // With a ready GPU the driver answers occupancy for its arch; otherwise the arch tables do.
            profile = KernelProfiler.Collect(new ProfileOptions(report, fatbin, CuobjdumpPath: noSass ? "" : null, Driver: Cuda.RealCudaDriver.Default));
        }
        catch (FileNotFoundException e)
        {
            throw new CliUsageException(e.Message);
        }

        var entries = profile.Kernels.AsEnumerable();
        if (kernel is not null)
        {
            var names = profile.Kernels.Select(k => k.Kernel).Distinct().ToList();
            if (!names.Contains(kernel, StringComparer.Ordinal))
                throw new CliUsageException(names.Count == 0
                    ? $"unknown kernel '{kernel}': no kernels found. {string.Join(" ", profile.Notes)}"
                    : $"unknown kernel '{kernel}'. Kernels in this build: {string.Join(", ", names)}.");
            entries = entries.Where(k => k.Kernel == kernel);
        }
        if (arch is not null)
        {
            arch = arch.ToLowerInvariant();
            if (!profile.Archs.Contains(arch, StringComparer.Ordinal))
                throw new CliUsageException(profile.Archs.Count == 0
                    ? $"arch '{arch}' not available: no kernels found. {string.Join(" ", profile.Notes)}"
                    : $"arch '{arch}' is not in the fatbin/report. Archs built: {string.Join(", ", profile.Archs)}.");
            entries = entries.Where(k => k.Arch == arch);
        }
        var selected = profile with { Kernels = entries.ToList() };

        var options = new JsonSerializerOptions { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };
        options.Converters.Add(new JsonStringEnumConverter());
        if (jsonOut is not null)
        {
            try
            {
                File.WriteAllText(jsonOut, JsonSerializer.Serialize(selected, options) + Environment.NewLine);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new CliUsageException($"cannot write --json-out '{jsonOut}': {e.Message}");
            }
        }
        if (json) output.WriteLine(JsonSerializer.Serialize(selected, options));
        else WriteTable(selected, output);
        return profile.Kernels.Count == 0 ? 1 : 0;
    }

    private static void WriteTable(KernelProfileReport profile, TextWriter output)
    {
        output.WriteLine($"Resources: {profile.ResourceSource ?? "none"}");
        output.WriteLine($"Fatbin   : {profile.Fatbin ?? "none"}");
        output.WriteLine($"SASS tool: {profile.SassTool ?? "none"}");
        if (profile.Kernels.Count > 0)
        {
            var header = new StringBuilder();
            header.Append(CultureInfo.InvariantCulture, $"{"kernel",-28} {"arch",-7} {"regs",4} {"smem",7} {"stack",5} {"spill st/ld",11} {"block",5} {"occupancy (limiter|driver)",-26}");
            foreach (string op in SassInstructionMix.KeyOpcodes) header.Append(CultureInfo.InvariantCulture, $" {op,7}");
            header.Append(CultureInfo.InvariantCulture, $" {"total",6}");
            output.WriteLine(header.ToString());
        }
        foreach (var k in profile.Kernels)
        {
            var line = new StringBuilder();
            var r = k.Resources;
            string occupancy = k.Occupancy is { } o
                ? string.Create(CultureInfo.InvariantCulture, $"{o.Fraction * 100:F0}% ({o.BlocksPerSm} blk, {(k.OccupancySource == KernelProfiler.OccupancyFromDriver ? "driver" : o.Limiter?.ToString() ?? "-")})")
                : "-";
            line.Append(CultureInfo.InvariantCulture,
                $"{k.Kernel,-28} {k.Arch,-7} {Show(r?.Registers),4} {Show(r?.StaticSharedBytes),7} {Show(r?.StackBytes),5} {(r is null ? "-" : $"{r.SpillStoreBytes}/{r.SpillLoadBytes}"),11} {Show(k.Launch?.BlockSize),5} {occupancy,-26}");
            foreach (string op in SassInstructionMix.KeyOpcodes) line.Append(CultureInfo.InvariantCulture, $" {Show(k.Sass?.Count(op)),7}");
            line.Append(CultureInfo.InvariantCulture, $" {Show(k.Sass?.Total),6}");
            output.WriteLine(line.ToString());
        }
        foreach (string note in profile.Notes) output.WriteLine("note: " + note);
    }

    private static string Show(long? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "-";
}
