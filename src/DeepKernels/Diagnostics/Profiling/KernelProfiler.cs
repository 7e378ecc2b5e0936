using System.Diagnostics;
using System.Reflection;

namespace DeepKernels.Diagnostics.Profiling;

/// <summary>Everything known about one kernel compiled for one arch.</summary>
/// <param name="Kernel">Kernel name.</param>
/// <param name="Arch">Arch, e.g. "sm_90".</param>
/// <param name="Resources">Registers, shared memory, stack, spills; null when no source had them.</param>
/// <param name="Launch">The launch configuration from <see cref="KernelLaunchConfigs"/>; null when unknown.</param>
/// <param name="Occupancy">Theoretical occupancy; null without resources, launch config or arch limits.</param>
/// <param name="Sass">Static SASS instruction mix; null without cuobjdump or fatbin.</param>
public sealed record KernelProfile(string Kernel, string Arch, KernelResources? Resources, KernelLaunchConfig? Launch, OccupancyResult? Occupancy, SassInstructionMix? Sass)
{
    /// <summary>Where <see cref="Occupancy"/> comes from: <see cref="KernelProfiler.OccupancyFromDriver"/>, <see cref="KernelProfiler.OccupancyFromArchTable"/>, or null.</summary>
    public string? OccupancySource { get; init; }
}

/// <summary>A whole profile: one entry per (kernel, arch), the archs seen, where data came from, and notes on anything missing.</summary>
/// <param name="Kernels">Entries sorted by kernel then arch.</param>
/// <param name="Archs">Archs present (resource report and/or fatbin).</param>
/// <param name="ResourceSource">Where resources came from (a path, "embedded", "cuobjdump -res-usage"), or null.</param>
/// <param name="Fatbin">The fatbin examined, or null.</param>
/// <param name="SassTool">The cuobjdump used, or null.</param>
/// <param name="Notes">Human-readable notes (missing tool, missing fatbin, ...).</param>
public sealed record KernelProfileReport(IReadOnlyList<KernelProfile> Kernels, IReadOnlyList<string> Archs, string? ResourceSource, string? Fatbin, string? SassTool, IReadOnlyList<string> Notes);

/// <summary>Where to look for the inputs; nulls mean "search the usual places".</summary>
/// <param name="ReportPath">resource-report.json to read instead of the embedded/build one.</param>
/// <param name="FatbinPath">Fatbin to disassemble instead of the embedded or built one; its resources then come from cuobjdump unless <paramref name="ReportPath"/> is given.</param>
/// <param name="CuobjdumpPath">cuobjdump to use instead of the one on PATH ("" disables SASS).</param>
/// <param name="SearchRoot">Directory whose ancestors are searched for build/native (default: the current directory and the app's).</param>
/// <param name="Driver">A CUDA driver to ask for occupancy (cuOccupancyMaxActiveBlocksPerMultiprocessor) when it has a ready device and the fatbin loads there; null: arch tables only.</param>
public sealed record ProfileOptions(string? ReportPath = null, string? FatbinPath = null, string? CuobjdumpPath = null, string? SearchRoot = null, Cuda.ICudaDriver? Driver = null);

/// <summary>Collects resources, occupancy and SASS mix for every kernel in the build.</summary>
public static class KernelProfiler
{
    /// <summary>Name of the resource report embedded in the DeepKernels assembly by the build.</summary>
    public const string EmbeddedReportName = "DeepKernels.resource-report.json";

    /// <summary><see cref="KernelProfile.OccupancySource"/> when the device's driver gave the figure.</summary>
    public const string OccupancyFromDriver = "driver";

    /// <summary><see cref="KernelProfile.OccupancySource"/> when the figure is computed from <see cref="ArchLimits"/>.</summary>
    public const string OccupancyFromArchTable = "arch table";

    /// <summary>Environment variable that points the CUDA backend (and this profiler) at a fatbin on disk.</summary>
    public const string FatbinEnvironmentVariable = "DEEPKERNELS_FATBIN";

    /// <summary>Builds the profile. Missing inputs become notes; a named file that does not exist throws <see cref="FileNotFoundException"/>.</summary>
    public static KernelProfileReport Collect(ProfileOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var notes = new List<string>();
        string? nativeDir = FindNativeBuildDir(options.SearchRoot);

        // 1. The fatbin: --fatbin, else $DEEPKERNELS_FATBIN, else the one embedded in the library
        //    (the pair the CUDA backend loads), else build/native of this checkout.
        // 2. Its resources: --report, else the resource-report.json that belongs to that fatbin
        //    (next to it on disk, or embedded with it), else cuobjdump -res-usage on it.
        string? fatbin = options.FatbinPath;
        string? reportPath = options.ReportPath;
        string? embeddedReport = null;
        if (fatbin is not null && !File.Exists(fatbin)) throw new FileNotFoundException($"Fatbin '{fatbin}' does not exist.", fatbin);
        if (reportPath is not null && !File.Exists(reportPath)) throw new FileNotFoundException($"Resource report '{reportPath}' does not exist.", reportPath);
        if (fatbin is null && Environment.GetEnvironmentVariable(FatbinEnvironmentVariable) is { Length: > 0 } env && File.Exists(env))
        {
            fatbin = env;
            reportPath ??= SiblingReport(env);
        }
        if (fatbin is null && EmbeddedFatbin.Value is { } embeddedFatbin)
        {
            fatbin = embeddedFatbin;
            if (reportPath is null) embeddedReport = ReadEmbeddedReport();
        }
        if (fatbin is null && nativeDir is not null && File.Exists(Path.Combine(nativeDir, "deepkernels.fatbin")))
        {
            fatbin = Path.Combine(nativeDir, "deepkernels.fatbin");
            reportPath ??= SiblingReport(fatbin);
        }
        if (fatbin is null && reportPath is null)
        {
            // No fatbin anywhere: a report alone still gives resources and occupancy.
            embeddedReport = ReadEmbeddedReport();
            if (embeddedReport is null && nativeDir is not null) reportPath = SiblingReport(Path.Combine(nativeDir, "deepkernels.fatbin"));
        }

        IReadOnlyList<KernelResources>? resources = null;
        string? resourceSource = null;
        string? reportJson = reportPath is not null ? File.ReadAllText(reportPath) : embeddedReport;
        if (reportPath is not null)
        {
            resources = KernelResourceReader.ParseReport(reportJson!);
            resourceSource = reportPath;
        }
        else if (embeddedReport is not null)
        {
            resources = KernelResourceReader.ParseReport(embeddedReport);
            resourceSource = "embedded " + EmbeddedReportName;
        }

        string? cuobjdump = options.CuobjdumpPath is null ? CompilerCuobjdump(reportJson) ?? FindCuobjdump() : options.CuobjdumpPath.Length == 0 ? null : options.CuobjdumpPath;

        IReadOnlyList<SassInstructionMix> sass = [];
        if (fatbin is null) notes.Add("No fatbin found (build/native/deepkernels.fatbin, $" + FatbinEnvironmentVariable + ", or embedded): no SASS instruction mix. Build the native kernels with nvcc (./build.sh build).");
        else if (options.CuobjdumpPath is "") notes.Add("SASS instruction mix not asked for (--no-sass).");
        else if (cuobjdump is null) notes.Add("cuobjdump not found (install the CUDA toolkit, e.g. Debian's nvidia-cuda-toolkit): no SASS instruction mix.");
        else
        {
            sass = SassParser.Parse(RunTool(cuobjdump, "-sass", fatbin));
            if (resources is null)
            {
                resources = KernelResourceReader.ParseCuobjdumpResUsage(RunTool(cuobjdump, "-res-usage", fatbin));
                resourceSource = "cuobjdump -res-usage (shared memory includes the 1 KiB system reservation on sm_90; no spill counts)";
            }
        }
        if (resources is null) notes.Add("No resource report found (embedded, build/native/resource-report.json or --report): no registers, shared memory or occupancy.");

        // 3. Merge by (kernel, arch).
        var keys = (resources ?? []).Select(r => (r.Kernel, r.Arch)).Concat(sass.Select(s => (s.Kernel, s.Arch))).Distinct()
            .OrderBy(k => k.Kernel, StringComparer.Ordinal).ThenBy(k => k.Arch, StringComparer.Ordinal).ToList();
        using var device = OpenDevice(options.Driver, fatbin, notes);
        var profiles = new List<KernelProfile>();
        foreach (var (kernel, arch) in keys)
        {
            var res = resources?.FirstOrDefault(r => r.Kernel == kernel && r.Arch == arch);
            var launch = KernelLaunchConfigs.Find(kernel);
            var limits = ArchLimits.Find(arch);
            OccupancyResult? occupancy = res is not null && launch is not null && limits is not null && res.Registers <= limits.MaxRegistersPerThread
                ? Occupancy.Compute(limits, launch.BlockSize, res.Registers, res.StaticSharedBytes, launch.DynamicSharedBytes)
                : null;
            string? source = occupancy is null ? null : OccupancyFromArchTable;
            if (device is not null && launch is not null && limits is not null && IsDeviceArch(arch, device.ComputeCapability, keys.Where(k => k.Kernel == kernel).Select(k => k.Arch)))
            {
                try
                {
                    int blocks = device.MaxActiveBlocks(kernel, launch.BlockSize, launch.DynamicSharedBytes);
                    int warps = blocks * ((launch.BlockSize + 31) / 32);
                    // The driver gives no limiter; keep the table's when both agree on the block count.
                    occupancy = new OccupancyResult(blocks, warps, (double)warps / limits.MaxWarpsPerSm,
                        occupancy is { } table && table.BlocksPerSm == blocks ? table.Limiter : null);
                    source = OccupancyFromDriver;
                }
                catch (Cuda.CudaException e)
                {
                    notes.Add($"The driver could not give the occupancy of '{kernel}' ({arch}): {e.Message}; arch table used.");
                }
            }
            profiles.Add(new KernelProfile(kernel, arch, res, launch, occupancy, sass.FirstOrDefault(s => s.Kernel == kernel && s.Arch == arch)) { OccupancySource = source });
        }
        foreach (string k in keys.Select(k => k.Kernel).Distinct().Where(k => KernelLaunchConfigs.Find(k) is null))
            notes.Add($"No launch configuration known for '{k}' (add it to KernelLaunchConfigs): no occupancy.");
        var archs = keys.Select(k => k.Arch).Distinct().OrderBy(a => a, StringComparer.Ordinal).ToList();
        return new KernelProfileReport(profiles, archs, resourceSource, fatbin, cuobjdump, notes);
    }

    /// <summary>The device's view of the fatbin, or null with a note saying why the arch tables are used.</summary>
    private static DriverOccupancy? OpenDevice(Cuda.ICudaDriver? driver, string? fatbin, List<string> notes)
    {
        if (driver is null) return null;
        if (fatbin is null)
        {
            notes.Add("Occupancy from the arch tables: no fatbin to load on the device.");
            return null;
        }
        // Probe first: without a device the fatbin is not even read.
        var probe = driver.Probe();
        DriverOccupancy? device = null;
        string reason = $"no ready CUDA device ({probe.Status}: {probe.Reason})";
        if (probe.IsReady) device = DriverOccupancy.TryOpen(driver, File.ReadAllBytes(fatbin), out reason);
        notes.Add(device is null
            ? $"Occupancy from the arch tables: {reason}."
            : $"Occupancy for sm_{device.ComputeCapability} from the driver (cuOccupancyMaxActiveBlocksPerMultiprocessor); other archs from the arch tables.");
        return device;
    }

    /// <summary>
    /// Whether the device runs this arch's code for the kernel: sm_XYa when the kernel has it,
    /// else sm_XY (the driver picks the most specific SASS for the device).
    /// </summary>
    private static bool IsDeviceArch(string arch, int computeCapability, IEnumerable<string> kernelArchs)
    {
        string plain = $"sm_{computeCapability}", specific = plain + "a";
        return arch == specific || (arch == plain && !kernelArchs.Contains(specific));
    }

    private static string? SiblingReport(string fatbin)
    {
        string path = Path.Combine(Path.GetDirectoryName(Path.GetFullPath(fatbin)) ?? ".", "resource-report.json");
        return File.Exists(path) ? path : null;
    }

    private static string? ReadEmbeddedReport()
    {
        var assembly = typeof(KernelProfiler).Assembly;
        using var stream = assembly.GetManifestResourceStream(EmbeddedReportName);
        if (stream is null) return null;
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    // Extracted once per process (cuobjdump needs a file).
    private static readonly Lazy<string?> EmbeddedFatbin = new(ExtractEmbeddedFatbin);

    private static string? ExtractEmbeddedFatbin()
    {
        Assembly assembly = typeof(KernelProfiler).Assembly;
        string? name = assembly.GetManifestResourceNames().FirstOrDefault(n => n.EndsWith(".fatbin", StringComparison.OrdinalIgnoreCase));
        if (name is null) return null;
        using var stream = assembly.GetManifestResourceStream(name)!;
        string path = Path.Combine(Path.GetTempPath(), $"deepkernels-{Environment.ProcessId}.fatbin");
        using (var file = File.Create(path)) stream.CopyTo(file);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                File.Delete(path);
            }
            catch (IOException)
            {
                // Best effort: a leftover temp file is harmless.
            }
        };
        return path;
    }

    /// <summary>build/native of the enclosing checkout (the directory holding Kernels.sln), or null.</summary>
    internal static string? FindNativeBuildDir(string? searchRoot)
    {
        foreach (string start in new[] { searchRoot, Directory.GetCurrentDirectory(), AppContext.BaseDirectory }.OfType<string>())
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Kernels.sln")))
                {
                    string native = Path.Combine(dir.FullName, "build", "native");
                    if (Directory.Exists(native)) return native;
                    break;
                }
            }
        }
        return null;
    }

    /// <summary>
    /// The cuobjdump of the toolkit that built the fatbin: the report's "tools" folder, when it is
    /// still there. An older cuobjdump found first on PATH would misread the sm_90a cubins (nvcc
    /// 11.8's lists them as sm_90 and shows no wgmma).
    /// </summary>
    internal static string? CompilerCuobjdump(string? reportJson)
    {
        if (reportJson is null) return null;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(reportJson);
            if (doc.RootElement.ValueKind != System.Text.Json.JsonValueKind.Object
                || !doc.RootElement.TryGetProperty("tools", out var tools) || tools.ValueKind != System.Text.Json.JsonValueKind.String)
                return null;
            string candidate = Path.Combine(tools.GetString()!, OperatingSystem.IsWindows() ? "cuobjdump.exe" : "cuobjdump");
            return File.Exists(candidate) ? candidate : null;
        }
        catch (System.Text.Json.JsonException)
        {
            return null;
        }
    }

    /// <summary>cuobjdump on PATH or in the usual CUDA install folders, or null.</summary>
    public static string? FindCuobjdump()
    {
        var dirs = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Append("/usr/local/cuda/bin");
        foreach (string dir in dirs)
        {
            string candidate = Path.Combine(dir, OperatingSystem.IsWindows() ? "cuobjdump.exe" : "cuobjdump");
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    // cuobjdump output per (tool, option, fatbin version): disassembly is slow and a process
    // (tests, a CLI session) often profiles the same fatbin several times.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> ToolCache = new(StringComparer.Ordinal);

    private static string RunTool(string tool, string option, string fatbin)
    {
        var info = new FileInfo(fatbin);
        string key = $"{tool}|{option}|{info.FullName}|{info.Length}|{info.LastWriteTimeUtc.Ticks}";
        if (ToolCache.TryGetValue(key, out string? cached)) return cached;
        string text = RunToolUncached(tool, option, fatbin);
        ToolCache[key] = text;
        return text;
    }

    private static string RunToolUncached(string tool, string option, string fatbin)
    {
        var psi = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        psi.ArgumentList.Add(option);
        psi.ArgumentList.Add(fatbin);
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"Could not start {tool}.");
        var stderr = process.StandardError.ReadToEndAsync();
        string stdout = process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(120_000))
        {
            process.Kill(entireProcessTree: true);
            throw new InvalidOperationException($"{tool} {option} {fatbin} did not finish within 120 s.");
        }
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{tool} {option} {fatbin} failed with exit code {process.ExitCode}: {stderr.Result.Trim()}");
        return stdout;
    }
}
